-- When a cancel at the period's end was asked of the provider for the payment's subscription: until then only a
-- cancel now was recorded (subscription_cancel_requested_at), so the same cancel asked again (a retried call, a
-- double click) was asked of the provider, and told to the customer, twice.
ALTER TABLE payments ADD COLUMN subscription_cancel_at_period_end_requested_at timestamptz;
