-- Application roles often own their tables, and a table owner may disable, rename or drop
-- any trigger on it. These event triggers refuse that for guardian triggers (those whose
-- function lives in the guardian schema) unless the role is a superuser or guardian_admin.
-- They run as whoever does the DDL, superusers included, so they call nothing but
-- pg_catalog and functions owned by the installing superuser (see 99_finish/10_ownership.sql).
CREATE FUNCTION guardian._is_admin()
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles AS r WHERE r.rolname = CURRENT_USER), false)
        OR pg_has_role(CURRENT_USER, 'guardian_admin', 'MEMBER')
$$;
COMMENT ON FUNCTION guardian._is_admin() IS
    'Internal: is the current role a superuser or a member of guardian_admin?';

CREATE FUNCTION guardian._guard_triggers_altered()
RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_trigger record;
BEGIN
    IF guardian._is_admin() THEN
        RETURN;
    END IF;
    -- Any state but 'O' (enabled in origin and local mode) lets writes pass unchecked:
    -- 'D' disabled, 'R' only on replicas, 'A' also while session_replication_role = replica.
    -- A guardian trigger is one whose function is in the guardian schema, whatever its name.
    SELECT t.tgname, t.tgrelid::regclass AS relid, t.tgenabled, c.command_tag INTO v_trigger
      FROM pg_event_trigger_ddl_commands() AS c
      JOIN pg_catalog.pg_trigger AS t
        ON (c.classid = 'pg_catalog.pg_class'::regclass AND t.tgrelid = c.objid)
        OR (c.classid = 'pg_catalog.pg_trigger'::regclass AND t.oid = c.objid)
      JOIN pg_catalog.pg_proc AS p ON p.oid = t.tgfoid
     WHERE p.pronamespace = 'guardian'::regnamespace
       AND (t.tgenabled <> 'O' OR c.command_tag = 'ALTER TRIGGER')
     LIMIT 1;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF v_trigger.command_tag = 'ALTER TRIGGER' THEN
        RAISE EXCEPTION 'role % may not alter or rename guardian trigger % on %', CURRENT_USER, v_trigger.tgname, v_trigger.relid
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'pg_guardian triggers can only be changed by a superuser or a member of guardian_admin.',
                  HINT = format('To stop watching the table, a guardian admin runs: SELECT guardian.unwatch(%L);', v_trigger.relid::text);
    END IF;
    RAISE EXCEPTION 'role % may not % guardian trigger % on %', CURRENT_USER,
                    CASE v_trigger.tgenabled WHEN 'D' THEN 'disable' WHEN 'R' THEN 'enable only on replicas'
                         ELSE 'enable in every replication mode' END,
                    v_trigger.tgname, v_trigger.relid
        USING ERRCODE = 'insufficient_privilege',
              DETAIL = 'A guardian trigger stays ENABLE (origin mode); only a superuser or a member of guardian_admin may change that.',
              HINT = format('To stop watching the table, a guardian admin runs: SELECT guardian.unwatch(%L);', v_trigger.relid::text);
END
$$;
COMMENT ON FUNCTION guardian._guard_triggers_altered() IS
    'Internal event trigger: refuses, for non-admins, any guardian trigger state but ENABLE (DISABLE, ENABLE REPLICA, ENABLE ALWAYS) and ALTER TRIGGER (rename) on guardian triggers.';

CREATE FUNCTION guardian._guard_triggers_dropped()
RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_identity text;
BEGIN
    IF guardian._is_admin() THEN
        RETURN;
    END IF;
    -- The trigger's function is gone from the catalog by now; its name is reliable because
    -- renaming a guardian trigger is refused. Dropped with its table is fine; dropped alone, or
    -- by ALTER TABLE ... DROP COLUMN ... CASCADE, is not.
    SELECT d.object_identity INTO v_identity
      FROM pg_event_trigger_dropped_objects() AS d
     WHERE d.object_type = 'trigger'
       AND d.address_names[3] LIKE 'guardian\_%'
       AND NOT EXISTS (SELECT FROM pg_event_trigger_dropped_objects() AS t
                        WHERE t.object_type IN ('table', 'foreign table')
                          AND t.address_names[1] = d.address_names[1] AND t.address_names[2] = d.address_names[2])
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'role % may not drop guardian trigger %', CURRENT_USER, v_identity
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'pg_guardian triggers can only be dropped by a superuser or a member of guardian_admin.',
                  HINT = 'To stop watching a table, a guardian admin runs: SELECT guardian.unwatch(''schema.table'');';
    END IF;
