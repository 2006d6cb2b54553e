-- A row the broker refuses is retried a few times, then parked (never relayed again until an operator
-- retries it) so that it cannot hold up the rows behind it.
ALTER TABLE outbox
    ADD COLUMN attempts   integer     NOT NULL DEFAULT 0,
    ADD COLUMN last_error text,
    ADD COLUMN parked_at  timestamptz;

-- The relay's work: unsent rows that are not parked.
DROP INDEX outbox_unsent;
DROP INDEX outbox_unsent_by_key;
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL AND parked_at IS NULL;
CREATE INDEX outbox_unsent_by_key ON outbox (partition_key, id) WHERE sent_at IS NULL AND parked_at IS NULL;
CREATE INDEX outbox_parked ON outbox (parked_at) WHERE parked_at IS NOT NULL;
