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
    guardian.acknowledge_alert(uuid), guardian.resolve_alert(uuid, text, text)
    TO guardian_admin;
GRANT INSERT, UPDATE, DELETE ON guardian.settings TO guardian_admin;