END
$$;
COMMENT ON FUNCTION guardian._guard_triggers_dropped() IS
    'Internal event trigger: refuses DROP TRIGGER (or a CASCADE that takes one) on guardian triggers by non-admins.';

-- guardian_owner runs the SECURITY DEFINER functions. It cannot create anything in the
-- schema, and this event trigger refuses it (and everyone but a superuser or the schema's
-- owner) any other DDL on the guardian's objects: ALTER FUNCTION ... SECURITY INVOKER or
-- SET search_path, CREATE RULE or CREATE TRIGGER on a guardian table, a column DEFAULT, DROP.
-- So code that runs as a superuser and calls a guardian function or writes a guardian table
-- runs only what the install put there.
CREATE FUNCTION guardian._guard_schema()
RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_what text;
BEGIN
    IF coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles AS r WHERE r.rolname = CURRENT_USER), false)
       OR NOT EXISTS (SELECT FROM pg_catalog.pg_namespace AS n WHERE n.nspname = 'guardian')
       OR (SELECT pg_catalog.pg_get_userbyid(n.nspowner) FROM pg_catalog.pg_namespace AS n
            WHERE n.nspname = 'guardian') = CURRENT_USER THEN
        RETURN;
    END IF;
    -- An object is the guardian's when it is in the schema, or (triggers, rules, policies,
    -- defaults, constraints: objects without a schema of their own) belongs to a relation there.
    IF TG_EVENT = 'sql_drop' THEN
        SELECT string_agg(DISTINCT d.object_type || ' ' || d.object_identity, ', ') INTO v_what
          FROM pg_event_trigger_dropped_objects() AS d
         WHERE d.schema_name = 'guardian' OR (d.object_type = 'schema' AND d.object_identity = 'guardian')
            OR (d.object_type IN ('trigger', 'rule', 'policy', 'table constraint', 'default value', 'index', 'table column')
                AND d.address_names[1] = 'guardian');
    ELSE
        SELECT string_agg(DISTINCT c.command_tag || ' ' || coalesce(c.object_identity, ''), ', ') INTO v_what
          FROM pg_event_trigger_ddl_commands() AS c
         WHERE c.schema_name = 'guardian' OR (c.object_type = 'schema' AND c.object_identity = 'guardian')
            OR (c.object_type IN ('trigger', 'rule', 'policy', 'table constraint', 'default value', 'index', 'table column')
                AND (pg_identify_object_as_address(c.classid, c.objid, c.objsubid)).object_names[1] = 'guardian');
    END IF;
    IF v_what IS NOT NULL THEN
        RAISE EXCEPTION 'role % may not change pg_guardian''s own objects: %', CURRENT_USER, v_what
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'The guardian''s functions and tables change only through its install and upgrade scripts.',
                  HINT = 'A superuser upgrades it with: ALTER EXTENSION pg_guardian UPDATE;';
    END IF;
END
$$;
COMMENT ON FUNCTION guardian._guard_schema() IS
    'Internal event trigger: refuses DDL on objects in the guardian schema by anyone but a superuser or the schema''s owner.';

-- Event triggers need a superuser. The extension always has one; the plain-SQL install on
-- managed Postgres may not, and then installs without this protection (status says so).
DO $event_triggers$
BEGIN
    IF (SELECT r.rolsuper FROM pg_catalog.pg_roles AS r WHERE r.rolname = CURRENT_USER) THEN
        CREATE EVENT TRIGGER guardian_protect_triggers_alter
            ON ddl_command_end
            WHEN TAG IN ('ALTER TABLE', 'ALTER TRIGGER')
            EXECUTE FUNCTION guardian._guard_triggers_altered();
        CREATE EVENT TRIGGER guardian_protect_triggers_drop
            ON sql_drop
            WHEN TAG IN ('DROP TRIGGER', 'ALTER TABLE')
            EXECUTE FUNCTION guardian._guard_triggers_dropped();
        CREATE EVENT TRIGGER guardian_protect_schema
            ON ddl_command_end
            EXECUTE FUNCTION guardian._guard_schema();
        CREATE EVENT TRIGGER guardian_protect_schema_drop
            ON sql_drop
            EXECUTE FUNCTION guardian._guard_schema();
    ELSE
        RAISE WARNING 'pg_guardian: % is not a superuser; guardian triggers are not protected from being disabled by table owners', CURRENT_USER;
    END IF;
END
$event_triggers$;
