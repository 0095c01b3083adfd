CREATE TABLE guardian.watched_tables (
    relid      regclass PRIMARY KEY,
    columns    jsonb NOT NULL,
    column_names text[] NOT NULL DEFAULT '{}',
    column_kinds text[] NOT NULL DEFAULT '{}',
    column_types text[] NOT NULL DEFAULT '{}',
    key_columns text[],
    key_source text NOT NULL,
    watched_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    watched_by text NOT NULL DEFAULT SESSION_USER,
    column_attnums smallint[] NOT NULL DEFAULT '{}',
    overrides  jsonb
);
COMMENT ON TABLE guardian.watched_tables IS
    'Tables the guardian watches: the kind of each watched column and how records are identified. Change with guardian.watch() / guardian.unwatch().';
COMMENT ON COLUMN guardian.watched_tables.columns IS
    'JSON array of {"column", "kind", "source", "type"}: source is auto (inferred from name and type) or override.';
COMMENT ON COLUMN guardian.watched_tables.column_names IS
    'The watched columns again as arrays (names, kinds, types) for the write path, which loops over them.';
COMMENT ON COLUMN guardian.watched_tables.column_attnums IS
    'The attribute number of each watched column: a renamed column is still the same column (names are brought up to date by the DDL event trigger).';
COMMENT ON COLUMN guardian.watched_tables.overrides IS
    'The column overrides given to watch(), by attribute number ({"3": "free_text", "5": null}), so that a rename keeps them.';
SELECT pg_catalog.pg_extension_config_dump('guardian.watched_tables', '');

-- One row per contaminated value found, by the triggers or by a recorded scan. Alerts group
-- them (one per table and rule); every affected record stays findable here.
CREATE TABLE guardian.findings (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id    uuid REFERENCES guardian.monitoring_alerts (id) ON DELETE SET NULL,
    relid       regclass NOT NULL,
    record_id   text,
    record_key  jsonb,
    column_name text NOT NULL,
    rule        text NOT NULL,
    severity    text NOT NULL,
    sample      text,
    operation   text NOT NULL,
    backend_pid integer NOT NULL DEFAULT pg_catalog.pg_backend_pid(),
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp()
);
COMMENT ON TABLE guardian.findings IS
    'Every contaminated value the guardian found (trigger or recorded scan), with the alert that reported it.';
SELECT pg_catalog.pg_extension_config_dump('guardian.findings', '');
SELECT pg_catalog.pg_extension_config_dump('guardian.findings_id_seq', '');
CREATE INDEX findings_alert_id_idx ON guardian.findings (alert_id);
CREATE INDEX findings_pending_idx ON guardian.findings (backend_pid, relid) WHERE alert_id IS NULL;
CREATE INDEX findings_created_at_idx ON guardian.findings (created_at);

CREATE FUNCTION guardian._infer_kind(p_table text, p_column text, p_type regtype)
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_col   text := lower(p_column);
    v_table text := lower(coalesce(p_table, ''));
BEGIN
    IF p_type = 'uuid'::regtype THEN
        RETURN 'identifier';
    END IF;
    IF p_type NOT IN ('text'::regtype, 'character varying'::regtype, 'character'::regtype, 'name'::regtype)
       AND (SELECT t.typname FROM pg_catalog.pg_type AS t WHERE t.oid = p_type) IS DISTINCT FROM 'citext' THEN
        RETURN NULL;
    END IF;
    RETURN CASE
        WHEN v_col ~ '(^|_)(e_?mail|mail_address)(_|$)|^email' THEN 'email'
        WHEN v_col ~ '(^|_)(phone|mobile|tel|telephone|fax|cell|msisdn)(_|$)' THEN 'phone'
        WHEN v_col ~ '^(first|last|middle|given|family|full|display|maiden|nick|preferred|legal)_?name$'
          OR v_col ~ '^(surname|forename|firstname|lastname|fullname|givenname|familyname)$'
          OR v_col ~ '^(patient|contact|user|customer|member|owner|parent|guardian|doctor|dentist|provider|employee|staff|person|holder|emergency_contact|recipient|sender)_?name$'
            THEN 'person_name'
        WHEN v_col ~ '^(clinic|practice|company|organi[sz]ation|org|business|tenant|office|hospital|lab|vendor|employer|insurer|insurance|account)(_?name)?$'
            THEN 'organization'
        WHEN v_col IN ('name', 'title', 'display') THEN
            CASE WHEN v_table ~ '(clinic|practice|org|compan|tenant|business|office|account|vendor|lab|hospital|insurer|team|workspace)' THEN 'organization'
                 WHEN v_table ~ '(user|patient|person|people|customer|member|contact|employee|staff|doctor|dentist|provider|client)' THEN 'person_name'
                 ELSE 'free_text' END
        WHEN v_col ~ '(^id$|_id$|^uuid$|_uuid$|^guid$|_guid$|external_?id)' THEN 'identifier'
        ELSE 'free_text'
    END;
