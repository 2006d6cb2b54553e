-- Wake the executors when an attempt is scheduled (NOTIFY is delivered on commit), from the insert itself: no
-- round trip of its own.
CREATE FUNCTION notify_refund_attempts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '_' || TG_TABLE_NAME, '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER refund_attempts_notify AFTER INSERT ON refund_attempts
    FOR EACH STATEMENT EXECUTE FUNCTION notify_refund_attempts();
