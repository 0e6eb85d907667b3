-- depends: 0018.coldchain-time
-- Text the consumer page shows (trace/page.py, trace/templates/trace.html) holds no invisible
-- characters (issue 12, "Input"): bidirectional overrides and isolates, zero-width characters, and
-- every other Unicode format (Cf) or control (Cc) character, and line/paragraph separators, reorder
-- or hide what a shopper reads ("芒果\u202e..." or a cooperative's name with a zero-width space that
-- looks like another's). The API refuses them first (core/text.py: VisibleText, VisibleLines, the
-- same ranges); this holds the CLI, the demo and direct writes to the same rule. Multi-line fields
-- (a recall's reason, inspection details, a certificate's scope) may hold tabs and newlines.
--
-- The ranges are Unicode 15.1's Cc, Cf, Zl and Zp (NUL cannot be in text at all) plus U+2065.
CREATE FUNCTION consumer_text_ok(t text, multiline boolean DEFAULT false) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
SELECT t !~ CASE WHEN multiline
    THEN '[\u0001-\u0008\u000b-\u000c\u000e-\u001f\u007f-\u009f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]'
    ELSE '[\u0001-\u001f\u007f-\u009f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890-\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]'
END
$$;

-- One CHECK per shown column. Added NOT VALID (no table scan under a strong lock), then validated:
-- a database holding rows written before this rule keeps the constraint NOT VALID (new and updated
-- rows are checked all the same) and says which, so the operator can clean them and run
-- `ALTER TABLE ... VALIDATE CONSTRAINT ...`.
DO $$
DECLARE
    c record;
    name text;
BEGIN
    FOR c IN SELECT * FROM (VALUES
        ('cooperatives', 'name', false),
        ('batches', 'variety', false),
        ('batches', 'origin_plot', false),
        ('batches', 'gi_area', false),
        ('batches', 'unit', false),
        ('certificates', 'number', false),
        ('certificates', 'issuer', false),
        ('certificates', 'scope', true),
        ('compliance_certificates', 'product_name', false),
        ('compliance_certificates', 'unit', false),
        ('compliance_certificates', 'origin', false),
        ('compliance_certificates', 'issuer', false),
        ('compliance_certificates', 'contact', false),
        ('trace_events', 'place', false),
        ('trace_events', 'actor', false),
        ('trace_events', 'documents::text', false),
        ('inspections', 'kind', false),
        ('inspections', 'standard', false),
        ('inspections', 'laboratory', false),
        ('inspections', 'details', true),
        ('batch_recalls', 'reason', true)
    ) AS v(tab, col, multiline)
    LOOP
        name := c.tab || '_' || split_part(c.col, ':', 1) || '_consumer_text';
        EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (consumer_text_ok(%s, %L)) NOT VALID',
                       c.tab, name,
                       CASE WHEN c.col LIKE '%::%' THEN format('(%I)::text', split_part(c.col, ':', 1))
                            ELSE format('%I', c.col) END,
                       c.multiline);
        BEGIN
            EXECUTE format('ALTER TABLE %I VALIDATE CONSTRAINT %I', c.tab, name);
        EXCEPTION WHEN check_violation THEN
            RAISE NOTICE '%.% holds invisible characters in rows written before: % stays NOT VALID',
                c.tab, c.col, name;
        END;
    END LOOP;
END $$;
