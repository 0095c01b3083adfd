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
