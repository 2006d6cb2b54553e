-- A merchant's erasure of one customer's personal data (POST /v1/customers/erase, GDPR Art. 17). The customer is
-- named by an HMAC of their address (lower case) keyed per deployment and merchant, never the address itself: it
-- shows that and when they were erased without keeping who they were.
CREATE TABLE customer_erasures (
    id              text PRIMARY KEY,
    merchant_id     text        NOT NULL REFERENCES merchants (id),
    address_hmac    bytea       NOT NULL,
    payments_erased integer     NOT NULL,
    refunds_erased  integer     NOT NULL,
    erased_by       text        NOT NULL,  -- who asked: the API key (actors.api_key), as the audit trail names it
    erased_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX customer_erasures_by_address ON customer_erasures (merchant_id, address_hmac);

-- A payment whose customer was erased: its address is '' and its name null from then on, and a replayed
-- registration naming them is the same payment (it brings nothing back).
ALTER TABLE payments ADD COLUMN erased_at timestamptz;

-- Idempotency-Key on POST /v1/customers/erase: a retry is answered the first erasure.
ALTER TABLE idempotency_keys
    ADD COLUMN customer_erasure_id text REFERENCES customer_erasures (id),
    DROP CONSTRAINT idempotency_keys_made_one_thing,
    ADD CONSTRAINT idempotency_keys_made_one_thing
        CHECK (num_nonnulls(refund_id, webhook_endpoint_id, customer_erasure_id) <= 1);
