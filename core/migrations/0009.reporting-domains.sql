-- depends: 0003.devices-ingest 0004.coldchain 0005.trace 0006.reporting
-- Reporting views over the merged domains (cold chain, ingest, trace) for the dashboards and the
-- Grafana alert rules. Created by the migration role in schema `reporting`, so the default
-- privileges of 0006 grant SELECT to `agritrace_grafana`; the grant below repeats it for a
-- database whose views were created by another owner. Never exposed: raw dead-letter payloads,
-- token hashes, webhook secrets, audit internals, consumer network hashes in full.

-- Cold-chain alerts from the cold-chain domain's own view, so the dashboards and the provisioned
-- alert rules count exactly what GET /api/v1/alerts shows. The first seven columns keep 0006's
-- names, types and order (CREATE OR REPLACE VIEW may only append).
CREATE OR REPLACE VIEW reporting.alerts AS
SELECT a.id::bigint AS id, a.status::text AS status, a.gateway_id::text AS gateway_id,
       a.channel::text AS channel, a.severity::text AS severity, a.opened_at::timestamptz AS opened_at,
       a.cooperative_id::bigint AS cooperative_id,
       a.product, a.rule, a.metric, a.started_at, a.ended_at, a.worst_value, a.minutes_out
  FROM public.alerts_view a;

-- An acknowledged alert is still open (the excursion is not over): the cold-chain domain allows
-- one open-or-acknowledged alert per channel and rule, and the regulator wants both counted.
CREATE OR REPLACE VIEW reporting.open_alerts AS
SELECT id, status, gateway_id, channel, severity, opened_at, cooperative_id
  FROM reporting.alerts WHERE status IN ('open', 'acknowledged');

