-- Refunds the provider listed for a payment whose own answer says they refund another payment: never booked against
-- the payment scanned; kept so that the team is told once, not at every scan.
CREATE TABLE refunds_listed_for_another_payment (
    provider_refund_id text PRIMARY KEY,
    payment_id         text        NOT NULL,
    first_seen_at      timestamptz NOT NULL DEFAULT now()
);
