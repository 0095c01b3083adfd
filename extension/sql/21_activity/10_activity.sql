-- Activity on watched tables. The statement trigger appends one row per writing statement to
-- an UNLOGGED log (row counts come from the transaction's own statistics counters, so no
-- transition tables and no per-row work); the per-minute roll-up folds the log into windows
-- and evaluates the rules that need time: rows per minute and per second, off-hours writes,
-- the rate of contamination findings.
-- No key and no index: rows are appended by the statement trigger (in C, straight into the
-- heap) and taken whole by the roll-up. The C trigger knows these six columns, in this order.
CREATE UNLOGGED TABLE guardian.activity_log (
    relid       regclass NOT NULL,
    operation   text NOT NULL,
    rows        bigint NOT NULL,
    role        text NOT NULL,
    application text,
    at          timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp()
);
COMMENT ON TABLE guardian.activity_log IS
    'Writes to watched tables not yet rolled up (one row per statement). UNLOGGED: a crash loses at most the last minute of counts.';

CREATE TABLE guardian.activity_windows (
    relid        regclass NOT NULL,
    minute       timestamptz NOT NULL,
    inserts      bigint NOT NULL DEFAULT 0,
    updates      bigint NOT NULL DEFAULT 0,
    deletes      bigint NOT NULL DEFAULT 0,
    statements   bigint NOT NULL DEFAULT 0,
    peak_inserts_per_second bigint NOT NULL DEFAULT 0,
    roles        jsonb NOT NULL DEFAULT '{}',
    applications jsonb NOT NULL DEFAULT '{}',
    CONSTRAINT activity_windows_pkey PRIMARY KEY (relid, minute)
);
COMMENT ON TABLE guardian.activity_windows IS
    'Per watched table and minute: rows inserted, updated, deleted, and by which roles and applications. Kept for activity.retention_days (default 30).';
SELECT pg_catalog.pg_extension_config_dump('guardian.activity_windows', '');
CREATE INDEX activity_windows_minute_idx ON guardian.activity_windows (minute);

CREATE TABLE guardian.activity_rules (
    name        text PRIMARY KEY,
    alert_type  text NOT NULL,
    severity    text NOT NULL,
    threshold   numeric NOT NULL,
    enabled     boolean NOT NULL DEFAULT true,
    params      jsonb NOT NULL DEFAULT '{}',
    description text NOT NULL,
    CONSTRAINT activity_rules_severity_chk CHECK (severity IN ('CRITICAL', 'HIGH', 'MEDIUM', 'LOW', 'INFO'))
);
COMMENT ON TABLE guardian.activity_rules IS
    'Activity rules and their global thresholds; per-table overrides live in guardian.table_activity_rules.';

CREATE TABLE guardian.table_activity_rules (
    relid     regclass NOT NULL,
    name      text NOT NULL REFERENCES guardian.activity_rules (name) ON DELETE CASCADE,
    threshold numeric,
    enabled   boolean,
    CONSTRAINT table_activity_rules_pkey PRIMARY KEY (relid, name)
);
COMMENT ON TABLE guardian.table_activity_rules IS
    'Per-table overrides of activity rules (NULL threshold or enabled: use the global value).';
SELECT pg_catalog.pg_extension_config_dump('guardian.table_activity_rules', '');

INSERT INTO guardian.activity_rules (name, alert_type, severity, threshold, params, description) VALUES
    ('bulk_statement', 'BULK_OPERATION', 'HIGH', 50, '{}',
     'One statement writes more than threshold rows to a watched table.'),
    ('bulk_minute', 'BULK_OPERATION', 'HIGH', 50, '{}',
     'A watched table receives more than threshold inserted rows in one minute.'),
    ('rapid_creation', 'RAPID_CREATION', 'HIGH', 10, '{}',
     'Rows are created faster than threshold per second.'),
    ('off_hours', 'OFF_HOURS_ACTIVITY', 'MEDIUM', 0,
     '{"start": "22:00", "end": "06:00", "timezone": "UTC"}',
     'Rows inserted between start and end (local time in timezone) number more than threshold.'),
    ('suspicious_rate', 'SUSPICIOUS_PATTERN_RATE', 'HIGH', 5, '{}',
     'More than threshold contamination findings on a table within an hour.'),
    ('unfiltered_write', 'UNFILTERED_WRITE', 'HIGH', 1, '{}',
     'An UPDATE or DELETE without a WHERE clause changes more than threshold rows of a watched table.');

