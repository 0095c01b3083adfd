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
