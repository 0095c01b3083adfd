CREATE FUNCTION guardian._in_window(p_at timestamptz, p_params jsonb)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- Local wall-clock time in the configured zone; windows may wrap midnight (22:00-06:00).
    SELECT CASE WHEN s <= e THEN t >= s AND t < e ELSE t >= s OR t < e END
      FROM (SELECT (p_at AT TIME ZONE coalesce(p_params ->> 'timezone', 'UTC'))::time AS t,
                   (p_params ->> 'start')::time AS s, (p_params ->> 'end')::time AS e) AS x
$$;
COMMENT ON FUNCTION guardian._in_window(timestamptz, jsonb) IS
    'Internal: is the moment inside the off-hours window, in the window''s own time zone?';

CREATE FUNCTION guardian.rollup_activity()
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_env   text := guardian.current_environment();
    v_row   record;
    v_rule  record;
    v_count integer := 0;
    v_quiet interval := coalesce((guardian.setting('activity.quiet_minutes') #>> '{}')::int, 15) * interval '1 minute';
BEGIN
    -- Stragglers: findings whose statement trigger did not run (a write straight into a
    -- partition created after watch()) are grouped here.
    PERFORM guardian._flush_stale_findings();

    CREATE TEMP TABLE guardian_rollup (LIKE guardian.activity_log) ON COMMIT DROP;
    WITH moved AS (DELETE FROM guardian.activity_log RETURNING *)
    INSERT INTO guardian_rollup SELECT * FROM moved;

    FOR v_row IN
        WITH per_minute AS (
            SELECT l.relid, date_trunc('minute', l.at) AS minute,
                   sum(l.rows) FILTER (WHERE l.operation = 'INSERT') AS inserts,
                   sum(l.rows) FILTER (WHERE l.operation = 'UPDATE') AS updates,
                   sum(l.rows) FILTER (WHERE l.operation = 'DELETE') AS deletes,
                   count(*) AS statements
              FROM guardian_rollup AS l GROUP BY 1, 2),
        per_second AS (
            SELECT s.relid, date_trunc('minute', s.second) AS minute, max(s.n) AS peak
              FROM (SELECT l.relid, date_trunc('second', l.at) AS second, sum(l.rows) AS n
                      FROM guardian_rollup AS l WHERE l.operation = 'INSERT' GROUP BY 1, 2) AS s
             GROUP BY 1, 2),
        roles AS (
            SELECT r.relid, r.minute, jsonb_object_agg(r.role, r.n) AS roles
              FROM (SELECT l.relid, date_trunc('minute', l.at) AS minute, l.role, sum(l.rows) AS n
                      FROM guardian_rollup AS l GROUP BY 1, 2, 3) AS r GROUP BY 1, 2),
        apps AS (
            SELECT a.relid, a.minute, jsonb_object_agg(a.app, a.n) AS applications
              FROM (SELECT l.relid, date_trunc('minute', l.at) AS minute, coalesce(l.application, '') AS app,
                           sum(l.rows) AS n
                      FROM guardian_rollup AS l GROUP BY 1, 2, 3) AS a GROUP BY 1, 2)
        SELECT m.*, coalesce(s.peak, 0) AS peak, r.roles, a.applications
          FROM per_minute AS m
          LEFT JOIN per_second AS s USING (relid, minute)
          LEFT JOIN roles AS r USING (relid, minute)
          LEFT JOIN apps AS a USING (relid, minute)
    LOOP
        INSERT INTO guardian.activity_windows AS w
            (relid, minute, inserts, updates, deletes, statements, peak_inserts_per_second, roles, applications)
        VALUES (v_row.relid, v_row.minute, coalesce(v_row.inserts, 0), coalesce(v_row.updates, 0),
                coalesce(v_row.deletes, 0), v_row.statements, v_row.peak, v_row.roles, v_row.applications)
        ON CONFLICT (relid, minute) DO UPDATE
           SET inserts = w.inserts + EXCLUDED.inserts, updates = w.updates + EXCLUDED.updates,
               deletes = w.deletes + EXCLUDED.deletes, statements = w.statements + EXCLUDED.statements,
               peak_inserts_per_second = greatest(w.peak_inserts_per_second, EXCLUDED.peak_inserts_per_second),
               roles = (SELECT jsonb_object_agg(k, coalesce((w.roles ->> k)::bigint, 0) + coalesce((EXCLUDED.roles ->> k)::bigint, 0))
                          FROM (SELECT jsonb_object_keys(w.roles || EXCLUDED.roles) AS k) AS keys),
               applications = (SELECT jsonb_object_agg(k, coalesce((w.applications ->> k)::bigint, 0) + coalesce((EXCLUDED.applications ->> k)::bigint, 0))
                                 FROM (SELECT jsonb_object_keys(w.applications || EXCLUDED.applications) AS k) AS keys);
        v_count := v_count + 1;
    END LOOP;

    -- Rules over windows: evaluated per table over the windows this roll-up touched.
    FOR v_row IN
        SELECT w.* FROM guardian.activity_windows AS w
         WHERE (w.relid, w.minute) IN (SELECT DISTINCT l.relid, date_trunc('minute', l.at) FROM guardian_rollup AS l)
    LOOP
        v_rule := guardian._activity_rule(v_row.relid, 'bulk_minute');
        IF v_rule.enabled AND v_row.inserts > v_rule.threshold THEN
            PERFORM guardian.raise_alert(v_rule.alert_type, v_rule.severity,
                format('%s rows inserted into %s in the minute from %s (threshold %s per minute)',
                       v_row.inserts, v_row.relid, to_char(v_row.minute AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI "UTC"'), v_rule.threshold),
                v_row.relid::text, NULL,
                jsonb_build_object('rule', 'bulk_minute', 'rows', v_row.inserts, 'minute', v_row.minute,
                                   'threshold', v_rule.threshold, 'roles', v_row.roles, 'applications', v_row.applications),
                md5(concat_ws('|', 'bulk_minute', v_env, v_row.relid::text)));
        END IF;
        v_rule := guardian._activity_rule(v_row.relid, 'rapid_creation');
        IF v_rule.enabled AND v_row.peak_inserts_per_second > v_rule.threshold THEN
            PERFORM guardian.raise_alert(v_rule.alert_type, v_rule.severity,
                format('%s rows per second created in %s (threshold %s per second)',
                       v_row.peak_inserts_per_second, v_row.relid, v_rule.threshold),
                v_row.relid::text, NULL,
                jsonb_build_object('rule', 'rapid_creation', 'rows_per_second', v_row.peak_inserts_per_second,
                                   'minute', v_row.minute, 'threshold', v_rule.threshold, 'roles', v_row.roles),
                md5(concat_ws('|', 'rapid_creation', v_env, v_row.relid::text)));
        END IF;
    END LOOP;

    FOR v_row IN
        SELECT l.relid, sum(l.rows) AS n, min(l.at) AS first_at, max(l.at) AS last_at,
               jsonb_agg(DISTINCT l.role) AS roles
          FROM guardian_rollup AS l
         WHERE l.operation = 'INSERT'
           AND guardian._in_window(l.at, (guardian._activity_rule(l.relid, 'off_hours')).params)
         GROUP BY l.relid
    LOOP
        v_rule := guardian._activity_rule(v_row.relid, 'off_hours');
        IF v_rule.enabled AND v_row.n > v_rule.threshold THEN
            PERFORM guardian.raise_alert(v_rule.alert_type, v_rule.severity,
                format('%s rows inserted into %s off hours (%s-%s %s), last at %s', v_row.n, v_row.relid,
                       v_rule.params ->> 'start', v_rule.params ->> 'end', v_rule.params ->> 'timezone',
                       to_char(v_row.last_at AT TIME ZONE (v_rule.params ->> 'timezone'), 'YYYY-MM-DD HH24:MI')),
                v_row.relid::text, NULL,
                jsonb_build_object('rule', 'off_hours', 'rows', v_row.n, 'first_at', v_row.first_at,
                                   'last_at', v_row.last_at, 'window', v_rule.params, 'roles', v_row.roles),
                md5(concat_ws('|', 'off_hours', v_env, v_row.relid::text)));
        END IF;
    END LOOP;

    FOR v_row IN
        SELECT f.relid, count(*) AS n FROM guardian.findings AS f
         WHERE f.created_at > now() - interval '1 hour' GROUP BY f.relid
    LOOP
        v_rule := guardian._activity_rule(v_row.relid, 'suspicious_rate');
        IF v_rule.enabled AND v_row.n > v_rule.threshold THEN
            PERFORM guardian.raise_alert(v_rule.alert_type, v_rule.severity,
                format('%s test-data findings on %s in the last hour (threshold %s)', v_row.n, v_row.relid, v_rule.threshold),
                v_row.relid::text, NULL,
                jsonb_build_object('rule', 'suspicious_rate', 'findings_last_hour', v_row.n, 'threshold', v_rule.threshold),
                md5(concat_ws('|', 'suspicious_rate', v_env, v_row.relid::text)));
        END IF;
    END LOOP;

    -- A condition that has been quiet for activity.quiet_minutes is over: close its alert, so
    -- the next occurrence opens a new one instead of reviving an old one.
    UPDATE guardian.monitoring_alerts AS a
       SET resolved_at = now(), resolved_by = 'pg_guardian',
           resolution_note = format('condition quiet for %s', v_quiet)
     WHERE a.resolved_at IS NULL
       AND a.type IN (SELECT r.alert_type FROM guardian.activity_rules AS r)
       AND a.last_seen_at < now() - v_quiet;
    DROP TABLE guardian_rollup;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION guardian.rollup_activity() IS
    'Job: fold the activity log into per-minute windows and raise BULK_OPERATION, RAPID_CREATION, OFF_HOURS_ACTIVITY and SUSPICIOUS_PATTERN_RATE (deduplicated; closed after activity.quiet_minutes without recurrence). Returns windows touched.';

CREATE FUNCTION guardian._flush_stale_findings()
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count integer;
BEGIN
    -- Findings committed without their statement trigger are adopted by this backend.
    UPDATE guardian.findings AS f SET backend_pid = pg_backend_pid()
     WHERE f.alert_id IS NULL AND f.backend_pid <> pg_backend_pid();
    SELECT coalesce(sum(guardian._flush_findings(x.relid)), 0) INTO v_count
      FROM (SELECT DISTINCT f.relid FROM guardian.findings AS f
             WHERE f.alert_id IS NULL AND f.backend_pid = pg_backend_pid()) AS x;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION guardian._flush_stale_findings() IS 'Internal: groups findings left ungrouped into alerts.';

CREATE FUNCTION guardian.prune_activity()
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_days integer := coalesce((guardian.setting('activity.retention_days') #>> '{}')::int, 30);
    v_count bigint;
BEGIN
    IF v_days < 1 THEN
        RAISE EXCEPTION 'activity.retention_days must be at least 1, not %', v_days
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'UPDATE guardian.settings SET value = ''30'' WHERE key = ''activity.retention_days'';';
    END IF;
    DELETE FROM guardian.activity_windows AS w WHERE w.minute < now() - v_days * interval '1 day';
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION guardian.prune_activity() IS 'Job: drop activity windows older than activity.retention_days (default 30).';

INSERT INTO guardian.jobs (name, schedule, command, description, max_lag, builtin) VALUES
    ('activity_rollup', '* * * * *', 'SELECT guardian.rollup_activity()',
     'Fold the activity log into per-minute windows and evaluate activity rules.', '10 minutes', true),
    ('activity_retention', '17 3 * * *', 'SELECT guardian.prune_activity()',
     'Drop activity windows past their retention.', '2 days', true);
