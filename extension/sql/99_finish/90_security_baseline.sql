-- Last, after every grant the install makes: the privilege and role snapshots and the
-- server log position the security checks compare against, then the event trigger that
-- reports GRANT and REVOKE from now on.
SELECT pg_catalog.count(*) FROM guardian._privilege_changes('install');
SELECT guardian._take_role_snapshot();
DO $log_position$
BEGIN
    INSERT INTO guardian.log_reader_state (file_name, file_offset, last_detail)
    SELECT f.name, f.size, 'started at the end of the newest log file at install'
      FROM guardian._log_files() AS f
     ORDER BY f.modification DESC, f.name DESC
     LIMIT 1;
EXCEPTION WHEN insufficient_privilege OR object_not_in_prerequisite_state THEN
    NULL;   -- the server_log check reports why it cannot read the log
END
$log_position$;

DO $event_trigger$
BEGIN
    IF (SELECT r.rolsuper FROM pg_catalog.pg_roles AS r WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER) THEN
        CREATE EVENT TRIGGER guardian_grant_revoke
            ON ddl_command_end
            WHEN TAG IN ('GRANT', 'REVOKE')
            EXECUTE FUNCTION guardian._on_grant_revoke();
        -- Like every event trigger function, it stays with the installing superuser (see
        -- 99_finish/10_ownership.sql): it runs as whoever issues GRANT, superusers included.
        ALTER FUNCTION guardian._on_grant_revoke() OWNER TO CURRENT_USER;
    ELSE
        RAISE WARNING 'pg_guardian: % is not a superuser; GRANT and REVOKE are found by the scheduled privilege_changes check only', CURRENT_USER;
    END IF;
END
$event_trigger$;
