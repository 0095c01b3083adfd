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
