-- The totals summed again from the ledger's entries: an instance of the version before 0861 left running through that
-- upgrade (nothing refused it then) wrote its entries alone, without their deltas, so they were missing from the
-- balance for good. The entries are the ledger; the totals and the deltas not folded yet only sum them, so both are
-- replaced by the sum (the deltas' entries are in it).
-- No writer runs during a migration (the runner refuses while one is connected); the lock makes sure of it.
LOCK TABLE balance_entries, balance_total_deltas, balance_totals IN EXCLUSIVE MODE;
DELETE FROM balance_total_deltas;
DELETE FROM balance_totals;
INSERT INTO balance_totals (merchant_id, currency, paid, refunded, held)
SELECT merchant_id, currency,
       coalesce(sum(amount) FILTER (WHERE kind = 'payment'), 0),
       coalesce(-sum(amount) FILTER (WHERE kind IN (
           'refund', 'refund_reversal', 'external_refund', 'external_refund_reversal')), 0),
       coalesce(-sum(amount) FILTER (WHERE kind IN (
           'refund_hold', 'refund_release', 'external_refund_hold', 'external_refund_release')), 0)
  FROM balance_entries GROUP BY merchant_id, currency;
