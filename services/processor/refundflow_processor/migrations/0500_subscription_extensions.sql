-- Goodwill extensions of a subscription's period, executed at the provider as cancels are: recorded by the
-- consumer, leased by the dispatcher, retried with backoff, alerted on a definite refusal.
CREATE TABLE subscription_extensions (
    extension_id    text PRIMARY KEY,             -- the subscription.extension_granted event's id
    payment_id      text        NOT NULL,
    merchant_id     text        NOT NULL,
    subscription_id text        NOT NULL,
    days            int         NOT NULL CHECK (days > 0),
    refund_id       text,
    until           timestamptz,                  -- the new period end, fixed before the first change
    state           text        NOT NULL CHECK (state IN ('scheduled', 'succeeded', 'failed')),
    tries           int         NOT NULL DEFAULT 0,
    next_try_at     timestamptz NOT NULL DEFAULT now(),
    locked_until    timestamptz NOT NULL DEFAULT '-infinity',
    lease_id        uuid,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subscription_extensions_due ON subscription_extensions (next_try_at) WHERE state = 'scheduled';
CREATE INDEX subscription_extensions_open ON subscription_extensions (subscription_id, created_at)
    WHERE state = 'scheduled';
