-- A key may refund and still be refused subscriptions (a restricted key): an episode, and its alerts, belong to one
-- kind of provider call, ended only by a definite answer of that kind. Rows from before were refunds' alerts.
ALTER TABLE provider_auth_alerts ADD COLUMN kind text NOT NULL DEFAULT 'refunds';
ALTER TABLE provider_auth_alerts DROP CONSTRAINT provider_auth_alerts_pkey;
ALTER TABLE provider_auth_alerts ADD PRIMARY KEY (kind, merchant_id);
ALTER TABLE provider_auth_alerts ALTER COLUMN kind DROP DEFAULT;
