-- Roles are cluster-wide and outlive the extension; create them only when missing.
-- guardian_owner owns every guardian object and runs the SECURITY DEFINER functions: it is
-- NOLOGIN and not a superuser, so a flaw in a definer function cannot become superuser.
-- guardian_admin may configure the guardian (environment, mode, rules, watch, alert triage);
-- guardian_reader may read alerts and status (dashboards, the relay's read side).
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'guardian_owner') THEN
        CREATE ROLE guardian_owner NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'guardian_reader') THEN
        CREATE ROLE guardian_reader NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'guardian_admin') THEN
        CREATE ROLE guardian_admin NOLOGIN;
    END IF;
END
$roles$;

GRANT guardian_reader TO guardian_admin;
