-- What a payment's subscription is waiting for and what the provider refused, shown with the payment (API and
-- dashboard): the goodwill days granted and not yet made, and the latest refusal of a cancel and of an extension
-- (a cancel's is cleared when a cancel is asked again, an extension's when another is granted).
ALTER TABLE payments
    ADD COLUMN subscription_extension_pending_days integer,
    ADD COLUMN subscription_extension_failed_at timestamptz,
    ADD COLUMN subscription_extension_failure text,
    ADD COLUMN subscription_cancel_failed_at timestamptz,
    ADD COLUMN subscription_cancel_failure text;
