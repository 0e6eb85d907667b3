-- depends: 0005.trace 0008.wiring 0009.b.reading-rollup
-- The consumer page's cold-chain summary and chart, stored per batch once every custody interval
-- of the batch and its sources has ended, so a page view reads one row instead of summarising the
-- readings (issue 5). A cache, not a record: not audited, rebuilt on the next view when missing.
--
-- `gen` counts invalidations. A change that can alter a batch's summary bumps `gen` and clears
-- `summary` for the batch and every lot downstream of it (their pages include its custody). A page
-- view that finds no summary computes one and stores it only if `gen` is still the value it read
-- before computing: an invalidation committed in between wins, so a stale summary is never stored.
-- What invalidates:
--   custody recorded, moved or ended (trigger on batch_custody)
--   lineage added or removed (trigger on batch_lineage)
--   the product's band edited (trigger on coldchain_profiles)
--   a channel's unit changed (trigger on channels: only 'Cel' channels count)
--   readings written late into a custody interval: the readings rollup job (dashboards/rollup.py),
--   which already claims every channel's oldest new reading time (channels.rollup_from).
CREATE TABLE trace_coldchain_pages (
    batch_id     bigint PRIMARY KEY REFERENCES batches (id) ON DELETE CASCADE,
    gen          bigint NOT NULL DEFAULT 0,
    -- The figures and verdict (what the HTML page shows), the chart's series apart (only the JSON
    -- view returns them; kept out of the small row the page reads), and the chart itself.
    summary      jsonb,
    series       jsonb,
    chart_svg    text,
    computed_at  timestamptz,
    CHECK ((summary IS NULL) = (chart_svg IS NULL) AND (summary IS NULL) = (series IS NULL))
);

-- Bumps the batches and everything downstream of them (an upsert: a batch never viewed gets a row
-- with gen 1, so a view computing concurrently sees the bump when it stores).
CREATE FUNCTION trace_coldchain_invalidate(ids bigint[]) RETURNS void LANGUAGE sql AS $$
    WITH RECURSIVE down(id, depth) AS (
        SELECT unnest(ids), 0
        UNION
        SELECT l.child_id, d.depth + 1 FROM batch_lineage l JOIN down d ON l.parent_id = d.id WHERE d.depth < 64
    )
    INSERT INTO trace_coldchain_pages AS p (batch_id, gen)
    SELECT DISTINCT id, 1 FROM down WHERE id IS NOT NULL AND EXISTS (SELECT 1 FROM batches b WHERE b.id = down.id)
    ORDER BY 1
    ON CONFLICT (batch_id) DO UPDATE SET gen = p.gen + 1, summary = NULL, series = NULL, chart_svg = NULL,
                                          computed_at = NULL
$$;

-- Statement-level with transition tables: a bulk load of custody or lineage is one invalidation.
CREATE FUNCTION trace_coldchain_rows_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'batch_custody' THEN
        IF TG_OP <> 'DELETE' THEN PERFORM trace_coldchain_invalidate(ARRAY(SELECT DISTINCT batch_id FROM new_rows)); END IF;
        IF TG_OP <> 'INSERT' THEN PERFORM trace_coldchain_invalidate(ARRAY(SELECT DISTINCT batch_id FROM old_rows)); END IF;
    ELSIF TG_TABLE_NAME = 'batch_lineage' THEN
        IF TG_OP <> 'DELETE' THEN PERFORM trace_coldchain_invalidate(ARRAY(SELECT DISTINCT child_id FROM new_rows)); END IF;
        IF TG_OP <> 'INSERT' THEN PERFORM trace_coldchain_invalidate(ARRAY(SELECT DISTINCT child_id FROM old_rows)); END IF;
    ELSIF TG_TABLE_NAME = 'coldchain_profiles' THEN
        IF TG_OP <> 'DELETE' THEN
            PERFORM trace_coldchain_invalidate(ARRAY(SELECT b.id FROM batches b JOIN new_rows n ON n.name = b.product));
        END IF;
        IF TG_OP <> 'INSERT' THEN
            PERFORM trace_coldchain_invalidate(ARRAY(SELECT b.id FROM batches b JOIN old_rows o ON o.name = b.product));
        END IF;
    END IF;
    RETURN NULL;
END $$;

DO $$
DECLARE
    t text;
BEGIN
    -- (Transition tables allow one event per trigger and no column list.)
    FOREACH t IN ARRAY ARRAY['batch_custody', 'batch_lineage', 'coldchain_profiles'] LOOP
        EXECUTE format('CREATE TRIGGER trace_coldchain_ins AFTER INSERT ON %I REFERENCING NEW TABLE AS new_rows
                        FOR EACH STATEMENT EXECUTE FUNCTION trace_coldchain_rows_changed()', t);
        EXECUTE format('CREATE TRIGGER trace_coldchain_upd AFTER UPDATE ON %I REFERENCING OLD TABLE AS old_rows
                        NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION trace_coldchain_rows_changed()', t);
        EXECUTE format('CREATE TRIGGER trace_coldchain_del AFTER DELETE ON %I REFERENCING OLD TABLE AS old_rows
                        FOR EACH STATEMENT EXECUTE FUNCTION trace_coldchain_rows_changed()', t);
    END LOOP;
END $$;
-- A channel's unit (only 'Cel' channels count). Channels are updated by every ingest batch
-- (last_time, rollup_from): a row trigger with a WHEN costs those updates nothing.
CREATE FUNCTION trace_coldchain_unit_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM trace_coldchain_invalidate(ARRAY(SELECT DISTINCT batch_id FROM batch_custody WHERE channel_id = NEW.id));
    RETURN NULL;
END $$;
CREATE TRIGGER trace_coldchain_unit AFTER UPDATE OF unit ON channels
    FOR EACH ROW WHEN (OLD.unit IS DISTINCT FROM NEW.unit) EXECUTE FUNCTION trace_coldchain_unit_changed();
