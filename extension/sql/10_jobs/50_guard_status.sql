-- Is anything running the guardian's checks? A database where no job runs is not guarded,
-- however good its rules: `status` exits 1 then, and says what to run.
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
