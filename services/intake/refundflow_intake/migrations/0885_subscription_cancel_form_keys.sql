-- The dashboard's Cancel subscription form carries a single-use key, kept with the payment whose cancel it asked:
-- the same form sent again (a double click, a reload, also after the provider refused that cancel) asks nothing.
ALTER TABLE payments ADD COLUMN subscription_cancel_form_key text;
