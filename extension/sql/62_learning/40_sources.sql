-- Predicting contamination from where writes come from. A session whose application, role
-- or client looks like a test tool or CI runner raises TEST_TOOL_WRITE on its first write of
-- the day to a watched table in production, whatever the values; a source whose writes
-- contaminated before (learned from the alert history: outcomes are labels) raises
-- CONTAMINATION_RISK on its first write of the day. The write path asks once per session and
-- day (guardian._source_verdict(), cached by the C statement trigger); the alert itself is
-- raised by guardian._statement_followup().
INSERT INTO guardian.parameters (name, default_value, min_value, max_value, unit, description) VALUES
    ('learning.risk_window_days', 90, 1, 3650, 'days',
     'Sources are scored on this much alert and activity history'),
    ('learning.risk_threshold', 0.2, 0.01, 1, 'probability',
     'A source whose estimated chance that a day of its writes brings test data is at least this is risky (CONTAMINATION_RISK)');

CREATE TABLE guardian.test_sources (
    name        text PRIMARY KEY,
    source      text NOT NULL,
    pattern     text NOT NULL,
    description text NOT NULL,
    enabled     boolean NOT NULL DEFAULT true,
    builtin     boolean NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_by  text NOT NULL DEFAULT CURRENT_USER,
    CONSTRAINT test_sources_name_chk CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    CONSTRAINT test_sources_source_chk CHECK (source IN ('application', 'role', 'client'))
);
COMMENT ON TABLE guardian.test_sources IS
    'What a test tool or CI runner looks like: a regular expression (case-insensitive) on the application name or the session role, or a network (CIDR) of client addresses. A write to a watched table in production from a matching session raises TEST_TOOL_WRITE. Edit with SQL.';
SELECT pg_catalog.pg_extension_config_dump('guardian.test_sources', 'WHERE NOT builtin');

CREATE FUNCTION guardian._validate_test_source()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    NEW.updated_at := now();
    NEW.updated_by := SESSION_USER;
    IF NEW.source = 'client' THEN
        BEGIN
            PERFORM NEW.pattern::cidr;
        EXCEPTION WHEN invalid_text_representation THEN
            RAISE EXCEPTION 'test source %: % is not a network', NEW.name, quote_literal(NEW.pattern)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'A client source is a network in CIDR notation, e.g. 10.20.0.0/16 or 192.0.2.7/32.';
        END;
    ELSE
        BEGIN
            PERFORM '' ~* NEW.pattern;
        EXCEPTION WHEN invalid_regular_expression THEN
            RAISE EXCEPTION 'test source %: invalid regular expression %', NEW.name, quote_literal(NEW.pattern)
                USING ERRCODE = 'invalid_regular_expression', DETAIL = SQLERRM,
                      HINT = 'Patterns are PostgreSQL regular expressions, matched case-insensitively, e.g. ^(cypress|pytest)\M.';
        END;
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION guardian._validate_test_source() IS
    'Internal: rejects test sources with a bad pattern or network.';
CREATE TRIGGER test_sources_validate
    BEFORE INSERT OR UPDATE ON guardian.test_sources
    FOR EACH ROW EXECUTE FUNCTION guardian._validate_test_source();
-- Sessions keep their verdict until the compiled rules change: recompiling asks them again.
CREATE TRIGGER test_sources_recompile
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON guardian.test_sources
    FOR EACH STATEMENT EXECUTE FUNCTION guardian._recompile();

