-- The balance shows what a merchant's disputed payments amount to, read from the merchant's disputes: their key is
-- (payment_id, merchant_id), so without this each balance read scanned every merchant's disputes.
CREATE INDEX payment_disputes_by_merchant ON payment_disputes (merchant_id, payment_id);
-- A dispute naming a provider payment finds it by payments_provider_payment_once, which leaves out the payments
-- marked provider_payment_conflict (registered twice before 0300); those few are found here instead of by reading
-- the merchant's every payment. New payments are never marked so: nothing is written to it.
CREATE INDEX payments_provider_payment_conflicts ON payments (provider_payment_id) WHERE provider_payment_conflict;
