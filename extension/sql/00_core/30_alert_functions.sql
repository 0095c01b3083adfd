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

-- Who acts: the session's role, or, when a front end acting for a person set
-- pg_guardian.actor (the dashboard sets it to 'alice@dashboard'), that person and the role:
-- 'alice@dashboard via guardian_dash'. The role always stays in the record, so a session can
-- name itself but never hide who it is.
CREATE FUNCTION guardian._actor()
RETURNS text
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN v.actor = '' THEN SESSION_USER::text
                ELSE format('%s via %s', v.actor, SESSION_USER) END
      FROM (SELECT left(btrim(regexp_replace(coalesce(current_setting('pg_guardian.actor', true), ''),
                                             '[[:cntrl:]]', '', 'g')), 63) AS actor) AS v
$$;
COMMENT ON FUNCTION guardian._actor() IS
    'The actor recorded by acknowledgements, resolutions, restores, baseline approvals and unlocks: SESSION_USER, or "<pg_guardian.actor> via <SESSION_USER>" when a front end named the person it acts for.';

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
           acknowledged_by = coalesce(a.acknowledged_by, guardian._actor())
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

CREATE FUNCTION guardian._check_outcome(p_outcome text)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_outcome IS NOT NULL AND p_outcome NOT IN ('cleaned', 'confirmed', 'false_positive', 'expected') THEN
        RAISE EXCEPTION 'unknown alert outcome %', quote_literal(p_outcome)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use cleaned (test data, removed), confirmed (true, kept), false_positive (wrong) or expected (e.g. a planned load).';
    END IF;
    RETURN p_outcome;
END
$$;
COMMENT ON FUNCTION guardian._check_outcome(text) IS
    'Internal: an alert outcome, or an error naming the four there are.';

CREATE FUNCTION guardian.resolve_alert(p_id uuid, p_note text DEFAULT NULL, p_outcome text DEFAULT NULL)
RETURNS guardian.monitoring_alerts
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_alert guardian.monitoring_alerts;
    v_outcome text := guardian._check_outcome(p_outcome);
BEGIN
    -- Resolving twice keeps the first resolution; a later outcome corrects the earlier one.
    UPDATE guardian.monitoring_alerts AS a
       SET resolved_at     = coalesce(a.resolved_at, now()),
           resolved_by     = coalesce(a.resolved_by, guardian._actor()),
           resolution_note = coalesce(p_note, a.resolution_note),
           outcome         = coalesce(v_outcome, a.outcome),
           acknowledged_at = coalesce(a.acknowledged_at, now()),
           acknowledged_by = coalesce(a.acknowledged_by, guardian._actor())
     WHERE a.id = p_id
    RETURNING a.* INTO v_alert;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no alert with id %', p_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'List open alerts with: SELECT id, type, message FROM guardian.open_alerts;';
    END IF;
    -- A contamination alert's outcome labels its records for the rules learned from them
    -- (62_learning/10_labels.sql).
    IF v_outcome IS NOT NULL THEN
        PERFORM guardian._label_alert(v_alert.id, v_outcome);
    END IF;
    RETURN v_alert;
END
$$;
COMMENT ON FUNCTION guardian.resolve_alert(uuid, text, text) IS
    'Close an alert (who, when, an optional note) and say why: p_outcome cleaned, confirmed, false_positive or expected. A later repeat of the condition opens a new alert.';

CREATE VIEW guardian.open_alerts AS
SELECT a.id, a.severity, a.type, a.message, a.table_name, a.record_id, a.environment,
       a.occurrences, a.created_at, a.last_seen_at, a.acknowledged_at, a.acknowledged_by,
       a.metadata
  FROM guardian.monitoring_alerts AS a
 WHERE a.resolved_at IS NULL
 ORDER BY array_position(ARRAY['CRITICAL','HIGH','MEDIUM','LOW','INFO'], a.severity), a.last_seen_at DESC;
COMMENT ON VIEW guardian.open_alerts IS 'Unresolved alerts, most severe and most recent first.';
