-- A replay of every event an endpoint subscribes to since a time, walked in batches by the replay job
-- (webhook_replays.py): the request only records it, and the walk keeps its place here (the last event it queued),
-- so an instance that stops mid-walk leaves it to be resumed, not started again.
CREATE TABLE webhook_replays (
    id                bigserial   PRIMARY KEY,
    endpoint_id       text        NOT NULL REFERENCES webhook_endpoints (id),
    since             timestamptz NOT NULL,
    reach             interval    NOT NULL,
    after_occurred_at timestamptz,
    after_event_id    uuid,
    scheduled         bigint      NOT NULL DEFAULT 0,
    locked_until      timestamptz,
    requested_at      timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz
);
-- The same replay asked again while it is walked joins the walk.
CREATE UNIQUE INDEX webhook_replays_walking ON webhook_replays (endpoint_id, since) WHERE finished_at IS NULL;
CREATE INDEX webhook_replays_to_walk ON webhook_replays (id) WHERE finished_at IS NULL;
CREATE INDEX webhook_replays_finished_at ON webhook_replays (finished_at);
-- A replay recorded wakes the replay job (channel notifier_webhook_replays), as queued work wakes the workers.
CREATE TRIGGER webhook_replays_notify_insert AFTER INSERT ON webhook_replays
    FOR EACH ROW EXECUTE FUNCTION notify_messages();
