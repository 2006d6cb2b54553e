-- Retention finds the rows it deletes by their age: without an index on the age column, each pass (every five
-- minutes, on each instance) read the whole table. B-trees, not BRIN: pruning frees the oldest pages and new rows
-- fill them, and a BRIN range that once held an old row goes on matching old ages (after one retention period,
-- nearly every range would). Built in the migration's transaction, so the table's writes wait while it is built:
-- the old version is stopped by then (README, Upgrading).
CREATE INDEX inbox_handled_at ON inbox (handled_at);
-- An unsent row is never pruned: it gets its entry when it is sent (that update changes indexed columns already).
CREATE INDEX outbox_sent_at ON outbox (sent_at) WHERE sent_at IS NOT NULL;
