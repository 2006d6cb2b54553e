-- When the settings announcement a merchant's row holds was made (the event's time), and intake's number for it
-- (per merchant): an older announcement, a dead letter replayed after a newer one was handled, changes nothing.
-- The number orders those close in time (commit order), the time those further apart (intake's numbers restart
-- from a backup's when its database is restored). Rows from before are older than any announcement.
ALTER TABLE merchant_settings
    ADD COLUMN announced_at timestamptz NOT NULL DEFAULT '-infinity',
    ADD COLUMN announced_sequence bigint NOT NULL DEFAULT 0;
