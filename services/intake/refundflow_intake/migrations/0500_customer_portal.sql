-- The customer portal (issue 11): the merchant's switch, what the customer asked of their subscription, and what
-- each decision tells the customer.
ALTER TABLE merchants ADD COLUMN portal_enabled boolean NOT NULL DEFAULT true;

-- Asked through the portal for a subscription: true to cancel it too, false to keep it; null: not asked.
ALTER TABLE refunds ADD COLUMN cancel_subscription boolean;

-- The note told to the customer with the decision. A rejection's note always was; an approval's note stays the
-- team's (decision_note), and a note to the customer is its own field. Cancel-only decisions wrote the team's
-- note into the rejection email: that stops, so their customer note starts empty.
ALTER TABLE refunds ADD COLUMN customer_note text;
UPDATE refunds SET customer_note = decision_note
WHERE status = 'rejected' AND subscription_action IS DISTINCT FROM 'cancel_only';

-- What customers are told about the time a refund takes is the refund policy's process_time alone.
ALTER TABLE notification_settings DROP COLUMN refund_process_time;
