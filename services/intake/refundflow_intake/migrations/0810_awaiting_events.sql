-- Events that wait for another topic's event: a refund.submit or an external refund naming a payment billing's
-- payment.succeeded has not registered yet, a refund.reversed read before its refund.succeeded. Each is handled
-- (inbox) by parking it here; it is applied in the transaction that records what it awaits, or settled at its
-- deadline (awaited_events.py). Retried in place instead, it held its partition's lane, where the awaited event was.
CREATE TABLE awaiting_events (
    event_id   uuid PRIMARY KEY,
    event_type text        NOT NULL,
    awaits     text        NOT NULL, -- 'payment:<merchant id>:<payment id>' or 'refund_outcome:<refund id>'
    headers    jsonb       NOT NULL, -- the CloudEvent's attributes, as its Kafka headers
    data       jsonb       NOT NULL,
    parked_at  timestamptz NOT NULL DEFAULT now(),
    seq        bigserial   NOT NULL, -- the order they came in: a batch parks its events at one now()
    deadline   timestamptz NOT NULL
);
CREATE INDEX awaiting_events_by_awaits ON awaiting_events (awaits);
CREATE INDEX awaiting_events_by_deadline ON awaiting_events (deadline);
