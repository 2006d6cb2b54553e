-- Idempotency-Key on POST /v1/merchants: the platform's keys belong to no merchant (idempotency_keys holds each
-- merchant's), so they are kept apart, each with its first request's fingerprint and the merchant that request made.
CREATE TABLE merchant_creation_keys (
    key          text PRIMARY KEY,
    request_hash bytea       NOT NULL,
    merchant_id  text REFERENCES merchants (id),
    created_at   timestamptz NOT NULL DEFAULT now()
);
