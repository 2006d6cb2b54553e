-- Every customer email, one per (event, recipient). Written in the same transaction as the inbox row.
CREATE TABLE emails (
    event_id   uuid        NOT NULL,
    recipient  text        NOT NULL,
    kind       text        NOT NULL,
    message_id text        NOT NULL,
    status     text        NOT NULL CHECK (status IN ('sent', 'rejected')),
    error      text,
    refund_id  text,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, recipient)
);
