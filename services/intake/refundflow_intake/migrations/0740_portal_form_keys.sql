-- The portal's form carries a single-use key, kept as the API's Idempotency-Key is under the portal's channel: the
-- same form sent twice (a double click, two tabs) is one request, also once the first is approved at once.
ALTER TABLE idempotency_keys
    DROP CONSTRAINT idempotency_keys_channel_check,
    ADD CONSTRAINT idempotency_keys_channel_check CHECK (channel IN ('api', 'command', 'portal'));