END
$$;
COMMENT ON FUNCTION guardian._infer_kind(text, text, regtype) IS
    'Internal: the kind of a column (or JSON key) from its name, its table''s name and its type (NULL: not watched).';

CREATE FUNCTION guardian._guard_watchable(p_table regclass)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_class pg_catalog.pg_class;
    v_root  regclass;
BEGIN
    IF p_table IS NULL THEN
        RAISE EXCEPTION 'table must not be NULL'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass a table, e.g. SELECT guardian.watch(''public.patients'');';
    END IF;
    SELECT * INTO v_class FROM pg_catalog.pg_class AS c WHERE c.oid = p_table;
    IF v_class.relkind IN ('v', 'm') THEN
        RAISE EXCEPTION '% is a %, not a table', p_table, CASE v_class.relkind WHEN 'v' THEN 'view' ELSE 'materialized view' END
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Watch the table(s) the view reads from instead.';
    END IF;
    IF v_class.relkind NOT IN ('r', 'p', 'f') THEN
        RAISE EXCEPTION '% is not a table (relkind %)', p_table, v_class.relkind
            USING ERRCODE = 'wrong_object_type', HINT = 'Only tables, partitioned tables and foreign tables can be watched.';
    END IF;
    IF v_class.relnamespace IN ('guardian'::regnamespace, 'pg_catalog'::regnamespace, 'information_schema'::regnamespace)
       OR (SELECT n.nspname FROM pg_catalog.pg_namespace AS n WHERE n.oid = v_class.relnamespace) LIKE 'guardian\_%'
       OR (SELECT n.nspname FROM pg_catalog.pg_namespace AS n WHERE n.oid = v_class.relnamespace) IN ('cron', 'pg_toast') THEN
        RAISE EXCEPTION '% belongs to the guardian or the system and cannot be watched', p_table
            USING ERRCODE = 'insufficient_privilege', HINT = 'Watch your application''s own tables.';
    END IF;
    IF v_class.relispartition THEN
        v_root := pg_partition_root(p_table);
        IF EXISTS (SELECT FROM guardian.watched_tables AS w WHERE w.relid = v_root) THEN
            RAISE EXCEPTION '% is a partition of %, which is already watched', p_table, v_root
                USING ERRCODE = 'duplicate_object',
                      HINT = 'Partitions of a watched table are watched through it; nothing to do.';
        END IF;
    END IF;
END
$$;
COMMENT ON FUNCTION guardian._guard_watchable(regclass) IS 'Internal: refuses views, system and guardian tables, and partitions of watched tables.';

