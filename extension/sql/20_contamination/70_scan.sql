CREATE FUNCTION guardian._scan_plan(p_table regclass)
RETURNS guardian.watched_tables
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_watch guardian.watched_tables := guardian._watch_of(p_table);
BEGIN
    -- A watched table is scanned as watched; any other table as watch() would map it.
    IF v_watch.relid IS NOT NULL THEN
        RETURN v_watch;
    END IF;
    RETURN guardian._watch_record(p_table, guardian._plan_watch(p_table, NULL));
END
$$;
COMMENT ON FUNCTION guardian._scan_plan(regclass) IS 'Internal: the columns and key a scan of a table uses.';

-- A scan runs as whoever calls it, superusers included, over rows the application wrote:
-- it must run none of the application's code (STYLE.md, "Whose code runs where"). A row
-- becomes JSON through to_jsonb() only when every column is of a built-in type (to_jsonb()
-- calls a cast to json only for types that are not); otherwise column by column, the other
-- types as the text of their output function (format('%s'), never ::text, which a cast of the
-- application's may take over). The prefilter reads columns by their type (C) or as text.
CREATE FUNCTION guardian._scan_row_json(p_table regclass, p_alias text DEFAULT 't')
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH cols AS (
        SELECT a.attname, a.attnum, guardian._json_safe_type(a.atttypid) AS safe
          FROM pg_catalog.pg_attribute AS a
         WHERE a.attrelid = p_table AND a.attnum > 0 AND NOT a.attisdropped
    ), chunks AS (
        -- jsonb_build_object() takes at most 100 arguments: 50 columns a call
        SELECT (row_number() OVER (ORDER BY c.attnum) - 1) / 50 AS chunk, c.*
          FROM cols AS c
    )
    SELECT CASE WHEN (SELECT bool_and(c.safe) FROM cols AS c) IS NOT FALSE THEN format('pg_catalog.to_jsonb(%I)', p_alias)
                ELSE (SELECT string_agg(x.call, ' OPERATOR(pg_catalog.||) ' ORDER BY x.chunk)
                        FROM (SELECT ch.chunk,
                                     'pg_catalog.jsonb_build_object(' || string_agg(
                                         format(CASE WHEN ch.safe THEN '%L, pg_catalog.to_jsonb(%I.%I)'
                                                     ELSE '%L, pg_catalog.to_jsonb(pg_catalog.format(''%%s'', %I.%I))' END,
                                                ch.attname, p_alias, ch.attname), ', ' ORDER BY ch.attnum) || ')' AS call
                                FROM chunks AS ch GROUP BY ch.chunk) AS x) END
$$;
COMMENT ON FUNCTION guardian._scan_row_json(regclass, text) IS
    'Internal: the SQL for a row (alias p_alias, default t) of a table as JSON without running application code (to_jsonb(t) when every column is built in; else column by column, other types as their output text).';

CREATE FUNCTION guardian.scan(
    p_table regclass, p_record boolean DEFAULT false,
    p_from_page bigint DEFAULT NULL, p_to_page bigint DEFAULT NULL)
RETURNS TABLE (record_id text, column_name text, rule text, severity text, sample text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- The scan's cost is its function calls, which JIT cannot speed up; compiling took ~0.1 s.
SET jit = off
AS $$
DECLARE
    v_watch   guardian.watched_tables;
    v_anchors jsonb;
    v_filter  text;
    v_range   text := '';
    v_row     text;
    v_query   text;
BEGIN
    IF p_table IS NULL THEN
        RAISE EXCEPTION 'table must not be NULL'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'e.g. SELECT * FROM guardian.scan(''public.patients'');';
    END IF;
    IF (SELECT c.relkind FROM pg_catalog.pg_class AS c WHERE c.oid = p_table) NOT IN ('r', 'p', 'f', 'm') THEN
        RAISE EXCEPTION '% is not a table', p_table
            USING ERRCODE = 'wrong_object_type', HINT = 'Scan the tables a view reads from.';
    END IF;
    -- Reading runs no application code here (see _scan_row_json); only row-level security,
    -- which superusers bypass, could. The check keeps it that way if the scan ever changes.
    PERFORM guardian._refuse_app_code(ARRAY[p_table], format('guardian.scan(%L)', p_table::text), p_runs => ARRAY['read']);
    v_watch := guardian._scan_plan(p_table);
    IF jsonb_array_length(v_watch.columns) = 0 THEN
        RETURN;
    END IF;
    IF to_regprocedure('guardian._suspect_columns(regclass, "any")') IS NOT NULL THEN
        -- One C call per row with the watched columns straight from the scan (the rules as
        -- they apply in any mode), so the scan can run in parallel workers.
        -- Columns go as they are: the C side reads each by its type, as the triggers do.
        SELECT format('guardian._suspect_columns(%L::regclass, %s)', p_table,
                      string_agg(format('%s, t.%I', s.attnum, a.attname), ', ' ORDER BY s.attnum))
          INTO v_filter
          FROM guardian._prefilter_spec(p_table, true) AS s
          JOIN pg_catalog.pg_attribute AS a ON a.attrelid = p_table AND a.attnum = s.attnum;
        IF v_filter IS NULL THEN
            RETURN;
        END IF;
    ELSE
        -- Without the library: the same anchors, from the rules directly (a scan works in any mode).
        SELECT jsonb_object_agg(c ->> 'column',
                   ARRAY(SELECT DISTINCT a FROM guardian._applicable_rules() AS r, unnest(guardian._rule_anchors(r)) AS a
                          WHERE c ->> 'kind' = ANY (r.kinds)
                             OR (r.column_pattern IS NOT NULL AND c ->> 'column' ~* r.column_pattern)))
          INTO v_anchors
          FROM jsonb_array_elements(v_watch.columns) AS c;
        SELECT string_agg(CASE WHEN c ->> 'type' = 'uuid'
                               THEN format('guardian._uuid_matches(t.%I, %L::uuid[])', c ->> 'column',
                                           (SELECT coalesce(array_agg(b), '{}') FROM guardian._applicable_rules() AS r,
                                                   unnest(r.terms) AS term, unnest(guardian._uuid_range(term)) AS b
                                             WHERE r.match_type = 'uuids' AND 'identifier' = ANY (r.kinds)))
                               ELSE format(CASE WHEN guardian._json_safe_type(a.atttypid)
                                                THEN 'guardian._contains_any(t.%I::text, %L::text[])'
                                                ELSE 'guardian._contains_any(pg_catalog.format(''%%s'', t.%I), %L::text[])' END,
                                           c ->> 'column',
                                           ARRAY(SELECT jsonb_array_elements_text(v_anchors -> (c ->> 'column'))))
                          END, ' OR ')
          INTO v_filter
          FROM jsonb_array_elements(v_watch.columns) AS c
          LEFT JOIN pg_catalog.pg_attribute AS a
            ON a.attrelid = p_table AND a.attname = c ->> 'column' AND NOT a.attisdropped;
    END IF;
    IF p_from_page IS NOT NULL OR p_to_page IS NOT NULL THEN
        v_range := format(' AND t.ctid >= %L::tid AND t.ctid < %L::tid',
                          format('(%s,0)', coalesce(p_from_page, 0)), format('(%s,0)', coalesce(p_to_page, 4294967295)));
    END IF;
    -- Only rows the prefilter lets through are turned into JSON.
    v_row := guardian._scan_row_json(p_table);
    v_query := format(
        'SELECT (guardian._record_ref($1, %1$s)).record_id, f.column_name, f.rule, f.severity, f.sample,
                (guardian._record_ref($1, %1$s)).record_key
           FROM %2$s AS t, LATERAL guardian._row_findings($1, %1$s, NULL, $3) AS f
          WHERE (%3$s)%4$s', v_row, p_table, v_filter, v_range);
    IF NOT p_record THEN
        RETURN QUERY EXECUTE format('SELECT record_id, column_name, rule, severity, sample FROM (%s) AS s', v_query)
            USING v_watch, NULL::regclass, v_anchors;
        RETURN;
    END IF;
    RETURN QUERY EXECUTE format(
        'WITH found AS (%s), kept AS (SELECT guardian._record_scan_finding($2, f.record_id, f.record_key, f.column_name,
                                                                         f.rule, f.severity, f.sample) AS ok, f.*
                                      FROM found AS f)
         SELECT record_id, column_name, rule, severity, sample FROM kept', v_query)
        USING v_watch, v_watch.relid, v_anchors;
    PERFORM guardian._flush_findings(v_watch.relid);
END
$$;
COMMENT ON FUNCTION guardian.scan(regclass, boolean, bigint, bigint) IS
    'Find the contaminated rows already in a table: one row per finding (record_id = primary key as text). Works in every mode and does not block writers. p_record => true also records the findings as alerts; p_from_page/p_to_page scan a block range (for progress on large tables).';

CREATE FUNCTION guardian._record_scan_finding(
    p_relid regclass, p_record_id text, p_record_key jsonb, p_column text, p_rule text, p_severity text, p_sample text)
RETURNS boolean
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO guardian.findings (relid, record_id, record_key, column_name, rule, severity, sample, operation)
    VALUES (p_relid, p_record_id, p_record_key, p_column, p_rule, p_severity, p_sample, 'SCAN')
    RETURNING true
$$;
COMMENT ON FUNCTION guardian._record_scan_finding(regclass, text, jsonb, text, text, text, text) IS
    'Internal: keeps one scan finding so that it is grouped into an alert.';

CREATE FUNCTION guardian.check_payload(p_payload jsonb, p_table text DEFAULT NULL)
RETURNS TABLE (path text, key text, kind text, rule text, severity text, sample text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_item record;
BEGIN
    -- Walk every string in the document; each key is mapped to a kind as a column of that
    -- name would be (in a table named p_table), and UUID-shaped strings are identifiers.
    FOR v_item IN
        WITH RECURSIVE walk(path, key, parent, value) AS (
            SELECT '$', NULL::text, p_table, p_payload
            UNION ALL
            SELECT w.path || CASE WHEN jsonb_typeof(w.value) = 'object' THEN '.' || e.k ELSE '[' || e.k || ']' END,
                   CASE WHEN jsonb_typeof(w.value) = 'object' THEN e.k ELSE w.key END,
                   -- the enclosing key names the "table": {"clinic": {"name": ...}} is an organisation
                   CASE WHEN jsonb_typeof(w.value) = 'object' THEN coalesce(w.key, w.parent) ELSE w.parent END,
                   e.v
              FROM walk AS w,
                   LATERAL (SELECT o.key, o.value FROM jsonb_each(CASE WHEN jsonb_typeof(w.value) = 'object' THEN w.value END) AS o
                            UNION ALL
                            SELECT (a.n - 1)::text, a.value
                              FROM jsonb_array_elements(CASE WHEN jsonb_typeof(w.value) = 'array' THEN w.value END)
                                   WITH ORDINALITY AS a(value, n)) AS e(k, v))
        SELECT w.path, w.key, w.parent, w.value #>> '{}' AS text_value
          FROM walk AS w
         WHERE jsonb_typeof(w.value) = 'string'
    LOOP
        kind := CASE WHEN v_item.text_value ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                     THEN 'identifier'
                     ELSE coalesce(guardian._infer_kind(v_item.parent, coalesce(v_item.key, 'value'), 'text'::regtype), 'free_text') END;
        path := v_item.path;
        key := v_item.key;
        FOR rule, severity, sample IN
            SELECT m.rule, m.severity, m.sample FROM guardian._match(kind, coalesce(v_item.key, ''), v_item.text_value) AS m
        LOOP
            RETURN NEXT;
        END LOOP;
    END LOOP;
END
$$;
COMMENT ON FUNCTION guardian.check_payload(jsonb, text) IS
    'The application-side check: the test-data findings in a JSON document (e.g. a request body) before it is written, using the same rule catalogue as the triggers. Keys map to kinds like column names.';
