-- What was refunded of a payment is what the provider reports, even past the payment's amount: a new external
-- refund can be reported before an older one's failure (the sync scan lists newest first), and a bound here
-- dead-lettered it and lost money that had left. Requests and approvals still keep to the refundable amount
-- (domain.refundable_amount, under the payment's lock).
ALTER TABLE payments DROP CONSTRAINT payments_check;
ALTER TABLE payments ADD CONSTRAINT payments_refunded_amount_check CHECK (refunded_amount >= 0);
