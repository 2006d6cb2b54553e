-- A recipient's messages about one refund go one at a time, in the order they were queued ("approved" before "on
-- its way"): the claim holds a message back while an earlier one of its refund and recipient is pending. This
-- index keeps that check to the refund's own pending messages, however many are queued.
CREATE INDEX messages_pending_by_refund ON messages (refund_id, recipient, id) WHERE status = 'pending';
