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
    -- Never with p_include_restricted: what RESTRICT protects is removed only when a person asks.
    v_counts := guardian._cleanup_counts(p_roots, v_rows);
    v_steps := guardian._cleanup_step_list(p_roots, v_counts);
    SELECT string_agg(format('%s row(s) of %s reference %s through %s (ON DELETE RESTRICT / NO ACTION), e.g. %s',
                             s ->> 'rows', s ->> 'table', s ->> 'parent', s -> 'via' ->> 0,
                             (SELECT string_agg(k.row_key::text, ', ')
                                FROM (SELECT r.row_key FROM unnest(v_rows) AS r WHERE r.step = (s ->> 'step')::integer
                                       ORDER BY r.row_key::text LIMIT 3) AS k)), '; ')
      INTO v_blocked FROM jsonb_array_elements(v_steps) AS s
     WHERE s ->> 'action' = 'blocked' AND (s ->> 'rows')::bigint > 0;
    v_total := (SELECT sum((s ->> 'rows')::bigint) FROM jsonb_array_elements(v_steps) AS s WHERE s ->> 'action' <> 'blocked');
    IF v_blocked IS NOT NULL THEN
        PERFORM guardian._auto_response_report('AUTO_CLEANUP_SKIPPED', p_alert,
            format('auto-cleanup skipped: %s. Auto-cleanup never removes rows protected by ON DELETE RESTRICT; if they are test data too, an admin can include them: SELECT * FROM guardian.cleanup_plan(%L::uuid, p_include_restricted => true);',
                   v_blocked, p_alert),
            jsonb_build_object('rows', v_total, 'blocked', v_blocked, 'max_rows', p_max_rows));
        RETURN 'skipped';
    END IF;
    IF v_total > p_max_rows THEN
        PERFORM guardian._auto_response_report('AUTO_CLEANUP_SKIPPED', p_alert,
            format('auto-cleanup skipped: it would quarantine %s rows, more than auto_cleanup.max_rows (%s); a person has to decide. Dry run: SELECT * FROM guardian.cleanup_plan(%L::uuid);',
                   v_total, p_max_rows, p_alert),
            jsonb_build_object('rows', v_total, 'max_rows', p_max_rows));
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
    'Internal: quarantines these records and their dependent rows exactly as their cleanup script would, unless blocked (rows protected by RESTRICT / NO ACTION are never included automatically) or larger than auto_cleanup.max_rows (then AUTO_CLEANUP_SKIPPED, naming the blocking rows).';

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
                    format('auto-cleanup failed, nothing was removed: %s. An admin can review and run the script: SELECT guardian.cleanup_script(%L::uuid);',
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
                    format('could not generate the script with the alert (%s); an admin can: SELECT guardian.cleanup_script(%L::uuid);',
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
