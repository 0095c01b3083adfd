-- Restore: a batch goes back as it was taken, parents before children (the reverse of the
-- cleanup's order; a foreign-key cycle in one statement), then the keys its SET NULL steps
-- cleared. It runs with the rights of the admin who asks, in one transaction: a table that is
-- gone or changed, or a row that is back already, refuses the whole restore and nothing moves.
-- Writing the rows back runs the application's code on those tables (triggers, the casts,
-- operators and domain checks of its types) with the admin's rights: a superuser is refused
-- when there is any (guardian._refuse_app_code), unless they ask for it by name.
CREATE FUNCTION guardian._quarantine_claim(p_batch uuid)
RETURNS guardian.quarantine_batches
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_batch guardian.quarantine_batches;
BEGIN
    IF guardian._response_caller() <> 'admin' THEN
        RAISE EXCEPTION 'only a guardian admin may restore quarantined rows' USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('guardian.batch:' || p_batch, 0));
    SELECT * INTO v_batch FROM guardian.quarantine_batches AS b WHERE b.id = p_batch FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no quarantine batch %', coalesce(p_batch::text, 'NULL')
            USING ERRCODE = 'no_data_found',
                  DETAIL = 'It never existed, or retention pruned it (see the QUARANTINE_PRUNED alerts).',
                  HINT = 'List batches with: SELECT batch_id, status, tables, created_at FROM guardian.quarantine_status ORDER BY created_at DESC;';
    END IF;
    IF v_batch.status = 'restored' THEN
        RAISE EXCEPTION 'quarantine batch % was already restored % by %', p_batch,
                        to_char(v_batch.restored_at, 'YYYY-MM-DD HH24:MI:SS TZ'), v_batch.restored_by
            USING ERRCODE = 'unique_violation',
                  DETAIL = 'Restoring it again would duplicate its rows; nothing was changed.',
                  HINT = 'Its rows are back in their tables; the batch stays in guardian.quarantine as a record.';
    END IF;
    IF v_batch.status <> 'applied' THEN
        RAISE EXCEPTION 'quarantine batch % was never applied', p_batch
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Its cleanup did not finish, so its rows never left their tables.';
    END IF;
    RETURN v_batch;
END
$$;
COMMENT ON FUNCTION guardian._quarantine_claim(uuid) IS
    'Internal: locks an applied batch for its restore; refuses unknown, unfinished and already restored batches.';

