-- Payments the processor knows of (from payment.succeeded and refund.approved): the sync job scans them
-- for refunds made outside Refundflow.
CREATE TABLE payments (
    payment_id          text PRIMARY KEY,
    merchant_id         text        NOT NULL,
    provider_payment_id text        NOT NULL,
    amount              bigint      NOT NULL CHECK (amount > 0),
    currency            char(3)     NOT NULL,
    last_synced_at      timestamptz NOT NULL DEFAULT '-infinity',
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payments_by_sync ON payments (last_synced_at);

-- The refunds the processor was asked to execute, and their outcome.
CREATE TABLE refunds (
    refund_id           text PRIMARY KEY,
    payment_id          text        NOT NULL,
    merchant_id         text        NOT NULL,
    customer_email      text        NOT NULL,
    amount              bigint      NOT NULL CHECK (amount > 0),
    currency            char(3)     NOT NULL,
    provider_payment_id text        NOT NULL,
    payment_amount      bigint      NOT NULL,
    status              text        NOT NULL CHECK (status IN ('processing', 'succeeded', 'failed')),
    provider_calls      int         NOT NULL DEFAULT 0,
    provider_refund_id  text,
    failure_reason      text,
    failure_message     text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refunds_by_payment ON refunds (payment_id);

-- One row per idempotency key. It is committed BEFORE the provider is called with that key, so a crash
-- is always recovered by calling again with the same key. The states: refundflow_processor/attempts.py.
CREATE TABLE refund_attempts (
    refund_id          text        NOT NULL REFERENCES refunds (refund_id),
    attempt            int         NOT NULL CHECK (attempt >= 1),
    idempotency_key    text        NOT NULL UNIQUE,
    state              text        NOT NULL
        CHECK (state IN ('scheduled', 'provider_pending', 'succeeded', 'failed', 'abandoned')),
    tries              int         NOT NULL DEFAULT 0,
    server_errors      int         NOT NULL DEFAULT 0,
    next_try_at        timestamptz NOT NULL DEFAULT now(),
    last_error         text,
    provider_refund_id text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (refund_id, attempt)
);
CREATE INDEX refund_attempts_due ON refund_attempts (next_try_at) WHERE state = 'scheduled';
CREATE INDEX refund_attempts_pending ON refund_attempts (updated_at) WHERE state = 'provider_pending';
CREATE UNIQUE INDEX refund_attempts_by_provider_refund ON refund_attempts (provider_refund_id);

-- Refunds found at the provider that Refundflow did not make, reported once each.
CREATE TABLE external_refunds (
    provider_refund_id text PRIMARY KEY,
    payment_id         text        NOT NULL,
    amount             bigint      NOT NULL,
    status             text        NOT NULL,
    detected_at        timestamptz NOT NULL DEFAULT now()
);
