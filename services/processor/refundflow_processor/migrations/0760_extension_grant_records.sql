-- A grant is recorded on the subscription at the provider, in the change that extends it (metadata
-- rf_ext_<grant>), so that reading the grant again after a restore adds no days again. The records of older grants
-- the change removes (Stripe keeps 50 keys) are chosen with the new period end, from the same read of the
-- subscription. Rows from before: none to remove.
ALTER TABLE subscription_extensions ADD COLUMN stale_grant_keys text[] NOT NULL DEFAULT '{}';
