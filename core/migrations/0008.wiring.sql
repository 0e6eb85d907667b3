-- Wiring trace to the cold chain and the audit trail.

-- Custody drives monitoring: a channel holding batches now is watched against the profile of their
-- product (by name: the products and the default profiles share 'mango', 'citrus', 'tea'), unless
-- someone set the channel's profile explicitly (`agritrace channels profile`), which always wins.
-- One row per channel (the evaluator and the summary join on it): when a room holds several
-- products at once, the goods put in last decide (DISTINCT ON ... ORDER BY started_at DESC).
CREATE OR REPLACE VIEW coldchain_monitored_channels AS
    SELECT cp.channel_id, cp.profile_id, 'channel'::text AS source
      FROM coldchain_channel_profiles cp
    UNION ALL
    (SELECT DISTINCT ON (k.channel_id) k.channel_id, p.id AS profile_id, 'custody'::text AS source
       FROM batch_custody k
       JOIN batches b ON b.id = k.batch_id
       JOIN coldchain_profiles p ON p.name = b.product
      WHERE k.started_at <= now() AND (k.ended_at IS NULL OR k.ended_at > now())
        AND NOT EXISTS (SELECT 1 FROM coldchain_channel_profiles cp WHERE cp.channel_id = k.channel_id)
      ORDER BY k.channel_id, k.started_at DESC);

-- The evaluator reads the view every poll: custody still open must not need a pass over all of history.
CREATE INDEX batch_custody_open_idx ON batch_custody (ended_at);
CREATE INDEX batch_custody_channel_idx ON batch_custody (channel_id, started_at);

-- Per-batch cold-chain summaries (what the consumer page shows: the batch and its sources), written
-- once every custody interval they depend on has ended, before raw-readings retention drops those
-- readings (the trace domain's retention guard, `agritrace.trace.coldchain.retention_guard`). A
-- summary covers the custody window [covers_from, covers_to]; custody recorded outside it later
-- makes it stale, and the page and the guard then treat the batch as not summarised.
CREATE TABLE batch_coldchain_summaries (
    batch_id       bigint PRIMARY KEY REFERENCES batches (id) ON DELETE CASCADE,
    summarised_at  timestamptz NOT NULL DEFAULT now(),
    covers_from    timestamptz NOT NULL,
    covers_to      timestamptz NOT NULL,
    summary        jsonb NOT NULL,
    chart_svg      text NOT NULL
);

-- The audit trail on the trace tables that record history (not the code_scans hypertable: scans are
-- traffic, not records).
DO $$ BEGIN
    PERFORM audit_attach('batches');
    PERFORM audit_attach('batch_lineage');
    PERFORM audit_attach('trace_events');
    PERFORM audit_attach('batch_custody');
    PERFORM audit_attach('certificates');
    PERFORM audit_attach('compliance_certificates');
    PERFORM audit_attach('inspections');
    PERFORM audit_attach('batch_recalls');
    -- The chart is drawn from the summary's series: the record needs the figures, not the picture.
    PERFORM audit_attach('batch_coldchain_summaries', ARRAY['chart_svg']);
END $$;

-- Codes are issued by the ten thousand (one COPY per label run). One audit entry per code made
-- issuing 10,000 codes 9x slower (0.13 s -> 1.1 s, and the audit lock held all that time), so an
-- issuance is ONE entry, 'code_issues' keyed '<batch_id>:<first serial>', holding the batch, the count
-- and the sha256 of the issued serials (sorted, one per line): whoever holds the label list can
-- re-check it. Later edits and deletions of a code are recorded one by one as 'codes' entries (a
-- scan's counters change with every scan, so they stay out). The edits trigger is not named
-- `audit`, so `audit verify` does not expect an entry per code; what it does check for codes is the
-- hash chain.
CREATE FUNCTION audit_code_issue() RETURNS trigger LANGUAGE plpgsql SET timezone = 'UTC' AS $$
DECLARE
    g record;
BEGIN
    FOR g IN
        SELECT batch_id, count(*) AS n, min(serial) AS first_serial, max(serial) AS last_serial,
               encode(sha256(convert_to(string_agg(serial, E'\n' ORDER BY serial), 'UTF8')), 'hex') AS digest
          FROM issued GROUP BY batch_id ORDER BY batch_id
    LOOP
        PERFORM audit_append('code_issues', g.batch_id || ':' || g.first_serial, 'insert', NULL,
                             jsonb_build_object('batch_id', g.batch_id, 'count', g.n,
                                                'first_serial', g.first_serial, 'last_serial', g.last_serial,
                                                'serials_sha256', g.digest));
    END LOOP;
    RETURN NULL;
END
$$;
CREATE TRIGGER audit_issue AFTER INSERT ON codes REFERENCING NEW TABLE AS issued
    FOR EACH STATEMENT EXECUTE FUNCTION audit_code_issue();
CREATE TRIGGER audit_edits AFTER UPDATE OR DELETE ON codes
    FOR EACH ROW EXECUTE FUNCTION audit_record('{serial}', '{scan_count,first_scan_at,last_scan_at}');
