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
    scope         text NOT NULL DEFAULT 'database',
    CONSTRAINT checks_name_chk CHECK (name ~ '^[a-z][a-z0-9_]{0,40}$'),
    CONSTRAINT checks_category_chk CHECK (category ~ '^[a-z][a-z0-9_]{0,20}$'),
    CONSTRAINT checks_status_chk CHECK (last_status IN ('ok', 'findings', 'degraded', 'error', 'elsewhere')),
    CONSTRAINT checks_scope_chk CHECK (scope IN ('database', 'cluster'))
);
COMMENT ON TABLE guardian.checks IS
    'Registered checks by category (health, security, posture, jobs): the function returning guardian.finding rows, whether findings are conditions (auto-resolved when cleared) or events, and how the last run went. Switch one off with guardian.set_check_enabled().';
COMMENT ON COLUMN guardian.checks.last_status IS
    'ok: nothing found; findings: alerts raised; degraded: the check could only partly look (see last_detail); error: it failed (a CHECK_FAILED alert says why); elsewhere: a cluster-wide check that another database of the cluster runs.';
COMMENT ON COLUMN guardian.checks.scope IS
    'database: every guarded database runs it; cluster: it looks at the whole cluster (connections, replication, wraparound, logins, roles) and runs in one database only, guardian.cluster_checks_database().';

-- One cluster often guards several databases. A cluster-wide check runs in one of them: the
-- one the setting cluster.checks_database names ('*': every database), else the pg_cron
-- database when the guardian is installed there, else the guarded database created first.
-- The guarded databases are found in the shared catalog: objects owned by guardian_owner.
CREATE FUNCTION guardian.cluster_checks_database()
RETURNS text
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_setting text := guardian.setting('cluster.checks_database') #>> '{}';
    v_cron    text := nullif(current_setting('cron.database_name', true), '');
    v_db      text;
BEGIN
    IF nullif(v_setting, '') IS NOT NULL THEN
        RETURN v_setting;
    END IF;
    SELECT d.datname INTO v_db
      FROM pg_catalog.pg_database AS d
     WHERE NOT d.datistemplate AND d.datallowconn
       AND EXISTS (SELECT FROM pg_catalog.pg_shdepend AS s
                    WHERE s.dbid = d.oid
                      AND s.refclassid = 'pg_catalog.pg_authid'::regclass
                      AND s.refobjid = (SELECT r.oid FROM pg_catalog.pg_roles AS r WHERE r.rolname = 'guardian_owner')
                      AND s.deptype = 'o')
     ORDER BY d.datname IS DISTINCT FROM v_cron, d.oid
     LIMIT 1;
    RETURN coalesce(v_db, current_database());
END
$$;
COMMENT ON FUNCTION guardian.cluster_checks_database() IS
    'The database of this cluster that runs the cluster-wide checks: the setting cluster.checks_database (''*'': every one), else the pg_cron database if guarded, else the guarded database created first.';
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
    v_cluster_db text;
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
        IF v_check.scope = 'cluster' THEN
            v_cluster_db := coalesce(v_cluster_db, guardian.cluster_checks_database());
            IF v_cluster_db NOT IN ('*', current_database()) THEN
                -- Another database raises these findings; what this one raised before is its.
                status := 'elsewhere';
                detail := format('cluster-wide check: runs in database %s', v_cluster_db);
                PERFORM guardian._resolve_cleared(v_check.name, '{}',
                    format('cluster-wide check %s now runs in database %s', v_check.name, v_cluster_db));
                UPDATE guardian.checks AS c
                   SET last_run_at = clock_timestamp(), last_status = 'elsewhere', last_detail = detail,
                       last_findings = 0, last_duration = NULL
                 WHERE c.name = v_check.name;
                RETURN NEXT;
                CONTINUE;
            END IF;
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
       c.description, c.last_run_at, c.last_status, c.last_detail, c.last_findings, c.last_duration,
       c.scope
  FROM guardian.checks AS c;
COMMENT ON VIEW guardian.check_status IS
    'Each check: category, on or off in this environment, how its last run went (ok, findings, degraded with the reason, error).';
