-- Defaults follow check_postgres and pgwatch where they have one; every value can be
-- changed per environment with guardian.set_param(name, value[, environment]).
INSERT INTO guardian.parameters (name, default_value, min_value, max_value, unit, description, not_above) VALUES
    ('health.connections.crit_pct', 95, 1, 100, 'percent', 'Client connections, share of max_connections (less the superuser reserve): high', NULL),
    ('health.connections.warn_pct', 80, 1, 100, 'percent', 'Client connections, share of max_connections (less the superuser reserve): warning', 'health.connections.crit_pct'),
    ('health.long_running_queries.crit_seconds', 1800, 1, 604800, 'seconds', 'Active query running longer than this: high', NULL),
    ('health.long_running_queries.warn_seconds', 300, 1, 604800, 'seconds', 'Active query running longer than this: warning', 'health.long_running_queries.crit_seconds'),
    ('health.idle_in_transaction.crit_seconds', 1800, 1, 604800, 'seconds', 'Session idle inside a transaction longer than this: high', NULL),
    ('health.idle_in_transaction.warn_seconds', 300, 1, 604800, 'seconds', 'Session idle inside a transaction longer than this: warning', 'health.idle_in_transaction.crit_seconds'),
    ('health.lock_waits.crit_seconds', 300, 1, 604800, 'seconds', 'Session blocked on a lock longer than this: high', NULL),
    ('health.lock_waits.warn_seconds', 30, 1, 604800, 'seconds', 'Session blocked on a lock longer than this: warning', 'health.lock_waits.crit_seconds'),
    ('health.replication_lag.crit_seconds', 300, 1, 604800, 'seconds', 'Standby replay lag longer than this: high', NULL),
    ('health.replication_lag.warn_seconds', 60, 1, 604800, 'seconds', 'Standby replay lag longer than this: warning', 'health.replication_lag.crit_seconds'),
    ('health.replication_lag.warn_bytes', 1073741824, 1, 1099511627776, 'bytes', 'Standby replay behind by more WAL than this: warning', NULL),
    ('health.replication_slots.crit_bytes', 10737418240, 0, 1099511627776, 'bytes', 'Inactive slot retaining more WAL than this: high', NULL),
    ('health.replication_slots.warn_bytes', 134217728, 0, 1099511627776, 'bytes', 'Inactive slot retaining more WAL than this: warning', 'health.replication_slots.crit_bytes'),
    ('health.xid_wraparound.crit_age', 1500000000, 1, 2147483647, 'transactions', 'Database transaction/multixact age (datfrozenxid) above this: critical', NULL),
    ('health.xid_wraparound.warn_age', 1200000000, 1, 2147483647, 'transactions', 'Database transaction/multixact age (datfrozenxid) above this: high', 'health.xid_wraparound.crit_age'),
    ('health.cache_hit_ratio.warn_below_pct', 90, 0, 100, 'percent', 'Buffer cache hit ratio of this database below this: warning', NULL),
    ('health.cache_hit_ratio.crit_below_pct', 80, 0, 100, 'percent', 'Buffer cache hit ratio of this database below this: high', 'health.cache_hit_ratio.warn_below_pct'),
    ('health.cache_hit_ratio.min_blocks', 100000, 0, 1e15, 'blocks', 'Judge the hit ratio only after this many block accesses', NULL),
    ('health.dead_tuples.min_dead_tuples', 10000, 0, 1e15, 'rows', 'Ignore tables with fewer dead rows than this', NULL),
    ('health.dead_tuples.crit_pct', 50, 1, 100, 'percent', 'Dead rows, share of all rows of a table: high', NULL),
    ('health.dead_tuples.warn_pct', 20, 1, 100, 'percent', 'Dead rows, share of all rows of a table: warning', 'health.dead_tuples.crit_pct'),
    ('health.database_growth.window_seconds', 86400, 0, 31536000, 'seconds', 'Database growth is measured over this window', NULL),
    ('health.database_growth.snapshot_interval_seconds', 3600, 0, 86400, 'seconds', 'Take a database size snapshot at most this often', NULL),
    ('health.database_growth.crit_pct', 100, 1, 1000000, 'percent', 'Database growth within the window: high', NULL),
    ('health.database_growth.warn_pct', 25, 1, 1000000, 'percent', 'Database growth within the window: warning', 'health.database_growth.crit_pct'),
    ('health.database_growth.min_bytes', 1073741824, 0, 1e15, 'bytes', 'Ignore database growth smaller than this', NULL),
    ('health.table_growth.window_seconds', 86400, 0, 31536000, 'seconds', 'Table growth is measured over this window', NULL),
    ('health.table_growth.snapshot_interval_seconds', 3600, 0, 86400, 'seconds', 'Take table size snapshots at most this often', NULL),
    ('health.table_growth.crit_pct', 900, 1, 1000000, 'percent', 'Table growth within the window: high (900% = ten times the size)', NULL),
    ('health.table_growth.warn_pct', 100, 1, 1000000, 'percent', 'Table growth within the window: warning', 'health.table_growth.crit_pct'),
    ('health.table_growth.min_bytes', 104857600, 0, 1e15, 'bytes', 'Ignore table growth smaller than this', NULL),
    ('health.sequences.crit_pct', 90, 1, 100, 'percent', 'Share of a sequence''s range used: high', NULL),
    ('health.sequences.warn_pct', 75, 1, 100, 'percent', 'Share of a sequence''s range used: warning', 'health.sequences.crit_pct');