CREATE FUNCTION guardian._quarantine_restored(p_batch uuid, p_summary text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF guardian._response_caller() <> 'admin' THEN
        RAISE EXCEPTION 'only a guardian admin may restore quarantined rows' USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE guardian.quarantine_batches AS b
       SET status = 'restored', restored_at = clock_timestamp(), restored_by = guardian._actor()
     WHERE b.id = p_batch AND b.status = 'applied';
    PERFORM guardian.raise_alert('QUARANTINE_RESTORED', 'INFO', p_summary, NULL, NULL,
                                 jsonb_build_object('batch', p_batch, 'restored_by', guardian._actor()),
                                 md5('QUARANTINE_RESTORED:' || p_batch));
END
$$;
COMMENT ON FUNCTION guardian._quarantine_restored(uuid, text) IS 'Internal: marks a batch restored and says so in an alert.';

CREATE FUNCTION guardian._restore_value(p_table regclass, p_column text, p_shape jsonb)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- json columns come back from their exact text; everything else through the row type.
    SELECT CASE WHEN p_column = ANY (guardian._json_columns(p_table))
                THEN format('(q.row_data ->> %L)::%s', p_column,
                            (SELECT c ->> 'type' FROM jsonb_array_elements(p_shape) AS c WHERE c ->> 'name' = p_column))
                ELSE format('r.%I', p_column) END
$$;
COMMENT ON FUNCTION guardian._restore_value(regclass, text, jsonb) IS 'Internal: SQL for one quarantined value as it was.';

CREATE FUNCTION guardian._shape_difference(p_old jsonb, p_new jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT string_agg(d, '; ')
      FROM (SELECT format('column %s %s', o ->> 'name',
                          CASE WHEN n IS NULL THEN 'was dropped'
                               ELSE format('changed type from %s to %s', o ->> 'type', n ->> 'type') END) AS d
              FROM jsonb_array_elements(p_old) AS o
              LEFT JOIN jsonb_array_elements(p_new) AS n ON n ->> 'name' = o ->> 'name'
             WHERE n IS NULL OR n ->> 'type' <> o ->> 'type' OR n -> 'generated' <> o -> 'generated'
            UNION ALL
            SELECT format('column %s (%s) was added', n ->> 'name', n ->> 'type')
              FROM jsonb_array_elements(p_new) AS n
             WHERE NOT EXISTS (SELECT FROM jsonb_array_elements(p_old) AS o WHERE o ->> 'name' = n ->> 'name')) AS x
$$;
COMMENT ON FUNCTION guardian._shape_difference(jsonb, jsonb) IS 'Internal: how a table''s columns differ from what they were.';

CREATE FUNCTION guardian.restore(p_batch uuid, p_allowlist boolean, p_run_app_code boolean)
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
    v_batch    guardian.quarantine_batches := guardian._quarantine_claim(p_batch);
    v_steps    jsonb := v_batch.steps;
    v_step     jsonb;
    v_problems text[] := '{}';
    v_diff     text;
    v_group    integer;
    v_sql      text;
    v_counts   bigint[];
    v_expected bigint[];
    v_finding  record;
    v_allowed  integer := 0;
    v_detail   text;
    v_summary  text;
    v_app_code text;
BEGIN
    -- Every table must still be there, with the columns its rows were taken from.
    FOR v_step IN
        SELECT s FROM jsonb_array_elements(v_steps) AS s
         WHERE s ->> 'action' <> 'blocked' AND (s ->> 'rows')::bigint > 0
         ORDER BY (s ->> 'step')::integer
    LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_class AS c WHERE c.oid = (v_step ->> 'relid')::oid) THEN
            v_problems := v_problems || format('table %s no longer exists', v_step ->> 'table');
            CONTINUE;
        END IF;
        v_diff := guardian._shape_difference(v_step -> 'shape', guardian._table_shape((v_step ->> 'relid')::oid::regclass));
        IF v_diff IS NOT NULL THEN
            v_problems := v_problems || format('%s changed since its rows were quarantined: %s', v_step ->> 'table', v_diff);
        END IF;
        -- A restore never writes more than the role that captured the batch could (an
        -- auto-cleanup captures with the rights of the session that wrote the test data).
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles AS r WHERE r.rolname = v_batch.created_by) THEN
            v_problems := v_problems || format('it was captured by role %s, which no longer exists', v_batch.created_by);
        ELSIF NOT has_table_privilege(v_batch.created_by, (v_step ->> 'relid')::oid,
                                      CASE WHEN v_step ->> 'action' = 'delete' THEN 'INSERT' ELSE 'UPDATE' END) THEN
            v_problems := v_problems || format('it was captured by role %s, which may not %s %s: restoring it would write what that role could not',
                                               v_batch.created_by,
                                               CASE WHEN v_step ->> 'action' = 'delete' THEN 'INSERT into' ELSE 'UPDATE' END,
                                               v_step ->> 'table');
        END IF;
    END LOOP;
    IF cardinality(v_problems) > 0 THEN
        RAISE EXCEPTION 'cannot restore quarantine batch %: %', p_batch, array_to_string(ARRAY(SELECT DISTINCT p FROM unnest(v_problems) AS p), '; ')
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'Nothing was restored; the rows stay in guardian.quarantine.',
                  HINT = format('Make the tables match again, or read the rows and restore them by hand: SELECT table_name, row_data FROM guardian.quarantine WHERE batch_id = %L ORDER BY step DESC;', p_batch);
    END IF;

    -- The application's code on these tables would run with the caller's rights.
    IF p_run_app_code THEN
        SELECT string_agg(format('%s: %s', e.relid, e.code), '; ' ORDER BY e.relid::text, e.code)
          INTO v_app_code
          FROM guardian._app_code_exposure(ARRAY(
                   SELECT DISTINCT (s ->> 'relid')::oid::regclass FROM jsonb_array_elements(v_steps) AS s
                    WHERE s ->> 'action' <> 'blocked' AND (s ->> 'rows')::bigint > 0)) AS e
         WHERE e.kind <> 'row_security'
           AND (SELECT r.rolsuper FROM pg_catalog.pg_roles AS r WHERE r.rolname = CURRENT_USER);
    ELSE
        PERFORM guardian._refuse_app_code(
            ARRAY(SELECT DISTINCT (s ->> 'relid')::oid::regclass FROM jsonb_array_elements(v_steps) AS s
                   WHERE s ->> 'action' <> 'blocked' AND (s ->> 'rows')::bigint > 0),
            format('to restore quarantine batch %s', p_batch),
            format('Nothing was restored. Restore as a guardian admin who is not a superuser (that code then runs with that role''s rights), or, if that code may run as a superuser: SELECT guardian.restore(%L, %s, p_run_app_code => true);',
                   p_batch, p_allowlist::text));
    END IF;

    -- The guardian removed these rows for what it found in them; told they are real, it must
    -- not flag (or quarantine) them again: the findings become allowlist entries.
    IF p_allowlist THEN
        FOR v_finding IN
            SELECT DISTINCT q.relid, f ->> 'rule' AS rule,
                   CASE WHEN strpos(f ->> 'column', '+') > 0 THEN NULL ELSE f ->> 'column' END AS column_name,
                   CASE WHEN strpos(f ->> 'column', '+') > 0
                        THEN (SELECT string_agg(q.row_data ->> c, ' ' ORDER BY o)
                                FROM unnest(string_to_array(f ->> 'column', '+')) WITH ORDINALITY AS u(c, o))
                        ELSE q.row_data ->> (f ->> 'column') END AS value
              FROM guardian.quarantine AS q, jsonb_array_elements(q.findings) AS f
             WHERE q.batch_id = p_batch AND q.findings IS NOT NULL
        LOOP
            -- Only values the rule really matches: the batch's own account of why is not trusted.
            CONTINUE WHEN v_finding.value IS NULL
                       OR NOT EXISTS (SELECT FROM guardian.rules AS r
                                       WHERE r.name = v_finding.rule
                                         AND guardian._rule_matches(r.match_type, r.matcher, r.terms,
                                                                    guardian._normalize(v_finding.value)))
                       OR EXISTS (SELECT FROM guardian.allowlist AS a
                                   WHERE a.rule = v_finding.rule AND a.relid = v_finding.relid
                                     AND a.column_name IS NOT DISTINCT FROM v_finding.column_name
                                     AND a.value = guardian._normalize(v_finding.value)
                                     AND (a.expires_at IS NULL OR a.expires_at > now()));
            PERFORM guardian.allow(v_finding.rule, v_finding.relid, v_finding.column_name, v_finding.value,
                                   format('restored from quarantine batch %s by %s', p_batch, SESSION_USER));
            v_allowed := v_allowed + 1;
        END LOOP;
    END IF;

    -- Rows back, parents first; a foreign-key cycle in one statement.
    FOR v_group IN
        SELECT DISTINCT (s ->> 'group')::integer FROM jsonb_array_elements(v_steps) AS s
         WHERE s ->> 'action' = 'delete' AND (s ->> 'rows')::bigint > 0
         ORDER BY 1 DESC
    LOOP
        SELECT 'WITH ' || string_agg(format(
                   E'restored_%s AS (\n    INSERT INTO %s (%s) OVERRIDING SYSTEM VALUE\n    SELECT %s\n      FROM guardian.quarantine AS q, pg_catalog.jsonb_populate_record(NULL::%s, q.row_data) AS r\n     WHERE q.batch_id = $1 AND q.step = %s\n     ORDER BY q.seq\n    RETURNING 1)',
                   s ->> 'step', (s ->> 'relid')::oid::regclass,
                   (SELECT string_agg(format('%I', c ->> 'name'), ', ' ORDER BY o)
                      FROM jsonb_array_elements(s -> 'shape') WITH ORDINALITY AS x(c, o) WHERE NOT (c ->> 'generated')::boolean),
                   (SELECT string_agg(guardian._restore_value((s ->> 'relid')::oid::regclass, c ->> 'name', s -> 'shape'), ', ' ORDER BY o)
                      FROM jsonb_array_elements(s -> 'shape') WITH ORDINALITY AS x(c, o) WHERE NOT (c ->> 'generated')::boolean),
                   (s ->> 'relid')::oid::regclass, s ->> 'step'), E',\n' ORDER BY (s ->> 'step')::integer)
               || E'\nSELECT ARRAY[' || string_agg(format('(SELECT pg_catalog.count(*) FROM restored_%s)', s ->> 'step'), ', '
                                                   ORDER BY (s ->> 'step')::integer) || ']',
               array_agg((s ->> 'rows')::bigint ORDER BY (s ->> 'step')::integer)
          INTO v_sql, v_expected
          FROM jsonb_array_elements(v_steps) AS s
         WHERE (s ->> 'group')::integer = v_group AND s ->> 'action' = 'delete' AND (s ->> 'rows')::bigint > 0;
        BEGIN
            EXECUTE v_sql INTO v_counts USING p_batch;
        EXCEPTION WHEN unique_violation OR exclusion_violation THEN
            GET STACKED DIAGNOSTICS v_detail = PG_EXCEPTION_DETAIL;
            RAISE EXCEPTION 'cannot restore quarantine batch %: a row it holds is already back in its table (%)', p_batch, SQLERRM
                USING ERRCODE = 'unique_violation',
                      DETAIL = coalesce(v_detail || ' ', '') || 'Nothing was restored; the rows stay in guardian.quarantine.',
                      HINT = 'Someone re-created the row since the cleanup: remove the new copy, or keep it and leave the batch in quarantine.';
        END;
        IF v_counts IS DISTINCT FROM v_expected THEN
            RAISE EXCEPTION 'cannot restore quarantine batch %: restored % row(s) where % were quarantined', p_batch, v_counts, v_expected
                USING ERRCODE = 'data_exception', DETAIL = 'Nothing was restored (a trigger or rule may have dropped rows).';
        END IF;
    END LOOP;

    -- Then the keys the SET NULL / SET DEFAULT steps cleared.
    FOR v_step IN
        SELECT s FROM jsonb_array_elements(v_steps) AS s
         WHERE s ->> 'action' IN ('set null', 'set default') AND (s ->> 'rows')::bigint > 0
         ORDER BY (s ->> 'step')::integer
    LOOP
        v_sql := format(
            E'WITH fixed AS (\n    UPDATE %s AS t SET %s\n      FROM guardian.quarantine AS q, pg_catalog.jsonb_populate_record(NULL::%s, q.row_data) AS r\n     WHERE q.batch_id = $1 AND q.step = %s AND %s\n    RETURNING 1)\nSELECT ARRAY[pg_catalog.count(*)] FROM fixed',
            (v_step ->> 'relid')::oid::regclass,
            (SELECT string_agg(format('%I = %s', c, guardian._restore_value((v_step ->> 'relid')::oid::regclass, c, v_step -> 'shape')), ', ')
               FROM jsonb_array_elements_text(v_step -> 'columns') AS c),
            (v_step ->> 'relid')::oid::regclass, v_step ->> 'step',
            CASE WHEN jsonb_typeof(v_step -> 'key_columns') = 'array'
                 THEN format('(%s) = (%s)',
                             guardian._column_list('t', guardian._jsonb_texts(v_step -> 'key_columns')),
                             guardian._column_list('r', guardian._jsonb_texts(v_step -> 'key_columns')))
                 ELSE (SELECT string_agg(format('t.%I::text IS NOT DISTINCT FROM %s::text', c ->> 'name',
                                                guardian._restore_value((v_step ->> 'relid')::oid::regclass, c ->> 'name', v_step -> 'shape')),
                                         ' AND ')
                         FROM jsonb_array_elements(v_step -> 'shape') AS c
                        WHERE NOT (v_step -> 'columns') ? (c ->> 'name')) END);
        EXECUTE v_sql INTO v_counts USING p_batch;
        IF v_counts[1] <> (v_step ->> 'rows')::bigint THEN
            RAISE EXCEPTION 'cannot restore quarantine batch %: % of the % row(s) of % whose % the cleanup cleared are gone', p_batch,
                            (v_step ->> 'rows')::bigint - v_counts[1], v_step ->> 'rows', v_step ->> 'table',
                            (SELECT string_agg(c, ', ') FROM jsonb_array_elements_text(v_step -> 'columns') AS c)
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = 'Nothing was restored; the rows stay in guardian.quarantine.',
                      HINT = 'Restore those rows first (they were deleted after the cleanup), or restore by hand from guardian.quarantine.';
        END IF;
    END LOOP;

    v_summary := format('restored quarantine batch %s: %s row(s) (%s) by %s%s', p_batch, v_batch.row_count,
                        (SELECT string_agg(format('%s %s', x.n, x.table_name), ', ' ORDER BY x.table_name)
                           FROM (SELECT q.table_name, count(*) AS n FROM guardian.quarantine AS q
                                  WHERE q.batch_id = p_batch GROUP BY q.table_name) AS x),
                        SESSION_USER,
                        CASE WHEN v_allowed > 0 THEN format('; %s allowlist entr%s so that they are not flagged again',
                                                           v_allowed, CASE WHEN v_allowed = 1 THEN 'y' ELSE 'ies' END)
                             ELSE '' END)
                 || CASE WHEN v_app_code IS NOT NULL
                         THEN format('; as asked (p_run_app_code), application code ran as superuser %s: %s', CURRENT_USER, v_app_code)
                         ELSE '' END;
    PERFORM guardian._quarantine_restored(p_batch, v_summary);
    -- Put back and allowlisted: the rows were real, so the alert was a false positive.
    IF p_allowlist AND v_batch.alert_id IS NOT NULL THEN
        PERFORM guardian.resolve_alert(v_batch.alert_id, NULL, 'false_positive');
    END IF;
    RETURN v_summary;
