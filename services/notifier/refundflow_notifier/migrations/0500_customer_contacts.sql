-- What the notifier last heard of each payment's customer (issue 11): their address, the merchant's name, the
-- freshest portal link (sealed, with its expiry) and the refund policy's process time. An email uses what its own
-- event carries, and this for what it does not (a fresher link, say).
CREATE TABLE customer_contacts (
    payment_id            text PRIMARY KEY,
    merchant_id           text        NOT NULL,
    customer_email        text,
    merchant_name         text,
    sealed_portal_url     text,
    portal_url_expires_at timestamptz,
    process_time          text,
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX customer_contacts_updated ON customer_contacts (updated_at);

-- What customers are told about the time a refund takes is the refund policy's process time, from intake.
ALTER TABLE merchant_settings DROP COLUMN refund_process_time;
