-- The trace each message and each webhook event continues (W3C traceparent of the span that queued it): the email,
-- the Slack post and every webhook delivery (which sends it as its `traceparent` header) join the refund's trace.
ALTER TABLE messages ADD COLUMN traceparent text;
ALTER TABLE webhook_events ADD COLUMN traceparent text;
