GRANT SELECT ON guardian.jobs, guardian.job_status, guardian.job_scheduler TO guardian_reader;
GRANT EXECUTE ON FUNCTION guardian.guard_status() TO guardian_reader;
GRANT EXECUTE ON FUNCTION guardian.note_job_scheduler(text, text) TO guardian_admin;
GRANT EXECUTE ON FUNCTION guardian.run_job(text), guardian.register_jobs(), guardian.unregister_jobs()
    TO guardian_admin;

-- Where pg_cron runs in this very database, schedule the jobs now; elsewhere this is a no-op
-- and `pg-guardian jobs serve` (or a later guardian.register_jobs()) takes over.
DO $register$
BEGIN
    IF to_regclass('cron.job') IS NOT NULL
       AND current_setting('cron.database_name', true) = current_database() THEN
        PERFORM guardian.register_jobs();
    END IF;
END
$register$;
