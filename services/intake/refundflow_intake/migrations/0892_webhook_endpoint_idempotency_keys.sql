-- Idempotency-Key on POST /v1/webhook-endpoints: a merchant's API key, claimed as a refund's is (one key space per
-- merchant: a key used for a refund and then for an endpoint is refused as reused), and the endpoint it created.
ALTER TABLE idempotency_keys
    ADD COLUMN webhook_endpoint_id text REFERENCES webhook_endpoints (id),
    ADD CONSTRAINT idempotency_keys_made_one_thing CHECK (refund_id IS NULL OR webhook_endpoint_id IS NULL);
-- The endpoint's secret_form_key (the key of the request that made its current secret) holds that Idempotency-Key
-- too, so a retry shows the secret again only while it is still the one the creation made.
