-- Lockdown: the emergency brake. Application roles lose their write privileges (INSERT,
-- UPDATE, DELETE, TRUNCATE on every table and view outside the system and guardian schemas,
-- table and column grants alike) and get default_transaction_read_only in this database;
-- optionally their sessions are ended. Superusers, the guardian's roles and admins keep
-- working. Everything taken is written down first, so guardian.unlock() gives back exactly
-- that; the state is rows plus the catalog, so it survives a restart.
--
-- Taking and giving back privileges on tables the guardian does not own, and changing other
-- roles' settings, needs the installing superuser: three small helpers below stay owned by it
-- (99_finish/10_ownership.sql leaves them out). Each does one fixed thing, calls nothing but
-- pg_catalog (a function guardian_owner owns could be replaced by it), refuses superusers,
-- the guardian's roles, their members and the system and guardian schemas, and only
-- guardian_owner may execute it.
CREATE TABLE guardian.lockdowns (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    environment    text NOT NULL,
    reason         text NOT NULL,
    automatic      boolean NOT NULL DEFAULT false,
    alert_id       uuid REFERENCES guardian.monitoring_alerts (id) ON DELETE SET NULL,
    roles          text[] NOT NULL,
    options        jsonb NOT NULL,
    not_revoked    jsonb NOT NULL DEFAULT '[]',
    sessions_ended integer NOT NULL DEFAULT 0,
    started_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
    started_by     text NOT NULL DEFAULT SESSION_USER,
    ended_at       timestamptz,
    ended_by       text,
    end_note       text,
    changing_xid   bigint,
    CONSTRAINT lockdowns_reason_chk CHECK (pg_catalog.btrim(reason) <> ''),
    CONSTRAINT lockdowns_ended_chk CHECK (ended_by IS NULL OR ended_at IS NOT NULL)
);
COMMENT ON TABLE guardian.lockdowns IS
    'Every lockdown: why, automatic or not, which application roles, options, what could not be taken (not_revoked), who started and ended it. At most one is active (ended_at NULL).';
COMMENT ON COLUMN guardian.lockdowns.changing_xid IS
    'Set while lockdown() or unlock() runs: their own GRANT and REVOKE are recorded here, not raised as privilege-change alerts.';
SELECT pg_catalog.pg_extension_config_dump('guardian.lockdowns', '');
SELECT pg_catalog.pg_extension_config_dump('guardian.lockdowns_id_seq', '');
CREATE UNIQUE INDEX lockdowns_active_idx ON guardian.lockdowns ((true)) WHERE ended_at IS NULL;

CREATE TABLE guardian.lockdown_changes (
    lockdown_id   bigint NOT NULL REFERENCES guardian.lockdowns (id) ON DELETE CASCADE,
    seq           integer NOT NULL,
    kind          text NOT NULL,
    role_oid      oid NOT NULL,
    role_name     text NOT NULL,
    relid         regclass,
    table_name    text,
    column_name   text,
    privileges    text[],
    grantable     boolean,
    previous      text,
    restored      boolean NOT NULL DEFAULT false,
    restore_note  text,
    CONSTRAINT lockdown_changes_pkey PRIMARY KEY (lockdown_id, seq),
    CONSTRAINT lockdown_changes_kind_chk CHECK (kind IN ('privilege', 'read_only')),
    CONSTRAINT lockdown_changes_privilege_chk CHECK (kind <> 'privilege' OR (relid IS NOT NULL AND pg_catalog.cardinality(privileges) > 0))
);
COMMENT ON TABLE guardian.lockdown_changes IS
    'What a lockdown took, to give it back: write privileges revoked (table or column, with grant option or not) and each role''s previous default_transaction_read_only in this database (previous NULL: none was set).';
SELECT pg_catalog.pg_extension_config_dump('guardian.lockdown_changes', '');