CREATE FUNCTION guardian._validate_activity_rule()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_params jsonb;
BEGIN
    IF TG_TABLE_NAME = 'activity_rules' THEN
        NEW.severity := upper(btrim(NEW.severity));
        v_params := NEW.params;
    END IF;
    IF NEW.threshold IS NOT NULL AND (NEW.threshold < 0 OR NEW.threshold <> trunc(NEW.threshold)) THEN
        RAISE EXCEPTION 'activity rule %: threshold must be a whole number >= 0, not %', NEW.name, NEW.threshold
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'e.g. UPDATE guardian.activity_rules SET threshold = 100 WHERE name = ''bulk_statement'';';
    END IF;
    IF v_params ? 'timezone' THEN
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_timezone_names AS z WHERE z.name = v_params ->> 'timezone')
           AND NOT EXISTS (SELECT FROM pg_catalog.pg_timezone_abbrevs AS z WHERE z.abbrev = v_params ->> 'timezone') THEN
            RAISE EXCEPTION 'activity rule %: unknown time zone %', NEW.name, quote_literal(v_params ->> 'timezone')
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Use an IANA name such as Europe/London or America/New_York (see pg_timezone_names).';
        END IF;
    END IF;
    IF v_params ? 'start' OR v_params ? 'end' THEN
        IF coalesce(v_params ->> 'start', '') !~ '^([01][0-9]|2[0-3]):[0-5][0-9]$'
           OR coalesce(v_params ->> 'end', '') !~ '^([01][0-9]|2[0-3]):[0-5][0-9]$' THEN
            RAISE EXCEPTION 'activity rule %: off-hours window needs start and end as HH:MM, got % and %',
                            NEW.name, coalesce(v_params ->> 'start', 'NULL'), coalesce(v_params ->> 'end', 'NULL')
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'e.g. params = ''{"start": "22:00", "end": "06:00", "timezone": "Europe/London"}''.';
        END IF;
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION guardian._validate_activity_rule() IS
    'Internal: rejects negative or fractional thresholds, unknown time zones and malformed windows.';

CREATE TRIGGER activity_rules_validate
    BEFORE INSERT OR UPDATE ON guardian.activity_rules
    FOR EACH ROW EXECUTE FUNCTION guardian._validate_activity_rule();
CREATE TRIGGER table_activity_rules_validate
    BEFORE INSERT OR UPDATE ON guardian.table_activity_rules
    FOR EACH ROW EXECUTE FUNCTION guardian._validate_activity_rule();

CREATE FUNCTION guardian._activity_rule(p_relid regclass, p_name text, OUT enabled boolean, OUT threshold numeric,
                                        OUT severity text, OUT alert_type text, OUT params jsonb)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(t.enabled, r.enabled), coalesce(t.threshold, r.threshold), r.severity, r.alert_type, r.params
      FROM guardian.activity_rules AS r
      LEFT JOIN guardian.table_activity_rules AS t ON t.name = r.name AND t.relid = p_relid
     WHERE r.name = p_name
$$;
COMMENT ON FUNCTION guardian._activity_rule(regclass, text) IS 'Internal: an activity rule as it applies to one table.';

CREATE FUNCTION guardian._xact_rows(p_relid regclass, p_op text, p_partitioned boolean)
RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- Rows this backend has written to the table and not yet reported to the statistics
    -- collector (all partitions). PL/pgSQL, not SQL: this runs twice per statement.
    IF NOT p_partitioned THEN
        RETURN CASE WHEN p_op = 'INSERT' THEN pg_stat_get_xact_tuples_inserted(p_relid)
                    WHEN p_op = 'UPDATE' THEN pg_stat_get_xact_tuples_updated(p_relid)
                    ELSE pg_stat_get_xact_tuples_deleted(p_relid) END;
    END IF;
    RETURN (SELECT coalesce(sum(CASE WHEN p_op = 'INSERT' THEN pg_stat_get_xact_tuples_inserted(t.relid)
                                     WHEN p_op = 'UPDATE' THEN pg_stat_get_xact_tuples_updated(t.relid)
                                     ELSE pg_stat_get_xact_tuples_deleted(t.relid) END), 0)::bigint
              FROM guardian._relation_tree(p_relid) AS t WHERE t.isleaf);
