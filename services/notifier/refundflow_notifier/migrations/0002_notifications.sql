-- Outgoing messages (customer emails, team emails, Slack alerts) become a durable queue: the consumer only
-- writes rows in its inbox transaction; the message worker sends them, so a slow server never holds a partition.
CREATE TABLE messages (
    id              bigserial PRIMARY KEY,
    dedupe_key      text        NOT NULL UNIQUE,  -- event id / kind / recipient: one message each
    event_id        uuid        NOT NULL,
    merchant_id     text        NOT NULL,
    channel         text        NOT NULL CHECK (channel IN ('email', 'slack')),
    kind            text        NOT NULL,
    recipient       text        NOT NULL,
    message_id      text,                         -- the email's Message-ID
    body            bytea       NOT NULL,         -- the rendered email, or the Slack JSON
    refund_id       text,
    status          text        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sent', 'rejected', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    locked_until    timestamptz,
    error           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz
);
CREATE INDEX messages_due ON messages (next_attempt_at) WHERE status = 'pending';

INSERT INTO messages (dedupe_key, event_id, merchant_id, channel, kind, recipient, message_id, body, refund_id,
                      status, error, created_at, sent_at)
SELECT event_id || '/' || kind || '/' || recipient, event_id, '', 'email', kind, recipient, message_id, ''::bytea,
       refund_id, status, error, created_at, created_at
FROM emails;
DROP TABLE emails;

CREATE TABLE merchant_settings (
    merchant_id         text PRIMARY KEY,
    team_email          text,
    slack_webhook_url   text,
    sender_name         text,
    reply_to            text,
    review_target       text,
    refund_process_time text,
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_endpoints (
    id                   text PRIMARY KEY,
    merchant_id          text        NOT NULL,
    url                  text        NOT NULL,
    event_types          text[]      NOT NULL,
    enabled              boolean     NOT NULL,
    deleted              boolean     NOT NULL DEFAULT false,
    encrypted_secret     text        NOT NULL,
    version              integer     NOT NULL,
    consecutive_failures integer     NOT NULL DEFAULT 0,
    disabled_reason      text,
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_by_merchant ON webhook_endpoints (merchant_id);

-- Every event a merchant's webhooks may carry, as signed and sent (kept for replays).
CREATE TABLE webhook_events (
    event_id    uuid PRIMARY KEY,
    merchant_id text        NOT NULL,
    event_type  text        NOT NULL,
    occurred_at timestamptz NOT NULL,
    payload     text        NOT NULL
);
CREATE INDEX webhook_events_by_merchant ON webhook_events (merchant_id, occurred_at);

-- One delivery of one event to one endpoint, with its durable retry schedule; a replay is a new delivery.
CREATE TABLE webhook_deliveries (
    id              bigserial PRIMARY KEY,
    endpoint_id     text        NOT NULL REFERENCES webhook_endpoints (id),
    event_id        uuid        NOT NULL REFERENCES webhook_events (event_id),
    replay          boolean     NOT NULL DEFAULT false,
    status          text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    locked_until    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);
CREATE UNIQUE INDEX webhook_deliveries_once ON webhook_deliveries (endpoint_id, event_id) WHERE NOT replay;
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, id);

CREATE TABLE webhook_attempts (
    delivery_id  bigint      NOT NULL REFERENCES webhook_deliveries (id),
    attempt      integer     NOT NULL,
    attempted_at timestamptz NOT NULL,
    status_code  integer,
    latency_ms   integer     NOT NULL,
    error        text,
    PRIMARY KEY (delivery_id, attempt)
);

-- Refund outcomes seen, to notice when one reverses (succeeded, then failed).
CREATE TABLE refund_outcomes (
    refund_id text PRIMARY KEY,
    outcome   text NOT NULL CHECK (outcome IN ('succeeded', 'failed'))
);

-- Wake the workers when work is queued or finished (NOTIFY is delivered on commit).
CREATE FUNCTION notify_messages() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '_' || TG_TABLE_NAME, '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER messages_notify AFTER INSERT ON messages FOR EACH STATEMENT EXECUTE FUNCTION notify_messages();
CREATE TRIGGER messages_notify_release AFTER UPDATE ON messages
    FOR EACH ROW WHEN (OLD.locked_until IS NOT NULL AND NEW.locked_until IS NULL) EXECUTE FUNCTION notify_messages();
-- A release (lock cleared: done, or due again) wakes the dispatcher; a claim, which sets the lock, does not.
CREATE TRIGGER webhook_deliveries_notify_insert AFTER INSERT ON webhook_deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION notify_messages();
CREATE TRIGGER webhook_deliveries_notify_release AFTER UPDATE ON webhook_deliveries
    FOR EACH ROW WHEN (OLD.locked_until IS NOT NULL AND NEW.locked_until IS NULL) EXECUTE FUNCTION notify_messages();
