-- A merchant's Idempotency-Key (the API) and the platform's refund.submit key (a command) are kept apart: neither
-- can refuse, or replay, the other's. Command keys were kept prefixed 'refund.submit:', which an API key can spell
-- too: the refund a key made says which it was.
ALTER TABLE idempotency_keys
    ADD COLUMN channel text NOT NULL DEFAULT 'api' CHECK (channel IN ('api', 'command')),
    DROP CONSTRAINT idempotency_keys_pkey;
UPDATE idempotency_keys k
   SET channel = 'command', key = substr(k.key, length('refund.submit:') + 1)
  FROM refunds r
 WHERE r.id = k.refund_id AND r.channel = 'command' AND k.key LIKE 'refund.submit:%';
ALTER TABLE idempotency_keys
    ALTER COLUMN channel DROP DEFAULT,
    ADD PRIMARY KEY (merchant_id, channel, key);
