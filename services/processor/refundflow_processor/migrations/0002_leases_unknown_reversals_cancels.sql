-- Attempts are leased to one executor at a time, and may be "unknown": the provider may hold a refund that
-- reconciliation could not look for yet (only reconciliation runs then, never a new call).
ALTER TABLE refund_attempts DROP CONSTRAINT refund_attempts_state_check;
ALTER TABLE refund_attempts ADD CONSTRAINT refund_attempts_state_check
    CHECK (state IN ('scheduled', 'provider_pending', 'succeeded', 'failed', 'abandoned', 'unknown'));
ALTER TABLE refund_attempts
    ADD COLUMN locked_until timestamptz NOT NULL DEFAULT '-infinity',
    ADD COLUMN lease_id     uuid;
DROP INDEX refund_attempts_due;
CREATE INDEX refund_attempts_due ON refund_attempts (next_try_at) WHERE state IN ('scheduled', 'unknown');

-- A refund the provider failed after it had succeeded is reversed; the team hears once of an unknown outcome.
ALTER TABLE refunds DROP CONSTRAINT refunds_status_check;
ALTER TABLE refunds ADD CONSTRAINT refunds_status_check
    CHECK (status IN ('processing', 'succeeded', 'failed', 'reversed'));
ALTER TABLE refunds ADD COLUMN outcome_unknown_alerted_at timestamptz;

-- A provider payment belongs to exactly one payment, so a refund found on it has exactly one owner.
-- trusted: amount and currency came from payment.succeeded, not from an approval.
CREATE UNIQUE INDEX payments_by_provider_payment ON payments (provider_payment_id);
ALTER TABLE payments
    ADD COLUMN trusted           boolean     NOT NULL DEFAULT false,
    ADD COLUMN sync_locked_until timestamptz NOT NULL DEFAULT '-infinity',
    ADD COLUMN sync_retry_at     timestamptz NOT NULL DEFAULT '-infinity',
    ADD COLUMN sync_failures     int         NOT NULL DEFAULT 0,
    ADD COLUMN sync_error        text;

-- Refunds made elsewhere are followed until final; one we cannot attribute is kept (alerted once), never booked.
ALTER TABLE external_refunds
    ADD COLUMN currency   char(3),
    ADD COLUMN attributed boolean     NOT NULL DEFAULT true,
    ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX external_refunds_pending ON external_refunds (updated_at) WHERE status = 'pending';
CREATE INDEX external_refunds_by_payment ON external_refunds (payment_id);

-- The provider refused our credentials: each merchant's team is told once per episode (cleared when a call works).
CREATE TABLE provider_auth_alerts (
    merchant_id text PRIMARY KEY,
    alerted_at  timestamptz NOT NULL DEFAULT now()
);

-- Subscription cancels are executed like refund attempts: recorded by the consumer, leased, retried.
CREATE TABLE subscription_cancels (
    cancel_id       text PRIMARY KEY,
    payment_id      text        NOT NULL,
    merchant_id     text        NOT NULL,
    subscription_id text        NOT NULL,
    at_period_end   boolean     NOT NULL,
    refund_id       text,
    state           text        NOT NULL CHECK (state IN ('scheduled', 'succeeded', 'failed')),
    tries           int         NOT NULL DEFAULT 0,
    next_try_at     timestamptz NOT NULL DEFAULT now(),
    locked_until    timestamptz NOT NULL DEFAULT '-infinity',
    lease_id        uuid,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subscription_cancels_due ON subscription_cancels (next_try_at) WHERE state = 'scheduled';
