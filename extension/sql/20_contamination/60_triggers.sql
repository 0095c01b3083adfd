-- Where the recorder connects. Only a superuser may change it (the table belongs to the
-- installing superuser and is granted to no one): a connection string is a way to run code as
-- whoever connects, and the recorder connects as a superuser. There is no free-form string:
-- each field is quoted into the connection string by _record_rejection(), which adds the
-- database, the application name and a pinned search_path itself.
CREATE TABLE guardian.strict_recorder (
    id        boolean PRIMARY KEY DEFAULT true,
    host      text,
    port      integer,
    user_name name,
    passfile  text,
    sslmode   text,
    CONSTRAINT strict_recorder_one_row_chk CHECK (id),
    CONSTRAINT strict_recorder_port_chk CHECK (port BETWEEN 1 AND 65535),
    CONSTRAINT strict_recorder_sslmode_chk CHECK (sslmode IN ('disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full')),
    CONSTRAINT strict_recorder_text_chk CHECK (pg_catalog.concat(host, user_name, passfile) !~ '[[:cntrl:]]')
);
COMMENT ON TABLE guardian.strict_recorder IS
    'How strict mode records a rejection through dblink (superusers only; empty: this server''s first socket, its port and the bootstrap superuser). Example: INSERT INTO guardian.strict_recorder (host, port) VALUES (''/var/run/postgresql'', 5432);';
SELECT pg_catalog.pg_extension_config_dump('guardian.strict_recorder', '');

