-- Drift as it happens: an event trigger records every schema change (what, who, from where,
-- when) and raises one SCHEMA_CHANGE alert per transaction, so a migration of 200 statements
-- is one alert that counts 200 occurrences, not 200 alerts. GRANT and REVOKE are left to the
-- security events (issue 6), and pg_guardian's own objects and temporary objects are not
-- schema drift. Event triggers do not fire for roles, databases or tablespaces: the role
-- snapshot comparison records those through guardian.record_schema_change(), the same hook
-- any other detector may use.
CREATE TABLE guardian.schema_changes (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at       timestamptz NOT NULL DEFAULT pg_catalog.statement_timestamp(),
    command_tag       text NOT NULL,
    object_type       text,
    schema_name       text,
    object_identity   text,
    source            text NOT NULL,
    role_name         text NOT NULL,
    session_user_name text NOT NULL,
    application_name  text,
    client_addr       inet,
    backend_pid       integer NOT NULL DEFAULT pg_catalog.pg_backend_pid(),
    transaction_id    xid8 NOT NULL DEFAULT pg_catalog.pg_current_xact_id(),
    environment       text NOT NULL DEFAULT guardian.current_environment(),
    alert_id          uuid,
    detail            jsonb NOT NULL DEFAULT '{}'::pg_catalog.jsonb,
    CONSTRAINT schema_changes_source_chk CHECK (source ~ '^[a-z][a-z0-9_ ]{0,40}$')
);
COMMENT ON TABLE guardian.schema_changes IS
    'Every schema change seen by the DDL event trigger (or reported through guardian.record_schema_change): command, object, role, application, client address, time and the SCHEMA_CHANGE alert it raised. Pruned by the drift_check job after the drift.change_retention setting (default 90 days).';
SELECT pg_catalog.pg_extension_config_dump('guardian.schema_changes', '');
CREATE INDEX schema_changes_occurred_at_idx ON guardian.schema_changes (occurred_at);
CREATE INDEX schema_changes_identity_idx ON guardian.schema_changes (object_identity, occurred_at);
CREATE INDEX schema_changes_transaction_idx ON guardian.schema_changes (transaction_id);

