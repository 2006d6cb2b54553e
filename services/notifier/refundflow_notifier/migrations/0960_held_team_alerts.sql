-- A team alert its merchant's settings routed nowhere when its event was handled (no settings heard of yet, or none
-- naming a channel), kept for settings that may still come: they are keyed by merchant, the alert's event by
-- payment, so they travel on other partitions in no order. Settings naming a channel send, once, those that happened
-- since them (held_team_alerts.py); the rest go TEAM_ALERT_HOLD_DAYS after they happened (retention). Only the
-- alerts of events webhook_events does not keep: a webhook event's are made again from it.
CREATE TABLE held_team_alerts (
    event_id    uuid        NOT NULL,
    kind        text        NOT NULL,
    merchant_id text        NOT NULL,
    title       text        NOT NULL,
    details     json        NOT NULL,  -- json, not jsonb: the details keep their order, as the alert lists them
    occurred_at timestamptz NOT NULL,
    traceparent text,
    PRIMARY KEY (event_id, kind)
);
CREATE INDEX held_team_alerts_by_merchant ON held_team_alerts (merchant_id, occurred_at);
CREATE INDEX held_team_alerts_occurred_at ON held_team_alerts (occurred_at);
