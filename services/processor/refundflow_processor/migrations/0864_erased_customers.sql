-- Payments whose customer the merchant erased (customer.erased): their refunds, cancels and extensions keep no
-- address, note to the customer or portal link, and a decision read after the erasure (events of one payment come on
-- several topics) keeps none either, so no outcome carries them again.
CREATE TABLE erased_payments (
    payment_id  text PRIMARY KEY,
    merchant_id text        NOT NULL,
    erased_at   timestamptz NOT NULL DEFAULT now()
);
