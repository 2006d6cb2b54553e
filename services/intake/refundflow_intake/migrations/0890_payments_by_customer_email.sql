-- The dashboard's search by a customer email's start (lower(customer_email) LIKE 'prefix%') read the merchant's
-- payments newest first until 21 matched: all of them when fewer do. text_pattern_ops, as a LIKE prefix can use a
-- btree index only in the C collation otherwise (databases are made in the server's locale, en_US.UTF-8 or
-- C.UTF-8). Built in the migration's transaction, as 0860's: the old version is stopped during an upgrade.
CREATE INDEX payments_by_merchant_email ON payments (merchant_id, lower(customer_email) text_pattern_ops);
