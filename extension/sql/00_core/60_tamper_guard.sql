-- Application roles often own their tables, and a table owner may disable or drop any
-- trigger on it. These event triggers refuse that for guardian triggers (those whose
-- function lives in the guardian schema) unless the role is a superuser or guardian_admin.
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
    SELECT t.tgname, t.tgrelid::regclass AS relid INTO v_trigger
      FROM pg_event_trigger_ddl_commands() AS c
      JOIN pg_catalog.pg_trigger AS t ON t.tgrelid = c.objid
      JOIN pg_catalog.pg_proc AS p ON p.oid = t.tgfoid
     WHERE c.classid = 'pg_catalog.pg_class'::regclass
       AND p.pronamespace = 'guardian'::regnamespace
       AND t.tgenabled = 'D'
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'role % may not disable guardian trigger % on %', CURRENT_USER, v_trigger.tgname, v_trigger.relid
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'pg_guardian triggers can only be disabled by a superuser or a member of guardian_admin.',
                  HINT = format('To stop watching the table, a guardian admin runs: SELECT guardian.unwatch(%L);', v_trigger.relid::text);
    END IF;
END
$$;
COMMENT ON FUNCTION guardian._guard_triggers_altered() IS
    'Internal event trigger: refuses ALTER TABLE ... DISABLE TRIGGER on guardian triggers by non-admins.';

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
    SELECT d.object_identity INTO v_identity
      FROM pg_event_trigger_dropped_objects() AS d
     WHERE d.original
       AND d.object_type = 'trigger'
       AND d.object_identity LIKE 'guardian\_%'
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
    'Internal event trigger: refuses DROP TRIGGER on guardian triggers by non-admins.';

-- Event triggers need a superuser. The extension always has one; the plain-SQL install on
-- managed Postgres may not, and then installs without this protection (status says so).
DO $event_triggers$
BEGIN
    IF (SELECT r.rolsuper FROM pg_catalog.pg_roles AS r WHERE r.rolname = CURRENT_USER) THEN
        CREATE EVENT TRIGGER guardian_protect_triggers_alter
            ON ddl_command_end
            WHEN TAG IN ('ALTER TABLE')
            EXECUTE FUNCTION guardian._guard_triggers_altered();
        CREATE EVENT TRIGGER guardian_protect_triggers_drop
            ON sql_drop
            WHEN TAG IN ('DROP TRIGGER')
            EXECUTE FUNCTION guardian._guard_triggers_dropped();
    ELSE
        RAISE WARNING 'pg_guardian: % is not a superuser; guardian triggers are not protected from being disabled by table owners', CURRENT_USER;
    END IF;
END
$event_triggers$;
