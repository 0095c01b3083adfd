-- Replication health (check_postgres: replicate_row, replication_slots; pgwatch: replication).
CREATE FUNCTION guardian._check_replication_lag()
RETURNS SETOF guardian.finding
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_warn       numeric := guardian.param('health.replication_lag.warn_seconds');
    v_crit       numeric := guardian.param('health.replication_lag.crit_seconds');
    v_warn_bytes numeric := guardian.param('health.replication_lag.warn_bytes');
BEGIN
    IF pg_is_in_recovery() THEN
        RETURN;
    END IF;
    RETURN QUERY SELECT * FROM guardian._stats_visibility_note();
    RETURN QUERY
    SELECT (ROW('replication_lag', 'REPLICATION_LAG',
               CASE WHEN r.secs >= v_crit THEN 'HIGH' ELSE 'MEDIUM' END, NULL, r.name,
               format('standby %s (%s) replays %s s / %s behind the primary (state %s)', r.name,
                      coalesce(r.addr, 'local'), round(coalesce(r.secs, 0)), pg_size_pretty(r.bytes), r.state),
               'Check the standby''s disk and CPU, the network, and long queries on the standby (hot_standby_feedback, max_standby_streaming_delay).',
               jsonb_build_object('application_name', r.name, 'client_addr', r.addr, 'state', r.state,
                                  'replay_lag_seconds', round(coalesce(r.secs, 0)), 'lag_bytes', r.bytes,
                                  'warn_seconds', v_warn, 'crit_seconds', v_crit, 'warn_bytes', v_warn_bytes),
               r.name)::guardian.finding).*
      FROM (SELECT coalesce(nullif(s.application_name, ''), host(s.client_addr), s.pid::text) AS name,
                   host(s.client_addr) AS addr, s.state,
                   extract(epoch FROM s.replay_lag) AS secs,
                   pg_wal_lsn_diff(pg_current_wal_lsn(), s.replay_lsn) AS bytes
              FROM pg_catalog.pg_stat_replication AS s) AS r
     WHERE coalesce(r.secs, 0) >= v_warn OR coalesce(r.bytes, 0) >= v_warn_bytes;
END
$$;
COMMENT ON FUNCTION guardian._check_replication_lag() IS
    'Check replication_lag: standbys whose replay lags by more than the warning time or bytes (REPLICATION_LAG).';

CREATE FUNCTION guardian._check_replication_slots()
RETURNS SETOF guardian.finding
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_warn numeric := guardian.param('health.replication_slots.warn_bytes');
    v_crit numeric := guardian.param('health.replication_slots.crit_bytes');
BEGIN
    RETURN QUERY
    SELECT (ROW('replication_slots', 'REPLICATION_SLOT_INACTIVE',
               CASE WHEN s.retained >= v_crit OR s.wal_status IN ('unreserved', 'lost') THEN 'HIGH' ELSE 'MEDIUM' END,
               NULL, s.slot_name::text,
               format('replication slot %s (%s%s) is inactive and retains %s of WAL (wal_status %s)',
                      s.slot_name, s.slot_type, coalesce(', database ' || s.database, ''),
                      pg_size_pretty(coalesce(s.retained, 0)), coalesce(s.wal_status, 'unknown')),
               format('Reconnect its consumer, or drop the slot if it is abandoned: SELECT pg_drop_replication_slot(%L); consider max_slot_wal_keep_size.', s.slot_name),
               jsonb_build_object('slot_name', s.slot_name, 'slot_type', s.slot_type, 'database', s.database,
                                  'retained_bytes', s.retained, 'wal_status', s.wal_status,
                                  'warn_bytes', v_warn, 'crit_bytes', v_crit),
               s.slot_name::text)::guardian.finding).*
      FROM (SELECT r.*, CASE WHEN pg_is_in_recovery() THEN NULL
                             ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), r.restart_lsn) END AS retained
              FROM pg_catalog.pg_replication_slots AS r
             WHERE NOT r.active) AS s
     WHERE coalesce(s.retained, 0) >= v_warn OR s.wal_status IN ('unreserved', 'lost');
END
$$;
COMMENT ON FUNCTION guardian._check_replication_slots() IS
    'Check replication_slots: inactive slots retaining more WAL than the warning threshold, or already losing it (REPLICATION_SLOT_INACTIVE).';
