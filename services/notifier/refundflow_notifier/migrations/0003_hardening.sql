-- The Slack webhook URL is a credential: it rests sealed (SecretBox, bound to the merchant id). The notifier
-- seals what is left in the old column when it starts (the key is not in the database), then empties it.
ALTER TABLE merchant_settings RENAME COLUMN slack_webhook_url TO legacy_slack_webhook_url;
ALTER TABLE merchant_settings ADD COLUMN sealed_slack_webhook_url text;

-- A Slack message's recipient is the merchant's Slack channel, never its URL: the URL is opened to send.
UPDATE messages SET recipient = 'slack', dedupe_key = event_id || '/' || kind || '/slack' WHERE channel = 'slack';

-- A message's body is wiped once the message is done; the row, a record without the content, is pruned later.
ALTER TABLE messages ALTER COLUMN body DROP NOT NULL;
ALTER TABLE messages ADD COLUMN finished_at timestamptz;
UPDATE messages SET body = NULL, finished_at = coalesce(sent_at, created_at) WHERE status <> 'pending';
CREATE INDEX messages_finished ON messages (finished_at) WHERE finished_at IS NOT NULL;
-- Claiming reads each merchant's pending messages in order, and counts the leased ones.
DROP INDEX messages_due;
CREATE INDEX messages_pending_by_merchant ON messages (merchant_id, next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX messages_leased ON messages (merchant_id) WHERE locked_until IS NOT NULL;

-- Deliveries know their merchant (per-merchant caps when claiming); a delivery to an endpoint that was
-- disabled or deleted is cancelled, not left pending.
ALTER TABLE webhook_deliveries ADD COLUMN merchant_id text;
UPDATE webhook_deliveries d SET merchant_id = e.merchant_id FROM webhook_endpoints e WHERE e.id = d.endpoint_id;
ALTER TABLE webhook_deliveries ALTER COLUMN merchant_id SET NOT NULL;
ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_status_check;
ALTER TABLE webhook_deliveries ADD CONSTRAINT webhook_deliveries_status_check
    CHECK (status IN ('pending', 'succeeded', 'failed', 'cancelled'));
UPDATE webhook_deliveries d SET status = 'cancelled', finished_at = now(), locked_until = NULL
FROM webhook_endpoints e WHERE e.id = d.endpoint_id AND d.status = 'pending' AND (NOT e.enabled OR e.deleted);
-- Claiming reads each endpoint's pending deliveries in order, and counts the leased ones.
DROP INDEX webhook_deliveries_due;
CREATE INDEX webhook_deliveries_pending_by_endpoint ON webhook_deliveries (endpoint_id, next_attempt_at, id)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_leased ON webhook_deliveries (endpoint_id) WHERE locked_until IS NOT NULL;
CREATE INDEX webhook_deliveries_finished ON webhook_deliveries (finished_at) WHERE status <> 'pending';
CREATE INDEX webhook_deliveries_by_event ON webhook_deliveries (event_id);

-- Pruning a delivery takes its attempts with it.
ALTER TABLE webhook_attempts DROP CONSTRAINT webhook_attempts_delivery_id_fkey;
ALTER TABLE webhook_attempts ADD CONSTRAINT webhook_attempts_delivery_id_fkey
    FOREIGN KEY (delivery_id) REFERENCES webhook_deliveries (id) ON DELETE CASCADE;

-- Reversal is an explicit event now (refund.reversed): no more guessing it from the order of outcomes.
DROP TABLE refund_outcomes;
