-- A customer's emails about one refund go one at a time, in the refund's order ("received", then "approved", then
-- "on its way"), whatever order their events came in: the claim holds a message back while one before it (lower
-- step, or the same step queued earlier) to the same recipient is pending, and one that always follows another
-- ("on its way") waits a while for it when it came in first. Messages queued before this have no step and keep no
-- order, as before. The index finds a refund's messages to one recipient, for both.
ALTER TABLE messages ADD COLUMN refund_step smallint;
CREATE INDEX messages_by_refund ON messages (refund_id, recipient, refund_step, id);
