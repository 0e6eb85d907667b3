-- depends: 0013.runtime-role
-- The audit actor is a claim made by whoever holds the database login (the API sets it per request
-- from the caller's token, the CLI per session). Before, any text was recorded, so an actor could be
-- forged with one set_config (issue 12, item 4). Now the chain records only well-formed actors, and a
-- token actor only if that token exists with that role and cooperative and is live in this
-- transaction; anything else aborts the write.
CREATE FUNCTION audit_actor() RETURNS text LANGUAGE plpgsql STABLE SET search_path = public, pg_temp AS $$
DECLARE
    who text := coalesce(nullif(current_setting('agritrace.actor', true), ''), 'db:' || session_user);
    m text[];
BEGIN
    m := regexp_match(who, '^token:([0-9]{1,18}):(admin|regulator|cooperative)(?::cooperative=([0-9]{1,18}))?$');
    IF m IS NOT NULL THEN
        IF NOT EXISTS (
            SELECT FROM api_tokens t
             WHERE t.id = m[1]::bigint AND t.role = m[2]
               AND t.cooperative_id IS NOT DISTINCT FROM m[3]::bigint
               AND (t.revoked_at IS NULL OR t.revoked_at >= now())
               AND (t.expires_at IS NULL OR t.expires_at > now())
        ) THEN
            RAISE EXCEPTION 'audit actor % names no live token with that role', who
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        RETURN who;
    END IF;
    IF who !~ '^(cli|db|ingest|coldchain|retention|trace):[A-Za-z0-9._@=:-]{1,100}$' THEN
        RAISE EXCEPTION 'audit actor % is not a recognised actor', left(who, 120)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN who;
END
$$;

CREATE OR REPLACE FUNCTION audit_append(tbl text, key text, act text, before jsonb, after jsonb)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp SET timezone = 'UTC' AS $$
DECLARE
    prev bytea;
    who text := audit_actor();
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
REVOKE EXECUTE ON FUNCTION audit_append(text, text, text, jsonb, jsonb) FROM PUBLIC;
