-- A delivery queued wakes the webhook workers; an insert that queued none (an event no endpoint subscribes to,
-- as with every merchant without webhooks, or one already queued) no longer does. Per row: NOTIFY keeps one
-- notification per channel and transaction however many deliveries an event fans out to.
DROP TRIGGER webhook_deliveries_notify_insert ON webhook_deliveries;
CREATE TRIGGER webhook_deliveries_notify_insert AFTER INSERT ON webhook_deliveries
    FOR EACH ROW EXECUTE FUNCTION notify_messages();
-- The same for messages: one queued to send wakes the message workers; one kept as already finished (refused
-- before sending) or already queued (the same event, kind and recipient) does not.
DROP TRIGGER messages_notify ON messages;
CREATE TRIGGER messages_notify AFTER INSERT ON messages
    FOR EACH ROW WHEN (NEW.status = 'pending') EXECUTE FUNCTION notify_messages();
