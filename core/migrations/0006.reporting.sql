-- Reporting: the `reporting` schema of views that Grafana reads, and the read-only role it reads as.
--
-- Grafana connects as a login role that is a member of `agritrace_grafana`. That group may use the
-- `reporting` schema and SELECT from its views, nothing else: the views run with their owner's
-- rights, so the group needs (and has) no privilege on any base table. Token hashes, broker
-- credentials and audit internals are never exposed through a view.

-- Roles are cluster-wide while migrations run per database (every test run has its own), so the
-- group is created only when missing, and a concurrent creation by another database's migration
-- is tolerated.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'agritrace_grafana') THEN
        CREATE ROLE agritrace_grafana NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END $$;

CREATE SCHEMA reporting;
REVOKE ALL ON SCHEMA reporting FROM PUBLIC;

CREATE VIEW reporting.cooperatives AS
SELECT id AS cooperative_id, name AS cooperative, created_at
  FROM public.cooperatives;

CREATE VIEW reporting.gateways AS
SELECT g.id AS gateway_id, g.cooperative_id, c.name AS cooperative, g.description,
       g.disabled_at IS NOT NULL AS disabled, g.online, g.status_at, g.last_seen, g.created_at
  FROM public.gateways g
  JOIN public.cooperatives c ON c.id = g.cooperative_id;

-- What the dashboards group channels by, derived from the SenML resolved name and unit:
--   quantity: temperature (Cel), humidity (%RH), soil_moisture (% or %VWC on a soil channel), ...
--   setting:  'farm' for orchard / tea-garden / field sensors, 'cold_chain' for cold rooms, trucks
--             and reefers, else 'other' (by words in the name, English or Chinese);
--   plot:     the name up to its last '/' ("plot-7/soil" -> "plot-7"), or the gateway id;
--   product:  mango, citrus or tea when the name says so.
-- Stored generated columns rather than expressions in the view: the planner then has statistics
-- for them, and a panel's "cold-chain temperature channels" is estimated at its true size (with
-- the expressions it was estimated at one row, and a nested loop of index scans was chosen).
ALTER TABLE channels
    ADD COLUMN report_quantity text GENERATED ALWAYS AS (
        CASE
            WHEN unit = 'Cel' THEN 'temperature'
            WHEN unit = '%RH' THEN 'humidity'
            WHEN unit IN ('%', '%VWC') AND name ~* '(soil|土壤)' THEN 'soil_moisture'
            WHEN unit = 'lx' THEN 'light'
            WHEN unit = 'Pa' THEN 'pressure'
            WHEN unit = 'V' THEN 'voltage'
            ELSE 'other'
        END) STORED,
    ADD COLUMN report_setting text GENERATED ALWAYS AS (
        CASE
            WHEN name ~* '(orchard|garden|field|plot|soil|果园|茶园|地块|土壤)' THEN 'farm'
            WHEN name ~* '(cold|room|truck|reefer|store|warehouse|冷|库|车)' THEN 'cold_chain'
            ELSE 'other'
        END) STORED,
    ADD COLUMN report_plot text GENERATED ALWAYS AS (
        CASE WHEN position('/' IN name) > 0 THEN regexp_replace(name, '/[^/]*$', '') ELSE gateway_id END) STORED,
    ADD COLUMN report_product text GENERATED ALWAYS AS (
        CASE
            WHEN name ~* '(mango|芒果)' THEN 'mango'
            WHEN name ~* '(citrus|mandarin|orange|柑|橘|橙)' THEN 'citrus'
            WHEN name ~* '(tea|茶)' THEN 'tea'
        END) STORED;

CREATE VIEW reporting.channels AS
SELECT ch.id AS channel_id, ch.gateway_id, g.cooperative_id, co.name AS cooperative,
       ch.name AS channel, ch.unit, ch.last_time, ch.last_value,
       ch.report_quantity AS quantity, ch.report_setting AS setting, ch.report_plot AS plot,
       ch.report_product AS product
  FROM public.channels ch
  JOIN public.gateways g ON g.id = ch.gateway_id
  JOIN public.cooperatives co ON co.id = g.cooperative_id;

-- A plain projection of the hypertable, so chunk exclusion still applies to panel time filters.
CREATE VIEW reporting.readings AS
SELECT time, channel_id, value FROM public.readings;

-- Cold-chain temperature bands per product: the design's default profiles (mango 10-13 °C,
-- mandarin 5-8 °C, green tea at most 10 °C). The cold-chain domain makes profiles editable; its
-- migration may replace this view with one over its profiles table, keeping these columns.
CREATE VIEW reporting.product_bands AS
SELECT product, temp_min, temp_max, rh_min, rh_max
  FROM (VALUES ('mango', 10.0::float8, 13.0::float8, 85.0::float8, 95.0::float8),
               ('citrus', 5.0, 8.0, 90.0, 95.0),
               ('tea', NULL, 10.0, NULL, 50.0)) AS b (product, temp_min, temp_max, rh_min, rh_max);

-- Cold-chain alerts, the columns of the public contract (GET /api/v1/alerts) plus the cooperative.
-- The alerts table belongs to the cold-chain domain (migration 0004). When it is already there
-- with the contract's columns (or a channel_id instead of the channel name) the view reads it;
-- otherwise the view is empty with the same columns, so dashboards and alert rules provision and
-- run, and 0004's successor re-creates it with CREATE OR REPLACE VIEW.
DO $$
DECLARE
    cols text[];
BEGIN
    SELECT array_agg(column_name::text) INTO cols
      FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'alerts';
    IF cols @> ARRAY['id', 'status', 'gateway_id', 'channel', 'severity', 'opened_at'] THEN
        EXECUTE $v$
        CREATE VIEW reporting.alerts AS
        SELECT a.id::bigint AS id, a.status::text AS status, a.gateway_id::text AS gateway_id,
               a.channel::text AS channel, a.severity::text AS severity, a.opened_at::timestamptz AS opened_at,
               g.cooperative_id
          FROM public.alerts a JOIN public.gateways g ON g.id = a.gateway_id $v$;
    ELSIF cols @> ARRAY['id', 'status', 'channel_id', 'severity', 'opened_at'] THEN
        EXECUTE $v$
        CREATE VIEW reporting.alerts AS
        SELECT a.id::bigint AS id, a.status::text AS status, ch.gateway_id::text AS gateway_id,
               ch.name::text AS channel, a.severity::text AS severity, a.opened_at::timestamptz AS opened_at,
               g.cooperative_id
          FROM public.alerts a
          JOIN public.channels ch ON ch.id = a.channel_id
          JOIN public.gateways g ON g.id = ch.gateway_id $v$;
    ELSE
        CREATE VIEW reporting.alerts AS
        SELECT NULL::bigint AS id, NULL::text AS status, NULL::text AS gateway_id, NULL::text AS channel,
               NULL::text AS severity, NULL::timestamptz AS opened_at, NULL::bigint AS cooperative_id
         WHERE false;
    END IF;
END $$;

CREATE VIEW reporting.open_alerts AS
SELECT id, status, gateway_id, channel, severity, opened_at, cooperative_id
  FROM reporting.alerts WHERE status = 'open';

GRANT USAGE ON SCHEMA reporting TO agritrace_grafana;
GRANT SELECT ON ALL TABLES IN SCHEMA reporting TO agritrace_grafana;
-- Views added to the schema later by the same owner are readable too.
ALTER DEFAULT PRIVILEGES IN SCHEMA reporting GRANT SELECT ON TABLES TO agritrace_grafana;
