-- Claiming reads each endpoint's pending live deliveries before its replays: a replay queued ahead of a live event
-- no longer holds it up.
CREATE INDEX webhook_deliveries_pending_live_first ON webhook_deliveries (endpoint_id, replay, next_attempt_at, id)
    WHERE status = 'pending';
DROP INDEX webhook_deliveries_pending_by_endpoint;
