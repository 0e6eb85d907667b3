-- depends: 0017.label-jobs
-- One definition of time for the cold chain (issue 14). A reading stands from its time until the
-- next reading of its channel, but at most the channel's expected interval times a tolerance; time
-- beyond that is "no data", never in or out of band. A window [t0, t1) (a custody interval, a
-- summary's range) carries in the reading that stood at t0 and clips the last one at t1.
-- The summary (coldchain/summary.py), the custody digest, the dashboards' rollup and the shipment
-- MKT all read time through coldchain_spans(); mean kinetic temperature is mkt_celsius() only.

-- How often a channel is expected to report; a profile gives the default for the channels it watches.
ALTER TABLE coldchain_profiles
    ADD COLUMN expected_interval_s integer NOT NULL DEFAULT 900 CHECK (expected_interval_s BETWEEN 1 AND 86400),
    ADD COLUMN interval_tolerance double precision NOT NULL DEFAULT 2 CHECK (interval_tolerance BETWEEN 1 AND 100);
ALTER TABLE channels
    ADD COLUMN expected_interval_s integer CHECK (expected_interval_s BETWEEN 1 AND 86400),
    ADD COLUMN interval_tolerance double precision CHECK (interval_tolerance BETWEEN 1 AND 100);

-- The longest a reading of this channel stands, watched against this profile (NULL: none):
-- the channel's own setting wins, then the profile's, then 15 min x 2.
CREATE FUNCTION coldchain_max_stand(channel integer, profile integer) RETURNS interval
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT make_interval(secs => coalesce(c.expected_interval_s, p.expected_interval_s, 900)
                                 * coalesce(c.interval_tolerance, p.interval_tolerance, 2))
      FROM channels c LEFT JOIN coldchain_profiles p ON p.id = profile
     WHERE c.id = channel
$$;

-- The metric a SenML unit measures, and a value in that metric's unit (°C, %RH): kelvin is
-- converted, so temperatures compare in °C whatever the channel reports in.
CREATE FUNCTION coldchain_metric(unit text) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN unit IN ('Cel', 'K') THEN 'temperature' WHEN unit = '%RH' THEN 'humidity' END
$$;
CREATE FUNCTION coldchain_value(unit text, v double precision) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN unit = 'K' THEN v - 273.15 ELSE v END
$$;

-- Mean kinetic temperature (USP <1079>, ΔH/R = 10,000 K), time-weighted:
--   MKT = (ΔH/R) / -ln( Σ wᵢ·exp(-(ΔH/R) / Tᵢ) / Σ wᵢ ) - 273.15, Tᵢ in kelvin, wᵢ = seconds reading i stands.
-- mkt_arrhenius(°C) is one term (NULL below -200 °C, where exp() underflows to nothing useful);
-- mkt_celsius(Σ wᵢ·termᵢ, Σ wᵢ) is the result. Sums may be built in parts (the rollup's buckets).
CREATE FUNCTION mkt_arrhenius(celsius double precision) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN celsius > -200 THEN exp(-10000.0 / (celsius + 273.15)) END
$$;
CREATE FUNCTION mkt_celsius(weighted_terms double precision, weights double precision) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN weights > 0 AND weighted_terms > 0 THEN 10000.0 / -ln(weighted_terms / weights) - 273.15 END
$$;

-- Each reading of `channel` that stands within [t0, t1), with the part of [t0, t1) it stands for:
-- the reading before t0 if it still stood at t0 (carried in), then every reading in [t0, t1), each
-- until the next reading, its time + max_stand, or t1, whichever comes first.
CREATE FUNCTION coldchain_spans(channel integer, t0 timestamptz, t1 timestamptz, max_stand interval)
RETURNS TABLE ("time" timestamptz, value double precision, stands_from timestamptz, stands_to timestamptz)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT y.* FROM (
        SELECT x.time, x.value, greatest(x.time, t0) AS stands_from,
               least(lead(x.time) OVER (ORDER BY x.time), x.time + max_stand, t1) AS stands_to
          FROM ((SELECT r.time, r.value FROM readings r
                  WHERE r.channel_id = channel AND r.time < t0 AND r.time > t0 - max_stand
                  ORDER BY r.time DESC LIMIT 1)
                UNION ALL
                SELECT r.time, r.value FROM readings r
                 WHERE r.channel_id = channel AND r.time >= t0 AND r.time < t1) x) y
     WHERE y.stands_to > y.stands_from  -- a reading before t0 followed by one at t0 stands 0 in the window
$$;

-- The readings a lot's cold-chain summary is computed from (coldchain/summary.py): the spans of the
-- temperature channels over each custody interval of these batches that has begun, up to its end or
-- now, against the batch's product profile; each reading once, as lines
--   <channel id> TAB <time, UTC, ISO 8601 with microseconds and Z> TAB <value as IEEE 754 binary64, big-endian hex>
-- ordered by channel and time, joined by LF: their count and the SHA-256 of that text (hex).
CREATE OR REPLACE FUNCTION custody_readings_digest(batch_ids bigint[], OUT n bigint, OUT sha256 text)
LANGUAGE sql STABLE SET timezone = 'UTC' AS $$
    SELECT count(*),
           encode(sha256(convert_to(coalesce(string_agg(
               r.channel_id::text || E'\t' || to_char(r.time, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
               || E'\t' || encode(float8send(r.value), 'hex'), E'\n' ORDER BY r.channel_id, r.time), ''), 'UTF8')), 'hex')
      FROM (SELECT DISTINCT k.channel_id, s.time, s.value
              FROM batch_custody k
              JOIN batches b ON b.id = k.batch_id
              JOIN channels c ON c.id = k.channel_id
              LEFT JOIN coldchain_profiles p ON p.name = b.product
             CROSS JOIN LATERAL coldchain_spans(k.channel_id, k.started_at, least(coalesce(k.ended_at, 'infinity'), now()),
                                                coldchain_max_stand(k.channel_id, p.id)) s
             WHERE k.batch_id = ANY(batch_ids) AND k.started_at < now() AND coldchain_metric(c.unit) = 'temperature') r
$$;

-- The rollup's MKT is time-weighted now: mk = Σ seconds·mkt_arrhenius(value) over the bucket's
-- readings, mk_seconds = Σ seconds of those terms; a panel's MKT is mkt_celsius(Σ mk, Σ mk_seconds).
-- Every channel is rolled again (the job rebuilds from '-infinity').
ALTER TABLE readings_15m ADD COLUMN mk_seconds double precision;
CREATE OR REPLACE VIEW reporting.readings_15m AS
SELECT channel_id, bucket, n, total, min_value, max_value, mk, seconds, seconds_out, max_above, max_below, mk_seconds
  FROM public.readings_15m;
UPDATE channels SET rollup_from = '-infinity' WHERE last_time IS NOT NULL;

-- Each custody interval's readings as spans (the shipment MKT panel): one definition of time.
CREATE VIEW reporting.shipment_spans AS
SELECT k.id AS shipment_id, k.batch_id, b.lot, b.cooperative_id, b.product, k.channel_id,
       k.started_at, k.ended_at, s.time, coldchain_value(c.unit, s.value) AS value,
       date_part('epoch', s.stands_to) - date_part('epoch', s.stands_from) AS seconds
  FROM public.batch_custody k
  JOIN public.batches b ON b.id = k.batch_id
  JOIN public.channels c ON c.id = k.channel_id
  LEFT JOIN public.coldchain_profiles p ON p.name = b.product
 CROSS JOIN LATERAL coldchain_spans(k.channel_id, k.started_at, least(coalesce(k.ended_at, 'infinity'), now()),
                                    coldchain_max_stand(k.channel_id, p.id)) s
 WHERE k.started_at < now();
GRANT SELECT ON reporting.shipment_spans TO agritrace_grafana;

-- The shipment view (read by the Grafana login) reads readings and channels through these two.
ALTER FUNCTION coldchain_max_stand(integer, integer) SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION coldchain_spans(integer, timestamptz, timestamptz, interval) SECURITY DEFINER SET search_path = public, pg_temp;
REVOKE EXECUTE ON FUNCTION coldchain_max_stand(integer, integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION coldchain_spans(integer, timestamptz, timestamptz, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION coldchain_max_stand(integer, integer) TO agritrace_app, agritrace_grafana;
GRANT EXECUTE ON FUNCTION coldchain_spans(integer, timestamptz, timestamptz, interval) TO agritrace_app, agritrace_grafana;

-- Every stored page summary was computed under the old definition of time: recomputed on next view.
DO $$ BEGIN PERFORM trace_coldchain_invalidate(ARRAY(SELECT batch_id FROM trace_coldchain_pages)); END $$;
