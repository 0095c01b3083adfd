-- The guardian looks after itself: a watchdog check raises JOB_OVERDUE for a job that stopped
-- running, and a retention job prunes what it keeps (saying what it deleted).
CREATE FUNCTION guardian._check_jobs_overdue()
RETURNS SETOF guardian.finding
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (ROW('jobs_overdue', 'JOB_OVERDUE', 'HIGH', NULL, s.name,
               format('guardian job %s has not run for %s (allowed: %s; last: %s)', s.name,
                      date_trunc('second', s.lag), s.max_lag,
                      coalesce(s.last_finished_at::text, 'never')),
               CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_extension AS x WHERE x.extname = 'pg_cron')
                     AND current_setting('cron.database_name', true) = current_database()
                    THEN 'Check that pg_cron runs (SELECT * FROM cron.job_run_details ORDER BY start_time DESC LIMIT 5) and the job is scheduled: SELECT * FROM guardian.register_jobs();'
                    ELSE 'pg_cron does not run jobs in this database: keep `pg-guardian jobs serve` running.' END,
               jsonb_build_object('job', s.name, 'lag_seconds', round(extract(epoch FROM s.lag)),
                                  'max_lag', s.max_lag::text, 'last_finished_at', s.last_finished_at),
               s.name)::guardian.finding).*
      FROM guardian.job_status AS s
     WHERE s.overdue
$$;
COMMENT ON FUNCTION guardian._check_jobs_overdue() IS
    'Check jobs_overdue: a JOB_OVERDUE finding for every enabled job that has not run within its max_lag.';

-- Deleting pg_cron's history of guardian jobs needs the rights of the role that scheduled
-- them; 99_finish defines guardian._prune_cron_history() owned by the installing role.
CREATE FUNCTION guardian.run_retention()
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_alert_days numeric := guardian.param('retention.resolved_alerts_days');
    v_event_days numeric := guardian.param('retention.security_events_days');
    v_cron_days  numeric := guardian.param('retention.cron_history_days');
    v_alerts     bigint := 0;
    v_events     bigint := 0;
    v_cron       bigint := 0;
    v_cron_note  text := '';
    v_summary    text;
BEGIN
    DELETE FROM guardian.monitoring_alerts AS a
     WHERE a.resolved_at < now() - make_interval(days => v_alert_days::int);
    GET DIAGNOSTICS v_alerts = ROW_COUNT;
    IF to_regclass('guardian.security_events') IS NOT NULL THEN
        EXECUTE 'DELETE FROM guardian.security_events AS e WHERE e.occurred_at < $1'
          USING now() - make_interval(days => v_event_days::int);
        GET DIAGNOSTICS v_events = ROW_COUNT;
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_extension AS x WHERE x.extname = 'pg_cron') THEN
        BEGIN
            v_cron := guardian._prune_cron_history(make_interval(days => v_cron_days::int));
        EXCEPTION WHEN insufficient_privilege OR undefined_function THEN
            v_cron_note := ' (cron.job_run_details not pruned: ' || SQLERRM || ')';
        END;
    END IF;
    v_summary := format('deleted %s resolved alerts older than %s days, %s security events older than %s days, %s pg_cron run records older than %s days%s',
                        v_alerts, v_alert_days, v_events, v_event_days, v_cron, v_cron_days, v_cron_note);
    RAISE LOG 'pg_guardian retention: %', v_summary;
    IF v_alerts + v_events + v_cron > 0 THEN
        PERFORM guardian.raise_alert('RETENTION_PRUNED', 'INFO', 'guardian retention ' || v_summary,
            p_metadata => jsonb_build_object('resolved_alerts', v_alerts, 'security_events', v_events,
                                             'cron_run_details', v_cron, 'at', now()),
            p_fingerprint => md5('RETENTION_PRUNED'));
    END IF;
    RETURN v_summary;
END
$$;
COMMENT ON FUNCTION guardian.run_retention() IS
    'Delete resolved alerts, security events and pg_cron run records of guardian jobs past their retention (retention.* parameters); the counts go to the job result, the server log and an INFO RETENTION_PRUNED alert.';

INSERT INTO guardian.parameters (name, default_value, min_value, max_value, unit, description) VALUES
    ('retention.resolved_alerts_days', 90, 1, 36500, 'days', 'Resolved alerts are deleted this long after resolution'),
    ('retention.security_events_days', 30, 1, 36500, 'days', 'Security events read from the server log are kept this long'),
    ('retention.cron_history_days', 7, 1, 3650, 'days', 'cron.job_run_details rows of guardian jobs are kept this long');

INSERT INTO guardian.checks (name, category, function, description, is_condition, builtin) VALUES
    ('jobs_overdue', 'jobs', 'guardian._check_jobs_overdue', 'Guardian jobs that have not run within their max_lag (JOB_OVERDUE)', true, true);

INSERT INTO guardian.jobs (name, schedule, command, description, max_lag, builtin) VALUES
    ('watchdog', '*/5 * * * *', 'SELECT guardian.run_checks_job(''jobs'')',
     'Raise JOB_OVERDUE for guardian jobs that stopped running; resolve it when they run again', '30 minutes', true),
    ('retention', '17 3 * * *', 'SELECT guardian.run_retention()',
     'Prune resolved alerts, security events and pg_cron history past their retention', '2 days', true);
