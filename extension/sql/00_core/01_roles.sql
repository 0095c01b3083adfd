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

-- Giving objects to guardian_owner (99_finish/10_ownership.sql) needs membership in it. A
-- superuser has it; a managed-Postgres installer (CREATEROLE database owner, e.g. the RDS
-- master user) grants it to itself, which PostgreSQL 15 allows for any role that is not a
-- superuser. Where it is refused, say who must grant it.
DO $membership$
BEGIN
    IF NOT pg_catalog.pg_has_role(CURRENT_USER, 'guardian_owner', 'MEMBER') THEN
        EXECUTE format('GRANT guardian_owner TO %I', CURRENT_USER);
    END IF;
    -- Whoever installs administers: a superuser always may, a database owner is made an admin.
    IF NOT pg_catalog.pg_has_role(CURRENT_USER, 'guardian_admin', 'MEMBER') THEN
        EXECUTE format('GRANT guardian_admin TO %I', CURRENT_USER);
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE EXCEPTION 'pg_guardian: % cannot take membership in roles guardian_owner and guardian_admin', CURRENT_USER
        USING ERRCODE = 'insufficient_privilege',
              DETAIL = SQLERRM,
              HINT = format('As a superuser or a role with ADMIN OPTION on it, run: GRANT guardian_owner, guardian_admin TO %I; then install again.', CURRENT_USER);
END
$membership$;
