-- Endpoints the notifier disabled before it announced disables (webhook_endpoint.disabled) still show enabled in
-- intake: they are marked, and announced once at start-up (endpoint_disable_announcements), through the outbox.
-- A disable from now on is announced with it, so new rows are never marked.
ALTER TABLE webhook_endpoints ADD COLUMN disable_unannounced boolean NOT NULL DEFAULT false;
UPDATE webhook_endpoints SET disable_unannounced = true
WHERE NOT enabled AND NOT deleted AND disabled_reason IS NOT NULL;
