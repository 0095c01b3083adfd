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
