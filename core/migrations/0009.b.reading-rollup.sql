-- depends: 0009.reporting-domains
-- A 15-minute rollup of readings per channel for the dashboards, maintained by
-- `agritrace dashboards rollup` (dashboards/rollup.py). Continuous aggregates would do this but
-- are not in TimescaleDB's Apache build, so the job re-aggregates exactly the buckets that changed.
--
-- channels.rollup_from: the oldest reading time written for the channel since the job last rolled
-- it (NULL = nothing to do). The ingest worker lowers it with every batch (late, stored-and-forwarded
-- readings included); the job claims and clears it, then re-rolls the channel from the bucket of
-- the reading before it (that reading's duration ends at the first new one) to the newest.
-- '-infinity' asks for the channel's whole history (its band changed, or it was never rolled).
ALTER TABLE channels ADD COLUMN rollup_from timestamptz;

-- Per channel and 15-minute bucket (time_bucket's default origin, so 30 min, 1 h, ... buckets of
-- a panel are unions of whole rollup buckets):
--   n, total, min_value, max_value   for means and extremes;
--   mk = sum(exp(-10000 / T))        for mean kinetic temperature (ΔH/R = 10,000 K, T in kelvin);
--   seconds                          how long the bucket's readings stand (each until the next
--                                    reading, at most one hour; the channel's newest reading stands
--                                    0 here: panels add its open-ended time from channels.last_time);
--   seconds_out, max_above, max_below  time outside the channel's product band and the worst
--                                    deviation above / below it (band-dependent: the profile
--                                    triggers below re-roll a channel whose band changes).
CREATE TABLE readings_15m (
    channel_id   integer NOT NULL,
    bucket       timestamptz NOT NULL,
    n            integer NOT NULL,
    total        double precision NOT NULL,
    min_value    double precision NOT NULL,
    max_value    double precision NOT NULL,
    mk           double precision,
    seconds      double precision NOT NULL,
    seconds_out  double precision NOT NULL,
    max_above    double precision,
    max_below    double precision,
    PRIMARY KEY (channel_id, bucket)
);
CREATE INDEX readings_15m_bucket_idx ON readings_15m (bucket);

-- Grafana reads the rollup through a view, like everything else.
CREATE VIEW reporting.readings_15m AS
SELECT channel_id, bucket, n, total, min_value, max_value, mk, seconds, seconds_out, max_above, max_below
  FROM public.readings_15m;
GRANT SELECT ON reporting.readings_15m TO agritrace_grafana;

-- A band edit (profile bounds, a channel's profile) changes seconds_out and the deviations of the
-- channels it applies to: they are re-rolled in full on the job's next run.
CREATE FUNCTION readings_rollup_band_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'coldchain_profiles' THEN
        UPDATE channels SET rollup_from = '-infinity'
         WHERE id IN (SELECT channel_id FROM reporting.channels WHERE product IN (OLD.name, NEW.name));
    ELSE
        UPDATE channels SET rollup_from = '-infinity'
         WHERE id = CASE WHEN TG_OP = 'DELETE' THEN OLD.channel_id ELSE NEW.channel_id END;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER readings_rollup_profile_band AFTER INSERT OR DELETE OR UPDATE OF name, temp_low, temp_high ON coldchain_profiles
    FOR EACH ROW EXECUTE FUNCTION readings_rollup_band_changed();
CREATE TRIGGER readings_rollup_channel_profile AFTER INSERT OR UPDATE OR DELETE ON coldchain_channel_profiles
    FOR EACH ROW EXECUTE FUNCTION readings_rollup_band_changed();

-- Channels with readings already are marked for a full first roll in 0009.c, once the mark is
-- left out of the channels audit record.
