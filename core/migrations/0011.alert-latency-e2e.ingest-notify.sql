-- depends: 0003.devices-ingest 0004.coldchain
-- The alert evaluator used to find new readings only by polling channels.last_ingested_at (every
-- 0.5 s, after a pass that itself takes a while under load): most of an alert's latency was that
-- wait. Every statement that advances last_ingested_at (the ingest worker's batch commit) now also
-- notifies 'coldchain_ingest'; the evaluator LISTENs and starts its next pass at once. PostgreSQL
-- delivers the notification at commit, folds identical ones within a transaction, and drops it on
-- rollback. Polling stays as the fallback (a notification missed during a reconnect).
CREATE FUNCTION coldchain_notify_ingest() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('coldchain_ingest', '');
    RETURN NULL;
END $$;

CREATE TRIGGER channels_ingest_notify
    AFTER UPDATE OF last_ingested_at ON channels
    FOR EACH STATEMENT EXECUTE FUNCTION coldchain_notify_ingest();
