CREATE TABLE merchants (
    id         text PRIMARY KEY,
    name       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- API keys are stored as SHA-256 digests: they are long random secrets, so a slow hash buys nothing.
CREATE TABLE api_keys (
    id          text PRIMARY KEY,
    merchant_id text        NOT NULL REFERENCES merchants (id),
    key_hash    bytea       NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE TABLE payments (
    id                  text PRIMARY KEY,
    merchant_id         text        NOT NULL REFERENCES merchants (id),
    customer_email      text        NOT NULL,
    amount              bigint      NOT NULL CHECK (amount > 0),
    currency            char(3)     NOT NULL,
    refunded_amount     bigint      NOT NULL DEFAULT 0 CHECK (refunded_amount >= 0 AND refunded_amount <= amount),
    provider_payment_id text        NOT NULL,
    paid_at             timestamptz NOT NULL,
    product_id          text        NOT NULL,
    product_name        text        NOT NULL,
    product_kind        text        NOT NULL CHECK (product_kind IN ('one_time', 'subscription')),
    created_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (merchant_id, provider_payment_id)
);

CREATE TABLE refunds (
    id              text PRIMARY KEY,
    merchant_id     text        NOT NULL REFERENCES merchants (id),
    payment_id      text        NOT NULL REFERENCES payments (id),
    amount          bigint      NOT NULL CHECK (amount > 0),
    currency        char(3)     NOT NULL,
    reason          text        NOT NULL,
    status          text        NOT NULL
        CHECK (status IN ('pending', 'processing', 'succeeded', 'failed', 'rejected')),
    failure_reason  text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refunds_by_payment ON refunds (payment_id);

-- The audit trail: every status change, who made it and why.
CREATE TABLE refund_timeline (
    id        bigserial PRIMARY KEY,
    refund_id text        NOT NULL REFERENCES refunds (id),
    status    text        NOT NULL,
    actor     text        NOT NULL,
    note      text,
    at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refund_timeline_by_refund ON refund_timeline (refund_id, id);
