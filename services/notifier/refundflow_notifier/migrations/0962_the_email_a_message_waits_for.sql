-- An email that always follows another names the step of the one it waits for: not always the step just before it
-- (a refund and cancel's cancellation waits for the approval, a cancel-only decision's for its goodwill days, which
-- come between them in the refund's order). Kept with the message, so the one queued later releases exactly those
-- waiting for it.
ALTER TABLE messages ADD COLUMN waits_for_step smallint;
-- The messages waiting now waited for the step before theirs; the cancellations move after the goodwill days
-- (``customer_emails.STEP_IN_THE_REFUND`` as of this migration).
UPDATE messages SET waits_for_step = refund_step - 1
WHERE status = 'pending' AND refund_step > 0 AND attempts = 0 AND next_attempt_at > now();
UPDATE messages SET refund_step = 3
WHERE status = 'pending' AND kind IN ('subscription_canceled', 'subscription_cancel_failed') AND refund_id IS NOT NULL;
