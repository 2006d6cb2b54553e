-- The provider's id of the refund ours became (Stripe's re_...), from refund.succeeded or refund.reversed, so the
-- ledger's refund entries (source_id: our ref_ id) can be matched to the provider's. NULL until the provider
-- reported it, and on refunds finished before this column.
ALTER TABLE refunds ADD COLUMN provider_refund_id text;
