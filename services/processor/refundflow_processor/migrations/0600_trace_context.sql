-- The trace each attempt continues (W3C traceparent of the span that scheduled it): the executor's provider call
-- and the outcome's events join the refund's trace, and `refundflow refund` shows its trace id.
ALTER TABLE refund_attempts ADD COLUMN traceparent text;
