-- Storage and maintenance health (check_postgres: txn_wraparound, hitratio, bloat,
-- database_size, sequence; splinter: invalid indexes).
CREATE FUNCTION guardian._check_xid_wraparound()
RETURNS SETOF guardian.finding
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_warn numeric := guardian.param('health.xid_wraparound.warn_age');
    v_crit numeric := guardian.param('health.xid_wraparound.crit_age');
BEGIN
    RETURN QUERY
    SELECT (ROW('xid_wraparound', 'XID_WRAPAROUND',
               CASE WHEN d.age >= v_crit THEN 'CRITICAL' ELSE 'HIGH' END, NULL, d.datname::text,
               format('database %s is %s transactions from its oldest unfrozen %s (%s%% of the way to wraparound shutdown)',
                      d.datname, d.age, d.kind, round(100.0 * d.age / 2147483647, 1)),
               format('Run VACUUM (FREEZE, VERBOSE) in database %s, find what holds vacuum back (long transactions, prepared transactions, replication slots), and check autovacuum is keeping up.', d.datname),
               jsonb_build_object('database', d.datname, 'age', d.age, 'kind', d.kind,
                                  'warn_age', v_warn, 'crit_age', v_crit),
               d.datname::text)::guardian.finding).*
      FROM (SELECT DISTINCT ON (x.datname) x.datname, x.age, x.kind
              FROM (SELECT db.datname, age(db.datfrozenxid) AS age, 'transaction id' AS kind
                      FROM pg_catalog.pg_database AS db
                    UNION ALL
                    SELECT db.datname, mxid_age(db.datminmxid), 'multixact id'
                      FROM pg_catalog.pg_database AS db) AS x
             ORDER BY x.datname, x.age DESC) AS d
     WHERE d.age >= v_warn;
END
$$;
COMMENT ON FUNCTION guardian._check_xid_wraparound() IS
    'Check xid_wraparound: databases whose transaction or multixact age passed the warning threshold (XID_WRAPAROUND).';

CREATE FUNCTION guardian._check_cache_hit_ratio()
RETURNS SETOF guardian.finding
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_warn       numeric := guardian.param('health.cache_hit_ratio.warn_below_pct');
    v_crit       numeric := guardian.param('health.cache_hit_ratio.crit_below_pct');
    v_min_blocks numeric := guardian.param('health.cache_hit_ratio.min_blocks');
    v_hit        bigint;
    v_read       bigint;
    v_pct        numeric;
BEGIN
    SELECT d.blks_hit, d.blks_read INTO v_hit, v_read
      FROM pg_catalog.pg_stat_database AS d WHERE d.datname = current_database();
    IF coalesce(v_hit + v_read, 0) < greatest(v_min_blocks, 1) THEN
        RETURN;
    END IF;
    v_pct := round(100.0 * v_hit / (v_hit + v_read), 2);
    IF v_pct < v_warn THEN
        RETURN QUERY SELECT (ROW('cache_hit_ratio', 'CACHE_HIT_RATIO_LOW',
            CASE WHEN v_pct < v_crit THEN 'HIGH' ELSE 'MEDIUM' END, NULL, current_database(),
            format('cache hit ratio of database %s is %s%% (warning below %s%%) over %s block reads',
                   current_database(), v_pct, v_warn, v_hit + v_read),
            'The working set does not fit in shared_buffers: look for sequential scans on large tables (pg_stat_user_tables.seq_tup_read), missing indexes, or raise shared_buffers.',
            jsonb_build_object('hit_pct', v_pct, 'blks_hit', v_hit, 'blks_read', v_read,
                               'warn_below_pct', v_warn, 'crit_below_pct', v_crit),
            current_database())::guardian.finding).*;
    END IF;
END
$$;
COMMENT ON FUNCTION guardian._check_cache_hit_ratio() IS
    'Check cache_hit_ratio: this database''s buffer cache hit ratio below the warning threshold, once enough blocks were read (CACHE_HIT_RATIO_LOW).';

CREATE FUNCTION guardian._check_dead_tuples()
RETURNS SETOF guardian.finding
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_min  numeric := guardian.param('health.dead_tuples.min_dead_tuples');
    v_warn numeric := guardian.param('health.dead_tuples.warn_pct');
    v_crit numeric := guardian.param('health.dead_tuples.crit_pct');
