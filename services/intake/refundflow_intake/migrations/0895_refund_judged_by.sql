-- The policy's terms a request was judged by (its window, excluded categories and accepted reasons) and when it was
-- asked, written with the request: the refund page explains its flags in these, not in the policy as the merchant
-- changed it since. NULL on requests made before: those are explained in today's policy.
ALTER TABLE refunds ADD COLUMN judged_by jsonb;
