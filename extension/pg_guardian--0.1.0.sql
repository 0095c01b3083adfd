-- pg_guardian--0.1.0.sql: the released 0.1.0 install script, frozen. Never edit it: changes go
-- into extension/sql/ and an update script in extension/updates/.
\echo Use "CREATE EXTENSION pg_guardian" to load this file. \quit

-- >>> sql/00_core/00_search_path.sql
-- Everything below qualifies guardian objects; built-ins resolve from pg_catalog only, so no
-- object in a schema someone else controls can stand in for them while the script runs.
-- (CREATE EXTENSION restores the caller's setting afterwards; the plain-SQL path runs in one
-- transaction, which SET LOCAL does not outlive.)
SET LOCAL search_path = pg_catalog, pg_temp;

-- >>> sql/00_core/01_roles.sql
-- Roles are cluster-wide and outlive the extension; create them only when missing.
-- guardian_owner owns every guardian object and runs the SECURITY DEFINER functions: it is
-- NOLOGIN and not a superuser, so a flaw in a definer function cannot become superuser.
-- guardian_admin may configure the guardian (environment, mode, rules, watch, alert triage);
-- guardian_reader may read alerts and status (dashboards, the relay's read side).
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'guardian_owner') THEN
        CREATE ROLE guardian_owner NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'guardian_reader') THEN
        CREATE ROLE guardian_reader NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'guardian_admin') THEN
        CREATE ROLE guardian_admin NOLOGIN;
    END IF;
END
$roles$;

GRANT guardian_reader TO guardian_admin;

-- >>> sql/00_core/10_environment.sql
-- Which environment this database is, and how hard the guardian guards it.
CREATE TABLE guardian.environment (
    singleton  boolean PRIMARY KEY DEFAULT true,
    name       text NOT NULL DEFAULT 'local',
    mode       text NOT NULL DEFAULT 'warn',
    changed_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    changed_by text NOT NULL DEFAULT CURRENT_USER,
    CONSTRAINT environment_singleton_chk CHECK (singleton),
    CONSTRAINT environment_name_chk CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
    CONSTRAINT environment_mode_chk CHECK (mode IN ('off', 'warn', 'strict'))
);
COMMENT ON TABLE guardian.environment IS
    'At most one row (none: local, warn): the environment this database is (production, staging, local, ...) and its guard mode. Change it with guardian.set_environment() and guardian.set_mode().';
SELECT pg_catalog.pg_extension_config_dump('guardian.environment', '');

-- Per-table overrides of the guard mode (NULL mode: follow the environment).
CREATE TABLE guardian.table_modes (
    relid      regclass PRIMARY KEY,
    mode       text NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    changed_by text NOT NULL DEFAULT CURRENT_USER,
    CONSTRAINT table_modes_mode_chk CHECK (mode IN ('off', 'warn', 'strict'))
);
COMMENT ON TABLE guardian.table_modes IS
    'Per-table guard mode overrides; set with guardian.set_table_mode(table, mode), cleared with mode NULL.';
SELECT pg_catalog.pg_extension_config_dump('guardian.table_modes', '');

-- Free-form settings for later capabilities (thresholds, auto-response switches), per
-- environment: a row with environment '*' applies to every environment.
CREATE TABLE guardian.settings (
    environment text NOT NULL DEFAULT '*',
    key         text NOT NULL,
    value       jsonb NOT NULL,
    changed_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    changed_by  text NOT NULL DEFAULT CURRENT_USER,
    CONSTRAINT settings_pkey PRIMARY KEY (environment, key),
    CONSTRAINT settings_key_chk CHECK (key ~ '^[a-z][a-z0-9_.]*$')
);
COMMENT ON TABLE guardian.settings IS
    'Guardian settings by environment (''*'' = all); read with guardian.setting(key).';
SELECT pg_catalog.pg_extension_config_dump('guardian.settings', '');

-- PL/pgSQL rather than SQL: its plan is cached per session, and the write path calls it.
CREATE FUNCTION guardian.current_environment()
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN coalesce((SELECT e.name FROM guardian.environment AS e), 'local');
END
$$;
COMMENT ON FUNCTION guardian.current_environment() IS
    'The name of the environment this database is (production, staging, local, ...).';

CREATE FUNCTION guardian.current_mode()
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN coalesce((SELECT e.mode FROM guardian.environment AS e), 'warn');
END
$$;
COMMENT ON FUNCTION guardian.current_mode() IS
    'The guard mode of this environment: off, warn or strict.';

CREATE FUNCTION guardian.setting(p_key text, p_default jsonb DEFAULT NULL)
RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(
        (SELECT s.value FROM guardian.settings AS s
          WHERE s.key = p_key
            AND s.environment IN (guardian.current_environment(), '*')
          ORDER BY s.environment = '*'
          LIMIT 1),
        p_default)
$$;
COMMENT ON FUNCTION guardian.setting(text, jsonb) IS
    'A setting for the current environment, falling back to the ''*'' row, then to p_default.';

-- >>> sql/00_core/20_alerts.sql
-- The one alert table every detector writes to and every channel reads from. The design's
-- columns come first and keep their meaning; a row inserted with only those columns (as the
-- design's own trigger does) is complete: the BEFORE INSERT trigger fills in the rest.
CREATE TABLE guardian.monitoring_alerts (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    severity        text NOT NULL,
    type            text NOT NULL,
    message         text NOT NULL,
    table_name      text,
    record_id       text,
    environment     text DEFAULT guardian.current_environment(),
    metadata        jsonb DEFAULT '{}'::jsonb,
    resolved_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    fingerprint     text,
    occurrences     integer NOT NULL DEFAULT 1,
    last_seen_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    context         jsonb,
    acknowledged_at timestamptz,
    acknowledged_by text,
    resolved_by     text,
    resolution_note text,
    CONSTRAINT monitoring_alerts_severity_chk
        CHECK (severity IN ('CRITICAL', 'HIGH', 'MEDIUM', 'LOW', 'INFO')),
    CONSTRAINT monitoring_alerts_type_chk CHECK (type ~ '^[A-Z][A-Z0-9_]{0,62}$'),
    CONSTRAINT monitoring_alerts_occurrences_chk CHECK (occurrences >= 1),
    CONSTRAINT monitoring_alerts_resolved_chk CHECK (resolved_by IS NULL OR resolved_at IS NOT NULL)
);
COMMENT ON TABLE guardian.monitoring_alerts IS
    'Every alert the guardian raises, one row per open condition (occurrences counts repeats). Raise with guardian.raise_alert(); triage with guardian.acknowledge_alert() and guardian.resolve_alert().';
COMMENT ON COLUMN guardian.monitoring_alerts.fingerprint IS
    'Identity of the condition: repeats of an open alert with the same fingerprint add to occurrences instead of a new row.';
COMMENT ON COLUMN guardian.monitoring_alerts.context IS
    'Session that raised the alert: roles, application_name, client address, backend pid, transaction id.';
SELECT pg_catalog.pg_extension_config_dump('guardian.monitoring_alerts', '');

CREATE INDEX idx_alerts_severity ON guardian.monitoring_alerts (severity);
CREATE INDEX idx_alerts_type ON guardian.monitoring_alerts (type);
CREATE INDEX idx_alerts_created_at ON guardian.monitoring_alerts (created_at);
CREATE INDEX monitoring_alerts_open_fingerprint_idx
    ON guardian.monitoring_alerts (fingerprint) WHERE resolved_at IS NULL;

CREATE FUNCTION guardian._session_context()
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object(
        'session_user', SESSION_USER,
        'current_user', CURRENT_USER,
        'application_name', nullif(current_setting('application_name', true), ''),
        'client_addr', host(inet_client_addr()),
        'client_port', inet_client_port(),
        'backend_pid', pg_backend_pid(),
        'txid', txid_current_if_assigned()))
$$;
COMMENT ON FUNCTION guardian._session_context() IS
    'Internal: who is writing (roles, application, client, pid, transaction) as JSON.';

CREATE FUNCTION guardian._alert_fingerprint(
    p_type text, p_environment text, p_table_name text, p_record_id text, p_message text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT md5(concat_ws(E'\x1f', p_type, p_environment, p_table_name, p_record_id, p_message))
$$;
COMMENT ON FUNCTION guardian._alert_fingerprint(text, text, text, text, text) IS
    'Internal: the default fingerprint of an alert that was raised without one.';

-- Normalises rows however they were inserted (raise_alert or a plain INSERT).
CREATE FUNCTION guardian._alerts_before_insert()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    NEW.severity := upper(btrim(NEW.severity));
    NEW.type := upper(btrim(NEW.type));
    NEW.environment := coalesce(NEW.environment, guardian.current_environment());
    NEW.metadata := coalesce(NEW.metadata, '{}'::jsonb);
    NEW.context := coalesce(NEW.context, guardian._session_context());
    NEW.created_at := coalesce(NEW.created_at, now());
    NEW.last_seen_at := greatest(NEW.last_seen_at, NEW.created_at);
    NEW.fingerprint := coalesce(NEW.fingerprint, guardian._alert_fingerprint(
        NEW.type, NEW.environment, NEW.table_name, NEW.record_id, NEW.message));
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION guardian._alerts_before_insert() IS
    'Internal: fills fingerprint, context and environment of alerts inserted with only the design''s columns.';

CREATE TRIGGER monitoring_alerts_normalise
    BEFORE INSERT ON guardian.monitoring_alerts
    FOR EACH ROW EXECUTE FUNCTION guardian._alerts_before_insert();

-- One wake-up per transaction that created alerts: identical notifications within a
-- transaction are folded into one by the server. Ordinary writes never notify.
CREATE FUNCTION guardian._alerts_notify()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pg_notify('guardian_alerts', '');
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION guardian._alerts_notify() IS
    'Internal: wakes the relay (LISTEN guardian_alerts) once per transaction that inserted alerts.';

CREATE TRIGGER monitoring_alerts_notify
    AFTER INSERT ON guardian.monitoring_alerts
    FOR EACH STATEMENT EXECUTE FUNCTION guardian._alerts_notify();

-- >>> sql/00_core/30_alert_functions.sql
CREATE FUNCTION guardian.raise_alert(
    p_type        text,
    p_severity    text,
    p_message     text,
    p_table_name  text DEFAULT NULL,
    p_record_id   text DEFAULT NULL,
    p_metadata    jsonb DEFAULT '{}'::jsonb,
    p_fingerprint text DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_severity    text := upper(btrim(p_severity));
    v_environment text := guardian.current_environment();
    v_fingerprint text;
    v_id          uuid;
BEGIN
    IF v_severity IS NULL OR v_severity NOT IN ('CRITICAL', 'HIGH', 'MEDIUM', 'LOW', 'INFO') THEN
        RAISE EXCEPTION 'unknown alert severity %', coalesce(quote_literal(p_severity), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use one of CRITICAL, HIGH, MEDIUM, LOW, INFO.';
    END IF;
    IF p_type IS NULL OR upper(btrim(p_type)) !~ '^[A-Z][A-Z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'invalid alert type %', coalesce(quote_literal(p_type), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Alert types are upper-case words joined by underscores, e.g. TEST_DATA_CONTAMINATION.';
    END IF;
    v_fingerprint := coalesce(p_fingerprint, guardian._alert_fingerprint(
        upper(btrim(p_type)), v_environment, p_table_name, p_record_id, p_message));

    -- Serialise raisers of the same condition so that it stays one open alert.
    PERFORM pg_advisory_xact_lock(hashtextextended('guardian.alert:' || v_fingerprint, 0));

    UPDATE guardian.monitoring_alerts AS a
       SET occurrences  = a.occurrences + 1,
           last_seen_at = now(),
           message      = p_message,
           metadata     = a.metadata || coalesce(p_metadata, '{}'::jsonb),
           severity     = CASE WHEN array_position(ARRAY['INFO','LOW','MEDIUM','HIGH','CRITICAL'], v_severity)
                                  > array_position(ARRAY['INFO','LOW','MEDIUM','HIGH','CRITICAL'], a.severity)
                               THEN v_severity ELSE a.severity END
     WHERE a.id = (SELECT o.id FROM guardian.monitoring_alerts AS o
                    WHERE o.fingerprint = v_fingerprint AND o.resolved_at IS NULL
                    ORDER BY o.created_at DESC LIMIT 1)
    RETURNING a.id INTO v_id;

    IF v_id IS NULL THEN
        INSERT INTO guardian.monitoring_alerts
            (severity, type, message, table_name, record_id, environment, metadata, fingerprint)
        VALUES
            (v_severity, p_type, p_message, p_table_name, p_record_id, v_environment,
             coalesce(p_metadata, '{}'::jsonb), v_fingerprint)
        RETURNING id INTO v_id;
    END IF;
    RETURN v_id;
END
$$;
COMMENT ON FUNCTION guardian.raise_alert(text, text, text, text, text, jsonb, text) IS
    'Raise an alert, or count another occurrence of the open alert with the same fingerprint. Returns the alert id. Every detector goes through here.';

CREATE FUNCTION guardian.acknowledge_alert(p_id uuid)
RETURNS guardian.monitoring_alerts
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_alert guardian.monitoring_alerts;
BEGIN
    UPDATE guardian.monitoring_alerts AS a
       SET acknowledged_at = coalesce(a.acknowledged_at, now()),
           acknowledged_by = coalesce(a.acknowledged_by, SESSION_USER)
     WHERE a.id = p_id
    RETURNING a.* INTO v_alert;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no alert with id %', p_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'List alerts with: SELECT id, type, message FROM guardian.monitoring_alerts ORDER BY created_at DESC;';
    END IF;
    RETURN v_alert;
END
$$;
COMMENT ON FUNCTION guardian.acknowledge_alert(uuid) IS
    'Mark an alert as seen (who and when); acknowledging twice keeps the first acknowledgement.';

CREATE FUNCTION guardian.resolve_alert(p_id uuid, p_note text DEFAULT NULL)
RETURNS guardian.monitoring_alerts
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_alert guardian.monitoring_alerts;
BEGIN
    UPDATE guardian.monitoring_alerts AS a
       SET resolved_at     = coalesce(a.resolved_at, now()),
           resolved_by     = coalesce(a.resolved_by, SESSION_USER),
           resolution_note = coalesce(p_note, a.resolution_note),
           acknowledged_at = coalesce(a.acknowledged_at, now()),
           acknowledged_by = coalesce(a.acknowledged_by, SESSION_USER)
     WHERE a.id = p_id
    RETURNING a.* INTO v_alert;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no alert with id %', p_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'List open alerts with: SELECT id, type, message FROM guardian.open_alerts;';
    END IF;
    RETURN v_alert;
END
$$;
COMMENT ON FUNCTION guardian.resolve_alert(uuid, text) IS
    'Close an alert (who, when, an optional note). A later repeat of the condition opens a new alert.';

CREATE VIEW guardian.open_alerts AS
SELECT a.id, a.severity, a.type, a.message, a.table_name, a.record_id, a.environment,
       a.occurrences, a.created_at, a.last_seen_at, a.acknowledged_at, a.acknowledged_by,
       a.metadata
  FROM guardian.monitoring_alerts AS a
 WHERE a.resolved_at IS NULL
 ORDER BY array_position(ARRAY['CRITICAL','HIGH','MEDIUM','LOW','INFO'], a.severity), a.last_seen_at DESC;
COMMENT ON VIEW guardian.open_alerts IS 'Unresolved alerts, most severe and most recent first.';

-- >>> sql/00_core/40_environment_functions.sql
CREATE FUNCTION guardian._mode_rank(p_mode text)
RETURNS integer
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT array_position(ARRAY['off', 'warn', 'strict'], p_mode)
$$;
COMMENT ON FUNCTION guardian._mode_rank(text) IS 'Internal: off < warn < strict.';

CREATE FUNCTION guardian._check_mode(p_mode text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_mode text := lower(btrim(p_mode));
BEGIN
    IF v_mode IS NULL OR v_mode NOT IN ('off', 'warn', 'strict') THEN
        RAISE EXCEPTION 'unknown guard mode %', coalesce(quote_literal(p_mode), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use off, warn or strict, e.g. SELECT guardian.set_mode(''strict'');';
    END IF;
    RETURN v_mode;
END
$$;
COMMENT ON FUNCTION guardian._check_mode(text) IS 'Internal: validates and normalises a guard mode.';

CREATE FUNCTION guardian.set_environment(p_name text)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_name text := lower(btrim(p_name));
    v_old  text := guardian.current_environment();
BEGIN
    IF v_name IS NULL OR v_name !~ '^[a-z][a-z0-9_-]{0,62}$' THEN
        RAISE EXCEPTION 'invalid environment name %', coalesce(quote_literal(p_name), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use a lower-case word such as production, staging or local: SELECT guardian.set_environment(''production'');';
    END IF;
    IF v_name = v_old AND EXISTS (SELECT FROM guardian.environment) THEN
        RETURN v_name;
    END IF;
    INSERT INTO guardian.environment AS e (singleton, name, mode)
    VALUES (true, v_name, guardian.current_mode())
    ON CONFLICT (singleton) DO UPDATE
       SET name = EXCLUDED.name, changed_at = now(), changed_by = SESSION_USER;
    PERFORM guardian.raise_alert(
        'ENVIRONMENT_CHANGED',
        CASE WHEN 'production' IN (v_old, v_name) THEN 'HIGH' ELSE 'INFO' END,
        format('environment changed from %s to %s by %s', v_old, v_name, SESSION_USER),
        p_metadata => jsonb_build_object('old', v_old, 'new', v_name),
        p_fingerprint => md5('ENVIRONMENT_CHANGED' || clock_timestamp()::text));
    RETURN v_name;
END
$$;
COMMENT ON FUNCTION guardian.set_environment(text) IS
    'Declare which environment this database is (production, staging, local, or any lower-case name). Audited as an ENVIRONMENT_CHANGED alert.';

CREATE FUNCTION guardian.set_mode(p_mode text)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_mode text := guardian._check_mode(p_mode);
    v_old  text := guardian.current_mode();
    v_env  text := guardian.current_environment();
BEGIN
    IF v_mode = v_old AND EXISTS (SELECT FROM guardian.environment) THEN
        RETURN v_mode;
    END IF;
    INSERT INTO guardian.environment AS e (singleton, name, mode)
    VALUES (true, v_env, v_mode)
    ON CONFLICT (singleton) DO UPDATE
       SET mode = EXCLUDED.mode, changed_at = now(), changed_by = SESSION_USER;
    PERFORM guardian.raise_alert(
        'GUARD_MODE_CHANGED',
        CASE WHEN guardian._mode_rank(v_mode) >= guardian._mode_rank(v_old) THEN 'INFO'
             WHEN v_env = 'production' THEN 'HIGH'
             ELSE 'MEDIUM' END,
        format('guard mode of %s changed from %s to %s by %s', v_env, v_old, v_mode, SESSION_USER),
        p_metadata => jsonb_build_object('old', v_old, 'new', v_mode),
        p_fingerprint => md5('GUARD_MODE_CHANGED' || clock_timestamp()::text));
    RETURN v_mode;
END
$$;
COMMENT ON FUNCTION guardian.set_mode(text) IS
    'Set the guard mode of this environment: off (nothing runs), warn (writes pass, alerts raised) or strict (contaminated writes rejected). Audited as a GUARD_MODE_CHANGED alert; relaxing production is HIGH.';

CREATE FUNCTION guardian.set_table_mode(p_table regclass, p_mode text)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_mode text;
    v_old  text;
BEGIN
    IF p_table IS NULL THEN
        RAISE EXCEPTION 'table must not be NULL'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass a table name, e.g. SELECT guardian.set_table_mode(''public.patients'', ''strict'');';
    END IF;
    SELECT t.mode INTO v_old FROM guardian.table_modes AS t WHERE t.relid = p_table;
    IF p_mode IS NULL THEN
        DELETE FROM guardian.table_modes AS t WHERE t.relid = p_table;
    ELSE
        v_mode := guardian._check_mode(p_mode);
        INSERT INTO guardian.table_modes AS t (relid, mode) VALUES (p_table, v_mode)
        ON CONFLICT (relid) DO UPDATE
           SET mode = EXCLUDED.mode, changed_at = now(), changed_by = SESSION_USER;
    END IF;
    IF v_old IS DISTINCT FROM v_mode THEN
        PERFORM guardian.raise_alert(
            'GUARD_MODE_CHANGED',
            CASE WHEN coalesce(guardian._mode_rank(v_mode), 9) >= coalesce(guardian._mode_rank(v_old), 0)
                 THEN 'INFO' ELSE 'MEDIUM' END,
            format('guard mode of table %s changed from %s to %s by %s', p_table,
                   coalesce(v_old, 'environment default'), coalesce(v_mode, 'environment default'), SESSION_USER),
            p_table_name => p_table::text,
            p_metadata => jsonb_build_object('old', v_old, 'new', v_mode),
            p_fingerprint => md5('GUARD_MODE_CHANGED' || p_table::text || clock_timestamp()::text));
    END IF;
    RETURN coalesce(v_mode, guardian.current_mode());
END
$$;
COMMENT ON FUNCTION guardian.set_table_mode(regclass, text) IS
    'Override the guard mode for one table (off, warn, strict); NULL goes back to the environment mode. Audited.';

CREATE FUNCTION guardian.effective_mode(p_table regclass)
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN coalesce((SELECT t.mode FROM guardian.table_modes AS t WHERE t.relid = p_table),
                    (SELECT e.mode FROM guardian.environment AS e), 'warn');
END
$$;
COMMENT ON FUNCTION guardian.effective_mode(regclass) IS
    'The guard mode that applies to a table: its override if any, else the environment mode.';

CREATE FUNCTION guardian.version()
RETURNS text
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_version text;
BEGIN
    SELECT x.extversion INTO v_version FROM pg_catalog.pg_extension AS x WHERE x.extname = 'pg_guardian';
    -- The plain-SQL install (migrations/) keeps its own version table.
    IF v_version IS NULL AND to_regclass('guardian.migrations') IS NOT NULL THEN
        EXECUTE 'SELECT m.version FROM guardian.migrations AS m ORDER BY m.applied_at DESC, m.version DESC LIMIT 1'
           INTO v_version;
    END IF;
    RETURN v_version;
END
$$;
COMMENT ON FUNCTION guardian.version() IS
    'The installed pg_guardian version, whichever way it was installed (extension or plain SQL).';

CREATE VIEW guardian.environment_status AS
SELECT guardian.current_environment() AS environment,
       guardian.current_mode() AS mode,
       guardian.version() AS version,
       CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_extension AS x WHERE x.extname = 'pg_guardian')
            THEN 'extension' ELSE 'sql' END AS install_method,
       (SELECT e.changed_at FROM guardian.environment AS e) AS changed_at,
       (SELECT e.changed_by FROM guardian.environment AS e) AS changed_by,
       (SELECT coalesce(jsonb_object_agg(t.relid::text, t.mode), '{}'::jsonb)
          FROM guardian.table_modes AS t) AS table_modes;
COMMENT ON VIEW guardian.environment_status IS
    'The environment, its guard mode, per-table overrides and the installed version, in one row.';

-- >>> sql/00_core/60_tamper_guard.sql
-- Application roles often own their tables, and a table owner may disable, rename or drop
-- any trigger on it. These event triggers refuse that for guardian triggers (those whose
-- function lives in the guardian schema) unless the role is a superuser or guardian_admin.
-- They run as whoever does the DDL, superusers included, so they call nothing but
-- pg_catalog and functions owned by the installing superuser (see 99_finish/10_ownership.sql).
CREATE FUNCTION guardian._is_admin()
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles AS r WHERE r.rolname = CURRENT_USER), false)
        OR pg_has_role(CURRENT_USER, 'guardian_admin', 'MEMBER')
$$;
COMMENT ON FUNCTION guardian._is_admin() IS
    'Internal: is the current role a superuser or a member of guardian_admin?';

CREATE FUNCTION guardian._guard_triggers_altered()
RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_trigger record;
BEGIN
    IF guardian._is_admin() THEN
        RETURN;
    END IF;
    -- Any state but 'O' (enabled in origin and local mode) lets writes pass unchecked:
    -- 'D' disabled, 'R' only on replicas, 'A' also while session_replication_role = replica.
    -- A guardian trigger is one whose function is in the guardian schema, whatever its name.
    SELECT t.tgname, t.tgrelid::regclass AS relid, t.tgenabled, c.command_tag INTO v_trigger
      FROM pg_event_trigger_ddl_commands() AS c
      JOIN pg_catalog.pg_trigger AS t
        ON (c.classid = 'pg_catalog.pg_class'::regclass AND t.tgrelid = c.objid)
        OR (c.classid = 'pg_catalog.pg_trigger'::regclass AND t.oid = c.objid)
      JOIN pg_catalog.pg_proc AS p ON p.oid = t.tgfoid
     WHERE p.pronamespace = 'guardian'::regnamespace
       AND (t.tgenabled <> 'O' OR c.command_tag = 'ALTER TRIGGER')
     LIMIT 1;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF v_trigger.command_tag = 'ALTER TRIGGER' THEN
        RAISE EXCEPTION 'role % may not alter or rename guardian trigger % on %', CURRENT_USER, v_trigger.tgname, v_trigger.relid
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'pg_guardian triggers can only be changed by a superuser or a member of guardian_admin.',
                  HINT = format('To stop watching the table, a guardian admin runs: SELECT guardian.unwatch(%L);', v_trigger.relid::text);
    END IF;
    RAISE EXCEPTION 'role % may not % guardian trigger % on %', CURRENT_USER,
                    CASE v_trigger.tgenabled WHEN 'D' THEN 'disable' WHEN 'R' THEN 'enable only on replicas'
                         ELSE 'enable in every replication mode' END,
                    v_trigger.tgname, v_trigger.relid
        USING ERRCODE = 'insufficient_privilege',
              DETAIL = 'A guardian trigger stays ENABLE (origin mode); only a superuser or a member of guardian_admin may change that.',
              HINT = format('To stop watching the table, a guardian admin runs: SELECT guardian.unwatch(%L);', v_trigger.relid::text);
END
$$;
COMMENT ON FUNCTION guardian._guard_triggers_altered() IS
    'Internal event trigger: refuses, for non-admins, any guardian trigger state but ENABLE (DISABLE, ENABLE REPLICA, ENABLE ALWAYS) and ALTER TRIGGER (rename) on guardian triggers.';

CREATE FUNCTION guardian._guard_triggers_dropped()
RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_identity text;
BEGIN
    IF guardian._is_admin() THEN
        RETURN;
    END IF;
    -- The trigger's function is gone from the catalog by now; its name is reliable because
    -- renaming a guardian trigger is refused. Dropped with its table is fine; dropped alone, or
    -- by ALTER TABLE ... DROP COLUMN ... CASCADE, is not.
    SELECT d.object_identity INTO v_identity
      FROM pg_event_trigger_dropped_objects() AS d
     WHERE d.object_type = 'trigger'
       AND d.address_names[3] LIKE 'guardian\_%'
       AND NOT EXISTS (SELECT FROM pg_event_trigger_dropped_objects() AS t
                        WHERE t.object_type IN ('table', 'foreign table')
                          AND t.address_names[1] = d.address_names[1] AND t.address_names[2] = d.address_names[2])
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'role % may not drop guardian trigger %', CURRENT_USER, v_identity
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'pg_guardian triggers can only be dropped by a superuser or a member of guardian_admin.',
                  HINT = 'To stop watching a table, a guardian admin runs: SELECT guardian.unwatch(''schema.table'');';
    END IF;
END
$$;
COMMENT ON FUNCTION guardian._guard_triggers_dropped() IS
    'Internal event trigger: refuses DROP TRIGGER (or a CASCADE that takes one) on guardian triggers by non-admins.';

-- guardian_owner runs the SECURITY DEFINER functions. It cannot create anything in the
-- schema, and this event trigger refuses it (and everyone but a superuser or the schema's
-- owner) any other DDL on the guardian's objects: ALTER FUNCTION ... SECURITY INVOKER or
-- SET search_path, CREATE RULE or CREATE TRIGGER on a guardian table, a column DEFAULT, DROP.
-- So code that runs as a superuser and calls a guardian function or writes a guardian table
-- runs only what the install put there.
CREATE FUNCTION guardian._guard_schema()
RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_what text;
BEGIN
    IF coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles AS r WHERE r.rolname = CURRENT_USER), false)
       OR NOT EXISTS (SELECT FROM pg_catalog.pg_namespace AS n WHERE n.nspname = 'guardian')
       OR (SELECT pg_catalog.pg_get_userbyid(n.nspowner) FROM pg_catalog.pg_namespace AS n
            WHERE n.nspname = 'guardian') = CURRENT_USER THEN
        RETURN;
    END IF;
    -- An object is the guardian's when it is in the schema, or (triggers, rules, policies,
    -- defaults, constraints: objects without a schema of their own) belongs to a relation there.
    IF TG_EVENT = 'sql_drop' THEN
        SELECT string_agg(DISTINCT d.object_type || ' ' || d.object_identity, ', ') INTO v_what
          FROM pg_event_trigger_dropped_objects() AS d
         WHERE d.schema_name = 'guardian' OR (d.object_type = 'schema' AND d.object_identity = 'guardian')
            OR (d.object_type IN ('trigger', 'rule', 'policy', 'table constraint', 'default value', 'index', 'table column')
                AND d.address_names[1] = 'guardian');
    ELSE
        SELECT string_agg(DISTINCT c.command_tag || ' ' || coalesce(c.object_identity, ''), ', ') INTO v_what
          FROM pg_event_trigger_ddl_commands() AS c
         WHERE c.schema_name = 'guardian' OR (c.object_type = 'schema' AND c.object_identity = 'guardian')
            OR (c.object_type IN ('trigger', 'rule', 'policy', 'table constraint', 'default value', 'index', 'table column')
                AND (pg_identify_object_as_address(c.classid, c.objid, c.objsubid)).object_names[1] = 'guardian');
    END IF;
    IF v_what IS NOT NULL THEN
        RAISE EXCEPTION 'role % may not change pg_guardian''s own objects: %', CURRENT_USER, v_what
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'The guardian''s functions and tables change only through its install and upgrade scripts.',
                  HINT = 'A superuser upgrades it with: ALTER EXTENSION pg_guardian UPDATE;';
    END IF;
END
$$;
COMMENT ON FUNCTION guardian._guard_schema() IS
    'Internal event trigger: refuses DDL on objects in the guardian schema by anyone but a superuser or the schema''s owner.';

-- Event triggers need a superuser. The extension always has one; the plain-SQL install on
-- managed Postgres may not, and then installs without this protection (status says so).
DO $event_triggers$
BEGIN
    IF (SELECT r.rolsuper FROM pg_catalog.pg_roles AS r WHERE r.rolname = CURRENT_USER) THEN
        CREATE EVENT TRIGGER guardian_protect_triggers_alter
            ON ddl_command_end
            WHEN TAG IN ('ALTER TABLE', 'ALTER TRIGGER')
            EXECUTE FUNCTION guardian._guard_triggers_altered();
        CREATE EVENT TRIGGER guardian_protect_triggers_drop
            ON sql_drop
            WHEN TAG IN ('DROP TRIGGER', 'ALTER TABLE')
            EXECUTE FUNCTION guardian._guard_triggers_dropped();
        CREATE EVENT TRIGGER guardian_protect_schema
            ON ddl_command_end
            EXECUTE FUNCTION guardian._guard_schema();
        CREATE EVENT TRIGGER guardian_protect_schema_drop
            ON sql_drop
            EXECUTE FUNCTION guardian._guard_schema();
    ELSE
        RAISE WARNING 'pg_guardian: % is not a superuser; guardian triggers are not protected from being disabled by table owners', CURRENT_USER;
    END IF;
END
$event_triggers$;

-- >>> sql/10_jobs/10_jobs.sql
-- Scheduled work (drift checks, activity roll-ups, health checks, retention) is registered
-- here once and run by pg_cron where it is present, or by `pg-guardian jobs run|serve` where it
-- is not. Both call guardian.run_job(), which makes every job lock-protected, replica-safe,
-- and visible (last run, duration, error).
CREATE TABLE guardian.jobs (
    name             text PRIMARY KEY,
    schedule         text NOT NULL,
    command          text NOT NULL,
    description      text NOT NULL,
    enabled          boolean NOT NULL DEFAULT true,
    max_lag          interval NOT NULL DEFAULT '1 hour',
    builtin          boolean NOT NULL DEFAULT false,
    last_started_at  timestamptz,
    last_finished_at timestamptz,
    last_status      text,
    last_error       text,
    last_duration    interval,
    last_result      text,
    runs             bigint NOT NULL DEFAULT 0,
    failures         bigint NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT jobs_name_chk CHECK (name ~ '^[a-z][a-z0-9_]{0,40}$'),
    CONSTRAINT jobs_schedule_chk CHECK (schedule ~ '^(\S+\s+){4}\S+$' OR schedule ~ '^[0-9]+ seconds$'),
    CONSTRAINT jobs_status_chk CHECK (last_status IN ('running', 'ok', 'error', 'skipped')),
    CONSTRAINT jobs_max_lag_chk CHECK (max_lag > '0'::interval)
);
COMMENT ON TABLE guardian.jobs IS
    'Guardian jobs: what runs when (cron syntax, GMT under pg_cron 1.4), and how each last run went. Schedule them with guardian.register_jobs().';
SELECT pg_catalog.pg_extension_config_dump('guardian.jobs', 'WHERE NOT builtin');

CREATE FUNCTION guardian.run_job(p_name text)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_job     guardian.jobs;
    v_started timestamptz := clock_timestamp();
    v_error   text;
    v_result  text;
BEGIN
    IF pg_is_in_recovery() THEN
        RETURN 'skipped: this server is a replica';
    END IF;
    SELECT * INTO v_job FROM guardian.jobs AS j WHERE j.name = p_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown guardian job %', quote_literal(p_name)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'List jobs with: SELECT name, schedule FROM guardian.jobs;';
    END IF;
    IF NOT v_job.enabled THEN
        RETURN 'skipped: disabled';
    END IF;
    -- Two runners (pg_cron and `pg-guardian jobs serve`, or an overlap) never run one job twice.
    IF NOT pg_try_advisory_xact_lock(hashtextextended('guardian.job:' || p_name, 0)) THEN
        RETURN 'skipped: already running';
    END IF;

    -- The command's first value (job functions return a one-line summary) is kept as
    -- last_result: what a retention run deleted is recorded, never silent.
    BEGIN
        EXECUTE v_job.command INTO v_result;
    EXCEPTION WHEN OTHERS THEN
        v_error := SQLERRM;
    END;

    UPDATE guardian.jobs AS j
       SET last_started_at  = v_started,
           last_finished_at = clock_timestamp(),
           last_duration    = clock_timestamp() - v_started,
           last_status      = CASE WHEN v_error IS NULL THEN 'ok' ELSE 'error' END,
           last_error       = v_error,
           last_result      = left(v_result, 1000),
           runs             = j.runs + 1,
           failures         = j.failures + (v_error IS NOT NULL)::int
     WHERE j.name = p_name;
    IF v_error IS NOT NULL THEN
        PERFORM guardian.raise_alert(
            'JOB_FAILED', 'HIGH',
            format('guardian job %s failed: %s', p_name, v_error),
            p_metadata => jsonb_build_object('job', p_name, 'error', v_error),
            p_fingerprint => md5('JOB_FAILED:' || p_name));
        RETURN 'error: ' || v_error;
    END IF;
    -- A job that works again closes its failure and overdue alerts.
    UPDATE guardian.monitoring_alerts AS a
       SET resolved_at = now(), resolved_by = 'pg_guardian',
           resolution_note = format('job %s ran successfully at %s', p_name, v_started)
     WHERE a.resolved_at IS NULL
       AND a.fingerprint IN (md5('JOB_FAILED:' || p_name), guardian._finding_fingerprint('jobs_overdue', p_name));
    RETURN 'ok' || coalesce(': ' || v_result, '');
END
$$;
COMMENT ON FUNCTION guardian.run_job(text) IS
    'Run one guardian job now: skipped on a replica, when disabled or already running; failures are recorded and raised as JOB_FAILED alerts, never propagated.';

CREATE FUNCTION guardian.register_jobs()
RETURNS TABLE (job text, scheduled boolean, detail text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_job      guardian.jobs;
    v_cron_db  text := current_setting('cron.database_name', true);
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension AS x WHERE x.extname = 'pg_cron') THEN
        FOR v_job IN SELECT * FROM guardian.jobs AS j ORDER BY j.name LOOP
            job := v_job.name; scheduled := false;
            detail := 'pg_cron is not installed in this database: run `pg-guardian jobs serve`';
            RETURN NEXT;
        END LOOP;
        RETURN;
    END IF;
    IF v_cron_db IS DISTINCT FROM current_database() THEN
        FOR v_job IN SELECT * FROM guardian.jobs AS j ORDER BY j.name LOOP
            job := v_job.name; scheduled := false;
            detail := format('pg_cron runs only in database %s: run `pg-guardian jobs serve` for this one, or schedule it from there with cron.schedule_in_database()', v_cron_db);
            RETURN NEXT;
        END LOOP;
        RETURN;
    END IF;
    FOR v_job IN SELECT * FROM guardian.jobs AS j ORDER BY j.name LOOP
        job := v_job.name;
        IF v_job.enabled THEN
            EXECUTE 'SELECT cron.schedule($1, $2, $3)'
              USING 'guardian_' || v_job.name, v_job.schedule,
                    format('SELECT guardian.run_job(%L)', v_job.name);
            scheduled := true;
            detail := v_job.schedule;
        ELSE
            EXECUTE 'SELECT cron.unschedule(jobid) FROM cron.job WHERE jobname = $1'
              USING 'guardian_' || v_job.name;
            scheduled := false;
            detail := 'disabled';
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION guardian.register_jobs() IS
    'Schedule every enabled guardian job in pg_cron as guardian_<name> (idempotent: pg_cron upserts by name) and unschedule disabled ones; says why when pg_cron cannot run them here.';

CREATE FUNCTION guardian.unregister_jobs()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count integer := 0;
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_extension AS x WHERE x.extname = 'pg_cron') THEN
        EXECUTE $q$SELECT count(cron.unschedule(jobid))::int FROM cron.job
                    WHERE jobname LIKE 'guardian\_%' AND database = current_database()$q$
           INTO v_count;
    END IF;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION guardian.unregister_jobs() IS
    'Remove the guardian''s pg_cron jobs for this database (uninstall does this first).';

-- A job that never ran counts its lag from when it was registered, so a scheduler that never
-- started shows up as overdue too.
CREATE VIEW guardian.job_status AS
SELECT j.name, j.schedule, j.enabled, j.last_started_at, j.last_finished_at, j.last_status,
       j.last_error, j.last_result, j.last_duration, j.runs, j.failures, j.max_lag,
       pg_catalog.now() - coalesce(j.last_finished_at, j.created_at) AS lag,
       j.enabled AND pg_catalog.now() - coalesce(j.last_finished_at, j.created_at) > j.max_lag AS overdue
  FROM guardian.jobs AS j;
COMMENT ON VIEW guardian.job_status IS
    'Each guardian job with its last run and result, lag since then (since registration if it never ran) and whether it is overdue (lag > max_lag).';

-- >>> sql/10_jobs/15_set_job.sql
-- Changing a job's schedule, switch or allowed lag is configuration: validated here, then
-- re-registered with pg_cron where it runs. Commands are not editable: a job runs as
-- guardian_owner, so letting admins write commands would hand them that role. set_job runs
-- as its caller (admins may update those three columns only) because pg_cron jobs belong to,
-- and run as, the role that schedules them.
CREATE FUNCTION guardian._check_cron_schedule(p_schedule text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_fields text[] := regexp_split_to_array(btrim(p_schedule), '\s+');
    v_limits int[][] := ARRAY[[0, 59], [0, 23], [1, 31], [1, 12], [0, 7]];
    v_names  text[] := ARRAY['minute', 'hour', 'day of month', 'month', 'day of week'];
    v_part   text;
    v_m      text[];
BEGIN
    IF p_schedule IS NULL OR array_length(v_fields, 1) IS DISTINCT FROM 5 THEN
        RAISE EXCEPTION 'invalid job schedule %', coalesce(quote_literal(p_schedule), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A schedule has five fields: minute hour day-of-month month day-of-week (GMT under pg_cron 1.4).',
                  HINT = 'For example every five minutes: ''*/5 * * * *''.';
    END IF;
    FOR i IN 1 .. 5 LOOP
        FOREACH v_part IN ARRAY string_to_array(v_fields[i], ',') LOOP
            v_m := regexp_match(v_part, '^(\*|([0-9]{1,2})(-([0-9]{1,2}))?)(/([0-9]{1,2}))?$');
            IF v_m IS NULL
               OR (v_m[2] IS NOT NULL AND v_m[2]::int NOT BETWEEN v_limits[i][1] AND v_limits[i][2])
               OR (v_m[4] IS NOT NULL AND (v_m[4]::int NOT BETWEEN v_limits[i][1] AND v_limits[i][2]
                                           OR v_m[4]::int < v_m[2]::int))
               OR (v_m[6] IS NOT NULL AND v_m[6]::int < 1) THEN
                RAISE EXCEPTION 'invalid % field % in job schedule %', v_names[i],
                                quote_literal(v_part), quote_literal(p_schedule)
                    USING ERRCODE = 'invalid_parameter_value',
                          DETAIL = format('The %s field takes *, a number from %s to %s, a range a-b, a list a,b, or a step */n.',
                                          v_names[i], v_limits[i][1], v_limits[i][2]),
                          HINT = 'For example every five minutes: ''*/5 * * * *''.';
            END IF;
        END LOOP;
    END LOOP;
    RETURN array_to_string(v_fields, ' ');
END
$$;
COMMENT ON FUNCTION guardian._check_cron_schedule(text) IS
    'Internal: validates a five-field cron schedule (the syntax pg_cron 1.4 and `pg-guardian jobs` share) and normalises its spacing.';

CREATE FUNCTION guardian.set_job(
    p_name     text,
    p_enabled  boolean DEFAULT NULL,
    p_schedule text DEFAULT NULL,
    p_max_lag  interval DEFAULT NULL)
RETURNS guardian.jobs
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_job guardian.jobs;
BEGIN
    IF p_max_lag IS NOT NULL AND p_max_lag <= interval '0' THEN
        RAISE EXCEPTION 'invalid max_lag % for guardian job %', p_max_lag, quote_literal(p_name)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'max_lag is how long the job may go without running before JOB_OVERDUE, e.g. interval ''30 minutes''.';
    END IF;
    IF NOT EXISTS (SELECT FROM guardian.jobs AS j WHERE j.name = p_name) THEN
        RAISE EXCEPTION 'unknown guardian job %', coalesce(quote_literal(p_name), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'List jobs with: SELECT name, schedule, enabled FROM guardian.jobs;';
    END IF;
    UPDATE guardian.jobs AS j
       SET enabled  = coalesce(p_enabled, j.enabled),
           schedule = CASE WHEN p_schedule IS NULL THEN j.schedule
                           ELSE guardian._check_cron_schedule(p_schedule) END,
           max_lag  = coalesce(p_max_lag, j.max_lag)
     WHERE j.name = p_name
    RETURNING j.* INTO v_job;
    -- Keep pg_cron in step where it runs the jobs of this database.
    IF EXISTS (SELECT FROM pg_catalog.pg_extension AS x WHERE x.extname = 'pg_cron')
       AND current_setting('cron.database_name', true) = current_database() THEN
        IF has_schema_privilege('cron', 'USAGE')
           AND has_function_privilege('cron.schedule(text, text, text)', 'EXECUTE') THEN
            PERFORM guardian.register_jobs();
        ELSE
            RAISE NOTICE 'guardian job % changed; pg_cron still has the old schedule', p_name
                USING HINT = 'As the role that owns the guardian pg_cron jobs, run: SELECT * FROM guardian.register_jobs();';
        END IF;
    END IF;
    RETURN v_job;
END
$$;
COMMENT ON FUNCTION guardian.set_job(text, boolean, text, interval) IS
    'Enable or disable a guardian job, change its schedule (five-field cron, GMT under pg_cron 1.4) or the lag after which it counts as overdue; re-registers it with pg_cron when pg_cron runs here.';

-- >>> sql/10_jobs/20_parameters.sql
-- Thresholds of every check and retention rule are named parameters with a default and a
-- sane range. Overrides live in guardian.settings (per environment, '*' for all), so they
-- survive pg_dump; guardian.set_param() refuses nonsense before it is stored, and
-- guardian.param() refuses it again if someone wrote the settings table by hand.
CREATE TABLE guardian.parameters (
    name          text PRIMARY KEY,
    default_value numeric NOT NULL,
    min_value     numeric NOT NULL,
    max_value     numeric NOT NULL,
    unit          text NOT NULL,
    description   text NOT NULL,
    not_above     text,
    CONSTRAINT parameters_name_chk CHECK (name ~ '^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$'),
    CONSTRAINT parameters_range_chk CHECK (min_value <= default_value AND default_value <= max_value)
);
COMMENT ON TABLE guardian.parameters IS
    'Every tunable threshold: default, allowed range, unit; not_above names a parameter this one may not exceed (warning <= critical). Override with guardian.set_param().';

CREATE FUNCTION guardian.param(p_name text)
RETURNS numeric
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_param guardian.parameters;
    v_raw   jsonb;
    v_value numeric;
BEGIN
    SELECT * INTO v_param FROM guardian.parameters AS p WHERE p.name = p_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown guardian parameter %', coalesce(quote_literal(p_name), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'List parameters with: SELECT name, value, unit FROM guardian.parameter_values;';
    END IF;
    v_raw := guardian.setting(p_name);
    IF v_raw IS NULL OR v_raw = 'null'::jsonb THEN
        RETURN v_param.default_value;
    END IF;
    BEGIN
        v_value := (v_raw #>> '{}')::numeric;
    EXCEPTION WHEN invalid_text_representation THEN
        v_value := NULL;
    END;
    IF v_value IS NULL OR v_value NOT BETWEEN v_param.min_value AND v_param.max_value THEN
        RAISE EXCEPTION 'invalid value % for guardian parameter %', v_raw::text, p_name
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Expected a number (%s) from %s to %s; guardian.settings holds %s.',
                                  v_param.unit, v_param.min_value, v_param.max_value, v_raw::text),
                  HINT = format('Fix it with: SELECT guardian.set_param(%L, %s);', p_name, v_param.default_value);
    END IF;
    RETURN v_value;
END
$$;
COMMENT ON FUNCTION guardian.param(text) IS
    'The value of a guardian parameter in this environment (setting, else default); an out-of-range stored value is an error naming the fix.';

CREATE FUNCTION guardian.set_param(p_name text, p_value numeric, p_environment text DEFAULT '*')
RETURNS numeric
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_param guardian.parameters;
    v_other guardian.parameters;
BEGIN
    SELECT * INTO v_param FROM guardian.parameters AS p WHERE p.name = p_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown guardian parameter %', coalesce(quote_literal(p_name), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'List parameters with: SELECT name, value, unit FROM guardian.parameter_values;';
    END IF;
    IF p_environment IS NULL OR (p_environment <> '*' AND p_environment !~ '^[a-z][a-z0-9_-]{0,62}$') THEN
        RAISE EXCEPTION 'invalid environment % for guardian parameter %', coalesce(quote_literal(p_environment), 'NULL'), p_name
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use ''*'' for every environment, or an environment name such as production.';
    END IF;
    IF p_value IS NULL THEN
        DELETE FROM guardian.settings AS s WHERE s.key = p_name AND s.environment = p_environment;
        RETURN guardian.param(p_name);
    END IF;
    IF p_value NOT BETWEEN v_param.min_value AND v_param.max_value THEN
        RAISE EXCEPTION 'value % is out of range for guardian parameter %', p_value, p_name
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('%s: %s from %s to %s.', v_param.description, v_param.unit,
                                  v_param.min_value, v_param.max_value),
                  HINT = format('For example: SELECT guardian.set_param(%L, %s);', p_name, v_param.default_value);
    END IF;
    -- Warning thresholds may not be beyond critical ones (checked against the effective value).
    IF v_param.not_above IS NOT NULL AND p_value > guardian.param(v_param.not_above) THEN
        RAISE EXCEPTION 'value % for % is above % (%)', p_value, p_name, v_param.not_above,
                        guardian.param(v_param.not_above)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Raise %s first (SELECT guardian.set_param(%L, ...);), or choose a value up to %s.',
                                v_param.not_above, v_param.not_above, guardian.param(v_param.not_above));
    END IF;
    FOR v_other IN SELECT * FROM guardian.parameters AS p WHERE p.not_above = p_name LOOP
        IF guardian.param(v_other.name) > p_value THEN
            RAISE EXCEPTION 'value % for % is below % (%)', p_value, p_name, v_other.name,
                            guardian.param(v_other.name)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('Lower %s first (SELECT guardian.set_param(%L, ...);), or choose a value of at least %s.',
                                    v_other.name, v_other.name, guardian.param(v_other.name));
        END IF;
    END LOOP;
    INSERT INTO guardian.settings AS s (environment, key, value)
    VALUES (p_environment, p_name, to_jsonb(p_value))
    ON CONFLICT (environment, key) DO UPDATE
       SET value = EXCLUDED.value, changed_at = now(), changed_by = SESSION_USER;
    RETURN p_value;
END
$$;
COMMENT ON FUNCTION guardian.set_param(text, numeric, text) IS
    'Set a guardian parameter for one environment (''*'': all), refusing values out of range or past their critical partner; NULL removes the override.';

CREATE VIEW guardian.parameter_values AS
SELECT p.name,
       coalesce((SELECT (s.value #>> '{}') FROM guardian.settings AS s
                  WHERE s.key = p.name AND s.environment IN (guardian.current_environment(), '*')
                  ORDER BY s.environment = '*' LIMIT 1),
                p.default_value::pg_catalog.text) AS value,
       p.default_value, p.min_value, p.max_value, p.unit, p.description,
       EXISTS (SELECT FROM guardian.settings AS s
                WHERE s.key = p.name AND s.environment IN (guardian.current_environment(), '*')) AS overridden
  FROM guardian.parameters AS p;
COMMENT ON VIEW guardian.parameter_values IS
    'Each guardian parameter with its value in this environment, default, range and unit.';

-- >>> sql/10_jobs/30_checks.sql
-- Health checks, security scans and the job watchdog are all "checks": functions returning
-- rows of one shape (splinter's idea), run by guardian.run_checks(), which feeds every row to
-- the one alert path. A check that describes a state (too many connections, RLS off) has
-- its alerts resolved when the state clears; a check that reports events (a failed login,
-- a GRANT) leaves them open for triage.
CREATE TYPE guardian.finding AS (
    check_name  text,
    alert_type  text,
    severity    text,
    table_name  text,
    record_id   text,
    detail      text,
    remediation text,
    metadata    jsonb,
    dedup_key   text
);
COMMENT ON TYPE guardian.finding IS
    'One finding of a check: alert type and severity, the object (table_name or record_id), what was found (detail), how to fix it (remediation), facts (metadata) and a stable dedup key. A CHECK_DEGRADED finding says the check could only partly look.';

CREATE TABLE guardian.checks (
    name          text PRIMARY KEY,
    category      text NOT NULL,
    function      regproc NOT NULL,
    description   text NOT NULL,
    is_condition  boolean NOT NULL,
    builtin       boolean NOT NULL DEFAULT false,
    last_run_at   timestamptz,
    last_status   text,
    last_detail   text,
    last_findings integer,
    last_duration interval,
    CONSTRAINT checks_name_chk CHECK (name ~ '^[a-z][a-z0-9_]{0,40}$'),
    CONSTRAINT checks_category_chk CHECK (category ~ '^[a-z][a-z0-9_]{0,20}$'),
    CONSTRAINT checks_status_chk CHECK (last_status IN ('ok', 'findings', 'degraded', 'error'))
);
COMMENT ON TABLE guardian.checks IS
    'Registered checks by category (health, security, posture, jobs): the function returning guardian.finding rows, whether findings are conditions (auto-resolved when cleared) or events, and how the last run went. Switch one off with guardian.set_check_enabled().';
COMMENT ON COLUMN guardian.checks.last_status IS
    'ok: nothing found; findings: alerts raised; degraded: the check could only partly look (see last_detail); error: it failed (a CHECK_FAILED alert says why).';
SELECT pg_catalog.pg_extension_config_dump('guardian.checks', 'WHERE NOT builtin');

CREATE FUNCTION guardian.set_check_enabled(p_name text, p_enabled boolean, p_environment text DEFAULT '*')
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM guardian.checks AS c WHERE c.name = p_name) THEN
        RAISE EXCEPTION 'unknown guardian check %', coalesce(quote_literal(p_name), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'List checks with: SELECT name, category, description FROM guardian.checks;';
    END IF;
    IF p_environment IS NULL OR (p_environment <> '*' AND p_environment !~ '^[a-z][a-z0-9_-]{0,62}$') THEN
        RAISE EXCEPTION 'invalid environment %', coalesce(quote_literal(p_environment), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use ''*'' for every environment, or an environment name such as production.';
    END IF;
    IF p_enabled IS NULL THEN
        DELETE FROM guardian.settings AS s
         WHERE s.key = 'checks.' || p_name || '.enabled' AND s.environment = p_environment;
    ELSE
        INSERT INTO guardian.settings AS s (environment, key, value)
        VALUES (p_environment, 'checks.' || p_name || '.enabled', to_jsonb(p_enabled))
        ON CONFLICT (environment, key) DO UPDATE
           SET value = EXCLUDED.value, changed_at = now(), changed_by = SESSION_USER;
    END IF;
    RETURN coalesce(p_enabled, true);
END
$$;
COMMENT ON FUNCTION guardian.set_check_enabled(text, boolean, text) IS
    'Switch a check on or off for one environment (''*'': all); NULL removes the override (checks are on by default).';

CREATE FUNCTION guardian._check_enabled(p_name text)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(guardian.setting('checks.' || p_name || '.enabled') = 'false'::jsonb, false) IS NOT TRUE
$$;
COMMENT ON FUNCTION guardian._check_enabled(text) IS 'Internal: is a check switched on in this environment?';

-- Fingerprints are derived from the check and its dedup key only, so a repeat of the same
-- condition, at whatever severity, counts on the one open alert.
CREATE FUNCTION guardian._finding_fingerprint(p_check text, p_dedup_key text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT md5('check:' || p_check || ':' || coalesce(p_dedup_key, ''))
$$;
COMMENT ON FUNCTION guardian._finding_fingerprint(text, text) IS
    'Internal: the alert fingerprint of a finding (check name and dedup key).';

CREATE FUNCTION guardian._raise_finding(p_finding guardian.finding)
RETURNS uuid
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT guardian.raise_alert(
        p_finding.alert_type, p_finding.severity, p_finding.detail,
        p_finding.table_name, p_finding.record_id,
        coalesce(p_finding.metadata, '{}'::jsonb)
            || jsonb_strip_nulls(jsonb_build_object(
                   'check', p_finding.check_name,
                   'remediation', p_finding.remediation,
                   'dedup_key', p_finding.dedup_key)),
        guardian._finding_fingerprint(p_finding.check_name, p_finding.dedup_key))
$$;
COMMENT ON FUNCTION guardian._raise_finding(guardian.finding) IS
    'Internal: the one path from a finding to an alert (dedup by check and dedup key; metadata carries check and remediation).';

CREATE FUNCTION guardian._resolve_cleared(p_check text, p_keep text[], p_note text)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count integer;
BEGIN
    UPDATE guardian.monitoring_alerts AS a
       SET resolved_at = now(), resolved_by = 'pg_guardian', resolution_note = p_note
     WHERE a.resolved_at IS NULL
       AND a.metadata ->> 'check' = p_check
       AND NOT (a.fingerprint = ANY (coalesce(p_keep, '{}')));
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION guardian._resolve_cleared(text, text[], text) IS
    'Internal: resolves the open alerts of a check whose fingerprint it no longer reports.';

CREATE FUNCTION guardian.run_checks(p_category text DEFAULT NULL, p_check text DEFAULT NULL)
RETURNS TABLE (
    check_name  text,
    category    text,
    status      text,
    alert_type  text,
    severity    text,
    table_name  text,
    record_id   text,
    detail      text,
    remediation text,
    metadata    jsonb,
    alert_id    uuid)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_check    guardian.checks;
    v_findings guardian.finding[];
    v_finding  guardian.finding;
    v_key      text;
    v_keep     text[];
    v_status   text;
    v_note     text;
    v_state    text;
    v_msg      text;
    v_hint     text;
    v_started  timestamptz;
    v_matched  boolean := false;
BEGIN
    FOR v_check IN
        SELECT * FROM guardian.checks AS c
         WHERE (p_category IS NULL OR c.category = p_category)
           AND (p_check IS NULL OR c.name = p_check)
         ORDER BY c.category, c.name
    LOOP
        v_matched := true;
        check_name := v_check.name; category := v_check.category;
        alert_type := NULL; severity := NULL; table_name := NULL; record_id := NULL;
        detail := NULL; remediation := NULL; metadata := NULL; alert_id := NULL;
        IF NOT guardian._check_enabled(v_check.name) THEN
            status := 'disabled';
            detail := 'switched off: SELECT guardian.set_check_enabled(' || quote_literal(v_check.name) || ', true);';
            RETURN NEXT;
            CONTINUE;
        END IF;
        v_started := clock_timestamp();
        v_findings := NULL; v_status := NULL; v_note := NULL; v_keep := '{}';
        -- Each check runs in its own subtransaction: one that fails or may not look (no
        -- privilege, no log file) is reported and the others still run.
        BEGIN
            EXECUTE format('SELECT array_agg(f) FROM %s() AS f', v_check.function::regproc) INTO v_findings;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT, v_hint = PG_EXCEPTION_HINT;
            v_note := v_msg || coalesce(' (' || nullif(v_hint, '') || ')', '');
            v_status := CASE WHEN v_state IN ('42501', '58P01', '58000', '0A000', '55000')
                             THEN 'degraded' ELSE 'error' END;
            v_findings := ARRAY[ROW(v_check.name,
                CASE v_status WHEN 'degraded' THEN 'CHECK_DEGRADED' ELSE 'CHECK_FAILED' END,
                CASE v_status WHEN 'degraded' THEN 'LOW' ELSE 'MEDIUM' END,
                NULL, v_check.name,
                format('guardian check %s %s: %s', v_check.name,
                       CASE v_status WHEN 'degraded' THEN 'cannot fully run' ELSE 'failed' END, v_msg),
                nullif(v_hint, ''),
                jsonb_build_object('sqlstate', v_state, 'error', v_msg),
                '_status:' || v_status)::guardian.finding];
        END;
        FOREACH v_finding IN ARRAY coalesce(v_findings, '{}') LOOP
            v_key := v_finding.dedup_key;
            IF v_finding.alert_type = 'CHECK_DEGRADED' THEN
                v_status := coalesce(v_status, 'degraded');
                v_note := coalesce(v_note, v_finding.detail);
                v_key := '_status:degraded';
            END IF;
            alert_type := v_finding.alert_type; severity := v_finding.severity;
            table_name := v_finding.table_name; record_id := v_finding.record_id;
            detail := v_finding.detail; remediation := v_finding.remediation;
            metadata := v_finding.metadata;
            alert_id := guardian._raise_finding(ROW(v_check.name, v_finding.alert_type, v_finding.severity,
                v_finding.table_name, v_finding.record_id, v_finding.detail, v_finding.remediation,
                v_finding.metadata, v_key)::guardian.finding);
            v_keep := v_keep || guardian._finding_fingerprint(v_check.name, v_key);
            status := CASE WHEN v_finding.alert_type IN ('CHECK_DEGRADED', 'CHECK_FAILED')
                           THEN coalesce(v_status, 'degraded') ELSE 'finding' END;
            RETURN NEXT;
        END LOOP;
        v_status := coalesce(v_status, CASE WHEN cardinality(v_keep) > 0 THEN 'findings' ELSE 'ok' END);
        IF v_status = 'ok' THEN
            alert_type := NULL; severity := NULL; table_name := NULL; record_id := NULL;
            detail := NULL; remediation := NULL; metadata := NULL; alert_id := NULL;
            status := 'ok';
            RETURN NEXT;
        END IF;
        -- Conditions that are no longer reported are over; so is an earlier failure or
        -- degradation of a check that now ran. A failed check says nothing about its
        -- conditions, so they stay as they were.
        IF v_status <> 'error' THEN
            IF v_check.is_condition THEN
                PERFORM guardian._resolve_cleared(v_check.name, v_keep,
                    format('condition cleared: check %s no longer reports it', v_check.name));
            ELSE
                PERFORM guardian._resolve_cleared(v_check.name,
                    v_keep || ARRAY(SELECT a.fingerprint FROM guardian.monitoring_alerts AS a
                                     WHERE a.resolved_at IS NULL AND a.metadata ->> 'check' = v_check.name
                                       AND a.type NOT IN ('CHECK_DEGRADED', 'CHECK_FAILED')),
                    format('check %s runs normally again', v_check.name));
            END IF;
        END IF;
        UPDATE guardian.checks AS c
           SET last_run_at = v_started, last_status = v_status, last_detail = v_note,
               last_findings = cardinality(v_keep), last_duration = clock_timestamp() - v_started
         WHERE c.name = v_check.name;
    END LOOP;
    IF NOT v_matched AND (p_category IS NOT NULL OR p_check IS NOT NULL) THEN
        RAISE EXCEPTION 'no guardian check matches category % and name %',
                        coalesce(quote_literal(p_category), 'any'), coalesce(quote_literal(p_check), 'any')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'List checks with: SELECT name, category FROM guardian.checks ORDER BY category, name;';
    END IF;
END
$$;
COMMENT ON FUNCTION guardian.run_checks(text, text) IS
    'Run the checks of a category (health, security, posture, jobs; NULL: all) or one check by name; raises or counts an alert per finding, resolves conditions that cleared, and returns one row per finding (or one ok/disabled/degraded/error row per check).';

CREATE FUNCTION guardian.run_checks_job(p_category text)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_summary text;
BEGIN
    SELECT format('%s checks: %s', p_category,
                  string_agg(format('%s %s', r.n, r.status), ', ' ORDER BY r.status))
      INTO v_summary
      FROM (SELECT s.status, count(DISTINCT s.check_name) AS n
              FROM guardian.run_checks(p_category) AS s GROUP BY s.status) AS r;
    RETURN v_summary;
END
$$;
COMMENT ON FUNCTION guardian.run_checks_job(text) IS
    'The job form of run_checks(): runs a category and returns a one-line summary (e.g. "health checks: 2 finding, 10 ok") for guardian.jobs.last_result.';

CREATE VIEW guardian.check_status AS
SELECT c.name, c.category, guardian._check_enabled(c.name) AS enabled, c.is_condition,
       c.description, c.last_run_at, c.last_status, c.last_detail, c.last_findings, c.last_duration
  FROM guardian.checks AS c;
COMMENT ON VIEW guardian.check_status IS
    'Each check: category, on or off in this environment, how its last run went (ok, findings, degraded with the reason, error).';

-- >>> sql/10_jobs/40_maintenance.sql
-- The guardian looks after itself: a watchdog check raises JOB_OVERDUE for a job that stopped
-- running, and a retention job prunes what it keeps (saying what it deleted).
CREATE FUNCTION guardian._check_jobs_overdue()
RETURNS SETOF guardian.finding
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (ROW('jobs_overdue', 'JOB_OVERDUE', 'HIGH', NULL, s.name,
               format('guardian job %s has not run for %s (allowed: %s; last: %s)', s.name,
                      date_trunc('second', s.lag), s.max_lag,
                      coalesce(s.last_finished_at::text, 'never')),
               CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_extension AS x WHERE x.extname = 'pg_cron')
                     AND current_setting('cron.database_name', true) = current_database()
                    THEN 'Check that pg_cron runs (SELECT * FROM cron.job_run_details ORDER BY start_time DESC LIMIT 5) and the job is scheduled: SELECT * FROM guardian.register_jobs();'
                    ELSE 'pg_cron does not run jobs in this database: keep `pg-guardian jobs serve` running.' END,
               jsonb_build_object('job', s.name, 'lag_seconds', round(extract(epoch FROM s.lag)),
                                  'max_lag', s.max_lag::text, 'last_finished_at', s.last_finished_at),
               s.name)::guardian.finding).*
      FROM guardian.job_status AS s
     WHERE s.overdue
$$;
COMMENT ON FUNCTION guardian._check_jobs_overdue() IS
    'Check jobs_overdue: a JOB_OVERDUE finding for every enabled job that has not run within its max_lag.';

-- Deleting pg_cron's history of guardian jobs needs the rights of the role that scheduled
-- them; 99_finish defines guardian._prune_cron_history() owned by the installing role.
CREATE FUNCTION guardian.run_retention()
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_alert_days numeric := guardian.param('retention.resolved_alerts_days');
    v_event_days numeric := guardian.param('retention.security_events_days');
    v_cron_days  numeric := guardian.param('retention.cron_history_days');
    v_alerts     bigint := 0;
    v_events     bigint := 0;
    v_cron       bigint := 0;
    v_cron_note  text := '';
    v_summary    text;
BEGIN
    DELETE FROM guardian.monitoring_alerts AS a
     WHERE a.resolved_at < now() - make_interval(days => v_alert_days::int);
    GET DIAGNOSTICS v_alerts = ROW_COUNT;
    IF to_regclass('guardian.security_events') IS NOT NULL THEN
        EXECUTE 'DELETE FROM guardian.security_events AS e WHERE e.occurred_at < $1'
          USING now() - make_interval(days => v_event_days::int);
        GET DIAGNOSTICS v_events = ROW_COUNT;
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_extension AS x WHERE x.extname = 'pg_cron') THEN
        BEGIN
            v_cron := guardian._prune_cron_history(make_interval(days => v_cron_days::int));
        EXCEPTION WHEN insufficient_privilege OR undefined_function THEN
            v_cron_note := ' (cron.job_run_details not pruned: ' || SQLERRM || ')';
        END;
    END IF;
    v_summary := format('deleted %s resolved alerts older than %s days, %s security events older than %s days, %s pg_cron run records older than %s days%s',
                        v_alerts, v_alert_days, v_events, v_event_days, v_cron, v_cron_days, v_cron_note);
    RAISE LOG 'pg_guardian retention: %', v_summary;
    IF v_alerts + v_events + v_cron > 0 THEN
        PERFORM guardian.raise_alert('RETENTION_PRUNED', 'INFO', 'guardian retention ' || v_summary,
            p_metadata => jsonb_build_object('resolved_alerts', v_alerts, 'security_events', v_events,
                                             'cron_run_details', v_cron, 'at', now()),
            p_fingerprint => md5('RETENTION_PRUNED'));
    END IF;
    RETURN v_summary;
END
$$;
COMMENT ON FUNCTION guardian.run_retention() IS
    'Delete resolved alerts, security events and pg_cron run records of guardian jobs past their retention (retention.* parameters); the counts go to the job result, the server log and an INFO RETENTION_PRUNED alert.';

INSERT INTO guardian.parameters (name, default_value, min_value, max_value, unit, description) VALUES
    ('retention.resolved_alerts_days', 90, 1, 36500, 'days', 'Resolved alerts are deleted this long after resolution'),
    ('retention.security_events_days', 30, 1, 36500, 'days', 'Security events read from the server log are kept this long'),
    ('retention.cron_history_days', 7, 1, 3650, 'days', 'cron.job_run_details rows of guardian jobs are kept this long');

INSERT INTO guardian.checks (name, category, function, description, is_condition, builtin) VALUES
    ('jobs_overdue', 'jobs', 'guardian._check_jobs_overdue', 'Guardian jobs that have not run within their max_lag (JOB_OVERDUE)', true, true);

INSERT INTO guardian.jobs (name, schedule, command, description, max_lag, builtin) VALUES
    ('watchdog', '*/5 * * * *', 'SELECT guardian.run_checks_job(''jobs'')',
     'Raise JOB_OVERDUE for guardian jobs that stopped running; resolve it when they run again', '30 minutes', true),
    ('retention', '17 3 * * *', 'SELECT guardian.run_retention()',
     'Prune resolved alerts, security events and pg_cron history past their retention', '2 days', true);

-- >>> sql/20_contamination/00_matchers.sql
-- The two hot-path primitives of the WHEN clauses on watched tables. Where the server has the
-- extension's shared library they are C (a single pass over the value); on managed Postgres
-- (plain-SQL install, no library) the same functions are SQL with the same results, slower.
-- Any role may call them (the WHEN clauses run as whoever writes): the C functions answer NULLs
-- and arguments of the wrong kind with a defined result or a clean ERROR.
DO $matchers$
BEGIN
    CREATE FUNCTION guardian._contains_any(p_value text, p_needles text[])
    RETURNS boolean
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS '$libdir/pg_guardian', 'pg_guardian_contains_any';
    CREATE FUNCTION guardian._uuid_matches(p_value uuid, p_bounds uuid[])
    RETURNS boolean
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS '$libdir/pg_guardian', 'pg_guardian_uuid_matches';
    -- The whole-row prefilter of the WHEN clauses (STABLE: it reads the compiled rules). A row
    -- that is not a watched table's (ROW(...), a composite type, another table) holds nothing.
    CREATE FUNCTION guardian._suspect(p_new record)
    RETURNS boolean
    LANGUAGE c STABLE STRICT
    AS '$libdir/pg_guardian', 'pg_guardian_suspect';
    -- Not STRICT: a NULL old row (or one of another type) makes every value new, as for an
    -- insert; a NULL new row holds nothing (false).
    CREATE FUNCTION guardian._suspect(p_new record, p_old record)
    RETURNS boolean
    LANGUAGE c STABLE CALLED ON NULL INPUT
    AS '$libdir/pg_guardian', 'pg_guardian_suspect';
    -- The scan's prefilter: (attnum, value) pairs straight from the scanned columns. Not STRICT:
    -- values may be NULL (a NULL table: false); attnums must be integer constants.
    CREATE FUNCTION guardian._suspect_columns(p_table regclass, VARIADIC p_columns "any")
    RETURNS boolean
    LANGUAGE c STABLE CALLED ON NULL INPUT PARALLEL SAFE
    AS '$libdir/pg_guardian', 'pg_guardian_suspect_columns';
    COMMENT ON FUNCTION guardian._suspect_columns(regclass, "any") IS
        'Internal prefilter (C) for scans: may these columns of a row, given as (attnum, value) pairs, hold test data whatever the guard mode?';
    COMMENT ON FUNCTION guardian._suspect(record) IS
        'Internal prefilter (C): may this new row hold test data? One call checks every watched column.';
    COMMENT ON FUNCTION guardian._suspect(record, record) IS
        'Internal prefilter (C): may this updated row hold test data in a column that changed? (NULL old row: every column.)';
EXCEPTION WHEN undefined_file OR insufficient_privilege OR undefined_function THEN
    RAISE NOTICE 'pg_guardian: shared library not available, using SQL matchers (slower writes on watched tables)';
    CREATE FUNCTION guardian._contains_any(p_value text, p_needles text[])
    RETURNS boolean
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $sql$
        -- The C search's meaning (extension/src/needles.c). Needles are looked for in the value's
        -- folded text (v): what the precise rules see (NFKC, U+0130 lowered, runs of any white
        -- space \s may match in some locale as one space), with every other non-ASCII character
        -- as chr(127), which is no word character; ASCII letters compare case-insensitively. A
        -- word character is an ASCII letter or digit, or any non-ASCII character. When the value
        -- and a needle hold non-ASCII characters, lower(NFKC(value)) with white space collapsed
        -- (v2) is searched too.
        SELECT EXISTS (
            SELECT FROM (SELECT translate(regexp_replace(regexp_replace(
                                    replace(normalize(p_value, NFKC), chr(304), lower(chr(304))),
                                    '[\t\n\v\f\r\x1c-\x1f \u0085\u00a0\u1680\u180e\u2000-\u200b\u2028\u2029\u202f\u205f\u3000]+', ' ', 'g'),
                                    '[^\x01-\x7f]', chr(127), 'g'),
                                 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz') AS v,
                         CASE WHEN p_value ~ '[^\x01-\x7f]'
                               AND EXISTS (SELECT FROM unnest(p_needles) AS x(needle) WHERE x.needle ~ '[^\x01-\x7f]')
                              THEN translate(regexp_replace(lower(normalize(p_value, NFKC)),
                                       '[\t\n\v\f\r\x1c-\x1f \u0085\u00a0\u1680\u180e\u2000-\u200b\u2028\u2029\u202f\u205f\u3000]+', ' ', 'g'),
                                   'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz') END AS v2) AS f,
                 unnest(p_needles) AS n(needle),
                 -- '#': digits, '?' any digit after the first digit, a trailing '$' the end of the digits
                 LATERAL (SELECT length(n.needle) > 1 AND left(n.needle, 1) = '#' AS is_digits,
                                 ltrim(regexp_replace(substr(n.needle, 2), '[^0-9?]', '', 'g'), '?') AS digits) AS d,
                 -- else a leading '^' and then a trailing '$' (each on more than one character) ask for word boundaries
                 LATERAL (SELECT length(n.needle) > 1 AND left(n.needle, 1) = '^' AS word_start,
                                 CASE WHEN length(n.needle) > 1 AND left(n.needle, 1) = '^' THEN substr(n.needle, 2) ELSE n.needle END AS rest) AS s,
                 LATERAL (SELECT length(s.rest) > 1 AND right(s.rest, 1) = '$' AS word_end,
                                 CASE WHEN length(s.rest) > 1 AND right(s.rest, 1) = '$' THEN left(s.rest, -1) ELSE s.rest END AS body) AS e,
                 LATERAL (SELECT CASE WHEN s.word_start THEN '(^|[\x01-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f])' ELSE '' END
                                 || regexp_replace(translate(e.body, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz'),
                                                   '([^[:alnum:][:space:]])', '\\\1', 'g')
                                 || CASE WHEN e.word_end THEN '($|[\x01-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f])' ELSE '' END AS pattern) AS r
             WHERE n.needle IS NOT NULL
               AND CASE WHEN d.is_digits
                        THEN d.digits = '' OR regexp_replace(f.v, '[^0-9]', '', 'g')
                                              ~ (replace(d.digits, '?', '[0-9]') || CASE WHEN right(n.needle, 1) = '$' THEN '$' ELSE '' END)
                        ELSE e.body = '' OR f.v ~ r.pattern OR coalesce(f.v2 ~ r.pattern, false) END)
    $sql$;
    CREATE FUNCTION guardian._uuid_matches(p_value uuid, p_bounds uuid[])
    RETURNS boolean
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $sql$
        SELECT EXISTS (SELECT FROM generate_series(1, coalesce(array_length(p_bounds, 1), 0), 2) AS g(i)
                        WHERE p_value BETWEEN p_bounds[g.i] AND p_bounds[g.i + 1])
    $sql$;
END
$matchers$;
COMMENT ON FUNCTION guardian._contains_any(text, text[]) IS
    'Internal prefilter: does the value contain any needle? Looked for in the value as the rules see it (NFKC, white space runs as one space; other non-ASCII characters allow a word boundary), ASCII case-insensitive. A leading ^ / trailing $ on a needle asks for a word boundary there; a leading # looks in the digits only; an empty needle matches everything.';
COMMENT ON FUNCTION guardian._uuid_matches(uuid, uuid[]) IS
    'Internal prefilter: does the uuid fall in any [low, high] pair of the bounds array?';

-- >>> sql/20_contamination/10_rules.sql
-- The rule catalogue. Users add, disable and tune rules with plain SQL; every change is
-- validated here and recompiles the write-path prefilters (see 40_compile.sql).
CREATE TABLE guardian.kinds (
    kind        text PRIMARY KEY,
    description text NOT NULL
);
COMMENT ON TABLE guardian.kinds IS 'Semantic kinds of columns that rules apply to.';
INSERT INTO guardian.kinds (kind, description) VALUES
    ('email',        'e-mail addresses'),
    ('person_name',  'names of people (first, last, full, display names)'),
    ('organization', 'names of clinics, practices, companies, tenants'),
    ('phone',        'telephone and fax numbers'),
    ('identifier',   'UUIDs and other record identifiers'),
    ('free_text',    'notes, descriptions, titles and other text');

CREATE TABLE guardian.rules (
    name                text PRIMARY KEY,
    pack                text NOT NULL DEFAULT 'custom',
    kinds               text[] NOT NULL DEFAULT '{}',
    column_pattern      text,
    match_type          text NOT NULL,
    pattern             text,
    terms               text[],
    anchors             text[],
    matcher             text,
    severity            text NOT NULL DEFAULT 'HIGH',
    enabled             boolean NOT NULL DEFAULT true,
    environments        text[],
    safe_for_automation boolean NOT NULL DEFAULT false,
    description         text NOT NULL,
    example_match       text,
    example_nonmatch    text,
    builtin             boolean NOT NULL DEFAULT false,
    updated_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_by          text NOT NULL DEFAULT CURRENT_USER,
    CONSTRAINT rules_name_chk CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    CONSTRAINT rules_match_type_chk
        CHECK (match_type IN ('regex', 'words', 'exact', 'prefix', 'domains', 'uuids', 'digits')),
    CONSTRAINT rules_severity_chk CHECK (severity IN ('CRITICAL', 'HIGH', 'MEDIUM', 'LOW', 'INFO')),
    CONSTRAINT rules_target_chk CHECK (cardinality(kinds) > 0 OR column_pattern IS NOT NULL)
);
COMMENT ON TABLE guardian.rules IS
    'Test-data rules: what they apply to (kinds and/or a column-name pattern), how they match, severity, environments. Edit with SQL; invalid rules are rejected on write.';
COMMENT ON COLUMN guardian.rules.match_type IS
    'regex: pattern (case-insensitive) on the normalised value; words: any term as a whole word; exact: the whole normalised value is a term; prefix: starts with pattern; domains: e-mail domain equals or ends with a term; uuids: value equals a term or starts with a term ending in ''-''; digits: pattern (regex) on the value''s digits only.';
COMMENT ON COLUMN guardian.rules.anchors IS
    'Literal substrings, one of which every matching value contains: the write-path prefilter. A leading ^ / trailing $ asks for a word boundary there; #digits is looked for in the value''s digits only, where ? stands for any digit and a trailing $ for the end of the digits (#55501??$). NULL: derived from terms; for regex rules without anchors every value is checked (slower).';
COMMENT ON COLUMN guardian.rules.matcher IS
    'Derived on write: the one regular expression (or, for exact, nothing) that decides a match on the normalised value.';
COMMENT ON COLUMN guardian.rules.environments IS 'Environments the rule applies to; NULL means every environment.';
SELECT pg_catalog.pg_extension_config_dump('guardian.rules', 'WHERE NOT builtin');

CREATE TABLE guardian.allowlist (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule        text REFERENCES guardian.rules (name) ON UPDATE CASCADE ON DELETE CASCADE,
    relid       regclass,
    column_name text,
    value       text,
    reason      text NOT NULL,
    expires_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    created_by  text NOT NULL DEFAULT CURRENT_USER,
    CONSTRAINT allowlist_scope_chk CHECK (num_nonnulls(rule, relid, column_name, value) > 0),
    CONSTRAINT allowlist_column_needs_table_chk CHECK (column_name IS NULL OR relid IS NOT NULL)
);
COMMENT ON TABLE guardian.allowlist IS
    'Known false positives: an entry silences findings that match all of its non-NULL fields (rule, table, column, normalised value) until it expires. Add with guardian.allow().';
SELECT pg_catalog.pg_extension_config_dump('guardian.allowlist', '');
SELECT pg_catalog.pg_extension_config_dump('guardian.allowlist_id_seq', '');

-- Normalisation used by every precise match: Unicode NFKC, lower case, collapsed white space.
CREATE FUNCTION guardian._normalize(p_value text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT btrim(regexp_replace(lower(normalize(p_value, NFKC)), '\s+', ' ', 'g'))
$$;
COMMENT ON FUNCTION guardian._normalize(text) IS
    'Internal: NFKC, lower case, single spaces, trimmed: the form every rule sees.';

CREATE FUNCTION guardian._regex_literal(p_text text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT regexp_replace(p_text, '([^[:alnum:][:space:]])', '\\\1', 'g')
$$;
COMMENT ON FUNCTION guardian._regex_literal(text) IS 'Internal: a string escaped to match itself in a regular expression.';

-- Every match type becomes one regular expression on the normalised value (exact: equality).
CREATE FUNCTION guardian._rule_matcher(p_match_type text, p_pattern text, p_terms text[])
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE p_match_type
        WHEN 'regex' THEN p_pattern
        WHEN 'digits' THEN p_pattern
        WHEN 'words' THEN '(^|[^[:alnum:]])(' || t.alternation || ')($|[^[:alnum:]])'
        WHEN 'domains' THEN '@([^@]*\.)?(' || t.alternation || ')[.>]*$'
        WHEN 'prefix' THEN '^' || guardian._regex_literal(lower(p_pattern))
        WHEN 'uuids' THEN '^(' || (SELECT string_agg(guardian._regex_literal(x) || CASE WHEN right(x, 1) = '-' THEN '' ELSE '$' END, '|')
                                       FROM unnest(p_terms) AS x) || ')'
    END
      FROM (SELECT string_agg(guardian._regex_literal(x), '|' ORDER BY length(x) DESC) AS alternation
              FROM unnest(p_terms) AS x) AS t
$$;
COMMENT ON FUNCTION guardian._rule_matcher(text, text, text[]) IS 'Internal: the regular expression that decides a rule.';

-- The precise test. Deliberately without SET search_path so that it inlines into its callers,
-- all of which pin search_path; every operator is schema-qualified.
CREATE FUNCTION guardian._rule_matches(p_match_type text, p_matcher text, p_terms text[], p_value text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT p_value OPERATOR(pg_catalog.<>) ''
       AND ((p_match_type OPERATOR(pg_catalog.=) 'exact' AND p_value OPERATOR(pg_catalog.=) ANY (p_terms))
            OR (p_match_type OPERATOR(pg_catalog.=) 'digits'
                AND pg_catalog.regexp_replace(p_value, '[^0-9]', '', 'g') OPERATOR(pg_catalog.~) p_matcher)
            OR (p_match_type OPERATOR(pg_catalog.<>) 'exact' AND p_match_type OPERATOR(pg_catalog.<>) 'digits'
                AND p_value OPERATOR(pg_catalog.~*) p_matcher))
$$;
COMMENT ON FUNCTION guardian._rule_matches(text, text, text[], text) IS
    'Internal: does a rule (match type, matcher, terms) match this normalised value?';

CREATE FUNCTION guardian._rule_anchors(p_rule guardian.rules)
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    -- The C prefilter folds ASCII case only: add case variants of non-ASCII anchors.
    SELECT ARRAY(
        SELECT DISTINCT v.variant
          FROM unnest(CASE
                 WHEN p_rule.anchors IS NOT NULL THEN p_rule.anchors
                 WHEN p_rule.match_type IN ('domains', 'uuids') THEN p_rule.terms
                 -- whole words: '^' and '$' ask the prefilter for word boundaries
                 WHEN p_rule.match_type = 'words' THEN ARRAY(SELECT '^' || t || '$' FROM unnest(p_rule.terms) AS t)
                 WHEN p_rule.match_type = 'exact' THEN
                     ARRAY(SELECT '^' || (regexp_split_to_array(t, ' '))[cardinality(regexp_split_to_array(t, ' '))] || '$'
                             FROM unnest(p_rule.terms) AS t)
                 WHEN p_rule.match_type = 'prefix' THEN ARRAY[lower(p_rule.pattern)]
                 ELSE ARRAY['']
               END) AS a(anchor),
               LATERAL unnest(CASE WHEN a.anchor ~ '[^\x01-\x7f]'
                                   THEN ARRAY[lower(a.anchor), upper(a.anchor), initcap(a.anchor)]
                                   ELSE ARRAY[lower(a.anchor)] END) AS v(variant)
         ORDER BY 1)
$$;
COMMENT ON FUNCTION guardian._rule_anchors(guardian.rules) IS
    'Internal: the literal substrings the prefilter looks for on behalf of a rule (^/$: word boundary; '''' = every value).';

CREATE FUNCTION guardian._validate_rule()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_kind  text;
    v_regex text;
BEGIN
    NEW.severity := upper(btrim(NEW.severity));
    NEW.match_type := lower(btrim(NEW.match_type));
    NEW.updated_at := now();
    NEW.updated_by := SESSION_USER;
    FOREACH v_kind IN ARRAY NEW.kinds LOOP
        IF NOT EXISTS (SELECT FROM guardian.kinds AS k WHERE k.kind = v_kind) THEN
            RAISE EXCEPTION 'rule %: unknown kind %', NEW.name, quote_literal(v_kind)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Known kinds: ' || (SELECT string_agg(k.kind, ', ' ORDER BY k.kind) FROM guardian.kinds AS k);
        END IF;
    END LOOP;
    IF NEW.match_type IN ('regex', 'prefix', 'digits') AND coalesce(NEW.pattern, '') = '' THEN
        RAISE EXCEPTION 'rule %: match_type % needs a pattern', NEW.name, NEW.match_type
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Set pattern, e.g. pattern => ''^test[0-9]*@''.';
    END IF;
    IF NEW.match_type IN ('words', 'exact', 'domains', 'uuids') AND coalesce(cardinality(NEW.terms), 0) = 0 THEN
        RAISE EXCEPTION 'rule %: match_type % needs terms', NEW.name, NEW.match_type
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Set terms, e.g. terms => ARRAY[''example.com''].';
    END IF;
    FOREACH v_regex IN ARRAY ARRAY[CASE WHEN NEW.match_type IN ('regex', 'digits') THEN NEW.pattern END,
                                   NEW.column_pattern] LOOP
        CONTINUE WHEN v_regex IS NULL;
        BEGIN
            PERFORM '' ~ v_regex;
        EXCEPTION WHEN invalid_regular_expression THEN
            RAISE EXCEPTION 'rule %: invalid regular expression %', NEW.name, quote_literal(v_regex)
                USING ERRCODE = 'invalid_regular_expression',
                      DETAIL = SQLERRM,
                      HINT = 'Patterns use PostgreSQL POSIX regular expressions (\m and \M for word boundaries).';
        END;
    END LOOP;
    -- Terms are compared with normalised values, so store them normalised.
    IF NEW.terms IS NOT NULL THEN
        NEW.terms := ARRAY(SELECT DISTINCT guardian._normalize(t) FROM unnest(NEW.terms) AS t
                            WHERE guardian._normalize(t) <> '' ORDER BY 1);
    END IF;
    IF NEW.anchors IS NOT NULL THEN
        NEW.anchors := ARRAY(SELECT DISTINCT lower(a) FROM unnest(NEW.anchors) AS a WHERE a IS NOT NULL ORDER BY 1);
    END IF;
    NEW.matcher := guardian._rule_matcher(NEW.match_type, NEW.pattern, NEW.terms);
    BEGIN
        PERFORM '' ~ NEW.matcher;
    EXCEPTION WHEN invalid_regular_expression THEN
        RAISE EXCEPTION 'rule %: its terms do not make a valid expression: %', NEW.name, SQLERRM
            USING ERRCODE = 'invalid_regular_expression', HINT = 'Check the terms for stray characters.';
    END;
    IF NEW.example_match IS NOT NULL
       AND NOT guardian._rule_matches(NEW.match_type, NEW.matcher, NEW.terms, guardian._normalize(NEW.example_match)) THEN
        RAISE EXCEPTION 'rule %: example_match % does not match the rule', NEW.name, quote_literal(NEW.example_match)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Fix the pattern or terms, or the example.';
    END IF;
    IF NEW.example_nonmatch IS NOT NULL
       AND guardian._rule_matches(NEW.match_type, NEW.matcher, NEW.terms, guardian._normalize(NEW.example_nonmatch)) THEN
        RAISE EXCEPTION 'rule %: example_nonmatch % matches the rule', NEW.name, quote_literal(NEW.example_nonmatch)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The rule is too broad: tighten the pattern or terms.';
    END IF;
    IF NEW.example_match IS NOT NULL
       AND NOT guardian._contains_any(NEW.example_match, guardian._rule_anchors(NEW)) THEN
        RAISE EXCEPTION 'rule %: example_match % contains none of the anchors %', NEW.name,
                        quote_literal(NEW.example_match), NEW.anchors
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Every value the rule matches must contain one of its anchors; add one, or set anchors to NULL.';
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION guardian._validate_rule() IS
    'Internal: rejects invalid rules (unknown kind, bad regex, examples that contradict the rule) on INSERT or UPDATE.';

CREATE TRIGGER rules_validate
    BEFORE INSERT OR UPDATE ON guardian.rules
    FOR EACH ROW EXECUTE FUNCTION guardian._validate_rule();

-- >>> sql/20_contamination/20_rule_packs.sql
-- Default rule packs. Precision is a feature: every rule matches on word boundaries or on
-- structure (domains, digits, UUID ranges) of the normalised value, and carries an example it
-- must catch and one it must not (both checked when the row is written, and by the tests).
-- Anchors are the literal substrings the write-path prefilter looks for.
INSERT INTO guardian.rules
    (name, pack, kinds, match_type, pattern, terms, anchors, severity, safe_for_automation,
     description, example_match, example_nonmatch, builtin)
VALUES
-- reserved_domains: RFC 2606 / RFC 6761 names that can never belong to a real person.
('reserved_test_tld', 'reserved_domains', '{email}', 'domains', NULL,
 '{test,example,invalid,localhost}', '{.test$,.example$,.invalid$,.localhost$,@test$,@example$,@invalid$,@localhost$}',
 'CRITICAL', true,
 'E-mail in a reserved top-level domain (.test, .example, .invalid, .localhost; RFC 2606, RFC 6761).',
 'user@tenant-a.test', 'celeste.testa@gmail.com', true),
('reserved_example_domain', 'reserved_domains', '{email}', 'domains', NULL,
 '{example.com,example.net,example.org,example.edu}', '{^example.com$,^example.net$,^example.org$,^example.edu$}',
 'CRITICAL', true,
 'E-mail at a reserved example domain (example.com, example.net, example.org; RFC 2606).',
 'jane.doe@example.com', 'ops@examplehealth.com', true),
-- disposable_email: throwaway inboxes used by QA scripts and sign-up bots.
('disposable_mail_domain', 'disposable_email', '{email}', 'domains', NULL,
 '{mailinator.com,guerrillamail.com,guerrillamail.net,guerrillamailblock.com,sharklasers.com,grr.la,10minutemail.com,10minutemail.net,yopmail.com,yopmail.fr,yopmail.net,tempmail.com,temp-mail.org,temp-mail.io,tempmail.net,trashmail.com,trashmail.de,getnada.com,nada.email,maildrop.cc,dispostable.com,throwawaymail.com,fakeinbox.com,mailnesia.com,mintemail.com,mohmal.com,emailondeck.com,mytemp.email,spamgourmet.com,tempr.email,discard.email,burnermail.io,inboxkitten.com,mailcatch.com,spam4.me,pokemail.net,tempinbox.com,harakirimail.com,mailpoof.com,moakt.com,tempail.com,fakemail.net,emailfake.com,33mail.com,mailsac.com,testmail.app,mail.tm}',
 NULL, 'HIGH', false,
 'E-mail at a well-known disposable mailbox provider.',
 'qa.signup@mailinator.com', 'celeste@mailbox.org', true),
-- qa_addresses: the addresses QA teams and test suites write.
('qa_local_part', 'qa_addresses', '{email}', 'regex',
 '^(test|testing|qa|e2e|uat|autotest|automation)([0-9]+|[+._-][^@]*)?@', NULL,
 '{^test0,^test1,^test2,^test3,^test4,^test5,^test6,^test7,^test8,^test9,^test@,^test+,^test.,^test_,^test-,^testing0,^testing1,^testing2,^testing3,^testing4,^testing5,^testing6,^testing7,^testing8,^testing9,^testing@,^testing+,^testing.,^testing_,^testing-,^qa0,^qa1,^qa2,^qa3,^qa4,^qa5,^qa6,^qa7,^qa8,^qa9,^qa@,^qa+,^qa.,^qa_,^qa-,^e2e0,^e2e1,^e2e2,^e2e3,^e2e4,^e2e5,^e2e6,^e2e7,^e2e8,^e2e9,^e2e@,^e2e+,^e2e.,^e2e_,^e2e-,^uat0,^uat1,^uat2,^uat3,^uat4,^uat5,^uat6,^uat7,^uat8,^uat9,^uat@,^uat+,^uat.,^uat_,^uat-,^autotest0,^autotest1,^autotest2,^autotest3,^autotest4,^autotest5,^autotest6,^autotest7,^autotest8,^autotest9,^autotest@,^autotest+,^autotest.,^autotest_,^autotest-,^automation0,^automation1,^automation2,^automation3,^automation4,^automation5,^automation6,^automation7,^automation8,^automation9,^automation@,^automation+,^automation.,^automation_,^automation-}', 'HIGH', false,
 'E-mail whose local part is a QA marker: test@, test123@, test+1@, qa+signup@, e2e-run7@.',
 'test+123@gmail.com', 'testa.celeste@gmail.com', true),
('qa_plus_tag', 'qa_addresses', '{email}', 'regex',
 '\+(test|qa|e2e|fixture|seed|fake|dummy)[^@]*@', NULL,
 '{+test,+qa,+e2e,+fixture,+seed,+fake,+dummy}', 'HIGH', false,
 'E-mail with a QA sub-address tag: jane+test@, bob+e2e42@.',
 'jane.doe+e2e42@gmail.com', 'jane+newsletter@gmail.com', true),
-- placeholder_names: the names people type when a form needs one.
('placeholder_full_name', 'placeholder_names', '{person_name}', 'exact', NULL,
 '{john doe,jane doe,john q public,jane q public,joe bloggs,joe public,fred nurk,max mustermann,erika mustermann,test user,test patient,test test,test account,test person,foo bar,lorem ipsum,first last,firstname lastname,first name last name,no name,unknown unknown,asdf asdf,jane roe,richard roe,baby doe,john doe jr}',
 '{^doe$,^public$,^bloggs$,^nurk$,^mustermann$,^test$,^bar$,^ipsum$,^last$,^lastname$,^name$,^unknown$,^asdf$,^roe$,^doe jr$,^jr$}', 'HIGH', false,
 'A placeholder full name (John Doe, Test User, Foo Bar, Lorem Ipsum, Max Mustermann, ...); first and last name columns are checked together.',
 'John Doe', 'John Dobson', true),
('placeholder_name_word', 'placeholder_names', '{person_name}', 'words', NULL,
 '{test,testing,fake,dummy,placeholder,asdf,qwerty,lorem,ipsum,xxx,zzz,undefined,null,tbd}', NULL,
 'HIGH', false,
 'A name containing a placeholder word (Test, Fake, Dummy, Placeholder, Lorem, TBD) as a whole word: Celeste Testa, Martin Tester and Oliver Dummett pass.',
 'Test Patient', 'Celeste Testa', true),
('numbered_test_name', 'placeholder_names', '{person_name,organization}', 'regex',
 '(^|[^[:alnum:]])(test|user|patient|customer|qa|fake|dummy)[ _-]?[0-9]+($|[^[:alnum:]])', NULL,
 '{^test0,^test1,^test2,^test3,^test4,^test5,^test6,^test7,^test8,^test9,"^test ",^test_,^test-,^user0,^user1,^user2,^user3,^user4,^user5,^user6,^user7,^user8,^user9,"^user ",^user_,^user-,^patient0,^patient1,^patient2,^patient3,^patient4,^patient5,^patient6,^patient7,^patient8,^patient9,"^patient ",^patient_,^patient-,^customer0,^customer1,^customer2,^customer3,^customer4,^customer5,^customer6,^customer7,^customer8,^customer9,"^customer ",^customer_,^customer-,^qa0,^qa1,^qa2,^qa3,^qa4,^qa5,^qa6,^qa7,^qa8,^qa9,"^qa ",^qa_,^qa-,^fake0,^fake1,^fake2,^fake3,^fake4,^fake5,^fake6,^fake7,^fake8,^fake9,"^fake ",^fake_,^fake-,^dummy0,^dummy1,^dummy2,^dummy3,^dummy4,^dummy5,^dummy6,^dummy7,^dummy8,^dummy9,"^dummy ",^dummy_,^dummy-}', 'HIGH', false,
 'A generated name with a sequence number: User 12, Patient_3, test1, Customer 7.',
 'Patient 42', 'Patience Okafor', true),
-- keyboard_mash: what a hurried tester types.
('keyboard_mash', 'keyboard_mash', '{person_name,organization}', 'regex',
 '^((asdf|sdfg|dfgh|fghj|ghjk|hjkl|qwer|uiop|zxcv|xcvb|cvbn|vbnm|azerty)[a-z]*|([a-z])\3{2,}|(abc|xyz|asd|jkl)+)( [a-z]*)?$', NULL,
 '{^asdf,^sdfg,^dfgh,^fghj,^ghjk,^hjkl,^qwer,^uiop,^zxcv,^xcvb,^cvbn,^vbnm,^azerty,^aaa,^bbb,^ccc,^ddd,^eee,^fff,^ggg,^hhh,^iii,^jjj,^kkk,^lll,^mmm,^nnn,^ooo,^ppp,^qqq,^rrr,^sss,^ttt,^uuu,^vvv,^www,^xxx,^yyy,^zzz,^abc,^xyz,^asd,^jkl}',
 'MEDIUM', false,
 'A keyboard mash or repeated letters as a name: Asdfgh, Qwerty, Zzz, Abcabc.',
 'Asdfgh Jkl', 'Ashford', true),
-- fixture_markers: what fixture files and seed scripts leave behind.
('tenant_fixture', 'fixture_markers', '{email,person_name,organization,free_text}', 'regex',
 '(^|[^[:alnum:]])tenant([ _-]([a-z]|[0-9]+)|[0-9]+)($|[^[:alnum:]])', NULL,
 '{^tenant}', 'CRITICAL', false,
 'A fixture tenant marker: tenant-a, Tenant B, tenant_1, user@tenant-a.test.',
 'Tenant A Dental', 'Tenants Association of Leeds', true),
('test_marker', 'fixture_markers', '{person_name,organization,free_text}', 'regex',
 '[\[(]\s*(test|testing|qa|e2e|fake|dummy|demo|do ?n.?t use)\s*[\])]|^(test|testing|fake|dummy|demo|qa|e2e|do ?n.?t use)\s*([:-]|$)|(^|[^[:alnum:]])(not a real (patient|person|clinic|user|account|customer|email|address)|lorem ipsum)($|[^[:alnum:]])', NULL,
 '{^test$,^testing$,^qa$,^e2e$,^fake$,^dummy$,^demo$,t use$,^not a real,^lorem$}', 'CRITICAL', false,
 'An explicit test marker: (TEST), [QA], "TEST: ...", "DO NOT USE - ...", "not a real patient", lorem ipsum; "do not use whitening strips" passes.',
 'Bright Smiles (TEST)', 'Test results normal, follow-up in 6 months', true),
('test_organization', 'fixture_markers', '{organization}', 'regex',
 '(^|[^[:alnum:]])(test|testing|fake|dummy|demo|example|tenant|qa|e2e)\s+(clinic|practice|dental|dentistry|office|organi[sz]ation|company|corp|inc|llc|ltd|account|tenant|hospital|surgery|lab)($|[^[:alnum:]])|^(test|fake|dummy|demo|qa|e2e|example)$', NULL,
 '{^test$,^testing$,^fake$,^dummy$,^demo$,^example$,^tenant$,^qa$,^e2e$}', 'CRITICAL', false,
 'A test organisation: Test Clinic, Fake Clinic, Demo Dental, Tenant Practice.',
 'Test Clinic', 'Greatest Smiles Dental', true),
-- fictitious_phones: numbers reserved for fiction, and degenerate numbers.
('nanp_fictional_phone', 'fictitious_phones', '{phone}', 'digits',
 '^1?([2-9][0-9]{2})?5550(1[0-9]{2})$', NULL,
 '{#55501??$}', 'MEDIUM', true,
 'A North American number in 555-0100..555-0199, reserved for fiction.',
 '(415) 555-0123', '+1 415 555 8123', true),
('uk_drama_phone', 'fictitious_phones', '{phone}', 'digits',
 '^(44|0)?(2079460[0-9]{3}|7700900[0-9]{3}|1(1[3-8]|21|31|41|51|61)4960[0-9]{3}|1914980[0-9]{3}|2896496[0-9]{3}|2920180[0-9]{3}|8081570[0-9]{3}|9098790[0-9]{3})$', NULL,
 '{#2079460???$,#7700900???$,#1134960???$,#1144960???$,#1154960???$,#1164960???$,#1174960???$,#1184960???$,#1214960???$,#1314960???$,#1414960???$,#1514960???$,#1614960???$,#1914980???$,#2896496???$,#2920180???$,#8081570???$,#9098790???$}', 'MEDIUM', true,
 'A UK number from Ofcom''s ranges for drama (020 7946 0xxx, 07700 900xxx, 0113 496 0xxx, ...).',
 '+44 20 7946 0123', '+44 20 7946 5678', true),
('au_fictional_phone', 'fictitious_phones', '{phone}', 'digits',
 '^(61|0)?([2378]5550[0-9]{4}|491570(006|156|157|158|159|110|313|737))$', NULL,
 '{#25550????$,#35550????$,#75550????$,#85550????$,#491570???$}', 'MEDIUM', true,
 'An Australian number from ACMA''s ranges for fiction (0491 570 156, 02 5550 xxxx, ...).',
 '0491 570 156', '0491 571 156', true),
('degenerate_phone', 'fictitious_phones', '{phone}', 'digits',
 '^1?(0{7,}|1{7,}|2{7,}|3{7,}|4{7,}|5{7,}|6{7,}|7{7,}|8{7,}|9{7,}|0123456789|1234567890|123456789|12345678|9876543210|1231231234)$', NULL,
 '{#0000000,#1111111,#2222222,#3333333,#4444444,#5555555,#6666666,#7777777,#8888888,#9999999,#12345678,#9876543210,#1231231234}',
 'MEDIUM', false,
 'A degenerate number: one digit repeated, or a counting sequence (000-000-0000, 123-456-7890).',
 '123-456-7890', '+1 415 872 1930', true),
-- example_uuids: UUIDs copied from documentation, and degenerate ones.
('example_uuid', 'example_uuids', '{identifier}', 'uuids', NULL,
 '{550e8400-e29b-41d4-a716-,123e4567-e89b-12d3-a456-426614174000,a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,f47ac10b-58cc-4372-a567-0e02b2c3d479,12345678-1234-1234-1234-123456789012,12345678-1234-5678-1234-567812345678,12345678-90ab-cdef-1234-567890abcdef,01234567-89ab-cdef-0123-456789abcdef,deadbeef-,cafebabe-}',
 NULL, 'HIGH', true,
 'A UUID copied from documentation (550e8400-e29b-41d4-a716-..., 123e4567-e89b-12d3-a456-426614174000, the PostgreSQL docs'' a0eebc99-...).',
 '550e8400-e29b-41d4-a716-446655440000', '7d1c2f0e-5b7a-4c1e-9d2a-3f4b5c6d7e81', true),
('degenerate_uuid', 'example_uuids', '{identifier}', 'uuids', NULL,
 '{00000000-0000-0000-0000-,ffffffff-ffff-ffff-ffff-ffffffffffff,11111111-1111-1111-1111-111111111111,22222222-2222-2222-2222-222222222222,33333333-3333-3333-3333-333333333333,44444444-4444-4444-4444-444444444444,55555555-5555-5555-5555-555555555555,66666666-6666-6666-6666-666666666666,77777777-7777-7777-7777-777777777777,88888888-8888-8888-8888-888888888888,99999999-9999-9999-9999-999999999999,aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa,bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbbbbb,cccccccc-cccc-cccc-cccc-cccccccccccc,dddddddd-dddd-dddd-dddd-dddddddddddd,eeeeeeee-eeee-eeee-eeee-eeeeeeeeeeee}',
 NULL, 'MEDIUM', false,
 'A degenerate UUID: nil, max, a repeated digit, or a hand-numbered fixture id (00000000-0000-0000-0000-000000000001).',
 '00000000-0000-0000-0000-000000000001', '0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c62', true);

-- >>> sql/20_contamination/30_compile.sql
-- The write path never reads the rule tables. Rules are compiled into two generated IMMUTABLE
-- functions whose bodies are constants; the WHEN clause of each watched table's row trigger
-- calls them with constant arguments, so the planner folds them once per statement and each
-- row pays only the C prefilter. Every change to rules or to the environment recompiles them.
-- No SET search_path on these two: they run once per statement on every write to a watched
-- table, and saving and restoring a setting would cost more than their body. The generated
-- bodies name every operator and type by schema instead.
CREATE FUNCTION guardian._anchors(p_kind text, p_column text)
RETURNS text[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
BEGIN
    RETURN '{}'::pg_catalog.text[];
END
$$;
COMMENT ON FUNCTION guardian._anchors(text, text) IS
    'Generated by guardian._compile_rules(): the prefilter anchors for a column of a kind. Do not edit.';

CREATE FUNCTION guardian._uuid_bounds(p_column text)
RETURNS uuid[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
BEGIN
    RETURN '{}'::pg_catalog.uuid[];
END
$$;
COMMENT ON FUNCTION guardian._uuid_bounds(text) IS
    'Generated by guardian._compile_rules(): [low, high] pairs of suspicious UUIDs for uuid columns. Do not edit.';

CREATE FUNCTION guardian._uuid_range(p_term text)
RETURNS uuid[]
LANGUAGE sql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    -- A full UUID is a range of one; a prefix covers every UUID that starts with it.
    SELECT ARRAY[rpad(h, 32, '0')::uuid, rpad(h, 32, 'f')::uuid]
      FROM (SELECT left(regexp_replace(lower(p_term), '[^0-9a-f]', '', 'g'), 32) AS h) AS x
$$;
COMMENT ON FUNCTION guardian._uuid_range(text) IS 'Internal: [low, high] of the UUIDs a term (full or prefix) covers.';

CREATE FUNCTION guardian._applicable_rules()
RETURNS SETOF guardian.rules
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.* FROM guardian.rules AS r
     WHERE r.enabled
       AND (r.environments IS NULL OR guardian.current_environment() = ANY (r.environments))
$$;
COMMENT ON FUNCTION guardian._applicable_rules() IS 'Internal: enabled rules that apply in this environment.';

CREATE FUNCTION guardian._compile_rules()
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_kinds   text := '';
    v_columns text := '';
    v_bounds  uuid[];
    v_row     record;
BEGIN
    BEGIN
        FOR v_row IN
            SELECT k.kind, ARRAY(SELECT DISTINCT a FROM guardian._applicable_rules() AS r,
                                        unnest(guardian._rule_anchors(r)) AS a
                                  WHERE k.kind = ANY (r.kinds) ORDER BY 1) AS anchors
              FROM guardian.kinds AS k ORDER BY k.kind
        LOOP
            v_kinds := v_kinds || format(E'\n        WHEN p_kind OPERATOR(pg_catalog.=) %L THEN %L::pg_catalog.text[]',
                                         v_row.kind, v_row.anchors);
        END LOOP;
        FOR v_row IN
            SELECT r.column_pattern, guardian._rule_anchors(r) AS anchors
              FROM guardian._applicable_rules() AS r
             WHERE r.column_pattern IS NOT NULL ORDER BY r.name
        LOOP
            v_columns := v_columns || format(
                E'\n        OPERATOR(pg_catalog.||) CASE WHEN p_column OPERATOR(pg_catalog.~*) %L THEN %L::pg_catalog.text[] ELSE %L::pg_catalog.text[] END',
                v_row.column_pattern, v_row.anchors, '{}');
        END LOOP;
        SELECT coalesce(array_agg(b ORDER BY ord), '{}') INTO v_bounds
          FROM (SELECT b, row_number() OVER () AS ord
                  FROM guardian._applicable_rules() AS r, unnest(r.terms) AS t,
                       unnest(guardian._uuid_range(t)) AS b
                 WHERE r.match_type = 'uuids' AND 'identifier' = ANY (r.kinds)) AS x;
    END;

    EXECUTE format(
        $ddl$CREATE OR REPLACE FUNCTION guardian._anchors(p_kind text, p_column text)
RETURNS text[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS %L$ddl$,
        CASE WHEN v_kinds = '' THEN E'\nBEGIN\n    RETURN ''{}''::pg_catalog.text[];\nEND\n'
             ELSE format(E'\nBEGIN\n    RETURN CASE%s\n        ELSE %L::pg_catalog.text[] END%s;\nEND\n', v_kinds, '{}', v_columns) END);
    EXECUTE format(
        $ddl$CREATE OR REPLACE FUNCTION guardian._uuid_bounds(p_column text)
RETURNS uuid[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS %L$ddl$,
        format(E'\nBEGIN\n    RETURN %L::pg_catalog.uuid[];\nEND\n', coalesce(v_bounds, '{}')));
END
$$;
COMMENT ON FUNCTION guardian._compile_rules() IS
    'Internal: regenerates guardian._anchors() and guardian._uuid_bounds() from the rules that apply in this environment. Replacing them also tells every backend to reload its prefilter (guard modes are applied there).';

CREATE FUNCTION guardian._recompile()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM guardian._compile_rules();
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION guardian._recompile() IS 'Internal trigger: recompile the prefilters after rules or the environment change.';

CREATE TRIGGER rules_recompile
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON guardian.rules
    FOR EACH STATEMENT EXECUTE FUNCTION guardian._recompile();
CREATE TRIGGER environment_recompile
    AFTER INSERT OR UPDATE OR DELETE ON guardian.environment
    FOR EACH STATEMENT EXECUTE FUNCTION guardian._recompile();
CREATE TRIGGER table_modes_recompile
    AFTER INSERT OR UPDATE OR DELETE ON guardian.table_modes
    FOR EACH STATEMENT EXECUTE FUNCTION guardian._recompile();

-- >>> sql/20_contamination/40_watch.sql
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
    RETURN v_id;
END
$$;
COMMENT ON FUNCTION guardian.allow(text, regclass, text, text, text, timestamptz) IS
    'Allowlist a known false positive: by rule, table, column and/or value (any combination), with a reason and an optional expiry.';

-- >>> sql/20_contamination/45_watch_ddl.sql
-- A watched table keeps being watched through DDL (M1 of the security review): renamed and
-- added columns are followed (the watch is keyed by column number), new partitions get their
-- statement triggers, a table may not become an inheritance child of a watched table without
-- being watched itself (row triggers are not inherited), and a partition that leaves a
-- watched tree is reported.
-- Relations that carry guardian triggers but are no longer covered by a watch (a detached
-- partition): one WATCH_LOST alert each, until watched again.
CREATE FUNCTION guardian._report_unwatched()
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_rel   regclass;
    v_count integer := 0;
BEGIN
    FOR v_rel IN
        SELECT DISTINCT t.tgrelid::regclass
          FROM pg_catalog.pg_trigger AS t
          JOIN pg_catalog.pg_proc AS p ON p.oid = t.tgfoid
         WHERE p.pronamespace = 'guardian'::regnamespace
           AND t.tgrelid NOT IN (SELECT w.relid FROM guardian.watched_tables AS w)
           AND t.tgrelid <> 'guardian.monitoring_alerts'::regclass
           AND (SELECT c.relnamespace FROM pg_catalog.pg_class AS c WHERE c.oid = t.tgrelid) <> 'guardian'::regnamespace
           AND (guardian._watch_of(t.tgrelid)).relid IS NULL
    LOOP
        PERFORM guardian.raise_alert(
            'WATCH_LOST', CASE WHEN guardian.current_environment() = 'production' THEN 'HIGH' ELSE 'MEDIUM' END,
            format('%s is no longer watched: it left a watched table (DETACH PARTITION or NO INHERIT) and its writes are not checked for test data', v_rel),
            v_rel::text, NULL,
            jsonb_build_object('role', SESSION_USER,
                               'remediation', format('Watch it: SELECT guardian.watch(%L); or drop its leftover triggers.', v_rel::text)),
            md5(concat_ws('|', 'WATCH_LOST', guardian.current_environment(), v_rel::text)));
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION guardian._report_unwatched() IS
    'Internal: raises WATCH_LOST for relations that carry guardian triggers but no watch covers any more (detached partitions).';

-- Runs as the installing superuser (like every event trigger function, it cannot be called
-- otherwise): it reads the guardian's tables, and creates the statement triggers of a new
-- partition, which need no rights on the application's code (CREATE TRIGGER runs none).
CREATE FUNCTION guardian._on_watched_ddl()
RETURNS event_trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_rel    regclass;
    v_root   regclass;
    v_parent regclass;
    v_stmt   text;
    v_change jsonb;
    v_seen   boolean := false;
    v_c      boolean := to_regprocedure('guardian._activity_end()') IS NOT NULL;
BEGIN
    IF to_regclass('guardian.watched_tables') IS NULL THEN
        RETURN;   -- the install itself
    END IF;
    FOR v_rel IN
        SELECT DISTINCT c.objid::regclass
          FROM pg_event_trigger_ddl_commands() AS c
          JOIN pg_catalog.pg_class AS r ON r.oid = c.objid
         WHERE c.classid = 'pg_catalog.pg_class'::regclass AND NOT c.in_extension
           AND r.relkind IN ('r', 'p', 'f') AND r.relnamespace <> 'guardian'::regnamespace
    LOOP
        -- Row triggers are not inherited by inheritance children: rows written there would be
        -- visible through the watched parent unchecked.
        SELECT i.inhparent::regclass INTO v_parent
          FROM pg_catalog.pg_inherits AS i
          JOIN pg_catalog.pg_class AS c ON c.oid = i.inhrelid
         WHERE i.inhrelid = v_rel AND NOT c.relispartition AND (guardian._watch_of(i.inhparent)).relid IS NOT NULL
         LIMIT 1;
        IF FOUND AND (guardian._watch_of(v_rel)).relid IS NULL THEN
            RAISE EXCEPTION '% may not inherit from watched table %: rows written to it would reach % unchecked', v_rel, v_parent, v_parent
                USING ERRCODE = 'insufficient_privilege',
                      DETAIL = 'pg_guardian''s row triggers are not inherited by inheritance children (only by partitions).',
                      HINT = format('Create it without INHERITS, watch it (SELECT guardian.watch(%L);), then: ALTER TABLE %s INHERIT %s;',
                                    v_rel::text, v_rel, v_parent);
        END IF;
        v_root := (guardian._watch_of(v_rel)).relid;
        CONTINUE WHEN v_root IS NULL;
        v_seen := true;
        -- Every relation of the tree carries the statement triggers (new partitions do not).
        FOR v_stmt IN
            SELECT s.ddl
              FROM guardian._relation_tree(v_root) AS p,
                   LATERAL guardian._statement_trigger_ddl(p.relid, v_c) AS s
             WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_trigger AS t WHERE t.tgrelid = p.relid AND t.tgname = s.name)
        LOOP
            EXECUTE v_stmt;
        END LOOP;
        IF v_rel = v_root THEN
            v_change := guardian._refresh_watch(v_root);
            IF v_change IS NOT NULL AND to_regprocedure('guardian._suspect(record)') IS NULL THEN
                RAISE WARNING 'pg_guardian: the watched columns of % changed; without the C prefilter its triggers test the old ones until a guardian admin runs SELECT guardian.watch(%L);', v_root, v_root::text;
            END IF;
        END IF;
    END LOOP;
    IF v_seen THEN
        PERFORM guardian._report_unwatched();
    END IF;
END
$$;
COMMENT ON FUNCTION guardian._on_watched_ddl() IS
    'Internal event trigger (CREATE TABLE, ALTER TABLE): follows renamed and new columns of watched tables, adds statement triggers to new partitions, refuses unwatched inheritance children of watched tables, reports detached partitions.';

DO $watch_ddl$
BEGIN
    IF (SELECT r.rolsuper FROM pg_catalog.pg_roles AS r WHERE r.rolname = CURRENT_USER) THEN
        CREATE EVENT TRIGGER guardian_watch_ddl
            ON ddl_command_end
            WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE', 'CREATE FOREIGN TABLE', 'ALTER FOREIGN TABLE')
            EXECUTE FUNCTION guardian._on_watched_ddl();
    ELSE
        RAISE WARNING 'pg_guardian: % is not a superuser; renamed or added columns of watched tables are followed only when guardian.watch() runs again', CURRENT_USER;
    END IF;
END
$watch_ddl$;

-- >>> sql/20_contamination/50_detect.sql
-- Precise matching, used by the row trigger (candidate rows only), the scanner and
-- guardian.check_payload(): one implementation over one catalogue.
CREATE FUNCTION guardian._redact(p_value text, p_kind text, p_anchors text[])
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    -- Words that hold the evidence (contain an anchor) stay; other words keep their first
    -- character only; the e-mail domain and identifiers are kept whole.
    SELECT left(CASE
        WHEN p_kind = 'identifier' THEN p_value
        WHEN p_kind = 'email' AND strpos(p_value, '@') > 0 THEN
            guardian._redact(split_part(p_value, '@', 1), 'free_text', p_anchors) || '@' ||
            substring(p_value FROM '@([^@]*)$')
        ELSE (SELECT string_agg(CASE WHEN w.word = '' OR guardian._contains_any(w.word, p_anchors)
                                     OR w.word !~ '[[:alnum:]]' THEN w.word
                                     ELSE left(w.word, 1) || repeat('*', length(w.word) - 1) END,
                                '' ORDER BY w.n)
                FROM regexp_split_to_table(p_value, '(?=[^[:alnum:]])|(?<=[^[:alnum:]])') WITH ORDINALITY AS w(word, n))
    END, 120)
$$;
COMMENT ON FUNCTION guardian._redact(text, text, text[]) IS
    'Internal: a sample of a matched value that shows the evidence and masks the rest.';

CREATE FUNCTION guardian._match(
    p_kind text, p_column text, p_value text, p_relid regclass DEFAULT NULL, p_exact_only boolean DEFAULT false)
RETURNS TABLE (rule text, severity text, sample text)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_norm text := guardian._normalize(p_value);
BEGIN
    IF v_norm IS NULL OR v_norm = '' THEN
        RETURN;
    END IF;
    -- One static query (its plan is cached for the session); _rule_matches inlines into it.
    RETURN QUERY
        SELECT r.name, r.severity, guardian._redact(p_value, p_kind, guardian._rule_anchors(r))
          FROM guardian.rules AS r
         WHERE r.enabled
           AND (r.environments IS NULL OR guardian.current_environment() = ANY (r.environments))
           AND (p_kind = ANY (r.kinds) OR (r.column_pattern IS NOT NULL AND p_column ~* r.column_pattern))
           AND (NOT p_exact_only OR r.match_type = 'exact')
           AND guardian._rule_matches(r.match_type, r.matcher, r.terms, v_norm)
           AND NOT EXISTS (
                SELECT FROM guardian.allowlist AS a
                 WHERE (a.rule IS NULL OR a.rule = r.name)
                   AND (a.relid IS NULL OR a.relid = p_relid)
                   AND (a.column_name IS NULL OR a.column_name = p_column)
                   AND (a.value IS NULL OR a.value = v_norm)
                   AND (a.expires_at IS NULL OR a.expires_at > now()))
         ORDER BY array_position(ARRAY['CRITICAL','HIGH','MEDIUM','LOW','INFO'], r.severity), r.name;
END
$$;
COMMENT ON FUNCTION guardian._match(text, text, text, regclass, boolean) IS
    'Internal: the rules a value matches (allowlist applied), with a redacted sample.';

-- Every finding in one row of one table: the value of each watched column that changed and
-- passes the prefilter, plus the person's full name across name columns (John / Doe).
CREATE FUNCTION guardian._row_findings(
    p_watch guardian.watched_tables, p_new jsonb, p_old jsonb DEFAULT NULL, p_anchors jsonb DEFAULT NULL)
RETURNS TABLE (column_name text, rule text, severity text, sample text, value text)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_i       integer;
    v_column  text;
    v_kind    text;
    v_value   text;
    v_names   text[] := '{}';
    v_suspect boolean := false;
BEGIN
    FOR v_i IN 1 .. cardinality(p_watch.column_names) LOOP
        v_column := p_watch.column_names[v_i];
        v_kind := p_watch.column_kinds[v_i];
        v_value := p_new ->> v_column;
        IF v_kind = 'person_name' AND v_value IS NOT NULL THEN
            v_names := v_names || v_value;
        END IF;
        CONTINUE WHEN v_value IS NULL OR v_value = '';
        CONTINUE WHEN p_old IS NOT NULL AND (p_old ->> v_column) IS NOT DISTINCT FROM v_value;
        -- Only values that pass the prefilter get the precise (costlier) check.
        IF p_watch.column_types[v_i] = 'uuid' AND p_anchors IS NULL THEN
            CONTINUE WHEN NOT guardian._uuid_matches(v_value::uuid, guardian._uuid_bounds(v_column));
        ELSIF p_watch.column_types[v_i] <> 'uuid' THEN
            CONTINUE WHEN NOT guardian._contains_any(v_value,
                CASE WHEN p_anchors IS NULL THEN guardian._anchors(v_kind, v_column)
                     ELSE ARRAY(SELECT jsonb_array_elements_text(p_anchors -> v_column)) END);
        END IF;
        IF v_kind = 'person_name' THEN
            v_suspect := true;
        END IF;
        RETURN QUERY
            SELECT v_column, m.rule, m.severity, m.sample, v_value
              FROM guardian._match(v_kind, v_column, v_value, p_watch.relid) AS m;
    END LOOP;
    IF v_suspect AND cardinality(v_names) > 1 THEN
        RETURN QUERY
            SELECT array_to_string(ARRAY(SELECT p_watch.column_names[i]
                                           FROM generate_subscripts(p_watch.column_names, 1) AS i
                                          WHERE p_watch.column_kinds[i] = 'person_name'), '+'),
                   m.rule, m.severity, m.sample, array_to_string(v_names, ' ')
              FROM guardian._match('person_name', '', array_to_string(v_names, ' '), p_watch.relid, true) AS m;
    END IF;
END
$$;
COMMENT ON FUNCTION guardian._row_findings(guardian.watched_tables, jsonb, jsonb, jsonb) IS
    'Internal: the findings in one row (only changed columns when p_old is given); p_anchors (column -> anchors) replaces the compiled prefilter, for scans.';

-- A record id is shown to readers, the relay and chat: when the key is itself a watched
-- column of personal data (an e-mail as primary key), it is redacted like a sample, with a
-- short digest that keeps different records apart.
CREATE FUNCTION guardian._key_text(p_watch guardian.watched_tables, p_column text, p_value text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN p_value IS NULL
                  OR coalesce(p_watch.column_kinds[array_position(p_watch.column_names, p_column)], '')
                     NOT IN ('email', 'phone', 'person_name')
                THEN p_value
                ELSE guardian._redact(p_value, p_watch.column_kinds[array_position(p_watch.column_names, p_column)],
                                      guardian._anchors(p_watch.column_kinds[array_position(p_watch.column_names, p_column)], p_column))
                     || '#' || left(md5(p_value), 6) END
$$;
COMMENT ON FUNCTION guardian._key_text(guardian.watched_tables, text, text) IS
    'Internal: a key value as record ids show it (redacted, with a digest, when the key column holds personal data).';

CREATE FUNCTION guardian._record_ref(p_watch guardian.watched_tables, p_row jsonb, OUT record_id text, OUT record_key jsonb)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
             WHEN p_watch.key_columns IS NULL THEN 'row:' || left(md5(p_row::text), 16)
             WHEN cardinality(p_watch.key_columns) = 1
                 THEN guardian._key_text(p_watch, p_watch.key_columns[1], p_row ->> p_watch.key_columns[1])
             ELSE '(' || (SELECT string_agg(coalesce(guardian._key_text(p_watch, k, p_row ->> k), ''), ',' ORDER BY o)
                            FROM unnest(p_watch.key_columns) WITH ORDINALITY AS u(k, o)) || ')'
           END,
           CASE
             WHEN p_watch.key_columns IS NULL THEN jsonb_build_object('row_md5', md5(p_row::text))
             ELSE (SELECT jsonb_object_agg(k, p_row -> k) FROM unnest(p_watch.key_columns) AS k)
           END
$$;
COMMENT ON FUNCTION guardian._record_ref(guardian.watched_tables, jsonb) IS
    'Internal: the record id (primary key as text) and key of a row, or a fingerprint when the table has no key.';

-- >>> sql/20_contamination/60_triggers.sql
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

-- >>> sql/20_contamination/70_scan.sql
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

-- >>> sql/21_activity/10_activity.sql
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
    'Internal: after a write to a watched table: groups its findings into alerts and raises BULK_OPERATION / UNFILTERED_WRITE at once.';

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
                              WHERE f.backend_pid = pg_backend_pid() AND f.relid = v_relid AND f.alert_id IS NULL) THEN
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
    RAISE NOTICE 'pg_guardian: shared library not available, activity is tracked in PL/pgSQL (slower writes)';
END
$activity_c$;

-- >>> sql/21_activity/20_rollup.sql
CREATE FUNCTION guardian._in_window(p_at timestamptz, p_params jsonb)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- Local wall-clock time in the configured zone; windows may wrap midnight (22:00-06:00).
    SELECT CASE WHEN s <= e THEN t >= s AND t < e ELSE t >= s OR t < e END
      FROM (SELECT (p_at AT TIME ZONE coalesce(p_params ->> 'timezone', 'UTC'))::time AS t,
                   (p_params ->> 'start')::time AS s, (p_params ->> 'end')::time AS e) AS x
$$;
COMMENT ON FUNCTION guardian._in_window(timestamptz, jsonb) IS
    'Internal: is the moment inside the off-hours window, in the window''s own time zone?';

CREATE FUNCTION guardian.rollup_activity()
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_env   text := guardian.current_environment();
    v_row   record;
    v_rule  record;
    v_count integer := 0;
    v_quiet interval := coalesce((guardian.setting('activity.quiet_minutes') #>> '{}')::int, 15) * interval '1 minute';
BEGIN
    -- Stragglers: findings whose statement trigger did not run (a write straight into a
    -- partition created after watch()) are grouped here.
    PERFORM guardian._flush_stale_findings();

    CREATE TEMP TABLE guardian_rollup (LIKE guardian.activity_log) ON COMMIT DROP;
    WITH moved AS (DELETE FROM guardian.activity_log RETURNING *)
    INSERT INTO guardian_rollup SELECT * FROM moved;

    FOR v_row IN
        WITH per_minute AS (
            SELECT l.relid, date_trunc('minute', l.at) AS minute,
                   sum(l.rows) FILTER (WHERE l.operation = 'INSERT') AS inserts,
                   sum(l.rows) FILTER (WHERE l.operation = 'UPDATE') AS updates,
                   sum(l.rows) FILTER (WHERE l.operation = 'DELETE') AS deletes,
                   count(*) AS statements
              FROM guardian_rollup AS l GROUP BY 1, 2),
        per_second AS (
            SELECT s.relid, date_trunc('minute', s.second) AS minute, max(s.n) AS peak
              FROM (SELECT l.relid, date_trunc('second', l.at) AS second, sum(l.rows) AS n
                      FROM guardian_rollup AS l WHERE l.operation = 'INSERT' GROUP BY 1, 2) AS s
             GROUP BY 1, 2),
        roles AS (
            SELECT r.relid, r.minute, jsonb_object_agg(r.role, r.n) AS roles
              FROM (SELECT l.relid, date_trunc('minute', l.at) AS minute, l.role, sum(l.rows) AS n
                      FROM guardian_rollup AS l GROUP BY 1, 2, 3) AS r GROUP BY 1, 2),
        apps AS (
            SELECT a.relid, a.minute, jsonb_object_agg(a.app, a.n) AS applications
              FROM (SELECT l.relid, date_trunc('minute', l.at) AS minute, coalesce(l.application, '') AS app,
                           sum(l.rows) AS n
                      FROM guardian_rollup AS l GROUP BY 1, 2, 3) AS a GROUP BY 1, 2)
        SELECT m.*, coalesce(s.peak, 0) AS peak, r.roles, a.applications
          FROM per_minute AS m
          LEFT JOIN per_second AS s USING (relid, minute)
          LEFT JOIN roles AS r USING (relid, minute)
          LEFT JOIN apps AS a USING (relid, minute)
    LOOP
        INSERT INTO guardian.activity_windows AS w
            (relid, minute, inserts, updates, deletes, statements, peak_inserts_per_second, roles, applications)
        VALUES (v_row.relid, v_row.minute, coalesce(v_row.inserts, 0), coalesce(v_row.updates, 0),
                coalesce(v_row.deletes, 0), v_row.statements, v_row.peak, v_row.roles, v_row.applications)
        ON CONFLICT (relid, minute) DO UPDATE
           SET inserts = w.inserts + EXCLUDED.inserts, updates = w.updates + EXCLUDED.updates,
               deletes = w.deletes + EXCLUDED.deletes, statements = w.statements + EXCLUDED.statements,
               peak_inserts_per_second = greatest(w.peak_inserts_per_second, EXCLUDED.peak_inserts_per_second),
               roles = (SELECT jsonb_object_agg(k, coalesce((w.roles ->> k)::bigint, 0) + coalesce((EXCLUDED.roles ->> k)::bigint, 0))
                          FROM (SELECT jsonb_object_keys(w.roles || EXCLUDED.roles) AS k) AS keys),
               applications = (SELECT jsonb_object_agg(k, coalesce((w.applications ->> k)::bigint, 0) + coalesce((EXCLUDED.applications ->> k)::bigint, 0))
                                 FROM (SELECT jsonb_object_keys(w.applications || EXCLUDED.applications) AS k) AS keys);
        v_count := v_count + 1;
    END LOOP;

    -- Rules over windows: evaluated per table over the windows this roll-up touched.
    FOR v_row IN
        SELECT w.* FROM guardian.activity_windows AS w
         WHERE (w.relid, w.minute) IN (SELECT DISTINCT l.relid, date_trunc('minute', l.at) FROM guardian_rollup AS l)
    LOOP
        v_rule := guardian._activity_rule(v_row.relid, 'bulk_minute');
        IF v_rule.enabled AND v_row.inserts > v_rule.threshold THEN
            PERFORM guardian.raise_alert(v_rule.alert_type, v_rule.severity,
                format('%s rows inserted into %s in the minute from %s (threshold %s per minute)',
                       v_row.inserts, v_row.relid, to_char(v_row.minute AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI "UTC"'), v_rule.threshold),
                v_row.relid::text, NULL,
                jsonb_build_object('rule', 'bulk_minute', 'rows', v_row.inserts, 'minute', v_row.minute,
                                   'threshold', v_rule.threshold, 'roles', v_row.roles, 'applications', v_row.applications),
                md5(concat_ws('|', 'bulk_minute', v_env, v_row.relid::text)));
        END IF;
        v_rule := guardian._activity_rule(v_row.relid, 'rapid_creation');
        IF v_rule.enabled AND v_row.peak_inserts_per_second > v_rule.threshold THEN
            PERFORM guardian.raise_alert(v_rule.alert_type, v_rule.severity,
                format('%s rows per second created in %s (threshold %s per second)',
                       v_row.peak_inserts_per_second, v_row.relid, v_rule.threshold),
                v_row.relid::text, NULL,
                jsonb_build_object('rule', 'rapid_creation', 'rows_per_second', v_row.peak_inserts_per_second,
                                   'minute', v_row.minute, 'threshold', v_rule.threshold, 'roles', v_row.roles),
                md5(concat_ws('|', 'rapid_creation', v_env, v_row.relid::text)));
        END IF;
    END LOOP;

    FOR v_row IN
        SELECT l.relid, sum(l.rows) AS n, min(l.at) AS first_at, max(l.at) AS last_at,
               jsonb_agg(DISTINCT l.role) AS roles
          FROM guardian_rollup AS l
         WHERE l.operation = 'INSERT'
           AND guardian._in_window(l.at, (guardian._activity_rule(l.relid, 'off_hours')).params)
         GROUP BY l.relid
    LOOP
        v_rule := guardian._activity_rule(v_row.relid, 'off_hours');
        IF v_rule.enabled AND v_row.n > v_rule.threshold THEN
            PERFORM guardian.raise_alert(v_rule.alert_type, v_rule.severity,
                format('%s rows inserted into %s off hours (%s-%s %s), last at %s', v_row.n, v_row.relid,
                       v_rule.params ->> 'start', v_rule.params ->> 'end', v_rule.params ->> 'timezone',
                       to_char(v_row.last_at AT TIME ZONE (v_rule.params ->> 'timezone'), 'YYYY-MM-DD HH24:MI')),
                v_row.relid::text, NULL,
                jsonb_build_object('rule', 'off_hours', 'rows', v_row.n, 'first_at', v_row.first_at,
                                   'last_at', v_row.last_at, 'window', v_rule.params, 'roles', v_row.roles),
                md5(concat_ws('|', 'off_hours', v_env, v_row.relid::text)));
        END IF;
    END LOOP;

    FOR v_row IN
        SELECT f.relid, count(*) AS n FROM guardian.findings AS f
         WHERE f.created_at > now() - interval '1 hour' GROUP BY f.relid
    LOOP
        v_rule := guardian._activity_rule(v_row.relid, 'suspicious_rate');
        IF v_rule.enabled AND v_row.n > v_rule.threshold THEN
            PERFORM guardian.raise_alert(v_rule.alert_type, v_rule.severity,
                format('%s test-data findings on %s in the last hour (threshold %s)', v_row.n, v_row.relid, v_rule.threshold),
                v_row.relid::text, NULL,
                jsonb_build_object('rule', 'suspicious_rate', 'findings_last_hour', v_row.n, 'threshold', v_rule.threshold),
                md5(concat_ws('|', 'suspicious_rate', v_env, v_row.relid::text)));
        END IF;
    END LOOP;

    -- A condition that has been quiet for activity.quiet_minutes is over: close its alert, so
    -- the next occurrence opens a new one instead of reviving an old one.
    UPDATE guardian.monitoring_alerts AS a
       SET resolved_at = now(), resolved_by = 'pg_guardian',
           resolution_note = format('condition quiet for %s', v_quiet)
     WHERE a.resolved_at IS NULL
       AND a.type IN (SELECT r.alert_type FROM guardian.activity_rules AS r)
       AND a.last_seen_at < now() - v_quiet;
    DROP TABLE guardian_rollup;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION guardian.rollup_activity() IS
    'Job: fold the activity log into per-minute windows and raise BULK_OPERATION, RAPID_CREATION, OFF_HOURS_ACTIVITY and SUSPICIOUS_PATTERN_RATE (deduplicated; closed after activity.quiet_minutes without recurrence). Returns windows touched.';

CREATE FUNCTION guardian._flush_stale_findings()
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count integer;
BEGIN
    -- Findings committed without their statement trigger are adopted by this backend.
    UPDATE guardian.findings AS f SET backend_pid = pg_backend_pid()
     WHERE f.alert_id IS NULL AND f.backend_pid <> pg_backend_pid();
    SELECT coalesce(sum(guardian._flush_findings(x.relid)), 0) INTO v_count
      FROM (SELECT DISTINCT f.relid FROM guardian.findings AS f
             WHERE f.alert_id IS NULL AND f.backend_pid = pg_backend_pid()) AS x;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION guardian._flush_stale_findings() IS 'Internal: groups findings left ungrouped into alerts.';

CREATE FUNCTION guardian.prune_activity()
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_days integer := coalesce((guardian.setting('activity.retention_days') #>> '{}')::int, 30);
    v_count bigint;
BEGIN
    IF v_days < 1 THEN
        RAISE EXCEPTION 'activity.retention_days must be at least 1, not %', v_days
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'UPDATE guardian.settings SET value = ''30'' WHERE key = ''activity.retention_days'';';
    END IF;
    DELETE FROM guardian.activity_windows AS w WHERE w.minute < now() - v_days * interval '1 day';
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION guardian.prune_activity() IS 'Job: drop activity windows older than activity.retention_days (default 30).';

INSERT INTO guardian.jobs (name, schedule, command, description, max_lag, builtin) VALUES
    ('activity_rollup', '* * * * *', 'SELECT guardian.rollup_activity()',
     'Fold the activity log into per-minute windows and evaluate activity rules.', '10 minutes', true),
    ('activity_retention', '17 3 * * *', 'SELECT guardian.prune_activity()',
     'Drop activity windows past their retention.', '2 days', true);

-- >>> sql/21_activity/30_truncate.sql
-- TRUNCATE removes every row of a watched table without a row trigger or a row count: it is
-- reported at once, as a bulk delete of everything (CRITICAL in production).
CREATE FUNCTION guardian._on_truncate()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_table regclass := TG_RELID;
    v_relid regclass := TG_RELID;
    v_env   text := guardian.current_environment();
BEGIN
    IF TG_LEVEL <> 'STATEMENT' OR TG_OP <> 'TRUNCATE' THEN
        RAISE EXCEPTION 'guardian._on_truncate() is an AFTER TRUNCATE statement trigger'
            USING ERRCODE = 'E0001', HINT = 'watch() creates it; do not attach it by hand.';
    END IF;
    IF (SELECT c.relispartition FROM pg_catalog.pg_class AS c WHERE c.oid = TG_RELID) THEN
        v_relid := pg_partition_root(TG_RELID);
    END IF;
    IF NOT EXISTS (SELECT FROM guardian.watched_tables AS w WHERE w.relid = v_relid) THEN
        RETURN NULL;   -- attached by hand to a table that is not watched
    END IF;
    PERFORM guardian.raise_alert(
        'TABLE_TRUNCATED',
        CASE WHEN v_env = 'production' THEN 'CRITICAL' ELSE 'HIGH' END,
        format('TRUNCATE emptied watched table %s%s (by %s)', v_table,
               CASE WHEN v_table <> v_relid THEN format(', a partition of %s', v_relid) ELSE '' END, SESSION_USER),
        v_relid::text, NULL,
        jsonb_build_object('table', v_table::text, 'root', v_relid::text, 'role', SESSION_USER,
                           'application', current_setting('application_name', true),
                           'client_addr', inet_client_addr()::text, 'query', left(current_query(), 500),
                           'remediation', 'If this was not intended, restore the table from a backup (TRUNCATE is not in the quarantine).'),
        md5(concat_ws('|', 'TABLE_TRUNCATED', v_env, v_table::text, txid_current()::text)));
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION guardian._on_truncate() IS
    'Statement trigger on watched tables: TRUNCATE raises TABLE_TRUNCATED (CRITICAL in production, else HIGH).';

-- >>> sql/30_relay/00_relay_role.sql
-- guardian_relay is what `pg-guardian relay` needs and nothing more: it moves alerts through
-- the outbox with the guardian.relay_* functions below and reads the relay's own status. Grant
-- it to the relay's login role: GRANT guardian_relay TO relay_user;
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'guardian_relay') THEN
        CREATE ROLE guardian_relay NOLOGIN;
    END IF;
END
$roles$;

-- >>> sql/30_relay/10_relay_tables.sql
-- The relay's state. An alert reaches people in three steps, each a row in the database, so
-- that a relay killed at any moment loses nothing:
--   relay_intake   alerts created (or repeated) since the relay last looked; filled by triggers
--                  on monitoring_alerts, so the alert path never waits for the relay;
--   relay_outbox   one notice per alert, channel and repeat (seq), routed by the relay;
--   relay_messages what was actually sent: one message carries one notice or a whole group,
--                  with attempts, backoff, lease and dead-letter state.
CREATE TABLE guardian.relay_intake (
    alert_id    uuid NOT NULL,
    occurrences integer NOT NULL,
    queued_at   timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp()
);
COMMENT ON TABLE guardian.relay_intake IS
    'Alerts the relay has not routed yet (new ones and new occurrences of open ones); emptied by guardian.relay_take_intake().';
SELECT pg_catalog.pg_extension_config_dump('guardian.relay_intake', '');

CREATE TABLE guardian.relay_messages (
    id              uuid NOT NULL DEFAULT gen_random_uuid(),
    channel         text NOT NULL,
    group_key       text,
    idempotency_key text NOT NULL,
    alert_count     integer NOT NULL DEFAULT 0,
    status          text NOT NULL DEFAULT 'sending',
    attempts        integer NOT NULL DEFAULT 0,
    last_error      text,
    last_attempt_at timestamptz,
    next_attempt_at timestamptz,
    lease_token     integer,
    lease_until     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    delivered_at    timestamptz,
    CONSTRAINT relay_messages_pkey PRIMARY KEY (id),
    CONSTRAINT relay_messages_idempotency_key_key UNIQUE (idempotency_key),
    CONSTRAINT relay_messages_status_chk CHECK (status IN ('sending', 'retry', 'delivered', 'dead')),
    CONSTRAINT relay_messages_attempts_chk CHECK (attempts >= 0),
    CONSTRAINT relay_messages_lease_chk CHECK (status <> 'sending' OR lease_until IS NOT NULL),
    CONSTRAINT relay_messages_retry_chk CHECK (status <> 'retry' OR next_attempt_at IS NOT NULL)
);
COMMENT ON TABLE guardian.relay_messages IS
    'Messages the relay sends (one alert, or a group of alerts with a count) with their delivery state: attempts, last error, next retry, lease of the relay sending it, delivered or dead-lettered.';
COMMENT ON COLUMN guardian.relay_messages.idempotency_key IS
    'Stable across retries; sent as the Idempotency-Key header (webhook, Slack) and Message-ID (email) so receivers can drop duplicates.';
COMMENT ON COLUMN guardian.relay_messages.lease_token IS
    'guardian.relay_register() token of the relay sending it; the lease ends when that relay''s session does.';
SELECT pg_catalog.pg_extension_config_dump('guardian.relay_messages', '');

CREATE INDEX relay_messages_open_idx
    ON guardian.relay_messages (channel, next_attempt_at) WHERE status IN ('sending', 'retry');

CREATE TABLE guardian.relay_outbox (
    alert_id     uuid NOT NULL,
    channel      text NOT NULL,
    seq          integer NOT NULL,
    occurrences  integer NOT NULL,
    group_key    text,
    status       text NOT NULL DEFAULT 'pending',
    due_at       timestamptz NOT NULL,
    held_by      uuid,
    held_since   timestamptz,
    message_id   uuid,
    note         text,
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    delivered_at timestamptz,
    CONSTRAINT relay_outbox_pkey PRIMARY KEY (alert_id, channel, seq),
    CONSTRAINT relay_outbox_alert_id_fkey FOREIGN KEY (alert_id)
        REFERENCES guardian.monitoring_alerts (id) ON DELETE CASCADE,
    CONSTRAINT relay_outbox_message_id_fkey FOREIGN KEY (message_id)
        REFERENCES guardian.relay_messages (id) ON DELETE SET NULL,
    CONSTRAINT relay_outbox_channel_chk CHECK (channel ~ '^[a-z][a-z0-9_-]{0,39}$'),
    CONSTRAINT relay_outbox_seq_chk CHECK (seq >= 0),
    CONSTRAINT relay_outbox_status_chk
        CHECK (status IN ('pending', 'queued', 'delivered', 'dead', 'dropped')),
    CONSTRAINT relay_outbox_message_chk CHECK (status IN ('pending', 'dropped') OR message_id IS NOT NULL)
);
COMMENT ON TABLE guardian.relay_outbox IS
    'Per-alert, per-channel delivery state: one notice per alert, channel and repeat (seq 0 is the first notice). pending -> queued (in a message) -> delivered, dead or dropped (a repeat, or a silenced notice, of an alert resolved before it was due).';
COMMENT ON COLUMN guardian.relay_outbox.held_by IS 'The silence holding this notice back, if any.';
SELECT pg_catalog.pg_extension_config_dump('guardian.relay_outbox', '');

-- At most one pending notice per alert and channel: new occurrences update its count.
CREATE UNIQUE INDEX relay_outbox_pending_idx
    ON guardian.relay_outbox (alert_id, channel) WHERE status = 'pending';
CREATE INDEX relay_outbox_due_idx
    ON guardian.relay_outbox (channel, group_key, due_at) WHERE status = 'pending';
CREATE INDEX relay_outbox_message_idx ON guardian.relay_outbox (message_id);

-- Alertmanager's group_interval: after a group's message, further alerts of that group wait
-- until hold_until and then go out together as one message.
CREATE TABLE guardian.relay_groups (
    channel         text NOT NULL,
    group_key       text NOT NULL,
    hold_until      timestamptz NOT NULL DEFAULT '-infinity',
    last_message_at timestamptz,
    messages        bigint NOT NULL DEFAULT 0,
    CONSTRAINT relay_groups_pkey PRIMARY KEY (channel, group_key)
);
COMMENT ON TABLE guardian.relay_groups IS
    'Alert groups per channel: when the group''s last message went out and until when further alerts of it are held to be sent together.';
SELECT pg_catalog.pg_extension_config_dump('guardian.relay_groups', '');

CREATE INDEX relay_groups_hold_idx ON guardian.relay_groups (channel, hold_until);

CREATE TABLE guardian.relay_silences (
    id         uuid NOT NULL DEFAULT gen_random_uuid(),
    matchers   jsonb NOT NULL,
    channel    text,
    starts_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    ends_at    timestamptz NOT NULL,
    comment    text NOT NULL,
    created_by text NOT NULL DEFAULT SESSION_USER,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    expired_by text,
    CONSTRAINT relay_silences_pkey PRIMARY KEY (id),
    CONSTRAINT relay_silences_window_chk CHECK (ends_at > starts_at),
    CONSTRAINT relay_silences_matchers_chk
        CHECK (jsonb_typeof(matchers) = 'array' AND jsonb_array_length(matchers) > 0),
    CONSTRAINT relay_silences_channel_chk CHECK (channel ~ '^[a-z][a-z0-9_-]{0,39}$'),
    CONSTRAINT relay_silences_comment_chk CHECK (btrim(comment) <> '')
);
COMMENT ON TABLE guardian.relay_silences IS
    'Silences: while active, notices of alerts matching every matcher are held back (not lost); create with guardian.create_silence(), end with guardian.expire_silence().';
SELECT pg_catalog.pg_extension_config_dump('guardian.relay_silences', '');

-- Intake triggers. SECURITY DEFINER: whoever may write an alert (the design's own trigger
-- inserts as the application role) may queue it for the relay, and nothing else.
CREATE FUNCTION guardian._relay_intake_inserted()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO guardian.relay_intake (alert_id, occurrences)
    SELECT n.id, n.occurrences FROM new_alerts AS n;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION guardian._relay_intake_inserted() IS
    'Internal: queues new alerts for the relay (statement trigger, one INSERT per statement).';

CREATE FUNCTION guardian._relay_intake_updated()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count integer;
BEGIN
    INSERT INTO guardian.relay_intake (alert_id, occurrences)
    SELECT n.id, n.occurrences
      FROM new_alerts AS n
      JOIN old_alerts AS o ON o.id = n.id
     WHERE n.occurrences > o.occurrences;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    -- A repeat of an open alert is alert activity too; acknowledgements and the like are not.
    IF v_count > 0 THEN
        PERFORM pg_catalog.pg_notify('guardian_alerts', '');
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION guardian._relay_intake_updated() IS
    'Internal: queues new occurrences of open alerts for the relay (repeat notices).';

CREATE TRIGGER monitoring_alerts_relay_insert
    AFTER INSERT ON guardian.monitoring_alerts
    REFERENCING NEW TABLE AS new_alerts
    FOR EACH STATEMENT EXECUTE FUNCTION guardian._relay_intake_inserted();

CREATE TRIGGER monitoring_alerts_relay_update
    AFTER UPDATE ON guardian.monitoring_alerts
    REFERENCING OLD TABLE AS old_alerts NEW TABLE AS new_alerts
    FOR EACH STATEMENT EXECUTE FUNCTION guardian._relay_intake_updated();

-- >>> sql/30_relay/20_relay_silences.sql
-- Silences (after Alertmanager): a list of matchers `field=value`, `field!=value`,
-- `field=~regex`, `field!~regex` over an alert's severity, type, environment, table_name,
-- record_id and fingerprint (a missing value matches as ''); regular expressions are anchored.
-- While a silence is active, matching notices stay in the outbox, held, and go out when it
-- ends, unless their alert was resolved in the meantime.
CREATE FUNCTION guardian._relay_parse_matcher(p_matcher text)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_parts text[] := regexp_match(p_matcher, '^\s*([a-z_]+)\s*(=~|!~|!=|=)(.*)$');
BEGIN
    IF v_parts IS NULL THEN
        RAISE EXCEPTION 'invalid silence matcher %', coalesce(quote_literal(p_matcher), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A matcher is field=value, field!=value, field=~regex or field!~regex.',
                  HINT = 'For example: SELECT guardian.create_silence(ARRAY[''type=TEST_DATA_CONTAMINATION'', ''environment=staging''], ''2 hours'', ''cleanup in progress'');';
    END IF;
    IF v_parts[1] NOT IN ('severity', 'type', 'environment', 'table_name', 'record_id', 'fingerprint') THEN
        RAISE EXCEPTION 'unknown silence matcher field %', quote_literal(v_parts[1])
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Match on severity, type, environment, table_name, record_id or fingerprint.';
    END IF;
    IF v_parts[2] IN ('=~', '!~') THEN
        BEGIN
            PERFORM '' ~ v_parts[3];
        EXCEPTION WHEN invalid_regular_expression THEN
            RAISE EXCEPTION 'invalid regular expression in silence matcher %: %', quote_literal(p_matcher), SQLERRM
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Use a POSIX regular expression, e.g. table_name=~public\..*';
        END;
    END IF;
    RETURN jsonb_build_object('field', v_parts[1], 'op', v_parts[2], 'value', v_parts[3]);
END
$$;
COMMENT ON FUNCTION guardian._relay_parse_matcher(text) IS
    'Internal: parses and checks one silence matcher (field op value) into JSON.';

CREATE FUNCTION guardian._relay_silence_for(
    p_severity text, p_type text, p_environment text, p_table_name text, p_record_id text,
    p_fingerprint text, p_channel text)
RETURNS uuid
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.id
      FROM guardian.relay_silences AS s
     WHERE s.starts_at <= pg_catalog.now() AND s.ends_at > pg_catalog.now()
       AND (s.channel IS NULL OR s.channel = p_channel)
       AND NOT EXISTS (
             SELECT
               FROM jsonb_to_recordset(s.matchers) AS m(field text, op text, value text),
                    LATERAL (SELECT coalesce(CASE m.field
                                 WHEN 'severity' THEN p_severity
                                 WHEN 'type' THEN p_type
                                 WHEN 'environment' THEN p_environment
                                 WHEN 'table_name' THEN p_table_name
                                 WHEN 'record_id' THEN p_record_id
                                 WHEN 'fingerprint' THEN p_fingerprint END, '') AS v) AS f
              WHERE NOT CASE m.op
                          WHEN '=' THEN f.v = m.value
                          WHEN '!=' THEN f.v <> m.value
                          WHEN '=~' THEN f.v ~ ('^(?:' || m.value || ')$')
                          WHEN '!~' THEN f.v !~ ('^(?:' || m.value || ')$')
                          ELSE false END)
     ORDER BY s.ends_at DESC
     LIMIT 1
$$;
COMMENT ON FUNCTION guardian._relay_silence_for(text, text, text, text, text, text, text) IS
    'Internal: the active silence (longest-lasting) that holds back an alert with these fields on a channel, or NULL.';

CREATE FUNCTION guardian.create_silence(
    p_matchers  text[],
    p_duration  interval,
    p_comment   text,
    p_channel   text DEFAULT NULL,
    p_starts_at timestamptz DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_matchers jsonb;
    v_starts   timestamptz := coalesce(p_starts_at, now());
    v_id       uuid;
BEGIN
    IF coalesce(cardinality(p_matchers), 0) = 0 THEN
        RAISE EXCEPTION 'a silence needs at least one matcher'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'For example: SELECT guardian.create_silence(ARRAY[''type=TEST_DATA_CONTAMINATION''], ''2 hours'', ''cleanup in progress'');';
    END IF;
    IF p_duration IS NULL OR p_duration <= '0'::interval THEN
        RAISE EXCEPTION 'invalid silence duration %', coalesce(quote_literal(p_duration::text), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give a positive interval such as ''2 hours''.';
    END IF;
    IF p_comment IS NULL OR btrim(p_comment) = '' THEN
        RAISE EXCEPTION 'a silence needs a comment saying why'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass p_comment, e.g. ''cleanup of tenant-a test rows in progress''.';
    END IF;
    IF p_channel IS NOT NULL AND p_channel !~ '^[a-z][a-z0-9_-]{0,39}$' THEN
        RAISE EXCEPTION 'invalid channel name %', quote_literal(p_channel)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Channel names are those of the relay configuration, e.g. slack, email, webhook; NULL silences every channel.';
    END IF;
    SELECT jsonb_agg(guardian._relay_parse_matcher(m.matcher) ORDER BY m.ord)
      INTO v_matchers
      FROM unnest(p_matchers) WITH ORDINALITY AS m(matcher, ord);
    INSERT INTO guardian.relay_silences (matchers, channel, starts_at, ends_at, comment)
    VALUES (v_matchers, p_channel, v_starts, v_starts + p_duration, btrim(p_comment))
    RETURNING id INTO v_id;
    RETURN v_id;
END
$$;
COMMENT ON FUNCTION guardian.create_silence(text[], interval, text, text, timestamptz) IS
    'Hold back relay notices of alerts matching every matcher (field=value, field!=value, field=~regex, field!~regex) for p_duration, on one channel or all; returns the silence id. Held notices go out when it ends.';

CREATE FUNCTION guardian.expire_silence(p_id uuid)
RETURNS guardian.relay_silences
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_silence guardian.relay_silences;
BEGIN
    UPDATE guardian.relay_silences AS s
       SET ends_at    = greatest(least(s.ends_at, now()), s.starts_at + '1 microsecond'::interval),
           expired_by = coalesce(s.expired_by, SESSION_USER)
     WHERE s.id = p_id
    RETURNING s.* INTO v_silence;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no silence with id %', p_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'List silences with: SELECT id, matchers, ends_at FROM guardian.active_silences;';
    END IF;
    RETURN v_silence;
END
$$;
COMMENT ON FUNCTION guardian.expire_silence(uuid) IS
    'End a silence now; the notices it held go out on the relay''s next pass.';

CREATE VIEW guardian.active_silences AS
SELECT s.id,
       (SELECT string_agg(concat(m.matcher ->> 'field', m.matcher ->> 'op', m.matcher ->> 'value'), ', '
                          ORDER BY m.ord)
          FROM jsonb_array_elements(s.matchers) WITH ORDINALITY AS m(matcher, ord)) AS matchers,
       coalesce(s.channel, '*') AS channel, s.starts_at, s.ends_at, s.comment, s.created_by,
       (SELECT count(*) FROM guardian.relay_outbox AS o
         WHERE o.held_by = s.id AND o.status = 'pending') AS held_notices
  FROM guardian.relay_silences AS s
 WHERE s.ends_at > pg_catalog.now()
 ORDER BY s.ends_at;
COMMENT ON VIEW guardian.active_silences IS
    'Silences in force now or starting later, with how many relay notices each holds back.';

-- >>> sql/30_relay/30_relay_delivery.sql
-- The relay's side of the outbox. Every step is one short transaction; nothing is held open
-- while a message is on the wire. A relay registers (a session advisory lock on a random
-- token), claims messages under a lease tied to that token, and reports each as delivered or
-- failed. When a relay dies, its session and so its token go with it, and the next claim by any
-- relay takes its messages over at once: nothing is lost, and a message can be sent twice
-- only if its relay died between sending it and saying so.
CREATE FUNCTION guardian._relay_lock_space()
RETURNS integer
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 1735551097  -- 'grly': the first key of every relay token's advisory lock
$$;
COMMENT ON FUNCTION guardian._relay_lock_space() IS
    'Internal: the advisory lock class of relay tokens.';

CREATE FUNCTION guardian._relay_live_tokens()
RETURNS integer[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(array_agg(l.objid::bigint::integer), '{}')
      FROM pg_catalog.pg_locks AS l
     WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
       AND l.classid::bigint = guardian._relay_lock_space()
       AND l.database = (SELECT d.oid FROM pg_catalog.pg_database AS d
                          WHERE d.datname = pg_catalog.current_database())
$$;
COMMENT ON FUNCTION guardian._relay_live_tokens() IS
    'Internal: tokens of the relays connected to this database now.';

CREATE FUNCTION guardian._relay_check_token(p_token integer)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_token IS NULL OR NOT EXISTS (
        SELECT FROM pg_catalog.pg_locks AS l
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
           AND l.pid = pg_catalog.pg_backend_pid()
           AND l.classid::bigint = guardian._relay_lock_space()
           AND l.objid::bigint = p_token)
    THEN
        RAISE EXCEPTION 'relay token % is not held by this session', coalesce(p_token::text, 'NULL')
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Call SELECT guardian.relay_register(); on this connection and use the token it returns.';
    END IF;
END
$$;
COMMENT ON FUNCTION guardian._relay_check_token(integer) IS
    'Internal: refuses a relay token that this session does not hold.';

CREATE FUNCTION guardian.relay_register()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_token integer;
BEGIN
    FOR i IN 1..100 LOOP
        v_token := 1 + floor(random() * 2147483646)::integer;
        IF pg_catalog.pg_try_advisory_lock(guardian._relay_lock_space(), v_token) THEN
            RETURN v_token;
        END IF;
    END LOOP;
    RAISE EXCEPTION 'no free relay token after 100 tries'
        USING ERRCODE = 'lock_not_available',
              HINT = 'Retry; if this repeats, check pg_locks for leaked advisory locks.';
END
$$;
COMMENT ON FUNCTION guardian.relay_register() IS
    'Register a relay connection: takes a session advisory lock on a fresh token and returns it. Messages leased under the token are taken over as soon as the session ends.';

CREATE FUNCTION guardian.relay_take_intake(p_limit integer DEFAULT 1000)
RETURNS TABLE (
    alert_id       uuid,
    severity       text,
    type           text,
    environment    text,
    table_name     text,
    record_id      text,
    fingerprint    text,
    occurrences    integer,
    created_at     timestamptz,
    last_seen_at   timestamptz,
    resolved       boolean,
    failed_channel text)
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    -- The rows are deleted in the caller's transaction: if the caller dies before it commits
    -- the routed notices, they are back for the next relay.
    WITH taken AS (
        DELETE FROM guardian.relay_intake AS i
         WHERE i.ctid = ANY (ARRAY(
                   SELECT j.ctid FROM guardian.relay_intake AS j
                    ORDER BY j.queued_at
                    LIMIT greatest(p_limit, 1)
                      FOR UPDATE SKIP LOCKED))
        RETURNING i.alert_id
    )
    SELECT a.id, a.severity, a.type, a.environment, a.table_name, a.record_id, a.fingerprint,
           a.occurrences, a.created_at, a.last_seen_at, a.resolved_at IS NOT NULL,
           a.metadata #>> '{relay,failed_channel}'
      FROM (SELECT DISTINCT t.alert_id FROM taken AS t) AS t
      JOIN guardian.monitoring_alerts AS a ON a.id = t.alert_id
     ORDER BY a.created_at, a.id
$$;
COMMENT ON FUNCTION guardian.relay_take_intake(integer) IS
    'Relay: take up to p_limit queued alerts (SKIP LOCKED, so relays share the work) for routing. Call in a transaction that also calls guardian.relay_enqueue().';

CREATE FUNCTION guardian.relay_enqueue(
    p_alert_ids        uuid[],
    p_channels         text[],
    p_group_keys       text[],
    p_group_waits      interval[],
    p_repeat_intervals interval[])
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count integer;
    v_n     integer := coalesce(cardinality(p_alert_ids), 0);
BEGIN
    IF v_n <> coalesce(cardinality(p_channels), 0) OR v_n <> coalesce(cardinality(p_group_keys), 0)
       OR v_n <> coalesce(cardinality(p_group_waits), 0) OR v_n <> coalesce(cardinality(p_repeat_intervals), 0) THEN
        RAISE EXCEPTION 'relay_enqueue needs arrays of equal length'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass one element per notice in every array.';
    END IF;

    INSERT INTO guardian.relay_groups (channel, group_key)
    SELECT DISTINCT i.channel, i.group_key
      FROM unnest(p_channels, p_group_keys) AS i(channel, group_key)
     WHERE i.group_key IS NOT NULL
    ON CONFLICT DO NOTHING;

    -- A first notice is due after the group wait; a repeat of an alert already notified on
    -- this channel only a repeat interval after that notice, and only if it occurred again.
    INSERT INTO guardian.relay_outbox AS o (alert_id, channel, seq, occurrences, group_key, due_at)
    SELECT i.alert_id, i.channel, coalesce(l.seq + 1, 0), a.occurrences, i.group_key,
           CASE WHEN l.seq IS NULL THEN now() + i.group_wait
                ELSE greatest(now() + i.group_wait, coalesce(l.delivered_at, now()) + i.repeat_interval)
           END
      FROM unnest(p_alert_ids, p_channels, p_group_keys, p_group_waits, p_repeat_intervals)
               AS i(alert_id, channel, group_key, group_wait, repeat_interval)
      JOIN guardian.monitoring_alerts AS a ON a.id = i.alert_id
      LEFT JOIN LATERAL (
               SELECT x.seq, x.status, x.occurrences, x.delivered_at
                 FROM guardian.relay_outbox AS x
                WHERE x.alert_id = i.alert_id AND x.channel = i.channel
                ORDER BY x.seq DESC
                LIMIT 1) AS l ON true
     WHERE l.seq IS NULL
        OR l.status = 'pending'
        OR (a.occurrences > l.occurrences AND a.resolved_at IS NULL)
    ON CONFLICT (alert_id, channel) WHERE status = 'pending'
    DO UPDATE SET occurrences = greatest(o.occurrences, excluded.occurrences);
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION guardian.relay_enqueue(uuid[], text[], text[], interval[], interval[]) IS
    'Relay: queue notices (alert, channel, group key or NULL for no grouping, group wait, repeat interval) routed from guardian.relay_take_intake(); returns how many were queued or updated.';

CREATE FUNCTION guardian._relay_dead_letter(p_message_id uuid, p_error text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_msg guardian.relay_messages;
    v_ids jsonb;
BEGIN
    UPDATE guardian.relay_messages AS m
       SET status = 'dead', last_error = left(p_error, 4000), lease_token = NULL,
           lease_until = NULL, next_attempt_at = NULL
     WHERE m.id = p_message_id
    RETURNING m.* INTO v_msg;
    UPDATE guardian.relay_outbox AS o
       SET status = 'dead', note = left(p_error, 500)
     WHERE o.message_id = p_message_id AND o.status = 'queued';
    SELECT jsonb_agg(x.alert_id) INTO v_ids
      FROM (SELECT o.alert_id FROM guardian.relay_outbox AS o
             WHERE o.message_id = p_message_id ORDER BY o.created_at LIMIT 20) AS x;
    -- One open alert per failing channel: further dead letters count as occurrences of it.
    PERFORM guardian.raise_alert(
        'RELAY_DEAD_LETTER', 'HIGH',
        format('relay gave up on a %s message (%s alert%s) after %s attempts: %s',
               v_msg.channel, v_msg.alert_count, CASE WHEN v_msg.alert_count = 1 THEN '' ELSE 's' END,
               v_msg.attempts, left(p_error, 500)),
        p_metadata => jsonb_build_object(
            'relay', jsonb_build_object('failed_channel', v_msg.channel),
            'message_id', v_msg.id, 'alert_count', v_msg.alert_count,
            'alert_ids', coalesce(v_ids, '[]'::jsonb), 'error', left(p_error, 2000),
            'action_required', format('Fix the %s channel, then re-send with: pg-guardian relay retry --channel %s',
                                      v_msg.channel, v_msg.channel)),
        p_fingerprint => md5('RELAY_DEAD_LETTER:' || v_msg.channel));
END
$$;
COMMENT ON FUNCTION guardian._relay_dead_letter(uuid, text) IS
    'Internal: gives up on a message (it and its notices become dead) and raises a RELAY_DEAD_LETTER alert for the relay to send on the other channels.';

CREATE FUNCTION guardian.relay_claim(
    p_channel        text,
    p_token          integer,
    p_limit          integer,
    p_group_interval interval,
    p_lease          interval DEFAULT '2 minutes',
    p_max_attempts   integer DEFAULT 8)
RETURNS TABLE (
    message_id      uuid,
    idempotency_key text,
    group_key       text,
    alert_count     integer,
    attempts        integer)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_live     integer[] := guardian._relay_live_tokens();
    v_limit    integer := greatest(p_limit, 1);
    v_taken    integer := 0;
    v_n        integer;
    v_group    text;
    v_mid      uuid;
    v_orphan   record;
BEGIN
    PERFORM guardian._relay_check_token(p_token);

    -- Silences: mark due notices held (or no longer held). held_since remembers that a
    -- notice was held, so that it is dropped if its alert is resolved before it goes out.
    IF EXISTS (SELECT FROM guardian.relay_silences AS s
                WHERE s.ends_at > now() AND s.starts_at <= now()
                  AND (s.channel IS NULL OR s.channel = p_channel))
       OR EXISTS (SELECT FROM guardian.relay_outbox AS o
                   WHERE o.channel = p_channel AND o.status = 'pending' AND o.held_by IS NOT NULL) THEN
        UPDATE guardian.relay_outbox AS o
           SET held_by = x.silence,
               held_since = coalesce(o.held_since, CASE WHEN x.silence IS NOT NULL THEN now() END)
          FROM (SELECT y.alert_id, y.seq,
                       guardian._relay_silence_for(a.severity, a.type, a.environment, a.table_name,
                                                   a.record_id, a.fingerprint, p_channel) AS silence
                  FROM guardian.relay_outbox AS y
                  JOIN guardian.monitoring_alerts AS a ON a.id = y.alert_id
                 WHERE y.channel = p_channel AND y.status = 'pending' AND y.due_at <= now()) AS x
         WHERE o.alert_id = x.alert_id AND o.channel = p_channel AND o.seq = x.seq
           AND o.held_by IS DISTINCT FROM x.silence;
    END IF;

    -- Repeats, and notices that were held by a silence, of alerts resolved since: drop them.
    UPDATE guardian.relay_outbox AS o
       SET status = 'dropped',
           note = CASE WHEN o.held_since IS NOT NULL THEN 'alert resolved while silenced'
                       ELSE 'alert resolved before the repeat was due' END
      FROM guardian.monitoring_alerts AS a
     WHERE o.channel = p_channel AND o.status = 'pending' AND a.id = o.alert_id
       AND a.resolved_at IS NOT NULL AND (o.seq > 0 OR o.held_since IS NOT NULL);

    -- Messages whose relay died or gave up: dead-letter those out of attempts...
    FOR v_orphan IN
        SELECT m.id FROM guardian.relay_messages AS m
         WHERE m.channel = p_channel AND m.status = 'sending'
           AND (m.lease_until <= now() OR NOT m.lease_token = ANY (v_live))
           AND m.attempts >= p_max_attempts
           FOR UPDATE SKIP LOCKED
    LOOP
        PERFORM guardian._relay_dead_letter(v_orphan.id,
            'the relay sending it stopped before it reported the outcome (' || p_max_attempts || ' attempts)');
    END LOOP;

    -- ...and take over the rest, with retries that are due.
    RETURN QUERY
    WITH picked AS (
        SELECT m.id, m.status
          FROM guardian.relay_messages AS m
         WHERE m.channel = p_channel
           AND ((m.status = 'retry' AND m.next_attempt_at <= now())
                OR (m.status = 'sending' AND (m.lease_until <= now() OR NOT m.lease_token = ANY (v_live))))
         ORDER BY m.created_at
         LIMIT v_limit
           FOR UPDATE SKIP LOCKED)
    UPDATE guardian.relay_messages AS m
       SET status = 'sending', attempts = m.attempts + 1, last_attempt_at = now(),
           lease_token = p_token, lease_until = now() + p_lease, next_attempt_at = NULL,
           last_error = CASE WHEN p.status = 'sending'
                             THEN 'the relay sending it stopped before it reported the outcome'
                             ELSE m.last_error END
      FROM picked AS p
     WHERE m.id = p.id
    RETURNING m.id, m.idempotency_key, m.group_key, m.alert_count, m.attempts;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_taken := v_taken + v_n;

    -- New messages from notices without grouping: one message each.
    IF v_taken < v_limit THEN
        RETURN QUERY
        WITH picked AS (
            SELECT o.alert_id, o.seq, gen_random_uuid() AS mid,
                   o.alert_id::text || ':' || o.channel || ':' || o.seq AS ikey
              FROM guardian.relay_outbox AS o
             WHERE o.channel = p_channel AND o.group_key IS NULL AND o.status = 'pending'
               AND o.due_at <= now() AND o.held_by IS NULL
             ORDER BY o.due_at
             LIMIT v_limit - v_taken
               FOR UPDATE SKIP LOCKED),
        queued AS (
            UPDATE guardian.relay_outbox AS o
               SET status = 'queued', message_id = p.mid
              FROM picked AS p
             WHERE o.alert_id = p.alert_id AND o.channel = p_channel AND o.seq = p.seq)
        INSERT INTO guardian.relay_messages AS m
            (id, channel, idempotency_key, alert_count, status, attempts, last_attempt_at,
             lease_token, lease_until)
        SELECT p.mid, p_channel, p.ikey, 1, 'sending', 1, now(), p_token, now() + p_lease
          FROM picked AS p
        RETURNING m.id, m.idempotency_key, m.group_key, m.alert_count, m.attempts;
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_taken := v_taken + v_n;
    END IF;

    -- New messages from groups whose hold has passed: one message for all their due notices.
    IF v_taken < v_limit THEN
        FOR v_group IN
            SELECT g.group_key
              FROM guardian.relay_groups AS g
             WHERE g.channel = p_channel AND g.hold_until <= now()
               AND EXISTS (SELECT FROM guardian.relay_outbox AS o
                            WHERE o.channel = g.channel AND o.group_key = g.group_key
                              AND o.status = 'pending' AND o.due_at <= now() AND o.held_by IS NULL)
             ORDER BY g.hold_until
             LIMIT v_limit - v_taken
               FOR UPDATE OF g SKIP LOCKED
        LOOP
            v_mid := gen_random_uuid();
            INSERT INTO guardian.relay_messages AS m
                (id, channel, group_key, idempotency_key, status, attempts, last_attempt_at,
                 lease_token, lease_until)
            VALUES (v_mid, p_channel, v_group, 'group:' || v_mid::text, 'sending', 1, now(),
                    p_token, now() + p_lease);
            UPDATE guardian.relay_outbox AS o
               SET status = 'queued', message_id = v_mid
             WHERE o.channel = p_channel AND o.group_key = v_group AND o.status = 'pending'
               AND o.due_at <= now() AND o.held_by IS NULL;
            GET DIAGNOSTICS v_n = ROW_COUNT;
            UPDATE guardian.relay_groups AS g
               SET hold_until = now() + p_group_interval, last_message_at = now(),
                   messages = g.messages + 1
             WHERE g.channel = p_channel AND g.group_key = v_group;
            -- A group of one is keyed like an ungrouped notice: the key belongs to the alert.
            RETURN QUERY
            UPDATE guardian.relay_messages AS m
               SET alert_count = v_n,
                   idempotency_key = CASE WHEN v_n = 1
                       THEN (SELECT o.alert_id::text || ':' || o.channel || ':' || o.seq
                               FROM guardian.relay_outbox AS o WHERE o.message_id = v_mid)
                       ELSE m.idempotency_key END
             WHERE m.id = v_mid
            RETURNING m.id, m.idempotency_key, m.group_key, m.alert_count, m.attempts;
        END LOOP;
    END IF;
END
$$;
COMMENT ON FUNCTION guardian.relay_claim(text, integer, integer, interval, interval, integer) IS
    'Relay: lease up to p_limit messages of a channel to send now: retries that are due, messages of relays that died, then new messages (one per ungrouped notice, one per group whose hold has passed). Applies silences and drops stale repeats first.';

CREATE FUNCTION guardian.relay_message_alerts(p_message_ids uuid[], p_sample integer DEFAULT 10)
RETURNS TABLE (
    message_id        uuid,
    alert_id          uuid,
    seq               integer,
    idempotency_key   text,
    severity          text,
    type              text,
    message           text,
    message_length    integer,
    table_name        text,
    record_id         text,
    environment       text,
    metadata          jsonb,
    fingerprint       text,
    occurrences       integer,
    created_at        timestamptz,
    last_seen_at      timestamptz,
    resolved_at       timestamptz,
    group_alerts      bigint,
    group_occurrences bigint,
    group_first_at    timestamptz,
    group_last_at     timestamptz)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    -- The first p_sample alerts of each message (most severe first), with totals over all of
    -- them; messages are cut to 16 kB here, the channels cut further.
    SELECT x.message_id, x.alert_id, x.seq, x.ikey, x.severity, x.type, x.message, x.message_length,
           x.table_name, x.record_id, x.environment, x.metadata, x.fingerprint, x.occurrences,
           x.created_at, x.last_seen_at, x.resolved_at, x.n, x.occ, x.first_at, x.last_at
      FROM (SELECT o.message_id, a.id AS alert_id, o.seq,
                   a.id::text || ':' || o.channel || ':' || o.seq AS ikey,
                   a.severity, a.type, left(a.message, 16384) AS message,
                   length(a.message) AS message_length, a.table_name, a.record_id, a.environment,
                   CASE WHEN pg_column_size(a.metadata) <= 65536 THEN a.metadata
                        ELSE jsonb_build_object('truncated', true) END AS metadata,
                   a.fingerprint, o.occurrences, a.created_at, a.last_seen_at, a.resolved_at,
                   count(*) OVER w AS n, sum(o.occurrences) OVER w AS occ,
                   min(a.created_at) OVER w AS first_at, max(a.last_seen_at) OVER w AS last_at,
                   row_number() OVER (PARTITION BY o.message_id
                                      ORDER BY array_position(ARRAY['CRITICAL','HIGH','MEDIUM','LOW','INFO'], a.severity),
                                               a.created_at, a.id) AS rn
              FROM guardian.relay_outbox AS o
              JOIN guardian.monitoring_alerts AS a ON a.id = o.alert_id
             WHERE o.message_id = ANY (p_message_ids)
            WINDOW w AS (PARTITION BY o.message_id)) AS x
     WHERE x.rn <= greatest(p_sample, 1)
     ORDER BY x.message_id, x.rn
$$;
COMMENT ON FUNCTION guardian.relay_message_alerts(uuid[], integer) IS
    'Relay: what to say in each message: its first p_sample alerts (most severe first; messages cut to 16 kB) and totals over all its alerts.';

CREATE FUNCTION guardian.relay_delivered(p_message_ids uuid[])
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count integer;
BEGIN
    -- Delivered wins over everything, even a lease another relay took over meanwhile.
    UPDATE guardian.relay_messages AS m
       SET status = 'delivered', delivered_at = now(), lease_token = NULL, lease_until = NULL,
           next_attempt_at = NULL
     WHERE m.id = ANY (p_message_ids) AND m.status <> 'delivered';
    GET DIAGNOSTICS v_count = ROW_COUNT;
    UPDATE guardian.relay_outbox AS o
       SET status = 'delivered', delivered_at = now()
     WHERE o.message_id = ANY (p_message_ids) AND o.status IN ('queued', 'dead');
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION guardian.relay_delivered(uuid[]) IS
    'Relay: these messages reached their channel (their notices become delivered).';

CREATE FUNCTION guardian.relay_failed(
    p_message_id   uuid,
    p_token        integer,
    p_error        text,
    p_retry_in     interval,
    p_max_attempts integer DEFAULT 8)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_msg guardian.relay_messages;
BEGIN
    SELECT * INTO v_msg FROM guardian.relay_messages AS m WHERE m.id = p_message_id FOR UPDATE;
    IF NOT FOUND OR v_msg.status <> 'sending' OR v_msg.lease_token IS DISTINCT FROM p_token THEN
        RETURN 'ignored';
    END IF;
    IF v_msg.attempts >= p_max_attempts THEN
        PERFORM guardian._relay_dead_letter(p_message_id, coalesce(p_error, 'unknown error'));
        RETURN 'dead';
    END IF;
    UPDATE guardian.relay_messages AS m
       SET status = 'retry', last_error = left(coalesce(p_error, 'unknown error'), 4000),
           next_attempt_at = now() + greatest(coalesce(p_retry_in, '0'::interval), '0'::interval),
           lease_token = NULL, lease_until = NULL
     WHERE m.id = p_message_id;
    RETURN 'retry';
END
$$;
COMMENT ON FUNCTION guardian.relay_failed(uuid, integer, text, interval, integer) IS
    'Relay: a send failed; retry after p_retry_in, or dead-letter the message once it has had p_max_attempts attempts. Returns retry, dead or ignored (not leased by this token).';

CREATE FUNCTION guardian.relay_next_due(p_channel text)
RETURNS timestamptz
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT least(
        (SELECT min(greatest(o.due_at, coalesce(g.hold_until, '-infinity')))
           FROM guardian.relay_outbox AS o
           LEFT JOIN guardian.relay_groups AS g
                  ON g.channel = o.channel AND g.group_key = o.group_key
          WHERE o.channel = p_channel AND o.status = 'pending' AND o.held_by IS NULL),
        (SELECT min(m.next_attempt_at) FROM guardian.relay_messages AS m
          WHERE m.channel = p_channel AND m.status = 'retry'),
        (SELECT min(m.lease_until) FROM guardian.relay_messages AS m
          WHERE m.channel = p_channel AND m.status = 'sending'),
        (SELECT min(s.ends_at) FROM guardian.relay_silences AS s
          WHERE s.ends_at > now()
            AND s.id IN (SELECT o.held_by FROM guardian.relay_outbox AS o
                          WHERE o.channel = p_channel AND o.status = 'pending')))
$$;
COMMENT ON FUNCTION guardian.relay_next_due(text) IS
    'Relay: when the channel next has something to do (a notice or group due, a retry, a lease or a silence ending); NULL when idle.';

CREATE FUNCTION guardian.relay_retry(p_channel text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count integer;
BEGIN
    WITH revived AS (
        UPDATE guardian.relay_messages AS m
           SET status = 'retry', attempts = 0, next_attempt_at = now()
         WHERE m.status = 'dead' AND (p_channel IS NULL OR m.channel = p_channel)
        RETURNING m.id)
    UPDATE guardian.relay_outbox AS o
       SET status = 'queued', note = NULL
      FROM revived AS r
     WHERE o.message_id = r.id AND o.status = 'dead';
    SELECT count(*) INTO v_count FROM guardian.relay_messages AS m
     WHERE m.status = 'retry' AND m.attempts = 0 AND (p_channel IS NULL OR m.channel = p_channel);
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION guardian.relay_retry(text) IS
    'Re-send dead-lettered messages (of one channel, or all) from scratch, e.g. after fixing a webhook URL or SMTP password; returns how many.';

CREATE FUNCTION guardian.relay_prune(p_keep interval DEFAULT '30 days')
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count integer;
BEGIN
    -- Notices of resolved alerts are history; those of open alerts decide repeats, so stay.
    DELETE FROM guardian.relay_outbox AS o
     USING guardian.monitoring_alerts AS a
     WHERE a.id = o.alert_id AND a.resolved_at < now() - p_keep
       AND o.status IN ('delivered', 'dropped', 'dead');
    GET DIAGNOSTICS v_count = ROW_COUNT;
    DELETE FROM guardian.relay_messages AS m
     WHERE m.status IN ('delivered', 'dead') AND m.created_at < now() - p_keep
       AND NOT EXISTS (SELECT FROM guardian.relay_outbox AS o WHERE o.message_id = m.id);
    DELETE FROM guardian.relay_groups AS g
     WHERE g.hold_until < now() - p_keep
       AND NOT EXISTS (SELECT FROM guardian.relay_outbox AS o
                        WHERE o.channel = g.channel AND o.group_key = g.group_key
                          AND o.status = 'pending');
    DELETE FROM guardian.relay_silences AS s WHERE s.ends_at < now() - p_keep;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION guardian.relay_prune(interval) IS
    'Delete relay history older than p_keep: notices of alerts resolved before then, finished messages, idle groups, ended silences. Runs daily as the relay_prune job.';

-- >>> sql/30_relay/40_relay_status.sql
-- What `pg-guardian relay status` shows: per channel, the queue and how delivery is going.
CREATE VIEW guardian.relay_status AS
WITH notices AS (
    SELECT o.channel,
           count(*) FILTER (WHERE o.status = 'pending') AS pending,
           count(*) FILTER (WHERE o.status = 'pending' AND o.held_by IS NOT NULL) AS silenced,
           count(*) FILTER (WHERE o.status = 'queued') AS in_messages,
           count(*) FILTER (WHERE o.status = 'dead') AS dead_notices,
           count(*) FILTER (WHERE o.status = 'delivered'
                              AND o.delivered_at > pg_catalog.now() - '1 hour'::interval) AS delivered_last_hour,
           min(o.created_at) FILTER (WHERE o.status IN ('pending', 'queued')
                                       AND o.held_by IS NULL) AS oldest_undelivered_at
      FROM guardian.relay_outbox AS o
     GROUP BY o.channel),
messages AS (
    SELECT m.channel,
           count(*) FILTER (WHERE m.status = 'sending') AS sending,
           count(*) FILTER (WHERE m.status = 'retry') AS retrying,
           count(*) FILTER (WHERE m.status = 'dead') AS dead_messages,
           count(*) FILTER (WHERE m.status = 'delivered' AND m.attempts > 1
                              AND m.delivered_at > pg_catalog.now() - '1 day'::interval) AS recovered_last_day,
           max(m.delivered_at) AS last_delivered_at,
           (array_agg(m.last_error ORDER BY m.last_attempt_at DESC)
               FILTER (WHERE m.status IN ('retry', 'dead') AND m.last_error IS NOT NULL))[1] AS last_error
      FROM guardian.relay_messages AS m
     GROUP BY m.channel)
SELECT coalesce(n.channel, m.channel) AS channel,
       coalesce(n.pending, 0) AS pending,
       coalesce(n.silenced, 0) AS silenced,
       coalesce(n.in_messages, 0) AS in_messages,
       coalesce(m.sending, 0) AS sending,
       coalesce(m.retrying, 0) AS retrying,
       coalesce(m.dead_messages, 0) AS dead_messages,
       coalesce(n.dead_notices, 0) AS dead_notices,
       coalesce(n.delivered_last_hour, 0) AS delivered_last_hour,
       coalesce(m.recovered_last_day, 0) AS recovered_last_day,
       n.oldest_undelivered_at,
       pg_catalog.now() - n.oldest_undelivered_at AS oldest_undelivered_age,
       m.last_delivered_at,
       m.last_error
  FROM notices AS n
  FULL JOIN messages AS m ON m.channel = n.channel
 ORDER BY 1;
COMMENT ON VIEW guardian.relay_status IS
    'Relay queue per channel: pending (and silenced) notices, messages sending, retrying and dead-lettered, deliveries in the last hour, oldest undelivered notice and the last error.';

CREATE FUNCTION guardian.relay_overview()
RETURNS TABLE (intake_backlog bigint, relay_connections integer, oldest_intake_at timestamptz)
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (SELECT count(*) FROM guardian.relay_intake),
           cardinality(guardian._relay_live_tokens()),
           (SELECT min(i.queued_at) FROM guardian.relay_intake AS i)
$$;
COMMENT ON FUNCTION guardian.relay_overview() IS
    'Alerts waiting to be routed, relay connections alive now (a relay has one per channel plus one), and how long the oldest unrouted alert has waited.';

-- Relay history would grow for ever; prune it daily (pg_cron or `pg-guardian jobs serve`).
INSERT INTO guardian.jobs (name, schedule, command, description, max_lag, builtin)
VALUES ('relay_prune', '23 3 * * *', 'SELECT guardian.relay_prune()',
        'Delete relay history (notices, messages, groups, silences) older than 30 days.',
        '2 days', true);

-- >>> sql/40_drift/10_fingerprint.sql
-- The schema fingerprint: one canonical JSON description of the user schemas, with a checksum
-- per object and one overall. guardian.schema_objects() is one self-contained query with no
-- guardian dependencies, because the controller runs this very text (read from this file, with
-- the same SET clauses) against databases that do not have pg_guardian: cross-environment
-- diffs and drift checks share one canonical form.
--
-- pg_guardian's own objects are left out: schemas guardian, guardian_ext (where it keeps
-- dblink) and guardian_history, extensions installed there, and its triggers on user tables.
--
-- Canonical means: no OIDs, no creation order, no data (sequence positions, statistics), no
-- owners or tablespaces (they legitimately differ between environments); identities are
-- schema-qualified and quoted as pg_identify_object() does; arrays whose order means nothing
-- are sorted in "C" order; text the server deparses (defaults, indexes, constraints, views,
-- policies) is rendered under the fixed settings below, so the caller's DateStyle, TimeZone or
-- search_path cannot change it. Joins rather than correlated subqueries (and hash joins
-- rather than nested loops over CTEs, no JIT, enough work_mem to stay off disk), each large
-- catalog read once and through its index where only a few of its rows are ours, and no
-- per-row work whose result is thrown away keep it well under a second for 2,000 tables.
-- What remains is mostly the server's own deparsing (pg_get_indexdef, pg_get_constraintdef,
-- pg_get_viewdef), md5 and, in schema_fingerprint(), parsing the document.
--
-- Shape: {"format": "pg_guardian.fingerprint/1", "checksum": md5,
--         "objects": {"<kind> <identity>": {"kind", "identity", "parent", "checksum",
--                                           "definition": {attribute: value, ...}}}}
-- An object's checksum is md5(definition::text); the overall checksum is the md5 of the
-- "key=checksum" lines in "C" order. md5 identifies here, it does not protect.
CREATE FUNCTION guardian.schema_objects()
RETURNS TABLE (key text, kind text, identity text, parent text, checksum text, definition text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
SET DateStyle = 'ISO, YMD'
SET IntervalStyle = 'postgres'
SET TimeZone = 'UTC'
SET extra_float_digits = '1'
SET bytea_output = 'hex'
SET quote_all_identifiers = 'off'
SET jit = 'off'
SET enable_nestloop = 'off'
SET work_mem = '64MB'
AS $objects$
WITH
-- Every 'e' dependency points at an extension; saying so lets the scan use the reference
-- index instead of reading all of pg_depend.
ext_member AS (
    SELECT d.classid, d.objid
      FROM pg_catalog.pg_depend AS d
     WHERE d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass AND d.deptype = 'e'
),
ns AS (
    SELECT n.oid, n.nspname, n.nspowner, n.nspacl, pg_catalog.quote_ident(n.nspname) AS ident
      FROM pg_catalog.pg_namespace AS n
     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast', 'guardian', 'guardian_ext', 'guardian_history')
       AND n.nspname !~ '^pg_(toast_)?temp_'
       AND NOT EXISTS (SELECT FROM ext_member AS e
                        WHERE e.classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND e.objid = n.oid)
),
rel AS (
    SELECT c.oid, c.relname, c.relkind, c.relowner, c.relacl, c.reloptions, c.relpersistence,
           c.relispartition, c.relrowsecurity, c.relforcerowsecurity, c.relreplident, c.reloftype,
           c.relam, c.relpartbound, ns.ident AS schema_ident,
           ns.ident || '.' || pg_catalog.quote_ident(c.relname) AS ident
      FROM pg_catalog.pg_class AS c
      JOIN ns ON ns.oid = c.relnamespace
     WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
       AND NOT EXISTS (SELECT FROM ext_member AS e
                        WHERE e.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND e.objid = c.oid)
),
fn AS (
    SELECT p.*
      FROM pg_catalog.pg_proc AS p
      JOIN ns ON ns.oid = p.pronamespace
     WHERE NOT EXISTS (SELECT FROM ext_member AS e
                        WHERE e.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND e.objid = p.oid)
),
typ AS (
    SELECT t.*, ns.ident AS schema_ident
      FROM pg_catalog.pg_type AS t
      JOIN ns ON ns.oid = t.typnamespace
     WHERE t.typtype IN ('b', 'c', 'd', 'e', 'r')
       -- a table's row type is the table's; only stand-alone composite types count
       AND (t.typrelid = 0 OR t.typrelid IN (SELECT c.oid FROM pg_catalog.pg_class AS c WHERE c.relkind = 'c'))
       AND NOT (t.typtype = 'b' AND t.typcategory = 'A' AND t.typelem <> 0)
       AND NOT EXISTS (SELECT FROM ext_member AS e
                        WHERE e.classid = 'pg_catalog.pg_type'::pg_catalog.regclass AND e.objid = t.oid)
),
-- The live columns of those relations (sequences' own columns describe nothing), read once:
-- the column privileges, the column order and the columns all need them. pg_attribute is the
-- largest catalog (every index, toast table and system column has rows there), so its index
-- is probed for just these relations rather than the whole of it read.
att AS (
    SELECT a.attrelid, a.attnum, a.attname, a.atttypid, a.atttypmod, a.attnotnull, a.attidentity,
           a.attgenerated, a.attcollation, a.attislocal, a.attacl, r.relkind, r.relispartition, r.ident AS rel_ident
      FROM pg_catalog.pg_attribute AS a
      JOIN rel AS r ON r.oid = a.attrelid
     WHERE a.attrelid = ANY (ARRAY(SELECT r.oid FROM rel AS r WHERE r.relkind <> 'S'))
       AND a.attnum > 0 AND NOT a.attisdropped
),
-- Privileges, one shape for every object: {"grantee": "PRIV, PRIV WITH GRANT OPTION"}. A NULL
-- ACL means the built-in default, which is expanded; the owner's own rights are implied
-- (columns and default privileges have no owner of their own: NULL).
acl AS (
    SELECT 'pg_catalog.pg_namespace'::pg_catalog.regclass AS classid, ns.oid AS objid, 0 AS objsubid,
           coalesce(ns.nspacl, pg_catalog.acldefault('n', ns.nspowner)) AS acl, ns.nspowner AS owner
      FROM ns
    UNION ALL
    SELECT 'pg_catalog.pg_class'::pg_catalog.regclass, r.oid, 0, r.relacl, r.relowner
      FROM rel AS r WHERE r.relacl IS NOT NULL
    UNION ALL
    SELECT 'pg_catalog.pg_class'::pg_catalog.regclass, a.attrelid, a.attnum, a.attacl, NULL::pg_catalog.oid
      FROM att AS a WHERE a.attacl IS NOT NULL
    UNION ALL
    SELECT 'pg_catalog.pg_proc'::pg_catalog.regclass, p.oid, 0,
           coalesce(p.proacl, pg_catalog.acldefault('f', p.proowner)), p.proowner
      FROM fn AS p
    UNION ALL
    SELECT 'pg_catalog.pg_type'::pg_catalog.regclass, t.oid, 0,
           coalesce(t.typacl, pg_catalog.acldefault('T', t.typowner)), t.typowner
      FROM typ AS t
    UNION ALL
    SELECT 'pg_catalog.pg_default_acl'::pg_catalog.regclass, da.oid, 0, da.defaclacl, NULL::pg_catalog.oid
      FROM pg_catalog.pg_default_acl AS da
),
privs AS (
    SELECT g.classid, g.objid, g.objsubid, pg_catalog.jsonb_object_agg(g.grantee, g.privileges) AS privileges
      FROM (SELECT s.classid, s.objid, s.objsubid,
                   CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(x.grantee)::text END AS grantee,
                   pg_catalog.string_agg(x.privilege_type || CASE WHEN x.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END,
                                         ', ' ORDER BY x.privilege_type COLLATE "C") AS privileges
              FROM acl AS s, pg_catalog.aclexplode(s.acl) AS x
             WHERE x.grantee IS DISTINCT FROM s.owner
             GROUP BY 1, 2, 3, 4) AS g
     GROUP BY 1, 2, 3
),
-- the column each sequence belongs to: 'i' identity columns, 'a' serial (OWNED BY); the
-- sequences' own dependencies, found through the index, not all of pg_depend
seq_owner AS (
    SELECT d.objid AS seqid, d.deptype, d.refobjid AS relid, d.refobjsubid AS attnum
      FROM pg_catalog.pg_depend AS d
     WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
       AND d.objid = ANY (ARRAY(SELECT r.oid FROM rel AS r WHERE r.relkind = 'S'))
       AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
       AND d.deptype IN ('i', 'a') AND d.refobjsubid > 0
),
-- Each definition is written as the text jsonb would print (keys by length, then bytes; ", "
-- and ": " separators; absent attributes left out), so md5(definition) is the checksum
-- without building a jsonb value per object: three times faster on a large schema. Nested
-- arrays and objects are built as jsonb, whose text is already canonical.
objects AS (
    -- schemas
    SELECT 'schema' AS kind, ns.ident AS identity, NULL::text AS parent,
           '{' || concat_ws(', ',
               '"comment": ' || pg_catalog.to_json(d.description)::text,
               '"privileges": ' || pv.privileges::text) || '}' AS definition
      FROM ns
      LEFT JOIN pg_catalog.pg_description AS d ON d.classoid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND d.objoid = ns.oid AND d.objsubid = 0
      LEFT JOIN privs AS pv ON pv.classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND pv.objid = ns.oid AND pv.objsubid = 0

    UNION ALL
    -- extensions: their member objects are described by the version alone
    SELECT 'extension', pg_catalog.quote_ident(x.extname), NULL,
           '{' || concat_ws(', ',
               '"schema": ' || pg_catalog.to_json(pg_catalog.quote_ident(n.nspname))::text,
               '"version": ' || pg_catalog.to_json(x.extversion)::text) || '}'
      FROM pg_catalog.pg_extension AS x
      JOIN pg_catalog.pg_namespace AS n ON n.oid = x.extnamespace
     WHERE x.extname <> 'pg_guardian'
       AND n.nspname NOT IN ('guardian', 'guardian_ext', 'guardian_history')

    UNION ALL
    -- tables, partitioned tables and foreign tables
    SELECT CASE r.relkind WHEN 'f' THEN 'foreign table' ELSE 'table' END, r.ident, NULL,
           '{' || concat_ws(', ',
               '"comment": ' || pg_catalog.to_json(d.description)::text,
               CASE WHEN r.reloftype <> 0 THEN '"of_type": ' || pg_catalog.to_json(pg_catalog.format_type(r.reloftype, NULL))::text END,
               CASE WHEN r.reloptions IS NOT NULL THEN '"options": ' ||
                    (SELECT pg_catalog.jsonb_agg(o ORDER BY o COLLATE "C") FROM pg_catalog.unnest(r.reloptions) AS o)::text END,
               '"inherits": ' || inh.inherits::text,
               '"privileges": ' || pv.privileges::text,
               '"persistence": ' || CASE r.relpersistence WHEN 'u' THEN '"unlogged"' ELSE '"permanent"' END,
               '"column_order": ' || cols.names::text,
               '"partition_of": ' || pg_catalog.to_json(inh.partition_of)::text,
               CASE WHEN am.amname <> 'heap' THEN '"access_method": ' || pg_catalog.to_json(am.amname)::text END,
               CASE WHEN r.relkind = 'p' THEN '"partition_key": ' || pg_catalog.to_json(pg_catalog.pg_get_partkeydef(r.oid))::text END,
               '"foreign_server": ' || pg_catalog.to_json(pg_catalog.quote_ident(fs.srvname))::text,
               CASE WHEN ft.ftoptions IS NOT NULL THEN '"foreign_options": ' ||
                    (SELECT pg_catalog.jsonb_agg(o ORDER BY o COLLATE "C") FROM pg_catalog.unnest(ft.ftoptions) AS o)::text END,
               CASE WHEN r.relispartition THEN '"partition_bound": ' || pg_catalog.to_json(pg_catalog.pg_get_expr(r.relpartbound, r.oid))::text END,
               '"replica_identity": ' || CASE r.relreplident WHEN 'n' THEN '"nothing"' WHEN 'f' THEN '"full"' WHEN 'i' THEN '"index"' END,
               '"row_level_security": ' || CASE WHEN r.relrowsecurity AND r.relforcerowsecurity THEN '"enabled, forced"'
                                                WHEN r.relrowsecurity THEN '"enabled"'
                                                WHEN r.relforcerowsecurity THEN '"disabled, forced"'
                                                ELSE '"disabled"' END) || '}'
      FROM rel AS r
      LEFT JOIN pg_catalog.pg_am AS am ON am.oid = r.relam
      LEFT JOIN pg_catalog.pg_foreign_table AS ft ON ft.ftrelid = r.oid
      LEFT JOIN pg_catalog.pg_foreign_server AS fs ON fs.oid = ft.ftserver
      LEFT JOIN (SELECT i.inhrelid,
                        pg_catalog.min(CASE WHEN c.relispartition THEN p.ident END) AS partition_of,
                        pg_catalog.jsonb_agg(p.ident ORDER BY i.inhseqno) FILTER (WHERE NOT c.relispartition) AS inherits
                   FROM pg_catalog.pg_inherits AS i
                   JOIN rel AS p ON p.oid = i.inhparent
                   JOIN pg_catalog.pg_class AS c ON c.oid = i.inhrelid
                  GROUP BY i.inhrelid) AS inh ON inh.inhrelid = r.oid
      LEFT JOIN (SELECT a.attrelid, pg_catalog.jsonb_agg(a.attname ORDER BY a.attnum) AS names
                   FROM att AS a
                  WHERE a.relkind IN ('r', 'p', 'f')
                  GROUP BY a.attrelid) AS cols ON cols.attrelid = r.oid
      LEFT JOIN pg_catalog.pg_description AS d ON d.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objoid = r.oid AND d.objsubid = 0
      LEFT JOIN privs AS pv ON pv.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND pv.objid = r.oid AND pv.objsubid = 0
     WHERE r.relkind IN ('r', 'p', 'f')

    UNION ALL
    -- views and materialized views (their columns follow from the definition)
    SELECT CASE r.relkind WHEN 'v' THEN 'view' ELSE 'materialized view' END, r.ident, NULL,
           '{' || concat_ws(', ',
               '"comment": ' || pg_catalog.to_json(d.description)::text,
               CASE WHEN r.reloptions IS NOT NULL THEN '"options": ' ||
                    (SELECT pg_catalog.jsonb_agg(o ORDER BY o COLLATE "C") FROM pg_catalog.unnest(r.reloptions) AS o)::text END,
               '"definition": ' || pg_catalog.to_json(pg_catalog.pg_get_viewdef(r.oid))::text,
               '"privileges": ' || pv.privileges::text,
               '"column_comments": ' || (SELECT pg_catalog.jsonb_object_agg(a.attname, cd.description)
                                           FROM pg_catalog.pg_attribute AS a
                                           JOIN pg_catalog.pg_description AS cd ON cd.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass
                                                                                AND cd.objoid = a.attrelid AND cd.objsubid = a.attnum
                                          WHERE a.attrelid = r.oid AND a.attnum > 0)::text,
               '"column_privileges": ' || (SELECT pg_catalog.jsonb_object_agg(a.attname, cp.privileges)
                                             FROM pg_catalog.pg_attribute AS a
                                             JOIN privs AS cp ON cp.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                                                             AND cp.objid = a.attrelid AND cp.objsubid = a.attnum
                                            WHERE a.attrelid = r.oid AND a.attnum > 0 AND a.attacl IS NOT NULL)::text) || '}'
      FROM rel AS r
      LEFT JOIN pg_catalog.pg_description AS d ON d.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objoid = r.oid AND d.objsubid = 0
      LEFT JOIN privs AS pv ON pv.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND pv.objid = r.oid AND pv.objsubid = 0
     WHERE r.relkind IN ('v', 'm')

    UNION ALL
    -- sequences: parameters, never positions; identity sequences belong to their column
    SELECT 'sequence', r.ident, NULL,
           '{' || concat_ws(', ',
               '"cache": ' || s.seqcache,
               '"cycle": ' || s.seqcycle,
               '"start": ' || s.seqstart,
               '"comment": ' || pg_catalog.to_json(d.description)::text,
               '"maximum": ' || s.seqmax,
               '"minimum": ' || s.seqmin,
               '"owned_by": ' || pg_catalog.to_json(owner_rel.ident || '.' || pg_catalog.quote_ident(oa.attname))::text,
               '"data_type": ' || pg_catalog.to_json(pg_catalog.format_type(s.seqtypid, NULL))::text,
               '"increment": ' || s.seqincrement,
               '"privileges": ' || pv.privileges::text) || '}'
      FROM rel AS r
      JOIN pg_catalog.pg_sequence AS s ON s.seqrelid = r.oid
      LEFT JOIN seq_owner AS so ON so.seqid = r.oid
      LEFT JOIN rel AS owner_rel ON owner_rel.oid = so.relid
      LEFT JOIN att AS oa ON oa.attrelid = so.relid AND oa.attnum = so.attnum
      LEFT JOIN pg_catalog.pg_description AS d ON d.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objoid = r.oid AND d.objsubid = 0
      LEFT JOIN privs AS pv ON pv.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND pv.objid = r.oid AND pv.objsubid = 0
     WHERE r.relkind = 'S' AND so.deptype IS DISTINCT FROM 'i'

    UNION ALL
    -- columns of tables and foreign tables (a partition's inherited columns are its parent's)
    SELECT 'column', a.rel_ident || '.' || pg_catalog.quote_ident(a.attname), a.rel_ident,
           '{' || concat_ws(', ',
               '"comment": ' || pg_catalog.to_json(d.description)::text,
               -- a default cannot refer to columns, so it is deparsed without opening the table
               CASE WHEN a.attgenerated = '' THEN '"default": ' || pg_catalog.to_json(pg_catalog.pg_get_expr(ad.adbin, 0))::text END,
               '"identity": ' || CASE a.attidentity WHEN 'a' THEN '"always"' WHEN 'd' THEN '"by default"' END,
               '"not_null": ' || a.attnotnull,
               CASE WHEN a.attcollation <> t.typcollation THEN
                    '"collation": ' || pg_catalog.to_json(pg_catalog.quote_ident(cn.nspname) || '.' || pg_catalog.quote_ident(co.collname))::text END,
               '"data_type": ' || pg_catalog.to_json(pg_catalog.format_type(a.atttypid, a.atttypmod))::text,
               CASE WHEN a.attgenerated = 's' THEN '"generated": ' || pg_catalog.to_json(pg_catalog.pg_get_expr(ad.adbin, ad.adrelid))::text END,
               '"privileges": ' || pv.privileges::text,
               -- written out like the rest: one jsonb_build_object per identity column costs more
               -- than all the other attributes of the column together
               CASE WHEN a.attidentity <> '' THEN '"identity_sequence": {"cache": ' || s.seqcache || ', "cycle": ' || s.seqcycle
                    || ', "start": ' || s.seqstart || ', "maximum": ' || s.seqmax || ', "minimum": ' || s.seqmin
                    || ', "increment": ' || s.seqincrement || '}' END) || '}'
      FROM att AS a
      JOIN pg_catalog.pg_type AS t ON t.oid = a.atttypid
      LEFT JOIN pg_catalog.pg_attrdef AS ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
      LEFT JOIN pg_catalog.pg_collation AS co ON co.oid = a.attcollation AND a.attcollation <> t.typcollation
      LEFT JOIN pg_catalog.pg_namespace AS cn ON cn.oid = co.collnamespace
      LEFT JOIN seq_owner AS so ON so.relid = a.attrelid AND so.attnum = a.attnum AND so.deptype = 'i'
      LEFT JOIN pg_catalog.pg_sequence AS s ON s.seqrelid = so.seqid
      LEFT JOIN pg_catalog.pg_description AS d ON d.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objoid = a.attrelid AND d.objsubid = a.attnum
      LEFT JOIN privs AS pv ON pv.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND pv.objid = a.attrelid AND pv.objsubid = a.attnum
     WHERE a.relkind IN ('r', 'p', 'f')
       AND (a.attislocal OR NOT a.relispartition)

    UNION ALL
    -- indexes, except those a constraint made (the constraint describes them) and those
    -- attached to a partitioned index (the parent index describes them)
    SELECT 'index', r.schema_ident || '.' || pg_catalog.quote_ident(ic.relname), r.ident,
           '{' || concat_ws(', ',
               '"valid": ' || i.indisvalid,
               '"comment": ' || pg_catalog.to_json(d.description)::text,
               '"definition": ' || pg_catalog.to_json(pg_catalog.pg_get_indexdef(i.indexrelid))::text) || '}'
      FROM pg_catalog.pg_index AS i
      JOIN rel AS r ON r.oid = i.indrelid
      JOIN pg_catalog.pg_class AS ic ON ic.oid = i.indexrelid
      LEFT JOIN pg_catalog.pg_description AS d ON d.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objoid = i.indexrelid AND d.objsubid = 0
     WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_constraint AS k
                        WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid AND k.contype IN ('p', 'u', 'x'))
       AND NOT (ic.relispartition AND EXISTS (SELECT FROM pg_catalog.pg_inherits AS h WHERE h.inhrelid = i.indexrelid))

    UNION ALL
    -- table constraints (constraint triggers are triggers; a partition's cloned constraints are
    -- its parent's)
    SELECT 'constraint', pg_catalog.quote_ident(k.conname) || ' on ' || r.ident, r.ident,
           '{' || concat_ws(', ',
               '"type": ' || CASE k.contype WHEN 'p' THEN '"primary key"' WHEN 'u' THEN '"unique"' WHEN 'c' THEN '"check"'
                                            WHEN 'x' THEN '"exclusion"' WHEN 'f' THEN '"foreign key"' END,
               '"comment": ' || pg_catalog.to_json(d.description)::text,
               '"definition": ' || pg_catalog.to_json(pg_catalog.pg_get_constraintdef(k.oid))::text,
               -- the storage parameters of the index behind a key, which its definition leaves
               -- out (an exclusion constraint's names them)
               '"index_options": ' || pg_catalog.to_json(pg_catalog.array_to_string(ci.reloptions, ', '))::text) || '}'
      FROM pg_catalog.pg_constraint AS k
      JOIN rel AS r ON r.oid = k.conrelid
      LEFT JOIN pg_catalog.pg_class AS ci ON ci.oid = k.conindid AND k.contype IN ('p', 'u')
      LEFT JOIN pg_catalog.pg_description AS d ON d.classoid = 'pg_catalog.pg_constraint'::pg_catalog.regclass AND d.objoid = k.oid AND d.objsubid = 0
     WHERE k.contype IN ('p', 'u', 'c', 'x', 'f')
       AND k.conparentid = 0
       AND (k.conislocal OR NOT r.relispartition)

    UNION ALL
    -- triggers: not the internal ones behind foreign keys, not clones on partitions, not
    -- pg_guardian's own
    SELECT 'trigger', pg_catalog.quote_ident(tg.tgname) || ' on ' || r.ident, r.ident,
           '{' || concat_ws(', ',
               '"comment": ' || pg_catalog.to_json(d.description)::text,
               '"enabled": ' || CASE tg.tgenabled WHEN 'O' THEN '"origin"' WHEN 'D' THEN '"disabled"'
                                                  WHEN 'R' THEN '"replica"' WHEN 'A' THEN '"always"' END,
               '"definition": ' || pg_catalog.to_json(pg_catalog.pg_get_triggerdef(tg.oid))::text) || '}'
      FROM pg_catalog.pg_trigger AS tg
      JOIN rel AS r ON r.oid = tg.tgrelid
      JOIN pg_catalog.pg_proc AS tf ON tf.oid = tg.tgfoid
      JOIN pg_catalog.pg_namespace AS tfn ON tfn.oid = tf.pronamespace
      LEFT JOIN pg_catalog.pg_description AS d ON d.classoid = 'pg_catalog.pg_trigger'::pg_catalog.regclass AND d.objoid = tg.oid AND d.objsubid = 0
     WHERE NOT tg.tgisinternal AND tg.tgparentid = 0
       AND tfn.nspname <> 'guardian'

    UNION ALL
    -- rules, other than the ones that make views
    SELECT 'rule', pg_catalog.quote_ident(rw.rulename) || ' on ' || r.ident, r.ident,
           '{' || concat_ws(', ',
               '"comment": ' || pg_catalog.to_json(d.description)::text,
               '"enabled": ' || CASE rw.ev_enabled WHEN 'O' THEN '"origin"' WHEN 'D' THEN '"disabled"'
                                                   WHEN 'R' THEN '"replica"' WHEN 'A' THEN '"always"' END,
               '"definition": ' || pg_catalog.to_json(pg_catalog.pg_get_ruledef(rw.oid))::text) || '}'
      FROM pg_catalog.pg_rewrite AS rw
      JOIN rel AS r ON r.oid = rw.ev_class
      LEFT JOIN pg_catalog.pg_description AS d ON d.classoid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.objoid = rw.oid AND d.objsubid = 0
     WHERE rw.rulename <> '_RETURN'

    UNION ALL
    -- row-level security policies
    SELECT 'policy', pg_catalog.quote_ident(po.polname) || ' on ' || r.ident, r.ident,
           '{' || concat_ws(', ',
               '"roles": ' || (SELECT pg_catalog.jsonb_agg(x.rn ORDER BY x.rn COLLATE "C") FROM (
                                  SELECT CASE WHEN ro = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(ro)::text END AS rn
                                    FROM pg_catalog.unnest(po.polroles) AS ro) AS x)::text,
               '"using": ' || pg_catalog.to_json(pg_catalog.pg_get_expr(po.polqual, po.polrelid))::text,
               '"command": ' || CASE po.polcmd WHEN 'r' THEN '"SELECT"' WHEN 'a' THEN '"INSERT"' WHEN 'w' THEN '"UPDATE"'
                                               WHEN 'd' THEN '"DELETE"' ELSE '"ALL"' END,
               '"comment": ' || pg_catalog.to_json(d.description)::text,
               '"permissive": ' || po.polpermissive,
               '"with_check": ' || pg_catalog.to_json(pg_catalog.pg_get_expr(po.polwithcheck, po.polrelid))::text) || '}'
      FROM pg_catalog.pg_policy AS po
      JOIN rel AS r ON r.oid = po.polrelid
      LEFT JOIN pg_catalog.pg_description AS d ON d.classoid = 'pg_catalog.pg_policy'::pg_catalog.regclass AND d.objoid = po.oid AND d.objsubid = 0

    UNION ALL
    -- functions, procedures and aggregates
    SELECT CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate' ELSE 'function' END,
           p.oid::pg_catalog.regprocedure::text, NULL,
           '{' || concat_ws(', ',
               CASE WHEN p.prokind <> 'a' THEN '"body": ' || pg_catalog.to_json(
                    CASE WHEN p.prosqlbody IS NOT NULL THEN pg_catalog.pg_get_function_sqlbody(p.oid) ELSE p.prosrc END)::text END,
               CASE WHEN p.prokind IN ('f', 'w') THEN '"cost": ' || pg_catalog.to_json(p.procost::numeric)::text END,
               CASE WHEN p.proretset THEN '"rows": ' || pg_catalog.to_json(p.prorows::numeric)::text END,
               CASE WHEN p.proconfig IS NOT NULL THEN '"config": ' ||
                    (SELECT pg_catalog.jsonb_agg(c ORDER BY c COLLATE "C") FROM pg_catalog.unnest(p.proconfig) AS c)::text END,
               CASE WHEN p.prokind IN ('f', 'w') THEN '"strict": ' || p.proisstrict END,
               CASE WHEN p.prokind = 'w' THEN '"window": true' END,
               '"comment": ' || pg_catalog.to_json(d.description)::text,
               '"library": ' || pg_catalog.to_json(p.probin)::text,
               CASE WHEN p.prokind <> 'p' THEN '"returns": ' || pg_catalog.to_json(pg_catalog.pg_get_function_result(p.oid))::text END,
               '"language": ' || pg_catalog.to_json(l.lanname)::text,
               CASE WHEN p.prokind <> 'p' THEN '"parallel": ' || CASE p.proparallel WHEN 's' THEN '"safe"' WHEN 'r' THEN '"restricted"'
                                                                                   ELSE '"unsafe"' END END,
               CASE WHEN p.prokind = 'a' THEN '"aggregate": ' || pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                    'state_function', ag.aggtransfn::pg_catalog.regproc::text,
                    'state_type', pg_catalog.format_type(ag.aggtranstype, NULL),
                    'final_function', NULLIF(ag.aggfinalfn, 0)::pg_catalog.regproc::text,
                    'combine_function', NULLIF(ag.aggcombinefn, 0)::pg_catalog.regproc::text,
                    'initial_condition', ag.agginitval,
                    'kind', ag.aggkind))::text END,
               '"arguments": ' || pg_catalog.to_json(pg_catalog.pg_get_function_arguments(p.oid))::text,
               CASE WHEN p.prokind IN ('f', 'w') THEN '"leakproof": ' || p.proleakproof END,
               '"privileges": ' || pv.privileges::text,
               CASE WHEN p.prokind <> 'p' THEN '"volatility": ' || CASE p.provolatile WHEN 'i' THEN '"immutable"'
                                                                     WHEN 's' THEN '"stable"' ELSE '"volatile"' END END,
               '"security_definer": ' || p.prosecdef) || '}'
      FROM fn AS p
      JOIN pg_catalog.pg_language AS l ON l.oid = p.prolang
      LEFT JOIN pg_catalog.pg_aggregate AS ag ON ag.aggfnoid = p.oid
      LEFT JOIN pg_catalog.pg_description AS d ON d.classoid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.objoid = p.oid AND d.objsubid = 0
      LEFT JOIN privs AS pv ON pv.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND pv.objid = p.oid AND pv.objsubid = 0

    UNION ALL
    -- enum, composite, range and base types, and domains (array types come with them)
    SELECT CASE t.typtype WHEN 'd' THEN 'domain' ELSE 'type' END,
           t.schema_ident || '.' || pg_catalog.quote_ident(t.typname), NULL,
           '{' || concat_ws(', ',
               CASE WHEN t.typtype <> 'd' THEN '"type": ' || CASE t.typtype WHEN 'e' THEN '"enum"' WHEN 'c' THEN '"composite"'
                                                                           WHEN 'r' THEN '"range"' ELSE '"base"' END END,
               CASE WHEN t.typtype = 'e' THEN '"labels": ' ||
                    (SELECT pg_catalog.jsonb_agg(e.enumlabel ORDER BY e.enumsortorder)
                       FROM pg_catalog.pg_enum AS e WHERE e.enumtypid = t.oid)::text END,
               '"comment": ' || pg_catalog.to_json(d.description)::text,
               '"default": ' || pg_catalog.to_json(t.typdefault)::text,
               CASE WHEN t.typtype = 'r' THEN '"subtype": ' ||
                    (SELECT pg_catalog.to_json(pg_catalog.format_type(rg.rngsubtype, NULL))
                       FROM pg_catalog.pg_range AS rg WHERE rg.rngtypid = t.oid)::text END,
               CASE WHEN t.typtype = 'd' THEN '"not_null": ' || t.typnotnull END,
               CASE WHEN t.typtype = 'd' THEN '"base_type": ' || pg_catalog.to_json(pg_catalog.format_type(t.typbasetype, t.typtypmod))::text END,
               CASE WHEN t.typtype = 'd' AND t.typcollation <> 0 AND t.typcollation <> bt.typcollation THEN '"collation": ' ||
                    (SELECT pg_catalog.to_json(pg_catalog.quote_ident(cn.nspname) || '.' || pg_catalog.quote_ident(co.collname))
                       FROM pg_catalog.pg_collation AS co
                       JOIN pg_catalog.pg_namespace AS cn ON cn.oid = co.collnamespace
                      WHERE co.oid = t.typcollation)::text END,
               CASE WHEN t.typtype = 'c' THEN '"attributes": ' ||
                    (SELECT pg_catalog.jsonb_agg(pg_catalog.quote_ident(a.attname) || ' '
                                                 || pg_catalog.format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum)
                       FROM pg_catalog.pg_attribute AS a
                      WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped)::text END,
               '"privileges": ' || pv.privileges::text,
               CASE WHEN t.typtype = 'd' THEN '"constraints": ' ||
                    (SELECT pg_catalog.jsonb_object_agg(k.conname, pg_catalog.pg_get_constraintdef(k.oid))
                       FROM pg_catalog.pg_constraint AS k WHERE k.contypid = t.oid)::text END,
               CASE WHEN t.typtype = 'b' THEN '"input_function": ' || pg_catalog.to_json(t.typinput::pg_catalog.regproc::text)::text END,
               CASE WHEN t.typtype = 'b' THEN '"output_function": ' || pg_catalog.to_json(t.typoutput::pg_catalog.regproc::text)::text END) || '}'
      FROM typ AS t
      LEFT JOIN pg_catalog.pg_type AS bt ON bt.oid = t.typbasetype
      LEFT JOIN pg_catalog.pg_description AS d ON d.classoid = 'pg_catalog.pg_type'::pg_catalog.regclass AND d.objoid = t.oid AND d.objsubid = 0
      LEFT JOIN privs AS pv ON pv.classid = 'pg_catalog.pg_type'::pg_catalog.regclass AND pv.objid = t.oid AND pv.objsubid = 0

    UNION ALL
    -- default privileges for objects created later (ALTER DEFAULT PRIVILEGES)
    SELECT 'default privileges',
           'for role ' || pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(da.defaclrole))
           || coalesce(' in schema ' || pg_catalog.quote_ident(n.nspname), '')
           || ' on ' || CASE da.defaclobjtype WHEN 'r' THEN 'tables' WHEN 'S' THEN 'sequences'
                                              WHEN 'f' THEN 'functions' WHEN 'T' THEN 'types'
                                              ELSE 'schemas' END,
           NULL,
           '{' || concat_ws(', ', '"privileges": ' || pv.privileges::text) || '}'
      FROM pg_catalog.pg_default_acl AS da
      LEFT JOIN pg_catalog.pg_namespace AS n ON n.oid = da.defaclnamespace
      LEFT JOIN privs AS pv ON pv.classid = 'pg_catalog.pg_default_acl'::pg_catalog.regclass AND pv.objid = da.oid AND pv.objsubid = 0
     WHERE n.nspname IS NULL OR n.nspname NOT IN ('guardian', 'guardian_ext', 'guardian_history')

    UNION ALL
    -- event triggers, not pg_guardian's own
    SELECT 'event trigger', pg_catalog.quote_ident(et.evtname), NULL,
           '{' || concat_ws(', ',
               '"tags": ' || (SELECT pg_catalog.jsonb_agg(tag ORDER BY tag COLLATE "C") FROM pg_catalog.unnest(et.evttags) AS tag)::text,
               '"event": ' || pg_catalog.to_json(et.evtevent)::text,
               '"comment": ' || pg_catalog.to_json(d.description)::text,
               '"enabled": ' || CASE et.evtenabled WHEN 'O' THEN '"origin"' WHEN 'D' THEN '"disabled"'
                                                   WHEN 'R' THEN '"replica"' WHEN 'A' THEN '"always"' END,
               '"function": ' || pg_catalog.to_json(et.evtfoid::pg_catalog.regprocedure::text)::text) || '}'
      FROM pg_catalog.pg_event_trigger AS et
      JOIN pg_catalog.pg_proc AS ef ON ef.oid = et.evtfoid
      JOIN pg_catalog.pg_namespace AS en ON en.oid = ef.pronamespace
      LEFT JOIN pg_catalog.pg_description AS d ON d.classoid = 'pg_catalog.pg_event_trigger'::pg_catalog.regclass AND d.objoid = et.oid AND d.objsubid = 0
     WHERE en.nspname <> 'guardian'
       AND NOT EXISTS (SELECT FROM ext_member AS e
                        WHERE e.classid = 'pg_catalog.pg_event_trigger'::pg_catalog.regclass AND e.objid = et.oid)
)
SELECT o.kind || ' ' || o.identity, o.kind, o.identity, o.parent, pg_catalog.md5(o.definition), o.definition
  FROM objects AS o
$objects$;
COMMENT ON FUNCTION guardian.schema_objects() IS
    'One row per user schema object (pg_guardian''s own excluded): key, kind, identity, parent, md5 checksum and definition (canonical jsonb text: cast it to jsonb to query it). The rows of guardian.schema_fingerprint().';

-- The document is assembled as text and parsed once: nesting each definition with
-- jsonb_build_object would copy it twice and costs twice as much on a large schema.
CREATE FUNCTION guardian.schema_fingerprint()
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
SET work_mem = '64MB'
AS $$
    SELECT ('{"format": "pg_guardian.fingerprint/1", "checksum": "'
            || pg_catalog.md5(coalesce(pg_catalog.string_agg(o.key || '=' || o.checksum, E'\n' ORDER BY o.key COLLATE "C"), ''))
            || '", "objects": {'
            || coalesce(pg_catalog.string_agg(
                   -- kinds are plain words; the identity is escaped once and reused in the key;
                   -- the keys come in jsonb's order (length, then bytes), which the parser keeps
                   '"' || o.kind || ' ' || o.identity_esc
                   || '": {"kind": "' || o.kind
                   || coalesce('", "parent": ' || o.parent_json || ', "checksum": "', '", "checksum": "') || o.checksum
                   || '", "identity": "' || o.identity_esc
                   || '", "definition": ' || o.definition || '}', ', '), '')
            || '}}')::jsonb
      -- Identities and parents are built from quote_ident()ed names, so one without a double
      -- quote holds nothing JSON escapes and is written as it is: to_json() on every one was
      -- a tenth of the cost of assembling the document. The others still go through it.
      FROM (SELECT x.key, x.kind, x.checksum, x.definition,
                   CASE WHEN pg_catalog.strpos(x.identity, '"') = 0 THEN x.identity
                        ELSE pg_catalog.left(pg_catalog.substr(pg_catalog.to_json(x.identity)::text, 2), -1) END AS identity_esc,
                   CASE WHEN pg_catalog.strpos(x.parent, '"') = 0 THEN '"' || x.parent || '"'
                        ELSE pg_catalog.to_json(x.parent)::text END AS parent_json
              FROM guardian.schema_objects() AS x) AS o
$$;
COMMENT ON FUNCTION guardian.schema_fingerprint() IS
    'Canonical JSON description of the user schemas (tables, columns, indexes, constraints, triggers, functions, views, sequences, types, policies, privileges, extensions, comments) with an md5 per object and overall. Independent of OIDs and creation order; pg_guardian''s own objects excluded.';

-- >>> sql/40_drift/20_normalize.sql
-- Formatting-only differences (whitespace, comments, keyword case) in function bodies, view
-- definitions and policy expressions are not drift. In SQL there is no parser to call, so this
-- is a lexical normaliser: it splits the text into SQL tokens, drops comments and whitespace,
-- and folds the case of everything that is not quoted (unquoted identifiers fold to lower
-- case anyway, so this never hides a real change). String literals, quoted identifiers and
-- dollar quotes keep their exact text. The controller compares parse trees with pglast
-- instead, which also sees through redundant parentheses and the like.
CREATE FUNCTION guardian.normalize_sql(p_text text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.string_agg(
               CASE WHEN m.token ~ '^[eE]''' THEN 'e' || pg_catalog.substr(m.token, 2)
                    WHEN m.token ~ '^(''|"|\$[^0-9])' THEN m.token
                    ELSE pg_catalog.lower(m.token) END,
               ' ' ORDER BY m.n)
      FROM (SELECT t.match[1] AS token, t.n
              FROM pg_catalog.regexp_matches(p_text,
                       -- One token per match. POSIX takes the longest alternative, as a lexer
                       -- does (E'..' over E, a -- comment over the - operator); a dollar quote
                       -- runs to the last closing tag, so text between two quotes with one tag
                       -- is kept verbatim: that can only report drift, never hide it.
                       '(--[^\n]*'
                       || '|/\*(?:[^*]|\*+[^*/])*\*+/'
                       || '|[eE]''(?:[^''\\]|\\.|'''')*'''
                       || '|''(?:[^'']|'''')*'''
                       || '|"(?:[^"]|"")*"'
                       || '|\$([A-Za-z_][A-Za-z_0-9]*|)\$.*\$\2\$'
                       || '|\$[0-9]+'
                       || '|[[:alnum:]_][[:alnum:]_$]*'
                       || '|[-+*/<>=~!@#%^&|`?]+'
                       || '|[^[:space:]])',
                       'g') WITH ORDINALITY AS t(match, n)) AS m
     WHERE m.token !~ '^(--|/\*)'
$$;
COMMENT ON FUNCTION guardian.normalize_sql(text) IS
    'SQL or PL/pgSQL text reduced to its tokens: comments and whitespace dropped, unquoted text lower-cased, literals kept. Two texts with equal normal forms differ only in formatting.';

-- >>> sql/40_drift/30_compare.sql
-- Comparing two fingerprints in SQL, so that a team can check drift from psql: export one
-- with `SELECT guardian.schema_fingerprint()`, import it elsewhere with
-- guardian.import_fingerprint(), compare. The controller's `pg-guardian drift` computes the
-- same differences (same kinds, identities, changes and attributes) in Python.
CREATE FUNCTION guardian._check_fingerprint(p_fingerprint jsonb, p_name text)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_fingerprint IS NULL OR jsonb_typeof(p_fingerprint) <> 'object'
       OR p_fingerprint->>'format' IS DISTINCT FROM 'pg_guardian.fingerprint/1'
       OR jsonb_typeof(p_fingerprint->'objects') IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION '% is not a pg_guardian fingerprint', p_name
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Expected a JSON object with "format": "pg_guardian.fingerprint/1" and "objects"; got %s.',
                                  coalesce(left(p_fingerprint::text, 60), 'NULL')),
                  HINT = 'Produce one with SELECT guardian.schema_fingerprint(); or pg-guardian fingerprint --dsn ...';
    END IF;
    RETURN p_fingerprint;
END
$$;
COMMENT ON FUNCTION guardian._check_fingerprint(jsonb, text) IS
    'Internal: raises a clear error unless the value is a pg_guardian fingerprint document.';

-- Which attributes hold text whose formatting is the author's (function bodies in SQL and
-- PL/pgSQL, view definitions, policy expressions); everything else is deparsed by the server
-- and has no formatting of its own.
CREATE FUNCTION guardian._formatting_attribute(p_kind text, p_attribute text, p_source jsonb, p_target jsonb)
RETURNS boolean
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN p_kind IN ('function', 'procedure') AND p_attribute = 'body'
            THEN p_source->>'language' IN ('sql', 'plpgsql')
                 AND p_source->>'language' IS NOT DISTINCT FROM p_target->>'language'
        WHEN p_kind IN ('view', 'materialized view') THEN p_attribute = 'definition'
        WHEN p_kind = 'policy' THEN p_attribute IN ('using', 'with_check')
        ELSE false
    END
$$;
COMMENT ON FUNCTION guardian._formatting_attribute(text, text, jsonb, jsonb) IS
    'Internal: can a difference in this attribute be formatting only (bodies, view definitions, policy expressions)?';

-- Column order is compared on the columns both sides have: an added or dropped column is
-- reported once, as a column, not again as a change of order.
CREATE FUNCTION guardian._common_order(p_order jsonb, p_other jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(jsonb_agg(c.value ORDER BY c.n), '[]'::jsonb)
      FROM jsonb_array_elements(coalesce(p_order, '[]'::jsonb)) WITH ORDINALITY AS c(value, n)
     WHERE coalesce(p_other, '[]'::jsonb) @> jsonb_build_array(c.value)
$$;
COMMENT ON FUNCTION guardian._common_order(jsonb, jsonb) IS
    'Internal: the elements of p_order that p_other also has, in p_order''s order.';

CREATE FUNCTION guardian.compare_fingerprints(
    p_source jsonb, p_target jsonb, p_include_cosmetic boolean DEFAULT false)
RETURNS TABLE (kind text, identity text, parent text, change text, cosmetic boolean, detail jsonb)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    PERFORM guardian._check_fingerprint(p_source, 'the source');
    PERFORM guardian._check_fingerprint(p_target, 'the target');
    IF p_source->>'checksum' IS NOT DISTINCT FROM p_target->>'checksum' THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH pairs AS (
        SELECT coalesce(s.key, t.key) AS key, s.value AS src, t.value AS tgt,
               coalesce(s.value, t.value) AS any_side
          FROM jsonb_each(p_source->'objects') AS s
          FULL JOIN jsonb_each(p_target->'objects') AS t ON t.key = s.key
         WHERE s.value->>'checksum' IS DISTINCT FROM t.value->>'checksum'
    ),
    attrs AS (
        SELECT p.key, a.attribute,
               p.src->'definition'->a.attribute AS src_value,
               p.tgt->'definition'->a.attribute AS tgt_value,
               p.src IS NOT NULL AND p.tgt IS NOT NULL
                 AND guardian._formatting_attribute(p.any_side->>'kind', a.attribute,
                                                    p.src->'definition', p.tgt->'definition')
                 AND guardian.normalize_sql(p.src->'definition'->>a.attribute)
                     IS NOT DISTINCT FROM guardian.normalize_sql(p.tgt->'definition'->>a.attribute) AS formatting
          FROM pairs AS p,
               LATERAL (SELECT jsonb_object_keys(coalesce(p.src->'definition', '{}'::jsonb))
                        UNION
                        SELECT jsonb_object_keys(coalesce(p.tgt->'definition', '{}'::jsonb))) AS a(attribute)
         WHERE (p.src->'definition'->a.attribute) IS DISTINCT FROM (p.tgt->'definition'->a.attribute)
           AND NOT (a.attribute = 'column_order' AND p.src IS NOT NULL AND p.tgt IS NOT NULL
                    AND guardian._common_order(p.src->'definition'->'column_order', p.tgt->'definition'->'column_order')
                        = guardian._common_order(p.tgt->'definition'->'column_order', p.src->'definition'->'column_order'))
    ),
    diffs AS (
        SELECT a.key, bool_and(a.formatting) AS cosmetic,
               jsonb_object_agg(a.attribute,
                   jsonb_build_object('source', a.src_value, 'target', a.tgt_value)
                   || CASE WHEN a.formatting THEN '{"cosmetic": true}'::jsonb ELSE '{}'::jsonb END) AS detail
          FROM attrs AS a
         GROUP BY a.key
    )
    SELECT p.any_side->>'kind', p.any_side->>'identity', p.any_side->>'parent',
           CASE WHEN p.src IS NULL THEN 'added' WHEN p.tgt IS NULL THEN 'removed' ELSE 'changed' END,
           coalesce(d.cosmetic AND p.src IS NOT NULL AND p.tgt IS NOT NULL, false),
           coalesce(d.detail, '{}'::jsonb)
      FROM pairs AS p
      LEFT JOIN diffs AS d ON d.key = p.key
     -- an object both sides have is only reported if some attribute differs (column order
     -- among shared columns alone is not a difference); one side only is always reported
     WHERE (d.key IS NOT NULL OR p.src IS NULL OR p.tgt IS NULL)
       AND (p_include_cosmetic OR NOT coalesce(d.cosmetic AND p.src IS NOT NULL AND p.tgt IS NOT NULL, false))
     ORDER BY coalesce(p.any_side->>'parent', p.any_side->>'identity') COLLATE "C",
              p.any_side ? 'parent', p.any_side->>'kind' COLLATE "C", p.any_side->>'identity' COLLATE "C";
END
$$;
COMMENT ON FUNCTION guardian.compare_fingerprints(jsonb, jsonb, boolean) IS
    'Differences between two fingerprints, one row per object: change is added (only in the target), removed (only in the source) or changed; detail maps each differing attribute to {source, target}. Formatting-only differences are cosmetic and left out unless p_include_cosmetic.';

-- >>> sql/40_drift/40_snapshots.sql
-- Drift over time: fingerprints are stored as snapshots; one snapshot is the approved baseline
-- that the hourly drift check compares the live schema with. A snapshot can also be a
-- fingerprint imported from another environment (production's, say), so that staging is
-- checked against production without the controller.
CREATE TABLE guardian.schema_snapshots (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    label       text NOT NULL,
    source      text NOT NULL DEFAULT 'live',
    environment text NOT NULL DEFAULT guardian.current_environment(),
    taken_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    taken_by    text NOT NULL DEFAULT SESSION_USER,
    checksum    text NOT NULL,
    objects     integer NOT NULL,
    fingerprint jsonb NOT NULL,
    baseline    boolean NOT NULL DEFAULT false,
    approved_at timestamptz,
    approved_by text,
    CONSTRAINT schema_snapshots_label_chk CHECK (pg_catalog.length(label) BETWEEN 1 AND 200),
    CONSTRAINT schema_snapshots_source_chk CHECK (source IN ('live', 'import')),
    CONSTRAINT schema_snapshots_baseline_chk CHECK (NOT baseline OR approved_at IS NOT NULL)
);
COMMENT ON TABLE guardian.schema_snapshots IS
    'Stored schema fingerprints: taken here with guardian.snapshot_schema(label) or imported from another environment with guardian.import_fingerprint(label, json). At most one is the approved baseline (guardian.approve_baseline(id)) that guardian.check_drift() compares with.';
SELECT pg_catalog.pg_extension_config_dump('guardian.schema_snapshots', '');
CREATE UNIQUE INDEX schema_snapshots_baseline_idx ON guardian.schema_snapshots (baseline) WHERE baseline;
CREATE INDEX schema_snapshots_label_idx ON guardian.schema_snapshots (label, taken_at);

CREATE FUNCTION guardian._check_label(p_label text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_label IS NULL OR length(btrim(p_label)) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION 'invalid snapshot label %', coalesce(quote_literal(p_label), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use a short name of 1 to 200 characters, e.g. SELECT guardian.snapshot_schema(''release 2024-06'');';
    END IF;
    RETURN btrim(p_label);
END
$$;
COMMENT ON FUNCTION guardian._check_label(text) IS 'Internal: validates and trims a snapshot label.';

CREATE FUNCTION guardian.snapshot_schema(p_label text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_label       text := guardian._check_label(p_label);
    v_fingerprint jsonb := guardian.schema_fingerprint();
    v_id          bigint;
BEGIN
    INSERT INTO guardian.schema_snapshots (label, source, checksum, objects, fingerprint)
    VALUES (v_label, 'live', v_fingerprint->>'checksum',
            (SELECT count(*) FROM jsonb_object_keys(v_fingerprint->'objects')), v_fingerprint)
    RETURNING id INTO v_id;
    RETURN v_id;
END
$$;
COMMENT ON FUNCTION guardian.snapshot_schema(text) IS
    'Store the live schema fingerprint under a label; returns the snapshot id (approve it as the baseline with guardian.approve_baseline(id)).';

-- An imported fingerprint is checked, not trusted: its checksums must be the ones this
-- server computes from its definitions, so a hand-edited or truncated file is refused.
CREATE FUNCTION guardian.import_fingerprint(p_label text, p_fingerprint jsonb, p_environment text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_label    text := guardian._check_label(p_label);
    v_bad      text;
    v_checksum text;
    v_objects  integer;
    v_id       bigint;
BEGIN
    PERFORM guardian._check_fingerprint(p_fingerprint, 'the imported value');
    SELECT o.key INTO v_bad
      FROM jsonb_each(p_fingerprint->'objects') AS o
     WHERE o.value->>'checksum' IS DISTINCT FROM md5((o.value->'definition')::text)
        OR o.key IS DISTINCT FROM (o.value->>'kind') || ' ' || (o.value->>'identity')
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'imported fingerprint is corrupt: object % does not match its checksum', quote_literal(v_bad)
            USING ERRCODE = 'data_corrupted',
                  HINT = 'Export it again unchanged, e.g. psql -AtX -c ''SELECT guardian.schema_fingerprint()'' > prod.json';
    END IF;
    SELECT md5(coalesce(string_agg(o.key || '=' || (o.value->>'checksum'), E'\n' ORDER BY o.key COLLATE "C"), '')),
           count(*)
      INTO v_checksum, v_objects
      FROM jsonb_each(p_fingerprint->'objects') AS o;
    IF v_checksum IS DISTINCT FROM p_fingerprint->>'checksum' THEN
        RAISE EXCEPTION 'imported fingerprint is corrupt: its overall checksum does not match its objects'
            USING ERRCODE = 'data_corrupted',
                  HINT = 'Export it again unchanged, e.g. psql -AtX -c ''SELECT guardian.schema_fingerprint()'' > prod.json';
    END IF;
    IF p_environment IS NOT NULL AND lower(btrim(p_environment)) !~ '^[a-z][a-z0-9_-]{0,62}$' THEN
        RAISE EXCEPTION 'invalid environment name %', quote_literal(p_environment)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Name the environment the fingerprint comes from, e.g. ''production''.';
    END IF;
    INSERT INTO guardian.schema_snapshots (label, source, environment, checksum, objects, fingerprint)
    VALUES (v_label, 'import', coalesce(lower(btrim(p_environment)), 'unknown'), v_checksum, v_objects,
            p_fingerprint)
    RETURNING id INTO v_id;
    RETURN v_id;
END
$$;
COMMENT ON FUNCTION guardian.import_fingerprint(text, jsonb, text) IS
    'Store a fingerprint exported from another database (SELECT guardian.schema_fingerprint() there) as a snapshot, after checking its checksums; returns the snapshot id. Compare with guardian.diff_schema(id) or approve it as the baseline.';

CREATE FUNCTION guardian._snapshot(p_snapshot bigint)
RETURNS guardian.schema_snapshots
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_snapshot guardian.schema_snapshots;
BEGIN
    IF p_snapshot IS NULL THEN
        SELECT * INTO v_snapshot FROM guardian.schema_snapshots AS s WHERE s.baseline;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'no approved schema baseline'
                USING ERRCODE = 'no_data_found',
                      HINT = 'Approve the current schema as the baseline with: SELECT guardian.approve_baseline();';
        END IF;
    ELSE
        SELECT * INTO v_snapshot FROM guardian.schema_snapshots AS s WHERE s.id = p_snapshot;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'no schema snapshot with id %', p_snapshot
                USING ERRCODE = 'no_data_found',
                      HINT = 'List snapshots with: SELECT id, label, taken_at, baseline FROM guardian.schema_snapshots ORDER BY id;';
        END IF;
    END IF;
    RETURN v_snapshot;
END
$$;
COMMENT ON FUNCTION guardian._snapshot(bigint) IS
    'Internal: a snapshot by id, or the baseline for NULL, with clear errors when missing.';

CREATE FUNCTION guardian.approve_baseline(p_snapshot bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id  bigint := p_snapshot;
    v_old bigint;
BEGIN
    IF v_id IS NULL THEN
        v_id := guardian.snapshot_schema('baseline ' || to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC');
    ELSE
        PERFORM guardian._snapshot(v_id);
    END IF;
    -- one baseline at a time, also when two admins approve at once
    LOCK TABLE guardian.schema_snapshots IN SHARE ROW EXCLUSIVE MODE;
    SELECT s.id INTO v_old FROM guardian.schema_snapshots AS s WHERE s.baseline;
    UPDATE guardian.schema_snapshots AS s SET baseline = false WHERE s.baseline AND s.id <> v_id;
    UPDATE guardian.schema_snapshots AS s
       SET baseline = true, approved_at = now(), approved_by = SESSION_USER
     WHERE s.id = v_id;
    -- the drift reported against the old baseline is accepted with the new one
    PERFORM guardian._resolve_drift_alerts(NULL, format('schema baseline %s approved by %s', v_id, SESSION_USER));
    PERFORM guardian.raise_alert(
        'SCHEMA_BASELINE_APPROVED', 'INFO',
        format('schema baseline %s approved by %s (was %s)', v_id, SESSION_USER, coalesce(v_old::text, 'none')),
        p_record_id => v_id::text,
        p_metadata => jsonb_build_object('snapshot', v_id, 'previous', v_old),
        p_fingerprint => md5('SCHEMA_BASELINE_APPROVED:' || v_id || ':' || clock_timestamp()::text));
    RETURN v_id;
END
$$;
COMMENT ON FUNCTION guardian.approve_baseline(bigint) IS
    'Make a snapshot the baseline that drift checks compare with (default: snapshot the live schema now). Resolves open ENVIRONMENT_DRIFT alerts, since their drift is now accepted, and records who approved it.';

CREATE FUNCTION guardian.diff_schema(p_snapshot bigint DEFAULT NULL, p_include_cosmetic boolean DEFAULT false)
RETURNS TABLE (kind text, identity text, parent text, change text, cosmetic boolean, detail jsonb)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT d.kind, d.identity, d.parent, d.change, d.cosmetic, d.detail
      FROM guardian.compare_fingerprints((guardian._snapshot(p_snapshot)).fingerprint,
                                         guardian.schema_fingerprint(), p_include_cosmetic) AS d
$$;
COMMENT ON FUNCTION guardian.diff_schema(bigint, boolean) IS
    'How the live schema differs from a snapshot (default: the approved baseline): added means only live, removed only in the snapshot.';

-- >>> sql/40_drift/50_schema_changes.sql
-- Drift as it happens: an event trigger records every schema change (what, who, from where,
-- when) and raises one SCHEMA_CHANGE alert per transaction, so a migration of 200 statements
-- is one alert that counts 200 occurrences, not 200 alerts. GRANT and REVOKE are left to the
-- security events (issue 6), and pg_guardian's own objects and temporary objects are not
-- schema drift. Event triggers do not fire for roles, databases or tablespaces: the role
-- snapshot comparison records those through guardian.record_schema_change(), the same hook
-- any other detector may use.
CREATE TABLE guardian.schema_changes (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at       timestamptz NOT NULL DEFAULT pg_catalog.statement_timestamp(),
    command_tag       text NOT NULL,
    object_type       text,
    schema_name       text,
    object_identity   text,
    source            text NOT NULL,
    role_name         text NOT NULL,
    session_user_name text NOT NULL,
    application_name  text,
    client_addr       inet,
    backend_pid       integer NOT NULL DEFAULT pg_catalog.pg_backend_pid(),
    transaction_id    xid8 NOT NULL DEFAULT pg_catalog.pg_current_xact_id(),
    environment       text NOT NULL DEFAULT guardian.current_environment(),
    alert_id          uuid,
    detail            jsonb NOT NULL DEFAULT '{}'::pg_catalog.jsonb,
    CONSTRAINT schema_changes_source_chk CHECK (source ~ '^[a-z][a-z0-9_ ]{0,40}$')
);
COMMENT ON TABLE guardian.schema_changes IS
    'Every schema change seen by the DDL event trigger (or reported through guardian.record_schema_change): command, object, role, application, client address, time and the SCHEMA_CHANGE alert it raised. Pruned by the drift_check job after the drift.change_retention setting (default 90 days).';
SELECT pg_catalog.pg_extension_config_dump('guardian.schema_changes', '');
CREATE INDEX schema_changes_occurred_at_idx ON guardian.schema_changes (occurred_at);
CREATE INDEX schema_changes_identity_idx ON guardian.schema_changes (object_identity, occurred_at);
CREATE INDEX schema_changes_transaction_idx ON guardian.schema_changes (transaction_id);

-- Severity by environment: the drift.schema_change_severity setting where set (per
-- environment, see guardian.settings), else HIGH in production (CRITICAL for a DROP),
-- LOW in staging and INFO anywhere else.
CREATE FUNCTION guardian._schema_change_severity(p_command_tag text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(
        upper(guardian.setting('drift.schema_change_severity') #>> '{}'),
        CASE guardian.current_environment()
            WHEN 'production' THEN CASE WHEN p_command_tag LIKE 'DROP %' THEN 'CRITICAL' ELSE 'HIGH' END
            WHEN 'staging' THEN 'LOW'
            ELSE 'INFO'
        END)
$$;
COMMENT ON FUNCTION guardian._schema_change_severity(text) IS
    'Internal: severity of a SCHEMA_CHANGE alert in this environment.';

CREATE FUNCTION guardian._record_change(
    p_command_tag text, p_object_type text, p_schema_name text, p_object_identity text,
    p_source text, p_detail jsonb)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_role     text := CASE WHEN current_setting('role') = 'none' THEN SESSION_USER::text
                            ELSE current_setting('role') END;
    v_app      text := nullif(current_setting('application_name', true), '');
    v_txid     xid8 := pg_current_xact_id();
    v_id       bigint;
    v_count    bigint;
    v_changes  jsonb;
    v_alert    uuid;
    v_what     text := btrim(p_command_tag || ' ' || coalesce(p_object_identity, ''));
BEGIN
    INSERT INTO guardian.schema_changes
        (command_tag, object_type, schema_name, object_identity, source, role_name,
         session_user_name, application_name, client_addr, detail)
    VALUES (p_command_tag, p_object_type, p_schema_name, p_object_identity, p_source, v_role,
            SESSION_USER, v_app, inet_client_addr(), coalesce(p_detail, '{}'::jsonb))
    RETURNING id INTO v_id;

    SELECT count(*), jsonb_agg(x.what ORDER BY x.id) FILTER (WHERE x.n <= 20)
      INTO v_count, v_changes
      FROM (SELECT c.id, btrim(c.command_tag || ' ' || coalesce(c.object_identity, '')) AS what,
                   row_number() OVER (ORDER BY c.id) AS n
              FROM guardian.schema_changes AS c
             WHERE c.transaction_id = v_txid) AS x;

    v_alert := guardian.raise_alert(
        'SCHEMA_CHANGE',
        guardian._schema_change_severity(p_command_tag),
        CASE WHEN v_count = 1
             THEN format('schema change in %s: %s by %s%s', guardian.current_environment(), v_what, v_role,
                         coalesce(' via ' || v_app, ''))
             ELSE format('%s schema changes in %s by %s%s, latest: %s', v_count, guardian.current_environment(),
                         v_role, coalesce(' via ' || v_app, ''), v_what) END,
        p_metadata => jsonb_build_object(
            'transaction_id', v_txid::text, 'count', v_count, 'changes', v_changes,
            'role', v_role, 'application', v_app, 'client_addr', host(inet_client_addr()),
            'details', 'SELECT * FROM guardian.schema_changes WHERE transaction_id = ''' || v_txid || ''''),
        p_fingerprint => md5('SCHEMA_CHANGE:' || v_txid::text));
    UPDATE guardian.schema_changes AS c SET alert_id = v_alert WHERE c.id = v_id;
    RETURN v_id;
END
$$;
COMMENT ON FUNCTION guardian._record_change(text, text, text, text, text, jsonb) IS
    'Internal: store one schema change and raise (or count into) the SCHEMA_CHANGE alert of this transaction.';

CREATE FUNCTION guardian.record_schema_change(
    p_command_tag     text,
    p_object_type     text,
    p_object_identity text,
    p_schema_name     text DEFAULT NULL,
    p_source          text DEFAULT 'manual',
    p_detail          jsonb DEFAULT '{}'::pg_catalog.jsonb)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_command_tag IS NULL OR btrim(p_command_tag) = '' THEN
        RAISE EXCEPTION 'command tag must not be empty'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Name what happened the way Postgres does, e.g. SELECT guardian.record_schema_change(''ALTER ROLE'', ''role'', ''app_owner'', p_source => ''role snapshot'');';
    END IF;
    IF p_source IS NULL OR p_source !~ '^[a-z][a-z0-9_ ]{0,40}$' THEN
        RAISE EXCEPTION 'invalid change source %', coalesce(quote_literal(p_source), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use a short lower-case name for the detector, e.g. ''role snapshot''.';
    END IF;
    RETURN guardian._record_change(upper(btrim(p_command_tag)), p_object_type, p_schema_name,
                                   p_object_identity, p_source, p_detail);
END
$$;
COMMENT ON FUNCTION guardian.record_schema_change(text, text, text, text, text, jsonb) IS
    'Record a schema change that no event trigger sees (roles and memberships from the role snapshot comparison, changes found by other detectors) and raise SCHEMA_CHANGE as the DDL event trigger does. Returns the guardian.schema_changes id.';

-- Is this change about pg_guardian itself, or about a temporary object?
CREATE FUNCTION guardian._ignored_change(
    p_object_type text, p_schema_name text, p_object_identity text, p_classid oid, p_objid oid)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p_schema_name IN ('guardian', 'guardian_ext', 'guardian_history')
        OR p_schema_name ~ '^pg_(toast_)?temp'
        OR (p_object_type = 'schema' AND p_object_identity IN ('guardian', 'guardian_ext', 'guardian_history'))
        OR (p_object_type = 'extension' AND p_object_identity = 'pg_guardian')
        OR (p_classid = 'pg_catalog.pg_extension'::regclass AND EXISTS (
                SELECT FROM pg_catalog.pg_extension AS x
                  JOIN pg_catalog.pg_namespace AS n ON n.oid = x.extnamespace
                 WHERE x.oid = p_objid AND n.nspname IN ('guardian', 'guardian_ext', 'guardian_history')))
        OR (p_classid = 'pg_catalog.pg_trigger'::regclass AND EXISTS (
                SELECT FROM pg_catalog.pg_trigger AS t
                  JOIN pg_catalog.pg_proc AS p ON p.oid = t.tgfoid
                 WHERE t.oid = p_objid AND p.pronamespace = 'guardian'::regnamespace))
        OR (p_object_type = 'trigger' AND p_object_identity LIKE 'guardian\_%')
        OR coalesce(p_object_type = 'event trigger' AND p_object_identity LIKE 'guardian\_%', false)
$$;
COMMENT ON FUNCTION guardian._ignored_change(text, text, text, oid, oid) IS
    'Internal: changes to pg_guardian''s own objects and to temporary objects are not schema drift.';

-- Event trigger functions run as the role doing the DDL, which may not write guardian tables:
-- they are SECURITY DEFINER, and no one can call them other than as event triggers. A failure
-- to record must never break the user's DDL: it becomes a warning.
CREATE FUNCTION guardian._capture_ddl()
RETURNS event_trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_cmd      record;
    v_identity text;
BEGIN
    IF guardian.current_mode() = 'off' THEN
        RETURN;
    END IF;
    FOR v_cmd IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
        CONTINUE WHEN v_cmd.in_extension OR v_cmd.command_tag IN ('GRANT', 'REVOKE')
                   OR guardian._ignored_change(v_cmd.object_type, v_cmd.schema_name, v_cmd.object_identity,
                                               v_cmd.classid, v_cmd.objid);
        -- functions are named as the fingerprint names them: public.f(integer,text)
        v_identity := CASE WHEN v_cmd.classid = 'pg_catalog.pg_proc'::regclass
                           THEN v_cmd.objid::regprocedure::text ELSE v_cmd.object_identity END;
        PERFORM guardian._record_change(v_cmd.command_tag, v_cmd.object_type, v_cmd.schema_name,
                                        v_identity, 'ddl_command_end', '{}'::jsonb);
    END LOOP;
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'pg_guardian could not record a schema change: %', SQLERRM
        USING HINT = 'The DDL went through; check guardian.schema_changes and the server log.';
END
$$;
COMMENT ON FUNCTION guardian._capture_ddl() IS
    'Internal event trigger (ddl_command_end): records each schema change and raises SCHEMA_CHANGE.';

CREATE FUNCTION guardian._capture_drop()
RETURNS event_trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_obj      record;
    v_identity text;
BEGIN
    IF guardian.current_mode() = 'off' THEN
        RETURN;
    END IF;
    FOR v_obj IN
        SELECT * FROM pg_event_trigger_dropped_objects() AS d
         WHERE (d.original OR (d.normal AND d.object_type <> 'default value'
                                   AND NOT (d.object_type = 'rule' AND d.object_identity LIKE '"\_RETURN" on %')))
           AND NOT d.is_temporary
    LOOP
        CONTINUE WHEN guardian._ignored_change(v_obj.object_type, v_obj.schema_name, v_obj.object_identity,
                                               NULL, NULL);
        v_identity := v_obj.object_identity;
        IF v_obj.object_type IN ('function', 'procedure', 'aggregate') THEN
            -- the catalog row is gone: rebuild the fingerprint's form from the address
            SELECT quote_ident(v_obj.address_names[1]) || '.' || quote_ident(v_obj.address_names[2]) || '('
                   || coalesce(string_agg(coalesce(to_regtype(a.arg)::text, a.arg), ',' ORDER BY a.n), '') || ')'
              INTO v_identity
              FROM unnest(v_obj.address_args) WITH ORDINALITY AS a(arg, n);
        END IF;
        PERFORM guardian._record_change(tg_tag, v_obj.object_type, v_obj.schema_name, v_identity, 'sql_drop',
                                        CASE WHEN v_obj.original THEN '{}'::jsonb
                                             ELSE '{"cascaded": true}'::jsonb END);
    END LOOP;
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'pg_guardian could not record a dropped object: %', SQLERRM
        USING HINT = 'The DROP went through; check guardian.schema_changes and the server log.';
END
$$;
COMMENT ON FUNCTION guardian._capture_drop() IS
    'Internal event trigger (sql_drop): records dropped objects (and what CASCADE took with them) and raises SCHEMA_CHANGE.';

-- Event triggers need a superuser; the plain-SQL install on managed Postgres may not have one,
-- and then drift is still found by the hourly comparison with the baseline.
DO $capture$
BEGIN
    IF (SELECT r.rolsuper FROM pg_catalog.pg_roles AS r WHERE r.rolname = CURRENT_USER) THEN
        CREATE EVENT TRIGGER guardian_capture_ddl
            ON ddl_command_end
            EXECUTE FUNCTION guardian._capture_ddl();
        CREATE EVENT TRIGGER guardian_capture_drop
            ON sql_drop
            EXECUTE FUNCTION guardian._capture_drop();
    ELSE
        RAISE WARNING 'pg_guardian: % is not a superuser; schema changes are not captured as they happen (the hourly drift check still runs)', CURRENT_USER;
    END IF;
END
$capture$;

-- >>> sql/40_drift/60_check_drift.sql
-- The scheduled drift check: compare the live schema with the approved baseline and raise
-- ENVIRONMENT_DRIFT with the differences. An unchanged drift is the same alert every hour (its
-- fingerprint is the baseline plus the set of differences, so it only counts occurrences); a
-- drift that changes supersedes the old alert with a new one; a schema back in line with the
-- baseline resolves it.
CREATE FUNCTION guardian._drift_severity()
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(
        upper(guardian.setting('drift.environment_drift_severity') #>> '{}'),
        CASE guardian.current_environment() WHEN 'production' THEN 'HIGH' WHEN 'staging' THEN 'MEDIUM' ELSE 'LOW' END)
$$;
COMMENT ON FUNCTION guardian._drift_severity() IS
    'Internal: severity of ENVIRONMENT_DRIFT here (drift.environment_drift_severity setting, else HIGH in production, MEDIUM in staging, LOW elsewhere).';

CREATE FUNCTION guardian._resolve_drift_alerts(p_keep uuid, p_note text)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id    uuid;
    v_count integer := 0;
BEGIN
    FOR v_id IN
        SELECT a.id FROM guardian.monitoring_alerts AS a
         WHERE a.type = 'ENVIRONMENT_DRIFT' AND a.resolved_at IS NULL
           AND a.id IS DISTINCT FROM p_keep
    LOOP
        PERFORM guardian.resolve_alert(v_id, p_note);
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION guardian._resolve_drift_alerts(uuid, text) IS
    'Internal: resolve open ENVIRONMENT_DRIFT alerts other than p_keep.';

CREATE FUNCTION guardian.check_drift()
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_baseline  guardian.schema_snapshots;
    v_live      jsonb;
    v_diffs     jsonb;
    v_count     integer;
    v_cosmetic  integer;
    v_summary   text;
    v_key       text;
    v_alert     uuid;
    v_retention interval;
BEGIN
    BEGIN
        v_retention := coalesce((guardian.setting('drift.change_retention') #>> '{}')::interval, '90 days');
    EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow THEN
        RAISE EXCEPTION 'invalid drift.change_retention setting %', guardian.setting('drift.change_retention')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use an interval, e.g. UPDATE guardian.settings SET value = ''"30 days"'' WHERE key = ''drift.change_retention'';';
    END;
    DELETE FROM guardian.schema_changes AS c WHERE c.occurred_at < now() - v_retention;

    SELECT * INTO v_baseline FROM guardian.schema_snapshots AS s WHERE s.baseline;
    IF NOT FOUND THEN
        RETURN 'no baseline: approve one with SELECT guardian.approve_baseline();';
    END IF;
    v_live := guardian.schema_fingerprint();
    IF v_live->>'checksum' = v_baseline.checksum THEN
        PERFORM guardian._resolve_drift_alerts(NULL, 'schema matches the baseline again');
        RETURN format('no drift from baseline %s', v_baseline.id);
    END IF;

    -- each difference with who last changed the object (or its table) since the baseline
    SELECT count(*) FILTER (WHERE NOT d.cosmetic),
           count(*) FILTER (WHERE d.cosmetic),
           jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
               'kind', d.kind, 'identity', d.identity, 'change', d.change,
               'attributes', (SELECT jsonb_agg(k ORDER BY k) FROM jsonb_object_keys(d.detail) AS k),
               'last_change', (SELECT jsonb_build_object('at', c.occurred_at, 'command', c.command_tag,
                                                         'role', c.role_name, 'application', c.application_name,
                                                         'client_addr', host(c.client_addr))
                                 FROM guardian.schema_changes AS c
                                WHERE c.object_identity IN (d.identity, d.parent)
                                  AND c.occurred_at >= v_baseline.taken_at
                                ORDER BY c.occurred_at DESC, c.id DESC LIMIT 1)))
               ORDER BY d.n) FILTER (WHERE NOT d.cosmetic),
           md5(string_agg(d.kind || ' ' || d.identity || ' ' || d.change || ' ' || md5(d.detail::text), E'\n'
                          ORDER BY d.n) FILTER (WHERE NOT d.cosmetic)),
           string_agg(d.kind || ' ' || d.identity || ' ' || d.change, ', ' ORDER BY d.n)
               FILTER (WHERE NOT d.cosmetic AND d.n <= 5)
      INTO v_count, v_cosmetic, v_diffs, v_key, v_summary
      FROM (SELECT x.*, row_number() OVER () AS n
              FROM guardian.compare_fingerprints(v_baseline.fingerprint, v_live, true) AS x) AS d;

    IF v_count = 0 THEN
        PERFORM guardian._resolve_drift_alerts(NULL, 'only formatting differs from the baseline');
        RETURN format('no drift from baseline %s (%s formatting-only differences)', v_baseline.id, v_cosmetic);
    END IF;

    v_alert := guardian.raise_alert(
        'ENVIRONMENT_DRIFT',
        guardian._drift_severity(),
        format('schema of %s drifted from baseline %s (%s): %s difference%s: %s%s',
               guardian.current_environment(), v_baseline.id, v_baseline.label, v_count,
               CASE WHEN v_count = 1 THEN '' ELSE 's' END, v_summary,
               CASE WHEN v_count > 5 THEN ', ...' ELSE '' END),
        p_record_id => v_baseline.id::text,
        p_metadata => jsonb_build_object(
            'baseline', v_baseline.id, 'baseline_label', v_baseline.label,
            'baseline_checksum', v_baseline.checksum, 'live_checksum', v_live->>'checksum',
            'count', v_count, 'cosmetic', v_cosmetic,
            'differences', (SELECT jsonb_agg(e) FROM (SELECT e FROM jsonb_array_elements(v_diffs) AS e LIMIT 100) AS x),
            'details', format('SELECT * FROM guardian.diff_schema(%s);', v_baseline.id)),
        p_fingerprint => md5('ENVIRONMENT_DRIFT:' || v_baseline.id || ':' || v_key));
    PERFORM guardian._resolve_drift_alerts(v_alert, format('superseded by alert %s (the drift changed)', v_alert));
    RETURN format('%s difference%s from baseline %s', v_count, CASE WHEN v_count = 1 THEN '' ELSE 's' END,
                  v_baseline.id);
END
$$;
COMMENT ON FUNCTION guardian.check_drift() IS
    'Compare the live schema with the approved baseline and raise ENVIRONMENT_DRIFT (once per distinct drift; resolved when the schema is back in line or a new baseline is approved). Run hourly as the drift_check job; also prunes old guardian.schema_changes rows.';

INSERT INTO guardian.jobs (name, schedule, command, description, max_lag, builtin)
VALUES ('drift_check', '0 * * * *', 'SELECT guardian.check_drift()',
        'Compare the live schema with the approved baseline; raise ENVIRONMENT_DRIFT on differences',
        '2 hours', true);

-- >>> sql/50_health/10_sessions.sql
-- Session health (check_postgres: backends, query_time, txn_idle; pgwatch: locks). Each
-- check runs inside guardian.run_checks() as guardian_owner, which is a member of pg_monitor
-- where the installer could arrange it: without it, other roles' sessions are invisible and
-- the checks see less (guardian.check_status says so).
CREATE FUNCTION guardian._stats_visibility_note()
RETURNS SETOF guardian.finding
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (ROW(NULL, 'CHECK_DEGRADED', 'LOW', NULL, NULL,
               format('role %s cannot see other roles'' sessions (not a member of pg_read_all_stats)', CURRENT_USER),
               format('As a superuser run: GRANT pg_monitor TO %I;', CURRENT_USER),
               '{}'::jsonb, NULL)::guardian.finding).*
     WHERE NOT pg_has_role(CURRENT_USER, 'pg_read_all_stats', 'USAGE')
$$;
COMMENT ON FUNCTION guardian._stats_visibility_note() IS
    'Internal: a CHECK_DEGRADED finding when the checking role cannot read all sessions.';

CREATE FUNCTION guardian._check_connections()
RETURNS SETOF guardian.finding
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_warn      numeric := guardian.param('health.connections.warn_pct');
    v_crit      numeric := guardian.param('health.connections.crit_pct');
    v_available integer := current_setting('max_connections')::int
                           - current_setting('superuser_reserved_connections')::int;
    v_used      integer;
    v_pct       numeric;
BEGIN
    RETURN QUERY SELECT * FROM guardian._stats_visibility_note();
    SELECT count(*) INTO v_used FROM pg_catalog.pg_stat_activity AS a WHERE a.backend_type = 'client backend';
    v_pct := round(100.0 * v_used / greatest(v_available, 1), 1);
    IF v_pct >= v_warn THEN
        RETURN QUERY SELECT (ROW('connections', 'CONNECTIONS_HIGH',
            CASE WHEN v_pct >= v_crit THEN 'HIGH' ELSE 'MEDIUM' END, NULL, 'cluster',
            format('%s of %s available connections in use (%s%%, warning at %s%%)', v_used, v_available, v_pct, v_warn),
            'Find idle or leaked sessions in pg_stat_activity, use a connection pooler (PgBouncer), or raise max_connections.',
            jsonb_build_object('used', v_used, 'available', v_available, 'pct', v_pct,
                               'warn_pct', v_warn, 'crit_pct', v_crit),
            'cluster')::guardian.finding).*;
    END IF;
END
$$;
COMMENT ON FUNCTION guardian._check_connections() IS
    'Check connections: client connections against max_connections minus the superuser reserve (CONNECTIONS_HIGH).';

CREATE FUNCTION guardian._check_long_running_queries()
RETURNS SETOF guardian.finding
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_warn numeric := guardian.param('health.long_running_queries.warn_seconds');
    v_crit numeric := guardian.param('health.long_running_queries.crit_seconds');
BEGIN
    RETURN QUERY SELECT * FROM guardian._stats_visibility_note();
    RETURN QUERY
    SELECT (ROW('long_running_queries', 'LONG_RUNNING_QUERY',
               CASE WHEN s.secs >= v_crit THEN 'HIGH' ELSE 'MEDIUM' END, NULL, s.pid::text,
               format('query of %s (pid %s, %s) running for %s s: %s', coalesce(s.usename::text, '?'), s.pid,
                      coalesce(nullif(s.application_name, ''), 'no application_name'), round(s.secs),
                      left(regexp_replace(s.query, '\s+', ' ', 'g'), 200)),
               format('Investigate with EXPLAIN; to stop it: SELECT pg_cancel_backend(%s); consider statement_timeout for role %s.',
                      s.pid, coalesce(s.usename::text, '?')),
               jsonb_build_object('pid', s.pid, 'role', s.usename, 'application_name', s.application_name,
                                  'client_addr', host(s.client_addr), 'seconds', round(s.secs),
                                  'query_start', s.query_start, 'warn_seconds', v_warn, 'crit_seconds', v_crit),
               format('%s:%s:%s', s.pid, extract(epoch FROM s.backend_start), extract(epoch FROM s.query_start)))::guardian.finding).*
      FROM (SELECT a.*, extract(epoch FROM now() - a.query_start) AS secs
              FROM pg_catalog.pg_stat_activity AS a
             WHERE a.datname = current_database()
               AND a.backend_type = 'client backend'
               AND a.state = 'active'
               AND a.pid <> pg_backend_pid()) AS s
     WHERE s.secs >= v_warn;
END
$$;
COMMENT ON FUNCTION guardian._check_long_running_queries() IS
    'Check long_running_queries: active queries in this database running longer than the warning threshold (LONG_RUNNING_QUERY).';

CREATE FUNCTION guardian._check_idle_in_transaction()
RETURNS SETOF guardian.finding
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_warn numeric := guardian.param('health.idle_in_transaction.warn_seconds');
    v_crit numeric := guardian.param('health.idle_in_transaction.crit_seconds');
BEGIN
    RETURN QUERY SELECT * FROM guardian._stats_visibility_note();
    RETURN QUERY
    SELECT (ROW('idle_in_transaction', 'IDLE_IN_TRANSACTION',
               CASE WHEN s.secs >= v_crit THEN 'HIGH' ELSE 'MEDIUM' END, NULL, s.pid::text,
               format('session of %s (pid %s, %s) %s for %s s; it holds locks and stops vacuum from cleaning up',
                      coalesce(s.usename::text, '?'), s.pid,
                      coalesce(nullif(s.application_name, ''), 'no application_name'), s.state, round(s.secs)),
               format('Fix the application so it commits or rolls back; to end it now: SELECT pg_terminate_backend(%s); set idle_in_transaction_session_timeout as a safety net.', s.pid),
               jsonb_build_object('pid', s.pid, 'role', s.usename, 'application_name', s.application_name,
                                  'client_addr', host(s.client_addr), 'seconds', round(s.secs),
                                  'xact_start', s.xact_start, 'warn_seconds', v_warn, 'crit_seconds', v_crit),
               format('%s:%s:%s', s.pid, extract(epoch FROM s.backend_start), extract(epoch FROM s.xact_start)))::guardian.finding).*
      FROM (SELECT a.*, extract(epoch FROM now() - a.state_change) AS secs
              FROM pg_catalog.pg_stat_activity AS a
             WHERE a.datname = current_database()
               AND a.backend_type = 'client backend'
               AND a.state IN ('idle in transaction', 'idle in transaction (aborted)')
               AND a.pid <> pg_backend_pid()) AS s
     WHERE s.secs >= v_warn;
END
$$;
COMMENT ON FUNCTION guardian._check_idle_in_transaction() IS
    'Check idle_in_transaction: sessions in this database idle inside a transaction longer than the warning threshold (IDLE_IN_TRANSACTION).';

CREATE FUNCTION guardian._check_lock_waits()
RETURNS SETOF guardian.finding
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_warn numeric := guardian.param('health.lock_waits.warn_seconds');
    v_crit numeric := guardian.param('health.lock_waits.crit_seconds');
BEGIN
    RETURN QUERY SELECT * FROM guardian._stats_visibility_note();
    RETURN QUERY
    SELECT (ROW('lock_waits', 'LOCK_WAIT',
               CASE WHEN w.secs >= v_crit THEN 'HIGH' ELSE 'MEDIUM' END, w.relation, w.pid::text,
               format('session of %s (pid %s) has waited %s s for a %s on %s, blocked by pid %s: %s',
                      coalesce(w.usename::text, '?'), w.pid, round(w.secs), w.mode,
                      coalesce(w.relation, w.locktype), array_to_string(w.blockers, ', '),
                      left(regexp_replace(w.query, '\s+', ' ', 'g'), 200)),
               format('Look at what the blocking session does (SELECT * FROM pg_stat_activity WHERE pid IN (%s)); end it with pg_terminate_backend() if it is stuck; set lock_timeout for migrations.',
                      array_to_string(w.blockers, ', ')),
               jsonb_build_object('pid', w.pid, 'role', w.usename, 'blocking_pids', to_jsonb(w.blockers),
                                  'lock_mode', w.mode, 'locktype', w.locktype, 'relation', w.relation,
                                  'seconds', round(w.secs), 'warn_seconds', v_warn, 'crit_seconds', v_crit),
               format('%s:%s:%s', w.pid, extract(epoch FROM w.backend_start), extract(epoch FROM w.query_start)))::guardian.finding).*
      FROM (SELECT a.pid, a.usename, a.query, a.backend_start, a.query_start, l.mode, l.locktype,
                   l.relation::regclass::text AS relation, pg_blocking_pids(a.pid) AS blockers,
                   extract(epoch FROM now() - coalesce(l.waitstart, a.state_change)) AS secs
              FROM pg_catalog.pg_stat_activity AS a
              JOIN pg_catalog.pg_locks AS l ON l.pid = a.pid AND NOT l.granted
             WHERE a.datname = current_database()
               AND a.pid <> pg_backend_pid()) AS w
     WHERE w.secs >= v_warn AND cardinality(w.blockers) > 0;
END
$$;
COMMENT ON FUNCTION guardian._check_lock_waits() IS
    'Check lock_waits: sessions in this database blocked on a lock longer than the warning threshold, with the blocking pids (LOCK_WAIT).';

-- >>> sql/50_health/20_replication.sql
-- Replication health (check_postgres: replicate_row, replication_slots; pgwatch: replication).
CREATE FUNCTION guardian._check_replication_lag()
RETURNS SETOF guardian.finding
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_warn       numeric := guardian.param('health.replication_lag.warn_seconds');
    v_crit       numeric := guardian.param('health.replication_lag.crit_seconds');
    v_warn_bytes numeric := guardian.param('health.replication_lag.warn_bytes');
BEGIN
    IF pg_is_in_recovery() THEN
        RETURN;
    END IF;
    RETURN QUERY SELECT * FROM guardian._stats_visibility_note();
    RETURN QUERY
    SELECT (ROW('replication_lag', 'REPLICATION_LAG',
               CASE WHEN r.secs >= v_crit THEN 'HIGH' ELSE 'MEDIUM' END, NULL, r.name,
               format('standby %s (%s) replays %s s / %s behind the primary (state %s)', r.name,
                      coalesce(r.addr, 'local'), round(coalesce(r.secs, 0)), pg_size_pretty(r.bytes), r.state),
               'Check the standby''s disk and CPU, the network, and long queries on the standby (hot_standby_feedback, max_standby_streaming_delay).',
               jsonb_build_object('application_name', r.name, 'client_addr', r.addr, 'state', r.state,
                                  'replay_lag_seconds', round(coalesce(r.secs, 0)), 'lag_bytes', r.bytes,
                                  'warn_seconds', v_warn, 'crit_seconds', v_crit, 'warn_bytes', v_warn_bytes),
               r.name)::guardian.finding).*
      FROM (SELECT coalesce(nullif(s.application_name, ''), host(s.client_addr), s.pid::text) AS name,
                   host(s.client_addr) AS addr, s.state,
                   extract(epoch FROM s.replay_lag) AS secs,
                   pg_wal_lsn_diff(pg_current_wal_lsn(), s.replay_lsn) AS bytes
              FROM pg_catalog.pg_stat_replication AS s) AS r
     WHERE coalesce(r.secs, 0) >= v_warn OR coalesce(r.bytes, 0) >= v_warn_bytes;
END
$$;
COMMENT ON FUNCTION guardian._check_replication_lag() IS
    'Check replication_lag: standbys whose replay lags by more than the warning time or bytes (REPLICATION_LAG).';

CREATE FUNCTION guardian._check_replication_slots()
RETURNS SETOF guardian.finding
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_warn numeric := guardian.param('health.replication_slots.warn_bytes');
    v_crit numeric := guardian.param('health.replication_slots.crit_bytes');
BEGIN
    RETURN QUERY
    SELECT (ROW('replication_slots', 'REPLICATION_SLOT_INACTIVE',
               CASE WHEN s.retained >= v_crit OR s.wal_status IN ('unreserved', 'lost') THEN 'HIGH' ELSE 'MEDIUM' END,
               NULL, s.slot_name::text,
               format('replication slot %s (%s%s) is inactive and retains %s of WAL (wal_status %s)',
                      s.slot_name, s.slot_type, coalesce(', database ' || s.database, ''),
                      pg_size_pretty(coalesce(s.retained, 0)), coalesce(s.wal_status, 'unknown')),
               format('Reconnect its consumer, or drop the slot if it is abandoned: SELECT pg_drop_replication_slot(%L); consider max_slot_wal_keep_size.', s.slot_name),
               jsonb_build_object('slot_name', s.slot_name, 'slot_type', s.slot_type, 'database', s.database,
                                  'retained_bytes', s.retained, 'wal_status', s.wal_status,
                                  'warn_bytes', v_warn, 'crit_bytes', v_crit),
               s.slot_name::text)::guardian.finding).*
      FROM (SELECT r.*, CASE WHEN pg_is_in_recovery() THEN NULL
                             ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), r.restart_lsn) END AS retained
              FROM pg_catalog.pg_replication_slots AS r
             WHERE NOT r.active) AS s
     WHERE coalesce(s.retained, 0) >= v_warn OR s.wal_status IN ('unreserved', 'lost');
END
$$;
COMMENT ON FUNCTION guardian._check_replication_slots() IS
    'Check replication_slots: inactive slots retaining more WAL than the warning threshold, or already losing it (REPLICATION_SLOT_INACTIVE).';

-- >>> sql/50_health/30_storage.sql
-- Storage and maintenance health (check_postgres: txn_wraparound, hitratio, bloat,
-- database_size, sequence; splinter: invalid indexes).
CREATE FUNCTION guardian._check_xid_wraparound()
RETURNS SETOF guardian.finding
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_warn numeric := guardian.param('health.xid_wraparound.warn_age');
    v_crit numeric := guardian.param('health.xid_wraparound.crit_age');
BEGIN
    RETURN QUERY
    SELECT (ROW('xid_wraparound', 'XID_WRAPAROUND',
               CASE WHEN d.age >= v_crit THEN 'CRITICAL' ELSE 'HIGH' END, NULL, d.datname::text,
               format('database %s is %s transactions from its oldest unfrozen %s (%s%% of the way to wraparound shutdown)',
                      d.datname, d.age, d.kind, round(100.0 * d.age / 2147483647, 1)),
               format('Run VACUUM (FREEZE, VERBOSE) in database %s, find what holds vacuum back (long transactions, prepared transactions, replication slots), and check autovacuum is keeping up.', d.datname),
               jsonb_build_object('database', d.datname, 'age', d.age, 'kind', d.kind,
                                  'warn_age', v_warn, 'crit_age', v_crit),
               d.datname::text)::guardian.finding).*
      FROM (SELECT DISTINCT ON (x.datname) x.datname, x.age, x.kind
              FROM (SELECT db.datname, age(db.datfrozenxid) AS age, 'transaction id' AS kind
                      FROM pg_catalog.pg_database AS db
                    UNION ALL
                    SELECT db.datname, mxid_age(db.datminmxid), 'multixact id'
                      FROM pg_catalog.pg_database AS db) AS x
             ORDER BY x.datname, x.age DESC) AS d
     WHERE d.age >= v_warn;
END
$$;
COMMENT ON FUNCTION guardian._check_xid_wraparound() IS
    'Check xid_wraparound: databases whose transaction or multixact age passed the warning threshold (XID_WRAPAROUND).';

CREATE FUNCTION guardian._check_cache_hit_ratio()
RETURNS SETOF guardian.finding
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_warn       numeric := guardian.param('health.cache_hit_ratio.warn_below_pct');
    v_crit       numeric := guardian.param('health.cache_hit_ratio.crit_below_pct');
    v_min_blocks numeric := guardian.param('health.cache_hit_ratio.min_blocks');
    v_hit        bigint;
    v_read       bigint;
    v_pct        numeric;
BEGIN
    SELECT d.blks_hit, d.blks_read INTO v_hit, v_read
      FROM pg_catalog.pg_stat_database AS d WHERE d.datname = current_database();
    IF coalesce(v_hit + v_read, 0) < greatest(v_min_blocks, 1) THEN
        RETURN;
    END IF;
    v_pct := round(100.0 * v_hit / (v_hit + v_read), 2);
    IF v_pct < v_warn THEN
        RETURN QUERY SELECT (ROW('cache_hit_ratio', 'CACHE_HIT_RATIO_LOW',
            CASE WHEN v_pct < v_crit THEN 'HIGH' ELSE 'MEDIUM' END, NULL, current_database(),
            format('cache hit ratio of database %s is %s%% (warning below %s%%) over %s block reads',
                   current_database(), v_pct, v_warn, v_hit + v_read),
            'The working set does not fit in shared_buffers: look for sequential scans on large tables (pg_stat_user_tables.seq_tup_read), missing indexes, or raise shared_buffers.',
            jsonb_build_object('hit_pct', v_pct, 'blks_hit', v_hit, 'blks_read', v_read,
                               'warn_below_pct', v_warn, 'crit_below_pct', v_crit),
            current_database())::guardian.finding).*;
    END IF;
END
$$;
COMMENT ON FUNCTION guardian._check_cache_hit_ratio() IS
    'Check cache_hit_ratio: this database''s buffer cache hit ratio below the warning threshold, once enough blocks were read (CACHE_HIT_RATIO_LOW).';

CREATE FUNCTION guardian._check_dead_tuples()
RETURNS SETOF guardian.finding
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_min  numeric := guardian.param('health.dead_tuples.min_dead_tuples');
    v_warn numeric := guardian.param('health.dead_tuples.warn_pct');
    v_crit numeric := guardian.param('health.dead_tuples.crit_pct');
BEGIN
    RETURN QUERY
    SELECT (ROW('dead_tuples', 'DEAD_TUPLES',
               CASE WHEN t.pct >= v_crit THEN 'HIGH' ELSE 'MEDIUM' END, t.relname, NULL,
               format('table %s has %s dead rows (%s%% of its rows; last vacuum %s)', t.relname,
                      t.n_dead_tup, t.pct, coalesce(t.last_vac::text, 'never')),
               format('Run VACUUM (VERBOSE, ANALYZE) %s; if it keeps happening, lower autovacuum_vacuum_scale_factor for the table and look for long transactions holding vacuum back.', t.relname),
               jsonb_build_object('table', t.relname, 'dead_tuples', t.n_dead_tup, 'live_tuples', t.n_live_tup,
                                  'dead_pct', t.pct, 'last_vacuum', t.last_vac,
                                  'min_dead_tuples', v_min, 'warn_pct', v_warn, 'crit_pct', v_crit),
               t.relname)::guardian.finding).*
      FROM (SELECT s.relid::regclass::text AS relname, s.n_dead_tup, s.n_live_tup,
                   round(100.0 * s.n_dead_tup / greatest(s.n_live_tup + s.n_dead_tup, 1), 1) AS pct,
                   greatest(s.last_vacuum, s.last_autovacuum) AS last_vac
              FROM pg_catalog.pg_stat_user_tables AS s
             WHERE s.n_dead_tup >= v_min) AS t
     WHERE t.pct >= v_warn;
END
$$;
COMMENT ON FUNCTION guardian._check_dead_tuples() IS
    'Check dead_tuples: tables with at least min_dead_tuples dead rows making up more than the warning share (DEAD_TUPLES).';

-- Growth is measured against size snapshots taken at most every snapshot_interval seconds
-- and compared with the newest snapshot at least window_seconds old (the oldest one while
-- the history is younger than the window).
CREATE TABLE guardian.size_history (
    taken_at   timestamptz NOT NULL,
    kind       text NOT NULL,
    object_oid oid NOT NULL,
    name       text NOT NULL,
    bytes      bigint NOT NULL,
    CONSTRAINT size_history_pkey PRIMARY KEY (kind, object_oid, taken_at),
    CONSTRAINT size_history_kind_chk CHECK (kind IN ('database', 'table'))
);
COMMENT ON TABLE guardian.size_history IS
    'Sizes of this database and its tables over time, for the database_growth and table_growth checks; pruned by them past the window.';
SELECT pg_catalog.pg_extension_config_dump('guardian.size_history', '');

CREATE FUNCTION guardian._size_growth(p_kind text)
RETURNS SETOF guardian.finding
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_check    text := p_kind || '_growth';
    v_window   numeric := guardian.param('health.' || v_check || '.window_seconds');
    v_interval numeric := guardian.param('health.' || v_check || '.snapshot_interval_seconds');
    v_warn     numeric := guardian.param('health.' || v_check || '.warn_pct');
    v_crit     numeric := guardian.param('health.' || v_check || '.crit_pct');
    v_min      numeric := guardian.param('health.' || v_check || '.min_bytes');
BEGIN
    IF NOT EXISTS (SELECT FROM guardian.size_history AS h
                    WHERE h.kind = p_kind AND h.taken_at > now() - make_interval(secs => v_interval)) THEN
        IF p_kind = 'database' THEN
            INSERT INTO guardian.size_history (taken_at, kind, object_oid, name, bytes)
            SELECT now(), 'database', d.oid, d.datname, pg_database_size(d.oid)
              FROM pg_catalog.pg_database AS d WHERE d.datname = current_database();
        ELSE
            INSERT INTO guardian.size_history (taken_at, kind, object_oid, name, bytes)
            SELECT now(), 'table', c.oid, c.oid::regclass::text, pg_total_relation_size(c.oid)
              FROM pg_catalog.pg_class AS c
             WHERE c.relkind IN ('r', 'm')
               AND c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
               AND c.relnamespace <> 'pg_toast'::regnamespace
               AND NOT c.relpersistence = 't';
        END IF;
    END IF;
    DELETE FROM guardian.size_history AS h
     WHERE h.kind = p_kind
       AND h.taken_at < now() - make_interval(secs => v_window + v_interval) - interval '1 day';

    RETURN QUERY
    SELECT (ROW(v_check, upper(v_check),
               CASE WHEN g.pct IS NULL OR g.pct >= v_crit THEN 'HIGH' ELSE 'MEDIUM' END,
               CASE p_kind WHEN 'table' THEN g.name END, CASE p_kind WHEN 'database' THEN g.name END,
               format('%s %s grew by %s (%s) since %s: %s -> %s', p_kind, g.name,
                      pg_size_pretty(g.now_bytes - g.base_bytes),
                      coalesce(g.pct || '%', 'from empty'), g.base_at::timestamptz(0),
                      pg_size_pretty(g.base_bytes), pg_size_pretty(g.now_bytes)),
               CASE p_kind WHEN 'table'
                    THEN format('Check what writes to %s (bulk imports, a job gone wrong, missing retention) and whether the growth is expected.', g.name)
                    ELSE 'Find the tables that grew (table_growth check, pg_total_relation_size) and check disk headroom.' END,
               jsonb_build_object(p_kind, g.name, 'bytes', g.now_bytes, 'baseline_bytes', g.base_bytes,
                                  'baseline_at', g.base_at, 'growth_bytes', g.now_bytes - g.base_bytes,
                                  'growth_pct', g.pct, 'warn_pct', v_warn, 'crit_pct', v_crit, 'min_bytes', v_min),
               g.object_oid::text)::guardian.finding).*
      FROM (SELECT cur.object_oid, cur.name, cur.bytes AS now_bytes, base.bytes AS base_bytes, base.taken_at AS base_at,
                   CASE WHEN base.bytes > 0 THEN round(100.0 * (cur.bytes - base.bytes) / base.bytes, 1) END AS pct
              FROM guardian.size_history AS cur
              CROSS JOIN LATERAL (
                    SELECT b.bytes, b.taken_at FROM guardian.size_history AS b
                     WHERE b.kind = p_kind AND b.object_oid = cur.object_oid AND b.taken_at < cur.taken_at
                     ORDER BY b.taken_at <= cur.taken_at - make_interval(secs => v_window) DESC,
                              CASE WHEN b.taken_at <= cur.taken_at - make_interval(secs => v_window)
                                   THEN b.taken_at END DESC,
                              b.taken_at
                     LIMIT 1) AS base
             WHERE cur.kind = p_kind
               AND cur.taken_at = (SELECT max(m.taken_at) FROM guardian.size_history AS m WHERE m.kind = p_kind)) AS g
     WHERE g.now_bytes - g.base_bytes >= greatest(v_min, 1)
       AND (g.pct IS NULL OR g.pct >= v_warn);
END
$$;
COMMENT ON FUNCTION guardian._size_growth(text) IS
    'Internal: snapshot sizes (database or table) at most every snapshot interval and report growth past the thresholds against the baseline one window earlier.';

CREATE FUNCTION guardian._check_database_growth()
RETURNS SETOF guardian.finding
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM guardian._size_growth('database')
$$;
COMMENT ON FUNCTION guardian._check_database_growth() IS
    'Check database_growth: this database grew by more than min_bytes and warn_pct within the window (DATABASE_GROWTH).';

CREATE FUNCTION guardian._check_table_growth()
RETURNS SETOF guardian.finding
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM guardian._size_growth('table')
$$;
COMMENT ON FUNCTION guardian._check_table_growth() IS
    'Check table_growth: tables that grew by more than min_bytes and warn_pct within the window (TABLE_GROWTH).';

CREATE FUNCTION guardian._check_sequences()
RETURNS SETOF guardian.finding
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_warn       numeric := guardian.param('health.sequences.warn_pct');
    v_crit       numeric := guardian.param('health.sequences.crit_pct');
    v_unreadable text[];
BEGIN
    -- A sequence's position is only visible with SELECT or USAGE on it; say which are hidden.
    SELECT array_agg(c.oid::regclass::text ORDER BY 1) INTO v_unreadable
      FROM pg_catalog.pg_class AS c
     WHERE c.relkind = 'S'
       AND c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
       AND CASE WHEN c.relkind = 'S'
                THEN NOT has_sequence_privilege(c.oid, 'SELECT') AND NOT has_sequence_privilege(c.oid, 'USAGE')
                ELSE false END;
    IF v_unreadable IS NOT NULL THEN
        RETURN QUERY SELECT (ROW(NULL, 'CHECK_DEGRADED', 'LOW', NULL, NULL,
            format('%s sequences are not readable by %s and were not checked: %s', cardinality(v_unreadable),
                   CURRENT_USER, array_to_string(v_unreadable[1:10], ', ')),
            format('GRANT SELECT ON SEQUENCE %s TO %I; (or GRANT SELECT ON ALL SEQUENCES IN SCHEMA ... TO %I)',
                   array_to_string(v_unreadable[1:10], ', '), CURRENT_USER, CURRENT_USER),
            jsonb_build_object('unreadable', to_jsonb(v_unreadable)), NULL)::guardian.finding).*;
    END IF;
    -- The limit is the sequence's own bound or, when it feeds a narrower column (a bigint
    -- sequence behind an integer id), that column type's.
    RETURN QUERY
    SELECT (ROW('sequences', 'SEQUENCE_EXHAUSTION',
               CASE WHEN q.pct >= v_crit THEN 'HIGH' ELSE 'MEDIUM' END, q.seq, NULL,
               format('sequence %s has used %s%% of its range (%s of %s%s)', q.seq, q.pct, q.last_value, q.limit_value,
                      CASE WHEN q.col IS NOT NULL AND q.limit_value < q.seq_max THEN ', limited by column ' || q.col END),
               format('Plan the move before it runs out: ALTER SEQUENCE %s AS bigint MAXVALUE ... and ALTER TABLE ... ALTER COLUMN ... TYPE bigint for its column%s.',
                      q.seq, coalesce(' ' || q.col, '')),
               jsonb_build_object('sequence', q.seq, 'last_value', q.last_value, 'limit', q.limit_value,
                                  'column', q.col, 'used_pct', q.pct, 'warn_pct', v_warn, 'crit_pct', v_crit),
               q.seq)::guardian.finding).*
      FROM (SELECT r.*, round(100.0 * abs(r.last_value - r.start_from) / nullif(abs(r.limit_value - r.start_from), 0), 2) AS pct
              FROM (SELECT c.oid::regclass::text AS seq, s.last_value, s.max_value AS seq_max,
                           CASE WHEN s.increment_by > 0 THEN s.min_value ELSE s.max_value END AS start_from,
                           CASE WHEN s.increment_by > 0
                                THEN least(s.max_value, CASE a.atttypid WHEN 'int4'::regtype THEN 2147483647
                                                                         WHEN 'int2'::regtype THEN 32767 END)
                                ELSE greatest(s.min_value, CASE a.atttypid WHEN 'int4'::regtype THEN -2147483648
                                                                            WHEN 'int2'::regtype THEN -32768 END) END AS limit_value,
                           CASE WHEN a.attname IS NOT NULL THEN format('%s.%I', d.refobjid::regclass, a.attname) END AS col
                      FROM pg_catalog.pg_sequences AS s
                      JOIN pg_catalog.pg_class AS c
                        ON c.relname = s.sequencename AND c.relnamespace = s.schemaname::regnamespace
                      LEFT JOIN pg_catalog.pg_depend AS d
                        ON d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid
                       AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.deptype IN ('a', 'i')
                      LEFT JOIN pg_catalog.pg_attribute AS a
                        ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                     WHERE s.last_value IS NOT NULL AND NOT s.cycle) AS r) AS q
     WHERE q.pct >= v_warn;
END
$$;
COMMENT ON FUNCTION guardian._check_sequences() IS
    'Check sequences: sequences that used more than the warning share of their range, bounded by the column type they feed (SEQUENCE_EXHAUSTION).';

CREATE FUNCTION guardian._check_invalid_indexes()
RETURNS SETOF guardian.finding
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (ROW('invalid_indexes', 'INVALID_INDEX', 'MEDIUM', i.indrelid::regclass::text, i.indexrelid::regclass::text,
               format('index %s on %s is invalid (a failed CREATE INDEX CONCURRENTLY or REINDEX): it is maintained on every write but never used',
                      i.indexrelid::regclass, i.indrelid::regclass),
               format('Rebuild it with REINDEX INDEX CONCURRENTLY %s; or drop it with DROP INDEX CONCURRENTLY %s;',
                      i.indexrelid::regclass, i.indexrelid::regclass),
               jsonb_build_object('index', i.indexrelid::regclass::text, 'table', i.indrelid::regclass::text),
               i.indexrelid::regclass::text)::guardian.finding).*
      FROM pg_catalog.pg_index AS i
     WHERE NOT i.indisvalid
       AND NOT EXISTS (SELECT FROM pg_catalog.pg_stat_progress_create_index AS p
                        WHERE p.index_relid = i.indexrelid OR p.relid = i.indrelid)
$$;
COMMENT ON FUNCTION guardian._check_invalid_indexes() IS
    'Check invalid_indexes: indexes left invalid by a failed concurrent build, except those being built right now (INVALID_INDEX).';

-- >>> sql/50_health/90_register.sql
-- Defaults follow check_postgres and pgwatch where they have one; every value can be
-- changed per environment with guardian.set_param(name, value[, environment]).
INSERT INTO guardian.parameters (name, default_value, min_value, max_value, unit, description, not_above) VALUES
    ('health.connections.crit_pct', 95, 1, 100, 'percent', 'Client connections, share of max_connections (less the superuser reserve): high', NULL),
    ('health.connections.warn_pct', 80, 1, 100, 'percent', 'Client connections, share of max_connections (less the superuser reserve): warning', 'health.connections.crit_pct'),
    ('health.long_running_queries.crit_seconds', 1800, 1, 604800, 'seconds', 'Active query running longer than this: high', NULL),
    ('health.long_running_queries.warn_seconds', 300, 1, 604800, 'seconds', 'Active query running longer than this: warning', 'health.long_running_queries.crit_seconds'),
    ('health.idle_in_transaction.crit_seconds', 1800, 1, 604800, 'seconds', 'Session idle inside a transaction longer than this: high', NULL),
    ('health.idle_in_transaction.warn_seconds', 300, 1, 604800, 'seconds', 'Session idle inside a transaction longer than this: warning', 'health.idle_in_transaction.crit_seconds'),
    ('health.lock_waits.crit_seconds', 300, 1, 604800, 'seconds', 'Session blocked on a lock longer than this: high', NULL),
    ('health.lock_waits.warn_seconds', 30, 1, 604800, 'seconds', 'Session blocked on a lock longer than this: warning', 'health.lock_waits.crit_seconds'),
    ('health.replication_lag.crit_seconds', 300, 1, 604800, 'seconds', 'Standby replay lag longer than this: high', NULL),
    ('health.replication_lag.warn_seconds', 60, 1, 604800, 'seconds', 'Standby replay lag longer than this: warning', 'health.replication_lag.crit_seconds'),
    ('health.replication_lag.warn_bytes', 1073741824, 1, 1099511627776, 'bytes', 'Standby replay behind by more WAL than this: warning', NULL),
    ('health.replication_slots.crit_bytes', 10737418240, 0, 1099511627776, 'bytes', 'Inactive slot retaining more WAL than this: high', NULL),
    ('health.replication_slots.warn_bytes', 134217728, 0, 1099511627776, 'bytes', 'Inactive slot retaining more WAL than this: warning', 'health.replication_slots.crit_bytes'),
    ('health.xid_wraparound.crit_age', 1500000000, 1, 2147483647, 'transactions', 'Database transaction/multixact age (datfrozenxid) above this: critical', NULL),
    ('health.xid_wraparound.warn_age', 1200000000, 1, 2147483647, 'transactions', 'Database transaction/multixact age (datfrozenxid) above this: high', 'health.xid_wraparound.crit_age'),
    ('health.cache_hit_ratio.warn_below_pct', 90, 0, 100, 'percent', 'Buffer cache hit ratio of this database below this: warning', NULL),
    ('health.cache_hit_ratio.crit_below_pct', 80, 0, 100, 'percent', 'Buffer cache hit ratio of this database below this: high', 'health.cache_hit_ratio.warn_below_pct'),
    ('health.cache_hit_ratio.min_blocks', 100000, 0, 1e15, 'blocks', 'Judge the hit ratio only after this many block accesses', NULL),
    ('health.dead_tuples.min_dead_tuples', 10000, 0, 1e15, 'rows', 'Ignore tables with fewer dead rows than this', NULL),
    ('health.dead_tuples.crit_pct', 50, 1, 100, 'percent', 'Dead rows, share of all rows of a table: high', NULL),
    ('health.dead_tuples.warn_pct', 20, 1, 100, 'percent', 'Dead rows, share of all rows of a table: warning', 'health.dead_tuples.crit_pct'),
    ('health.database_growth.window_seconds', 86400, 0, 31536000, 'seconds', 'Database growth is measured over this window', NULL),
    ('health.database_growth.snapshot_interval_seconds', 3600, 0, 86400, 'seconds', 'Take a database size snapshot at most this often', NULL),
    ('health.database_growth.crit_pct', 100, 1, 1000000, 'percent', 'Database growth within the window: high', NULL),
    ('health.database_growth.warn_pct', 25, 1, 1000000, 'percent', 'Database growth within the window: warning', 'health.database_growth.crit_pct'),
    ('health.database_growth.min_bytes', 1073741824, 0, 1e15, 'bytes', 'Ignore database growth smaller than this', NULL),
    ('health.table_growth.window_seconds', 86400, 0, 31536000, 'seconds', 'Table growth is measured over this window', NULL),
    ('health.table_growth.snapshot_interval_seconds', 3600, 0, 86400, 'seconds', 'Take table size snapshots at most this often', NULL),
    ('health.table_growth.crit_pct', 900, 1, 1000000, 'percent', 'Table growth within the window: high (900% = ten times the size)', NULL),
    ('health.table_growth.warn_pct', 100, 1, 1000000, 'percent', 'Table growth within the window: warning', 'health.table_growth.crit_pct'),
    ('health.table_growth.min_bytes', 104857600, 0, 1e15, 'bytes', 'Ignore table growth smaller than this', NULL),
    ('health.sequences.crit_pct', 90, 1, 100, 'percent', 'Share of a sequence''s range used: high', NULL),
    ('health.sequences.warn_pct', 75, 1, 100, 'percent', 'Share of a sequence''s range used: warning', 'health.sequences.crit_pct');

INSERT INTO guardian.checks (name, category, function, description, is_condition, builtin) VALUES
    ('connections', 'health', 'guardian._check_connections', 'Client connections against max_connections (CONNECTIONS_HIGH)', true, true),
    ('long_running_queries', 'health', 'guardian._check_long_running_queries', 'Active queries running too long (LONG_RUNNING_QUERY)', true, true),
    ('idle_in_transaction', 'health', 'guardian._check_idle_in_transaction', 'Sessions idle inside a transaction (IDLE_IN_TRANSACTION)', true, true),
    ('lock_waits', 'health', 'guardian._check_lock_waits', 'Sessions blocked on locks, with their blockers (LOCK_WAIT)', true, true),
    ('replication_lag', 'health', 'guardian._check_replication_lag', 'Standbys lagging behind (REPLICATION_LAG)', true, true),
    ('replication_slots', 'health', 'guardian._check_replication_slots', 'Inactive replication slots retaining WAL (REPLICATION_SLOT_INACTIVE)', true, true),
    ('xid_wraparound', 'health', 'guardian._check_xid_wraparound', 'Transaction ID and multixact wraparound age (XID_WRAPAROUND)', true, true),
    ('cache_hit_ratio', 'health', 'guardian._check_cache_hit_ratio', 'Buffer cache hit ratio of this database (CACHE_HIT_RATIO_LOW)', true, true),
    ('dead_tuples', 'health', 'guardian._check_dead_tuples', 'Tables with many dead rows (DEAD_TUPLES)', true, true),
    ('database_growth', 'health', 'guardian._check_database_growth', 'Database size growth within a window (DATABASE_GROWTH)', true, true),
    ('table_growth', 'health', 'guardian._check_table_growth', 'Table size growth within a window (TABLE_GROWTH)', true, true),
    ('sequences', 'health', 'guardian._check_sequences', 'Sequences near exhaustion, bounded by their column type (SEQUENCE_EXHAUSTION)', true, true),
    ('invalid_indexes', 'health', 'guardian._check_invalid_indexes', 'Indexes left invalid by a failed concurrent build (INVALID_INDEX)', true, true);

INSERT INTO guardian.jobs (name, schedule, command, description, max_lag, builtin) VALUES
    ('health_checks', '*/5 * * * *', 'SELECT guardian.run_checks_job(''health'')',
     'Database health checks: connections, long queries, idle transactions, lock waits, replication, wraparound, cache, dead rows, growth, sequences, invalid indexes',
     '30 minutes', true);

-- >>> sql/55_security/10_server_log.sql
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

-- >>> sql/55_security/20_roles.sql
-- Role changes (CREATE/ALTER/DROP ROLE, GRANT role TO role) fire no event trigger: they are
-- found by comparing the role catalog with the snapshot taken at install and after each run.
-- Password changes are seen through a digest of the stored verifier, which only the
-- installing superuser may read (guardian._role_password_digests(), defined in 99_finish);
-- where it is missing the check says password changes are not tracked.
CREATE TABLE guardian.role_snapshot (
    role_oid        oid PRIMARY KEY,
    rolname         text NOT NULL,
    rolsuper        boolean NOT NULL,
    rolcreaterole   boolean NOT NULL,
    rolcreatedb     boolean NOT NULL,
    rolcanlogin     boolean NOT NULL,
    rolreplication  boolean NOT NULL,
    rolbypassrls    boolean NOT NULL,
    password_digest text,
    taken_at        timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE guardian.role_snapshot IS
    'The role catalog as the role_changes check last saw it (attributes and a digest of the password verifier, never the verifier).';
SELECT pg_catalog.pg_extension_config_dump('guardian.role_snapshot', '');

CREATE TABLE guardian.role_membership_snapshot (
    roleid       oid NOT NULL,
    member       oid NOT NULL,
    admin_option boolean NOT NULL,
    CONSTRAINT role_membership_snapshot_pkey PRIMARY KEY (roleid, member)
);
COMMENT ON TABLE guardian.role_membership_snapshot IS
    'Role memberships (pg_auth_members) as the role_changes check last saw them.';
SELECT pg_catalog.pg_extension_config_dump('guardian.role_membership_snapshot', '');

CREATE FUNCTION guardian._current_roles()
RETURNS SETOF guardian.role_snapshot
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_digests boolean := to_regprocedure('guardian._role_password_digests()') IS NOT NULL
                         AND has_function_privilege('guardian._role_password_digests()', 'EXECUTE');
BEGIN
    IF v_digests THEN
        RETURN QUERY EXECUTE
            'SELECT r.oid, r.rolname::text, r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolcanlogin,
                    r.rolreplication, r.rolbypassrls, d.digest, now()
               FROM pg_catalog.pg_roles AS r
               LEFT JOIN guardian._role_password_digests() AS d ON d.role_oid = r.oid';
    ELSE
        RETURN QUERY
        SELECT r.oid, r.rolname::text, r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolcanlogin,
               r.rolreplication, r.rolbypassrls, NULL::text, now()
          FROM pg_catalog.pg_roles AS r;
    END IF;
END
$$;
COMMENT ON FUNCTION guardian._current_roles() IS
    'Internal: the role catalog now, in the shape of guardian.role_snapshot (password digests where readable).';

CREATE FUNCTION guardian._take_role_snapshot()
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    DELETE FROM guardian.role_snapshot;
    INSERT INTO guardian.role_snapshot SELECT * FROM guardian._current_roles();
    DELETE FROM guardian.role_membership_snapshot;
    INSERT INTO guardian.role_membership_snapshot (roleid, member, admin_option)
    SELECT m.roleid, m.member, bool_or(m.admin_option)
      FROM pg_catalog.pg_auth_members AS m GROUP BY m.roleid, m.member;
$$;
COMMENT ON FUNCTION guardian._take_role_snapshot() IS
    'Internal: replaces the role and membership snapshots with the catalog as it is now.';

-- Roles whose membership hands out power: superusers, roles that create roles or bypass
-- RLS, the predefined roles that read or write every table or the server's files, and the
-- guardian's own.
CREATE FUNCTION guardian._is_privileged_role(p_role oid)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (
        SELECT FROM pg_catalog.pg_roles AS r
         WHERE r.oid = p_role
           AND (r.rolsuper OR r.rolcreaterole OR r.rolbypassrls OR r.rolreplication
                OR r.rolname IN ('pg_read_all_data', 'pg_write_all_data', 'pg_read_server_files',
                                 'pg_write_server_files', 'pg_execute_server_program', 'pg_signal_backend',
                                 'pg_checkpoint', 'pg_database_owner', 'guardian_owner', 'guardian_admin')))
$$;
COMMENT ON FUNCTION guardian._is_privileged_role(oid) IS
    'Internal: does membership in this role grant power (superuser, createrole, bypassrls, replication, file or all-data access, guardian admin)?';

CREATE FUNCTION guardian._check_role_changes()
RETURNS SETOF guardian.finding
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now     guardian.role_snapshot[];
    v_tracked boolean;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('guardian.role_snapshot', 0));
    IF NOT EXISTS (SELECT FROM guardian.role_snapshot) THEN
        PERFORM guardian._take_role_snapshot();
        RETURN;
    END IF;
    v_now := ARRAY(SELECT r FROM guardian._current_roles() AS r);
    v_tracked := EXISTS (SELECT FROM unnest(v_now) AS n WHERE n.password_digest IS NOT NULL)
                 OR NOT EXISTS (SELECT FROM unnest(v_now) AS n WHERE n.rolcanlogin);

    -- New roles.
    RETURN QUERY
    SELECT (ROW('role_changes', 'ROLE_CREATED',
               CASE WHEN n.rolsuper THEN 'CRITICAL'
                    WHEN n.rolcreaterole OR n.rolbypassrls OR n.rolreplication THEN 'HIGH' ELSE 'MEDIUM' END,
               NULL, n.rolname,
               format('new role %s (%s)', n.rolname,
                      concat_ws(', ', CASE WHEN n.rolsuper THEN 'SUPERUSER' END, CASE WHEN n.rolcreaterole THEN 'CREATEROLE' END,
                                CASE WHEN n.rolbypassrls THEN 'BYPASSRLS' END, CASE WHEN n.rolreplication THEN 'REPLICATION' END,
                                CASE WHEN n.rolcreatedb THEN 'CREATEDB' END,
                                CASE WHEN n.rolcanlogin THEN 'LOGIN' ELSE 'NOLOGIN' END)),
               'Confirm the role was created on purpose and by whom; drop it if not (DROP ROLE).',
               jsonb_build_object('role', n.rolname, 'superuser', n.rolsuper, 'createrole', n.rolcreaterole,
                                  'bypassrls', n.rolbypassrls, 'replication', n.rolreplication, 'login', n.rolcanlogin),
               format('created:%s:%s', n.role_oid, n.rolname))::guardian.finding).*
      FROM unnest(v_now) AS n
     WHERE NOT EXISTS (SELECT FROM guardian.role_snapshot AS o WHERE o.role_oid = n.role_oid);

    -- Dropped roles.
    RETURN QUERY
    SELECT (ROW('role_changes', 'ROLE_DROPPED', 'LOW', NULL, o.rolname,
               format('role %s was dropped', o.rolname),
               'Nothing to do if intended.',
               jsonb_build_object('role', o.rolname, 'was_superuser', o.rolsuper),
               format('dropped:%s:%s', o.role_oid, o.rolname))::guardian.finding).*
      FROM guardian.role_snapshot AS o
     WHERE NOT EXISTS (SELECT FROM unnest(v_now) AS n WHERE n.role_oid = o.role_oid);

    -- Attributes gained: the escalations that matter.
    RETURN QUERY
    SELECT (ROW('role_changes', 'ROLE_ESCALATION',
               CASE g.attr WHEN 'SUPERUSER' THEN 'CRITICAL' WHEN 'CREATEDB' THEN 'MEDIUM' WHEN 'LOGIN' THEN 'LOW' ELSE 'HIGH' END,
               NULL, g.rolname,
               format('role %s gained %s', g.rolname, g.attr),
               format('If this was not an approved change: ALTER ROLE %I NO%s; and find who did it (log_statement = ''ddl'').',
                      g.rolname, g.attr),
               jsonb_build_object('role', g.rolname, 'attribute', g.attr),
               format('gained:%s:%s', g.role_oid, g.attr))::guardian.finding).*
      FROM (SELECT n.role_oid, n.rolname, a.attr
              FROM unnest(v_now) AS n
              JOIN guardian.role_snapshot AS o ON o.role_oid = n.role_oid
              CROSS JOIN LATERAL (VALUES ('SUPERUSER', n.rolsuper AND NOT o.rolsuper),
                                         ('CREATEROLE', n.rolcreaterole AND NOT o.rolcreaterole),
                                         ('BYPASSRLS', n.rolbypassrls AND NOT o.rolbypassrls),
                                         ('REPLICATION', n.rolreplication AND NOT o.rolreplication),
                                         ('CREATEDB', n.rolcreatedb AND NOT o.rolcreatedb),
                                         ('LOGIN', n.rolcanlogin AND NOT o.rolcanlogin)) AS a(attr, gained)
             WHERE a.gained) AS g;

    -- Renames and password changes.
    RETURN QUERY
    SELECT (ROW('role_changes', 'ROLE_RENAMED', 'LOW', NULL, n.rolname,
               format('role %s was renamed to %s', o.rolname, n.rolname), 'Nothing to do if intended.',
               jsonb_build_object('old', o.rolname, 'new', n.rolname),
               format('renamed:%s:%s', n.role_oid, n.rolname))::guardian.finding).*
      FROM unnest(v_now) AS n JOIN guardian.role_snapshot AS o ON o.role_oid = n.role_oid
     WHERE n.rolname <> o.rolname;
    RETURN QUERY
    SELECT (ROW('role_changes', 'ROLE_PASSWORD_CHANGED', 'LOW', NULL, n.rolname,
               format('password of role %s was %s', n.rolname, CASE WHEN n.password_digest IS NULL THEN 'removed'
                                                                   WHEN o.password_digest IS NULL THEN 'set' ELSE 'changed' END),
               'Expected during a rotation; otherwise treat the role as compromised.',
               jsonb_build_object('role', n.rolname),
               format('password:%s:%s', n.role_oid, extract(epoch FROM now())))::guardian.finding).*
      FROM unnest(v_now) AS n JOIN guardian.role_snapshot AS o ON o.role_oid = n.role_oid
     WHERE v_tracked AND n.password_digest IS DISTINCT FROM o.password_digest;
    IF NOT v_tracked THEN
        RETURN QUERY SELECT (ROW('role_changes', 'CHECK_DEGRADED', 'INFO', NULL, NULL,
            'password changes are not tracked: the password verifiers are not readable here',
            'Install pg_guardian as a superuser (it then defines guardian._role_password_digests()).',
            '{}'::jsonb, NULL)::guardian.finding).*;
    END IF;

    -- Memberships granted.
    RETURN QUERY
    SELECT (ROW('role_changes', 'ROLE_MEMBERSHIP_GRANTED',
               CASE WHEN guardian._is_privileged_role(m.roleid) THEN 'HIGH' ELSE 'MEDIUM' END,
               NULL, pg_get_userbyid(m.member)::text,
               format('role %s was granted membership in %s%s', pg_get_userbyid(m.member), pg_get_userbyid(m.roleid),
                      CASE WHEN m.admin_option THEN ' WITH ADMIN OPTION' ELSE '' END),
               format('If not approved: REVOKE %I FROM %I;', pg_get_userbyid(m.roleid), pg_get_userbyid(m.member)),
               jsonb_build_object('role', pg_get_userbyid(m.roleid), 'member', pg_get_userbyid(m.member),
                                  'admin_option', m.admin_option, 'privileged', guardian._is_privileged_role(m.roleid)),
               format('member:%s:%s', m.roleid, m.member))::guardian.finding).*
      FROM (SELECT a.roleid, a.member, bool_or(a.admin_option) AS admin_option
              FROM pg_catalog.pg_auth_members AS a GROUP BY a.roleid, a.member) AS m
     WHERE NOT EXISTS (SELECT FROM guardian.role_membership_snapshot AS o
                        WHERE o.roleid = m.roleid AND o.member = m.member);

    DELETE FROM guardian.role_snapshot;
    INSERT INTO guardian.role_snapshot SELECT * FROM unnest(v_now);
    DELETE FROM guardian.role_membership_snapshot;
    INSERT INTO guardian.role_membership_snapshot (roleid, member, admin_option)
    SELECT a.roleid, a.member, bool_or(a.admin_option)
      FROM pg_catalog.pg_auth_members AS a GROUP BY a.roleid, a.member;
END
$$;
COMMENT ON FUNCTION guardian._check_role_changes() IS
    'Check role_changes: compares the role catalog with the last snapshot: ROLE_CREATED, ROLE_DROPPED, ROLE_ESCALATION (superuser, createrole, bypassrls, replication, createdb, login gained), ROLE_RENAMED, ROLE_PASSWORD_CHANGED, ROLE_MEMBERSHIP_GRANTED.';

-- >>> sql/55_security/30_privileges.sql
-- Object privilege changes. An event trigger on GRANT and REVOKE (the DDL capture skips those
-- two tags; they are ours) compares the ACLs of this database with a snapshot, so it knows
-- exactly which privileges changed on which objects, however the statement was written
-- (ON ALL TABLES IN SCHEMA, column lists, WITH GRANT OPTION). The privilege_changes check
-- runs the same comparison on schedule, catching changes made while the trigger could not
-- fire (plain-SQL installs without a superuser, session_replication_role = replica).
-- Owners' own privileges are left out: they are implicit and follow ALTER ... OWNER.
CREATE TABLE guardian.acl_snapshot (
    object_kind text NOT NULL,
    object_oid  oid NOT NULL,
    objsubid    integer NOT NULL,
    object_name text NOT NULL,
    grantee     oid NOT NULL,
    privilege   text NOT NULL,
    grantable   boolean NOT NULL,
    is_owner    boolean NOT NULL,
    CONSTRAINT acl_snapshot_pkey PRIMARY KEY (object_kind, object_oid, objsubid, grantee, privilege)
);
COMMENT ON TABLE guardian.acl_snapshot IS
    'Privileges on this database, its schemas, relations, columns and functions as last compared (grantee 0 is PUBLIC); owners'' own rows mark the object as known and are never reported.';
SELECT pg_catalog.pg_extension_config_dump('guardian.acl_snapshot', '');

CREATE TABLE guardian.acl_baseline (
    singleton boolean PRIMARY KEY DEFAULT true,
    taken_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT acl_baseline_singleton_chk CHECK (singleton)
);
COMMENT ON TABLE guardian.acl_baseline IS
    'When the privilege snapshot was first taken; until then, comparisons only record.';
SELECT pg_catalog.pg_extension_config_dump('guardian.acl_baseline', '');

-- Objects absent from the snapshot (created since) are compared with their default ACL, so
-- CREATE TABLE is silent while CREATE TABLE + GRANT ... TO PUBLIC is not.
CREATE FUNCTION guardian._current_acl()
RETURNS SETOF guardian.acl_snapshot
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH objects AS (
        SELECT CASE c.relkind WHEN 'S' THEN 'sequence' WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view'
                              WHEN 'f' THEN 'foreign table' ELSE 'table' END AS object_kind,
               c.oid AS object_oid, 0 AS objsubid, c.oid::regclass::text AS object_name, c.relowner AS owner,
               coalesce(c.relacl, acldefault((CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END)::"char", c.relowner)) AS acl
          FROM pg_catalog.pg_class AS c
         WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
           AND c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
           AND c.relpersistence <> 't'
        UNION ALL
        SELECT 'column', a.attrelid, a.attnum, format('%s.%I', a.attrelid::regclass, a.attname), c.relowner,
               a.attacl
          FROM pg_catalog.pg_attribute AS a
          JOIN pg_catalog.pg_class AS c ON c.oid = a.attrelid
         WHERE a.attacl IS NOT NULL AND a.attnum > 0 AND NOT a.attisdropped
           AND c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
        UNION ALL
        SELECT CASE p.prokind WHEN 'p' THEN 'procedure' ELSE 'function' END, p.oid, 0, p.oid::regprocedure::text,
               p.proowner, coalesce(p.proacl, acldefault('f'::"char", p.proowner))
          FROM pg_catalog.pg_proc AS p
         WHERE p.pronamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
        UNION ALL
        SELECT 'schema', n.oid, 0, quote_ident(n.nspname), n.nspowner,
               coalesce(n.nspacl, acldefault('n'::"char", n.nspowner))
          FROM pg_catalog.pg_namespace AS n
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
           AND n.nspname NOT LIKE 'pg\_temp\_%' AND n.nspname NOT LIKE 'pg\_toast\_temp\_%'
        UNION ALL
        -- The current database is always object 0, so a copy made from a template (whose
        -- snapshot it inherits) compares with the template's privileges.
        SELECT 'database', 0::oid, 0, quote_ident(d.datname), d.datdba,
               coalesce(d.datacl, acldefault('d'::"char", d.datdba))
          FROM pg_catalog.pg_database AS d
         WHERE d.datname = current_database()
    )
    SELECT o.object_kind, o.object_oid, o.objsubid, o.object_name, x.grantee, x.privilege_type,
           bool_or(x.is_grantable), x.grantee = o.owner
      FROM objects AS o
      CROSS JOIN LATERAL aclexplode(o.acl) AS x
     -- watch() lets the guardian read the key columns of a watched table (to check that an
     -- automatic cleanup really removed its records): its own doing, not a privilege change.
     WHERE NOT (((o.object_kind = 'column' AND x.privilege_type = 'SELECT')
                 OR (o.object_kind = 'schema' AND x.privilege_type = 'USAGE'))
                AND x.grantee = (SELECT r.oid FROM pg_catalog.pg_roles AS r WHERE r.rolname = 'guardian_owner'))
     GROUP BY o.object_kind, o.object_oid, o.objsubid, o.object_name, o.owner, x.grantee, x.privilege_type
$$;
COMMENT ON FUNCTION guardian._current_acl() IS
    'Internal: every privilege held on this database, its schemas, relations, columns and functions (grantee 0: PUBLIC), owners'' marked.';

CREATE FUNCTION guardian._privilege_changes(p_source text)
RETURNS SETOF guardian.finding
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_by     text := CASE WHEN p_source = 'event trigger' THEN SESSION_USER::text END;
    v_query  text := CASE WHEN p_source = 'event trigger' THEN left(current_query(), 500) END;
    v_now    guardian.acl_snapshot[];
    v_first  boolean;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('guardian.acl_snapshot', 0));
    v_first := NOT EXISTS (SELECT FROM guardian.acl_baseline);
    v_now := ARRAY(SELECT a FROM guardian._current_acl() AS a);
    IF NOT v_first THEN
        RETURN QUERY
        WITH cur AS (SELECT * FROM unnest(v_now)),
        known AS (SELECT DISTINCT s.object_kind, s.object_oid, s.objsubid FROM guardian.acl_snapshot AS s),
        before AS (
            SELECT s.object_kind, s.object_oid, s.objsubid, s.object_name, s.grantee, s.privilege, s.grantable
              FROM guardian.acl_snapshot AS s
             WHERE NOT s.is_owner
               AND CASE s.object_kind
                       WHEN 'column' THEN EXISTS (SELECT FROM pg_catalog.pg_attribute AS a
                                                   WHERE a.attrelid = s.object_oid AND a.attnum = s.objsubid
                                                     AND NOT a.attisdropped)
                       WHEN 'function' THEN EXISTS (SELECT FROM pg_catalog.pg_proc AS p WHERE p.oid = s.object_oid)
                       WHEN 'procedure' THEN EXISTS (SELECT FROM pg_catalog.pg_proc AS p WHERE p.oid = s.object_oid)
                       WHEN 'schema' THEN EXISTS (SELECT FROM pg_catalog.pg_namespace AS n WHERE n.oid = s.object_oid)
                       WHEN 'database' THEN true
                       ELSE EXISTS (SELECT FROM pg_catalog.pg_class AS c WHERE c.oid = s.object_oid) END
            UNION ALL
            -- A routine the snapshot does not know started with EXECUTE for PUBLIC (the only
            -- non-owner default among the kinds compared here).
            SELECT DISTINCT c.object_kind, c.object_oid, c.objsubid, c.object_name, 0::oid, 'EXECUTE', false
              FROM cur AS c
             WHERE c.object_kind IN ('function', 'procedure')
               AND NOT EXISTS (SELECT FROM known AS k WHERE k.object_kind = c.object_kind
                                  AND k.object_oid = c.object_oid AND k.objsubid = c.objsubid)
        ),
        added AS (
            SELECT c.* FROM cur AS c
             WHERE NOT c.is_owner
               AND NOT EXISTS (SELECT FROM before AS b
                                WHERE b.object_kind = c.object_kind AND b.object_oid = c.object_oid
                                  AND b.objsubid = c.objsubid AND b.grantee = c.grantee
                                  AND b.privilege = c.privilege AND (b.grantable OR NOT c.grantable))
        ),
        removed AS (
            SELECT b.* FROM before AS b
             WHERE NOT EXISTS (SELECT FROM cur AS c
                                WHERE b.object_kind = c.object_kind AND b.object_oid = c.object_oid
                                  AND b.objsubid = c.objsubid AND b.grantee = c.grantee
                                  AND b.privilege = c.privilege)
        ),
        changes AS (
            SELECT 'granted' AS change, a.object_kind, a.object_oid, a.objsubid, a.object_name, a.grantee,
                   array_agg(a.privilege ORDER BY a.privilege) AS privileges, bool_or(a.grantable) AS grantable
              FROM added AS a GROUP BY a.object_kind, a.object_oid, a.objsubid, a.object_name, a.grantee
            UNION ALL
            SELECT 'revoked', r.object_kind, r.object_oid, r.objsubid, r.object_name, r.grantee,
                   array_agg(r.privilege ORDER BY r.privilege), false
              FROM removed AS r GROUP BY r.object_kind, r.object_oid, r.objsubid, r.object_name, r.grantee
        )
        SELECT (ROW('privilege_changes',
                   CASE WHEN ch.change = 'revoked' THEN 'PRIVILEGE_REVOKED'
                        WHEN ch.grantee = 0 THEN 'GRANT_TO_PUBLIC' ELSE 'PRIVILEGE_GRANTED' END,
                   CASE WHEN ch.change = 'revoked' THEN 'LOW'
                        WHEN ch.grantee = 0 THEN 'HIGH'
                        WHEN ch.object_name LIKE 'guardian.%' OR ch.grantable
                             OR ch.privileges && ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'TRIGGER', 'CREATE'] THEN 'MEDIUM'
                        ELSE 'LOW' END,
                   CASE WHEN ch.object_kind IN ('table', 'view', 'materialized view', 'foreign table', 'sequence')
                        THEN ch.object_name END,
                   CASE WHEN ch.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(ch.grantee)::text END,
                   format('%s on %s %s %s %s%s%s', array_to_string(ch.privileges, ', '), ch.object_kind, ch.object_name,
                          ch.change, CASE ch.change WHEN 'granted' THEN 'to ' ELSE 'from ' END
                              || CASE WHEN ch.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(ch.grantee)::text END,
                          CASE WHEN ch.grantable THEN ' WITH GRANT OPTION' ELSE '' END,
                          coalesce(' by ' || v_by, ' (found by the scheduled scan)')),
                   CASE WHEN ch.change = 'revoked' THEN 'Nothing to do if intended.'
                        WHEN ch.grantee = 0 THEN format('Every role, including future ones, now has this. Unless that is intended: REVOKE %s ON %s FROM PUBLIC;',
                                                        array_to_string(ch.privileges, ', '),
                                                        CASE WHEN ch.object_kind IN ('function', 'procedure', 'schema', 'database', 'sequence')
                                                             THEN upper(ch.object_kind) || ' ' ELSE '' END || ch.object_name)
                        ELSE 'Confirm the grant was approved; revoke it if not.' END,
                   jsonb_strip_nulls(jsonb_build_object(
                       'object_kind', ch.object_kind, 'object', ch.object_name, 'change', ch.change,
                       'grantee', CASE WHEN ch.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(ch.grantee)::text END,
                       'privileges', to_jsonb(ch.privileges), 'grantable', ch.grantable,
                       'by', v_by, 'statement', v_query, 'source', p_source)),
                   format('%s:%s:%s:%s:%s:%s', ch.change, ch.object_kind, ch.object_oid, ch.objsubid, ch.grantee,
                          array_to_string(ch.privileges, ',')))::guardian.finding).*
          FROM changes AS ch
         ORDER BY ch.object_name, ch.change;
    END IF;
    DELETE FROM guardian.acl_snapshot;
    INSERT INTO guardian.acl_snapshot SELECT * FROM unnest(v_now);
    IF v_first THEN
        INSERT INTO guardian.acl_baseline DEFAULT VALUES;
    END IF;
END
$$;
COMMENT ON FUNCTION guardian._privilege_changes(text) IS
    'Internal: privileges granted (PRIVILEGE_GRANTED, GRANT_TO_PUBLIC) or revoked (PRIVILEGE_REVOKED) since the snapshot, which it then renews.';

CREATE FUNCTION guardian._check_privilege_changes()
RETURNS SETOF guardian.finding
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM guardian._privilege_changes('scheduled scan')
$$;
COMMENT ON FUNCTION guardian._check_privilege_changes() IS
    'Check privilege_changes: GRANT/REVOKE missed by the event trigger (PRIVILEGE_GRANTED, GRANT_TO_PUBLIC, PRIVILEGE_REVOKED).';

-- Runs as guardian_owner so that any role's GRANT can be recorded; it never fails the
-- user's statement: a problem in the guardian becomes a WARNING and the scan catches up.
CREATE FUNCTION guardian._on_grant_revoke()
RETURNS event_trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_finding guardian.finding;
BEGIN
    IF NOT guardian._check_enabled('privilege_changes') THEN
        RETURN;
    END IF;
    BEGIN
        -- guardian.lockdown() and unlock() record their own GRANT and REVOKE (LOCKDOWN alerts)
        -- and renew the snapshot once when done.
        IF guardian._lockdown_in_progress() THEN
            RETURN;
        END IF;
        -- Grants made by an extension script (installing or upgrading the guardian itself)
        -- only renew the snapshot.
        IF EXISTS (SELECT FROM pg_event_trigger_ddl_commands() AS c WHERE c.in_extension) THEN
            PERFORM pg_catalog.count(*) FROM guardian._privilege_changes('extension script');
            RETURN;
        END IF;
        FOR v_finding IN SELECT * FROM guardian._privilege_changes('event trigger') LOOP
            PERFORM guardian._raise_finding(v_finding);
        END LOOP;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'pg_guardian: could not record privilege change: %', SQLERRM
            USING HINT = 'The privilege_changes check will find it on its next run.';
    END;
END
$$;
COMMENT ON FUNCTION guardian._on_grant_revoke() IS
    'Internal event trigger (ddl_command_end, GRANT and REVOKE): raises alerts for the privileges that changed.';

-- >>> sql/55_security/40_posture.sql
-- Risky posture (splinter: rls_disabled_in_public, function_search_path_mutable; pgspot).
-- These are states: their alerts resolve themselves once fixed. Objects that belong to an
-- extension are left to that extension, except the guardian's own schema.
CREATE FUNCTION guardian._is_extension_member(p_classid regclass, p_objid oid)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (SELECT FROM pg_catalog.pg_depend AS d
                    WHERE d.classid = p_classid AND d.objid = p_objid AND d.deptype = 'e')
$$;
COMMENT ON FUNCTION guardian._is_extension_member(regclass, oid) IS
    'Internal: does this object belong to an extension?';

CREATE FUNCTION guardian._check_rls_disabled_with_policies()
RETURNS SETOF guardian.finding
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (ROW('rls_disabled_with_policies', 'RLS_DISABLED_WITH_POLICIES', 'HIGH', c.oid::regclass::text, NULL,
               format('table %s has %s row-level security policies but RLS is disabled: the policies do nothing and every role with table privileges sees all rows',
                      c.oid::regclass, (SELECT count(*) FROM pg_catalog.pg_policy AS p WHERE p.polrelid = c.oid)),
               format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY; (or drop the policies if they are obsolete)', c.oid::regclass),
               jsonb_build_object('table', c.oid::regclass::text,
                                  'policies', (SELECT jsonb_agg(p.polname ORDER BY p.polname)
                                                 FROM pg_catalog.pg_policy AS p WHERE p.polrelid = c.oid)),
               c.oid::regclass::text)::guardian.finding).*
      FROM pg_catalog.pg_class AS c
     WHERE c.relkind IN ('r', 'p')
       AND NOT c.relrowsecurity
       AND EXISTS (SELECT FROM pg_catalog.pg_policy AS p WHERE p.polrelid = c.oid)
       AND NOT guardian._is_extension_member('pg_catalog.pg_class', c.oid)
$$;
COMMENT ON FUNCTION guardian._check_rls_disabled_with_policies() IS
    'Check rls_disabled_with_policies: tables with policies whose row-level security is off (RLS_DISABLED_WITH_POLICIES).';

CREATE FUNCTION guardian._check_security_definer_search_path()
RETURNS SETOF guardian.finding
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (ROW('security_definer_search_path', 'SECURITY_DEFINER_SEARCH_PATH', 'HIGH', NULL, p.oid::regprocedure::text,
               format('SECURITY DEFINER function %s (owner %s) does not pin search_path: a caller can plant objects that run with the owner''s rights',
                      p.oid::regprocedure, pg_get_userbyid(p.proowner)),
               format('ALTER FUNCTION %s SET search_path = pg_catalog, pg_temp; and schema-qualify what it uses.', p.oid::regprocedure),
               jsonb_build_object('function', p.oid::regprocedure::text, 'owner', pg_get_userbyid(p.proowner)),
               p.oid::regprocedure::text)::guardian.finding).*
      FROM pg_catalog.pg_proc AS p
     WHERE p.prosecdef
       AND p.pronamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
       AND NOT EXISTS (SELECT FROM unnest(p.proconfig) AS c WHERE c LIKE 'search\_path=%')
       AND (NOT guardian._is_extension_member('pg_catalog.pg_proc', p.oid)
            OR p.pronamespace = 'guardian'::regnamespace)
$$;
COMMENT ON FUNCTION guardian._check_security_definer_search_path() IS
    'Check security_definer_search_path: SECURITY DEFINER functions without a pinned search_path (SECURITY_DEFINER_SEARCH_PATH).';

CREATE FUNCTION guardian._check_public_readable_tables()
RETURNS SETOF guardian.finding
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (ROW('public_readable_tables', 'TABLE_READABLE_BY_PUBLIC',
               CASE WHEN c.relrowsecurity THEN 'LOW' ELSE 'MEDIUM' END, c.oid::regclass::text, NULL,
               format('%s %s is readable by every role (SELECT granted to PUBLIC)%s',
                      CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' ELSE 'table' END,
                      c.oid::regclass, CASE WHEN c.relrowsecurity THEN ', rows filtered by RLS' ELSE '' END),
               format('REVOKE SELECT ON %s FROM PUBLIC; and grant it to the roles that need it.', c.oid::regclass),
               jsonb_build_object('table', c.oid::regclass::text, 'rls', c.relrowsecurity),
               c.oid::regclass::text)::guardian.finding).*
      FROM pg_catalog.pg_class AS c
     WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
       AND c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
       AND c.relacl IS NOT NULL
       AND EXISTS (SELECT FROM aclexplode(c.relacl) AS x WHERE x.grantee = 0 AND x.privilege_type = 'SELECT')
       AND (NOT guardian._is_extension_member('pg_catalog.pg_class', c.oid)
            OR c.relnamespace = 'guardian'::regnamespace)
$$;
COMMENT ON FUNCTION guardian._check_public_readable_tables() IS
    'Check public_readable_tables: tables and views with SELECT granted to PUBLIC (TABLE_READABLE_BY_PUBLIC; LOW when RLS filters rows).';

CREATE FUNCTION guardian._check_public_schema_create()
RETURNS SETOF guardian.finding
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (ROW('public_schema_create', 'SCHEMA_WRITABLE_BY_PUBLIC', 'MEDIUM', NULL, n.nspname::text,
               format('every role may create objects in schema %s: one can plant functions or tables that shadow others'' names', n.nspname),
               format('REVOKE CREATE ON SCHEMA %I FROM PUBLIC;', n.nspname),
               jsonb_build_object('schema', n.nspname),
               n.nspname::text)::guardian.finding).*
      FROM pg_catalog.pg_namespace AS n
     WHERE n.nspacl IS NOT NULL
       AND EXISTS (SELECT FROM aclexplode(n.nspacl) AS x WHERE x.grantee = 0 AND x.privilege_type = 'CREATE')
$$;
COMMENT ON FUNCTION guardian._check_public_schema_create() IS
    'Check public_schema_create: schemas where PUBLIC may CREATE (SCHEMA_WRITABLE_BY_PUBLIC), the pre-PostgreSQL 15 default for public.';

-- >>> sql/55_security/90_register.sql
INSERT INTO guardian.parameters (name, default_value, min_value, max_value, unit, description) VALUES
    ('security.brute_force.failures', 5, 2, 1000000, 'failed logins', 'Failed logins for one role, or from one address, within the window that count as brute force'),
    ('security.brute_force.window_seconds', 300, 1, 86400, 'seconds', 'Window in which brute-force failures are counted'),
    ('security.server_log.max_bytes_per_run', 16777216, 65536, 1073741824, 'bytes', 'At most this much of the server log is read per run (the rest next run)');

INSERT INTO guardian.checks (name, category, function, description, is_condition, builtin) VALUES
    ('server_log', 'security', 'guardian._check_server_log', 'Failed logins, brute force, permission-denied errors and strict-mode rejections from the CSV server log', false, true),
    ('role_changes', 'security', 'guardian._check_role_changes', 'New roles, escalations, renames, password changes and membership grants', false, true),
    ('privilege_changes', 'security', 'guardian._check_privilege_changes', 'GRANT/REVOKE on this database''s objects missed by the event trigger', false, true),
    ('rls_disabled_with_policies', 'posture', 'guardian._check_rls_disabled_with_policies', 'Tables with policies but row-level security off', true, true),
    ('security_definer_search_path', 'posture', 'guardian._check_security_definer_search_path', 'SECURITY DEFINER functions without a pinned search_path', true, true),
    ('public_readable_tables', 'posture', 'guardian._check_public_readable_tables', 'Tables and views readable by PUBLIC', true, true),
    ('public_schema_create', 'posture', 'guardian._check_public_schema_create', 'Schemas where PUBLIC may create objects', true, true);

INSERT INTO guardian.jobs (name, schedule, command, description, max_lag, builtin) VALUES
    ('security_events', '* * * * *', 'SELECT guardian.run_checks_job(''security'')',
     'Read the server log (failed logins, brute force, permission denied, strict-mode rejections) and compare roles and privileges with their snapshots',
     '15 minutes', true),
    ('security_posture', '23 * * * *', 'SELECT guardian.run_checks_job(''posture'')',
     'Risky posture: RLS off on tables with policies, SECURITY DEFINER without search_path, PUBLIC-readable tables, PUBLIC-writable schemas',
     '3 hours', true);

-- >>> sql/60_response/10_quarantine.sql
-- Auto-response: cleanup scripts, quarantine and restore, auto-cleanup, lockdown.
--
-- Nothing the guardian removes is lost. A cleanup (a generated script run by a person, or an
-- automatic one) first copies every row it deletes, and every row whose foreign key it sets
-- to NULL, into guardian.quarantine as one batch; guardian.restore(batch) puts the batch
-- back. The guardian never reads or deletes application rows with its own rights: cleanups
-- and restores run with the rights of whoever runs them (an admin, or for auto-cleanup the
-- session whose write was contaminated), and only the bookkeeping goes through SECURITY
-- DEFINER helpers.

-- Every script the guardian generated, by batch id: cleanup_begin() checks that the roots
-- and counts a script carries are the ones it was generated with.
CREATE TABLE guardian.cleanup_scripts (
    batch_id    uuid PRIMARY KEY,
    alert_id    uuid REFERENCES guardian.monitoring_alerts (id) ON DELETE SET NULL,
    environment text NOT NULL,
    roots       jsonb NOT NULL,
    steps       jsonb NOT NULL,
    script      text NOT NULL,
    automatic   boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    created_by  text NOT NULL DEFAULT SESSION_USER,
    CONSTRAINT cleanup_scripts_roots_chk CHECK (pg_catalog.jsonb_typeof(roots) = 'object'),
    CONSTRAINT cleanup_scripts_steps_chk CHECK (pg_catalog.jsonb_typeof(steps) = 'array')
);
COMMENT ON TABLE guardian.cleanup_scripts IS
    'Cleanup scripts generated by guardian.cleanup_script() (or with an alert), by the batch id they will quarantine into: the contaminated records (roots), the steps with the row counts they expect, and the script text.';
SELECT pg_catalog.pg_extension_config_dump('guardian.cleanup_scripts', '');
CREATE INDEX cleanup_scripts_alert_id_idx ON guardian.cleanup_scripts (alert_id);

CREATE TABLE guardian.quarantine_batches (
    id           uuid PRIMARY KEY,
    alert_id     uuid REFERENCES guardian.monitoring_alerts (id) ON DELETE SET NULL,
    environment  text NOT NULL,
    automatic    boolean NOT NULL DEFAULT false,
    status       text NOT NULL DEFAULT 'capturing',
    steps        jsonb NOT NULL,
    done         jsonb NOT NULL DEFAULT '{}',
    row_count    bigint NOT NULL DEFAULT 0,
    captured_xid bigint NOT NULL DEFAULT pg_catalog.txid_current(),
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    created_by   text NOT NULL DEFAULT SESSION_USER,
    applied_at   timestamptz,
    restored_at  timestamptz,
    restored_by  text,
    CONSTRAINT quarantine_batches_status_chk CHECK (status IN ('capturing', 'applied', 'restored')),
    CONSTRAINT quarantine_batches_applied_chk CHECK (status = 'capturing' OR applied_at IS NOT NULL),
    CONSTRAINT quarantine_batches_restored_chk CHECK (status <> 'restored' OR restored_at IS NOT NULL)
);
COMMENT ON TABLE guardian.quarantine_batches IS
    'One row per cleanup: the alert it answered, whether it ran automatically, its steps with expected and actual row counts, who ran it and when, and whether it was restored. The script is in guardian.cleanup_scripts under the same id.';
COMMENT ON COLUMN guardian.quarantine_batches.captured_xid IS
    'The transaction that captured the rows; its steps must run in that same transaction.';
SELECT pg_catalog.pg_extension_config_dump('guardian.quarantine_batches', '');
CREATE INDEX quarantine_batches_alert_id_idx ON guardian.quarantine_batches (alert_id);
CREATE INDEX quarantine_batches_applied_at_idx ON guardian.quarantine_batches (applied_at);

CREATE TABLE guardian.quarantine (
    batch_id     uuid NOT NULL REFERENCES guardian.quarantine_batches (id) ON DELETE CASCADE,
    seq          bigint GENERATED ALWAYS AS IDENTITY,
    step         integer NOT NULL,
    relid        regclass NOT NULL,
    table_name   text NOT NULL,
    action       text NOT NULL,
    row_key      jsonb NOT NULL,
    row_data     jsonb NOT NULL,
    columns      text[],
    findings     jsonb,
    row_tableoid oid,
    row_ctid     tid,
    CONSTRAINT quarantine_pkey PRIMARY KEY (batch_id, seq),
    CONSTRAINT quarantine_action_chk CHECK (action IN ('delete', 'set null', 'set default')),
    CONSTRAINT quarantine_columns_chk CHECK (action = 'delete' OR pg_catalog.cardinality(columns) > 0)
);
COMMENT ON TABLE guardian.quarantine IS
    'Rows removed (action delete) or changed (set null, set default: the listed columns) by a cleanup, each as it was before: table, key, the full row as JSON (json columns as their exact text), and for contaminated rows the rules that matched. Put back with guardian.restore(batch).';
COMMENT ON COLUMN guardian.quarantine.row_tableoid IS
    'With row_ctid: where the row was inside the cleanup transaction (its steps delete by it); meaningless afterwards.';
SELECT pg_catalog.pg_extension_config_dump('guardian.quarantine', '');
SELECT pg_catalog.pg_extension_config_dump('guardian.quarantine_seq_seq', '');
CREATE INDEX quarantine_batch_step_idx ON guardian.quarantine (batch_id, step);

CREATE VIEW guardian.quarantined_rows AS
SELECT q.batch_id, q.seq, q.step, q.table_name, q.relid, q.action, q.row_key, q.row_data, q.columns,
       q.findings, b.alert_id, b.automatic, b.status, b.created_at AS quarantined_at,
       b.created_by AS quarantined_by, b.restored_at, b.restored_by, s.script
  FROM guardian.quarantine AS q
  JOIN guardian.quarantine_batches AS b ON b.id = q.batch_id
  LEFT JOIN guardian.cleanup_scripts AS s ON s.batch_id = q.batch_id;
COMMENT ON VIEW guardian.quarantined_rows IS
    'Each quarantined row with the alert and script that removed it, who removed it and when, and whether it was restored.';

CREATE VIEW guardian.quarantine_status AS
SELECT b.id AS batch_id, b.alert_id, b.environment, b.automatic, b.status, b.row_count,
       (SELECT pg_catalog.jsonb_object_agg(x.table_name, x.n)
          FROM (SELECT q.table_name, pg_catalog.count(*) AS n FROM guardian.quarantine AS q
                 WHERE q.batch_id = b.id GROUP BY q.table_name) AS x) AS tables,
       b.created_at, b.created_by, b.applied_at, b.restored_at, b.restored_by,
       CASE WHEN b.status = 'applied' AND guardian.param('retention.quarantine_days') > 0
            THEN b.applied_at + pg_catalog.make_interval(days => guardian.param('retention.quarantine_days')::integer)
       END AS kept_until,
       pg_catalog.format('SELECT guardian.restore(%L);', b.id) AS restore_command
  FROM guardian.quarantine_batches AS b;
COMMENT ON VIEW guardian.quarantine_status IS
    'Quarantine batches: rows per table, status, who and when, until when retention keeps them, and the command that restores them.';

CREATE TYPE guardian.cleanup_row AS (
    step         integer,
    relid        regclass,
    row_tableoid oid,
    row_ctid     tid,
    root         boolean,
    findings     jsonb,
    row_key      jsonb
);
COMMENT ON TYPE guardian.cleanup_row IS
    'Internal: one row a cleanup touches (step, table, where the row is) while it is planned or captured.';

CREATE TYPE guardian.quarantine_item AS (
    step         integer,
    relid        regclass,
    action       text,
    row_key      jsonb,
    row_data     jsonb,
    columns      text[],
    findings     jsonb,
    row_tableoid oid,
    row_ctid     tid
);
COMMENT ON TYPE guardian.quarantine_item IS
    'Internal: one row handed to guardian._quarantine_put() by a capture.';

INSERT INTO guardian.parameters (name, default_value, min_value, max_value, unit, description) VALUES
    ('retention.quarantine_days', 30, 0, 36500, 'days',
     'Quarantined rows are kept this long after their cleanup, then pruned with an alert (0: kept until deleted by hand)'),
    ('auto_cleanup.max_rows', 1000, 1, 10000000, 'rows',
     'Auto-cleanup quarantines at most this many rows (contaminated and dependent) at once; a larger cleanup waits for a person'),
    ('lockdown.threshold', 100, 1, 1000000000, 'records',
     'Automatic lockdown when CRITICAL contamination affects more than this many records within lockdown.window_minutes (LOCKDOWN_THRESHOLD)'),
    ('lockdown.window_minutes', 60, 1, 10080, 'minutes',
     'The window over which automatic lockdown counts records with CRITICAL contamination'),
    ('cleanup.auto_script_max_records', 1000, 0, 100000, 'records',
     'A cleanup script is generated with a contamination alert when it affects at most this many records (0: never)'),
    ('cleanup.script_refresh_seconds', 60, 0, 86400, 'seconds',
     'A cleanup script stored with an open alert is regenerated for newly found records at most this often');

-- >>> sql/60_response/15_app_code.sql
-- Whose code runs where. A role that reads or changes an application's table runs some of
-- the application's code with its own rights: the table's triggers and rules, the CHECKs,
-- defaults, generated columns and index expressions that call the application's functions,
-- the casts and operators of the application's types (to_jsonb() of a value calls a cast to
-- json, key = key calls the type's "=" operator) and its row-level security policies. For a
-- superuser that is the application running as a superuser. The guardian's tools that change
-- application rows (cleanup, restore) name that code and refuse a superuser; the scan reads
-- values only through type output functions and runs none of it.
--
-- Application code is what is not built in (oid >= 16384), not the guardian's own (schema
-- guardian) and not part of an extension (installed by a superuser from the server's files).

CREATE FUNCTION guardian._app_function(p_func oid)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p_func >= 16384
       AND NOT EXISTS (SELECT FROM pg_catalog.pg_proc AS p
                        WHERE p.oid = p_func AND p.pronamespace = 'guardian'::pg_catalog.regnamespace)
       AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend AS d
                        WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.objid = p_func
                          AND d.deptype = 'e')
$$;
COMMENT ON FUNCTION guardian._app_function(oid) IS
    'Internal: is this function the application''s code (not built in, not the guardian''s, not an extension''s)?';

CREATE FUNCTION guardian._app_code_exposure(p_tables regclass[])
RETURNS TABLE (relid regclass, kind text, runs_on text, code text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- PL/pgSQL, not SQL: a SQL function with a SET clause plans this query again at every call
    -- (~80 ms); here the plan is kept for the session.
    -- runs_on: 'write' runs when rows are inserted, updated or deleted; 'read' when rows are
    -- read by a role that row-level security applies to (superusers and BYPASSRLS roles never);
    -- 'values' when a tool converts or compares the column's values with casts or operators
    -- (to_jsonb, ::text, =) rather than through type output functions.
    RETURN QUERY
    WITH RECURSIVE tree(rel) AS (
        SELECT t.oid FROM unnest(p_tables) AS t(oid) WHERE t.oid IS NOT NULL
        UNION
        SELECT i.inhrelid FROM tree AS tr JOIN pg_catalog.pg_inherits AS i ON i.inhparent = tr.rel
    ), col_types(rel, attname, typ, depth) AS (
        SELECT a.attrelid, a.attname, a.atttypid, 0
          FROM tree AS tr JOIN pg_catalog.pg_attribute AS a ON a.attrelid = tr.rel
         WHERE a.attnum > 0 AND NOT a.attisdropped
        UNION
        -- what a value of the type is made of: a domain's base type, an array's element
        -- type, a composite's attributes, a range's subtype, a multirange's range
        SELECT c.rel, c.attname, x.next, c.depth + 1
          FROM col_types AS c
          JOIN pg_catalog.pg_type AS t ON t.oid = c.typ
         CROSS JOIN LATERAL (
               SELECT t.typbasetype WHERE t.typtype = 'd'
               UNION ALL SELECT t.typelem WHERE t.typelem <> 0
               UNION ALL SELECT ca.atttypid FROM pg_catalog.pg_attribute AS ca
                          WHERE t.typtype = 'c' AND ca.attrelid = t.typrelid AND ca.attnum > 0 AND NOT ca.attisdropped
               UNION ALL SELECT r.rngsubtype FROM pg_catalog.pg_range AS r WHERE t.typtype = 'r' AND r.rngtypid = t.oid
               UNION ALL SELECT r.rngtypid FROM pg_catalog.pg_range AS r WHERE t.typtype = 'm' AND r.rngmultitypid = t.oid
           ) AS x(next)
         WHERE c.depth < 16
    ), user_types AS (
        SELECT DISTINCT c.rel, c.attname, c.typ FROM col_types AS c WHERE c.typ >= 16384
    )
    SELECT x.relid::regclass, x.kind, x.runs_on, x.code
      FROM (
        SELECT tg.tgrelid AS relid, 'trigger' AS kind, 'write' AS runs_on,
               format('trigger %I (%s)', tg.tgname, tg.tgfoid::regprocedure) AS code
          FROM tree AS tr JOIN pg_catalog.pg_trigger AS tg ON tg.tgrelid = tr.rel
         WHERE NOT tg.tgisinternal AND tg.tgenabled <> 'D' AND guardian._app_function(tg.tgfoid)
        UNION ALL
        SELECT r.ev_class, 'rule', 'write', format('rule %I', r.rulename)
          FROM tree AS tr JOIN pg_catalog.pg_rewrite AS r ON r.ev_class = tr.rel
         WHERE r.rulename <> '_RETURN' AND r.ev_enabled <> 'D'
        UNION ALL
        SELECT c.oid, 'row_security', 'read',
               format('row-level security%s (policies: %s)', CASE WHEN c.relforcerowsecurity THEN ', forced' ELSE '' END,
                      coalesce((SELECT string_agg(quote_ident(p.polname), ', ' ORDER BY p.polname)
                                  FROM pg_catalog.pg_policy AS p WHERE p.polrelid = c.oid), 'none'))
          FROM tree AS tr JOIN pg_catalog.pg_class AS c ON c.oid = tr.rel
         WHERE c.relrowsecurity
        UNION ALL
        -- CHECK constraints, defaults, generated columns and indexes (expressions, predicates)
        -- that call the application's functions or operators
        SELECT o.rel, 'expression', 'write',
               format('%s calls %s', o.what, CASE WHEN d.refclassid = 'pg_catalog.pg_proc'::regclass
                                                  THEN d.refobjid::regprocedure::text
                                                  ELSE 'operator ' || d.refobjid::regoperator::text END)
          FROM (SELECT con.conrelid AS rel, 'pg_catalog.pg_constraint'::regclass AS classid, con.oid,
                       format('constraint %I', con.conname) AS what
                  FROM tree AS tr JOIN pg_catalog.pg_constraint AS con ON con.conrelid = tr.rel
                UNION ALL
                SELECT ad.adrelid, 'pg_catalog.pg_attrdef'::regclass, ad.oid,
                       format('%s of column %I', CASE WHEN a.attgenerated <> '' THEN 'generated value' ELSE 'default' END,
                              a.attname)
                  FROM tree AS tr JOIN pg_catalog.pg_attrdef AS ad ON ad.adrelid = tr.rel
                  JOIN pg_catalog.pg_attribute AS a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
                UNION ALL
                SELECT ix.indrelid, 'pg_catalog.pg_class'::regclass, ix.indexrelid,
                       format('index %s', ix.indexrelid::regclass)
                  FROM tree AS tr JOIN pg_catalog.pg_index AS ix ON ix.indrelid = tr.rel) AS o
          JOIN pg_catalog.pg_depend AS d ON d.classid = o.classid AND d.objid = o.oid
         WHERE (d.refclassid = 'pg_catalog.pg_proc'::regclass AND guardian._app_function(d.refobjid))
            OR (d.refclassid = 'pg_catalog.pg_operator'::regclass
                AND guardian._app_function((SELECT op.oprcode FROM pg_catalog.pg_operator AS op WHERE op.oid = d.refobjid)))
        UNION ALL
        SELECT u.rel, 'cast', 'values',
               format('column %I: cast (%s AS %s) with %s', u.attname, ca.castsource::regtype, ca.casttarget::regtype,
                      ca.castfunc::regprocedure)
          FROM user_types AS u
          JOIN pg_catalog.pg_cast AS ca ON (ca.castsource = u.typ OR ca.casttarget = u.typ)
         WHERE ca.castmethod = 'f' AND guardian._app_function(ca.castfunc)
        UNION ALL
        SELECT u.rel, 'operator', 'values',
               format('column %I: operator %s with %s', u.attname, op.oid::regoperator, op.oprcode::regprocedure)
          FROM user_types AS u
          JOIN pg_catalog.pg_operator AS op ON (op.oprleft = u.typ OR op.oprright = u.typ)
         WHERE guardian._app_function(op.oprcode)
        UNION ALL
        SELECT u.rel, 'domain_check', 'write',
               format('column %I: check %I of domain %s calls %s', u.attname, con.conname, u.typ::regtype,
                      CASE WHEN d.refclassid = 'pg_catalog.pg_proc'::regclass
                           THEN d.refobjid::regprocedure::text
                           ELSE 'operator ' || d.refobjid::regoperator::text END)
          FROM user_types AS u
          JOIN pg_catalog.pg_constraint AS con ON con.contypid = u.typ
          JOIN pg_catalog.pg_depend AS d
            ON d.classid = 'pg_catalog.pg_constraint'::regclass AND d.objid = con.oid
         WHERE (d.refclassid = 'pg_catalog.pg_proc'::regclass AND guardian._app_function(d.refobjid))
            OR (d.refclassid = 'pg_catalog.pg_operator'::regclass
                AND guardian._app_function((SELECT op.oprcode FROM pg_catalog.pg_operator AS op WHERE op.oid = d.refobjid)))
      ) AS x
     GROUP BY x.relid, x.kind, x.runs_on, x.code
     ORDER BY x.relid::regclass::text, x.kind, x.code;
END
$$;
COMMENT ON FUNCTION guardian._app_code_exposure(regclass[]) IS
    'What application code runs for a role that reads or changes these tables (and their partitions and inheritance children): triggers, rules, row-level security, CHECKs, defaults, generated columns and index expressions calling application functions, and the casts, operators and domain checks of the application''s types in their columns. runs_on: write, read (row security) or values (casts and operators, when a tool converts or compares values).';

CREATE FUNCTION guardian._refuse_app_code(
    p_tables regclass[], p_action text, p_hint text DEFAULT NULL, p_runs text[] DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_runs   text[] := coalesce(p_runs, ARRAY['read', 'write', 'values']);
    v_code   text;
    v_tables text;
    v_owners text;
BEGIN
    -- SECURITY INVOKER: CURRENT_USER is whoever runs the tool (after any SET ROLE). A
    -- superuser bypasses row-level security, the only code a plain read runs.
    IF NOT coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles AS r WHERE r.rolname = CURRENT_USER), false)
       OR NOT (v_runs && ARRAY['write', 'values']) THEN
        RETURN;
    END IF;
    SELECT string_agg(format('%s: %s', e.relid, e.code), '; ' ORDER BY e.relid::text, e.kind, e.code),
           string_agg(DISTINCT e.relid::text, ', ')
      INTO v_code, v_tables
      FROM guardian._app_code_exposure(p_tables) AS e
     WHERE e.runs_on = ANY (v_runs) AND e.kind <> 'row_security';
    IF v_code IS NULL THEN
        RETURN;
    END IF;
    SELECT string_agg(DISTINCT quote_ident(pg_catalog.pg_get_userbyid(c.relowner)), ' or ')
      INTO v_owners
      FROM pg_catalog.pg_class AS c WHERE c.oid = ANY (p_tables);
    RAISE EXCEPTION 'refusing %: it would run application code of % as superuser %', p_action, v_tables, CURRENT_USER
        USING ERRCODE = 'insufficient_privilege',
              DETAIL = format('It would run, with superuser rights: %s.', v_code),
              HINT = coalesce(p_hint,
                              format('Run it as the table owner, whose rights that code should have: SET ROLE %s; then RESET ROLE;',
                                     v_owners));
END
$$;
COMMENT ON FUNCTION guardian._refuse_app_code(regclass[], text, text, text[]) IS
    'Raises insufficient_privilege, naming the tables and the code, when the current user is a superuser and reading or changing these tables would run application code (guardian._app_code_exposure; p_runs limits it to write, read or values). p_action names the tool in the message; p_hint replaces the default HINT (SET ROLE <owner>).';

-- >>> sql/60_response/20_cleanup_graph.sql
-- What a cleanup touches, from the catalog alone: starting at the tables of the contaminated
-- rows, every foreign key that references a table whose rows are deleted, followed through
-- ON DELETE CASCADE. The steps are derived from these edges only (never from data), so that
-- the script generated for an alert and the capture that runs it agree on step numbers.
CREATE FUNCTION guardian._table_root(p_table regclass)
RETURNS regclass
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- Rows of a partition are rows of its partitioned table: foreign keys name the root.
    SELECT coalesce(pg_partition_root(p_table), p_table)
$$;
COMMENT ON FUNCTION guardian._table_root(regclass) IS 'Internal: the partitioned table a partition belongs to, else the table itself.';

CREATE FUNCTION guardian._regclass_of(p_name text)
RETURNS regclass
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- to_regclass() needs USAGE on the schema, which the guardian's own role does not have:
    -- a schema-qualified name (as regclass prints it here) is looked up in the catalog.
    SELECT c.oid::regclass
      FROM (SELECT parse_ident(p_name) AS parts) AS p
      JOIN pg_catalog.pg_namespace AS n ON n.nspname = p.parts[1]
      JOIN pg_catalog.pg_class AS c ON c.relnamespace = n.oid AND c.relname = p.parts[2]
     WHERE cardinality(p.parts) = 2
$$;
COMMENT ON FUNCTION guardian._regclass_of(text) IS 'Internal: the table a schema-qualified name denotes, or NULL.';

CREATE FUNCTION guardian._jsonb_texts(p_value jsonb)
RETURNS text[]
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN jsonb_typeof(p_value) = 'array' THEN ARRAY(SELECT jsonb_array_elements_text(p_value)) END
$$;
COMMENT ON FUNCTION guardian._jsonb_texts(jsonb) IS 'Internal: a JSON array of strings as text[] (NULL for anything else).';

CREATE FUNCTION guardian._attnames(p_table regclass, p_attnums int2[])
RETURNS text[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ARRAY(SELECT a.attname::text
                   FROM unnest(p_attnums) WITH ORDINALITY AS k(attnum, ord)
                   JOIN pg_catalog.pg_attribute AS a ON a.attrelid = p_table AND a.attnum = k.attnum
                  ORDER BY k.ord)
$$;
COMMENT ON FUNCTION guardian._attnames(regclass, int2[]) IS 'Internal: column names for attribute numbers, in order.';

CREATE TYPE guardian.cleanup_edge AS (
    constraint_name text,
    child           regclass,
    parent          regclass,
    child_columns   text[],
    parent_columns  text[],
    on_delete       text,
    set_columns     text[]
);
COMMENT ON TYPE guardian.cleanup_edge IS
    'Internal: a foreign key as a cleanup sees it: child and parent tables and columns, ON DELETE action, columns it sets.';

CREATE FUNCTION guardian._cleanup_edges(p_roots regclass[])
RETURNS SETOF guardian.cleanup_edge
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_deletable regclass[] := ARRAY(SELECT DISTINCT guardian._table_root(r) FROM unnest(p_roots) AS r);
    v_more      regclass[];
BEGIN
    LOOP
        v_more := ARRAY(SELECT DISTINCT c.conrelid::regclass
                          FROM pg_catalog.pg_constraint AS c
                         WHERE c.contype = 'f' AND c.conparentid = 0 AND c.confdeltype = 'c'
                           AND c.confrelid = ANY (v_deletable) AND c.conrelid <> ALL (v_deletable));
        EXIT WHEN cardinality(v_more) = 0;
        v_deletable := v_deletable || v_more;
    END LOOP;
    RETURN QUERY
    SELECT c.conname::text, c.conrelid::regclass, c.confrelid::regclass,
           guardian._attnames(c.conrelid::regclass, c.conkey), guardian._attnames(c.confrelid::regclass, c.confkey),
           CASE c.confdeltype WHEN 'c' THEN 'cascade' WHEN 'n' THEN 'set null' WHEN 'd' THEN 'set default'
                              WHEN 'r' THEN 'restrict' ELSE 'no action' END,
           CASE WHEN c.confdeltype IN ('n', 'd')
                THEN guardian._attnames(c.conrelid::regclass, coalesce(c.confdelsetcols, c.conkey)) END
      FROM pg_catalog.pg_constraint AS c
     WHERE c.contype = 'f' AND c.conparentid = 0 AND c.confrelid = ANY (v_deletable)
     ORDER BY c.conrelid::regclass::text, c.conname;
END
$$;
COMMENT ON FUNCTION guardian._cleanup_edges(regclass[]) IS
    'Internal: the foreign keys a cleanup of rows in these tables has to honour (followed through ON DELETE CASCADE), with their ON DELETE action.';

-- Steps: first every SET NULL / SET DEFAULT (the referencing rows stay, their key goes), then
-- the deletes, children before parents. Tables that reference each other in a cycle form one
-- group, deleted by one statement (foreign keys are checked at its end). RESTRICT and NO
-- ACTION references become checks: a referencing row that is not itself removed blocks the
-- cleanup.
CREATE FUNCTION guardian._cleanup_steps(p_roots regclass[])
RETURNS TABLE (step integer, stmt_group integer, relid regclass, action text, columns text[], via text[],
               parent regclass)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_roots  regclass[] := ARRAY(SELECT DISTINCT guardian._table_root(r) FROM unnest(p_roots) AS r);
    v_edges  guardian.cleanup_edge[] := ARRAY(SELECT e FROM guardian._cleanup_edges(v_roots) AS e);
    v_edge   guardian.cleanup_edge;
    v_tables regclass[];
    v_placed regclass[] := '{}';
    v_group  regclass[];
    v_n      integer := 0;
    v_g      integer := 0;
    v_t      regclass;
BEGIN
    -- Deleted: the roots and every table reached through ON DELETE CASCADE.
    v_tables := ARRAY(SELECT DISTINCT x FROM (SELECT unnest(v_roots) AS x
                                              UNION SELECT e.child FROM unnest(v_edges) AS e
                                                     WHERE e.on_delete = 'cascade') AS t ORDER BY 1);

    FOR v_edge IN
        SELECT e.* FROM unnest(v_edges) AS e
         WHERE e.on_delete IN ('set null', 'set default')
         ORDER BY e.child::text, e.constraint_name
    LOOP
        v_n := v_n + 1;
        v_g := v_g + 1;
        step := v_n; stmt_group := v_g; relid := v_edge.child; action := v_edge.on_delete;
        columns := v_edge.set_columns; via := ARRAY[v_edge.constraint_name]; parent := v_edge.parent;
        RETURN NEXT;
    END LOOP;

    -- Children first: a table is placed once every other table referencing it is placed; a
    -- cycle is placed whole, as the strongly connected set of tables that reach each other.
    WHILE cardinality(v_placed) < cardinality(v_tables) LOOP
        SELECT ARRAY[t] INTO v_group
          FROM unnest(v_tables) AS t
         WHERE t <> ALL (v_placed)
           AND NOT EXISTS (SELECT FROM unnest(v_edges) AS e
                            WHERE e.parent = t AND e.child <> t
                              AND e.child = ANY (v_tables) AND e.child <> ALL (v_placed))
         ORDER BY t::text
         LIMIT 1;
        IF v_group IS NULL THEN
            -- Stuck on a cycle: take the first unplaced table's strongly connected set,
            -- provided nothing outside it still waits; else the next table's.
            FOR v_t IN SELECT t FROM unnest(v_tables) AS t WHERE t <> ALL (v_placed) ORDER BY t::text LOOP
                WITH RECURSIVE reach(a, b) AS (
                    SELECT e.child, e.parent FROM unnest(v_edges) AS e
                     WHERE e.child = ANY (v_tables) AND e.child <> ALL (v_placed)
                       AND e.parent = ANY (v_tables) AND e.parent <> ALL (v_placed)
                    UNION
                    SELECT r.a, e.parent FROM reach AS r JOIN unnest(v_edges) AS e ON e.child = r.b
                     WHERE e.parent = ANY (v_tables) AND e.parent <> ALL (v_placed))
                SELECT array_agg(s.x ORDER BY s.x::text) INTO v_group
                  FROM (SELECT v_t AS x
                        UNION SELECT r.b FROM reach AS r
                               WHERE r.a = v_t AND EXISTS (SELECT FROM reach AS r2 WHERE r2.a = r.b AND r2.b = v_t)) AS s;
                EXIT WHEN NOT EXISTS (
                    SELECT FROM unnest(v_edges) AS e
                     WHERE e.parent = ANY (v_group) AND e.child <> ALL (v_group)
                       AND e.child = ANY (v_tables) AND e.child <> ALL (v_placed));
            END LOOP;
        END IF;
        v_g := v_g + 1;
        FOREACH v_t IN ARRAY v_group LOOP
            v_n := v_n + 1;
            step := v_n; stmt_group := v_g; relid := v_t; action := 'delete'; columns := NULL;
            via := CASE WHEN v_t = ANY (v_roots) THEN ARRAY['contaminated'] ELSE '{}'::text[] END
                   || ARRAY(SELECT e.constraint_name FROM unnest(v_edges) AS e
                             WHERE e.child = v_t AND e.on_delete = 'cascade' ORDER BY e.constraint_name);
            parent := NULL;
            RETURN NEXT;
        END LOOP;
        v_placed := v_placed || v_group;
    END LOOP;

    FOR v_edge IN
        SELECT e.* FROM unnest(v_edges) AS e
         WHERE e.on_delete IN ('restrict', 'no action')
         ORDER BY e.child::text, e.constraint_name
    LOOP
        v_n := v_n + 1;
        step := v_n; stmt_group := NULL; relid := v_edge.child; action := 'blocked';
        columns := v_edge.child_columns; via := ARRAY[v_edge.constraint_name]; parent := v_edge.parent;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION guardian._cleanup_steps(regclass[]) IS
    'Internal: the steps of a cleanup of rows in these tables, from the catalog: SET NULL/SET DEFAULT updates, deletes children first (a cycle as one group), and RESTRICT/NO ACTION checks (action blocked).';

-- >>> sql/60_response/30_cleanup_rows.sql
-- The rows a cleanup touches, found with the rights of whoever asks (never the guardian's):
-- the contaminated records (roots), every row that references a removed row through ON
-- DELETE CASCADE (repeatedly), the rows whose key an ON DELETE SET NULL / SET DEFAULT
-- changes, and the rows that block the cleanup (RESTRICT / NO ACTION references from rows
-- that are not removed themselves). A row is named by where it is (tableoid, ctid): stable
-- inside one transaction once locked, which is how a capture uses it.
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

CREATE FUNCTION guardian._cleanup_collect(p_roots jsonb, p_lock boolean DEFAULT false)
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
BEGIN
    v_edges := ARRAY(SELECT e FROM guardian._cleanup_edges(v_tables) AS e);
    SELECT jsonb_agg(jsonb_build_object('step', s.step, 'relid', s.relid::oid, 'action', s.action, 'via', s.via))
      INTO v_steps FROM guardian._cleanup_steps(v_tables) AS s;

    -- The contaminated records, by the key their finding recorded.
    FOREACH v_table IN ARRAY v_tables LOOP
        v_name := (SELECT k FROM jsonb_object_keys(p_roots) AS k WHERE guardian._regclass_of(k) = v_table LIMIT 1);
        CONTINUE WHEN jsonb_array_length(p_roots -> v_name) = 0;
        v_step := (SELECT (s ->> 'step')::integer FROM jsonb_array_elements(v_steps) AS s
                    WHERE (s ->> 'relid')::oid = guardian._table_root(v_table) AND s ->> 'action' = 'delete');
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

    -- Follow the foreign keys from every newly removed row until nothing new is removed.
    v_frontier := v_rows;
    WHILE cardinality(v_frontier) > 0 LOOP
        v_next := '{}';
        FOR v_edge IN
            SELECT e.* FROM unnest(v_edges) AS e
             WHERE e.parent IN (SELECT f.relid FROM unnest(v_frontier) AS f)
             ORDER BY e.child::text, e.constraint_name
        LOOP
            v_step := (SELECT (s ->> 'step')::integer FROM jsonb_array_elements(v_steps) AS s
                        WHERE (s ->> 'relid')::oid = v_edge.child::oid
                          AND CASE v_edge.on_delete
                                  WHEN 'cascade' THEN s ->> 'action' = 'delete'
                                  WHEN 'set null' THEN s ->> 'action' = 'set null' AND s -> 'via' ? v_edge.constraint_name
                                  WHEN 'set default' THEN s ->> 'action' = 'set default' AND s -> 'via' ? v_edge.constraint_name
                                  ELSE s ->> 'action' = 'blocked' AND s -> 'via' ? v_edge.constraint_name
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
                CASE WHEN v_edge.on_delete IN ('restrict', 'no action') THEN '' ELSE v_lock END)
              INTO v_found
              USING ARRAY(SELECT f.row_tableoid FROM unnest(v_frontier) AS f WHERE f.relid = v_edge.parent ORDER BY f.row_ctid),
                    ARRAY(SELECT f.row_ctid FROM unnest(v_frontier) AS f WHERE f.relid = v_edge.parent ORDER BY f.row_ctid);
            IF v_edge.on_delete = 'cascade' THEN
                -- Only rows not already removed join the next round.
                v_found := ARRAY(SELECT n FROM unnest(coalesce(v_found, '{}')) AS n
                                  WHERE NOT EXISTS (SELECT FROM unnest(v_rows || v_next) AS o
                                                     WHERE o.row_tableoid = n.row_tableoid AND o.row_ctid = n.row_ctid
                                                       AND o.step = n.step));
                v_next := v_next || v_found;
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
COMMENT ON FUNCTION guardian._cleanup_collect(jsonb, boolean) IS
    'Internal: every row a cleanup of these contaminated records touches, by step, found with the caller''s rights; p_lock takes FOR UPDATE locks on the rows it will change (a capture).';

-- >>> sql/60_response/40_cleanup_script.sql
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

CREATE FUNCTION guardian._cleanup_counts(p_roots jsonb, p_rows guardian.cleanup_row[])
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- Rows per step, every step present (0 when none), keyed by step number.
    SELECT jsonb_object_agg(s.step::text, (SELECT count(*) FROM unnest(p_rows) AS r WHERE r.step = s.step))
      FROM guardian._cleanup_steps(guardian._cleanup_roots(p_roots)) AS s
$$;
COMMENT ON FUNCTION guardian._cleanup_counts(jsonb, guardian.cleanup_row[]) IS 'Internal: rows per cleanup step.';

CREATE FUNCTION guardian._plan_of(p_roots jsonb)
RETURNS TABLE (step integer, table_name text, action text, rows bigint, via text, detail text)
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
    v_rows := ARRAY(SELECT r FROM guardian._cleanup_collect(p_roots, false) AS r);
    v_given := (SELECT count(*) FROM jsonb_each(p_roots) AS t, jsonb_array_elements(t.value));
    v_found := (SELECT count(*) FROM unnest(v_rows) AS r WHERE r.root);
    RETURN QUERY
    SELECT s.step, s.relid::text, s.action, (SELECT count(*) FROM unnest(v_rows) AS r WHERE r.step = s.step),
           CASE WHEN s.via = ARRAY['contaminated'] THEN 'the contaminated records'
                ELSE array_to_string(s.via, ', ') || CASE s.action WHEN 'delete' THEN ' (ON DELETE CASCADE)'
                                                                   WHEN 'blocked' THEN ' (ON DELETE RESTRICT / NO ACTION)'
                                                                   ELSE format(' (ON DELETE %s)', upper(s.action)) END
           END,
           concat_ws('; ',
               CASE WHEN s.action IN ('set null', 'set default') THEN format('%s %s', array_to_string(s.columns, ', '),
                        CASE s.action WHEN 'set null' THEN 'set to NULL' ELSE 'set to its default' END) END,
               CASE WHEN s.action = 'blocked' AND EXISTS (SELECT FROM unnest(v_rows) AS r WHERE r.step = s.step)
                    THEN format('these rows reference removed rows of %s and are not removed themselves', s.parent) END,
               (SELECT 'e.g. ' || string_agg(x.row_key::text, ', ')
                  FROM (SELECT r.row_key FROM unnest(v_rows) AS r WHERE r.step = s.step ORDER BY r.row_key::text LIMIT 3) AS x),
               CASE WHEN s.via @> ARRAY['contaminated'] AND v_found < v_given
                    THEN format('%s of the %s contaminated records are already gone', v_given - v_found, v_given) END)
      FROM guardian._cleanup_steps(guardian._cleanup_roots(p_roots)) AS s
     ORDER BY s.step;
END
$$;
COMMENT ON FUNCTION guardian._plan_of(jsonb) IS 'Internal: the dry run of a cleanup of these contaminated records.';

CREATE FUNCTION guardian.cleanup_plan(p_alert uuid)
RETURNS TABLE (step integer, table_name text, action text, rows bigint, via text, detail text)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM guardian._plan_of(guardian._alert_roots(p_alert))
$$;
COMMENT ON FUNCTION guardian.cleanup_plan(uuid) IS
    'Dry run of the cleanup of an alert: each step (SET NULL updates, deletes in foreign-key order, RESTRICT checks) with the rows it would touch; changes nothing. Rows of a blocked step stop the cleanup.';

CREATE FUNCTION guardian.cleanup_plan(p_table regclass, p_record_ids text[] DEFAULT NULL)
RETURNS TABLE (step integer, table_name text, action text, rows bigint, via text, detail text)
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM guardian._plan_of(guardian._table_roots(p_table, p_record_ids))
$$;
COMMENT ON FUNCTION guardian.cleanup_plan(regclass, text[]) IS
    'Dry run of the cleanup of the contaminated records a scan finds in a table now (or only of these record ids, as a scan returned them); changes nothing.';

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

CREATE FUNCTION guardian._cleanup_step_list(p_roots jsonb, p_counts jsonb)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_agg(jsonb_build_object(
               'step', s.step, 'group', s.stmt_group, 'table', s.relid::text, 'relid', s.relid::oid,
               'action', s.action, 'columns', to_jsonb(s.columns), 'via', to_jsonb(s.via),
               'parent', s.parent::text, 'rows', coalesce((p_counts ->> s.step::text)::bigint, 0))
           ORDER BY s.step)
      FROM guardian._cleanup_steps(guardian._cleanup_roots(p_roots)) AS s
$$;
COMMENT ON FUNCTION guardian._cleanup_step_list(jsonb, jsonb) IS
    'Internal: the steps of a cleanup (from the catalog) with the row count each expects.';

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
    v_regen  text := CASE WHEN p_alert.id IS NOT NULL THEN format('SELECT guardian.cleanup_script(%L);', p_alert.id)
                          ELSE format('SELECT guardian.cleanup_script(%L::regclass);',
                                      (SELECT k FROM jsonb_object_keys(p_roots) AS k LIMIT 1)) END;
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
        || '--'::text
        || format('-- %4s  %-32s  %-26s  %6s  %s', 'step', 'table', 'action', 'rows', 'because of');
    FOR v_step IN SELECT s FROM jsonb_array_elements(p_steps) AS s ORDER BY (s ->> 'step')::integer LOOP
        v_lines := v_lines || guardian._comment(format('-- %4s  %-32s  %-26s  %6s  %s',
            v_step ->> 'step', v_step ->> 'table',
            CASE v_step ->> 'action'
                WHEN 'delete' THEN 'delete'
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
    p_batch uuid, p_alert uuid, p_roots jsonb, p_counts jsonb, p_automatic boolean DEFAULT false)
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
    IF EXISTS (SELECT FROM jsonb_each_text(p_counts) AS c WHERE c.value !~ '^[0-9]{1,12}$') THEN
        RAISE EXCEPTION 'row counts must be whole numbers: %', p_counts USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_steps := guardian._cleanup_step_list(p_roots, p_counts);
    SELECT jsonb_agg(s) INTO v_blocked FROM jsonb_array_elements(v_steps) AS s
     WHERE s ->> 'action' = 'blocked' AND (s ->> 'rows')::bigint > 0;
    IF v_blocked IS NOT NULL THEN
        RAISE EXCEPTION 'the cleanup is blocked: % referenced by rows that are not removed', (
                SELECT string_agg(format('%s row(s) of %s reference %s through %s (ON DELETE RESTRICT / NO ACTION)',
                                         s ->> 'rows', s ->> 'table', s ->> 'parent', s -> 'via' ->> 0), '; ')
                  FROM jsonb_array_elements(v_blocked) AS s)
            USING ERRCODE = 'dependent_objects_still_exist';
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
                   'cleanup_plan_query', format('SELECT * FROM guardian.cleanup_plan(%L);', p_alert))
         WHERE a.id = p_alert;
    END IF;
    RETURN v_row;
END
$$;
COMMENT ON FUNCTION guardian._register_cleanup_script(uuid, uuid, jsonb, jsonb, boolean) IS
    'Internal: renders a cleanup script from the catalog and the given records and counts, records it under its batch id (returned) and stores it with its alert (metadata.cleanup_script).';

CREATE FUNCTION guardian._cleanup_prepare(p_roots jsonb, p_alert uuid, p_automatic boolean DEFAULT false)
RETURNS guardian.cleanup_scripts
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_rows  guardian.cleanup_row[];
    v_given integer := (SELECT count(*) FROM jsonb_each(p_roots) AS t, jsonb_array_elements(t.value));
    v_left  jsonb;
    v_name  text;
BEGIN
    -- Planning reads and compares key values: a superuser would run the application's casts
    -- and operators on them with its rights.
    PERFORM guardian._refuse_app_code(ARRAY(SELECT guardian._regclass_of(k) FROM jsonb_object_keys(p_roots) AS k),
                                      'a cleanup plan', p_runs => ARRAY['values']);
    v_rows := ARRAY(SELECT r FROM guardian._cleanup_collect(p_roots, false) AS r);
    IF NOT EXISTS (SELECT FROM unnest(v_rows) AS r WHERE r.root) THEN
        v_name := (SELECT string_agg(k, ', ') FROM jsonb_object_keys(p_roots) AS k);
        RAISE EXCEPTION 'none of the % contaminated record(s) is in % any more', v_given, v_name
            USING ERRCODE = 'no_data_found',
                  DETAIL = 'They were deleted, changed or already quarantined since they were found; there is nothing to clean up.',
                  HINT = CASE WHEN p_alert IS NOT NULL
                              THEN format('Close the alert: SELECT guardian.resolve_alert(%L, ''rows already removed'');', p_alert)
                              ELSE 'Nothing to do.' END;
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
                                             guardian._cleanup_counts(v_left, v_rows), p_automatic);
END
$$;
COMMENT ON FUNCTION guardian._cleanup_prepare(jsonb, uuid, boolean) IS
    'Internal: plans a cleanup of these records with the caller''s rights and registers its script.';

CREATE FUNCTION guardian.cleanup_script(p_alert uuid)
RETURNS text
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (guardian._cleanup_prepare(guardian._alert_roots(p_alert), p_alert)).script
$$;
COMMENT ON FUNCTION guardian.cleanup_script(uuid) IS
    'The cleanup script for a contamination alert: removes its records and the rows that depend on them in foreign-key order, in one transaction, quarantining everything first and aborting if the counts it expects differ. Stored with the alert (metadata.cleanup_script). Review it, then run it (psql -f).';

CREATE FUNCTION guardian.cleanup_script(p_table regclass, p_record_ids text[] DEFAULT NULL)
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
    RETURN (guardian._cleanup_prepare(v_roots, NULL)).script;
END
$$;
COMMENT ON FUNCTION guardian.cleanup_script(regclass, text[]) IS
    'The cleanup script for the contaminated records a scan finds in a table now, or only for these record ids (as guardian.scan() returned them).';

-- >>> sql/60_response/50_cleanup_run.sql
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
    INSERT INTO guardian.quarantine_batches (id, alert_id, environment, automatic, steps)
    VALUES (p_batch, v_script.alert_id, guardian.current_environment(), v_script.automatic,
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
                  HINT = coalesce(format('Generate it again: SELECT guardian.cleanup_script(%L);', v_script.alert_id),
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
                              ELSE coalesce(format('For what is contaminated now: SELECT guardian.cleanup_script(%L);', v_script.alert_id),
                                            'Generate a new script with guardian.cleanup_script().') END;
    END IF;

    -- A superuser would run the application's triggers, casts and operators with its rights.
    PERFORM guardian._refuse_app_code(
        ARRAY(SELECT DISTINCT (s ->> 'relid')::oid::regclass FROM jsonb_array_elements(v_script.steps) AS s),
        format('cleanup script %s', p_batch), p_runs => ARRAY['write', 'values']);
    -- Lock the rows and count them again: the data may have changed since generation.
    v_rows := ARRAY(SELECT r FROM guardian._cleanup_collect(p_roots, true) AS r);
    v_counts := guardian._cleanup_counts(p_roots, v_rows);
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
                  HINT = coalesce(format('Generate it again: SELECT guardian.cleanup_script(%L);', v_script.alert_id),
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
                  HINT = coalesce(format('Generate the script again: SELECT guardian.cleanup_script(%L);', v_batch.alert_id),
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
                       CASE WHEN v_batch.automatic THEN 'auto-cleanup' ELSE 'cleanup' END, v_alert.removed, p_batch, p_batch));
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

-- >>> sql/60_response/60_restore.sql
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
       SET status = 'restored', restored_at = clock_timestamp(), restored_by = SESSION_USER
     WHERE b.id = p_batch AND b.status = 'applied';
    PERFORM guardian.raise_alert('QUARANTINE_RESTORED', 'INFO', p_summary, NULL, NULL,
                                 jsonb_build_object('batch', p_batch, 'restored_by', SESSION_USER),
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

-- >>> sql/60_response/70_lockdown.sql
-- Lockdown: the emergency brake. Application roles lose their write privileges (INSERT,
-- UPDATE, DELETE, TRUNCATE on every table and view outside the system and guardian schemas,
-- table and column grants alike) and get default_transaction_read_only in this database;
-- optionally their sessions are ended. Superusers, the guardian's roles and admins keep
-- working. Everything taken is written down first, so guardian.unlock() gives back exactly
-- that; the state is rows plus the catalog, so it survives a restart.
--
-- Taking and giving back privileges on tables the guardian does not own, and changing other
-- roles' settings, needs the installing superuser: three small helpers below stay owned by it
-- (99_finish/10_ownership.sql leaves them out). Each does one fixed thing, calls nothing but
-- pg_catalog (a function guardian_owner owns could be replaced by it), refuses superusers,
-- the guardian's roles, their members and the system and guardian schemas, and only
-- guardian_owner may execute it.
CREATE TABLE guardian.lockdowns (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    environment    text NOT NULL,
    reason         text NOT NULL,
    automatic      boolean NOT NULL DEFAULT false,
    alert_id       uuid REFERENCES guardian.monitoring_alerts (id) ON DELETE SET NULL,
    roles          text[] NOT NULL,
    options        jsonb NOT NULL,
    not_revoked    jsonb NOT NULL DEFAULT '[]',
    sessions_ended integer NOT NULL DEFAULT 0,
    started_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
    started_by     text NOT NULL DEFAULT SESSION_USER,
    ended_at       timestamptz,
    ended_by       text,
    end_note       text,
    changing_xid   bigint,
    CONSTRAINT lockdowns_reason_chk CHECK (pg_catalog.btrim(reason) <> ''),
    CONSTRAINT lockdowns_ended_chk CHECK (ended_by IS NULL OR ended_at IS NOT NULL)
);
COMMENT ON TABLE guardian.lockdowns IS
    'Every lockdown: why, automatic or not, which application roles, options, what could not be taken (not_revoked), who started and ended it. At most one is active (ended_at NULL).';
COMMENT ON COLUMN guardian.lockdowns.changing_xid IS
    'Set while lockdown() or unlock() runs: their own GRANT and REVOKE are recorded here, not raised as privilege-change alerts.';
SELECT pg_catalog.pg_extension_config_dump('guardian.lockdowns', '');
SELECT pg_catalog.pg_extension_config_dump('guardian.lockdowns_id_seq', '');
CREATE UNIQUE INDEX lockdowns_active_idx ON guardian.lockdowns ((true)) WHERE ended_at IS NULL;

CREATE TABLE guardian.lockdown_changes (
    lockdown_id   bigint NOT NULL REFERENCES guardian.lockdowns (id) ON DELETE CASCADE,
    seq           integer NOT NULL,
    kind          text NOT NULL,
    role_oid      oid NOT NULL,
    role_name     text NOT NULL,
    relid         regclass,
    table_name    text,
    column_name   text,
    privileges    text[],
    grantable     boolean,
    previous      text,
    restored      boolean NOT NULL DEFAULT false,
    restore_note  text,
    CONSTRAINT lockdown_changes_pkey PRIMARY KEY (lockdown_id, seq),
    CONSTRAINT lockdown_changes_kind_chk CHECK (kind IN ('privilege', 'read_only')),
    CONSTRAINT lockdown_changes_privilege_chk CHECK (kind <> 'privilege' OR (relid IS NOT NULL AND pg_catalog.cardinality(privileges) > 0))
);
COMMENT ON TABLE guardian.lockdown_changes IS
    'What a lockdown took, to give it back: write privileges revoked (table or column, with grant option or not) and each role''s previous default_transaction_read_only in this database (previous NULL: none was set).';
SELECT pg_catalog.pg_extension_config_dump('guardian.lockdown_changes', '');

CREATE FUNCTION guardian._lockdown_privilege(
    p_grant boolean, p_table regclass, p_role oid, p_privileges text[], p_column text DEFAULT NULL,
    p_grant_option boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_role  pg_catalog.pg_roles;
    v_class pg_catalog.pg_class;
    v_nsp   name;
BEGIN
    -- Owned by the installing superuser: pg_catalog only, and every input checked.
    SELECT * INTO v_role FROM pg_catalog.pg_roles AS r WHERE r.oid = p_role;
    IF NOT FOUND OR v_role.rolsuper OR v_role.rolname::text LIKE 'guardian\_%'
       OR pg_catalog.pg_has_role(p_role, 'guardian_admin', 'MEMBER')
       OR pg_catalog.pg_has_role(p_role, 'guardian_owner', 'MEMBER') THEN
        RAISE EXCEPTION 'lockdown may not change the privileges of role %', coalesce(v_role.rolname::text, p_role::text)
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT * INTO v_class FROM pg_catalog.pg_class AS c WHERE c.oid = p_table;
    SELECT n.nspname INTO v_nsp FROM pg_catalog.pg_namespace AS n WHERE n.oid = v_class.relnamespace;
    IF v_class.oid IS NULL OR v_class.relkind NOT IN ('r', 'p', 'f', 'v')
       OR v_nsp IN ('pg_catalog', 'information_schema', 'guardian', 'cron')
       OR v_nsp::text LIKE 'pg\_%' OR v_nsp::text LIKE 'guardian\_%' THEN
        RAISE EXCEPTION 'lockdown may not change privileges on %', p_table USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF p_privileges IS NULL OR cardinality(p_privileges) = 0
       OR NOT p_privileges <@ (CASE WHEN p_column IS NULL THEN ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']
                                    ELSE ARRAY['INSERT', 'UPDATE'] END) THEN
        RAISE EXCEPTION 'lockdown only changes write privileges, not %', p_privileges USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_column IS NOT NULL AND NOT EXISTS (SELECT FROM pg_catalog.pg_attribute AS a
                                             WHERE a.attrelid = p_table AND a.attname = p_column
                                               AND a.attnum > 0 AND NOT a.attisdropped) THEN
        RAISE EXCEPTION 'table % has no column %', p_table, p_column USING ERRCODE = 'undefined_column';
    END IF;
    EXECUTE pg_catalog.format('%s %s ON TABLE %s %s %I%s',
        CASE WHEN p_grant THEN 'GRANT' ELSE 'REVOKE' END,
        (SELECT pg_catalog.string_agg(p || CASE WHEN p_column IS NULL THEN '' ELSE pg_catalog.format(' (%I)', p_column) END, ', ')
           FROM pg_catalog.unnest(p_privileges) AS p),
        p_table, CASE WHEN p_grant THEN 'TO' ELSE 'FROM' END, v_role.rolname,
        CASE WHEN p_grant AND p_grant_option THEN ' WITH GRANT OPTION' ELSE '' END);
END
$$;
COMMENT ON FUNCTION guardian._lockdown_privilege(boolean, regclass, oid, text[], text, boolean) IS
    'Internal, owned by the installing superuser, executable by guardian_owner only: GRANT or REVOKE write privileges (INSERT, UPDATE, DELETE, TRUNCATE; a column''s INSERT, UPDATE) on an application table to or from a role that is neither a superuser nor the guardian''s nor an admin.';

CREATE FUNCTION guardian._lockdown_read_only(p_role oid, p_value text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_role pg_catalog.pg_roles;
BEGIN
    SELECT * INTO v_role FROM pg_catalog.pg_roles AS r WHERE r.oid = p_role;
    IF NOT FOUND OR v_role.rolsuper OR v_role.rolname::text LIKE 'guardian\_%'
       OR pg_catalog.pg_has_role(p_role, 'guardian_admin', 'MEMBER')
       OR pg_catalog.pg_has_role(p_role, 'guardian_owner', 'MEMBER') THEN
        RAISE EXCEPTION 'lockdown may not change the settings of role %', coalesce(v_role.rolname::text, p_role::text)
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF p_value IS NULL THEN
        EXECUTE pg_catalog.format('ALTER ROLE %I IN DATABASE %I RESET default_transaction_read_only',
                                  v_role.rolname, pg_catalog.current_database());
    ELSIF pg_catalog.lower(p_value) IN ('on', 'off', 'true', 'false', 'yes', 'no', '1', '0') THEN
        EXECUTE pg_catalog.format('ALTER ROLE %I IN DATABASE %I SET default_transaction_read_only = %L',
                                  v_role.rolname, pg_catalog.current_database(), pg_catalog.lower(p_value));
    ELSE
        RAISE EXCEPTION 'invalid value % for default_transaction_read_only', p_value USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;
COMMENT ON FUNCTION guardian._lockdown_read_only(oid, text) IS
    'Internal, owned by the installing superuser, executable by guardian_owner only: sets (or with NULL resets) default_transaction_read_only of a role that is neither a superuser nor the guardian''s nor an admin, in this database only.';

CREATE FUNCTION guardian._lockdown_end_sessions(p_roles oid[])
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count integer;
BEGIN
    SELECT pg_catalog.count(*) FILTER (WHERE pg_catalog.pg_terminate_backend(a.pid))::integer INTO v_count
      FROM pg_catalog.pg_stat_activity AS a
      JOIN pg_catalog.pg_roles AS r ON r.oid = a.usesysid
     WHERE a.datname = pg_catalog.current_database() AND a.backend_type = 'client backend'
       AND a.pid <> pg_catalog.pg_backend_pid() AND a.usesysid = ANY (p_roles)
       AND NOT r.rolsuper AND r.rolname::text NOT LIKE 'guardian\_%'
       AND NOT pg_catalog.pg_has_role(r.oid, 'guardian_admin', 'MEMBER')
       AND NOT pg_catalog.pg_has_role(r.oid, 'guardian_owner', 'MEMBER');
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION guardian._lockdown_end_sessions(oid[]) IS
    'Internal, owned by the installing superuser, executable by guardian_owner only: ends the sessions of these roles in this database (never its own, a superuser''s, the guardian''s or an admin''s). Returns how many.';

CREATE FUNCTION guardian._lockdown_in_progress()
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (SELECT FROM guardian.lockdowns AS l WHERE l.changing_xid = txid_current_if_assigned())
$$;
COMMENT ON FUNCTION guardian._lockdown_in_progress() IS
    'Internal: is this transaction inside guardian.lockdown() or guardian.unlock()? (Their GRANT/REVOKE are not privilege-change alerts.)';

CREATE FUNCTION guardian._lockdown_renew_snapshot()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- The privilege_changes check compares with a snapshot: what lockdown() or unlock() just
    -- changed (and wrote down) is the new normal, not a change to report.
    IF to_regprocedure('guardian._privilege_changes(text)') IS NOT NULL THEN
        PERFORM count(*) FROM guardian._privilege_changes('lockdown');
    END IF;
END
$$;
COMMENT ON FUNCTION guardian._lockdown_renew_snapshot() IS
    'Internal: renews the privilege snapshot after a lockdown or unlock changed privileges.';

CREATE FUNCTION guardian._response_flag(p_key text, p_default boolean)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- Only a JSON true or false counts; anything else is the default.
    SELECT CASE guardian.setting(p_key) WHEN 'true'::jsonb THEN true WHEN 'false'::jsonb THEN false ELSE p_default END
$$;
COMMENT ON FUNCTION guardian._response_flag(text, boolean) IS 'Internal: a boolean auto-response setting of this environment.';

-- Application roles: the configured lockdown.roles, else every login role that is neither a
-- superuser, nor the guardian's (or a member of its roles), nor an admin (lockdown.admin_roles
-- or a member of one).
CREATE FUNCTION guardian._lockdown_protected(p_role oid)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.rolsuper OR r.rolname::text LIKE 'guardian\_%'
        OR pg_has_role(r.oid, 'guardian_admin', 'MEMBER') OR pg_has_role(r.oid, 'guardian_owner', 'MEMBER')
        OR pg_has_role(r.oid, 'guardian_relay', 'MEMBER')
        OR EXISTS (SELECT FROM pg_catalog.pg_roles AS a
                    WHERE a.rolname = ANY (coalesce(guardian._jsonb_texts(guardian.setting('lockdown.admin_roles')), '{}'))
                      AND pg_has_role(r.oid, a.oid, 'MEMBER'))
      FROM pg_catalog.pg_roles AS r
     WHERE r.oid = p_role
$$;
COMMENT ON FUNCTION guardian._lockdown_protected(oid) IS
    'Internal: does lockdown leave this role alone (superuser, the guardian''s, an admin)?';

CREATE FUNCTION guardian.lockdown_roles()
RETURNS TABLE (role_name text, locked boolean, reason text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH configured AS (SELECT guardian._jsonb_texts(guardian.setting('lockdown.roles')) AS names)
    SELECT r.rolname::text,
           NOT guardian._lockdown_protected(r.oid)
               AND (c.names IS NULL OR r.rolname = ANY (c.names)),
           CASE WHEN r.rolsuper THEN 'superuser'
                WHEN guardian._lockdown_protected(r.oid) THEN 'guardian role or admin'
                WHEN c.names IS NOT NULL AND r.rolname = ANY (c.names) THEN 'listed in lockdown.roles'
                WHEN c.names IS NOT NULL THEN 'not listed in lockdown.roles'
                ELSE 'application role (login, not superuser, guardian or admin)' END
      FROM pg_catalog.pg_roles AS r, configured AS c
     WHERE r.rolcanlogin OR (c.names IS NOT NULL AND r.rolname = ANY (c.names))
     ORDER BY 2 DESC, 1
$$;
COMMENT ON FUNCTION guardian.lockdown_roles() IS
    'Which roles a lockdown would lock (the configured lockdown.roles, else every login role that is not a superuser, the guardian''s or an admin) and why each is in or out.';

CREATE FUNCTION guardian._lockdown_apply(p_reason text, p_automatic boolean)
RETURNS guardian.lockdowns
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_active   guardian.lockdowns;
    v_lockdown guardian.lockdowns;
    v_apps     oid[];
    v_targets  oid[];
    v_options  jsonb;
    v_item     record;
    v_seq      integer := 0;
    v_not      jsonb := '[]';
    v_setting  text;
    v_revoked  integer := 0;
    v_sessions integer := 0;
    v_alert    uuid;
BEGIN
    IF p_reason IS NULL OR btrim(p_reason) = '' THEN
        RAISE EXCEPTION 'a lockdown needs a reason'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Say why, e.g. SELECT guardian.lockdown(''test data flooding patients from the seed job'');';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('guardian.lockdown', 0));
    SELECT * INTO v_active FROM guardian.lockdowns AS l WHERE l.ended_at IS NULL;
    IF FOUND THEN
        RAISE EXCEPTION '% is already locked down (since % by %: %)', v_active.environment,
                        to_char(v_active.started_at, 'YYYY-MM-DD HH24:MI:SS TZ'), v_active.started_by, v_active.reason
            USING ERRCODE = 'object_in_use',
                  DETAIL = 'Nothing was changed.',
                  HINT = 'Lift it first with SELECT guardian.unlock(); (pg-guardian lockdown unlock), then lock down again.';
    END IF;
    v_options := jsonb_build_object('revoke', guardian._response_flag('lockdown.revoke', true),
                                    'read_only', guardian._response_flag('lockdown.read_only', true),
                                    'end_sessions', guardian._response_flag('lockdown.end_sessions', false));
    v_apps := ARRAY(SELECT r.oid FROM guardian.lockdown_roles() AS l JOIN pg_catalog.pg_roles AS r ON r.rolname = l.role_name
                     WHERE l.locked ORDER BY 1);
    -- Their privileges may also come from group roles; those are taken too, unless a role
    -- that keeps working holds them as well.
    v_targets := v_apps || ARRAY(
        SELECT g.oid FROM pg_catalog.pg_roles AS g
         WHERE g.oid <> ALL (v_apps) AND NOT g.rolcanlogin AND NOT guardian._lockdown_protected(g.oid)
           AND EXISTS (SELECT FROM unnest(v_apps) AS a WHERE pg_has_role(a, g.oid, 'MEMBER'))
           AND NOT EXISTS (SELECT FROM pg_catalog.pg_roles AS p
                            WHERE p.rolcanlogin AND p.oid <> ALL (v_apps) AND NOT p.rolsuper
                              AND pg_has_role(p.oid, g.oid, 'MEMBER')));

    INSERT INTO guardian.lockdowns (environment, reason, automatic, roles, options, changing_xid, started_by)
    VALUES (guardian.current_environment(), btrim(p_reason), p_automatic,
            ARRAY(SELECT r.rolname::text FROM pg_catalog.pg_roles AS r WHERE r.oid = ANY (v_targets) ORDER BY 1),
            v_options, txid_current(), CASE WHEN p_automatic THEN 'pg_guardian' ELSE SESSION_USER END)
    RETURNING * INTO v_lockdown;

    -- Privilege changes made before now are reported as usual; the lockdown's own are not.
    IF to_regprocedure('guardian._privilege_changes(text)') IS NOT NULL AND guardian._check_enabled('privilege_changes') THEN
        PERFORM guardian._raise_finding(f) FROM guardian._privilege_changes('scheduled scan') AS f;
    END IF;

    IF (v_options ->> 'revoke')::boolean THEN
        FOR v_item IN
            WITH rels AS (
                SELECT c.oid, c.relowner, c.relacl
                  FROM pg_catalog.pg_class AS c
                  JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
                 WHERE c.relkind IN ('r', 'p', 'f', 'v')
                   AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'guardian', 'cron')
                   AND n.nspname NOT LIKE 'pg\_%' AND n.nspname NOT LIKE 'guardian\_%'),
            items AS (
                SELECT r.oid AS relid, NULL::text AS column_name, a.grantor, a.grantee, a.privilege_type, a.is_grantable,
                       r.relowner, r.relacl AS acl
                  FROM rels AS r, aclexplode(coalesce(r.relacl, acldefault('r', r.relowner))) AS a
                UNION ALL
                SELECT r.oid, att.attname::text, a.grantor, a.grantee, a.privilege_type, a.is_grantable, r.relowner, att.attacl
                  FROM rels AS r
                  JOIN pg_catalog.pg_attribute AS att ON att.attrelid = r.oid AND att.attnum > 0
                                                      AND NOT att.attisdropped AND att.attacl IS NOT NULL,
                       aclexplode(att.attacl) AS a)
            SELECT i.relid::regclass AS relid, i.column_name, i.grantee, i.is_grantable,
                   array_agg(i.privilege_type ORDER BY i.privilege_type) AS privileges,
                   CASE WHEN i.grantee = 0 THEN 'granted to PUBLIC, which admins hold too'
                        WHEN i.grantor <> i.relowner THEN format('granted by %s, not by the owner', pg_get_userbyid(i.grantor))
                        WHEN i.is_grantable AND EXISTS (SELECT FROM aclexplode(i.acl) AS d
                                                         WHERE d.grantor = i.grantee AND d.grantee <> i.grantee)
                             THEN 'passed on to other roles (WITH GRANT OPTION)'
                   END AS keep_reason
              FROM items AS i
             WHERE i.privilege_type IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE')
               AND (i.grantee = ANY (v_targets) OR i.grantee = 0)
             GROUP BY 1, 2, 3, 4, 6
             -- column grants first: a table-level REVOKE takes them too.
             ORDER BY 1, 2 NULLS LAST, 3
        LOOP
            IF v_item.keep_reason IS NOT NULL THEN
                v_not := v_not || jsonb_build_object('table', v_item.relid::text, 'column', v_item.column_name,
                    'role', CASE WHEN v_item.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(v_item.grantee)::text END,
                    'privileges', to_jsonb(v_item.privileges), 'reason', v_item.keep_reason);
                CONTINUE;
            END IF;
            v_seq := v_seq + 1;
            INSERT INTO guardian.lockdown_changes
                (lockdown_id, seq, kind, role_oid, role_name, relid, table_name, column_name, privileges, grantable)
            VALUES (v_lockdown.id, v_seq, 'privilege', v_item.grantee, pg_get_userbyid(v_item.grantee), v_item.relid,
                    v_item.relid::text, v_item.column_name, v_item.privileges, v_item.is_grantable);
            PERFORM guardian._lockdown_privilege(false, v_item.relid, v_item.grantee, v_item.privileges, v_item.column_name);
            v_revoked := v_revoked + 1;
        END LOOP;
    END IF;

    IF (v_options ->> 'read_only')::boolean THEN
        FOR v_item IN SELECT r.oid, r.rolname FROM pg_catalog.pg_roles AS r WHERE r.oid = ANY (v_apps) AND r.rolcanlogin ORDER BY r.rolname LOOP
            SELECT substr(c, length('default_transaction_read_only=') + 1) INTO v_setting
              FROM pg_catalog.pg_db_role_setting AS s, unnest(s.setconfig) AS c
             WHERE s.setrole = v_item.oid
               AND s.setdatabase = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = current_database())
               AND c LIKE 'default\_transaction\_read\_only=%';
            v_seq := v_seq + 1;
            INSERT INTO guardian.lockdown_changes (lockdown_id, seq, kind, role_oid, role_name, previous)
            VALUES (v_lockdown.id, v_seq, 'read_only', v_item.oid, v_item.rolname, v_setting);
            PERFORM guardian._lockdown_read_only(v_item.oid, 'on');
            v_setting := NULL;
        END LOOP;
    END IF;

    IF (v_options ->> 'end_sessions')::boolean AND cardinality(v_apps) > 0 THEN
        v_sessions := guardian._lockdown_end_sessions(v_apps);
    END IF;

    v_alert := guardian.raise_alert(
        'LOCKDOWN', CASE WHEN p_automatic THEN 'CRITICAL' ELSE 'HIGH' END,
        format('%s locked down%s by %s: %s. %s application role(s) (%s) lost %s write grant(s)%s%s; unlock with SELECT guardian.unlock();',
               v_lockdown.environment, CASE WHEN p_automatic THEN ' automatically' ELSE '' END, v_lockdown.started_by,
               v_lockdown.reason, cardinality(v_lockdown.roles), coalesce(nullif(array_to_string(v_lockdown.roles, ', '), ''), 'none found'),
               v_revoked,
               CASE WHEN (v_options ->> 'read_only')::boolean THEN ' and are read-only in new sessions' ELSE '' END,
               CASE WHEN v_sessions > 0 THEN format('; %s session(s) ended', v_sessions) ELSE '' END),
        NULL, NULL,
        jsonb_build_object('lockdown_id', v_lockdown.id, 'automatic', p_automatic, 'reason', v_lockdown.reason,
                           'roles', to_jsonb(v_lockdown.roles), 'revoked', v_revoked, 'options', v_options,
                           'sessions_ended', v_sessions, 'not_revoked', v_not,
                           'unlock_command', 'SELECT guardian.unlock();'),
        md5('LOCKDOWN:' || v_lockdown.id || ':' || v_lockdown.environment));
    PERFORM guardian._lockdown_renew_snapshot();
    UPDATE guardian.lockdowns AS l
       SET changing_xid = NULL, not_revoked = v_not, sessions_ended = v_sessions, alert_id = v_alert
     WHERE l.id = v_lockdown.id
    RETURNING * INTO v_lockdown;
    RETURN v_lockdown;
END
$$;
COMMENT ON FUNCTION guardian._lockdown_apply(text, boolean) IS
    'Internal: takes the application roles'' write privileges and makes them read-only (as configured), writing down everything taken; raises LOCKDOWN.';

CREATE FUNCTION guardian.lockdown(p_reason text)
RETURNS guardian.lockdowns
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT guardian._lockdown_apply(p_reason, false)
$$;
COMMENT ON FUNCTION guardian.lockdown(text) IS
    'Emergency brake: application roles (lockdown.roles, else every login role that is not a superuser, the guardian''s or an admin) lose INSERT/UPDATE/DELETE/TRUNCATE and become read-only in new sessions (lockdown.revoke, lockdown.read_only; lockdown.end_sessions also ends their sessions); admins keep working. Refused when already locked down. Raises a LOCKDOWN alert; undo with guardian.unlock().';

CREATE FUNCTION guardian.unlock(p_note text DEFAULT NULL)
RETURNS guardian.lockdowns
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_lockdown guardian.lockdowns;
    v_change   guardian.lockdown_changes;
    v_current  text;
    v_note     text;
    v_restored boolean;
    v_notes    text[] := '{}';
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('guardian.lockdown', 0));
    SELECT * INTO v_lockdown FROM guardian.lockdowns AS l WHERE l.ended_at IS NULL FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION '% is not locked down', guardian.current_environment()
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'See past lockdowns with: SELECT id, reason, started_at, ended_at FROM guardian.lockdowns ORDER BY id DESC;';
    END IF;
    UPDATE guardian.lockdowns AS l SET changing_xid = txid_current() WHERE l.id = v_lockdown.id;

    -- Give back exactly what was taken; what cannot be given back is said, not skipped silently.
    FOR v_change IN
        SELECT * FROM guardian.lockdown_changes AS c
         WHERE c.lockdown_id = v_lockdown.id AND NOT c.restored
         ORDER BY c.relid::oid NULLS LAST, c.column_name NULLS FIRST, c.seq
    LOOP
        v_note := NULL;
        v_restored := false;
        BEGIN
            IF v_change.kind = 'privilege' THEN
                IF NOT EXISTS (SELECT FROM pg_catalog.pg_class AS t WHERE t.oid = v_change.relid) THEN
                    v_note := format('table %s was dropped during the lockdown', v_change.table_name);
                ELSIF NOT EXISTS (SELECT FROM pg_catalog.pg_roles AS r WHERE r.oid = v_change.role_oid) THEN
                    v_note := format('role %s was dropped during the lockdown', v_change.role_name);
                ELSE
                    PERFORM guardian._lockdown_privilege(true, v_change.relid, v_change.role_oid, v_change.privileges,
                                                         v_change.column_name, v_change.grantable);
                    v_restored := true;
                END IF;
            ELSE
                SELECT substr(c, length('default_transaction_read_only=') + 1) INTO v_current
                  FROM pg_catalog.pg_db_role_setting AS s, unnest(s.setconfig) AS c
                 WHERE s.setrole = v_change.role_oid
                   AND s.setdatabase = (SELECT d.oid FROM pg_catalog.pg_database AS d WHERE d.datname = current_database())
                   AND c LIKE 'default\_transaction\_read\_only=%';
                IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles AS r WHERE r.oid = v_change.role_oid) THEN
                    v_note := format('role %s was dropped during the lockdown', v_change.role_name);
                ELSIF v_current IS DISTINCT FROM 'on' THEN
                    v_note := format('default_transaction_read_only of %s was changed to %s during the lockdown; left as it is',
                                                    v_change.role_name, coalesce(v_current, 'nothing'));
                ELSE
                    PERFORM guardian._lockdown_read_only(v_change.role_oid, v_change.previous);
                    v_restored := true;
                END IF;
                v_current := NULL;
            END IF;
        EXCEPTION WHEN OTHERS THEN
            v_note := SQLERRM;
        END;
        UPDATE guardian.lockdown_changes AS c SET restored = v_restored, restore_note = v_note
         WHERE c.lockdown_id = v_change.lockdown_id AND c.seq = v_change.seq;
        IF v_note IS NOT NULL THEN
            v_notes := v_notes || v_note;
        END IF;
    END LOOP;

    PERFORM guardian._lockdown_renew_snapshot();
    UPDATE guardian.lockdowns AS l
       SET ended_at = clock_timestamp(), ended_by = SESSION_USER, end_note = p_note, changing_xid = NULL
     WHERE l.id = v_lockdown.id
    RETURNING * INTO v_lockdown;
    IF v_lockdown.alert_id IS NOT NULL THEN
        PERFORM guardian.resolve_alert(v_lockdown.alert_id, coalesce(p_note, format('unlocked by %s', SESSION_USER)));
    END IF;
    PERFORM guardian.raise_alert(
        'LOCKDOWN_LIFTED', CASE WHEN cardinality(v_notes) > 0 THEN 'HIGH' ELSE 'INFO' END,
        format('%s unlocked by %s after %s%s', v_lockdown.environment, SESSION_USER,
               date_trunc('second', v_lockdown.ended_at - v_lockdown.started_at),
               CASE WHEN cardinality(v_notes) > 0 THEN format('; not restored: %s', array_to_string(v_notes, '; '))
                    ELSE '; every privilege and setting it took is back' END),
        NULL, NULL,
        jsonb_build_object('lockdown_id', v_lockdown.id, 'note', p_note, 'not_restored', to_jsonb(v_notes)),
        md5('LOCKDOWN_LIFTED:' || v_lockdown.id));
    RETURN v_lockdown;
END
$$;
COMMENT ON FUNCTION guardian.unlock(text) IS
    'Lift the active lockdown: gives back exactly the privileges and settings it took (a dropped table or role, or a setting changed meanwhile, is named in the LOCKDOWN_LIFTED alert), resolves the LOCKDOWN alert.';

CREATE VIEW guardian.lockdown_status AS
SELECT l.id, l.environment, l.reason, l.automatic, l.started_at, l.started_by, l.roles, l.options,
       (SELECT pg_catalog.count(*) FROM guardian.lockdown_changes AS c WHERE c.lockdown_id = l.id AND c.kind = 'privilege') AS revoked,
       (SELECT pg_catalog.count(*) FROM guardian.lockdown_changes AS c WHERE c.lockdown_id = l.id AND c.kind = 'read_only') AS read_only_roles,
       l.not_revoked, l.sessions_ended, l.alert_id
  FROM guardian.lockdowns AS l
 WHERE l.ended_at IS NULL;
COMMENT ON VIEW guardian.lockdown_status IS
    'The active lockdown, if any: why, since when, by whom, which roles, how many grants were taken and what could not be.';

-- >>> sql/60_response/80_auto_response.sql
-- Auto-response, per environment (guardian.settings): when a transaction that wrote test data
-- commits, the guardian
--   1. quarantines the records found by rules marked safe_for_automation, with the rows that
--      depend on them (auto_cleanup.enabled, the design's AUTO_CLEANUP_ENABLED; off by
--      default, never for other rules, never more than auto_cleanup.max_rows rows, never
--      deleting outright: it runs the same cleanup a script would, quarantine first);
--   2. stores a cleanup script with each contamination alert still open
--      (cleanup.auto_script, on by default), so that the relay's Slack button and email have it;
--   3. locks the environment down when CRITICAL test data written within
--      lockdown.window_minutes affects more than lockdown.threshold records (lockdown.auto,
--      the design's LOCKDOWN_THRESHOLD; off by default).
-- It runs in a deferred constraint trigger, at commit, so it sees the whole transaction, and
-- with the rights of the committing session: the guardian never reads or deletes application
-- rows with its own. Nothing it does can fail the application's commit: a failure becomes an
-- alert (or, failing that, a WARNING).
CREATE FUNCTION guardian.set_response_setting(p_key text, p_value jsonb, p_environment text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_env     text := coalesce(p_environment, guardian.current_environment());
    v_old     jsonb;
    v_bad     text;
    v_route   jsonb;
BEGIN
    IF v_env <> '*' AND v_env !~ '^[a-z][a-z0-9_-]{0,62}$' THEN
        RAISE EXCEPTION 'invalid environment %', quote_literal(v_env)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use ''*'' for every environment, or an environment name such as production.';
    END IF;
    IF p_key IN ('auto_cleanup.enabled', 'cleanup.auto_script', 'lockdown.auto', 'lockdown.revoke',
                 'lockdown.read_only', 'lockdown.end_sessions') THEN
        IF p_value IS NOT NULL AND jsonb_typeof(p_value) <> 'boolean' THEN
            RAISE EXCEPTION '% must be true or false, not %', p_key, p_value
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('e.g. SELECT guardian.set_response_setting(%L, ''true'');', p_key);
        END IF;
    ELSIF p_key IN ('lockdown.roles', 'lockdown.admin_roles') THEN
        IF p_value IS NOT NULL AND (jsonb_typeof(p_value) <> 'array'
                                    OR EXISTS (SELECT FROM jsonb_array_elements(p_value) AS e WHERE jsonb_typeof(e) <> 'string')) THEN
            RAISE EXCEPTION '% must be a JSON array of role names, not %', p_key, p_value
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('e.g. SELECT guardian.set_response_setting(%L, ''["app"]'');', p_key);
        END IF;
        SELECT string_agg(quote_ident(n), ', ') INTO v_bad
          FROM jsonb_array_elements_text(coalesce(p_value, '[]')) AS n
         WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles AS r WHERE r.rolname = n);
        IF v_bad IS NOT NULL THEN
            RAISE EXCEPTION '%: no role named %', p_key, v_bad
                USING ERRCODE = 'undefined_object', HINT = 'List roles with: SELECT rolname FROM pg_roles WHERE rolcanlogin;';
        END IF;
        IF p_key = 'lockdown.roles' THEN
            SELECT string_agg(quote_ident(r.rolname), ', ') INTO v_bad
              FROM jsonb_array_elements_text(coalesce(p_value, '[]')) AS n
              JOIN pg_catalog.pg_roles AS r ON r.rolname = n
             WHERE r.rolsuper OR r.rolname LIKE 'guardian\_%'
                OR pg_has_role(r.oid, 'guardian_admin', 'MEMBER') OR pg_has_role(r.oid, 'guardian_owner', 'MEMBER');
            IF v_bad IS NOT NULL THEN
                RAISE EXCEPTION 'lockdown.roles: % cannot be locked down (a superuser, the guardian''s role or an admin)', v_bad
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Name only the application''s roles; admins keep working during a lockdown.';
            END IF;
        END IF;
    ELSIF p_key = 'alerts.routes' THEN
        IF p_value IS NOT NULL AND jsonb_typeof(p_value) <> 'array' THEN
            RAISE EXCEPTION 'alerts.routes must be a JSON array of routes, not %', p_value USING ERRCODE = 'invalid_parameter_value';
        END IF;
        FOR v_route IN SELECT e FROM jsonb_array_elements(coalesce(p_value, '[]')) AS e LOOP
            IF jsonb_typeof(v_route) <> 'object' OR jsonb_typeof(v_route -> 'channels') IS DISTINCT FROM 'array'
               OR EXISTS (SELECT FROM jsonb_object_keys(v_route) AS k
                           WHERE k NOT IN ('channels', 'severity', 'type', 'environment', 'table_name', 'continue'))
               OR EXISTS (SELECT FROM jsonb_array_elements_text(CASE jsonb_typeof(v_route -> 'severity') WHEN 'array'
                                                                    THEN v_route -> 'severity' ELSE '[]' END) AS s
                           WHERE s NOT IN ('CRITICAL', 'HIGH', 'MEDIUM', 'LOW', 'INFO')) THEN
                RAISE EXCEPTION 'invalid alert route %', v_route
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'A route is {"channels": ["slack"], "severity": ["CRITICAL"], "type": [...], "table_name": [...], "continue": false}.';
            END IF;
        END LOOP;
    ELSE
        RAISE EXCEPTION 'unknown auto-response setting %', coalesce(quote_literal(p_key), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Settings: auto_cleanup.enabled, cleanup.auto_script, lockdown.auto, lockdown.revoke, lockdown.read_only, lockdown.end_sessions, lockdown.roles, lockdown.admin_roles, alerts.routes; thresholds are parameters (guardian.set_param).';
    END IF;

    SELECT s.value INTO v_old FROM guardian.settings AS s WHERE s.environment = v_env AND s.key = p_key;
    IF v_old IS NOT DISTINCT FROM p_value THEN
        RETURN p_value;
    END IF;
    IF p_value IS NULL THEN
        DELETE FROM guardian.settings AS s WHERE s.environment = v_env AND s.key = p_key;
    ELSE
        INSERT INTO guardian.settings AS s (environment, key, value) VALUES (v_env, p_key, p_value)
        ON CONFLICT (environment, key) DO UPDATE SET value = EXCLUDED.value, changed_at = now(), changed_by = SESSION_USER;
    END IF;
    PERFORM guardian.raise_alert(
        'AUTO_RESPONSE_CHANGED',
        CASE WHEN p_key IN ('auto_cleanup.enabled', 'lockdown.auto') AND p_value = 'true'::jsonb THEN 'MEDIUM' ELSE 'INFO' END,
        format('%s for %s changed from %s to %s by %s', p_key, CASE v_env WHEN '*' THEN 'every environment' ELSE v_env END,
               coalesce(v_old::text, 'the default'), coalesce(p_value::text, 'the default'), SESSION_USER),
        p_metadata => jsonb_build_object('key', p_key, 'environment', v_env, 'old', v_old, 'new', p_value),
        p_fingerprint => md5('AUTO_RESPONSE_CHANGED' || p_key || v_env || clock_timestamp()::text));
    RETURN p_value;
END
$$;
COMMENT ON FUNCTION guardian.set_response_setting(text, jsonb, text) IS
    'Set an auto-response setting for an environment (default: this one; ''*'': all), checked: auto_cleanup.enabled, cleanup.auto_script, lockdown.auto, lockdown.revoke, lockdown.read_only, lockdown.end_sessions (booleans), lockdown.roles, lockdown.admin_roles (role names), alerts.routes. NULL removes it. Audited as AUTO_RESPONSE_CHANGED.';

CREATE FUNCTION guardian.set_auto_cleanup(p_enabled boolean, p_environment text DEFAULT NULL)
RETURNS boolean
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (guardian.set_response_setting('auto_cleanup.enabled', to_jsonb(p_enabled), p_environment)) = 'true'::jsonb
$$;
COMMENT ON FUNCTION guardian.set_auto_cleanup(boolean, text) IS
    'Switch auto-cleanup (AUTO_CLEANUP_ENABLED) on or off for an environment (default: this one): test data found by rules marked safe_for_automation is quarantined when it is committed.';

CREATE FUNCTION guardian.set_auto_lockdown(p_enabled boolean, p_threshold integer DEFAULT NULL, p_environment text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_threshold IS NOT NULL THEN
        PERFORM guardian.set_param('lockdown.threshold', p_threshold, coalesce(p_environment, guardian.current_environment()));
    END IF;
    RETURN (guardian.set_response_setting('lockdown.auto', to_jsonb(p_enabled), p_environment)) = 'true'::jsonb;
END
$$;
COMMENT ON FUNCTION guardian.set_auto_lockdown(boolean, integer, text) IS
    'Switch automatic lockdown on or off for an environment (default: this one), optionally with its LOCKDOWN_THRESHOLD (records with CRITICAL test data within lockdown.window_minutes).';

CREATE VIEW guardian.response_settings AS
SELECT guardian.current_environment() AS environment,
       guardian._response_flag('auto_cleanup.enabled', false) AS auto_cleanup,
       guardian.param('auto_cleanup.max_rows') AS auto_cleanup_max_rows,
       guardian._response_flag('cleanup.auto_script', true) AS scripts_with_alerts,
       guardian.param('cleanup.auto_script_max_records') AS script_max_records,
       guardian._response_flag('lockdown.auto', false) AS auto_lockdown,
       guardian.param('lockdown.threshold') AS lockdown_threshold,
       guardian.param('lockdown.window_minutes') AS lockdown_window_minutes,
       guardian._response_flag('lockdown.revoke', true) AS lockdown_revoke,
       guardian._response_flag('lockdown.read_only', true) AS lockdown_read_only,
       guardian._response_flag('lockdown.end_sessions', false) AS lockdown_end_sessions,
       guardian.setting('lockdown.roles') AS lockdown_roles,
       guardian.setting('lockdown.admin_roles') AS lockdown_admin_roles,
       guardian.param('retention.quarantine_days') AS quarantine_days;
COMMENT ON VIEW guardian.response_settings IS
    'The auto-response settings in force in this environment: auto-cleanup, scripts with alerts, automatic lockdown and its threshold, lockdown options and roles, quarantine retention.';

CREATE FUNCTION guardian._auto_response_begin()
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p_upto     bigint;
    v_max      bigint;
    v_cleanup  boolean;
    v_scripts  boolean;
    v_lockdown boolean;
    v_refresh  interval;
    v_limit    numeric;
    v_roots    jsonb;
    v_alert    uuid;
    v_due      uuid[];
BEGIN
    -- Every finding of this transaction, each time the deferred trigger fires (once per alert
    -- row it touched): no progress marker a session could move. Work done once is not redone:
    -- quarantined records are gone, a fresh script is not regenerated, a lockdown is on.
    p_upto := 0;
    -- This transaction's findings (this backend, since the transaction began) not yet seen.
    SELECT max(f.id) INTO v_max FROM guardian.findings AS f
     WHERE f.id > p_upto AND f.backend_pid = pg_backend_pid() AND f.created_at >= now() AND f.alert_id IS NOT NULL;
    IF v_max IS NULL THEN
        RETURN NULL;
    END IF;

    v_cleanup := guardian._response_flag('auto_cleanup.enabled', false);
    v_scripts := guardian._response_flag('cleanup.auto_script', true) AND guardian.param('cleanup.auto_script_max_records') > 0;
    v_lockdown := guardian._response_flag('lockdown.auto', false)
                  AND NOT EXISTS (SELECT FROM guardian.lockdowns AS l WHERE l.ended_at IS NULL);
    v_refresh := make_interval(secs => guardian.param('cleanup.script_refresh_seconds')::double precision);
    v_limit := guardian.param('cleanup.auto_script_max_records');

    IF v_cleanup THEN
        -- Records a safe rule found, with every rule that matched them.
        SELECT jsonb_object_agg(x.relid::text, x.records) INTO v_roots
          FROM (SELECT r.relid, jsonb_agg(jsonb_build_object('key', r.record_key, 'findings', r.findings) ORDER BY r.record_key::text) AS records
                  FROM (SELECT f.relid, f.record_key,
                               jsonb_agg(DISTINCT jsonb_build_object('rule', f.rule, 'column', f.column_name)) AS findings
                          FROM guardian.findings AS f
                         WHERE f.record_key IS NOT NULL
                           AND (f.relid, f.record_key) IN (
                                SELECT n.relid, n.record_key FROM guardian.findings AS n
                                  JOIN guardian.rules AS r ON r.name = n.rule AND r.safe_for_automation
                                 WHERE n.id > p_upto AND n.id <= v_max AND n.backend_pid = pg_backend_pid()
                                   AND n.created_at >= now() AND n.alert_id IS NOT NULL)
                         GROUP BY f.relid, f.record_key) AS r
                 GROUP BY r.relid) AS x;
        SELECT f.alert_id INTO v_alert FROM guardian.findings AS f
          JOIN guardian.rules AS r ON r.name = f.rule AND r.safe_for_automation
         WHERE f.id > p_upto AND f.id <= v_max AND f.backend_pid = pg_backend_pid() AND f.created_at >= now()
         ORDER BY f.id LIMIT 1;
    END IF;
    IF v_scripts THEN
        -- Open alerts this transaction added to whose stored script is missing or stale.
        v_due := ARRAY(
            SELECT a.id FROM guardian.monitoring_alerts AS a
             WHERE a.id IN (SELECT f.alert_id FROM guardian.findings AS f
                             WHERE f.id > p_upto AND f.id <= v_max AND f.backend_pid = pg_backend_pid() AND f.created_at >= now())
               AND a.resolved_at IS NULL
               AND coalesce((a.metadata ->> 'affected_records')::numeric, 0) <= v_limit
               AND (NOT a.metadata ? 'cleanup_script_at'
                    OR ((a.metadata ->> 'cleanup_script_at')::timestamptz < now() - v_refresh
                        AND (a.metadata ->> 'cleanup_script_records') IS DISTINCT FROM (a.metadata ->> 'affected_records')))
             ORDER BY a.created_at);
    END IF;
    IF v_roots IS NULL AND coalesce(cardinality(v_due), 0) = 0 AND NOT v_lockdown THEN
        RETURN jsonb_build_object('upto', v_max);
    END IF;
    INSERT INTO guardian.response_runs (backend_pid, xid) VALUES (pg_backend_pid(), txid_current())
    ON CONFLICT DO NOTHING;
    RETURN jsonb_build_object('upto', v_max, 'run', true, 'cleanup_roots', v_roots, 'cleanup_alert', v_alert,
                              'max_rows', guardian.param('auto_cleanup.max_rows'),
                              'scripts', to_jsonb(v_due), 'lockdown', v_lockdown);
END
$$;
COMMENT ON FUNCTION guardian._auto_response_begin() IS
    'Internal: what the auto-response of this transaction has to do (records to quarantine, alerts needing a script, whether to check for lockdown); marks the transaction as running one.';

CREATE FUNCTION guardian._auto_response_end()
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    DELETE FROM guardian.response_runs AS m WHERE m.backend_pid = pg_backend_pid() AND m.xid = txid_current();
$$;
COMMENT ON FUNCTION guardian._auto_response_end() IS 'Internal: the auto-response of this transaction is done.';

CREATE FUNCTION guardian._auto_alert_roots(p_alert uuid)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- Only for an alert this very transaction added findings to.
    IF guardian._response_caller() = 'auto' AND NOT EXISTS (
        SELECT FROM guardian.findings AS f
         WHERE f.alert_id = p_alert AND f.backend_pid = pg_backend_pid() AND f.created_at >= now()) THEN
        RAISE EXCEPTION 'not an alert of this transaction' USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- An auto-cleanup may just have resolved it.
    IF EXISTS (SELECT FROM guardian.monitoring_alerts AS a WHERE a.id = p_alert AND a.resolved_at IS NOT NULL) THEN
        RETURN NULL;
    END IF;
    IF guardian._response_caller() = 'admin' THEN
        RETURN guardian._alert_roots(p_alert);
    END IF;
    -- The keys of the alert's records go back to the committing session, which counts their
    -- dependent rows with its own rights: only in tables that session may read anyway.
    RETURN (SELECT jsonb_object_agg(t.key, t.value) FROM jsonb_each(guardian._alert_roots(p_alert)) AS t
             WHERE has_table_privilege(SESSION_USER, guardian._regclass_of(t.key), 'SELECT'));
END
$$;
COMMENT ON FUNCTION guardian._auto_alert_roots(uuid) IS 'Internal: the records of an open alert, for the auto-response of a transaction that added to it (NULL once resolved).';

CREATE FUNCTION guardian._auto_response_report(p_type text, p_alert uuid, p_message text, p_metadata jsonb)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_caller  text := guardian._response_caller();
    v_message text := left(regexp_replace(coalesce(p_message, ''), '[[:cntrl:]]+', ' ', 'g'), 500);
    v_meta    jsonb;
BEGIN
    -- A session that is no admin reports only on an alert its own transaction added to, in the
    -- guardian's words: free text only as a quoted cause, and no metadata key but these (a
    -- forged cleanup_script would be shown by the relay as the alert's script).
    IF v_caller <> 'admin' AND NOT EXISTS (
        SELECT FROM guardian.findings AS f
         WHERE f.alert_id = p_alert AND f.backend_pid = pg_backend_pid() AND f.created_at >= now()) THEN
        RAISE EXCEPTION 'not an alert of this transaction' USING ERRCODE = 'insufficient_privilege';
    END IF;
    v_meta := (SELECT coalesce(jsonb_object_agg(m.key, m.value), '{}') FROM jsonb_each(coalesce(p_metadata, '{}')) AS m
                WHERE m.key IN ('error', 'rows', 'blocked', 'max_rows', 'role'));
    IF p_type = 'cleanup_script_error' THEN
        UPDATE guardian.monitoring_alerts AS a
           SET metadata = a.metadata || jsonb_build_object('cleanup_script_error', v_message,
                                                           'cleanup_script_at', now())
         WHERE a.id = p_alert;
    ELSIF p_type IN ('AUTO_CLEANUP_SKIPPED', 'AUTO_CLEANUP_FAILED') THEN
        PERFORM guardian.raise_alert(p_type, CASE p_type WHEN 'AUTO_CLEANUP_FAILED' THEN 'HIGH' ELSE 'MEDIUM' END,
                                     v_message,
                                     (SELECT a.table_name FROM guardian.monitoring_alerts AS a WHERE a.id = p_alert), NULL,
                                     v_meta || jsonb_build_object('alert_id', p_alert, 'reported_by', SESSION_USER),
                                     md5(p_type || ':' || coalesce(p_alert::text, '') || ':' || txid_current()));
    ELSE
        RAISE EXCEPTION 'unknown auto-response report %', p_type USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;
COMMENT ON FUNCTION guardian._auto_response_report(text, uuid, text, jsonb) IS
    'Internal: records why a script could not be made (on the alert) or an auto-cleanup was skipped or failed (AUTO_CLEANUP_SKIPPED, AUTO_CLEANUP_FAILED).';

CREATE FUNCTION guardian._auto_cleanup(p_roots jsonb, p_alert uuid, p_max_rows numeric)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_rows    guardian.cleanup_row[];
    v_counts  jsonb;
    v_steps   jsonb;
    v_total   bigint;
    v_blocked text;
    v_script  guardian.cleanup_scripts;
    v_group   integer;
BEGIN
    v_rows := ARRAY(SELECT r FROM guardian._cleanup_collect(p_roots, false) AS r);
    IF NOT EXISTS (SELECT FROM unnest(v_rows) AS r WHERE r.root) THEN
        RETURN 'the records are gone already';
    END IF;
    v_counts := guardian._cleanup_counts(p_roots, v_rows);
    v_steps := guardian._cleanup_step_list(p_roots, v_counts);
    SELECT string_agg(format('%s row(s) of %s reference removed rows through %s (ON DELETE RESTRICT / NO ACTION)',
                             s ->> 'rows', s ->> 'table', s -> 'via' ->> 0), '; ')
      INTO v_blocked FROM jsonb_array_elements(v_steps) AS s
     WHERE s ->> 'action' = 'blocked' AND (s ->> 'rows')::bigint > 0;
    v_total := (SELECT sum((s ->> 'rows')::bigint) FROM jsonb_array_elements(v_steps) AS s WHERE s ->> 'action' <> 'blocked');
    IF v_blocked IS NOT NULL OR v_total > p_max_rows THEN
        PERFORM guardian._auto_response_report('AUTO_CLEANUP_SKIPPED', p_alert,
            format('auto-cleanup skipped: %s; a person has to decide. Dry run: SELECT * FROM guardian.cleanup_plan(%L);',
                   coalesce(v_blocked, format('it would quarantine %s rows, more than auto_cleanup.max_rows (%s)', v_total, p_max_rows)),
                   p_alert),
            jsonb_build_object('rows', v_total, 'blocked', v_blocked, 'max_rows', p_max_rows));
        RETURN 'skipped';
    END IF;
    -- The very cleanup a script would run: registered, captured into quarantine, then removed.
    v_script := guardian._cleanup_prepare(p_roots, p_alert, true);
    PERFORM guardian.cleanup_begin(v_script.batch_id, v_script.roots,
                                   (SELECT jsonb_object_agg(s ->> 'step', (s ->> 'rows')::bigint)
                                      FROM jsonb_array_elements(v_script.steps) AS s));
    FOR v_group IN
        SELECT DISTINCT (s ->> 'group')::integer FROM jsonb_array_elements(v_script.steps) AS s
         WHERE s ->> 'action' <> 'blocked' AND (s ->> 'rows')::bigint > 0 ORDER BY 1
    LOOP
        EXECUTE guardian._cleanup_group_sql(v_script.batch_id,
                    (SELECT jsonb_agg(s) FROM jsonb_array_elements(v_script.steps) AS s WHERE (s ->> 'rows')::bigint > 0),
                    v_group);
    END LOOP;
    RETURN guardian.cleanup_finish(v_script.batch_id);
END
$$;
COMMENT ON FUNCTION guardian._auto_cleanup(jsonb, uuid, numeric) IS
    'Internal: quarantines these records and their dependent rows exactly as their cleanup script would, unless blocked or larger than auto_cleanup.max_rows (then AUTO_CLEANUP_SKIPPED).';

CREATE FUNCTION guardian._auto_lockdown_check()
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_threshold numeric := guardian.param('lockdown.threshold');
    v_window    numeric := guardian.param('lockdown.window_minutes');
    v_records   bigint;
    v_lockdown  guardian.lockdowns;
BEGIN
    IF NOT guardian._response_flag('lockdown.auto', false)
       OR EXISTS (SELECT FROM guardian.lockdowns AS l WHERE l.ended_at IS NULL) THEN
        RETURN NULL;
    END IF;
    -- Test data that arrived (written, not found by a scan of old rows) within the window.
    SELECT count(*) INTO v_records
      FROM (SELECT DISTINCT f.relid, f.record_id FROM guardian.findings AS f
             WHERE f.severity = 'CRITICAL' AND f.operation <> 'SCAN'
               AND f.created_at > now() - make_interval(mins => v_window::integer)) AS x;
    IF v_records <= v_threshold THEN
        RETURN NULL;
    END IF;
    BEGIN
        v_lockdown := guardian._lockdown_apply(
            format('%s records with CRITICAL test data in the last %s minutes, more than LOCKDOWN_THRESHOLD %s',
                   v_records, v_window, v_threshold), true);
    EXCEPTION WHEN OTHERS THEN
        PERFORM guardian.raise_alert('LOCKDOWN_FAILED', 'CRITICAL',
            format('automatic lockdown of %s failed: %s (%s records with CRITICAL test data in %s minutes)',
                   guardian.current_environment(), SQLERRM, v_records, v_window),
            p_metadata => jsonb_build_object('error', SQLERRM, 'records', v_records),
            p_fingerprint => md5('LOCKDOWN_FAILED:' || guardian.current_environment()));
        RETURN NULL;
    END;
    RETURN v_lockdown.id;
END
$$;
COMMENT ON FUNCTION guardian._auto_lockdown_check() IS
    'Internal: locks the environment down when lockdown.auto is on and CRITICAL test data written within lockdown.window_minutes affects more than lockdown.threshold records; a failure is a CRITICAL LOCKDOWN_FAILED alert.';

CREATE FUNCTION guardian._auto_response()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_work  jsonb;
    v_alert uuid;
    v_roots jsonb;
BEGIN
    BEGIN
        v_work := guardian._auto_response_begin();
        IF v_work IS NULL THEN
            RETURN NULL;
        END IF;
        IF NOT coalesce((v_work ->> 'run')::boolean, false) THEN
            RETURN NULL;
        END IF;

        IF v_work -> 'cleanup_roots' IS NOT NULL AND jsonb_typeof(v_work -> 'cleanup_roots') = 'object' THEN
            BEGIN
                PERFORM guardian._auto_cleanup(v_work -> 'cleanup_roots', (v_work ->> 'cleanup_alert')::uuid,
                                               (v_work ->> 'max_rows')::numeric);
            EXCEPTION WHEN OTHERS THEN
                PERFORM guardian._auto_response_report('AUTO_CLEANUP_FAILED', (v_work ->> 'cleanup_alert')::uuid,
                    format('auto-cleanup failed, nothing was removed: %s. An admin can review and run the script: SELECT guardian.cleanup_script(%L);',
                           SQLERRM, v_work ->> 'cleanup_alert'),
                    jsonb_build_object('error', SQLERRM, 'role', CURRENT_USER));
            END;
        END IF;

        FOR v_alert IN SELECT (e #>> '{}')::uuid FROM jsonb_array_elements(coalesce(v_work -> 'scripts', '[]')) AS e LOOP
            BEGIN
                v_roots := guardian._auto_alert_roots(v_alert);
                IF v_roots IS NOT NULL THEN
                    PERFORM guardian._cleanup_prepare(v_roots, v_alert, true);
                END IF;
            EXCEPTION WHEN OTHERS THEN
                PERFORM guardian._auto_response_report('cleanup_script_error', v_alert,
                    format('could not generate the script with the alert (%s); an admin can: SELECT guardian.cleanup_script(%L);',
                           SQLERRM, v_alert), NULL);
            END;
        END LOOP;

        IF (v_work ->> 'lockdown')::boolean THEN
            PERFORM guardian._auto_lockdown_check();
        END IF;
        PERFORM guardian._auto_response_end();
    EXCEPTION WHEN OTHERS THEN
        -- The application's commit goes through whatever happens here.
        RAISE WARNING 'pg_guardian: auto-response failed: %', SQLERRM
            USING HINT = 'The contamination alert stands; an admin can run SELECT guardian.cleanup_script(''<alert id>'');';
    END;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION guardian._auto_response() IS
    'Internal deferred trigger on contamination alerts: at commit, with the committing session''s rights, auto-cleanup of safe findings, scripts stored with open alerts, automatic lockdown. Never fails the commit.';

CREATE CONSTRAINT TRIGGER monitoring_alerts_auto_response
    AFTER INSERT OR UPDATE ON guardian.monitoring_alerts
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW
    WHEN (NEW.type = 'TEST_DATA_CONTAMINATION' AND NEW.resolved_at IS NULL)
    EXECUTE FUNCTION guardian._auto_response();

-- >>> sql/60_response/90_policy.sql
-- Policies: `pg-guardian policy apply` renders a policy file into SQL that calls these first.
-- A database refuses a policy written for another environment unless forced, and a policy
-- naming a rule, pack, table, column, activity rule or role that does not exist is refused
-- whole, before anything changes.
CREATE TABLE guardian.policies (
    environment text PRIMARY KEY,
    sha256      text NOT NULL,
    source      text,
    forced      boolean NOT NULL DEFAULT false,
    applied_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    applied_by  text NOT NULL DEFAULT SESSION_USER,
    CONSTRAINT policies_sha256_chk CHECK (sha256 ~ '^[0-9a-f]{64}$')
);
COMMENT ON TABLE guardian.policies IS
    'The policy last applied to this database, per policy environment: the SHA-256 of its rendered SQL, the file it came from, whether it was forced onto another environment, who and when.';
SELECT pg_catalog.pg_extension_config_dump('guardian.policies', '');

CREATE FUNCTION guardian.policy_problems(
    p_rules text[] DEFAULT '{}', p_packs text[] DEFAULT '{}', p_tables text[] DEFAULT '{}',
    p_columns jsonb DEFAULT '{}', p_activity_rules text[] DEFAULT '{}', p_roles text[] DEFAULT '{}')
RETURNS TABLE (kind text, name text, problem text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'rule', r, format('no rule named %s (see SELECT name, pack FROM guardian.rules)', r)
      FROM unnest(p_rules) AS r WHERE NOT EXISTS (SELECT FROM guardian.rules AS x WHERE x.name = r)
    UNION ALL
    SELECT 'pack', p, format('no rule pack named %s (packs: %s)', p,
                             (SELECT string_agg(DISTINCT x.pack, ', ' ORDER BY x.pack) FROM guardian.rules AS x))
      FROM unnest(p_packs) AS p WHERE NOT EXISTS (SELECT FROM guardian.rules AS x WHERE x.pack = p)
    UNION ALL
    SELECT 'table', t, CASE WHEN t !~ '^("[^"]+"|[^".]+)\.("[^"]+"|[^".]+)$'
                            THEN format('%s is not a schema-qualified table name (write schema.table)', t)
                            ELSE format('no table named %s in this database', t) END
      FROM unnest(p_tables) AS t
     WHERE t !~ '^("[^"]+"|[^".]+)\.("[^"]+"|[^".]+)$'
        OR NOT EXISTS (SELECT FROM pg_catalog.pg_class AS c
                        JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
                       WHERE c.relkind IN ('r', 'p', 'f')
                         AND n.nspname = (parse_ident(t))[1] AND c.relname = (parse_ident(t))[2])
    UNION ALL
    SELECT 'column', format('%s.%s', c.key, col), format('table %s has no column %s', c.key, col)
      FROM jsonb_each(p_columns) AS c, jsonb_array_elements_text(c.value) AS col
     WHERE c.key ~ '^("[^"]+"|[^".]+)\.("[^"]+"|[^".]+)$'
       AND EXISTS (SELECT FROM pg_catalog.pg_class AS x JOIN pg_catalog.pg_namespace AS n ON n.oid = x.relnamespace
                    WHERE n.nspname = (parse_ident(c.key))[1] AND x.relname = (parse_ident(c.key))[2])
       AND NOT EXISTS (SELECT FROM pg_catalog.pg_attribute AS a
                        JOIN pg_catalog.pg_class AS x ON x.oid = a.attrelid
                        JOIN pg_catalog.pg_namespace AS n ON n.oid = x.relnamespace
                       WHERE n.nspname = (parse_ident(c.key))[1] AND x.relname = (parse_ident(c.key))[2]
                         AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped)
    UNION ALL
    SELECT 'activity rule', a, format('no activity rule named %s (rules: %s)', a,
                                      (SELECT string_agg(x.name, ', ' ORDER BY x.name) FROM guardian.activity_rules AS x))
      FROM unnest(p_activity_rules) AS a WHERE NOT EXISTS (SELECT FROM guardian.activity_rules AS x WHERE x.name = a)
    UNION ALL
    SELECT 'role', r, format('no role named %s', r)
      FROM unnest(p_roles) AS r WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles AS x WHERE x.rolname = r)
$$;
COMMENT ON FUNCTION guardian.policy_problems(text[], text[], text[], jsonb, text[], text[]) IS
    'What a policy names that this database does not have: rules, rule packs, tables (schema.table), columns ({"schema.table": ["column"]}), activity rules, roles. Empty when the policy fits.';

CREATE FUNCTION guardian.policy_begin(
    p_environment text, p_force boolean, p_rules text[], p_packs text[], p_tables text[], p_columns jsonb,
    p_activity_rules text[], p_roles text[])
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_env      text := guardian.current_environment();
    v_problems text;
BEGIN
    IF NOT guardian._is_admin() THEN
        RAISE EXCEPTION 'role % may not apply guardian policies', CURRENT_USER
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Apply policies as a guardian admin: GRANT guardian_admin TO ' || quote_ident(CURRENT_USER) || ';';
    END IF;
    IF p_environment IS DISTINCT FROM v_env AND NOT p_force THEN
        RAISE EXCEPTION 'this database is environment %, not %: refusing the % policy', v_env, p_environment, p_environment
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A policy only applies to the environment it was written for; nothing was changed.',
                  HINT = format('Apply the %s policy instead (pg-guardian policy apply --env %s), declare this database with SELECT guardian.set_environment(%L) if it really is %s, or pass --force.',
                                v_env, v_env, p_environment, p_environment);
    END IF;
    SELECT string_agg(p.problem, '; ' ORDER BY p.kind, p.name) INTO v_problems
      FROM guardian.policy_problems(p_rules, p_packs, p_tables, p_columns, p_activity_rules, p_roles) AS p;
    IF v_problems IS NOT NULL THEN
        RAISE EXCEPTION 'the % policy does not fit this database: %', p_environment, v_problems
            USING ERRCODE = 'undefined_object',
                  DETAIL = 'Nothing was changed.',
                  HINT = 'Fix the policy file (pg-guardian policy check --dsn ... lists every problem) and apply it again.';
    END IF;
    -- One policy at a time.
    PERFORM pg_advisory_xact_lock(hashtextextended('guardian.policy', 0));
    RETURN format('applying the %s policy to %s%s', p_environment, v_env, CASE WHEN p_environment <> v_env THEN ' (forced)' ELSE '' END);
END
$$;
COMMENT ON FUNCTION guardian.policy_begin(text, boolean, text[], text[], text[], jsonb, text[], text[]) IS
    'First statement of a rendered policy: refuses a policy for another environment unless p_force, and one that names rules, packs, tables, columns, activity rules or roles this database does not have.';

CREATE FUNCTION guardian.policy_finish(p_environment text, p_sha256 text, p_source text, p_forced boolean)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_old    guardian.policies;
    v_forced boolean := coalesce(p_forced, false) AND p_environment IS DISTINCT FROM guardian.current_environment();
BEGIN
    SELECT * INTO v_old FROM guardian.policies AS p WHERE p.environment = p_environment;
    IF FOUND AND v_old.sha256 = p_sha256 AND v_old.forced = v_forced THEN
        RETURN false;
    END IF;
    INSERT INTO guardian.policies AS p (environment, sha256, source, forced)
    VALUES (p_environment, p_sha256, p_source, v_forced)
    ON CONFLICT (environment) DO UPDATE
       SET sha256 = EXCLUDED.sha256, source = EXCLUDED.source, forced = EXCLUDED.forced,
           applied_at = now(), applied_by = SESSION_USER;
    PERFORM guardian.raise_alert(
        'POLICY_APPLIED', CASE WHEN v_forced THEN 'HIGH' ELSE 'INFO' END,
        format('the %s policy%s was applied to %s by %s%s', p_environment, coalesce(' from ' || p_source, ''),
               guardian.current_environment(), SESSION_USER,
               CASE WHEN v_forced THEN ' (forced onto another environment)' ELSE '' END),
        p_metadata => jsonb_build_object('environment', p_environment, 'sha256', p_sha256, 'source', p_source,
                                         'forced', v_forced, 'previous_sha256', v_old.sha256),
        p_fingerprint => md5('POLICY_APPLIED' || p_environment || p_sha256 || clock_timestamp()::text));
    RETURN true;
END
$$;
COMMENT ON FUNCTION guardian.policy_finish(text, text, text, boolean) IS
    'Last statement of a rendered policy: records which policy (SHA-256 of its SQL) is in force; a new one is a POLICY_APPLIED alert (HIGH when forced). Returns false when it was already in force.';

CREATE FUNCTION guardian.policy_routes()
RETURNS jsonb
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT guardian.setting('alerts.routes')
$$;
COMMENT ON FUNCTION guardian.policy_routes() IS
    'The alert routes this environment''s policy sets (setting alerts.routes), read by the relay on every routing round: when set they replace the routes of the relay''s configuration (which still defines the channels). NULL: the configuration decides.';

-- >>> sql/99_finish/10_ownership.sql
-- Tables and SECURITY DEFINER functions belong to guardian_owner (NOLOGIN, not a superuser),
-- so definer functions run with no more than the guardian's own rights. Everything else stays
-- with the installer:
--   * SECURITY INVOKER functions run as whoever calls them, superusers included (the WHEN
--     clauses and trigger functions on application tables, the functions event triggers and
--     jobs call): a role that could alter them could run code as that caller;
--   * event trigger functions and the few definers that need a superuser (dblink without a
--     password, lockdown of other roles, regenerating the prefilter functions);
--   * guardian.strict_recorder, where the superuser-only recorder connects.
-- guardian_owner gets CREATE on the schema only for the hand-over (a non-superuser installer
-- needs it to give objects away) and loses it in 99_finish/80_no_create.sql: it can create or
-- replace nothing.
GRANT USAGE, CREATE ON SCHEMA guardian TO guardian_owner;

DO $owner$
DECLARE
    v_object record;
BEGIN
    FOR v_object IN
        SELECT 1 AS step, format('ALTER %s guardian.%I OWNER TO guardian_owner',
                      CASE WHEN c.relkind = 'v' THEN 'VIEW' WHEN c.relkind = 'm' THEN 'MATERIALIZED VIEW'
                           ELSE 'TABLE' END, c.relname) AS ddl
          FROM pg_catalog.pg_class AS c
         WHERE c.relnamespace = 'guardian'::regnamespace
           AND c.relkind IN ('r', 'p', 'v', 'm')
           AND c.relname <> 'strict_recorder'
        UNION ALL
        SELECT 3, format('ALTER %s %s OWNER TO guardian_owner',
                      CASE WHEN p.prokind = 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END,
                      p.oid::regprocedure)
          FROM pg_catalog.pg_proc AS p
         WHERE p.pronamespace = 'guardian'::regnamespace
           AND p.prosecdef
           -- dblink connects without a password only for a superuser, lockdown changes other
           -- roles' privileges and settings, and the compiled prefilter functions are created
           -- by their owner: these stay with the installer.
           AND p.proname NOT IN ('_record_rejection', '_lockdown_privilege', '_lockdown_read_only',
                                 '_lockdown_end_sessions', '_compile_rules')
           -- Event trigger functions run as whoever runs DDL, superusers included: a role that
           -- could replace them could run code as a superuser. They stay with the installer.
           AND p.oid NOT IN (SELECT e.evtfoid FROM pg_catalog.pg_event_trigger AS e)
        UNION ALL
        SELECT 2, format('ALTER TYPE guardian.%I OWNER TO guardian_owner', t.typname)
          FROM pg_catalog.pg_type AS t
         WHERE t.typnamespace = 'guardian'::regnamespace
           AND t.typtype IN ('e', 'd', 'c')
           AND (t.typrelid = 0 OR (SELECT c.relkind FROM pg_catalog.pg_class AS c WHERE c.oid = t.typrelid) = 'c')
         ORDER BY 1, 2
    LOOP
        EXECUTE v_object.ddl;
    END LOOP;
END
$owner$;

-- >>> sql/99_finish/20_grants.sql
-- Least privilege: PUBLIC may look into the schema and call the read-only helpers the
-- application needs; everything else is granted to guardian_reader / guardian_admin by name.
GRANT USAGE ON SCHEMA guardian TO PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA guardian FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA guardian FROM PUBLIC;
-- guardian_owner owns only tables and SECURITY DEFINER functions (10_ownership.sql); it runs
-- the invoker helpers they call, as it did when it owned them.
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA guardian TO guardian_owner;

GRANT EXECUTE ON FUNCTION guardian.current_environment(), guardian.current_mode(),
    guardian.effective_mode(regclass), guardian.version(), guardian._is_admin(),
    guardian._session_context(), guardian._alert_fingerprint(text, text, text, text, text)
    TO PUBLIC;

GRANT SELECT ON guardian.monitoring_alerts, guardian.open_alerts, guardian.environment,
    guardian.environment_status, guardian.table_modes, guardian.settings
    TO guardian_reader;
GRANT EXECUTE ON FUNCTION guardian.setting(text, jsonb), guardian._mode_rank(text)
    TO guardian_reader;

GRANT EXECUTE ON FUNCTION guardian.set_environment(text), guardian.set_mode(text),
    guardian.set_table_mode(regclass, text), guardian.raise_alert(text, text, text, text, text, jsonb, text),
    guardian.acknowledge_alert(uuid), guardian.resolve_alert(uuid, text)
    TO guardian_admin;
GRANT INSERT, UPDATE, DELETE ON guardian.settings TO guardian_admin;

-- >>> sql/99_finish/25_contamination.sql
-- The WHEN clauses of guardian triggers run as whoever writes to a watched table.
GRANT EXECUTE ON FUNCTION guardian._contains_any(text, text[]), guardian._uuid_matches(uuid, uuid[]),
    guardian._anchors(text, text), guardian._uuid_bounds(text)
    TO PUBLIC;
REVOKE EXECUTE ON FUNCTION guardian._record_rejection(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION guardian._record_rejection(jsonb) TO guardian_owner;

-- The application-side check is for everyone; it only reads the catalogue.
ALTER FUNCTION guardian.check_payload(jsonb, text) SECURITY DEFINER;
ALTER FUNCTION guardian.check_payload(jsonb, text) OWNER TO guardian_owner;
GRANT EXECUTE ON FUNCTION guardian.check_payload(jsonb, text) TO PUBLIC;

GRANT SELECT ON guardian.kinds, guardian.rules, guardian.allowlist, guardian.watched_tables, guardian.findings,
    guardian.activity_windows, guardian.activity_rules, guardian.table_activity_rules
    TO guardian_reader;
GRANT EXECUTE ON FUNCTION guardian.scan(regclass, boolean, bigint, bigint), guardian._scan_plan(regclass),
    guardian._row_findings(guardian.watched_tables, jsonb, jsonb, jsonb), guardian._match(text, text, text, regclass, boolean),
    guardian._rule_matches(text, text, text[], text), guardian._rule_matcher(text, text, text[]), guardian._regex_literal(text), guardian._normalize(text), guardian._redact(text, text, text[]),
    guardian._record_ref(guardian.watched_tables, jsonb), guardian._rule_anchors(guardian.rules),
    guardian._uuid_range(text), guardian._applicable_rules(), guardian._plan_watch(regclass, jsonb),
    guardian._record_key(regclass), guardian._infer_kind(text, text, regtype), guardian._watch_of(regclass),
    guardian._relation_tree(regclass), guardian._watch_record(regclass, jsonb, jsonb),
    guardian._watched_attnums(guardian.watched_tables, regclass), guardian._key_text(guardian.watched_tables, text, text),
    guardian._json_safe_type(oid), guardian._row_json_sql(regclass, text[], smallint[], text[])
    TO guardian_reader;

GRANT INSERT, UPDATE, DELETE ON guardian.rules, guardian.allowlist, guardian.activity_rules,
    guardian.table_activity_rules
    TO guardian_admin;
GRANT EXECUTE ON FUNCTION guardian.watch(regclass, jsonb, text), guardian.unwatch(regclass),
    guardian.allow(text, regclass, text, text, text, timestamptz),
    guardian._guard_watchable(regclass), guardian._trigger_ddl(regclass, jsonb), guardian._trigger_names(jsonb),
    guardian._drop_watch_triggers(regclass), guardian._column_test(text, jsonb),
    guardian._register_watch(regclass, jsonb, jsonb), guardian._statement_trigger_ddl(regclass, boolean),
    guardian._on_truncate(), guardian._on_contamination(), guardian._on_statement(), guardian._before_statement(),
    guardian._statement_followup(regclass, text, bigint),
    guardian._record_scan_finding(regclass, text, jsonb, text, text, text, text), guardian._flush_findings(regclass),
    guardian._compile_rules(), guardian.rollup_activity(), guardian.prune_activity()
    TO guardian_admin;

-- The C prefilter reads the specification of a table as the function's owner, so PUBLIC
-- (whoever writes) needs no EXECUTE on it: the anchors are the rules' terms.
GRANT EXECUTE ON FUNCTION guardian._prefilter_spec(regclass, boolean) TO guardian_reader;

-- The C triggers and prefilter exist only where the library is installed.
DO $grant_c$
BEGIN
    -- each group is created by its own block (21_activity, 20_contamination/00_matchers)
    IF to_regprocedure('guardian._activity_end()') IS NOT NULL THEN
        GRANT EXECUTE ON FUNCTION guardian._activity_start(), guardian._activity_end() TO guardian_admin;
    END IF;
    IF to_regprocedure('guardian._suspect_columns(regclass, "any")') IS NOT NULL THEN
        GRANT EXECUTE ON FUNCTION guardian._suspect(record), guardian._suspect(record, record),
            guardian._suspect_columns(regclass, "any") TO PUBLIC;
        -- The WHEN clauses then call only _suspect(): the compiled anchors (the rules' terms)
        -- are no one's business but the guardian's.
        REVOKE EXECUTE ON FUNCTION guardian._anchors(text, text), guardian._uuid_bounds(text) FROM PUBLIC;
    END IF;
END
$grant_c$;

-- The row trigger's function is cloned onto every new partition of a watched table by whoever
-- creates the partition, which needs EXECUTE on it. A trigger function cannot be called other
-- than as a trigger, and on a table that is not watched it does nothing.
GRANT EXECUTE ON FUNCTION guardian._on_contamination() TO PUBLIC;

-- >>> sql/99_finish/30_jobs.sql
GRANT SELECT ON guardian.jobs, guardian.job_status TO guardian_reader;
GRANT EXECUTE ON FUNCTION guardian.run_job(text), guardian.register_jobs(), guardian.unregister_jobs()
    TO guardian_admin;

-- Where pg_cron runs in this very database, schedule the jobs now; elsewhere this is a no-op
-- and `pg-guardian jobs serve` (or a later guardian.register_jobs()) takes over.
DO $register$
BEGIN
    IF to_regclass('cron.job') IS NOT NULL
       AND current_setting('cron.database_name', true) = current_database() THEN
        PERFORM guardian.register_jobs();
    END IF;
END
$register$;

-- >>> sql/99_finish/40_relay.sql
-- The relay role runs the relay and nothing else: it moves rows through the outbox only with
-- these functions, and reads its own status and silences.
GRANT EXECUTE ON FUNCTION guardian.relay_register(), guardian.relay_take_intake(integer),
    guardian.relay_enqueue(uuid[], text[], text[], interval[], interval[]),
    guardian.relay_claim(text, integer, integer, interval, interval, integer),
    guardian.relay_message_alerts(uuid[], integer), guardian.relay_delivered(uuid[]),
    guardian.relay_failed(uuid, integer, text, interval, integer), guardian.relay_next_due(text),
    guardian.relay_overview(), guardian._relay_lock_space(), guardian._relay_live_tokens(),
    guardian._relay_check_token(integer)
    TO guardian_relay;
GRANT SELECT ON guardian.relay_status, guardian.active_silences TO guardian_relay;

GRANT SELECT ON guardian.relay_status, guardian.active_silences, guardian.relay_silences,
    guardian.relay_outbox, guardian.relay_messages
    TO guardian_reader;
GRANT EXECUTE ON FUNCTION guardian.relay_overview(), guardian._relay_lock_space(),
    guardian._relay_live_tokens()
    TO guardian_reader;

GRANT EXECUTE ON FUNCTION guardian.create_silence(text[], interval, text, text, timestamptz),
    guardian.expire_silence(uuid), guardian.relay_retry(text), guardian.relay_prune(interval)
    TO guardian_admin;

-- >>> sql/99_finish/50_drift.sql
-- Drift: readers may see fingerprints, snapshots, schema changes and differences; admins take
-- snapshots, import fingerprints, approve baselines and run the check.
GRANT SELECT ON guardian.schema_snapshots, guardian.schema_changes TO guardian_reader;
GRANT DELETE ON guardian.schema_snapshots TO guardian_admin;

GRANT EXECUTE ON FUNCTION guardian.schema_objects(), guardian.schema_fingerprint(),
    guardian.normalize_sql(text), guardian.compare_fingerprints(jsonb, jsonb, boolean),
    guardian.diff_schema(bigint, boolean), guardian._check_fingerprint(jsonb, text),
    guardian._formatting_attribute(text, text, jsonb, jsonb), guardian._common_order(jsonb, jsonb),
    guardian._snapshot(bigint)
    TO guardian_reader;

GRANT EXECUTE ON FUNCTION guardian.snapshot_schema(text), guardian.import_fingerprint(text, jsonb, text),
    guardian.approve_baseline(bigint), guardian.check_drift(),
    guardian.record_schema_change(text, text, text, text, text, jsonb)
    TO guardian_admin;

-- >>> sql/99_finish/60_health_security.sql
-- Rights for health checks and security events.
--
-- guardian_owner runs the checks (guardian.run_checks is SECURITY DEFINER, and so is every
-- job). It needs to see all sessions and statistics, and to read the server log, and nothing
-- more: it is made a member of pg_monitor (read-only statistics, settings and pg_ls_logdir)
-- and may execute pg_read_binary_file(), which for a non-superuser only reads files inside
-- the data directory and log_directory. It is not a superuser and cannot read table data.
-- Without a superuser (plain-SQL install on managed Postgres) these grants are skipped and
-- the checks that need them report themselves as degraded, naming the GRANT to run.
DO $rights$
BEGIN
    IF (SELECT r.rolsuper FROM pg_catalog.pg_roles AS r WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER) THEN
        GRANT pg_monitor TO guardian_owner;
        GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean) TO guardian_owner;
    ELSE
        RAISE WARNING 'pg_guardian: % is not a superuser; health checks see only their own sessions and the server log is not read', CURRENT_USER
            USING HINT = 'As a superuser run: GRANT pg_monitor TO guardian_owner; GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean) TO guardian_owner;';
    END IF;
END
$rights$;

-- Two helpers stay with the installing role (they are created after 10_ownership on
-- purpose): only it may read password verifiers and delete pg_cron's history of the jobs it
-- scheduled. Each does one fixed thing, takes no SQL, and only guardian_owner may call it.
CREATE FUNCTION guardian._role_password_digests()
RETURNS TABLE (role_oid oid, digest text)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT has_table_privilege('pg_catalog.pg_authid', 'SELECT') THEN
        RETURN;
    END IF;
    -- A digest of the verifier: enough to see that it changed, useless to log in with.
    RETURN QUERY
    SELECT a.oid, encode(sha256(convert_to(a.oid::text || ':' || a.rolpassword, 'UTF8')), 'hex')
      FROM pg_catalog.pg_authid AS a
     WHERE a.rolpassword IS NOT NULL;
END
$$;
COMMENT ON FUNCTION guardian._role_password_digests() IS
    'Internal: a SHA-256 digest of each role''s password verifier, for the role_changes check (owned by the installing superuser; executable by guardian_owner only).';
REVOKE ALL ON FUNCTION guardian._role_password_digests() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION guardian._role_password_digests() TO guardian_owner;

CREATE FUNCTION guardian._prune_cron_history(p_older_than interval)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count bigint := 0;
BEGIN
    IF p_older_than IS NULL OR p_older_than < interval '1 hour' THEN
        RAISE EXCEPTION 'invalid retention % for pg_cron history', coalesce(p_older_than::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Keep at least an hour: SELECT guardian.set_param(''retention.cron_history_days'', 7);';
    END IF;
    IF to_regclass('cron.job_run_details') IS NULL THEN
        RETURN 0;
    END IF;
    EXECUTE $q$DELETE FROM cron.job_run_details AS d
                USING cron.job AS j
                WHERE d.jobid = j.jobid AND j.jobname LIKE 'guardian\_%' AND j.database = current_database()
                  AND d.end_time < now() - $1$q$
      USING p_older_than;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION guardian._prune_cron_history(interval) IS
    'Internal: deletes cron.job_run_details rows of this database''s guardian jobs older than the given age (owned by the installing role, which scheduled them; executable by guardian_owner only).';
REVOKE ALL ON FUNCTION guardian._prune_cron_history(interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION guardian._prune_cron_history(interval) TO guardian_owner;

GRANT SELECT ON guardian.parameters, guardian.parameter_values, guardian.checks, guardian.check_status,
    guardian.security_events, guardian.log_reader_state, guardian.size_history
    TO guardian_reader;
GRANT EXECUTE ON FUNCTION guardian.param(text), guardian._check_enabled(text) TO guardian_reader;
GRANT EXECUTE ON FUNCTION guardian.set_param(text, numeric, text), guardian.set_check_enabled(text, boolean, text),
    guardian.run_checks(text, text), guardian.run_checks_job(text), guardian.run_retention(),
    guardian.set_job(text, boolean, text, interval), guardian._check_cron_schedule(text)
    TO guardian_admin;
GRANT UPDATE (enabled, schedule, max_lag) ON guardian.jobs TO guardian_admin;

-- >>> sql/99_finish/70_response.sql
-- Rights for auto-response: cleanup scripts, quarantine and restore, auto-cleanup, lockdown,
-- policies.
--
-- Cleanups and restores read and change application rows with the rights of whoever runs
-- them, never the guardian's. The auto-response runs inside the committing session, whatever
-- its role, so the helpers it needs are executable by PUBLIC: the SECURITY INVOKER ones only
-- do what the caller could do anyway, and every SECURITY DEFINER one checks
-- guardian._response_caller() (an admin, or the guardian's own auto-response of this very
-- transaction) before it touches guardian state.
GRANT EXECUTE ON FUNCTION
    guardian._table_root(regclass), guardian._regclass_of(text), guardian._jsonb_texts(jsonb),
    guardian._attnames(regclass, int2[]), guardian._cleanup_edges(regclass[]), guardian._cleanup_steps(regclass[]),
    guardian._key_expr(regclass, text), guardian._column_list(text, text[]), guardian._cleanup_roots(jsonb),
    guardian._cleanup_collect(jsonb, boolean), guardian._comment(text),
    guardian._cleanup_counts(jsonb, guardian.cleanup_row[]), guardian._cleanup_group_sql(uuid, jsonb, integer),
    guardian._cleanup_step_list(jsonb, jsonb),
    guardian._render_cleanup_script(uuid, guardian.monitoring_alerts, jsonb, jsonb, boolean),
    guardian._cleanup_prepare(jsonb, uuid, boolean), guardian._table_shape(regclass), guardian._json_columns(regclass),
    guardian._row_json_expr(regclass, text), guardian.cleanup_begin(uuid, jsonb, jsonb),
    guardian._auto_cleanup(jsonb, uuid, numeric), guardian._record_key(regclass),
    -- SECURITY DEFINER, gated by guardian._response_caller():
    guardian._response_caller(), guardian._register_cleanup_script(uuid, uuid, jsonb, jsonb, boolean),
    guardian._cleanup_registered(uuid), guardian._quarantine_open(uuid),
    guardian._quarantine_put(uuid, guardian.quarantine_item[]), guardian.cleanup_targets(uuid, integer),
    guardian.cleanup_step(uuid, integer, bigint), guardian.cleanup_finish(uuid),
    guardian._auto_alert_roots(uuid), guardian._auto_response_report(text, uuid, text, jsonb),
    -- SECURITY DEFINER, acting only on this backend's own transaction or on the guardian's
    -- own thresholds:
    guardian._auto_response_begin(), guardian._auto_response_end(), guardian._auto_lockdown_check()
    TO PUBLIC;

GRANT SELECT ON guardian.cleanup_scripts, guardian.quarantine_batches, guardian.quarantine_status,
    guardian.lockdowns, guardian.lockdown_changes, guardian.lockdown_status, guardian.policies,
    guardian.response_settings
    TO guardian_reader;
GRANT EXECUTE ON FUNCTION guardian._alert_roots(uuid), guardian._table_roots(regclass, text[]),
    guardian._plan_of(jsonb), guardian.cleanup_plan(uuid), guardian.cleanup_plan(regclass, text[]),
    guardian.lockdown_roles(), guardian._lockdown_protected(oid), guardian._response_flag(text, boolean),
    guardian.policy_problems(text[], text[], text[], jsonb, text[], text[])
    TO guardian_reader;

-- The relay routes by the policy of the environment when it sets routes.
GRANT EXECUTE ON FUNCTION guardian.policy_routes() TO guardian_relay, guardian_reader;

-- Whole quarantined rows are application data: admins only.
GRANT SELECT ON guardian.quarantine, guardian.quarantined_rows TO guardian_admin;
GRANT EXECUTE ON FUNCTION guardian.cleanup_script(uuid), guardian.cleanup_script(regclass, text[]),
    guardian.restore(uuid, boolean), guardian._quarantine_claim(uuid), guardian._quarantine_restored(uuid, text),
    guardian._restore_value(regclass, text, jsonb), guardian._shape_difference(jsonb, jsonb),
    guardian.prune_quarantine(), guardian.lockdown(text), guardian.unlock(text),
    guardian.set_response_setting(text, jsonb, text), guardian.set_auto_cleanup(boolean, text),
    guardian.set_auto_lockdown(boolean, integer, text),
    guardian.policy_begin(text, boolean, text[], text[], text[], jsonb, text[], text[]),
    guardian.policy_finish(text, text, text, boolean)
    TO guardian_admin;

-- The three lockdown helpers stay with the installing superuser (see 60_response/70_lockdown.sql);
-- only the guardian's own lockdown()/unlock() call them.
REVOKE ALL ON FUNCTION guardian._lockdown_privilege(boolean, regclass, oid, text[], text, boolean),
    guardian._lockdown_read_only(oid, text), guardian._lockdown_end_sessions(oid[])
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION guardian._lockdown_privilege(boolean, regclass, oid, text[], text, boolean),
    guardian._lockdown_read_only(oid, text), guardian._lockdown_end_sessions(oid[])
    TO guardian_owner;

-- >>> sql/99_finish/72_app_code.sql
-- Rights for the helpers that name the application's code a tool would run
-- (60_response/15_app_code.sql) and for the restore that asks to run it anyway.
--
-- The exposure helpers are SECURITY INVOKER and read only the catalog, which every role may
-- read already: they show nothing new. They are called by the scan (guardian_reader), by
-- restores and cleanup scripts (admins) and by the auto-response, which runs inside the
-- committing session whatever its role, so PUBLIC may execute them. Refusing is the caller's
-- own safety (it only ever refuses a superuser), so no one gains anything by calling them.
GRANT EXECUTE ON FUNCTION guardian._app_function(oid), guardian._app_code_exposure(regclass[]),
    guardian._refuse_app_code(regclass[], text, text, text[])
    TO PUBLIC;

-- The scan and the cleanup steps build a row's JSON with it: readers scan, and the
-- auto-response's cleanup runs in the committing session (it returns SQL text, nothing else).
GRANT EXECUTE ON FUNCTION guardian._scan_row_json(regclass, text), guardian._json_safe_type(oid) TO guardian_reader, PUBLIC;

-- A restore that runs the application's code as asked is a restore: admins only, as the
-- two-argument form (99_finish/70_response.sql).
GRANT EXECUTE ON FUNCTION guardian.restore(uuid, boolean, boolean) TO guardian_admin;

-- >>> sql/99_finish/80_no_create.sql
-- Before the privilege snapshot (90_security_baseline.sql), so that it is not reported as a
-- change: guardian_owner owns what it needs and may create nothing more. Without CREATE on
-- the schema it cannot CREATE OR REPLACE any function, nor add a view or a type, so no code
-- runs as it but what this script installed (the DDL guard refuses it the rest: ALTER, RULE,
-- TRIGGER, DROP; see 00_core/60_tamper_guard.sql).
REVOKE CREATE ON SCHEMA guardian FROM guardian_owner;

-- >>> sql/99_finish/90_compile.sql
-- Compile the installed rules into the write-path prefilters.
SELECT guardian._compile_rules();

-- >>> sql/99_finish/90_security_baseline.sql
-- Last, after every grant the install makes: the privilege and role snapshots and the
-- server log position the security checks compare against, then the event trigger that
-- reports GRANT and REVOKE from now on.
SELECT pg_catalog.count(*) FROM guardian._privilege_changes('install');
SELECT guardian._take_role_snapshot();
DO $log_position$
BEGIN
    INSERT INTO guardian.log_reader_state (file_name, file_offset, last_detail)
    SELECT f.name, f.size, 'started at the end of the newest log file at install'
      FROM guardian._log_files() AS f
     ORDER BY f.modification DESC, f.name DESC
     LIMIT 1;
EXCEPTION WHEN insufficient_privilege OR object_not_in_prerequisite_state THEN
    NULL;   -- the server_log check reports why it cannot read the log
END
$log_position$;

DO $event_trigger$
BEGIN
    IF (SELECT r.rolsuper FROM pg_catalog.pg_roles AS r WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER) THEN
        CREATE EVENT TRIGGER guardian_grant_revoke
            ON ddl_command_end
            WHEN TAG IN ('GRANT', 'REVOKE')
            EXECUTE FUNCTION guardian._on_grant_revoke();
        -- Like every event trigger function, it stays with the installing superuser (see
        -- 99_finish/10_ownership.sql): it runs as whoever issues GRANT, superusers included.
        ALTER FUNCTION guardian._on_grant_revoke() OWNER TO CURRENT_USER;
    ELSE
        RAISE WARNING 'pg_guardian: % is not a superuser; GRANT and REVOKE are found by the scheduled privilege_changes check only', CURRENT_USER;
    END IF;
END
$event_trigger$;
