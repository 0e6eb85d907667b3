-- The drift check compares only the columns a row's last audit entry recorded, so adding a column
-- to an audited table (or dropping one) does not make every existing row look tampered with.
CREATE OR REPLACE FUNCTION audit_drift(tbl text)
RETURNS TABLE (row_key text, problem text) LANGUAGE plpgsql STABLE SET timezone = 'UTC' AS $$
DECLARE
    cfg record;
BEGIN
    SELECT * INTO STRICT cfg FROM audit_tables WHERE table_name = tbl;
    RETURN QUERY EXECUTE format(
        'WITH cur AS (SELECT audit_key(to_jsonb(t), $2) AS k, to_jsonb(t) - $1 AS j FROM %I t),
              last AS (SELECT DISTINCT ON (l.row_key) l.row_key AS k, l.after AS j FROM audit_log l
                        WHERE l.table_name = %L ORDER BY l.row_key, l.id DESC)
         SELECT coalesce(cur.k, last.k),
                CASE WHEN cur.k IS NULL THEN ''deleted without an audit entry''
                     WHEN last.k IS NULL THEN ''has no audit entry''
                     ELSE ''differs from its last audited state'' END
           FROM cur FULL JOIN last ON cur.k = last.k
          WHERE CASE WHEN cur.j IS NULL THEN last.j IS NOT NULL
                     WHEN last.j IS NULL THEN true
                     ELSE EXISTS (SELECT 1 FROM jsonb_each(last.j) e
                                   WHERE cur.j ? e.key AND cur.j -> e.key IS DISTINCT FROM e.value)
                END
          ORDER BY 1',
        tbl, tbl)
    USING cfg.exclude, cfg.key_columns;
END
$$;
