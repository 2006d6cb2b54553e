-- A webhook no longer carries the customer's sealed portal link (a credential only intake and the notifier may open):
-- the events kept before, which a replay would send again as they are, lose it too. The rest of each is kept; its
-- JSON is written out again by PostgreSQL (keys in jsonb's order), which a receiver verifying the signature over the
-- body it received does not notice: a replay is signed when it is sent.
UPDATE webhook_events
SET payload = (payload::jsonb #- '{data,portal_link}')::text
WHERE payload::jsonb -> 'data' ? 'portal_link';