END
$$;
COMMENT ON FUNCTION guardian._xact_rows(regclass, text, boolean) IS
    'Internal: rows written by this transaction to a table (summed over partitions), from the statistics counters.';

CREATE FUNCTION guardian._is_unfiltered(p_query text, p_op text)
RETURNS boolean
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- A single UPDATE/DELETE statement whose text has no WHERE (comments stripped).
    SELECT q !~ ';\s*\S' AND q ~* ('^\s*(with\s.*\)\s*)?' || CASE p_op WHEN 'DELETE' THEN 'delete\s+from' ELSE 'update' END || '\s')
           AND q !~* '\mwhere\M'
      FROM (SELECT regexp_replace(regexp_replace(coalesce(p_query, ''), '--[^\n]*', '', 'g'), '/\*.*?\*/', '', 'g') AS q) AS x
$$;
COMMENT ON FUNCTION guardian._is_unfiltered(text, text) IS 'Internal: is this the text of an UPDATE/DELETE without a WHERE clause?';

-- The statistics counters of a backend also hold counts of its earlier transactions that are
-- not yet flushed, so the baseline is taken when the statement starts. It is kept where the
-- session cannot change it (a setting could be, by the session's own row trigger, between the
-- statement's start and end): one row per backend, table and operation.
CREATE UNLOGGED TABLE guardian.statement_baselines (
    backend_pid integer NOT NULL,
    relid       oid NOT NULL,
    operation   text NOT NULL,
    xid         bigint NOT NULL,
    rows        bigint NOT NULL,
    CONSTRAINT statement_baselines_pkey PRIMARY KEY (backend_pid, relid, operation)
);
COMMENT ON TABLE guardian.statement_baselines IS
    'Internal (PL/pgSQL activity triggers only): the row counters of a statement''s transaction when the statement started.';

CREATE FUNCTION guardian._before_statement()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO guardian.statement_baselines AS b (backend_pid, relid, operation, xid, rows)
    VALUES (pg_backend_pid(), TG_RELID, TG_OP, txid_current(), guardian._xact_rows(TG_RELID, TG_OP, TG_ARGV[0] = 'p'))
    ON CONFLICT (backend_pid, relid, operation) DO UPDATE SET xid = EXCLUDED.xid, rows = EXCLUDED.rows;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION guardian._before_statement() IS
    'Statement trigger on watched tables: notes the row counters before the statement runs.';

CREATE FUNCTION guardian._statement_followup(p_relid regclass, p_op text, p_rows bigint)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_rule record;
BEGIN
    -- Findings this session made and has not reported yet: read from the table, never from a
    -- setting the session could change.
    IF EXISTS (SELECT FROM guardian.findings AS f
                WHERE f.backend_pid = pg_backend_pid() AND f.relid = p_relid AND f.alert_id IS NULL) THEN
        PERFORM guardian._flush_findings(p_relid);
    END IF;
    -- A test tool, or a source that brought test data before, writing to production: the
    -- day's first write raises its alert (62_learning/40_sources.sql).
    IF p_rows > 0 AND guardian._source_verdict() THEN
        PERFORM guardian._source_alert(p_relid, p_op, p_rows);
    END IF;
    IF p_rows <= 1 THEN
        RETURN;
    END IF;
    v_rule := guardian._activity_rule(p_relid, 'bulk_statement');
    IF v_rule.enabled AND p_rows > v_rule.threshold THEN
        PERFORM guardian.raise_alert(v_rule.alert_type, v_rule.severity,
            format('one %s statement wrote %s rows to %s (threshold %s)', p_op, p_rows, p_relid, v_rule.threshold),
            p_relid::text, NULL,
            jsonb_build_object('rule', 'bulk_statement', 'rows', p_rows, 'operation', p_op,
                               'threshold', v_rule.threshold, 'role', SESSION_USER,
                               'application', current_setting('application_name', true)),
            md5(concat_ws('|', 'bulk_statement', guardian.current_environment(), p_relid::text)));
    END IF;
    IF p_op IN ('UPDATE', 'DELETE') THEN
        v_rule := guardian._activity_rule(p_relid, 'unfiltered_write');
        IF v_rule.enabled AND p_rows > v_rule.threshold AND guardian._is_unfiltered(current_query(), p_op) THEN
            PERFORM guardian.raise_alert(v_rule.alert_type,
                CASE WHEN guardian.current_environment() = 'production' THEN 'CRITICAL' ELSE v_rule.severity END,
                format('%s without a WHERE clause changed %s rows of %s', p_op, p_rows, p_relid),
                p_relid::text, NULL,
                jsonb_build_object('rule', 'unfiltered_write', 'rows', p_rows, 'operation', p_op,
                                   'query', left(current_query(), 500), 'role', SESSION_USER),
                md5(concat_ws('|', 'unfiltered_write', guardian.current_environment(), p_relid::text, p_op)));
        END IF;
    END IF;
END
$$;
COMMENT ON FUNCTION guardian._statement_followup(regclass, text, bigint) IS
    'Internal: after a write to a watched table: groups its findings into alerts and raises BULK_OPERATION / UNFILTERED_WRITE, and TEST_TOOL_WRITE / CONTAMINATION_RISK for a source''s first write of the day, at once.';

-- The statement trigger in PL/pgSQL: used where the C library is not installed.
CREATE FUNCTION guardian._on_statement()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_relid regclass := TG_RELID;
    v_total bigint := guardian._xact_rows(TG_RELID, TG_OP, TG_ARGV[0] = 'p');
    v_rows  bigint := v_total - coalesce((SELECT b.rows FROM guardian.statement_baselines AS b
                                           WHERE b.backend_pid = pg_backend_pid() AND b.relid = TG_RELID
                                             AND b.operation = TG_OP AND b.xid = txid_current()), 0);
BEGIN
    IF (SELECT c.relispartition FROM pg_catalog.pg_class AS c WHERE c.oid = TG_RELID) THEN
        v_relid := pg_partition_root(TG_RELID);
    END IF;
    IF v_rows > 0 THEN
        INSERT INTO guardian.activity_log (relid, operation, rows, role, application, at)
        VALUES (v_relid, TG_OP, v_rows, SESSION_USER, nullif(current_setting('application_name', true), ''),
                clock_timestamp());
    END IF;
    IF v_rows > 1 OR EXISTS (SELECT FROM guardian.findings AS f
                              WHERE f.backend_pid = pg_backend_pid() AND f.relid = v_relid AND f.alert_id IS NULL)
       OR (v_rows > 0 AND guardian._source_verdict()) THEN
        PERFORM guardian._statement_followup(v_relid, TG_OP, v_rows);
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION guardian._on_statement() IS
    'Statement trigger on watched tables (PL/pgSQL fallback of guardian._activity_end): logs the statement''s row count and follows up.';

-- Where the server has the extension's library, the same two triggers in C (see
-- extension/src/pg_guardian.c): they run on every write, and PL/pgSQL would cost more than a
-- single-row INSERT itself. watch() uses them when they exist.
DO $activity_c$
BEGIN
    CREATE FUNCTION guardian._activity_start()
    RETURNS trigger
    LANGUAGE c
    AS '$libdir/pg_guardian', 'pg_guardian_activity_start';
    CREATE FUNCTION guardian._activity_end()
    RETURNS trigger
    LANGUAGE c
    AS '$libdir/pg_guardian', 'pg_guardian_activity_end';
    COMMENT ON FUNCTION guardian._activity_start() IS
        'Statement trigger (C): notes the transaction''s row counters before a write to a watched table.';
    COMMENT ON FUNCTION guardian._activity_end() IS
        'Statement trigger (C): logs the write''s row count to guardian.activity_log and follows up when needed.';
EXCEPTION WHEN undefined_file OR insufficient_privilege OR undefined_function THEN
    RAISE NOTICE 'pg_guardian: the C activity triggers are not loaded (%): activity is tracked in PL/pgSQL (slower writes)', SQLERRM;
END
$activity_c$;
