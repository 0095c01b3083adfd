-- Rights for health checks and security events.
--
-- guardian_owner runs the checks (guardian.run_checks is SECURITY DEFINER, and so is every
-- job). It needs to see all sessions and statistics, and to read the server log, and nothing
-- more: it is made a member of pg_monitor (read-only statistics, settings and pg_ls_logdir)
-- and may execute pg_read_binary_file(), which for a non-superuser only reads files inside
-- the data directory and log_directory. It is not a superuser and cannot read table data.
-- Without a superuser (plain-SQL install on managed Postgres) these grants are skipped and
-- the checks that need them report themselves as degraded, naming the GRANT to run.
DO $rights$
BEGIN
    IF (SELECT r.rolsuper FROM pg_catalog.pg_roles AS r WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER) THEN
        GRANT pg_monitor TO guardian_owner;
        GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean) TO guardian_owner;
    ELSE
        -- A CREATEROLE database owner (RDS, Cloud SQL, Supabase) may grant pg_monitor on
        -- PostgreSQL 15; the server log stays out of reach (pg_read_binary_file is the
        -- superuser's to grant, and managed services keep their logs outside the database).
        BEGIN
            GRANT pg_monitor TO guardian_owner;
            RAISE NOTICE 'pg_guardian: % is not a superuser; guardian_owner was made a member of pg_monitor, but the server log is not read (failed logins are not seen)', CURRENT_USER;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE WARNING 'pg_guardian: % is not a superuser; health checks see only their own sessions and the server log is not read', CURRENT_USER
                USING HINT = 'As a superuser run: GRANT pg_monitor TO guardian_owner; GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean) TO guardian_owner;';
        END;
    END IF;
END
$rights$;

-- Two helpers stay with the installing role (they are created after 10_ownership on
-- purpose): only it may read password verifiers and delete pg_cron's history of the jobs it
-- scheduled. Each does one fixed thing, takes no SQL, and only guardian_owner may call it.
CREATE FUNCTION guardian._role_password_digests()
RETURNS TABLE (role_oid oid, digest text)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT has_table_privilege('pg_catalog.pg_authid', 'SELECT') THEN
        RETURN;
    END IF;
    -- A digest of the verifier: enough to see that it changed, useless to log in with.
    RETURN QUERY
    SELECT a.oid, encode(sha256(convert_to(a.oid::text || ':' || a.rolpassword, 'UTF8')), 'hex')
      FROM pg_catalog.pg_authid AS a
     WHERE a.rolpassword IS NOT NULL;
END
$$;
COMMENT ON FUNCTION guardian._role_password_digests() IS
    'Internal: a SHA-256 digest of each role''s password verifier, for the role_changes check (owned by the installing superuser; executable by guardian_owner only).';
REVOKE ALL ON FUNCTION guardian._role_password_digests() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION guardian._role_password_digests() TO guardian_owner;

CREATE FUNCTION guardian._prune_cron_history(p_older_than interval)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count bigint := 0;
BEGIN
    IF p_older_than IS NULL OR p_older_than < interval '1 hour' THEN
        RAISE EXCEPTION 'invalid retention % for pg_cron history', coalesce(p_older_than::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Keep at least an hour: SELECT guardian.set_param(''retention.cron_history_days'', 7);';
    END IF;
    IF to_regclass('cron.job_run_details') IS NULL THEN
        RETURN 0;
    END IF;
    EXECUTE $q$DELETE FROM cron.job_run_details AS d
                USING cron.job AS j
                WHERE d.jobid = j.jobid AND j.jobname LIKE 'guardian\_%' AND j.database = current_database()
                  AND d.end_time < now() - $1$q$
      USING p_older_than;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION guardian._prune_cron_history(interval) IS
    'Internal: deletes cron.job_run_details rows of this database''s guardian jobs older than the given age (owned by the installing role, which scheduled them; executable by guardian_owner only).';
REVOKE ALL ON FUNCTION guardian._prune_cron_history(interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION guardian._prune_cron_history(interval) TO guardian_owner;

GRANT SELECT ON guardian.parameters, guardian.parameter_values, guardian.checks, guardian.check_status,
    guardian.security_events, guardian.log_reader_state, guardian.size_history
    TO guardian_reader;
GRANT EXECUTE ON FUNCTION guardian.param(text), guardian._check_enabled(text), guardian.cluster_checks_database()
    TO guardian_reader;
GRANT EXECUTE ON FUNCTION guardian.set_param(text, numeric, text), guardian.set_check_enabled(text, boolean, text),
    guardian.run_checks(text, text), guardian.run_checks_job(text), guardian.run_retention(),
    guardian.set_job(text, boolean, text, interval), guardian._check_cron_schedule(text)
    TO guardian_admin;
GRANT UPDATE (enabled, schedule, max_lag) ON guardian.jobs TO guardian_admin;