INSERT INTO guardian.test_sources (name, source, pattern, description, builtin) VALUES
    ('test_runner_application', 'application',
     '(^|[^[:alnum:]])(cypress|playwright|selenium|puppeteer|webdriver|jest|vitest|mocha|pytest|rspec|minitest|phpunit|testcafe|nightwatch|capybara|behave|cucumber)([^[:alnum:]]|$)',
     'Test runners and browser drivers that name their connections (pytest, cypress, rspec, ...)', true),
    ('seeder_application', 'application',
     '(^|[^[:alnum:]])(test|tests|testing|e2e|qa|ci|seed|seeds|seeder|seeding|fixture|fixtures|faker|factory_?bot|loaddata|loadtest|k6|locust|jmeter|gatling|artillery)([^[:alnum:]]|$)',
     'Seed scripts, fixture loaders, load generators and CI jobs (db:seed, loaddata, k6, app-test, ci-runner)', true),
    ('test_role', 'role',
     '^(test|tests|testing|tester|e2e|qa|ci|seed|seeder|fixtures?|loadtest|sandbox)([_-]|[0-9]|$)|[_-](test|tests|testing|e2e|qa|ci|seed|seeder|fixtures?)[0-9]*$',
     'Roles made for tests, QA, CI or seeding (test_user, qa, ci_runner, app_test, seeder)', true);

-- What the history says about each source: the days it wrote to watched tables and the days
-- its writes brought test data (contamination alerts whose outcome was cleaned or confirmed, or
-- that are still open) or were wrongly suspected (false_positive). Refreshed by score_sources().
CREATE TABLE guardian.source_risk (
    source              text NOT NULL,
    value               text NOT NULL,
    score               numeric(5, 4) NOT NULL,
    contaminated_days   integer NOT NULL,
    false_positive_days integer NOT NULL,
    write_days          integer NOT NULL,
    alert_ids           uuid[] NOT NULL DEFAULT '{}',
    computed_at         timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT source_risk_pkey PRIMARY KEY (source, value),
    CONSTRAINT source_risk_source_chk CHECK (source IN ('application', 'role', 'client'))
);
COMMENT ON TABLE guardian.source_risk IS
    'Per source (application, role, client address): days it wrote, days its writes brought test data or a false alarm, and the estimated chance that a day of its writes brings test data (score). Sources at or above learning.risk_threshold raise CONTAMINATION_RISK. Refreshed by guardian.score_sources() (job source_risk).';
COMMENT ON COLUMN guardian.source_risk.score IS
    '(contaminated days + 0.1) / (days observed + 1.1), days observed being the days it wrote (or was alerted on): a Beta(0.1, 1) prior on the chance that a day of its writes brings test data.';

CREATE FUNCTION guardian.score_sources()
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_since timestamptz := now() - make_interval(days => guardian.param('learning.risk_window_days')::integer);
    v_threshold numeric := guardian.param('learning.risk_threshold');
    v_before text[];
    v_after  text[];
    v_count  integer;
