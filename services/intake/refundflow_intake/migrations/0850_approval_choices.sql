-- What each approver chose besides the amount: the subscription action (the default made explicit), the goodwill
-- extension and the message to the customer. An approval held only its amount, so with two approvers the first's
-- choice was dropped and the second's form offered the default. Approvals given before this hold no action: on a
-- subscription's refund they no longer agree with any, and its approval starts over (what they chose is unknown).
ALTER TABLE refund_approvals
    ADD COLUMN subscription_action text
        CHECK (subscription_action IN ('refund_and_cancel', 'refund_only')),
    ADD COLUMN extend_days         integer CHECK (extend_days > 0),
    ADD COLUMN customer_note       text;