BEGIN
    RETURN QUERY
    SELECT (ROW('dead_tuples', 'DEAD_TUPLES',
               CASE WHEN t.pct >= v_crit THEN 'HIGH' ELSE 'MEDIUM' END, t.relname, NULL,
               format('table %s has %s dead rows (%s%% of its rows; last vacuum %s)', t.relname,
                      t.n_dead_tup, t.pct, coalesce(t.last_vac::text, 'never')),
               format('Run VACUUM (VERBOSE, ANALYZE) %s; if it keeps happening, lower autovacuum_vacuum_scale_factor for the table and look for long transactions holding vacuum back.', t.relname),
               jsonb_build_object('table', t.relname, 'dead_tuples', t.n_dead_tup, 'live_tuples', t.n_live_tup,
                                  'dead_pct', t.pct, 'last_vacuum', t.last_vac,
                                  'min_dead_tuples', v_min, 'warn_pct', v_warn, 'crit_pct', v_crit),
               t.relname)::guardian.finding).*
      FROM (SELECT s.relid::regclass::text AS relname, s.n_dead_tup, s.n_live_tup,
                   round(100.0 * s.n_dead_tup / greatest(s.n_live_tup + s.n_dead_tup, 1), 1) AS pct,
                   greatest(s.last_vacuum, s.last_autovacuum) AS last_vac
              FROM pg_catalog.pg_stat_user_tables AS s
             WHERE s.n_dead_tup >= v_min) AS t
     WHERE t.pct >= v_warn;
END
$$;
COMMENT ON FUNCTION guardian._check_dead_tuples() IS
    'Check dead_tuples: tables with at least min_dead_tuples dead rows making up more than the warning share (DEAD_TUPLES).';

-- Growth is measured against size snapshots taken at most every snapshot_interval seconds
-- and compared with the newest snapshot at least window_seconds old (the oldest one while
-- the history is younger than the window).
CREATE TABLE guardian.size_history (
    taken_at   timestamptz NOT NULL,
    kind       text NOT NULL,
    object_oid oid NOT NULL,
    name       text NOT NULL,
    bytes      bigint NOT NULL,
    CONSTRAINT size_history_pkey PRIMARY KEY (kind, object_oid, taken_at),
    CONSTRAINT size_history_kind_chk CHECK (kind IN ('database', 'table'))
);
COMMENT ON TABLE guardian.size_history IS
    'Sizes of this database and its tables over time, for the database_growth and table_growth checks; pruned by them past the window.';
SELECT pg_catalog.pg_extension_config_dump('guardian.size_history', '');

CREATE FUNCTION guardian._size_growth(p_kind text)
RETURNS SETOF guardian.finding
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_check    text := p_kind || '_growth';
    v_window   numeric := guardian.param('health.' || v_check || '.window_seconds');
    v_interval numeric := guardian.param('health.' || v_check || '.snapshot_interval_seconds');
    v_warn     numeric := guardian.param('health.' || v_check || '.warn_pct');
    v_crit     numeric := guardian.param('health.' || v_check || '.crit_pct');
    v_min      numeric := guardian.param('health.' || v_check || '.min_bytes');
