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