BEGIN
    IF pg_is_in_recovery() THEN
        RETURN 0;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('guardian.score_sources'));
    v_before := ARRAY(SELECT r.source || ':' || r.value FROM guardian.source_risk AS r
                       WHERE r.score >= v_threshold ORDER BY 1);
    DELETE FROM guardian.source_risk;
    WITH alerts AS (
        SELECT a.id, a.created_at::date AS day,
               CASE WHEN a.outcome = 'false_positive' THEN 'real'
                    WHEN a.outcome IN ('cleaned', 'confirmed') OR a.outcome IS NULL THEN 'test' END AS label,
               a.context
          FROM guardian.monitoring_alerts AS a
         WHERE a.type IN ('TEST_DATA_CONTAMINATION', 'STRICT_MODE_REJECTION')
           AND a.created_at >= v_since
           AND a.environment = guardian.current_environment()
           AND coalesce(a.outcome, '') <> 'expected'
    ), alert_sources AS (
        SELECT s.source, s.value, a.id, a.day, a.label
          FROM alerts AS a,
               LATERAL (VALUES ('application', a.context ->> 'application_name'),
                               ('role', a.context ->> 'session_user'),
                               ('client', a.context ->> 'client_addr')) AS s(source, value)
         WHERE s.value IS NOT NULL AND a.label IS NOT NULL
    ), writes AS (
        SELECT 'role' AS source, r.key AS value, w.minute::date AS day
          FROM guardian.activity_windows AS w, jsonb_each(w.roles) AS r
         WHERE w.minute >= v_since
        UNION
        SELECT 'application', p.key, w.minute::date
          FROM guardian.activity_windows AS w, jsonb_each(w.applications) AS p
         WHERE w.minute >= v_since
    ), days AS (
        SELECT x.source, x.value, x.day FROM writes AS x
        UNION
        SELECT s.source, s.value, s.day FROM alert_sources AS s
    ), scored AS (
        SELECT d.source, d.value,
               count(DISTINCT d.day) AS observed,
               (SELECT count(DISTINCT s.day) FROM alert_sources AS s
                 WHERE s.source = d.source AND s.value = d.value AND s.label = 'test') AS contaminated,
               (SELECT count(DISTINCT s.day) FROM alert_sources AS s
                 WHERE s.source = d.source AND s.value = d.value AND s.label = 'real') AS false_positive,
               (SELECT count(DISTINCT x.day) FROM writes AS x WHERE x.source = d.source AND x.value = d.value) AS wrote,
               ARRAY(SELECT s.id FROM alert_sources AS s
                      WHERE s.source = d.source AND s.value = d.value AND s.label = 'test'
                      ORDER BY s.day DESC LIMIT 10) AS alert_ids
          FROM days AS d
         GROUP BY d.source, d.value
    )
    INSERT INTO guardian.source_risk (source, value, score, contaminated_days, false_positive_days, write_days, alert_ids)
    SELECT s.source, s.value, round((s.contaminated + 0.1) / (s.observed + 1.1), 4), s.contaminated, s.false_positive,
           s.wrote, s.alert_ids
      FROM scored AS s
     WHERE s.contaminated > 0;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    v_after := ARRAY(SELECT r.source || ':' || r.value FROM guardian.source_risk AS r
                      WHERE r.score >= v_threshold ORDER BY 1);
    -- sessions ask again when the risky sources change
    IF v_after IS DISTINCT FROM v_before THEN
        PERFORM guardian._compile_rules();
    END IF;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION guardian.score_sources() IS
    'Score every source (application, role, client address) that brought test data in the last learning.risk_window_days: days it wrote, days with contamination (alerts cleaned, confirmed or open) and false alarms. Run hourly by the source_risk job; returns the number of sources with a contamination.';

INSERT INTO guardian.jobs (name, schedule, command, description, max_lag, builtin)
VALUES ('source_risk', '41 * * * *', 'SELECT guardian.score_sources()',
        'Score the sources of writes (role, application, client) on the contamination history: CONTAMINATION_RISK',
        '3 hours', true);

-- This session as a source: which test source it matches (production only), else which risky
-- source it is; NULL when neither. The day's alert fingerprint comes with it.
CREATE FUNCTION guardian._session_source()
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_env    text := guardian.current_environment();
    v_app    text := nullif(current_setting('application_name', true), '');
    v_role   text := SESSION_USER;
    v_client inet := inet_client_addr();
    v_found  jsonb;
BEGIN
    IF v_env IS DISTINCT FROM 'production' THEN
        RETURN NULL;
    END IF;
    SELECT jsonb_build_object('type', 'TEST_TOOL_WRITE', 'test_source', t.name, 'source', t.source,
                              'pattern', t.pattern, 'description', t.description,
                              'value', CASE t.source WHEN 'application' THEN v_app WHEN 'role' THEN v_role
                                                     ELSE host(v_client) END)
      INTO v_found
      FROM guardian.test_sources AS t
     WHERE t.enabled
       AND CASE t.source WHEN 'application' THEN v_app ~* t.pattern
                         WHEN 'role' THEN v_role ~* t.pattern
                         ELSE v_client <<= t.pattern::cidr END
     ORDER BY t.builtin, t.name
     LIMIT 1;
    IF v_found IS NULL THEN
        SELECT jsonb_build_object('type', 'CONTAMINATION_RISK', 'source', r.source, 'value', r.value,
                                  'score', r.score, 'contaminated_days', r.contaminated_days,
                                  'false_positive_days', r.false_positive_days, 'write_days', r.write_days,
                                  'alert_ids', to_jsonb(r.alert_ids), 'scored_at', r.computed_at,
                                  'threshold', guardian.param('learning.risk_threshold'))
          INTO v_found
          FROM guardian.source_risk AS r
         WHERE r.score >= guardian.param('learning.risk_threshold')
           AND ((r.source = 'application' AND r.value = v_app) OR (r.source = 'role' AND r.value = v_role)
                OR (r.source = 'client' AND r.value = host(v_client)))
         ORDER BY r.score DESC, r.source
         LIMIT 1;
    END IF;
    IF v_found IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN v_found || jsonb_build_object('fingerprint', md5(concat_ws('|', v_found ->> 'type', v_env, v_found ->> 'source',
                                                                      v_found ->> 'value', current_date::text)));
