-- Policies: `pg-guardian policy apply` renders a policy file into SQL that calls these first.
-- A database refuses a policy written for another environment unless forced, and a policy
-- naming a rule, pack, table, column, activity rule or role that does not exist is refused
-- whole, before anything changes.
CREATE TABLE guardian.policies (
    environment text PRIMARY KEY,
    sha256      text NOT NULL,
    source      text,
    forced      boolean NOT NULL DEFAULT false,
    applied_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    applied_by  text NOT NULL DEFAULT SESSION_USER,
    CONSTRAINT policies_sha256_chk CHECK (sha256 ~ '^[0-9a-f]{64}$')
);
COMMENT ON TABLE guardian.policies IS
    'The policy last applied to this database, per policy environment: the SHA-256 of its rendered SQL, the file it came from, whether it was forced onto another environment, who and when.';
SELECT pg_catalog.pg_extension_config_dump('guardian.policies', '');

CREATE FUNCTION guardian.policy_problems(
    p_rules text[] DEFAULT '{}', p_packs text[] DEFAULT '{}', p_tables text[] DEFAULT '{}',
    p_columns jsonb DEFAULT '{}', p_activity_rules text[] DEFAULT '{}', p_roles text[] DEFAULT '{}')
RETURNS TABLE (kind text, name text, problem text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'rule', r, format('no rule named %s (see SELECT name, pack FROM guardian.rules)', r)
      FROM unnest(p_rules) AS r WHERE NOT EXISTS (SELECT FROM guardian.rules AS x WHERE x.name = r)
    UNION ALL
    SELECT 'pack', p, format('no rule pack named %s (packs: %s)', p,
                             (SELECT string_agg(DISTINCT x.pack, ', ' ORDER BY x.pack) FROM guardian.rules AS x))
      FROM unnest(p_packs) AS p WHERE NOT EXISTS (SELECT FROM guardian.rules AS x WHERE x.pack = p)
    UNION ALL
    SELECT 'table', t, CASE WHEN t !~ '^("[^"]+"|[^".]+)\.("[^"]+"|[^".]+)$'
                            THEN format('%s is not a schema-qualified table name (write schema.table)', t)
                            ELSE format('no table named %s in this database', t) END
      FROM unnest(p_tables) AS t
     WHERE t !~ '^("[^"]+"|[^".]+)\.("[^"]+"|[^".]+)$'
        OR NOT EXISTS (SELECT FROM pg_catalog.pg_class AS c
                        JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
                       WHERE c.relkind IN ('r', 'p', 'f')
                         AND n.nspname = (parse_ident(t))[1] AND c.relname = (parse_ident(t))[2])
    UNION ALL
    SELECT 'column', format('%s.%s', c.key, col), format('table %s has no column %s', c.key, col)
      FROM jsonb_each(p_columns) AS c, jsonb_array_elements_text(c.value) AS col
     WHERE c.key ~ '^("[^"]+"|[^".]+)\.("[^"]+"|[^".]+)$'
       AND EXISTS (SELECT FROM pg_catalog.pg_class AS x JOIN pg_catalog.pg_namespace AS n ON n.oid = x.relnamespace
                    WHERE n.nspname = (parse_ident(c.key))[1] AND x.relname = (parse_ident(c.key))[2])
       AND NOT EXISTS (SELECT FROM pg_catalog.pg_attribute AS a
                        JOIN pg_catalog.pg_class AS x ON x.oid = a.attrelid
                        JOIN pg_catalog.pg_namespace AS n ON n.oid = x.relnamespace
                       WHERE n.nspname = (parse_ident(c.key))[1] AND x.relname = (parse_ident(c.key))[2]
                         AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped)
    UNION ALL
    SELECT 'activity rule', a, format('no activity rule named %s (rules: %s)', a,
                                      (SELECT string_agg(x.name, ', ' ORDER BY x.name) FROM guardian.activity_rules AS x))
      FROM unnest(p_activity_rules) AS a WHERE NOT EXISTS (SELECT FROM guardian.activity_rules AS x WHERE x.name = a)
    UNION ALL
    SELECT 'role', r, format('no role named %s', r)
      FROM unnest(p_roles) AS r WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles AS x WHERE x.rolname = r)
$$;
COMMENT ON FUNCTION guardian.policy_problems(text[], text[], text[], jsonb, text[], text[]) IS
    'What a policy names that this database does not have: rules, rule packs, tables (schema.table), columns ({"schema.table": ["column"]}), activity rules, roles. Empty when the policy fits.';

