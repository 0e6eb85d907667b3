-- depends: 0019.consumer-text
-- Cold-chain alerts (issue 14, the alert half).
-- 1. One alert per excursion: an alert is a condition on a channel (metric + direction, or no data);
--    the profile's rules for that condition are its escalation levels. The alert's severity is the
--    highest level met (`met_rules`), its `rule` that level's rule; each level met is in its history.
-- 2. Every reading is evaluated however late: the ingest worker lowers channels.coldchain_from to the
--    oldest reading time of each batch, the evaluator reads from there (not a fixed 48 h), and an
--    excursion known more than 15 min after its first level was met is marked `late` (met_at: when
--    it was met in reading time; opened_at: when it became known).
-- 3. Rules may apply only in storage (cold rooms, warehouses) or only in transit (trucks).
-- 4. A hand-resolved alert whose readings after the resolution are still out of range reopens and
--    says who resolved it (resolve_attempted_by); only a regulator or admin resolves a critical one
--    (coldchain/service.py).

ALTER TABLE coldchain_rules
    ADD COLUMN applies_in text NOT NULL DEFAULT 'any' CHECK (applies_in IN ('any', 'storage', 'transit'));

-- The evaluator's watermark: re-evaluate this channel from here (NULL: nothing new since the last pass).
-- Bookkeeping like rollup_from: left out of the channels audit record.
ALTER TABLE channels ADD COLUMN coldchain_from timestamptz;
DO $$ BEGIN
    PERFORM audit_attach('channels',
                         ARRAY['last_time', 'last_value', 'last_ingested_at', 'rollup_from', 'coldchain_from']);
END $$;

-- The condition a rule watches: 'temperature:below', 'humidity:above', 'no_data' ...
CREATE FUNCTION coldchain_condition(metric text, direction text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN metric = 'no_data' THEN 'no_data' ELSE metric || ':' || direction END
$$;

ALTER TABLE alerts
    ADD COLUMN condition text,
    ADD COLUMN met_rules integer[] NOT NULL DEFAULT '{}',
    ADD COLUMN met_at timestamptz,
    ADD COLUMN late boolean NOT NULL DEFAULT false,
    ADD COLUMN resolve_attempted_by text;

UPDATE alerts a SET condition = coldchain_condition(r.metric, r.direction), met_rules = ARRAY[a.rule_id],
                    met_at = a.started_at
  FROM coldchain_rules r WHERE r.id = a.rule_id;
ALTER TABLE alerts ALTER COLUMN condition SET NOT NULL;

-- An alert written without its condition (older writers, direct inserts) gets its rule's; its rule is
-- then its one level met.
CREATE FUNCTION alerts_default_condition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.condition IS NULL THEN
        SELECT coldchain_condition(r.metric, r.direction) INTO NEW.condition
          FROM coldchain_rules r WHERE r.id = NEW.rule_id;
    END IF;
    IF NEW.met_rules = '{}' THEN
        NEW.met_rules := ARRAY[NEW.rule_id];
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER alerts_default_condition BEFORE INSERT ON alerts
    FOR EACH ROW EXECUTE FUNCTION alerts_default_condition();

ALTER TABLE alert_events DROP CONSTRAINT alert_events_action_check;
ALTER TABLE alert_events ADD CONSTRAINT alert_events_action_check CHECK (action IN
    ('opened', 'updated', 'acknowledged', 'resolved', 'commented', 'withdrawn', 'escalated', 'reopened'));

-- An alert as the API, the history and the notifications show it (new columns at the end).
CREATE OR REPLACE VIEW alerts_view AS
    SELECT a.id, a.status, ch.gateway_id, ch.name AS channel, a.severity, a.channel_id, ch.unit,
           g.cooperative_id, co.name AS cooperative, p.name AS product, r.name AS rule, r.metric,
           r.direction, r.threshold, a.started_at, a.ended_at, a.worst_value, a.minutes_out,
           a.opened_at, a.acknowledged_at, a.acknowledged_by, a.resolved_at, a.resolved_by, a.updated_at,
           a.condition, a.late, a.met_at,
           ARRAY(SELECT m.name FROM coldchain_rules m WHERE m.id = ANY (a.met_rules) ORDER BY m.id) AS rules_met,
           a.resolve_attempted_by
      FROM alerts a
      JOIN channels ch ON ch.id = a.channel_id
      JOIN gateways g ON g.id = ch.gateway_id
      JOIN cooperatives co ON co.id = g.cooperative_id
      JOIN coldchain_rules r ON r.id = a.rule_id
      JOIN coldchain_profiles p ON p.id = a.profile_id;

-- Existing live duplicates (the same channel and condition, one per rule: `chilling` and
-- `chilling-cumulative`) become one alert: the most severe (then the earliest) is kept with the
-- others' levels, earliest start and worst value; the others are withdrawn, saying where they went.
CREATE TEMPORARY TABLE alert_merge ON COMMIT DROP AS
    SELECT a.id, first_value(a.id) OVER w AS keep_id
      FROM alerts a
     WHERE a.status IN ('open', 'acknowledged')
    WINDOW w AS (PARTITION BY a.channel_id, a.condition
                 ORDER BY CASE a.severity WHEN 'critical' THEN 3 WHEN 'warning' THEN 2 ELSE 1 END DESC,
                          a.started_at, a.id);

UPDATE alerts k SET
       met_rules = m.rules,
       started_at = m.started_at,
       met_at = m.met_at,
       worst_value = CASE r.direction WHEN 'below' THEN m.low ELSE m.high END,
       minutes_out = m.minutes_out,
       updated_at = now()
  FROM (SELECT g.keep_id, array_agg(DISTINCT a.rule_id ORDER BY a.rule_id) AS rules,
               min(a.started_at) AS started_at, min(a.met_at) AS met_at, min(a.worst_value) AS low,
               max(a.worst_value) AS high, max(a.minutes_out) AS minutes_out, count(*) AS n
          FROM alert_merge g JOIN alerts a ON a.id = g.id GROUP BY g.keep_id) m
  JOIN coldchain_rules r ON true
 WHERE k.id = m.keep_id AND m.n > 1 AND r.id = k.rule_id;

INSERT INTO alert_events (alert_id, action, actor, comment, state)
SELECT g.keep_id, 'updated', 'evaluator', 'one alert per excursion: the levels of alerts ' ||
       string_agg(g.id::text, ', ' ORDER BY g.id) || ' of the same condition were merged into this one',
       (SELECT to_jsonb(v) FROM alerts_view v WHERE v.id = g.keep_id)
  FROM alert_merge g WHERE g.id <> g.keep_id GROUP BY g.keep_id;

UPDATE alerts a SET status = 'withdrawn', updated_at = now()
  FROM alert_merge g WHERE a.id = g.id AND g.id <> g.keep_id;

INSERT INTO alert_events (alert_id, action, actor, comment, state)
SELECT g.id, 'withdrawn', 'evaluator',
       format('merged into alert %s: one alert per excursion, its rules are that alert''s levels', g.keep_id),
       to_jsonb(v)
  FROM alert_merge g JOIN alerts_view v ON v.id = g.id WHERE g.id <> g.keep_id;

-- One live alert per channel and condition.
DROP INDEX alerts_one_open_idx;
CREATE UNIQUE INDEX alerts_one_live_idx ON alerts (channel_id, condition) WHERE status IN ('open', 'acknowledged');
CREATE INDEX alerts_condition_idx ON alerts (channel_id, condition, started_at);
