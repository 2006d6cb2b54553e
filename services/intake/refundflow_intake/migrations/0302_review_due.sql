-- When a pending request becomes overdue is fixed when it is made, so the check reads only what is due, oldest
-- deadline first: one merchant's many long-target requests cannot hide another's overdue one.
ALTER TABLE refunds ADD COLUMN review_target_hours integer, ADD COLUMN review_due_at timestamptz;
UPDATE refunds r SET review_target_hours = coalesce(
        (SELECT (o.policy ->> 'review_target_hours')::integer FROM payments p
           JOIN refund_policies o ON o.merchant_id = p.merchant_id AND o.product_id = p.product_id
          WHERE p.id = r.payment_id),
        (SELECT (m.policy ->> 'review_target_hours')::integer FROM refund_policies m
          WHERE m.merchant_id = r.merchant_id AND m.product_id = ''),
        48)
 WHERE r.status = 'pending';
UPDATE refunds SET review_due_at = created_at + make_interval(hours => review_target_hours)
 WHERE review_target_hours IS NOT NULL;
DROP INDEX refunds_pending_unflagged;
CREATE INDEX refunds_review_due ON refunds (review_due_at) WHERE status = 'pending' AND review_overdue_at IS NULL;
