-- A customer's emails about one refund go one at a time, in the refund's order ("received", then "approved", then
-- "on its way"), whatever order their events came in: the claim holds a message back while one before it (lower
-- step, or the same step queued earlier) to the same recipient is pending. Messages queued before this have no
-- step and keep no order, as before. The index keeps the check to the refund's own pending messages.
ALTER TABLE messages ADD COLUMN refund_step smallint;
CREATE INDEX messages_pending_by_refund ON messages (refund_id, recipient, refund_step, id) WHERE status = 'pending';
