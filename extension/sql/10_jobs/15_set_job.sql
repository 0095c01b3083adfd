-- Changing a job's schedule, switch or allowed lag is configuration: validated here, then
-- re-registered with pg_cron where it runs. Commands are not editable: a job runs as
-- guardian_owner, so letting admins write commands would hand them that role. set_job runs
-- as its caller (admins may update those three columns only) because pg_cron jobs belong to,
-- and run as, the role that schedules them.
CREATE FUNCTION guardian._check_cron_schedule(p_schedule text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_fields text[] := regexp_split_to_array(btrim(p_schedule), '\s+');
    v_limits int[][] := ARRAY[[0, 59], [0, 23], [1, 31], [1, 12], [0, 7]];
    v_names  text[] := ARRAY['minute', 'hour', 'day of month', 'month', 'day of week'];
    v_part   text;
    v_m      text[];
BEGIN
    IF p_schedule IS NULL OR array_length(v_fields, 1) IS DISTINCT FROM 5 THEN
        RAISE EXCEPTION 'invalid job schedule %', coalesce(quote_literal(p_schedule), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A schedule has five fields: minute hour day-of-month month day-of-week (GMT under pg_cron 1.4).',
                  HINT = 'For example every five minutes: ''*/5 * * * *''.';
    END IF;
    FOR i IN 1 .. 5 LOOP
        FOREACH v_part IN ARRAY string_to_array(v_fields[i], ',') LOOP
            v_m := regexp_match(v_part, '^(\*|([0-9]{1,2})(-([0-9]{1,2}))?)(/([0-9]{1,2}))?$');
            IF v_m IS NULL
               OR (v_m[2] IS NOT NULL AND v_m[2]::int NOT BETWEEN v_limits[i][1] AND v_limits[i][2])
               OR (v_m[4] IS NOT NULL AND (v_m[4]::int NOT BETWEEN v_limits[i][1] AND v_limits[i][2]
                                           OR v_m[4]::int < v_m[2]::int))
               OR (v_m[6] IS NOT NULL AND v_m[6]::int < 1) THEN
                RAISE EXCEPTION 'invalid % field % in job schedule %', v_names[i],
                                quote_literal(v_part), quote_literal(p_schedule)
                    USING ERRCODE = 'invalid_parameter_value',
                          DETAIL = format('The %s field takes *, a number from %s to %s, a range a-b, a list a,b, or a step */n.',
                                          v_names[i], v_limits[i][1], v_limits[i][2]),
                          HINT = 'For example every five minutes: ''*/5 * * * *''.';
            END IF;
        END LOOP;
    END LOOP;
    RETURN array_to_string(v_fields, ' ');
END
$$;
COMMENT ON FUNCTION guardian._check_cron_schedule(text) IS
    'Internal: validates a five-field cron schedule (the syntax pg_cron 1.4 and `pg-guardian jobs` share) and normalises its spacing.';

CREATE FUNCTION guardian.set_job(
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
