-- Security events the server only writes to its log: failed logins (and brute force),
-- permission-denied errors, strict-mode rejections (their transaction rolled back, so the log
-- is their only record). The guardian reads the CSV log incrementally, through
-- pg_ls_logdir() and pg_read_binary_file(), keeping its position in log_reader_state so that
-- each record is read once and rotation (a new file) or truncation is followed.
--
-- Reading needs: log_destination including csvlog with logging_collector on, and a checking
-- role (guardian_owner) that is a member of pg_monitor and may execute pg_read_binary_file.
-- The extension grants both when installed by a superuser (99_finish); elsewhere the check
-- reports itself as degraded with the exact GRANT to run.
CREATE TABLE guardian.security_events (
    occurred_at      timestamptz NOT NULL,
    kind             text NOT NULL,
    role_name        text,
    database_name    text,
    client_addr      text,
    application_name text,
    sqlstate         text,
    message          text NOT NULL,
    detail           text,
    query            text,
    log_file         text NOT NULL,
    read_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT security_events_kind_chk
        CHECK (kind IN ('login_failed', 'permission_denied', 'strict_mode_rejected'))
);
COMMENT ON TABLE guardian.security_events IS
    'Security events read from the server''s CSV log (failed logins cluster-wide; permission-denied errors and strict-mode rejections in this database); kept retention.security_events_days.';
SELECT pg_catalog.pg_extension_config_dump('guardian.security_events', '');
CREATE INDEX security_events_occurred_at_idx ON guardian.security_events (occurred_at);
CREATE INDEX security_events_read_at_idx ON guardian.security_events (read_at);

CREATE TABLE guardian.log_reader_state (
    singleton    boolean PRIMARY KEY DEFAULT true,
    file_name    text NOT NULL,
    file_offset  bigint NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    last_detail  text,
    CONSTRAINT log_reader_state_singleton_chk CHECK (singleton),
    CONSTRAINT log_reader_state_offset_chk CHECK (file_offset >= 0)
);
COMMENT ON TABLE guardian.log_reader_state IS
    'Where the server log reader stopped: file (in log_directory) and byte offset of the next unread record.';
SELECT pg_catalog.pg_extension_config_dump('guardian.log_reader_state', '');

CREATE FUNCTION guardian._log_files()
RETURNS TABLE (name text, size bigint, modification timestamptz)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF current_setting('logging_collector') <> 'on'
       OR NOT ('csvlog' = ANY (string_to_array(replace(current_setting('log_destination'), ' ', ''), ','))) THEN
        RAISE EXCEPTION 'the server does not write a CSV log (log_destination = %, logging_collector = %)',
                        current_setting('log_destination'), current_setting('logging_collector')
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'In postgresql.conf set log_destination = ''csvlog'' and logging_collector = on (a restart), plus log_connections = on.';
    END IF;
    IF NOT has_function_privilege('pg_catalog.pg_ls_logdir()', 'EXECUTE')
       OR NOT has_function_privilege('pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)', 'EXECUTE') THEN
        RAISE EXCEPTION 'role % may not read the server log', CURRENT_USER
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('As a superuser run: GRANT pg_monitor TO %I; GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean) TO %I;',
                                CURRENT_USER, CURRENT_USER);
    END IF;
    RETURN QUERY
    SELECT f.name, f.size, f.modification
      FROM pg_catalog.pg_ls_logdir() AS f
     WHERE f.name LIKE '%.csv'
     ORDER BY f.modification, f.name;
END
$$;
COMMENT ON FUNCTION guardian._log_files() IS
    'Internal: the CSV log files, oldest first; an error naming the fix when there is no CSV log or the role may not read it.';

CREATE FUNCTION guardian._log_read_chunk(p_file text, p_offset bigint, p_length bigint)
RETURNS TABLE (consumed bigint, fields text[])
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_path  text := current_setting('log_directory') || '/' || p_file;
    v_bytes bytea;
    v_len   integer;
    v_cut   integer;
    v_text  text;
    v_enc   text := 'UTF8';