CREATE FUNCTION guardian._record_key(p_table regclass, OUT key_columns text[], OUT key_source text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- The primary key, else the first unique index without expressions or predicate.
    SELECT coalesce(k.cols, NULL), coalesce(k.source, 'row fingerprint')
      FROM (SELECT 1) AS one
      LEFT JOIN LATERAL (
          SELECT ARRAY(SELECT a.attname::text FROM unnest(i.indkey) WITH ORDINALITY AS u(attnum, ord)
                         JOIN pg_catalog.pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = u.attnum
                        ORDER BY u.ord) AS cols,
                 CASE WHEN i.indisprimary THEN 'primary key'
                      ELSE format('unique index %s', i.indexrelid::regclass) END AS source
            FROM pg_catalog.pg_index AS i
           WHERE i.indrelid = p_table AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
             AND 0 <> ALL (i.indkey::int2[])
           ORDER BY i.indisprimary DESC, i.indexrelid
           LIMIT 1) AS k ON true
$$;
COMMENT ON FUNCTION guardian._record_key(regclass) IS
    'Internal: the columns that identify a record (primary key, else a unique index; NULL: a fingerprint of the row).';

CREATE FUNCTION guardian._plan_watch(p_table regclass, p_columns jsonb)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_key    text;
    v_kind   text;
    v_result jsonb := '[]';
    v_col    record;
BEGIN
    IF p_columns IS NOT NULL AND jsonb_typeof(p_columns) <> 'object' THEN
        RAISE EXCEPTION 'column overrides must be a JSON object, not %', p_columns
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Map column names to kinds (or null to skip), e.g. ''{"notes": "free_text", "code": null}''.';
    END IF;
    FOR v_key IN SELECT jsonb_object_keys(coalesce(p_columns, '{}')) LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_attribute AS a
                        WHERE a.attrelid = p_table AND a.attname = v_key AND a.attnum > 0 AND NOT a.attisdropped) THEN
            RAISE EXCEPTION 'table % has no column %', p_table, quote_ident(v_key)
                USING ERRCODE = 'undefined_column',
                      HINT = 'Column overrides name existing columns; check the spelling.';
        END IF;
        v_kind := p_columns ->> v_key;
        IF v_kind IS NOT NULL AND NOT EXISTS (SELECT FROM guardian.kinds AS k WHERE k.kind = v_kind) THEN
            RAISE EXCEPTION 'unknown kind % for column %', quote_literal(v_kind), quote_ident(v_key)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Known kinds: ' || (SELECT string_agg(k.kind, ', ' ORDER BY k.kind) FROM guardian.kinds AS k) || ', or null to skip the column.';
        END IF;
    END LOOP;
    FOR v_col IN
        SELECT a.attname, a.atttypid::regtype AS typ
          FROM pg_catalog.pg_attribute AS a
         WHERE a.attrelid = p_table AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY a.attnum
    LOOP
        IF p_columns ? v_col.attname THEN
            CONTINUE WHEN p_columns -> v_col.attname = 'null'::jsonb;
            v_result := v_result || jsonb_build_object('column', v_col.attname, 'kind', p_columns ->> v_col.attname,
                                                       'source', 'override', 'type', v_col.typ::text);
        ELSE
            v_kind := guardian._infer_kind((SELECT c.relname FROM pg_catalog.pg_class AS c WHERE c.oid = p_table), v_col.attname, v_col.typ);
            CONTINUE WHEN v_kind IS NULL;
            v_result := v_result || jsonb_build_object('column', v_col.attname, 'kind', v_kind,
                                                       'source', 'auto', 'type', v_col.typ::text);
        END IF;
    END LOOP;
    RETURN v_result;
END
$$;
COMMENT ON FUNCTION guardian._plan_watch(regclass, jsonb) IS 'Internal: which columns to watch, as which kind.';

-- The watched_tables row a plan makes: the plan, the same columns as arrays for the write path,
-- and how records are identified. watch() stores it; a scan of an unwatched table uses it as is.
CREATE FUNCTION guardian._watch_record(p_table regclass, p_plan jsonb, p_columns jsonb DEFAULT NULL)
RETURNS guardian.watched_tables
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p_table, p_plan,
           ARRAY(SELECT c ->> 'column' FROM jsonb_array_elements(p_plan) WITH ORDINALITY AS x(c, o) ORDER BY o),
           ARRAY(SELECT c ->> 'kind' FROM jsonb_array_elements(p_plan) WITH ORDINALITY AS x(c, o) ORDER BY o),
           ARRAY(SELECT c ->> 'type' FROM jsonb_array_elements(p_plan) WITH ORDINALITY AS x(c, o) ORDER BY o),
           k.key_columns, k.key_source, now(), SESSION_USER::text,
           ARRAY(SELECT a.attnum FROM jsonb_array_elements(p_plan) WITH ORDINALITY AS x(c, o)
                   JOIN pg_catalog.pg_attribute AS a
                     ON a.attrelid = p_table AND a.attname = x.c ->> 'column' AND NOT a.attisdropped
                  ORDER BY x.o),
           (SELECT jsonb_object_agg(a.attnum::text, o.value)
              FROM jsonb_each(p_columns) AS o
              JOIN pg_catalog.pg_attribute AS a ON a.attrelid = p_table AND a.attname = o.key AND NOT a.attisdropped)
      FROM guardian._record_key(p_table) AS k
