-- A test service's visible effect. No unique key on purpose: a duplicate effect shows as a second row.
CREATE TABLE effects (
    id         bigserial PRIMARY KEY,
    event_id   uuid   NOT NULL,
    payment_id text   NOT NULL,
    sequence   bigint NOT NULL,
    instance   text   NOT NULL
);
