-- Payments come from the platform, once: a provider payment belongs to one merchant only.
-- Until now two merchants could register the same provider payment. The first registration keeps it; a later
-- one is marked a conflict: still readable, but no money moves on it until the platform settles whose it is.
ALTER TABLE payments ADD COLUMN provider_payment_conflict boolean NOT NULL DEFAULT false;
UPDATE payments p SET provider_payment_conflict = true
 WHERE EXISTS (SELECT 1 FROM payments q
                WHERE q.provider_payment_id = p.provider_payment_id AND (q.created_at, q.id) < (p.created_at, p.id));
ALTER TABLE payments DROP CONSTRAINT payments_merchant_id_provider_payment_id_key;
CREATE UNIQUE INDEX payments_provider_payment_once ON payments (provider_payment_id)
    WHERE NOT provider_payment_conflict;