END
$$;
COMMENT ON FUNCTION guardian.restore(uuid, boolean, boolean) IS
    'Put a quarantine batch back, identical to what was removed (parents first, then the keys SET NULL cleared), in one transaction with the caller''s rights. Refuses a second restore, a dropped or changed table, or a row that is back already, changing nothing; refuses a superuser when writing the rows would run application code (triggers, casts, operators, domain checks: guardian._app_code_exposure) unless p_run_app_code, which the summary and alert then record. p_allowlist allowlists the values that got the rows removed, so they are not flagged again.';

CREATE FUNCTION guardian.restore(p_batch uuid, p_allowlist boolean DEFAULT true)
RETURNS text
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT guardian.restore(p_batch, p_allowlist, false)
$$;
COMMENT ON FUNCTION guardian.restore(uuid, boolean) IS
    'Put a quarantine batch back, identical to what was removed (parents first, then the keys SET NULL cleared), in one transaction with the caller''s rights. Refuses a second restore, a dropped or changed table, a row that is back already, or a superuser when writing the rows would run application code, changing nothing. p_allowlist (default) allowlists the values that got the rows removed, so they are not flagged again.';

CREATE FUNCTION guardian.prune_quarantine()
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_days    numeric := guardian.param('retention.quarantine_days');
    v_batches uuid[];
    v_rows    bigint;
    v_scripts bigint;
    v_summary text;
