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
