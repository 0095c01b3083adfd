-- Everything in the guardian schema belongs to guardian_owner (NOLOGIN, not a superuser), so
-- SECURITY DEFINER functions run with no more than the guardian's own rights. Event triggers
-- stay with the installing superuser: only a superuser may own them.
-- guardian_owner regenerates the compiled prefilter functions, so it may create in the schema.
-- It gets the schema first and the tables before the functions: the DDL below fires the
-- schema-change event trigger, which calls functions that already run as guardian_owner.
GRANT USAGE, CREATE ON SCHEMA guardian TO guardian_owner;

DO $owner$
DECLARE
    v_object record;
BEGIN
    FOR v_object IN
        SELECT 1 AS step, format('ALTER %s guardian.%I OWNER TO guardian_owner',
                      CASE WHEN c.relkind = 'v' THEN 'VIEW' WHEN c.relkind = 'm' THEN 'MATERIALIZED VIEW'
                           ELSE 'TABLE' END, c.relname) AS ddl
          FROM pg_catalog.pg_class AS c
         WHERE c.relnamespace = 'guardian'::regnamespace
           AND c.relkind IN ('r', 'p', 'v', 'm')
        UNION ALL
        SELECT 3, format('ALTER %s %s OWNER TO guardian_owner',
                      CASE WHEN p.prokind = 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END,
                      p.oid::regprocedure)
          FROM pg_catalog.pg_proc AS p
         WHERE p.pronamespace = 'guardian'::regnamespace
           -- dblink connects without a password only for a superuser, and lockdown changes other
           -- roles' privileges and settings: these stay with the installer.
           AND p.proname NOT IN ('_record_rejection', '_lockdown_privilege', '_lockdown_read_only', '_lockdown_end_sessions')
           -- Event trigger functions run as whoever runs DDL, superusers included: a role that
           -- could replace them could run code as a superuser. They stay with the installer.
           AND p.oid NOT IN (SELECT e.evtfoid FROM pg_catalog.pg_event_trigger AS e)
        UNION ALL
        SELECT 2, format('ALTER TYPE guardian.%I OWNER TO guardian_owner', t.typname)
          FROM pg_catalog.pg_type AS t
         WHERE t.typnamespace = 'guardian'::regnamespace
           AND t.typtype IN ('e', 'd', 'c')
           AND (t.typrelid = 0 OR (SELECT c.relkind FROM pg_catalog.pg_class AS c WHERE c.oid = t.typrelid) = 'c')
         ORDER BY 1, 2
    LOOP
        EXECUTE v_object.ddl;
    END LOOP;
END
$owner$;

