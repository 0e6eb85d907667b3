-- depends: 0009.b.reading-rollup
-- channels.rollup_from is bookkeeping the ingest worker rewrites with every batch, like
-- last_time / last_value / last_ingested_at: left out of the channels audit record, so ingest
-- writes no audit entries (and the rollup's marks none either). Re-attaching keeps the record's
-- other columns and adds no entry for rows already audited.
DO $$ BEGIN
    PERFORM audit_attach('channels', ARRAY['last_time', 'last_value', 'last_ingested_at', 'rollup_from']);
END $$;

-- Channels with readings already: rolled in full on the job's first run.
UPDATE channels SET rollup_from = '-infinity' WHERE last_time IS NOT NULL;