CREATE FUNCTION guardian.policy_begin(
    p_environment text, p_force boolean, p_rules text[], p_packs text[], p_tables text[], p_columns jsonb,
    p_activity_rules text[], p_roles text[])
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_env      text := guardian.current_environment();
    v_problems text;
BEGIN
    IF NOT guardian._is_admin() THEN
        RAISE EXCEPTION 'role % may not apply guardian policies', CURRENT_USER
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Apply policies as a guardian admin: GRANT guardian_admin TO ' || quote_ident(CURRENT_USER) || ';';
    END IF;
    IF p_environment IS DISTINCT FROM v_env AND NOT p_force THEN
        RAISE EXCEPTION 'this database is environment %, not %: refusing the % policy', v_env, p_environment, p_environment
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = 'A policy only applies to the environment it was written for; nothing was changed.',
                  HINT = format('Apply the %s policy instead (pg-guardian policy apply --env %s), declare this database with SELECT guardian.set_environment(%L) if it really is %s, or pass --force.',
                                v_env, v_env, p_environment, p_environment);
    END IF;
    SELECT string_agg(p.problem, '; ' ORDER BY p.kind, p.name) INTO v_problems
      FROM guardian.policy_problems(p_rules, p_packs, p_tables, p_columns, p_activity_rules, p_roles) AS p;
    IF v_problems IS NOT NULL THEN
        RAISE EXCEPTION 'the % policy does not fit this database: %', p_environment, v_problems
            USING ERRCODE = 'undefined_object',
                  DETAIL = 'Nothing was changed.',
                  HINT = 'Fix the policy file (pg-guardian policy check --dsn ... lists every problem) and apply it again.';
    END IF;
    -- One policy at a time.
    PERFORM pg_advisory_xact_lock(hashtextextended('guardian.policy', 0));
    RETURN format('applying the %s policy to %s%s', p_environment, v_env, CASE WHEN p_environment <> v_env THEN ' (forced)' ELSE '' END);
END
$$;
COMMENT ON FUNCTION guardian.policy_begin(text, boolean, text[], text[], text[], jsonb, text[], text[]) IS
    'First statement of a rendered policy: refuses a policy for another environment unless p_force, and one that names rules, packs, tables, columns, activity rules or roles this database does not have.';

CREATE FUNCTION guardian.policy_finish(p_environment text, p_sha256 text, p_source text, p_forced boolean)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_old    guardian.policies;
    v_forced boolean := coalesce(p_forced, false) AND p_environment IS DISTINCT FROM guardian.current_environment();
BEGIN
    SELECT * INTO v_old FROM guardian.policies AS p WHERE p.environment = p_environment;
    IF FOUND AND v_old.sha256 = p_sha256 AND v_old.forced = v_forced THEN
        RETURN false;
    END IF;
    INSERT INTO guardian.policies AS p (environment, sha256, source, forced)
    VALUES (p_environment, p_sha256, p_source, v_forced)
    ON CONFLICT (environment) DO UPDATE
       SET sha256 = EXCLUDED.sha256, source = EXCLUDED.source, forced = EXCLUDED.forced,
           applied_at = now(), applied_by = SESSION_USER;
    PERFORM guardian.raise_alert(
        'POLICY_APPLIED', CASE WHEN v_forced THEN 'HIGH' ELSE 'INFO' END,
        format('the %s policy%s was applied to %s by %s%s', p_environment, coalesce(' from ' || p_source, ''),
               guardian.current_environment(), SESSION_USER,
               CASE WHEN v_forced THEN ' (forced onto another environment)' ELSE '' END),
        p_metadata => jsonb_build_object('environment', p_environment, 'sha256', p_sha256, 'source', p_source,
                                         'forced', v_forced, 'previous_sha256', v_old.sha256),
        p_fingerprint => md5('POLICY_APPLIED' || p_environment || p_sha256 || clock_timestamp()::text));
    RETURN true;
END
$$;
COMMENT ON FUNCTION guardian.policy_finish(text, text, text, boolean) IS
    'Last statement of a rendered policy: records which policy (SHA-256 of its SQL) is in force; a new one is a POLICY_APPLIED alert (HIGH when forced). Returns false when it was already in force.';

CREATE FUNCTION guardian.policy_routes()
RETURNS jsonb
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT guardian.setting('alerts.routes')
$$;
COMMENT ON FUNCTION guardian.policy_routes() IS
    'The alert routes this environment''s policy sets (setting alerts.routes), read by the relay on every routing round: when set they replace the routes of the relay''s configuration (which still defines the channels). NULL: the configuration decides.';
