-- guardian_relay is what `pg-guardian relay` needs and nothing more: it moves alerts through
-- the outbox with the guardian.relay_* functions below and reads the relay's own status. Grant
-- it to the relay's login role: GRANT guardian_relay TO relay_user;
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'guardian_relay') THEN
        CREATE ROLE guardian_relay NOLOGIN;
    END IF;
END
$roles$;
