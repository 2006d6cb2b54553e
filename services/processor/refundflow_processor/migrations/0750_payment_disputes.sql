-- Chargebacks billing reported (payment.disputed): a refund of a disputed payment that the provider does not hold
-- yet is never made (the customer would get the refund and the chargeback). As intake has them: a dispute names our
-- payment id or the provider's, counts only for the merchant it names, and may come before the payment.
CREATE TABLE payment_disputes (
    payment_id  text        NOT NULL,
    merchant_id text        NOT NULL,
    dispute_id  text,
    disputed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (payment_id, merchant_id)
);
