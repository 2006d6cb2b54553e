-- The sequence number (intake's, per merchant) of the settings announcement a merchant's row holds: an older
-- announcement, a dead letter replayed after a newer one was handled, changes nothing. Rows from before hold 0, older
-- than any announcement.
ALTER TABLE merchant_settings ADD COLUMN announced_sequence bigint NOT NULL DEFAULT 0;