-- Severity by environment: the drift.schema_change_severity setting where set (per
-- environment, see guardian.settings), else HIGH in production (CRITICAL for a DROP),
-- LOW in staging and INFO anywhere else.
CREATE FUNCTION guardian._schema_change_severity(p_command_tag text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(
        upper(guardian.setting('drift.schema_change_severity') #>> '{}'),
        CASE guardian.current_environment()
            WHEN 'production' THEN CASE WHEN p_command_tag LIKE 'DROP %' THEN 'CRITICAL' ELSE 'HIGH' END
            WHEN 'staging' THEN 'LOW'
            ELSE 'INFO'
        END)
$$;
COMMENT ON FUNCTION guardian._schema_change_severity(text) IS
    'Internal: severity of a SCHEMA_CHANGE alert in this environment.';

CREATE FUNCTION guardian._record_change(
    p_command_tag text, p_object_type text, p_schema_name text, p_object_identity text,
    p_source text, p_detail jsonb)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_role     text := CASE WHEN current_setting('role') = 'none' THEN SESSION_USER::text
                            ELSE current_setting('role') END;
    v_app      text := nullif(current_setting('application_name', true), '');
    v_txid     xid8 := pg_current_xact_id();
    v_id       bigint;
    v_count    bigint;
    v_changes  jsonb;
    v_alert    uuid;
    v_what     text := btrim(p_command_tag || ' ' || coalesce(p_object_identity, ''));
BEGIN
    INSERT INTO guardian.schema_changes
        (command_tag, object_type, schema_name, object_identity, source, role_name,
         session_user_name, application_name, client_addr, detail)
    VALUES (p_command_tag, p_object_type, p_schema_name, p_object_identity, p_source, v_role,
            SESSION_USER, v_app, inet_client_addr(), coalesce(p_detail, '{}'::jsonb))
    RETURNING id INTO v_id;

    SELECT count(*), jsonb_agg(x.what ORDER BY x.id) FILTER (WHERE x.n <= 20)
      INTO v_count, v_changes
      FROM (SELECT c.id, btrim(c.command_tag || ' ' || coalesce(c.object_identity, '')) AS what,
                   row_number() OVER (ORDER BY c.id) AS n
              FROM guardian.schema_changes AS c
             WHERE c.transaction_id = v_txid) AS x;

    v_alert := guardian.raise_alert(
        'SCHEMA_CHANGE',
        guardian._schema_change_severity(p_command_tag),
        CASE WHEN v_count = 1
             THEN format('schema change in %s: %s by %s%s', guardian.current_environment(), v_what, v_role,
                         coalesce(' via ' || v_app, ''))
             ELSE format('%s schema changes in %s by %s%s, latest: %s', v_count, guardian.current_environment(),
                         v_role, coalesce(' via ' || v_app, ''), v_what) END,
        p_metadata => jsonb_build_object(
            'transaction_id', v_txid::text, 'count', v_count, 'changes', v_changes,
            'role', v_role, 'application', v_app, 'client_addr', host(inet_client_addr()),
            'details', 'SELECT * FROM guardian.schema_changes WHERE transaction_id = ''' || v_txid || ''''),
        p_fingerprint => md5('SCHEMA_CHANGE:' || v_txid::text));
    UPDATE guardian.schema_changes AS c SET alert_id = v_alert WHERE c.id = v_id;
    RETURN v_id;
END
$$;
COMMENT ON FUNCTION guardian._record_change(text, text, text, text, text, jsonb) IS
    'Internal: store one schema change and raise (or count into) the SCHEMA_CHANGE alert of this transaction.';

CREATE FUNCTION guardian.record_schema_change(
    p_command_tag     text,
    p_object_type     text,
    p_object_identity text,
    p_schema_name     text DEFAULT NULL,
    p_source          text DEFAULT 'manual',
    p_detail          jsonb DEFAULT '{}'::pg_catalog.jsonb)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_command_tag IS NULL OR btrim(p_command_tag) = '' THEN
        RAISE EXCEPTION 'command tag must not be empty'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Name what happened the way Postgres does, e.g. SELECT guardian.record_schema_change(''ALTER ROLE'', ''role'', ''app_owner'', p_source => ''role snapshot'');';
    END IF;
    IF p_source IS NULL OR p_source !~ '^[a-z][a-z0-9_ ]{0,40}$' THEN
        RAISE EXCEPTION 'invalid change source %', coalesce(quote_literal(p_source), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use a short lower-case name for the detector, e.g. ''role snapshot''.';
    END IF;
    RETURN guardian._record_change(upper(btrim(p_command_tag)), p_object_type, p_schema_name,
                                   p_object_identity, p_source, p_detail);
END
$$;
COMMENT ON FUNCTION guardian.record_schema_change(text, text, text, text, text, jsonb) IS
    'Record a schema change that no event trigger sees (roles and memberships from the role snapshot comparison, changes found by other detectors) and raise SCHEMA_CHANGE as the DDL event trigger does. Returns the guardian.schema_changes id.';

-- Is this change about pg_guardian itself, or about a temporary object?
CREATE FUNCTION guardian._ignored_change(
    p_object_type text, p_schema_name text, p_object_identity text, p_classid oid, p_objid oid)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p_schema_name IN ('guardian', 'guardian_ext', 'guardian_history')
        OR p_schema_name ~ '^pg_(toast_)?temp'
        OR (p_object_type = 'schema' AND p_object_identity IN ('guardian', 'guardian_ext', 'guardian_history'))
        OR (p_object_type = 'extension' AND p_object_identity = 'pg_guardian')
        OR (p_classid = 'pg_catalog.pg_extension'::regclass AND EXISTS (
                SELECT FROM pg_catalog.pg_extension AS x
                  JOIN pg_catalog.pg_namespace AS n ON n.oid = x.extnamespace
                 WHERE x.oid = p_objid AND n.nspname IN ('guardian', 'guardian_ext', 'guardian_history')))
        OR (p_classid = 'pg_catalog.pg_trigger'::regclass AND EXISTS (
                SELECT FROM pg_catalog.pg_trigger AS t
                  JOIN pg_catalog.pg_proc AS p ON p.oid = t.tgfoid
                 WHERE t.oid = p_objid AND p.pronamespace = 'guardian'::regnamespace))
        OR (p_object_type = 'trigger' AND p_object_identity LIKE 'guardian\_%')
        OR coalesce(p_object_type = 'event trigger' AND p_object_identity LIKE 'guardian\_%', false)
$$;
COMMENT ON FUNCTION guardian._ignored_change(text, text, text, oid, oid) IS
    'Internal: changes to pg_guardian''s own objects and to temporary objects are not schema drift.';

-- Event trigger functions run as the role doing the DDL, which may not write guardian tables:
-- they are SECURITY DEFINER, and no one can call them other than as event triggers. A failure
-- to record must never break the user's DDL: it becomes a warning.
CREATE FUNCTION guardian._capture_ddl()
RETURNS event_trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_cmd      record;
    v_identity text;
BEGIN
    IF guardian.current_mode() = 'off' THEN
        RETURN;
    END IF;
    FOR v_cmd IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
        CONTINUE WHEN v_cmd.in_extension OR v_cmd.command_tag IN ('GRANT', 'REVOKE')
                   OR guardian._ignored_change(v_cmd.object_type, v_cmd.schema_name, v_cmd.object_identity,
                                               v_cmd.classid, v_cmd.objid);
        -- functions are named as the fingerprint names them: public.f(integer,text)
        v_identity := CASE WHEN v_cmd.classid = 'pg_catalog.pg_proc'::regclass
                           THEN v_cmd.objid::regprocedure::text ELSE v_cmd.object_identity END;
        PERFORM guardian._record_change(v_cmd.command_tag, v_cmd.object_type, v_cmd.schema_name,
                                        v_identity, 'ddl_command_end', '{}'::jsonb);
    END LOOP;
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'pg_guardian could not record a schema change: %', SQLERRM
        USING HINT = 'The DDL went through; check guardian.schema_changes and the server log.';
END
$$;
COMMENT ON FUNCTION guardian._capture_ddl() IS
    'Internal event trigger (ddl_command_end): records each schema change and raises SCHEMA_CHANGE.';

CREATE FUNCTION guardian._capture_drop()
RETURNS event_trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_obj      record;
    v_identity text;
BEGIN
    IF guardian.current_mode() = 'off' THEN
        RETURN;
    END IF;
    FOR v_obj IN
        SELECT * FROM pg_event_trigger_dropped_objects() AS d
         WHERE (d.original OR (d.normal AND d.object_type <> 'default value'
                                   AND NOT (d.object_type = 'rule' AND d.object_identity LIKE '"\_RETURN" on %')))
           AND NOT d.is_temporary
    LOOP
        CONTINUE WHEN guardian._ignored_change(v_obj.object_type, v_obj.schema_name, v_obj.object_identity,
                                               NULL, NULL);
        v_identity := v_obj.object_identity;
        IF v_obj.object_type IN ('function', 'procedure', 'aggregate') THEN
            -- the catalog row is gone: rebuild the fingerprint's form from the address
            SELECT quote_ident(v_obj.address_names[1]) || '.' || quote_ident(v_obj.address_names[2]) || '('
                   || coalesce(string_agg(coalesce(to_regtype(a.arg)::text, a.arg), ',' ORDER BY a.n), '') || ')'
              INTO v_identity
              FROM unnest(v_obj.address_args) WITH ORDINALITY AS a(arg, n);
        END IF;
        PERFORM guardian._record_change(tg_tag, v_obj.object_type, v_obj.schema_name, v_identity, 'sql_drop',
                                        CASE WHEN v_obj.original THEN '{}'::jsonb
                                             ELSE '{"cascaded": true}'::jsonb END);
    END LOOP;
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'pg_guardian could not record a dropped object: %', SQLERRM
        USING HINT = 'The DROP went through; check guardian.schema_changes and the server log.';
END
$$;
COMMENT ON FUNCTION guardian._capture_drop() IS
    'Internal event trigger (sql_drop): records dropped objects (and what CASCADE took with them) and raises SCHEMA_CHANGE.';

-- Event triggers need a superuser; the plain-SQL install on managed Postgres may not have one,
-- and then drift is still found by the hourly comparison with the baseline.
DO $capture$
BEGIN
    IF (SELECT r.rolsuper FROM pg_catalog.pg_roles AS r WHERE r.rolname = CURRENT_USER) THEN
        CREATE EVENT TRIGGER guardian_capture_ddl
            ON ddl_command_end
            EXECUTE FUNCTION guardian._capture_ddl();
        CREATE EVENT TRIGGER guardian_capture_drop
            ON sql_drop
            EXECUTE FUNCTION guardian._capture_drop();
    ELSE
        RAISE WARNING 'pg_guardian: % is not a superuser; schema changes are not captured as they happen (the hourly drift check still runs)', CURRENT_USER;
    END IF;
END
$capture$;
