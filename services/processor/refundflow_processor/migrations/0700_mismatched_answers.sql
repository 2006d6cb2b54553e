-- The refund the provider answered an attempt's key with when it was not the refund we asked for (another amount,
-- another refund's): the key may have made a refund, so listing none of ours never earns the attempt a new key.
ALTER TABLE refund_attempts ADD COLUMN mismatched_refund_id text;
