-- The rows a cleanup touches, found with the rights of whoever asks (never the guardian's):
-- the contaminated records (roots), every row that references a removed row through ON
-- DELETE CASCADE (repeatedly), the rows whose key an ON DELETE SET NULL / SET DEFAULT
-- changes, and the rows that block the cleanup (RESTRICT / NO ACTION references from rows
-- that are not removed themselves). Asked to include restricted rows, a second phase removes
-- those blocking rows instead, with everything that depends on them (through CASCADE and
-- RESTRICT / NO ACTION alike), into the restricted delete steps. A row is named by where it is
-- (tableoid, ctid): stable inside one transaction once locked, which is how a capture uses it.
CREATE FUNCTION guardian._key_expr(p_table regclass, p_alias text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- The JSON form of a row's key, as guardian.findings.record_key has it.
    SELECT CASE WHEN k.key_columns IS NULL
                THEN format('pg_catalog.jsonb_build_object(''row_md5'', pg_catalog.md5((%s)::text))',
                            guardian._scan_row_json(p_table, p_alias))
                ELSE format('pg_catalog.jsonb_build_object(%s)',
                            (SELECT string_agg(format('%L, %I.%I', c, p_alias, c), ', ' ORDER BY o)
                               FROM unnest(k.key_columns) WITH ORDINALITY AS u(c, o)))
           END
      FROM guardian._record_key(p_table) AS k
$$;
COMMENT ON FUNCTION guardian._key_expr(regclass, text) IS
    'Internal: SQL for the key of a row of a table as JSON ({column: value}, or {"row_md5": ...} without a key).';

CREATE FUNCTION guardian._column_list(p_alias text, p_columns text[])
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT string_agg(format('%I.%I', p_alias, c), ', ' ORDER BY o)
      FROM unnest(p_columns) WITH ORDINALITY AS u(c, o)
$$;
COMMENT ON FUNCTION guardian._column_list(text, text[]) IS 'Internal: alias.column, ... for a list of columns.';

CREATE FUNCTION guardian._cleanup_roots(p_roots jsonb)
RETURNS regclass[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_name   text;
    v_table  regclass;
    v_tables regclass[] := '{}';
BEGIN
    IF p_roots IS NULL OR jsonb_typeof(p_roots) <> 'object' OR p_roots = '{}'::jsonb THEN
        RAISE EXCEPTION 'a cleanup needs contaminated records, got %', coalesce(p_roots::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Generate cleanup scripts with guardian.cleanup_script(alert id) or guardian.cleanup_script(table).';
    END IF;
    FOR v_name IN SELECT k FROM jsonb_object_keys(p_roots) AS k ORDER BY 1 LOOP
        v_table := guardian._regclass_of(v_name);
        IF v_table IS NULL THEN
            RAISE EXCEPTION 'table % no longer exists', v_name
                USING ERRCODE = 'undefined_table',
                      DETAIL = 'It was dropped or renamed after the cleanup script was generated; nothing was changed.',
                      HINT = 'Generate the script again for the table as it is now, or resolve the alert if the rows are gone: SELECT guardian.resolve_alert(''<alert id>'', ''table dropped'');';
        END IF;
        IF jsonb_typeof(p_roots -> v_name) <> 'array' THEN
            RAISE EXCEPTION 'the records of % must be a JSON array', v_name USING ERRCODE = 'invalid_parameter_value';
        END IF;
        v_tables := v_tables || v_table;
    END LOOP;
    RETURN v_tables;
END
$$;
COMMENT ON FUNCTION guardian._cleanup_roots(jsonb) IS
    'Internal: the tables of a cleanup''s contaminated records ({"schema.table": [{"key": {...}, "findings": [...]}]}), checked to exist.';

CREATE FUNCTION guardian._cleanup_collect(p_roots jsonb, p_lock boolean DEFAULT false,
                                          p_include_restricted boolean DEFAULT false)
RETURNS SETOF guardian.cleanup_row
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_tables   regclass[] := guardian._cleanup_roots(p_roots);
    v_edges    guardian.cleanup_edge[];
    v_steps    jsonb;
    v_rows     guardian.cleanup_row[] := '{}';
    v_frontier guardian.cleanup_row[];
    v_next     guardian.cleanup_row[];
    v_found    guardian.cleanup_row[];
    v_table    regclass;
    v_edge     guardian.cleanup_edge;
    v_step     integer;
    v_cols     text[];
    v_lock     text := CASE WHEN p_lock THEN ' FOR UPDATE OF t' ELSE '' END;
    v_name     text;
    v_deletes  integer[];
    v_held     guardian.cleanup_row[] := '{}';
    v_phase    integer := 1;
    v_kind     text;
BEGIN
    v_edges := ARRAY(SELECT e FROM guardian._cleanup_edges(v_tables, p_include_restricted) AS e);
    SELECT jsonb_agg(jsonb_build_object('step', s.step, 'relid', s.relid::oid, 'action', s.action, 'via', s.via,
                                        'restricted', s.restricted))
      INTO v_steps FROM guardian._cleanup_steps(v_tables, p_include_restricted) AS s;
    v_deletes := ARRAY(SELECT (s ->> 'step')::integer FROM jsonb_array_elements(v_steps) AS s WHERE s ->> 'action' = 'delete');

    -- The contaminated records, by the key their finding recorded.
    FOREACH v_table IN ARRAY v_tables LOOP
        v_name := (SELECT k FROM jsonb_object_keys(p_roots) AS k WHERE guardian._regclass_of(k) = v_table LIMIT 1);
        CONTINUE WHEN jsonb_array_length(p_roots -> v_name) = 0;
        v_step := (SELECT (s ->> 'step')::integer FROM jsonb_array_elements(v_steps) AS s
                    WHERE (s ->> 'relid')::oid = guardian._table_root(v_table) AND s ->> 'action' = 'delete'
                      AND NOT (s ->> 'restricted')::boolean);
        v_cols := ARRAY(SELECT jsonb_object_keys(p_roots -> v_name -> 0 -> 'key'));
        -- One pass: the records given (their findings merged per key), joined to the table.
        IF v_cols = ARRAY['row_md5'] THEN
            EXECUTE format(
                'WITH given AS (
                     SELECT e -> ''key'' ->> ''row_md5'' AS row_md5,
                            jsonb_agg(f) FILTER (WHERE f IS NOT NULL) AS findings
                       FROM jsonb_array_elements($1) AS e
                       LEFT JOIN LATERAL jsonb_array_elements(e -> ''findings'') AS f ON true
                      GROUP BY 1)
                 SELECT array_agg(ROW(%s, %L, x.tableoid, x.ctid, true, x.findings, x.row_key)::guardian.cleanup_row)
                   FROM (SELECT t.tableoid, t.ctid, %s AS row_key, g.findings
                           FROM %s AS t JOIN given AS g ON g.row_md5 = md5((%s)::text)%s) AS x',
                v_step, guardian._table_root(v_table), guardian._key_expr(v_table, 't'), v_table,
                guardian._scan_row_json(v_table, 't'), v_lock)
              INTO v_found USING p_roots -> v_name;
        ELSE
            IF EXISTS (SELECT FROM unnest(v_cols) AS c
                        WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_attribute AS a
                                           WHERE a.attrelid = v_table AND a.attname = c AND a.attnum > 0 AND NOT a.attisdropped)) THEN
                RAISE EXCEPTION 'table % has no column % any more', v_table,
                                (SELECT string_agg(quote_ident(c), ', ') FROM unnest(v_cols) AS c
                                  WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_attribute AS a
                                                     WHERE a.attrelid = v_table AND a.attname = c AND NOT a.attisdropped))
                    USING ERRCODE = 'undefined_column',
                          DETAIL = 'The contaminated records were identified by a key the table no longer has; nothing was changed.',
                          HINT = format('Find them again with a scan: SELECT * FROM guardian.scan(%L, p_record => true);', v_table);
            END IF;
            EXECUTE format(
                'WITH given AS (
                     SELECT %s, jsonb_agg(f) FILTER (WHERE f IS NOT NULL) AS findings
                       FROM jsonb_array_elements($1) AS e
                      CROSS JOIN LATERAL jsonb_populate_record(NULL::%s, e -> ''key'') AS r
                       LEFT JOIN LATERAL jsonb_array_elements(e -> ''findings'') AS f ON true
                      GROUP BY %s)
                 SELECT array_agg(ROW(%s, %L, x.tableoid, x.ctid, true, x.findings, x.row_key)::guardian.cleanup_row)
                   FROM (SELECT t.tableoid, t.ctid, %s AS row_key, g.findings
                           FROM %s AS t JOIN given AS g ON (%s) = (%s)%s) AS x',
                guardian._column_list('r', v_cols), v_table, guardian._column_list('r', v_cols),
                v_step, guardian._table_root(v_table), guardian._key_expr(v_table, 't'),
                v_table, guardian._column_list('t', v_cols), guardian._column_list('g', v_cols), v_lock)
              INTO v_found USING p_roots -> v_name;
        END IF;
        v_rows := v_rows || coalesce(v_found, '{}');
    END LOOP;

    -- Follow the foreign keys from every newly removed row until nothing new is removed. Phase
    -- 1 removes what cascades; phase 2 (asked to include restricted rows) starts from the rows
    -- that reference removed rows through RESTRICT / NO ACTION and are not removed anyway.
    v_frontier := v_rows;
    LOOP
        WHILE cardinality(v_frontier) > 0 LOOP
            v_next := '{}';
            FOR v_edge IN
                SELECT e.* FROM unnest(v_edges) AS e
                 WHERE e.parent IN (SELECT f.relid FROM unnest(v_frontier) AS f)
                 ORDER BY e.child::text, e.constraint_name
            LOOP
                -- What the rows found through this key become.
                v_kind := CASE WHEN v_edge.on_delete IN ('set null', 'set default') THEN v_edge.on_delete
                               WHEN v_phase = 2 THEN 'restricted'
                               WHEN v_edge.on_delete = 'cascade' THEN 'delete'
                               WHEN p_include_restricted THEN 'held'
                               ELSE 'blocked' END;
                v_step := (SELECT (s ->> 'step')::integer FROM jsonb_array_elements(v_steps) AS s
                            WHERE (s ->> 'relid')::oid = v_edge.child::oid
                              AND CASE v_kind
                                      WHEN 'delete' THEN s ->> 'action' = 'delete' AND NOT (s ->> 'restricted')::boolean
                                      WHEN 'restricted' THEN s ->> 'action' = 'delete' AND (s ->> 'restricted')::boolean
                                      WHEN 'held' THEN s ->> 'action' = 'delete' AND (s ->> 'restricted')::boolean
                                      ELSE s ->> 'action' = v_kind AND s -> 'via' ? v_edge.constraint_name
                                  END);
                EXECUTE format(
                    'SELECT array_agg(ROW(%s, %L, x.tableoid, x.ctid, false, NULL, x.row_key)::guardian.cleanup_row)
                       FROM (SELECT t.tableoid, t.ctid, %s AS row_key
                               FROM %s AS t
                              WHERE (%s) IN (SELECT %s FROM %s AS p
                                               JOIN unnest($1::oid[], $2::tid[]) AS f(toid, tctid)
                                                 ON p.tableoid = f.toid AND p.ctid = f.tctid)%s) AS x',
                    v_step, v_edge.child, guardian._key_expr(v_edge.child, 't'), v_edge.child,
                    guardian._column_list('t', v_edge.child_columns), guardian._column_list('p', v_edge.parent_columns),
                    v_edge.parent,
                    CASE WHEN v_kind = 'blocked' THEN '' ELSE v_lock END)
                  INTO v_found
                  USING ARRAY(SELECT f.row_tableoid FROM unnest(v_frontier) AS f WHERE f.relid = v_edge.parent ORDER BY f.row_ctid),
                        ARRAY(SELECT f.row_ctid FROM unnest(v_frontier) AS f WHERE f.relid = v_edge.parent ORDER BY f.row_ctid);
                IF v_kind IN ('delete', 'restricted') THEN
                    -- Only rows not already removed join the next round.
                    v_found := ARRAY(SELECT n FROM unnest(coalesce(v_found, '{}')) AS n
                                      WHERE NOT EXISTS (SELECT FROM unnest(v_rows || v_next) AS o
                                                         WHERE o.row_tableoid = n.row_tableoid AND o.row_ctid = n.row_ctid
                                                           AND o.step = ANY (v_deletes)));
                    v_next := v_next || v_found;
                ELSIF v_kind = 'held' THEN
                    -- Phase 1 may still remove them through CASCADE: decided once it is done.
                    v_held := v_held || coalesce(v_found, '{}');
                ELSE
                    v_rows := v_rows || ARRAY(SELECT n FROM unnest(coalesce(v_found, '{}')) AS n
                                               WHERE NOT EXISTS (SELECT FROM unnest(v_rows) AS o
                                                                  WHERE o.row_tableoid = n.row_tableoid AND o.row_ctid = n.row_ctid
                                                                    AND o.step = n.step));
                END IF;
            END LOOP;
            v_rows := v_rows || v_next;
            v_frontier := v_next;
        END LOOP;
        EXIT WHEN v_phase = 2 OR cardinality(v_held) = 0;
        v_phase := 2;
        v_frontier := ARRAY(SELECT DISTINCT ON (h.row_tableoid, h.row_ctid) h FROM unnest(v_held) AS h
                             WHERE NOT EXISTS (SELECT FROM unnest(v_rows) AS o
                                                WHERE o.row_tableoid = h.row_tableoid AND o.row_ctid = h.row_ctid
                                                  AND o.step = ANY (v_deletes))
                             ORDER BY h.row_tableoid, h.row_ctid);
        v_rows := v_rows || v_frontier;
    END LOOP;

    -- A row that is removed is neither updated nor a blocker.
    RETURN QUERY
        SELECT r.* FROM unnest(v_rows) AS r
         WHERE r.step IN (SELECT (s ->> 'step')::integer FROM jsonb_array_elements(v_steps) AS s WHERE s ->> 'action' = 'delete')
            OR NOT EXISTS (SELECT FROM unnest(v_rows) AS d
                            JOIN jsonb_array_elements(v_steps) AS s ON (s ->> 'step')::integer = d.step AND s ->> 'action' = 'delete'
                           WHERE d.row_tableoid = r.row_tableoid AND d.row_ctid = r.row_ctid)
         ORDER BY r.step, r.row_tableoid, r.row_ctid;
END
$$;
COMMENT ON FUNCTION guardian._cleanup_collect(jsonb, boolean, boolean) IS
    'Internal: every row a cleanup of these contaminated records touches, by step, found with the caller''s rights; p_lock takes FOR UPDATE locks on the rows it will change (a capture); p_include_restricted removes the rows RESTRICT / NO ACTION references would block on, and what depends on them.';
