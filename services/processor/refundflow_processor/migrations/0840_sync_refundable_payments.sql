-- The sync job scans a payment when its next scan is due (sync_schedule.next_scan_at: recent payments often, old
-- ones seldom), and no more once a scan came after its refund window (SYNC_REFUND_WINDOW_DAYS) closed: NULL. It
-- scanned every payment ever known in turn, so with a million a refund made in Stripe's dashboard waited a week.
ALTER TABLE payments ADD COLUMN next_sync_at timestamptz;
-- Payments known before: scheduled as the rule would have after their last scan, with the default window (365
-- days); one never scanned is due now.
UPDATE payments SET next_sync_at = CASE
    WHEN last_synced_at = '-infinity' THEN '-infinity'
    WHEN last_synced_at >= created_at + interval '365 days' THEN NULL
    ELSE least(created_at + interval '365 days', last_synced_at
               + least(greatest((last_synced_at - created_at) / 4, interval '1 minute'), interval '7 days'))
END;
ALTER TABLE payments ALTER COLUMN next_sync_at SET DEFAULT '-infinity';
-- Only the payments still scanned: those past their window, most of a long history, are not in it.
CREATE INDEX payments_sync_due ON payments (next_sync_at) WHERE next_sync_at IS NOT NULL;
DROP INDEX payments_by_sync;
