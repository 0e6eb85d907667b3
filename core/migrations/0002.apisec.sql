-- API security: a hash-chained audit trail written by a generic trigger.
--
-- Any table gets audited with one call: SELECT audit_attach('batches');  (in a migration: wrap
-- it as DO $$ BEGIN PERFORM audit_attach('batches'); END $$; so yoyo prints nothing)
-- (optionally with columns left out of the record: audit_attach('gateways', ARRAY['last_seen'])).
-- Each audit_log row's hash covers the previous row's hash and the row's canonical content, so
-- editing or deleting history anywhere breaks the chain (`agritrace audit verify`).
-- The actor is read from the transaction-local setting `agritrace.actor` (the API sets it from the
-- bearer token's principal); without it the database user is recorded as `db:<user>`.

CREATE TABLE audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_name  text NOT NULL,
    row_key     text NOT NULL,
    action      text NOT NULL CHECK (action IN ('insert', 'update', 'delete', 'attach')),
    actor       text NOT NULL,
    at          timestamptz NOT NULL,
    before      jsonb,
    after       jsonb,
    prev_hash   bytea NOT NULL,
    hash        bytea NOT NULL
);
CREATE INDEX audit_log_entity_idx ON audit_log (table_name, row_key, id);

-- The canonical content of an entry: jsonb's text form is deterministic (keys sorted), and the
-- time is written in UTC so the session's time zone cannot change it.
CREATE FUNCTION audit_canonical(
    tbl text, key text, act text, actor text, at timestamptz, before jsonb, after jsonb
) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object(
        'table', tbl, 'key', key, 'action', act, 'actor', actor,
        'at', to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'before', before, 'after', after)::text
$$;

CREATE FUNCTION audit_entry_hash(
    prev bytea, tbl text, key text, act text, actor text, at timestamptz, before jsonb, after jsonb
) RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
    SELECT sha256(prev || convert_to(audit_canonical(tbl, key, act, actor, at, before, after), 'UTF8'))
$$;

CREATE FUNCTION audit_genesis() RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
    SELECT decode(repeat('00', 32), 'hex')
$$;

-- A row's key as text: its primary key columns joined by ','.
CREATE FUNCTION audit_key(j jsonb, cols text[]) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT string_agg(j ->> c, ',' ORDER BY n) FROM unnest(cols) WITH ORDINALITY AS u(c, n)
$$;

-- Appends one entry. The advisory lock serialises writers so each entry links to the one before
-- it (audited writes are short; the lock is held to commit).
CREATE FUNCTION audit_append(tbl text, key text, act text, before jsonb, after jsonb)
RETURNS void LANGUAGE plpgsql SET timezone = 'UTC' AS $$
DECLARE
    prev bytea;
    who text := coalesce(nullif(current_setting('agritrace.actor', true), ''), 'db:' || session_user);
    ts timestamptz;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('agritrace.audit_log'));
    SELECT hash INTO prev FROM audit_log ORDER BY id DESC LIMIT 1;
    prev := coalesce(prev, audit_genesis());
    ts := clock_timestamp();
    INSERT INTO audit_log (table_name, row_key, action, actor, at, before, after, prev_hash, hash)
    VALUES (tbl, key, act, who, ts, before, after, prev,
            audit_entry_hash(prev, tbl, key, act, who, ts, before, after));
END
$$;

-- The trigger function attached to audited tables; its arguments are the key columns and the
-- excluded columns (so the configuration lives with the trigger: truncating data cannot lose it).
-- `SET timezone` makes to_jsonb render timestamps the same way whichever session writes.
CREATE FUNCTION audit_record() RETURNS trigger LANGUAGE plpgsql SET timezone = 'UTC' AS $$
DECLARE
    key_columns text[] := TG_ARGV[0]::text[];
    exclude text[] := TG_ARGV[1]::text[];
    b jsonb;
    a jsonb;
BEGIN
    IF TG_OP <> 'INSERT' THEN b := to_jsonb(OLD) - exclude; END IF;
    IF TG_OP <> 'DELETE' THEN a := to_jsonb(NEW) - exclude; END IF;
    IF TG_OP = 'UPDATE' AND a = b THEN
        RETURN NULL;
    END IF;
    PERFORM audit_append(TG_TABLE_NAME, audit_key(coalesce(a, b), key_columns), lower(TG_OP), b, a);
    RETURN NULL;
END
$$;

-- Attaches the audit trigger to a table (idempotent). Rows already in the table get an 'attach'
-- entry holding their current state, so the drift check (`audit_drift`) can compare every row.
CREATE FUNCTION audit_attach(tbl regclass, exclude text[] DEFAULT '{}')
RETURNS void LANGUAGE plpgsql SET timezone = 'UTC' AS $$
DECLARE
    name text;
    keys text[];
BEGIN
    SELECT c.relname INTO name FROM pg_class c WHERE c.oid = tbl;
    SELECT array_agg(a.attname::text ORDER BY array_position(i.indkey::int2[], a.attnum))
      INTO keys
      FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
     WHERE i.indrelid = tbl AND i.indisprimary;
    IF keys IS NULL THEN
        RAISE EXCEPTION 'audit_attach: table % has no primary key', name;
    END IF;
    EXECUTE format('DROP TRIGGER IF EXISTS audit ON %s', tbl);
    EXECUTE format('CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON %s '
                   'FOR EACH ROW EXECUTE FUNCTION audit_record(%L, %L)', tbl, keys::text, exclude::text);
    EXECUTE format(
        'SELECT count(audit_append(%L, audit_key(to_jsonb(t) - $1, $2), ''attach'', NULL, to_jsonb(t) - $1))
           FROM %s t
          WHERE NOT EXISTS (SELECT 1 FROM audit_log l
                             WHERE l.table_name = %L AND l.row_key = audit_key(to_jsonb(t), $2))',
        name, tbl, name)
    USING exclude, keys;
END
$$;

-- The audited tables and their configuration, read back from the triggers' arguments.
CREATE VIEW audit_tables AS
SELECT c.relname::text AS table_name,
       split_part(encode(t.tgargs, 'escape'), '\000', 1)::text[] AS key_columns,
       split_part(encode(t.tgargs, 'escape'), '\000', 2)::text[] AS exclude
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
 WHERE t.tgname = 'audit' AND NOT t.tgisinternal AND c.relkind IN ('r', 'p');

-- Rows of an audited table whose current state is not its last audited state: changed or
-- deleted while the trigger was disabled, or with the audit entry removed.
CREATE FUNCTION audit_drift(tbl text)
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
          WHERE cur.j IS DISTINCT FROM last.j
          ORDER BY 1',
        tbl, tbl)
    USING cfg.exclude, cfg.key_columns;
END
$$;

-- History is append-only for everyone the triggers bind (the application role included). A
-- superuser or the table owner can still disable this trigger; the hash chain is what detects that.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM PUBLIC;

-- The tables that exist at this point. A gateway's liveness columns and a channel's newest
-- reading change with every message, so they stay out of the record; token hashes never go in.
DO $$ BEGIN
    PERFORM audit_attach('cooperatives');
    PERFORM audit_attach('gateways', ARRAY['online', 'status_at', 'last_seen']);
    PERFORM audit_attach('channels', ARRAY['last_time', 'last_value', 'last_ingested_at']);
    PERFORM audit_attach('api_tokens', ARRAY['token_hash']);
END $$;
