-- A watched table keeps being watched through DDL (M1 of the security review): renamed and
-- added columns are followed (the watch is keyed by column number), new partitions get their
-- statement triggers, a table may not become an inheritance child of a watched table without
-- being watched itself (row triggers are not inherited), and a partition that leaves a
-- watched tree is reported.
-- Relations that carry guardian triggers but are no longer covered by a watch (a detached
-- partition): one WATCH_LOST alert each, until watched again.
CREATE FUNCTION guardian._report_unwatched()
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_rel   regclass;
    v_count integer := 0;
BEGIN
    FOR v_rel IN
        SELECT DISTINCT t.tgrelid::regclass
          FROM pg_catalog.pg_trigger AS t
          JOIN pg_catalog.pg_proc AS p ON p.oid = t.tgfoid
         WHERE p.pronamespace = 'guardian'::regnamespace
           AND t.tgrelid NOT IN (SELECT w.relid FROM guardian.watched_tables AS w)
           AND t.tgrelid <> 'guardian.monitoring_alerts'::regclass
           AND (SELECT c.relnamespace FROM pg_catalog.pg_class AS c WHERE c.oid = t.tgrelid) <> 'guardian'::regnamespace
           AND (guardian._watch_of(t.tgrelid)).relid IS NULL
    LOOP
        PERFORM guardian.raise_alert(
            'WATCH_LOST', CASE WHEN guardian.current_environment() = 'production' THEN 'HIGH' ELSE 'MEDIUM' END,
            format('%s is no longer watched: it left a watched table (DETACH PARTITION or NO INHERIT) and its writes are not checked for test data', v_rel),
            v_rel::text, NULL,
            jsonb_build_object('role', SESSION_USER,
                               'remediation', format('Watch it: SELECT guardian.watch(%L); or drop its leftover triggers.', v_rel::text)),
            md5(concat_ws('|', 'WATCH_LOST', guardian.current_environment(), v_rel::text)));
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION guardian._report_unwatched() IS
    'Internal: raises WATCH_LOST for relations that carry guardian triggers but no watch covers any more (detached partitions).';

-- Runs as the installing superuser (like every event trigger function, it cannot be called
-- otherwise): it reads the guardian's tables, and creates the statement triggers of a new
-- partition, which need no rights on the application's code (CREATE TRIGGER runs none).
CREATE FUNCTION guardian._on_watched_ddl()
RETURNS event_trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_rel    regclass;
    v_root   regclass;
    v_parent regclass;
    v_stmt   text;
    v_change jsonb;
    v_seen   boolean := false;
    v_c      boolean := to_regprocedure('guardian._activity_end()') IS NOT NULL;
BEGIN
    IF to_regclass('guardian.watched_tables') IS NULL THEN
        RETURN;   -- the install itself
    END IF;
    FOR v_rel IN
        SELECT DISTINCT c.objid::regclass
          FROM pg_event_trigger_ddl_commands() AS c
          JOIN pg_catalog.pg_class AS r ON r.oid = c.objid
         WHERE c.classid = 'pg_catalog.pg_class'::regclass AND NOT c.in_extension
           AND r.relkind IN ('r', 'p', 'f') AND r.relnamespace <> 'guardian'::regnamespace
    LOOP
        -- Row triggers are not inherited by inheritance children: rows written there would be
        -- visible through the watched parent unchecked.
        SELECT i.inhparent::regclass INTO v_parent
          FROM pg_catalog.pg_inherits AS i
          JOIN pg_catalog.pg_class AS c ON c.oid = i.inhrelid
         WHERE i.inhrelid = v_rel AND NOT c.relispartition AND (guardian._watch_of(i.inhparent)).relid IS NOT NULL
         LIMIT 1;
        IF FOUND AND (guardian._watch_of(v_rel)).relid IS NULL THEN
            RAISE EXCEPTION '% may not inherit from watched table %: rows written to it would reach % unchecked', v_rel, v_parent, v_parent
                USING ERRCODE = 'insufficient_privilege',
                      DETAIL = 'pg_guardian''s row triggers are not inherited by inheritance children (only by partitions).',
                      HINT = format('Create it without INHERITS, watch it (SELECT guardian.watch(%L);), then: ALTER TABLE %s INHERIT %s;',
                                    v_rel::text, v_rel, v_parent);
        END IF;
        v_root := (guardian._watch_of(v_rel)).relid;
        CONTINUE WHEN v_root IS NULL;
        v_seen := true;
        -- Every relation of the tree carries the statement triggers (new partitions do not).
        FOR v_stmt IN
            SELECT s.ddl
              FROM guardian._relation_tree(v_root) AS p,
                   LATERAL guardian._statement_trigger_ddl(p.relid, v_c) AS s
             WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = p.relid AND t.tgname = s.name)
        LOOP
            EXECUTE v_stmt;
        END LOOP;
        IF v_rel = v_root THEN
            v_change := guardian._refresh_watch(v_root);
            IF v_change IS NOT NULL AND to_regprocedure('guardian._suspect(record)') IS NULL THEN
                RAISE WARNING 'pg_guardian: the watched columns of % changed; without the C prefilter its triggers test the old ones until a guardian admin runs SELECT guardian.watch(%L);', v_root, v_root::text;
            END IF;
        END IF;
    END LOOP;
    IF v_seen THEN
        PERFORM guardian._report_unwatched();
    END IF;
END
$$;
COMMENT ON FUNCTION guardian._on_watched_ddl() IS
    'Internal event trigger (CREATE TABLE, ALTER TABLE): follows renamed and new columns of watched tables, adds statement triggers to new partitions, refuses unwatched inheritance children of watched tables, reports detached partitions.';

DO $watch_ddl$
BEGIN
    IF (SELECT r.rolsuper FROM pg_catalog.pg_roles AS r WHERE r.rolname = CURRENT_USER) THEN
        CREATE EVENT TRIGGER guardian_watch_ddl
            ON ddl_command_end
            WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE', 'CREATE FOREIGN TABLE', 'ALTER FOREIGN TABLE')
            EXECUTE FUNCTION guardian._on_watched_ddl();
    ELSE
        RAISE WARNING 'pg_guardian: % is not a superuser; renamed or added columns of watched tables are followed only when guardian.watch() runs again', CURRENT_USER;
    END IF;
END
$watch_ddl$;
