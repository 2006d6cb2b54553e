-- A provider's "not executed, try later" (429 rate limit, 409 key in use) counts against no budget: when an attempt
-- was first so answered, and whether the team was told the provider keeps deferring the refund.
ALTER TABLE refund_attempts ADD COLUMN not_executed_since timestamptz;
ALTER TABLE refunds ADD COLUMN not_executed_alerted_at timestamptz;
