-- Object privilege changes. An event trigger on GRANT and REVOKE (the DDL capture skips those
-- two tags; they are ours) compares the ACLs of this database with a snapshot, so it knows
-- exactly which privileges changed on which objects, however the statement was written
-- (ON ALL TABLES IN SCHEMA, column lists, WITH GRANT OPTION). The privilege_changes check
-- runs the same comparison on schedule, catching changes made while the trigger could not
-- fire (plain-SQL installs without a superuser, session_replication_role = replica).
-- Owners' own privileges are left out: they are implicit and follow ALTER ... OWNER.
CREATE TABLE guardian.acl_snapshot (
    object_kind text NOT NULL,
    object_oid  oid NOT NULL,
    objsubid    integer NOT NULL,
    object_name text NOT NULL,
    grantee     oid NOT NULL,
    privilege   text NOT NULL,
    grantable   boolean NOT NULL,
    is_owner    boolean NOT NULL,
    CONSTRAINT acl_snapshot_pkey PRIMARY KEY (object_kind, object_oid, objsubid, grantee, privilege)
);
COMMENT ON TABLE guardian.acl_snapshot IS
    'Privileges on this database, its schemas, relations, columns and functions as last compared (grantee 0 is PUBLIC); owners'' own rows mark the object as known and are never reported.';
SELECT pg_catalog.pg_extension_config_dump('guardian.acl_snapshot', '');

CREATE TABLE guardian.acl_baseline (
    singleton boolean PRIMARY KEY DEFAULT true,
    taken_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT acl_baseline_singleton_chk CHECK (singleton)
);
COMMENT ON TABLE guardian.acl_baseline IS
    'When the privilege snapshot was first taken; until then, comparisons only record.';
SELECT pg_catalog.pg_extension_config_dump('guardian.acl_baseline', '');

-- Objects absent from the snapshot (created since) are compared with their default ACL, so
-- CREATE TABLE is silent while CREATE TABLE + GRANT ... TO PUBLIC is not.
CREATE FUNCTION guardian._current_acl()
RETURNS SETOF guardian.acl_snapshot
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH objects AS (
        SELECT CASE c.relkind WHEN 'S' THEN 'sequence' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'
                              WHEN 'f' THEN 'foreign table' ELSE 'table' END AS object_kind,
               c.oid AS object_oid, 0 AS objsubid, c.oid::regclass::text AS object_name, c.relowner AS owner,
               coalesce(c.relacl, acldefault((CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END)::"char", c.relowner)) AS acl
          FROM pg_catalog.pg_class AS c
         WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
           AND c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
           AND c.relpersistence <> 't'
        UNION ALL
        SELECT 'column', a.attrelid, a.attnum, format('%s.%I', a.attrelid::regclass, a.attname), c.relowner,
               a.attacl
          FROM pg_catalog.pg_attribute AS a
          JOIN pg_catalog.pg_class AS c ON c.oid = a.attrelid
         WHERE a.attacl IS NOT NULL AND a.attnum > 0 AND NOT a.attisdropped
           AND c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
        UNION ALL
        SELECT CASE p.prokind WHEN 'p' THEN 'procedure' ELSE 'function' END, p.oid, 0, p.oid::regprocedure::text,
               p.proowner, coalesce(p.proacl, acldefault('f'::"char", p.proowner))
          FROM pg_catalog.pg_proc AS p
         WHERE p.pronamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
        UNION ALL
        SELECT 'schema', n.oid, 0, quote_ident(n.nspname), n.nspowner,
               coalesce(n.nspacl, acldefault('n'::"char", n.nspowner))
          FROM pg_catalog.pg_namespace AS n
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
           AND n.nspname NOT LIKE 'pg\_temp\_%' AND n.nspname NOT LIKE 'pg\_toast\_temp\_%'
        UNION ALL
        -- The current database is always object 0, so a copy made from a template (whose
        -- snapshot it inherits) compares with the template's privileges.
        SELECT 'database', 0::oid, 0, quote_ident(d.datname), d.datdba,
               coalesce(d.datacl, acldefault('d'::"char", d.datdba))
          FROM pg_catalog.pg_database AS d
         WHERE d.datname = current_database()
    )
    SELECT o.object_kind, o.object_oid, o.objsubid, o.object_name, x.grantee, x.privilege_type,
           bool_or(x.is_grantable), x.grantee = o.owner
      FROM objects AS o
      CROSS JOIN LATERAL aclexplode(o.acl) AS x
     -- watch() lets the guardian read the key columns of a watched table (to check that an
     -- automatic cleanup really removed its records): its own doing, not a privilege change.
     WHERE NOT (((o.object_kind = 'column' AND x.privilege_type = 'SELECT')
                 OR (o.object_kind = 'schema' AND x.privilege_type = 'USAGE'))
                AND x.grantee = (SELECT r.oid FROM pg_catalog.pg_roles AS r WHERE r.rolname = 'guardian_owner'))
     GROUP BY o.object_kind, o.object_oid, o.objsubid, o.object_name, o.owner, x.grantee, x.privilege_type
