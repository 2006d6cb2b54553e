-- The balance per merchant and currency, kept by the statement that writes the ledger's entries (an entry the
-- unique (kind, source_id) skipped adds nothing): reading the balance summed the merchant's every entry.
CREATE TABLE balance_totals (
    merchant_id text    NOT NULL REFERENCES merchants (id),
    currency    char(3) NOT NULL,
    paid        bigint  NOT NULL,
    refunded    bigint  NOT NULL,
    held        bigint  NOT NULL,
    PRIMARY KEY (merchant_id, currency)
);
-- The old version is stopped during an upgrade (README, Upgrading); the lock makes sure no entry comes meanwhile.
LOCK TABLE balance_entries IN SHARE MODE;
INSERT INTO balance_totals (merchant_id, currency, paid, refunded, held)
SELECT merchant_id, currency,
       coalesce(sum(amount) FILTER (WHERE kind = 'payment'), 0),
       coalesce(-sum(amount) FILTER (WHERE kind IN (
           'refund', 'refund_reversal', 'external_refund', 'external_refund_reversal')), 0),
       coalesce(-sum(amount) FILTER (WHERE kind IN (
           'refund_hold', 'refund_release', 'external_refund_hold', 'external_refund_release')), 0)
  FROM balance_entries GROUP BY merchant_id, currency;
