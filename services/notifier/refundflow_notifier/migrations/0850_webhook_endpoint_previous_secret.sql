-- A rolled signing secret: webhooks carry a second v1 signature, made with the previous secret, until
-- previous_secret_expires_at (intake's overlap).
ALTER TABLE webhook_endpoints
    ADD COLUMN previous_encrypted_secret text,
    ADD COLUMN previous_secret_expires_at timestamptz;
