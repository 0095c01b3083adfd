-- Tables and SECURITY DEFINER functions belong to guardian_owner (NOLOGIN, not a superuser),
-- so definer functions run with no more than the guardian's own rights. Everything else stays
-- with the installer:
--   * SECURITY INVOKER functions run as whoever calls them, superusers included (the WHEN
--     clauses and trigger functions on application tables, the functions event triggers and
--     jobs call): a role that could alter them could run code as that caller;
--   * event trigger functions and the few definers that need a superuser (dblink without a
--     password, lockdown of other roles, regenerating the prefilter functions);
--   * guardian.strict_recorder, where the superuser-only recorder connects.
-- guardian_owner gets CREATE on the schema only for the hand-over (a non-superuser installer
-- needs it to give objects away) and loses it in 99_finish/80_no_create.sql: it can create or
-- replace nothing.
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
           AND c.relname <> 'strict_recorder'
        UNION ALL
        SELECT 3, format('ALTER %s %s OWNER TO guardian_owner',
                      CASE WHEN p.prokind = 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END,
                      p.oid::regprocedure)
          FROM pg_catalog.pg_proc AS p
         WHERE p.pronamespace = 'guardian'::regnamespace
           AND p.prosecdef
           -- dblink connects without a password only for a superuser, lockdown changes other
           -- roles' privileges and settings, and the compiled prefilter functions are created
           -- by their owner: these stay with the installer.
           AND p.proname NOT IN ('_record_rejection', '_lockdown_privilege', '_lockdown_read_only',
                                 '_lockdown_end_sessions', '_compile_rules')
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
