-- The command line's own schema, "operations": what operators did that must not be done twice.

-- Every dead-lettered record that was replayed, once. A replay claims its rows here and publishes in the same
-- transaction (commit after the broker acknowledged), so `dlq replay --all` never publishes a record again; a
-- crash between the acknowledgement and the commit can publish one more copy, which the consumers' inboxes drop.
-- Several records of one message (dead-lettered by two consumers, or delivered twice) are replayed as one.
CREATE TABLE dlq_replays (
    dlq_topic          text        NOT NULL,
    dlq_partition      integer     NOT NULL,
    dlq_offset         bigint      NOT NULL,
    event_id           text,                   -- ce_id, when the record had a readable one
    original_topic     text        NOT NULL,
    original_partition integer,
    original_offset    bigint,
    consumer           text,                   -- dlq_consumer: the consumer that gave up on it
    reason             text,                   -- dlq_reason
    published_partition integer,               -- where the replay landed (for every row of the message)
    published_offset   bigint,
    replayed_by        text        NOT NULL,   -- the operator's login on the machine that ran the command
    replayed_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dlq_topic, dlq_partition, dlq_offset)
);
CREATE INDEX dlq_replays_by_event ON dlq_replays (event_id) WHERE event_id IS NOT NULL;
