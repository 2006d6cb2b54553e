-- When a decision asked the provider to cancel the payment's subscription now: until the processor reports it
-- done, a second decision on the same subscription must not ask (and tell the customer) again.
ALTER TABLE payments ADD COLUMN subscription_cancel_requested_at timestamptz;
