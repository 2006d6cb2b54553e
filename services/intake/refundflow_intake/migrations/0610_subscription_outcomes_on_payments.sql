-- What the provider last did to the subscription a payment paid for, as the customer's portal tells it: its period
-- pushed back by goodwill days, or the subscription cancelled (with access until when, if at the period's end).
-- The paid period itself (subscription_period_start and _end) stays as paid: proration is measured on it.
ALTER TABLE payments
    ADD COLUMN subscription_period_extended_to timestamptz,
    ADD COLUMN subscription_canceled_at        timestamptz,
    ADD COLUMN subscription_access_until       timestamptz;
