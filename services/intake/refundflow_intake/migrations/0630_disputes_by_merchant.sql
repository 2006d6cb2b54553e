-- A dispute counts only for the merchant it names: one naming another merchant's payment id neither blocks that
-- merchant's refunds nor keeps its own dispute of the payment from being recorded. Still keyed without the payment
-- (a dispute may arrive before the payment it is about).
ALTER TABLE payment_disputes DROP CONSTRAINT payment_disputes_pkey, ADD PRIMARY KEY (payment_id, merchant_id);
