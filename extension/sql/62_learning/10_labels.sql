-- Labels: what people said about records of watched tables (test data or real), kept with the
-- values that were seen, per table and column. Pattern induction (20_suggestions.sql) learns
-- from them. A value is kept normalised (the form rules see) unless its column's kind asks for
-- redaction (guardian.kinds.label_values): then only a masked sample stays.
ALTER TABLE guardian.kinds
    ADD COLUMN label_values text NOT NULL DEFAULT 'keep',
    ADD CONSTRAINT kinds_label_values_chk CHECK (label_values IN ('keep', 'redact'));
COMMENT ON COLUMN guardian.kinds.label_values IS
    'What a label keeps of a value of this kind: keep (the normalised value, which rules can be learned from) or redact (a masked sample only; nothing is learned from the column).';
UPDATE guardian.kinds SET label_values = 'redact' WHERE kind = 'free_text';

CREATE TABLE guardian.labels (
    relid       regclass NOT NULL,
    record_id   text NOT NULL,
    column_name text NOT NULL,
    kind        text NOT NULL,
    label       text NOT NULL,
    value       text,
    sample      text,
    source      text NOT NULL DEFAULT 'manual',
    alert_id    uuid REFERENCES guardian.monitoring_alerts (id) ON DELETE SET NULL,
    labelled_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    labelled_by text NOT NULL,
    CONSTRAINT labels_pkey PRIMARY KEY (relid, record_id, column_name),
    CONSTRAINT labels_label_chk CHECK (label IN ('test', 'real')),
    CONSTRAINT labels_source_chk CHECK (source IN ('manual', 'alert'))
);
COMMENT ON TABLE guardian.labels IS
    'Records people labelled test or real (guardian.label_records(), or resolving a contamination alert), one row per watched column with the value seen (NULL where the kind redacts, or while the record has not been read yet).';
COMMENT ON COLUMN guardian.labels.value IS
    'The normalised value (what rules match); NULL where the kind''s label_values is redact, or until the record is read (labels from an alert are filled in by the next label_records() or suggest_rules() of someone who can read the table).';
COMMENT ON COLUMN guardian.labels.source IS
    'manual (guardian.label_records) or alert (resolving a contamination alert: cleaned or confirmed means test, false_positive means real).';
SELECT pg_catalog.pg_extension_config_dump('guardian.labels', '');
CREATE INDEX labels_kind_label_idx ON guardian.labels (kind, label);