INSERT INTO guardian.checks (name, category, function, description, is_condition, builtin) VALUES
    ('connections', 'health', 'guardian._check_connections', 'Client connections against max_connections (CONNECTIONS_HIGH)', true, true),
    ('long_running_queries', 'health', 'guardian._check_long_running_queries', 'Active queries running too long (LONG_RUNNING_QUERY)', true, true),
    ('idle_in_transaction', 'health', 'guardian._check_idle_in_transaction', 'Sessions idle inside a transaction (IDLE_IN_TRANSACTION)', true, true),
    ('lock_waits', 'health', 'guardian._check_lock_waits', 'Sessions blocked on locks, with their blockers (LOCK_WAIT)', true, true),
    ('replication_lag', 'health', 'guardian._check_replication_lag', 'Standbys lagging behind (REPLICATION_LAG)', true, true),
    ('replication_slots', 'health', 'guardian._check_replication_slots', 'Inactive replication slots retaining WAL (REPLICATION_SLOT_INACTIVE)', true, true),
    ('xid_wraparound', 'health', 'guardian._check_xid_wraparound', 'Transaction ID and multixact wraparound age (XID_WRAPAROUND)', true, true),
    ('cache_hit_ratio', 'health', 'guardian._check_cache_hit_ratio', 'Buffer cache hit ratio of this database (CACHE_HIT_RATIO_LOW)', true, true),
    ('dead_tuples', 'health', 'guardian._check_dead_tuples', 'Tables with many dead rows (DEAD_TUPLES)', true, true),
    ('database_growth', 'health', 'guardian._check_database_growth', 'Database size growth within a window (DATABASE_GROWTH)', true, true),
    ('table_growth', 'health', 'guardian._check_table_growth', 'Table size growth within a window (TABLE_GROWTH)', true, true),
    ('sequences', 'health', 'guardian._check_sequences', 'Sequences near exhaustion, bounded by their column type (SEQUENCE_EXHAUSTION)', true, true),
    ('invalid_indexes', 'health', 'guardian._check_invalid_indexes', 'Indexes left invalid by a failed concurrent build (INVALID_INDEX)', true, true);

INSERT INTO guardian.jobs (name, schedule, command, description, max_lag, builtin) VALUES
    ('health_checks', '*/5 * * * *', 'SELECT guardian.run_checks_job(''health'')',
     'Database health checks: connections, long queries, idle transactions, lock waits, replication, wraparound, cache, dead rows, growth, sequences, invalid indexes',
     '30 minutes', true);

-- These look at the whole cluster: one guarded database of it runs them.
UPDATE guardian.checks SET scope = 'cluster'
 WHERE name IN ('connections', 'replication_lag', 'replication_slots', 'xid_wraparound');
