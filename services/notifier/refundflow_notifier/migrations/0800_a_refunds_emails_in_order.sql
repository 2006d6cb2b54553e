-- A customer's emails about one refund go one at a time, in the refund's order ("received", then "approved", then
-- "on its way"), whatever order their events came in: the claim holds a message back while one before it (lower
-- step, or the same step queued earlier) to the same recipient is pending, and one that always follows another
-- ("on its way") waits a while for it when it came in first. The index finds a refund's messages to one recipient,
-- for both.
ALTER TABLE messages ADD COLUMN refund_step smallint;
-- The messages already kept get their step (``customer_emails.STEP_IN_THE_REFUND`` as of this migration), so an
-- approval sent before the upgrade still counts as the email before its refund's "on its way".
UPDATE messages SET refund_step = CASE kind
    WHEN 'refund_requested' THEN 0
    WHEN 'refund_approved' THEN 1 WHEN 'refund_rejected' THEN 1
    WHEN 'refund_succeeded' THEN 2 WHEN 'refund_failed' THEN 2
    WHEN 'subscription_canceled' THEN 2 WHEN 'subscription_extended' THEN 2
    WHEN 'refund_reversed' THEN 3
END
WHERE refund_id IS NOT NULL;
CREATE INDEX messages_by_refund ON messages (refund_id, recipient, refund_step, id);
