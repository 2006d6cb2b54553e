-- A subscription's cancellation is recorded on every payment of it (renewals too): found by this index.
CREATE INDEX payments_by_subscription ON payments (merchant_id, subscription_id) WHERE subscription_id IS NOT NULL;
