-- depends: 0020.coldchain-alert-truth
-- EPCIS 2.0 events that say what happened (issue 17).
--
-- 1. Business steps are CBV 2.0's only: `recalling` and `transforming` are not CBV steps and made
--    GS1's schema refuse the export. A recall is the disposition `recalled` on the step `holding`
--    (the lot is segregated); a split or merge is a TransformationEvent of its own (below), so a
--    recorded `transforming` event says only that something happened: `other`.
UPDATE trace_events SET biz_step = 'holding' WHERE biz_step = 'recalling';
UPDATE trace_events SET biz_step = 'other' WHERE biz_step = 'transforming';
ALTER TABLE trace_events DROP CONSTRAINT trace_events_biz_step_check;
ALTER TABLE trace_events ADD CONSTRAINT trace_events_biz_step_check CHECK (biz_step IN
    ('accepting', 'arriving', 'assembling', 'collecting', 'commissioning', 'consigning',
     'creating_class_instance', 'cycle_counting', 'decommissioning', 'departing', 'destroying',
     'disassembling', 'dispensing', 'encoding', 'entering_exiting', 'holding', 'inspecting', 'installing',
     'killing', 'loading', 'other', 'packing', 'picking', 'receiving', 'removing', 'repackaging',
     'repairing', 'replacing', 'reserving', 'retail_selling', 'sampling', 'sensor_reporting', 'shipping',
     'staging_outbound', 'stock_taking', 'stocking', 'storing', 'transporting', 'unloading', 'unpacking',
     'void_shipping'));
-- Offsets a clock can show (UTC-12:00 to UTC+14:00), not just two digits each.
ALTER TABLE trace_events ADD CONSTRAINT trace_events_event_tz_range CHECK (
    substr(event_tz, 2, 2)::int * 60 + substr(event_tz, 5, 2)::int <= CASE left(event_tz, 1) WHEN '+' THEN 840 ELSE 720 END
    AND substr(event_tz, 5, 2)::int < 60) NOT VALID;

-- 2. A split or a merge is one transformation: every edge it wrote carries its id, and the business
--    time (and offset) the cooperative gave, not the moment the rows were inserted.
ALTER TABLE batch_lineage ADD COLUMN transformation_id uuid;
ALTER TABLE batch_lineage ADD COLUMN event_time timestamptz;
ALTER TABLE batch_lineage ADD COLUMN event_tz text CHECK (event_tz ~ '^[+-][0-9]{2}:[0-9]{2}$');
-- Earlier edges: the edges of a merge share their child, those of a split their parent and the
-- transaction (created_at is the transaction's time).
UPDATE batch_lineage l SET transformation_id = md5(
        CASE WHEN (SELECT count(*) FROM batch_lineage m WHERE m.child_id = l.child_id) > 1
             THEN 'merge:' || l.child_id
             ELSE 'split:' || l.parent_id || ':' || l.created_at END)::uuid,
       event_time = l.created_at, event_tz = '+08:00';
ALTER TABLE batch_lineage ALTER COLUMN transformation_id SET NOT NULL;
ALTER TABLE batch_lineage ALTER COLUMN event_time SET NOT NULL;
ALTER TABLE batch_lineage ALTER COLUMN event_tz SET NOT NULL;
ALTER TABLE batch_lineage ALTER COLUMN transformation_id SET DEFAULT gen_random_uuid();
ALTER TABLE batch_lineage ALTER COLUMN event_time SET DEFAULT now();
ALTER TABLE batch_lineage ALTER COLUMN event_tz SET DEFAULT '+08:00';
CREATE INDEX batch_lineage_transformation_idx ON batch_lineage (transformation_id);

-- 3. Places: a cooperative with a GS1 Global Location Number is exported as SGLNs (its places as
--    GLN extensions); without one, as stable URIs under the deployment's public base URL.
ALTER TABLE cooperatives ADD COLUMN gln text CHECK (gln ~ '^[0-9]{13}$');
