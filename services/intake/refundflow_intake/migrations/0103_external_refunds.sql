-- Refunds made outside Refundflow (e.g. in the provider's dashboard), reported by the processor's sync job.
CREATE TABLE external_refunds (
    provider_refund_id text PRIMARY KEY,
    payment_id         text        NOT NULL REFERENCES payments (id),
    merchant_id        text        NOT NULL,
    amount             bigint      NOT NULL CHECK (amount > 0),
    currency           char(3)     NOT NULL,
    status             text        NOT NULL CHECK (status IN ('succeeded', 'pending', 'failed')),
    detected_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX external_refunds_by_payment ON external_refunds (payment_id);

ALTER TABLE balance_entries DROP CONSTRAINT balance_entries_kind_check;
ALTER TABLE balance_entries ADD CONSTRAINT balance_entries_kind_check
    CHECK (kind IN ('payment', 'refund', 'external_refund'));

-- What part of a payment can no longer be asked for, defined once: our refunds in the holding statuses
-- (domain.HOLDING_STATUSES), and every external refund that did not fail.
CREATE FUNCTION held_by_refunds(p_payment_id text, holding text[]) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT (SELECT coalesce(sum(amount), 0) FROM refunds WHERE payment_id = p_payment_id AND status = ANY(holding))
         + (SELECT coalesce(sum(amount), 0) FROM external_refunds
             WHERE payment_id = p_payment_id AND status <> 'failed')
$$;
