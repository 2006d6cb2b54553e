-- What the customer's email about an outcome needs, kept from the decision that asked for it (merchant name,
-- sealed portal link, the policy's process time, the note to the customer): events reach the notifier in any
-- order across topics, so each outcome carries its own.
ALTER TABLE refunds ADD COLUMN to_customer jsonb NOT NULL DEFAULT '{}';
ALTER TABLE subscription_cancels ADD COLUMN to_customer jsonb NOT NULL DEFAULT '{}';
ALTER TABLE subscription_extensions ADD COLUMN to_customer jsonb NOT NULL DEFAULT '{}';
