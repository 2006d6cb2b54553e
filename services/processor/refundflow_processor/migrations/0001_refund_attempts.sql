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
    provider_refund_id  text,
    failure_reason      text,
    failure_message     text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refunds_by_payment ON refunds (payment_id);

-- One row per call series to the provider under one idempotency key. It is committed BEFORE the
-- provider is called, so a crash is always recovered by retrying with the same key.
CREATE TABLE refund_attempts (
    refund_id          text        NOT NULL REFERENCES refunds (refund_id),
    attempt            int         NOT NULL CHECK (attempt >= 1),
    idempotency_key    text        NOT NULL UNIQUE,
    state              text        NOT NULL
        CHECK (state IN ('scheduled', 'provider_pending', 'succeeded', 'failed')),
    tries              int         NOT NULL DEFAULT 0,
    next_try_at        timestamptz NOT NULL DEFAULT now(),
    last_error         text,
    provider_refund_id text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (refund_id, attempt)
);
CREATE INDEX refund_attempts_due ON refund_attempts (next_try_at) WHERE state = 'scheduled';
