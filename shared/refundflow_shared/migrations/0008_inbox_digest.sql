-- A digest of the message each inbox row was claimed for (its source, key and value): an event id handled before
-- under another message of its type is a reused id, not a redelivery. Rows claimed before keep none: they cannot
-- tell, and are taken as matching.
ALTER TABLE inbox ADD COLUMN digest bytea;