-- Keeps labels (as guardian_owner): p_rows is [{"record_id": ..., "row": {...}}] of rows read
-- by the caller; a row NULL keeps a label whose values are still to be read.
CREATE FUNCTION guardian._store_labels(
    p_relid regclass, p_label text, p_rows jsonb, p_source text DEFAULT 'manual', p_alert uuid DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_watch guardian.watched_tables := guardian._scan_plan(p_relid);
    v_count integer;
BEGIN
    INSERT INTO guardian.labels AS l (relid, record_id, column_name, kind, label, value, sample, source, alert_id,
                                      labelled_by)
    SELECT p_relid, r ->> 'record_id', c.column_name, c.kind, p_label,
           CASE WHEN k.label_values = 'keep' THEN guardian._normalize(r -> 'row' ->> c.column_name) END,
           CASE WHEN r -> 'row' ->> c.column_name IS NOT NULL
                THEN guardian._redact(r -> 'row' ->> c.column_name, c.kind, guardian._anchors(c.kind, c.column_name)) END,
           p_source, p_alert, guardian._actor()
      FROM jsonb_array_elements(p_rows) AS r,
           unnest(v_watch.column_names, v_watch.column_kinds) AS c(column_name, kind)
      JOIN guardian.kinds AS k ON k.kind = c.kind
     -- a row that was read keeps its non-empty values; one still to be read keeps a placeholder
     WHERE jsonb_typeof(r -> 'row') IS DISTINCT FROM 'object' OR coalesce(r -> 'row' ->> c.column_name, '') <> ''
    ON CONFLICT ON CONSTRAINT labels_pkey DO UPDATE
       SET label = EXCLUDED.label,
           kind = EXCLUDED.kind,
           value = coalesce(EXCLUDED.value, CASE WHEN EXCLUDED.sample IS NULL THEN l.value END),
           sample = coalesce(EXCLUDED.sample, l.sample),
           source = EXCLUDED.source,
           alert_id = coalesce(EXCLUDED.alert_id, l.alert_id),
           labelled_at = EXCLUDED.labelled_at,
           labelled_by = EXCLUDED.labelled_by;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION guardian._store_labels(regclass, text, jsonb, text, uuid) IS
    'Internal: keeps the labels of rows the caller read ([{"record_id", "row"}]), one per watched column; a NULL row keeps a placeholder to be filled in.';

-- The rows of a table with the given record ids, as a scan would name them, read as the caller
-- without running application code (see guardian._scan_row_json), then from the quarantine
-- (rows a cleanup removed).
CREATE FUNCTION guardian._label_rows(p_table regclass, p_record_ids text[])
RETURNS TABLE (record_id text, row_data jsonb)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    v_watch guardian.watched_tables := guardian._scan_plan(p_table);
    v_key   text := v_watch.key_columns[1];
    v_type  oid;
    v_row   text := guardian._scan_row_json(p_table);
BEGIN
    SELECT a.atttypid INTO v_type
      FROM pg_catalog.pg_attribute AS a
     WHERE a.attrelid = p_table AND a.attname = v_key AND NOT a.attisdropped;
    IF cardinality(v_watch.key_columns) = 1 AND guardian._json_safe_type(v_type)
       AND coalesce(v_watch.column_kinds[array_position(v_watch.column_names, v_key)], '')
           NOT IN ('email', 'phone', 'person_name') THEN
        -- the id is the key's own text: look the rows up by key (an index scan)
        BEGIN
            RETURN QUERY EXECUTE format(
                'SELECT (guardian._record_ref($1, %1$s)).record_id, %1$s FROM %2$s AS t
                  WHERE t.%3$I OPERATOR(pg_catalog.=) ANY ($2::%4$s[])',
                v_row, p_table, v_key, pg_catalog.format_type(v_type, NULL))
                USING v_watch, p_record_ids;
        EXCEPTION WHEN invalid_text_representation OR numeric_value_out_of_range OR invalid_datetime_format THEN
            RAISE EXCEPTION 'a record id of % is not a valid %', p_table, pg_catalog.format_type(v_type, NULL)
                USING ERRCODE = 'invalid_parameter_value', DETAIL = SQLERRM,
                      HINT = format('Record ids are the values of %I, as guardian.scan() shows them.', v_key);
        END;
    ELSE
        RETURN QUERY EXECUTE format(
            'SELECT x.record_id, x.row_data
               FROM (SELECT (guardian._record_ref($1, %1$s)).record_id, %1$s AS row_data FROM %2$s AS t) AS x
              WHERE x.record_id OPERATOR(pg_catalog.=) ANY ($2)', v_row, p_table)
            USING v_watch, p_record_ids;
    END IF;
    IF pg_catalog.has_table_privilege('guardian.quarantine', 'SELECT') THEN
        RETURN QUERY
            SELECT DISTINCT ON (x.record_id) x.record_id, x.row_data
              FROM (SELECT (guardian._record_ref(v_watch, q.row_data)).record_id, q.row_data, q.seq
                      FROM guardian.quarantine AS q
                     WHERE q.relid = p_table AND q.action = 'delete') AS x
             WHERE x.record_id = ANY (p_record_ids)
             ORDER BY x.record_id, x.seq DESC;
    END IF;
END
$$;
COMMENT ON FUNCTION guardian._label_rows(regclass, text[]) IS
    'Internal: the rows (as JSON) with these record ids, from the table as the caller reads it, else from the quarantine.';

-- Labels from an alert are kept before anyone has read the rows: fill in their values.
CREATE FUNCTION guardian._fill_labels(p_table regclass)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_group record;
    v_count integer := 0;
BEGIN
    FOR v_group IN
        SELECT l.label, l.source, l.alert_id, array_agg(DISTINCT l.record_id) AS ids
          FROM guardian.labels AS l
          JOIN guardian.kinds AS k ON k.kind = l.kind
         WHERE l.relid = p_table AND l.value IS NULL AND l.sample IS NULL
         GROUP BY l.label, l.source, l.alert_id
    LOOP
        v_count := v_count + guardian._store_labels(p_table, v_group.label,
            (SELECT coalesce(jsonb_agg(DISTINCT jsonb_build_object('record_id', r.record_id, 'row', r.row_data)), '[]')
               FROM guardian._label_rows(p_table, v_group.ids) AS r),
            v_group.source, v_group.alert_id);
    END LOOP;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION guardian._fill_labels(regclass) IS
    'Internal: reads (as the caller) the values of labelled records that were labelled without them (from an alert).';

CREATE FUNCTION guardian.label_records(p_table regclass, p_record_ids text[], p_label text)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_ids     text[];
    v_rows    jsonb;
    v_missing text[];
BEGIN
    IF p_label IS NULL OR p_label NOT IN ('test', 'real') THEN
        RAISE EXCEPTION 'unknown label %', coalesce(quote_literal(p_label), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Label records ''test'' (test data) or ''real'', e.g. SELECT guardian.label_records(''public.patients'', ARRAY[''42''], ''test'');';
    END IF;
    IF p_table IS NULL THEN
        RAISE EXCEPTION 'table must not be NULL'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'e.g. SELECT guardian.label_records(''public.patients'', ARRAY[''42''], ''test'');';
    END IF;
    IF (SELECT c.relkind FROM pg_catalog.pg_class AS c WHERE c.oid = p_table) NOT IN ('r', 'p', 'f', 'm') THEN
        RAISE EXCEPTION '% is not a table', p_table
            USING ERRCODE = 'wrong_object_type', HINT = 'Label the records of the table a view reads from.';
    END IF;
    v_ids := ARRAY(SELECT DISTINCT i FROM unnest(p_record_ids) AS i);
    IF coalesce(cardinality(v_ids), 0) = 0 OR array_position(v_ids, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'no record ids given (or a NULL among them) for %', p_table
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Record ids are primary keys as text, as guardian.scan() returns them.';
    END IF;
    IF jsonb_array_length((guardian._scan_plan(p_table)).columns) = 0 THEN
        RAISE EXCEPTION '% has no column a rule could apply to', p_table
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Labels keep the values of watched columns: watch the table with column kinds, e.g. guardian.watch(''public.t'', ''{"note": "free_text"}'').';
    END IF;
    PERFORM guardian._refuse_app_code(ARRAY[p_table], format('guardian.label_records(%L)', p_table::text),
                                      p_runs => ARRAY['read']);
    SELECT coalesce(jsonb_agg(jsonb_build_object('record_id', r.record_id, 'row', r.row_data)), '[]')
      INTO v_rows
      FROM (SELECT DISTINCT ON (x.record_id) x.record_id, x.row_data
              FROM guardian._label_rows(p_table, v_ids) AS x ORDER BY x.record_id) AS r;
    v_missing := ARRAY(SELECT i FROM unnest(v_ids) AS i
                        WHERE NOT v_rows @> jsonb_build_array(jsonb_build_object('record_id', i)) ORDER BY 1);
    IF cardinality(v_missing) > 0 THEN
        RAISE EXCEPTION '% of % record ids are not rows of %: %', cardinality(v_missing), cardinality(v_ids), p_table,
                        array_to_string(ARRAY(SELECT quote_literal(m) FROM unnest(v_missing[1:5]) AS m), ', ')
                        || CASE WHEN cardinality(v_missing) > 5 THEN ', ...' ELSE '' END
            USING ERRCODE = 'no_data_found',
                  DETAIL = 'Nothing was labelled.',
                  HINT = 'Record ids are primary keys as text, as guardian.scan() returns them; list the table''s with SELECT DISTINCT record_id FROM guardian.scan(...).';
    END IF;
    PERFORM guardian._store_labels(p_table, p_label, v_rows);
    PERFORM guardian._fill_labels(p_table);
    RETURN jsonb_array_length(v_rows);
END
$$;
COMMENT ON FUNCTION guardian.label_records(regclass, text[], text) IS
    'Label records (primary keys as text, as guardian.scan() names them) ''test'' or ''real'': each watched column''s value is kept (normalised, or masked where the kind redacts) for guardian.suggest_rules() to learn from. Rows a cleanup quarantined can be labelled too. Returns the number of records labelled; unknown ids label nothing.';

-- Resolving a contamination alert labels its records: cleaned or confirmed means test data,
-- false_positive (an allowlist entry, or said so) means real. Values come from the quarantine
-- when a cleanup removed the rows; the others are read by the next label_records() or
-- suggest_rules() of someone who can read the table.
CREATE FUNCTION guardian._label_alert(p_alert uuid, p_outcome text)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_table regclass;
    v_ids   text[];
    v_count integer := 0;
BEGIN
    IF p_outcome IS NULL OR p_outcome NOT IN ('cleaned', 'confirmed', 'false_positive') THEN
        RETURN 0;
    END IF;
    FOR v_table, v_ids IN
        SELECT f.relid, array_agg(DISTINCT f.record_id)
          FROM guardian.findings AS f
         WHERE f.alert_id = p_alert AND f.record_id IS NOT NULL
           AND EXISTS (SELECT FROM pg_catalog.pg_class AS c WHERE c.oid = f.relid)
         GROUP BY f.relid
    LOOP
        v_count := v_count + guardian._store_labels(v_table,
            CASE WHEN p_outcome = 'false_positive' THEN 'real' ELSE 'test' END,
            (SELECT jsonb_agg(jsonb_build_object('record_id', i, 'row', q.row_data))
               FROM unnest(v_ids) AS i
               LEFT JOIN (SELECT DISTINCT ON (x.record_id) x.record_id, x.row_data
                            FROM (SELECT (guardian._record_ref(guardian._scan_plan(v_table), q.row_data)).record_id,
                                         q.row_data, q.seq
                                    FROM guardian.quarantine AS q
                                   WHERE q.relid = v_table AND q.action = 'delete') AS x
                           ORDER BY x.record_id, x.seq DESC) AS q ON q.record_id = i),
            'alert', p_alert);
    END LOOP;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION guardian._label_alert(uuid, text) IS
    'Internal: the labels a resolved contamination alert gives its records (cleaned/confirmed: test, false_positive: real).';
