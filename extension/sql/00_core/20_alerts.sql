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
    outcome         text,
    CONSTRAINT monitoring_alerts_severity_chk
        CHECK (severity IN ('CRITICAL', 'HIGH', 'MEDIUM', 'LOW', 'INFO')),
    CONSTRAINT monitoring_alerts_type_chk CHECK (type ~ '^[A-Z][A-Z0-9_]{0,62}$'),
    CONSTRAINT monitoring_alerts_occurrences_chk CHECK (occurrences >= 1),
    CONSTRAINT monitoring_alerts_resolved_chk CHECK (resolved_by IS NULL OR resolved_at IS NOT NULL),
    CONSTRAINT monitoring_alerts_outcome_chk
        CHECK (outcome IN ('cleaned', 'confirmed', 'false_positive', 'expected'))
);
COMMENT ON TABLE guardian.monitoring_alerts IS
    'Every alert the guardian raises, one row per open condition (occurrences counts repeats). Raise with guardian.raise_alert(); triage with guardian.acknowledge_alert() and guardian.resolve_alert().';
COMMENT ON COLUMN guardian.monitoring_alerts.fingerprint IS
    'Identity of the condition: repeats of an open alert with the same fingerprint add to occurrences instead of a new row.';
COMMENT ON COLUMN guardian.monitoring_alerts.context IS
    'Session that raised the alert: roles, application_name, client address, backend pid, transaction id.';
COMMENT ON COLUMN guardian.monitoring_alerts.outcome IS
    'Why it was closed: cleaned (test data, removed), confirmed (true, kept), false_positive (wrong, or allowlisted), expected (e.g. a planned bulk load); NULL while unknown. Set by guardian.resolve_alert(), a cleanup (cleaned) and allowlisting (false_positive).';
SELECT pg_catalog.pg_extension_config_dump('guardian.monitoring_alerts', '');

CREATE INDEX idx_alerts_severity ON guardian.monitoring_alerts (severity);
-- The design's two indexes, by type and by time, shaped for reports: by type over a period,
-- and by time carrying what reports count (so they read the index, not the rows).
CREATE INDEX idx_alerts_type ON guardian.monitoring_alerts (type, created_at);
CREATE INDEX idx_alerts_created_at ON guardian.monitoring_alerts (created_at)
    INCLUDE (severity, type, environment, table_name, occurrences, outcome, acknowledged_at, resolved_at);
-- The backlog at any point in time: alerts still open then (resolved later, or never).
CREATE INDEX monitoring_alerts_resolved_at_idx
    ON guardian.monitoring_alerts ((COALESCE(resolved_at, 'infinity'::timestamptz)));
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