CREATE FUNCTION guardian._conninfo_value(p_value text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT '''' || replace(replace(p_value, '\', '\\'), '''', '\''') || ''''
$$;
COMMENT ON FUNCTION guardian._conninfo_value(text) IS 'Internal: a value quoted for a libpq connection string.';

-- Strict mode rejects the write, and a rejected write rolls back everything in its transaction,
-- an alert row included. The rejection is recorded through a second connection (dblink, when
-- installed) that commits on its own; failing that, the ERROR itself is in the server log,
-- which the log reader turns into an alert.
CREATE FUNCTION guardian._record_rejection(p_alert jsonb)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_schema text;
    v_conf   guardian.strict_recorder;
    v_dsn    text;
    v_sql    text;
BEGIN
    SELECT n.nspname INTO v_schema
      FROM pg_catalog.pg_extension AS x JOIN pg_catalog.pg_namespace AS n ON n.oid = x.extnamespace
     WHERE x.extname = 'dblink';
    IF v_schema IS NULL THEN
        RETURN 'log';
    END IF;
    -- This function runs as a superuser: it reads its own table and calls nothing that
    -- guardian_owner or an admin could change. The remote session is this database, with a
    -- search_path of pg_catalog only, and every type in the remote SQL is qualified.
    SELECT * INTO v_conf FROM guardian.strict_recorder AS r WHERE r.id;
    v_dsn := concat_ws(' ',
        'dbname=' || guardian._conninfo_value(current_database()),
        'host=' || guardian._conninfo_value(coalesce(v_conf.host,
                       nullif(btrim(split_part(current_setting('unix_socket_directories'), ',', 1)), ''))),
        'port=' || coalesce(v_conf.port::text, current_setting('port')),
        'user=' || guardian._conninfo_value(coalesce(v_conf.user_name,
                       (SELECT r.rolname FROM pg_catalog.pg_roles AS r WHERE r.oid = 10))),
        'passfile=' || guardian._conninfo_value(v_conf.passfile),
        'sslmode=' || guardian._conninfo_value(v_conf.sslmode),
        'application_name=pg_guardian_recorder',
        'options=' || guardian._conninfo_value('-c search_path=pg_catalog,pg_temp'));
    v_sql := format('SELECT guardian.raise_alert(%L::pg_catalog.text, %L::pg_catalog.text, %L::pg_catalog.text, '
                    '%L::pg_catalog.text, %L::pg_catalog.text, %L::pg_catalog.jsonb, %L::pg_catalog.text)',
                    p_alert ->> 'type', p_alert ->> 'severity', p_alert ->> 'message', p_alert ->> 'table_name',
                    p_alert ->> 'record_id', p_alert -> 'metadata', p_alert ->> 'fingerprint');
    BEGIN
        -- dblink(), not dblink_exec(): the statement returns the alert's id, and dblink_exec()
        -- raises "statement returning results not allowed" after the remote commit.
        EXECUTE format('SELECT t.id FROM %I.dblink($1, $2) AS t(id uuid)', v_schema) USING v_dsn, v_sql;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'pg_guardian: could not record the strict-mode rejection through dblink: %', SQLERRM
            USING HINT = 'A superuser can say where to connect: INSERT INTO guardian.strict_recorder (host, port, user_name) VALUES (...);';
        RETURN 'log';
    END;
    RETURN 'dblink';
END
$$;
COMMENT ON FUNCTION guardian._record_rejection(jsonb) IS
    'Internal: records a strict-mode rejection as an alert in its own transaction (dblink to this database), so that it survives the rollback. Owned by the installing superuser, which dblink needs to connect without a password; connects as guardian.strict_recorder says.';

-- The SQL that reads a row of a relation (as $1) into JSON without running any code of the
-- application: columns of built-in types as to_jsonb() has them, every other type (enums,
-- domains, composites and arrays of the application's types) as the text of its output
-- function, never through a cast the application may have defined. Watched columns renamed
-- since the watch also appear under their watched names.
CREATE FUNCTION guardian._json_safe_type(p_type oid)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- Built in, a domain over a built-in type, or an array of one (deeper nesting is read as
    -- text, which is always safe).
    SELECT t.oid < 16384
           OR (t.typtype = 'd' AND t.typbasetype < 16384)
           OR (t.typelem <> 0 AND t.typelem < 16384 AND t.typsubscript = 'pg_catalog.array_subscript_handler'::pg_catalog.regproc)
      FROM pg_catalog.pg_type AS t WHERE t.oid = p_type
$$;
COMMENT ON FUNCTION guardian._json_safe_type(oid) IS
    'Internal: is this type built in (or a domain or array of a built-in type), so that to_jsonb() of it runs no application cast?';

CREATE FUNCTION guardian._row_json_sql(p_rel regclass, p_names text[] DEFAULT NULL, p_attnums smallint[] DEFAULT NULL,
                                       p_keys text[] DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- With p_keys, only the watched columns (p_attnums) and the key columns; without, every
    -- column (a row without a key is known by a digest of all of it). PL/pgSQL, so that the
    -- plan of this query is kept for the session: it runs for every candidate row, which is
    -- also why the test of guardian._json_safe_type() is written out here, not called.
    RETURN (
        WITH cols AS (
            SELECT a.attname::text AS name, a.attnum,
                   CASE WHEN t.oid < 16384
                             OR (t.typtype = 'd' AND t.typbasetype < 16384)
                             OR (t.typelem <> 0 AND t.typelem < 16384
                                 AND t.typsubscript = 'pg_catalog.array_subscript_handler'::pg_catalog.regproc)
                        THEN format('pg_catalog.to_jsonb(($1).%I)', a.attname)
                        ELSE format('pg_catalog.to_jsonb(pg_catalog.format(%L, ($1).%I))', '%s', a.attname) END AS expr
              FROM pg_catalog.pg_attribute AS a
              JOIN pg_catalog.pg_type AS t ON t.oid = a.atttypid
             WHERE a.attrelid = p_rel AND a.attnum > 0 AND NOT a.attisdropped
               AND (p_keys IS NULL OR a.attnum = ANY (p_attnums) OR a.attname = ANY (p_keys))),
        pairs AS (
            SELECT c.name, c.expr, c.attnum FROM cols AS c
            UNION ALL
            SELECT w.name, c.expr, c.attnum
              FROM unnest(p_names, p_attnums) AS w(name, attnum)
              JOIN cols AS c ON c.attnum = w.attnum
             WHERE w.name <> c.name),
        numbered AS (
            SELECT p.*, (row_number() OVER (ORDER BY p.attnum, p.name) - 1) / 50 AS chunk FROM pairs AS p)
        SELECT 'SELECT ' || coalesce(string_agg(x.call, ' OPERATOR(pg_catalog.||) ' ORDER BY x.chunk), '''{}''::pg_catalog.jsonb')
          FROM (SELECT n.chunk, 'pg_catalog.jsonb_build_object('
                                || string_agg(format('%L, %s', n.name, n.expr), ', ' ORDER BY n.attnum, n.name) || ')' AS call
                  FROM numbered AS n GROUP BY n.chunk) AS x);
END
$$;
COMMENT ON FUNCTION guardian._row_json_sql(regclass, text[], smallint[], text[]) IS
    'Internal: SQL that turns a row of a table ($1) into JSON without running application code (built-in types as to_jsonb, others as output text).';

CREATE FUNCTION guardian._watch_of(p_relid regclass)
RETURNS guardian.watched_tables
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- A partition is watched through its root.
    SELECT w.* FROM guardian.watched_tables AS w
     WHERE w.relid IN (p_relid, pg_partition_root(p_relid))
     ORDER BY w.relid = p_relid DESC
     LIMIT 1
$$;
COMMENT ON FUNCTION guardian._watch_of(regclass) IS 'Internal: the watch that covers a table or partition.';

CREATE FUNCTION guardian._on_contamination()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_watch   guardian.watched_tables;
    v_mode    text;
    v_new     jsonb;
    v_old     jsonb;
    v_sql     text;
    v_ref     record;
    v_finding record;
    v_first   record;
    v_count   integer := 0;
    v_via     text;
BEGIN
    -- Fires only for rows the WHEN prefilter flagged; everything here is per candidate row.
    SELECT * INTO v_watch FROM guardian.watched_tables AS w WHERE w.relid = TG_RELID;
    IF NOT FOUND THEN
        v_watch := guardian._watch_of(TG_RELID);
        IF v_watch.relid IS NULL THEN
            RETURN NULL;
        END IF;
    END IF;
    v_mode := coalesce((SELECT t.mode FROM guardian.table_modes AS t WHERE t.relid = v_watch.relid),
                       (SELECT e.mode FROM guardian.environment AS e), 'warn');
    IF v_mode = 'off' THEN
        RETURN NULL;
    END IF;
    -- SECURITY DEFINER: nothing of the application may run here. The row is read through
    -- output functions (never to_jsonb of a row, which runs user-defined casts to json).
    v_sql := guardian._row_json_sql(TG_RELID, v_watch.column_names, guardian._watched_attnums(v_watch, TG_RELID),
                                    v_watch.key_columns);
    EXECUTE v_sql INTO v_new USING NEW;
    IF TG_OP = 'UPDATE' THEN
        EXECUTE v_sql INTO v_old USING OLD;
    END IF;
    FOR v_finding IN
        SELECT * FROM guardian._row_findings(v_watch, v_new, v_old)
    LOOP
        v_count := v_count + 1;
        IF v_count = 1 THEN
            v_first := v_finding;
            v_ref := guardian._record_ref(v_watch, v_new);
        END IF;
        IF v_mode = 'warn' THEN
            INSERT INTO guardian.findings (relid, record_id, record_key, column_name, rule, severity, sample, operation)
            VALUES (v_watch.relid, v_ref.record_id, v_ref.record_key, v_finding.column_name, v_finding.rule,
                    v_finding.severity, v_finding.sample, TG_OP);
        END IF;
    END LOOP;
    IF v_count = 0 THEN
        RETURN NULL;
    END IF;
    IF v_mode = 'warn' THEN
        RETURN NULL;   -- the statement trigger groups this session's findings into alerts
    END IF;

    -- strict: record the rejection where it survives, then reject the write. The DETAIL says
    -- when it is recorded already, so that the server-log reader (guardian._ingest_log_record)
    -- does not report it again: it looks for these exact words.
    v_via := guardian._record_rejection(jsonb_build_object(
        'type', 'STRICT_MODE_REJECTION',
        'severity', v_first.severity,
        'message', format('strict mode rejected test data in %s.%s (rule %s): %s',
                          v_watch.relid, v_first.column_name, v_first.rule, v_first.sample),
        'table_name', v_watch.relid::text,
        'record_id', v_ref.record_id,
        'fingerprint', md5(concat_ws('|', 'STRICT_MODE_REJECTION', guardian.current_environment(),
                                     v_watch.relid::text, v_first.rule)),
        'metadata', jsonb_build_object('rule', v_first.rule, 'column', v_first.column_name,
                                       'sample', v_first.sample, 'operation', TG_OP,
                                       'findings_in_row', v_count, 'mode', 'strict',
                                       'session', guardian._session_context())));
    RAISE EXCEPTION 'pg_guardian: strict mode rejected test data in %.% (rule %)',
                    v_watch.relid, v_first.column_name, v_first.rule
        USING ERRCODE = 'GD001',
              DETAIL = format('%s matches %s (%s); %s finding(s) in this row. Record: %s.%s',
                              v_first.sample, v_first.rule,
                              (SELECT r.description FROM guardian.rules AS r WHERE r.name = v_first.rule),
                              v_count, v_ref.record_id,
                              CASE WHEN v_via = 'dblink' THEN ' Recorded as a STRICT_MODE_REJECTION alert.' ELSE '' END),
              -- Never the value itself: the HINT goes to the client and the server log.
              HINT = format('If this is real data, allowlist it: SELECT guardian.allow(%L, %L, %s, p_value => ''<the rejected value>'', p_reason => ''why it is real'');',
                            v_first.rule, v_watch.relid::text,
                            CASE WHEN strpos(v_first.column_name, '+') > 0 THEN 'NULL' ELSE quote_literal(v_first.column_name) END);
END
$$;
COMMENT ON FUNCTION guardian._on_contamination() IS
    'Row trigger on watched tables, fired only for rows that pass the prefilter: records findings (warn) or rejects the write (strict, SQLSTATE GD001).';

CREATE FUNCTION guardian._flush_findings(p_relid regclass)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_group record;
    v_alert uuid;
    v_count integer := 0;
    v_env   text := guardian.current_environment();
BEGIN
    FOR v_group IN
        SELECT f.rule,
               (array_agg(f.severity ORDER BY array_position(ARRAY['CRITICAL','HIGH','MEDIUM','LOW','INFO'], f.severity)))[1] AS severity,
               count(DISTINCT f.record_id) AS records,
               (array_agg(f.record_id ORDER BY f.id))[1] AS first_record,
               (array_agg(DISTINCT f.record_id))[1:20] AS record_ids,
               array_agg(DISTINCT f.column_name) AS columns,
               (array_agg(f.sample ORDER BY f.id))[1:3] AS samples,
               (array_agg(f.operation ORDER BY f.id))[1] AS operation
          FROM guardian.findings AS f
         WHERE f.backend_pid = pg_backend_pid() AND f.alert_id IS NULL AND f.relid = p_relid
         GROUP BY f.rule
    LOOP
        v_alert := guardian.raise_alert(
            'TEST_DATA_CONTAMINATION',
            v_group.severity,
            CASE WHEN v_group.records = 1
                 THEN format('test data in %s.%s (rule %s): %s', p_relid, v_group.columns[1], v_group.rule, v_group.samples[1])
                 ELSE format('%s records with test data in %s (%s; rule %s), e.g. %s', v_group.records, p_relid,
                             array_to_string(v_group.columns, ', '), v_group.rule, v_group.samples[1]) END,
            p_relid::text,
            v_group.first_record,
            jsonb_build_object('rule', v_group.rule, 'columns', to_jsonb(v_group.columns),
                               'last_record_ids', to_jsonb(v_group.record_ids), 'samples', to_jsonb(v_group.samples),
                               'last_operation', v_group.operation, 'mode', 'warn',
                               'findings_query', format('SELECT * FROM guardian.findings WHERE relid = %L::regclass AND rule = %L', p_relid::text, v_group.rule)),
            md5(concat_ws('|', 'TEST_DATA_CONTAMINATION', v_env, p_relid::text, v_group.rule)));
        UPDATE guardian.findings AS f SET alert_id = v_alert
         WHERE f.backend_pid = pg_backend_pid() AND f.alert_id IS NULL AND f.relid = p_relid AND f.rule = v_group.rule;
        UPDATE guardian.monitoring_alerts AS a
           SET metadata = a.metadata || jsonb_build_object(
                   'affected_records', (SELECT count(DISTINCT f.record_id) FROM guardian.findings AS f WHERE f.alert_id = v_alert))
         WHERE a.id = v_alert;
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION guardian._flush_findings(regclass) IS
    'Internal: groups this session''s new findings on a table into one TEST_DATA_CONTAMINATION alert per rule.';
