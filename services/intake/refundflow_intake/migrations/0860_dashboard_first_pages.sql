-- The dashboard's first pages read what they show, not the merchant's history. Payments are listed by when they
-- were paid, which payments_by_merchant (by when registered) does not serve: every page sorted them all.
CREATE INDEX payments_by_merchant_paid ON payments (merchant_id, paid_at DESC, id DESC);
-- The pending requests, few among many refunds: the review queue's head (oldest first), the badge on every page,
-- the lists filtered to them. Built in the migration's transaction, as the others: the old version is stopped by
-- then (README, Upgrading), so only the new one's start waits for it.
CREATE INDEX refunds_pending_by_merchant ON refunds (merchant_id, created_at, id) WHERE status = 'pending';
