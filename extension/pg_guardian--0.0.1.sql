-- pg_guardian--0.0.1.sql: the first release, frozen. Never edit a released script.
\echo Use "CREATE EXTENSION pg_guardian" to load this file. \quit

CREATE TABLE guardian.config (
    key   text PRIMARY KEY,
    value text NOT NULL
);
SELECT pg_catalog.pg_extension_config_dump('guardian.config', '');

CREATE TABLE guardian.monitoring_alerts (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    severity    text NOT NULL,
    type        text NOT NULL,
    message     text NOT NULL,
    table_name  text,
    record_id   text,
    environment text DEFAULT 'production',
    metadata    jsonb,
    resolved_at timestamp,
    created_at  timestamp DEFAULT now()
);
SELECT pg_catalog.pg_extension_config_dump('guardian.monitoring_alerts', '');
CREATE INDEX idx_alerts_severity ON guardian.monitoring_alerts (severity);
CREATE INDEX idx_alerts_type ON guardian.monitoring_alerts (type);
CREATE INDEX idx_alerts_created_at ON guardian.monitoring_alerts (created_at);

CREATE FUNCTION guardian.set_environment(p_name text)
RETURNS text
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO guardian.config (key, value) VALUES ('environment', p_name)
    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value
    RETURNING value
$$;
REVOKE ALL ON FUNCTION guardian.set_environment(text) FROM PUBLIC;
