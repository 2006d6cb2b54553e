-- A grant is made unrecorded on the subscription when the merchant's own metadata leaves no key for its record
-- (Stripe keeps 50 keys): decided with the new period end, from the same read. Rows from before: recorded, as the
-- change they wait for was planned.
ALTER TABLE subscription_extensions ADD COLUMN records_grant boolean NOT NULL DEFAULT true;
