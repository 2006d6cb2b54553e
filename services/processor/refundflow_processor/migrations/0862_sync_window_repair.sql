-- 0840 closed every payment scanned a year (365 days) after the processor learned of it, not SYNC_REFUND_WINDOW_DAYS:
-- with a longer window, those 365 days to the window's end old were never scanned again. Each closed payment is made
-- due for the schedule to decide, '-infinity' (a scan asked for is due at a real time): the sync job's first run
-- schedules it again under the configured window from its last scan, with no call to the provider, and sets it back
-- to never when that scan came after its window closed (all of them, with the default window).
UPDATE payments SET next_sync_at = '-infinity' WHERE next_sync_at IS NULL AND last_synced_at > '-infinity';
