-- Running a cleanup: cleanup_begin() locks and captures, one statement per step group deletes
-- (or sets NULL) exactly the captured rows and reports its count to cleanup_step(), and
-- cleanup_finish() checks that every step ran. All in the caller's transaction: any mismatch
-- raises, and the transaction rolls back with nothing changed.
--
-- Values are captured and restored in one fixed text form (ISO dates, postgres intervals,
-- hex bytea, shortest exact floats, UTC), whatever the session's settings, and json columns
-- as their exact text (jsonb would reorder keys), so that a restore is byte for byte.
CREATE FUNCTION guardian._table_shape(p_table regclass)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object('name', a.attname, 'type', format_type(a.atttypid, a.atttypmod),
                                                 'generated', a.attgenerated <> '')
                              ORDER BY a.attnum), '[]')
      FROM pg_catalog.pg_attribute AS a
     WHERE a.attrelid = p_table AND a.attnum > 0 AND NOT a.attisdropped
$$;
COMMENT ON FUNCTION guardian._table_shape(regclass) IS 'Internal: the columns of a table (name, type, generated) in order.';

CREATE FUNCTION guardian._json_columns(p_table regclass)
RETURNS text[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ARRAY(SELECT a.attname::text
                   FROM pg_catalog.pg_attribute AS a
                   JOIN pg_catalog.pg_type AS t ON t.oid = a.atttypid
                  WHERE a.attrelid = p_table AND a.attnum > 0 AND NOT a.attisdropped
                    AND (a.atttypid = 'json'::regtype OR (t.typtype = 'd' AND t.typbasetype = 'json'::regtype))
                  ORDER BY a.attnum)
$$;
COMMENT ON FUNCTION guardian._json_columns(regclass) IS 'Internal: the json (not jsonb) columns of a table, kept as text in quarantine.';

CREATE FUNCTION guardian._row_json_expr(p_table regclass, p_alias text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT '(' || guardian._scan_row_json(p_table, p_alias) || ')'
           || coalesce(' OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object(' ||
                       (SELECT string_agg(format('%L, %I.%I::text', c, p_alias, c), ', ')
                          FROM unnest(guardian._json_columns(p_table)) AS c) || ')', '')
$$;
COMMENT ON FUNCTION guardian._row_json_expr(regclass, text) IS 'Internal: SQL for a whole row as quarantine keeps it.';

CREATE FUNCTION guardian._cleanup_registered(p_batch uuid)
RETURNS guardian.cleanup_scripts
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_script guardian.cleanup_scripts;
BEGIN
    PERFORM guardian._response_caller();
    SELECT * INTO v_script FROM guardian.cleanup_scripts AS s WHERE s.batch_id = p_batch;
    RETURN v_script;
END
$$;
COMMENT ON FUNCTION guardian._cleanup_registered(uuid) IS 'Internal: the registered cleanup script of a batch.';

CREATE FUNCTION guardian._quarantine_open(p_batch uuid)
RETURNS guardian.quarantine_batches
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_batch guardian.quarantine_batches;
BEGIN
    PERFORM guardian._response_caller();
    PERFORM pg_advisory_xact_lock(hashtextextended('guardian.batch:' || p_batch, 0));
    SELECT * INTO v_batch FROM guardian.quarantine_batches AS b WHERE b.id = p_batch FOR UPDATE;
    IF FOUND AND v_batch.status = 'capturing' AND v_batch.captured_xid <> txid_current() THEN
        -- A capture committed without its steps (statements run one by one outside the
        -- script's transaction) changed nothing: start again.
        DELETE FROM guardian.quarantine_batches AS b WHERE b.id = p_batch;
        v_batch := NULL;
    END IF;
    RETURN v_batch;
END
$$;
COMMENT ON FUNCTION guardian._quarantine_open(uuid) IS
    'Internal: locks a batch id for a capture; forgets an abandoned capture of an earlier transaction.';

CREATE FUNCTION guardian._quarantine_put(p_batch uuid, p_items guardian.quarantine_item[])
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_script guardian.cleanup_scripts;
    v_count  bigint;
BEGIN
    PERFORM guardian._response_caller();
    SELECT * INTO v_script FROM guardian.cleanup_scripts AS s WHERE s.batch_id = p_batch;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown cleanup batch %', p_batch USING ERRCODE = 'no_data_found';
    END IF;
    -- Rows go to the steps of the registered script, and nowhere else.
    IF EXISTS (SELECT FROM unnest(p_items) AS i
                WHERE NOT EXISTS (SELECT FROM jsonb_array_elements(v_script.steps) AS s
                                   WHERE (s ->> 'step')::integer = i.step AND (s ->> 'relid')::oid = i.relid::oid
                                     AND s ->> 'action' = i.action)) THEN
        RAISE EXCEPTION 'rows for cleanup batch % do not match its steps', p_batch USING ERRCODE = 'data_exception';
    END IF;
    -- Each step remembers the table's columns and key, so that a restore can tell whether
    -- the table still has the shape its rows were taken from.
    INSERT INTO guardian.quarantine_batches (id, alert_id, environment, automatic, requested_by, steps)
    VALUES (p_batch, v_script.alert_id, guardian.current_environment(), v_script.automatic, guardian._actor(),
            (SELECT jsonb_agg(s || jsonb_build_object(
                        'shape', guardian._table_shape((s ->> 'relid')::oid::regclass),
                        'key_columns', to_jsonb((guardian._record_key((s ->> 'relid')::oid::regclass)).key_columns))
                    ORDER BY (s ->> 'step')::integer)
               FROM jsonb_array_elements(v_script.steps) AS s));
    INSERT INTO guardian.quarantine (batch_id, step, relid, table_name, action, row_key, row_data, columns, findings,
                                     row_tableoid, row_ctid)
    SELECT p_batch, i.step, i.relid, i.relid::text, i.action, i.row_key, i.row_data, i.columns, i.findings,
           i.row_tableoid, i.row_ctid
      FROM unnest(p_items) AS i
     ORDER BY i.step, i.row_tableoid, i.row_ctid;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    UPDATE guardian.quarantine_batches AS b SET row_count = v_count WHERE b.id = p_batch;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION guardian._quarantine_put(uuid, guardian.quarantine_item[]) IS
    'Internal: stores the captured rows of a registered cleanup as a new batch (status capturing).';

CREATE FUNCTION guardian.cleanup_begin(p_batch uuid, p_roots jsonb, p_expected jsonb)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET datestyle = 'ISO, YMD'
SET intervalstyle = 'postgres'
SET timezone = 'UTC'
SET extra_float_digits = 1
SET bytea_output = 'hex'
AS $$
DECLARE
    v_script  guardian.cleanup_scripts := guardian._cleanup_registered(p_batch);
    v_batch   guardian.quarantine_batches;
    v_rows    guardian.cleanup_row[];
    v_counts  jsonb;
    v_diff    text;
    v_step    jsonb;
    v_items   guardian.quarantine_item[] := '{}';
    v_found   guardian.quarantine_item[];
    v_total   bigint;
    v_restricted boolean;
BEGIN
    IF v_script.batch_id IS NULL THEN
        RAISE EXCEPTION 'unknown cleanup batch %', coalesce(p_batch::text, 'NULL')
            USING ERRCODE = 'no_data_found',
                  DETAIL = 'Cleanups run scripts generated by the guardian, which registers each one.',
                  HINT = 'Generate one with SELECT guardian.cleanup_script(''<alert id>'');';
    END IF;
    IF v_script.roots IS DISTINCT FROM p_roots
       OR p_expected IS DISTINCT FROM (SELECT jsonb_object_agg(s ->> 'step', (s ->> 'rows')::bigint)
                                         FROM jsonb_array_elements(v_script.steps) AS s) THEN
        RAISE EXCEPTION 'cleanup script % was edited: its records or counts differ from the ones it was generated with', p_batch
            USING ERRCODE = 'data_exception',
                  DETAIL = 'Nothing was changed.',
                  HINT = coalesce(format('Generate it again: SELECT guardian.cleanup_script(%L::uuid);', v_script.alert_id),
                                  'Generate it again with guardian.cleanup_script().');
    END IF;
    v_batch := guardian._quarantine_open(p_batch);
    IF v_batch.id IS NOT NULL THEN
        IF v_batch.status = 'capturing' THEN
            RAISE EXCEPTION 'cleanup_begin already ran for batch % in this transaction', p_batch
                USING ERRCODE = 'object_in_use', HINT = 'Run the script once, as a whole.';
        END IF;
        RAISE EXCEPTION 'cleanup script % already ran: % by % (%)', p_batch,
                        to_char(v_batch.applied_at, 'YYYY-MM-DD HH24:MI:SS TZ'), v_batch.created_by,
                        CASE v_batch.status WHEN 'restored' THEN format('restored %s by %s', v_batch.restored_at, v_batch.restored_by)
                             ELSE 'its rows are in quarantine' END
            USING ERRCODE = 'unique_violation',
                  DETAIL = 'Nothing was changed.',
                  HINT = CASE v_batch.status WHEN 'applied' THEN format('To undo it: SELECT guardian.restore(%L);', p_batch)
                              ELSE coalesce(format('For what is contaminated now: SELECT guardian.cleanup_script(%L::uuid);', v_script.alert_id),
                                            'Generate a new script with guardian.cleanup_script().') END;
    END IF;

    -- A superuser would run the application's triggers, casts and operators with its rights.
    PERFORM guardian._refuse_app_code(
        ARRAY(SELECT DISTINCT (s ->> 'relid')::oid::regclass FROM jsonb_array_elements(v_script.steps) AS s),
        format('cleanup script %s', p_batch), p_runs => ARRAY['write', 'values']);
    -- Lock the rows and count them again: the data may have changed since generation. A
    -- script generated with p_include_restricted has restricted delete steps (a person asked
    -- for them); the registered steps, not the caller, say so.
    v_restricted := EXISTS (SELECT FROM jsonb_array_elements(v_script.steps) AS s
                             WHERE coalesce((s ->> 'restricted')::boolean, false));
    v_rows := ARRAY(SELECT r FROM guardian._cleanup_collect(p_roots, true, v_restricted) AS r);
    v_counts := guardian._cleanup_counts(p_roots, v_rows, v_restricted);
    SELECT string_agg(format('step %s (%s %s): expected %s, found %s', s ->> 'step', s ->> 'action', s ->> 'table',
                             s ->> 'rows', coalesce(v_counts ->> (s ->> 'step'), 'no such step')), '; '
                      ORDER BY (s ->> 'step')::integer)
      INTO v_diff
      FROM jsonb_array_elements(v_script.steps) AS s
     WHERE (v_counts ->> (s ->> 'step')) IS DISTINCT FROM (s ->> 'rows');
    IF v_diff IS NULL AND (SELECT count(*) FROM jsonb_object_keys(v_counts)) <> jsonb_array_length(v_script.steps) THEN
        v_diff := 'the foreign keys of these tables changed since the script was generated';
    END IF;
    IF v_diff IS NOT NULL THEN
        RAISE EXCEPTION 'the data changed since cleanup script % was generated: %', p_batch, v_diff
            USING ERRCODE = 'serialization_failure',
                  DETAIL = 'Nothing was changed: the script only removes exactly the rows it counted.',
                  HINT = coalesce(format('Generate it again: SELECT guardian.cleanup_script(%L::uuid);', v_script.alert_id),
                                  'Generate it again with guardian.cleanup_script().');
    END IF;

    -- Copy every row before it changes: the whole row, its key, and why.
    FOR v_step IN SELECT s FROM jsonb_array_elements(v_script.steps) AS s ORDER BY (s ->> 'step')::integer LOOP
        CONTINUE WHEN v_step ->> 'action' = 'blocked' OR (v_step ->> 'rows')::bigint = 0;
        EXECUTE format(
            'SELECT array_agg(ROW(%s, %L, %L, %s, %s, %L::text[], r.findings, t.tableoid, t.ctid)::guardian.quarantine_item)
               FROM unnest($1) AS r JOIN %s AS t ON t.tableoid = r.row_tableoid AND t.ctid = r.row_ctid
              WHERE r.step = %s',
            v_step ->> 'step', (v_step ->> 'relid')::oid::regclass, v_step ->> 'action',
            guardian._key_expr((v_step ->> 'relid')::oid::regclass, 't'),
            guardian._row_json_expr((v_step ->> 'relid')::oid::regclass, 't'),
            guardian._jsonb_texts(v_step -> 'columns'),
            (v_step ->> 'relid')::oid::regclass, v_step ->> 'step')
          INTO v_found USING v_rows;
        v_items := v_items || coalesce(v_found, '{}');
    END LOOP;
    v_total := guardian._quarantine_put(p_batch, v_items);
    RETURN format('captured %s row(s) into quarantine batch %s', v_total, p_batch);
END
$$;
COMMENT ON FUNCTION guardian.cleanup_begin(uuid, jsonb, jsonb) IS
    'First statement of a cleanup script: checks the script is the one registered, locks the rows it will change, checks they are exactly the rows it counted and copies them into guardian.quarantine. Raises (changing nothing) on any difference.';

CREATE FUNCTION guardian.cleanup_targets(p_batch uuid, p_step integer)
RETURNS TABLE (row_tableoid oid, row_ctid tid, row_key jsonb)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM guardian._response_caller();
    IF NOT EXISTS (SELECT FROM guardian.quarantine_batches AS b
                    WHERE b.id = p_batch AND b.status = 'capturing' AND b.captured_xid = txid_current()) THEN
        RAISE EXCEPTION 'cleanup batch % was not captured in this transaction', p_batch
            USING ERRCODE = 'invalid_transaction_state',
                  DETAIL = 'Each step deletes exactly the rows cleanup_begin() locked and copied in the same transaction.',
                  HINT = 'Run the whole script as it is (it starts with BEGIN and calls guardian.cleanup_begin() first), e.g. psql -f cleanup.sql.';
    END IF;
    RETURN QUERY SELECT q.row_tableoid, q.row_ctid, q.row_key FROM guardian.quarantine AS q
                  WHERE q.batch_id = p_batch AND q.step = p_step;
END
$$;
COMMENT ON FUNCTION guardian.cleanup_targets(uuid, integer) IS
    'The rows of one step of a cleanup, by where they are inside the transaction that captured them and by key: the steps of a script delete or update exactly these.';

CREATE FUNCTION guardian.cleanup_step(p_batch uuid, p_step integer, p_rows bigint)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_batch guardian.quarantine_batches;
    v_step  jsonb;
BEGIN
    PERFORM guardian._response_caller();
    SELECT * INTO v_batch FROM guardian.quarantine_batches AS b
     WHERE b.id = p_batch AND b.status = 'capturing' AND b.captured_xid = txid_current();
    IF NOT FOUND THEN
        RAISE EXCEPTION 'cleanup batch % was not captured in this transaction', p_batch
            USING ERRCODE = 'invalid_transaction_state',
                  HINT = 'Run the whole script as it is, e.g. psql -f cleanup.sql.';
    END IF;
    SELECT s INTO v_step FROM jsonb_array_elements(v_batch.steps) AS s WHERE (s ->> 'step')::integer = p_step;
    IF (v_step ->> 'rows')::bigint IS DISTINCT FROM p_rows THEN
        RAISE EXCEPTION 'step % of cleanup batch % (% %) changed % row(s), expected %', p_step, p_batch,
                        v_step ->> 'action', v_step ->> 'table', p_rows, coalesce(v_step ->> 'rows', 'no such step')
            USING ERRCODE = 'serialization_failure',
                  DETAIL = 'The transaction is aborted: nothing is changed.',
                  HINT = coalesce(format('Generate the script again: SELECT guardian.cleanup_script(%L::uuid);', v_batch.alert_id),
                                  'Generate the script again with guardian.cleanup_script().');
    END IF;
    UPDATE guardian.quarantine_batches AS b SET done = b.done || jsonb_build_object(p_step::text, p_rows)
     WHERE b.id = p_batch;
    RETURN p_rows;
END
$$;
COMMENT ON FUNCTION guardian.cleanup_step(uuid, integer, bigint) IS
    'Called by each statement of a cleanup script with the rows it changed: raises (aborting the transaction) unless that is exactly the count expected.';

-- An automatic cleanup runs in the committing session, whose role could call the bookkeeping
-- helpers with made-up rows. Before such a cleanup closes an alert, the guardian checks for
-- itself that none of the alert's records is still in its table: it reads the key columns
-- (watch() grants that), compares with built-in equality only, and declines where it cannot
-- do so without running the application's code (row-level security, keys of the
-- application's types) or may not read. NULL: verified gone; else why the alert stays open.
CREATE FUNCTION guardian._records_gone(p_alert uuid)
RETURNS text
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_rel  regclass;
    v_keys jsonb;
    v_cols text[];
    v_sql  text;
    v_left bigint;
BEGIN
    FOR v_rel, v_keys IN
        SELECT f.relid, jsonb_agg(DISTINCT f.record_key) FROM guardian.findings AS f
         WHERE f.alert_id = p_alert GROUP BY f.relid
    LOOP
        v_cols := (guardian._record_key(v_rel)).key_columns;
        IF v_cols IS NULL THEN
            RETURN format('%s has no key the guardian can look its records up by', v_rel);
        END IF;
        IF (SELECT c.relrowsecurity FROM pg_catalog.pg_class AS c WHERE c.oid = v_rel) THEN
            RETURN format('%s has row-level security, whose policies the guardian does not run', v_rel);
        END IF;
        IF EXISTS (SELECT FROM unnest(v_cols) AS k
                     JOIN pg_catalog.pg_attribute AS a ON a.attrelid = v_rel AND a.attname = k
                    WHERE a.atttypid >= 16384 OR NOT has_column_privilege(v_rel, a.attnum, 'SELECT')) THEN
            RETURN format('the guardian may not read the key of %s (GRANT SELECT (%s) ON %s TO guardian_owner)', v_rel,
                          array_to_string(v_cols, ', '), v_rel);
        END IF;
        SELECT format('SELECT pg_catalog.count(*) FROM %s AS t WHERE (%s) IN (SELECT %s FROM pg_catalog.jsonb_array_elements($1) AS x(k))',
                      v_rel, string_agg(format('t.%I', a.attname), ', ' ORDER BY u.o),
                      string_agg(format('(x.k OPERATOR(pg_catalog.->>) %L)::%s', a.attname, format_type(a.atttypid, NULL)), ', ' ORDER BY u.o))
          INTO v_sql
          FROM unnest(v_cols) WITH ORDINALITY AS u(k, o)
          JOIN pg_catalog.pg_attribute AS a ON a.attrelid = v_rel AND a.attname = u.k;
        BEGIN
            EXECUTE v_sql INTO v_left USING v_keys;
        EXCEPTION WHEN insufficient_privilege THEN
            RETURN format('the guardian may not read the key of %s: %s', v_rel, SQLERRM);
        END;
        IF v_left > 0 THEN
            RETURN format('%s of its records are still in %s', v_left, v_rel);
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION guardian._records_gone(uuid) IS
    'Internal: NULL when none of an alert''s records is left in its table (checked by the guardian itself), else why it cannot say so.';

CREATE FUNCTION guardian.cleanup_finish(p_batch uuid)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_batch   guardian.quarantine_batches;
    v_missing text;
    v_alert   record;
    v_tables  text;
    v_summary text;
    v_keep    numeric := guardian.param('retention.quarantine_days');
    v_caller  text;
    v_left    text;
BEGIN
    v_caller := guardian._response_caller();
    SELECT * INTO v_batch FROM guardian.quarantine_batches AS b
     WHERE b.id = p_batch AND b.status = 'capturing' AND b.captured_xid = txid_current();
    IF NOT FOUND THEN
        RAISE EXCEPTION 'cleanup batch % was not captured in this transaction', p_batch
            USING ERRCODE = 'invalid_transaction_state', HINT = 'Run the whole script as it is, e.g. psql -f cleanup.sql.';
    END IF;
    SELECT string_agg(format('step %s (%s %s)', s ->> 'step', s ->> 'action', s ->> 'table'), ', ') INTO v_missing
      FROM jsonb_array_elements(v_batch.steps) AS s
     WHERE s ->> 'action' <> 'blocked' AND (s ->> 'rows')::bigint > 0 AND NOT v_batch.done ? (s ->> 'step');
    IF v_missing IS NOT NULL THEN
        RAISE EXCEPTION 'cleanup batch % is incomplete: % did not run', p_batch, v_missing
            USING ERRCODE = 'invalid_transaction_state',
                  DETAIL = 'The transaction is aborted: nothing is changed.',
                  HINT = 'Run the whole script as it is.';
    END IF;
    UPDATE guardian.quarantine_batches AS b SET status = 'applied', applied_at = clock_timestamp()
     WHERE b.id = p_batch
    RETURNING * INTO v_batch;
    SELECT string_agg(format('%s %s', x.n, x.table_name), ', ' ORDER BY x.table_name) INTO v_tables
      FROM (SELECT q.table_name, count(*) AS n FROM guardian.quarantine AS q
             WHERE q.batch_id = p_batch GROUP BY q.table_name) AS x;

    -- Alerts all of whose records this batch removed are done.
    FOR v_alert IN
        SELECT f.alert_id,
               count(DISTINCT f.record_key) AS records,
               count(DISTINCT f.record_key) FILTER (WHERE EXISTS (
                   SELECT FROM guardian.quarantine AS q
                    WHERE q.batch_id = p_batch AND q.relid = f.relid AND q.findings IS NOT NULL
                      AND q.row_key = f.record_key)) AS removed
          FROM guardian.findings AS f
         WHERE f.alert_id IN (SELECT f2.alert_id FROM guardian.findings AS f2
                                JOIN guardian.quarantine AS q ON q.relid = f2.relid AND q.row_key = f2.record_key
                               WHERE q.batch_id = p_batch AND q.findings IS NOT NULL)
         GROUP BY f.alert_id
    LOOP
        UPDATE guardian.monitoring_alerts AS a
           SET metadata = a.metadata || jsonb_build_object('quarantine_batch', p_batch,
                              'quarantined_records', v_alert.removed,
                              'restore_command', format('SELECT guardian.restore(%L);', p_batch))
         WHERE a.id = v_alert.alert_id;
        -- A session that is no admin has its word checked against the table first.
        v_left := CASE WHEN v_alert.removed = v_alert.records AND v_caller <> 'admin'
                       THEN guardian._records_gone(v_alert.alert_id) END;
        IF v_left IS NOT NULL THEN
            UPDATE guardian.monitoring_alerts AS a
               SET metadata = a.metadata || jsonb_build_object('cleanup_unconfirmed', v_left)
             WHERE a.id = v_alert.alert_id;
        ELSIF v_alert.removed = v_alert.records THEN
            PERFORM guardian.resolve_alert(v_alert.alert_id,
                format('%s: %s record(s) and their dependent rows quarantined in batch %s; undo with SELECT guardian.restore(%L);',
                       CASE WHEN v_batch.automatic THEN 'auto-cleanup' ELSE 'cleanup' END, v_alert.removed, p_batch, p_batch),
                'cleaned');
        END IF;
    END LOOP;

    v_summary := format('%s quarantined %s row(s) (%s) in batch %s%s; restore them with SELECT guardian.restore(%L);',
                        CASE WHEN v_batch.automatic THEN 'auto-cleanup' ELSE format('cleanup by %s', v_batch.created_by) END,
                        v_batch.row_count, v_tables, p_batch,
                        CASE WHEN v_keep > 0 THEN format(', kept until %s', to_char(v_batch.applied_at + make_interval(days => v_keep::integer), 'YYYY-MM-DD'))
                             ELSE '' END,
                        p_batch);
    PERFORM guardian.raise_alert(
        'TEST_DATA_QUARANTINED', CASE WHEN v_batch.automatic THEN 'HIGH' ELSE 'INFO' END, v_summary,
        (SELECT q.table_name FROM guardian.quarantine AS q WHERE q.batch_id = p_batch AND q.findings IS NOT NULL LIMIT 1),
        NULL,
        jsonb_build_object('batch', p_batch, 'automatic', v_batch.automatic, 'rows', v_batch.row_count,
                           'tables', (SELECT jsonb_object_agg(x.table_name, x.n)
                                        FROM (SELECT q.table_name, count(*) AS n FROM guardian.quarantine AS q
                                               WHERE q.batch_id = p_batch GROUP BY q.table_name) AS x),
                           'alert_id', v_batch.alert_id,
                           'restore_command', format('SELECT guardian.restore(%L);', p_batch)),
        md5('TEST_DATA_QUARANTINED:' || p_batch));
    RETURN v_summary;
END
$$;
COMMENT ON FUNCTION guardian.cleanup_finish(uuid) IS
    'Last statement of a cleanup script: checks every step ran, marks the batch applied, resolves the alerts whose records are all quarantined and raises TEST_DATA_QUARANTINED (INFO; HIGH for an auto-cleanup) naming the restore command.';
