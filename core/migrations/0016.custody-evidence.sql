-- depends: 0015.counterfeit-review
-- The evidence a consumer page relies on enters the audit chain (issue 12, item 4): readings are a
-- hypertable of traffic and not audited row by row, so when a lot's custody has ended its cold-chain
-- summary is recorded (audited table batch_coldchain_summaries) with the number of readings it was
-- computed from and a digest of them; the alert figures the evaluator rewrites (worst value, minutes
-- out) reach the chain through the alert's history events, now audited too. `audit_evidence_drift()`
-- (run by `agritrace audit verify`) recomputes both.

ALTER TABLE batch_coldchain_summaries
    ADD COLUMN readings_count bigint,
    ADD COLUMN readings_sha256 text CHECK (readings_sha256 ~ '^[0-9a-f]{64}$');

-- A batch and every batch upstream of it (its lot's history).
CREATE FUNCTION batch_history(batch bigint) RETURNS bigint[] LANGUAGE sql STABLE AS $$
    WITH RECURSIVE up(id, depth) AS (
        SELECT batch, 0
        UNION
        SELECT l.parent_id, up.depth + 1 FROM batch_lineage l JOIN up ON l.child_id = up.id WHERE up.depth < 64
    )
    SELECT array_agg(DISTINCT id ORDER BY id) FROM up
$$;

-- The readings inside the custody intervals of these batches, each once, as lines
--   <channel id> TAB <time, UTC, ISO 8601 with microseconds and Z> TAB <value as IEEE 754 binary64, big-endian hex>
-- ordered by channel and time, joined by LF: their count and the SHA-256 of that text (hex).
-- Anyone with the raw series can recompute it (tests/security/test_custody_evidence.py does, in Python).
CREATE FUNCTION custody_readings_digest(batch_ids bigint[], OUT n bigint, OUT sha256 text)
LANGUAGE sql STABLE SET timezone = 'UTC' AS $$
    SELECT count(*),
           encode(sha256(convert_to(coalesce(string_agg(
               r.channel_id::text || E'\t' || to_char(r.time, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
               || E'\t' || encode(float8send(r.value), 'hex'), E'\n' ORDER BY r.channel_id, r.time), ''), 'UTF8')), 'hex')
      FROM (SELECT DISTINCT r.channel_id, r.time, r.value
              FROM batch_custody k
              JOIN readings r ON r.channel_id = k.channel_id AND r.time >= k.started_at
                             AND r.time <= coalesce(k.ended_at, 'infinity')
             WHERE k.batch_id = ANY(batch_ids)) r
$$;

-- Alert history events carry the alert's full state (worst value, minutes out) at each change.
DO $$ BEGIN PERFORM audit_attach('alert_events'); END $$;

-- What the recorded evidence no longer matches. `late`: more readings than were summarised (a
-- gateway that uploads after days offline; `agritrace audit checkpoint` records the summary again,
-- a new entry in the chain), not by itself a sign of tampering. A summary whose readings have partly
-- gone to retention (older than the oldest remaining chunk) is not rechecked.
CREATE FUNCTION audit_evidence_drift()
RETURNS TABLE (table_name text, row_key text, problem text, late boolean)
LANGUAGE sql STABLE AS $$
    SELECT 'batch_coldchain_summaries', s.batch_id::text,
           CASE WHEN d.n > s.readings_count
                THEN format('%s readings in its custody now, %s when its summary was recorded: arrived late or inserted since', d.n, s.readings_count)
                ELSE format('its readings differ from those its summary was computed from (%s now, %s then): edited or deleted', d.n, s.readings_count)
           END,
           d.n > s.readings_count
      FROM batch_coldchain_summaries s
      CROSS JOIN LATERAL custody_readings_digest(batch_history(s.batch_id)) d
     WHERE s.readings_sha256 IS NOT NULL AND d.sha256 <> s.readings_sha256
       AND s.covers_from >= coalesce((SELECT min(range_start) FROM timescaledb_information.chunks
                                       WHERE hypertable_name = 'readings'), '-infinity')
    UNION ALL
    SELECT 'alerts', a.id::text,
           'its worst value or minutes out differ from its last recorded event (alert_events)', false
      FROM alerts a
      CROSS JOIN LATERAL (SELECT e.state FROM alert_events e WHERE e.alert_id = a.id ORDER BY e.id DESC LIMIT 1) e
     WHERE a.status IN ('resolved', 'withdrawn')
       AND ((e.state ->> 'worst_value')::float8 IS DISTINCT FROM a.worst_value
            OR (e.state ->> 'minutes_out')::float8 IS DISTINCT FROM a.minutes_out)
$$;