BEGIN
    IF v_days = 0 THEN
        RETURN 'quarantine kept until deleted by hand (retention.quarantine_days = 0)';
    END IF;
    WITH gone AS (
        DELETE FROM guardian.quarantine_batches AS b
         WHERE (b.status IN ('applied', 'restored')
                AND coalesce(b.restored_at, b.applied_at) < now() - make_interval(days => v_days::integer))
            -- A capture that never finished changed nothing.
            OR (b.status = 'capturing' AND b.created_at < now() - interval '1 day')
        RETURNING b.id, b.row_count, b.status)
    SELECT array_agg(g.id ORDER BY g.id) FILTER (WHERE g.status <> 'capturing'),
           coalesce(sum(g.row_count) FILTER (WHERE g.status <> 'capturing'), 0)
      INTO v_batches, v_rows
      FROM gone AS g;
    DELETE FROM guardian.cleanup_scripts AS s
     WHERE s.created_at < now() - make_interval(days => v_days::integer)
       AND NOT EXISTS (SELECT FROM guardian.quarantine_batches AS b WHERE b.id = s.batch_id);
    GET DIAGNOSTICS v_scripts = ROW_COUNT;
    v_summary := format('pruned %s quarantine batch(es) (%s row(s)) and %s unused cleanup script(s) older than %s days',
                        coalesce(cardinality(v_batches), 0), v_rows, v_scripts, v_days);
    IF cardinality(v_batches) > 0 THEN
        RAISE LOG 'pg_guardian quarantine retention: %: %', v_summary, v_batches;
        PERFORM guardian.raise_alert('QUARANTINE_PRUNED', 'INFO', 'guardian retention ' || v_summary, NULL, NULL,
                                     jsonb_build_object('batches', to_jsonb(v_batches), 'rows', v_rows,
                                                        'retention_days', v_days, 'at', now()),
                                     md5('QUARANTINE_PRUNED:' || now()::text));
    END IF;
    RETURN v_summary;
END
$$;
COMMENT ON FUNCTION guardian.prune_quarantine() IS
    'Delete quarantine batches applied or restored more than retention.quarantine_days ago (0: never), and scripts never run; what went is named in an INFO QUARANTINE_PRUNED alert and the server log.';

INSERT INTO guardian.jobs (name, schedule, command, description, max_lag, builtin) VALUES
    ('quarantine_retention', '37 3 * * *', 'SELECT guardian.prune_quarantine()',
     'Prune quarantine batches past retention.quarantine_days, naming what went in a QUARANTINE_PRUNED alert', '2 days', true);
