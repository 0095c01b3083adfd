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