-- Bands from the editable cold-chain profiles (a profile's name is its product: mango, citrus,
-- tea, or an operator's own). Same columns as 0006's constants.
CREATE OR REPLACE VIEW reporting.product_bands AS
SELECT p.name AS product, p.temp_low AS temp_min, p.temp_high AS temp_max,
       p.rh_low AS rh_min, p.rh_high AS rh_max
  FROM public.coldchain_profiles p;

-- A channel's product is the profile it is watched against first, then the word in its name.
CREATE OR REPLACE VIEW reporting.channels AS
SELECT ch.id AS channel_id, ch.gateway_id, g.cooperative_id, co.name AS cooperative,
       ch.name AS channel, ch.unit, ch.last_time, ch.last_value,
       ch.report_quantity AS quantity, ch.report_setting AS setting, ch.report_plot AS plot,
       coalesce(p.name, ch.report_product) AS product
  FROM public.channels ch
  JOIN public.gateways g ON g.id = ch.gateway_id
  JOIN public.cooperatives co ON co.id = g.cooperative_id
  LEFT JOIN public.coldchain_channel_profiles cp ON cp.channel_id = ch.id
  LEFT JOIN public.coldchain_profiles p ON p.id = cp.profile_id;

-- Messages the ingest worker refused. The payload may hold anything a gateway (or an attacker)
-- sent, credentials included, so neither it nor the free-text detail is exposed.
CREATE VIEW reporting.dead_letters AS
SELECT d.received_at, d.gateway_id, g.cooperative_id, d.topic, d.reason
  FROM public.dead_letters d
  LEFT JOIN public.gateways g ON g.id = d.gateway_id;

-- Batches with their latest disposition and their first recall (on the batch or upstream of it:
-- a recall follows lineage downstream, as the trace domain computes it when read).
CREATE VIEW reporting.recalls AS
WITH RECURSIVE covered (recall_id, batch_id) AS (
    SELECT r.id, r.batch_id FROM public.batch_recalls r
    UNION
    SELECT c.recall_id, l.child_id FROM covered c JOIN public.batch_lineage l ON l.parent_id = c.batch_id
)
SELECT r.id AS recall_id, r.batch_id AS recalled_batch_id, c.batch_id, b.lot, b.cooperative_id,
       b.product, r.recalled_at, r.reason
  FROM covered c
  JOIN public.batch_recalls r ON r.id = c.recall_id
  JOIN public.batches b ON b.id = c.batch_id;

CREATE VIEW reporting.batches AS
SELECT b.id AS batch_id, b.lot, b.cooperative_id, b.product, b.variety, b.harvest_date, b.created_at,
       (SELECT e.disposition FROM public.trace_events e
         WHERE e.batch_id = b.id AND e.disposition IS NOT NULL
         ORDER BY e.event_time DESC, e.id DESC LIMIT 1) AS disposition,
       (SELECT min(rc.recalled_at) FROM reporting.recalls rc WHERE rc.batch_id = b.id) AS recalled_at
  FROM public.batches b;

-- 三品一标 (held by a cooperative, covering its batches, or by one batch) and 承诺达标合格证
-- (cert_type 'compliance', one per batch, no expiry). Short type names for the dashboards:
-- pollution_free, green, organic, gi, compliance. status: valid | not_yet_valid | expired | revoked.
CREATE VIEW reporting.certificates AS
SELECT c.id AS certificate_id, c.batch_id, coalesce(c.cooperative_id, b.cooperative_id) AS cooperative_id,
       b.product,
       CASE c.kind WHEN 'green_food' THEN 'green' WHEN 'geographical_indication' THEN 'gi' ELSE c.kind END AS cert_type,
       c.number, c.issuer, c.valid_from, c.valid_to, c.revoked_at IS NOT NULL AS revoked,
       CASE WHEN c.revoked_at IS NOT NULL THEN 'revoked'
            WHEN current_date < c.valid_from THEN 'not_yet_valid'
            WHEN current_date > c.valid_to THEN 'expired'
            ELSE 'valid' END AS status
  FROM public.certificates c
  LEFT JOIN public.batches b ON b.id = c.batch_id
UNION ALL
SELECT NULL::bigint, cc.batch_id, b.cooperative_id, b.product, 'compliance', NULL::text, cc.issuer,
       (cc.issued_at AT TIME ZONE 'Asia/Shanghai')::date, NULL::date, false, 'valid'
  FROM public.compliance_certificates cc
  JOIN public.batches b ON b.id = cc.batch_id;

CREATE VIEW reporting.inspections AS
SELECT i.id AS inspection_id, i.batch_id, b.cooperative_id, b.product, i.inspected_at, i.kind,
       i.standard, i.passed
  FROM public.inspections i
  JOIN public.batches b ON b.id = i.batch_id;

-- Consumer scans, coarse: the code, its batch, a short prefix of the keyed network hash (enough
-- to tell "many networks" from "one", not to recover an address), the browser family, and the
-- code's counterfeit flag. No IP, no full hash, no user agent string.
CREATE VIEW reporting.scans AS
SELECT s.time AS scanned_at, s.serial AS code, c.batch_id, b.lot, b.cooperative_id, b.product,
       left(s.place_hash, 6) AS network, s.ua_family AS browser,
       c.flagged_at IS NOT NULL AS suspicious, c.flag_reason AS reason
  FROM public.code_scans s
  JOIN public.codes c ON c.serial = s.serial
  JOIN public.batches b ON b.id = c.batch_id;

-- Readings a batch spent in a cold room or truck: one shipment per custody interval.
CREATE VIEW reporting.shipment_readings AS
SELECT k.id AS shipment_id, k.batch_id, b.lot, b.cooperative_id, b.product, k.channel_id,
       k.started_at, k.ended_at, r.time, r.value
  FROM public.batch_custody k
  JOIN public.batches b ON b.id = k.batch_id
  JOIN public.readings r ON r.channel_id = k.channel_id
   AND r.time >= k.started_at AND (k.ended_at IS NULL OR r.time < k.ended_at);

GRANT SELECT ON ALL TABLES IN SCHEMA reporting TO agritrace_grafana;
