-- TRUNCATE removes every row of a watched table without a row trigger or a row count: it is
-- reported at once, as a bulk delete of everything (CRITICAL in production).
CREATE FUNCTION guardian._on_truncate()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_table regclass := TG_RELID;
    v_relid regclass := TG_RELID;
    v_env   text := guardian.current_environment();
BEGIN
    IF TG_LEVEL <> 'STATEMENT' OR TG_OP <> 'TRUNCATE' THEN
        RAISE EXCEPTION 'guardian._on_truncate() is an AFTER TRUNCATE statement trigger'
            USING ERRCODE = 'E0001', HINT = 'watch() creates it; do not attach it by hand.';
    END IF;
    IF (SELECT c.relispartition FROM pg_catalog.pg_class AS c WHERE c.oid = TG_RELID) THEN
        v_relid := pg_partition_root(TG_RELID);
    END IF;
    IF NOT EXISTS (SELECT FROM guardian.watched_tables AS w WHERE w.relid = v_relid) THEN
        RETURN NULL;   -- attached by hand to a table that is not watched
    END IF;
    PERFORM guardian.raise_alert(
        'TABLE_TRUNCATED',
        CASE WHEN v_env = 'production' THEN 'CRITICAL' ELSE 'HIGH' END,
        format('TRUNCATE emptied watched table %s%s (by %s)', v_table,
               CASE WHEN v_table <> v_relid THEN format(', a partition of %s', v_relid) ELSE '' END, SESSION_USER),
        v_relid::text, NULL,
        jsonb_build_object('table', v_table::text, 'root', v_relid::text, 'role', SESSION_USER,
                           'application', current_setting('application_name', true),
                           'client_addr', inet_client_addr()::text, 'query', left(current_query(), 500),
                           'remediation', 'If this was not intended, restore the table from a backup (TRUNCATE is not in the quarantine).'),
        md5(concat_ws('|', 'TABLE_TRUNCATED', v_env, v_table::text, txid_current()::text)));
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION guardian._on_truncate() IS
    'Statement trigger on watched tables: TRUNCATE raises TABLE_TRUNCATED (CRITICAL in production, else HIGH).';