CREATE FUNCTION guardian._lockdown_privilege(
    p_grant boolean, p_table regclass, p_role oid, p_privileges text[], p_column text DEFAULT NULL,
    p_grant_option boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_role  pg_catalog.pg_roles;
    v_class pg_catalog.pg_class;
    v_nsp   name;
BEGIN
    -- Owned by the installing superuser: pg_catalog only, and every input checked.
    SELECT * INTO v_role FROM pg_catalog.pg_roles AS r WHERE r.oid = p_role;
    IF NOT FOUND OR v_role.rolsuper OR v_role.rolname::text LIKE 'guardian\_%'
       OR pg_catalog.pg_has_role(p_role, 'guardian_admin', 'MEMBER')
       OR pg_catalog.pg_has_role(p_role, 'guardian_owner', 'MEMBER') THEN
        RAISE EXCEPTION 'lockdown may not change the privileges of role %', coalesce(v_role.rolname::text, p_role::text)
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT * INTO v_class FROM pg_catalog.pg_class AS c WHERE c.oid = p_table;
    SELECT n.nspname INTO v_nsp FROM pg_catalog.pg_namespace AS n WHERE n.oid = v_class.relnamespace;
    IF v_class.oid IS NULL OR v_class.relkind NOT IN ('r', 'p', 'f', 'v')
       OR v_nsp IN ('pg_catalog', 'information_schema', 'guardian', 'cron')
       OR v_nsp::text LIKE 'pg\_%' OR v_nsp::text LIKE 'guardian\_%' THEN
        RAISE EXCEPTION 'lockdown may not change privileges on %', p_table USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF p_privileges IS NULL OR cardinality(p_privileges) = 0
       OR NOT p_privileges <@ (CASE WHEN p_column IS NULL THEN ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']
                                    ELSE ARRAY['INSERT', 'UPDATE'] END) THEN
        RAISE EXCEPTION 'lockdown only changes write privileges, not %', p_privileges USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_column IS NOT NULL AND NOT EXISTS (SELECT FROM pg_catalog.pg_attribute AS a
                                             WHERE a.attrelid = p_table AND a.attname = p_column
                                               AND a.attnum > 0 AND NOT a.attisdropped) THEN
        RAISE EXCEPTION 'table % has no column %', p_table, p_column USING ERRCODE = 'undefined_column';
    END IF;
    EXECUTE pg_catalog.format('%s %s ON TABLE %s %s %I%s',
        CASE WHEN p_grant THEN 'GRANT' ELSE 'REVOKE' END,
        (SELECT pg_catalog.string_agg(p || CASE WHEN p_column IS NULL THEN '' ELSE pg_catalog.format(' (%I)', p_column) END, ', ')
           FROM pg_catalog.unnest(p_privileges) AS p),
        p_table, CASE WHEN p_grant THEN 'TO' ELSE 'FROM' END, v_role.rolname,
        CASE WHEN p_grant AND p_grant_option THEN ' WITH GRANT OPTION' ELSE '' END);
END
$$;
COMMENT ON FUNCTION guardian._lockdown_privilege(boolean, regclass, oid, text[], text, boolean) IS
    'Internal, owned by the installing superuser, executable by guardian_owner only: GRANT or REVOKE write privileges (INSERT, UPDATE, DELETE, TRUNCATE; a column''s INSERT, UPDATE) on an application table to or from a role that is neither a superuser nor the guardian''s nor an admin.';

CREATE FUNCTION guardian._lockdown_read_only(p_role oid, p_value text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_role pg_catalog.pg_roles;
BEGIN
    SELECT * INTO v_role FROM pg_catalog.pg_roles AS r WHERE r.oid = p_role;
    IF NOT FOUND OR v_role.rolsuper OR v_role.rolname::text LIKE 'guardian\_%'
       OR pg_catalog.pg_has_role(p_role, 'guardian_admin', 'MEMBER')
       OR pg_catalog.pg_has_role(p_role, 'guardian_owner', 'MEMBER') THEN
        RAISE EXCEPTION 'lockdown may not change the settings of role %', coalesce(v_role.rolname::text, p_role::text)
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF p_value IS NULL THEN
        EXECUTE pg_catalog.format('ALTER ROLE %I IN DATABASE %I RESET default_transaction_read_only',
                                  v_role.rolname, pg_catalog.current_database());
    ELSIF pg_catalog.lower(p_value) IN ('on', 'off', 'true', 'false', 'yes', 'no', '1', '0') THEN
        EXECUTE pg_catalog.format('ALTER ROLE %I IN DATABASE %I SET default_transaction_read_only = %L',
                                  v_role.rolname, pg_catalog.current_database(), pg_catalog.lower(p_value));
    ELSE
        RAISE EXCEPTION 'invalid value % for default_transaction_read_only', p_value USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;
COMMENT ON FUNCTION guardian._lockdown_read_only(oid, text) IS
    'Internal, owned by the installing superuser, executable by guardian_owner only: sets (or with NULL resets) default_transaction_read_only of a role that is neither a superuser nor the guardian''s nor an admin, in this database only.';

CREATE FUNCTION guardian._lockdown_end_sessions(p_roles oid[])
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count integer;
BEGIN
    SELECT pg_catalog.count(*) FILTER (WHERE pg_catalog.pg_terminate_backend(a.pid))::integer INTO v_count
      FROM pg_catalog.pg_stat_activity AS a
      JOIN pg_catalog.pg_roles AS r ON r.oid = a.usesysid
     WHERE a.datname = pg_catalog.current_database() AND a.backend_type = 'client backend'
       AND a.pid <> pg_catalog.pg_backend_pid() AND a.usesysid = ANY (p_roles)
       AND NOT r.rolsuper AND r.rolname::text NOT LIKE 'guardian\_%'
       AND NOT pg_catalog.pg_has_role(r.oid, 'guardian_admin', 'MEMBER')
       AND NOT pg_catalog.pg_has_role(r.oid, 'guardian_owner', 'MEMBER');
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION guardian._lockdown_end_sessions(oid[]) IS
    'Internal, owned by the installing superuser, executable by guardian_owner only: ends the sessions of these roles in this database (never its own, a superuser''s, the guardian''s or an admin''s). Returns how many.';

CREATE FUNCTION guardian._lockdown_in_progress()
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (SELECT FROM guardian.lockdowns AS l WHERE l.changing_xid = txid_current_if_assigned())
$$;
COMMENT ON FUNCTION guardian._lockdown_in_progress() IS
    'Internal: is this transaction inside guardian.lockdown() or guardian.unlock()? (Their GRANT/REVOKE are not privilege-change alerts.)';

CREATE FUNCTION guardian._lockdown_renew_snapshot()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- The privilege_changes check compares with a snapshot: what lockdown() or unlock() just
    -- changed (and wrote down) is the new normal, not a change to report.
    IF to_regprocedure('guardian._privilege_changes(text)') IS NOT NULL THEN
        PERFORM count(*) FROM guardian._privilege_changes('lockdown');
    END IF;
END
$$;
COMMENT ON FUNCTION guardian._lockdown_renew_snapshot() IS
    'Internal: renews the privilege snapshot after a lockdown or unlock changed privileges.';

CREATE FUNCTION guardian._response_flag(p_key text, p_default boolean)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- Only a JSON true or false counts; anything else is the default.
    SELECT CASE guardian.setting(p_key) WHEN 'true'::jsonb THEN true WHEN 'false'::jsonb THEN false ELSE p_default END
$$;
COMMENT ON FUNCTION guardian._response_flag(text, boolean) IS 'Internal: a boolean auto-response setting of this environment.';

-- Application roles: the configured lockdown.roles, else every login role that is neither a
-- superuser, nor the guardian's (or a member of its roles), nor an admin (lockdown.admin_roles
-- or a member of one).
CREATE FUNCTION guardian._lockdown_protected(p_role oid)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.rolsuper OR r.rolname::text LIKE 'guardian\_%'
        OR pg_has_role(r.oid, 'guardian_admin', 'MEMBER') OR pg_has_role(r.oid, 'guardian_owner', 'MEMBER')
        OR pg_has_role(r.oid, 'guardian_relay', 'MEMBER')
        OR EXISTS (SELECT FROM pg_catalog.pg_roles AS a
                    WHERE a.rolname = ANY (coalesce(guardian._jsonb_texts(guardian.setting('lockdown.admin_roles')), '{}'))
                      AND pg_has_role(r.oid, a.oid, 'MEMBER'))
      FROM pg_catalog.pg_roles AS r
     WHERE r.oid = p_role
$$;
COMMENT ON FUNCTION guardian._lockdown_protected(oid) IS
    'Internal: does lockdown leave this role alone (superuser, the guardian''s, an admin)?';

CREATE FUNCTION guardian.lockdown_roles()
RETURNS TABLE (role_name text, locked boolean, reason text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH configured AS (SELECT guardian._jsonb_texts(guardian.setting('lockdown.roles')) AS names)
    SELECT r.rolname::text,
           NOT guardian._lockdown_protected(r.oid)
               AND (c.names IS NULL OR r.rolname = ANY (c.names)),
           CASE WHEN r.rolsuper THEN 'superuser'
                WHEN guardian._lockdown_protected(r.oid) THEN 'guardian role or admin'
                WHEN c.names IS NOT NULL AND r.rolname = ANY (c.names) THEN 'listed in lockdown.roles'
                WHEN c.names IS NOT NULL THEN 'not listed in lockdown.roles'
                ELSE 'application role (login, not superuser, guardian or admin)' END
      FROM pg_catalog.pg_roles AS r, configured AS c
     WHERE r.rolcanlogin OR (c.names IS NOT NULL AND r.rolname = ANY (c.names))
     ORDER BY 2 DESC, 1
$$;
COMMENT ON FUNCTION guardian.lockdown_roles() IS
    'Which roles a lockdown would lock (the configured lockdown.roles, else every login role that is not a superuser, the guardian''s or an admin) and why each is in or out.';

CREATE FUNCTION guardian._lockdown_apply(p_reason text, p_automatic boolean)
RETURNS guardian.lockdowns
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_active   guardian.lockdowns;
    v_lockdown guardian.lockdowns;
    v_apps     oid[];
    v_targets  oid[];
    v_options  jsonb;
    v_item     record;
    v_seq      integer := 0;
    v_not      jsonb := '[]';
    v_setting  text;
    v_revoked  integer := 0;
    v_sessions integer := 0;
    v_alert    uuid;
BEGIN
    IF p_reason IS NULL OR btrim(p_reason) = '' THEN
        RAISE EXCEPTION 'a lockdown needs a reason'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Say why, e.g. SELECT guardian.lockdown(''test data flooding patients from the seed job'');';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('guardian.lockdown', 0));
    SELECT * INTO v_active FROM guardian.lockdowns AS l WHERE l.ended_at IS NULL;
    IF FOUND THEN
        RAISE EXCEPTION '% is already locked down (since % by %: %)', v_active.environment,
                        to_char(v_active.started_at, 'YYYY-MM-DD HH24:MI:SS TZ'), v_active.started_by, v_active.reason
            USING ERRCODE = 'object_in_use',
                  DETAIL = 'Nothing was changed.',
                  HINT = 'Lift it first with SELECT guardian.unlock(); (pg-guardian lockdown unlock), then lock down again.';
    END IF;
    v_options := jsonb_build_object('revoke', guardian._response_flag('lockdown.revoke', true),
                                    'read_only', guardian._response_flag('lockdown.read_only', true),
                                    'end_sessions', guardian._response_flag('lockdown.end_sessions', false));
    v_apps := ARRAY(SELECT r.oid FROM guardian.lockdown_roles() AS l JOIN pg_catalog.pg_roles AS r ON r.rolname = l.role_name
                     WHERE l.locked ORDER BY 1);
    -- Their privileges may also come from group roles; those are taken too, unless a role
    -- that keeps working holds them as well.
    v_targets := v_apps || ARRAY(
        SELECT g.oid FROM pg_catalog.pg_roles AS g
         WHERE g.oid <> ALL (v_apps) AND NOT g.rolcanlogin AND NOT guardian._lockdown_protected(g.oid)
           AND EXISTS (SELECT FROM unnest(v_apps) AS a WHERE pg_has_role(a, g.oid, 'MEMBER'))
           AND NOT EXISTS (SELECT FROM pg_catalog.pg_roles AS p
                            WHERE p.rolcanlogin AND p.oid <> ALL (v_apps) AND NOT p.rolsuper
                              AND pg_has_role(p.oid, g.oid, 'MEMBER')));

    INSERT INTO guardian.lockdowns (environment, reason, automatic, roles, options, changing_xid, started_by)
    VALUES (guardian.current_environment(), btrim(p_reason), p_automatic,
            ARRAY(SELECT r.rolname::text FROM pg_catalog.pg_roles AS r WHERE r.oid = ANY (v_targets) ORDER BY 1),
            v_options, txid_current(), CASE WHEN p_automatic THEN 'pg_guardian' ELSE guardian._actor() END)
    RETURNING * INTO v_lockdown;

    -- Privilege changes made before now are reported as usual; the lockdown's own are not.
    IF to_regprocedure('guardian._privilege_changes(text)') IS NOT NULL AND guardian._check_enabled('privilege_changes') THEN
        PERFORM guardian._raise_finding(f) FROM guardian._privilege_changes('scheduled scan') AS f;
    END IF;

    IF (v_options ->> 'revoke')::boolean THEN
        FOR v_item IN
            WITH rels AS (
                SELECT c.oid, c.relowner, c.relacl
                  FROM pg_catalog.pg_class AS c
                  JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
                 WHERE c.relkind IN ('r', 'p', 'f', 'v')
                   AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'guardian', 'cron')
                   AND n.nspname NOT LIKE 'pg\_%' AND n.nspname NOT LIKE 'guardian\_%'),
            items AS (
                SELECT r.oid AS relid, NULL::text AS column_name, a.grantor, a.grantee, a.privilege_type, a.is_grantable,
                       r.relowner, r.relacl AS acl
                  FROM rels AS r, aclexplode(coalesce(r.relacl, acldefault('r', r.relowner))) AS a
                UNION ALL
                SELECT r.oid, att.attname::text, a.grantor, a.grantee, a.privilege_type, a.is_grantable, r.relowner, att.attacl
                  FROM rels AS r
                  JOIN pg_catalog.pg_attribute AS att ON att.attrelid = r.oid AND att.attnum > 0
                                                      AND NOT att.attisdropped AND att.attacl IS NOT NULL,
                       aclexplode(att.attacl) AS a)
            SELECT i.relid::regclass AS relid, i.column_name, i.grantee, i.is_grantable,
                   array_agg(i.privilege_type ORDER BY i.privilege_type) AS privileges,
                   CASE WHEN i.grantee = 0 THEN 'granted to PUBLIC, which admins hold too'
                        WHEN i.grantor <> i.relowner THEN format('granted by %s, not by the owner', pg_get_userbyid(i.grantor))
                        WHEN i.is_grantable AND EXISTS (SELECT FROM aclexplode(i.acl) AS d
                                                         WHERE d.grantor = i.grantee AND d.grantee <> i.grantee)
                             THEN 'passed on to other roles (WITH GRANT OPTION)'
                   END AS keep_reason
              FROM items AS i
             WHERE i.privilege_type IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE')
               AND (i.grantee = ANY (v_targets) OR i.grantee = 0)
             GROUP BY 1, 2, 3, 4, 6
             -- column grants first: a table-level REVOKE takes them too.
             ORDER BY 1, 2 NULLS LAST, 3
        LOOP
            IF v_item.keep_reason IS NOT NULL THEN
                v_not := v_not || jsonb_build_object('table', v_item.relid::text, 'column', v_item.column_name,
                    'role', CASE WHEN v_item.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(v_item.grantee)::text END,
                    'privileges', to_jsonb(v_item.privileges), 'reason', v_item.keep_reason);
                CONTINUE;
            END IF;
            v_seq := v_seq + 1;
            INSERT INTO guardian.lockdown_changes
                (lockdown_id, seq, kind, role_oid, role_name, relid, table_name, column_name, privileges, grantable)
            VALUES (v_lockdown.id, v_seq, 'privilege', v_item.grantee, pg_get_userbyid(v_item.grantee), v_item.relid,
                    v_item.relid::text, v_item.column_name, v_item.privileges, v_item.is_grantable);
            PERFORM guardian._lockdown_privilege(false, v_item.relid, v_item.grantee, v_item.privileges, v_item.column_name);
            v_revoked := v_revoked + 1;
        END LOOP;
    END IF;

    IF (v_options ->> 'read_only')::boolean THEN
        FOR v_item IN SELECT r.oid, r.rolname FROM pg_catalog.pg_roles AS r WHERE r.oid = ANY (v_apps) AND r.rolcanlogin ORDER BY r.rolname LOOP
            SELECT substr(c, length('default_transaction_read_only=') + 1) INTO v_setting
              FROM pg_catalog.pg_db_role_setting AS s, unnest(s.setconfig) AS c
             WHERE s.setrole = v_item.oid
               AND s.setdatabase = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = current_database())
               AND c LIKE 'default\_transaction\_read\_only=%';
            v_seq := v_seq + 1;
            INSERT INTO guardian.lockdown_changes (lockdown_id, seq, kind, role_oid, role_name, previous)
            VALUES (v_lockdown.id, v_seq, 'read_only', v_item.oid, v_item.rolname, v_setting);
            PERFORM guardian._lockdown_read_only(v_item.oid, 'on');
            v_setting := NULL;
        END LOOP;
    END IF;

    IF (v_options ->> 'end_sessions')::boolean AND cardinality(v_apps) > 0 THEN
        v_sessions := guardian._lockdown_end_sessions(v_apps);
    END IF;

    v_alert := guardian.raise_alert(
        'LOCKDOWN', CASE WHEN p_automatic THEN 'CRITICAL' ELSE 'HIGH' END,
        format('%s locked down%s by %s: %s. %s application role(s) (%s) lost %s write grant(s)%s%s; unlock with SELECT guardian.unlock();',
               v_lockdown.environment, CASE WHEN p_automatic THEN ' automatically' ELSE '' END, v_lockdown.started_by,
               v_lockdown.reason, cardinality(v_lockdown.roles), coalesce(nullif(array_to_string(v_lockdown.roles, ', '), ''), 'none found'),
               v_revoked,
               CASE WHEN (v_options ->> 'read_only')::boolean THEN ' and are read-only in new sessions' ELSE '' END,
               CASE WHEN v_sessions > 0 THEN format('; %s session(s) ended', v_sessions) ELSE '' END),
        NULL, NULL,
        jsonb_build_object('lockdown_id', v_lockdown.id, 'automatic', p_automatic, 'reason', v_lockdown.reason,
                           'roles', to_jsonb(v_lockdown.roles), 'revoked', v_revoked, 'options', v_options,
                           'sessions_ended', v_sessions, 'not_revoked', v_not,
                           'unlock_command', 'SELECT guardian.unlock();'),
        md5('LOCKDOWN:' || v_lockdown.id || ':' || v_lockdown.environment));
    PERFORM guardian._lockdown_renew_snapshot();
    UPDATE guardian.lockdowns AS l
       SET changing_xid = NULL, not_revoked = v_not, sessions_ended = v_sessions, alert_id = v_alert
     WHERE l.id = v_lockdown.id
    RETURNING * INTO v_lockdown;
    RETURN v_lockdown;
