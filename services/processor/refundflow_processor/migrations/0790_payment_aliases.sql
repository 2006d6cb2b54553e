-- Billing's own id for a payment the processor knows under another (intake's, the platform having registered it
-- through intake's API): billing's payment.succeeded under it is a conflict and not learnt, but billing's
-- payment.disputed names the payment by that id, and must stop its refunds. As intake has them: keyed as disputes
-- are (an id counts only for its merchant), read by the merchant's provider payment.
CREATE TABLE payment_aliases (
    payment_id          text NOT NULL,
    merchant_id         text NOT NULL,
    provider_payment_id text NOT NULL,
    PRIMARY KEY (payment_id, merchant_id)
);
CREATE INDEX payment_aliases_by_provider_payment ON payment_aliases (merchant_id, provider_payment_id);