BEGIN
    BEGIN
        v_bytes := pg_read_binary_file(v_path, p_offset, p_length, true);
    EXCEPTION WHEN insufficient_privilege OR undefined_file OR io_error OR internal_error THEN
        RAISE EXCEPTION 'cannot read server log file %: %', v_path, SQLERRM
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'The server''s system user must be able to read its log files (log_file_mode = 0640 or 0600).';
    END;
    v_len := coalesce(octet_length(v_bytes), 0);
    IF v_len = 0 THEN
        RETURN;
    END IF;
    -- Only whole lines: the writer may be mid-record, and a cut could split a character.
    v_cut := v_len;
    WHILE v_cut > 0 AND get_byte(v_bytes, v_cut - 1) <> 10 LOOP
        v_cut := v_cut - 1;
    END LOOP;
    IF v_cut = 0 THEN
        -- A line longer than the chunk is skipped rather than blocking the reader forever.
        IF v_len >= p_length THEN
            consumed := v_len; fields := NULL;
            RETURN NEXT;
        END IF;
        RETURN;
    END IF;
    -- Log lines carry each database's encoding; what is not valid UTF-8 is read as LATIN1
    -- (every byte a character) rather than stopping the reader.
    BEGIN
        v_text := convert_from(substring(v_bytes FROM 1 FOR v_cut), 'UTF8');
    EXCEPTION WHEN character_not_in_repertoire OR untranslatable_character THEN
        v_enc := 'LATIN1';
        v_text := convert_from(substring(v_bytes FROM 1 FOR v_cut), v_enc);
    END;
    -- A CSV record ends at a newline outside quotes: where the running count of quote
    -- characters is even. A record still open at the end of the chunk is left for later.
    RETURN QUERY
    WITH lines AS (
        SELECT l.line, l.n,
               sum(length(l.line) - length(replace(l.line, '"', ''))) OVER (ORDER BY l.n) % 2 = 0 AS closes
          FROM regexp_split_to_table(left(v_text, -1), E'\n') WITH ORDINALITY AS l(line, n)
    ), numbered AS (
        SELECT ln.line, ln.n, ln.closes,
               coalesce(sum(ln.closes::int) OVER (ORDER BY ln.n ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS rec
          FROM lines AS ln
    ), records AS (
        SELECT nb.rec, string_agg(nb.line, E'\n' ORDER BY nb.n) AS body, bool_or(nb.closes) AS complete
          FROM numbered AS nb GROUP BY nb.rec
    )
    SELECT sum(octet_length(convert_to(r.body, v_enc)) + 1) OVER (ORDER BY r.rec)::bigint,
           ARRAY(SELECT CASE WHEN left(m.v[1], 1) = '"'
                             THEN replace(substr(m.v[1], 2, length(m.v[1]) - 2), '""', '"')
                             ELSE m.v[1] END
                   FROM regexp_matches(r.body || ',', '("(?:[^"]|"")*"|[^,]*),', 'g') WITH ORDINALITY AS m(v, o)
                  ORDER BY m.o)
      FROM records AS r
     WHERE r.complete
     ORDER BY r.rec;
END
$$;
COMMENT ON FUNCTION guardian._log_read_chunk(text, bigint, bigint) IS
    'Internal: the complete CSV log records in a byte range of a log file, each with the bytes consumed up to its end.';

CREATE FUNCTION guardian._ingest_log_record(p_fields text[], p_file text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_kind text;
    v_at   timestamptz;
BEGIN
    -- csvlog columns (PostgreSQL 13+): 1 log_time, 2 user_name, 3 database_name,
    -- 5 connection_from, 12 error_severity, 13 sql_state_code, 14 message, 15 detail,
    -- 20 query, 23 application_name.
    IF p_fields IS NULL OR cardinality(p_fields) < 23 THEN
        RETURN false;
    END IF;
    IF p_fields[14] LIKE 'pg\_guardian: strict mode rejected%' THEN
        v_kind := 'strict_mode_rejected';
    ELSIF p_fields[12] = 'FATAL' AND p_fields[13] LIKE '28%' THEN
        v_kind := 'login_failed';
    ELSIF p_fields[13] = '42501' AND p_fields[12] IN ('ERROR', 'FATAL') THEN
        v_kind := 'permission_denied';
    ELSE
        RETURN false;
    END IF;
    IF v_kind <> 'login_failed' AND p_fields[3] IS DISTINCT FROM current_database() THEN
        RETURN false;
    END IF;
    BEGIN
        v_at := p_fields[1]::timestamptz;
    EXCEPTION WHEN OTHERS THEN
        v_at := now();
    END;
    -- guardian._on_contamination() may have recorded the rejection as an alert already
    -- (through dblink); its DETAIL then ends with ' Recorded as a STRICT_MODE_REJECTION alert.'
    -- But the DETAIL also holds application data (the record's key, the sample), which can end
    -- in those very words: the words are only a claim. One report is enough, so the record is
    -- skipped only when the alert is really there: a STRICT_MODE_REJECTION alert of the same
    -- table and rule (the message names both, and nothing of the row) that was open and
    -- raised again within a few seconds before the rejection was logged (the recorder's
    -- transaction commits just before the ERROR is written).
    IF v_kind = 'strict_mode_rejected'
       AND p_fields[15] LIKE '% Recorded as a STRICT\_MODE\_REJECTION alert.'
       AND EXISTS (
           SELECT FROM guardian.monitoring_alerts AS a
            WHERE a.type = 'STRICT_MODE_REJECTION'
              AND a.created_at <= v_at + interval '1 second'
              AND a.last_seen_at >= v_at - interval '10 seconds'
              AND a.table_name IS NOT NULL AND a.metadata ? 'rule'
              AND starts_with(p_fields[14], 'pg_guardian: strict mode rejected test data in ' || a.table_name || '.')
              AND right(p_fields[14], length(' (rule ' || (a.metadata ->> 'rule') || ')'))
                  = ' (rule ' || (a.metadata ->> 'rule') || ')') THEN
        RETURN false;
    END IF;
    INSERT INTO guardian.security_events
        (occurred_at, kind, role_name, database_name, client_addr, application_name, sqlstate,
         message, detail, query, log_file)
    VALUES
        (v_at, v_kind, nullif(p_fields[2], ''), nullif(p_fields[3], ''),
         nullif(regexp_replace(p_fields[5], ':[0-9]+$', ''), ''), nullif(p_fields[23], ''),
         p_fields[13], p_fields[14], nullif(p_fields[15], ''), left(nullif(p_fields[20], ''), 1000), p_file);
    RETURN true;
END
$$;
COMMENT ON FUNCTION guardian._ingest_log_record(text[], text) IS
    'Internal: keeps a parsed CSV log record as a security event when it is one (failed login, permission denied, strict-mode rejection not already recorded as an alert).';

CREATE FUNCTION guardian._read_server_log()
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_budget  bigint := guardian.param('security.server_log.max_bytes_per_run');
    v_chunk   bigint := 1048576;
    v_state   guardian.log_reader_state;
    v_files   text[];
    v_sizes   bigint[];
    v_start   integer;
    v_file    text;
    v_offset  bigint;
    v_size    bigint;
    v_got     bigint;
    v_rec     record;
    v_read    bigint := 0;
    v_events  integer := 0;
    v_note    text := '';
BEGIN
    SELECT array_agg(f.name ORDER BY f.modification, f.name), array_agg(f.size ORDER BY f.modification, f.name)
      INTO v_files, v_sizes FROM guardian._log_files() AS f;
    IF v_files IS NULL THEN
        RETURN 'no CSV log file yet';
    END IF;
    -- Serialise readers of this database's position.
    PERFORM pg_advisory_xact_lock(hashtextextended('guardian.log_reader', 0));
    SELECT * INTO v_state FROM guardian.log_reader_state;
    IF NOT FOUND THEN
        -- Start at the end: history from before the guardian was watching is not replayed.
        INSERT INTO guardian.log_reader_state (file_name, file_offset, last_detail)
        VALUES (v_files[cardinality(v_files)], v_sizes[cardinality(v_sizes)], 'started at the end of the newest log file');
        RETURN 'started at the end of ' || v_files[cardinality(v_files)];
    END IF;
    v_start := array_position(v_files, v_state.file_name);
    v_offset := v_state.file_offset;
    IF v_start IS NULL THEN
        -- Our file was removed (rotation with a short retention): continue with the files
        -- written since we last read; what was in between is gone and we say so.
        SELECT min(i) INTO v_start
          FROM generate_subscripts(v_files, 1) AS i WHERE v_files[i] > v_state.file_name;
        v_start := coalesce(v_start, 1);
        v_offset := 0;
        v_note := format('; log file %s disappeared before it was fully read', v_state.file_name);
    END IF;
    FOR i IN v_start .. cardinality(v_files) LOOP
        v_file := v_files[i];
        v_size := v_sizes[i];
        IF i > v_start THEN
            v_offset := 0;
        ELSIF v_offset > v_size THEN
            v_offset := 0;   -- truncated and rewritten (log_truncate_on_rotation)
            v_note := v_note || format('; %s was truncated, read again from its start', v_file);
        END IF;
        WHILE v_offset < v_size AND v_read < v_budget LOOP
            v_got := 0;
            FOR v_rec IN SELECT * FROM guardian._log_read_chunk(v_file, v_offset, least(v_chunk, v_budget - v_read)) LOOP
                IF guardian._ingest_log_record(v_rec.fields, v_file) THEN
                    v_events := v_events + 1;
                END IF;
                v_got := v_rec.consumed;
            END LOOP;
            EXIT WHEN v_got = 0;   -- only a partial record left: the writer is still at it
            v_offset := v_offset + v_got;
            v_read := v_read + v_got;
        END LOOP;
        EXIT WHEN v_read >= v_budget OR i = cardinality(v_files);
        IF v_offset < v_size THEN
            -- A rotated file is complete; an unterminated tail can never finish.
            v_note := v_note || format('; skipped an unterminated record at the end of %s', v_file);
        END IF;
    END LOOP;
    IF v_read >= v_budget THEN
        v_note := v_note || format('; stopped after %s bytes (security.server_log.max_bytes_per_run), more next run', v_read);
    END IF;
    UPDATE guardian.log_reader_state AS s
       SET file_name = v_file, file_offset = v_offset, updated_at = now(),
           last_detail = format('read %s bytes, %s security events%s', v_read, v_events, v_note);
    RETURN format('read %s bytes, %s security events%s', v_read, v_events, v_note);
END
$$;
COMMENT ON FUNCTION guardian._read_server_log() IS
    'Internal: reads the CSV server log from where it stopped (following rotation, at most security.server_log.max_bytes_per_run bytes) into guardian.security_events.';

CREATE FUNCTION guardian._check_server_log()
RETURNS SETOF guardian.finding
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_threshold numeric := guardian.param('security.brute_force.failures');
    v_window    numeric := guardian.param('security.brute_force.window_seconds');
BEGIN
    PERFORM guardian._read_server_log();

    -- Failed logins: one alert per role and address, counting the runs that saw new ones.
    RETURN QUERY
    SELECT (ROW('server_log', 'LOGIN_FAILED', 'LOW', NULL, e.role_name,
               format('%s failed login(s) for role %s from %s: %s', e.n, coalesce(e.role_name, '?'),
                      coalesce(e.client_addr, '?'), e.message),
               'Expected after a password change or a typo; if not, find the client and check pg_hba.conf.',
               jsonb_build_object('role', e.role_name, 'client_addr', e.client_addr, 'new_failures', e.n,
                                  'last_failure_at', e.last_at, 'database', e.database_name, 'sqlstate', e.sqlstate),
               format('login:%s@%s', e.role_name, e.client_addr))::guardian.finding).*
      FROM (SELECT s.role_name, s.client_addr, count(*) AS n, max(s.occurred_at) AS last_at,
                   (array_agg(s.message ORDER BY s.occurred_at DESC))[1] AS message,
                   (array_agg(s.database_name ORDER BY s.occurred_at DESC))[1] AS database_name,
                   (array_agg(s.sqlstate ORDER BY s.occurred_at DESC))[1] AS sqlstate
              FROM guardian.security_events AS s
             WHERE s.read_at = now() AND s.kind = 'login_failed'
             GROUP BY s.role_name, s.client_addr) AS e;

    -- Brute force: at least N failures for one role, or from one address, within the window
    -- ending at the newest failure; only keys with new failures in this run are judged.
    RETURN QUERY
    SELECT (ROW('server_log', 'BRUTE_FORCE_SUSPECTED', 'HIGH', NULL, b.key_value,
               format('%s failed logins for %s %s within %s s (threshold %s); sources: %s', b.n, b.key_kind,
                      coalesce(b.key_value, '?'), v_window, v_threshold, b.others),
               CASE b.key_kind WHEN 'role'
                    THEN format('If it is not you: block the sources in pg_hba.conf or a firewall, and rotate the password of role %s (ALTER ROLE ... PASSWORD).', b.key_value)
                    ELSE format('Block address %s in pg_hba.conf or a firewall unless it is a known client with a wrong password.', b.key_value) END,
               jsonb_build_object('key', b.key_kind, 'value', b.key_value, 'failures_in_window', b.n,
                                  'window_seconds', v_window, 'threshold', v_threshold, 'sources', b.others),
               format('%s:%s', b.key_kind, b.key_value))::guardian.finding).*
      FROM (SELECT k.key_kind, k.key_value, count(*) AS n,
                   string_agg(DISTINCT k.other, ', ') AS others
              FROM (SELECT 'role' AS key_kind, s.role_name AS key_value, coalesce(s.client_addr, '?') AS other, s.occurred_at
                      FROM guardian.security_events AS s WHERE s.kind = 'login_failed'
                    UNION ALL
                    SELECT 'address', s.client_addr, coalesce(s.role_name, '?'), s.occurred_at
                      FROM guardian.security_events AS s WHERE s.kind = 'login_failed') AS k
              JOIN (SELECT 'role' AS key_kind, s.role_name AS key_value, max(s.occurred_at) AS last_at
                      FROM guardian.security_events AS s
                     WHERE s.read_at = now() AND s.kind = 'login_failed' GROUP BY s.role_name
                    UNION ALL
                    SELECT 'address', s.client_addr, max(s.occurred_at)
                      FROM guardian.security_events AS s
                     WHERE s.read_at = now() AND s.kind = 'login_failed' GROUP BY s.client_addr) AS fresh
                ON fresh.key_kind = k.key_kind AND fresh.key_value IS NOT DISTINCT FROM k.key_value
               AND k.occurred_at > fresh.last_at - make_interval(secs => v_window)
               AND k.occurred_at <= fresh.last_at
             GROUP BY k.key_kind, k.key_value) AS b
     WHERE b.n >= v_threshold;

    -- Permission denied and strict-mode rejections in this database, per role and message.
    RETURN QUERY
    SELECT (ROW('server_log',
               CASE e.kind WHEN 'strict_mode_rejected' THEN 'STRICT_MODE_REJECTED' ELSE 'PERMISSION_DENIED' END,
               CASE e.kind WHEN 'strict_mode_rejected' THEN 'HIGH' ELSE 'MEDIUM' END, NULL, e.role_name,
               format('%s %s for role %s: %s', e.n,
                      CASE e.kind WHEN 'strict_mode_rejected' THEN 'strict-mode rejection(s)' ELSE 'permission-denied error(s)' END,
                      coalesce(e.role_name, '?'), e.message),
               CASE e.kind WHEN 'strict_mode_rejected'
                    THEN 'Something tried to write test data into a strict-mode database: find the client (application_name, address) and stop it.'
                    ELSE 'A role tried something it may not: a missing GRANT in a deployment, or a probe. Check the query and the role.' END,
               jsonb_build_object('role', e.role_name, 'events', e.n, 'last_at', e.last_at, 'query', e.query,
                                  'application_name', e.app, 'client_addr', e.addr),
               format('%s:%s:%s', e.kind, e.role_name, md5(e.message)))::guardian.finding).*
      FROM (SELECT s.kind, s.role_name, s.message, count(*) AS n, max(s.occurred_at) AS last_at,
                   (array_agg(s.query ORDER BY s.occurred_at DESC))[1] AS query,
                   (array_agg(s.application_name ORDER BY s.occurred_at DESC))[1] AS app,
                   (array_agg(s.client_addr ORDER BY s.occurred_at DESC))[1] AS addr
              FROM guardian.security_events AS s
             WHERE s.read_at = now() AND s.kind IN ('permission_denied', 'strict_mode_rejected')
             GROUP BY s.kind, s.role_name, s.message) AS e;
END
$$;
COMMENT ON FUNCTION guardian._check_server_log() IS
    'Check server_log: reads new CSV log records and reports failed logins (LOGIN_FAILED), brute force per role or address (BRUTE_FORCE_SUSPECTED), permission-denied errors (PERMISSION_DENIED) and strict-mode rejections (STRICT_MODE_REJECTED).';
