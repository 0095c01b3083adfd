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
