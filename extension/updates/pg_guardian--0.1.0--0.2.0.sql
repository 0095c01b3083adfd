-- pg_guardian--0.1.0--0.2.0.sql: from the 0.1.0 release to 0.2.0, in place (data stays).
\echo Use "ALTER EXTENSION pg_guardian UPDATE TO '0.2.0'" to load this file. \quit

-- Each section names the source file in extension/sql/ whose objects it brings up to date;
-- tests/test_upgrade.py checks that the result has the same catalog as a fresh 0.2.0 install.

-- >>> sql/00_core/01_roles.sql: a managed-Postgres installer takes membership in guardian_owner
DO $membership$
BEGIN
    IF NOT pg_catalog.pg_has_role(CURRENT_USER, 'guardian_owner', 'MEMBER') THEN
        EXECUTE format('GRANT guardian_owner TO %I', CURRENT_USER);
    END IF;
    -- Whoever installs administers: a superuser always may, a database owner is made an admin.
    IF NOT pg_catalog.pg_has_role(CURRENT_USER, 'guardian_admin', 'MEMBER') THEN
        EXECUTE format('GRANT guardian_admin TO %I', CURRENT_USER);
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE EXCEPTION 'pg_guardian: % cannot take membership in roles guardian_owner and guardian_admin', CURRENT_USER
        USING ERRCODE = 'insufficient_privilege',
              DETAIL = SQLERRM,
              HINT = format('As a superuser or a role with ADMIN OPTION on it, run: GRANT guardian_owner, guardian_admin TO %I; then upgrade again.', CURRENT_USER);
END
$membership$;

-- Temporarily, for the hand-over of new objects to guardian_owner (a non-superuser upgrade
-- needs it, as the install does); taken back at the end.
GRANT CREATE ON SCHEMA guardian TO guardian_owner;

-- >>> sql/10_jobs/10_jobs.sql: each job's last success; the scheduler is noted
ALTER TABLE guardian.jobs ADD COLUMN last_ok_at timestamptz;
UPDATE guardian.jobs SET last_ok_at = last_finished_at WHERE last_status = 'ok';

CREATE OR REPLACE FUNCTION guardian.run_job(p_name text)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_job     guardian.jobs;
    v_started timestamptz := clock_timestamp();
    v_error   text;
    v_result  text;
BEGIN
    IF pg_is_in_recovery() THEN
        RETURN 'skipped: this server is a replica';
    END IF;
    SELECT * INTO v_job FROM guardian.jobs AS j WHERE j.name = p_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown guardian job %', quote_literal(p_name)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'List jobs with: SELECT name, schedule FROM guardian.jobs;';
    END IF;
    IF NOT v_job.enabled THEN
        RETURN 'skipped: disabled';
    END IF;
    -- Two runners (pg_cron and `pg-guardian jobs serve`, or an overlap) never run one job twice.
    IF NOT pg_try_advisory_xact_lock(hashtextextended('guardian.job:' || p_name, 0)) THEN
        RETURN 'skipped: already running';
    END IF;

    -- The command's first value (job functions return a one-line summary) is kept as
    -- last_result: what a retention run deleted is recorded, never silent.
    BEGIN
        EXECUTE v_job.command INTO v_result;
    EXCEPTION WHEN OTHERS THEN
        v_error := SQLERRM;
    END;

    UPDATE guardian.jobs AS j
       SET last_started_at  = v_started,
           last_finished_at = clock_timestamp(),
           last_duration    = clock_timestamp() - v_started,
           last_status      = CASE WHEN v_error IS NULL THEN 'ok' ELSE 'error' END,
           last_error       = v_error,
           last_result      = left(v_result, 1000),
           last_ok_at       = CASE WHEN v_error IS NULL THEN clock_timestamp() ELSE j.last_ok_at END,
           runs             = j.runs + 1,
           failures         = j.failures + (v_error IS NOT NULL)::int
     WHERE j.name = p_name;
    IF v_error IS NOT NULL THEN
        PERFORM guardian.raise_alert(
            'JOB_FAILED', 'HIGH',
            format('guardian job %s failed: %s', p_name, v_error),
            p_metadata => jsonb_build_object('job', p_name, 'error', v_error),
            p_fingerprint => md5('JOB_FAILED:' || p_name));
        RETURN 'error: ' || v_error;
    END IF;
    -- A job that works again closes its failure and overdue alerts.
    UPDATE guardian.monitoring_alerts AS a
       SET resolved_at = now(), resolved_by = 'pg_guardian',
           resolution_note = format('job %s ran successfully at %s', p_name, v_started)
     WHERE a.resolved_at IS NULL
       AND a.fingerprint IN (md5('JOB_FAILED:' || p_name), guardian._finding_fingerprint('jobs_overdue', p_name));
    RETURN 'ok' || coalesce(': ' || v_result, '');
END
$$;
COMMENT ON FUNCTION guardian.run_job(text) IS
    'Run one guardian job now: skipped on a replica, when disabled or already running; failures are recorded and raised as JOB_FAILED alerts, never propagated.';

CREATE OR REPLACE FUNCTION guardian.register_jobs()
RETURNS TABLE (job text, scheduled boolean, detail text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_job      guardian.jobs;
    v_cron_db  text := current_setting('cron.database_name', true);
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension AS x WHERE x.extname = 'pg_cron') THEN
        FOR v_job IN SELECT * FROM guardian.jobs AS j ORDER BY j.name LOOP
            job := v_job.name; scheduled := false;
            detail := 'pg_cron is not installed in this database: run `pg-guardian jobs serve`';
            RETURN NEXT;
        END LOOP;
        RETURN;
    END IF;
    IF v_cron_db IS DISTINCT FROM current_database() THEN
        FOR v_job IN SELECT * FROM guardian.jobs AS j ORDER BY j.name LOOP
            job := v_job.name; scheduled := false;
            detail := format('pg_cron runs only in database %s: run `pg-guardian jobs serve` for this one, or schedule it from there with cron.schedule_in_database()', v_cron_db);
            RETURN NEXT;
        END LOOP;
        RETURN;
    END IF;
    FOR v_job IN SELECT * FROM guardian.jobs AS j ORDER BY j.name LOOP
        job := v_job.name;
        IF v_job.enabled THEN
            EXECUTE 'SELECT cron.schedule($1, $2, $3)'
              USING 'guardian_' || v_job.name, v_job.schedule,
                    format('SELECT guardian.run_job(%L)', v_job.name);
            scheduled := true;
            detail := v_job.schedule;
        ELSE
            EXECUTE 'SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = $1'
              USING 'guardian_' || v_job.name;
            scheduled := false;
            detail := 'disabled';
        END IF;
        RETURN NEXT;
    END LOOP;
    PERFORM guardian.note_job_scheduler('pg_cron', current_database());
END
$$;
COMMENT ON FUNCTION guardian.register_jobs() IS
    'Schedule every enabled guardian job in pg_cron as guardian_<name> (idempotent: pg_cron upserts by name) and unschedule disabled ones; says why when pg_cron cannot run them here.';

CREATE OR REPLACE FUNCTION guardian.unregister_jobs()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count integer := 0;
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_extension AS x WHERE x.extname = 'pg_cron') THEN
        EXECUTE $q$SELECT count(cron.unschedule(jobid))::int FROM cron.job
                    WHERE jobname LIKE 'guardian\_%' AND database = current_database()$q$
           INTO v_count;
    END IF;
    PERFORM guardian.note_job_scheduler(NULL);
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION guardian.unregister_jobs() IS
    'Remove the guardian''s pg_cron jobs for this database (uninstall does this first).';

CREATE OR REPLACE VIEW guardian.job_status AS
SELECT j.name, j.schedule, j.enabled, j.last_started_at, j.last_finished_at, j.last_status,
       j.last_error, j.last_result, j.last_duration, j.runs, j.failures, j.max_lag,
       pg_catalog.now() - coalesce(j.last_finished_at, j.created_at) AS lag,
       j.enabled AND pg_catalog.now() - coalesce(j.last_finished_at, j.created_at) > j.max_lag AS overdue,
       j.last_ok_at
  FROM guardian.jobs AS j;
COMMENT ON VIEW guardian.job_status IS
    'Each guardian job with its last run and result, lag since then (since registration if it never ran) and whether it is overdue (lag > max_lag).';

-- >>> sql/10_jobs/15_set_job.sql: a changed job reminds that pg_cron elsewhere needs `jobs register`
CREATE OR REPLACE FUNCTION guardian.set_job(
    p_name     text,
    p_enabled  boolean DEFAULT NULL,
    p_schedule text DEFAULT NULL,
    p_max_lag  interval DEFAULT NULL)
RETURNS guardian.jobs
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_job guardian.jobs;
BEGIN
    IF p_max_lag IS NOT NULL AND p_max_lag <= interval '0' THEN
        RAISE EXCEPTION 'invalid max_lag % for guardian job %', p_max_lag, quote_literal(p_name)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'max_lag is how long the job may go without running before JOB_OVERDUE, e.g. interval ''30 minutes''.';
    END IF;
    IF NOT EXISTS (SELECT FROM guardian.jobs AS j WHERE j.name = p_name) THEN
        RAISE EXCEPTION 'unknown guardian job %', coalesce(quote_literal(p_name), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'List jobs with: SELECT name, schedule, enabled FROM guardian.jobs;';
    END IF;
    UPDATE guardian.jobs AS j
       SET enabled  = coalesce(p_enabled, j.enabled),
           schedule = CASE WHEN p_schedule IS NULL THEN j.schedule
                           ELSE guardian._check_cron_schedule(p_schedule) END,
           max_lag  = coalesce(p_max_lag, j.max_lag)
     WHERE j.name = p_name
    RETURNING j.* INTO v_job;
    -- Keep pg_cron in step where it runs the jobs of this database.
    IF EXISTS (SELECT FROM pg_catalog.pg_extension AS x WHERE x.extname = 'pg_cron')
       AND current_setting('cron.database_name', true) = current_database() THEN
        IF has_schema_privilege('cron', 'USAGE')
           AND has_function_privilege('cron.schedule(text, text, text)', 'EXECUTE') THEN
            PERFORM guardian.register_jobs();
        ELSE
            RAISE NOTICE 'guardian job % changed; pg_cron still has the old schedule', p_name
                USING HINT = 'As the role that owns the guardian pg_cron jobs, run: SELECT * FROM guardian.register_jobs();';
        END IF;
    ELSIF EXISTS (SELECT FROM guardian.job_scheduler AS s
                   WHERE s.kind = 'pg_cron' AND s.database IS DISTINCT FROM current_database()) THEN
        RAISE NOTICE 'guardian job % changed; pg_cron in database % still has the old schedule', p_name,
                     (SELECT s.database FROM guardian.job_scheduler AS s)
            USING HINT = 'Run: pg-guardian jobs register';
    END IF;
    RETURN v_job;
END
$$;
COMMENT ON FUNCTION guardian.set_job(text, boolean, text, interval) IS
    'Enable or disable a guardian job, change its schedule (five-field cron, GMT under pg_cron 1.4) or the lag after which it counts as overdue; re-registers it with pg_cron when pg_cron runs here.';

-- >>> sql/10_jobs/12_scheduler.sql (new)
CREATE TABLE guardian.job_scheduler (
    singleton     boolean PRIMARY KEY DEFAULT true,
    kind          text NOT NULL,
    database      text,
    registered_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    registered_by text NOT NULL DEFAULT CURRENT_USER,
    CONSTRAINT job_scheduler_singleton_chk CHECK (singleton),
    CONSTRAINT job_scheduler_kind_chk CHECK (kind IN ('pg_cron', 'jobs serve'))
);
COMMENT ON TABLE guardian.job_scheduler IS
    'What runs the guardian''s jobs: pg_cron (in database) or `pg-guardian jobs serve`; written by guardian.register_jobs() and the controller.';

CREATE FUNCTION guardian.note_job_scheduler(p_kind text, p_database text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_kind IS NULL THEN
        DELETE FROM guardian.job_scheduler;
        RETURN;
    END IF;
    IF p_kind NOT IN ('pg_cron', 'jobs serve') THEN
        RAISE EXCEPTION 'unknown job scheduler %', quote_literal(p_kind)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use ''pg_cron'' (with the database it runs in) or ''jobs serve''; NULL forgets it.';
    END IF;
    IF p_kind = 'pg_cron' AND (p_database IS NULL OR NOT EXISTS (
            SELECT FROM pg_catalog.pg_database AS d WHERE d.datname = p_database)) THEN
        RAISE EXCEPTION 'no database % for pg_cron', coalesce(quote_literal(p_database), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Name the database pg_cron runs in: SHOW cron.database_name;';
    END IF;
    INSERT INTO guardian.job_scheduler AS s (singleton, kind, database)
    VALUES (true, p_kind, CASE WHEN p_kind = 'pg_cron' THEN p_database END)
    ON CONFLICT (singleton) DO UPDATE
       SET kind = EXCLUDED.kind, database = EXCLUDED.database,
           registered_at = pg_catalog.now(), registered_by = CURRENT_USER;
END
$$;
COMMENT ON FUNCTION guardian.note_job_scheduler(text, text) IS
    'Record what runs the guardian''s jobs (''pg_cron'' and its database, or ''jobs serve''; NULL: nothing). guardian.register_jobs() and the controller call it.';

-- >>> sql/10_jobs/30_checks.sql: cluster-wide checks run in one database of the cluster
ALTER TABLE guardian.checks ADD COLUMN scope text NOT NULL DEFAULT 'database';
ALTER TABLE guardian.checks DROP CONSTRAINT checks_status_chk;
ALTER TABLE guardian.checks ADD CONSTRAINT checks_status_chk
    CHECK (last_status IN ('ok', 'findings', 'degraded', 'error', 'elsewhere'));
ALTER TABLE guardian.checks ADD CONSTRAINT checks_scope_chk CHECK (scope IN ('database', 'cluster'));
COMMENT ON COLUMN guardian.checks.last_status IS
    'ok: nothing found; findings: alerts raised; degraded: the check could only partly look (see last_detail); error: it failed (a CHECK_FAILED alert says why); elsewhere: a cluster-wide check that another database of the cluster runs.';
COMMENT ON COLUMN guardian.checks.scope IS
    'database: every guarded database runs it; cluster: it looks at the whole cluster (connections, replication, wraparound, logins, roles) and runs in one database only, guardian.cluster_checks_database().';

-- One cluster often guards several databases. A cluster-wide check runs in one of them: the
-- one the setting cluster.checks_database names ('*': every database), else the pg_cron
-- database when the guardian is installed there, else the guarded database created first.
-- The guarded databases are found in the shared catalog: objects owned by guardian_owner.
CREATE FUNCTION guardian.cluster_checks_database()
RETURNS text
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_setting text := guardian.setting('cluster.checks_database') #>> '{}';
    v_cron    text := nullif(current_setting('cron.database_name', true), '');
    v_db      text;
BEGIN
    IF nullif(v_setting, '') IS NOT NULL THEN
        RETURN v_setting;
    END IF;
    SELECT d.datname INTO v_db
      FROM pg_catalog.pg_database AS d
     WHERE NOT d.datistemplate AND d.datallowconn
       AND EXISTS (SELECT FROM pg_catalog.pg_shdepend AS s
                    WHERE s.dbid = d.oid
                      AND s.refclassid = 'pg_catalog.pg_authid'::regclass
                      AND s.refobjid = (SELECT r.oid FROM pg_catalog.pg_roles AS r WHERE r.rolname = 'guardian_owner')
                      AND s.deptype = 'o')
     ORDER BY d.datname IS DISTINCT FROM v_cron, d.oid
     LIMIT 1;
    RETURN coalesce(v_db, current_database());
END
$$;
COMMENT ON FUNCTION guardian.cluster_checks_database() IS
    'The database of this cluster that runs the cluster-wide checks: the setting cluster.checks_database (''*'': every one), else the pg_cron database if guarded, else the guarded database created first.';
SELECT pg_catalog.pg_extension_config_dump('guardian.checks', 'WHERE NOT builtin');

CREATE OR REPLACE FUNCTION guardian.run_checks(p_category text DEFAULT NULL, p_check text DEFAULT NULL)
RETURNS TABLE (
    check_name  text,
    category    text,
    status      text,
    alert_type  text,
    severity    text,
    table_name  text,
    record_id   text,
    detail      text,
    remediation text,
    metadata    jsonb,
    alert_id    uuid)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_check    guardian.checks;
    v_findings guardian.finding[];
    v_finding  guardian.finding;
    v_key      text;
    v_keep     text[];
    v_status   text;
    v_note     text;
    v_state    text;
    v_msg      text;
    v_hint     text;
    v_started  timestamptz;
    v_matched  boolean := false;
    v_cluster_db text;
BEGIN
    FOR v_check IN
        SELECT * FROM guardian.checks AS c
         WHERE (p_category IS NULL OR c.category = p_category)
           AND (p_check IS NULL OR c.name = p_check)
         ORDER BY c.category, c.name
    LOOP
        v_matched := true;
        check_name := v_check.name; category := v_check.category;
        alert_type := NULL; severity := NULL; table_name := NULL; record_id := NULL;
        detail := NULL; remediation := NULL; metadata := NULL; alert_id := NULL;
        IF NOT guardian._check_enabled(v_check.name) THEN
            status := 'disabled';
            detail := 'switched off: SELECT guardian.set_check_enabled(' || quote_literal(v_check.name) || ', true);';
            RETURN NEXT;
            CONTINUE;
        END IF;
        IF v_check.scope = 'cluster' THEN
            v_cluster_db := coalesce(v_cluster_db, guardian.cluster_checks_database());
            IF v_cluster_db NOT IN ('*', current_database()) THEN
                -- Another database raises these findings; what this one raised before is its.
                status := 'elsewhere';
                detail := format('cluster-wide check: runs in database %s', v_cluster_db);
                PERFORM guardian._resolve_cleared(v_check.name, '{}',
                    format('cluster-wide check %s now runs in database %s', v_check.name, v_cluster_db));
                UPDATE guardian.checks AS c
                   SET last_run_at = clock_timestamp(), last_status = 'elsewhere', last_detail = detail,
                       last_findings = 0, last_duration = NULL
                 WHERE c.name = v_check.name;
                RETURN NEXT;
                CONTINUE;
            END IF;
        END IF;
        v_started := clock_timestamp();
        v_findings := NULL; v_status := NULL; v_note := NULL; v_keep := '{}';
        -- Each check runs in its own subtransaction: one that fails or may not look (no
        -- privilege, no log file) is reported and the others still run.
        BEGIN
            EXECUTE format('SELECT array_agg(f) FROM %s() AS f', v_check.function::regproc) INTO v_findings;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT, v_hint = PG_EXCEPTION_HINT;
            v_note := v_msg || coalesce(' (' || nullif(v_hint, '') || ')', '');
            v_status := CASE WHEN v_state IN ('42501', '58P01', '58000', '0A000', '55000')
                             THEN 'degraded' ELSE 'error' END;
            v_findings := ARRAY[ROW(v_check.name,
                CASE v_status WHEN 'degraded' THEN 'CHECK_DEGRADED' ELSE 'CHECK_FAILED' END,
                CASE v_status WHEN 'degraded' THEN 'LOW' ELSE 'MEDIUM' END,
                NULL, v_check.name,
                format('guardian check %s %s: %s', v_check.name,
                       CASE v_status WHEN 'degraded' THEN 'cannot fully run' ELSE 'failed' END, v_msg),
                nullif(v_hint, ''),
                jsonb_build_object('sqlstate', v_state, 'error', v_msg),
                '_status:' || v_status)::guardian.finding];
        END;
        FOREACH v_finding IN ARRAY coalesce(v_findings, '{}') LOOP
            v_key := v_finding.dedup_key;
            IF v_finding.alert_type = 'CHECK_DEGRADED' THEN
                v_status := coalesce(v_status, 'degraded');
                v_note := coalesce(v_note, v_finding.detail);
                v_key := '_status:degraded';
            END IF;
            alert_type := v_finding.alert_type; severity := v_finding.severity;
            table_name := v_finding.table_name; record_id := v_finding.record_id;
            detail := v_finding.detail; remediation := v_finding.remediation;
            metadata := v_finding.metadata;
            alert_id := guardian._raise_finding(ROW(v_check.name, v_finding.alert_type, v_finding.severity,
                v_finding.table_name, v_finding.record_id, v_finding.detail, v_finding.remediation,
                v_finding.metadata, v_key)::guardian.finding);
            v_keep := v_keep || guardian._finding_fingerprint(v_check.name, v_key);
            status := CASE WHEN v_finding.alert_type IN ('CHECK_DEGRADED', 'CHECK_FAILED')
                           THEN coalesce(v_status, 'degraded') ELSE 'finding' END;
            RETURN NEXT;
        END LOOP;
        v_status := coalesce(v_status, CASE WHEN cardinality(v_keep) > 0 THEN 'findings' ELSE 'ok' END);
        IF v_status = 'ok' THEN
            alert_type := NULL; severity := NULL; table_name := NULL; record_id := NULL;
            detail := NULL; remediation := NULL; metadata := NULL; alert_id := NULL;
            status := 'ok';
            RETURN NEXT;
        END IF;
        -- Conditions that are no longer reported are over; so is an earlier failure or
        -- degradation of a check that now ran. A failed check says nothing about its
        -- conditions, so they stay as they were.
        IF v_status <> 'error' THEN
            IF v_check.is_condition THEN
                PERFORM guardian._resolve_cleared(v_check.name, v_keep,
                    format('condition cleared: check %s no longer reports it', v_check.name));
            ELSE
                PERFORM guardian._resolve_cleared(v_check.name,
                    v_keep || ARRAY(SELECT a.fingerprint FROM guardian.monitoring_alerts AS a
                                     WHERE a.resolved_at IS NULL AND a.metadata ->> 'check' = v_check.name
                                       AND a.type NOT IN ('CHECK_DEGRADED', 'CHECK_FAILED')),
                    format('check %s runs normally again', v_check.name));
            END IF;
        END IF;
        UPDATE guardian.checks AS c
           SET last_run_at = v_started, last_status = v_status, last_detail = v_note,
               last_findings = cardinality(v_keep), last_duration = clock_timestamp() - v_started
         WHERE c.name = v_check.name;
    END LOOP;
    IF NOT v_matched AND (p_category IS NOT NULL OR p_check IS NOT NULL) THEN
        RAISE EXCEPTION 'no guardian check matches category % and name %',
                        coalesce(quote_literal(p_category), 'any'), coalesce(quote_literal(p_check), 'any')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'List checks with: SELECT name, category FROM guardian.checks ORDER BY category, name;';
    END IF;
END
$$;
COMMENT ON FUNCTION guardian.run_checks(text, text) IS
    'Run the checks of a category (health, security, posture, jobs; NULL: all) or one check by name; raises or counts an alert per finding, resolves conditions that cleared, and returns one row per finding (or one ok/disabled/degraded/error row per check).';

CREATE OR REPLACE VIEW guardian.check_status AS
SELECT c.name, c.category, guardian._check_enabled(c.name) AS enabled, c.is_condition,
       c.description, c.last_run_at, c.last_status, c.last_detail, c.last_findings, c.last_duration,
       c.scope
  FROM guardian.checks AS c;
COMMENT ON VIEW guardian.check_status IS
    'Each check: category, on or off in this environment, how its last run went (ok, findings, degraded with the reason, error).';

-- >>> sql/10_jobs/50_guard_status.sql (new)
CREATE FUNCTION guardian.guard_status()
RETURNS TABLE (guarded boolean, scheduler text, scheduled_in text, overdue_jobs text[], problem text, fix text)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- pg_cron defines cron.database_name when it is loaded (a postmaster setting); the same
    -- name in postgresql.conf without pg_cron is only a placeholder.
    v_cron_db  text := (SELECT nullif(s.setting, '') FROM pg_catalog.pg_settings AS s
                         WHERE s.name = 'cron.database_name' AND s.context = 'postmaster');
    v_cron_ext boolean := EXISTS (SELECT FROM pg_catalog.pg_extension AS x WHERE x.extname = 'pg_cron');
    v_sched    guardian.job_scheduler;
    v_recent   boolean;
BEGIN
    SELECT * INTO v_sched FROM guardian.job_scheduler AS s;
    scheduler := v_sched.kind;
    scheduled_in := v_sched.database;
    -- A job that never ran counts its lag from when it, or the scheduler, was registered.
    SELECT array_agg(j.name ORDER BY j.name) INTO overdue_jobs
      FROM guardian.jobs AS j
     WHERE j.enabled
       AND pg_catalog.now() - greatest(j.last_finished_at, j.created_at, v_sched.registered_at) > j.max_lag;
    SELECT bool_or(pg_catalog.now() - j.last_finished_at <= j.max_lag) INTO v_recent
      FROM guardian.jobs AS j WHERE j.enabled;

    IF v_sched.kind IS NULL AND coalesce(v_recent, false) THEN
        -- Nothing registered, but something runs the jobs (a runner of the user's own).
        scheduler := 'unregistered runner';
    END IF;
    guarded := scheduler IS NOT NULL AND overdue_jobs IS NULL;
    IF guarded THEN
        RETURN NEXT;
        RETURN;
    END IF;

    IF scheduler IS NULL THEN
        problem := 'no job scheduler: nothing runs the guardian''s checks, drift and activity jobs in this database';
        fix := CASE
            WHEN v_cron_db IS NULL THEN
                'pg_cron is not loaded on this server: keep `pg-guardian jobs serve` running for this database, or add pg_cron to shared_preload_libraries, restart, and run `pg-guardian jobs register`'
            WHEN v_cron_db = current_database() AND NOT v_cron_ext THEN
                'pg_cron runs in this database but its extension is not created: as a superuser run CREATE EXTENSION pg_cron; then `pg-guardian jobs register` (or SELECT * FROM guardian.register_jobs();)'
            WHEN v_cron_db = current_database() THEN
                'run `pg-guardian jobs register` (or SELECT * FROM guardian.register_jobs();)'
            ELSE format('pg_cron runs in database %s: run `pg-guardian jobs register`, which schedules these jobs there with cron.schedule_in_database(), or keep `pg-guardian jobs serve` running for this database', v_cron_db)
        END;
    ELSE
        problem := format('%s guardian job(s) overdue: %s', cardinality(overdue_jobs), array_to_string(overdue_jobs, ', '));
        fix := CASE scheduler
            WHEN 'pg_cron' THEN format('pg_cron in database %s does not run them: look at SELECT jobname, status, return_message FROM cron.job_run_details ORDER BY start_time DESC LIMIT 20; there, then run `pg-guardian jobs register`', scheduled_in)
            WHEN 'jobs serve' THEN '`pg-guardian jobs serve` has stopped: start it again (a service that restarts it)'
            ELSE 'the runner of these jobs has stopped: run `pg-guardian jobs register` or keep `pg-guardian jobs serve` running'
        END;
    END IF;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION guardian.guard_status() IS
    'Is the guardian running here? guarded is false when nothing is registered to run the jobs or enabled jobs are overdue; problem and fix say why and what to run.';

-- >>> sql/50_health/90_register.sql
UPDATE guardian.checks SET scope = 'cluster'
 WHERE name IN ('connections', 'replication_lag', 'replication_slots', 'xid_wraparound');

-- >>> sql/55_security/90_register.sql
UPDATE guardian.checks SET scope = 'cluster'
 WHERE name IN ('server_log', 'role_changes');

-- >>> sql/99_finish: owners and grants of the new objects, as a fresh install makes them
ALTER TABLE guardian.job_scheduler OWNER TO guardian_owner;
ALTER FUNCTION guardian.note_job_scheduler(text, text) OWNER TO guardian_owner;
ALTER FUNCTION guardian.guard_status() OWNER TO guardian_owner;
ALTER FUNCTION guardian.cluster_checks_database() OWNER TO guardian_owner;
REVOKE EXECUTE ON FUNCTION guardian.note_job_scheduler(text, text), guardian.guard_status(),
    guardian.cluster_checks_database() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION guardian.note_job_scheduler(text, text), guardian.guard_status(),
    guardian.cluster_checks_database() TO guardian_owner;
GRANT SELECT ON guardian.job_scheduler TO guardian_reader;
GRANT EXECUTE ON FUNCTION guardian.guard_status(), guardian.cluster_checks_database() TO guardian_reader;
GRANT EXECUTE ON FUNCTION guardian.note_job_scheduler(text, text) TO guardian_admin;

-- Jobs that 0.1.0 scheduled with pg_cron in this database: note it.
DO $scheduled$
DECLARE
    v_found boolean := false;
BEGIN
    IF to_regclass('cron.job') IS NOT NULL THEN
        EXECUTE $q$SELECT EXISTS (SELECT FROM cron.job AS j
                                   WHERE j.jobname LIKE 'guardian\_%' AND j.database = current_database())$q$
           INTO v_found;
    END IF;
    IF v_found THEN
        PERFORM guardian.note_job_scheduler('pg_cron', current_database());
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    NULL;   -- not this role's to see: `pg-guardian jobs register` notes it
END
$scheduled$;

-- >>> sql/99_finish/60_health_security.sql: a managed installer gives guardian_owner pg_monitor
DO $rights$
BEGIN
    IF NOT pg_catalog.pg_has_role('guardian_owner', 'pg_monitor', 'MEMBER') THEN
        GRANT pg_monitor TO guardian_owner;
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'pg_guardian: % may not grant pg_monitor; health checks see only their own sessions', CURRENT_USER
        USING HINT = 'As a superuser run: GRANT pg_monitor TO guardian_owner;';
END
$rights$;

-- >>> sql/60_response: cleanup with RESTRICT / NO ACTION dependents (p_include_restricted)
-- The signatures that gained p_include_restricted (and the plans' warning column) go first.
DROP FUNCTION guardian._cleanup_collect(jsonb, boolean);
DROP FUNCTION guardian._cleanup_counts(jsonb, guardian.cleanup_row[]);
DROP FUNCTION guardian._cleanup_edges(regclass[]);
DROP FUNCTION guardian._cleanup_prepare(jsonb, uuid, boolean);
DROP FUNCTION guardian._cleanup_step_list(jsonb, jsonb);
DROP FUNCTION guardian._cleanup_steps(regclass[]);
DROP FUNCTION guardian._plan_of(jsonb);
DROP FUNCTION guardian._register_cleanup_script(uuid, uuid, jsonb, jsonb, boolean);
DROP FUNCTION guardian.cleanup_plan(regclass, text[]);
DROP FUNCTION guardian.cleanup_plan(uuid);
DROP FUNCTION guardian.cleanup_script(regclass, text[]);
DROP FUNCTION guardian.cleanup_script(uuid);

CREATE OR REPLACE FUNCTION guardian._cleanup_edges(p_roots regclass[], p_include_restricted boolean DEFAULT false)
RETURNS SETOF guardian.cleanup_edge
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_deletable regclass[] := ARRAY(SELECT DISTINCT guardian._table_root(r) FROM unnest(p_roots) AS r);
    v_more      regclass[];
BEGIN
    LOOP
        v_more := ARRAY(SELECT DISTINCT c.conrelid::regclass
                          FROM pg_catalog.pg_constraint AS c
                         WHERE c.contype = 'f' AND c.conparentid = 0
                           AND (c.confdeltype = 'c' OR (p_include_restricted AND c.confdeltype IN ('r', 'a')))
                           AND c.confrelid = ANY (v_deletable) AND c.conrelid <> ALL (v_deletable));
        EXIT WHEN cardinality(v_more) = 0;
        v_deletable := v_deletable || v_more;
    END LOOP;
    RETURN QUERY
    SELECT c.conname::text, c.conrelid::regclass, c.confrelid::regclass,
           guardian._attnames(c.conrelid::regclass, c.conkey), guardian._attnames(c.confrelid::regclass, c.confkey),
           CASE c.confdeltype WHEN 'c' THEN 'cascade' WHEN 'n' THEN 'set null' WHEN 'd' THEN 'set default'
                              WHEN 'r' THEN 'restrict' ELSE 'no action' END,
           CASE WHEN c.confdeltype IN ('n', 'd')
                THEN guardian._attnames(c.conrelid::regclass, coalesce(c.confdelsetcols, c.conkey)) END
      FROM pg_catalog.pg_constraint AS c
     WHERE c.contype = 'f' AND c.conparentid = 0 AND c.confrelid = ANY (v_deletable)
     ORDER BY c.conrelid::regclass::text, c.conname;
END
$$;
COMMENT ON FUNCTION guardian._cleanup_edges(regclass[], boolean) IS
    'Internal: the foreign keys a cleanup of rows in these tables has to honour (followed through ON DELETE CASCADE, and through RESTRICT / NO ACTION with p_include_restricted), with their ON DELETE action.';

CREATE OR REPLACE FUNCTION guardian._cleanup_steps(p_roots regclass[], p_include_restricted boolean DEFAULT false)
RETURNS TABLE (step integer, stmt_group integer, relid regclass, action text, columns text[], via text[],
               parent regclass, restricted boolean)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_roots      regclass[] := ARRAY(SELECT DISTINCT guardian._table_root(r) FROM unnest(p_roots) AS r);
    v_edges      guardian.cleanup_edge[] := ARRAY(SELECT e FROM guardian._cleanup_edges(v_roots, p_include_restricted) AS e);
    v_edge       guardian.cleanup_edge;
    v_cascade    regclass[] := v_roots;
    v_restricted regclass[] := '{}';
    v_more       regclass[];
    v_tables     regclass[];
    v_placed     regclass[] := '{}';
    v_group      regclass[];
    v_n          integer := 0;
    v_g          integer := 0;
    v_t          regclass;
BEGIN
    -- Deleted: the roots and every table reached through ON DELETE CASCADE ...
    LOOP
        v_more := ARRAY(SELECT DISTINCT e.child FROM unnest(v_edges) AS e
                         WHERE e.on_delete = 'cascade' AND e.parent = ANY (v_cascade) AND e.child <> ALL (v_cascade));
        EXIT WHEN cardinality(v_more) = 0;
        v_cascade := v_cascade || v_more;
    END LOOP;
    -- ... and, when asked, every table reached through RESTRICT / NO ACTION from a deleted
    -- table, with what cascades from those.
    WHILE p_include_restricted LOOP
        v_more := ARRAY(SELECT DISTINCT e.child FROM unnest(v_edges) AS e
                         WHERE e.child <> ALL (v_restricted)
                           AND ((e.on_delete IN ('restrict', 'no action')
                                 AND (e.parent = ANY (v_cascade) OR e.parent = ANY (v_restricted)))
                                OR (e.on_delete = 'cascade' AND e.parent = ANY (v_restricted))));
        EXIT WHEN cardinality(v_more) = 0;
        v_restricted := v_restricted || v_more;
    END LOOP;
    v_tables := ARRAY(SELECT DISTINCT x FROM unnest(v_cascade || v_restricted) AS x ORDER BY 1);

    FOR v_edge IN
        SELECT e.* FROM unnest(v_edges) AS e
         WHERE e.on_delete IN ('set null', 'set default')
         ORDER BY e.child::text, e.constraint_name
    LOOP
        v_n := v_n + 1;
        v_g := v_g + 1;
        step := v_n; stmt_group := v_g; relid := v_edge.child; action := v_edge.on_delete;
        columns := v_edge.set_columns; via := ARRAY[v_edge.constraint_name]; parent := v_edge.parent;
        restricted := false;
        RETURN NEXT;
    END LOOP;

    -- Children first: a table is placed once every other table referencing it is placed; a
    -- cycle is placed whole, as the strongly connected set of tables that reach each other.
    WHILE cardinality(v_placed) < cardinality(v_tables) LOOP
        SELECT ARRAY[t] INTO v_group
          FROM unnest(v_tables) AS t
         WHERE t <> ALL (v_placed)
           AND NOT EXISTS (SELECT FROM unnest(v_edges) AS e
                            WHERE e.parent = t AND e.child <> t
                              AND e.child = ANY (v_tables) AND e.child <> ALL (v_placed))
         ORDER BY t::text
         LIMIT 1;
        IF v_group IS NULL THEN
            -- Stuck on a cycle: take the first unplaced table's strongly connected set,
            -- provided nothing outside it still waits; else the next table's.
            FOR v_t IN SELECT t FROM unnest(v_tables) AS t WHERE t <> ALL (v_placed) ORDER BY t::text LOOP
                WITH RECURSIVE reach(a, b) AS (
                    SELECT e.child, e.parent FROM unnest(v_edges) AS e
                     WHERE e.child = ANY (v_tables) AND e.child <> ALL (v_placed)
                       AND e.parent = ANY (v_tables) AND e.parent <> ALL (v_placed)
                    UNION
                    SELECT r.a, e.parent FROM reach AS r JOIN unnest(v_edges) AS e ON e.child = r.b
                     WHERE e.parent = ANY (v_tables) AND e.parent <> ALL (v_placed))
                SELECT array_agg(s.x ORDER BY s.x::text) INTO v_group
                  FROM (SELECT v_t AS x
                        UNION SELECT r.b FROM reach AS r
                               WHERE r.a = v_t AND EXISTS (SELECT FROM reach AS r2 WHERE r2.a = r.b AND r2.b = v_t)) AS s;
                EXIT WHEN NOT EXISTS (
                    SELECT FROM unnest(v_edges) AS e
                     WHERE e.parent = ANY (v_group) AND e.child <> ALL (v_group)
                       AND e.child = ANY (v_tables) AND e.child <> ALL (v_placed));
            END LOOP;
        END IF;
        v_g := v_g + 1;
        FOREACH v_t IN ARRAY v_group LOOP
            stmt_group := v_g; relid := v_t; action := 'delete'; columns := NULL; parent := NULL;
            IF v_t = ANY (v_cascade) THEN
                v_n := v_n + 1;
                step := v_n; restricted := false;
                via := CASE WHEN v_t = ANY (v_roots) THEN ARRAY['contaminated'] ELSE '{}'::text[] END
                       || ARRAY(SELECT e.constraint_name FROM unnest(v_edges) AS e
                                 WHERE e.child = v_t AND e.on_delete = 'cascade' AND e.parent = ANY (v_cascade)
                                 ORDER BY e.constraint_name);
                RETURN NEXT;
            END IF;
            IF v_t = ANY (v_restricted) THEN
                v_n := v_n + 1;
                step := v_n; restricted := true;
                via := ARRAY(SELECT e.constraint_name FROM unnest(v_edges) AS e
                              WHERE e.child = v_t
                                AND ((e.on_delete IN ('restrict', 'no action') AND e.parent = ANY (v_tables))
                                     OR (e.on_delete = 'cascade' AND e.parent = ANY (v_restricted)))
                              ORDER BY e.constraint_name);
                RETURN NEXT;
            END IF;
        END LOOP;
        v_placed := v_placed || v_group;
    END LOOP;

    FOR v_edge IN
        SELECT e.* FROM unnest(v_edges) AS e
         WHERE e.on_delete IN ('restrict', 'no action') AND NOT p_include_restricted
         ORDER BY e.child::text, e.constraint_name
    LOOP
        v_n := v_n + 1;
        step := v_n; stmt_group := NULL; relid := v_edge.child; action := 'blocked';
        columns := v_edge.child_columns; via := ARRAY[v_edge.constraint_name]; parent := v_edge.parent;
        restricted := false;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION guardian._cleanup_steps(regclass[], boolean) IS
    'Internal: the steps of a cleanup of rows in these tables, from the catalog: SET NULL/SET DEFAULT updates, deletes children first (a cycle as one group), and RESTRICT/NO ACTION checks (action blocked); with p_include_restricted, deletes (restricted) of the rows those checks would find instead.';

CREATE OR REPLACE FUNCTION guardian._cleanup_collect(p_roots jsonb, p_lock boolean DEFAULT false,
                                          p_include_restricted boolean DEFAULT false)
RETURNS SETOF guardian.cleanup_row
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_tables   regclass[] := guardian._cleanup_roots(p_roots);
    v_edges    guardian.cleanup_edge[];
    v_steps    jsonb;
    v_rows     guardian.cleanup_row[] := '{}';
    v_frontier guardian.cleanup_row[];
    v_next     guardian.cleanup_row[];
    v_found    guardian.cleanup_row[];
    v_table    regclass;
    v_edge     guardian.cleanup_edge;
    v_step     integer;
    v_cols     text[];
    v_lock     text := CASE WHEN p_lock THEN ' FOR UPDATE OF t' ELSE '' END;
    v_name     text;
    v_deletes  integer[];
    v_held     guardian.cleanup_row[] := '{}';
    v_phase    integer := 1;
    v_kind     text;
BEGIN
    v_edges := ARRAY(SELECT e FROM guardian._cleanup_edges(v_tables, p_include_restricted) AS e);
    SELECT jsonb_agg(jsonb_build_object('step', s.step, 'relid', s.relid::oid, 'action', s.action, 'via', s.via,
                                        'restricted', s.restricted))
      INTO v_steps FROM guardian._cleanup_steps(v_tables, p_include_restricted) AS s;
    v_deletes := ARRAY(SELECT (s ->> 'step')::integer FROM jsonb_array_elements(v_steps) AS s WHERE s ->> 'action' = 'delete');

    -- The contaminated records, by the key their finding recorded.
    FOREACH v_table IN ARRAY v_tables LOOP
        v_name := (SELECT k FROM jsonb_object_keys(p_roots) AS k WHERE guardian._regclass_of(k) = v_table LIMIT 1);
        CONTINUE WHEN jsonb_array_length(p_roots -> v_name) = 0;
        v_step := (SELECT (s ->> 'step')::integer FROM jsonb_array_elements(v_steps) AS s
                    WHERE (s ->> 'relid')::oid = guardian._table_root(v_table) AND s ->> 'action' = 'delete'
                      AND NOT (s ->> 'restricted')::boolean);
        v_cols := ARRAY(SELECT jsonb_object_keys(p_roots -> v_name -> 0 -> 'key'));
        -- One pass: the records given (their findings merged per key), joined to the table.
        IF v_cols = ARRAY['row_md5'] THEN
            EXECUTE format(
                'WITH given AS (
                     SELECT e -> ''key'' ->> ''row_md5'' AS row_md5,
                            jsonb_agg(f) FILTER (WHERE f IS NOT NULL) AS findings
                       FROM jsonb_array_elements($1) AS e
                       LEFT JOIN LATERAL jsonb_array_elements(e -> ''findings'') AS f ON true
                      GROUP BY 1)
                 SELECT array_agg(ROW(%s, %L, x.tableoid, x.ctid, true, x.findings, x.row_key)::guardian.cleanup_row)
                   FROM (SELECT t.tableoid, t.ctid, %s AS row_key, g.findings
                           FROM %s AS t JOIN given AS g ON g.row_md5 = md5((%s)::text)%s) AS x',
                v_step, guardian._table_root(v_table), guardian._key_expr(v_table, 't'), v_table,
                guardian._scan_row_json(v_table, 't'), v_lock)
              INTO v_found USING p_roots -> v_name;
        ELSE
            IF EXISTS (SELECT FROM unnest(v_cols) AS c
                        WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_attribute AS a
                                           WHERE a.attrelid = v_table AND a.attname = c AND a.attnum > 0 AND NOT a.attisdropped)) THEN
                RAISE EXCEPTION 'table % has no column % any more', v_table,
                                (SELECT string_agg(quote_ident(c), ', ') FROM unnest(v_cols) AS c
                                  WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_attribute AS a
                                                     WHERE a.attrelid = v_table AND a.attname = c AND NOT a.attisdropped))
                    USING ERRCODE = 'undefined_column',
                          DETAIL = 'The contaminated records were identified by a key the table no longer has; nothing was changed.',
                          HINT = format('Find them again with a scan: SELECT * FROM guardian.scan(%L, p_record => true);', v_table);
            END IF;
            EXECUTE format(
                'WITH given AS (
                     SELECT %s, jsonb_agg(f) FILTER (WHERE f IS NOT NULL) AS findings
                       FROM jsonb_array_elements($1) AS e
                      CROSS JOIN LATERAL jsonb_populate_record(NULL::%s, e -> ''key'') AS r
                       LEFT JOIN LATERAL jsonb_array_elements(e -> ''findings'') AS f ON true
                      GROUP BY %s)
                 SELECT array_agg(ROW(%s, %L, x.tableoid, x.ctid, true, x.findings, x.row_key)::guardian.cleanup_row)
                   FROM (SELECT t.tableoid, t.ctid, %s AS row_key, g.findings
                           FROM %s AS t JOIN given AS g ON (%s) = (%s)%s) AS x',
                guardian._column_list('r', v_cols), v_table, guardian._column_list('r', v_cols),
                v_step, guardian._table_root(v_table), guardian._key_expr(v_table, 't'),
                v_table, guardian._column_list('t', v_cols), guardian._column_list('g', v_cols), v_lock)
              INTO v_found USING p_roots -> v_name;
        END IF;
        v_rows := v_rows || coalesce(v_found, '{}');
    END LOOP;

    -- Follow the foreign keys from every newly removed row until nothing new is removed. Phase
    -- 1 removes what cascades; phase 2 (asked to include restricted rows) starts from the rows
    -- that reference removed rows through RESTRICT / NO ACTION and are not removed anyway.
    v_frontier := v_rows;
    LOOP
        WHILE cardinality(v_frontier) > 0 LOOP
            v_next := '{}';
            FOR v_edge IN
                SELECT e.* FROM unnest(v_edges) AS e
                 WHERE e.parent IN (SELECT f.relid FROM unnest(v_frontier) AS f)
                 ORDER BY e.child::text, e.constraint_name
            LOOP
                -- What the rows found through this key become.
                v_kind := CASE WHEN v_edge.on_delete IN ('set null', 'set default') THEN v_edge.on_delete
                               WHEN v_phase = 2 THEN 'restricted'
                               WHEN v_edge.on_delete = 'cascade' THEN 'delete'
                               WHEN p_include_restricted THEN 'held'
                               ELSE 'blocked' END;
                v_step := (SELECT (s ->> 'step')::integer FROM jsonb_array_elements(v_steps) AS s
                            WHERE (s ->> 'relid')::oid = v_edge.child::oid
                              AND CASE v_kind
                                      WHEN 'delete' THEN s ->> 'action' = 'delete' AND NOT (s ->> 'restricted')::boolean
                                      WHEN 'restricted' THEN s ->> 'action' = 'delete' AND (s ->> 'restricted')::boolean
                                      WHEN 'held' THEN s ->> 'action' = 'delete' AND (s ->> 'restricted')::boolean
                                      ELSE s ->> 'action' = v_kind AND s -> 'via' ? v_edge.constraint_name
                                  END);
                EXECUTE format(
                    'SELECT array_agg(ROW(%s, %L, x.tableoid, x.ctid, false, NULL, x.row_key)::guardian.cleanup_row)
                       FROM (SELECT t.tableoid, t.ctid, %s AS row_key
                               FROM %s AS t
                              WHERE (%s) IN (SELECT %s FROM %s AS p
                                               JOIN unnest($1::oid[], $2::tid[]) AS f(toid, tctid)
                                                 ON p.tableoid = f.toid AND p.ctid = f.tctid)%s) AS x',
                    v_step, v_edge.child, guardian._key_expr(v_edge.child, 't'), v_edge.child,
                    guardian._column_list('t', v_edge.child_columns), guardian._column_list('p', v_edge.parent_columns),
                    v_edge.parent,
                    CASE WHEN v_kind = 'blocked' THEN '' ELSE v_lock END)
                  INTO v_found
                  USING ARRAY(SELECT f.row_tableoid FROM unnest(v_frontier) AS f WHERE f.relid = v_edge.parent ORDER BY f.row_ctid),
                        ARRAY(SELECT f.row_ctid FROM unnest(v_frontier) AS f WHERE f.relid = v_edge.parent ORDER BY f.row_ctid);
                IF v_kind IN ('delete', 'restricted') THEN
                    -- Only rows not already removed join the next round.
                    v_found := ARRAY(SELECT n FROM unnest(coalesce(v_found, '{}')) AS n
                                      WHERE NOT EXISTS (SELECT FROM unnest(v_rows || v_next) AS o
                                                         WHERE o.row_tableoid = n.row_tableoid AND o.row_ctid = n.row_ctid
                                                           AND o.step = ANY (v_deletes)));
                    v_next := v_next || v_found;
                ELSIF v_kind = 'held' THEN
                    -- Phase 1 may still remove them through CASCADE: decided once it is done.
                    v_held := v_held || coalesce(v_found, '{}');
                ELSE
                    v_rows := v_rows || ARRAY(SELECT n FROM unnest(coalesce(v_found, '{}')) AS n
                                               WHERE NOT EXISTS (SELECT FROM unnest(v_rows) AS o
                                                                  WHERE o.row_tableoid = n.row_tableoid AND o.row_ctid = n.row_ctid
                                                                    AND o.step = n.step));
                END IF;
            END LOOP;
            v_rows := v_rows || v_next;
            v_frontier := v_next;
        END LOOP;
        EXIT WHEN v_phase = 2 OR cardinality(v_held) = 0;
        v_phase := 2;
        v_frontier := ARRAY(SELECT DISTINCT ON (h.row_tableoid, h.row_ctid) h FROM unnest(v_held) AS h
                             WHERE NOT EXISTS (SELECT FROM unnest(v_rows) AS o
                                                WHERE o.row_tableoid = h.row_tableoid AND o.row_ctid = h.row_ctid
                                                  AND o.step = ANY (v_deletes))
                             ORDER BY h.row_tableoid, h.row_ctid);
        v_rows := v_rows || v_frontier;
    END LOOP;

    -- A row that is removed is neither updated nor a blocker.
    RETURN QUERY
        SELECT r.* FROM unnest(v_rows) AS r
         WHERE r.step IN (SELECT (s ->> 'step')::integer FROM jsonb_array_elements(v_steps) AS s WHERE s ->> 'action' = 'delete')
            OR NOT EXISTS (SELECT FROM unnest(v_rows) AS d
                            JOIN jsonb_array_elements(v_steps) AS s ON (s ->> 'step')::integer = d.step AND s ->> 'action' = 'delete'
                           WHERE d.row_tableoid = r.row_tableoid AND d.row_ctid = r.row_ctid)
         ORDER BY r.step, r.row_tableoid, r.row_ctid;
END
$$;
COMMENT ON FUNCTION guardian._cleanup_collect(jsonb, boolean, boolean) IS
    'Internal: every row a cleanup of these contaminated records touches, by step, found with the caller''s rights; p_lock takes FOR UPDATE locks on the rows it will change (a capture); p_include_restricted removes the rows RESTRICT / NO ACTION references would block on, and what depends on them.';

CREATE OR REPLACE FUNCTION guardian._cleanup_counts(p_roots jsonb, p_rows guardian.cleanup_row[],
                                         p_include_restricted boolean DEFAULT false)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- Rows per step, every step present (0 when none), keyed by step number.
    SELECT jsonb_object_agg(s.step::text, (SELECT count(*) FROM unnest(p_rows) AS r WHERE r.step = s.step))
      FROM guardian._cleanup_steps(guardian._cleanup_roots(p_roots), p_include_restricted) AS s
$$;
COMMENT ON FUNCTION guardian._cleanup_counts(jsonb, guardian.cleanup_row[], boolean) IS 'Internal: rows per cleanup step.';

CREATE OR REPLACE FUNCTION guardian._plan_of(p_roots jsonb, p_include_restricted boolean DEFAULT false)
RETURNS TABLE (step integer, table_name text, action text, rows bigint, via text, detail text, warning text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_rows  guardian.cleanup_row[];
    v_given integer;
    v_found integer;
BEGIN
    IF p_roots IS NULL THEN
        RETURN;
    END IF;
    PERFORM guardian._refuse_app_code(ARRAY(SELECT guardian._regclass_of(k) FROM jsonb_object_keys(p_roots) AS k),
                                      'a cleanup plan', p_runs => ARRAY['values']);
    v_rows := ARRAY(SELECT r FROM guardian._cleanup_collect(p_roots, false, p_include_restricted) AS r);
    v_given := (SELECT count(*) FROM jsonb_each(p_roots) AS t, jsonb_array_elements(t.value));
    v_found := (SELECT count(*) FROM unnest(v_rows) AS r WHERE r.root);
    RETURN QUERY
    SELECT s.step, s.relid::text, CASE WHEN s.restricted THEN 'delete_restricted' ELSE s.action END, c.n,
           CASE WHEN s.via = ARRAY['contaminated'] THEN 'the contaminated records'
                WHEN s.restricted
                THEN (SELECT string_agg(format('%s (ON DELETE %s)', u.v,
                                               CASE k.confdeltype WHEN 'c' THEN 'CASCADE' WHEN 'r' THEN 'RESTRICT'
                                                                  ELSE 'NO ACTION' END), ', ' ORDER BY u.o)
                        FROM unnest(s.via) WITH ORDINALITY AS u(v, o)
                        LEFT JOIN pg_catalog.pg_constraint AS k
                          ON k.conrelid = s.relid AND k.conname = u.v AND k.contype = 'f')
                ELSE array_to_string(s.via, ', ') || CASE s.action WHEN 'delete' THEN ' (ON DELETE CASCADE)'
                                                                   WHEN 'blocked' THEN ' (ON DELETE RESTRICT / NO ACTION)'
                                                                   ELSE format(' (ON DELETE %s)', upper(s.action)) END
           END,
           concat_ws('; ',
               CASE WHEN s.action IN ('set null', 'set default') THEN format('%s %s', array_to_string(s.columns, ', '),
                        CASE s.action WHEN 'set null' THEN 'set to NULL' ELSE 'set to its default' END) END,
               CASE WHEN s.action = 'blocked' AND c.n > 0
                    THEN format('these rows reference removed rows of %s and are not removed themselves', s.parent) END,
               (SELECT 'e.g. ' || string_agg(x.row_key::text, ', ')
                  FROM (SELECT r.row_key FROM unnest(v_rows) AS r WHERE r.step = s.step ORDER BY r.row_key::text LIMIT 3) AS x),
               CASE WHEN s.via @> ARRAY['contaminated'] AND v_found < v_given
                    THEN format('%s of the %s contaminated records are already gone', v_given - v_found, v_given) END),
           CASE WHEN s.restricted AND c.n > 0
                THEN format('%s row(s) of %s were protected by ON DELETE RESTRICT / NO ACTION (or depend on such rows) and are removed because p_include_restricted (--include-restricted) was given: make sure they are test data too (they are quarantined, and guardian.restore() brings them back)',
                            c.n, s.relid)
                WHEN s.action = 'blocked' AND c.n > 0
                THEN 'these rows block the cleanup; if they are test data too, include them with p_include_restricted => true (CLI: --include-restricted)'
           END
      FROM guardian._cleanup_steps(guardian._cleanup_roots(p_roots), p_include_restricted) AS s
     CROSS JOIN LATERAL (SELECT count(*) AS n FROM unnest(v_rows) AS r WHERE r.step = s.step) AS c
     ORDER BY s.step;
END
$$;
COMMENT ON FUNCTION guardian._plan_of(jsonb, boolean) IS 'Internal: the dry run of a cleanup of these contaminated records.';

CREATE OR REPLACE FUNCTION guardian.cleanup_plan(p_alert uuid, p_include_restricted boolean DEFAULT false)
RETURNS TABLE (step integer, table_name text, action text, rows bigint, via text, detail text, warning text)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM guardian._plan_of(guardian._alert_roots(p_alert), p_include_restricted)
$$;
COMMENT ON FUNCTION guardian.cleanup_plan(uuid, boolean) IS
    'Dry run of the cleanup of an alert: each step (SET NULL updates, deletes in foreign-key order, RESTRICT checks) with the rows it would touch; changes nothing. Rows of a blocked step stop the cleanup; with p_include_restricted they are removed too, in steps of action delete_restricted that carry a warning.';

CREATE OR REPLACE FUNCTION guardian.cleanup_plan(p_table regclass, p_record_ids text[] DEFAULT NULL,
                                      p_include_restricted boolean DEFAULT false)
RETURNS TABLE (step integer, table_name text, action text, rows bigint, via text, detail text, warning text)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM guardian._plan_of(guardian._table_roots(p_table, p_record_ids), p_include_restricted)
$$;
COMMENT ON FUNCTION guardian.cleanup_plan(regclass, text[], boolean) IS
    'Dry run of the cleanup of the contaminated records a scan finds in a table now (or only of these record ids, as a scan returned them); changes nothing. p_include_restricted as for guardian.cleanup_plan(alert).';

CREATE OR REPLACE FUNCTION guardian._cleanup_step_list(p_roots jsonb, p_counts jsonb, p_include_restricted boolean DEFAULT false)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_agg(jsonb_build_object(
               'step', s.step, 'group', s.stmt_group, 'table', s.relid::text, 'relid', s.relid::oid,
               'action', s.action, 'columns', to_jsonb(s.columns), 'via', to_jsonb(s.via),
               'parent', s.parent::text, 'restricted', s.restricted,
               'rows', coalesce((p_counts ->> s.step::text)::bigint, 0))
           ORDER BY s.step)
      FROM guardian._cleanup_steps(guardian._cleanup_roots(p_roots), p_include_restricted) AS s
$$;
COMMENT ON FUNCTION guardian._cleanup_step_list(jsonb, jsonb, boolean) IS
    'Internal: the steps of a cleanup (from the catalog) with the row count each expects; restricted marks the deletes of rows protected by RESTRICT / NO ACTION (p_include_restricted).';

CREATE OR REPLACE FUNCTION guardian._render_cleanup_script(
    p_batch uuid, p_alert guardian.monitoring_alerts, p_roots jsonb, p_steps jsonb, p_automatic boolean)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_lines  text[] := '{}';
    v_step   jsonb;
    v_group  integer;
    v_roots  integer := (SELECT count(*) FROM jsonb_each(p_roots) AS t, jsonb_array_elements(t.value));
    v_total  bigint := (SELECT sum((s ->> 'rows')::bigint) FROM jsonb_array_elements(p_steps) AS s
                         WHERE s ->> 'action' <> 'blocked');
    v_restricted boolean := EXISTS (SELECT FROM jsonb_array_elements(p_steps) AS s
                                     WHERE coalesce((s ->> 'restricted')::boolean, false));
    v_option text := CASE WHEN v_restricted THEN ', p_include_restricted => true' ELSE '' END;
    v_regen  text := CASE WHEN p_alert.id IS NOT NULL THEN format('SELECT guardian.cleanup_script(%L::uuid%s);', p_alert.id, v_option)
                          ELSE format('SELECT guardian.cleanup_script(%L::regclass%s);',
                                      (SELECT k FROM jsonb_object_keys(p_roots) AS k LIMIT 1), v_option) END;
    v_held   text := (SELECT format('%s row(s) in step(s) %s', sum((s ->> 'rows')::bigint),
                                    string_agg(s ->> 'step', ', ' ORDER BY (s ->> 'step')::integer))
                        FROM jsonb_array_elements(p_steps) AS s
                       WHERE coalesce((s ->> 'restricted')::boolean, false) AND (s ->> 'rows')::bigint > 0
                      HAVING count(*) > 0);
BEGIN
    v_lines := v_lines || format('-- pg_guardian cleanup script, batch %s', p_batch);
    IF p_alert.id IS NOT NULL THEN
        v_lines := v_lines || guardian._comment(format('-- alert %s (%s %s): %s', p_alert.id, p_alert.severity, p_alert.type,
                                                        left(p_alert.message, 200)));
    END IF;
    v_lines := v_lines || guardian._comment(format('-- environment %s; generated %s by %s%s', guardian.current_environment(),
                                                    to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"'),
                                                    SESSION_USER, CASE WHEN p_automatic THEN ' (with the alert)' ELSE '' END));
    v_lines := v_lines || '--'::text
        || guardian._comment(format('-- Removes %s contaminated record(s) of %s and every row that depends on them, %s row(s)',
                                    v_roots, (SELECT string_agg(k, ', ' ORDER BY k) FROM jsonb_object_keys(p_roots) AS k), v_total))
        || '-- in all, in foreign-key order, in one transaction. Every row is first copied into'::text
        || format('-- guardian.quarantine; undo it with: SELECT guardian.restore(%L);', p_batch)
        || '-- It aborts, changing nothing, if the rows it finds when it runs differ from the counts'::text
        || '-- below (the data changed since it was generated). Generate it again with:'::text
        || guardian._comment('--   ' || v_regen)
        || '--'::text;
    IF v_held IS NOT NULL THEN
        v_lines := v_lines
            || ('-- WARNING: it also removes ' || v_held || ' (delete_restricted): rows protected by')
            || '-- ON DELETE RESTRICT / NO ACTION (or depending on such rows). They reference removed rows'::text
            || '-- without depending on them by CASCADE, and are removed only because the script was'::text
            || '-- generated with p_include_restricted => true (CLI: --include-restricted). Make sure they'::text
            || '-- are test data too; they are quarantined with the rest.'::text
            || '--'::text;
    END IF;
    v_lines := v_lines
        || format('-- %4s  %-32s  %-26s  %6s  %s', 'step', 'table', 'action', 'rows', 'because of');
    FOR v_step IN SELECT s FROM jsonb_array_elements(p_steps) AS s ORDER BY (s ->> 'step')::integer LOOP
        v_lines := v_lines || guardian._comment(format('-- %4s  %-32s  %-26s  %6s  %s',
            v_step ->> 'step', v_step ->> 'table',
            CASE v_step ->> 'action'
                WHEN 'delete' THEN CASE WHEN coalesce((v_step ->> 'restricted')::boolean, false)
                                        THEN 'delete_restricted' ELSE 'delete' END
                WHEN 'blocked' THEN 'must be none (RESTRICT)'
                ELSE format('%s = %s', (SELECT string_agg(c, ', ') FROM jsonb_array_elements_text(v_step -> 'columns') AS c),
                            CASE v_step ->> 'action' WHEN 'set null' THEN 'NULL' ELSE 'DEFAULT' END) END,
            v_step ->> 'rows',
            CASE WHEN v_step -> 'via' = '["contaminated"]' THEN 'contaminated (see the records below)'
                 ELSE (SELECT string_agg(v, ', ') FROM jsonb_array_elements_text(v_step -> 'via') AS v)
                      || CASE WHEN v_step ->> 'parent' IS NOT NULL THEN ' -> ' || (v_step ->> 'parent') ELSE '' END END));
    END LOOP;
    v_lines := v_lines || ''::text || 'BEGIN;'::text || ''::text
        || '-- Locks the rows, checks that they are exactly the rows counted above and copies them into'::text
        || '-- guardian.quarantine. The contaminated records, with the rules that matched them:'::text
        || format(E'SELECT guardian.cleanup_begin(\n    %L::uuid,\n    %L::jsonb,\n    %L::jsonb);',
                  p_batch, jsonb_pretty(p_roots),
                  (SELECT jsonb_object_agg(s ->> 'step', (s ->> 'rows')::bigint) FROM jsonb_array_elements(p_steps) AS s));
    FOR v_group IN
        SELECT DISTINCT (s ->> 'group')::integer FROM jsonb_array_elements(p_steps) AS s
         WHERE s ->> 'action' <> 'blocked' AND (s ->> 'rows')::bigint > 0
         ORDER BY 1
    LOOP
        v_lines := v_lines || ''::text || ARRAY(
            SELECT guardian._comment(format('-- %s. %s: %s %s row(s)%s', s ->> 'step', s ->> 'table',
                       CASE s ->> 'action' WHEN 'delete' THEN 'delete' ELSE 'update' END, s ->> 'rows',
                       CASE WHEN s ->> 'action' <> 'delete'
                            THEN format(', setting %s to %s (ON DELETE %s of %s)',
                                        (SELECT string_agg(c, ', ') FROM jsonb_array_elements_text(s -> 'columns') AS c),
                                        CASE s ->> 'action' WHEN 'set null' THEN 'NULL' ELSE 'its default' END,
                                        upper(s ->> 'action'), s ->> 'parent')
                            WHEN coalesce((s ->> 'restricted')::boolean, false)
                            THEN format(' protected by ON DELETE RESTRICT / NO ACTION (%s): included on request',
                                        (SELECT string_agg(v, ', ') FROM jsonb_array_elements_text(s -> 'via') AS v))
                            WHEN jsonb_array_length(s -> 'via') > 1 OR s -> 'via' <> '["contaminated"]'
                            THEN format(' (%s)', (SELECT string_agg(v, ', ') FROM jsonb_array_elements_text(s -> 'via') AS v))
                            ELSE ' (the contaminated records)' END))
              FROM jsonb_array_elements(p_steps) AS s
             WHERE (s ->> 'group')::integer = v_group AND (s ->> 'rows')::bigint > 0
             ORDER BY (s ->> 'step')::integer)
            || guardian._cleanup_group_sql(p_batch,
                   (SELECT jsonb_agg(s) FROM jsonb_array_elements(p_steps) AS s WHERE (s ->> 'rows')::bigint > 0),
                   v_group);
    END LOOP;
    v_lines := v_lines || ''::text
        || '-- Checks every step ran with its expected count, marks the batch applied and resolves the alert.'::text
        || format('SELECT guardian.cleanup_finish(%L::uuid);', p_batch)
        || ''::text || 'COMMIT;'::text;
    RETURN array_to_string(v_lines, E'\n') || E'\n';
END
$$;
COMMENT ON FUNCTION guardian._render_cleanup_script(uuid, guardian.monitoring_alerts, jsonb, jsonb, boolean) IS
    'Internal: the text of a cleanup script (header with the expected counts, cleanup_begin, one statement per step group, cleanup_finish), everything quoted.';

CREATE OR REPLACE FUNCTION guardian._register_cleanup_script(
    p_batch uuid, p_alert uuid, p_roots jsonb, p_counts jsonb, p_automatic boolean DEFAULT false,
    p_include_restricted boolean DEFAULT false)
RETURNS guardian.cleanup_scripts
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_caller text := guardian._response_caller();
    v_alert  guardian.monitoring_alerts;
    v_steps  jsonb;
    v_script text;
    v_row    guardian.cleanup_scripts;
    v_blocked jsonb;
BEGIN
    -- An automatic caller may only name records its own transaction found contaminated.
    -- An automatic caller may only name records of an alert its own transaction added to, or
    -- records its own transaction found.
    IF v_caller = 'auto' AND (
        (p_alert IS NOT NULL AND NOT EXISTS (SELECT FROM guardian.findings AS f
                                              WHERE f.alert_id = p_alert AND f.backend_pid = pg_backend_pid()
                                                AND f.created_at >= now()))
        OR EXISTS (SELECT FROM jsonb_each(p_roots) AS t, jsonb_array_elements(t.value) AS e
                    WHERE NOT EXISTS (SELECT FROM guardian.findings AS f
                                       WHERE f.relid = guardian._regclass_of(t.key) AND f.record_key = e -> 'key'
                                         AND (f.alert_id = p_alert
                                              OR (f.backend_pid = pg_backend_pid() AND f.created_at >= now()))))) THEN
        RAISE EXCEPTION 'an automatic cleanup may only name records found contaminated by its own transaction'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- Rows protected by RESTRICT are removed only when a person asks for it.
    IF p_include_restricted AND (v_caller = 'auto' OR p_automatic) THEN
        RAISE EXCEPTION 'an automatic cleanup never removes rows protected by ON DELETE RESTRICT / NO ACTION'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'A guardian admin can: SELECT guardian.cleanup_script(''<alert id>''::uuid, p_include_restricted => true);';
    END IF;
    IF EXISTS (SELECT FROM jsonb_each_text(p_counts) AS c WHERE c.value !~ '^[0-9]{1,12}$') THEN
        RAISE EXCEPTION 'row counts must be whole numbers: %', p_counts USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_steps := guardian._cleanup_step_list(p_roots, p_counts, p_include_restricted);
    SELECT jsonb_agg(s) INTO v_blocked FROM jsonb_array_elements(v_steps) AS s
     WHERE s ->> 'action' = 'blocked' AND (s ->> 'rows')::bigint > 0;
    IF v_blocked IS NOT NULL THEN
        -- _cleanup_prepare() names the rows first; this is the check a direct caller meets.
        RAISE EXCEPTION 'the cleanup is blocked: %', (
                SELECT string_agg(format('%s row(s) of %s reference %s through %s (ON DELETE RESTRICT / NO ACTION) and are not removed',
                                         s ->> 'rows', s ->> 'table', s ->> 'parent', s -> 'via' ->> 0), '; ')
                  FROM jsonb_array_elements(v_blocked) AS s)
            USING ERRCODE = 'dependent_objects_still_exist',
                  DETAIL = 'Deleting the rows they reference would fail; nothing was changed.',
                  HINT = 'If those rows are test data too, run the cleanup with p_include_restricted => true (CLI: --include-restricted).';
    END IF;
    IF p_alert IS NOT NULL THEN
        SELECT * INTO v_alert FROM guardian.monitoring_alerts AS a WHERE a.id = p_alert;
    END IF;
    v_script := guardian._render_cleanup_script(p_batch, v_alert, p_roots, v_steps, p_automatic);
    INSERT INTO guardian.cleanup_scripts (batch_id, alert_id, environment, roots, steps, script, automatic)
    VALUES (p_batch, p_alert, guardian.current_environment(), p_roots, v_steps, v_script, p_automatic)
    RETURNING * INTO v_row;
    IF p_alert IS NOT NULL THEN
        -- The relay's Slack button and email show the script stored with the alert.
        UPDATE guardian.monitoring_alerts AS a
           SET metadata = a.metadata - 'cleanup_script_error' || jsonb_build_object(
                   'cleanup_script', v_script, 'cleanup_batch', p_batch, 'cleanup_script_at', now(),
                   'cleanup_script_records', (SELECT count(*) FROM jsonb_each(p_roots) AS t, jsonb_array_elements(t.value)),
                   'cleanup_plan_query', CASE WHEN p_include_restricted
                                              THEN format('SELECT * FROM guardian.cleanup_plan(%L::uuid, p_include_restricted => true);', p_alert)
                                              ELSE format('SELECT * FROM guardian.cleanup_plan(%L);', p_alert) END)
         WHERE a.id = p_alert;
    END IF;
    RETURN v_row;
END
$$;
COMMENT ON FUNCTION guardian._register_cleanup_script(uuid, uuid, jsonb, jsonb, boolean, boolean) IS
    'Internal: renders a cleanup script from the catalog and the given records and counts, records it under its batch id (returned) and stores it with its alert (metadata.cleanup_script); p_include_restricted (never for an automatic cleanup) removes rows protected by RESTRICT / NO ACTION too.';

CREATE OR REPLACE FUNCTION guardian._cleanup_prepare(p_roots jsonb, p_alert uuid, p_automatic boolean DEFAULT false,
                                          p_include_restricted boolean DEFAULT false)
RETURNS guardian.cleanup_scripts
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_rows    guardian.cleanup_row[];
    v_given   integer := (SELECT count(*) FROM jsonb_each(p_roots) AS t, jsonb_array_elements(t.value));
    v_left    jsonb;
    v_name    text;
    v_blocked text;
    v_target  text;
BEGIN
    -- Planning reads and compares key values: a superuser would run the application's casts
    -- and operators on them with its rights.
    PERFORM guardian._refuse_app_code(ARRAY(SELECT guardian._regclass_of(k) FROM jsonb_object_keys(p_roots) AS k),
                                      'a cleanup plan', p_runs => ARRAY['values']);
    v_rows := ARRAY(SELECT r FROM guardian._cleanup_collect(p_roots, false, p_include_restricted) AS r);
    IF NOT EXISTS (SELECT FROM unnest(v_rows) AS r WHERE r.root) THEN
        v_name := (SELECT string_agg(k, ', ') FROM jsonb_object_keys(p_roots) AS k);
        RAISE EXCEPTION 'none of the % contaminated record(s) is in % any more', v_given, v_name
            USING ERRCODE = 'no_data_found',
                  DETAIL = 'They were deleted, changed or already quarantined since they were found; there is nothing to clean up.',
                  HINT = CASE WHEN p_alert IS NOT NULL
                              THEN format('Close the alert: SELECT guardian.resolve_alert(%L, ''rows already removed'');', p_alert)
                              ELSE 'Nothing to do.' END;
    END IF;
    -- Rows that reference removed rows through RESTRICT / NO ACTION and stay: named, with the
    -- option that removes them too.
    SELECT string_agg(format('%s row(s) of %s reference %s through %s (ON DELETE RESTRICT / NO ACTION): %s%s',
                             x.n, s ->> 'table', s ->> 'parent', s -> 'via' ->> 0, x.keys,
                             CASE WHEN x.n > 3 THEN ', ...' ELSE '' END), '; ' ORDER BY (s ->> 'step')::integer)
      INTO v_blocked
      FROM jsonb_array_elements(guardian._cleanup_step_list(p_roots, '{}', p_include_restricted)) AS s
     CROSS JOIN LATERAL (SELECT count(*) AS n,
                                (SELECT string_agg(k.row_key::text, ', ')
                                   FROM (SELECT r.row_key FROM unnest(v_rows) AS r WHERE r.step = (s ->> 'step')::integer
                                          ORDER BY r.row_key::text LIMIT 3) AS k) AS keys
                           FROM unnest(v_rows) AS r WHERE r.step = (s ->> 'step')::integer) AS x
     WHERE s ->> 'action' = 'blocked' AND x.n > 0;
    IF v_blocked IS NOT NULL THEN
        v_target := CASE WHEN p_alert IS NOT NULL THEN format('%L::uuid', p_alert)
                         ELSE format('%L::regclass', (SELECT k FROM jsonb_object_keys(p_roots) AS k LIMIT 1)) END;
        RAISE EXCEPTION 'the cleanup is blocked: %', v_blocked
            USING ERRCODE = 'dependent_objects_still_exist',
                  DETAIL = 'A cleanup removes the contaminated records and the rows that depend on them through ON DELETE CASCADE; these rows reference removed rows through ON DELETE RESTRICT / NO ACTION and are not removed, so deleting what they reference would fail. Nothing was changed.',
                  HINT = CASE WHEN p_automatic
                              THEN format('An automatic cleanup never removes them. If those rows are test data too, a guardian admin can run the cleanup with p_include_restricted => true (CLI: --include-restricted): SELECT guardian.cleanup_script(%s, p_include_restricted => true);', v_target)
                              ELSE format('If those rows are test data too, run the cleanup with p_include_restricted => true (CLI: --include-restricted), which removes and quarantines them as well; see first what it would remove: SELECT * FROM guardian.cleanup_plan(%s, p_include_restricted => true);', v_target) END;
    END IF;
    -- Only the records still there: a script names what it removes.
    SELECT jsonb_object_agg(t.key, x.records) INTO v_left
      FROM jsonb_each(p_roots) AS t,
           LATERAL (SELECT jsonb_agg(e ORDER BY e::text) AS records
                      FROM jsonb_array_elements(t.value) AS e
                     WHERE e -> 'key' IN (SELECT r.row_key FROM unnest(v_rows) AS r
                                           WHERE r.root AND r.relid = guardian._table_root(guardian._regclass_of(t.key)))) AS x
     WHERE x.records IS NOT NULL;
    RETURN guardian._register_cleanup_script(gen_random_uuid(), p_alert, v_left,
                                             guardian._cleanup_counts(v_left, v_rows, p_include_restricted), p_automatic,
                                             p_include_restricted);
END
$$;
COMMENT ON FUNCTION guardian._cleanup_prepare(jsonb, uuid, boolean, boolean) IS
    'Internal: plans a cleanup of these records with the caller''s rights and registers its script; refuses, naming them, rows that RESTRICT / NO ACTION references would block on unless p_include_restricted.';

CREATE OR REPLACE FUNCTION guardian.cleanup_script(p_alert uuid, p_include_restricted boolean DEFAULT false)
RETURNS text
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (guardian._cleanup_prepare(guardian._alert_roots(p_alert), p_alert, false, p_include_restricted)).script
$$;
COMMENT ON FUNCTION guardian.cleanup_script(uuid, boolean) IS
    'The cleanup script for a contamination alert: removes its records and the rows that depend on them in foreign-key order, in one transaction, quarantining everything first and aborting if the counts it expects differ. Stored with the alert (metadata.cleanup_script). Review it, then run it (psql -f). Rows that reference removed rows through ON DELETE RESTRICT / NO ACTION refuse it, unless p_include_restricted: then they are removed and quarantined too (with what depends on them), listed apart with a warning.';

CREATE OR REPLACE FUNCTION guardian.cleanup_script(p_table regclass, p_record_ids text[] DEFAULT NULL,
                                        p_include_restricted boolean DEFAULT false)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_roots jsonb := guardian._table_roots(p_table, p_record_ids);
BEGIN
    IF v_roots IS NULL THEN
        RAISE EXCEPTION 'a scan finds no test data in %', p_table
            USING ERRCODE = 'no_data_found', HINT = 'Nothing to clean up.';
    END IF;
    RETURN (guardian._cleanup_prepare(v_roots, NULL, false, p_include_restricted)).script;
END
$$;
COMMENT ON FUNCTION guardian.cleanup_script(regclass, text[], boolean) IS
    'The cleanup script for the contaminated records a scan finds in a table now, or only for these record ids (as guardian.scan() returned them); p_include_restricted as for guardian.cleanup_script(alert).';

CREATE OR REPLACE FUNCTION guardian.cleanup_begin(p_batch uuid, p_roots jsonb, p_expected jsonb)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET datestyle = 'ISO, YMD'
SET intervalstyle = 'postgres'
SET timezone = 'UTC'
SET extra_float_digits = 1
SET bytea_output = 'hex'
AS $$
DECLARE
    v_script  guardian.cleanup_scripts := guardian._cleanup_registered(p_batch);
    v_batch   guardian.quarantine_batches;
    v_rows    guardian.cleanup_row[];
    v_counts  jsonb;
    v_diff    text;
    v_step    jsonb;
    v_items   guardian.quarantine_item[] := '{}';
    v_found   guardian.quarantine_item[];
    v_total   bigint;
    v_restricted boolean;
BEGIN
    IF v_script.batch_id IS NULL THEN
        RAISE EXCEPTION 'unknown cleanup batch %', coalesce(p_batch::text, 'NULL')
            USING ERRCODE = 'no_data_found',
                  DETAIL = 'Cleanups run scripts generated by the guardian, which registers each one.',
                  HINT = 'Generate one with SELECT guardian.cleanup_script(''<alert id>'');';
    END IF;
    IF v_script.roots IS DISTINCT FROM p_roots
       OR p_expected IS DISTINCT FROM (SELECT jsonb_object_agg(s ->> 'step', (s ->> 'rows')::bigint)
                                         FROM jsonb_array_elements(v_script.steps) AS s) THEN
        RAISE EXCEPTION 'cleanup script % was edited: its records or counts differ from the ones it was generated with', p_batch
            USING ERRCODE = 'data_exception',
                  DETAIL = 'Nothing was changed.',
                  HINT = coalesce(format('Generate it again: SELECT guardian.cleanup_script(%L::uuid);', v_script.alert_id),
                                  'Generate it again with guardian.cleanup_script().');
    END IF;
    v_batch := guardian._quarantine_open(p_batch);
    IF v_batch.id IS NOT NULL THEN
        IF v_batch.status = 'capturing' THEN
            RAISE EXCEPTION 'cleanup_begin already ran for batch % in this transaction', p_batch
                USING ERRCODE = 'object_in_use', HINT = 'Run the script once, as a whole.';
        END IF;
        RAISE EXCEPTION 'cleanup script % already ran: % by % (%)', p_batch,
                        to_char(v_batch.applied_at, 'YYYY-MM-DD HH24:MI:SS TZ'), v_batch.created_by,
                        CASE v_batch.status WHEN 'restored' THEN format('restored %s by %s', v_batch.restored_at, v_batch.restored_by)
                             ELSE 'its rows are in quarantine' END
            USING ERRCODE = 'unique_violation',
                  DETAIL = 'Nothing was changed.',
                  HINT = CASE v_batch.status WHEN 'applied' THEN format('To undo it: SELECT guardian.restore(%L);', p_batch)
                              ELSE coalesce(format('For what is contaminated now: SELECT guardian.cleanup_script(%L::uuid);', v_script.alert_id),
                                            'Generate a new script with guardian.cleanup_script().') END;
    END IF;

    -- A superuser would run the application's triggers, casts and operators with its rights.
    PERFORM guardian._refuse_app_code(
        ARRAY(SELECT DISTINCT (s ->> 'relid')::oid::regclass FROM jsonb_array_elements(v_script.steps) AS s),
        format('cleanup script %s', p_batch), p_runs => ARRAY['write', 'values']);
    -- Lock the rows and count them again: the data may have changed since generation. A
    -- script generated with p_include_restricted has restricted delete steps (a person asked
    -- for them); the registered steps, not the caller, say so.
    v_restricted := EXISTS (SELECT FROM jsonb_array_elements(v_script.steps) AS s
                             WHERE coalesce((s ->> 'restricted')::boolean, false));
    v_rows := ARRAY(SELECT r FROM guardian._cleanup_collect(p_roots, true, v_restricted) AS r);
    v_counts := guardian._cleanup_counts(p_roots, v_rows, v_restricted);
    SELECT string_agg(format('step %s (%s %s): expected %s, found %s', s ->> 'step', s ->> 'action', s ->> 'table',
                             s ->> 'rows', coalesce(v_counts ->> (s ->> 'step'), 'no such step')), '; '
                      ORDER BY (s ->> 'step')::integer)
      INTO v_diff
      FROM jsonb_array_elements(v_script.steps) AS s
     WHERE (v_counts ->> (s ->> 'step')) IS DISTINCT FROM (s ->> 'rows');
    IF v_diff IS NULL AND (SELECT count(*) FROM jsonb_object_keys(v_counts)) <> jsonb_array_length(v_script.steps) THEN
        v_diff := 'the foreign keys of these tables changed since the script was generated';
    END IF;
    IF v_diff IS NOT NULL THEN
        RAISE EXCEPTION 'the data changed since cleanup script % was generated: %', p_batch, v_diff
            USING ERRCODE = 'serialization_failure',
                  DETAIL = 'Nothing was changed: the script only removes exactly the rows it counted.',
                  HINT = coalesce(format('Generate it again: SELECT guardian.cleanup_script(%L::uuid);', v_script.alert_id),
                                  'Generate it again with guardian.cleanup_script().');
    END IF;

    -- Copy every row before it changes: the whole row, its key, and why.
    FOR v_step IN SELECT s FROM jsonb_array_elements(v_script.steps) AS s ORDER BY (s ->> 'step')::integer LOOP
        CONTINUE WHEN v_step ->> 'action' = 'blocked' OR (v_step ->> 'rows')::bigint = 0;
        EXECUTE format(
            'SELECT array_agg(ROW(%s, %L, %L, %s, %s, %L::text[], r.findings, t.tableoid, t.ctid)::guardian.quarantine_item)
               FROM unnest($1) AS r JOIN %s AS t ON t.tableoid = r.row_tableoid AND t.ctid = r.row_ctid
              WHERE r.step = %s',
            v_step ->> 'step', (v_step ->> 'relid')::oid::regclass, v_step ->> 'action',
            guardian._key_expr((v_step ->> 'relid')::oid::regclass, 't'),
            guardian._row_json_expr((v_step ->> 'relid')::oid::regclass, 't'),
            guardian._jsonb_texts(v_step -> 'columns'),
            (v_step ->> 'relid')::oid::regclass, v_step ->> 'step')
          INTO v_found USING v_rows;
        v_items := v_items || coalesce(v_found, '{}');
    END LOOP;
    v_total := guardian._quarantine_put(p_batch, v_items);
    RETURN format('captured %s row(s) into quarantine batch %s', v_total, p_batch);
END
$$;
COMMENT ON FUNCTION guardian.cleanup_begin(uuid, jsonb, jsonb) IS
    'First statement of a cleanup script: checks the script is the one registered, locks the rows it will change, checks they are exactly the rows it counted and copies them into guardian.quarantine. Raises (changing nothing) on any difference.';

CREATE OR REPLACE FUNCTION guardian.cleanup_step(p_batch uuid, p_step integer, p_rows bigint)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_batch guardian.quarantine_batches;
    v_step  jsonb;
BEGIN
    PERFORM guardian._response_caller();
    SELECT * INTO v_batch FROM guardian.quarantine_batches AS b
     WHERE b.id = p_batch AND b.status = 'capturing' AND b.captured_xid = txid_current();
    IF NOT FOUND THEN
        RAISE EXCEPTION 'cleanup batch % was not captured in this transaction', p_batch
            USING ERRCODE = 'invalid_transaction_state',
                  HINT = 'Run the whole script as it is, e.g. psql -f cleanup.sql.';
    END IF;
    SELECT s INTO v_step FROM jsonb_array_elements(v_batch.steps) AS s WHERE (s ->> 'step')::integer = p_step;
    IF (v_step ->> 'rows')::bigint IS DISTINCT FROM p_rows THEN
        RAISE EXCEPTION 'step % of cleanup batch % (% %) changed % row(s), expected %', p_step, p_batch,
                        v_step ->> 'action', v_step ->> 'table', p_rows, coalesce(v_step ->> 'rows', 'no such step')
            USING ERRCODE = 'serialization_failure',
                  DETAIL = 'The transaction is aborted: nothing is changed.',
                  HINT = coalesce(format('Generate the script again: SELECT guardian.cleanup_script(%L::uuid);', v_batch.alert_id),
                                  'Generate the script again with guardian.cleanup_script().');
    END IF;
    UPDATE guardian.quarantine_batches AS b SET done = b.done || jsonb_build_object(p_step::text, p_rows)
     WHERE b.id = p_batch;
    RETURN p_rows;
END
$$;
COMMENT ON FUNCTION guardian.cleanup_step(uuid, integer, bigint) IS
    'Called by each statement of a cleanup script with the rows it changed: raises (aborting the transaction) unless that is exactly the count expected.';

CREATE OR REPLACE FUNCTION guardian._auto_cleanup(p_roots jsonb, p_alert uuid, p_max_rows numeric)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_rows    guardian.cleanup_row[];
    v_counts  jsonb;
    v_steps   jsonb;
    v_total   bigint;
    v_blocked text;
    v_script  guardian.cleanup_scripts;
    v_group   integer;
BEGIN
    v_rows := ARRAY(SELECT r FROM guardian._cleanup_collect(p_roots, false) AS r);
    IF NOT EXISTS (SELECT FROM unnest(v_rows) AS r WHERE r.root) THEN
        RETURN 'the records are gone already';
    END IF;
    -- Never with p_include_restricted: what RESTRICT protects is removed only when a person asks.
    v_counts := guardian._cleanup_counts(p_roots, v_rows);
    v_steps := guardian._cleanup_step_list(p_roots, v_counts);
    SELECT string_agg(format('%s row(s) of %s reference %s through %s (ON DELETE RESTRICT / NO ACTION), e.g. %s',
                             s ->> 'rows', s ->> 'table', s ->> 'parent', s -> 'via' ->> 0,
                             (SELECT string_agg(k.row_key::text, ', ')
                                FROM (SELECT r.row_key FROM unnest(v_rows) AS r WHERE r.step = (s ->> 'step')::integer
                                       ORDER BY r.row_key::text LIMIT 3) AS k)), '; ')
      INTO v_blocked FROM jsonb_array_elements(v_steps) AS s
     WHERE s ->> 'action' = 'blocked' AND (s ->> 'rows')::bigint > 0;
    v_total := (SELECT sum((s ->> 'rows')::bigint) FROM jsonb_array_elements(v_steps) AS s WHERE s ->> 'action' <> 'blocked');
    IF v_blocked IS NOT NULL THEN
        PERFORM guardian._auto_response_report('AUTO_CLEANUP_SKIPPED', p_alert,
            format('auto-cleanup skipped: %s. Auto-cleanup never removes rows protected by ON DELETE RESTRICT; if they are test data too, an admin can include them: SELECT * FROM guardian.cleanup_plan(%L::uuid, p_include_restricted => true);',
                   v_blocked, p_alert),
            jsonb_build_object('rows', v_total, 'blocked', v_blocked, 'max_rows', p_max_rows));
        RETURN 'skipped';
    END IF;
    IF v_total > p_max_rows THEN
        PERFORM guardian._auto_response_report('AUTO_CLEANUP_SKIPPED', p_alert,
            format('auto-cleanup skipped: it would quarantine %s rows, more than auto_cleanup.max_rows (%s); a person has to decide. Dry run: SELECT * FROM guardian.cleanup_plan(%L::uuid);',
                   v_total, p_max_rows, p_alert),
            jsonb_build_object('rows', v_total, 'max_rows', p_max_rows));
        RETURN 'skipped';
    END IF;
    -- The very cleanup a script would run: registered, captured into quarantine, then removed.
    v_script := guardian._cleanup_prepare(p_roots, p_alert, true);
    PERFORM guardian.cleanup_begin(v_script.batch_id, v_script.roots,
                                   (SELECT jsonb_object_agg(s ->> 'step', (s ->> 'rows')::bigint)
                                      FROM jsonb_array_elements(v_script.steps) AS s));
    FOR v_group IN
        SELECT DISTINCT (s ->> 'group')::integer FROM jsonb_array_elements(v_script.steps) AS s
         WHERE s ->> 'action' <> 'blocked' AND (s ->> 'rows')::bigint > 0 ORDER BY 1
    LOOP
        EXECUTE guardian._cleanup_group_sql(v_script.batch_id,
                    (SELECT jsonb_agg(s) FROM jsonb_array_elements(v_script.steps) AS s WHERE (s ->> 'rows')::bigint > 0),
                    v_group);
    END LOOP;
    RETURN guardian.cleanup_finish(v_script.batch_id);
END
$$;
COMMENT ON FUNCTION guardian._auto_cleanup(jsonb, uuid, numeric) IS
    'Internal: quarantines these records and their dependent rows exactly as their cleanup script would, unless blocked (rows protected by RESTRICT / NO ACTION are never included automatically) or larger than auto_cleanup.max_rows (then AUTO_CLEANUP_SKIPPED, naming the blocking rows).';

CREATE OR REPLACE FUNCTION guardian._auto_response()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_work  jsonb;
    v_alert uuid;
    v_roots jsonb;
BEGIN
    BEGIN
        v_work := guardian._auto_response_begin();
        IF v_work IS NULL THEN
            RETURN NULL;
        END IF;
        IF NOT coalesce((v_work ->> 'run')::boolean, false) THEN
            RETURN NULL;
        END IF;

        IF v_work -> 'cleanup_roots' IS NOT NULL AND jsonb_typeof(v_work -> 'cleanup_roots') = 'object' THEN
            BEGIN
                PERFORM guardian._auto_cleanup(v_work -> 'cleanup_roots', (v_work ->> 'cleanup_alert')::uuid,
                                               (v_work ->> 'max_rows')::numeric);
            EXCEPTION WHEN OTHERS THEN
                PERFORM guardian._auto_response_report('AUTO_CLEANUP_FAILED', (v_work ->> 'cleanup_alert')::uuid,
                    format('auto-cleanup failed, nothing was removed: %s. An admin can review and run the script: SELECT guardian.cleanup_script(%L::uuid);',
                           SQLERRM, v_work ->> 'cleanup_alert'),
                    jsonb_build_object('error', SQLERRM, 'role', CURRENT_USER));
            END;
        END IF;

        FOR v_alert IN SELECT (e #>> '{}')::uuid FROM jsonb_array_elements(coalesce(v_work -> 'scripts', '[]')) AS e LOOP
            BEGIN
                v_roots := guardian._auto_alert_roots(v_alert);
                IF v_roots IS NOT NULL THEN
                    PERFORM guardian._cleanup_prepare(v_roots, v_alert, true);
                END IF;
            EXCEPTION WHEN OTHERS THEN
                PERFORM guardian._auto_response_report('cleanup_script_error', v_alert,
                    format('could not generate the script with the alert (%s); an admin can: SELECT guardian.cleanup_script(%L::uuid);',
                           SQLERRM, v_alert), NULL);
            END;
        END LOOP;

        IF (v_work ->> 'lockdown')::boolean THEN
            PERFORM guardian._auto_lockdown_check();
        END IF;
        PERFORM guardian._auto_response_end();
    EXCEPTION WHEN OTHERS THEN
        -- The application's commit goes through whatever happens here.
        RAISE WARNING 'pg_guardian: auto-response failed: %', SQLERRM
            USING HINT = 'The contamination alert stands; an admin can run SELECT guardian.cleanup_script(''<alert id>'');';
    END;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION guardian._auto_response() IS
    'Internal deferred trigger on contamination alerts: at commit, with the committing session''s rights, auto-cleanup of safe findings, scripts stored with open alerts, automatic lockdown. Never fails the commit.';

-- New signatures get the rights a fresh install gives them (99_finish/20_grants.sql,
-- 10_ownership.sql and 70_response.sql).
REVOKE EXECUTE ON FUNCTION
    guardian._cleanup_collect(jsonb, boolean, boolean),
    guardian._cleanup_counts(jsonb, guardian.cleanup_row[], boolean),
    guardian._cleanup_edges(regclass[], boolean),
    guardian._cleanup_prepare(jsonb, uuid, boolean, boolean),
    guardian._cleanup_step_list(jsonb, jsonb, boolean),
    guardian._cleanup_steps(regclass[], boolean),
    guardian._plan_of(jsonb, boolean),
    guardian._register_cleanup_script(uuid, uuid, jsonb, jsonb, boolean, boolean),
    guardian.cleanup_plan(regclass, text[], boolean),
    guardian.cleanup_plan(uuid, boolean),
    guardian.cleanup_script(regclass, text[], boolean),
    guardian.cleanup_script(uuid, boolean)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    guardian._cleanup_collect(jsonb, boolean, boolean),
    guardian._cleanup_counts(jsonb, guardian.cleanup_row[], boolean),
    guardian._cleanup_edges(regclass[], boolean),
    guardian._cleanup_prepare(jsonb, uuid, boolean, boolean),
    guardian._cleanup_step_list(jsonb, jsonb, boolean),
    guardian._cleanup_steps(regclass[], boolean),
    guardian._plan_of(jsonb, boolean),
    guardian._register_cleanup_script(uuid, uuid, jsonb, jsonb, boolean, boolean),
    guardian.cleanup_plan(regclass, text[], boolean),
    guardian.cleanup_plan(uuid, boolean),
    guardian.cleanup_script(regclass, text[], boolean),
    guardian.cleanup_script(uuid, boolean)
    TO guardian_owner;
ALTER FUNCTION guardian._register_cleanup_script(uuid, uuid, jsonb, jsonb, boolean, boolean) OWNER TO guardian_owner;
GRANT EXECUTE ON FUNCTION
    guardian._table_root(regclass), guardian._regclass_of(text), guardian._jsonb_texts(jsonb),
    guardian._attnames(regclass, int2[]), guardian._cleanup_edges(regclass[], boolean), guardian._cleanup_steps(regclass[], boolean),
    guardian._key_expr(regclass, text), guardian._column_list(text, text[]), guardian._cleanup_roots(jsonb),
    guardian._cleanup_collect(jsonb, boolean, boolean), guardian._comment(text),
    guardian._cleanup_counts(jsonb, guardian.cleanup_row[], boolean), guardian._cleanup_group_sql(uuid, jsonb, integer),
    guardian._cleanup_step_list(jsonb, jsonb, boolean),
    guardian._render_cleanup_script(uuid, guardian.monitoring_alerts, jsonb, jsonb, boolean),
    guardian._cleanup_prepare(jsonb, uuid, boolean, boolean), guardian._table_shape(regclass), guardian._json_columns(regclass),
    guardian._row_json_expr(regclass, text), guardian.cleanup_begin(uuid, jsonb, jsonb),
    guardian._auto_cleanup(jsonb, uuid, numeric), guardian._record_key(regclass),
    -- SECURITY DEFINER, gated by guardian._response_caller():
    guardian._response_caller(), guardian._register_cleanup_script(uuid, uuid, jsonb, jsonb, boolean, boolean),
    guardian._cleanup_registered(uuid), guardian._quarantine_open(uuid),
    guardian._quarantine_put(uuid, guardian.quarantine_item[]), guardian.cleanup_targets(uuid, integer),
    guardian.cleanup_step(uuid, integer, bigint), guardian.cleanup_finish(uuid),
    guardian._auto_alert_roots(uuid), guardian._auto_response_report(text, uuid, text, jsonb),
    -- SECURITY DEFINER, acting only on this backend's own transaction or on the guardian's
    -- own thresholds:
    guardian._auto_response_begin(), guardian._auto_response_end(), guardian._auto_lockdown_check()
    TO PUBLIC;
GRANT EXECUTE ON FUNCTION guardian._alert_roots(uuid), guardian._table_roots(regclass, text[]),
    guardian._plan_of(jsonb, boolean), guardian.cleanup_plan(uuid, boolean),
    guardian.cleanup_plan(regclass, text[], boolean),
    guardian.lockdown_roles(), guardian._lockdown_protected(oid), guardian._response_flag(text, boolean),
    guardian.policy_problems(text[], text[], text[], jsonb, text[], text[])
    TO guardian_reader;
GRANT EXECUTE ON FUNCTION guardian.cleanup_script(uuid, boolean), guardian.cleanup_script(regclass, text[], boolean),
    guardian.restore(uuid, boolean), guardian._quarantine_claim(uuid), guardian._quarantine_restored(uuid, text),
    guardian._restore_value(regclass, text, jsonb), guardian._shape_difference(jsonb, jsonb),
    guardian.prune_quarantine(), guardian.lockdown(text), guardian.unlock(text),
    guardian.set_response_setting(text, jsonb, text), guardian.set_auto_cleanup(boolean, text),
    guardian.set_auto_lockdown(boolean, integer, text),
    guardian.policy_begin(text, boolean, text[], text[], text[], jsonb, text[], text[]),
    guardian.policy_finish(text, text, text, boolean)
    TO guardian_admin;

-- >>> sql/00_core/30_alert_functions.sql, 40_drift/40_snapshots.sql, 60_response: the person a
-- front end acts for (pg_guardian.actor) is recorded with the role, by guardian._actor()
ALTER TABLE guardian.quarantine_batches ADD COLUMN requested_by text;
COMMENT ON COLUMN guardian.quarantine_batches.requested_by IS
    'Who asked for the cleanup: created_by is the role whose rights ran it; this is guardian._actor(), the person a front end such as the dashboard acts for, and that role.';
CREATE FUNCTION guardian._actor()
RETURNS text
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN v.actor = '' THEN SESSION_USER::text
                ELSE format('%s via %s', v.actor, SESSION_USER) END
      FROM (SELECT left(btrim(regexp_replace(coalesce(current_setting('pg_guardian.actor', true), ''),
                                             '[[:cntrl:]]', '', 'g')), 63) AS actor) AS v
$$;

CREATE OR REPLACE FUNCTION guardian.acknowledge_alert(p_id uuid)
RETURNS guardian.monitoring_alerts
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_alert guardian.monitoring_alerts;
BEGIN
    UPDATE guardian.monitoring_alerts AS a
       SET acknowledged_at = coalesce(a.acknowledged_at, now()),
           acknowledged_by = coalesce(a.acknowledged_by, guardian._actor())
     WHERE a.id = p_id
    RETURNING a.* INTO v_alert;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no alert with id %', p_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'List alerts with: SELECT id, type, message FROM guardian.monitoring_alerts ORDER BY created_at DESC;';
    END IF;
    RETURN v_alert;
END
$$;

CREATE OR REPLACE FUNCTION guardian.resolve_alert(p_id uuid, p_note text DEFAULT NULL)
RETURNS guardian.monitoring_alerts
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_alert guardian.monitoring_alerts;
BEGIN
    UPDATE guardian.monitoring_alerts AS a
       SET resolved_at     = coalesce(a.resolved_at, now()),
           resolved_by     = coalesce(a.resolved_by, guardian._actor()),
           resolution_note = coalesce(p_note, a.resolution_note),
           acknowledged_at = coalesce(a.acknowledged_at, now()),
           acknowledged_by = coalesce(a.acknowledged_by, guardian._actor())
     WHERE a.id = p_id
    RETURNING a.* INTO v_alert;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no alert with id %', p_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'List open alerts with: SELECT id, type, message FROM guardian.open_alerts;';
    END IF;
    RETURN v_alert;
END
$$;

CREATE OR REPLACE FUNCTION guardian.approve_baseline(p_snapshot bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id  bigint := p_snapshot;
    v_old bigint;
BEGIN
    IF v_id IS NULL THEN
        v_id := guardian.snapshot_schema('baseline ' || to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC');
    ELSE
        PERFORM guardian._snapshot(v_id);
    END IF;
    -- one baseline at a time, also when two admins approve at once
    LOCK TABLE guardian.schema_snapshots IN SHARE ROW EXCLUSIVE MODE;
    SELECT s.id INTO v_old FROM guardian.schema_snapshots AS s WHERE s.baseline;
    UPDATE guardian.schema_snapshots AS s SET baseline = false WHERE s.baseline AND s.id <> v_id;
    UPDATE guardian.schema_snapshots AS s
       SET baseline = true, approved_at = now(), approved_by = guardian._actor()
     WHERE s.id = v_id;
    -- the drift reported against the old baseline is accepted with the new one
    PERFORM guardian._resolve_drift_alerts(NULL, format('schema baseline %s approved by %s', v_id, guardian._actor()));
    PERFORM guardian.raise_alert(
        'SCHEMA_BASELINE_APPROVED', 'INFO',
        format('schema baseline %s approved by %s (was %s)', v_id, guardian._actor(), coalesce(v_old::text, 'none')),
        p_record_id => v_id::text,
        p_metadata => jsonb_build_object('snapshot', v_id, 'previous', v_old),
        p_fingerprint => md5('SCHEMA_BASELINE_APPROVED:' || v_id || ':' || clock_timestamp()::text));
    RETURN v_id;
END
$$;

CREATE OR REPLACE FUNCTION guardian._quarantine_restored(p_batch uuid, p_summary text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF guardian._response_caller() <> 'admin' THEN
        RAISE EXCEPTION 'only a guardian admin may restore quarantined rows' USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE guardian.quarantine_batches AS b
       SET status = 'restored', restored_at = clock_timestamp(), restored_by = guardian._actor()
     WHERE b.id = p_batch AND b.status = 'applied';
    PERFORM guardian.raise_alert('QUARANTINE_RESTORED', 'INFO', p_summary, NULL, NULL,
                                 jsonb_build_object('batch', p_batch, 'restored_by', guardian._actor()),
                                 md5('QUARANTINE_RESTORED:' || p_batch));
END
$$;

CREATE OR REPLACE FUNCTION guardian._quarantine_put(p_batch uuid, p_items guardian.quarantine_item[])
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_script guardian.cleanup_scripts;
    v_count  bigint;
BEGIN
    PERFORM guardian._response_caller();
    SELECT * INTO v_script FROM guardian.cleanup_scripts AS s WHERE s.batch_id = p_batch;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown cleanup batch %', p_batch USING ERRCODE = 'no_data_found';
    END IF;
    -- Rows go to the steps of the registered script, and nowhere else.
    IF EXISTS (SELECT FROM unnest(p_items) AS i
                WHERE NOT EXISTS (SELECT FROM jsonb_array_elements(v_script.steps) AS s
                                   WHERE (s ->> 'step')::integer = i.step AND (s ->> 'relid')::oid = i.relid::oid
                                     AND s ->> 'action' = i.action)) THEN
        RAISE EXCEPTION 'rows for cleanup batch % do not match its steps', p_batch USING ERRCODE = 'data_exception';
    END IF;
    -- Each step remembers the table's columns and key, so that a restore can tell whether
    -- the table still has the shape its rows were taken from.
    INSERT INTO guardian.quarantine_batches (id, alert_id, environment, automatic, requested_by, steps)
    VALUES (p_batch, v_script.alert_id, guardian.current_environment(), v_script.automatic, guardian._actor(),
            (SELECT jsonb_agg(s || jsonb_build_object(
                        'shape', guardian._table_shape((s ->> 'relid')::oid::regclass),
                        'key_columns', to_jsonb((guardian._record_key((s ->> 'relid')::oid::regclass)).key_columns))
                    ORDER BY (s ->> 'step')::integer)
               FROM jsonb_array_elements(v_script.steps) AS s));
    INSERT INTO guardian.quarantine (batch_id, step, relid, table_name, action, row_key, row_data, columns, findings,
                                     row_tableoid, row_ctid)
    SELECT p_batch, i.step, i.relid, i.relid::text, i.action, i.row_key, i.row_data, i.columns, i.findings,
           i.row_tableoid, i.row_ctid
      FROM unnest(p_items) AS i
     ORDER BY i.step, i.row_tableoid, i.row_ctid;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    UPDATE guardian.quarantine_batches AS b SET row_count = v_count WHERE b.id = p_batch;
    RETURN v_count;
END
$$;

CREATE OR REPLACE FUNCTION guardian._lockdown_apply(p_reason text, p_automatic boolean)
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

CREATE OR REPLACE FUNCTION guardian.unlock(p_note text DEFAULT NULL)
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

CREATE OR REPLACE VIEW guardian.quarantine_status AS
SELECT b.id AS batch_id, b.alert_id, b.environment, b.automatic, b.status, b.row_count,
       (SELECT pg_catalog.jsonb_object_agg(x.table_name, x.n)
          FROM (SELECT q.table_name, pg_catalog.count(*) AS n FROM guardian.quarantine AS q
                 WHERE q.batch_id = b.id GROUP BY q.table_name) AS x) AS tables,
       b.created_at, b.created_by, b.applied_at, b.restored_at, b.restored_by,
       CASE WHEN b.status = 'applied' AND guardian.param('retention.quarantine_days') > 0
            THEN b.applied_at + pg_catalog.make_interval(days => guardian.param('retention.quarantine_days')::integer)
       END AS kept_until,
       pg_catalog.format('SELECT guardian.restore(%L);', b.id) AS restore_command,
       b.requested_by
  FROM guardian.quarantine_batches AS b;


COMMENT ON FUNCTION guardian._actor() IS
    'The actor recorded by acknowledgements, resolutions, restores, baseline approvals and unlocks: SESSION_USER, or "<pg_guardian.actor> via <SESSION_USER>" when a front end named the person it acts for.';
REVOKE EXECUTE ON FUNCTION guardian._actor() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION guardian._actor() TO guardian_owner;

-- >>> sql/00_core: why an alert was closed (outcome), and the indexes reports read by
-- Alerts raised earlier in this transaction (by an earlier update step) have their deferred
-- triggers run now: ALTER TABLE refuses a table with pending trigger events.
SET CONSTRAINTS ALL IMMEDIATE;
ALTER TABLE guardian.monitoring_alerts ADD COLUMN outcome text;
ALTER TABLE guardian.monitoring_alerts ADD CONSTRAINT monitoring_alerts_outcome_chk
    CHECK (outcome IN ('cleaned', 'confirmed', 'false_positive', 'expected'));
COMMENT ON COLUMN guardian.monitoring_alerts.outcome IS
    'Why it was closed: cleaned (test data, removed), confirmed (true, kept), false_positive (wrong, or allowlisted), expected (e.g. a planned bulk load); NULL while unknown. Set by guardian.resolve_alert(), a cleanup (cleaned) and allowlisting (false_positive).';
DROP INDEX guardian.idx_alerts_type;
DROP INDEX guardian.idx_alerts_created_at;
CREATE INDEX idx_alerts_created_at ON guardian.monitoring_alerts (created_at)
    INCLUDE (severity, type, environment, table_name, occurrences, outcome, acknowledged_at, resolved_at);
-- The design's two indexes, by type and by time, shaped for reports: by type over a period,
-- and by time carrying what reports count (so they read the index, not the rows).
CREATE INDEX idx_alerts_type ON guardian.monitoring_alerts (type, created_at);
-- The backlog at any point in time: alerts still open then (resolved later, or never).
CREATE INDEX monitoring_alerts_resolved_at_idx
    ON guardian.monitoring_alerts ((COALESCE(resolved_at, 'infinity'::timestamptz)));

CREATE FUNCTION guardian._check_outcome(p_outcome text)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_outcome IS NOT NULL AND p_outcome NOT IN ('cleaned', 'confirmed', 'false_positive', 'expected') THEN
        RAISE EXCEPTION 'unknown alert outcome %', quote_literal(p_outcome)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use cleaned (test data, removed), confirmed (true, kept), false_positive (wrong) or expected (e.g. a planned load).';
    END IF;
    RETURN p_outcome;
END
$$;

COMMENT ON FUNCTION guardian._check_outcome(text) IS
    'Internal: an alert outcome, or an error naming the four there are.';

DROP FUNCTION guardian.resolve_alert(uuid, text);
CREATE FUNCTION guardian.resolve_alert(p_id uuid, p_note text DEFAULT NULL, p_outcome text DEFAULT NULL)
RETURNS guardian.monitoring_alerts
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_alert guardian.monitoring_alerts;
    v_outcome text := guardian._check_outcome(p_outcome);
BEGIN
    -- Resolving twice keeps the first resolution; a later outcome corrects the earlier one.
    UPDATE guardian.monitoring_alerts AS a
       SET resolved_at     = coalesce(a.resolved_at, now()),
           resolved_by     = coalesce(a.resolved_by, guardian._actor()),
           resolution_note = coalesce(p_note, a.resolution_note),
           outcome         = coalesce(v_outcome, a.outcome),
           acknowledged_at = coalesce(a.acknowledged_at, now()),
           acknowledged_by = coalesce(a.acknowledged_by, guardian._actor())
     WHERE a.id = p_id
    RETURNING a.* INTO v_alert;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no alert with id %', p_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'List open alerts with: SELECT id, type, message FROM guardian.open_alerts;';
    END IF;
    -- A contamination alert's outcome labels its records for the rules learned from them
    -- (62_learning/10_labels.sql).
    IF v_outcome IS NOT NULL THEN
        PERFORM guardian._label_alert(v_alert.id, v_outcome);
    END IF;
    RETURN v_alert;
END
$$;
COMMENT ON FUNCTION guardian.resolve_alert(uuid, text, text) IS
    'Close an alert (who, when, an optional note) and say why: p_outcome cleaned, confirmed, false_positive or expected. A later repeat of the condition opens a new alert.';

-- >>> sql/20_contamination/40_watch.sql, 60_response: allowlisting resolves what it covers as a
-- false positive, a cleanup as cleaned, a restore with allowlisting as a false positive
CREATE OR REPLACE FUNCTION guardian.allow(
    p_rule text DEFAULT NULL, p_table regclass DEFAULT NULL, p_column text DEFAULT NULL,
    p_value text DEFAULT NULL, p_reason text DEFAULT NULL, p_expires_at timestamptz DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id bigint;
BEGIN
    IF p_rule IS NOT NULL AND NOT EXISTS (SELECT FROM guardian.rules AS r WHERE r.name = p_rule) THEN
        RAISE EXCEPTION 'unknown rule %', quote_literal(p_rule)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'List rules with: SELECT name FROM guardian.rules;';
    END IF;
    IF p_column IS NOT NULL AND p_table IS NULL THEN
        RAISE EXCEPTION 'an allowlisted column needs its table'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass p_table as well as p_column.';
    END IF;
    IF p_column IS NOT NULL AND NOT EXISTS (SELECT FROM pg_catalog.pg_attribute AS a
                                             WHERE a.attrelid = p_table AND a.attname = p_column AND NOT a.attisdropped) THEN
        RAISE EXCEPTION 'table % has no column %', p_table, quote_ident(p_column)
            USING ERRCODE = 'undefined_column', HINT = 'Check the column name.';
    END IF;
    IF coalesce(btrim(p_reason), '') = '' THEN
        RAISE EXCEPTION 'an allowlist entry needs a reason'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Say why it is not test data: p_reason => ''real patient, surname Doe''.';
    END IF;
    IF num_nonnulls(p_rule, p_table, p_value) = 0 THEN
        RAISE EXCEPTION 'an allowlist entry needs a rule, a table or a value'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'To stop a rule everywhere, disable it: UPDATE guardian.rules SET enabled = false WHERE name = ...;';
    END IF;
    INSERT INTO guardian.allowlist (rule, relid, column_name, value, reason, expires_at)
    VALUES (p_rule, p_table, p_column, guardian._normalize(p_value), p_reason, p_expires_at)
    RETURNING id INTO v_id;
    -- Open contamination alerts this entry covers whole were false positives. (An entry for one
    -- value cannot be checked against an alert's redacted samples: the caller says so.)
    IF p_value IS NULL THEN
        PERFORM guardian.resolve_alert(a.id, format('allowlisted (entry %s): %s', v_id, p_reason), 'false_positive')
           FROM guardian.monitoring_alerts AS a
          WHERE a.resolved_at IS NULL
            AND a.type IN ('TEST_DATA_CONTAMINATION', 'STRICT_MODE_REJECTION')
            AND (p_rule IS NULL OR a.metadata ->> 'rule' = p_rule)
            AND (p_table IS NULL OR a.table_name = p_table::text)
            AND (p_column IS NULL OR coalesce(a.metadata -> 'columns', jsonb_build_array(a.metadata -> 'column'))
                                     = jsonb_build_array(p_column));
    END IF;
    RETURN v_id;
END
$$;

CREATE OR REPLACE FUNCTION guardian.cleanup_finish(p_batch uuid)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_batch   guardian.quarantine_batches;
    v_missing text;
    v_alert   record;
    v_tables  text;
    v_summary text;
    v_keep    numeric := guardian.param('retention.quarantine_days');
    v_caller  text;
    v_left    text;
BEGIN
    v_caller := guardian._response_caller();
    SELECT * INTO v_batch FROM guardian.quarantine_batches AS b
     WHERE b.id = p_batch AND b.status = 'capturing' AND b.captured_xid = txid_current();
    IF NOT FOUND THEN
        RAISE EXCEPTION 'cleanup batch % was not captured in this transaction', p_batch
            USING ERRCODE = 'invalid_transaction_state', HINT = 'Run the whole script as it is, e.g. psql -f cleanup.sql.';
    END IF;
    SELECT string_agg(format('step %s (%s %s)', s ->> 'step', s ->> 'action', s ->> 'table'), ', ') INTO v_missing
      FROM jsonb_array_elements(v_batch.steps) AS s
     WHERE s ->> 'action' <> 'blocked' AND (s ->> 'rows')::bigint > 0 AND NOT v_batch.done ? (s ->> 'step');
    IF v_missing IS NOT NULL THEN
        RAISE EXCEPTION 'cleanup batch % is incomplete: % did not run', p_batch, v_missing
            USING ERRCODE = 'invalid_transaction_state',
                  DETAIL = 'The transaction is aborted: nothing is changed.',
                  HINT = 'Run the whole script as it is.';
    END IF;
    UPDATE guardian.quarantine_batches AS b SET status = 'applied', applied_at = clock_timestamp()
     WHERE b.id = p_batch
    RETURNING * INTO v_batch;
    SELECT string_agg(format('%s %s', x.n, x.table_name), ', ' ORDER BY x.table_name) INTO v_tables
      FROM (SELECT q.table_name, count(*) AS n FROM guardian.quarantine AS q
             WHERE q.batch_id = p_batch GROUP BY q.table_name) AS x;

    -- Alerts all of whose records this batch removed are done.
    FOR v_alert IN
        SELECT f.alert_id,
               count(DISTINCT f.record_key) AS records,
               count(DISTINCT f.record_key) FILTER (WHERE EXISTS (
                   SELECT FROM guardian.quarantine AS q
                    WHERE q.batch_id = p_batch AND q.relid = f.relid AND q.findings IS NOT NULL
                      AND q.row_key = f.record_key)) AS removed
          FROM guardian.findings AS f
         WHERE f.alert_id IN (SELECT f2.alert_id FROM guardian.findings AS f2
                                JOIN guardian.quarantine AS q ON q.relid = f2.relid AND q.row_key = f2.record_key
                               WHERE q.batch_id = p_batch AND q.findings IS NOT NULL)
         GROUP BY f.alert_id
    LOOP
        UPDATE guardian.monitoring_alerts AS a
           SET metadata = a.metadata || jsonb_build_object('quarantine_batch', p_batch,
                              'quarantined_records', v_alert.removed,
                              'restore_command', format('SELECT guardian.restore(%L);', p_batch))
         WHERE a.id = v_alert.alert_id;
        -- A session that is no admin has its word checked against the table first.
        v_left := CASE WHEN v_alert.removed = v_alert.records AND v_caller <> 'admin'
                       THEN guardian._records_gone(v_alert.alert_id) END;
        IF v_left IS NOT NULL THEN
            UPDATE guardian.monitoring_alerts AS a
               SET metadata = a.metadata || jsonb_build_object('cleanup_unconfirmed', v_left)
             WHERE a.id = v_alert.alert_id;
        ELSIF v_alert.removed = v_alert.records THEN
            PERFORM guardian.resolve_alert(v_alert.alert_id,
                format('%s: %s record(s) and their dependent rows quarantined in batch %s; undo with SELECT guardian.restore(%L);',
                       CASE WHEN v_batch.automatic THEN 'auto-cleanup' ELSE 'cleanup' END, v_alert.removed, p_batch, p_batch),
                'cleaned');
        END IF;
    END LOOP;

    v_summary := format('%s quarantined %s row(s) (%s) in batch %s%s; restore them with SELECT guardian.restore(%L);',
                        CASE WHEN v_batch.automatic THEN 'auto-cleanup' ELSE format('cleanup by %s', v_batch.created_by) END,
                        v_batch.row_count, v_tables, p_batch,
                        CASE WHEN v_keep > 0 THEN format(', kept until %s', to_char(v_batch.applied_at + make_interval(days => v_keep::integer), 'YYYY-MM-DD'))
                             ELSE '' END,
                        p_batch);
    PERFORM guardian.raise_alert(
        'TEST_DATA_QUARANTINED', CASE WHEN v_batch.automatic THEN 'HIGH' ELSE 'INFO' END, v_summary,
        (SELECT q.table_name FROM guardian.quarantine AS q WHERE q.batch_id = p_batch AND q.findings IS NOT NULL LIMIT 1),
        NULL,
        jsonb_build_object('batch', p_batch, 'automatic', v_batch.automatic, 'rows', v_batch.row_count,
                           'tables', (SELECT jsonb_object_agg(x.table_name, x.n)
                                        FROM (SELECT q.table_name, count(*) AS n FROM guardian.quarantine AS q
                                               WHERE q.batch_id = p_batch GROUP BY q.table_name) AS x),
                           'alert_id', v_batch.alert_id,
                           'restore_command', format('SELECT guardian.restore(%L);', p_batch)),
        md5('TEST_DATA_QUARANTINED:' || p_batch));
    RETURN v_summary;
END
$$;

CREATE OR REPLACE FUNCTION guardian.restore(p_batch uuid, p_allowlist boolean, p_run_app_code boolean)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET datestyle = 'ISO, YMD'
SET intervalstyle = 'postgres'
SET timezone = 'UTC'
SET extra_float_digits = 1
SET bytea_output = 'hex'
AS $$
DECLARE
    v_batch    guardian.quarantine_batches := guardian._quarantine_claim(p_batch);
    v_steps    jsonb := v_batch.steps;
    v_step     jsonb;
    v_problems text[] := '{}';
    v_diff     text;
    v_group    integer;
    v_sql      text;
    v_counts   bigint[];
    v_expected bigint[];
    v_finding  record;
    v_allowed  integer := 0;
    v_detail   text;
    v_summary  text;
    v_app_code text;
BEGIN
    -- Every table must still be there, with the columns its rows were taken from.
    FOR v_step IN
        SELECT s FROM jsonb_array_elements(v_steps) AS s
         WHERE s ->> 'action' <> 'blocked' AND (s ->> 'rows')::bigint > 0
         ORDER BY (s ->> 'step')::integer
    LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_class AS c WHERE c.oid = (v_step ->> 'relid')::oid) THEN
            v_problems := v_problems || format('table %s no longer exists', v_step ->> 'table');
            CONTINUE;
        END IF;
        v_diff := guardian._shape_difference(v_step -> 'shape', guardian._table_shape((v_step ->> 'relid')::oid::regclass));
        IF v_diff IS NOT NULL THEN
            v_problems := v_problems || format('%s changed since its rows were quarantined: %s', v_step ->> 'table', v_diff);
        END IF;
        -- A restore never writes more than the role that captured the batch could (an
        -- auto-cleanup captures with the rights of the session that wrote the test data).
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles AS r WHERE r.rolname = v_batch.created_by) THEN
            v_problems := v_problems || format('it was captured by role %s, which no longer exists', v_batch.created_by);
        ELSIF NOT has_table_privilege(v_batch.created_by, (v_step ->> 'relid')::oid,
                                      CASE WHEN v_step ->> 'action' = 'delete' THEN 'INSERT' ELSE 'UPDATE' END) THEN
            v_problems := v_problems || format('it was captured by role %s, which may not %s %s: restoring it would write what that role could not',
                                               v_batch.created_by,
                                               CASE WHEN v_step ->> 'action' = 'delete' THEN 'INSERT into' ELSE 'UPDATE' END,
                                               v_step ->> 'table');
        END IF;
    END LOOP;
    IF cardinality(v_problems) > 0 THEN
        RAISE EXCEPTION 'cannot restore quarantine batch %: %', p_batch, array_to_string(ARRAY(SELECT DISTINCT p FROM unnest(v_problems) AS p), '; ')
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Nothing was restored; the rows stay in guardian.quarantine.',
                  HINT = format('Make the tables match again, or read the rows and restore them by hand: SELECT table_name, row_data FROM guardian.quarantine WHERE batch_id = %L ORDER BY step DESC;', p_batch);
    END IF;

    -- The application's code on these tables would run with the caller's rights.
    IF p_run_app_code THEN
        SELECT string_agg(format('%s: %s', e.relid, e.code), '; ' ORDER BY e.relid::text, e.code)
          INTO v_app_code
          FROM guardian._app_code_exposure(ARRAY(
                   SELECT DISTINCT (s ->> 'relid')::oid::regclass FROM jsonb_array_elements(v_steps) AS s
                    WHERE s ->> 'action' <> 'blocked' AND (s ->> 'rows')::bigint > 0)) AS e
         WHERE e.kind <> 'row_security'
           AND (SELECT r.rolsuper FROM pg_catalog.pg_roles AS r WHERE r.rolname = CURRENT_USER);
    ELSE
        PERFORM guardian._refuse_app_code(
            ARRAY(SELECT DISTINCT (s ->> 'relid')::oid::regclass FROM jsonb_array_elements(v_steps) AS s
                   WHERE s ->> 'action' <> 'blocked' AND (s ->> 'rows')::bigint > 0),
            format('to restore quarantine batch %s', p_batch),
            format('Nothing was restored. Restore as a guardian admin who is not a superuser (that code then runs with that role''s rights), or, if that code may run as a superuser: SELECT guardian.restore(%L, %s, p_run_app_code => true);',
                   p_batch, p_allowlist::text));
    END IF;

    -- The guardian removed these rows for what it found in them; told they are real, it must
    -- not flag (or quarantine) them again: the findings become allowlist entries.
    IF p_allowlist THEN
        FOR v_finding IN
            SELECT DISTINCT q.relid, f ->> 'rule' AS rule,
                   CASE WHEN strpos(f ->> 'column', '+') > 0 THEN NULL ELSE f ->> 'column' END AS column_name,
                   CASE WHEN strpos(f ->> 'column', '+') > 0
                        THEN (SELECT string_agg(q.row_data ->> c, ' ' ORDER BY o)
                                FROM unnest(string_to_array(f ->> 'column', '+')) WITH ORDINALITY AS u(c, o))
                        ELSE q.row_data ->> (f ->> 'column') END AS value
              FROM guardian.quarantine AS q, jsonb_array_elements(q.findings) AS f
             WHERE q.batch_id = p_batch AND q.findings IS NOT NULL
        LOOP
            -- Only values the rule really matches: the batch's own account of why is not trusted.
            CONTINUE WHEN v_finding.value IS NULL
                       OR NOT EXISTS (SELECT FROM guardian.rules AS r
                                       WHERE r.name = v_finding.rule
                                         AND guardian._rule_matches(r.match_type, r.matcher, r.terms,
                                                                    guardian._normalize(v_finding.value)))
                       OR EXISTS (SELECT FROM guardian.allowlist AS a
                                   WHERE a.rule = v_finding.rule AND a.relid = v_finding.relid
                                     AND a.column_name IS NOT DISTINCT FROM v_finding.column_name
                                     AND a.value = guardian._normalize(v_finding.value)
                                     AND (a.expires_at IS NULL OR a.expires_at > now()));
            PERFORM guardian.allow(v_finding.rule, v_finding.relid, v_finding.column_name, v_finding.value,
                                   format('restored from quarantine batch %s by %s', p_batch, SESSION_USER));
            v_allowed := v_allowed + 1;
        END LOOP;
    END IF;

    -- Rows back, parents first; a foreign-key cycle in one statement.
    FOR v_group IN
        SELECT DISTINCT (s ->> 'group')::integer FROM jsonb_array_elements(v_steps) AS s
         WHERE s ->> 'action' = 'delete' AND (s ->> 'rows')::bigint > 0
         ORDER BY 1 DESC
    LOOP
        SELECT 'WITH ' || string_agg(format(
                   E'restored_%s AS (\n    INSERT INTO %s (%s) OVERRIDING SYSTEM VALUE\n    SELECT %s\n      FROM guardian.quarantine AS q, pg_catalog.jsonb_populate_record(NULL::%s, q.row_data) AS r\n     WHERE q.batch_id = $1 AND q.step = %s\n     ORDER BY q.seq\n    RETURNING 1)',
                   s ->> 'step', (s ->> 'relid')::oid::regclass,
                   (SELECT string_agg(format('%I', c ->> 'name'), ', ' ORDER BY o)
                      FROM jsonb_array_elements(s -> 'shape') WITH ORDINALITY AS x(c, o) WHERE NOT (c ->> 'generated')::boolean),
                   (SELECT string_agg(guardian._restore_value((s ->> 'relid')::oid::regclass, c ->> 'name', s -> 'shape'), ', ' ORDER BY o)
                      FROM jsonb_array_elements(s -> 'shape') WITH ORDINALITY AS x(c, o) WHERE NOT (c ->> 'generated')::boolean),
                   (s ->> 'relid')::oid::regclass, s ->> 'step'), E',\n' ORDER BY (s ->> 'step')::integer)
               || E'\nSELECT ARRAY[' || string_agg(format('(SELECT pg_catalog.count(*) FROM restored_%s)', s ->> 'step'), ', '
                                                   ORDER BY (s ->> 'step')::integer) || ']',
               array_agg((s ->> 'rows')::bigint ORDER BY (s ->> 'step')::integer)
          INTO v_sql, v_expected
          FROM jsonb_array_elements(v_steps) AS s
         WHERE (s ->> 'group')::integer = v_group AND s ->> 'action' = 'delete' AND (s ->> 'rows')::bigint > 0;
        BEGIN
            EXECUTE v_sql INTO v_counts USING p_batch;
        EXCEPTION WHEN unique_violation OR exclusion_violation THEN
            GET STACKED DIAGNOSTICS v_detail = PG_EXCEPTION_DETAIL;
            RAISE EXCEPTION 'cannot restore quarantine batch %: a row it holds is already back in its table (%)', p_batch, SQLERRM
                USING ERRCODE = 'unique_violation',
                      DETAIL = coalesce(v_detail || ' ', '') || 'Nothing was restored; the rows stay in guardian.quarantine.',
                      HINT = 'Someone re-created the row since the cleanup: remove the new copy, or keep it and leave the batch in quarantine.';
        END;
        IF v_counts IS DISTINCT FROM v_expected THEN
            RAISE EXCEPTION 'cannot restore quarantine batch %: restored % row(s) where % were quarantined', p_batch, v_counts, v_expected
                USING ERRCODE = 'data_exception', DETAIL = 'Nothing was restored (a trigger or rule may have dropped rows).';
        END IF;
    END LOOP;

    -- Then the keys the SET NULL / SET DEFAULT steps cleared.
    FOR v_step IN
        SELECT s FROM jsonb_array_elements(v_steps) AS s
         WHERE s ->> 'action' IN ('set null', 'set default') AND (s ->> 'rows')::bigint > 0
         ORDER BY (s ->> 'step')::integer
    LOOP
        v_sql := format(
            E'WITH fixed AS (\n    UPDATE %s AS t SET %s\n      FROM guardian.quarantine AS q, pg_catalog.jsonb_populate_record(NULL::%s, q.row_data) AS r\n     WHERE q.batch_id = $1 AND q.step = %s AND %s\n    RETURNING 1)\nSELECT ARRAY[pg_catalog.count(*)] FROM fixed',
            (v_step ->> 'relid')::oid::regclass,
            (SELECT string_agg(format('%I = %s', c, guardian._restore_value((v_step ->> 'relid')::oid::regclass, c, v_step -> 'shape')), ', ')
               FROM jsonb_array_elements_text(v_step -> 'columns') AS c),
            (v_step ->> 'relid')::oid::regclass, v_step ->> 'step',
            CASE WHEN jsonb_typeof(v_step -> 'key_columns') = 'array'
                 THEN format('(%s) = (%s)',
                             guardian._column_list('t', guardian._jsonb_texts(v_step -> 'key_columns')),
                             guardian._column_list('r', guardian._jsonb_texts(v_step -> 'key_columns')))
                 ELSE (SELECT string_agg(format('t.%I::text IS NOT DISTINCT FROM %s::text', c ->> 'name',
                                                guardian._restore_value((v_step ->> 'relid')::oid::regclass, c ->> 'name', v_step -> 'shape')),
                                         ' AND ')
                         FROM jsonb_array_elements(v_step -> 'shape') AS c
                        WHERE NOT (v_step -> 'columns') ? (c ->> 'name')) END);
        EXECUTE v_sql INTO v_counts USING p_batch;
        IF v_counts[1] <> (v_step ->> 'rows')::bigint THEN
            RAISE EXCEPTION 'cannot restore quarantine batch %: % of the % row(s) of % whose % the cleanup cleared are gone', p_batch,
                            (v_step ->> 'rows')::bigint - v_counts[1], v_step ->> 'rows', v_step ->> 'table',
                            (SELECT string_agg(c, ', ') FROM jsonb_array_elements_text(v_step -> 'columns') AS c)
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = 'Nothing was restored; the rows stay in guardian.quarantine.',
                      HINT = 'Restore those rows first (they were deleted after the cleanup), or restore by hand from guardian.quarantine.';
        END IF;
    END LOOP;

    v_summary := format('restored quarantine batch %s: %s row(s) (%s) by %s%s', p_batch, v_batch.row_count,
                        (SELECT string_agg(format('%s %s', x.n, x.table_name), ', ' ORDER BY x.table_name)
                           FROM (SELECT q.table_name, count(*) AS n FROM guardian.quarantine AS q
                                  WHERE q.batch_id = p_batch GROUP BY q.table_name) AS x),
                        SESSION_USER,
                        CASE WHEN v_allowed > 0 THEN format('; %s allowlist entr%s so that they are not flagged again',
                                                           v_allowed, CASE WHEN v_allowed = 1 THEN 'y' ELSE 'ies' END)
                             ELSE '' END)
                 || CASE WHEN v_app_code IS NOT NULL
                         THEN format('; as asked (p_run_app_code), application code ran as superuser %s: %s', CURRENT_USER, v_app_code)
                         ELSE '' END;
    PERFORM guardian._quarantine_restored(p_batch, v_summary);
    -- Put back and allowlisted: the rows were real, so the alert was a false positive.
    IF p_allowlist AND v_batch.alert_id IS NOT NULL THEN
        PERFORM guardian.resolve_alert(v_batch.alert_id, NULL, 'false_positive');
    END IF;
    RETURN v_summary;
END
$$;

CREATE OR REPLACE FUNCTION guardian.restore(p_batch uuid, p_allowlist boolean DEFAULT true)
RETURNS text
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT guardian.restore(p_batch, p_allowlist, false)
$$;


COMMENT ON FUNCTION guardian.allow(text, regclass, text, text, text, timestamptz) IS
    'Allowlist a known false positive: by rule, table, column and/or value (any combination), with a reason and an optional expiry. Open contamination alerts an entry without a value covers are resolved as false_positive.';

-- >>> sql/70_analytics: reports and time series over the alert history
-- Analytics over the alert history: what happened in a period, how fast people answered,
-- what keeps coming back, and whether the success metrics the owners set are met.
--
-- guardian.report(from, to) is one JSON document (the CLI renders it as text, Markdown, HTML,
-- CSV; the dashboard draws it); guardian.alert_timeseries() feeds charts. Alerts belong to a
-- period by created_at. Times to acknowledge and resolve follow Opsgenie: an alert closed
-- without an acknowledgement counts its close as the acknowledgement.

CREATE FUNCTION guardian._report_zone(p_time_zone text)
RETURNS text
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_zone text := coalesce(nullif(btrim(p_time_zone), ''), current_setting('TimeZone'));
BEGIN
    PERFORM now() AT TIME ZONE v_zone;
    RETURN v_zone;
EXCEPTION WHEN invalid_parameter_value THEN
    RAISE EXCEPTION 'unknown time zone %', quote_literal(p_time_zone)
        USING ERRCODE = 'invalid_parameter_value',
              HINT = 'Use a name from pg_timezone_names, e.g. ''Europe/Berlin'' or ''UTC''.';
END
$$;
COMMENT ON FUNCTION guardian._report_zone(text) IS
    'Internal: the time zone a report buckets days and hours in (the session''s when NULL), or an error naming it.';

CREATE FUNCTION guardian._report_check(p_from timestamptz, p_to timestamptz, p_environment text)
RETURNS void
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_from IS NULL OR p_to IS NULL THEN
        RAISE EXCEPTION 'a report needs a start and an end (got % and %)', coalesce(p_from::text, 'NULL'), coalesce(p_to::text, 'NULL')
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'For the last 30 days: SELECT guardian.report(now() - interval ''30 days'', now());';
    END IF;
    IF p_from >= p_to THEN
        RAISE EXCEPTION 'report period from % to % is empty: the start must come before the end', p_from, p_to
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Swap the two, e.g. SELECT guardian.report(now() - interval ''7 days'', now());';
    END IF;
    IF p_environment IS NOT NULL AND p_environment IS DISTINCT FROM guardian.current_environment()
       AND NOT EXISTS (SELECT FROM guardian.monitoring_alerts AS a WHERE a.environment = p_environment) THEN
        RAISE EXCEPTION 'unknown environment %: this database is %, and no alert names it', quote_literal(p_environment),
                        quote_literal(guardian.current_environment())
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Leave p_environment NULL for every environment, or list them: SELECT DISTINCT environment FROM guardian.monitoring_alerts;';
    END IF;
END
$$;
COMMENT ON FUNCTION guardian._report_check(timestamptz, timestamptz, text) IS
    'Internal: refuses a report period that is missing or reversed, or an environment no alert names.';

-- Bucket starts of a period: hours, or local days, weeks (from Monday) or months in the zone.
CREATE FUNCTION guardian._report_buckets(p_from timestamptz, p_to timestamptz, p_bucket text, p_zone text)
RETURNS TABLE (idx integer, starts_at timestamptz, label text)
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (row_number() OVER (ORDER BY x.b))::integer, x.b,
           to_char(x.b AT TIME ZONE p_zone, CASE p_bucket WHEN 'hour' THEN 'YYYY-MM-DD HH24:00'
                                                          WHEN 'month' THEN 'YYYY-MM' ELSE 'YYYY-MM-DD' END)
      FROM (SELECT s AS b
              FROM generate_series(date_trunc('hour', p_from, p_zone), p_to - interval '1 microsecond', interval '1 hour') AS s
             WHERE p_bucket = 'hour'
            UNION ALL
            -- Local midnights step by local days, so a daylight-saving day is one bucket.
            SELECT s AT TIME ZONE p_zone
              FROM generate_series(date_trunc(p_bucket, p_from AT TIME ZONE p_zone),
                                   (p_to - interval '1 microsecond') AT TIME ZONE p_zone,
                                   ('1 ' || p_bucket)::interval) AS s
             WHERE p_bucket <> 'hour') AS x
$$;
COMMENT ON FUNCTION guardian._report_buckets(timestamptz, timestamptz, text, text) IS
    'Internal: the hours, or local days, weeks or months (in the zone, across daylight-saving changes), a period is drawn in.';

-- The types the report groups under contamination and unusual activity.
CREATE FUNCTION guardian._report_types(p_group text)
RETURNS text[]
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE p_group
               WHEN 'contamination' THEN ARRAY['TEST_DATA_CONTAMINATION', 'STRICT_MODE_REJECTION']
               WHEN 'activity' THEN ARRAY['BULK_OPERATION', 'RAPID_CREATION', 'OFF_HOURS_ACTIVITY',
                                          'SUSPICIOUS_PATTERN_RATE', 'UNFILTERED_WRITE', 'TABLE_TRUNCATED',
                                          'ACTIVITY_ANOMALY']
           END
$$;
COMMENT ON FUNCTION guardian._report_types(text) IS
    'Internal: alert types of the contamination and activity groups.';

CREATE FUNCTION guardian.report(
    p_from timestamptz, p_to timestamptz, p_environment text DEFAULT NULL, p_time_zone text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- A large statement over many rows: JIT would spend seconds compiling what runs in a second.
SET work_mem = '64MB'
SET jit = off
AS $$
DECLARE
    v_zone    text;
    v_bucket  text;
    v_span    interval := p_to - p_from;
    v_asof    timestamptz := least(p_to, now());
    v_sevs    text[] := ARRAY['CRITICAL', 'HIGH', 'MEDIUM', 'LOW', 'INFO'];
    v_contam  text[] := guardian._report_types('contamination');
    v_active  text[] := guardian._report_types('activity');
    v_here    boolean := p_environment IS NULL OR p_environment IS NOT DISTINCT FROM guardian.current_environment();
    v_result  jsonb;
BEGIN
    PERFORM guardian._report_check(p_from, p_to, p_environment);
    v_zone := guardian._report_zone(p_time_zone);
    v_bucket := CASE WHEN v_span <= interval '2 days' THEN 'hour' ELSE 'day' END;

    -- One pass over the period's alerts, grouped by everything the counts need (bucket,
    -- severity, type, production or not, outcome, when a serious alert came, whether a
    -- critical one was acknowledged in time): a few thousand rows the rest is computed from.
    WITH a AS NOT MATERIALIZED (
        SELECT m.created_at, m.created_at AT TIME ZONE v_zone AS lt, m.severity, m.type, m.table_name, m.occurrences,
               m.outcome,
               coalesce(m.environment = 'production', false) AS production,
               date_part('epoch', coalesce(m.acknowledged_at, m.resolved_at) - m.created_at) AS tta,
               date_part('epoch', m.resolved_at - m.created_at) AS ttr
          FROM guardian.monitoring_alerts AS m
         WHERE m.created_at >= p_from AND m.created_at < p_to
           AND (p_environment IS NULL OR m.environment = p_environment)
    ),
    g AS MATERIALIZED (
        -- Local days are truncated in local time (a.lt) and turned back into moments once per
        -- group; hours are truncated as moments (the hour that repeats in autumn stays two).
        SELECT CASE WHEN v_bucket = 'hour' THEN date_trunc('hour', a.created_at, v_zone) END AS hour,
               CASE WHEN v_bucket <> 'hour' THEN date_trunc(v_bucket, a.lt) END AS local_day,
               a.severity, a.type, a.production, a.outcome,
               CASE WHEN a.severity IN ('CRITICAL', 'HIGH') THEN
                   CASE WHEN a.lt::time >= '22:00' OR a.lt::time < '08:00' THEN 'sleep_hours'
                        WHEN date_part('isodow', a.lt) <= 5 AND a.lt::time >= '09:00' AND a.lt::time < '18:00' THEN 'business_hours'
                        ELSE 'off_hours' END END AS hour_class,
               CASE WHEN a.severity = 'CRITICAL' THEN
                   CASE WHEN a.tta <= 300 THEN 'in_time'
                        WHEN a.tta IS NOT NULL OR a.created_at <= v_asof - interval '5 minutes' THEN 'late'
                        ELSE 'pending' END END AS critical,
               count(*) AS n, sum(a.occurrences) AS occurrences
          FROM a
         GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
    ),
    prev AS MATERIALIZED (
        SELECT m.severity, m.type, count(*) AS n
          FROM guardian.monitoring_alerts AS m
         WHERE m.created_at >= p_from - v_span AND m.created_at < p_from
           AND (p_environment IS NULL OR m.environment = p_environment)
         GROUP BY m.severity, m.type
    ),
    counts AS MATERIALIZED (
        SELECT coalesce(g.hour, g.local_day AT TIME ZONE v_zone) AS bucket, g.severity, g.type,
               sum(g.n) AS n, sum(g.occurrences) AS occurrences
          FROM g GROUP BY 1, g.severity, g.type
    ),
    buckets AS MATERIALIZED (
        SELECT * FROM guardian._report_buckets(p_from, p_to, v_bucket, v_zone)
    ),
    contam AS MATERIALIZED (
        -- By type first, so that the (type, created_at) index reads only these alerts.
        SELECT m.table_name, coalesce(m.metadata, '{}') AS metadata,
               coalesce(m.metadata -> 'session', m.context, '{}') AS who,
               coalesce(CASE WHEN m.metadata ->> 'affected_records' ~ '^[0-9]+$'
                             THEN (m.metadata ->> 'affected_records')::bigint END, 1) AS records
          FROM unnest(v_contam) AS t(type)
         CROSS JOIN LATERAL (
                SELECT m.* FROM guardian.monitoring_alerts AS m
                 WHERE m.type = t.type AND m.created_at >= p_from AND m.created_at < p_to
                   AND (p_environment IS NULL OR m.environment = p_environment)) AS m
    ),
    activity AS MATERIALIZED (
        SELECT m.table_name, t.type, count(*) AS n
          FROM unnest(v_active) AS t(type)
         CROSS JOIN LATERAL (
                SELECT m.table_name FROM guardian.monitoring_alerts AS m
                 WHERE m.type = t.type AND m.created_at >= p_from AND m.created_at < p_to AND m.table_name IS NOT NULL
                   AND (p_environment IS NULL OR m.environment = p_environment)) AS m
         GROUP BY m.table_name, t.type
    ),
    -- Times to acknowledge (or close) and to resolve, per severity.
    response AS MATERIALIZED (
        SELECT r.severity, jsonb_build_object(
                   'alerts', r.alerts, 'acknowledged', r.acknowledged, 'resolved', r.resolved,
                   'tta_median_s', round(r.tta[1]::numeric, 1), 'tta_p90_s', round(r.tta[2]::numeric, 1),
                   'ttr_median_s', round(r.ttr[1]::numeric, 1), 'ttr_p90_s', round(r.ttr[2]::numeric, 1)) AS stats
          FROM (SELECT a.severity, count(*) AS alerts, count(a.tta) AS acknowledged, count(a.ttr) AS resolved,
                       percentile_cont(ARRAY[0.5, 0.9]) WITHIN GROUP (ORDER BY a.tta) AS tta,
                       percentile_cont(ARRAY[0.5, 0.9]) WITHIN GROUP (ORDER BY a.ttr) AS ttr
                  FROM a GROUP BY a.severity) AS r
    ),
    backlog AS MATERIALIZED (
        SELECT m.severity, m.acknowledged_at, date_part('epoch', v_asof - m.created_at)::double precision AS age
          FROM guardian.monitoring_alerts AS m
         WHERE coalesce(m.resolved_at, 'infinity'::timestamptz) > v_asof AND m.created_at < v_asof
           AND (p_environment IS NULL OR m.environment = p_environment)
    ),
    drift AS MATERIALIZED (
        -- The stretches of the period during which an environment-drift alert was open, merged.
        SELECT greatest(m.created_at, p_from) AS s, least(coalesce(m.resolved_at, v_asof), p_to) AS e,
               m.created_at >= p_from AS raised
          FROM guardian.monitoring_alerts AS m
         WHERE m.type = 'ENVIRONMENT_DRIFT' AND m.created_at < p_to
           AND coalesce(m.resolved_at, 'infinity'::timestamptz) > p_from
           AND (p_environment IS NULL OR m.environment = p_environment)
    ),
    drift_merged AS (
        SELECT min(x.s) AS s, max(x.e) AS e
          FROM (SELECT d.s, d.e, sum(d.starts) OVER (ORDER BY d.s, d.e) AS island
                  FROM (SELECT d.s, d.e,
                               CASE WHEN d.s <= max(d.e) OVER (ORDER BY d.s, d.e ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
                                    THEN 0 ELSE 1 END AS starts
                          FROM drift AS d WHERE d.e > d.s) AS d) AS x
         GROUP BY x.island
    ),
    relay AS MATERIALIZED (
        SELECT r.channel, count(*) AS messages,
               count(*) FILTER (WHERE r.status = 'delivered') AS delivered,
               count(*) FILTER (WHERE (r.status = 'delivered' AND r.attempts > 1) OR r.status = 'retry') AS retried,
               count(*) FILTER (WHERE r.status = 'dead') AS dead,
               count(*) FILTER (WHERE r.status IN ('sending', 'retry')) AS undelivered
          FROM guardian.relay_messages AS r
         WHERE r.created_at >= p_from AND r.created_at < p_to AND v_here
         GROUP BY r.channel
    ),
    records AS MATERIALIZED (
        -- Contaminated records found (warn mode, scans) and rejected (strict mode), by bucket.
        SELECT date_trunc(v_bucket, f.first_at, v_zone) AS bucket, count(*) AS n
          FROM (SELECT min(f.created_at) AS first_at
                  FROM guardian.findings AS f
                 WHERE f.created_at >= p_from AND f.created_at < p_to AND v_here
                 GROUP BY f.relid, coalesce(f.record_id, f.id::text)) AS f
         GROUP BY 1
        UNION ALL
        SELECT c.bucket, c.n FROM counts AS c WHERE c.type = 'STRICT_MODE_REJECTION'
    ),
    changes AS MATERIALIZED (
        SELECT date_trunc(v_bucket, c.occurred_at, v_zone) AS bucket, count(*) AS n
          FROM guardian.schema_changes AS c
         WHERE c.occurred_at >= p_from AND c.occurred_at < p_to
           AND (p_environment IS NULL OR c.environment = p_environment)
         GROUP BY 1
    ),
    points AS (
        SELECT 'total' AS kind, '' AS key, c.bucket, sum(c.n) AS n FROM counts AS c GROUP BY c.bucket
        UNION ALL SELECT 'severity', c.severity, c.bucket, sum(c.n) FROM counts AS c GROUP BY c.severity, c.bucket
        UNION ALL SELECT 'type', c.type, c.bucket, sum(c.n) FROM counts AS c GROUP BY c.type, c.bucket
        UNION ALL SELECT 'records', '', r.bucket, sum(r.n) FROM records AS r GROUP BY r.bucket
        UNION ALL SELECT 'changes', '', c.bucket, c.n FROM changes AS c
    ),
    series AS (
        -- One count per bucket, zeros included, for every series (every severity always).
        SELECT k.kind, k.key, jsonb_agg(coalesce(p.n, 0) ORDER BY b.idx) AS series
          FROM (SELECT DISTINCT x.kind, x.key FROM points AS x WHERE x.kind = 'type'
                UNION ALL SELECT 'severity', s.sev FROM unnest(v_sevs) AS s(sev)
                UNION ALL VALUES ('total', ''), ('records', ''), ('changes', '')) AS k(kind, key)
         CROSS JOIN buckets AS b
          LEFT JOIN points AS p ON p.kind = k.kind AND p.key = k.key AND p.bucket = b.starts_at
         GROUP BY k.kind, k.key
    ),
    facets AS (
        SELECT 'rules' AS facet, c.metadata ->> 'rule' AS value, c.records FROM contam AS c
        UNION ALL SELECT 'tables', c.table_name, c.records FROM contam AS c
        UNION ALL SELECT 'columns', c.table_name || '.' || col, c.records
                    FROM contam AS c,
                         jsonb_array_elements_text(CASE WHEN jsonb_typeof(c.metadata -> 'columns') = 'array' THEN c.metadata -> 'columns'
                                                        WHEN c.metadata ? 'column' THEN jsonb_build_array(c.metadata -> 'column')
                                                        ELSE '[]' END) AS col
        UNION ALL SELECT 'roles', c.who ->> 'session_user', c.records FROM contam AS c
        UNION ALL SELECT 'applications', c.who ->> 'application_name', c.records FROM contam AS c
        UNION ALL SELECT 'client_addresses', coalesce(c.who ->> 'client_addr', CASE WHEN c.who ? 'backend_pid' THEN 'local' END),
                         c.records FROM contam AS c
    ),
    tops AS (
        -- The ten most frequent values of each facet (by alerts, then records, then name).
        SELECT t.facet, jsonb_agg(jsonb_build_object('value', t.value, 'alerts', t.alerts, 'records', t.records)
                                  ORDER BY t.rank) AS items
          FROM (SELECT f.facet, f.value, count(*) AS alerts, sum(f.records) AS records,
                       row_number() OVER (PARTITION BY f.facet ORDER BY count(*) DESC, sum(f.records) DESC, f.value) AS rank
                  FROM facets AS f WHERE f.value IS NOT NULL
                 GROUP BY f.facet, f.value) AS t
         WHERE t.rank <= 10
         GROUP BY t.facet
    ),
    facts AS (
        SELECT (SELECT coalesce(sum(g.n), 0) FROM g) AS total,
               (SELECT coalesce(sum(g.occurrences), 0) FROM g) AS occurrences,
               (SELECT coalesce(sum(p.n), 0) FROM prev AS p) AS previous,
               (SELECT coalesce(sum(g.n), 0) FROM g WHERE g.outcome IS NOT NULL) AS with_outcome,
               (SELECT coalesce(sum(g.n), 0) FROM g WHERE g.outcome = 'false_positive') AS false_positives,
               (SELECT coalesce(sum(g.n), 0) FROM g WHERE g.critical IN ('in_time', 'late')) AS critical_due,
               (SELECT coalesce(sum(g.n), 0) FROM g WHERE g.critical = 'in_time') AS critical_in_time,
               (SELECT coalesce(sum(g.n), 0) FROM g
                 WHERE g.type = 'TEST_DATA_CONTAMINATION' AND g.production
                   AND g.outcome IS DISTINCT FROM 'false_positive' AND g.outcome IS DISTINCT FROM 'expected') AS production_events,
               (SELECT coalesce(sum(g.n), 0) FROM g WHERE g.type = 'STRICT_MODE_REJECTION' AND g.production) AS production_blocked,
               (SELECT coalesce(sum(date_part('epoch', d.e - d.s)), 0) FROM drift_merged AS d) AS drift_seconds,
               (SELECT count(*) FROM drift AS d WHERE d.raised) AS drift_alerts,
               (SELECT j.last_ok_at FROM guardian.jobs AS j WHERE j.name = 'drift_check') AS drift_checked_at,
               date_part('epoch', least(p_to, greatest(v_asof, p_from)) - p_from)::double precision AS measured_seconds,
               (SELECT coalesce(sum(r.messages), 0) FROM relay AS r) AS messages,
               (SELECT coalesce(sum(r.delivered), 0) FROM relay AS r) AS delivered,
               (SELECT coalesce(sum(r.retried), 0) FROM relay AS r) AS retried,
               (SELECT coalesce(sum(r.dead), 0) FROM relay AS r) AS dead,
               (SELECT coalesce(sum(r.undelivered), 0) FROM relay AS r) AS undelivered
    )
    SELECT jsonb_build_object(
        'period', jsonb_build_object(
            'from', p_from, 'to', p_to, 'environment', p_environment, 'time_zone', v_zone, 'bucket', v_bucket,
            'previous_from', p_from - v_span, 'previous_to', p_from, 'as_of', v_asof,
            'database', current_database(), 'guardian_environment', guardian.current_environment(),
            'generated_at', now()),
        'totals', (
            SELECT jsonb_build_object(
                'alerts', f.total, 'occurrences', f.occurrences, 'previous', f.previous,
                'change', f.total - f.previous,
                'change_pct', CASE WHEN f.previous > 0 THEN round(100.0 * (f.total - f.previous) / f.previous, 1) END,
                'by_severity', (SELECT jsonb_object_agg(s.sev, jsonb_build_object(
                                        'alerts', (SELECT coalesce(sum(c.n), 0) FROM counts AS c WHERE c.severity = s.sev),
                                        'previous', (SELECT coalesce(sum(p.n), 0) FROM prev AS p WHERE p.severity = s.sev)))
                                  FROM unnest(v_sevs) AS s(sev)))
              FROM facts AS f),
        'breakdown', (
            SELECT coalesce(jsonb_agg(jsonb_build_object(
                       'severity', x.severity, 'type', x.type, 'alerts', x.alerts, 'occurrences', x.occurrences,
                       'previous', x.previous, 'change', x.alerts - x.previous)
                       ORDER BY array_position(v_sevs, x.severity), x.alerts DESC, x.type), '[]')
              FROM (SELECT coalesce(c.severity, p.severity) AS severity, coalesce(c.type, p.type) AS type,
                           coalesce(c.alerts, 0) AS alerts, coalesce(c.occurrences, 0) AS occurrences,
                           coalesce(p.n, 0) AS previous
                      FROM (SELECT c.severity, c.type, sum(c.n) AS alerts, sum(c.occurrences) AS occurrences
                              FROM counts AS c GROUP BY c.severity, c.type) AS c
                      FULL JOIN prev AS p ON p.severity = c.severity AND p.type = c.type) AS x),
        'patterns', jsonb_build_object(
            'contamination_alerts', (SELECT count(*) FROM contam),
            'contamination_records', (SELECT coalesce(sum(c.records), 0) FROM contam AS c),
            'rules', coalesce((SELECT t.items FROM tops AS t WHERE t.facet = 'rules'), '[]'),
            'tables', coalesce((SELECT t.items FROM tops AS t WHERE t.facet = 'tables'), '[]'),
            'columns', coalesce((SELECT t.items FROM tops AS t WHERE t.facet = 'columns'), '[]'),
            'roles', coalesce((SELECT t.items FROM tops AS t WHERE t.facet = 'roles'), '[]'),
            'applications', coalesce((SELECT t.items FROM tops AS t WHERE t.facet = 'applications'), '[]'),
            'client_addresses', coalesce((SELECT t.items FROM tops AS t WHERE t.facet = 'client_addresses'), '[]'),
            'activity_tables', (
                SELECT coalesce(jsonb_agg(jsonb_build_object('value', t.table_name, 'alerts', t.n, 'types', t.types)
                                          ORDER BY t.n DESC, t.table_name), '[]')
                  FROM (SELECT y.table_name, sum(y.n) AS n, jsonb_object_agg(y.type, y.n) AS types
                          FROM activity AS y
                         GROUP BY y.table_name
                         ORDER BY sum(y.n) DESC, y.table_name
                         LIMIT 10) AS t)),
        'response', jsonb_build_object(
            'by_severity', (
                SELECT jsonb_object_agg(s.sev, coalesce(r.stats, jsonb_build_object(
                           'alerts', 0, 'acknowledged', 0, 'resolved', 0, 'tta_median_s', NULL, 'tta_p90_s', NULL,
                           'ttr_median_s', NULL, 'ttr_p90_s', NULL)))
                  FROM unnest(v_sevs) AS s(sev)
                  LEFT JOIN response AS r ON r.severity = s.sev),
            'critical_acknowledged_within_5m', (
                SELECT jsonb_build_object('due', f.critical_due, 'in_time', f.critical_in_time,
                                          'share_pct', CASE WHEN f.critical_due > 0
                                                            THEN round(100.0 * f.critical_in_time / f.critical_due, 1) END)
                  FROM facts AS f),
            -- When the serious alerts came (PagerDuty's interruptions): business hours are
            -- 09:00-18:00 on weekdays, sleep hours 22:00-08:00 every day, the rest off hours,
            -- in the report's time zone.
            'interruptions', (
                SELECT jsonb_build_object(
                           'business_hours', coalesce(sum(g.n) FILTER (WHERE g.hour_class = 'business_hours'), 0),
                           'off_hours', coalesce(sum(g.n) FILTER (WHERE g.hour_class = 'off_hours'), 0),
                           'sleep_hours', coalesce(sum(g.n) FILTER (WHERE g.hour_class = 'sleep_hours'), 0))
                  FROM g),
            'backlog', (
                SELECT jsonb_build_object(
                           'as_of', v_asof,
                           'open', count(*),
                           'unacknowledged', count(*) FILTER (WHERE b.acknowledged_at IS NULL),
                           'by_severity', (SELECT jsonb_object_agg(s.sev, (SELECT count(*) FROM backlog AS x WHERE x.severity = s.sev))
                                             FROM unnest(v_sevs) AS s(sev)),
                           'oldest_age_s', round(max(b.age)::numeric, 1),
                           'median_age_s', round(percentile_cont(0.5) WITHIN GROUP (ORDER BY b.age)::numeric, 1))
                  FROM backlog AS b)),
        'trends', jsonb_build_object(
            'bucket', v_bucket,
            'labels', (SELECT coalesce(jsonb_agg(b.label ORDER BY b.idx), '[]') FROM buckets AS b),
            'starts', (SELECT coalesce(jsonb_agg(b.starts_at ORDER BY b.idx), '[]') FROM buckets AS b),
            'total', (SELECT x.series FROM series AS x WHERE x.kind = 'total'),
            'by_severity', (SELECT jsonb_object_agg(x.key, x.series) FROM series AS x WHERE x.kind = 'severity'),
            'by_type', (SELECT coalesce(jsonb_object_agg(x.key, x.series), '{}') FROM series AS x WHERE x.kind = 'type'),
            'contamination_records', (SELECT x.series FROM series AS x WHERE x.kind = 'records'),
            'schema_changes', (SELECT x.series FROM series AS x WHERE x.kind = 'changes')),
        'delivery', (
            SELECT jsonb_build_object(
                       'messages', f.messages, 'delivered', f.delivered, 'retried', f.retried,
                       'dead_lettered', f.dead, 'undelivered', f.undelivered,
                       'by_channel', (SELECT coalesce(jsonb_object_agg(r.channel, jsonb_build_object(
                                                 'delivered', r.delivered, 'retried', r.retried, 'dead_lettered', r.dead)), '{}')
                                        FROM relay AS r))
              FROM facts AS f),
        'success_metrics', (
            SELECT jsonb_build_array(
                jsonb_build_object(
                    'name', 'contamination_events', 'label', 'Contamination events in production',
                    'target', 'zero', 'value', f.production_events, 'unit', 'alerts',
                    'status', CASE WHEN p_environment IS NOT NULL AND p_environment <> 'production' THEN 'not_applicable'
                                   WHEN f.production_events = 0 THEN 'met' ELSE 'missed' END,
                    'detail', format('%s test-data alert(s) let through in production (not marked false positive or expected); %s write(s) rejected by strict mode',
                                     f.production_events, f.production_blocked)),
                jsonb_build_object(
                    'name', 'critical_response', 'label', 'Critical alerts acknowledged within 5 minutes',
                    'target', '100%', 'unit', 'percent',
                    'value', CASE WHEN f.critical_due > 0 THEN round(100.0 * f.critical_in_time / f.critical_due, 1) END,
                    'status', CASE WHEN f.critical_due = 0 THEN 'met' WHEN f.critical_in_time = f.critical_due THEN 'met' ELSE 'missed' END,
                    'detail', format('%s of %s critical alert(s) acknowledged or resolved within 5 minutes', f.critical_in_time, f.critical_due)),
                jsonb_build_object(
                    'name', 'false_positive_rate', 'label', 'False-positive rate',
                    'target', '< 5%', 'unit', 'percent',
                    'value', CASE WHEN f.with_outcome > 0 THEN round(100.0 * f.false_positives / f.with_outcome, 1) END,
                    'status', CASE WHEN f.with_outcome = 0 THEN 'unknown'
                                   WHEN 100.0 * f.false_positives / f.with_outcome < 5 THEN 'met' ELSE 'missed' END,
                    'detail', format('%s false positive(s) among %s alert(s) resolved with an outcome (%s without one)',
                                     f.false_positives, f.with_outcome, f.total - f.with_outcome)),
                jsonb_build_object(
                    'name', 'schema_consistency', 'label', 'Schema consistency across environments',
                    'target', '100%', 'unit', 'percent',
                    'value', CASE WHEN f.drift_checked_at IS NULL OR f.measured_seconds <= 0 THEN NULL
                                  ELSE round((100.0 * (1 - f.drift_seconds / f.measured_seconds))::numeric, 2) END,
                    'status', CASE WHEN f.drift_checked_at IS NULL THEN 'unknown'
                                   WHEN f.drift_seconds = 0 AND f.drift_alerts = 0 THEN 'met' ELSE 'missed' END,
                    'detail', CASE WHEN f.drift_checked_at IS NULL THEN 'the drift_check job has never run here'
                                   ELSE format('%s environment-drift alert(s); drift open %s of the period', f.drift_alerts,
                                               justify_interval(make_interval(secs => round(f.drift_seconds)))) END),
                jsonb_build_object(
                    'name', 'alert_delivery', 'label', 'Alerts delivered by the relay',
                    'target', 'no dead letters', 'unit', 'messages', 'value', f.dead,
                    'status', CASE WHEN f.dead = 0 THEN 'met' ELSE 'missed' END,
                    'detail', format('%s delivered, %s retried, %s dead-lettered, %s still undelivered',
                                     f.delivered, f.retried, f.dead, f.undelivered)))
              FROM facts AS f))
      INTO v_result;
    RETURN v_result || jsonb_build_object(
        'met', NOT jsonb_path_exists(v_result, '$.success_metrics[*] ? (@.status == "missed")'),
        'anomalies', guardian._report_anomalies(p_from, p_to, v_here));
END
$$;
COMMENT ON FUNCTION guardian.report(timestamptz, timestamptz, text, text) IS
    'The alert history of a period as JSON: totals and the severity x type breakdown against the previous period, common patterns behind contamination and activity alerts, times to acknowledge and resolve per severity with the backlog, daily (hourly up to two days) trends in the time zone, the relay''s delivery record, the success metrics with their targets (met is false when one is missed) and the anomalies the detector found.';

-- Alert counts over time for charts: one row per bucket, severity and type that has alerts,
-- and one row with zeros (severity and type NULL) for each bucket that has none.
CREATE FUNCTION guardian.alert_timeseries(
    p_from timestamptz, p_to timestamptz, p_bucket text DEFAULT 'day', p_environment text DEFAULT NULL,
    p_type text DEFAULT NULL, p_severity text DEFAULT NULL, p_time_zone text DEFAULT NULL)
RETURNS TABLE (bucket_start timestamptz, bucket_label text, severity text, type text, alerts bigint, occurrences bigint)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    v_zone   text;
    v_bucket text := lower(btrim(coalesce(p_bucket, 'day')));
BEGIN
    PERFORM guardian._report_check(p_from, p_to, p_environment);
    v_zone := guardian._report_zone(p_time_zone);
    IF v_bucket NOT IN ('hour', 'day', 'week', 'month') THEN
        RAISE EXCEPTION 'unknown bucket %', quote_literal(p_bucket)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use hour, day, week or month.';
    END IF;
    IF v_bucket = 'hour' AND p_to - p_from > interval '93 days' THEN
        RAISE EXCEPTION 'hourly buckets over % are too many to draw', p_to - p_from
            USING ERRCODE = 'program_limit_exceeded', HINT = 'Use day, week or month for periods over 93 days.';
    END IF;
    IF p_severity IS NOT NULL AND upper(p_severity) NOT IN ('CRITICAL', 'HIGH', 'MEDIUM', 'LOW', 'INFO') THEN
        RAISE EXCEPTION 'unknown severity %', quote_literal(p_severity)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use CRITICAL, HIGH, MEDIUM, LOW or INFO.';
    END IF;
    RETURN QUERY
    WITH b AS MATERIALIZED (SELECT * FROM guardian._report_buckets(p_from, p_to, v_bucket, v_zone)),
         c AS MATERIALIZED (
             SELECT date_trunc(v_bucket, m.created_at, v_zone) AS starts_at, m.severity, m.type,
                    count(*) AS alerts, sum(m.occurrences)::bigint AS occurrences
               FROM guardian.monitoring_alerts AS m
              WHERE m.created_at >= p_from AND m.created_at < p_to
                AND (p_environment IS NULL OR m.environment = p_environment)
                AND (p_type IS NULL OR m.type = upper(btrim(p_type)))
                AND (p_severity IS NULL OR m.severity = upper(p_severity))
              GROUP BY 1, 2, 3)
    SELECT b.starts_at, b.label, c.severity, c.type, coalesce(c.alerts, 0), coalesce(c.occurrences, 0)
      FROM b LEFT JOIN c ON c.starts_at = b.starts_at
     ORDER BY b.idx, array_position(ARRAY['CRITICAL', 'HIGH', 'MEDIUM', 'LOW', 'INFO'], c.severity), c.type;
END
$$;
COMMENT ON FUNCTION guardian.alert_timeseries(timestamptz, timestamptz, text, text, text, text, text) IS
    'Alerts per bucket (hour, day, week or month in the time zone) and severity and type, for charts; a bucket without alerts is one row of zeros with severity and type NULL.';

-- The digest: the report of the last week (report.digest_days), raised as one REPORT_DIGEST
-- alert that carries the whole report, so that the relay sends it like any alert: the HTML
-- report by email, a short summary to Slack, the JSON to webhooks (route the type where it
-- should go). Off until enabled: SELECT guardian.set_job('report_digest', p_enabled => true);
CREATE FUNCTION guardian.report_digest(p_to timestamptz DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_to     timestamptz := coalesce(p_to, now());
    v_days   numeric := guardian.param('report.digest_days');
    v_zone   text := coalesce(guardian.setting('report.time_zone') #>> '{}', 'UTC');
    v_from   timestamptz := v_to - make_interval(days => v_days::integer);
    v_report jsonb;
    v_missed text[];
    v_alert  uuid;
BEGIN
    v_report := guardian.report(v_from, v_to, NULL, v_zone);
    v_missed := ARRAY(SELECT m ->> 'label' FROM jsonb_array_elements(v_report -> 'success_metrics') AS m
                       WHERE m ->> 'status' = 'missed');
    -- The previous digest has done its job.
    PERFORM guardian.resolve_alert(a.id, 'superseded by the next digest', 'expected')
       FROM guardian.monitoring_alerts AS a
      WHERE a.type = 'REPORT_DIGEST' AND a.resolved_at IS NULL;
    v_alert := guardian.raise_alert(
        'REPORT_DIGEST', CASE WHEN cardinality(v_missed) > 0 THEN 'MEDIUM' ELSE 'INFO' END,
        format('%s report, %s to %s: %s alert(s) (%s before); %s',
               guardian.current_environment(),
               to_char(v_from AT TIME ZONE v_zone, 'YYYY-MM-DD'), to_char(v_to AT TIME ZONE v_zone, 'YYYY-MM-DD'),
               v_report #>> '{totals,alerts}', v_report #>> '{totals,previous}',
               CASE WHEN cardinality(v_missed) = 0 THEN 'every success metric met'
                    ELSE format('missed: %s', array_to_string(v_missed, ', ')) END),
        NULL, NULL,
        jsonb_build_object('report', v_report, 'from', v_from, 'to', v_to, 'time_zone', v_zone,
                           'missed', to_jsonb(v_missed)),
        md5(concat_ws('|', 'REPORT_DIGEST', guardian.current_environment(), v_from::text, v_to::text)));
    RETURN format('digest %s: %s alert(s), %s missed metric(s)', v_alert, v_report #>> '{totals,alerts}', cardinality(v_missed));
END
$$;
COMMENT ON FUNCTION guardian.report_digest(timestamptz) IS
    'Raise the REPORT_DIGEST alert carrying guardian.report() of the last report.digest_days days (in the report.time_zone setting, default UTC) for the relay to send; closes the previous digest. Run weekly by the report_digest job once enabled.';

INSERT INTO guardian.parameters (name, default_value, min_value, max_value, unit, description, not_above) VALUES
    ('report.digest_days', 7, 1, 366, 'days', 'Days the report digest covers, up to the moment it runs', NULL);

INSERT INTO guardian.jobs (name, schedule, command, description, max_lag, builtin, enabled)
VALUES ('report_digest', '0 8 * * 1', 'SELECT guardian.report_digest()',
        'Raise the weekly REPORT_DIGEST alert (the report of the last week) for the relay; off until enabled',
        '8 days', true, false);

-- >>> sql/99_finish: owners and grants of the new objects, as a fresh install makes them
ALTER FUNCTION guardian.resolve_alert(uuid, text, text) OWNER TO guardian_owner;
ALTER FUNCTION guardian.report(timestamptz, timestamptz, text, text) OWNER TO guardian_owner;
ALTER FUNCTION guardian.alert_timeseries(timestamptz, timestamptz, text, text, text, text, text) OWNER TO guardian_owner;
REVOKE EXECUTE ON FUNCTION guardian._check_outcome(text), guardian.resolve_alert(uuid, text, text),
    guardian._report_zone(text), guardian._report_check(timestamptz, timestamptz, text),
    guardian._report_buckets(timestamptz, timestamptz, text, text), guardian._report_types(text),
    guardian.report(timestamptz, timestamptz, text, text),
    guardian.alert_timeseries(timestamptz, timestamptz, text, text, text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION guardian._check_outcome(text), guardian.resolve_alert(uuid, text, text),
    guardian._report_zone(text), guardian._report_check(timestamptz, timestamptz, text),
    guardian._report_buckets(timestamptz, timestamptz, text, text), guardian._report_types(text),
    guardian.report(timestamptz, timestamptz, text, text),
    guardian.alert_timeseries(timestamptz, timestamptz, text, text, text, text, text) TO guardian_owner;
ALTER FUNCTION guardian.report_digest(timestamptz) OWNER TO guardian_owner;
REVOKE EXECUTE ON FUNCTION guardian.report_digest(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION guardian.report_digest(timestamptz) TO guardian_owner, guardian_admin;
GRANT EXECUTE ON FUNCTION guardian.resolve_alert(uuid, text, text) TO guardian_admin;
GRANT EXECUTE ON FUNCTION guardian.report(timestamptz, timestamptz, text, text),
    guardian.alert_timeseries(timestamptz, timestamptz, text, text, text, text, text)
    TO guardian_reader;

-- >>> sql/50_health/30_storage.sql: sequence usage, shared by the check and the metric history
-- Each sequence's position against its limit: its own bound or, when it feeds a narrower
-- column (a bigint sequence behind an integer id), that column type's. Only sequences the
-- caller may read have a position.
CREATE FUNCTION guardian._sequence_usage()
RETURNS TABLE (seq text, last_value bigint, seq_max bigint, start_from bigint, limit_value bigint, col text, pct numeric)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.*, round(100.0 * abs(r.last_value - r.start_from) / nullif(abs(r.limit_value - r.start_from), 0), 2) AS pct
    FROM (SELECT c.oid::regclass::text AS seq, s.last_value, s.max_value AS seq_max,
                 CASE WHEN s.increment_by > 0 THEN s.min_value ELSE s.max_value END AS start_from,
                 CASE WHEN s.increment_by > 0
                      THEN least(s.max_value, CASE a.atttypid WHEN 'int4'::regtype THEN 2147483647
                                                               WHEN 'int2'::regtype THEN 32767 END)
                      ELSE greatest(s.min_value, CASE a.atttypid WHEN 'int4'::regtype THEN -2147483648
                                                                  WHEN 'int2'::regtype THEN -32768 END) END AS limit_value,
                 CASE WHEN a.attname IS NOT NULL THEN format('%s.%I', d.refobjid::regclass, a.attname) END AS col
            FROM pg_catalog.pg_sequences AS s
            JOIN pg_catalog.pg_class AS c
              ON c.relname = s.sequencename AND c.relnamespace = s.schemaname::regnamespace
            LEFT JOIN pg_catalog.pg_depend AS d
              ON d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid
             AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.deptype IN ('a', 'i')
            LEFT JOIN pg_catalog.pg_attribute AS a
              ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
           WHERE s.last_value IS NOT NULL AND NOT s.cycle) AS r
$$;
COMMENT ON FUNCTION guardian._sequence_usage() IS
    'Internal: each readable sequence''s last value, limit (the narrower of its own and its column type''s) and the share of its range used.';

CREATE OR REPLACE FUNCTION guardian._check_sequences()
RETURNS SETOF guardian.finding
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_warn       numeric := guardian.param('health.sequences.warn_pct');
    v_crit       numeric := guardian.param('health.sequences.crit_pct');
    v_unreadable text[];
BEGIN
    -- A sequence's position is only visible with SELECT or USAGE on it; say which are hidden.
    SELECT array_agg(c.oid::regclass::text ORDER BY 1) INTO v_unreadable
      FROM pg_catalog.pg_class AS c
     WHERE c.relkind = 'S'
       AND c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
       AND CASE WHEN c.relkind = 'S'
                THEN NOT has_sequence_privilege(c.oid, 'SELECT') AND NOT has_sequence_privilege(c.oid, 'USAGE')
                ELSE false END;
    IF v_unreadable IS NOT NULL THEN
        RETURN QUERY SELECT (ROW(NULL, 'CHECK_DEGRADED', 'LOW', NULL, NULL,
            format('%s sequences are not readable by %s and were not checked: %s', cardinality(v_unreadable),
                   CURRENT_USER, array_to_string(v_unreadable[1:10], ', ')),
            format('GRANT SELECT ON SEQUENCE %s TO %I; (or GRANT SELECT ON ALL SEQUENCES IN SCHEMA ... TO %I)',
                   array_to_string(v_unreadable[1:10], ', '), CURRENT_USER, CURRENT_USER),
            jsonb_build_object('unreadable', to_jsonb(v_unreadable)), NULL)::guardian.finding).*;
    END IF;
    -- The limit is the sequence's own bound or, when it feeds a narrower column (a bigint
    -- sequence behind an integer id), that column type's.
    RETURN QUERY
    SELECT (ROW('sequences', 'SEQUENCE_EXHAUSTION',
               CASE WHEN q.pct >= v_crit THEN 'HIGH' ELSE 'MEDIUM' END, q.seq, NULL,
               format('sequence %s has used %s%% of its range (%s of %s%s)', q.seq, q.pct, q.last_value, q.limit_value,
                      CASE WHEN q.col IS NOT NULL AND q.limit_value < q.seq_max THEN ', limited by column ' || q.col END),
               format('Plan the move before it runs out: ALTER SEQUENCE %s AS bigint MAXVALUE ... and ALTER TABLE ... ALTER COLUMN ... TYPE bigint for its column%s.',
                      q.seq, coalesce(' ' || q.col, '')),
               jsonb_build_object('sequence', q.seq, 'last_value', q.last_value, 'limit', q.limit_value,
                                  'column', q.col, 'used_pct', q.pct, 'warn_pct', v_warn, 'crit_pct', v_crit),
               q.seq)::guardian.finding).*
      FROM guardian._sequence_usage() AS q
     WHERE q.pct >= v_warn;
END
$$;
COMMENT ON FUNCTION guardian._check_sequences() IS
    'Check sequences: sequences that used more than the warning share of their range, bounded by the column type they feed (SEQUENCE_EXHAUSTION).';

-- >>> sql/80_anomaly: metric history
-- Metric history: the series anomaly detection and forecasts learn from. One series is a
-- (metric, subject) pair: writes.insert of dental.patients, connections of this database. The
-- metrics_collect job samples the built-in metrics every 10 minutes; admins add their own
-- (guardian.record_metric, or INSERT into guardian.metric_samples). guardian.metrics says how
-- a metric adds up and how long it is kept; a metric it does not list is a gauge kept with the
-- defaults.

CREATE TABLE guardian.metrics (
    name         text PRIMARY KEY,
    kind         text NOT NULL,
    unit         text NOT NULL,
    description  text NOT NULL,
    builtin      boolean NOT NULL DEFAULT false,
    retention    interval NOT NULL DEFAULT '400 days',
    rollup_after interval NOT NULL DEFAULT '60 days',
    CONSTRAINT metrics_name_chk CHECK (name ~ '^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$' AND length(name) <= 63),
    CONSTRAINT metrics_kind_chk CHECK (kind IN ('count', 'gauge')),
    CONSTRAINT metrics_keep_chk CHECK (rollup_after > interval '0' AND rollup_after <= retention)
);
COMMENT ON TABLE guardian.metrics IS
    'Metrics with a history in guardian.metric_samples: kind count (events per sample, summed when rolled up) or gauge (a level, averaged), unit, how long samples are kept (retention) and after how long they are rolled up to one an hour (rollup_after).';
SELECT pg_catalog.pg_extension_config_dump('guardian.metrics', 'WHERE NOT builtin');

CREATE TABLE guardian.metric_samples (
    metric     text NOT NULL,
    subject    text NOT NULL,
    sampled_at timestamptz NOT NULL,
    value      double precision NOT NULL,
    CONSTRAINT metric_samples_pkey PRIMARY KEY (metric, subject, sampled_at),
    CONSTRAINT metric_samples_finite_chk
        CHECK (value <> 'NaN'::double precision AND value <> 'Infinity'::double precision
               AND value <> '-Infinity'::double precision)
);
COMMENT ON TABLE guardian.metric_samples IS
    'Samples of every series (metric, subject): 10-minute samples from the metrics_collect job, rolled up to one an hour after the metric''s rollup_after and dropped after its retention; admins may insert their own.';
SELECT pg_catalog.pg_extension_config_dump('guardian.metric_samples', '');
CREATE INDEX metric_samples_sampled_at_idx ON guardian.metric_samples (sampled_at);

INSERT INTO guardian.metrics (name, kind, unit, description, builtin) VALUES
    ('writes.insert', 'count', 'rows', 'Rows inserted into a watched table per 10 minutes (subject: the table)', true),
    ('writes.update', 'count', 'rows', 'Rows updated in a watched table per 10 minutes (subject: the table)', true),
    ('writes.delete', 'count', 'rows', 'Rows deleted from a watched table per 10 minutes (subject: the table)', true),
    ('alerts.raised', 'count', 'alerts', 'Alerts raised per 10 minutes (subject: the alert type)', true),
    ('connections', 'gauge', 'connections', 'Client connections to the cluster (subject: this database''s name)', true),
    ('connections.available', 'gauge', 'connections', 'max_connections less the superuser reserve (subject: this database''s name)', true),
    ('database.size', 'gauge', 'bytes', 'Size of this database (subject: its name)', true),
    ('table.size', 'gauge', 'bytes', 'Size of a watched table with its indexes and TOAST (subject: the table)', true),
    ('table.dead_tuples', 'gauge', 'rows', 'Dead rows of a watched table (subject: the table)', true),
    ('sequence.used', 'gauge', 'percent', 'Share of a sequence''s range used, against the narrower of its own and its column''s limit (subject: the sequence)', true),
    ('xid.age', 'gauge', 'transactions', 'Transaction-ID age of this database (datfrozenxid; subject: its name)', true);

CREATE FUNCTION guardian._metric_value_check(p_value double precision)
RETURNS double precision
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_value IS NULL OR p_value = 'NaN'::double precision OR p_value IN ('Infinity', '-Infinity') THEN
        RAISE EXCEPTION 'metric value % is not a finite number', coalesce(p_value::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Record a finite value; leave a sample out rather than store NaN or infinity.';
    END IF;
    RETURN p_value;
END
$$;
COMMENT ON FUNCTION guardian._metric_value_check(double precision) IS
    'Internal: a finite sample value, or an error naming the value.';

CREATE FUNCTION guardian.record_metric(
    p_metric text, p_subject text, p_value double precision, p_at timestamptz DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_metric IS NULL OR p_metric !~ '^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$' OR length(p_metric) > 63 THEN
        RAISE EXCEPTION 'metric name % is not a lower-case dotted name', quote_nullable(p_metric)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'For example: app.orders.created';
    END IF;
    IF coalesce(btrim(p_subject), '') = '' THEN
        RAISE EXCEPTION 'a sample of % needs a subject', p_metric
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Name what was measured, e.g. a table or a host.';
    END IF;
    INSERT INTO guardian.metric_samples (metric, subject, sampled_at, value)
    VALUES (p_metric, p_subject, coalesce(p_at, now()), guardian._metric_value_check(p_value))
    ON CONFLICT (metric, subject, sampled_at) DO UPDATE SET value = EXCLUDED.value;
END
$$;
COMMENT ON FUNCTION guardian.record_metric(text, text, double precision, timestamptz) IS
    'Record one sample of a series (replacing a sample of the same moment). A metric not in guardian.metrics is a gauge kept with the defaults; describe it with INSERT INTO guardian.metrics.';

-- How long each metric's samples are kept, whole and rolled up: guardian.metrics, or the
-- defaults (a gauge, 400 days, rolled up after 60) for a metric it does not list.
CREATE FUNCTION guardian._metric_keep()
RETURNS TABLE (metric text, kind text, retention interval, rollup_after interval)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.metric, coalesce(m.kind, 'gauge'), coalesce(m.retention, interval '400 days'),
           coalesce(m.rollup_after, interval '60 days')
      FROM (SELECT DISTINCT x.metric FROM guardian.metric_samples AS x) AS s
      LEFT JOIN guardian.metrics AS m ON m.name = s.metric
$$;
COMMENT ON FUNCTION guardian._metric_keep() IS
    'Internal: each recorded metric''s kind, retention and rollup age (defaults for metrics guardian.metrics does not list).';

-- Roll-up: the samples of an hour that has aged past rollup_after become one sample at the
-- start of the hour (counts summed, gauges averaged). Hours up to two days past the age are
-- looked at, so a job that stopped for longer leaves older hours whole (still pruned).
CREATE FUNCTION guardian._metric_retention(p_at timestamptz DEFAULT NULL)
RETURNS TABLE (rolled bigint, dropped bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_at      timestamptz := coalesce(p_at, now());
    v_rolled  bigint;
    v_dropped bigint;
BEGIN
    DELETE FROM guardian.metric_samples AS x
     USING guardian._metric_keep() AS k
     WHERE x.metric = k.metric AND x.sampled_at < v_at - k.retention;
    GET DIAGNOSTICS v_dropped = ROW_COUNT;

    -- First the hour's total (or mean) onto its first moment, then the rest of the hour out.
    INSERT INTO guardian.metric_samples (metric, subject, sampled_at, value)
    SELECT x.metric, x.subject, date_bin('1 hour', x.sampled_at, 'epoch'),
           CASE WHEN min(k.kind) = 'count' THEN sum(x.value) ELSE avg(x.value) END
      FROM guardian.metric_samples AS x
      JOIN guardian._metric_keep() AS k ON k.metric = x.metric
     WHERE x.sampled_at < date_bin('1 hour', v_at - k.rollup_after, 'epoch')
       AND x.sampled_at >= date_bin('1 hour', v_at - k.rollup_after, 'epoch') - interval '2 days'
     GROUP BY x.metric, x.subject, date_bin('1 hour', x.sampled_at, 'epoch')
    HAVING count(*) > 1 OR min(x.sampled_at) <> date_bin('1 hour', min(x.sampled_at), 'epoch')
    ON CONFLICT (metric, subject, sampled_at) DO UPDATE SET value = EXCLUDED.value;
    DELETE FROM guardian.metric_samples AS x
     USING guardian._metric_keep() AS k
     WHERE x.metric = k.metric
       AND x.sampled_at < date_bin('1 hour', v_at - k.rollup_after, 'epoch')
       AND x.sampled_at >= date_bin('1 hour', v_at - k.rollup_after, 'epoch') - interval '2 days'
       AND x.sampled_at <> date_bin('1 hour', x.sampled_at, 'epoch');
    GET DIAGNOSTICS v_rolled = ROW_COUNT;
    -- Verdicts were given to the whole-resolution samples: they go with them.
    DELETE FROM guardian.anomaly_scores AS s
     USING guardian._metric_keep() AS k
     WHERE s.metric = k.metric
       AND s.sampled_at < date_bin('1 hour', v_at - k.rollup_after, 'epoch')
       AND s.sampled_at >= date_bin('1 hour', v_at - k.rollup_after, 'epoch') - interval '2 days';
    RETURN QUERY SELECT v_rolled, v_dropped;
END
$$;
COMMENT ON FUNCTION guardian._metric_retention(timestamptz) IS
    'Internal (metrics_collect, hourly): drop samples past their metric''s retention; roll up those past rollup_after to one an hour (counts summed, gauges averaged), dropping the anomaly verdicts of the samples rolled up.';

-- The built-in metrics, sampled for the 10-minute buckets that ended since the last run (the
-- writes and alerts of a bucket are complete two minutes after it ends, once the activity
-- roll-up has run). Counts of watched tables and alert types are written as zeros too: a quiet
-- bucket is a sample.
CREATE FUNCTION guardian.collect_metrics(p_at timestamptz DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_at      timestamptz := coalesce(p_at, now());
    v_end     timestamptz := date_bin('10 minutes', v_at - interval '2 minutes', 'epoch');
    v_last    timestamptz;
    v_db      text := current_database();
    v_counts  bigint;
    v_gauges  bigint;
    v_rolled  bigint;
    v_dropped bigint;
BEGIN
    -- Counts: every bucket since the last one written (at most a day back), up to v_end.
    SELECT max(s.sampled_at) + interval '10 minutes' INTO v_last
      FROM guardian.metric_samples AS s WHERE s.metric = 'alerts.raised' AND s.subject = '*';
    v_last := greatest(coalesce(v_last, v_end - interval '10 minutes'), v_end - interval '1 day');
    WITH buckets AS (
        SELECT b FROM generate_series(v_last, v_end - interval '10 minutes', interval '10 minutes') AS b
    ), writes AS (
        SELECT w.relid, date_bin('10 minutes', w.minute, 'epoch') AS b,
               sum(w.inserts) AS inserts, sum(w.updates) AS updates, sum(w.deletes) AS deletes
          FROM guardian.activity_windows AS w
         WHERE w.minute >= v_last AND w.minute < v_end
         GROUP BY 1, 2
    ), alerts AS (
        SELECT a.type, date_bin('10 minutes', a.created_at, 'epoch') AS b, count(*) AS n
          FROM guardian.monitoring_alerts AS a
         WHERE a.created_at >= v_last AND a.created_at < v_end
         GROUP BY 1, 2
    ), types AS (
        SELECT DISTINCT a.type FROM alerts AS a
        UNION
        SELECT s.subject FROM guardian.metric_samples AS s
         WHERE s.metric = 'alerts.raised' AND s.subject <> '*' AND s.sampled_at > v_end - interval '7 days'
    ), samples AS (
        SELECT m.metric, t.relid::text AS subject, b.b AS sampled_at,
               coalesce(CASE m.metric WHEN 'writes.insert' THEN w.inserts WHEN 'writes.update' THEN w.updates
                                      ELSE w.deletes END, 0)::double precision AS value
          FROM guardian.watched_tables AS t
         CROSS JOIN buckets AS b
         CROSS JOIN (VALUES ('writes.insert'), ('writes.update'), ('writes.delete')) AS m(metric)
          LEFT JOIN writes AS w ON w.relid = t.relid AND w.b = b.b
        UNION ALL
        SELECT 'alerts.raised', y.type, b.b, coalesce(a.n, 0)
          FROM types AS y CROSS JOIN buckets AS b
          LEFT JOIN alerts AS a ON a.type = y.type AND a.b = b.b
        UNION ALL
        -- '*': every type together, and the mark of the last bucket written.
        SELECT 'alerts.raised', '*', b.b, coalesce((SELECT sum(a.n) FROM alerts AS a WHERE a.b = b.b), 0)
          FROM buckets AS b
    )
    INSERT INTO guardian.metric_samples (metric, subject, sampled_at, value)
    SELECT s.metric, s.subject, s.sampled_at, s.value FROM samples AS s
    ON CONFLICT (metric, subject, sampled_at) DO UPDATE SET value = EXCLUDED.value;
    GET DIAGNOSTICS v_counts = ROW_COUNT;

    -- Gauges: their level now, at the start of the current bucket.
    INSERT INTO guardian.metric_samples (metric, subject, sampled_at, value)
    SELECT g.metric, g.subject, v_end, g.value
      FROM (SELECT 'connections' AS metric, v_db AS subject,
                   (SELECT count(*) FROM pg_catalog.pg_stat_activity AS a
                     WHERE a.backend_type = 'client backend')::double precision AS value
            UNION ALL
            SELECT 'connections.available', v_db,
                   (current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int)::double precision
            UNION ALL
            SELECT 'database.size', v_db, pg_database_size(v_db)::double precision
            UNION ALL
            SELECT 'xid.age', v_db, age(d.datfrozenxid)::double precision
              FROM pg_catalog.pg_database AS d WHERE d.datname = v_db
            UNION ALL
            SELECT 'table.size', t.relid::text, pg_total_relation_size(t.relid)::double precision
              FROM guardian.watched_tables AS t
            UNION ALL
            SELECT 'table.dead_tuples', t.relid::text, coalesce(s.n_dead_tup, 0)::double precision
              FROM guardian.watched_tables AS t
              LEFT JOIN pg_catalog.pg_stat_all_tables AS s ON s.relid = t.relid
            UNION ALL
            SELECT 'sequence.used', q.seq, q.pct::double precision
              FROM guardian._sequence_usage() AS q
            UNION ALL
            SELECT d.metric, d.subject, d.value FROM guardian._disk_samples() AS d) AS g
     WHERE g.value IS NOT NULL
    ON CONFLICT (metric, subject, sampled_at) DO UPDATE SET value = EXCLUDED.value;
    GET DIAGNOSTICS v_gauges = ROW_COUNT;

    -- Once an hour: roll up what is older than its metric's rollup_after to one sample an hour
    -- (counts summed, gauges averaged), and drop what is older than its retention.
    IF v_end = date_bin('1 hour', v_end, 'epoch') THEN
        SELECT r.rolled, r.dropped INTO v_rolled, v_dropped FROM guardian._metric_retention(v_at) AS r;
    END IF;
    RETURN format('%s count sample(s), %s gauge sample(s)%s', v_counts, v_gauges,
                  CASE WHEN v_rolled IS NOT NULL
                       THEN format('; %s rolled up, %s dropped', v_rolled, v_dropped) ELSE '' END);
END
$$;
COMMENT ON FUNCTION guardian.collect_metrics(timestamptz) IS
    'Job (metrics_collect, every 10 minutes): sample the built-in metrics into guardian.metric_samples (writes per watched table and operation, alerts per type, connections, sizes, dead rows, sequence use, transaction-ID age); hourly, roll up and prune by each metric''s retention.';

INSERT INTO guardian.jobs (name, schedule, command, description, max_lag, builtin)
VALUES ('metrics_collect', '*/10 * * * *', 'SELECT guardian.collect_metrics()',
        'Sample the built-in metrics into guardian.metric_samples; hourly, roll up and prune them',
        '30 minutes', true);

-- Anomaly detection: each series' samples get a verdict from the seasonal-analog detector
-- (extension/python/anomaly_detector.py, embedded below). Verdicts are causal (a sample is
-- judged by what came before it) and kept in guardian.anomaly_scores with the detector's state,
-- so the anomaly_detection job only scores what is new: one step per series, not its history.
-- The detector runs in PL/Python with numpy; without plpython3u the functions say so.

-- Where a series' verdicts stand. A cache of derived state: not dumped (a restored database
-- scores its history again on first use).
CREATE TABLE guardian.anomaly_series (
    metric        text NOT NULL,
    subject       text NOT NULL,
    settings_hash text NOT NULL,
    first_sample  timestamptz NOT NULL,
    scored_to     timestamptz NOT NULL,
    history       interval NOT NULL,
    state_from    timestamptz NOT NULL,
    dirty_from    timestamptz,
    scalars       jsonb NOT NULL,
    scored_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT anomaly_series_pkey PRIMARY KEY (metric, subject)
);
COMMENT ON TABLE guardian.anomaly_series IS
    'Per series: how far its samples have verdicts (scored_to), the detector''s small state (scalars), a fingerprint of the settings, declared windows and detector they were scored with (settings_hash), and from when an edited history must be scored again (dirty_from). Derived; not dumped.';

CREATE TABLE guardian.anomaly_scores (
    metric      text NOT NULL,
    subject     text NOT NULL,
    sampled_at  timestamptz NOT NULL,
    expected    double precision,
    lower_bound double precision,
    upper_bound double precision,
    score       double precision,
    is_anomaly  boolean,
    rule        text NOT NULL DEFAULT '',
    predictor   text NOT NULL DEFAULT '',
    note        text NOT NULL DEFAULT '',
    state       bytea,
    CONSTRAINT anomaly_scores_pkey PRIMARY KEY (metric, subject, sampled_at)
);
COMMENT ON TABLE guardian.anomaly_scores IS
    'The verdict on each sample: expected value and band, score (robust z), is_anomaly (NULL while the series is too young to judge), the rule that fired, the baseline used (week, day, recent) and why a would-be anomaly was let pass (note: expected, recurring, seen, cold, policy). state is the detector''s, kept for the trailing history it needs. Derived; not dumped.';
CREATE INDEX anomaly_scores_anomalies_idx ON guardian.anomaly_scores (sampled_at) WHERE is_anomaly;

-- Declared windows: 'expected' (maintenance, a planned load: no anomaly inside, not learnt as
-- one) and 'incident' (a known incident: never learnt from). metric/subject '*' = every series.
CREATE TABLE guardian.anomaly_windows (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind       text NOT NULL DEFAULT 'expected',
    metric     text NOT NULL DEFAULT '*',
    subject    text NOT NULL DEFAULT '*',
    starts_at  timestamptz NOT NULL,
    ends_at    timestamptz NOT NULL,
    note       text,
    created_by text NOT NULL DEFAULT CURRENT_USER,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT anomaly_windows_kind_chk CHECK (kind IN ('expected', 'incident')),
    CONSTRAINT anomaly_windows_range_chk CHECK (ends_at > starts_at AND isfinite(starts_at) AND isfinite(ends_at))
);
COMMENT ON TABLE guardian.anomaly_windows IS
    'Declared windows of a series (metric/subject, ''*'' for all): expected (maintenance or a planned load: no anomaly is raised inside, and it is not learnt as one; guardian.expect) or incident (never learnt from; guardian.mark_incident).';
SELECT pg_catalog.pg_extension_config_dump('guardian.anomaly_windows', '');
SELECT pg_catalog.pg_extension_config_dump('guardian.anomaly_windows_id_seq', '');

-- Per environment ('*' = all), metric and subject ('*' = all): on or off, sensitivity (alarm
-- thresholds are divided by it: 2 alerts on smaller departures, 0.5 only on larger ones) and
-- the time zone whose hours and weekdays are the seasons. The most specific row wins per field.
CREATE TABLE guardian.anomaly_settings (
    environment text NOT NULL DEFAULT '*',
    metric      text NOT NULL DEFAULT '*',
    subject     text NOT NULL DEFAULT '*',
    enabled     boolean,
    sensitivity double precision,
    time_zone   text,
    changed_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    changed_by  text NOT NULL DEFAULT CURRENT_USER,
    CONSTRAINT anomaly_settings_pkey PRIMARY KEY (environment, metric, subject),
    CONSTRAINT anomaly_settings_sensitivity_chk CHECK (sensitivity BETWEEN 0.25 AND 4)
);
COMMENT ON TABLE guardian.anomaly_settings IS
    'Anomaly detection per environment, metric and subject (''*'' = all; the most specific row wins per field): enabled, sensitivity (0.25-4, default 1: thresholds are divided by it) and time_zone (default UTC). Set with guardian.set_anomaly_settings().';
SELECT pg_catalog.pg_extension_config_dump('guardian.anomaly_settings', '');

-- The detector's output for one call; arrays hold the new samples only, except state (all).
CREATE TYPE guardian._anomaly_step AS (
    expected    double precision[],
    lower_bound double precision[],
    upper_bound double precision[],
    score       double precision[],
    alarm       boolean[],
    rule        text[],
    predictor   text[],
    note        text[],
    state       bytea[],
    changed     integer[],
    scalars     jsonb,
    history     integer
);
COMMENT ON TYPE guardian._anomaly_step IS
    'Internal: one call of the detector (verdicts for the new samples, the state of every sample given, which earlier states changed, the small state to pass on).';

-- The detector itself. install_anomaly_detector() creates it with PL/Python where plpython3u
-- exists and a superuser installs (the embedded module, compiled once per session), else a
-- stand-in that says what is missing; a superuser runs it again after CREATE EXTENSION
-- plpython3u. Either way the function is the installer's (an untrusted language), runs as its
-- caller and touches no table.
CREATE FUNCTION guardian.install_anomaly_detector()
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $install$
DECLARE
    v_python boolean := EXISTS (SELECT FROM pg_catalog.pg_language AS l WHERE l.lanname = 'plpython3u');
    v_super  boolean := coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles AS r WHERE r.rolname = CURRENT_USER), false);
    v_exists boolean := to_regprocedure('guardian._anomaly_resume(double precision[], double precision[], text, text, jsonb, jsonb, bytea[], double precision[], double precision[])') IS NOT NULL;
BEGIN
    IF v_python AND v_super THEN
        EXECUTE $fn$
CREATE OR REPLACE FUNCTION guardian._anomaly_resume(
    p_times double precision[], p_values double precision[], p_time_zone text, p_kind text, p_params jsonb,
    p_scalars jsonb, p_state bytea[], p_expected double precision[], p_incidents double precision[])
RETURNS guardian._anomaly_step
LANGUAGE plpython3u
SET search_path = pg_catalog, pg_temp
AS $py$
-- @@ python anomaly_detector.py @@
import json
import math
import sys
import types

det = SD.get("det")
if det is None:
    try:
        import numpy  # noqa: F401
    except ImportError:
        plpy.error("anomaly detection needs numpy in the server's Python",
                   hint="Install it on the database server (Debian: apt-get install python3-numpy), then reconnect.")
    det = types.ModuleType("pg_guardian_anomaly_detector")
    sys.modules[det.__name__] = det
    exec(compile(SOURCE, "anomaly_detector.py", "exec"), det.__dict__)
    SD["det"] = det
np = det.np

def pairs(a):
    a = [v for v in (a or []) if v is not None]
    return [(a[i], a[i + 1]) for i in range(0, len(a) - 1, 2)]

ts = np.floor(np.asarray(p_times, dtype=float)).astype(np.int64)
if len(ts) > 1 and not np.all(np.diff(ts) > 0):
    plpy.error("samples must be at least a second apart and in time order",
               hint="Two samples of a series fall in the same second; keep one of them.")
x = np.asarray([math.nan if v is None else v for v in p_values], dtype=float)
state = None
if p_state:
    state = np.frombuffer(b"".join(p_state), dtype=np.float64).reshape(len(p_state), -1)
try:
    params = det.check_params(json.loads(p_params) if p_params else None)
    res = det.resume(ts, x, tz=p_time_zone or "UTC", kind=p_kind, params=params,
                     scalars=json.loads(p_scalars) if p_scalars else None, state=state,
                     expected_windows=pairs(p_expected), incident_windows=pairs(p_incidents))
except ValueError as exc:
    plpy.error(str(exc), hint="Check guardian.anomaly_settings and the arguments.")

def floats(a):
    return [None if not math.isfinite(v) else float(v) for v in a.tolist()]

return {
    "expected": floats(res.expected), "lower_bound": floats(res.lower), "upper_bound": floats(res.upper),
    "score": floats(res.score),
    "alarm": [None if not math.isfinite(v) else bool(v) for v in res.alarm.tolist()],
    "rule": list(res.rule), "predictor": list(res.predictor), "note": list(res.note),
    "state": [row.tobytes() for row in np.ascontiguousarray(res.state, dtype=np.float64)],
    "changed": [int(i) for i in res.changed],
    "scalars": json.dumps(res.scalars),
    "history": int(det.HISTORY_SECONDS),
}
$py$
$fn$;
        RETURN 'anomaly detector: PL/Python';
    ELSIF v_exists THEN
        RAISE EXCEPTION '%', CASE WHEN NOT v_python
                                  THEN format('PL/Python (plpython3u) is not installed in database %s', current_database())
                                  ELSE format('role %s may not create PL/Python functions', CURRENT_USER) END
            USING ERRCODE = CASE WHEN NOT v_python THEN 'feature_not_supported' ELSE 'insufficient_privilege' END,
                  HINT = 'As a superuser: apt-get install postgresql-plpython3-15 python3-numpy; then in this database CREATE EXTENSION plpython3u; SELECT guardian.install_anomaly_detector();';
    END IF;
        EXECUTE $fn$
CREATE FUNCTION guardian._anomaly_resume(
    p_times double precision[], p_values double precision[], p_time_zone text, p_kind text, p_params jsonb,
    p_scalars jsonb, p_state bytea[], p_expected double precision[], p_incidents double precision[])
RETURNS guardian._anomaly_step
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $body$
BEGIN
    RAISE EXCEPTION 'anomaly detection needs PL/Python (plpython3u), which this database did not have when pg_guardian was installed'
        USING ERRCODE = 'feature_not_supported',
              HINT = 'As a superuser: apt-get install postgresql-plpython3-15 python3-numpy; then in this database CREATE EXTENSION plpython3u; SELECT guardian.install_anomaly_detector(); Managed services without plpython3u cannot run it.';
END
$body$
$fn$;
    RETURN 'anomaly detector: unavailable (no plpython3u)';
END
$install$;
COMMENT ON FUNCTION guardian.install_anomaly_detector() IS
    'Create the anomaly detector (guardian._anomaly_resume): with PL/Python and numpy where plpython3u exists and a superuser runs it (run it again after CREATE EXTENSION plpython3u), else a stand-in that says what is missing.';
SELECT guardian.install_anomaly_detector();
COMMENT ON FUNCTION guardian._anomaly_resume(double precision[], double precision[], text, text, jsonb, jsonb, bytea[], double precision[], double precision[]) IS
    'Internal: one step of the seasonal-analog detector over a series (epoch seconds, values, time zone, count or gauge, parameters, the state of earlier samples). Pure: reads and writes no table.';

CREATE FUNCTION guardian.anomaly_detection_available()
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT l.lanname = 'plpython3u'
      FROM pg_catalog.pg_proc AS p JOIN pg_catalog.pg_language AS l ON l.oid = p.prolang
     WHERE p.oid = 'guardian._anomaly_resume(double precision[], double precision[], text, text, jsonb, jsonb, bytea[], double precision[], double precision[])'::regprocedure
$$;
COMMENT ON FUNCTION guardian.anomaly_detection_available() IS
    'Whether anomaly detection can run here (pg_guardian was installed where plpython3u exists).';

CREATE FUNCTION guardian._anomaly_detector_version()
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT md5(p.prosrc)
      FROM pg_catalog.pg_proc AS p
     WHERE p.oid = 'guardian._anomaly_resume(double precision[], double precision[], text, text, jsonb, jsonb, bytea[], double precision[], double precision[])'::regprocedure
$$;
COMMENT ON FUNCTION guardian._anomaly_detector_version() IS
    'Internal: a fingerprint of the installed detector; verdicts of another detector are scored again.';

-- A series' settings: the most specific row per field (subject beats metric beats '*'; the
-- current environment beats '*').
CREATE FUNCTION guardian._anomaly_config(p_metric text, p_subject text)
RETURNS TABLE (enabled boolean, sensitivity double precision, time_zone text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH rows AS (
        SELECT s.*, (s.subject <> '*')::int * 4 + (s.metric <> '*')::int * 2 + (s.environment <> '*')::int AS rank
          FROM guardian.anomaly_settings AS s
         WHERE s.environment IN (guardian.current_environment(), '*')
           AND s.metric IN (p_metric, '*') AND s.subject IN (p_subject, '*')
    )
    SELECT coalesce((SELECT r.enabled FROM rows AS r WHERE r.enabled IS NOT NULL ORDER BY r.rank DESC LIMIT 1), true),
           coalesce((SELECT r.sensitivity FROM rows AS r WHERE r.sensitivity IS NOT NULL ORDER BY r.rank DESC LIMIT 1), 1.0),
           coalesce((SELECT r.time_zone FROM rows AS r WHERE r.time_zone IS NOT NULL ORDER BY r.rank DESC LIMIT 1), 'UTC')
$$;
COMMENT ON FUNCTION guardian._anomaly_config(text, text) IS
    'Internal: enabled, sensitivity and time zone of a series in this environment.';

CREATE FUNCTION guardian.set_anomaly_settings(
    p_metric text DEFAULT '*', p_subject text DEFAULT '*', p_enabled boolean DEFAULT NULL,
    p_sensitivity double precision DEFAULT NULL, p_time_zone text DEFAULT NULL, p_environment text DEFAULT '*')
RETURNS guardian.anomaly_settings
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_row guardian.anomaly_settings;
BEGIN
    IF coalesce(btrim(p_metric), '') = '' OR coalesce(btrim(p_subject), '') = '' OR coalesce(btrim(p_environment), '') = '' THEN
        RAISE EXCEPTION 'metric, subject and environment must be named (''*'' for all)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_sensitivity IS NOT NULL AND (p_sensitivity = 'NaN'::double precision OR p_sensitivity NOT BETWEEN 0.25 AND 4) THEN
        RAISE EXCEPTION 'sensitivity % is out of range', p_sensitivity
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use 0.25 to 4: 1 is the default, 2 alerts on smaller departures, 0.5 only on larger ones.';
    END IF;
    IF p_time_zone IS NOT NULL AND NOT EXISTS (SELECT FROM pg_catalog.pg_timezone_names AS z WHERE z.name = p_time_zone) THEN
        RAISE EXCEPTION 'unknown time zone %', quote_literal(p_time_zone)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use a name from pg_timezone_names, e.g. Europe/Berlin or America/New_York (not an abbreviation: seasons must follow daylight-saving changes).';
    END IF;
    -- changed_by: the caller (and the person a front end acts for), not this function's owner.
    INSERT INTO guardian.anomaly_settings AS s (environment, metric, subject, enabled, sensitivity, time_zone, changed_by)
    VALUES (p_environment, p_metric, p_subject, p_enabled, p_sensitivity, p_time_zone, guardian._actor())
    ON CONFLICT (environment, metric, subject) DO UPDATE
       SET enabled = coalesce(EXCLUDED.enabled, s.enabled),
           sensitivity = coalesce(EXCLUDED.sensitivity, s.sensitivity),
           time_zone = coalesce(EXCLUDED.time_zone, s.time_zone),
           changed_at = now(), changed_by = EXCLUDED.changed_by
    RETURNING * INTO v_row;
    RETURN v_row;
END
$$;
COMMENT ON FUNCTION guardian.set_anomaly_settings(text, text, boolean, double precision, text, text) IS
    'Switch anomaly detection on or off, or set its sensitivity (0.25-4) or time zone, for a metric and subject (''*'' = all) in an environment (''*'' = all); NULL leaves a field as it is. Series whose settings change are scored again.';

-- The window arguments of a series: flat [from, to, from, to ...] in epoch seconds.
CREATE FUNCTION guardian._anomaly_windows(p_metric text, p_subject text, p_kind text)
RETURNS double precision[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(array_agg(v ORDER BY w.starts_at, w.id, o), '{}')
      FROM guardian.anomaly_windows AS w
     CROSS JOIN LATERAL (VALUES (1, date_part('epoch', w.starts_at)), (2, date_part('epoch', w.ends_at))) AS e(o, v)
     WHERE w.kind = p_kind AND w.metric IN (p_metric, '*') AND w.subject IN (p_subject, '*')
$$;
COMMENT ON FUNCTION guardian._anomaly_windows(text, text, text) IS
    'Internal: a series'' declared windows of one kind as [from, to, ...] epoch seconds.';

-- Bring a series' verdicts up to date: score the samples after scored_to from the stored state
-- of the trailing history the detector needs; the whole series again when its settings or
-- declared windows changed, or when a sample it had judged was edited (dirty_from).
CREATE FUNCTION guardian._anomaly_score(p_metric text, p_subject text)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    v_cfg    record;
    v_kind   text := (SELECT m.kind FROM guardian.metrics AS m WHERE m.name = p_metric);
    v_exp    double precision[] := guardian._anomaly_windows(p_metric, p_subject, 'expected');
    v_inc    double precision[] := guardian._anomaly_windows(p_metric, p_subject, 'incident');
    v_series guardian.anomaly_series;
    v_hash   text;
    v_full   boolean;
    v_at     timestamptz[];
    v_times  double precision[];
    v_values double precision[];
    v_state  bytea[];
    v_m      integer;
    v_step   guardian._anomaly_step;
    v_n      integer;
    v_scalars jsonb;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('guardian.anomaly:' || p_metric || '|' || p_subject, 0));
    SELECT * INTO v_cfg FROM guardian._anomaly_config(p_metric, p_subject);
    SELECT * INTO v_series FROM guardian.anomaly_series AS s
     WHERE s.metric = p_metric AND s.subject = p_subject FOR UPDATE;
    -- Scored again from the start when the settings, the windows or the detector changed.
    v_hash := md5(concat_ws('|', v_cfg.time_zone, v_cfg.sensitivity, v_kind, v_exp::text, v_inc::text,
                            guardian._anomaly_detector_version()));
    v_full := v_series.metric IS NULL OR v_series.settings_hash <> v_hash OR v_series.dirty_from IS NOT NULL;
    IF v_full THEN
        SELECT array_agg(x.sampled_at ORDER BY x.sampled_at), array_agg(date_part('epoch', x.sampled_at) ORDER BY x.sampled_at),
               array_agg(x.value ORDER BY x.sampled_at)
          INTO v_at, v_times, v_values
          FROM guardian.metric_samples AS x WHERE x.metric = p_metric AND x.subject = p_subject;
        v_m := 0;
    ELSE
        v_scalars := v_series.scalars;
        -- Two range scans of the same key order (no join: its plan would hinge on fresh
        -- statistics, and a bulk load has none).
        SELECT array_agg(x.sampled_at ORDER BY x.sampled_at), array_agg(date_part('epoch', x.sampled_at) ORDER BY x.sampled_at),
               array_agg(x.value ORDER BY x.sampled_at), count(*) FILTER (WHERE x.sampled_at <= v_series.scored_to)
          INTO v_at, v_times, v_values, v_m
          FROM guardian.metric_samples AS x
         WHERE x.metric = p_metric AND x.subject = p_subject
           AND x.sampled_at >= v_series.scored_to - v_series.history;
        SELECT array_agg(s.state ORDER BY s.sampled_at) INTO v_state
          FROM guardian.anomaly_scores AS s
         WHERE s.metric = p_metric AND s.subject = p_subject
           AND s.sampled_at >= v_series.scored_to - v_series.history AND s.sampled_at <= v_series.scored_to;
        IF coalesce(cardinality(v_at), 0) = v_m THEN
            RETURN 0;
        END IF;
        IF coalesce(cardinality(v_state), 0) <> v_m OR array_position(v_state, NULL) IS NOT NULL THEN
            -- A judged sample without its state (pruned, lost, or a sample and its verdict that
            -- do not match): start again.
            UPDATE guardian.anomaly_series AS s SET dirty_from = s.scored_to
             WHERE s.metric = p_metric AND s.subject = p_subject;
            RETURN guardian._anomaly_score(p_metric, p_subject);
        END IF;
    END IF;
    IF v_at IS NULL THEN
        RETURN 0;
    END IF;

    v_step := guardian._anomaly_resume(v_times, v_values, v_cfg.time_zone, v_kind,
                                       jsonb_build_object('sensitivity', v_cfg.sensitivity),
                                       v_scalars, v_state, v_exp, v_inc);
    v_n := cardinality(v_at) - v_m;

    IF v_full THEN
        DELETE FROM guardian.anomaly_scores AS s WHERE s.metric = p_metric AND s.subject = p_subject;
    ELSIF cardinality(v_step.changed) > 0 THEN
        UPDATE guardian.anomaly_scores AS s SET state = u.state
          FROM unnest(v_at, v_step.state) WITH ORDINALITY AS u(at, state, k)
         WHERE u.k - 1 = ANY (v_step.changed)
           AND s.metric = p_metric AND s.subject = p_subject AND s.sampled_at = u.at;
    END IF;
    INSERT INTO guardian.anomaly_scores
        (metric, subject, sampled_at, expected, lower_bound, upper_bound, score, is_anomaly, rule, predictor, note, state)
    SELECT p_metric, p_subject, u.*
      FROM unnest(v_at[v_m + 1:], v_step.expected, v_step.lower_bound, v_step.upper_bound, v_step.score,
                  v_step.alarm, v_step.rule, v_step.predictor, v_step.note, v_step.state[v_m + 1:]) AS u;

    -- States older than the trailing history are no longer needed.
    UPDATE guardian.anomaly_scores AS s SET state = NULL
     WHERE s.metric = p_metric AND s.subject = p_subject
       AND s.sampled_at >= CASE WHEN v_full THEN '-infinity' ELSE v_series.state_from END
       AND s.sampled_at < v_at[cardinality(v_at)] - make_interval(secs => v_step.history) - interval '1 day'
       AND s.state IS NOT NULL;

    INSERT INTO guardian.anomaly_series AS s
        (metric, subject, settings_hash, first_sample, scored_to, history, state_from, dirty_from, scalars, scored_at)
    VALUES (p_metric, p_subject, v_hash, v_at[1], v_at[cardinality(v_at)], make_interval(secs => v_step.history),
            v_at[cardinality(v_at)] - make_interval(secs => v_step.history) - interval '1 day', NULL,
            v_step.scalars, now())
    ON CONFLICT (metric, subject) DO UPDATE
       SET settings_hash = EXCLUDED.settings_hash,
           first_sample = CASE WHEN v_full THEN EXCLUDED.first_sample ELSE s.first_sample END,
           scored_to = EXCLUDED.scored_to, history = EXCLUDED.history, state_from = EXCLUDED.state_from,
           dirty_from = NULL, scalars = EXCLUDED.scalars, scored_at = EXCLUDED.scored_at;
    RETURN v_n;
END
$$;
COMMENT ON FUNCTION guardian._anomaly_score(text, text) IS
    'Internal: give verdicts to a series'' samples that have none (one detector step from the stored state); score it all again when its settings, declared windows or judged samples changed. Returns how many samples were judged.';

-- Edits of judged samples (a late or corrected sample, a deletion) mark the series to be scored
-- again from there. Samples older than the state the detector keeps do not matter to it (the
-- hourly roll-up of old samples, retention).
CREATE FUNCTION guardian._metric_samples_changed()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        UPDATE guardian.anomaly_series AS s SET dirty_from = least(s.dirty_from, c.first)
          FROM (SELECT n.metric, n.subject, min(n.sampled_at) AS first FROM new_rows AS n GROUP BY 1, 2) AS c
         WHERE s.metric = c.metric AND s.subject = c.subject
           AND c.first <= s.scored_to AND c.first >= s.scored_to - s.history;
    END IF;
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        UPDATE guardian.anomaly_series AS s SET dirty_from = least(s.dirty_from, c.first)
          FROM (SELECT o.metric, o.subject, min(o.sampled_at) AS first FROM old_rows AS o GROUP BY 1, 2) AS c
         WHERE s.metric = c.metric AND s.subject = c.subject
           AND c.first <= s.scored_to AND c.first >= s.scored_to - s.history;
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION guardian._metric_samples_changed() IS
    'Internal (statement trigger on guardian.metric_samples): a judged sample that is added, changed or removed marks its series to be scored again.';
CREATE TRIGGER metric_samples_inserted AFTER INSERT ON guardian.metric_samples
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION guardian._metric_samples_changed();
CREATE TRIGGER metric_samples_updated AFTER UPDATE ON guardian.metric_samples
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION guardian._metric_samples_changed();
CREATE TRIGGER metric_samples_deleted AFTER DELETE ON guardian.metric_samples
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION guardian._metric_samples_changed();

-- Samples and verdicts share their key. Every join between them is a lookup by the whole key
-- (LATERAL ... LIMIT 1, which the planner cannot flatten): right after a bulk load there are no
-- statistics, and a planned join then scans the series once per sample.

-- Arguments every reader of a series checks the same way.
CREATE FUNCTION guardian._anomaly_check_series(p_metric text, p_subject text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_metric IS NULL OR NOT EXISTS (SELECT FROM guardian.metric_samples AS x WHERE x.metric = p_metric) THEN
        RAISE EXCEPTION 'unknown metric %: it has no samples', quote_nullable(p_metric)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'List the series with: SELECT DISTINCT metric, subject FROM guardian.metric_samples;';
    END IF;
    IF p_subject IS NULL OR NOT EXISTS (SELECT FROM guardian.metric_samples AS x
                                          WHERE x.metric = p_metric AND x.subject = p_subject) THEN
        RAISE EXCEPTION 'metric % has no samples for subject %', p_metric, quote_nullable(p_subject)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Its subjects: SELECT DISTINCT subject FROM guardian.metric_samples WHERE metric = %L;', p_metric);
    END IF;
END
$$;
COMMENT ON FUNCTION guardian._anomaly_check_series(text, text) IS
    'Internal: an error naming an unknown metric or subject, with the query that lists the known ones.';

CREATE FUNCTION guardian._anomaly_check_range(p_from timestamptz, p_to timestamptz)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_from IS NULL OR p_to IS NULL OR NOT isfinite(p_from) OR NOT isfinite(p_to) THEN
        RAISE EXCEPTION 'range % to % must have finite bounds', coalesce(p_from::text, 'NULL'), coalesce(p_to::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'For example: now() - interval ''7 days'', now()';
    END IF;
    IF p_from > p_to THEN
        RAISE EXCEPTION 'range starts (%) after it ends (%)', p_from, p_to
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Swap the two bounds: p_from is the earlier one.';
    END IF;
    IF p_from = p_to THEN
        RAISE EXCEPTION 'range % to % is empty', p_from, p_to
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Give p_to later than p_from; both bounds are included.';
    END IF;
END
$$;
COMMENT ON FUNCTION guardian._anomaly_check_range(timestamptz, timestamptz) IS
    'Internal: an error for a range with a missing or infinite bound, backwards, or empty.';

CREATE FUNCTION guardian.detect_anomalies(p_metric text, p_subject text, p_from timestamptz, p_to timestamptz)
RETURNS TABLE (sampled_at timestamptz, value double precision, expected double precision,
               lower_bound double precision, upper_bound double precision, score double precision,
               is_anomaly boolean)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    v_cold timestamptz;
BEGIN
    PERFORM guardian._anomaly_check_range(p_from, p_to);
    PERFORM guardian._anomaly_check_series(p_metric, p_subject);
    IF current_setting('transaction_read_only')::boolean THEN
        -- A read-only transaction (a standby, a read-only session): judge without keeping.
        RETURN QUERY
        SELECT b.sampled_at, b.value, b.expected, b.lower_bound, b.upper_bound, b.score, b.is_anomaly
          FROM guardian._anomaly_backtest_series(p_metric, p_subject, p_to) AS b
         WHERE b.sampled_at >= p_from;
        RETURN;
    END IF;
    PERFORM guardian._anomaly_score(p_metric, p_subject);
    SELECT max(s.sampled_at) INTO v_cold
      FROM guardian.anomaly_scores AS s
     WHERE s.metric = p_metric AND s.subject = p_subject AND s.sampled_at BETWEEN p_from AND p_to
       AND s.is_anomaly IS NULL;
    IF v_cold IS NOT NULL THEN
        RAISE NOTICE 'no verdicts for % of % up to %: the detector judges a series once it has a day of history and 24 samples',
                     p_metric, p_subject, v_cold;
    END IF;
    RETURN QUERY
    SELECT x.sampled_at, x.value, s.expected, s.lower_bound, s.upper_bound, s.score, s.is_anomaly
      FROM guardian.metric_samples AS x
      LEFT JOIN LATERAL (SELECT v.* FROM guardian.anomaly_scores AS v
                          WHERE v.metric = x.metric AND v.subject = x.subject AND v.sampled_at = x.sampled_at LIMIT 1) AS s
        ON true
     WHERE x.metric = p_metric AND x.subject = p_subject AND x.sampled_at BETWEEN p_from AND p_to
     ORDER BY x.sampled_at;
END
$$;
COMMENT ON FUNCTION guardian.detect_anomalies(text, text, timestamptz, timestamptz) IS
    'Every sample of a series from p_from to p_to (both included) with its verdict: expected value, band, score (robust z) and is_anomaly (NULL while the series is too young). Causal: each verdict uses only earlier samples, so it is what the anomaly_detection job said or would have said.';

-- One run of the detector from scratch over samples in time order, keeping nothing: what
-- backtest_anomalies and a read-only detect_anomalies both return.
CREATE FUNCTION guardian._anomaly_fresh(
    p_at timestamptz[], p_values double precision[], p_kind text, p_time_zone text, p_sensitivity double precision,
    p_expected double precision[], p_incidents double precision[])
RETURNS TABLE (sampled_at timestamptz, value double precision, expected double precision,
               lower_bound double precision, upper_bound double precision, score double precision,
               is_anomaly boolean, rule text, predictor text, note text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_step guardian._anomaly_step := guardian._anomaly_resume(
        ARRAY(SELECT date_part('epoch', t) FROM unnest(p_at) WITH ORDINALITY AS u(t, k) ORDER BY k),
        p_values, p_time_zone, p_kind, jsonb_build_object('sensitivity', p_sensitivity), NULL, NULL,
        p_expected, p_incidents);
BEGIN
    RETURN QUERY
    SELECT * FROM unnest(p_at, p_values, v_step.expected, v_step.lower_bound, v_step.upper_bound, v_step.score,
                         v_step.alarm, v_step.rule, v_step.predictor, v_step.note);
END
$$;
COMMENT ON FUNCTION guardian._anomaly_fresh(timestamptz[], double precision[], text, text, double precision, double precision[], double precision[]) IS
    'Internal: every verdict of one detector run from scratch over samples in time order (with declared windows), keeping nothing.';

-- The detector over any samples, keeping nothing: backtests, tuning, read-only transactions.
CREATE FUNCTION guardian.backtest_anomalies(
    p_times timestamptz[], p_values double precision[], p_kind text DEFAULT NULL, p_time_zone text DEFAULT 'UTC',
    p_sensitivity double precision DEFAULT 1)
RETURNS TABLE (sampled_at timestamptz, value double precision, expected double precision,
               lower_bound double precision, upper_bound double precision, score double precision,
               is_anomaly boolean, rule text, predictor text, note text)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    v_bad  integer;
    v_at   timestamptz[];
    v_vals double precision[];
BEGIN
    IF p_times IS NULL OR p_values IS NULL OR cardinality(p_times) <> cardinality(p_values) THEN
        RAISE EXCEPTION 'backtest needs as many values as times (% times, % values)',
                        coalesce(cardinality(p_times), 0), coalesce(cardinality(p_values), 0)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF cardinality(p_times) = 0 THEN
        RAISE EXCEPTION 'backtest needs samples; none were given' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_kind IS NOT NULL AND p_kind NOT IN ('count', 'gauge') THEN
        RAISE EXCEPTION 'unknown kind %', quote_literal(p_kind)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use count (events per sample), gauge (a level) or NULL (decide from the data).';
    END IF;
    IF p_sensitivity IS NULL OR p_sensitivity = 'NaN'::double precision OR p_sensitivity NOT BETWEEN 0.25 AND 4 THEN
        RAISE EXCEPTION 'sensitivity % is out of range', coalesce(p_sensitivity::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use 0.25 to 4 (1 is the default).';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_timezone_names AS z WHERE z.name = p_time_zone) THEN
        RAISE EXCEPTION 'unknown time zone %', quote_nullable(p_time_zone)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use a name from pg_timezone_names, e.g. Europe/Berlin.';
    END IF;
    SELECT k INTO v_bad FROM unnest(p_times, p_values) WITH ORDINALITY AS u(t, v, k)
     WHERE t IS NULL OR NOT isfinite(t) OR v IS NULL OR v = 'NaN'::double precision OR v IN ('Infinity', '-Infinity')
     LIMIT 1;
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION 'sample % (% = %) is not a finite time and value', v_bad,
                        coalesce(p_times[v_bad]::text, 'NULL'), coalesce(p_values[v_bad]::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Leave a missing sample out rather than give NaN, infinity or NULL.';
    END IF;
    SELECT array_agg(t ORDER BY t), array_agg(v ORDER BY t) INTO v_at, v_vals FROM unnest(p_times, p_values) AS u(t, v);
    SELECT t INTO v_bad FROM (SELECT t, lag(t) OVER (ORDER BY t) AS prev FROM unnest(v_at) AS t) AS d
     WHERE date_trunc('second', d.t) = date_trunc('second', d.prev) LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'two samples fall in the same second' USING ERRCODE = 'invalid_parameter_value',
              HINT = 'Keep one sample per moment (the detector works to the second).';
    END IF;
    RETURN QUERY SELECT * FROM guardian._anomaly_fresh(v_at, v_vals, p_kind, p_time_zone, p_sensitivity, '{}', '{}');
END
$$;
COMMENT ON FUNCTION guardian.backtest_anomalies(timestamptz[], double precision[], text, text, double precision) IS
    'Run the anomaly detector over samples given as arrays (in any order) and return every verdict, keeping nothing: tune on your own data without touching the history. kind: count, gauge or NULL (decided from the data).';

CREATE FUNCTION guardian._anomaly_backtest_series(p_metric text, p_subject text, p_to timestamptz)
RETURNS TABLE (sampled_at timestamptz, value double precision, expected double precision,
               lower_bound double precision, upper_bound double precision, score double precision,
               is_anomaly boolean)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_cfg  record;
    v_at   timestamptz[];
    v_vals double precision[];
BEGIN
    SELECT * INTO v_cfg FROM guardian._anomaly_config(p_metric, p_subject);
    SELECT array_agg(x.sampled_at ORDER BY x.sampled_at), array_agg(x.value ORDER BY x.sampled_at) INTO v_at, v_vals
      FROM guardian.metric_samples AS x WHERE x.metric = p_metric AND x.subject = p_subject AND x.sampled_at <= p_to;
    IF v_at IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT f.sampled_at, f.value, f.expected, f.lower_bound, f.upper_bound, f.score, f.is_anomaly
      FROM guardian._anomaly_fresh(v_at, v_vals, (SELECT m.kind FROM guardian.metrics AS m WHERE m.name = p_metric),
                                   v_cfg.time_zone, v_cfg.sensitivity,
                                   guardian._anomaly_windows(p_metric, p_subject, 'expected'),
                                   guardian._anomaly_windows(p_metric, p_subject, 'incident')) AS f;
END
$$;
COMMENT ON FUNCTION guardian._anomaly_backtest_series(text, text, timestamptz) IS
    'Internal: a series'' verdicts computed afresh up to p_to, without keeping them (detect_anomalies in a read-only transaction).';

-- Declared windows.
CREATE FUNCTION guardian._anomaly_window(
    p_kind text, p_metric text, p_subject text, p_from timestamptz, p_to timestamptz, p_note text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id bigint;
BEGIN
    PERFORM guardian._anomaly_check_range(p_from, p_to);
    IF coalesce(btrim(p_metric), '') = '' OR coalesce(btrim(p_subject), '') = '' THEN
        RAISE EXCEPTION 'name the metric and subject of the window (''*'' for all)' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_metric <> '*' AND NOT EXISTS (SELECT FROM guardian.metrics AS m WHERE m.name = p_metric)
       AND NOT EXISTS (SELECT FROM guardian.metric_samples AS x WHERE x.metric = p_metric) THEN
        RAISE EXCEPTION 'unknown metric %', quote_literal(p_metric)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use a metric of guardian.metrics or one with samples, or ''*'' for every metric.';
    END IF;
    INSERT INTO guardian.anomaly_windows (kind, metric, subject, starts_at, ends_at, note, created_by)
    VALUES (p_kind, p_metric, p_subject, p_from, p_to, p_note, guardian._actor())
    RETURNING id INTO v_id;
    RETURN v_id;
END
$$;
COMMENT ON FUNCTION guardian._anomaly_window(text, text, text, timestamptz, timestamptz, text) IS
    'Internal: record a declared window (expect, mark_incident); series it touches are scored again with it.';

CREATE FUNCTION guardian.expect(p_metric text, p_subject text, p_from timestamptz, p_to timestamptz, p_note text DEFAULT NULL)
RETURNS bigint
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT guardian._anomaly_window('expected', p_metric, p_subject, p_from, p_to, p_note)
$$;
COMMENT ON FUNCTION guardian.expect(text, text, timestamptz, timestamptz, text) IS
    'Declare a maintenance window or a planned load of a series (metric/subject, ''*'' = all) from p_from to p_to: no anomaly is raised inside it, and what happens there is not learnt as an anomaly. Returns the window''s id (DELETE FROM guardian.anomaly_windows to take it back).';

CREATE FUNCTION guardian.mark_incident(p_metric text, p_subject text, p_from timestamptz, p_to timestamptz, p_note text DEFAULT NULL)
RETURNS bigint
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT guardian._anomaly_window('incident', p_metric, p_subject, p_from, p_to, p_note)
$$;
COMMENT ON FUNCTION guardian.mark_incident(text, text, timestamptz, timestamptz, text) IS
    'Label an incident of a series (metric/subject, ''*'' = all) from p_from to p_to: its samples are never learnt from, so a long outage does not become the new normal. Returns the window''s id.';

-- The alert for an anomalous sample, in words: "312 updates to dental.patients between 22:00
-- and 22:10; usually 0-4 at this hour on Sundays".
CREATE FUNCTION guardian._anomaly_sentence(
    p_metric text, p_subject text, p_kind text, p_at timestamptz, p_value double precision,
    p_lower double precision, p_upper double precision, p_predictor text, p_time_zone text)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_local timestamp := p_at AT TIME ZONE p_time_zone;
    v_what  text;
    v_band  text;
    v_when  text;
BEGIN
    IF p_kind = 'count' THEN
        v_band := format('%s–%s', greatest(floor(coalesce(p_lower, 0)), 0)::bigint, ceil(coalesce(p_upper, 0))::bigint);
    ELSE
        v_band := format('%s–%s', guardian._anomaly_number(p_lower), guardian._anomaly_number(p_upper));
    END IF;
    v_when := CASE p_predictor
                  WHEN 'week' THEN 'at this hour on ' || to_char(v_local, 'FMDay') || 's'
                  WHEN 'day' THEN 'at this hour'
                  ELSE 'in the hours before' END;
    v_what := CASE p_metric
                  WHEN 'writes.insert' THEN 'rows inserted into'
                  WHEN 'writes.update' THEN 'updates to'
                  WHEN 'writes.delete' THEN 'rows deleted from'
                  WHEN 'alerts.raised' THEN CASE WHEN p_subject = '*' THEN 'alerts' ELSE p_subject || ' alerts' END
                  END;
    IF p_kind = 'count' AND v_what IS NOT NULL THEN
        RETURN format('%s %s%s between %s and %s%s; usually %s %s',
                      guardian._anomaly_number(p_value), v_what,
                      CASE WHEN p_metric LIKE 'writes.%' THEN ' ' || p_subject ELSE '' END,
                      to_char(v_local, 'HH24:MI'), to_char(v_local + interval '10 minutes', 'HH24:MI'),
                      CASE WHEN p_time_zone <> 'UTC' THEN ' (' || p_time_zone || ')' ELSE '' END, v_band, v_when);
    ELSIF p_kind = 'count' THEN
        RETURN format('%s of %s: %s between %s and %s%s; usually %s %s', p_metric, p_subject,
                      guardian._anomaly_number(p_value), to_char(v_local, 'HH24:MI'),
                      to_char(v_local + interval '10 minutes', 'HH24:MI'),
                      CASE WHEN p_time_zone <> 'UTC' THEN ' (' || p_time_zone || ')' ELSE '' END, v_band, v_when);
    END IF;
    RETURN format('%s of %s was %s at %s%s; usually %s %s', p_metric, p_subject, guardian._anomaly_number(p_value),
                  to_char(v_local, 'HH24:MI'), CASE WHEN p_time_zone <> 'UTC' THEN ' (' || p_time_zone || ')' ELSE '' END,
                  v_band, v_when);
END
$$;
COMMENT ON FUNCTION guardian._anomaly_sentence(text, text, text, timestamptz, double precision, double precision, double precision, text, text) IS
    'Internal: an anomaly in one sentence: what was seen, when (local time), and the usual band at that time.';

CREATE FUNCTION guardian._anomaly_number(p_value double precision)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN p_value IS NULL THEN '?'
                WHEN p_value = round(p_value) AND abs(p_value) < 1e15 THEN round(p_value)::bigint::text
                WHEN abs(p_value) >= 100 THEN round(p_value::numeric)::text
                ELSE round(p_value::numeric, 2)::text END
$$;
COMMENT ON FUNCTION guardian._anomaly_number(double precision) IS
    'Internal: a sample value as a person reads it (whole numbers whole, others to two decimals).';

CREATE FUNCTION guardian.run_anomaly_detection(p_at timestamptz DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    v_at       timestamptz := coalesce(p_at, now());
    r          record;
    a          record;
    v_cfg      record;
    v_kind     text;
    v_series   integer := 0;
    v_verdicts integer := 0;
    v_alerts   integer := 0;
    v_failed   text[] := '{}';
BEGIN
    IF NOT guardian.anomaly_detection_available() THEN
        PERFORM guardian.raise_alert('CHECK_DEGRADED', 'LOW',
            'anomaly detection cannot run: pg_guardian was installed where plpython3u did not exist',
            NULL, 'anomaly_detection',
            jsonb_build_object('check', 'anomaly_detection',
                               'fix', 'As a superuser: apt-get install postgresql-plpython3-15 python3-numpy; then in this database CREATE EXTENSION plpython3u; SELECT guardian.install_anomaly_detector(); Or switch the job off: SELECT guardian.set_job(''anomaly_detection'', p_enabled => false);'));
        RETURN 'anomaly detection is unavailable here (no plpython3u)';
    END IF;
    FOR r IN
        SELECT c.metric, c.subject, s.scored_to
          FROM (SELECT x.metric, x.subject, max(x.sampled_at) AS last
                  FROM guardian.metric_samples AS x
                 WHERE x.sampled_at > v_at - interval '1 day' AND x.sampled_at <= v_at
                 GROUP BY 1, 2) AS c
          LEFT JOIN guardian.anomaly_series AS s ON s.metric = c.metric AND s.subject = c.subject
         WHERE s.metric IS NULL OR c.last > s.scored_to OR s.dirty_from IS NOT NULL
         ORDER BY 1, 2
    LOOP
        SELECT * INTO v_cfg FROM guardian._anomaly_config(r.metric, r.subject);
        CONTINUE WHEN NOT v_cfg.enabled;
        BEGIN
            v_verdicts := v_verdicts + guardian._anomaly_score(r.metric, r.subject);
        EXCEPTION WHEN OTHERS THEN
            v_failed := v_failed || format('%s of %s: %s', r.metric, r.subject, SQLERRM);
            CONTINUE;
        END;
        v_series := v_series + 1;
        v_kind := coalesce((SELECT m.kind FROM guardian.metrics AS m WHERE m.name = r.metric), 'gauge');
        -- Anomalies among the new verdicts, and recent ones only: a first scoring of a long
        -- history does not alert on its past.
        FOR a IN
            SELECT s.sampled_at, x.value, s.expected, s.lower_bound, s.upper_bound, s.score, s.rule, s.predictor
              FROM guardian.anomaly_scores AS s
              CROSS JOIN LATERAL (SELECT y.value FROM guardian.metric_samples AS y
                           WHERE y.metric = s.metric AND y.subject = s.subject AND y.sampled_at = s.sampled_at LIMIT 1) AS x
             WHERE s.metric = r.metric AND s.subject = r.subject AND s.is_anomaly
               AND s.sampled_at > coalesce(r.scored_to, '-infinity') AND s.sampled_at >= v_at - interval '2 hours'
             ORDER BY s.sampled_at
        LOOP
            PERFORM guardian.raise_alert(
                CASE WHEN r.metric LIKE 'writes.%' THEN 'ACTIVITY_ANOMALY' ELSE 'METRIC_ANOMALY' END,
                CASE WHEN abs(a.score) >= 12 THEN 'HIGH' ELSE 'MEDIUM' END,
                guardian._anomaly_sentence(r.metric, r.subject, v_kind, a.sampled_at, a.value, a.lower_bound,
                                           a.upper_bound, a.predictor, v_cfg.time_zone),
                CASE WHEN r.metric LIKE 'writes.%' OR r.metric LIKE 'table.%' THEN r.subject END,
                NULL,
                jsonb_build_object('metric', r.metric, 'subject', r.subject, 'sampled_at', a.sampled_at,
                                   'value', a.value, 'expected', a.expected, 'lower_bound', a.lower_bound,
                                   'upper_bound', a.upper_bound, 'score', round(a.score::numeric, 2),
                                   'direction', CASE WHEN a.score > 0 THEN 'up' ELSE 'down' END,
                                   'rule', a.rule, 'baseline', a.predictor, 'time_zone', v_cfg.time_zone,
                                   'fix', format('If this was planned, declare it so it is not flagged again: SELECT guardian.expect(%L, %L, %L, %L, ''why'');',
                                                 r.metric, r.subject, a.sampled_at, a.sampled_at + interval '10 minutes'),
                                   'action_required', format('Check what happened at %s; if it was planned, declare it: SELECT guardian.expect(%L, %L, %L, %L, ''why'');',
                                                 a.sampled_at, r.metric, r.subject, a.sampled_at, a.sampled_at + interval '10 minutes')),
                md5('anomaly|' || r.metric || '|' || r.subject));
            v_alerts := v_alerts + 1;
        END LOOP;
    END LOOP;
    IF cardinality(v_failed) > 0 THEN
        PERFORM guardian.raise_alert('CHECK_DEGRADED', 'LOW',
            format('anomaly detection failed for %s series: %s', cardinality(v_failed), array_to_string(v_failed[1:5], '; ')),
            NULL, 'anomaly_detection',
            jsonb_build_object('check', 'anomaly_detection', 'failed', to_jsonb(v_failed[1:50]),
                               'fix', 'Read the errors; SELECT * FROM guardian.detect_anomalies(metric, subject, now() - interval ''1 day'', now()) shows one series'' error in full.'));
    END IF;
    RETURN format('%s series scored, %s new verdicts, %s anomalies%s', v_series, v_verdicts, v_alerts,
                  CASE WHEN cardinality(v_failed) > 0 THEN format(', %s failed', cardinality(v_failed)) ELSE '' END);
END
$$;
COMMENT ON FUNCTION guardian.run_anomaly_detection(timestamptz) IS
    'Job (anomaly_detection, every 10 minutes, after metrics_collect): score the new samples of every enabled series and raise ACTIVITY_ANOMALY (writes) or METRIC_ANOMALY (other metrics) for each recent anomalous sample, with its band and a sentence; one open alert per series.';

-- The anomalies of a period, newest first, each in a sentence; series that matter are brought up
-- to date first (as the job would).
CREATE FUNCTION guardian.anomalies(p_since timestamptz, p_metric text DEFAULT NULL, p_subject text DEFAULT NULL,
                                   p_until timestamptz DEFAULT NULL)
RETURNS TABLE (metric text, subject text, sampled_at timestamptz, value double precision, expected double precision,
               lower_bound double precision, upper_bound double precision, score double precision, rule text,
               baseline text, alert_type text, sentence text)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    v_until timestamptz := coalesce(p_until, now());
    r       record;
BEGIN
    PERFORM guardian._anomaly_check_range(p_since, v_until);
    IF p_metric IS NOT NULL THEN
        PERFORM guardian._anomaly_check_series(p_metric, coalesce(p_subject,
            (SELECT x.subject FROM guardian.metric_samples AS x WHERE x.metric = p_metric LIMIT 1)));
    END IF;
    IF p_subject IS NOT NULL AND NOT EXISTS (SELECT FROM guardian.metric_samples AS x WHERE x.subject = p_subject) THEN
        RAISE EXCEPTION 'no series has the subject %', quote_literal(p_subject)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'List the series with: SELECT DISTINCT metric, subject FROM guardian.metric_samples;';
    END IF;
    IF guardian.anomaly_detection_available() AND NOT current_setting('transaction_read_only')::boolean THEN
        FOR r IN
            SELECT c.metric, c.subject
              FROM (SELECT x.metric, x.subject, max(x.sampled_at) AS last FROM guardian.metric_samples AS x
                     WHERE x.sampled_at >= p_since
                       AND (p_metric IS NULL OR x.metric = p_metric) AND (p_subject IS NULL OR x.subject = p_subject)
                     GROUP BY 1, 2) AS c
              LEFT JOIN guardian.anomaly_series AS s ON s.metric = c.metric AND s.subject = c.subject
             WHERE s.metric IS NULL OR c.last > s.scored_to OR s.dirty_from IS NOT NULL
             ORDER BY 1, 2
        LOOP
            PERFORM guardian._anomaly_score(r.metric, r.subject);
        END LOOP;
    END IF;
    RETURN QUERY
    SELECT s.metric, s.subject, s.sampled_at, x.value, s.expected, s.lower_bound, s.upper_bound, s.score, s.rule,
           s.predictor, CASE WHEN s.metric LIKE 'writes.%' THEN 'ACTIVITY_ANOMALY' ELSE 'METRIC_ANOMALY' END,
           guardian._anomaly_sentence(s.metric, s.subject, coalesce(m.kind, 'gauge'), s.sampled_at, x.value,
                                      s.lower_bound, s.upper_bound, s.predictor, c.time_zone)
      FROM guardian.anomaly_scores AS s
      CROSS JOIN LATERAL (SELECT y.value FROM guardian.metric_samples AS y
                           WHERE y.metric = s.metric AND y.subject = s.subject AND y.sampled_at = s.sampled_at LIMIT 1) AS x
      LEFT JOIN guardian.metrics AS m ON m.name = s.metric
     CROSS JOIN LATERAL guardian._anomaly_config(s.metric, s.subject) AS c
     WHERE s.is_anomaly AND s.sampled_at BETWEEN p_since AND v_until
       AND (p_metric IS NULL OR s.metric = p_metric) AND (p_subject IS NULL OR s.subject = p_subject)
     ORDER BY s.sampled_at DESC, s.metric, s.subject;
END
$$;
COMMENT ON FUNCTION guardian.anomalies(timestamptz, text, text, timestamptz) IS
    'The anomalous samples from p_since to p_until (default now), newest first, optionally of one metric and/or subject, each with its band, the baseline it was judged against and a sentence. Series with unjudged samples are judged first.';

INSERT INTO guardian.jobs (name, schedule, command, description, max_lag, builtin)
VALUES ('anomaly_detection', '3-59/10 * * * *', 'SELECT guardian.run_anomaly_detection()',
        'Score the newest metric samples of every series; raise ACTIVITY_ANOMALY / METRIC_ANOMALY',
        '30 minutes', true);

-- The report's view of anomalies (guardian.report): how many samples were anomalous in the
-- period, by alert type and by series, and the latest ones. Verdicts are this database's, so
-- a report on another environment's alerts has none.
CREATE FUNCTION guardian._report_anomalies(p_from timestamptz, p_to timestamptz, p_here boolean)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH found AS (
        SELECT s.metric, s.subject, s.sampled_at, x.value, s.lower_bound, s.upper_bound, s.score,
               CASE WHEN s.metric LIKE 'writes.%' THEN 'ACTIVITY_ANOMALY' ELSE 'METRIC_ANOMALY' END AS type
          FROM guardian.anomaly_scores AS s
          CROSS JOIN LATERAL (SELECT y.value FROM guardian.metric_samples AS y
                           WHERE y.metric = s.metric AND y.subject = s.subject AND y.sampled_at = s.sampled_at LIMIT 1) AS x
         WHERE p_here AND s.is_anomaly AND s.sampled_at >= p_from AND s.sampled_at < p_to
    )
    SELECT jsonb_build_object(
        'samples', (SELECT count(*) FROM found),
        'by_type', jsonb_build_object(
            'ACTIVITY_ANOMALY', (SELECT count(*) FROM found WHERE type = 'ACTIVITY_ANOMALY'),
            'METRIC_ANOMALY', (SELECT count(*) FROM found WHERE type = 'METRIC_ANOMALY')),
        'top_series', (SELECT coalesce(jsonb_agg(jsonb_build_object('value', t.series, 'alerts', t.n) ORDER BY t.n DESC, t.series), '[]')
                         FROM (SELECT f.metric || ' ' || f.subject AS series, count(*) AS n FROM found AS f
                                GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 5) AS t),
        'latest', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                              'sampled_at', l.sampled_at, 'metric', l.metric, 'subject', l.subject, 'value', l.value,
                              'lower_bound', l.lower_bound, 'upper_bound', l.upper_bound,
                              'score', round(l.score::numeric, 2), 'type', l.type) ORDER BY l.sampled_at DESC), '[]')
                     FROM (SELECT * FROM found ORDER BY sampled_at DESC LIMIT 10) AS l))
$$;
COMMENT ON FUNCTION guardian._report_anomalies(timestamptz, timestamptz, boolean) IS
    'Internal (guardian.report): anomalous samples of the period by alert type and series, and the latest ten.';

-- Forecasts and predictive alerts: a robust linear trend over the recent history of a series
-- (guardian.metric_samples), its expected value with a band, and the health checks that say
-- when a sequence, the transaction-ID age, a table, the connections or the disk will reach
-- their limit, before they do.
--
-- Why the fit looks the way it does (forecast flapping: kubernetes-mixin#98, netdata#859):
--   * a long window (7 days by default), so a cleanup sawtooth or a daily cycle averages out;
--   * the window is cut into at most 100 equal time buckets and each bucket is its median, so
--     a cron burst moves one point at most;
--   * Theil-Sen: the slope is the median of the slopes between every two points, the level the
--     median of what is left; half the points can be wrong without moving it much;
--   * a prediction is only made when the rise over the window stands clear of the scatter
--     around the line (forecast.min_trend_to_noise), and when the last day alone (a second fit
--     over forecast.recent_hours) also arrives within the horizon: a trend that stopped
--     resolves its alert within a day, a burst of the last day alone raises none;
--   * an open prediction is kept until its arrival moves past the horizon by a margin
--     (forecast.hysteresis_pct), so it does not come and go at the edge.

INSERT INTO guardian.metrics (name, kind, unit, description, builtin) VALUES
    ('disk.free', 'gauge', 'bytes', 'Free space of the file system holding the data directory, as the server may use it (subject: this database''s name; needs PL/Python)', true),
    ('disk.size', 'gauge', 'bytes', 'Size of the file system holding the data directory (subject: this database''s name; needs PL/Python)', true);

INSERT INTO guardian.parameters (name, default_value, min_value, max_value, unit, description, not_above) VALUES
    ('forecast.window_hours', 168, 2, 8760, 'hours', 'Forecasts fit the trend of this much recent history', NULL),
    ('forecast.recent_hours', 24, 1, 8760, 'hours', 'A prediction also needs the trend of this much recent history alone to arrive within the horizon', 'forecast.window_hours'),
    ('forecast.min_history_hours', 6, 1, 8760, 'hours', 'A forecast needs samples spanning at least this long', 'forecast.window_hours'),
    ('forecast.min_samples', 12, 3, 1000000, 'samples', 'A forecast needs at least this many samples in its window', NULL),
    ('forecast.min_trend_to_noise', 3, 0, 1000, 'ratio', 'Predict only when the rise over the window is at least this many times the scatter around the trend', NULL),
    ('forecast.hysteresis_pct', 25, 0, 1000, 'percent', 'An open prediction stays open until its arrival is this much beyond the warning horizon', NULL),
    ('forecast.max_horizon_days', 730, 1, 36500, 'days', 'guardian.forecast() looks at most this far ahead', NULL),
    ('health.sequences_forecast.warn_days', 30, 1, 3650, 'days', 'Sequence predicted to reach its limit within this many days: warning', NULL),
    ('health.sequences_forecast.crit_days', 7, 0, 3650, 'days', 'Sequence predicted to reach its limit within this many days: high', 'health.sequences_forecast.warn_days'),
    ('health.sequences_forecast.limit_pct', 100, 1, 100, 'percent', 'Share of a sequence''s range whose arrival is predicted', NULL),
    ('health.xid_wraparound_forecast.warn_days', 30, 1, 3650, 'days', 'Transaction-ID age predicted to reach the limit within this many days: warning', NULL),
    ('health.xid_wraparound_forecast.crit_days', 7, 0, 3650, 'days', 'Transaction-ID age predicted to reach the limit within this many days: high', 'health.xid_wraparound_forecast.warn_days'),
    ('health.xid_wraparound_forecast.limit_age', 2144483647, 1000000, 2147483647, 'transactions', 'Transaction-ID age whose arrival is predicted (default: where PostgreSQL stops assigning transaction IDs, 2^31 - 1 less 3 million)', NULL),
    ('health.table_growth_forecast.warn_days', 30, 1, 3650, 'days', 'Table predicted to reach its growth limit within this many days: warning', NULL),
    ('health.table_growth_forecast.crit_days', 7, 0, 3650, 'days', 'Table predicted to reach its growth limit within this many days: high', 'health.table_growth_forecast.warn_days'),
    ('health.table_growth_forecast.factor', 2, 1.01, 1000, 'times', 'Predict when a table reaches this multiple of its size now (2: it doubles)', NULL),
    ('health.table_growth_forecast.limit_bytes', 0, 0, 1e15, 'bytes', 'Also predict when a table reaches this size (0: no absolute limit)', NULL),
    ('health.table_growth_forecast.min_bytes', 1073741824, 0, 1e15, 'bytes', 'Ignore tables smaller than this', NULL),
    ('health.connections_forecast.warn_days', 30, 1, 3650, 'days', 'Connections predicted to reach the available ones within this many days: warning', NULL),
    ('health.connections_forecast.crit_days', 7, 0, 3650, 'days', 'Connections predicted to reach the available ones within this many days: high', 'health.connections_forecast.warn_days'),
    ('health.connections_forecast.limit_pct', 100, 1, 100, 'percent', 'Share of the available connections (max_connections less the superuser reserve) whose arrival is predicted', NULL),
    ('health.disk_space_forecast.warn_days', 30, 1, 3650, 'days', 'Data directory file system predicted to fill within this many days: warning', NULL),
    ('health.disk_space_forecast.crit_days', 7, 0, 3650, 'days', 'Data directory file system predicted to fill within this many days: high', 'health.disk_space_forecast.warn_days'),
    ('health.disk_space_forecast.reserve_pct', 0, 0, 50, 'percent', 'Count the file system as full when this share of it is left (0: when nothing is left)', NULL);

-- The trend of one series between two moments. Times are seconds from the first sample
-- (origin), so the fit is the value at the origin (intercept) and a slope per second.
CREATE FUNCTION guardian._forecast_fit(p_metric text, p_subject text, p_from timestamptz, p_to timestamptz)
RETURNS TABLE (
    samples    integer,
    points     integer,
    fit_from   timestamptz,
    fit_to     timestamptz,
    origin     double precision,
    slope      double precision,
    intercept  double precision,
    spread     double precision,
    r2         double precision,
    x_mean     double precision,
    x_sxx      double precision,
    last_value double precision)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH raw AS (
        SELECT extract(epoch FROM s.sampled_at)::double precision AS t, s.value AS v
          FROM guardian.metric_samples AS s
         WHERE s.metric = p_metric AND s.subject = p_subject
           AND s.sampled_at > p_from AND s.sampled_at <= p_to
    ), span AS (
        SELECT min(r.t) AS t0, max(r.t) AS t1, count(*)::integer AS n FROM raw AS r
    ), pts AS (
        -- At most 100 points: the median of each equal time bucket (a burst moves one point).
        SELECT avg(r.t) - sp.t0 AS x, percentile_cont(0.5) WITHIN GROUP (ORDER BY r.v) AS y
          FROM raw AS r CROSS JOIN span AS sp
         GROUP BY sp.t0, least(floor(100 * (r.t - sp.t0) / nullif(sp.t1 - sp.t0, 0)), 99)
    ), theil_sen AS (
        SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY (b.y - a.y) / (b.x - a.x)) AS b
          FROM pts AS a JOIN pts AS b ON b.x > a.x
    ), fit AS (
        SELECT ts.b, percentile_cont(0.5) WITHIN GROUP (ORDER BY p.y - ts.b * p.x) AS a
          FROM pts AS p CROSS JOIN theil_sen AS ts
         GROUP BY ts.b
    ), res AS (
        SELECT r.v, r.v - (f.a + f.b * (r.t - sp.t0)) AS e
          FROM raw AS r CROSS JOIN span AS sp CROSS JOIN fit AS f
    )
    SELECT sp.n, (SELECT count(*)::integer FROM pts), to_timestamp(sp.t0), to_timestamp(sp.t1), sp.t0,
           f.b, f.a,
           -- the scatter around the line, robustly: 1.4826 times the median absolute residual
           (SELECT 1.4826 * percentile_cont(0.5) WITHIN GROUP (ORDER BY abs(x.e)) FROM res AS x),
           (SELECT CASE WHEN var_pop(x.v) > 0 THEN greatest(0, 1 - avg(x.e * x.e) / var_pop(x.v)) END FROM res AS x),
           (SELECT avg(p.x) FROM pts AS p),
           (SELECT var_pop(p.x) * count(*) FROM pts AS p),
           (SELECT r.v FROM raw AS r ORDER BY r.t DESC LIMIT 1)
      FROM span AS sp LEFT JOIN fit AS f ON true
$$;
COMMENT ON FUNCTION guardian._forecast_fit(text, text, timestamptz, timestamptz) IS
    'Internal: the Theil-Sen trend of a series between two moments, over at most 100 bucket medians: slope per second from the first sample, level there, robust scatter of the samples around it, r2, and what the band needs.';

CREATE FUNCTION guardian.forecast(p_metric text, p_subject text, p_horizon interval)
RETURNS TABLE (
    forecast_at   timestamptz,
    expected      double precision,
    lower_bound   double precision,
    upper_bound   double precision,
    slope_per_day double precision,
    r2            double precision,
    spread        double precision,
    samples       integer,
    fit_from      timestamptz,
    fit_to        timestamptz,
    method        text)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_window      interval := guardian.param('forecast.window_hours')::double precision * interval '1 hour';
    v_min_history interval := guardian.param('forecast.min_history_hours')::double precision * interval '1 hour';
    v_min_samples integer := guardian.param('forecast.min_samples');
    v_max_days    numeric := guardian.param('forecast.max_horizon_days');
    v_last        timestamptz;
    v_subjects    text;
    v_fit         record;
    v_start       timestamptz;
    v_x           double precision;
    v_half        double precision;
BEGIN
    IF p_metric IS NULL OR p_subject IS NULL THEN
        RAISE EXCEPTION 'a forecast needs a metric and a subject, not %/%', coalesce(p_metric, 'NULL'), coalesce(p_subject, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'For example: SELECT * FROM guardian.forecast(''database.size'', current_database(), ''30 days'');';
    END IF;
    IF p_horizon IS NULL OR p_horizon <= interval '0' THEN
        RAISE EXCEPTION 'forecast horizon % is not a positive interval', coalesce(p_horizon::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Look ahead by a positive interval, for example ''7 days''.';
    END IF;
    IF p_horizon > v_max_days * interval '1 day' THEN
        RAISE EXCEPTION 'forecast horizon % is beyond the longest allowed, % days', p_horizon, v_max_days
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A straight line fitted to days of history says little about years ahead.',
                  HINT = format('Look ahead at most %s days, or raise the limit: SELECT guardian.set_param(''forecast.max_horizon_days'', %s);',
                                v_max_days, least(ceil(extract(epoch FROM p_horizon) / 86400), 36500));
    END IF;
    SELECT max(s.sampled_at) INTO v_last
      FROM guardian.metric_samples AS s WHERE s.metric = p_metric AND s.subject = p_subject;
    IF v_last IS NULL THEN
        SELECT string_agg(x.subject, ', ') INTO v_subjects
          FROM (SELECT DISTINCT s.subject FROM guardian.metric_samples AS s
                 WHERE s.metric = p_metric ORDER BY s.subject LIMIT 5) AS x;
        IF v_subjects IS NULL THEN
            RAISE EXCEPTION 'no samples of metric % in guardian.metric_samples', quote_literal(p_metric)
                USING ERRCODE = 'no_data_found',
                      HINT = 'List the series with: SELECT metric, subject, count(*) FROM guardian.metric_samples GROUP BY 1, 2 ORDER BY 1, 2;';
        END IF;
        RAISE EXCEPTION 'no samples of metric % for subject %', quote_literal(p_metric), quote_literal(p_subject)
            USING ERRCODE = 'no_data_found',
                  DETAIL = format('Subjects of %s include: %s.', p_metric, v_subjects),
                  HINT = format('List them with: SELECT DISTINCT subject FROM guardian.metric_samples WHERE metric = %L;', p_metric);
    END IF;

    -- The history window ends at the newest sample; the forecast starts now (or then, if later).
    SELECT * INTO v_fit FROM guardian._forecast_fit(p_metric, p_subject, v_last - v_window, v_last) AS f;
    IF v_fit.samples < v_min_samples OR v_fit.fit_to - v_fit.fit_from < v_min_history OR v_fit.slope IS NULL THEN
        RAISE EXCEPTION 'series %/% has too little history for a forecast: % samples spanning % (newest %)',
                        p_metric, p_subject, v_fit.samples, date_trunc('second', v_fit.fit_to - v_fit.fit_from), v_last
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('A forecast needs at least %s samples spanning %s within the %s before the newest sample.',
                                  v_min_samples, v_min_history, v_window),
                  HINT = 'Wait for more samples (metrics_collect takes one every 10 minutes), or lower the need: SELECT guardian.set_param(''forecast.min_history_hours'', ...);';
    END IF;

    v_start := greatest(now(), v_last);
    FOR i IN 0 .. 12 LOOP
        forecast_at := v_start + p_horizon * (i / 12.0);
        v_x := extract(epoch FROM forecast_at)::double precision - v_fit.origin;
        expected := v_fit.intercept + v_fit.slope * v_x;
        -- A prediction band (about 95 %) from the scatter around the line, widening with the
        -- distance from the middle of the history as the slope's uncertainty adds up.
        v_half := 1.96 * v_fit.spread
                  * sqrt(1 + 1.0 / v_fit.points + (v_x - v_fit.x_mean) ^ 2 / nullif(v_fit.x_sxx, 0));
        lower_bound := expected - coalesce(v_half, 0);
        upper_bound := expected + coalesce(v_half, 0);
        slope_per_day := v_fit.slope * 86400;
        r2 := v_fit.r2;
        spread := v_fit.spread;
        samples := v_fit.samples;
        fit_from := v_fit.fit_from;
        fit_to := v_fit.fit_to;
        method := 'theil-sen';
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION guardian.forecast(text, text, interval) IS
    'Forecast of a series (metric, subject) from now to now + horizon in 12 steps: expected value and a ~95% band, from a Theil-Sen trend over the last forecast.window_hours of samples (slope per day, r2, scatter, samples and fit window as evidence). Errors name unknown series, too little history and bad horizons.';

-- Subjects of a metric worth fitting: enough history in the window, a recent sample, and an
-- ordinary least-squares slope heading the right way (cheap, before the robust fit).
CREATE FUNCTION guardian._forecast_candidates(p_metric text, p_rising boolean, p_at timestamptz)
RETURNS TABLE (subject text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.subject
      FROM guardian.metric_samples AS s
     WHERE s.metric = p_metric
       AND s.sampled_at > p_at - guardian.param('forecast.window_hours')::double precision * interval '1 hour'
       AND s.sampled_at <= p_at
     GROUP BY s.subject
    HAVING count(*) >= guardian.param('forecast.min_samples')
       AND max(s.sampled_at) - min(s.sampled_at) >= guardian.param('forecast.min_history_hours')::double precision * interval '1 hour'
       AND max(s.sampled_at) > p_at - guardian.param('forecast.recent_hours')::double precision * interval '1 hour'
       AND regr_slope(s.value, extract(epoch FROM s.sampled_at)) * CASE WHEN p_rising THEN 1 ELSE -1 END > 0
     ORDER BY s.subject
$$;
COMMENT ON FUNCTION guardian._forecast_candidates(text, boolean, timestamptz) IS
    'Internal: the subjects of a metric with enough recent history whose least-squares trend heads up (or down): the only ones the predictive checks fit.';

-- When a series reaches a limit (p_limit, and/or p_factor times its level now), if both the
-- whole window and its recent part say it will within p_horizon; no row otherwise.
CREATE FUNCTION guardian._forecast_arrival(
    p_metric text, p_subject text, p_limit double precision, p_factor double precision,
    p_rising boolean, p_horizon interval, p_at timestamptz DEFAULT NULL)
RETURNS TABLE (arrival_at timestamptz, limit_value double precision, fitted_now double precision, evidence jsonb)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_at          timestamptz := coalesce(p_at, now());
    v_window      interval := guardian.param('forecast.window_hours')::double precision * interval '1 hour';
    v_recent      interval := guardian.param('forecast.recent_hours')::double precision * interval '1 hour';
    v_min_history interval := guardian.param('forecast.min_history_hours')::double precision * interval '1 hour';
    v_min_samples integer := guardian.param('forecast.min_samples');
    v_min_ttn     double precision := guardian.param('forecast.min_trend_to_noise');
    v_dir         double precision := CASE WHEN p_rising THEN 1 ELSE -1 END;
    v_now         double precision := extract(epoch FROM v_at);
    v_end         double precision := extract(epoch FROM v_at + p_horizon);
    v_fit         record;
    v_rec         record;
    v_limit       double precision := p_limit;
    v_ttn         double precision;
    v_long        double precision;
    v_short       double precision;
BEGIN
    SELECT * INTO v_fit FROM guardian._forecast_fit(p_metric, p_subject, v_at - v_window, v_at) AS f;
    IF NOT FOUND OR v_fit.samples < v_min_samples OR v_fit.fit_to - v_fit.fit_from < v_min_history
       OR v_fit.slope IS NULL OR v_dir * v_fit.slope <= 0 THEN
        RETURN;
    END IF;
    fitted_now := v_fit.intercept + v_fit.slope * (v_now - v_fit.origin);
    IF p_factor IS NOT NULL THEN
        v_limit := CASE WHEN p_rising THEN least(coalesce(v_limit, 'Infinity'), p_factor * fitted_now)
                        ELSE greatest(coalesce(v_limit, '-Infinity'), p_factor * fitted_now) END;
    END IF;
    IF v_limit IS NULL THEN
        RETURN;
    END IF;
    -- The rise over the window must stand clear of the scatter (a sawtooth's does not).
    v_ttn := abs(v_fit.slope) * extract(epoch FROM v_fit.fit_to - v_fit.fit_from) / nullif(v_fit.spread, 0);
    IF v_ttn < v_min_ttn THEN
        RETURN;
    END IF;
    v_long := v_fit.origin + (v_limit - v_fit.intercept) / v_fit.slope;
    IF v_long > v_end THEN
        RETURN;
    END IF;
    -- The recent part alone must agree (a trend that stopped, or a burst of the last day alone).
    IF v_recent < v_window THEN
        SELECT * INTO v_rec FROM guardian._forecast_fit(p_metric, p_subject, v_at - v_recent, v_at) AS f;
    ELSE
        v_rec := v_fit;
    END IF;
    IF v_rec.samples < 3 OR v_rec.slope IS NULL OR v_dir * v_rec.slope <= 0 THEN
        RETURN;
    END IF;
    v_short := v_rec.origin + (v_limit - v_rec.intercept) / v_rec.slope;
    IF v_short > v_end THEN
        RETURN;
    END IF;
    arrival_at := to_timestamp(greatest(v_long, v_short, v_now));
    limit_value := v_limit;
    evidence := jsonb_build_object(
        'method', 'theil-sen',
        'eta', arrival_at,
        'eta_days', round(((extract(epoch FROM arrival_at) - v_now) / 86400)::numeric, 2),
        'limit', v_limit,
        'current_value', fitted_now,
        'last_value', v_fit.last_value,
        'slope_per_day', v_fit.slope * 86400,
        'recent_slope_per_day', v_rec.slope * 86400,
        'window_hours', extract(epoch FROM v_window) / 3600,
        'recent_hours', extract(epoch FROM v_recent) / 3600,
        'fit_from', v_fit.fit_from,
        'fit_to', v_fit.fit_to,
        'samples', v_fit.samples,
        'r2', round(v_fit.r2::numeric, 4),
        'spread', v_fit.spread,
        'trend_to_noise', CASE WHEN v_ttn IS NOT NULL THEN round(v_ttn::numeric, 1) END);
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION guardian._forecast_arrival(text, text, double precision, double precision, boolean, interval, timestamptz) IS
    'Internal: when a series reaches a limit (absolute, or a multiple of its level now), if the trend over forecast.window_hours stands clear of the scatter and both it and the trend over forecast.recent_hours arrive within the horizon; the later arrival and the evidence.';

-- The horizon a prediction must arrive within: the warning horizon, stretched by
-- forecast.hysteresis_pct while its alert is open so it does not come and go at the edge.
CREATE FUNCTION guardian._forecast_horizon(p_check text, p_key text, p_warn_days numeric)
RETURNS interval
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p_warn_days * interval '1 day'
           * CASE WHEN EXISTS (SELECT FROM guardian.monitoring_alerts AS a
                                WHERE a.resolved_at IS NULL
                                  AND a.fingerprint = guardian._finding_fingerprint(p_check, p_key))
                  THEN 1 + guardian.param('forecast.hysteresis_pct') / 100 ELSE 1 END
$$;
COMMENT ON FUNCTION guardian._forecast_horizon(text, text, numeric) IS
    'Internal: the horizon of a predictive check for one subject (the warning days, longer by forecast.hysteresis_pct while its alert is open).';

CREATE FUNCTION guardian._forecast_when(p_arrival timestamptz, p_at timestamptz)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('around %s UTC (%s)', to_char(p_arrival AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'),
                  CASE WHEN p_arrival - p_at < interval '1 hour' THEN 'within the hour'
                       WHEN p_arrival - p_at < interval '2 days'
                       THEN format('in %s hours', round(extract(epoch FROM p_arrival - p_at) / 3600))
                       ELSE format('in %s days', round(extract(epoch FROM p_arrival - p_at) / 86400, 1)) END)
$$;
COMMENT ON FUNCTION guardian._forecast_when(timestamptz, timestamptz) IS
    'Internal: an estimated time of arrival as people read it: "around 2026-05-03 14:00 UTC (in 12.3 days)".';

CREATE FUNCTION guardian._check_sequences_forecast()
RETURNS SETOF guardian.finding
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_warn    numeric := guardian.param('health.sequences_forecast.warn_days');
    v_crit    numeric := guardian.param('health.sequences_forecast.crit_days');
    v_limit   numeric := guardian.param('health.sequences_forecast.limit_pct');
    v_at      timestamptz := now();
    v_subject text;
    v_p       record;
BEGIN
    FOR v_subject IN SELECT c.subject FROM guardian._forecast_candidates('sequence.used', true, v_at) AS c LOOP
        SELECT * INTO v_p FROM guardian._forecast_arrival('sequence.used', v_subject, v_limit, NULL, true,
            guardian._forecast_horizon('sequences_forecast', v_subject, v_warn), v_at) AS p;
        CONTINUE WHEN NOT FOUND;
        RETURN QUERY SELECT (ROW('sequences_forecast', 'SEQUENCE_EXHAUSTION_PREDICTED',
            CASE WHEN v_p.arrival_at <= v_at + v_crit * interval '1 day' THEN 'HIGH' ELSE 'MEDIUM' END,
            v_subject, NULL,
            format('sequence %s will have used %s%% of its range %s: %s%% used now, %s%s points a day over the last %s days',
                   v_subject, v_limit, guardian._forecast_when(v_p.arrival_at, v_at),
                   round(v_p.fitted_now::numeric, 2), '+', round((v_p.evidence ->> 'slope_per_day')::numeric, 3),
                   round((v_p.evidence ->> 'window_hours')::numeric / 24, 1)),
            format('Move it to bigint before then: ALTER SEQUENCE %s AS bigint; and ALTER TABLE ... ALTER COLUMN ... TYPE bigint for the column it feeds; or find what takes values so fast (rolled-back inserts use them up too).', v_subject),
            v_p.evidence || jsonb_build_object('sequence', v_subject, 'limit_pct', v_limit,
                                               'warn_days', v_warn, 'crit_days', v_crit),
            v_subject)::guardian.finding).*;
    END LOOP;
END
$$;
COMMENT ON FUNCTION guardian._check_sequences_forecast() IS
    'Check sequences_forecast: sequences whose sequence.used trend reaches limit_pct of their range within warn_days (SEQUENCE_EXHAUSTION_PREDICTED).';

CREATE FUNCTION guardian._check_xid_wraparound_forecast()
RETURNS SETOF guardian.finding
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_warn     numeric := guardian.param('health.xid_wraparound_forecast.warn_days');
    v_crit     numeric := guardian.param('health.xid_wraparound_forecast.crit_days');
    v_limit    numeric := guardian.param('health.xid_wraparound_forecast.limit_age');
    v_warn_age numeric := guardian.param('health.xid_wraparound.warn_age');
    v_freeze   numeric := current_setting('autovacuum_freeze_max_age')::numeric;
    v_at       timestamptz := now();
    v_subject  text;
    v_p        record;
    v_slope    double precision;
BEGIN
    FOR v_subject IN SELECT c.subject FROM guardian._forecast_candidates('xid.age', true, v_at) AS c LOOP
        SELECT * INTO v_p FROM guardian._forecast_arrival('xid.age', v_subject, v_limit, NULL, true,
            guardian._forecast_horizon('xid_wraparound_forecast', v_subject, v_warn), v_at) AS p;
        CONTINUE WHEN NOT FOUND;
        -- Below autovacuum_freeze_max_age a rising age is the normal climb before the
        -- anti-wraparound vacuum brings it down: only an age past it that keeps rising counts.
        CONTINUE WHEN v_p.fitted_now < v_freeze;
        v_slope := (v_p.evidence ->> 'slope_per_day')::double precision;
        RETURN QUERY SELECT (ROW('xid_wraparound_forecast', 'XID_WRAPAROUND_PREDICTED',
            CASE WHEN v_p.arrival_at <= v_at + v_crit * interval '1 day' THEN 'HIGH' ELSE 'MEDIUM' END,
            NULL, v_subject,
            format('transaction-ID age of database %s will reach %s %s%s: %s now (past autovacuum_freeze_max_age, %s) and rising by %s a day, so vacuum is not holding it back',
                   v_subject, v_limit, guardian._forecast_when(v_p.arrival_at, v_at),
                   CASE WHEN v_limit >= 2144483647 THEN ', where PostgreSQL stops assigning transaction IDs' END,
                   round(v_p.fitted_now::numeric), v_freeze, round(v_slope::numeric)),
            format('Run VACUUM (FREEZE, VERBOSE) in database %s now, and find what holds vacuum back: long transactions (pg_stat_activity.backend_xmin), prepared transactions (pg_prepared_xacts), stale replication slots (pg_replication_slots.xmin); check autovacuum keeps up (autovacuum_max_workers, autovacuum_vacuum_cost_limit).', v_subject),
            v_p.evidence || jsonb_build_object(
                'database', v_subject, 'limit_age', v_limit, 'autovacuum_freeze_max_age', v_freeze,
                'warn_age', v_warn_age,
                'warn_age_eta', CASE WHEN v_p.fitted_now < v_warn_age
                                     THEN v_at + (v_warn_age - v_p.fitted_now) / v_slope * interval '1 day' END,
                'warn_days', v_warn, 'crit_days', v_crit),
            v_subject)::guardian.finding).*;
    END LOOP;
END
$$;
COMMENT ON FUNCTION guardian._check_xid_wraparound_forecast() IS
    'Check xid_wraparound_forecast: databases whose xid.age, already past autovacuum_freeze_max_age, trends to limit_age within warn_days (XID_WRAPAROUND_PREDICTED).';

CREATE FUNCTION guardian._check_table_growth_forecast()
RETURNS SETOF guardian.finding
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_warn    numeric := guardian.param('health.table_growth_forecast.warn_days');
    v_crit    numeric := guardian.param('health.table_growth_forecast.crit_days');
    v_factor  numeric := guardian.param('health.table_growth_forecast.factor');
    v_bytes   numeric := guardian.param('health.table_growth_forecast.limit_bytes');
    v_min     numeric := guardian.param('health.table_growth_forecast.min_bytes');
    v_at      timestamptz := now();
    v_subject text;
    v_p       record;
BEGIN
    FOR v_subject IN SELECT c.subject FROM guardian._forecast_candidates('table.size', true, v_at) AS c LOOP
        SELECT * INTO v_p FROM guardian._forecast_arrival('table.size', v_subject, nullif(v_bytes, 0), v_factor, true,
            guardian._forecast_horizon('table_growth_forecast', v_subject, v_warn), v_at) AS p;
        CONTINUE WHEN NOT FOUND OR v_p.fitted_now < v_min;
        RETURN QUERY SELECT (ROW('table_growth_forecast', 'TABLE_GROWTH_PREDICTED',
            CASE WHEN v_p.arrival_at <= v_at + v_crit * interval '1 day' THEN 'HIGH' ELSE 'MEDIUM' END,
            v_subject, NULL,
            format('table %s will reach %s (%s) %s: %s now, growing by %s a day',
                   v_subject, pg_size_pretty(v_p.limit_value::numeric),
                   CASE WHEN v_bytes > 0 AND v_p.limit_value = v_bytes THEN 'the limit health.table_growth_forecast.limit_bytes'
                        ELSE format('%s times its size now', v_factor) END,
                   guardian._forecast_when(v_p.arrival_at, v_at), pg_size_pretty(v_p.fitted_now::numeric),
                   pg_size_pretty(round((v_p.evidence ->> 'slope_per_day')::numeric))),
            format('Check what writes to %s and whether that growth is planned: add retention (delete or archive old rows, drop old partitions), and make sure the disk has room for it before then.', v_subject),
            v_p.evidence || jsonb_build_object('table', v_subject, 'factor', v_factor,
                                               'limit_bytes', nullif(v_bytes, 0), 'min_bytes', v_min,
                                               'warn_days', v_warn, 'crit_days', v_crit),
            v_subject)::guardian.finding).*;
    END LOOP;
END
$$;
COMMENT ON FUNCTION guardian._check_table_growth_forecast() IS
    'Check table_growth_forecast: tables of at least min_bytes whose table.size trend reaches factor times their size now (or limit_bytes) within warn_days (TABLE_GROWTH_PREDICTED).';

CREATE FUNCTION guardian._check_connections_forecast()
RETURNS SETOF guardian.finding
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_warn      numeric := guardian.param('health.connections_forecast.warn_days');
    v_crit      numeric := guardian.param('health.connections_forecast.crit_days');
    v_pct       numeric := guardian.param('health.connections_forecast.limit_pct');
    v_at        timestamptz := now();
    v_subject   text;
    v_available double precision;
    v_p         record;
BEGIN
    FOR v_subject IN SELECT c.subject FROM guardian._forecast_candidates('connections', true, v_at) AS c LOOP
        -- The newest connections.available of the series, else this server's.
        SELECT s.value INTO v_available FROM guardian.metric_samples AS s
         WHERE s.metric = 'connections.available' AND s.subject = v_subject
         ORDER BY s.sampled_at DESC LIMIT 1;
        v_available := coalesce(v_available, current_setting('max_connections')::double precision
                                             - current_setting('superuser_reserved_connections')::double precision);
        SELECT * INTO v_p FROM guardian._forecast_arrival('connections', v_subject, v_available * v_pct / 100, NULL, true,
            guardian._forecast_horizon('connections_forecast', v_subject, v_warn), v_at) AS p;
        CONTINUE WHEN NOT FOUND;
        RETURN QUERY SELECT (ROW('connections_forecast', 'CONNECTIONS_SATURATION_PREDICTED',
            CASE WHEN v_p.arrival_at <= v_at + v_crit * interval '1 day' THEN 'HIGH' ELSE 'MEDIUM' END,
            NULL, v_subject,
            format('client connections (seen from database %s) will reach %s, %s%% of the %s available, %s: %s now, rising by %s a day',
                   v_subject, round(v_p.limit_value::numeric), v_pct, v_available,
                   guardian._forecast_when(v_p.arrival_at, v_at), round(v_p.fitted_now::numeric, 1),
                   round((v_p.evidence ->> 'slope_per_day')::numeric, 1)),
            'Find sessions that pile up (SELECT usename, application_name, state, count(*) FROM pg_stat_activity GROUP BY 1, 2, 3 ORDER BY 4 DESC;): leaked or idle connections, a pool sized too large; put a pooler (PgBouncer) in front, set idle_session_timeout, or raise max_connections before then.',
            v_p.evidence || jsonb_build_object('available', v_available, 'limit_pct', v_pct,
                                               'warn_days', v_warn, 'crit_days', v_crit),
            v_subject)::guardian.finding).*;
    END LOOP;
END
$$;
COMMENT ON FUNCTION guardian._check_connections_forecast() IS
    'Check connections_forecast: client connections whose trend reaches limit_pct of connections.available within warn_days (CONNECTIONS_SATURATION_PREDICTED).';

-- Free space of the data directory's file system. Only PL/Python can ask the operating
-- system; install_disk_probe() creates the function with it where plpython3u exists (and a
-- superuser installs), else a PL/pgSQL stand-in that knows nothing. It takes no argument:
-- the only path it reads is the server's own data_directory setting.
CREATE FUNCTION guardian.install_disk_probe()
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_python  boolean := EXISTS (SELECT FROM pg_catalog.pg_language AS l WHERE l.lanname = 'plpython3u');
    v_super   boolean := coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles AS r WHERE r.rolname = CURRENT_USER), false);
    v_exists  boolean := EXISTS (SELECT FROM pg_catalog.pg_proc AS p
                                  WHERE p.pronamespace = 'guardian'::regnamespace AND p.proname = '_data_directory_space');
BEGIN
    IF v_python AND v_super THEN
        EXECUTE $fn$
CREATE OR REPLACE FUNCTION guardian._data_directory_space()
RETURNS TABLE (free_bytes bigint, size_bytes bigint)
LANGUAGE plpython3u
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $py$
import os
path = plpy.execute("SELECT pg_catalog.current_setting('data_directory') AS d")[0]["d"]
st = os.statvfs(path)
# f_bavail: what an unprivileged process (the server) may still use, not root's reserve.
return [(st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize)]
$py$
$fn$;
    ELSIF v_exists THEN
        RAISE EXCEPTION '%', CASE WHEN NOT v_python
                                  THEN format('PL/Python (plpython3u) is not installed in database %s', current_database())
                                  ELSE format('role %s may not create PL/Python functions', CURRENT_USER) END
            USING ERRCODE = CASE WHEN NOT v_python THEN 'feature_not_supported' ELSE 'insufficient_privilege' END,
                  HINT = 'As a superuser: install PL/Python on the server (Debian/Ubuntu: apt-get install postgresql-plpython3-15), then in this database: CREATE EXTENSION plpython3u; SELECT guardian.install_disk_probe();';
    ELSE
        EXECUTE $fn$
CREATE FUNCTION guardian._data_directory_space()
RETURNS TABLE (free_bytes bigint, size_bytes bigint)
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $body$
BEGIN
    -- No PL/Python here when pg_guardian was installed: the disk cannot be measured.
    RETURN QUERY SELECT NULL::bigint, NULL::bigint;
END
$body$
$fn$;
        RAISE NOTICE 'pg_guardian: no PL/Python (plpython3u) here: free disk space is not measured (disk_space_forecast reports CHECK_DEGRADED until a superuser runs CREATE EXTENSION plpython3u; SELECT guardian.install_disk_probe();)';
    END IF;
    EXECUTE $c$COMMENT ON FUNCTION guardian._data_directory_space() IS
        'Internal: free and total bytes of the file system holding the data directory (PL/Python os.statvfs; NULLs where pg_guardian was installed without plpython3u). Takes no input; runs as its caller (guardian_owner, which may read data_directory through pg_monitor).'$c$;
    RETURN CASE WHEN v_python AND v_super THEN 'disk probe: PL/Python' ELSE 'disk probe: unavailable (no plpython3u)' END;
END
$$;
COMMENT ON FUNCTION guardian.install_disk_probe() IS
    'Create the disk-space probe behind disk.free and DISK_FULL_PREDICTED: with PL/Python where plpython3u exists and a superuser runs it (run it again after CREATE EXTENSION plpython3u), else a stand-in that measures nothing.';
SELECT guardian.install_disk_probe();

CREATE FUNCTION guardian.disk_probe_available()
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce((SELECT l.lanname = 'plpython3u'
                       FROM pg_catalog.pg_proc AS p JOIN pg_catalog.pg_language AS l ON l.oid = p.prolang
                      WHERE p.pronamespace = 'guardian'::regnamespace AND p.proname = '_data_directory_space'), false)
$$;
COMMENT ON FUNCTION guardian.disk_probe_available() IS
    'Whether free disk space can be measured here (the probe was created with PL/Python).';

-- For guardian.collect_metrics(): the disk gauges now, or nothing (never an error: a probe
-- that cannot look must not cost the other samples).
CREATE FUNCTION guardian._disk_samples()
RETURNS TABLE (metric text, subject text, value double precision)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_free bigint;
    v_size bigint;
BEGIN
    IF NOT guardian.disk_probe_available() THEN
        RETURN;
    END IF;
    BEGIN
        SELECT d.free_bytes, d.size_bytes INTO v_free, v_size FROM guardian._data_directory_space() AS d;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'pg_guardian: free disk space not sampled: %', SQLERRM;
        RETURN;
    END;
    RETURN QUERY
    SELECT x.metric, current_database()::text, x.value
      FROM (VALUES ('disk.free', v_free::double precision), ('disk.size', v_size::double precision)) AS x(metric, value)
     WHERE x.value IS NOT NULL;
END
$$;
COMMENT ON FUNCTION guardian._disk_samples() IS
    'Internal (metrics_collect): the disk.free and disk.size gauges of the data directory''s file system now; none without PL/Python or when the probe fails (with a warning).';

CREATE FUNCTION guardian._check_disk_space_forecast()
RETURNS SETOF guardian.finding
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_warn    numeric := guardian.param('health.disk_space_forecast.warn_days');
    v_crit    numeric := guardian.param('health.disk_space_forecast.crit_days');
    v_reserve numeric := guardian.param('health.disk_space_forecast.reserve_pct');
    v_window  interval := guardian.param('forecast.window_hours')::double precision * interval '1 hour';
    v_at      timestamptz := now();
    v_subject text;
    v_size    double precision;
    v_p       record;
BEGIN
    IF NOT EXISTS (SELECT FROM guardian.metric_samples AS s
                    WHERE s.metric = 'disk.free' AND s.sampled_at > v_at - v_window) THEN
        IF NOT guardian.disk_probe_available() THEN
            -- Samples recorded from outside (guardian.record_metric) are forecast all the same.
            RETURN QUERY SELECT (ROW('disk_space_forecast', 'CHECK_DEGRADED', 'LOW', NULL, NULL,
                'free disk space is not measured here: pg_guardian was installed where PL/Python (plpython3u) did not exist, so there are no disk.free samples to forecast',
                'As a superuser: install PL/Python on the server (Debian/Ubuntu: apt-get install postgresql-plpython3-15), then in this database: CREATE EXTENSION plpython3u; SELECT guardian.install_disk_probe(); Where PL/Python is not offered (managed services), record the free bytes from outside every 10 minutes (SELECT guardian.record_metric(''disk.free'', current_database(), <bytes>);) or switch the check off: SELECT guardian.set_check_enabled(''disk_space_forecast'', false);',
                jsonb_build_object('plpython3u', EXISTS (SELECT FROM pg_catalog.pg_language AS l WHERE l.lanname = 'plpython3u')),
                NULL)::guardian.finding).*;
        ELSE
            -- No history yet: at least show that the probe can look (an error here is reported).
            PERFORM guardian._data_directory_space();
        END IF;
        RETURN;
    END IF;
    FOR v_subject IN SELECT c.subject FROM guardian._forecast_candidates('disk.free', false, v_at) AS c LOOP
        SELECT s.value INTO v_size FROM guardian.metric_samples AS s
         WHERE s.metric = 'disk.size' AND s.subject = v_subject
         ORDER BY s.sampled_at DESC LIMIT 1;
        SELECT * INTO v_p FROM guardian._forecast_arrival('disk.free', v_subject, coalesce(v_size, 0) * v_reserve / 100, NULL, false,
            guardian._forecast_horizon('disk_space_forecast', v_subject, v_warn), v_at) AS p;
        CONTINUE WHEN NOT FOUND;
        RETURN QUERY SELECT (ROW('disk_space_forecast', 'DISK_FULL_PREDICTED',
            CASE WHEN v_p.arrival_at <= v_at + v_crit * interval '1 day' THEN 'HIGH' ELSE 'MEDIUM' END,
            NULL, v_subject,
            format('the file system of the data directory (seen from database %s) will be %s %s: %s free now, shrinking by %s a day',
                   v_subject, CASE WHEN v_p.limit_value > 0 THEN format('down to its %s%% reserve (%s)', v_reserve, pg_size_pretty(v_p.limit_value::numeric)) ELSE 'full' END,
                   guardian._forecast_when(v_p.arrival_at, v_at), pg_size_pretty(v_p.fitted_now::numeric),
                   pg_size_pretty(round(-(v_p.evidence ->> 'slope_per_day')::numeric))),
            'Make room before then: find what grows (TABLE_GROWTH_PREDICTED, pg_database_size(), WAL kept by replication slots in pg_replication_slots, pg_ls_waldir()), delete or archive old data, drop unused indexes, or grow the volume. PostgreSQL stops (PANIC on WAL writes) when the disk is full.',
            v_p.evidence || jsonb_build_object('size_bytes', v_size, 'reserve_pct', v_reserve,
                                               'warn_days', v_warn, 'crit_days', v_crit),
            v_subject)::guardian.finding).*;
    END LOOP;
END
$$;
COMMENT ON FUNCTION guardian._check_disk_space_forecast() IS
    'Check disk_space_forecast: the data directory''s file system whose disk.free trend reaches reserve_pct of its size (default: empty) within warn_days (DISK_FULL_PREDICTED); CHECK_DEGRADED without PL/Python and without samples.';

INSERT INTO guardian.checks (name, category, function, description, is_condition, builtin, scope) VALUES
    ('sequences_forecast', 'health', 'guardian._check_sequences_forecast', 'Sequences predicted to run out, from their sequence.used trend (SEQUENCE_EXHAUSTION_PREDICTED)', true, true, 'database'),
    ('xid_wraparound_forecast', 'health', 'guardian._check_xid_wraparound_forecast', 'Transaction-ID age predicted to reach the wraparound limit, from its xid.age trend (XID_WRAPAROUND_PREDICTED)', true, true, 'database'),
    ('table_growth_forecast', 'health', 'guardian._check_table_growth_forecast', 'Tables predicted to double (or reach a size limit), from their table.size trend (TABLE_GROWTH_PREDICTED)', true, true, 'database'),
    ('connections_forecast', 'health', 'guardian._check_connections_forecast', 'Client connections predicted to reach the available ones, from their trend (CONNECTIONS_SATURATION_PREDICTED)', true, true, 'cluster'),
    ('disk_space_forecast', 'health', 'guardian._check_disk_space_forecast', 'Data directory file system predicted to fill, from its disk.free trend (DISK_FULL_PREDICTED; needs PL/Python)', true, true, 'cluster');

-- >>> sql/99_finish: owners and grants of the metric history
-- As a fresh install hands them over (99_finish/10_ownership.sql): tables, types and
-- SECURITY DEFINER functions to guardian_owner.
ALTER TABLE guardian.metrics OWNER TO guardian_owner;
ALTER TABLE guardian.metric_samples OWNER TO guardian_owner;
ALTER TABLE guardian.anomaly_series OWNER TO guardian_owner;
ALTER TABLE guardian.anomaly_scores OWNER TO guardian_owner;
ALTER TABLE guardian.anomaly_windows OWNER TO guardian_owner;
ALTER TABLE guardian.anomaly_settings OWNER TO guardian_owner;
ALTER TYPE guardian._anomaly_step OWNER TO guardian_owner;
ALTER FUNCTION guardian.record_metric(text, text, double precision, timestamptz) OWNER TO guardian_owner;
ALTER FUNCTION guardian._metric_retention(timestamptz) OWNER TO guardian_owner;
ALTER FUNCTION guardian.collect_metrics(timestamptz) OWNER TO guardian_owner;
ALTER FUNCTION guardian.set_anomaly_settings(text, text, boolean, double precision, text, text) OWNER TO guardian_owner;
ALTER FUNCTION guardian._anomaly_score(text, text) OWNER TO guardian_owner;
ALTER FUNCTION guardian._metric_samples_changed() OWNER TO guardian_owner;
ALTER FUNCTION guardian.detect_anomalies(text, text, timestamptz, timestamptz) OWNER TO guardian_owner;
ALTER FUNCTION guardian.backtest_anomalies(timestamptz[], double precision[], text, text, double precision) OWNER TO guardian_owner;
ALTER FUNCTION guardian._anomaly_window(text, text, text, timestamptz, timestamptz, text) OWNER TO guardian_owner;
ALTER FUNCTION guardian.expect(text, text, timestamptz, timestamptz, text) OWNER TO guardian_owner;
ALTER FUNCTION guardian.mark_incident(text, text, timestamptz, timestamptz, text) OWNER TO guardian_owner;
ALTER FUNCTION guardian.run_anomaly_detection(timestamptz) OWNER TO guardian_owner;
ALTER FUNCTION guardian.anomalies(timestamptz, text, text, timestamptz) OWNER TO guardian_owner;
ALTER FUNCTION guardian.forecast(text, text, interval) OWNER TO guardian_owner;
REVOKE EXECUTE ON FUNCTION
    guardian._sequence_usage(),
    guardian._metric_value_check(double precision),
    guardian.record_metric(text, text, double precision, timestamptz),
    guardian._metric_keep(),
    guardian._metric_retention(timestamptz),
    guardian.collect_metrics(timestamptz),
    guardian.install_anomaly_detector(),
    guardian._anomaly_resume(double precision[], double precision[], text, text, jsonb, jsonb, bytea[], double precision[], double precision[]),
    guardian.anomaly_detection_available(),
    guardian._anomaly_detector_version(),
    guardian._anomaly_config(text, text),
    guardian.set_anomaly_settings(text, text, boolean, double precision, text, text),
    guardian._anomaly_windows(text, text, text),
    guardian._anomaly_score(text, text),
    guardian._metric_samples_changed(),
    guardian._anomaly_check_series(text, text),
    guardian._anomaly_check_range(timestamptz, timestamptz),
    guardian.detect_anomalies(text, text, timestamptz, timestamptz),
    guardian._anomaly_fresh(timestamptz[], double precision[], text, text, double precision, double precision[], double precision[]),
    guardian.backtest_anomalies(timestamptz[], double precision[], text, text, double precision),
    guardian._anomaly_backtest_series(text, text, timestamptz),
    guardian._anomaly_window(text, text, text, timestamptz, timestamptz, text),
    guardian.expect(text, text, timestamptz, timestamptz, text),
    guardian.mark_incident(text, text, timestamptz, timestamptz, text),
    guardian._anomaly_sentence(text, text, text, timestamptz, double precision, double precision, double precision, text, text),
    guardian._anomaly_number(double precision),
    guardian.run_anomaly_detection(timestamptz),
    guardian.anomalies(timestamptz, text, text, timestamptz),
    guardian._report_anomalies(timestamptz, timestamptz, boolean),
    guardian._forecast_fit(text, text, timestamptz, timestamptz),
    guardian.forecast(text, text, interval),
    guardian._forecast_candidates(text, boolean, timestamptz),
    guardian._forecast_arrival(text, text, double precision, double precision, boolean, interval, timestamptz),
    guardian._forecast_horizon(text, text, numeric),
    guardian._forecast_when(timestamptz, timestamptz),
    guardian._check_sequences_forecast(),
    guardian._check_xid_wraparound_forecast(),
    guardian._check_table_growth_forecast(),
    guardian._check_connections_forecast(),
    guardian.install_disk_probe(),
    guardian._data_directory_space(),
    guardian.disk_probe_available(),
    guardian._disk_samples(),
    guardian._check_disk_space_forecast()
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    guardian._sequence_usage(),
    guardian._metric_value_check(double precision),
    guardian.record_metric(text, text, double precision, timestamptz),
    guardian._metric_keep(),
    guardian._metric_retention(timestamptz),
    guardian.collect_metrics(timestamptz),
    guardian.install_anomaly_detector(),
    guardian._anomaly_resume(double precision[], double precision[], text, text, jsonb, jsonb, bytea[], double precision[], double precision[]),
    guardian.anomaly_detection_available(),
    guardian._anomaly_detector_version(),
    guardian._anomaly_config(text, text),
    guardian.set_anomaly_settings(text, text, boolean, double precision, text, text),
    guardian._anomaly_windows(text, text, text),
    guardian._anomaly_score(text, text),
    guardian._metric_samples_changed(),
    guardian._anomaly_check_series(text, text),
    guardian._anomaly_check_range(timestamptz, timestamptz),
    guardian.detect_anomalies(text, text, timestamptz, timestamptz),
    guardian._anomaly_fresh(timestamptz[], double precision[], text, text, double precision, double precision[], double precision[]),
    guardian.backtest_anomalies(timestamptz[], double precision[], text, text, double precision),
    guardian._anomaly_backtest_series(text, text, timestamptz),
    guardian._anomaly_window(text, text, text, timestamptz, timestamptz, text),
    guardian.expect(text, text, timestamptz, timestamptz, text),
    guardian.mark_incident(text, text, timestamptz, timestamptz, text),
    guardian._anomaly_sentence(text, text, text, timestamptz, double precision, double precision, double precision, text, text),
    guardian._anomaly_number(double precision),
    guardian.run_anomaly_detection(timestamptz),
    guardian.anomalies(timestamptz, text, text, timestamptz),
    guardian._report_anomalies(timestamptz, timestamptz, boolean),
    guardian._forecast_fit(text, text, timestamptz, timestamptz),
    guardian.forecast(text, text, interval),
    guardian._forecast_candidates(text, boolean, timestamptz),
    guardian._forecast_arrival(text, text, double precision, double precision, boolean, interval, timestamptz),
    guardian._forecast_horizon(text, text, numeric),
    guardian._forecast_when(timestamptz, timestamptz),
    guardian._check_sequences_forecast(),
    guardian._check_xid_wraparound_forecast(),
    guardian._check_table_growth_forecast(),
    guardian._check_connections_forecast(),
    guardian.install_disk_probe(),
    guardian._data_directory_space(),
    guardian.disk_probe_available(),
    guardian._disk_samples(),
    guardian._check_disk_space_forecast()
    TO guardian_owner;
-- Metric history: readers see it, admins add their own samples and describe their metrics.
GRANT SELECT ON guardian.metrics, guardian.metric_samples TO guardian_reader;
GRANT INSERT, UPDATE, DELETE ON guardian.metric_samples TO guardian_admin;
GRANT INSERT, UPDATE, DELETE ON guardian.metrics TO guardian_admin;
GRANT EXECUTE ON FUNCTION guardian.record_metric(text, text, double precision, timestamptz) TO guardian_admin;

-- Anomaly detection: readers see verdicts and may backtest; admins declare windows and set
-- sensitivity. The detector itself (_anomaly_resume, PL/Python) is called only by the
-- guardian's own functions, as guardian_owner.
GRANT SELECT ON guardian.anomaly_series, guardian.anomaly_scores, guardian.anomaly_windows, guardian.anomaly_settings
    TO guardian_reader;
GRANT DELETE ON guardian.anomaly_windows TO guardian_admin;
GRANT UPDATE (enabled, sensitivity, time_zone), DELETE ON guardian.anomaly_settings TO guardian_admin;
GRANT EXECUTE ON FUNCTION guardian.detect_anomalies(text, text, timestamptz, timestamptz),
    guardian.backtest_anomalies(timestamptz[], double precision[], text, text, double precision),
    guardian.anomaly_detection_available()
    TO guardian_reader;
GRANT EXECUTE ON FUNCTION guardian.expect(text, text, timestamptz, timestamptz, text),
    guardian.mark_incident(text, text, timestamptz, timestamptz, text),
    guardian.set_anomaly_settings(text, text, boolean, double precision, text, text)
    TO guardian_admin;
GRANT EXECUTE ON FUNCTION guardian.anomalies(timestamptz, text, text, timestamptz) TO guardian_reader;
-- Forecasts: readers may forecast any series and see whether disk space can be measured.
-- guardian.forecast() is SECURITY DEFINER (guardian_owner, 10_ownership.sql) and reads only
-- guardian.metric_samples. The disk probe (guardian._data_directory_space(), PL/Python where
-- available) runs as its caller and only guardian_owner may call it (20_grants.sql), through
-- the metrics_collect job and the disk_space_forecast check; guardian.install_disk_probe()
-- creates PL/Python code, so it only works for a superuser.
GRANT EXECUTE ON FUNCTION guardian.forecast(text, text, interval), guardian.disk_probe_available()
    TO guardian_reader;

-- >>> sql/20_contamination: e-mail domains are looked up, not searched for (curated lists run
-- to thousands: '@=' needles, guardian._mail_domains), and the rule packs' curated lists and
-- test-tool rules. Where the C library is not loaded, the SQL matcher learns '@=' too.
DO $fallback$
BEGIN
    IF (SELECT l.lanname FROM pg_catalog.pg_proc AS p JOIN pg_catalog.pg_language AS l ON l.oid = p.prolang
         WHERE p.oid = 'guardian._contains_any(text, text[])'::pg_catalog.regprocedure) = 'sql' THEN
        EXECUTE $create$
CREATE OR REPLACE FUNCTION guardian._contains_any(p_value text, p_needles text[])
    RETURNS boolean
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $sql$
        -- The C search's meaning (extension/src/needles.c). Needles are looked for in the value's
        -- folded text (v): what the precise rules see (NFKC, U+0130 lowered, runs of any white
        -- space \s may match in some locale as one space), with every other non-ASCII character
        -- as chr(127), which is no word character; ASCII letters compare case-insensitively. A
        -- word character is an ASCII letter or digit, or any non-ASCII character. When the value
        -- and a needle hold non-ASCII characters, lower(NFKC(value)) with white space collapsed
        -- (v2) is searched too.
        -- '@=' needles: the value's e-mail domain (after the last '@', without trailing white
        -- space, '.' or '>') or a parent domain of it is the needle's; a value with non-ASCII
        -- characters matches any (folding could make it any address).
        -- The domain (in lower case) and its parents are looked up among the needles, which are
        -- written in lower case as rules' anchors are: a needle with capitals never matches.
        SELECT (p_value ~ '[^\x01-\x7f]'
                AND EXISTS (SELECT FROM unnest(p_needles) AS n(needle) WHERE length(n.needle) > 2 AND left(n.needle, 2) = '@='))
            OR EXISTS (
            SELECT FROM (SELECT translate(rtrim(substring(p_value FROM '@([^@]*)$'), E' \t\n\v\f\r\x1c\x1d\x1e\x1f.>'),
                                          'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz') AS d) AS x,
                 LATERAL (SELECT x.d AS s
                          UNION ALL
                          SELECT substr(x.d, g.i + 1) FROM generate_series(1, length(x.d)) AS g(i)
                           WHERE substr(x.d, g.i, 1) = '.') AS sfx
             WHERE x.d IS NOT NULL AND sfx.s <> ''
               AND '@=' || sfx.s = ANY (p_needles))
        OR EXISTS (
            SELECT FROM (SELECT f0.*, regexp_replace(f0.v, '[^0-9]', '', 'g') AS dg FROM (SELECT translate(regexp_replace(regexp_replace(
                                    replace(normalize(p_value, NFKC), chr(304), lower(chr(304))),
                                    '[\t\n\v\f\r\x1c-\x1f \u0085\u00a0\u1680\u180e\u2000-\u200b\u2028\u2029\u202f\u205f\u3000]+', ' ', 'g'),
                                    '[^\x01-\x7f]', chr(127), 'g'),
                                 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz') AS v,
                         CASE WHEN p_value ~ '[^\x01-\x7f]'
                               AND EXISTS (SELECT FROM unnest(p_needles) AS x(needle) WHERE x.needle ~ '[^\x01-\x7f]')
                              THEN translate(regexp_replace(lower(normalize(p_value, NFKC)),
                                       '[\t\n\v\f\r\x1c-\x1f \u0085\u00a0\u1680\u180e\u2000-\u200b\u2028\u2029\u202f\u205f\u3000]+', ' ', 'g'),
                                   'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz') END AS v2) AS f0) AS f,
                 unnest(p_needles) AS n(needle),
                 -- '#': digits, '?' any digit after the first digit, a trailing '$' the end of the digits
                 LATERAL (SELECT length(n.needle) > 1 AND left(n.needle, 1) = '#' AS is_digits,
                                 ltrim(regexp_replace(substr(n.needle, 2), '[^0-9?]', '', 'g'), '?') AS digits) AS d,
                 -- else a leading '^' and then a trailing '$' (each on more than one character) ask for word boundaries
                 LATERAL (SELECT length(n.needle) > 1 AND left(n.needle, 1) = '^' AS word_start,
                                 CASE WHEN length(n.needle) > 1 AND left(n.needle, 1) = '^' THEN substr(n.needle, 2) ELSE n.needle END AS rest) AS s,
                 LATERAL (SELECT length(s.rest) > 1 AND right(s.rest, 1) = '$' AS word_end,
                                 CASE WHEN length(s.rest) > 1 AND right(s.rest, 1) = '$' THEN left(s.rest, -1) ELSE s.rest END AS body) AS e,
                 LATERAL (SELECT CASE WHEN s.word_start THEN '(^|[\x01-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f])' ELSE '' END
                                 || regexp_replace(translate(e.body, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz'),
                                                   '([^[:alnum:][:space:]])', '\\\1', 'g')
                                 || CASE WHEN e.word_end THEN '($|[\x01-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f])' ELSE '' END AS pattern) AS r
             WHERE n.needle IS NOT NULL
               AND NOT (length(n.needle) > 2 AND left(n.needle, 2) = '@=')
               -- a literal part of the needle must occur before its expression is tried
               AND CASE WHEN d.is_digits
                        THEN d.digits = ''
                             OR (strpos(f.dg, split_part(d.digits, '?', 1)) > 0
                                 AND f.dg ~ (replace(d.digits, '?', '[0-9]') || CASE WHEN right(n.needle, 1) = '$' THEN '$' ELSE '' END))
                        ELSE e.body = ''
                             OR (strpos(f.v, translate(e.body, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')) > 0
                                 AND f.v ~ r.pattern)
                             OR (f.v2 IS NOT NULL AND f.v2 ~ r.pattern) END)
    $sql$;
$create$;
    END IF;
END
$fallback$;
COMMENT ON FUNCTION guardian._contains_any(text, text[]) IS
    'Internal prefilter: does the value contain any needle? Looked for in the value as the rules see it (NFKC, white space runs as one space; other non-ASCII characters allow a word boundary), ASCII case-insensitive. A leading ^ / trailing $ on a needle asks for a word boundary there; a leading # looks in the digits only; @=domain (in lower case) matches an e-mail address at that domain or a sub-domain of it (thousands of these cost one lookup); an empty needle matches everything.';
CREATE FUNCTION guardian._mail_domains(p_value text)
RETURNS text[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN x.d IS NULL THEN '{}'::text[]
                ELSE ARRAY[x.d] || ARRAY(SELECT substr(x.d, g.i + 1) FROM generate_series(1, length(x.d)) AS g(i)
                                          WHERE substr(x.d, g.i, 1) = '.' ORDER BY g.i) END
      FROM (SELECT rtrim(substring(p_value FROM '@([^@]*)$'), '.>') AS d) AS x
$$;
COMMENT ON FUNCTION guardian._mail_domains(text) IS
    'Internal: the domain after the last @ of a normalised value (trailing . and > dropped) and its parent domains.';
CREATE OR REPLACE FUNCTION guardian._rule_matches(p_match_type text, p_matcher text, p_terms text[], p_value text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT p_value OPERATOR(pg_catalog.<>) ''
       AND ((p_match_type OPERATOR(pg_catalog.=) 'exact' AND p_value OPERATOR(pg_catalog.=) ANY (p_terms))
            OR (p_match_type OPERATOR(pg_catalog.=) 'domains'
                AND guardian._mail_domains(p_value) OPERATOR(pg_catalog.&&) p_terms)
            OR (p_match_type OPERATOR(pg_catalog.=) 'digits'
                AND pg_catalog.regexp_replace(p_value, '[^0-9]', '', 'g') OPERATOR(pg_catalog.~) p_matcher)
            OR (p_match_type OPERATOR(pg_catalog.<>) ALL (ARRAY['exact', 'digits', 'domains'])
                AND p_value OPERATOR(pg_catalog.~*) p_matcher))
$$;
COMMENT ON FUNCTION guardian._rule_matches(text, text, text[], text) IS
    'Internal: does a rule (match type, matcher, terms) match this normalised value?';
CREATE OR REPLACE FUNCTION guardian._rule_anchors(p_rule guardian.rules)
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    -- The C prefilter folds ASCII case only: add case variants of non-ASCII anchors.
    SELECT ARRAY(
        SELECT DISTINCT v.variant
          FROM unnest(CASE
                 WHEN p_rule.anchors IS NOT NULL THEN p_rule.anchors
                 -- an e-mail domain is looked up, not searched for (lists run to thousands)
                 WHEN p_rule.match_type = 'domains' THEN ARRAY(SELECT '@=' || t FROM unnest(p_rule.terms) AS t)
                 WHEN p_rule.match_type = 'uuids' THEN p_rule.terms
                 -- whole words: '^' and '$' ask the prefilter for word boundaries
                 WHEN p_rule.match_type = 'words' THEN ARRAY(SELECT '^' || t || '$' FROM unnest(p_rule.terms) AS t)
                 WHEN p_rule.match_type = 'exact' THEN
                     ARRAY(SELECT '^' || (regexp_split_to_array(t, ' '))[cardinality(regexp_split_to_array(t, ' '))] || '$'
                             FROM unnest(p_rule.terms) AS t)
                 WHEN p_rule.match_type = 'prefix' THEN ARRAY[lower(p_rule.pattern)]
                 ELSE ARRAY['']
               END) AS a(anchor),
               LATERAL unnest(CASE WHEN a.anchor ~ '[^\x01-\x7f]'
                                   THEN ARRAY[lower(a.anchor), upper(a.anchor), initcap(a.anchor)]
                                   ELSE ARRAY[lower(a.anchor)] END) AS v(variant)
         ORDER BY 1)
$$;
COMMENT ON FUNCTION guardian._rule_anchors(guardian.rules) IS
    'Internal: the literal substrings the prefilter looks for on behalf of a rule (^/$: word boundary; '''' = every value).';
CREATE OR REPLACE FUNCTION guardian._validate_rule()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_kind  text;
    v_regex text;
BEGIN
    NEW.severity := upper(btrim(NEW.severity));
    NEW.match_type := lower(btrim(NEW.match_type));
    NEW.updated_at := now();
    NEW.updated_by := SESSION_USER;
    FOREACH v_kind IN ARRAY NEW.kinds LOOP
        IF NOT EXISTS (SELECT FROM guardian.kinds AS k WHERE k.kind = v_kind) THEN
            RAISE EXCEPTION 'rule %: unknown kind %', NEW.name, quote_literal(v_kind)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Known kinds: ' || (SELECT string_agg(k.kind, ', ' ORDER BY k.kind) FROM guardian.kinds AS k);
        END IF;
    END LOOP;
    IF NEW.match_type IN ('regex', 'prefix', 'digits') AND coalesce(NEW.pattern, '') = '' THEN
        RAISE EXCEPTION 'rule %: match_type % needs a pattern', NEW.name, NEW.match_type
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Set pattern, e.g. pattern => ''^test[0-9]*@''.';
    END IF;
    IF NEW.match_type IN ('words', 'exact', 'domains', 'uuids') AND coalesce(cardinality(NEW.terms), 0) = 0 THEN
        RAISE EXCEPTION 'rule %: match_type % needs terms', NEW.name, NEW.match_type
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Set terms, e.g. terms => ARRAY[''example.com''].';
    END IF;
    FOREACH v_regex IN ARRAY ARRAY[CASE WHEN NEW.match_type IN ('regex', 'digits') THEN NEW.pattern END,
                                   NEW.column_pattern] LOOP
        CONTINUE WHEN v_regex IS NULL;
        BEGIN
            PERFORM '' ~ v_regex;
        EXCEPTION WHEN invalid_regular_expression THEN
            RAISE EXCEPTION 'rule %: invalid regular expression %', NEW.name, quote_literal(v_regex)
                USING ERRCODE = 'invalid_regular_expression',
                      DETAIL = SQLERRM,
                      HINT = 'Patterns use PostgreSQL POSIX regular expressions (\m and \M for word boundaries).';
        END;
    END LOOP;
    -- Terms are compared with normalised values, so store them normalised.
    IF NEW.terms IS NOT NULL THEN
        NEW.terms := ARRAY(SELECT DISTINCT guardian._normalize(t) FROM unnest(NEW.terms) AS t
                            WHERE guardian._normalize(t) <> '' ORDER BY 1);
    END IF;
    IF NEW.anchors IS NOT NULL THEN
        NEW.anchors := ARRAY(SELECT DISTINCT lower(a) FROM unnest(NEW.anchors) AS a WHERE a IS NOT NULL ORDER BY 1);
        -- '#' looks in the digits: without a digit such an anchor would let every value through
        SELECT a INTO v_regex FROM unnest(NEW.anchors) AS a WHERE length(a) > 1 AND left(a, 1) = '#' AND a !~ '[0-9]' LIMIT 1;
        IF v_regex IS NOT NULL THEN
            RAISE EXCEPTION 'rule %: anchor % has no digit', NEW.name, quote_literal(v_regex)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'An anchor starting with # is looked for in the value''s digits (#55501??$); for a literal #, anchor on what follows it.';
        END IF;
    END IF;
    NEW.matcher := guardian._rule_matcher(NEW.match_type, NEW.pattern, NEW.terms);
    BEGIN
        -- (a domains rule's expression only shows what it means: domains are looked up)
        PERFORM '' ~ NEW.matcher WHERE NEW.match_type <> 'domains';
    EXCEPTION WHEN invalid_regular_expression THEN
        RAISE EXCEPTION 'rule %: its terms do not make a valid expression: %', NEW.name, SQLERRM
            USING ERRCODE = 'invalid_regular_expression', HINT = 'Check the terms for stray characters.';
    END;
    IF NEW.example_match IS NOT NULL
       AND NOT guardian._rule_matches(NEW.match_type, NEW.matcher, NEW.terms, guardian._normalize(NEW.example_match)) THEN
        RAISE EXCEPTION 'rule %: example_match % does not match the rule', NEW.name, quote_literal(NEW.example_match)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Fix the pattern or terms, or the example.';
    END IF;
    IF NEW.example_nonmatch IS NOT NULL
       AND guardian._rule_matches(NEW.match_type, NEW.matcher, NEW.terms, guardian._normalize(NEW.example_nonmatch)) THEN
        RAISE EXCEPTION 'rule %: example_nonmatch % matches the rule', NEW.name, quote_literal(NEW.example_nonmatch)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The rule is too broad: tighten the pattern or terms.';
    END IF;
    IF NEW.example_match IS NOT NULL
       AND NOT guardian._contains_any(NEW.example_match, guardian._rule_anchors(NEW)) THEN
        RAISE EXCEPTION 'rule %: example_match % contains none of the anchors %', NEW.name,
                        quote_literal(NEW.example_match), NEW.anchors
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Every value the rule matches must contain one of its anchors; add one, or set anchors to NULL.';
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION guardian._validate_rule() IS
    'Internal: rejects invalid rules (unknown kind, bad regex, examples that contradict the rule) on INSERT or UPDATE.';
COMMENT ON COLUMN guardian.rules.anchors IS
    'Literal substrings, one of which every matching value contains: the write-path prefilter. A leading ^ / trailing $ asks for a word boundary there; #digits is looked for in the value''s digits only, where ? stands for any digit and a trailing $ for the end of the digits (#55501??$); @=domain is an e-mail address at that domain or a sub-domain of it. NULL: derived from terms; for regex rules without anchors every value is checked (slower).';
COMMENT ON COLUMN guardian.rules.matcher IS
    'Derived on write: the one regular expression (or, for exact, nothing) that decides a match on the normalised value; a domains rule''s expression says what it means, but its domains are looked up (guardian._mail_domains).';
REVOKE EXECUTE ON FUNCTION guardian._mail_domains(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION guardian._mail_domains(text) TO guardian_owner, guardian_reader;
-- Default rule packs. Precision is a feature: every rule matches on word boundaries or on
-- structure (domains, digits, UUID ranges) of the normalised value, and carries an example it
-- must catch and one it must not (both checked when the row is written, and by the tests).
-- Anchors are the literal substrings the write-path prefilter looks for.
INSERT INTO guardian.rules
    (name, pack, kinds, match_type, pattern, terms, anchors, severity, safe_for_automation,
     description, example_match, example_nonmatch, builtin)
VALUES
-- reserved_domains: RFC 2606 / RFC 6761 names that can never belong to a real person.
('reserved_test_tld', 'reserved_domains', '{email}', 'domains', NULL,
 '{test,example,invalid,localhost,local,localdomain,internal,home.arpa}', NULL,
 'CRITICAL', true,
 'E-mail in a reserved or internal-only top-level domain (.test, .example, .invalid, .localhost; RFC 2606, RFC 6761; .local, .localdomain, .internal, .home.arpa).',
 'user@tenant-a.test', 'celeste.testa@gmail.com', true),
('reserved_example_domain', 'reserved_domains', '{email}', 'domains', NULL,
 '{example.com,example.net,example.org,example.edu}', NULL,
 'CRITICAL', true,
 'E-mail at a reserved example domain (example.com, example.net, example.org; RFC 2606).',
 'jane.doe@example.com', 'ops@examplehealth.com', true),
-- disposable_email: throwaway inboxes used by QA scripts and sign-up bots.
('disposable_mail_domain', 'disposable_email', '{email}', 'domains', NULL,
-- @@ list disposable_email_domains.txt + disposable_extra.txt except real_mail_providers.txt @@
 , NULL, 'HIGH', false,
 'E-mail at a disposable mailbox provider (the disposable-email-domains list; `pg-guardian rules update` refreshes it).',
 'qa.signup@mailinator.com', 'celeste@mailbox.org', true),
-- qa_addresses: the addresses QA teams and test suites write.
('placeholder_mail_domain', 'reserved_domains', '{email}', 'domains', NULL,
 '{test.com,foo.com,bar.com,foobar.com,domain.com,yourdomain.com,mydomain.com,yourcompany.com,example.co.uk,example.de,example.fr,example.es,example.it,example.nl,example.com.au,beispiel.de,beispiel.com,exemple.fr,exemple.com,ejemplo.com,ejemplo.es,esempio.com,esempio.it,voorbeeld.nl,voorbeeld.com,przyklad.pl,exemplo.com,exemplo.com.br}',
 NULL, 'HIGH', false,
 'E-mail at a domain that stands for "some domain" in forms and fixtures, in English and other languages (test.com, domain.com, beispiel.de, ejemplo.com, esempio.com, voorbeeld.nl, przyklad.pl).',
 'fulano.detal@ejemplo.com', 'jane@ejemplos-dental.com', true),
('mail_ip_literal', 'reserved_domains', '{email}', 'regex',
 '@\[?[0-9]{1,3}(\.[0-9]{1,3}){3}\]?[.>]*$', NULL,
 '{@0,@1,@2,@3,@4,@5,@6,@7,@8,@9,@[}', 'HIGH', false,
 'E-mail at an IP address instead of a domain (admin@127.0.0.1).',
 'admin@127.0.0.1', 'admin@1und1.de', true),
('test_mail_service', 'disposable_email', '{email}', 'domains', NULL,
 '{mailtrap.io,mailslurp.com,mailslurp.net,mailosaur.net,mailosaur.io,ethereal.email,mail7.io,putsbox.com,testmail.app,mailhog.local}',
 NULL, 'HIGH', true,
 'E-mail at a mailbox service made for testing e-mail (Mailtrap, MailSlurp, Mailosaur, Ethereal).',
 'jnguyen@inbox.mailtrap.io', 'info@mailtrack.io', true),
('probe_mail_domain', 'security_probes', '{email}', 'domains', NULL,
 '{burpcollaborator.net,oastify.com,interact.sh,oast.fun,oast.pro,oast.live,oast.site,oast.online,oast.me,canarytokens.com,dnslog.cn,xss.ht,bxss.me}',
 NULL, 'HIGH', false,
 'E-mail at an out-of-band testing domain of security scanners (Burp Collaborator, interactsh): a probe, not a person.',
 'sqli86@burpcollaborator.net', 'anna@burpham.co.uk', true),
('placeholder_mail_local', 'qa_addresses', '{email}', 'regex',
 '^(null|none|nobody|noemail|no-email|no\.email|nomail|noreply|no-reply|donotreply|do-not-reply|dontreply|email|e-mail|changeme|placeholder|xxx+|n/a)@', NULL,
 '{^null@,^none@,^nobody@,^noemail@,^no-email@,^no.email@,^nomail@,^noreply@,^no-reply@,^donotreply@,^do-not-reply@,^dontreply@,^email@,^e-mail@,^changeme@,^placeholder@,^xxx@,^n/a@}', 'HIGH', false,
 'E-mail whose local part says there is no address: null@, noreply@, email@, n/a@.',
 'null@null.com', 'nulla.rossi@libero.it', true),
('numbered_mail_local', 'qa_addresses', '{email}', 'regex',
 '^(email|user|person|patient|customer|member|client|account|guest|demo|perf)[._-]?[0-9]+@', NULL,
 '{^email0,^email1,^email2,^email3,^email4,^email5,^email6,^email7,^email8,^email9,^email.,^email_,^email-,^user0,^user1,^user2,^user3,^user4,^user5,^user6,^user7,^user8,^user9,^user.,^user_,^user-,^person0,^person1,^person2,^person3,^person4,^person5,^person6,^person7,^person8,^person9,^person.,^person_,^person-,^patient0,^patient1,^patient2,^patient3,^patient4,^patient5,^patient6,^patient7,^patient8,^patient9,^patient.,^patient_,^patient-,^customer0,^customer1,^customer2,^customer3,^customer4,^customer5,^customer6,^customer7,^customer8,^customer9,^customer.,^customer_,^customer-,^member0,^member1,^member2,^member3,^member4,^member5,^member6,^member7,^member8,^member9,^member.,^member_,^member-,^client0,^client1,^client2,^client3,^client4,^client5,^client6,^client7,^client8,^client9,^client.,^client_,^client-,^account0,^account1,^account2,^account3,^account4,^account5,^account6,^account7,^account8,^account9,^account.,^account_,^account-,^guest0,^guest1,^guest2,^guest3,^guest4,^guest5,^guest6,^guest7,^guest8,^guest9,^guest.,^guest_,^guest-,^demo0,^demo1,^demo2,^demo3,^demo4,^demo5,^demo6,^demo7,^demo8,^demo9,^demo.,^demo_,^demo-,^perf0,^perf1,^perf2,^perf3,^perf4,^perf5,^perf6,^perf7,^perf8,^perf9,^perf.,^perf_,^perf-}', 'HIGH', false,
 'E-mail of a numbered generated account: email37@, user_12@, patient24@, demo52@.',
 'email37@factory.com', 'emma37@gmail.com', true),
('qa_local_suffix', 'qa_addresses', '{email}', 'regex',
 '[._-](test|testing|qa|e2e|demo|dummy|fake)[0-9]*@', NULL,
 '{.test@,.test0,.test1,.test2,.test3,.test4,.test5,.test6,.test7,.test8,.test9,_test@,_test0,_test1,_test2,_test3,_test4,_test5,_test6,_test7,_test8,_test9,-test@,-test0,-test1,-test2,-test3,-test4,-test5,-test6,-test7,-test8,-test9,.testing@,.testing0,.testing1,.testing2,.testing3,.testing4,.testing5,.testing6,.testing7,.testing8,.testing9,_testing@,_testing0,_testing1,_testing2,_testing3,_testing4,_testing5,_testing6,_testing7,_testing8,_testing9,-testing@,-testing0,-testing1,-testing2,-testing3,-testing4,-testing5,-testing6,-testing7,-testing8,-testing9,.qa@,.qa0,.qa1,.qa2,.qa3,.qa4,.qa5,.qa6,.qa7,.qa8,.qa9,_qa@,_qa0,_qa1,_qa2,_qa3,_qa4,_qa5,_qa6,_qa7,_qa8,_qa9,-qa@,-qa0,-qa1,-qa2,-qa3,-qa4,-qa5,-qa6,-qa7,-qa8,-qa9,.e2e@,.e2e0,.e2e1,.e2e2,.e2e3,.e2e4,.e2e5,.e2e6,.e2e7,.e2e8,.e2e9,_e2e@,_e2e0,_e2e1,_e2e2,_e2e3,_e2e4,_e2e5,_e2e6,_e2e7,_e2e8,_e2e9,-e2e@,-e2e0,-e2e1,-e2e2,-e2e3,-e2e4,-e2e5,-e2e6,-e2e7,-e2e8,-e2e9,.demo@,.demo0,.demo1,.demo2,.demo3,.demo4,.demo5,.demo6,.demo7,.demo8,.demo9,_demo@,_demo0,_demo1,_demo2,_demo3,_demo4,_demo5,_demo6,_demo7,_demo8,_demo9,-demo@,-demo0,-demo1,-demo2,-demo3,-demo4,-demo5,-demo6,-demo7,-demo8,-demo9,.dummy@,.dummy0,.dummy1,.dummy2,.dummy3,.dummy4,.dummy5,.dummy6,.dummy7,.dummy8,.dummy9,_dummy@,_dummy0,_dummy1,_dummy2,_dummy3,_dummy4,_dummy5,_dummy6,_dummy7,_dummy8,_dummy9,-dummy@,-dummy0,-dummy1,-dummy2,-dummy3,-dummy4,-dummy5,-dummy6,-dummy7,-dummy8,-dummy9,.fake@,.fake0,.fake1,.fake2,.fake3,.fake4,.fake5,.fake6,.fake7,.fake8,.fake9,_fake@,_fake0,_fake1,_fake2,_fake3,_fake4,_fake5,_fake6,_fake7,_fake8,_fake9,-fake@,-fake0,-fake1,-fake2,-fake3,-fake4,-fake5,-fake6,-fake7,-fake8,-fake9}', 'HIGH', false,
 'E-mail whose local part ends in a QA marker: james.test@, ops-qa2@, jane_demo@.',
 'shannon.test@brightsmiles.com', 'shannon.testa@brightsmiles.com', true),
('qa_local_part', 'qa_addresses', '{email}', 'regex',
 '^(test|testing|qa|e2e|uat|autotest|automation|loadtest|perftest|stresstest|testuser|seeduser|fakeuser|dummyuser|perf|k6|demo)([0-9]+|[+._-][^@]*)?@', NULL,
 '{^test0,^test1,^test2,^test3,^test4,^test5,^test6,^test7,^test8,^test9,^test@,^test+,^test.,^test_,^test-,^testing0,^testing1,^testing2,^testing3,^testing4,^testing5,^testing6,^testing7,^testing8,^testing9,^testing@,^testing+,^testing.,^testing_,^testing-,^qa0,^qa1,^qa2,^qa3,^qa4,^qa5,^qa6,^qa7,^qa8,^qa9,^qa@,^qa+,^qa.,^qa_,^qa-,^e2e0,^e2e1,^e2e2,^e2e3,^e2e4,^e2e5,^e2e6,^e2e7,^e2e8,^e2e9,^e2e@,^e2e+,^e2e.,^e2e_,^e2e-,^uat0,^uat1,^uat2,^uat3,^uat4,^uat5,^uat6,^uat7,^uat8,^uat9,^uat@,^uat+,^uat.,^uat_,^uat-,^autotest0,^autotest1,^autotest2,^autotest3,^autotest4,^autotest5,^autotest6,^autotest7,^autotest8,^autotest9,^autotest@,^autotest+,^autotest.,^autotest_,^autotest-,^automation0,^automation1,^automation2,^automation3,^automation4,^automation5,^automation6,^automation7,^automation8,^automation9,^automation@,^automation+,^automation.,^automation_,^automation-,^loadtest0,^loadtest1,^loadtest2,^loadtest3,^loadtest4,^loadtest5,^loadtest6,^loadtest7,^loadtest8,^loadtest9,^loadtest@,^loadtest+,^loadtest.,^loadtest_,^loadtest-,^perftest0,^perftest1,^perftest2,^perftest3,^perftest4,^perftest5,^perftest6,^perftest7,^perftest8,^perftest9,^perftest@,^perftest+,^perftest.,^perftest_,^perftest-,^stresstest0,^stresstest1,^stresstest2,^stresstest3,^stresstest4,^stresstest5,^stresstest6,^stresstest7,^stresstest8,^stresstest9,^stresstest@,^stresstest+,^stresstest.,^stresstest_,^stresstest-,^testuser0,^testuser1,^testuser2,^testuser3,^testuser4,^testuser5,^testuser6,^testuser7,^testuser8,^testuser9,^testuser@,^testuser+,^testuser.,^testuser_,^testuser-,^seeduser0,^seeduser1,^seeduser2,^seeduser3,^seeduser4,^seeduser5,^seeduser6,^seeduser7,^seeduser8,^seeduser9,^seeduser@,^seeduser+,^seeduser.,^seeduser_,^seeduser-,^fakeuser0,^fakeuser1,^fakeuser2,^fakeuser3,^fakeuser4,^fakeuser5,^fakeuser6,^fakeuser7,^fakeuser8,^fakeuser9,^fakeuser@,^fakeuser+,^fakeuser.,^fakeuser_,^fakeuser-,^dummyuser0,^dummyuser1,^dummyuser2,^dummyuser3,^dummyuser4,^dummyuser5,^dummyuser6,^dummyuser7,^dummyuser8,^dummyuser9,^dummyuser@,^dummyuser+,^dummyuser.,^dummyuser_,^dummyuser-,^perf0,^perf1,^perf2,^perf3,^perf4,^perf5,^perf6,^perf7,^perf8,^perf9,^perf@,^perf+,^perf.,^perf_,^perf-,^k60,^k61,^k62,^k63,^k64,^k65,^k66,^k67,^k68,^k69,^k6@,^k6+,^k6.,^k6_,^k6-,^demo0,^demo1,^demo2,^demo3,^demo4,^demo5,^demo6,^demo7,^demo8,^demo9,^demo@,^demo+,^demo.,^demo_,^demo-}', 'HIGH', false,
 'E-mail whose local part is a QA marker: test@, test123@, test+1@, qa+signup@, e2e-run7@, loadtest_042@, seeduser7@, k6-vu3@, demo.patient@.',
 'test+123@gmail.com', 'testa.celeste@gmail.com', true),
('qa_plus_tag', 'qa_addresses', '{email}', 'regex',
 '\+((test|qa|e2e|fixture|seed|fake|dummy|cypress|playwright|selenium|jest|pytest|loadtest|k6|dev|staging|stage|demo|uat|sandbox|preprod)[^@]*|[0-9]+)@', NULL,
 '{+test,+qa,+e2e,+fixture,+seed,+fake,+dummy,+cypress,+playwright,+selenium,+jest,+pytest,+loadtest,+k6,+dev,+staging,+stage,+demo,+uat,+sandbox,+preprod,+0,+1,+2,+3,+4,+5,+6,+7,+8,+9}', 'HIGH', false,
 'E-mail with a QA, test-tool, environment or numbered sub-address tag: jane+test@, bob+e2e42@, ops+cypress@, ann+staging@, lee+18@.',
 'jane.doe+e2e42@gmail.com', 'jane+newsletter@gmail.com', true),
-- test_tools: what test runners, browser drivers and data generators leave behind
('test_tool_address', 'test_tools', '{email}', 'regex',
 '^(cypress|playwright|selenium|puppeteer|webdriver|pytest|rspec|phpunit|testcafe|jmeter|gatling|vitest|factorybot|factory_bot|faker|mailhog|mailpit|mailtrap)([0-9]+|[+._-][^@]*)?@', NULL,
 '{^cypress0,^cypress1,^cypress2,^cypress3,^cypress4,^cypress5,^cypress6,^cypress7,^cypress8,^cypress9,^cypress@,^cypress+,^cypress.,^cypress_,^cypress-,^playwright0,^playwright1,^playwright2,^playwright3,^playwright4,^playwright5,^playwright6,^playwright7,^playwright8,^playwright9,^playwright@,^playwright+,^playwright.,^playwright_,^playwright-,^selenium0,^selenium1,^selenium2,^selenium3,^selenium4,^selenium5,^selenium6,^selenium7,^selenium8,^selenium9,^selenium@,^selenium+,^selenium.,^selenium_,^selenium-,^puppeteer0,^puppeteer1,^puppeteer2,^puppeteer3,^puppeteer4,^puppeteer5,^puppeteer6,^puppeteer7,^puppeteer8,^puppeteer9,^puppeteer@,^puppeteer+,^puppeteer.,^puppeteer_,^puppeteer-,^webdriver0,^webdriver1,^webdriver2,^webdriver3,^webdriver4,^webdriver5,^webdriver6,^webdriver7,^webdriver8,^webdriver9,^webdriver@,^webdriver+,^webdriver.,^webdriver_,^webdriver-,^pytest0,^pytest1,^pytest2,^pytest3,^pytest4,^pytest5,^pytest6,^pytest7,^pytest8,^pytest9,^pytest@,^pytest+,^pytest.,^pytest_,^pytest-,^rspec0,^rspec1,^rspec2,^rspec3,^rspec4,^rspec5,^rspec6,^rspec7,^rspec8,^rspec9,^rspec@,^rspec+,^rspec.,^rspec_,^rspec-,^phpunit0,^phpunit1,^phpunit2,^phpunit3,^phpunit4,^phpunit5,^phpunit6,^phpunit7,^phpunit8,^phpunit9,^phpunit@,^phpunit+,^phpunit.,^phpunit_,^phpunit-,^testcafe0,^testcafe1,^testcafe2,^testcafe3,^testcafe4,^testcafe5,^testcafe6,^testcafe7,^testcafe8,^testcafe9,^testcafe@,^testcafe+,^testcafe.,^testcafe_,^testcafe-,^jmeter0,^jmeter1,^jmeter2,^jmeter3,^jmeter4,^jmeter5,^jmeter6,^jmeter7,^jmeter8,^jmeter9,^jmeter@,^jmeter+,^jmeter.,^jmeter_,^jmeter-,^gatling0,^gatling1,^gatling2,^gatling3,^gatling4,^gatling5,^gatling6,^gatling7,^gatling8,^gatling9,^gatling@,^gatling+,^gatling.,^gatling_,^gatling-,^vitest0,^vitest1,^vitest2,^vitest3,^vitest4,^vitest5,^vitest6,^vitest7,^vitest8,^vitest9,^vitest@,^vitest+,^vitest.,^vitest_,^vitest-,^factorybot0,^factorybot1,^factorybot2,^factorybot3,^factorybot4,^factorybot5,^factorybot6,^factorybot7,^factorybot8,^factorybot9,^factorybot@,^factorybot+,^factorybot.,^factorybot_,^factorybot-,^factory_bot0,^factory_bot1,^factory_bot2,^factory_bot3,^factory_bot4,^factory_bot5,^factory_bot6,^factory_bot7,^factory_bot8,^factory_bot9,^factory_bot@,^factory_bot+,^factory_bot.,^factory_bot_,^factory_bot-,^faker0,^faker1,^faker2,^faker3,^faker4,^faker5,^faker6,^faker7,^faker8,^faker9,^faker@,^faker+,^faker.,^faker_,^faker-,^mailhog0,^mailhog1,^mailhog2,^mailhog3,^mailhog4,^mailhog5,^mailhog6,^mailhog7,^mailhog8,^mailhog9,^mailhog@,^mailhog+,^mailhog.,^mailhog_,^mailhog-,^mailpit0,^mailpit1,^mailpit2,^mailpit3,^mailpit4,^mailpit5,^mailpit6,^mailpit7,^mailpit8,^mailpit9,^mailpit@,^mailpit+,^mailpit.,^mailpit_,^mailpit-,^mailtrap0,^mailtrap1,^mailtrap2,^mailtrap3,^mailtrap4,^mailtrap5,^mailtrap6,^mailtrap7,^mailtrap8,^mailtrap9,^mailtrap@,^mailtrap+,^mailtrap.,^mailtrap_,^mailtrap-}', 'HIGH', false,
 'E-mail whose local part is a test runner or data generator: cypress+1702@, playwright_user_3@, selenium@.',
 'cypress+1702@brightsmiles.io', 'cypresshill@gmail.com', true),
('test_tool_name', 'test_tools', '{person_name,organization}', 'words', NULL,
 '{playwright,selenium,puppeteer,webdriver,pytest,rspec,phpunit,testcafe,jmeter,vitest,factorybot,factory_bot,capybara,mailhog,mailpit,mailtrap,k6}', NULL, 'HIGH', false,
 'A name naming a test runner, browser driver or mail catcher (Playwright User, Selenium Bot, Pytest Clinic); Cypress and Jasmine pass, they are real names.',
 'Selenium Bot', 'Cypress Family Dentistry', true),
('nonprod_mail_subdomain', 'test_tools', '{email}', 'regex',
 '@(staging|stage|stg|test|testing|qa|dev|develop|development|sandbox|uat|preprod|pre-prod|demo|perf|loadtest)[0-9]*\.([a-z0-9-]+\.)+[a-z]{2,}[.>]*$', NULL,
 '{@staging,@stage,@stg,@test,@testing,@qa,@dev,@develop,@development,@sandbox,@uat,@preprod,@pre-prod,@demo,@perf,@loadtest}', 'HIGH', false,
 'E-mail at a non-production sub-domain of an organisation (jane@staging.brightsmiles.com, qa@dev.acme.io); guardian.set_nonprod_labels() changes the labels.',
 'jane@staging.brightsmiles.com', 'jane@stagecoach.co.uk', true),
-- placeholder_names: the names people type when a form needs one.
('placeholder_full_name', 'placeholder_names', '{person_name}', 'exact', NULL,
 '{john doe,jane doe,john q public,jane q public,john q. public,jane q. public,joe bloggs,fred bloggs,joe public,joe schmoe,joe sixpack,fred nurk,max mustermann,erika mustermann,otto normalverbraucher,fulano de tal,fulana de tal,john appleseed,hank zakroff,hank m. zakroff,testy mctestface,tester one,test user,test patient,test test,test account,test person,admin user,admin admin,demo user,demo patient,sample patient,new patient,foo bar,lorem ipsum,first last,firstname lastname,first name last name,no name,unknown unknown,asdf asdf,jane roe,richard roe,baby doe,john doe jr}',
 NULL, 'HIGH', false,
 'A placeholder full name (John Doe, Test User, Foo Bar, Lorem Ipsum, Max Mustermann, ...); first and last name columns are checked together.',
 'John Doe', 'John Dobson', true),
('placeholder_name_word', 'placeholder_names', '{person_name}', 'words', NULL,
 '{test,testing,testy,mctestface,fake,dummy,placeholder,example,asdf,qwerty,lorem,ipsum,xxx,zzz,undefined,null,tbd}', NULL,
 'HIGH', false,
 'A name containing a placeholder word (Test, Fake, Dummy, Placeholder, Lorem, TBD) as a whole word: Celeste Testa, Martin Tester and Oliver Dummett pass.',
 'Test Patient', 'Celeste Testa', true),
('numbered_test_name', 'placeholder_names', '{person_name,organization}', 'regex',
 '(^|[^[:alnum:]])(test|user|patient|customer|qa|fake|dummy|loadtest|perf|vu|pw|firstname|lastname|first|last)[ _-]?[0-9]+($|[^[:alnum:]])', NULL,
 '{^test0,^test1,^test2,^test3,^test4,^test5,^test6,^test7,^test8,^test9,"^test ",^test_,^test-,^user0,^user1,^user2,^user3,^user4,^user5,^user6,^user7,^user8,^user9,"^user ",^user_,^user-,^patient0,^patient1,^patient2,^patient3,^patient4,^patient5,^patient6,^patient7,^patient8,^patient9,"^patient ",^patient_,^patient-,^customer0,^customer1,^customer2,^customer3,^customer4,^customer5,^customer6,^customer7,^customer8,^customer9,"^customer ",^customer_,^customer-,^qa0,^qa1,^qa2,^qa3,^qa4,^qa5,^qa6,^qa7,^qa8,^qa9,"^qa ",^qa_,^qa-,^fake0,^fake1,^fake2,^fake3,^fake4,^fake5,^fake6,^fake7,^fake8,^fake9,"^fake ",^fake_,^fake-,^dummy0,^dummy1,^dummy2,^dummy3,^dummy4,^dummy5,^dummy6,^dummy7,^dummy8,^dummy9,"^dummy ",^dummy_,^dummy-,^loadtest0,^loadtest1,^loadtest2,^loadtest3,^loadtest4,^loadtest5,^loadtest6,^loadtest7,^loadtest8,^loadtest9,"^loadtest ",^loadtest_,^loadtest-,^perf0,^perf1,^perf2,^perf3,^perf4,^perf5,^perf6,^perf7,^perf8,^perf9,"^perf ",^perf_,^perf-,^vu0,^vu1,^vu2,^vu3,^vu4,^vu5,^vu6,^vu7,^vu8,^vu9,"^vu ",^vu_,^vu-,^pw0,^pw1,^pw2,^pw3,^pw4,^pw5,^pw6,^pw7,^pw8,^pw9,"^pw ",^pw_,^pw-,^firstname0,^firstname1,^firstname2,^firstname3,^firstname4,^firstname5,^firstname6,^firstname7,^firstname8,^firstname9,"^firstname ",^firstname_,^firstname-,^lastname0,^lastname1,^lastname2,^lastname3,^lastname4,^lastname5,^lastname6,^lastname7,^lastname8,^lastname9,"^lastname ",^lastname_,^lastname-,^first0,^first1,^first2,^first3,^first4,^first5,^first6,^first7,^first8,^first9,"^first ",^first_,^first-,^last0,^last1,^last2,^last3,^last4,^last5,^last6,^last7,^last8,^last9,"^last ",^last_,^last-}', 'HIGH', false,
 'A generated name with a sequence number: User 12, Patient_3, test1, Customer 7, loadtest_00065, First110.',
 'Patient 42', 'Patience Okafor', true),
('numeric_name', 'placeholder_names', '{person_name}', 'regex',
 '^[#]?[0-9][0-9 ._/-]*$', NULL,
 '{#0,#1,#2,#3,#4,#5,#6,#7,#8,#9}', 'MEDIUM', false,
 'A name that is only a number (a generated row''s 37 or 0024).',
 '0024', 'Louis XIV', true),
('placeholder_value', 'placeholder_names', '{person_name}', 'exact', NULL,
 '{n/a,none,null,nil,tbd,tba,-,.,?,??,...,first_name,firstname,"first name",last_name,lastname,"last name",surname,"given name","family name","full name",fullname,name,email,e-mail,"email address","e-mail address",phone,"phone number",telephone,mobile,clinic,practice,company,organization,organisation,"clinic name","practice name"}',
 NULL, 'HIGH', false,
 'A value that says there is none (N/A, NULL, TBD, -) or that is a column header imported as data (First Name, Surname, E-mail address).',
 'Surname', 'Surnamer', true),
('placeholder_org_value', 'placeholder_names', '{organization}', 'exact', NULL,
 '{n/a,none,null,tbd,tba,-,.,?,??,...,clinic name,practice name,company name,organization name,organisation name}',
 NULL, 'HIGH', false,
 'An organisation that says there is none (N/A, NULL, TBD, -) or is a column header imported as data (Clinic Name).',
 'N/A', 'NA Dental', true),
('column_header_value', 'placeholder_names', '{email,phone}', 'exact', NULL,
 '{email,e-mail,"email address","e-mail address",mail,phone,"phone number",telephone,mobile,n/a,none,null,tbd,unknown,-,0}',
 NULL, 'HIGH', false,
 'An e-mail or phone column holding a column header or a word for none (E-mail address, Phone Number, N/A).',
 'E-mail address', 'email@brightsmiles.com', true),
('numbered_org_name', 'placeholder_names', '{organization}', 'regex',
 '^(clinic|practice|company|organi[sz]ation|org|tenant|account|office|dental|test clinic)[ _-]?[0-9]+$', NULL,
 '{#0,#1,#2,#3,#4,#5,#6,#7,#8,#9}', 'HIGH', false,
 'A generated organisation with a sequence number: Clinic 37, Practice_2, Org 12 (Smile Clinic 2 passes).',
 'Clinic 37', 'Smile Clinic 2', true),
('copied_record_name', 'fixture_markers', '{organization}', 'regex',
 '^copy of |\((copy|copy [0-9]+)\)$|^(new|untitled) (clinic|practice|organi[sz]ation|company|account)( [0-9]+)?$|(^|[^[:alnum:]])(sandbox|staging)($|[^[:alnum:]])', NULL,
 '{"^copy of",(copy,"^new clinic","^new practice","^new organization","^new organisation","^new company","^new account",^untitled,^sandbox,^staging}', 'MEDIUM', false,
 'An organisation made by copying or creating one in a hurry, or named for an environment: Copy of Bright Smiles, New Clinic (copy), Untitled Practice, Sandbox Dental.',
 'Copy of Bright Smiles Dental', 'New Haven Dental', true),
-- security_probes: what scanners and penetration tests type into forms
('security_probe', 'security_probes', '{person_name,organization,free_text,email}', 'regex',
 '''\s*or\s*''?[0-9a-z]''?\s*=\s*''?[0-9a-z]|''\s*--\s*$|"\s*or\s*"|<\s*(script|img|svg|iframe)[^>]*|javascript:|\$\{jndi:|\.\./\.\./|\{\{\s*7\s*\*\s*7\s*\}\}|\$\{7\s*\*\s*7\}|;\s*drop\s+table|union\s+(all\s+)?select|/etc/passwd', NULL,
 '{"'' or","''or","''--","'' --","\" or","\"or",<script,"< script",<img,<svg,<iframe,javascript:,"${jndi",../..,"{{","${7","drop table","union select","union all select",/etc/passwd}', 'HIGH', false,
 'A security scanner''s probe: SQL injection ('' OR ''1''=''1, admin''--), script tags, path traversal, Log4Shell, template injection.',
 ''' OR ''1''=''1', 'Mrs O''Brien or her son', true),
-- lorem_ipsum: the filler text of mock-ups and generators
('lorem_ipsum_words', 'fixture_markers', '{free_text,organization,person_name}', 'words', NULL,
 '{lorem,consectetur,adipiscing,eiusmod,incididunt,exercitation,ullamco,laboris,aliquip,reprehenderit,voluptate,cupidatat,occaecat,proident,laborum,nostrud}',
 NULL, 'HIGH', false,
 'Lorem ipsum filler: words of it only filler text uses (consectetur, eiusmod, reprehenderit, cupidatat, ...); dolor, Spanish for pain, passes.',
 'Duis aute irure dolor in reprehenderit.', 'Dolor en el molar inferior derecho.', true),
('test_note', 'fixture_markers', '{free_text}', 'regex',
 '(^|[^[:alnum:]])((internal|load|perf|performance|smoke|e2e|qa|uat|integration|regression|automated) (test(ing|s)?|run|fixture)|test (data|record|account|entry|row|user|booking|customer|patient)s?|test test|(testing|test) (the )?(online booking|booking flow|checkout|sign-?up|registration|import|migration|sync)|seeded by|seed data|(generated|created) by (a |the )?(factory|faker|seeder|seed script|qa|automation|script|test)|(dummy|fake|mock|demo|placeholder) (data|account|record|patient|entry|user|row)s?|for testing( purposes)?|paziente di prova|paciente de prueba|patient de test|testpati(e|ë)nt|testperson)($|[^[:alnum:]])|(^|[[:space:]])#test($|[^[:alnum:]])|^delete me($|[^[:alnum:]])', NULL,
 '{^test,^seeded,"^seed data","^dummy ","^fake ","^mock ","^demo ","^placeholder ","^generated by","^created by","^delete me","^regression run","^e2e fixture","^paziente di prova","^paciente de prueba","^patient de test","^testpati","^testperson"}', 'HIGH', false,
 'A note that says the row is a test: internal test, load test data, seeded by db/seeds.rb, testing online booking, demo account, DELETE ME, Paziente di prova, Testpatiënt, #test; "blood test results normal" passes.',
 'internal test, ignore', 'Blood test results normal; pulp test positive.', true),
-- keyboard_mash: what a hurried tester types.
('keyboard_mash', 'keyboard_mash', '{person_name,organization}', 'regex',
 '^((asdf|sdfg|dfgh|fghj|ghjk|hjkl|qwer|uiop|zxcv|xcvb|cvbn|vbnm|azerty)[a-z]*|([a-z])\3{2,}|(abc|xyz|asd|jkl)+)( [a-z]*)?$', NULL,
 '{^asdf,^sdfg,^dfgh,^fghj,^ghjk,^hjkl,^qwer,^uiop,^zxcv,^xcvb,^cvbn,^vbnm,^azerty,^aaa,^bbb,^ccc,^ddd,^eee,^fff,^ggg,^hhh,^iii,^jjj,^kkk,^lll,^mmm,^nnn,^ooo,^ppp,^qqq,^rrr,^sss,^ttt,^uuu,^vvv,^www,^xxx,^yyy,^zzz,^abc,^xyz,^asd,^jkl}',
 'MEDIUM', false,
 'A keyboard mash or repeated letters as a name: Asdfgh, Qwerty, Zzz, Abcabc.',
 'Asdfgh Jkl', 'Ashford', true),
-- fixture_markers: what fixture files and seed scripts leave behind.
('tenant_fixture', 'fixture_markers', '{email,person_name,organization,free_text}', 'regex',
 '(^|[^[:alnum:]])tenant([ _-]([a-z]|[0-9]+)|[0-9]+)($|[^[:alnum:]])', NULL,
 '{^tenant}', 'CRITICAL', false,
 'A fixture tenant marker: tenant-a, Tenant B, tenant_1, user@tenant-a.test.',
 'Tenant A Dental', 'Tenants Association of Leeds', true),
('test_marker', 'fixture_markers', '{person_name,organization,free_text}', 'regex',
 '[\[(]\s*(test|testing|qa|e2e|fake|dummy|demo|do ?n.?t use)\s*[\])]|^(test|testing|fake|dummy|demo|qa|e2e|do ?n.?t use)\s*([:-]|$)|(^|[^[:alnum:]])(not a real (patient|person|clinic|user|account|customer|email|address)|lorem ipsum)($|[^[:alnum:]])', NULL,
 '{^test$,^testing$,^qa$,^e2e$,^fake$,^dummy$,^demo$,t use$,^not a real,^lorem$}', 'CRITICAL', false,
 'An explicit test marker: (TEST), [QA], "TEST: ...", "DO NOT USE - ...", "not a real patient", lorem ipsum; "do not use whitening strips" passes.',
 'Bright Smiles (TEST)', 'Test results normal, follow-up in 6 months', true),
('test_organization', 'fixture_markers', '{organization}', 'regex',
 '(^|[^[:alnum:]])(test|testing|fake|dummy|demo|example|tenant|qa|e2e)\s+(clinic|practice|dental|dentistry|office|organi[sz]ation|company|corp|inc|llc|ltd|account|tenant|hospital|surgery|lab)($|[^[:alnum:]])|^(test|fake|dummy|demo|qa|e2e|example)$', NULL,
 '{^test$,^testing$,^fake$,^dummy$,^demo$,^example$,^tenant$,^qa$,^e2e$}', 'CRITICAL', false,
 'A test organisation: Test Clinic, Fake Clinic, Demo Dental, Tenant Practice.',
 'Test Clinic', 'Greatest Smiles Dental', true),
-- fictitious_phones: numbers reserved for fiction, and degenerate numbers.
('nanp_fictional_phone', 'fictitious_phones', '{phone}', 'digits',
 '^1?([2-9][0-9]{2})?5550(1[0-9]{2})$', NULL,
 '{#55501??$}', 'MEDIUM', true,
 'A North American number in 555-0100..555-0199, reserved for fiction.',
 '(415) 555-0123', '+1 415 555 8123', true),
('uk_drama_phone', 'fictitious_phones', '{phone}', 'digits',
 '^(44|0)?(2079460[0-9]{3}|7700900[0-9]{3}|1(1[3-8]|21|31|41|51|61)4960[0-9]{3}|1914980[0-9]{3}|2896496[0-9]{3}|2920180[0-9]{3}|8081570[0-9]{3}|9098790[0-9]{3}|1632960[0-9]{3})$', NULL,
 '{#2079460???$,#7700900???$,#1134960???$,#1144960???$,#1154960???$,#1164960???$,#1174960???$,#1184960???$,#1214960???$,#1314960???$,#1414960???$,#1514960???$,#1614960???$,#1914980???$,#2896496???$,#2920180???$,#8081570???$,#9098790???$,#1632960???$}', 'MEDIUM', true,
 'A UK number from Ofcom''s ranges for drama (020 7946 0xxx, 07700 900xxx, 0113 496 0xxx, 01632 960xxx, ...).',
 '+44 20 7946 0123', '+44 20 7946 5678', true),
('au_fictional_phone', 'fictitious_phones', '{phone}', 'digits',
 '^(61|0)?([2378]5550[0-9]{4}|[2378]7010[0-9]{4}|491570(006|156|157|158|159|110|313|737)|1800160401|1[38]0097570[7-9])$', NULL,
 '{#25550????$,#35550????$,#75550????$,#85550????$,#27010????$,#37010????$,#77010????$,#87010????$,#491570???$,#1800160401$,#180097570?$,#130097570?$}', 'MEDIUM', true,
 'An Australian number from ACMA''s ranges for fiction (0491 570 156, 02 5550 xxxx, 02 7010 xxxx, 1800 975 707, ...).',
 '0491 570 156', '0491 571 156', true),
('vendor_test_phone', 'fictitious_phones', '{phone}', 'digits',
 '^1?5005550[0-9]{3}$', NULL,
 '{#5005550???$}', 'HIGH', true,
 'A provider''s magic test number (Twilio''s +1 500 555 0001..0009), which no phone has.',
 '+15005550006', '+1 500 556 0006', true),
('nanp_fictional_area', 'fictitious_phones', '{phone}', 'digits',
 '^1?555[2-9][0-9]{6}$', NULL,
 '{#555???????$}', 'MEDIUM', false,
 'A North American number in area code 555, which is not assigned (the contacts of Apple''s simulator use it).',
 '555-610-6679', '+1 415 555 8123', true),
('degenerate_phone', 'fictitious_phones', '{phone}', 'digits',
 '^([0-9]{1,3})?(0{7,}|1{7,}|2{7,}|3{7,}|4{7,}|5{7,}|6{7,}|7{7,}|8{7,}|9{7,}|0123456789|1234567890|123456789|12345678|9876543210|1231231234)$', NULL,
 '{#0000000,#1111111,#2222222,#3333333,#4444444,#5555555,#6666666,#7777777,#8888888,#9999999,#12345678,#9876543210,#1231231234}',
 'MEDIUM', false,
 'A degenerate number: one digit repeated, or a counting sequence, after any country code (000-000-0000, +44 0000 000000, 123-456-7890).',
 '123-456-7890', '+1 415 872 1930', true),
-- example_uuids: UUIDs copied from documentation, and degenerate ones.
('example_uuid', 'example_uuids', '{identifier}', 'uuids', NULL,
 '{550e8400-e29b-41d4-a716-,123e4567-e89b-12d3-a456-,a0eebc99-9c0b-4ef8-bb6d-,f47ac10b-58cc-4372-a567-,12345678-1234-1234-1234-,12345678-1234-5678-1234-,12345678-90ab-cdef-1234-,01234567-89ab-cdef-0123-,3fa85f64-5717-4562-b3fc-,d290f1ee-6c54-4b01-90e6-,6f9619ff-8b86-d011-b42d-,38400000-8cf0-11bd-b23e-,f81d4fae-7dec-11d0-a765-,c232ab00-9414-11ec-b3c8-,5df41881-3aed-3515-88a7-,919108f7-52d1-4320-9bac-,2ed6657d-e927-568b-95e1-,1ec9414c-232a-6b00-b3c8-,017f22e2-79b0-7cc3-98c4-,2489e9ad-2ee2-8e00-8ec9-,6ba7b810-9dad-11d1-80b4-00c04fd430c8,6ba7b811-9dad-11d1-80b4-00c04fd430c8,6ba7b812-9dad-11d1-80b4-00c04fd430c8,6ba7b814-9dad-11d1-80b4-00c04fd430c8,deadbeef-,cafebabe-}',
 NULL, 'HIGH', true,
 'A UUID copied from documentation, or a sequential variant of one (550e8400-e29b-41d4-a716-..., 123e4567-e89b-12d3-a456-426614174001, the PostgreSQL docs'' a0eebc99-..., OpenAPI''s 3fa85f64-..., the RFC 4122 and RFC 9562 examples).',
 '123e4567-e89b-12d3-a456-426614174003', '7d1c2f0e-5b7a-4c1e-9d2a-3f4b5c6d7e81', true),
('degenerate_uuid', 'example_uuids', '{identifier}', 'uuids', NULL,
 '{00000000-,11111111-1111-1111-1111-,22222222-2222-2222-2222-,33333333-3333-3333-3333-,44444444-4444-4444-4444-,55555555-5555-5555-5555-,66666666-6666-6666-6666-,77777777-7777-7777-7777-,88888888-8888-8888-8888-,99999999-9999-9999-9999-,aaaaaaaa-aaaa-aaaa-aaaa-,bbbbbbbb-bbbb-bbbb-bbbb-,cccccccc-cccc-cccc-cccc-,dddddddd-dddd-dddd-dddd-,eeeeeeee-eeee-eeee-eeee-,ffffffff-ffff-ffff-ffff-}',
 NULL, 'MEDIUM', false,
 'A degenerate UUID: nil, max, a repeated digit, or a hand-numbered fixture id (00000000-0000-0000-0000-000000000001, 11111111-1111-1111-1111-111111111112).',
 '00000000-0000-0000-0000-000000000001', '0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c62', true)
ON CONFLICT (name) DO UPDATE
   -- an upgrade brings the built-in rules' matching up to date; how they are used (enabled,
   -- severity, environments, automation) stays as it was set
   SET pack = EXCLUDED.pack, kinds = EXCLUDED.kinds, match_type = EXCLUDED.match_type,
       pattern = EXCLUDED.pattern, terms = EXCLUDED.terms, anchors = EXCLUDED.anchors,
       description = EXCLUDED.description, example_match = EXCLUDED.example_match,
       example_nonmatch = EXCLUDED.example_nonmatch
 WHERE rules.builtin;
-- >>> sql/21_activity/10_activity.sql: the follow-up raises a source's alert (62_learning/40_sources.sql)
CREATE OR REPLACE FUNCTION guardian._statement_followup(p_relid regclass, p_op text, p_rows bigint)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_rule record;
BEGIN
    -- Findings this session made and has not reported yet: read from the table, never from a
    -- setting the session could change.
    IF EXISTS (SELECT FROM guardian.findings AS f
                WHERE f.backend_pid = pg_backend_pid() AND f.relid = p_relid AND f.alert_id IS NULL) THEN
        PERFORM guardian._flush_findings(p_relid);
    END IF;
    -- A test tool, or a source that brought test data before, writing to production: the
    -- day's first write raises its alert (62_learning/40_sources.sql).
    IF p_rows > 0 AND guardian._source_verdict() THEN
        PERFORM guardian._source_alert(p_relid, p_op, p_rows);
    END IF;
    IF p_rows <= 1 THEN
        RETURN;
    END IF;
    v_rule := guardian._activity_rule(p_relid, 'bulk_statement');
    IF v_rule.enabled AND p_rows > v_rule.threshold THEN
        PERFORM guardian.raise_alert(v_rule.alert_type, v_rule.severity,
            format('one %s statement wrote %s rows to %s (threshold %s)', p_op, p_rows, p_relid, v_rule.threshold),
            p_relid::text, NULL,
            jsonb_build_object('rule', 'bulk_statement', 'rows', p_rows, 'operation', p_op,
                               'threshold', v_rule.threshold, 'role', SESSION_USER,
                               'application', current_setting('application_name', true)),
            md5(concat_ws('|', 'bulk_statement', guardian.current_environment(), p_relid::text)));
    END IF;
    IF p_op IN ('UPDATE', 'DELETE') THEN
        v_rule := guardian._activity_rule(p_relid, 'unfiltered_write');
        IF v_rule.enabled AND p_rows > v_rule.threshold AND guardian._is_unfiltered(current_query(), p_op) THEN
            PERFORM guardian.raise_alert(v_rule.alert_type,
                CASE WHEN guardian.current_environment() = 'production' THEN 'CRITICAL' ELSE v_rule.severity END,
                format('%s without a WHERE clause changed %s rows of %s', p_op, p_rows, p_relid),
                p_relid::text, NULL,
                jsonb_build_object('rule', 'unfiltered_write', 'rows', p_rows, 'operation', p_op,
                                   'query', left(current_query(), 500), 'role', SESSION_USER),
                md5(concat_ws('|', 'unfiltered_write', guardian.current_environment(), p_relid::text, p_op)));
        END IF;
    END IF;
END
$$;
COMMENT ON FUNCTION guardian._statement_followup(regclass, text, bigint) IS
    'Internal: after a write to a watched table: groups its findings into alerts and raises BULK_OPERATION / UNFILTERED_WRITE, and TEST_TOOL_WRITE / CONTAMINATION_RISK for a source''s first write of the day, at once.';
CREATE OR REPLACE FUNCTION guardian._on_statement()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_relid regclass := TG_RELID;
    v_total bigint := guardian._xact_rows(TG_RELID, TG_OP, TG_ARGV[0] = 'p');
    v_rows  bigint := v_total - coalesce((SELECT b.rows FROM guardian.statement_baselines AS b
                                           WHERE b.backend_pid = pg_backend_pid() AND b.relid = TG_RELID
                                             AND b.operation = TG_OP AND b.xid = txid_current()), 0);
BEGIN
    IF (SELECT c.relispartition FROM pg_catalog.pg_class AS c WHERE c.oid = TG_RELID) THEN
        v_relid := pg_partition_root(TG_RELID);
    END IF;
    IF v_rows > 0 THEN
        INSERT INTO guardian.activity_log (relid, operation, rows, role, application, at)
        VALUES (v_relid, TG_OP, v_rows, SESSION_USER, nullif(current_setting('application_name', true), ''),
                clock_timestamp());
    END IF;
    IF v_rows > 1 OR EXISTS (SELECT FROM guardian.findings AS f
                              WHERE f.backend_pid = pg_backend_pid() AND f.relid = v_relid AND f.alert_id IS NULL)
       OR (v_rows > 0 AND guardian._source_verdict()) THEN
        PERFORM guardian._statement_followup(v_relid, TG_OP, v_rows);
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION guardian._on_statement() IS
    'Statement trigger on watched tables (PL/pgSQL fallback of guardian._activity_end): logs the statement''s row count and follows up.';
-- >>> sql/20_contamination/30_compile.sql, 50_detect.sql: a gate expression per kind and compiled
-- domain lists keep a value's check to one expression when no rule matches it
CREATE FUNCTION guardian._gate(p_kind text, p_digits boolean)
RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
BEGIN
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION guardian._gate(text, boolean) IS
    'Generated by guardian._compile_rules(): the alternation of the expressions of a kind''s rules (that have no back-references), to rule most values out at once. Do not edit.';
CREATE FUNCTION guardian._listed_domains(p_domains text[])
RETURNS text[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
BEGIN
    RETURN '{}'::pg_catalog.text[];
END
$$;
COMMENT ON FUNCTION guardian._listed_domains(text[]) IS
    'Generated by guardian._compile_rules(): the names of the domains rules that list any of these domains. Do not edit.';
REVOKE EXECUTE ON FUNCTION guardian._gate(text, boolean), guardian._listed_domains(text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION guardian._gate(text, boolean), guardian._listed_domains(text[]) TO guardian_owner, guardian_reader;
CREATE OR REPLACE FUNCTION guardian._compile_rules()
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_kinds   text := '';
    v_columns text := '';
    v_bounds  uuid[];
    v_row     record;
    v_gates   text := '';
    v_domains jsonb;
BEGIN
    BEGIN
        FOR v_row IN
            SELECT k.kind, ARRAY(SELECT DISTINCT a FROM guardian._applicable_rules() AS r,
                                        unnest(guardian._rule_anchors(r)) AS a
                                  WHERE k.kind = ANY (r.kinds) ORDER BY 1) AS anchors
              FROM guardian.kinds AS k ORDER BY k.kind
        LOOP
            v_kinds := v_kinds || format(E'\n        WHEN p_kind OPERATOR(pg_catalog.=) %L THEN %L::pg_catalog.text[]',
                                         v_row.kind, v_row.anchors);
        END LOOP;
        FOR v_row IN
            SELECT r.column_pattern, guardian._rule_anchors(r) AS anchors
              FROM guardian._applicable_rules() AS r
             WHERE r.column_pattern IS NOT NULL ORDER BY r.name
        LOOP
            v_columns := v_columns || format(
                E'\n        OPERATOR(pg_catalog.||) CASE WHEN p_column OPERATOR(pg_catalog.~*) %L THEN %L::pg_catalog.text[] ELSE %L::pg_catalog.text[] END',
                v_row.column_pattern, v_row.anchors, '{}');
        END LOOP;
        FOR v_row IN
            SELECT k.kind, g.digits,
                   (SELECT string_agg('(?:' || r.matcher || ')', '|' ORDER BY r.name)
                      FROM guardian._applicable_rules() AS r
                     WHERE k.kind = ANY (r.kinds) AND r.matcher !~ '\\[1-9]'
                       AND CASE WHEN g.digits THEN r.match_type = 'digits'
                                ELSE r.match_type IN ('regex', 'words', 'prefix', 'uuids') END) AS gate
              FROM guardian.kinds AS k, (VALUES (false), (true)) AS g(digits)
             ORDER BY 1, 2
        LOOP
            CONTINUE WHEN v_row.gate IS NULL;
            v_gates := v_gates || format(E'\n        WHEN p_kind OPERATOR(pg_catalog.=) %L AND p_digits OPERATOR(pg_catalog.=) %L THEN %L',
                                         v_row.kind, v_row.digits, v_row.gate);
        END LOOP;
        SELECT jsonb_object_agg(x.term, x.rules) INTO v_domains
          FROM (SELECT t.term, jsonb_agg(DISTINCT r.name) AS rules
                  FROM guardian._applicable_rules() AS r, unnest(r.terms) AS t(term)
                 WHERE r.match_type = 'domains'
                 GROUP BY t.term) AS x;
        SELECT coalesce(array_agg(b ORDER BY ord), '{}') INTO v_bounds
          FROM (SELECT b, row_number() OVER () AS ord
                  FROM guardian._applicable_rules() AS r, unnest(r.terms) AS t,
                       unnest(guardian._uuid_range(t)) AS b
                 WHERE r.match_type = 'uuids' AND 'identifier' = ANY (r.kinds)) AS x;
    END;

    EXECUTE format(
        $ddl$CREATE OR REPLACE FUNCTION guardian._anchors(p_kind text, p_column text)
RETURNS text[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS %L$ddl$,
        CASE WHEN v_kinds = '' THEN E'\nBEGIN\n    RETURN ''{}''::pg_catalog.text[];\nEND\n'
             ELSE format(E'\nBEGIN\n    RETURN CASE%s\n        ELSE %L::pg_catalog.text[] END%s;\nEND\n', v_kinds, '{}', v_columns) END);
    EXECUTE format(
        $ddl$CREATE OR REPLACE FUNCTION guardian._gate(p_kind text, p_digits boolean)
RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS %L$ddl$,
        CASE WHEN v_gates = '' THEN E'\nBEGIN\n    RETURN NULL;\nEND\n'
             ELSE format(E'\nBEGIN\n    RETURN CASE%s\n    END;\nEND\n', v_gates) END);
    EXECUTE format(
        $ddl$CREATE OR REPLACE FUNCTION guardian._listed_domains(p_domains text[])
RETURNS text[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS %L$ddl$,
        CASE WHEN v_domains IS NULL THEN E'\nBEGIN\n    RETURN ''{}''::pg_catalog.text[];\nEND\n'
             ELSE format(E'\nBEGIN\n    RETURN ARRAY(SELECT DISTINCT pg_catalog.jsonb_array_elements_text(%L::pg_catalog.jsonb OPERATOR(pg_catalog.->) d.d)\n                   FROM pg_catalog.unnest(p_domains) AS d(d));\nEND\n', v_domains) END);
    EXECUTE format(
        $ddl$CREATE OR REPLACE FUNCTION guardian._uuid_bounds(p_column text)
RETURNS uuid[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS %L$ddl$,
        format(E'\nBEGIN\n    RETURN %L::pg_catalog.uuid[];\nEND\n', coalesce(v_bounds, '{}')));
END
$$;
COMMENT ON FUNCTION guardian._compile_rules() IS
    'Internal: regenerates guardian._anchors(), guardian._gate(), guardian._listed_domains() and guardian._uuid_bounds() from the rules that apply in this environment. Replacing them also tells every backend to reload its prefilter (guard modes are applied there).';
CREATE OR REPLACE FUNCTION guardian._match(
    p_kind text, p_column text, p_value text, p_relid regclass DEFAULT NULL, p_exact_only boolean DEFAULT false)
RETURNS TABLE (rule text, severity text, sample text)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
-- Planning the query below for each value's parameters took 1.7 ms, running it 0.05 ms.
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_norm   text := guardian._normalize(p_value);
    v_text   boolean;
    v_digits boolean;
    v_listed text[];
BEGIN
    IF v_norm IS NULL OR v_norm = '' THEN
        RETURN;
    END IF;
    -- does any of the kind's expressions match at all? (see guardian._gate)
    v_text := coalesce(v_norm ~* guardian._gate(p_kind, false), false);
    v_digits := coalesce(regexp_replace(v_norm, '[^0-9]', '', 'g') ~ guardian._gate(p_kind, true), false);
    v_listed := CASE WHEN strpos(v_norm, '@') > 0 THEN guardian._listed_domains(guardian._mail_domains(v_norm)) END;
    -- One static query (its plan is cached for the session); _rule_matches inlines into it.
    RETURN QUERY
        -- (a domain rule's anchors, thousands of domains, show nothing in the local part)
        SELECT r.name, r.severity,
               guardian._redact(p_value, p_kind, CASE WHEN r.match_type = 'domains' THEN '{}'::text[]
                                                      ELSE guardian._rule_anchors(r) END)
          FROM guardian.rules AS r
         WHERE r.enabled
           AND (r.environments IS NULL OR guardian.current_environment() = ANY (r.environments))
           AND (p_kind = ANY (r.kinds) OR (r.column_pattern IS NOT NULL AND p_column ~* r.column_pattern))
           AND (NOT p_exact_only OR r.match_type = 'exact')
           -- a domain rule is looked up in the compiled lists (its terms are not read here);
           -- the others first pass their kind's gate (guardian._gate)
           AND CASE WHEN r.match_type = 'domains' THEN r.name = ANY (v_listed)
                    WHEN p_kind = ANY (r.kinds) AND r.match_type IN ('regex', 'words', 'prefix', 'uuids')
                         AND NOT v_text AND r.matcher !~ '\\[1-9]' THEN false
                    WHEN p_kind = ANY (r.kinds) AND r.match_type = 'digits'
                         AND NOT v_digits AND r.matcher !~ '\\[1-9]' THEN false
                    ELSE guardian._rule_matches(r.match_type, r.matcher, r.terms, v_norm) END
           AND NOT EXISTS (
                SELECT FROM guardian.allowlist AS a
                 WHERE (a.rule IS NULL OR a.rule = r.name)
                   AND (a.relid IS NULL OR a.relid = p_relid)
                   AND (a.column_name IS NULL OR a.column_name = p_column)
                   AND (a.value IS NULL OR a.value = v_norm)
                   AND (a.expires_at IS NULL OR a.expires_at > now()))
         ORDER BY array_position(ARRAY['CRITICAL','HIGH','MEDIUM','LOW','INFO'], r.severity), r.name;
END
$$;
COMMENT ON FUNCTION guardian._match(text, text, text, regclass, boolean) IS
    'Internal: the rules a value matches (allowlist applied), with a redacted sample.';
SELECT guardian._compile_rules();

-- >>> sql/62_learning: labels and rules learned from them
-- Labels: what people said about records of watched tables (test data or real), kept with the
-- values that were seen, per table and column. Pattern induction (20_suggestions.sql) learns
-- from them. A value is kept normalised (the form rules see) unless its column's kind asks for
-- redaction (guardian.kinds.label_values): then only a masked sample stays.
ALTER TABLE guardian.kinds
    ADD COLUMN label_values text NOT NULL DEFAULT 'keep',
    ADD CONSTRAINT kinds_label_values_chk CHECK (label_values IN ('keep', 'redact'));
COMMENT ON COLUMN guardian.kinds.label_values IS
    'What a label keeps of a value of this kind: keep (the normalised value, which rules can be learned from) or redact (a masked sample only; nothing is learned from the column).';
UPDATE guardian.kinds SET label_values = 'redact' WHERE kind = 'free_text';

CREATE TABLE guardian.labels (
    relid       regclass NOT NULL,
    record_id   text NOT NULL,
    column_name text NOT NULL,
    kind        text NOT NULL,
    label       text NOT NULL,
    value       text,
    sample      text,
    source      text NOT NULL DEFAULT 'manual',
    alert_id    uuid REFERENCES guardian.monitoring_alerts (id) ON DELETE SET NULL,
    labelled_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    labelled_by text NOT NULL,
    CONSTRAINT labels_pkey PRIMARY KEY (relid, record_id, column_name),
    CONSTRAINT labels_label_chk CHECK (label IN ('test', 'real')),
    CONSTRAINT labels_source_chk CHECK (source IN ('manual', 'alert'))
);
COMMENT ON TABLE guardian.labels IS
    'Records people labelled test or real (guardian.label_records(), or resolving a contamination alert), one row per watched column with the value seen (NULL where the kind redacts, or while the record has not been read yet).';
COMMENT ON COLUMN guardian.labels.value IS
    'The normalised value (what rules match); NULL where the kind''s label_values is redact, or until the record is read (labels from an alert are filled in by the next label_records() or suggest_rules() of someone who can read the table).';
COMMENT ON COLUMN guardian.labels.source IS
    'manual (guardian.label_records) or alert (resolving a contamination alert: cleaned or confirmed means test, false_positive means real).';
SELECT pg_catalog.pg_extension_config_dump('guardian.labels', '');
CREATE INDEX labels_kind_label_idx ON guardian.labels (kind, label);

-- Keeps labels (as guardian_owner): p_rows is [{"record_id": ..., "row": {...}}] of rows read
-- by the caller; a row NULL keeps a label whose values are still to be read.
CREATE FUNCTION guardian._store_labels(
    p_relid regclass, p_label text, p_rows jsonb, p_source text DEFAULT 'manual', p_alert uuid DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_watch guardian.watched_tables := guardian._scan_plan(p_relid);
    v_count integer;
BEGIN
    INSERT INTO guardian.labels AS l (relid, record_id, column_name, kind, label, value, sample, source, alert_id,
                                      labelled_by)
    SELECT p_relid, r ->> 'record_id', c.column_name, c.kind, p_label,
           CASE WHEN k.label_values = 'keep' THEN guardian._normalize(r -> 'row' ->> c.column_name) END,
           CASE WHEN r -> 'row' ->> c.column_name IS NOT NULL
                THEN guardian._redact(r -> 'row' ->> c.column_name, c.kind, guardian._anchors(c.kind, c.column_name)) END,
           p_source, p_alert, guardian._actor()
      FROM jsonb_array_elements(p_rows) AS r,
           unnest(v_watch.column_names, v_watch.column_kinds) AS c(column_name, kind)
      JOIN guardian.kinds AS k ON k.kind = c.kind
     -- a row that was read keeps its non-empty values; one still to be read keeps a placeholder
     WHERE jsonb_typeof(r -> 'row') IS DISTINCT FROM 'object' OR coalesce(r -> 'row' ->> c.column_name, '') <> ''
    ON CONFLICT ON CONSTRAINT labels_pkey DO UPDATE
       SET label = EXCLUDED.label,
           kind = EXCLUDED.kind,
           value = coalesce(EXCLUDED.value, CASE WHEN EXCLUDED.sample IS NULL THEN l.value END),
           sample = coalesce(EXCLUDED.sample, l.sample),
           source = EXCLUDED.source,
           alert_id = coalesce(EXCLUDED.alert_id, l.alert_id),
           labelled_at = EXCLUDED.labelled_at,
           labelled_by = EXCLUDED.labelled_by;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION guardian._store_labels(regclass, text, jsonb, text, uuid) IS
    'Internal: keeps the labels of rows the caller read ([{"record_id", "row"}]), one per watched column; a NULL row keeps a placeholder to be filled in.';

-- The rows of a table with the given record ids, as a scan would name them, read as the caller
-- without running application code (see guardian._scan_row_json), then from the quarantine
-- (rows a cleanup removed).
CREATE FUNCTION guardian._label_rows(p_table regclass, p_record_ids text[])
RETURNS TABLE (record_id text, row_data jsonb)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    v_watch guardian.watched_tables := guardian._scan_plan(p_table);
    v_key   text := v_watch.key_columns[1];
    v_type  oid;
    v_row   text := guardian._scan_row_json(p_table);
BEGIN
    SELECT a.atttypid INTO v_type
      FROM pg_catalog.pg_attribute AS a
     WHERE a.attrelid = p_table AND a.attname = v_key AND NOT a.attisdropped;
    IF cardinality(v_watch.key_columns) = 1 AND guardian._json_safe_type(v_type)
       AND coalesce(v_watch.column_kinds[array_position(v_watch.column_names, v_key)], '')
           NOT IN ('email', 'phone', 'person_name') THEN
        -- the id is the key's own text: look the rows up by key (an index scan)
        BEGIN
            RETURN QUERY EXECUTE format(
                'SELECT (guardian._record_ref($1, %1$s)).record_id, %1$s FROM %2$s AS t
                  WHERE t.%3$I OPERATOR(pg_catalog.=) ANY ($2::%4$s[])',
                v_row, p_table, v_key, pg_catalog.format_type(v_type, NULL))
                USING v_watch, p_record_ids;
        EXCEPTION WHEN invalid_text_representation OR numeric_value_out_of_range OR invalid_datetime_format THEN
            RAISE EXCEPTION 'a record id of % is not a valid %', p_table, pg_catalog.format_type(v_type, NULL)
                USING ERRCODE = 'invalid_parameter_value', DETAIL = SQLERRM,
                      HINT = format('Record ids are the values of %I, as guardian.scan() shows them.', v_key);
        END;
    ELSE
        RETURN QUERY EXECUTE format(
            'SELECT x.record_id, x.row_data
               FROM (SELECT (guardian._record_ref($1, %1$s)).record_id, %1$s AS row_data FROM %2$s AS t) AS x
              WHERE x.record_id OPERATOR(pg_catalog.=) ANY ($2)', v_row, p_table)
            USING v_watch, p_record_ids;
    END IF;
    IF pg_catalog.has_table_privilege('guardian.quarantine', 'SELECT') THEN
        RETURN QUERY
            SELECT DISTINCT ON (x.record_id) x.record_id, x.row_data
              FROM (SELECT (guardian._record_ref(v_watch, q.row_data)).record_id, q.row_data, q.seq
                      FROM guardian.quarantine AS q
                     WHERE q.relid = p_table AND q.action = 'delete') AS x
             WHERE x.record_id = ANY (p_record_ids)
             ORDER BY x.record_id, x.seq DESC;
    END IF;
END
$$;
COMMENT ON FUNCTION guardian._label_rows(regclass, text[]) IS
    'Internal: the rows (as JSON) with these record ids, from the table as the caller reads it, else from the quarantine.';

-- Labels from an alert are kept before anyone has read the rows: fill in their values.
CREATE FUNCTION guardian._fill_labels(p_table regclass)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_group record;
    v_count integer := 0;
BEGIN
    FOR v_group IN
        SELECT l.label, l.source, l.alert_id, array_agg(DISTINCT l.record_id) AS ids
          FROM guardian.labels AS l
          JOIN guardian.kinds AS k ON k.kind = l.kind
         WHERE l.relid = p_table AND l.value IS NULL AND l.sample IS NULL
         GROUP BY l.label, l.source, l.alert_id
    LOOP
        v_count := v_count + guardian._store_labels(p_table, v_group.label,
            (SELECT coalesce(jsonb_agg(DISTINCT jsonb_build_object('record_id', r.record_id, 'row', r.row_data)), '[]')
               FROM guardian._label_rows(p_table, v_group.ids) AS r),
            v_group.source, v_group.alert_id);
    END LOOP;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION guardian._fill_labels(regclass) IS
    'Internal: reads (as the caller) the values of labelled records that were labelled without them (from an alert).';

CREATE FUNCTION guardian.label_records(p_table regclass, p_record_ids text[], p_label text)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_ids     text[];
    v_rows    jsonb;
    v_missing text[];
BEGIN
    IF p_label IS NULL OR p_label NOT IN ('test', 'real') THEN
        RAISE EXCEPTION 'unknown label %', coalesce(quote_literal(p_label), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Label records ''test'' (test data) or ''real'', e.g. SELECT guardian.label_records(''public.patients'', ARRAY[''42''], ''test'');';
    END IF;
    IF p_table IS NULL THEN
        RAISE EXCEPTION 'table must not be NULL'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'e.g. SELECT guardian.label_records(''public.patients'', ARRAY[''42''], ''test'');';
    END IF;
    IF (SELECT c.relkind FROM pg_catalog.pg_class AS c WHERE c.oid = p_table) NOT IN ('r', 'p', 'f', 'm') THEN
        RAISE EXCEPTION '% is not a table', p_table
            USING ERRCODE = 'wrong_object_type', HINT = 'Label the records of the table a view reads from.';
    END IF;
    v_ids := ARRAY(SELECT DISTINCT i FROM unnest(p_record_ids) AS i);
    IF coalesce(cardinality(v_ids), 0) = 0 OR array_position(v_ids, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'no record ids given (or a NULL among them) for %', p_table
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Record ids are primary keys as text, as guardian.scan() returns them.';
    END IF;
    IF jsonb_array_length((guardian._scan_plan(p_table)).columns) = 0 THEN
        RAISE EXCEPTION '% has no column a rule could apply to', p_table
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Labels keep the values of watched columns: watch the table with column kinds, e.g. guardian.watch(''public.t'', ''{"note": "free_text"}'').';
    END IF;
    PERFORM guardian._refuse_app_code(ARRAY[p_table], format('guardian.label_records(%L)', p_table::text),
                                      p_runs => ARRAY['read']);
    SELECT coalesce(jsonb_agg(jsonb_build_object('record_id', r.record_id, 'row', r.row_data)), '[]')
      INTO v_rows
      FROM (SELECT DISTINCT ON (x.record_id) x.record_id, x.row_data
              FROM guardian._label_rows(p_table, v_ids) AS x ORDER BY x.record_id) AS r;
    v_missing := ARRAY(SELECT i FROM unnest(v_ids) AS i
                        WHERE NOT v_rows @> jsonb_build_array(jsonb_build_object('record_id', i)) ORDER BY 1);
    IF cardinality(v_missing) > 0 THEN
        RAISE EXCEPTION '% of % record ids are not rows of %: %', cardinality(v_missing), cardinality(v_ids), p_table,
                        array_to_string(ARRAY(SELECT quote_literal(m) FROM unnest(v_missing[1:5]) AS m), ', ')
                        || CASE WHEN cardinality(v_missing) > 5 THEN ', ...' ELSE '' END
            USING ERRCODE = 'no_data_found',
                  DETAIL = 'Nothing was labelled.',
                  HINT = 'Record ids are primary keys as text, as guardian.scan() returns them; list the table''s with SELECT DISTINCT record_id FROM guardian.scan(...).';
    END IF;
    PERFORM guardian._store_labels(p_table, p_label, v_rows);
    PERFORM guardian._fill_labels(p_table);
    RETURN jsonb_array_length(v_rows);
END
$$;
COMMENT ON FUNCTION guardian.label_records(regclass, text[], text) IS
    'Label records (primary keys as text, as guardian.scan() names them) ''test'' or ''real'': each watched column''s value is kept (normalised, or masked where the kind redacts) for guardian.suggest_rules() to learn from. Rows a cleanup quarantined can be labelled too. Returns the number of records labelled; unknown ids label nothing.';

-- Resolving a contamination alert labels its records: cleaned or confirmed means test data,
-- false_positive (an allowlist entry, or said so) means real. Values come from the quarantine
-- when a cleanup removed the rows; the others are read by the next label_records() or
-- suggest_rules() of someone who can read the table.
CREATE FUNCTION guardian._label_alert(p_alert uuid, p_outcome text)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_table regclass;
    v_ids   text[];
    v_count integer := 0;
BEGIN
    IF p_outcome IS NULL OR p_outcome NOT IN ('cleaned', 'confirmed', 'false_positive') THEN
        RETURN 0;
    END IF;
    FOR v_table, v_ids IN
        SELECT f.relid, array_agg(DISTINCT f.record_id)
          FROM guardian.findings AS f
         WHERE f.alert_id = p_alert AND f.record_id IS NOT NULL
           AND EXISTS (SELECT FROM pg_catalog.pg_class AS c WHERE c.oid = f.relid)
         GROUP BY f.relid
    LOOP
        v_count := v_count + guardian._store_labels(v_table,
            CASE WHEN p_outcome = 'false_positive' THEN 'real' ELSE 'test' END,
            (SELECT jsonb_agg(jsonb_build_object('record_id', i, 'row', q.row_data))
               FROM unnest(v_ids) AS i
               LEFT JOIN (SELECT DISTINCT ON (x.record_id) x.record_id, x.row_data
                            FROM (SELECT (guardian._record_ref(guardian._scan_plan(v_table), q.row_data)).record_id,
                                         q.row_data, q.seq
                                    FROM guardian.quarantine AS q
                                   WHERE q.relid = v_table AND q.action = 'delete') AS x
                           ORDER BY x.record_id, x.seq DESC) AS q ON q.record_id = i),
            'alert', p_alert);
    END LOOP;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION guardian._label_alert(uuid, text) IS
    'Internal: the labels a resolved contamination alert gives its records (cleaned/confirmed: test, false_positive: real).';

-- Pattern induction: from the values labelled test, candidate rules in the rule language
-- (domains, local-part shapes with digit runs generalised, name tokens, numbered templates,
-- UUID families, phone ranges), each scored against the labels and the table's current data.
-- Accepting one makes it an ordinary rule, examples included (the rule validator keeps it
-- honest).
INSERT INTO guardian.parameters (name, default_value, min_value, max_value, unit, description) VALUES
    ('learning.sample_rows', 200000, 1000, 100000000, 'rows',
     'guardian.suggest_rules() counts a suggestion''s matches on at most about this many rows of the table (a sample beyond)'),
    ('learning.min_support', 2, 1, 1000, 'records',
     'A suggested rule must match at least this many records labelled test');

CREATE TABLE guardian.rule_suggestions (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    relid         regclass NOT NULL,
    column_name   text NOT NULL,
    kind          text NOT NULL,
    match_type    text NOT NULL,
    pattern       text,
    terms         text[],
    anchors       text[],
    matcher       text NOT NULL,
    examples      text[] NOT NULL,
    nonmatch      text,
    test_hits     integer NOT NULL,
    real_hits     integer NOT NULL,
    matches_now   bigint NOT NULL,
    est_precision numeric(4, 3) NOT NULL,
    status        text NOT NULL DEFAULT 'open',
    rule_name     text,
    created_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    decided_at    timestamptz,
    decided_by    text,
    CONSTRAINT rule_suggestions_status_chk CHECK (status IN ('open', 'accepted', 'dismissed'))
);
COMMENT ON TABLE guardian.rule_suggestions IS
    'Rules induced from labelled test values by guardian.suggest_rules(): open ones are replaced on every call; accepted and dismissed ones stay (a dismissed rule is not suggested again).';
COMMENT ON COLUMN guardian.rule_suggestions.est_precision IS
    'Estimated share of the rule''s matches that are test data: labelled test hits against labelled real hits (of the kind, any table) and the matches in the table''s current data that the labelled sample does not explain.';
COMMENT ON COLUMN guardian.rule_suggestions.nonmatch IS
    'A value labelled real that the rule does not match: the rule''s example_nonmatch once accepted.';
SELECT pg_catalog.pg_extension_config_dump('guardian.rule_suggestions', '');
SELECT pg_catalog.pg_extension_config_dump('guardian.rule_suggestions_id_seq', '');
CREATE INDEX rule_suggestions_relid_idx ON guardian.rule_suggestions (relid, status);

-- The candidate rules one normalised test value suggests, from specific to general.
CREATE FUNCTION guardian._induce(p_kind text, p_value text)
RETURNS TABLE (match_type text, pattern text, terms text[], anchors text[], family text)
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_local  text;
    v_domain text;
    v_labels text[];
    v_parent text;
    v_token  text;
    v_prefix text;
    v_digits text;
    v_k      integer;
    v_n      integer;
BEGIN
    IF p_value IS NULL OR p_value = '' THEN
        RETURN;
    END IF;
    IF p_kind = 'email' THEN
        v_local := substring(p_value FROM '^(.+)@[^@]+$');
        v_domain := substring(p_value FROM '@([^@]+)$');
        IF v_local IS NULL OR v_domain IS NULL THEN
            RETURN;
        END IF;
        -- the domain, and the organisation's domain of a sub-domain (staging.acme.io: acme.io)
        IF v_domain ~ '^[a-z0-9-]+(\.[a-z0-9-]+)+$' AND NOT guardian._real_mail_provider(v_domain) THEN
            RETURN QUERY SELECT 'domains', NULL::text, ARRAY[v_domain], NULL::text[], 'domain'::text;
            v_labels := string_to_array(v_domain, '.');
            IF cardinality(v_labels) >= 3 THEN
                v_parent := array_to_string(v_labels[2:], '.');
                IF v_parent !~ '^(co|com|org|net|ac|gov|edu|ltd|plc|nhs|or|ne|go)\.[a-z]{2}$'
                   AND NOT guardian._real_mail_provider(v_parent) THEN
                    RETURN QUERY SELECT 'domains', NULL::text, ARRAY[v_parent], NULL::text[], 'domain'::text;
                END IF;
            END IF;
        END IF;
        -- the local part's shape, digit runs generalised: cypress+1702@ -> ^cypress\+[0-9]+@
        v_prefix := substring(v_local FROM '^([a-z]{2,})');
        IF v_local ~ '[0-9]' AND v_prefix IS NOT NULL THEN
            RETURN QUERY SELECT 'regex', '^' || regexp_replace(guardian._regex_literal(v_local), '[0-9]+', '[0-9]+', 'g') || '@',
                                NULL::text[], ARRAY['^' || v_prefix], 'shape'::text;
            RETURN QUERY SELECT 'regex', '^' || regexp_replace(guardian._regex_literal(v_local), '[0-9]+', '[0-9]+', 'g') || '@'
                                         || guardian._regex_literal(v_domain) || '$',
                                NULL::text[], ARRAY['^' || v_prefix], 'shape'::text;
        END IF;
        -- each word of the local part as a marker: playwright_user_3@, jane.cypress@
        FOR v_token IN SELECT DISTINCT m[1] FROM regexp_matches(v_local, '([a-z]{3,})', 'g') AS m LOOP
            RETURN QUERY SELECT 'regex', '(^|[^[:alnum:]@])' || v_token || '([^[:alpha:]@][^@]*)?@', NULL::text[],
                                ARRAY['^' || v_token], 'token'::text;
        END LOOP;
        -- a sub-address tag: jane+cypress42@
        v_token := substring(v_local FROM '\+([a-z]{2,})');
        IF v_token IS NOT NULL THEN
            RETURN QUERY SELECT 'regex', '\+' || v_token || '[^@]*@', NULL::text[], ARRAY['+' || v_token], 'tag'::text;
        END IF;
    ELSIF p_kind = 'phone' THEN
        -- the number's last ten digits with its last 2, 3 or 4 digits free: a range
        v_digits := right(regexp_replace(p_value, '[^0-9]', '', 'g'), 10);
        IF length(v_digits) >= 8 THEN
            FOREACH v_k IN ARRAY ARRAY[2, 3, 4] LOOP
                v_prefix := left(v_digits, length(v_digits) - v_k);
                RETURN QUERY SELECT 'digits', v_prefix || '[0-9]{' || v_k || '}$', NULL::text[],
                                    ARRAY['#' || v_prefix || repeat('?', v_k) || '$'], 'range'::text;
            END LOOP;
        END IF;
    ELSIF p_kind = 'identifier' THEN
        IF p_value ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
            RETURN QUERY SELECT 'uuids', NULL::text, ARRAY[p_value], NULL::text[], 'uuid'::text;
            -- a family: the same first groups (random UUIDs share 32 bits once in four billion)
            FOREACH v_n IN ARRAY ARRAY[24, 19, 14, 9] LOOP
                RETURN QUERY SELECT 'uuids', NULL::text, ARRAY[left(p_value, v_n)], NULL::text[], 'uuid'::text;
            END LOOP;
        END IF;
    ELSE
        -- names, organisations, text: its words, numbered templates (not the whole value: a name
        -- is a pattern only when different test values share it, and a whole value is one)
        FOR v_token IN SELECT DISTINCT m[1] FROM regexp_matches(p_value, '([[:alpha:]]{3,})', 'g') AS m LOOP
            RETURN QUERY SELECT 'words', NULL::text, ARRAY[v_token], NULL::text[], 'word'::text;
        END LOOP;
        FOR v_token IN SELECT DISTINCT m[1] FROM regexp_matches(p_value, '([[:alpha:]]{2,})[ _-]?[0-9]+', 'g') AS m LOOP
            RETURN QUERY SELECT 'regex', '(^|[^[:alnum:]])' || guardian._regex_literal(v_token) || '[ _-]?[0-9]+($|[^[:alnum:]])',
                                NULL::text[], ARRAY['^' || v_token], 'template'::text;
        END LOOP;
        v_prefix := substring(p_value FROM '^([[:alpha:]]{2,})');
        IF p_value ~ '[0-9]' AND v_prefix IS NOT NULL THEN
            RETURN QUERY SELECT 'regex', '^' || regexp_replace(guardian._regex_literal(p_value), '[0-9]+', '[0-9]+', 'g') || '$',
                                NULL::text[], ARRAY['^' || v_prefix], 'template'::text;
        END IF;
    END IF;
END
$$;
COMMENT ON FUNCTION guardian._induce(text, text) IS
    'Internal: candidate rules (match type, pattern, terms, anchors) that one normalised value of a kind suggests, with their family (domain, shape, token, tag, range, uuid, word, template).';

-- The literal substrings a candidate's matches all contain (what _rule_anchors gives a rule).
CREATE FUNCTION guardian._candidate_anchors(p_match_type text, p_pattern text, p_terms text[], p_anchors text[])
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN p_anchors IS NOT NULL THEN p_anchors
        WHEN p_match_type = 'domains' THEN ARRAY(SELECT '@=' || t FROM unnest(p_terms) AS t)
        WHEN p_match_type = 'uuids' THEN p_terms
        WHEN p_match_type = 'words' THEN ARRAY(SELECT '^' || t || '$' FROM unnest(p_terms) AS t)
        WHEN p_match_type = 'exact' THEN
            ARRAY(SELECT '^' || (regexp_split_to_array(t, ' '))[cardinality(regexp_split_to_array(t, ' '))] || '$'
                    FROM unnest(p_terms) AS t)
        WHEN p_match_type = 'prefix' THEN ARRAY[lower(p_pattern)]
        ELSE ARRAY['']
    END
$$;
COMMENT ON FUNCTION guardian._candidate_anchors(text, text, text[], text[]) IS
    'Internal: the prefilter anchors of a candidate rule.';

CREATE FUNCTION guardian._suggest_for_column(p_table regclass, p_column text, p_kind text, p_covered text[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    v_type      oid;
    v_expr      text;
    v_limit     numeric := guardian.param('learning.sample_rows');
    v_support   numeric := guardian.param('learning.min_support');
    v_estimate  numeric;
    v_sample    text := '';
    v_scale     numeric := 1;
    v_values    text[];
    v_counts    bigint[];
    v_rows      numeric;
    v_labelled  numeric;
    v_has_real  boolean;
    v_count     integer;
BEGIN
    SELECT a.atttypid INTO v_type
      FROM pg_catalog.pg_attribute AS a
     WHERE a.attrelid = p_table AND a.attname = p_column AND NOT a.attisdropped;
    IF v_type IS NULL THEN
        RETURN 0;
    END IF;
    -- The column's current values (a sample of a large table), read without application code.
    v_expr := format(CASE WHEN guardian._json_safe_type(v_type) THEN 't.%I::pg_catalog.text'
                          ELSE 'pg_catalog.format(''%%s'', t.%I)' END, p_column);
    SELECT greatest(c.reltuples, 0) INTO v_estimate FROM pg_catalog.pg_class AS c WHERE c.oid = p_table;
    IF v_estimate > v_limit THEN
        v_sample := format(' TABLESAMPLE SYSTEM (%s)', round(100 * v_limit / v_estimate, 4));
    END IF;
    EXECUTE format('SELECT coalesce(array_agg(x.value), ''{}''), coalesce(array_agg(x.n), ''{}''), coalesce(sum(x.n), 0)
                      FROM (SELECT guardian._normalize(%1$s) AS value, count(*) AS n
                              FROM %2$s AS t%3$s GROUP BY 1) AS x', v_expr, p_table, v_sample)
        INTO v_values, v_counts, v_rows;
    IF v_sample <> '' AND v_rows > 0 THEN
        v_scale := greatest(v_estimate / v_rows, 1);
        v_rows := v_estimate;
    END IF;
    SELECT count(DISTINCT l.record_id), bool_or(l.label = 'real') INTO v_labelled, v_has_real
      FROM guardian.labels AS l WHERE l.relid = p_table;

    WITH tests AS (
        SELECT l.record_id, l.value, l.record_id = ANY (p_covered) AS covered
          FROM guardian.labels AS l
         WHERE l.relid = p_table AND l.column_name = p_column AND l.label = 'test' AND l.value IS NOT NULL
    ), reals AS (
        SELECT DISTINCT l.value FROM guardian.labels AS l
         WHERE l.kind = p_kind AND l.label = 'real' AND l.value IS NOT NULL
    ), candidates AS (
        -- only what at least v_support labelled records suggest is worth matching against them all
        -- (a candidate's matches are mostly the records that suggest it: this spares compiling
        -- one expression per value)
        SELECT c.match_type, c.pattern, c.terms, c.anchors, min(c.family) AS family
          FROM (SELECT t.value, array_agg(t.record_id) AS records FROM tests AS t GROUP BY t.value) AS t,
               guardian._induce(p_kind, t.value) AS c,
               unnest(t.records) AS r(record_id)
         GROUP BY 1, 2, 3, 4
        HAVING count(DISTINCT r.record_id) >= v_support
    ), compiled AS (
        SELECT c.*, guardian._rule_matcher(c.match_type, c.pattern, c.terms) AS matcher,
               guardian._candidate_anchors(c.match_type, c.pattern, c.terms, c.anchors) AS prefilter
          FROM candidates AS c
    ), supported AS (
        SELECT c.*, h.hits, h.new_hits, h.examples
          FROM compiled AS c,
               LATERAL (SELECT array_agg(DISTINCT t.record_id ORDER BY t.record_id) AS hits,
                               count(DISTINCT t.record_id) FILTER (WHERE NOT t.covered) AS new_hits,
                               count(DISTINCT t.value) AS distinct_values,
                               (array_agg(DISTINCT t.value))[1:3] AS examples
                          FROM tests AS t
                         WHERE guardian._rule_matches(c.match_type, c.matcher, c.terms, t.value)) AS h
         WHERE cardinality(h.hits) >= v_support AND h.new_hits > 0
           -- a name or a word is a pattern only when different test values share it (fixture rows
           -- often carry a realistic name whose record is test for another column's sake)
           AND (c.family NOT IN ('token', 'word') OR h.distinct_values >= 2)
           -- not a rule that exists, nor one someone dismissed
           AND NOT EXISTS (SELECT FROM guardian.rules AS r
                            WHERE r.match_type = c.match_type AND r.kinds @> ARRAY[p_kind]
                              AND r.matcher = c.matcher)
           AND NOT EXISTS (SELECT FROM guardian.rule_suggestions AS s
                            WHERE s.relid = p_table AND s.column_name = p_column AND s.status <> 'open'
                              AND s.match_type = c.match_type AND s.matcher = c.matcher)
    ), scored AS (
        SELECT s.*, r.real_hits, r.nonmatch, n.matches_now
          FROM supported AS s,
               LATERAL (SELECT count(*) FILTER (WHERE m) AS real_hits, (array_agg(x.value) FILTER (WHERE NOT m))[1] AS nonmatch
                          FROM (SELECT rv.value, guardian._rule_matches(s.match_type, s.matcher, s.terms, rv.value) AS m
                                  FROM reals AS rv) AS x) AS r,
               LATERAL (SELECT round(coalesce(sum(v.n), 0) * v_scale)::bigint AS matches_now
                          FROM unnest(v_values, v_counts) AS v(value, n)
                         WHERE guardian._contains_any(v.value, s.prefilter)
                           AND guardian._rule_matches(s.match_type, s.matcher, s.terms, v.value)) AS n
    ), estimated AS (
        -- Matches now that neither labelled test hits nor what the unlabelled share of the test
        -- data would add explain (three times the expected number, plus 3) count as real. Without
        -- any real label, every unlabelled match does.
        SELECT s.*,
               round((cardinality(s.hits) / (cardinality(s.hits) + s.real_hits + 0.01 + CASE
                   WHEN NOT coalesce(v_has_real, false)
                       THEN greatest(s.matches_now - cardinality(s.hits), 0)
                   -- names and words: the expected number plus two standard deviations, plus 2
                   WHEN s.family IN ('token', 'word')
                       THEN greatest(s.matches_now - cardinality(s.hits) - s.real_hits
                                     - cardinality(s.hits) * (v_rows - v_labelled) / greatest(v_labelled, 1)
                                     - 2 * sqrt(cardinality(s.hits) * (v_rows - v_labelled) / greatest(v_labelled, 1)) - 2, 0)
                   ELSE greatest(s.matches_now - cardinality(s.hits) - s.real_hits
                                 - 3 * cardinality(s.hits) * (v_rows - v_labelled) / greatest(v_labelled, 1) - 3, 0)
               END))::numeric, 3) AS est_precision
          FROM scored AS s
    ), kept AS (
        -- a candidate whose test hits another as good (or better) also has is left out
        SELECT e.* FROM estimated AS e
         WHERE NOT EXISTS (
               SELECT FROM estimated AS o
                WHERE o.hits @> e.hits AND (o.match_type, o.matcher) IS DISTINCT FROM (e.match_type, e.matcher)
                  AND (o.est_precision > e.est_precision
                       OR (o.est_precision = e.est_precision AND cardinality(o.hits) > cardinality(e.hits))
                       -- the same records: of one match type, the simplest stays (a domain and a
                       -- local-part shape both stay: each catches what the other does not)
                       OR (o.est_precision = e.est_precision AND cardinality(o.hits) = cardinality(e.hits)
                           AND o.match_type = e.match_type
                           AND (o.matches_now, -length(o.matcher), o.matcher)
                               > (e.matches_now, -length(e.matcher), e.matcher))))
         ORDER BY e.est_precision DESC, cardinality(e.hits) DESC
         LIMIT 50
    )
    INSERT INTO guardian.rule_suggestions (relid, column_name, kind, match_type, pattern, terms, anchors, matcher,
                                           examples, nonmatch, test_hits, real_hits, matches_now, est_precision)
    SELECT p_table, p_column, p_kind, k.match_type, k.pattern, k.terms, k.anchors, k.matcher, k.examples,
           k.nonmatch, cardinality(k.hits), k.real_hits, k.matches_now, k.est_precision
      FROM kept AS k
     WHERE k.est_precision >= 0.5;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION guardian._suggest_for_column(regclass, text, text, text[]) IS
    'Internal: induces, scores and keeps the rule suggestions of one column from its labelled test values (p_covered: the test records a rule already finds).';

CREATE FUNCTION guardian.suggest_rules(p_table regclass DEFAULT NULL)
RETURNS TABLE (suggestion_id bigint, column_name text, kind text, match_type text, matcher text, examples text[],
               matches_now bigint, est_precision numeric)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_table   regclass;
    v_column  record;
    v_covered text[];
BEGIN
    IF p_table IS NOT NULL AND NOT EXISTS (SELECT FROM guardian.labels AS l WHERE l.relid = p_table) THEN
        RAISE NOTICE 'no records of % are labelled: nothing to learn from', p_table
            USING HINT = 'Label records with guardian.label_records(table, record_ids, ''test'' or ''real''), or resolve its contamination alerts with an outcome.';
    END IF;
    FOR v_table IN
        SELECT DISTINCT l.relid FROM guardian.labels AS l
         WHERE (p_table IS NULL OR l.relid = p_table) AND l.label = 'test'
           AND EXISTS (SELECT FROM pg_catalog.pg_class AS c WHERE c.oid = l.relid)
         ORDER BY 1
    LOOP
        PERFORM guardian._refuse_app_code(ARRAY[v_table], format('guardian.suggest_rules(%L)', v_table::text),
                                          p_runs => ARRAY['read']);
        PERFORM guardian._fill_labels(v_table);
        DELETE FROM guardian.rule_suggestions AS s WHERE s.relid = v_table AND s.status = 'open';
        -- the test records a rule already finds (in any of their columns)
        v_covered := ARRAY(SELECT DISTINCT o.record_id FROM guardian.labels AS o
                            WHERE o.relid = v_table AND o.label = 'test' AND o.value IS NOT NULL
                              AND EXISTS (SELECT FROM guardian._match(o.kind, o.column_name, o.value, v_table)));
        FOR v_column IN
            SELECT l.column_name, l.kind FROM guardian.labels AS l
             WHERE l.relid = v_table AND l.label = 'test' AND l.value IS NOT NULL
             GROUP BY 1, 2 ORDER BY 1
        LOOP
            PERFORM guardian._suggest_for_column(v_table, v_column.column_name, v_column.kind, v_covered);
        END LOOP;
    END LOOP;
    RETURN QUERY
        SELECT s.id, s.column_name, s.kind, s.match_type, s.matcher, s.examples, s.matches_now, s.est_precision
          FROM guardian.rule_suggestions AS s
         WHERE s.status = 'open' AND (p_table IS NULL OR s.relid = p_table)
         ORDER BY s.est_precision DESC, s.test_hits DESC, s.id;
END
$$;
COMMENT ON FUNCTION guardian.suggest_rules(regclass) IS
    'Rules learned from labelled test values (guardian.label_records, resolved alerts): for each, the column, the match, examples, how many rows of the table it would flag now and its estimated precision (against real labels and the table''s data). Replaces the open suggestions of the tables it looks at. Accept one with guardian.accept_rule_suggestion(id).';

CREATE FUNCTION guardian._open_suggestion(p_suggestion_id bigint)
RETURNS guardian.rule_suggestions
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_suggestion guardian.rule_suggestions;
BEGIN
    SELECT s.* INTO v_suggestion FROM guardian.rule_suggestions AS s WHERE s.id = p_suggestion_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no rule suggestion with id %', coalesce(p_suggestion_id::text, 'NULL')
            USING ERRCODE = 'no_data_found',
                  HINT = 'List suggestions with: SELECT * FROM guardian.suggest_rules();';
    END IF;
    IF v_suggestion.status <> 'open' THEN
        RAISE EXCEPTION 'rule suggestion % is already %', p_suggestion_id,
                        v_suggestion.status || coalesce(' (rule ' || v_suggestion.rule_name || ')', '')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'List the open ones with: SELECT * FROM guardian.suggest_rules();';
    END IF;
    RETURN v_suggestion;
END
$$;
COMMENT ON FUNCTION guardian._open_suggestion(bigint) IS 'Internal: an open rule suggestion, locked, or an error.';

CREATE FUNCTION guardian.accept_rule_suggestion(p_suggestion_id bigint)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_suggestion guardian.rule_suggestions := guardian._open_suggestion(p_suggestion_id);
    v_name       text := format('learned_%s_%s', v_suggestion.kind, v_suggestion.id);
BEGIN
    INSERT INTO guardian.rules (name, pack, kinds, match_type, pattern, terms, anchors, severity, description,
                                example_match, example_nonmatch)
    VALUES (v_name, 'learned', ARRAY[v_suggestion.kind], v_suggestion.match_type, v_suggestion.pattern,
            v_suggestion.terms, v_suggestion.anchors, 'MEDIUM',
            format('Learned from %s records of %s labelled test (%s %s on %s; suggestion %s, estimated precision %s).',
                   v_suggestion.test_hits, v_suggestion.relid, v_suggestion.match_type,
                   coalesce(v_suggestion.pattern, array_to_string(v_suggestion.terms, ', ')), v_suggestion.column_name,
                   v_suggestion.id, v_suggestion.est_precision),
            v_suggestion.examples[1], v_suggestion.nonmatch);
    UPDATE guardian.rule_suggestions AS s
       SET status = 'accepted', rule_name = v_name, decided_at = now(), decided_by = guardian._actor()
     WHERE s.id = v_suggestion.id;
    RETURN v_name;
END
$$;
COMMENT ON FUNCTION guardian.accept_rule_suggestion(bigint) IS
    'Turn a rule suggestion into an ordinary rule (pack learned, severity MEDIUM, with its first example as example_match and a real labelled value it does not match as example_nonmatch); returns the rule''s name. Edit or disable it like any rule.';

CREATE FUNCTION guardian.dismiss_rule_suggestion(p_suggestion_id bigint)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_suggestion guardian.rule_suggestions := guardian._open_suggestion(p_suggestion_id);
BEGIN
    UPDATE guardian.rule_suggestions AS s
       SET status = 'dismissed', decided_at = now(), decided_by = guardian._actor()
     WHERE s.id = v_suggestion.id;
END
$$;
COMMENT ON FUNCTION guardian.dismiss_rule_suggestion(bigint) IS
    'Dismiss a rule suggestion: the same rule is not suggested again for that column.';

-- Curated lists: rules whose terms come from a maintained source (a package's list of
-- disposable mailbox domains), where each came from and when it was last refreshed.
-- `pg-guardian rules update` refreshes them through guardian.update_rule_list().
CREATE TABLE guardian.rule_lists (
    rule       text PRIMARY KEY REFERENCES guardian.rules (name) ON UPDATE CASCADE ON DELETE CASCADE,
    source     text NOT NULL,
    version    text,
    entries    integer NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_by text NOT NULL
);
COMMENT ON TABLE guardian.rule_lists IS
    'Rules whose terms are a curated list: the source and version the terms came from, how many, when and by whom they were last refreshed (pg-guardian rules update).';
SELECT pg_catalog.pg_extension_config_dump('guardian.rule_lists', '');
INSERT INTO guardian.rule_lists (rule, source, version, entries, updated_by)
SELECT r.name, 'disposable-email-domains (PyPI), as shipped with pg_guardian',
-- @@ list version disposable_email_domains.txt @@
       , cardinality(r.terms), 'pg_guardian'
  FROM guardian.rules AS r
 WHERE r.name = 'disposable_mail_domain'
ON CONFLICT (rule) DO NOTHING;

CREATE FUNCTION guardian.update_rule_list(p_rule text, p_terms text[], p_source text, p_version text DEFAULT NULL)
RETURNS TABLE (added integer, removed integer, entries integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_rule guardian.rules;
    v_new  text[];
BEGIN
    SELECT r.* INTO v_rule FROM guardian.rules AS r WHERE r.name = p_rule FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no rule named %', coalesce(quote_literal(p_rule), 'NULL')
            USING ERRCODE = 'undefined_object',
                  HINT = 'List the rules with: SELECT name, match_type FROM guardian.rules ORDER BY name;';
    END IF;
    IF v_rule.match_type NOT IN ('domains', 'words', 'exact', 'uuids') THEN
        RAISE EXCEPTION 'rule % matches by %, not by a list of terms', p_rule, v_rule.match_type
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Lists replace the terms of domains, words, exact and uuids rules.';
    END IF;
    IF coalesce(cardinality(p_terms), 0) = 0 OR array_position(p_terms, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'the new list of % is empty or holds a NULL', p_rule
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A list replaces the rule''s terms: give at least one, or disable the rule with UPDATE guardian.rules SET enabled = false.';
    END IF;
    IF coalesce(p_source, '') = '' THEN
        RAISE EXCEPTION 'say where the list of % comes from (p_source)', p_rule
            USING ERRCODE = 'invalid_parameter_value', HINT = 'e.g. p_source => ''disposable-email-domains (PyPI)''.';
    END IF;
    -- the rule's validator normalises the terms and checks its examples against them
    UPDATE guardian.rules AS r SET terms = p_terms WHERE r.name = p_rule RETURNING r.terms INTO v_new;
    INSERT INTO guardian.rule_lists AS l (rule, source, version, entries, updated_by)
    VALUES (p_rule, p_source, p_version, cardinality(v_new), guardian._actor())
    ON CONFLICT (rule) DO UPDATE
       SET source = EXCLUDED.source, version = EXCLUDED.version, entries = EXCLUDED.entries,
           updated_at = now(), updated_by = EXCLUDED.updated_by;
    added := (SELECT count(*) FROM unnest(v_new) AS t WHERE NOT t = ANY (v_rule.terms));
    removed := (SELECT count(*) FROM unnest(v_rule.terms) AS t WHERE NOT t = ANY (v_new));
    entries := cardinality(v_new);
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION guardian.update_rule_list(text, text[], text, text) IS
    'Replace the terms of a list rule (e.g. disposable_mail_domain) with a curated list, recording its source and version in guardian.rule_lists; the rule''s examples must still match and pass. Returns how many terms were added and removed. pg-guardian rules update calls it.';

-- The labels that mark a non-production sub-domain (staging.acme.com) for the
-- nonprod_mail_subdomain rule.
CREATE FUNCTION guardian.set_nonprod_labels(p_labels text[])
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_labels text[];
    v_bad    text;
BEGIN
    v_labels := ARRAY(SELECT DISTINCT lower(btrim(l)) FROM unnest(p_labels) AS l WHERE btrim(l) <> '' ORDER BY 1);
    IF coalesce(cardinality(v_labels), 0) = 0 THEN
        RAISE EXCEPTION 'no labels given'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'e.g. SELECT guardian.set_nonprod_labels(ARRAY[''staging'', ''qa'', ''dev'']); to stop the rule: UPDATE guardian.rules SET enabled = false WHERE name = ''nonprod_mail_subdomain'';';
    END IF;
    SELECT l INTO v_bad FROM unnest(v_labels) AS l WHERE l !~ '^[a-z0-9][a-z0-9-]*$' LIMIT 1;
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION 'label % is not a domain label', quote_literal(v_bad)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A label is letters, digits and hyphens, like staging or pre-prod (without dots).';
    END IF;
    UPDATE guardian.rules AS r
       SET pattern = '@(' || array_to_string(v_labels, '|') || ')[0-9]*\.([a-z0-9-]+\.)+[a-z]{2,}[.>]*$',
           anchors = ARRAY(SELECT '@' || l FROM unnest(v_labels) AS l),
           example_match = 'jane@' || v_labels[1] || '.brightsmiles.com'
     WHERE r.name = 'nonprod_mail_subdomain';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'rule nonprod_mail_subdomain does not exist'
            USING ERRCODE = 'undefined_object', HINT = 'It is a built-in rule: reinstall or upgrade pg_guardian.';
    END IF;
    RETURN array_to_string(v_labels, ', ');
END
$$;
COMMENT ON FUNCTION guardian.set_nonprod_labels(text[]) IS
    'Set the sub-domain labels (staging, qa, dev, sandbox, ...) that make an e-mail domain non-production for the nonprod_mail_subdomain rule; returns them.';

-- Mailbox providers real people use (extension/lists/real_mail_providers.txt): never a list's
-- entry, never a learned rule's domain.
CREATE FUNCTION guardian._real_mail_provider(p_domain text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p_domain = ANY (
-- @@ list real_mail_providers.txt @@
    ::text[])
$$;
COMMENT ON FUNCTION guardian._real_mail_provider(text) IS
    'Internal: is this a mailbox provider real people use (gmail.com, outlook.com, mail.com, ...)?';

-- Predicting contamination from where writes come from. A session whose application, role
-- or client looks like a test tool or CI runner raises TEST_TOOL_WRITE on its first write of
-- the day to a watched table in production, whatever the values; a source whose writes
-- contaminated before (learned from the alert history: outcomes are labels) raises
-- CONTAMINATION_RISK on its first write of the day. The write path asks once per session and
-- day (guardian._source_verdict(), cached by the C statement trigger); the alert itself is
-- raised by guardian._statement_followup().
INSERT INTO guardian.parameters (name, default_value, min_value, max_value, unit, description) VALUES
    ('learning.risk_window_days', 90, 1, 3650, 'days',
     'Sources are scored on this much alert and activity history'),
    ('learning.risk_threshold', 0.2, 0.01, 1, 'probability',
     'A source whose estimated chance that a day of its writes brings test data is at least this is risky (CONTAMINATION_RISK)');

CREATE TABLE guardian.test_sources (
    name        text PRIMARY KEY,
    source      text NOT NULL,
    pattern     text NOT NULL,
    description text NOT NULL,
    enabled     boolean NOT NULL DEFAULT true,
    builtin     boolean NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_by  text NOT NULL DEFAULT CURRENT_USER,
    CONSTRAINT test_sources_name_chk CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    CONSTRAINT test_sources_source_chk CHECK (source IN ('application', 'role', 'client'))
);
COMMENT ON TABLE guardian.test_sources IS
    'What a test tool or CI runner looks like: a regular expression (case-insensitive) on the application name or the session role, or a network (CIDR) of client addresses. A write to a watched table in production from a matching session raises TEST_TOOL_WRITE. Edit with SQL.';
SELECT pg_catalog.pg_extension_config_dump('guardian.test_sources', 'WHERE NOT builtin');

CREATE FUNCTION guardian._validate_test_source()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    NEW.updated_at := now();
    NEW.updated_by := SESSION_USER;
    IF NEW.source = 'client' THEN
        BEGIN
            PERFORM NEW.pattern::cidr;
        EXCEPTION WHEN invalid_text_representation THEN
            RAISE EXCEPTION 'test source %: % is not a network', NEW.name, quote_literal(NEW.pattern)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A client source is a network in CIDR notation, e.g. 10.20.0.0/16 or 192.0.2.7/32.';
        END;
    ELSE
        BEGIN
            PERFORM '' ~* NEW.pattern;
        EXCEPTION WHEN invalid_regular_expression THEN
            RAISE EXCEPTION 'test source %: invalid regular expression %', NEW.name, quote_literal(NEW.pattern)
                USING ERRCODE = 'invalid_regular_expression', DETAIL = SQLERRM,
                      HINT = 'Patterns are PostgreSQL regular expressions, matched case-insensitively, e.g. ^(cypress|pytest)\M.';
        END;
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION guardian._validate_test_source() IS
    'Internal: rejects test sources with a bad pattern or network.';
CREATE TRIGGER test_sources_validate
    BEFORE INSERT OR UPDATE ON guardian.test_sources
    FOR EACH ROW EXECUTE FUNCTION guardian._validate_test_source();
-- Sessions keep their verdict until the compiled rules change: recompiling asks them again.
CREATE TRIGGER test_sources_recompile
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON guardian.test_sources
    FOR EACH STATEMENT EXECUTE FUNCTION guardian._recompile();

INSERT INTO guardian.test_sources (name, source, pattern, description, builtin) VALUES
    ('test_runner_application', 'application',
     '(^|[^[:alnum:]])(cypress|playwright|selenium|puppeteer|webdriver|jest|vitest|mocha|pytest|rspec|minitest|phpunit|testcafe|nightwatch|capybara|behave|cucumber)([^[:alnum:]]|$)',
     'Test runners and browser drivers that name their connections (pytest, cypress, rspec, ...)', true),
    ('seeder_application', 'application',
     '(^|[^[:alnum:]])(test|tests|testing|e2e|qa|ci|seed|seeds|seeder|seeding|fixture|fixtures|faker|factory_?bot|loaddata|loadtest|k6|locust|jmeter|gatling|artillery)([^[:alnum:]]|$)',
     'Seed scripts, fixture loaders, load generators and CI jobs (db:seed, loaddata, k6, app-test, ci-runner)', true),
    ('test_role', 'role',
     '^(test|tests|testing|tester|e2e|qa|ci|seed|seeder|fixtures?|loadtest|sandbox)([_-]|[0-9]|$)|[_-](test|tests|testing|e2e|qa|ci|seed|seeder|fixtures?)[0-9]*$',
     'Roles made for tests, QA, CI or seeding (test_user, qa, ci_runner, app_test, seeder)', true);

-- What the history says about each source: the days it wrote to watched tables and the days
-- its writes brought test data (contamination alerts whose outcome was cleaned or confirmed, or
-- that are still open) or were wrongly suspected (false_positive). Refreshed by score_sources().
CREATE TABLE guardian.source_risk (
    source              text NOT NULL,
    value               text NOT NULL,
    score               numeric(5, 4) NOT NULL,
    contaminated_days   integer NOT NULL,
    false_positive_days integer NOT NULL,
    write_days          integer NOT NULL,
    alert_ids           uuid[] NOT NULL DEFAULT '{}',
    computed_at         timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT source_risk_pkey PRIMARY KEY (source, value),
    CONSTRAINT source_risk_source_chk CHECK (source IN ('application', 'role', 'client'))
);
COMMENT ON TABLE guardian.source_risk IS
    'Per source (application, role, client address): days it wrote, days its writes brought test data or a false alarm, and the estimated chance that a day of its writes brings test data (score). Sources at or above learning.risk_threshold raise CONTAMINATION_RISK. Refreshed by guardian.score_sources() (job source_risk).';
COMMENT ON COLUMN guardian.source_risk.score IS
    '(contaminated days + 0.1) / (days observed + 1.1), days observed being the days it wrote (or was alerted on): a Beta(0.1, 1) prior on the chance that a day of its writes brings test data.';

CREATE FUNCTION guardian.score_sources()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_since timestamptz := now() - make_interval(days => guardian.param('learning.risk_window_days')::integer);
    v_threshold numeric := guardian.param('learning.risk_threshold');
    v_before text[];
    v_after  text[];
    v_count  integer;
BEGIN
    IF pg_is_in_recovery() THEN
        RETURN 0;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('guardian.score_sources'));
    v_before := ARRAY(SELECT r.source || ':' || r.value FROM guardian.source_risk AS r
                       WHERE r.score >= v_threshold ORDER BY 1);
    DELETE FROM guardian.source_risk;
    WITH alerts AS (
        SELECT a.id, a.created_at::date AS day,
               CASE WHEN a.outcome = 'false_positive' THEN 'real'
                    WHEN a.outcome IN ('cleaned', 'confirmed') OR a.outcome IS NULL THEN 'test' END AS label,
               a.context
          FROM guardian.monitoring_alerts AS a
         WHERE a.type IN ('TEST_DATA_CONTAMINATION', 'STRICT_MODE_REJECTION')
           AND a.created_at >= v_since
           AND a.environment = guardian.current_environment()
           AND coalesce(a.outcome, '') <> 'expected'
    ), alert_sources AS (
        SELECT s.source, s.value, a.id, a.day, a.label
          FROM alerts AS a,
               LATERAL (VALUES ('application', a.context ->> 'application_name'),
                               ('role', a.context ->> 'session_user'),
                               ('client', a.context ->> 'client_addr')) AS s(source, value)
         WHERE s.value IS NOT NULL AND a.label IS NOT NULL
    ), writes AS (
        SELECT 'role' AS source, r.key AS value, w.minute::date AS day
          FROM guardian.activity_windows AS w, jsonb_each(w.roles) AS r
         WHERE w.minute >= v_since
        UNION
        SELECT 'application', p.key, w.minute::date
          FROM guardian.activity_windows AS w, jsonb_each(w.applications) AS p
         WHERE w.minute >= v_since
    ), days AS (
        SELECT x.source, x.value, x.day FROM writes AS x
        UNION
        SELECT s.source, s.value, s.day FROM alert_sources AS s
    ), scored AS (
        SELECT d.source, d.value,
               count(DISTINCT d.day) AS observed,
               (SELECT count(DISTINCT s.day) FROM alert_sources AS s
                 WHERE s.source = d.source AND s.value = d.value AND s.label = 'test') AS contaminated,
               (SELECT count(DISTINCT s.day) FROM alert_sources AS s
                 WHERE s.source = d.source AND s.value = d.value AND s.label = 'real') AS false_positive,
               (SELECT count(DISTINCT x.day) FROM writes AS x WHERE x.source = d.source AND x.value = d.value) AS wrote,
               ARRAY(SELECT s.id FROM alert_sources AS s
                      WHERE s.source = d.source AND s.value = d.value AND s.label = 'test'
                      ORDER BY s.day DESC LIMIT 10) AS alert_ids
          FROM days AS d
         GROUP BY d.source, d.value
    )
    INSERT INTO guardian.source_risk (source, value, score, contaminated_days, false_positive_days, write_days, alert_ids)
    SELECT s.source, s.value, round((s.contaminated + 0.1) / (s.observed + 1.1), 4), s.contaminated, s.false_positive,
           s.wrote, s.alert_ids
      FROM scored AS s
     WHERE s.contaminated > 0;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    v_after := ARRAY(SELECT r.source || ':' || r.value FROM guardian.source_risk AS r
                      WHERE r.score >= v_threshold ORDER BY 1);
    -- sessions ask again when the risky sources change
    IF v_after IS DISTINCT FROM v_before THEN
        PERFORM guardian._compile_rules();
    END IF;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION guardian.score_sources() IS
    'Score every source (application, role, client address) that brought test data in the last learning.risk_window_days: days it wrote, days with contamination (alerts cleaned, confirmed or open) and false alarms. Run hourly by the source_risk job; returns the number of sources with a contamination.';

INSERT INTO guardian.jobs (name, schedule, command, description, max_lag, builtin)
VALUES ('source_risk', '41 * * * *', 'SELECT guardian.score_sources()',
        'Score the sources of writes (role, application, client) on the contamination history: CONTAMINATION_RISK',
        '3 hours', true);

-- This session as a source: which test source it matches (production only), else which risky
-- source it is; NULL when neither. The day's alert fingerprint comes with it.
CREATE FUNCTION guardian._session_source()
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_env    text := guardian.current_environment();
    v_app    text := nullif(current_setting('application_name', true), '');
    v_role   text := SESSION_USER;
    v_client inet := inet_client_addr();
    v_found  jsonb;
BEGIN
    IF v_env IS DISTINCT FROM 'production' THEN
        RETURN NULL;
    END IF;
    SELECT jsonb_build_object('type', 'TEST_TOOL_WRITE', 'test_source', t.name, 'source', t.source,
                              'pattern', t.pattern, 'description', t.description,
                              'value', CASE t.source WHEN 'application' THEN v_app WHEN 'role' THEN v_role
                                                     ELSE host(v_client) END)
      INTO v_found
      FROM guardian.test_sources AS t
     WHERE t.enabled
       AND CASE t.source WHEN 'application' THEN v_app ~* t.pattern
                         WHEN 'role' THEN v_role ~* t.pattern
                         ELSE v_client <<= t.pattern::cidr END
     ORDER BY t.builtin, t.name
     LIMIT 1;
    IF v_found IS NULL THEN
        SELECT jsonb_build_object('type', 'CONTAMINATION_RISK', 'source', r.source, 'value', r.value,
                                  'score', r.score, 'contaminated_days', r.contaminated_days,
                                  'false_positive_days', r.false_positive_days, 'write_days', r.write_days,
                                  'alert_ids', to_jsonb(r.alert_ids), 'scored_at', r.computed_at,
                                  'threshold', guardian.param('learning.risk_threshold'))
          INTO v_found
          FROM guardian.source_risk AS r
         WHERE r.score >= guardian.param('learning.risk_threshold')
           AND ((r.source = 'application' AND r.value = v_app) OR (r.source = 'role' AND r.value = v_role)
                OR (r.source = 'client' AND r.value = host(v_client)))
         ORDER BY r.score DESC, r.source
         LIMIT 1;
    END IF;
    IF v_found IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN v_found || jsonb_build_object('fingerprint', md5(concat_ws('|', v_found ->> 'type', v_env, v_found ->> 'source',
                                                                      v_found ->> 'value', current_date::text)));
END
$$;
COMMENT ON FUNCTION guardian._session_source() IS
    'Internal: this session as a source of writes in production: the test source it matches (TEST_TOOL_WRITE) or the risky source it is (CONTAMINATION_RISK), with today''s alert fingerprint; NULL otherwise.';

-- Asked by the write path (the C statement trigger once per session and day, the PL/pgSQL one
-- every statement): does this session's next write raise an alert today?
CREATE FUNCTION guardian._source_verdict()
RETURNS boolean
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.found IS NOT NULL
           AND NOT EXISTS (SELECT FROM guardian.monitoring_alerts AS a
                            WHERE a.fingerprint = s.found ->> 'fingerprint' AND a.resolved_at IS NULL)
      FROM (SELECT guardian._session_source() AS found) AS s
$$;
COMMENT ON FUNCTION guardian._source_verdict() IS
    'Internal: is this session a test tool or a risky source writing to production, not yet alerted on today?';

-- The alert of a source's first write of the day, from guardian._statement_followup().
CREATE FUNCTION guardian._source_alert(p_relid regclass, p_op text, p_rows bigint)
RETURNS uuid
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_found jsonb := guardian._session_source();
BEGIN
    IF v_found IS NULL
       OR EXISTS (SELECT FROM guardian.monitoring_alerts AS a
                   WHERE a.fingerprint = v_found ->> 'fingerprint' AND a.resolved_at IS NULL) THEN
        RETURN NULL;
    END IF;
    IF v_found ->> 'type' = 'TEST_TOOL_WRITE' THEN
        RETURN guardian.raise_alert('TEST_TOOL_WRITE', 'HIGH',
            format('a test tool wrote to production: %s %s (test source %s) %s %s row(s) of %s',
                   v_found ->> 'source', quote_literal(v_found ->> 'value'), v_found ->> 'test_source',
                   lower(p_op) || CASE p_op WHEN 'INSERT' THEN 'ed' ELSE 'd' END, p_rows, p_relid),
            p_relid::text, NULL,
            v_found - 'fingerprint' - 'type' || jsonb_build_object(
                'operation', p_op, 'rows', p_rows, 'first_table', p_relid::text,
                'action_required', 'Find the job or person behind this session and point it at a test database; check the rows it wrote.',
                'fix', format('SELECT * FROM guardian.scan(%L);', p_relid::text)),
            v_found ->> 'fingerprint');
    END IF;
    RETURN guardian.raise_alert('CONTAMINATION_RISK', 'MEDIUM',
        format('%s %s, whose writes brought test data on %s of %s days, %s %s row(s) of %s (first write today; risk %s)',
               v_found ->> 'source', quote_literal(v_found ->> 'value'), v_found ->> 'contaminated_days',
               greatest((v_found ->> 'write_days')::int, (v_found ->> 'contaminated_days')::int),
               lower(p_op) || CASE p_op WHEN 'INSERT' THEN 'ed' ELSE 'd' END, p_rows, p_relid,
               round((v_found ->> 'score')::numeric, 2)),
        p_relid::text, NULL,
        v_found - 'fingerprint' - 'type' || jsonb_build_object(
            'operation', p_op, 'rows', p_rows, 'first_table', p_relid::text,
            'action_required', 'Check what this source writes today; scan the table if in doubt.',
            'fix', format('SELECT * FROM guardian.scan(%L);', p_relid::text)),
        v_found ->> 'fingerprint');
END
$$;
COMMENT ON FUNCTION guardian._source_alert(regclass, text, bigint) IS
    'Internal: raises TEST_TOOL_WRITE or CONTAMINATION_RISK for this session''s first write of the day to a watched table in production.';

-- Column models: what the real values of a watched column look like (character trigrams and
-- shapes), trained by a job from the column's own data less its labelled test values, and a
-- model of test data per kind (labelled test values and the rules' examples). A value that is
-- a strong outlier of its column (trigrams rarer than 99.9 % of the column's own values, and
-- a shape fewer than 1 % of them have) is SUSPECTED_TEST_DATA: MEDIUM when the test model also
-- explains it better, else LOW; found by scans and a job over recent writes, never a
-- strict-mode rejection, and nothing on the write path.
INSERT INTO guardian.parameters (name, default_value, min_value, max_value, unit, description) VALUES
    ('learning.model_sample_rows', 100000, 1000, 100000000, 'rows',
     'A column model is trained on at most about this many rows of its table (a sample beyond)'),
    ('learning.model_grams', 20000, 100, 1000000, 'trigrams',
     'A column model keeps the counts of at most this many trigrams (the most frequent)'),
    ('learning.suspect_margin', 0.5, 0, 20, 'nats',
     'A suspected value is MEDIUM (else LOW) when the test model explains its trigrams better than its column''s model by at least this much on average');

CREATE TABLE guardian.column_models (
    relid       regclass NOT NULL,
    column_name text NOT NULL,
    kind        text NOT NULL,
    rows_seen   bigint NOT NULL,
    gram_total  bigint NOT NULL,
    shapes      jsonb NOT NULL,
    shape_total bigint NOT NULL,
    median_nll  double precision NOT NULL DEFAULT 0,
    cutoff_nll  double precision NOT NULL DEFAULT 0,
    trained_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT column_models_pkey PRIMARY KEY (relid, column_name)
);
COMMENT ON TABLE guardian.column_models IS
    'Per watched column, a model of its real values: how many trigrams it saw (gram_total; the counts are in guardian.column_model_grams), shapes (letters as a, digit runs as 9: jane.doe42@x.io is a.a9@a.a), and the median and 99.9th percentile of its own values'' mean trigram surprise (nats). Trained by guardian.train_column_models() (job column_models).';
SELECT pg_catalog.pg_extension_config_dump('guardian.column_models', '');

CREATE TABLE guardian.column_model_grams (
    relid       regclass NOT NULL,
    column_name text NOT NULL,
    gram        text NOT NULL,
    n           bigint NOT NULL,
    CONSTRAINT column_model_grams_pkey PRIMARY KEY (relid, column_name, gram),
    CONSTRAINT column_model_grams_model_fkey FOREIGN KEY (relid, column_name)
        REFERENCES guardian.column_models (relid, column_name) ON DELETE CASCADE
);
COMMENT ON TABLE guardian.column_model_grams IS
    'The trigram counts of each column model (the learning.model_grams most frequent).';
SELECT pg_catalog.pg_extension_config_dump('guardian.column_model_grams', '');

CREATE TABLE guardian.test_models (
    kind        text PRIMARY KEY,
    gram_total  bigint NOT NULL,
    values_seen integer NOT NULL,
    trained_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE guardian.test_models IS
    'Per kind, what test data looks like: values labelled test (any table) and the rules'' examples; counts in guardian.test_model_grams.';
SELECT pg_catalog.pg_extension_config_dump('guardian.test_models', '');

CREATE TABLE guardian.test_model_grams (
    kind text NOT NULL REFERENCES guardian.test_models (kind) ON DELETE CASCADE,
    gram text NOT NULL,
    n    bigint NOT NULL,
    CONSTRAINT test_model_grams_pkey PRIMARY KEY (kind, gram)
);
COMMENT ON TABLE guardian.test_model_grams IS 'The trigram counts of each kind''s test model.';
SELECT pg_catalog.pg_extension_config_dump('guardian.test_model_grams', '');

CREATE TABLE guardian.suspect_watermarks (
    relid      regclass PRIMARY KEY,
    last_xid   xid8 NOT NULL,
    scanned_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE guardian.suspect_watermarks IS
    'Internal: the transaction up to which the suspect_scan job has looked at a table''s rows.';

CREATE FUNCTION guardian._shape(p_value text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT regexp_replace(regexp_replace(p_value, '[[:alpha:]]+', 'a', 'g'), '[0-9]+', '9', 'g')
$$;
COMMENT ON FUNCTION guardian._shape(text) IS 'Internal: a value''s shape: runs of letters as a, runs of digits as 9.';

-- A model's probability of a trigram mixes its counts (0.9) with one background over 2^16
-- trigrams (0.1), so that models of different sizes compare fairly: a trigram neither has seen
-- costs both the same. Surprise is the mean negative log of it over a value's trigrams (nats).
-- Deliberately without SET search_path so that it inlines into its callers (millions of
-- trigrams a scan), all of which pin search_path; every function is schema-qualified.
CREATE FUNCTION guardian._surprise(p_count bigint, p_total bigint)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT OPERATOR(pg_catalog.-) pg_catalog.ln(0.9::double precision OPERATOR(pg_catalog.*) COALESCE(p_count, 0)
               OPERATOR(pg_catalog./) GREATEST(COALESCE(p_total, 1), 1)
               OPERATOR(pg_catalog.+) (0.1::double precision OPERATOR(pg_catalog./) 65536))
$$;
COMMENT ON FUNCTION guardian._surprise(bigint, bigint) IS
    'Internal: the surprise (nats) of a trigram seen p_count times in a model of p_total trigrams.';

CREATE FUNCTION guardian._test_examples()
RETURNS TABLE (kind text, value text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT l.kind, l.value FROM guardian.labels AS l WHERE l.label = 'test' AND l.value IS NOT NULL AND l.value <> ''
    UNION ALL
    SELECT k.kind, guardian._normalize(r.example_match)
      FROM guardian.rules AS r, unnest(r.kinds) AS k(kind)
     WHERE r.enabled AND coalesce(r.example_match, '') <> ''
$$;
COMMENT ON FUNCTION guardian._test_examples() IS
    'Internal: what test data looks like, per kind: values labelled test and the rules'' examples.';

CREATE FUNCTION guardian._train_test_models()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count integer;
BEGIN
    DELETE FROM guardian.test_models;
    INSERT INTO guardian.test_models (kind, gram_total, values_seen)
    SELECT e.kind, sum(length(e.value)), count(*) FROM guardian._test_examples() AS e GROUP BY e.kind;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    INSERT INTO guardian.test_model_grams (kind, gram, n)
    SELECT e.kind, substr('^' || e.value || '$', g.i, 3), count(*)
      FROM guardian._test_examples() AS e, generate_series(1, length(e.value)) AS g(i)
     GROUP BY 1, 2;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION guardian._train_test_models() IS
    'Internal: the per-kind model of test data, from values labelled test and the rules'' examples.';

CREATE FUNCTION guardian.train_column_models(p_table regclass DEFAULT NULL)
RETURNS TABLE (table_name text, column_name text, kind text, rows_seen bigint, grams integer,
               median_nll double precision, cutoff_nll double precision)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    v_limit  numeric := guardian.param('learning.model_sample_rows');
    v_keep   integer := guardian.param('learning.model_grams')::integer;
    v_watch  guardian.watched_tables;
    v_column record;
    v_sample text;
    v_total  double precision;
    v_values text[];
BEGIN
    IF p_table IS NOT NULL AND NOT EXISTS (SELECT FROM guardian.watched_tables AS w WHERE w.relid = p_table) THEN
        RAISE EXCEPTION '% is not watched', p_table
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Column models are trained for watched tables: SELECT guardian.watch(%L);', p_table::text);
    END IF;
    PERFORM guardian._train_test_models();
    FOR v_watch IN
        SELECT w.* FROM guardian.watched_tables AS w
         WHERE (p_table IS NULL OR w.relid = p_table)
           AND EXISTS (SELECT FROM pg_catalog.pg_class AS c WHERE c.oid = w.relid)
         ORDER BY w.relid::text
    LOOP
        PERFORM guardian._refuse_app_code(ARRAY[v_watch.relid], format('guardian.train_column_models(%L)', v_watch.relid::text),
                                          p_runs => ARRAY['read']);
        SELECT greatest(c.reltuples, 0) INTO v_total FROM pg_catalog.pg_class AS c WHERE c.oid = v_watch.relid;
        v_sample := CASE WHEN v_total > v_limit
                         THEN format(' TABLESAMPLE SYSTEM (%s)', round((100 * v_limit / v_total)::numeric, 4)) ELSE '' END;
        FOR v_column IN
            SELECT c.column_name, c.kind, a.atttypid
              FROM unnest(v_watch.column_names, v_watch.column_kinds) AS c(column_name, kind)
              JOIN pg_catalog.pg_attribute AS a
                ON a.attrelid = v_watch.relid AND a.attname = c.column_name AND NOT a.attisdropped
             WHERE c.kind IN ('email', 'person_name', 'organization', 'phone')
        LOOP
            -- the column's values, less those labelled test
            EXECUTE format(
                'SELECT coalesce(array_agg(x.v), ''{}'') FROM (
                    SELECT guardian._normalize(%1$s) AS v FROM %2$s AS t%3$s WHERE %1$s IS NOT NULL) AS x
                  WHERE x.v <> '''' AND NOT EXISTS (SELECT FROM guardian.labels AS l
                                                     WHERE l.relid = $1 AND l.column_name = $2 AND l.label = ''test''
                                                       AND l.value = x.v)',
                format(CASE WHEN guardian._json_safe_type(v_column.atttypid) THEN 't.%I::pg_catalog.text'
                            ELSE 'pg_catalog.format(''%%s'', t.%I)' END, v_column.column_name),
                v_watch.relid, v_sample)
                INTO v_values USING v_watch.relid, v_column.column_name;
            CONTINUE WHEN cardinality(v_values) < 20;
            DELETE FROM guardian.column_models AS m WHERE m.relid = v_watch.relid AND m.column_name = v_column.column_name;
            INSERT INTO guardian.column_models (relid, column_name, kind, rows_seen, gram_total, shapes, shape_total)
            SELECT v_watch.relid, v_column.column_name, v_column.kind, cardinality(v_values),
                   (SELECT sum(length(v.v)) FROM unnest(v_values) AS v(v)),
                   (SELECT jsonb_object_agg(s.shape, s.n)
                      FROM (SELECT guardian._shape(v.v) AS shape, count(*) AS n FROM unnest(v_values) AS v(v)
                             GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 500) AS s),
                   cardinality(v_values);
            INSERT INTO guardian.column_model_grams (relid, column_name, gram, n)
            SELECT v_watch.relid, v_column.column_name, c.gram, c.n
              FROM (SELECT substr('^' || v.v || '$', g.i, 3) AS gram, count(*) AS n
                      FROM unnest(v_values) AS v(v), generate_series(1, length(v.v)) AS g(i)
                     GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT v_keep) AS c;
            -- how surprising the column's own values are: the median and the 99.9th percentile
            UPDATE guardian.column_models AS m
               SET median_nll = s.median, cutoff_nll = s.cutoff
              FROM (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x.nll) AS median,
                           percentile_cont(0.999) WITHIN GROUP (ORDER BY x.nll) AS cutoff
                      FROM (SELECT avg(guardian._surprise(cg.n, m2.gram_total)) AS nll
                              FROM unnest(v_values[1:20000]) WITH ORDINALITY AS v(v, k)
                              CROSS JOIN generate_series(1, length(v.v)) AS g(i)
                              JOIN guardian.column_models AS m2
                                ON m2.relid = v_watch.relid AND m2.column_name = v_column.column_name
                              LEFT JOIN guardian.column_model_grams AS cg
                                ON cg.relid = v_watch.relid AND cg.column_name = v_column.column_name
                               AND cg.gram = substr('^' || v.v || '$', g.i, 3)
                             GROUP BY v.k) AS x) AS s
             WHERE m.relid = v_watch.relid AND m.column_name = v_column.column_name;
            RETURN QUERY
                SELECT m.relid::text, m.column_name, m.kind, m.rows_seen,
                       (SELECT count(*) FROM guardian.column_model_grams AS cg
                         WHERE cg.relid = m.relid AND cg.column_name = m.column_name)::integer,
                       m.median_nll, m.cutoff_nll
                  FROM guardian.column_models AS m
                 WHERE m.relid = v_watch.relid AND m.column_name = v_column.column_name;
        END LOOP;
    END LOOP;
END
$$;
COMMENT ON FUNCTION guardian.train_column_models(regclass) IS
    'Train the model of each watched column''s real values (email, name, organisation and phone columns with at least 20 values) from the table (a sample of learning.model_sample_rows beyond) less its labelled test values, and the per-kind test models. Returns one row per model. Run by the column_models job.';

-- Scores of values against their columns' models, in one pass: each value's trigrams joined to
-- the column's counts and its kind's test counts. p_values: (record_id, column_name, value).
CREATE FUNCTION guardian._model_scores(p_table regclass, p_values jsonb, p_all boolean DEFAULT false)
RETURNS TABLE (record_id text, column_name text, value text, nll double precision, cutoff_nll double precision,
               shape_share double precision, test_advantage double precision, suspected boolean, severity text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
    WITH vals AS (
        SELECT x.record_id, x.column_name, guardian._normalize(x.value) AS v, m.kind, m.gram_total, m.cutoff_nll,
               coalesce((m.shapes ->> guardian._shape(guardian._normalize(x.value)))::double precision, 0)
                   / greatest(m.shape_total, 1) AS shape_share
          FROM jsonb_to_recordset(p_values) AS x(record_id text, column_name text, value text)
          JOIN guardian.column_models AS m ON m.relid = p_table AND m.column_name = x.column_name
         WHERE coalesce(x.value, '') <> ''
    ), scored AS (
        SELECT v.record_id, v.column_name, v.v, v.cutoff_nll, v.shape_share,
               avg(guardian._surprise(cg.n, v.gram_total)) AS nll,
               CASE WHEN bool_or(tm.kind IS NOT NULL) THEN avg(guardian._surprise(tg.n, tm.gram_total)) END AS nll_test
          FROM vals AS v
          CROSS JOIN generate_series(1, length(v.v)) AS g(i)
          LEFT JOIN guardian.column_model_grams AS cg
            ON cg.relid = p_table AND cg.column_name = v.column_name AND cg.gram = substr('^' || v.v || '$', g.i, 3)
          LEFT JOIN guardian.test_models AS tm ON tm.kind = v.kind
          LEFT JOIN guardian.test_model_grams AS tg ON tg.kind = v.kind AND tg.gram = substr('^' || v.v || '$', g.i, 3)
         -- only a value of a rare shape can be suspected: the others are not scored (p_all: all)
         WHERE v.v <> '' AND (p_all OR v.shape_share < 0.01)
         GROUP BY v.record_id, v.column_name, v.v, v.cutoff_nll, v.shape_share
    ), judged AS (
        SELECT s.*, s.nll - s.nll_test AS advantage, s.nll > s.cutoff_nll AND s.shape_share < 0.01 AS suspect
          FROM scored AS s
    )
    SELECT j.record_id, j.column_name, j.v, j.nll, j.cutoff_nll, j.shape_share, j.advantage, j.suspect,
           CASE WHEN NOT j.suspect THEN NULL
                WHEN j.advantage >= guardian.param('learning.suspect_margin') THEN 'MEDIUM'
                ELSE 'LOW' END
      FROM judged AS j
$$;
COMMENT ON FUNCTION guardian._model_scores(regclass, jsonb, boolean) IS
    'Internal: values ([{"record_id", "column_name", "value"}]) scored against their columns'' models (only those of a rare shape unless p_all).';

-- How a value scores against its column's model: its surprise, the column's cutoff, how
-- common its shape is there, and how much better the test model explains it.
CREATE FUNCTION guardian.score_value(p_table regclass, p_column text, p_value text)
RETURNS TABLE (nll double precision, cutoff_nll double precision, shape_share double precision,
               test_advantage double precision, suspected boolean, severity text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM guardian.column_models AS m WHERE m.relid = p_table AND m.column_name = p_column) THEN
        RAISE EXCEPTION 'no model of %.%', p_table, p_column
            USING ERRCODE = 'undefined_object',
                  HINT = format('Train it with SELECT * FROM guardian.train_column_models(%L);', p_table::text);
    END IF;
    RETURN QUERY
        SELECT s.nll, s.cutoff_nll, s.shape_share, s.test_advantage, s.suspected, s.severity
          FROM guardian._model_scores(p_table, jsonb_build_array(jsonb_build_object(
                   'record_id', '', 'column_name', p_column, 'value', p_value)), true) AS s;
END
$$;
COMMENT ON FUNCTION guardian.score_value(regclass, text, text) IS
    'Score a value against the model of a watched column: its mean trigram surprise (nats) against the column''s 99.9th-percentile cutoff, the share of the column''s values with its shape, and how much better (nats a trigram) the test model explains it. Suspected: rarer trigrams than 99.9 % of the column''s own values and a shape under 1 % of them; MEDIUM when the test model also explains it better by learning.suspect_margin, else LOW.';

-- The suspects among rows of a table (all, or those written since a transaction), skipping
-- values a rule already flags.
CREATE FUNCTION guardian.scan_suspects(p_table regclass, p_record boolean DEFAULT false, p_since xid8 DEFAULT NULL)
RETURNS TABLE (record_id text, column_name text, sample text, severity text, nll double precision,
               test_advantage double precision)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    v_watch  guardian.watched_tables := guardian._watch_of(p_table);
    v_values jsonb;
    v_found  record;
BEGIN
    IF v_watch.relid IS NULL THEN
        RAISE EXCEPTION '% is not watched', p_table
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Watch it and train its models: SELECT guardian.watch(%L); SELECT * FROM guardian.train_column_models(%L);',
                                p_table::text, p_table::text);
    END IF;
    PERFORM guardian._refuse_app_code(ARRAY[p_table], format('guardian.scan_suspects(%L)', p_table::text), p_runs => ARRAY['read']);
    EXECUTE format(
        'SELECT coalesce(jsonb_agg(jsonb_build_object(''record_id'', r.record_id, ''column_name'', m.column_name,
                                                      ''value'', j.row_data ->> m.column_name)), ''[]'')
           FROM %1$s AS t
           CROSS JOIN LATERAL (SELECT %2$s AS row_data) AS j
           CROSS JOIN LATERAL guardian._record_ref($1, j.row_data) AS r
           JOIN guardian.column_models AS m ON m.relid = $2
          WHERE j.row_data ->> m.column_name IS NOT NULL%3$s',
        p_table, guardian._scan_row_json(p_table),
        CASE WHEN p_since IS NOT NULL
             THEN ' AND pg_catalog.age(t.xmin) <= (pg_catalog.pg_current_xact_id()::text::bigint - $3::text::bigint)' ELSE '' END)
        INTO v_values USING v_watch, p_table, p_since;
    FOR v_found IN
        SELECT s.*, m.kind FROM guardian._model_scores(p_table, v_values) AS s
          JOIN guardian.column_models AS m ON m.relid = p_table AND m.column_name = s.column_name
         WHERE s.suspected
           AND NOT EXISTS (SELECT FROM guardian._match(m.kind, s.column_name, s.value, p_table))
         ORDER BY s.test_advantage DESC
    LOOP
        record_id := v_found.record_id;
        column_name := v_found.column_name;
        sample := guardian._redact(v_found.value, v_found.kind, '{}'::text[]);
        severity := v_found.severity;
        nll := v_found.nll;
        test_advantage := v_found.test_advantage;
        RETURN NEXT;
        IF p_record THEN
            PERFORM guardian.raise_alert('SUSPECTED_TEST_DATA', v_found.severity,
                format('%s.%s holds a value unlike its real data and like test data: %s', p_table, v_found.column_name,
                       sample),
                p_table::text, v_found.record_id,
                jsonb_build_object('column', v_found.column_name, 'sample', sample,
                                   'surprise_nats', round(v_found.nll::numeric, 2),
                                   'cutoff_nats', round(v_found.cutoff_nll::numeric, 2),
                                   'test_advantage_nats', round(v_found.test_advantage::numeric, 2),
                                   'action_required', 'Review the record; label it with guardian.label_records so that the next models learn from it.',
                                   'fix', format('SELECT guardian.label_records(%L, ARRAY[%L], ''test'');', p_table::text, v_found.record_id)),
                md5(concat_ws('|', 'SUSPECTED_TEST_DATA', guardian.current_environment(), p_table::text, v_found.column_name,
                              v_found.record_id)));
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION guardian.scan_suspects(regclass, boolean, xid8) IS
    'Values of a watched table that its column models find unlike real data and like test data, and that no rule flags: one row per value (record_id, column, redacted sample, LOW or MEDIUM). p_record => true raises SUSPECTED_TEST_DATA alerts; p_since looks only at rows written after that transaction.';

-- The job: rows written since its last run, in every watched table with models.
CREATE FUNCTION guardian.run_suspect_scan()
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_table regclass;
    v_now   xid8 := pg_current_xact_id();
    v_found integer := 0;
    v_tables integer := 0;
BEGIN
    IF pg_is_in_recovery() THEN
        RETURN 'skipped: a replica';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('guardian.run_suspect_scan'));
    FOR v_table IN SELECT DISTINCT m.relid FROM guardian.column_models AS m
                    WHERE EXISTS (SELECT FROM guardian.watched_tables AS w WHERE w.relid = m.relid) ORDER BY 1
    LOOP
        v_found := v_found + (SELECT count(*) FROM guardian.scan_suspects(v_table, true,
                                  (SELECT w.last_xid FROM guardian.suspect_watermarks AS w WHERE w.relid = v_table)))::integer;
        INSERT INTO guardian.suspect_watermarks AS w (relid, last_xid) VALUES (v_table, v_now)
        ON CONFLICT (relid) DO UPDATE SET last_xid = EXCLUDED.last_xid, scanned_at = now();
        v_tables := v_tables + 1;
    END LOOP;
    RETURN format('%s suspect value(s) in %s table(s)', v_found, v_tables);
END
$$;
COMMENT ON FUNCTION guardian.run_suspect_scan() IS
    'The suspect_scan job: scores the rows written to each modelled table since its last run (all rows the first time), raising SUSPECTED_TEST_DATA.';

INSERT INTO guardian.jobs (name, schedule, command, description, max_lag, builtin) VALUES
    ('column_models', '23 2 * * *', 'SELECT count(*) FROM guardian.train_column_models()',
     'Train the models of watched columns'' real values (SUSPECTED_TEST_DATA)', '2 days', true),
    ('suspect_scan', '*/10 * * * *', 'SELECT guardian.run_suspect_scan()',
     'Score recent writes to modelled tables against their column models: SUSPECTED_TEST_DATA', '1 hour', true);

-- >>> sql/99_finish: owners and grants of the learned detection
-- As a fresh install hands them over (99_finish/10_ownership.sql): tables and SECURITY
-- DEFINER functions to guardian_owner.
ALTER TABLE guardian.labels OWNER TO guardian_owner;
ALTER TABLE guardian.rule_suggestions OWNER TO guardian_owner;
ALTER TABLE guardian.rule_lists OWNER TO guardian_owner;
ALTER TABLE guardian.test_sources OWNER TO guardian_owner;
ALTER TABLE guardian.source_risk OWNER TO guardian_owner;
ALTER TABLE guardian.column_models OWNER TO guardian_owner;
ALTER TABLE guardian.column_model_grams OWNER TO guardian_owner;
ALTER TABLE guardian.test_models OWNER TO guardian_owner;
ALTER TABLE guardian.test_model_grams OWNER TO guardian_owner;
ALTER TABLE guardian.suspect_watermarks OWNER TO guardian_owner;
ALTER FUNCTION guardian._store_labels(regclass, text, jsonb, text, uuid) OWNER TO guardian_owner;
ALTER FUNCTION guardian._label_alert(uuid, text) OWNER TO guardian_owner;
ALTER FUNCTION guardian._source_verdict() OWNER TO guardian_owner;
REVOKE EXECUTE ON FUNCTION
    guardian._store_labels(regclass, text, jsonb, text, uuid),
    guardian._label_rows(regclass, text[]),
    guardian._fill_labels(regclass),
    guardian.label_records(regclass, text[], text),
    guardian._label_alert(uuid, text),
    guardian._induce(text, text),
    guardian._candidate_anchors(text, text, text[], text[]),
    guardian._suggest_for_column(regclass, text, text, text[]),
    guardian.suggest_rules(regclass),
    guardian._open_suggestion(bigint),
    guardian.accept_rule_suggestion(bigint),
    guardian.dismiss_rule_suggestion(bigint),
    guardian.update_rule_list(text, text[], text, text),
    guardian.set_nonprod_labels(text[]),
    guardian._real_mail_provider(text),
    guardian._validate_test_source(),
    guardian.score_sources(),
    guardian._session_source(),
    guardian._source_verdict(),
    guardian._source_alert(regclass, text, bigint),
    guardian._shape(text),
    guardian._surprise(bigint, bigint),
    guardian._test_examples(),
    guardian._train_test_models(),
    guardian.train_column_models(regclass),
    guardian._model_scores(regclass, jsonb, boolean),
    guardian.score_value(regclass, text, text),
    guardian.scan_suspects(regclass, boolean, xid8),
    guardian.run_suspect_scan()
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    guardian._store_labels(regclass, text, jsonb, text, uuid),
    guardian._label_rows(regclass, text[]),
    guardian._fill_labels(regclass),
    guardian.label_records(regclass, text[], text),
    guardian._label_alert(uuid, text),
    guardian._induce(text, text),
    guardian._candidate_anchors(text, text, text[], text[]),
    guardian._suggest_for_column(regclass, text, text, text[]),
    guardian.suggest_rules(regclass),
    guardian._open_suggestion(bigint),
    guardian.accept_rule_suggestion(bigint),
    guardian.dismiss_rule_suggestion(bigint),
    guardian.update_rule_list(text, text[], text, text),
    guardian.set_nonprod_labels(text[]),
    guardian._real_mail_provider(text),
    guardian._validate_test_source(),
    guardian.score_sources(),
    guardian._session_source(),
    guardian._source_verdict(),
    guardian._source_alert(regclass, text, bigint),
    guardian._shape(text),
    guardian._surprise(bigint, bigint),
    guardian._test_examples(),
    guardian._train_test_models(),
    guardian.train_column_models(regclass),
    guardian._model_scores(regclass, jsonb, boolean),
    guardian.score_value(regclass, text, text),
    guardian.scan_suspects(regclass, boolean, xid8),
    guardian.run_suspect_scan()
    TO guardian_owner;
-- Learned detection: labels keep application values, so only admins read them; the guardian's
-- own functions (resolving an alert) keep labels through SECURITY DEFINER helpers.
GRANT SELECT, DELETE ON guardian.labels TO guardian_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON guardian.rule_suggestions TO guardian_admin;
GRANT UPDATE (label_values) ON guardian.kinds TO guardian_admin;
GRANT EXECUTE ON FUNCTION guardian.label_records(regclass, text[], text), guardian.suggest_rules(regclass),
    guardian.accept_rule_suggestion(bigint), guardian.dismiss_rule_suggestion(bigint),
    guardian._store_labels(regclass, text, jsonb, text, uuid), guardian._label_rows(regclass, text[]),
    guardian._fill_labels(regclass), guardian._suggest_for_column(regclass, text, text, text[]),
    guardian._induce(text, text), guardian._candidate_anchors(text, text, text[], text[]),
    guardian._open_suggestion(bigint)
    TO guardian_admin;
GRANT SELECT ON guardian.rule_lists TO guardian_reader;
GRANT EXECUTE ON FUNCTION guardian.update_rule_list(text, text[], text, text), guardian.set_nonprod_labels(text[]),
    guardian._real_mail_provider(text)
    TO guardian_admin;
GRANT INSERT, UPDATE ON guardian.rule_lists TO guardian_admin;

-- Sources: admins say what a test tool looks like; readers see the scores. The write path asks
-- guardian._source_verdict() from the C statement trigger (a direct call) or the PL/pgSQL one
-- (SECURITY DEFINER): PUBLIC needs no right to it.
GRANT SELECT ON guardian.test_sources, guardian.source_risk TO guardian_reader;
GRANT INSERT, UPDATE, DELETE ON guardian.test_sources TO guardian_admin;
GRANT EXECUTE ON FUNCTION guardian.score_sources() TO guardian_admin;

-- Column models: readers inspect them and score values; admins train them and scan.
GRANT SELECT ON guardian.column_models, guardian.column_model_grams, guardian.test_models, guardian.test_model_grams,
    guardian.suspect_watermarks TO guardian_reader;
GRANT EXECUTE ON FUNCTION guardian._shape(text), guardian._surprise(bigint, bigint),
    guardian._model_scores(regclass, jsonb, boolean), guardian.score_value(regclass, text, text)
    TO guardian_reader;
GRANT INSERT, UPDATE, DELETE ON guardian.column_models, guardian.column_model_grams, guardian.test_models,
    guardian.test_model_grams, guardian.suspect_watermarks TO guardian_admin;
GRANT EXECUTE ON FUNCTION guardian.train_column_models(regclass), guardian._train_test_models(), guardian._test_examples(),
    guardian.scan_suspects(regclass, boolean, xid8), guardian.run_suspect_scan()
    TO guardian_admin;

-- The dashboard lists open suggestions to readers, without their examples (values).
GRANT SELECT (id, relid, column_name, kind, match_type, pattern, terms, anchors, matcher, test_hits, real_hits,
              matches_now, est_precision, status, rule_name, created_at, decided_at, decided_by)
    ON guardian.rule_suggestions TO guardian_reader;

-- >>> sql/99_finish/80_no_create.sql and 90_security_baseline.sql: guardian_owner may create
-- nothing again, and the new objects' privileges are the ones the security checks expect.
REVOKE CREATE ON SCHEMA guardian FROM guardian_owner;
SELECT pg_catalog.count(*) FROM guardian._privilege_changes('upgrade');
