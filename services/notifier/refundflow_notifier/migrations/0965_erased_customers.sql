-- Payments whose customer the merchant erased (customer.erased): the notifier keeps no contact for them, and sends
-- their customer no email, whatever a later or replayed event of the payment carries.
CREATE TABLE erased_payments (
    payment_id  text PRIMARY KEY,
    merchant_id text        NOT NULL,
    erased_at   timestamptz NOT NULL DEFAULT now()
);
