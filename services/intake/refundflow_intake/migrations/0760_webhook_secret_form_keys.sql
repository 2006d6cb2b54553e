-- The dashboard's forms that make a signing secret (add an endpoint, roll its secret) carry a single-use key, kept
-- with the secret it made: the same form sent twice (a double click, a reload) makes one secret, and both answers
-- show it. None for a secret made through the API (or before this).
ALTER TABLE webhook_endpoints ADD COLUMN secret_form_key text;
