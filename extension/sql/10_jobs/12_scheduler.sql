-- Who runs the jobs. pg_cron runs them where it can (this database, or its own database with
-- cron.schedule_in_database, which only the controller can reach); `pg-guardian jobs serve`
-- runs them elsewhere. The guardian keeps a note of which, so that `status` can tell a
-- guarded database from one where nothing runs the checks any more.
CREATE TABLE guardian.job_scheduler (
    singleton     boolean PRIMARY KEY DEFAULT true,
    kind          text NOT NULL,
    database      text,
    registered_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    registered_by text NOT NULL DEFAULT CURRENT_USER,
    CONSTRAINT job_scheduler_singleton_chk CHECK (singleton),
    CONSTRAINT job_scheduler_kind_chk CHECK (kind IN ('pg_cron', 'jobs serve'))
);
COMMENT ON TABLE guardian.job_scheduler IS
    'What runs the guardian''s jobs: pg_cron (in database) or `pg-guardian jobs serve`; written by guardian.register_jobs() and the controller.';

CREATE FUNCTION guardian.note_job_scheduler(p_kind text, p_database text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_kind IS NULL THEN
        DELETE FROM guardian.job_scheduler;
        RETURN;
    END IF;
    IF p_kind NOT IN ('pg_cron', 'jobs serve') THEN
        RAISE EXCEPTION 'unknown job scheduler %', quote_literal(p_kind)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use ''pg_cron'' (with the database it runs in) or ''jobs serve''; NULL forgets it.';
    END IF;
    IF p_kind = 'pg_cron' AND (p_database IS NULL OR NOT EXISTS (
            SELECT FROM pg_catalog.pg_database AS d WHERE d.datname = p_database)) THEN
        RAISE EXCEPTION 'no database % for pg_cron', coalesce(quote_literal(p_database), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Name the database pg_cron runs in: SHOW cron.database_name;';
    END IF;
    INSERT INTO guardian.job_scheduler AS s (singleton, kind, database)
    VALUES (true, p_kind, CASE WHEN p_kind = 'pg_cron' THEN p_database END)
    ON CONFLICT (singleton) DO UPDATE
       SET kind = EXCLUDED.kind, database = EXCLUDED.database,
           registered_at = pg_catalog.now(), registered_by = CURRENT_USER;
END
$$;
COMMENT ON FUNCTION guardian.note_job_scheduler(text, text) IS
    'Record what runs the guardian''s jobs (''pg_cron'' and its database, or ''jobs serve''; NULL: nothing). guardian.register_jobs() and the controller call it.';
