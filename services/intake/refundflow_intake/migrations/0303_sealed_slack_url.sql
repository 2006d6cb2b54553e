-- The Slack webhook URL is a credential: it rests sealed (SecretBox, context = merchant id). A URL saved in clear
-- before this is sealed by intake at start-up (the key is intake's, not the database's), then cleared.
ALTER TABLE notification_settings ADD COLUMN sealed_slack_webhook_url text;