$$;
COMMENT ON FUNCTION guardian._current_acl() IS
    'Internal: every privilege held on this database, its schemas, relations, columns and functions (grantee 0: PUBLIC), owners'' marked.';

CREATE FUNCTION guardian._privilege_changes(p_source text)
RETURNS SETOF guardian.finding
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_by     text := CASE WHEN p_source = 'event trigger' THEN SESSION_USER::text END;
    v_query  text := CASE WHEN p_source = 'event trigger' THEN left(current_query(), 500) END;
    v_now    guardian.acl_snapshot[];
    v_first  boolean;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('guardian.acl_snapshot', 0));
    v_first := NOT EXISTS (SELECT FROM guardian.acl_baseline);
    v_now := ARRAY(SELECT a FROM guardian._current_acl() AS a);
    IF NOT v_first THEN
        RETURN QUERY
        WITH cur AS (SELECT * FROM unnest(v_now)),
        known AS (SELECT DISTINCT s.object_kind, s.object_oid, s.objsubid FROM guardian.acl_snapshot AS s),
        before AS (
            SELECT s.object_kind, s.object_oid, s.objsubid, s.object_name, s.grantee, s.privilege, s.grantable
              FROM guardian.acl_snapshot AS s
             WHERE NOT s.is_owner
               AND CASE s.object_kind
                       WHEN 'column' THEN EXISTS (SELECT FROM pg_catalog.pg_attribute AS a
                                                   WHERE a.attrelid = s.object_oid AND a.attnum = s.objsubid
                                                     AND NOT a.attisdropped)
                       WHEN 'function' THEN EXISTS (SELECT FROM pg_catalog.pg_proc AS p WHERE p.oid = s.object_oid)
                       WHEN 'procedure' THEN EXISTS (SELECT FROM pg_catalog.pg_proc AS p WHERE p.oid = s.object_oid)
                       WHEN 'schema' THEN EXISTS (SELECT FROM pg_catalog.pg_namespace AS n WHERE n.oid = s.object_oid)
                       WHEN 'database' THEN true
                       ELSE EXISTS (SELECT FROM pg_catalog.pg_class AS c WHERE c.oid = s.object_oid) END
            UNION ALL
            -- A routine the snapshot does not know started with EXECUTE for PUBLIC (the only
            -- non-owner default among the kinds compared here).
            SELECT DISTINCT c.object_kind, c.object_oid, c.objsubid, c.object_name, 0::oid, 'EXECUTE', false
              FROM cur AS c
             WHERE c.object_kind IN ('function', 'procedure')
               AND NOT EXISTS (SELECT FROM known AS k WHERE k.object_kind = c.object_kind
                                  AND k.object_oid = c.object_oid AND k.objsubid = c.objsubid)
        ),
        added AS (
            SELECT c.* FROM cur AS c
             WHERE NOT c.is_owner
               AND NOT EXISTS (SELECT FROM before AS b
                                WHERE b.object_kind = c.object_kind AND b.object_oid = c.object_oid
                                  AND b.objsubid = c.objsubid AND b.grantee = c.grantee
                                  AND b.privilege = c.privilege AND (b.grantable OR NOT c.grantable))
        ),
        removed AS (
            SELECT b.* FROM before AS b
             WHERE NOT EXISTS (SELECT FROM cur AS c
                                WHERE b.object_kind = c.object_kind AND b.object_oid = c.object_oid
                                  AND b.objsubid = c.objsubid AND b.grantee = c.grantee
                                  AND b.privilege = c.privilege)
        ),
        changes AS (
            SELECT 'granted' AS change, a.object_kind, a.object_oid, a.objsubid, a.object_name, a.grantee,
                   array_agg(a.privilege ORDER BY a.privilege) AS privileges, bool_or(a.grantable) AS grantable
              FROM added AS a GROUP BY a.object_kind, a.object_oid, a.objsubid, a.object_name, a.grantee
            UNION ALL
            SELECT 'revoked', r.object_kind, r.object_oid, r.objsubid, r.object_name, r.grantee,
                   array_agg(r.privilege ORDER BY r.privilege), false
              FROM removed AS r GROUP BY r.object_kind, r.object_oid, r.objsubid, r.object_name, r.grantee
        )
        SELECT (ROW('privilege_changes',
                   CASE WHEN ch.change = 'revoked' THEN 'PRIVILEGE_REVOKED'
                        WHEN ch.grantee = 0 THEN 'GRANT_TO_PUBLIC' ELSE 'PRIVILEGE_GRANTED' END,
                   CASE WHEN ch.change = 'revoked' THEN 'LOW'
                        WHEN ch.grantee = 0 THEN 'HIGH'
                        WHEN ch.object_name LIKE 'guardian.%' OR ch.grantable
                             OR ch.privileges && ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'TRIGGER', 'CREATE'] THEN 'MEDIUM'
                        ELSE 'LOW' END,
                   CASE WHEN ch.object_kind IN ('table', 'view', 'materialized view', 'foreign table', 'sequence')
                        THEN ch.object_name END,
                   CASE WHEN ch.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(ch.grantee)::text END,
                   format('%s on %s %s %s %s%s%s', array_to_string(ch.privileges, ', '), ch.object_kind, ch.object_name,
                          ch.change, CASE ch.change WHEN 'granted' THEN 'to ' ELSE 'from ' END
                              || CASE WHEN ch.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(ch.grantee)::text END,
                          CASE WHEN ch.grantable THEN ' WITH GRANT OPTION' ELSE '' END,
                          coalesce(' by ' || v_by, ' (found by the scheduled scan)')),
                   CASE WHEN ch.change = 'revoked' THEN 'Nothing to do if intended.'
                        WHEN ch.grantee = 0 THEN format('Every role, including future ones, now has this. Unless that is intended: REVOKE %s ON %s FROM PUBLIC;',
                                                        array_to_string(ch.privileges, ', '),
                                                        CASE WHEN ch.object_kind IN ('function', 'procedure', 'schema', 'database', 'sequence')
                                                             THEN upper(ch.object_kind) || ' ' ELSE '' END || ch.object_name)
                        ELSE 'Confirm the grant was approved; revoke it if not.' END,
                   jsonb_strip_nulls(jsonb_build_object(
                       'object_kind', ch.object_kind, 'object', ch.object_name, 'change', ch.change,
                       'grantee', CASE WHEN ch.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(ch.grantee)::text END,
                       'privileges', to_jsonb(ch.privileges), 'grantable', ch.grantable,
                       'by', v_by, 'statement', v_query, 'source', p_source)),
                   format('%s:%s:%s:%s:%s:%s', ch.change, ch.object_kind, ch.object_oid, ch.objsubid, ch.grantee,
                          array_to_string(ch.privileges, ',')))::guardian.finding).*
          FROM changes AS ch
         ORDER BY ch.object_name, ch.change;
    END IF;
    DELETE FROM guardian.acl_snapshot;
    INSERT INTO guardian.acl_snapshot SELECT * FROM unnest(v_now);
    IF v_first THEN
        INSERT INTO guardian.acl_baseline DEFAULT VALUES;
    END IF;
