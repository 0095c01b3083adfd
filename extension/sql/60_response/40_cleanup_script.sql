-- Cleanup scripts. A script names the contaminated records it removes (their keys, as the
-- findings recorded them) and the number of rows each step expects; everything else is
-- recomputed from the catalog when it runs, so a script can only remove what it says or
-- abort. The text is rendered by the guardian alone (from catalog names, JSON literals and
-- numbers, all quoted), never from text a caller supplies.
CREATE FUNCTION guardian._comment(p_text text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- Text inside a -- comment must not end the line: a value with a newline would become SQL.
    SELECT regexp_replace(coalesce(p_text, ''), '[[:cntrl:]]+', ' ', 'g')
$$;
COMMENT ON FUNCTION guardian._comment(text) IS 'Internal: text made safe for a single-line SQL comment.';

-- Marks the transaction in which the guardian runs an auto-response for a session that is no
-- admin: only then may that session use the cleanup bookkeeping helpers.
CREATE UNLOGGED TABLE guardian.response_runs (
    backend_pid integer NOT NULL,
    xid         bigint NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    CONSTRAINT response_runs_pkey PRIMARY KEY (backend_pid, xid)
);
COMMENT ON TABLE guardian.response_runs IS
    'Internal: auto-responses in progress (a row lives only inside the transaction that runs one).';

CREATE FUNCTION guardian._response_caller()
RETURNS text
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- SECURITY DEFINER hides the caller's role: the session's login role decides.
    IF (SELECT r.rolsuper FROM pg_catalog.pg_roles AS r WHERE r.rolname = SESSION_USER)
       OR pg_has_role(SESSION_USER, 'guardian_admin', 'MEMBER') THEN
        RETURN 'admin';
    END IF;
    IF EXISTS (SELECT FROM guardian.response_runs AS m
                WHERE m.backend_pid = pg_backend_pid() AND m.xid = txid_current()) THEN
        RETURN 'auto';
    END IF;
    RAISE EXCEPTION 'role % may not run guardian cleanups', SESSION_USER
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Cleanups and restores are for guardian admins: GRANT guardian_admin TO ' || quote_ident(SESSION_USER) || ';';
END
$$;
COMMENT ON FUNCTION guardian._response_caller() IS
    'Internal: admin (a superuser or guardian_admin member), auto (inside the guardian''s own auto-response of this transaction), else an error.';

CREATE FUNCTION guardian._alert_roots(p_alert uuid)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_alert guardian.monitoring_alerts;
    v_relid regclass;
    v_roots jsonb;
BEGIN
    SELECT * INTO v_alert FROM guardian.monitoring_alerts AS a WHERE a.id = p_alert;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no alert with id %', coalesce(p_alert::text, 'NULL')
            USING ERRCODE = 'no_data_found',
                  HINT = 'List contamination alerts with: SELECT id, message FROM guardian.open_alerts WHERE type = ''TEST_DATA_CONTAMINATION'';';
    END IF;
    IF v_alert.type <> 'TEST_DATA_CONTAMINATION' THEN
        RAISE EXCEPTION 'alert % is a % alert: cleanup scripts are for TEST_DATA_CONTAMINATION alerts', p_alert, v_alert.type
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'For a table, generate one from a scan: SELECT guardian.cleanup_script(''schema.table''::regclass);';
    END IF;
    SELECT f.relid INTO v_relid FROM guardian.findings AS f WHERE f.alert_id = p_alert LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'alert % has no recorded findings', p_alert
            USING ERRCODE = 'no_data_found',
                  DETAIL = 'Only warn-mode contamination alerts and recorded scans keep the records they found.',
                  HINT = format('Scan the table to find them: SELECT guardian.cleanup_script(%L::regclass);', v_alert.table_name);
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_class AS c WHERE c.oid = v_relid) THEN
        RAISE EXCEPTION 'table % of alert % no longer exists', coalesce(v_alert.table_name, v_relid::oid::text), p_alert
            USING ERRCODE = 'undefined_table',
                  DETAIL = 'It was dropped after the alert was raised, and its rows with it; there is nothing to clean up.',
                  HINT = format('Close the alert: SELECT guardian.resolve_alert(%L, ''table dropped'');', p_alert);
    END IF;
    SELECT jsonb_object_agg(x.relid::text, x.records) INTO v_roots
      FROM (SELECT r.relid, jsonb_agg(jsonb_build_object('key', r.record_key, 'findings', r.findings)
                                      ORDER BY r.record_key::text) AS records
              -- With every rule that matched the record, whichever alert reported it.
              FROM (SELECT f.relid, f.record_key,
                           jsonb_agg(DISTINCT jsonb_build_object('rule', f.rule, 'column', f.column_name)) AS findings
                      FROM guardian.findings AS f
                     WHERE f.record_key IS NOT NULL
                       AND (f.relid, f.record_key) IN (SELECT a.relid, a.record_key FROM guardian.findings AS a
                                                        WHERE a.alert_id = p_alert)
                     GROUP BY f.relid, f.record_key) AS r
             GROUP BY r.relid) AS x;
    RETURN v_roots;
