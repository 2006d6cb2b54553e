-- GET /v1/balance/entries lists a merchant's entries newest first, a day or a page at a time: read along
-- (merchant, time), not the merchant's every entry sorted. It takes the place of balance_entries_by_merchant
-- (merchant, currency), which nothing reads since the balance is read from its totals (0861): one index to keep
-- up on each write, as before. Built in the migration's transaction, as 0860's: the old version is stopped by then.
DROP INDEX balance_entries_by_merchant;
CREATE INDEX balance_entries_by_merchant_time ON balance_entries (merchant_id, created_at, id);