END
$$;
COMMENT ON FUNCTION guardian._privilege_changes(text) IS
    'Internal: privileges granted (PRIVILEGE_GRANTED, GRANT_TO_PUBLIC) or revoked (PRIVILEGE_REVOKED) since the snapshot, which it then renews.';

CREATE FUNCTION guardian._check_privilege_changes()
RETURNS SETOF guardian.finding
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM guardian._privilege_changes('scheduled scan')
$$;
COMMENT ON FUNCTION guardian._check_privilege_changes() IS
    'Check privilege_changes: GRANT/REVOKE missed by the event trigger (PRIVILEGE_GRANTED, GRANT_TO_PUBLIC, PRIVILEGE_REVOKED).';

-- Runs as guardian_owner so that any role's GRANT can be recorded; it never fails the
-- user's statement: a problem in the guardian becomes a WARNING and the scan catches up.
CREATE FUNCTION guardian._on_grant_revoke()
RETURNS event_trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_finding guardian.finding;
BEGIN
    IF NOT guardian._check_enabled('privilege_changes') THEN
        RETURN;
    END IF;
    BEGIN
        -- guardian.lockdown() and unlock() record their own GRANT and REVOKE (LOCKDOWN alerts)
        -- and renew the snapshot once when done.
        IF guardian._lockdown_in_progress() THEN
            RETURN;
        END IF;
        -- Grants made by an extension script (installing or upgrading the guardian itself)
        -- only renew the snapshot.
        IF EXISTS (SELECT FROM pg_event_trigger_ddl_commands() AS c WHERE c.in_extension) THEN
            PERFORM pg_catalog.count(*) FROM guardian._privilege_changes('extension script');
            RETURN;
        END IF;
        FOR v_finding IN SELECT * FROM guardian._privilege_changes('event trigger') LOOP
            PERFORM guardian._raise_finding(v_finding);
        END LOOP;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'pg_guardian: could not record privilege change: %', SQLERRM
            USING HINT = 'The privilege_changes check will find it on its next run.';
    END;
END
$$;
COMMENT ON FUNCTION guardian._on_grant_revoke() IS
    'Internal event trigger (ddl_command_end, GRANT and REVOKE): raises alerts for the privileges that changed.';
