-- The dashboard's Create API key form carries a single-use key, kept with the key it made: the same form sent again
-- (a double click, a reload) creates no second live key. None for a key made through the API (or before this).
ALTER TABLE api_keys ADD COLUMN form_key text;
