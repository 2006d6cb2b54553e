-- A cancel at the period's end whose decision also granted an extension waits for it, so that the access end the
-- customer is told (subscription.canceled's ends_at) is the extended one. Existing requests waited for nothing.
ALTER TABLE subscription_cancels ADD COLUMN after_extension boolean NOT NULL DEFAULT false;
CREATE INDEX subscription_extensions_by_refund ON subscription_extensions (refund_id) WHERE refund_id IS NOT NULL;
