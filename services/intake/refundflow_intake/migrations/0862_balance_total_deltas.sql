-- What each statement writing ledger entries adds to its merchant's totals, one row per (merchant, currency) it
-- changed, folded into balance_totals every few seconds by one job (ledger.fold_totals): adding to the totals row
-- in the writing statement locked it until commit, so every transaction touching a merchant's ledger waited for
-- the one before. The balance reads the totals and the deltas not folded yet, in one statement.
-- No reference to merchants: each delta comes from entries that checked theirs, in the same statement.
CREATE TABLE balance_total_deltas (
    id          bigserial PRIMARY KEY,
    merchant_id text      NOT NULL,
    currency    char(3)   NOT NULL,
    paid        bigint    NOT NULL,
    refunded    bigint    NOT NULL,
    held        bigint    NOT NULL
);
CREATE INDEX balance_total_deltas_by_merchant ON balance_total_deltas (merchant_id);
