-- An approved refund holds its amount in the balance until the provider answers: success makes it final, failure
-- releases it, a later reversal gives it back. External refunds move the same way as the provider reports them.
-- Every entry stays unique per (kind, source), so no redelivery moves money twice.
ALTER TABLE balance_entries DROP CONSTRAINT balance_entries_kind_check;
ALTER TABLE balance_entries ADD CONSTRAINT balance_entries_kind_check CHECK (kind IN (
    'payment',
    'refund_hold', 'refund_release', 'refund', 'refund_reversal',
    'external_refund_hold', 'external_refund_release', 'external_refund', 'external_refund_reversal'
));
-- What was already on its way to the provider, or pending there, when holds began.
INSERT INTO balance_entries (merchant_id, currency, amount, kind, source_id)
SELECT merchant_id, currency, -amount, 'refund_hold', id FROM refunds WHERE status = 'processing';
INSERT INTO balance_entries (merchant_id, currency, amount, kind, source_id)
SELECT merchant_id, currency, -amount, 'external_refund_hold', provider_refund_id
  FROM external_refunds WHERE status = 'pending';

-- A refund the provider failed after it had succeeded.
ALTER TABLE refunds DROP CONSTRAINT refunds_status_check;
ALTER TABLE refunds ADD CONSTRAINT refunds_status_check
    CHECK (status IN ('pending', 'processing', 'succeeded', 'failed', 'rejected', 'reversed'));

ALTER TABLE external_refunds ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();

-- Each approval is for an amount: approvals of different amounts do not add up.
ALTER TABLE refund_approvals ADD COLUMN amount bigint;
UPDATE refund_approvals a SET amount = r.amount FROM refunds r WHERE r.id = a.refund_id;
ALTER TABLE refund_approvals ALTER COLUMN amount SET NOT NULL;