END
$$;
COMMENT ON FUNCTION guardian._session_source() IS
    'Internal: this session as a source of writes in production: the test source it matches (TEST_TOOL_WRITE) or the risky source it is (CONTAMINATION_RISK), with today''s alert fingerprint; NULL otherwise.';

-- Asked by the write path (the C statement trigger once per session and day, the PL/pgSQL one
-- every statement): does this session's next write raise an alert today?
CREATE FUNCTION guardian._source_verdict()
RETURNS boolean
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.found IS NOT NULL
           AND NOT EXISTS (SELECT FROM guardian.monitoring_alerts AS a
                            WHERE a.fingerprint = s.found ->> 'fingerprint' AND a.resolved_at IS NULL)
      FROM (SELECT guardian._session_source() AS found) AS s
$$;
COMMENT ON FUNCTION guardian._source_verdict() IS
    'Internal: is this session a test tool or a risky source writing to production, not yet alerted on today?';

-- The alert of a source's first write of the day, from guardian._statement_followup().
CREATE FUNCTION guardian._source_alert(p_relid regclass, p_op text, p_rows bigint)
RETURNS uuid
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_found jsonb := guardian._session_source();
BEGIN
    IF v_found IS NULL
       OR EXISTS (SELECT FROM guardian.monitoring_alerts AS a
                   WHERE a.fingerprint = v_found ->> 'fingerprint' AND a.resolved_at IS NULL) THEN
        RETURN NULL;
    END IF;
    IF v_found ->> 'type' = 'TEST_TOOL_WRITE' THEN
        RETURN guardian.raise_alert('TEST_TOOL_WRITE', 'HIGH',
            format('a test tool wrote to production: %s %s (test source %s) %s %s row(s) of %s',
                   v_found ->> 'source', quote_literal(v_found ->> 'value'), v_found ->> 'test_source',
                   lower(p_op) || CASE p_op WHEN 'INSERT' THEN 'ed' ELSE 'd' END, p_rows, p_relid),
            p_relid::text, NULL,
            v_found - 'fingerprint' - 'type' || jsonb_build_object(
                'operation', p_op, 'rows', p_rows, 'first_table', p_relid::text,
                'action_required', 'Find the job or person behind this session and point it at a test database; check the rows it wrote.',
                'fix', format('SELECT * FROM guardian.scan(%L);', p_relid::text)),
            v_found ->> 'fingerprint');
    END IF;
    RETURN guardian.raise_alert('CONTAMINATION_RISK', 'MEDIUM',
        format('%s %s, whose writes brought test data on %s of %s days, %s %s row(s) of %s (first write today; risk %s)',
               v_found ->> 'source', quote_literal(v_found ->> 'value'), v_found ->> 'contaminated_days',
               greatest((v_found ->> 'write_days')::int, (v_found ->> 'contaminated_days')::int),
               lower(p_op) || CASE p_op WHEN 'INSERT' THEN 'ed' ELSE 'd' END, p_rows, p_relid,
               round((v_found ->> 'score')::numeric, 2)),
        p_relid::text, NULL,
        v_found - 'fingerprint' - 'type' || jsonb_build_object(
            'operation', p_op, 'rows', p_rows, 'first_table', p_relid::text,
            'action_required', 'Check what this source writes today; scan the table if in doubt.',
            'fix', format('SELECT * FROM guardian.scan(%L);', p_relid::text)),
        v_found ->> 'fingerprint');
END
$$;
COMMENT ON FUNCTION guardian._source_alert(regclass, text, bigint) IS
    'Internal: raises TEST_TOOL_WRITE or CONTAMINATION_RISK for this session''s first write of the day to a watched table in production.';