$$;
COMMENT ON FUNCTION guardian._watch_record(regclass, jsonb, jsonb) IS
    'Internal: the guardian.watched_tables row for a table, a watch plan and the overrides it was made from.';

-- Where each watched column of a watch is in a relation of its tree: the root's attnums name
-- the columns, and a partition (whose attnums may differ) has them under the same names.
CREATE FUNCTION guardian._watched_attnums(p_watch guardian.watched_tables, p_rel regclass)
RETURNS smallint[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_rel = p_watch.relid THEN
        RETURN p_watch.column_attnums;
    END IF;
    RETURN ARRAY(SELECT p.attnum
                   FROM unnest(p_watch.column_attnums) WITH ORDINALITY AS u(attnum, o)
                   JOIN pg_catalog.pg_attribute AS r ON r.attrelid = p_watch.relid AND r.attnum = u.attnum
                   JOIN pg_catalog.pg_attribute AS p ON p.attrelid = p_rel AND p.attname = r.attname
                                                     AND NOT p.attisdropped
                  ORDER BY u.o);
END
$$;
COMMENT ON FUNCTION guardian._watched_attnums(guardian.watched_tables, regclass) IS
    'Internal: the attnums of a watch''s columns in a table of its tree (the root itself or a partition).';

-- The value expression a WHEN clause tests for one column.
CREATE FUNCTION guardian._column_test(p_ref text, p_column jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN p_column ->> 'type' = 'uuid' THEN
            format('guardian._uuid_matches(%s.%I, guardian._uuid_bounds(%L))', p_ref, p_column ->> 'column', p_column ->> 'column')
        -- Text types read as they are; any other type through its output function
        -- (format), never through a cast the application may have defined.
        WHEN p_column ->> 'type' IN ('text', 'character varying', 'character', 'name') THEN
            format('guardian._contains_any(%s.%I::text, guardian._anchors(%L, %L))', p_ref, p_column ->> 'column',
                   p_column ->> 'kind', p_column ->> 'column')
        ELSE
            format('guardian._contains_any(pg_catalog.format(%L, %s.%I), guardian._anchors(%L, %L))', '%s', p_ref,
                   p_column ->> 'column', p_column ->> 'kind', p_column ->> 'column')
    END
$$;
COMMENT ON FUNCTION guardian._column_test(text, jsonb) IS 'Internal: the prefilter expression for one column of a WHEN clause.';

-- What the C prefilter of a table (or partition) needs: for each watched column its attnum in
-- that relation, and its anchors (text) or UUID ranges (uuid), from the compiled rules.
CREATE FUNCTION guardian._prefilter_spec(p_table regclass, p_any_mode boolean DEFAULT false)
RETURNS TABLE (attnum smallint, is_uuid boolean, anchors text[], bounds uuid[])
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_watch guardian.watched_tables := guardian._watch_of(p_table);
BEGIN
    IF v_watch.relid IS NULL AND p_any_mode THEN
        v_watch := guardian._scan_plan(p_table);   -- a scan of a table that is not watched
    END IF;
    -- In off mode the write-path prefilter has nothing to look for.
    IF v_watch.relid IS NULL OR (NOT p_any_mode AND guardian.effective_mode(v_watch.relid) = 'off') THEN
        RETURN;
    END IF;
    RETURN QUERY
        SELECT a.attnum, c.typ = 'uuid',
               CASE WHEN c.typ <> 'uuid' THEN guardian._anchors(c.kind, c.name) END,
               CASE WHEN c.typ = 'uuid' THEN guardian._uuid_bounds(c.name) END
          FROM unnest(v_watch.column_names, v_watch.column_kinds, v_watch.column_types,
                      guardian._watched_attnums(v_watch, p_table)) AS c(name, kind, typ, attnum)
          JOIN pg_catalog.pg_attribute AS a
            ON a.attrelid = p_table AND a.attnum = c.attnum AND NOT a.attisdropped
         ORDER BY a.attnum;
END
$$;
COMMENT ON FUNCTION guardian._prefilter_spec(regclass, boolean) IS
    'Internal: per watched column of a table, its attnum and prefilter anchors or UUID ranges (read by the C prefilter); nothing in off mode unless p_any_mode (scans).';

CREATE FUNCTION guardian._trigger_ddl(p_table regclass, p_columns jsonb)
RETURNS text[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_insert text;
    v_update text;
    v_c      boolean;
    v_ddl    text[] := '{}';
BEGIN
    IF jsonb_array_length(p_columns) > 0 THEN
        SELECT string_agg(guardian._column_test('NEW', c), E'\n     OR ' ORDER BY o),
               string_agg(format('(NEW.%I IS DISTINCT FROM OLD.%I AND %s)', c ->> 'column', c ->> 'column',
                                 guardian._column_test('NEW', c)), E'\n     OR ' ORDER BY o)
          INTO v_insert, v_update
          FROM jsonb_array_elements(p_columns) WITH ORDINALITY AS x(c, o);
        -- With the C library, one call checks the whole row (a small WHEN clause is cheap to
        -- prepare for every statement); without it, one SQL test per column.
        IF to_regprocedure('guardian._suspect(record)') IS NOT NULL THEN
            v_insert := 'guardian._suspect(NEW)';
            v_update := 'guardian._suspect(NEW, OLD)';
        END IF;
        v_ddl := v_ddl || format(
            E'CREATE TRIGGER guardian_contamination_insert AFTER INSERT ON %s\n  FOR EACH ROW WHEN (%s)\n  EXECUTE FUNCTION guardian._on_contamination()',
            p_table, v_insert);
        -- Every UPDATE, not UPDATE OF the watched columns: a BEFORE trigger of the application
        -- may change a watched column that the statement does not name.
        v_ddl := v_ddl || format(
            E'CREATE TRIGGER guardian_contamination_update AFTER UPDATE ON %s\n  FOR EACH ROW WHEN (%s)\n  EXECUTE FUNCTION guardian._on_contamination()',
            p_table, v_update);
    END IF;
    -- The C statement triggers where the library is installed, else the PL/pgSQL ones.
    v_c := to_regprocedure('guardian._activity_end()') IS NOT NULL;
    v_ddl := v_ddl || ARRAY(
        SELECT s.ddl FROM guardian._relation_tree(p_table) AS p,
               LATERAL guardian._statement_trigger_ddl(p.relid, v_c) AS s
         ORDER BY p.level, p.relid::text, s.name);
    RETURN v_ddl;
END
$$;
COMMENT ON FUNCTION guardian._trigger_ddl(regclass, jsonb) IS 'Internal: the CREATE TRIGGER statements that watch a table.';

-- Statement triggers are not inherited by partitions: each relation of a watched tree carries
-- its own (watch() makes them; the DDL event trigger adds them to new partitions).
CREATE FUNCTION guardian._statement_trigger_ddl(p_rel regclass, p_c boolean)
RETURNS TABLE (name text, ddl text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT t.name,
           CASE WHEN t.name = 'guardian_truncate'
                THEN format('CREATE TRIGGER guardian_truncate AFTER TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION guardian._on_truncate()', p_rel)
                ELSE format('CREATE TRIGGER %I %s INSERT OR UPDATE OR DELETE ON %s FOR EACH STATEMENT EXECUTE FUNCTION guardian.%I(%L)',
                            t.name, t.timing, p_rel, CASE WHEN p_c THEN t.c_func ELSE t.sql_func END, c.relkind) END
      FROM pg_catalog.pg_class AS c
     CROSS JOIN (VALUES ('guardian_activity', 'AFTER', '_activity_end', '_on_statement'),
                        ('guardian_activity_start', 'BEFORE', '_activity_start', '_before_statement'),
                        ('guardian_truncate', 'AFTER', NULL, NULL)) AS t(name, timing, c_func, sql_func)
     WHERE c.oid = p_rel
     ORDER BY t.name
$$;
COMMENT ON FUNCTION guardian._statement_trigger_ddl(regclass, boolean) IS
    'Internal: the statement triggers (activity before and after, TRUNCATE) of one relation of a watched tree.';

CREATE FUNCTION guardian._relation_tree(p_table regclass)
RETURNS TABLE (relid regclass, level integer, isleaf boolean)
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    -- pg_partition_tree() is empty for a table that is not partitioned: it is its own tree.
    SELECT p.relid, p.level, p.isleaf FROM pg_partition_tree(p_table) AS p
    UNION ALL
    SELECT p_table, 0, true WHERE NOT EXISTS (SELECT FROM pg_partition_tree(p_table))
$$;
COMMENT ON FUNCTION guardian._relation_tree(regclass) IS 'Internal: a table and, if partitioned, all its partitions.';

CREATE FUNCTION guardian._trigger_names(p_columns jsonb)
RETURNS text[]
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN jsonb_array_length(p_columns) > 0
                THEN ARRAY['guardian_activity', 'guardian_activity_start', 'guardian_contamination_insert',
                           'guardian_contamination_update', 'guardian_truncate']
                ELSE ARRAY['guardian_activity', 'guardian_activity_start', 'guardian_truncate'] END
$$;
COMMENT ON FUNCTION guardian._trigger_names(jsonb) IS 'Internal: the guardian triggers a watched table carries.';

CREATE FUNCTION guardian._drop_watch_triggers(p_table regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_name name;
    v_rel  regclass;
BEGIN
    -- Statement triggers are not inherited by partitions: each partition carries its own.
    FOR v_rel, v_name IN
        SELECT t.tgrelid::regclass, t.tgname FROM pg_catalog.pg_trigger AS t
         WHERE t.tgrelid IN (SELECT p.relid FROM guardian._relation_tree(p_table) AS p)
           AND NOT t.tgisinternal AND t.tgparentid = 0
           AND t.tgfoid IN (SELECT p.oid FROM pg_catalog.pg_proc AS p WHERE p.pronamespace = 'guardian'::regnamespace)
    LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', v_name, v_rel);
    END LOOP;
END
$$;
COMMENT ON FUNCTION guardian._drop_watch_triggers(regclass) IS 'Internal: removes the guardian triggers from a table.';

CREATE FUNCTION guardian._register_watch(p_table regclass, p_plan jsonb, p_columns jsonb DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_plan IS NULL THEN
        DELETE FROM guardian.watched_tables AS w WHERE w.relid = p_table;
        RETURN;
    END IF;
    INSERT INTO guardian.watched_tables AS w
    SELECT (guardian._watch_record(p_table, p_plan, p_columns)).*
    ON CONFLICT (relid) DO UPDATE
       SET columns = EXCLUDED.columns, column_names = EXCLUDED.column_names,
           column_kinds = EXCLUDED.column_kinds, column_types = EXCLUDED.column_types,
           column_attnums = EXCLUDED.column_attnums, overrides = EXCLUDED.overrides,
           key_columns = EXCLUDED.key_columns, key_source = EXCLUDED.key_source,
           watched_at = EXCLUDED.watched_at, watched_by = EXCLUDED.watched_by;
END
$$;
COMMENT ON FUNCTION guardian._register_watch(regclass, jsonb, jsonb) IS
    'Internal: records (or with a NULL plan forgets) a watched table; called by watch() and unwatch().';

-- After DDL on a watched table (renamed or added columns, a new key) its watch is planned
-- again from the catalog and the overrides it was given, which are kept by column number.
-- Safe for anyone to call: it takes nothing from the caller but a table, and only re-reads
-- the catalog.
CREATE FUNCTION guardian._refresh_watch(p_table regclass)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_watch   guardian.watched_tables;
    v_columns jsonb;
    v_plan    jsonb;
BEGIN
    SELECT * INTO v_watch FROM guardian.watched_tables AS w WHERE w.relid = p_table FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT jsonb_object_agg(a.attname, o.value) INTO v_columns
      FROM jsonb_each(coalesce(v_watch.overrides, '{}')) AS o
      JOIN pg_catalog.pg_attribute AS a ON a.attrelid = p_table AND a.attnum = o.key::smallint AND NOT a.attisdropped;
    v_plan := guardian._plan_watch(p_table, v_columns);
    IF v_plan IS NOT DISTINCT FROM v_watch.columns
       AND (guardian._watch_record(p_table, v_plan, v_columns)).key_columns IS NOT DISTINCT FROM v_watch.key_columns THEN
        RETURN NULL;
    END IF;
    PERFORM guardian._register_watch(p_table, v_plan, v_columns);
    RETURN jsonb_build_object('before', v_watch.columns, 'after', v_plan);
END
$$;
COMMENT ON FUNCTION guardian._refresh_watch(regclass) IS
    'Internal: plans a watched table''s columns again after DDL (renames, new columns, a new key), keeping its overrides; returns the change or NULL.';

CREATE FUNCTION guardian.watch(p_table regclass, p_columns jsonb DEFAULT NULL, p_mode text DEFAULT NULL)
RETURNS TABLE (column_name text, kind text, source text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_plan     jsonb;
    v_key      record;
    v_ddl      text[];
    v_existing text[];
    v_stmt     text;
BEGIN
    IF NOT guardian._is_admin() THEN
        RAISE EXCEPTION 'role % may not watch tables', CURRENT_USER
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Ask for guardian_admin: GRANT guardian_admin TO ' || quote_ident(CURRENT_USER) || ';';
    END IF;
    PERFORM guardian._guard_watchable(p_table);
    v_plan := guardian._plan_watch(p_table, p_columns);
    v_key := guardian._record_key(p_table);
    IF v_key.key_columns IS NULL THEN
        RAISE NOTICE '% has no primary key or unique index: findings identify rows by a fingerprint of their values', p_table
            USING HINT = 'Add a primary key so that alerts name the exact record.';
    END IF;
    v_ddl := guardian._trigger_ddl(p_table, v_plan);
    SELECT array_agg(t.tgname::text ORDER BY t.tgname) INTO v_existing
      FROM pg_catalog.pg_trigger AS t
     WHERE t.tgrelid = p_table AND t.tgparentid = 0 AND t.tgname LIKE 'guardian\_%';
    -- Idempotent: recreate the triggers only when the plan changed or one is missing.
    IF v_existing IS DISTINCT FROM (SELECT array_agg(x ORDER BY x) FROM unnest(guardian._trigger_names(v_plan)) AS x)
       OR v_plan IS DISTINCT FROM (SELECT w.columns FROM guardian.watched_tables AS w WHERE w.relid = p_table) THEN
        PERFORM guardian._drop_watch_triggers(p_table);
        FOREACH v_stmt IN ARRAY v_ddl LOOP
            EXECUTE v_stmt;
        END LOOP;
    END IF;
    PERFORM guardian._register_watch(p_table, v_plan, p_columns);
    -- The guardian may read the key columns (nothing else), so that it can check for itself
    -- that an automatic cleanup really removed the records it reports removed.
    IF v_key.key_columns IS NOT NULL THEN
        BEGIN
            EXECUTE format('GRANT USAGE ON SCHEMA %I TO guardian_owner',
                           (SELECT n.nspname FROM pg_catalog.pg_class AS c JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
                             WHERE c.oid = p_table));
            EXECUTE format('GRANT SELECT (%s) ON %s TO guardian_owner',
                           (SELECT string_agg(format('%I', k), ', ') FROM unnest(v_key.key_columns) AS k), p_table);
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'pg_guardian: % may not grant guardian_owner SELECT on the key of %: automatic cleanups there stay unconfirmed', CURRENT_USER, p_table
                USING HINT = format('The table''s owner can run: GRANT SELECT (%s) ON %s TO guardian_owner;',
                                    (SELECT string_agg(format('%I', k), ', ') FROM unnest(v_key.key_columns) AS k), p_table);
        END;
    END IF;
    IF p_mode IS NOT NULL THEN
        PERFORM guardian.set_table_mode(p_table, p_mode);
    END IF;
    RETURN QUERY SELECT c ->> 'column', c ->> 'kind', c ->> 'source' FROM jsonb_array_elements(v_plan) AS c;
END
$$;
COMMENT ON FUNCTION guardian.watch(regclass, jsonb, text) IS
    'Watch a table for test data: columns are mapped to kinds from their names and types (override with p_columns, e.g. ''{"notes": "free_text", "code": null}''), optional per-table mode. Idempotent. Returns the watched columns.';

CREATE FUNCTION guardian.unwatch(p_table regclass)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT guardian._is_admin() THEN
        RAISE EXCEPTION 'role % may not unwatch tables', CURRENT_USER
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Ask for guardian_admin: GRANT guardian_admin TO ' || quote_ident(CURRENT_USER) || ';';
    END IF;
    IF NOT EXISTS (SELECT FROM guardian.watched_tables AS w WHERE w.relid = p_table) THEN
        RETURN false;
    END IF;
    PERFORM guardian._drop_watch_triggers(p_table);
    PERFORM guardian._register_watch(p_table, NULL, NULL);
    RETURN true;
END
$$;
COMMENT ON FUNCTION guardian.unwatch(regclass) IS
    'Stop watching a table (drops its guardian triggers; findings and alerts stay). Returns false if it was not watched.';

CREATE FUNCTION guardian.allow(
    p_rule text DEFAULT NULL, p_table regclass DEFAULT NULL, p_column text DEFAULT NULL,
    p_value text DEFAULT NULL, p_reason text DEFAULT NULL, p_expires_at timestamptz DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id bigint;
BEGIN
    IF p_rule IS NOT NULL AND NOT EXISTS (SELECT FROM guardian.rules AS r WHERE r.name = p_rule) THEN
        RAISE EXCEPTION 'unknown rule %', quote_literal(p_rule)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'List rules with: SELECT name FROM guardian.rules;';
    END IF;
    IF p_column IS NOT NULL AND p_table IS NULL THEN
        RAISE EXCEPTION 'an allowlisted column needs its table'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass p_table as well as p_column.';
    END IF;
    IF p_column IS NOT NULL AND NOT EXISTS (SELECT FROM pg_catalog.pg_attribute AS a
                                             WHERE a.attrelid = p_table AND a.attname = p_column AND NOT a.attisdropped) THEN
        RAISE EXCEPTION 'table % has no column %', p_table, quote_ident(p_column)
            USING ERRCODE = 'undefined_column', HINT = 'Check the column name.';
    END IF;
    IF coalesce(btrim(p_reason), '') = '' THEN
        RAISE EXCEPTION 'an allowlist entry needs a reason'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Say why it is not test data: p_reason => ''real patient, surname Doe''.';
    END IF;
    IF num_nonnulls(p_rule, p_table, p_value) = 0 THEN
        RAISE EXCEPTION 'an allowlist entry needs a rule, a table or a value'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'To stop a rule everywhere, disable it: UPDATE guardian.rules SET enabled = false WHERE name = ...;';
    END IF;
    INSERT INTO guardian.allowlist (rule, relid, column_name, value, reason, expires_at)
    VALUES (p_rule, p_table, p_column, guardian._normalize(p_value), p_reason, p_expires_at)
    RETURNING id INTO v_id;
    -- Open contamination alerts this entry covers whole were false positives. (An entry for one
    -- value cannot be checked against an alert's redacted samples: the caller says so.)
    IF p_value IS NULL THEN
        PERFORM guardian.resolve_alert(a.id, format('allowlisted (entry %s): %s', v_id, p_reason), 'false_positive')
           FROM guardian.monitoring_alerts AS a
          WHERE a.resolved_at IS NULL
            AND a.type IN ('TEST_DATA_CONTAMINATION', 'STRICT_MODE_REJECTION')
            AND (p_rule IS NULL OR a.metadata ->> 'rule' = p_rule)
            AND (p_table IS NULL OR a.table_name = p_table::text)
            AND (p_column IS NULL OR coalesce(a.metadata -> 'columns', jsonb_build_array(a.metadata -> 'column'))
                                     = jsonb_build_array(p_column));
    END IF;
    RETURN v_id;
END
$$;
COMMENT ON FUNCTION guardian.allow(text, regclass, text, text, text, timestamptz) IS
    'Allowlist a known false positive: by rule, table, column and/or value (any combination), with a reason and an optional expiry. Open contamination alerts an entry without a value covers are resolved as false_positive.';
