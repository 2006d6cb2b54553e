-- A rolled signing secret: the previous one (sealed) still signs beside the new one until previous_secret_expires_at,
-- so the merchant's receivers can switch to the new secret without refusing a webhook meanwhile.
ALTER TABLE webhook_endpoints
    ADD COLUMN previous_encrypted_secret text,
    ADD COLUMN previous_secret_expires_at timestamptz;
