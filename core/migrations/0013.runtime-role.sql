-- depends: 0002.b.audit-drift-schema-changes 0006.reporting 0007.audit-coldchain 0008.wiring 0009.c.rollup-mark-not-audited 0010.reliability 0011.alert-latency-e2e.ingest-notify 0011.trace-page-fast 0012.gateway-reserved-namespace
-- Least privilege (issue 12). Migrations run as the owner role, which owns every object; the API,
-- workers and CLI log in as `agritrace_app`, which may read and write rows and nothing else: it owns
-- nothing, so it cannot ALTER, DROP or TRUNCATE a table, disable a trigger or grant anything, and it
-- has no CREATEROLE (with which PostgreSQL 15 lets a role grant itself pg_execute_server_program and
-- run `COPY ... FROM PROGRAM` as the server's OS user). The role is cluster-wide, so it is created
-- by whoever sets up the cluster (deploy/local/stack.sh, deploy/postgres/initdb); this migration
-- only grants.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'agritrace_app') THEN
        RAISE EXCEPTION 'role agritrace_app does not exist: create it first (CREATE ROLE agritrace_app LOGIN PASSWORD ...), see deploy/README.md';
    END IF;
END $$;

GRANT USAGE ON SCHEMA public TO agritrace_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO agritrace_app;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO agritrace_app;
-- Tables and sequences later migrations create (as the owner) get the same rights.
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO agritrace_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO agritrace_app;
-- The reporting views (read by the rollup and by triggers that follow product bands).
GRANT USAGE ON SCHEMA reporting TO agritrace_app;
GRANT SELECT ON ALL TABLES IN SCHEMA reporting TO agritrace_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA reporting GRANT SELECT ON TABLES TO agritrace_app;

-- The audit log is append-only for the application: it may read it, and append to it only through
-- the audit triggers, which run as the owner (SECURITY DEFINER). It cannot insert an entry of its
-- own making, nor call the append function directly.
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON audit_log FROM agritrace_app;
ALTER FUNCTION audit_append(text, text, text, jsonb, jsonb) SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION audit_record() SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION audit_code_issue() SECURITY DEFINER SET search_path = public, pg_temp;
REVOKE EXECUTE ON FUNCTION audit_append(text, text, text, jsonb, jsonb) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION audit_attach(regclass, text[]) FROM PUBLIC;

-- Retention: dropping chunks needs ownership of the hypertable. The application may drop only
-- whole chunks older than the ingest window (readings still arriving are never dropped); the
-- cut-off its guards computed is its own business within that bound.
CREATE FUNCTION readings_drop_chunks(older_than timestamptz, dry_run boolean DEFAULT false)
RETURNS SETOF text LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF older_than > now() - interval '30 days' THEN
        RAISE EXCEPTION 'readings newer than 30 days are never dropped (asked: before %)', older_than
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF dry_run THEN
        RETURN QUERY SELECT c::text FROM show_chunks('readings', older_than => older_than) c;
    ELSE
        RETURN QUERY SELECT c::text FROM drop_chunks('readings', older_than => older_than) c;
    END IF;
END
$$;
REVOKE EXECUTE ON FUNCTION readings_drop_chunks(timestamptz, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION readings_drop_chunks(timestamptz, boolean) TO agritrace_app;
