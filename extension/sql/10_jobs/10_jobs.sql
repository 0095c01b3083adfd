-- Scheduled work (drift checks, activity roll-ups, health checks, retention) is registered
-- here once and run by pg_cron where it is present, or by `pg-guardian jobs run|serve` where it
-- is not. Both call guardian.run_job(), which makes every job lock-protected, replica-safe,
-- and visible (last run, duration, error).
CREATE TABLE guardian.jobs (
    name             text PRIMARY KEY,
    schedule         text NOT NULL,
    command          text NOT NULL,
    description      text NOT NULL,
    enabled          boolean NOT NULL DEFAULT true,
    max_lag          interval NOT NULL DEFAULT '1 hour',
    builtin          boolean NOT NULL DEFAULT false,
    last_started_at  timestamptz,
    last_finished_at timestamptz,
    last_status      text,
    last_error       text,
    last_duration    interval,
    last_result      text,
    runs             bigint NOT NULL DEFAULT 0,
    failures         bigint NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    last_ok_at       timestamptz,
    CONSTRAINT jobs_name_chk CHECK (name ~ '^[a-z][a-z0-9_]{0,40}$'),
    CONSTRAINT jobs_schedule_chk CHECK (schedule ~ '^(\S+\s+){4}\S+$' OR schedule ~ '^[0-9]+ seconds$'),
    CONSTRAINT jobs_status_chk CHECK (last_status IN ('running', 'ok', 'error', 'skipped')),
    CONSTRAINT jobs_max_lag_chk CHECK (max_lag > '0'::interval)
);
COMMENT ON TABLE guardian.jobs IS
    'Guardian jobs: what runs when (cron syntax, GMT under pg_cron 1.4), and how each last run went. Schedule them with guardian.register_jobs().';
SELECT pg_catalog.pg_extension_config_dump('guardian.jobs', 'WHERE NOT builtin');

CREATE FUNCTION guardian.run_job(p_name text)
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

CREATE FUNCTION guardian.register_jobs()
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

CREATE FUNCTION guardian.unregister_jobs()
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

-- A job that never ran counts its lag from when it was registered, so a scheduler that never
-- started shows up as overdue too.
CREATE VIEW guardian.job_status AS
SELECT j.name, j.schedule, j.enabled, j.last_started_at, j.last_finished_at, j.last_status,
       j.last_error, j.last_result, j.last_duration, j.runs, j.failures, j.max_lag,
       pg_catalog.now() - coalesce(j.last_finished_at, j.created_at) AS lag,
       j.enabled AND pg_catalog.now() - coalesce(j.last_finished_at, j.created_at) > j.max_lag AS overdue,
       j.last_ok_at
  FROM guardian.jobs AS j;
COMMENT ON VIEW guardian.job_status IS
    'Each guardian job with its last run and result, lag since then (since registration if it never ran) and whether it is overdue (lag > max_lag).';
