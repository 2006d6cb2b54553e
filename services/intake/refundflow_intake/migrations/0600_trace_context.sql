-- The trace of the step that wrote each timeline entry (W3C traceparent of its span: the merchant's request, or the
-- handled event), so `refundflow refund` can show a refund's trace ids.
ALTER TABLE refund_timeline ADD COLUMN traceparent text;
