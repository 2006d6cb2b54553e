-- When a cancel at the period's end was asked of the provider for the payment's subscription: until then only a
-- cancel now was recorded (subscription_cancel_requested_at), so the same cancel asked again (a retried call, a
-- double click) was asked of the provider, and told to the customer, twice.
-- IF NOT EXISTS: it was numbered 0695 for a few minutes of main's history, and a database may hold it under that name.
ALTER TABLE payments ADD COLUMN IF NOT EXISTS subscription_cancel_at_period_end_requested_at timestamptz;