BEGIN
    IF NOT EXISTS (SELECT FROM guardian.size_history AS h
                    WHERE h.kind = p_kind AND h.taken_at > now() - make_interval(secs => v_interval)) THEN
        IF p_kind = 'database' THEN
            INSERT INTO guardian.size_history (taken_at, kind, object_oid, name, bytes)
            SELECT now(), 'database', d.oid, d.datname, pg_database_size(d.oid)
              FROM pg_catalog.pg_database AS d WHERE d.datname = current_database();
        ELSE
            INSERT INTO guardian.size_history (taken_at, kind, object_oid, name, bytes)
            SELECT now(), 'table', c.oid, c.oid::regclass::text, pg_total_relation_size(c.oid)
              FROM pg_catalog.pg_class AS c
             WHERE c.relkind IN ('r', 'm')
               AND c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
               AND c.relnamespace <> 'pg_toast'::regnamespace
               AND NOT c.relpersistence = 't';
        END IF;
    END IF;
    DELETE FROM guardian.size_history AS h
     WHERE h.kind = p_kind
       AND h.taken_at < now() - make_interval(secs => v_window + v_interval) - interval '1 day';

    RETURN QUERY
    SELECT (ROW(v_check, upper(v_check),
               CASE WHEN g.pct IS NULL OR g.pct >= v_crit THEN 'HIGH' ELSE 'MEDIUM' END,
               CASE p_kind WHEN 'table' THEN g.name END, CASE p_kind WHEN 'database' THEN g.name END,
               format('%s %s grew by %s (%s) since %s: %s -> %s', p_kind, g.name,
                      pg_size_pretty(g.now_bytes - g.base_bytes),
                      coalesce(g.pct || '%', 'from empty'), g.base_at::timestamptz(0),
                      pg_size_pretty(g.base_bytes), pg_size_pretty(g.now_bytes)),
               CASE p_kind WHEN 'table'
                    THEN format('Check what writes to %s (bulk imports, a job gone wrong, missing retention) and whether the growth is expected.', g.name)
                    ELSE 'Find the tables that grew (table_growth check, pg_total_relation_size) and check disk headroom.' END,
               jsonb_build_object(p_kind, g.name, 'bytes', g.now_bytes, 'baseline_bytes', g.base_bytes,
                                  'baseline_at', g.base_at, 'growth_bytes', g.now_bytes - g.base_bytes,
                                  'growth_pct', g.pct, 'warn_pct', v_warn, 'crit_pct', v_crit, 'min_bytes', v_min),
               g.object_oid::text)::guardian.finding).*
      FROM (SELECT cur.object_oid, cur.name, cur.bytes AS now_bytes, base.bytes AS base_bytes, base.taken_at AS base_at,
                   CASE WHEN base.bytes > 0 THEN round(100.0 * (cur.bytes - base.bytes) / base.bytes, 1) END AS pct
              FROM guardian.size_history AS cur
              CROSS JOIN LATERAL (
                    SELECT b.bytes, b.taken_at FROM guardian.size_history AS b
                     WHERE b.kind = p_kind AND b.object_oid = cur.object_oid AND b.taken_at < cur.taken_at
                     ORDER BY b.taken_at <= cur.taken_at - make_interval(secs => v_window) DESC,
                              CASE WHEN b.taken_at <= cur.taken_at - make_interval(secs => v_window)
                                   THEN b.taken_at END DESC,
                              b.taken_at
                     LIMIT 1) AS base
             WHERE cur.kind = p_kind
               AND cur.taken_at = (SELECT max(m.taken_at) FROM guardian.size_history AS m WHERE m.kind = p_kind)) AS g
     WHERE g.now_bytes - g.base_bytes >= greatest(v_min, 1)
       AND (g.pct IS NULL OR g.pct >= v_warn);
END
$$;
COMMENT ON FUNCTION guardian._size_growth(text) IS
    'Internal: snapshot sizes (database or table) at most every snapshot interval and report growth past the thresholds against the baseline one window earlier.';

CREATE FUNCTION guardian._check_database_growth()
RETURNS SETOF guardian.finding
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM guardian._size_growth('database')
$$;
COMMENT ON FUNCTION guardian._check_database_growth() IS
    'Check database_growth: this database grew by more than min_bytes and warn_pct within the window (DATABASE_GROWTH).';

CREATE FUNCTION guardian._check_table_growth()
RETURNS SETOF guardian.finding
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM guardian._size_growth('table')
$$;
COMMENT ON FUNCTION guardian._check_table_growth() IS
    'Check table_growth: tables that grew by more than min_bytes and warn_pct within the window (TABLE_GROWTH).';

-- Each sequence's position against its limit: its own bound or, when it feeds a narrower
-- column (a bigint sequence behind an integer id), that column type's. Only sequences the
-- caller may read have a position.
CREATE FUNCTION guardian._sequence_usage()
RETURNS TABLE (seq text, last_value bigint, seq_max bigint, start_from bigint, limit_value bigint, col text, pct numeric)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.*, round(100.0 * abs(r.last_value - r.start_from) / nullif(abs(r.limit_value - r.start_from), 0), 2) AS pct
    FROM (SELECT c.oid::regclass::text AS seq, s.last_value, s.max_value AS seq_max,
                 CASE WHEN s.increment_by > 0 THEN s.min_value ELSE s.max_value END AS start_from,
                 CASE WHEN s.increment_by > 0
                      THEN least(s.max_value, CASE a.atttypid WHEN 'int4'::regtype THEN 2147483647
                                                               WHEN 'int2'::regtype THEN 32767 END)
                      ELSE greatest(s.min_value, CASE a.atttypid WHEN 'int4'::regtype THEN -2147483648
                                                                  WHEN 'int2'::regtype THEN -32768 END) END AS limit_value,
                 CASE WHEN a.attname IS NOT NULL THEN format('%s.%I', d.refobjid::regclass, a.attname) END AS col
            FROM pg_catalog.pg_sequences AS s
            JOIN pg_catalog.pg_class AS c
              ON c.relname = s.sequencename AND c.relnamespace = s.schemaname::regnamespace
            LEFT JOIN pg_catalog.pg_depend AS d
              ON d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid
             AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.deptype IN ('a', 'i')
            LEFT JOIN pg_catalog.pg_attribute AS a
              ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
           WHERE s.last_value IS NOT NULL AND NOT s.cycle) AS r
