-- The subscription each payment is of, and whose, as payment.succeeded said (NULL: a payment of none): a cancel or
-- an extension must name its payment's merchant and subscription. One naming a payment not heard of yet waits for
-- it ('awaiting_payment'). Payments learnt before this table: their subscription was never kept (said false), so
-- only their merchant is checked.
CREATE TABLE payment_subscriptions (
    payment_id      text PRIMARY KEY,
    merchant_id     text    NOT NULL,
    subscription_id text,
    said            boolean NOT NULL DEFAULT true
);
INSERT INTO payment_subscriptions (payment_id, merchant_id, said)
SELECT payment_id, merchant_id, false FROM payments WHERE trusted;

ALTER TABLE subscription_cancels DROP CONSTRAINT subscription_cancels_state_check;
ALTER TABLE subscription_cancels ADD CONSTRAINT subscription_cancels_state_check
    CHECK (state IN ('awaiting_payment', 'scheduled', 'succeeded', 'failed'));
CREATE INDEX subscription_cancels_awaiting_payment ON subscription_cancels (payment_id)
    WHERE state = 'awaiting_payment';
ALTER TABLE subscription_extensions DROP CONSTRAINT subscription_extensions_state_check;
ALTER TABLE subscription_extensions ADD CONSTRAINT subscription_extensions_state_check
    CHECK (state IN ('awaiting_payment', 'scheduled', 'succeeded', 'failed'));
CREATE INDEX subscription_extensions_awaiting_payment ON subscription_extensions (payment_id)
    WHERE state = 'awaiting_payment';
