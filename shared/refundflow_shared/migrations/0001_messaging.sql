-- The messaging backbone's tables, created in every service's own schema.

-- Transactional outbox: rows are written in the same transaction as the state change they announce.
CREATE TABLE outbox (
    id            bigserial PRIMARY KEY,
    event_id      uuid        NOT NULL UNIQUE,
    event_type    text        NOT NULL,
    partition_key text        NOT NULL,
    headers       jsonb       NOT NULL,
    payload       bytea       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    sent_at       timestamptz
);
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;
CREATE INDEX outbox_unsent_by_key ON outbox (partition_key, id) WHERE sent_at IS NULL;

-- Per-payment sequence numbers: taking the row lock also serialises one payment's events in commit order.
CREATE TABLE event_sequences (
    partition_key text   PRIMARY KEY,
    last_sequence bigint NOT NULL
);

-- Inbox: what each consumer has handled, written in the same transaction as the handler's effect.
CREATE TABLE inbox (
    consumer   text        NOT NULL,
    event_id   uuid        NOT NULL,
    event_type text        NOT NULL,
    handled_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

-- Wake the relay as soon as a transaction with new rows commits (NOTIFY is delivered on commit).
CREATE FUNCTION notify_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '_outbox', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION notify_outbox();
