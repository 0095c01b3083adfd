-- Session health (check_postgres: backends, query_time, txn_idle; pgwatch: locks). Each
-- check runs inside guardian.run_checks() as guardian_owner, which is a member of pg_monitor
-- where the installer could arrange it: without it, other roles' sessions are invisible and
-- the checks see less (guardian.check_status says so).
CREATE FUNCTION guardian._stats_visibility_note()
RETURNS SETOF guardian.finding
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (ROW(NULL, 'CHECK_DEGRADED', 'LOW', NULL, NULL,
               format('role %s cannot see other roles'' sessions (not a member of pg_read_all_stats)', CURRENT_USER),
               format('As a superuser run: GRANT pg_monitor TO %I;', CURRENT_USER),
               '{}'::jsonb, NULL)::guardian.finding).*
     WHERE NOT pg_has_role(CURRENT_USER, 'pg_read_all_stats', 'USAGE')
$$;
COMMENT ON FUNCTION guardian._stats_visibility_note() IS
    'Internal: a CHECK_DEGRADED finding when the checking role cannot read all sessions.';

CREATE FUNCTION guardian._check_connections()
RETURNS SETOF guardian.finding
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_warn      numeric := guardian.param('health.connections.warn_pct');
    v_crit      numeric := guardian.param('health.connections.crit_pct');
    v_available integer := current_setting('max_connections')::int
                           - current_setting('superuser_reserved_connections')::int;
    v_used      integer;
    v_pct       numeric;
BEGIN
    RETURN QUERY SELECT * FROM guardian._stats_visibility_note();
    SELECT count(*) INTO v_used FROM pg_catalog.pg_stat_activity AS a WHERE a.backend_type = 'client backend';
    v_pct := round(100.0 * v_used / greatest(v_available, 1), 1);
    IF v_pct >= v_warn THEN
        RETURN QUERY SELECT (ROW('connections', 'CONNECTIONS_HIGH',
            CASE WHEN v_pct >= v_crit THEN 'HIGH' ELSE 'MEDIUM' END, NULL, 'cluster',
            format('%s of %s available connections in use (%s%%, warning at %s%%)', v_used, v_available, v_pct, v_warn),
            'Find idle or leaked sessions in pg_stat_activity, use a connection pooler (PgBouncer), or raise max_connections.',
            jsonb_build_object('used', v_used, 'available', v_available, 'pct', v_pct,
                               'warn_pct', v_warn, 'crit_pct', v_crit),
            'cluster')::guardian.finding).*;
    END IF;
END
$$;
COMMENT ON FUNCTION guardian._check_connections() IS
    'Check connections: client connections against max_connections minus the superuser reserve (CONNECTIONS_HIGH).';

CREATE FUNCTION guardian._check_long_running_queries()
RETURNS SETOF guardian.finding
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_warn numeric := guardian.param('health.long_running_queries.warn_seconds');
    v_crit numeric := guardian.param('health.long_running_queries.crit_seconds');
BEGIN
    RETURN QUERY SELECT * FROM guardian._stats_visibility_note();
    RETURN QUERY
    SELECT (ROW('long_running_queries', 'LONG_RUNNING_QUERY',
               CASE WHEN s.secs >= v_crit THEN 'HIGH' ELSE 'MEDIUM' END, NULL, s.pid::text,
               format('query of %s (pid %s, %s) running for %s s: %s', coalesce(s.usename::text, '?'), s.pid,
                      coalesce(nullif(s.application_name, ''), 'no application_name'), round(s.secs),
                      left(regexp_replace(s.query, '\s+', ' ', 'g'), 200)),
               format('Investigate with EXPLAIN; to stop it: SELECT pg_cancel_backend(%s); consider statement_timeout for role %s.',
                      s.pid, coalesce(s.usename::text, '?')),
               jsonb_build_object('pid', s.pid, 'role', s.usename, 'application_name', s.application_name,
                                  'client_addr', host(s.client_addr), 'seconds', round(s.secs),
                                  'query_start', s.query_start, 'warn_seconds', v_warn, 'crit_seconds', v_crit),
               format('%s:%s:%s', s.pid, extract(epoch FROM s.backend_start), extract(epoch FROM s.query_start)))::guardian.finding).*
      FROM (SELECT a.*, extract(epoch FROM now() - a.query_start) AS secs
              FROM pg_catalog.pg_stat_activity AS a
             WHERE a.datname = current_database()
               AND a.backend_type = 'client backend'
               AND a.state = 'active'
               AND a.pid <> pg_backend_pid()) AS s
     WHERE s.secs >= v_warn;
END
$$;
COMMENT ON FUNCTION guardian._check_long_running_queries() IS
    'Check long_running_queries: active queries in this database running longer than the warning threshold (LONG_RUNNING_QUERY).';