END
$$;
COMMENT ON FUNCTION guardian._alert_roots(uuid) IS
    'Internal: the contaminated records of an alert with the rules that matched them, from guardian.findings.';

CREATE FUNCTION guardian._table_roots(p_table regclass, p_record_ids text[] DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_watch   guardian.watched_tables;
    v_found   jsonb;
    v_missing text[];
    v_type    text;
    v_roots   jsonb;
BEGIN
    IF p_table IS NULL THEN
        RAISE EXCEPTION 'table must not be NULL'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'e.g. SELECT guardian.cleanup_script(''dental.clinics''::regclass);';
    END IF;
    -- What a scan finds now, one entry per record with the rules that matched it.
    SELECT jsonb_object_agg(s.record_id, s.findings) INTO v_found
      FROM (SELECT f.record_id, jsonb_agg(DISTINCT jsonb_build_object('rule', f.rule, 'column', f.column_name)) AS findings
              FROM guardian.scan(p_table) AS f
             WHERE p_record_ids IS NULL OR f.record_id = ANY (p_record_ids)
             GROUP BY f.record_id) AS s;
    v_missing := ARRAY(SELECT i FROM unnest(p_record_ids) AS i WHERE NOT coalesce(v_found ? i, false) ORDER BY 1);
    IF cardinality(v_missing) > 0 THEN
        RAISE EXCEPTION '% of the records given are not test data in % now: %', cardinality(v_missing), p_table,
                        array_to_string(v_missing[1:10], ', ')
            USING ERRCODE = 'no_data_found',
                  DETAIL = 'A cleanup script only removes records that a scan finds contaminated (gone, changed or allowlisted records are not).',
                  HINT = format('See what a scan finds: SELECT * FROM guardian.scan(%L);', p_table);
    END IF;
    IF v_found IS NULL THEN
        RETURN NULL;
    END IF;
    v_watch := guardian._scan_plan(p_table);
    -- Records by key: typed and indexed for a one-column key, else by recomputing record ids.
    IF cardinality(v_watch.key_columns) = 1 THEN
        SELECT format_type(a.atttypid, a.atttypmod) INTO v_type
          FROM pg_catalog.pg_attribute AS a WHERE a.attrelid = p_table AND a.attname = v_watch.key_columns[1];
        EXECUTE format(
            'SELECT jsonb_agg(jsonb_build_object(''key'', jsonb_build_object(%L, t.%I), ''findings'', $1 -> ((%s) ->> %L))
                              ORDER BY t.%I)
               FROM %s AS t WHERE t.%I = ANY ($2::%s[])',
            v_watch.key_columns[1], v_watch.key_columns[1], guardian._scan_row_json(p_table, 't'), v_watch.key_columns[1],
            v_watch.key_columns[1], p_table, v_watch.key_columns[1], v_type)
          INTO v_roots USING v_found, ARRAY(SELECT jsonb_object_keys(v_found));
    ELSE
        EXECUTE format(
            'SELECT jsonb_agg(jsonb_build_object(''key'', r.record_key, ''findings'', $1 -> r.record_id) ORDER BY r.record_id)
               FROM %s AS t, LATERAL guardian._record_ref($2, %s) AS r
              WHERE $1 ? r.record_id', p_table, guardian._scan_row_json(p_table, 't'))
          INTO v_roots USING v_found, v_watch;
    END IF;
    RETURN jsonb_build_object(p_table::text, coalesce(v_roots, '[]'));
END
$$;
COMMENT ON FUNCTION guardian._table_roots(regclass, text[]) IS
    'Internal: the records of a table a scan finds contaminated now (optionally only these record ids), with the rules that matched them.';

CREATE FUNCTION guardian._cleanup_counts(p_roots jsonb, p_rows guardian.cleanup_row[],
                                         p_include_restricted boolean DEFAULT false)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- Rows per step, every step present (0 when none), keyed by step number.
    SELECT jsonb_object_agg(s.step::text, (SELECT count(*) FROM unnest(p_rows) AS r WHERE r.step = s.step))
      FROM guardian._cleanup_steps(guardian._cleanup_roots(p_roots), p_include_restricted) AS s
$$;
COMMENT ON FUNCTION guardian._cleanup_counts(jsonb, guardian.cleanup_row[], boolean) IS 'Internal: rows per cleanup step.';

CREATE FUNCTION guardian._plan_of(p_roots jsonb, p_include_restricted boolean DEFAULT false)
RETURNS TABLE (step integer, table_name text, action text, rows bigint, via text, detail text, warning text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_rows  guardian.cleanup_row[];
    v_given integer;
    v_found integer;
BEGIN
    IF p_roots IS NULL THEN
        RETURN;
    END IF;
    PERFORM guardian._refuse_app_code(ARRAY(SELECT guardian._regclass_of(k) FROM jsonb_object_keys(p_roots) AS k),
                                      'a cleanup plan', p_runs => ARRAY['values']);
    v_rows := ARRAY(SELECT r FROM guardian._cleanup_collect(p_roots, false, p_include_restricted) AS r);
    v_given := (SELECT count(*) FROM jsonb_each(p_roots) AS t, jsonb_array_elements(t.value));
    v_found := (SELECT count(*) FROM unnest(v_rows) AS r WHERE r.root);
    RETURN QUERY
    SELECT s.step, s.relid::text, CASE WHEN s.restricted THEN 'delete_restricted' ELSE s.action END, c.n,
           CASE WHEN s.via = ARRAY['contaminated'] THEN 'the contaminated records'
                WHEN s.restricted
                THEN (SELECT string_agg(format('%s (ON DELETE %s)', u.v,
                                               CASE k.confdeltype WHEN 'c' THEN 'CASCADE' WHEN 'r' THEN 'RESTRICT'
                                                                  ELSE 'NO ACTION' END), ', ' ORDER BY u.o)
                        FROM unnest(s.via) WITH ORDINALITY AS u(v, o)
                        LEFT JOIN pg_catalog.pg_constraint AS k
                          ON k.conrelid = s.relid AND k.conname = u.v AND k.contype = 'f')
                ELSE array_to_string(s.via, ', ') || CASE s.action WHEN 'delete' THEN ' (ON DELETE CASCADE)'
                                                                   WHEN 'blocked' THEN ' (ON DELETE RESTRICT / NO ACTION)'
                                                                   ELSE format(' (ON DELETE %s)', upper(s.action)) END
           END,
           concat_ws('; ',
               CASE WHEN s.action IN ('set null', 'set default') THEN format('%s %s', array_to_string(s.columns, ', '),
                        CASE s.action WHEN 'set null' THEN 'set to NULL' ELSE 'set to its default' END) END,
               CASE WHEN s.action = 'blocked' AND c.n > 0
                    THEN format('these rows reference removed rows of %s and are not removed themselves', s.parent) END,
               (SELECT 'e.g. ' || string_agg(x.row_key::text, ', ')
                  FROM (SELECT r.row_key FROM unnest(v_rows) AS r WHERE r.step = s.step ORDER BY r.row_key::text LIMIT 3) AS x),
               CASE WHEN s.via @> ARRAY['contaminated'] AND v_found < v_given
                    THEN format('%s of the %s contaminated records are already gone', v_given - v_found, v_given) END),
           CASE WHEN s.restricted AND c.n > 0
                THEN format('%s row(s) of %s were protected by ON DELETE RESTRICT / NO ACTION (or depend on such rows) and are removed because p_include_restricted (--include-restricted) was given: make sure they are test data too (they are quarantined, and guardian.restore() brings them back)',
                            c.n, s.relid)
                WHEN s.action = 'blocked' AND c.n > 0
                THEN 'these rows block the cleanup; if they are test data too, include them with p_include_restricted => true (CLI: --include-restricted)'
           END
      FROM guardian._cleanup_steps(guardian._cleanup_roots(p_roots), p_include_restricted) AS s
     CROSS JOIN LATERAL (SELECT count(*) AS n FROM unnest(v_rows) AS r WHERE r.step = s.step) AS c
     ORDER BY s.step;
END
$$;
COMMENT ON FUNCTION guardian._plan_of(jsonb, boolean) IS 'Internal: the dry run of a cleanup of these contaminated records.';

CREATE FUNCTION guardian.cleanup_plan(p_alert uuid, p_include_restricted boolean DEFAULT false)
RETURNS TABLE (step integer, table_name text, action text, rows bigint, via text, detail text, warning text)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM guardian._plan_of(guardian._alert_roots(p_alert), p_include_restricted)
$$;
COMMENT ON FUNCTION guardian.cleanup_plan(uuid, boolean) IS
    'Dry run of the cleanup of an alert: each step (SET NULL updates, deletes in foreign-key order, RESTRICT checks) with the rows it would touch; changes nothing. Rows of a blocked step stop the cleanup; with p_include_restricted they are removed too, in steps of action delete_restricted that carry a warning.';

CREATE FUNCTION guardian.cleanup_plan(p_table regclass, p_record_ids text[] DEFAULT NULL,
                                      p_include_restricted boolean DEFAULT false)
RETURNS TABLE (step integer, table_name text, action text, rows bigint, via text, detail text, warning text)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM guardian._plan_of(guardian._table_roots(p_table, p_record_ids), p_include_restricted)
$$;
COMMENT ON FUNCTION guardian.cleanup_plan(regclass, text[], boolean) IS
    'Dry run of the cleanup of the contaminated records a scan finds in a table now (or only of these record ids, as a scan returned them); changes nothing. p_include_restricted as for guardian.cleanup_plan(alert).';

-- The statement of one group of steps, exactly as a script and an auto-cleanup run it.
-- Deletes name rows by where they are (locked since the capture); updates by key where the
-- table has one, since an earlier SET NULL step on the same row moves it.
CREATE FUNCTION guardian._cleanup_group_sql(p_batch uuid, p_steps jsonb, p_group integer)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'WITH ' || string_agg(
               format(E'step_%s AS (\n    %s %s AS t\n    %s\n     WHERE %s\n    RETURNING 1)',
                      s ->> 'step',
                      CASE WHEN s ->> 'action' = 'delete' THEN 'DELETE FROM' ELSE 'UPDATE' END,
                      s ->> 'table',
                      CASE WHEN s ->> 'action' = 'delete'
                           THEN format('USING guardian.cleanup_targets(%L::uuid, %s) AS q', p_batch, s ->> 'step')
                           ELSE format(E'   SET %s\n      FROM guardian.cleanup_targets(%L::uuid, %s) AS q',
                                       (SELECT string_agg(format('%I = %s', c, CASE WHEN s ->> 'action' = 'set null' THEN 'NULL' ELSE 'DEFAULT' END), ', ')
                                          FROM jsonb_array_elements_text(s -> 'columns') AS c),
                                       p_batch, s ->> 'step') END,
                      CASE WHEN s ->> 'action' = 'delete' OR k.key_columns IS NULL
                           THEN 't.tableoid = q.row_tableoid AND t.ctid = q.row_ctid'
                           ELSE format('(%s) = (SELECT %s FROM pg_catalog.jsonb_populate_record(NULL::%s, q.row_key) AS k)',
                                       guardian._column_list('t', k.key_columns), guardian._column_list('k', k.key_columns),
                                       s ->> 'table') END),
               E',\n' ORDER BY (s ->> 'step')::integer)
           || E'\nSELECT ' || string_agg(format('guardian.cleanup_step(%L::uuid, %s, (SELECT pg_catalog.count(*) FROM step_%s))',
                                                p_batch, s ->> 'step', s ->> 'step'),
                                         E',\n       ' ORDER BY (s ->> 'step')::integer) || ';'
      FROM jsonb_array_elements(p_steps) AS s
      LEFT JOIN LATERAL guardian._record_key((s ->> 'relid')::oid::regclass) AS k ON true
     WHERE (s ->> 'group')::integer = p_group
$$;
COMMENT ON FUNCTION guardian._cleanup_group_sql(uuid, jsonb, integer) IS
    'Internal: the statement that runs one group of cleanup steps (one table, or the tables of a foreign-key cycle) and reports their row counts.';

CREATE FUNCTION guardian._cleanup_step_list(p_roots jsonb, p_counts jsonb, p_include_restricted boolean DEFAULT false)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_agg(jsonb_build_object(
               'step', s.step, 'group', s.stmt_group, 'table', s.relid::text, 'relid', s.relid::oid,
               'action', s.action, 'columns', to_jsonb(s.columns), 'via', to_jsonb(s.via),
               'parent', s.parent::text, 'restricted', s.restricted,
               'rows', coalesce((p_counts ->> s.step::text)::bigint, 0))
           ORDER BY s.step)
      FROM guardian._cleanup_steps(guardian._cleanup_roots(p_roots), p_include_restricted) AS s
$$;
COMMENT ON FUNCTION guardian._cleanup_step_list(jsonb, jsonb, boolean) IS
    'Internal: the steps of a cleanup (from the catalog) with the row count each expects; restricted marks the deletes of rows protected by RESTRICT / NO ACTION (p_include_restricted).';

CREATE FUNCTION guardian._render_cleanup_script(
    p_batch uuid, p_alert guardian.monitoring_alerts, p_roots jsonb, p_steps jsonb, p_automatic boolean)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_lines  text[] := '{}';
    v_step   jsonb;
    v_group  integer;
    v_roots  integer := (SELECT count(*) FROM jsonb_each(p_roots) AS t, jsonb_array_elements(t.value));
    v_total  bigint := (SELECT sum((s ->> 'rows')::bigint) FROM jsonb_array_elements(p_steps) AS s
                         WHERE s ->> 'action' <> 'blocked');
    v_restricted boolean := EXISTS (SELECT FROM jsonb_array_elements(p_steps) AS s
                                     WHERE coalesce((s ->> 'restricted')::boolean, false));
    v_option text := CASE WHEN v_restricted THEN ', p_include_restricted => true' ELSE '' END;
    v_regen  text := CASE WHEN p_alert.id IS NOT NULL THEN format('SELECT guardian.cleanup_script(%L::uuid%s);', p_alert.id, v_option)
                          ELSE format('SELECT guardian.cleanup_script(%L::regclass%s);',
                                      (SELECT k FROM jsonb_object_keys(p_roots) AS k LIMIT 1), v_option) END;
    v_held   text := (SELECT format('%s row(s) in step(s) %s', sum((s ->> 'rows')::bigint),
                                    string_agg(s ->> 'step', ', ' ORDER BY (s ->> 'step')::integer))
                        FROM jsonb_array_elements(p_steps) AS s
                       WHERE coalesce((s ->> 'restricted')::boolean, false) AND (s ->> 'rows')::bigint > 0
                      HAVING count(*) > 0);
BEGIN
    v_lines := v_lines || format('-- pg_guardian cleanup script, batch %s', p_batch);
    IF p_alert.id IS NOT NULL THEN
        v_lines := v_lines || guardian._comment(format('-- alert %s (%s %s): %s', p_alert.id, p_alert.severity, p_alert.type,
                                                        left(p_alert.message, 200)));
    END IF;
    v_lines := v_lines || guardian._comment(format('-- environment %s; generated %s by %s%s', guardian.current_environment(),
                                                    to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"'),
                                                    SESSION_USER, CASE WHEN p_automatic THEN ' (with the alert)' ELSE '' END));
    v_lines := v_lines || '--'::text
        || guardian._comment(format('-- Removes %s contaminated record(s) of %s and every row that depends on them, %s row(s)',
                                    v_roots, (SELECT string_agg(k, ', ' ORDER BY k) FROM jsonb_object_keys(p_roots) AS k), v_total))
        || '-- in all, in foreign-key order, in one transaction. Every row is first copied into'::text
        || format('-- guardian.quarantine; undo it with: SELECT guardian.restore(%L);', p_batch)
        || '-- It aborts, changing nothing, if the rows it finds when it runs differ from the counts'::text
        || '-- below (the data changed since it was generated). Generate it again with:'::text
        || guardian._comment('--   ' || v_regen)
        || '--'::text;
    IF v_held IS NOT NULL THEN
        v_lines := v_lines
            || ('-- WARNING: it also removes ' || v_held || ' (delete_restricted): rows protected by')
            || '-- ON DELETE RESTRICT / NO ACTION (or depending on such rows). They reference removed rows'::text
            || '-- without depending on them by CASCADE, and are removed only because the script was'::text
            || '-- generated with p_include_restricted => true (CLI: --include-restricted). Make sure they'::text
            || '-- are test data too; they are quarantined with the rest.'::text
            || '--'::text;
    END IF;
    v_lines := v_lines
        || format('-- %4s  %-32s  %-26s  %6s  %s', 'step', 'table', 'action', 'rows', 'because of');
    FOR v_step IN SELECT s FROM jsonb_array_elements(p_steps) AS s ORDER BY (s ->> 'step')::integer LOOP
        v_lines := v_lines || guardian._comment(format('-- %4s  %-32s  %-26s  %6s  %s',
            v_step ->> 'step', v_step ->> 'table',
            CASE v_step ->> 'action'
                WHEN 'delete' THEN CASE WHEN coalesce((v_step ->> 'restricted')::boolean, false)
                                        THEN 'delete_restricted' ELSE 'delete' END
                WHEN 'blocked' THEN 'must be none (RESTRICT)'
                ELSE format('%s = %s', (SELECT string_agg(c, ', ') FROM jsonb_array_elements_text(v_step -> 'columns') AS c),
                            CASE v_step ->> 'action' WHEN 'set null' THEN 'NULL' ELSE 'DEFAULT' END) END,
            v_step ->> 'rows',
            CASE WHEN v_step -> 'via' = '["contaminated"]' THEN 'contaminated (see the records below)'
                 ELSE (SELECT string_agg(v, ', ') FROM jsonb_array_elements_text(v_step -> 'via') AS v)
                      || CASE WHEN v_step ->> 'parent' IS NOT NULL THEN ' -> ' || (v_step ->> 'parent') ELSE '' END END));
    END LOOP;
    v_lines := v_lines || ''::text || 'BEGIN;'::text || ''::text
        || '-- Locks the rows, checks that they are exactly the rows counted above and copies them into'::text
        || '-- guardian.quarantine. The contaminated records, with the rules that matched them:'::text
        || format(E'SELECT guardian.cleanup_begin(\n    %L::uuid,\n    %L::jsonb,\n    %L::jsonb);',
                  p_batch, jsonb_pretty(p_roots),
                  (SELECT jsonb_object_agg(s ->> 'step', (s ->> 'rows')::bigint) FROM jsonb_array_elements(p_steps) AS s));
    FOR v_group IN
        SELECT DISTINCT (s ->> 'group')::integer FROM jsonb_array_elements(p_steps) AS s
         WHERE s ->> 'action' <> 'blocked' AND (s ->> 'rows')::bigint > 0
         ORDER BY 1
    LOOP
        v_lines := v_lines || ''::text || ARRAY(
            SELECT guardian._comment(format('-- %s. %s: %s %s row(s)%s', s ->> 'step', s ->> 'table',
                       CASE s ->> 'action' WHEN 'delete' THEN 'delete' ELSE 'update' END, s ->> 'rows',
                       CASE WHEN s ->> 'action' <> 'delete'
                            THEN format(', setting %s to %s (ON DELETE %s of %s)',
                                        (SELECT string_agg(c, ', ') FROM jsonb_array_elements_text(s -> 'columns') AS c),
                                        CASE s ->> 'action' WHEN 'set null' THEN 'NULL' ELSE 'its default' END,
                                        upper(s ->> 'action'), s ->> 'parent')
                            WHEN coalesce((s ->> 'restricted')::boolean, false)
                            THEN format(' protected by ON DELETE RESTRICT / NO ACTION (%s): included on request',
                                        (SELECT string_agg(v, ', ') FROM jsonb_array_elements_text(s -> 'via') AS v))
                            WHEN jsonb_array_length(s -> 'via') > 1 OR s -> 'via' <> '["contaminated"]'
                            THEN format(' (%s)', (SELECT string_agg(v, ', ') FROM jsonb_array_elements_text(s -> 'via') AS v))
                            ELSE ' (the contaminated records)' END))
              FROM jsonb_array_elements(p_steps) AS s
             WHERE (s ->> 'group')::integer = v_group AND (s ->> 'rows')::bigint > 0
             ORDER BY (s ->> 'step')::integer)
            || guardian._cleanup_group_sql(p_batch,
                   (SELECT jsonb_agg(s) FROM jsonb_array_elements(p_steps) AS s WHERE (s ->> 'rows')::bigint > 0),
                   v_group);
    END LOOP;
    v_lines := v_lines || ''::text
        || '-- Checks every step ran with its expected count, marks the batch applied and resolves the alert.'::text
        || format('SELECT guardian.cleanup_finish(%L::uuid);', p_batch)
        || ''::text || 'COMMIT;'::text;
    RETURN array_to_string(v_lines, E'\n') || E'\n';
END
$$;
COMMENT ON FUNCTION guardian._render_cleanup_script(uuid, guardian.monitoring_alerts, jsonb, jsonb, boolean) IS
    'Internal: the text of a cleanup script (header with the expected counts, cleanup_begin, one statement per step group, cleanup_finish), everything quoted.';

CREATE FUNCTION guardian._register_cleanup_script(
    p_batch uuid, p_alert uuid, p_roots jsonb, p_counts jsonb, p_automatic boolean DEFAULT false,
    p_include_restricted boolean DEFAULT false)
RETURNS guardian.cleanup_scripts
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_caller text := guardian._response_caller();
    v_alert  guardian.monitoring_alerts;
    v_steps  jsonb;
    v_script text;
    v_row    guardian.cleanup_scripts;
    v_blocked jsonb;
BEGIN
    -- An automatic caller may only name records its own transaction found contaminated.
    -- An automatic caller may only name records of an alert its own transaction added to, or
    -- records its own transaction found.
    IF v_caller = 'auto' AND (
        (p_alert IS NOT NULL AND NOT EXISTS (SELECT FROM guardian.findings AS f
                                              WHERE f.alert_id = p_alert AND f.backend_pid = pg_backend_pid()
                                                AND f.created_at >= now()))
        OR EXISTS (SELECT FROM jsonb_each(p_roots) AS t, jsonb_array_elements(t.value) AS e
                    WHERE NOT EXISTS (SELECT FROM guardian.findings AS f
                                       WHERE f.relid = guardian._regclass_of(t.key) AND f.record_key = e -> 'key'
                                         AND (f.alert_id = p_alert
                                              OR (f.backend_pid = pg_backend_pid() AND f.created_at >= now()))))) THEN
        RAISE EXCEPTION 'an automatic cleanup may only name records found contaminated by its own transaction'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- Rows protected by RESTRICT are removed only when a person asks for it.
    IF p_include_restricted AND (v_caller = 'auto' OR p_automatic) THEN
        RAISE EXCEPTION 'an automatic cleanup never removes rows protected by ON DELETE RESTRICT / NO ACTION'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'A guardian admin can: SELECT guardian.cleanup_script(''<alert id>''::uuid, p_include_restricted => true);';
    END IF;
    IF EXISTS (SELECT FROM jsonb_each_text(p_counts) AS c WHERE c.value !~ '^[0-9]{1,12}$') THEN
        RAISE EXCEPTION 'row counts must be whole numbers: %', p_counts USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_steps := guardian._cleanup_step_list(p_roots, p_counts, p_include_restricted);
    SELECT jsonb_agg(s) INTO v_blocked FROM jsonb_array_elements(v_steps) AS s
     WHERE s ->> 'action' = 'blocked' AND (s ->> 'rows')::bigint > 0;
    IF v_blocked IS NOT NULL THEN
        -- _cleanup_prepare() names the rows first; this is the check a direct caller meets.
        RAISE EXCEPTION 'the cleanup is blocked: %', (
                SELECT string_agg(format('%s row(s) of %s reference %s through %s (ON DELETE RESTRICT / NO ACTION) and are not removed',
                                         s ->> 'rows', s ->> 'table', s ->> 'parent', s -> 'via' ->> 0), '; ')
                  FROM jsonb_array_elements(v_blocked) AS s)
            USING ERRCODE = 'dependent_objects_still_exist',
                  DETAIL = 'Deleting the rows they reference would fail; nothing was changed.',
                  HINT = 'If those rows are test data too, run the cleanup with p_include_restricted => true (CLI: --include-restricted).';
    END IF;
    IF p_alert IS NOT NULL THEN
        SELECT * INTO v_alert FROM guardian.monitoring_alerts AS a WHERE a.id = p_alert;
    END IF;
    v_script := guardian._render_cleanup_script(p_batch, v_alert, p_roots, v_steps, p_automatic);
    INSERT INTO guardian.cleanup_scripts (batch_id, alert_id, environment, roots, steps, script, automatic)
    VALUES (p_batch, p_alert, guardian.current_environment(), p_roots, v_steps, v_script, p_automatic)
    RETURNING * INTO v_row;
    IF p_alert IS NOT NULL THEN
        -- The relay's Slack button and email show the script stored with the alert.
        UPDATE guardian.monitoring_alerts AS a
           SET metadata = a.metadata - 'cleanup_script_error' || jsonb_build_object(
                   'cleanup_script', v_script, 'cleanup_batch', p_batch, 'cleanup_script_at', now(),
                   'cleanup_script_records', (SELECT count(*) FROM jsonb_each(p_roots) AS t, jsonb_array_elements(t.value)),
                   'cleanup_plan_query', CASE WHEN p_include_restricted
                                              THEN format('SELECT * FROM guardian.cleanup_plan(%L::uuid, p_include_restricted => true);', p_alert)
                                              ELSE format('SELECT * FROM guardian.cleanup_plan(%L);', p_alert) END)
         WHERE a.id = p_alert;
    END IF;
    RETURN v_row;
END
$$;
COMMENT ON FUNCTION guardian._register_cleanup_script(uuid, uuid, jsonb, jsonb, boolean, boolean) IS
    'Internal: renders a cleanup script from the catalog and the given records and counts, records it under its batch id (returned) and stores it with its alert (metadata.cleanup_script); p_include_restricted (never for an automatic cleanup) removes rows protected by RESTRICT / NO ACTION too.';

CREATE FUNCTION guardian._cleanup_prepare(p_roots jsonb, p_alert uuid, p_automatic boolean DEFAULT false,
                                          p_include_restricted boolean DEFAULT false)
RETURNS guardian.cleanup_scripts
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_rows    guardian.cleanup_row[];
    v_given   integer := (SELECT count(*) FROM jsonb_each(p_roots) AS t, jsonb_array_elements(t.value));
    v_left    jsonb;
    v_name    text;
    v_blocked text;
    v_target  text;
BEGIN
    -- Planning reads and compares key values: a superuser would run the application's casts
    -- and operators on them with its rights.
    PERFORM guardian._refuse_app_code(ARRAY(SELECT guardian._regclass_of(k) FROM jsonb_object_keys(p_roots) AS k),
                                      'a cleanup plan', p_runs => ARRAY['values']);
    v_rows := ARRAY(SELECT r FROM guardian._cleanup_collect(p_roots, false, p_include_restricted) AS r);
    IF NOT EXISTS (SELECT FROM unnest(v_rows) AS r WHERE r.root) THEN
        v_name := (SELECT string_agg(k, ', ') FROM jsonb_object_keys(p_roots) AS k);
        RAISE EXCEPTION 'none of the % contaminated record(s) is in % any more', v_given, v_name
            USING ERRCODE = 'no_data_found',
                  DETAIL = 'They were deleted, changed or already quarantined since they were found; there is nothing to clean up.',
                  HINT = CASE WHEN p_alert IS NOT NULL
                              THEN format('Close the alert: SELECT guardian.resolve_alert(%L, ''rows already removed'');', p_alert)
                              ELSE 'Nothing to do.' END;
    END IF;
    -- Rows that reference removed rows through RESTRICT / NO ACTION and stay: named, with the
    -- option that removes them too.
    SELECT string_agg(format('%s row(s) of %s reference %s through %s (ON DELETE RESTRICT / NO ACTION): %s%s',
                             x.n, s ->> 'table', s ->> 'parent', s -> 'via' ->> 0, x.keys,
                             CASE WHEN x.n > 3 THEN ', ...' ELSE '' END), '; ' ORDER BY (s ->> 'step')::integer)
      INTO v_blocked
      FROM jsonb_array_elements(guardian._cleanup_step_list(p_roots, '{}', p_include_restricted)) AS s
     CROSS JOIN LATERAL (SELECT count(*) AS n,
                                (SELECT string_agg(k.row_key::text, ', ')
                                   FROM (SELECT r.row_key FROM unnest(v_rows) AS r WHERE r.step = (s ->> 'step')::integer
                                          ORDER BY r.row_key::text LIMIT 3) AS k) AS keys
                           FROM unnest(v_rows) AS r WHERE r.step = (s ->> 'step')::integer) AS x
     WHERE s ->> 'action' = 'blocked' AND x.n > 0;
    IF v_blocked IS NOT NULL THEN
        v_target := CASE WHEN p_alert IS NOT NULL THEN format('%L::uuid', p_alert)
                         ELSE format('%L::regclass', (SELECT k FROM jsonb_object_keys(p_roots) AS k LIMIT 1)) END;
        RAISE EXCEPTION 'the cleanup is blocked: %', v_blocked
            USING ERRCODE = 'dependent_objects_still_exist',
                  DETAIL = 'A cleanup removes the contaminated records and the rows that depend on them through ON DELETE CASCADE; these rows reference removed rows through ON DELETE RESTRICT / NO ACTION and are not removed, so deleting what they reference would fail. Nothing was changed.',
                  HINT = CASE WHEN p_automatic
                              THEN format('An automatic cleanup never removes them. If those rows are test data too, a guardian admin can run the cleanup with p_include_restricted => true (CLI: --include-restricted): SELECT guardian.cleanup_script(%s, p_include_restricted => true);', v_target)
                              ELSE format('If those rows are test data too, run the cleanup with p_include_restricted => true (CLI: --include-restricted), which removes and quarantines them as well; see first what it would remove: SELECT * FROM guardian.cleanup_plan(%s, p_include_restricted => true);', v_target) END;
    END IF;
    -- Only the records still there: a script names what it removes.
    SELECT jsonb_object_agg(t.key, x.records) INTO v_left
      FROM jsonb_each(p_roots) AS t,
           LATERAL (SELECT jsonb_agg(e ORDER BY e::text) AS records
                      FROM jsonb_array_elements(t.value) AS e
                     WHERE e -> 'key' IN (SELECT r.row_key FROM unnest(v_rows) AS r
                                           WHERE r.root AND r.relid = guardian._table_root(guardian._regclass_of(t.key)))) AS x
     WHERE x.records IS NOT NULL;
    RETURN guardian._register_cleanup_script(gen_random_uuid(), p_alert, v_left,
                                             guardian._cleanup_counts(v_left, v_rows, p_include_restricted), p_automatic,
                                             p_include_restricted);
END
$$;
COMMENT ON FUNCTION guardian._cleanup_prepare(jsonb, uuid, boolean, boolean) IS
    'Internal: plans a cleanup of these records with the caller''s rights and registers its script; refuses, naming them, rows that RESTRICT / NO ACTION references would block on unless p_include_restricted.';

CREATE FUNCTION guardian.cleanup_script(p_alert uuid, p_include_restricted boolean DEFAULT false)
RETURNS text
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (guardian._cleanup_prepare(guardian._alert_roots(p_alert), p_alert, false, p_include_restricted)).script
$$;
COMMENT ON FUNCTION guardian.cleanup_script(uuid, boolean) IS
    'The cleanup script for a contamination alert: removes its records and the rows that depend on them in foreign-key order, in one transaction, quarantining everything first and aborting if the counts it expects differ. Stored with the alert (metadata.cleanup_script). Review it, then run it (psql -f). Rows that reference removed rows through ON DELETE RESTRICT / NO ACTION refuse it, unless p_include_restricted: then they are removed and quarantined too (with what depends on them), listed apart with a warning.';

CREATE FUNCTION guardian.cleanup_script(p_table regclass, p_record_ids text[] DEFAULT NULL,
                                        p_include_restricted boolean DEFAULT false)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_roots jsonb := guardian._table_roots(p_table, p_record_ids);
BEGIN
    IF v_roots IS NULL THEN
        RAISE EXCEPTION 'a scan finds no test data in %', p_table
            USING ERRCODE = 'no_data_found', HINT = 'Nothing to clean up.';
    END IF;
    RETURN (guardian._cleanup_prepare(v_roots, NULL, false, p_include_restricted)).script;
END
$$;
COMMENT ON FUNCTION guardian.cleanup_script(regclass, text[], boolean) IS
    'The cleanup script for the contaminated records a scan finds in a table now, or only for these record ids (as guardian.scan() returned them); p_include_restricted as for guardian.cleanup_script(alert).';