$$;
COMMENT ON FUNCTION guardian._sequence_usage() IS
    'Internal: each readable sequence''s last value, limit (the narrower of its own and its column type''s) and the share of its range used.';

CREATE FUNCTION guardian._check_sequences()
RETURNS SETOF guardian.finding
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_warn       numeric := guardian.param('health.sequences.warn_pct');
    v_crit       numeric := guardian.param('health.sequences.crit_pct');
    v_unreadable text[];
BEGIN
    -- A sequence's position is only visible with SELECT or USAGE on it; say which are hidden.
    SELECT array_agg(c.oid::regclass::text ORDER BY 1) INTO v_unreadable
      FROM pg_catalog.pg_class AS c
     WHERE c.relkind = 'S'
       AND c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
       AND CASE WHEN c.relkind = 'S'
                THEN NOT has_sequence_privilege(c.oid, 'SELECT') AND NOT has_sequence_privilege(c.oid, 'USAGE')
                ELSE false END;
    IF v_unreadable IS NOT NULL THEN
        RETURN QUERY SELECT (ROW(NULL, 'CHECK_DEGRADED', 'LOW', NULL, NULL,
            format('%s sequences are not readable by %s and were not checked: %s', cardinality(v_unreadable),
                   CURRENT_USER, array_to_string(v_unreadable[1:10], ', ')),
            format('GRANT SELECT ON SEQUENCE %s TO %I; (or GRANT SELECT ON ALL SEQUENCES IN SCHEMA ... TO %I)',
                   array_to_string(v_unreadable[1:10], ', '), CURRENT_USER, CURRENT_USER),
            jsonb_build_object('unreadable', to_jsonb(v_unreadable)), NULL)::guardian.finding).*;
    END IF;
    -- The limit is the sequence's own bound or, when it feeds a narrower column (a bigint
    -- sequence behind an integer id), that column type's.
    RETURN QUERY
    SELECT (ROW('sequences', 'SEQUENCE_EXHAUSTION',
               CASE WHEN q.pct >= v_crit THEN 'HIGH' ELSE 'MEDIUM' END, q.seq, NULL,
               format('sequence %s has used %s%% of its range (%s of %s%s)', q.seq, q.pct, q.last_value, q.limit_value,
                      CASE WHEN q.col IS NOT NULL AND q.limit_value < q.seq_max THEN ', limited by column ' || q.col END),
               format('Plan the move before it runs out: ALTER SEQUENCE %s AS bigint MAXVALUE ... and ALTER TABLE ... ALTER COLUMN ... TYPE bigint for its column%s.',
                      q.seq, coalesce(' ' || q.col, '')),
               jsonb_build_object('sequence', q.seq, 'last_value', q.last_value, 'limit', q.limit_value,
                                  'column', q.col, 'used_pct', q.pct, 'warn_pct', v_warn, 'crit_pct', v_crit),
               q.seq)::guardian.finding).*
      FROM guardian._sequence_usage() AS q
     WHERE q.pct >= v_warn;
END
$$;
COMMENT ON FUNCTION guardian._check_sequences() IS
    'Check sequences: sequences that used more than the warning share of their range, bounded by the column type they feed (SEQUENCE_EXHAUSTION).';

CREATE FUNCTION guardian._check_invalid_indexes()
RETURNS SETOF guardian.finding
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (ROW('invalid_indexes', 'INVALID_INDEX', 'MEDIUM', i.indrelid::regclass::text, i.indexrelid::regclass::text,
               format('index %s on %s is invalid (a failed CREATE INDEX CONCURRENTLY or REINDEX): it is maintained on every write but never used',
                      i.indexrelid::regclass, i.indrelid::regclass),
               format('Rebuild it with REINDEX INDEX CONCURRENTLY %s; or drop it with DROP INDEX CONCURRENTLY %s;',
                      i.indexrelid::regclass, i.indexrelid::regclass),
               jsonb_build_object('index', i.indexrelid::regclass::text, 'table', i.indrelid::regclass::text),
               i.indexrelid::regclass::text)::guardian.finding).*
      FROM pg_catalog.pg_index AS i
     WHERE NOT i.indisvalid
       AND NOT EXISTS (SELECT FROM pg_catalog.pg_stat_progress_create_index AS p
                        WHERE p.index_relid = i.indexrelid OR p.relid = i.indrelid)
$$;
COMMENT ON FUNCTION guardian._check_invalid_indexes() IS
    'Check invalid_indexes: indexes left invalid by a failed concurrent build, except those being built right now (INVALID_INDEX).';