CREATE FUNCTION guardian._check_idle_in_transaction()
RETURNS SETOF guardian.finding
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_warn numeric := guardian.param('health.idle_in_transaction.warn_seconds');
    v_crit numeric := guardian.param('health.idle_in_transaction.crit_seconds');
BEGIN
    RETURN QUERY SELECT * FROM guardian._stats_visibility_note();
    RETURN QUERY
    SELECT (ROW('idle_in_transaction', 'IDLE_IN_TRANSACTION',
               CASE WHEN s.secs >= v_crit THEN 'HIGH' ELSE 'MEDIUM' END, NULL, s.pid::text,
               format('session of %s (pid %s, %s) %s for %s s; it holds locks and stops vacuum from cleaning up',
                      coalesce(s.usename::text, '?'), s.pid,
                      coalesce(nullif(s.application_name, ''), 'no application_name'), s.state, round(s.secs)),
               format('Fix the application so it commits or rolls back; to end it now: SELECT pg_terminate_backend(%s); set idle_in_transaction_session_timeout as a safety net.', s.pid),
               jsonb_build_object('pid', s.pid, 'role', s.usename, 'application_name', s.application_name,
                                  'client_addr', host(s.client_addr), 'seconds', round(s.secs),
                                  'xact_start', s.xact_start, 'warn_seconds', v_warn, 'crit_seconds', v_crit),
               format('%s:%s:%s', s.pid, extract(epoch FROM s.backend_start), extract(epoch FROM s.xact_start)))::guardian.finding).*
      FROM (SELECT a.*, extract(epoch FROM now() - a.state_change) AS secs
              FROM pg_catalog.pg_stat_activity AS a
             WHERE a.datname = current_database()
               AND a.backend_type = 'client backend'
               AND a.state IN ('idle in transaction', 'idle in transaction (aborted)')
               AND a.pid <> pg_backend_pid()) AS s
     WHERE s.secs >= v_warn;
END
$$;
COMMENT ON FUNCTION guardian._check_idle_in_transaction() IS
    'Check idle_in_transaction: sessions in this database idle inside a transaction longer than the warning threshold (IDLE_IN_TRANSACTION).';

CREATE FUNCTION guardian._check_lock_waits()
RETURNS SETOF guardian.finding
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_warn numeric := guardian.param('health.lock_waits.warn_seconds');
    v_crit numeric := guardian.param('health.lock_waits.crit_seconds');
BEGIN
    RETURN QUERY SELECT * FROM guardian._stats_visibility_note();
    RETURN QUERY
    SELECT (ROW('lock_waits', 'LOCK_WAIT',
               CASE WHEN w.secs >= v_crit THEN 'HIGH' ELSE 'MEDIUM' END, w.relation, w.pid::text,
               format('session of %s (pid %s) has waited %s s for a %s on %s, blocked by pid %s: %s',
                      coalesce(w.usename::text, '?'), w.pid, round(w.secs), w.mode,
                      coalesce(w.relation, w.locktype), array_to_string(w.blockers, ', '),
                      left(regexp_replace(w.query, '\s+', ' ', 'g'), 200)),
               format('Look at what the blocking session does (SELECT * FROM pg_stat_activity WHERE pid IN (%s)); end it with pg_terminate_backend() if it is stuck; set lock_timeout for migrations.',
                      array_to_string(w.blockers, ', ')),
               jsonb_build_object('pid', w.pid, 'role', w.usename, 'blocking_pids', to_jsonb(w.blockers),
                                  'lock_mode', w.mode, 'locktype', w.locktype, 'relation', w.relation,
                                  'seconds', round(w.secs), 'warn_seconds', v_warn, 'crit_seconds', v_crit),
               format('%s:%s:%s', w.pid, extract(epoch FROM w.backend_start), extract(epoch FROM w.query_start)))::guardian.finding).*
      FROM (SELECT a.pid, a.usename, a.query, a.backend_start, a.query_start, l.mode, l.locktype,
                   l.relation::regclass::text AS relation, pg_blocking_pids(a.pid) AS blockers,
                   extract(epoch FROM now() - coalesce(l.waitstart, a.state_change)) AS secs
              FROM pg_catalog.pg_stat_activity AS a
              JOIN pg_catalog.pg_locks AS l ON l.pid = a.pid AND NOT l.granted
             WHERE a.datname = current_database()
               AND a.pid <> pg_backend_pid()) AS w
     WHERE w.secs >= v_warn AND cardinality(w.blockers) > 0;
END
$$;
COMMENT ON FUNCTION guardian._check_lock_waits() IS
    'Check lock_waits: sessions in this database blocked on a lock longer than the warning threshold, with the blocking pids (LOCK_WAIT).';
