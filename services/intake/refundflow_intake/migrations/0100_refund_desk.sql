-- The refund desk: policies, richer payments and requests, approvals, idempotency keys, the balance ledger.

ALTER TABLE api_keys ADD COLUMN name text;

ALTER TABLE payments
    ADD COLUMN customer_name             text,
    ADD COLUMN product_category          text,
    ADD COLUMN subscription_id           text,
    ADD COLUMN subscription_period_start timestamptz,
    ADD COLUMN subscription_period_end   timestamptz;
CREATE INDEX payments_by_merchant ON payments (merchant_id, created_at DESC, id DESC);

-- A dispute may arrive before the payment it is about (two producers): keyed by payment id alone.
CREATE TABLE payment_disputes (
    payment_id  text PRIMARY KEY,
    merchant_id text        NOT NULL,
    dispute_id  text,
    reason      text,
    disputed_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE refunds
    ADD COLUMN reason_details      text,
    ADD COLUMN channel             text    NOT NULL DEFAULT 'api' CHECK (channel IN ('api', 'portal', 'command')),
    ADD COLUMN flags               text[]  NOT NULL DEFAULT '{}',
    ADD COLUMN requested_amount    bigint,
    ADD COLUMN subscription_action text
        CHECK (subscription_action IN ('refund_and_cancel', 'refund_only', 'cancel_only')),
    ADD COLUMN extend_days         integer CHECK (extend_days > 0),
    ADD COLUMN decision_note       text,
    ADD COLUMN decided_at          timestamptz;
CREATE INDEX refunds_by_merchant ON refunds (merchant_id, created_at DESC, id DESC);
-- At most one open customer request per payment (the payment row lock checks first; this is the backstop).
CREATE UNIQUE INDEX one_open_customer_request_per_payment ON refunds (payment_id)
    WHERE status = 'pending' AND channel <> 'api';

-- What happened, besides the status it led to: requested, approved, second_approval_needed, rejected, ...
ALTER TABLE refund_timeline ADD COLUMN action text;

-- The merchant's policy (product_id '') and per-product overrides (only the fields they set).
CREATE TABLE refund_policies (
    merchant_id text        NOT NULL REFERENCES merchants (id),
    product_id  text        NOT NULL DEFAULT '',
    policy      jsonb       NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, product_id)
);

-- Approvals given so far; a refund above the second-approver threshold needs two different actors.
CREATE TABLE refund_approvals (
    refund_id   text        NOT NULL REFERENCES refunds (id),
    actor       text        NOT NULL,
    approved_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (refund_id, actor)
);

-- Idempotency-Key on POST /v1/refunds: the first request's fingerprint and the refund it created.
CREATE TABLE idempotency_keys (
    merchant_id  text        NOT NULL REFERENCES merchants (id),
    key          text        NOT NULL,
    request_hash bytea       NOT NULL,
    refund_id    text REFERENCES refunds (id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, key)
);

-- The merchant's balance as an append-only ledger: payments credit, succeeded refunds debit, once each.
CREATE TABLE balance_entries (
    id          bigserial PRIMARY KEY,
    merchant_id text        NOT NULL REFERENCES merchants (id),
    currency    char(3)     NOT NULL,
    amount      bigint      NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('payment', 'refund')),
    source_id   text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, source_id)
);
CREATE INDEX balance_entries_by_merchant ON balance_entries (merchant_id, currency);
