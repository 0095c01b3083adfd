-- Column models: what the real values of a watched column look like (character trigrams and
-- shapes), trained by a job from the column's own data less its labelled test values, and a
-- model of test data per kind (labelled test values and the rules' examples). A value that is
-- a strong outlier of its column (trigrams rarer than 99.9 % of the column's own values, and
-- a shape fewer than 1 % of them have) is SUSPECTED_TEST_DATA: MEDIUM when the test model also
-- explains it better, else LOW; found by scans and a job over recent writes, never a
-- strict-mode rejection, and nothing on the write path.
INSERT INTO guardian.parameters (name, default_value, min_value, max_value, unit, description) VALUES
    ('learning.model_sample_rows', 100000, 1000, 100000000, 'rows',
     'A column model is trained on at most about this many rows of its table (a sample beyond)'),
    ('learning.model_grams', 20000, 100, 1000000, 'trigrams',
     'A column model keeps the counts of at most this many trigrams (the most frequent)'),
    ('learning.suspect_margin', 0.5, 0, 20, 'nats',
     'A suspected value is MEDIUM (else LOW) when the test model explains its trigrams better than its column''s model by at least this much on average');

CREATE TABLE guardian.column_models (
    relid       regclass NOT NULL,
    column_name text NOT NULL,
    kind        text NOT NULL,
    rows_seen   bigint NOT NULL,
    gram_total  bigint NOT NULL,
    shapes      jsonb NOT NULL,
    shape_total bigint NOT NULL,
    median_nll  double precision NOT NULL DEFAULT 0,
    cutoff_nll  double precision NOT NULL DEFAULT 0,
    trained_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT column_models_pkey PRIMARY KEY (relid, column_name)
);
COMMENT ON TABLE guardian.column_models IS
    'Per watched column, a model of its real values: how many trigrams it saw (gram_total; the counts are in guardian.column_model_grams), shapes (letters as a, digit runs as 9: jane.doe42@x.io is a.a9@a.a), and the median and 99.9th percentile of its own values'' mean trigram surprise (nats). Trained by guardian.train_column_models() (job column_models).';
SELECT pg_catalog.pg_extension_config_dump('guardian.column_models', '');

CREATE TABLE guardian.column_model_grams (
    relid       regclass NOT NULL,
    column_name text NOT NULL,
    gram        text NOT NULL,
    n           bigint NOT NULL,
    CONSTRAINT column_model_grams_pkey PRIMARY KEY (relid, column_name, gram),
    CONSTRAINT column_model_grams_model_fkey FOREIGN KEY (relid, column_name)
        REFERENCES guardian.column_models (relid, column_name) ON DELETE CASCADE
);
COMMENT ON TABLE guardian.column_model_grams IS
    'The trigram counts of each column model (the learning.model_grams most frequent).';
SELECT pg_catalog.pg_extension_config_dump('guardian.column_model_grams', '');

CREATE TABLE guardian.test_models (
    kind        text PRIMARY KEY,
    gram_total  bigint NOT NULL,
    values_seen integer NOT NULL,
    trained_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE guardian.test_models IS
    'Per kind, what test data looks like: values labelled test (any table) and the rules'' examples; counts in guardian.test_model_grams.';
SELECT pg_catalog.pg_extension_config_dump('guardian.test_models', '');

CREATE TABLE guardian.test_model_grams (
    kind text NOT NULL REFERENCES guardian.test_models (kind) ON DELETE CASCADE,
    gram text NOT NULL,
    n    bigint NOT NULL,
    CONSTRAINT test_model_grams_pkey PRIMARY KEY (kind, gram)
);
COMMENT ON TABLE guardian.test_model_grams IS 'The trigram counts of each kind''s test model.';
SELECT pg_catalog.pg_extension_config_dump('guardian.test_model_grams', '');

CREATE TABLE guardian.suspect_watermarks (
    relid      regclass PRIMARY KEY,
    last_xid   xid8 NOT NULL,
    scanned_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE guardian.suspect_watermarks IS
    'Internal: the transaction up to which the suspect_scan job has looked at a table''s rows.';

CREATE FUNCTION guardian._shape(p_value text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT regexp_replace(regexp_replace(p_value, '[[:alpha:]]+', 'a', 'g'), '[0-9]+', '9', 'g')
$$;
COMMENT ON FUNCTION guardian._shape(text) IS 'Internal: a value''s shape: runs of letters as a, runs of digits as 9.';

-- A model's probability of a trigram mixes its counts (0.9) with one background over 2^16
-- trigrams (0.1), so that models of different sizes compare fairly: a trigram neither has seen
-- costs both the same. Surprise is the mean negative log of it over a value's trigrams (nats).
-- Deliberately without SET search_path so that it inlines into its callers (millions of
-- trigrams a scan), all of which pin search_path; every function is schema-qualified.
CREATE FUNCTION guardian._surprise(p_count bigint, p_total bigint)
RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT OPERATOR(pg_catalog.-) pg_catalog.ln(0.9::double precision OPERATOR(pg_catalog.*) COALESCE(p_count, 0)
               OPERATOR(pg_catalog./) GREATEST(COALESCE(p_total, 1), 1)
               OPERATOR(pg_catalog.+) (0.1::double precision OPERATOR(pg_catalog./) 65536))
$$;
COMMENT ON FUNCTION guardian._surprise(bigint, bigint) IS
    'Internal: the surprise (nats) of a trigram seen p_count times in a model of p_total trigrams.';

CREATE FUNCTION guardian._test_examples()
RETURNS TABLE (kind text, value text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT l.kind, l.value FROM guardian.labels AS l WHERE l.label = 'test' AND l.value IS NOT NULL AND l.value <> ''
    UNION ALL
    SELECT k.kind, guardian._normalize(r.example_match)
      FROM guardian.rules AS r, unnest(r.kinds) AS k(kind)
     WHERE r.enabled AND coalesce(r.example_match, '') <> ''
$$;
COMMENT ON FUNCTION guardian._test_examples() IS
    'Internal: what test data looks like, per kind: values labelled test and the rules'' examples.';

CREATE FUNCTION guardian._train_test_models()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count integer;
BEGIN
    DELETE FROM guardian.test_models;
    INSERT INTO guardian.test_models (kind, gram_total, values_seen)
    SELECT e.kind, sum(length(e.value)), count(*) FROM guardian._test_examples() AS e GROUP BY e.kind;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    INSERT INTO guardian.test_model_grams (kind, gram, n)
    SELECT e.kind, substr('^' || e.value || '$', g.i, 3), count(*)
      FROM guardian._test_examples() AS e, generate_series(1, length(e.value)) AS g(i)
     GROUP BY 1, 2;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION guardian._train_test_models() IS
    'Internal: the per-kind model of test data, from values labelled test and the rules'' examples.';

CREATE FUNCTION guardian.train_column_models(p_table regclass DEFAULT NULL)
RETURNS TABLE (table_name text, column_name text, kind text, rows_seen bigint, grams integer,
               median_nll double precision, cutoff_nll double precision)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    v_limit  numeric := guardian.param('learning.model_sample_rows');
    v_keep   integer := guardian.param('learning.model_grams')::integer;
    v_watch  guardian.watched_tables;
    v_column record;
    v_sample text;
    v_total  double precision;
    v_values text[];
BEGIN
    IF p_table IS NOT NULL AND NOT EXISTS (SELECT FROM guardian.watched_tables AS w WHERE w.relid = p_table) THEN
        RAISE EXCEPTION '% is not watched', p_table
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Column models are trained for watched tables: SELECT guardian.watch(%L);', p_table::text);
    END IF;
    PERFORM guardian._train_test_models();
    FOR v_watch IN
        SELECT w.* FROM guardian.watched_tables AS w
         WHERE (p_table IS NULL OR w.relid = p_table)
           AND EXISTS (SELECT FROM pg_catalog.pg_class AS c WHERE c.oid = w.relid)
         ORDER BY w.relid::text
    LOOP
        PERFORM guardian._refuse_app_code(ARRAY[v_watch.relid], format('guardian.train_column_models(%L)', v_watch.relid::text),
                                          p_runs => ARRAY['read']);
        SELECT greatest(c.reltuples, 0) INTO v_total FROM pg_catalog.pg_class AS c WHERE c.oid = v_watch.relid;
        v_sample := CASE WHEN v_total > v_limit
                         THEN format(' TABLESAMPLE SYSTEM (%s)', round((100 * v_limit / v_total)::numeric, 4)) ELSE '' END;
        FOR v_column IN
            SELECT c.column_name, c.kind, a.atttypid
              FROM unnest(v_watch.column_names, v_watch.column_kinds) AS c(column_name, kind)
              JOIN pg_catalog.pg_attribute AS a
                ON a.attrelid = v_watch.relid AND a.attname = c.column_name AND NOT a.attisdropped
             WHERE c.kind IN ('email', 'person_name', 'organization', 'phone')
        LOOP
            -- the column's values, less those labelled test
            EXECUTE format(
                'SELECT coalesce(array_agg(x.v), ''{}'') FROM (
                    SELECT guardian._normalize(%1$s) AS v FROM %2$s AS t%3$s WHERE %1$s IS NOT NULL) AS x
                  WHERE x.v <> '''' AND NOT EXISTS (SELECT FROM guardian.labels AS l
                                                     WHERE l.relid = $1 AND l.column_name = $2 AND l.label = ''test''
                                                       AND l.value = x.v)',
                format(CASE WHEN guardian._json_safe_type(v_column.atttypid) THEN 't.%I::pg_catalog.text'
                            ELSE 'pg_catalog.format(''%%s'', t.%I)' END, v_column.column_name),
                v_watch.relid, v_sample)
                INTO v_values USING v_watch.relid, v_column.column_name;
            CONTINUE WHEN cardinality(v_values) < 20;
            DELETE FROM guardian.column_models AS m WHERE m.relid = v_watch.relid AND m.column_name = v_column.column_name;
            INSERT INTO guardian.column_models (relid, column_name, kind, rows_seen, gram_total, shapes, shape_total)
            SELECT v_watch.relid, v_column.column_name, v_column.kind, cardinality(v_values),
                   (SELECT sum(length(v.v)) FROM unnest(v_values) AS v(v)),
                   (SELECT jsonb_object_agg(s.shape, s.n)
                      FROM (SELECT guardian._shape(v.v) AS shape, count(*) AS n FROM unnest(v_values) AS v(v)
                             GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 500) AS s),
                   cardinality(v_values);
            INSERT INTO guardian.column_model_grams (relid, column_name, gram, n)
            SELECT v_watch.relid, v_column.column_name, c.gram, c.n
              FROM (SELECT substr('^' || v.v || '$', g.i, 3) AS gram, count(*) AS n
                      FROM unnest(v_values) AS v(v), generate_series(1, length(v.v)) AS g(i)
                     GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT v_keep) AS c;
            -- how surprising the column's own values are: the median and the 99.9th percentile
            UPDATE guardian.column_models AS m
               SET median_nll = s.median, cutoff_nll = s.cutoff
              FROM (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x.nll) AS median,
                           percentile_cont(0.999) WITHIN GROUP (ORDER BY x.nll) AS cutoff
                      FROM (SELECT avg(guardian._surprise(cg.n, m2.gram_total)) AS nll
                              FROM unnest(v_values[1:20000]) WITH ORDINALITY AS v(v, k)
                              CROSS JOIN generate_series(1, length(v.v)) AS g(i)
                              JOIN guardian.column_models AS m2
                                ON m2.relid = v_watch.relid AND m2.column_name = v_column.column_name
                              LEFT JOIN guardian.column_model_grams AS cg
                                ON cg.relid = v_watch.relid AND cg.column_name = v_column.column_name
                               AND cg.gram = substr('^' || v.v || '$', g.i, 3)
                             GROUP BY v.k) AS x) AS s
             WHERE m.relid = v_watch.relid AND m.column_name = v_column.column_name;
            RETURN QUERY
                SELECT m.relid::text, m.column_name, m.kind, m.rows_seen,
                       (SELECT count(*) FROM guardian.column_model_grams AS cg
                         WHERE cg.relid = m.relid AND cg.column_name = m.column_name)::integer,
                       m.median_nll, m.cutoff_nll
                  FROM guardian.column_models AS m
                 WHERE m.relid = v_watch.relid AND m.column_name = v_column.column_name;
        END LOOP;
    END LOOP;
END
$$;
COMMENT ON FUNCTION guardian.train_column_models(regclass) IS
    'Train the model of each watched column''s real values (email, name, organisation and phone columns with at least 20 values) from the table (a sample of learning.model_sample_rows beyond) less its labelled test values, and the per-kind test models. Returns one row per model. Run by the column_models job.';

-- Scores of values against their columns' models, in one pass: each value's trigrams joined to
-- the column's counts and its kind's test counts. p_values: (record_id, column_name, value).
CREATE FUNCTION guardian._model_scores(p_table regclass, p_values jsonb, p_all boolean DEFAULT false)
RETURNS TABLE (record_id text, column_name text, value text, nll double precision, cutoff_nll double precision,
               shape_share double precision, test_advantage double precision, suspected boolean, severity text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
    WITH vals AS (
        SELECT x.record_id, x.column_name, guardian._normalize(x.value) AS v, m.kind, m.gram_total, m.cutoff_nll,
               coalesce((m.shapes ->> guardian._shape(guardian._normalize(x.value)))::double precision, 0)
                   / greatest(m.shape_total, 1) AS shape_share
          FROM jsonb_to_recordset(p_values) AS x(record_id text, column_name text, value text)
          JOIN guardian.column_models AS m ON m.relid = p_table AND m.column_name = x.column_name
         WHERE coalesce(x.value, '') <> ''
    ), scored AS (
        SELECT v.record_id, v.column_name, v.v, v.cutoff_nll, v.shape_share,
               avg(guardian._surprise(cg.n, v.gram_total)) AS nll,
               CASE WHEN bool_or(tm.kind IS NOT NULL) THEN avg(guardian._surprise(tg.n, tm.gram_total)) END AS nll_test
          FROM vals AS v
          CROSS JOIN generate_series(1, length(v.v)) AS g(i)
          LEFT JOIN guardian.column_model_grams AS cg
            ON cg.relid = p_table AND cg.column_name = v.column_name AND cg.gram = substr('^' || v.v || '$', g.i, 3)
          LEFT JOIN guardian.test_models AS tm ON tm.kind = v.kind
          LEFT JOIN guardian.test_model_grams AS tg ON tg.kind = v.kind AND tg.gram = substr('^' || v.v || '$', g.i, 3)
         -- only a value of a rare shape can be suspected: the others are not scored (p_all: all)
         WHERE v.v <> '' AND (p_all OR v.shape_share < 0.01)
         GROUP BY v.record_id, v.column_name, v.v, v.cutoff_nll, v.shape_share
    ), judged AS (
        SELECT s.*, s.nll - s.nll_test AS advantage, s.nll > s.cutoff_nll AND s.shape_share < 0.01 AS suspect
          FROM scored AS s
    )
    SELECT j.record_id, j.column_name, j.v, j.nll, j.cutoff_nll, j.shape_share, j.advantage, j.suspect,
           CASE WHEN NOT j.suspect THEN NULL
                WHEN j.advantage >= guardian.param('learning.suspect_margin') THEN 'MEDIUM'
                ELSE 'LOW' END
      FROM judged AS j
$$;
COMMENT ON FUNCTION guardian._model_scores(regclass, jsonb, boolean) IS
    'Internal: values ([{"record_id", "column_name", "value"}]) scored against their columns'' models (only those of a rare shape unless p_all).';

-- How a value scores against its column's model: its surprise, the column's cutoff, how
-- common its shape is there, and how much better the test model explains it.
CREATE FUNCTION guardian.score_value(p_table regclass, p_column text, p_value text)
RETURNS TABLE (nll double precision, cutoff_nll double precision, shape_share double precision,
               test_advantage double precision, suspected boolean, severity text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM guardian.column_models AS m WHERE m.relid = p_table AND m.column_name = p_column) THEN
        RAISE EXCEPTION 'no model of %.%', p_table, p_column
            USING ERRCODE = 'undefined_object',
                  HINT = format('Train it with SELECT * FROM guardian.train_column_models(%L);', p_table::text);
    END IF;
    RETURN QUERY
        SELECT s.nll, s.cutoff_nll, s.shape_share, s.test_advantage, s.suspected, s.severity
          FROM guardian._model_scores(p_table, jsonb_build_array(jsonb_build_object(
                   'record_id', '', 'column_name', p_column, 'value', p_value)), true) AS s;
END
$$;
COMMENT ON FUNCTION guardian.score_value(regclass, text, text) IS
    'Score a value against the model of a watched column: its mean trigram surprise (nats) against the column''s 99.9th-percentile cutoff, the share of the column''s values with its shape, and how much better (nats a trigram) the test model explains it. Suspected: rarer trigrams than 99.9 % of the column''s own values and a shape under 1 % of them; MEDIUM when the test model also explains it better by learning.suspect_margin, else LOW.';

-- The suspects among rows of a table (all, or those written since a transaction), skipping
-- values a rule already flags.
CREATE FUNCTION guardian.scan_suspects(p_table regclass, p_record boolean DEFAULT false, p_since xid8 DEFAULT NULL)
RETURNS TABLE (record_id text, column_name text, sample text, severity text, nll double precision,
               test_advantage double precision)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    v_watch  guardian.watched_tables := guardian._watch_of(p_table);
    v_values jsonb;
    v_found  record;
BEGIN
    IF v_watch.relid IS NULL THEN
        RAISE EXCEPTION '% is not watched', p_table
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Watch it and train its models: SELECT guardian.watch(%L); SELECT * FROM guardian.train_column_models(%L);',
                                p_table::text, p_table::text);
    END IF;
    PERFORM guardian._refuse_app_code(ARRAY[p_table], format('guardian.scan_suspects(%L)', p_table::text), p_runs => ARRAY['read']);
    EXECUTE format(
        'SELECT coalesce(jsonb_agg(jsonb_build_object(''record_id'', r.record_id, ''column_name'', m.column_name,
                                                      ''value'', j.row_data ->> m.column_name)), ''[]'')
           FROM %1$s AS t
           CROSS JOIN LATERAL (SELECT %2$s AS row_data) AS j
           CROSS JOIN LATERAL guardian._record_ref($1, j.row_data) AS r
           JOIN guardian.column_models AS m ON m.relid = $2
          WHERE j.row_data ->> m.column_name IS NOT NULL%3$s',
        p_table, guardian._scan_row_json(p_table),
        CASE WHEN p_since IS NOT NULL
             THEN ' AND pg_catalog.age(t.xmin) <= (pg_catalog.pg_current_xact_id()::text::bigint - $3::text::bigint)' ELSE '' END)
        INTO v_values USING v_watch, p_table, p_since;
    FOR v_found IN
        SELECT s.*, m.kind FROM guardian._model_scores(p_table, v_values) AS s
          JOIN guardian.column_models AS m ON m.relid = p_table AND m.column_name = s.column_name
         WHERE s.suspected
           AND NOT EXISTS (SELECT FROM guardian._match(m.kind, s.column_name, s.value, p_table))
         ORDER BY s.test_advantage DESC
    LOOP
        record_id := v_found.record_id;
        column_name := v_found.column_name;
        sample := guardian._redact(v_found.value, v_found.kind, '{}'::text[]);
        severity := v_found.severity;
        nll := v_found.nll;
        test_advantage := v_found.test_advantage;
        RETURN NEXT;
        IF p_record THEN
            PERFORM guardian.raise_alert('SUSPECTED_TEST_DATA', v_found.severity,
                format('%s.%s holds a value unlike its real data and like test data: %s', p_table, v_found.column_name,
                       sample),
                p_table::text, v_found.record_id,
                jsonb_build_object('column', v_found.column_name, 'sample', sample,
                                   'surprise_nats', round(v_found.nll::numeric, 2),
                                   'cutoff_nats', round(v_found.cutoff_nll::numeric, 2),
                                   'test_advantage_nats', round(v_found.test_advantage::numeric, 2),
                                   'action_required', 'Review the record; label it with guardian.label_records so that the next models learn from it.',
                                   'fix', format('SELECT guardian.label_records(%L, ARRAY[%L], ''test'');', p_table::text, v_found.record_id)),
                md5(concat_ws('|', 'SUSPECTED_TEST_DATA', guardian.current_environment(), p_table::text, v_found.column_name,
                              v_found.record_id)));
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION guardian.scan_suspects(regclass, boolean, xid8) IS
    'Values of a watched table that its column models find unlike real data and like test data, and that no rule flags: one row per value (record_id, column, redacted sample, LOW or MEDIUM). p_record => true raises SUSPECTED_TEST_DATA alerts; p_since looks only at rows written after that transaction.';

-- The job: rows written since its last run, in every watched table with models.
CREATE FUNCTION guardian.run_suspect_scan()
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_table regclass;
    v_now   xid8 := pg_current_xact_id();
    v_found integer := 0;
    v_tables integer := 0;
BEGIN
    IF pg_is_in_recovery() THEN
        RETURN 'skipped: a replica';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('guardian.run_suspect_scan'));
    FOR v_table IN SELECT DISTINCT m.relid FROM guardian.column_models AS m
                    WHERE EXISTS (SELECT FROM guardian.watched_tables AS w WHERE w.relid = m.relid) ORDER BY 1
    LOOP
        v_found := v_found + (SELECT count(*) FROM guardian.scan_suspects(v_table, true,
                                  (SELECT w.last_xid FROM guardian.suspect_watermarks AS w WHERE w.relid = v_table)))::integer;
        INSERT INTO guardian.suspect_watermarks AS w (relid, last_xid) VALUES (v_table, v_now)
        ON CONFLICT (relid) DO UPDATE SET last_xid = EXCLUDED.last_xid, scanned_at = now();
        v_tables := v_tables + 1;
    END LOOP;
    RETURN format('%s suspect value(s) in %s table(s)', v_found, v_tables);
END
$$;
COMMENT ON FUNCTION guardian.run_suspect_scan() IS
    'The suspect_scan job: scores the rows written to each modelled table since its last run (all rows the first time), raising SUSPECTED_TEST_DATA.';

INSERT INTO guardian.jobs (name, schedule, command, description, max_lag, builtin) VALUES
    ('column_models', '23 2 * * *', 'SELECT count(*) FROM guardian.train_column_models()',
     'Train the models of watched columns'' real values (SUSPECTED_TEST_DATA)', '2 days', true),
    ('suspect_scan', '*/10 * * * *', 'SELECT guardian.run_suspect_scan()',
     'Score recent writes to modelled tables against their column models: SUSPECTED_TEST_DATA', '1 hour', true);
