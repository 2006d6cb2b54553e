-- When refund.review_overdue was emitted for a pending request (at most once).
ALTER TABLE refunds ADD COLUMN review_overdue_at timestamptz;
CREATE INDEX refunds_pending_unflagged ON refunds (created_at) WHERE status = 'pending' AND review_overdue_at IS NULL;