END
$$;
COMMENT ON FUNCTION guardian._lockdown_apply(text, boolean) IS
    'Internal: takes the application roles'' write privileges and makes them read-only (as configured), writing down everything taken; raises LOCKDOWN.';

CREATE FUNCTION guardian.lockdown(p_reason text)
RETURNS guardian.lockdowns
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT guardian._lockdown_apply(p_reason, false)
$$;
COMMENT ON FUNCTION guardian.lockdown(text) IS
    'Emergency brake: application roles (lockdown.roles, else every login role that is not a superuser, the guardian''s or an admin) lose INSERT/UPDATE/DELETE/TRUNCATE and become read-only in new sessions (lockdown.revoke, lockdown.read_only; lockdown.end_sessions also ends their sessions); admins keep working. Refused when already locked down. Raises a LOCKDOWN alert; undo with guardian.unlock().';

CREATE FUNCTION guardian.unlock(p_note text DEFAULT NULL)
RETURNS guardian.lockdowns
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_lockdown guardian.lockdowns;
    v_change   guardian.lockdown_changes;
    v_current  text;
    v_note     text;
    v_restored boolean;
    v_notes    text[] := '{}';
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('guardian.lockdown', 0));
    SELECT * INTO v_lockdown FROM guardian.lockdowns AS l WHERE l.ended_at IS NULL FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION '% is not locked down', guardian.current_environment()
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'See past lockdowns with: SELECT id, reason, started_at, ended_at FROM guardian.lockdowns ORDER BY id DESC;';
    END IF;
    UPDATE guardian.lockdowns AS l SET changing_xid = txid_current() WHERE l.id = v_lockdown.id;

    -- Give back exactly what was taken; what cannot be given back is said, not skipped silently.
    FOR v_change IN
        SELECT * FROM guardian.lockdown_changes AS c
         WHERE c.lockdown_id = v_lockdown.id AND NOT c.restored
         ORDER BY c.relid::oid NULLS LAST, c.column_name NULLS FIRST, c.seq
    LOOP
        v_note := NULL;
        v_restored := false;
        BEGIN
            IF v_change.kind = 'privilege' THEN
                IF NOT EXISTS (SELECT FROM pg_catalog.pg_class AS t WHERE t.oid = v_change.relid) THEN
                    v_note := format('table %s was dropped during the lockdown', v_change.table_name);
                ELSIF NOT EXISTS (SELECT FROM pg_catalog.pg_roles AS r WHERE r.oid = v_change.role_oid) THEN
                    v_note := format('role %s was dropped during the lockdown', v_change.role_name);
                ELSE
                    PERFORM guardian._lockdown_privilege(true, v_change.relid, v_change.role_oid, v_change.privileges,
                                                         v_change.column_name, v_change.grantable);
                    v_restored := true;
                END IF;
            ELSE
                SELECT substr(c, length('default_transaction_read_only=') + 1) INTO v_current
                  FROM pg_catalog.pg_db_role_setting AS s, unnest(s.setconfig) AS c
                 WHERE s.setrole = v_change.role_oid
                   AND s.setdatabase = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = current_database())
                   AND c LIKE 'default\_transaction\_read\_only=%';
                IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles AS r WHERE r.oid = v_change.role_oid) THEN
                    v_note := format('role %s was dropped during the lockdown', v_change.role_name);
                ELSIF v_current IS DISTINCT FROM 'on' THEN
                    v_note := format('default_transaction_read_only of %s was changed to %s during the lockdown; left as it is',
                                                    v_change.role_name, coalesce(v_current, 'nothing'));
                ELSE
                    PERFORM guardian._lockdown_read_only(v_change.role_oid, v_change.previous);
                    v_restored := true;
                END IF;
                v_current := NULL;
            END IF;
        EXCEPTION WHEN OTHERS THEN
            v_note := SQLERRM;
        END;
        UPDATE guardian.lockdown_changes AS c SET restored = v_restored, restore_note = v_note
         WHERE c.lockdown_id = v_change.lockdown_id AND c.seq = v_change.seq;
        IF v_note IS NOT NULL THEN
            v_notes := v_notes || v_note;
        END IF;
    END LOOP;

    PERFORM guardian._lockdown_renew_snapshot();
    UPDATE guardian.lockdowns AS l
       SET ended_at = clock_timestamp(), ended_by = guardian._actor(), end_note = p_note, changing_xid = NULL
     WHERE l.id = v_lockdown.id
    RETURNING * INTO v_lockdown;
    IF v_lockdown.alert_id IS NOT NULL THEN
        PERFORM guardian.resolve_alert(v_lockdown.alert_id, coalesce(p_note, format('unlocked by %s', guardian._actor())));
    END IF;
    PERFORM guardian.raise_alert(
        'LOCKDOWN_LIFTED', CASE WHEN cardinality(v_notes) > 0 THEN 'HIGH' ELSE 'INFO' END,
        format('%s unlocked by %s after %s%s', v_lockdown.environment, guardian._actor(),
               date_trunc('second', v_lockdown.ended_at - v_lockdown.started_at),
               CASE WHEN cardinality(v_notes) > 0 THEN format('; not restored: %s', array_to_string(v_notes, '; '))
                    ELSE '; every privilege and setting it took is back' END),
        NULL, NULL,
        jsonb_build_object('lockdown_id', v_lockdown.id, 'note', p_note, 'not_restored', to_jsonb(v_notes)),
        md5('LOCKDOWN_LIFTED:' || v_lockdown.id));
    RETURN v_lockdown;
END
$$;
COMMENT ON FUNCTION guardian.unlock(text) IS
    'Lift the active lockdown: gives back exactly the privileges and settings it took (a dropped table or role, or a setting changed meanwhile, is named in the LOCKDOWN_LIFTED alert), resolves the LOCKDOWN alert.';

CREATE VIEW guardian.lockdown_status AS
SELECT l.id, l.environment, l.reason, l.automatic, l.started_at, l.started_by, l.roles, l.options,
       (SELECT pg_catalog.count(*) FROM guardian.lockdown_changes AS c WHERE c.lockdown_id = l.id AND c.kind = 'privilege') AS revoked,
       (SELECT pg_catalog.count(*) FROM guardian.lockdown_changes AS c WHERE c.lockdown_id = l.id AND c.kind = 'read_only') AS read_only_roles,
       l.not_revoked, l.sessions_ended, l.alert_id
  FROM guardian.lockdowns AS l
 WHERE l.ended_at IS NULL;
COMMENT ON VIEW guardian.lockdown_status IS
    'The active lockdown, if any: why, since when, by whom, which roles, how many grants were taken and what could not be.';
