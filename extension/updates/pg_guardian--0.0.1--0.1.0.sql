-- pg_guardian--0.0.1--0.1.0.sql
\echo Use "ALTER EXTENSION pg_guardian UPDATE TO '0.1.0'" to load this file. \quit

-- Pre-1.0 updates rebuild: move the 0.0.1 objects aside, create 0.1.0 exactly as a fresh
-- 0.1.0 install does (its frozen script, spliced in below by pg_guardian.scripts), then carry the data over.
ALTER TABLE guardian.monitoring_alerts RENAME TO _v001_monitoring_alerts;
ALTER TABLE guardian._v001_monitoring_alerts RENAME CONSTRAINT monitoring_alerts_pkey TO _v001_monitoring_alerts_pkey;
DROP INDEX guardian.idx_alerts_severity, guardian.idx_alerts_type, guardian.idx_alerts_created_at;
ALTER TABLE guardian.config RENAME TO _v001_config;
ALTER TABLE guardian._v001_config RENAME CONSTRAINT config_pkey TO _v001_config_pkey;
DROP FUNCTION guardian.set_environment(text);

-- @@ install script 0.1.0 @@

-- 0.0.1 stored the environment as a config key; its alert rows carry over unchanged (times
-- were local timestamps: read them in the server's time zone).
INSERT INTO guardian.environment (singleton, name)
SELECT true, lower(c.value)
  FROM guardian._v001_config AS c
 WHERE c.key = 'environment' AND lower(c.value) ~ '^[a-z][a-z0-9_-]{0,62}$';

INSERT INTO guardian.monitoring_alerts
    (id, severity, type, message, table_name, record_id, environment, metadata,
     resolved_at, created_at, last_seen_at)
SELECT o.id,
       CASE WHEN upper(o.severity) IN ('CRITICAL', 'HIGH', 'MEDIUM', 'LOW', 'INFO')
            THEN upper(o.severity) ELSE 'MEDIUM' END,
       CASE WHEN upper(o.type) ~ '^[A-Z][A-Z0-9_]{0,62}$' THEN upper(o.type) ELSE 'LEGACY_ALERT' END,
       o.message, o.table_name, o.record_id, coalesce(o.environment, 'production'),
       coalesce(o.metadata, '{}'::jsonb) || jsonb_build_object('migrated_from', '0.0.1'),
       o.resolved_at, coalesce(o.created_at, now()), coalesce(o.created_at, now())
  FROM guardian._v001_monitoring_alerts AS o;

DROP TABLE guardian._v001_monitoring_alerts, guardian._v001_config;
