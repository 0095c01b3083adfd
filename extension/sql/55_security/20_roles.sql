-- Role changes (CREATE/ALTER/DROP ROLE, GRANT role TO role) fire no event trigger: they are
-- found by comparing the role catalog with the snapshot taken at install and after each run.
-- Password changes are seen through a digest of the stored verifier, which only the
-- installing superuser may read (guardian._role_password_digests(), defined in 99_finish);
-- where it is missing the check says password changes are not tracked.
CREATE TABLE guardian.role_snapshot (
    role_oid        oid PRIMARY KEY,
    rolname         text NOT NULL,
    rolsuper        boolean NOT NULL,
    rolcreaterole   boolean NOT NULL,
    rolcreatedb     boolean NOT NULL,
    rolcanlogin     boolean NOT NULL,
    rolreplication  boolean NOT NULL,
    rolbypassrls    boolean NOT NULL,
    password_digest text,
    taken_at        timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE guardian.role_snapshot IS
    'The role catalog as the role_changes check last saw it (attributes and a digest of the password verifier, never the verifier).';
SELECT pg_catalog.pg_extension_config_dump('guardian.role_snapshot', '');

CREATE TABLE guardian.role_membership_snapshot (
    roleid       oid NOT NULL,
    member       oid NOT NULL,
    admin_option boolean NOT NULL,
    CONSTRAINT role_membership_snapshot_pkey PRIMARY KEY (roleid, member)
);
COMMENT ON TABLE guardian.role_membership_snapshot IS
    'Role memberships (pg_auth_members) as the role_changes check last saw them.';
SELECT pg_catalog.pg_extension_config_dump('guardian.role_membership_snapshot', '');

CREATE FUNCTION guardian._current_roles()
RETURNS SETOF guardian.role_snapshot
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_digests boolean := to_regprocedure('guardian._role_password_digests()') IS NOT NULL
                         AND has_function_privilege('guardian._role_password_digests()', 'EXECUTE');
BEGIN
    IF v_digests THEN
        RETURN QUERY EXECUTE
            'SELECT r.oid, r.rolname::text, r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolcanlogin,
                    r.rolreplication, r.rolbypassrls, d.digest, now()
               FROM pg_catalog.pg_roles AS r
               LEFT JOIN guardian._role_password_digests() AS d ON d.role_oid = r.oid';
    ELSE
        RETURN QUERY
        SELECT r.oid, r.rolname::text, r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolcanlogin,
               r.rolreplication, r.rolbypassrls, NULL::text, now()
          FROM pg_catalog.pg_roles AS r;
    END IF;
END
$$;
COMMENT ON FUNCTION guardian._current_roles() IS
    'Internal: the role catalog now, in the shape of guardian.role_snapshot (password digests where readable).';

CREATE FUNCTION guardian._take_role_snapshot()
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    DELETE FROM guardian.role_snapshot;
    INSERT INTO guardian.role_snapshot SELECT * FROM guardian._current_roles();
    DELETE FROM guardian.role_membership_snapshot;
    INSERT INTO guardian.role_membership_snapshot (roleid, member, admin_option)
    SELECT m.roleid, m.member, bool_or(m.admin_option)
      FROM pg_catalog.pg_auth_members AS m GROUP BY m.roleid, m.member;
$$;
COMMENT ON FUNCTION guardian._take_role_snapshot() IS
    'Internal: replaces the role and membership snapshots with the catalog as it is now.';

-- Roles whose membership hands out power: superusers, roles that create roles or bypass
-- RLS, the predefined roles that read or write every table or the server's files, and the
-- guardian's own.
CREATE FUNCTION guardian._is_privileged_role(p_role oid)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (
        SELECT FROM pg_catalog.pg_roles AS r
         WHERE r.oid = p_role
           AND (r.rolsuper OR r.rolcreaterole OR r.rolbypassrls OR r.rolreplication
                OR r.rolname IN ('pg_read_all_data', 'pg_write_all_data', 'pg_read_server_files',
                                 'pg_write_server_files', 'pg_execute_server_program', 'pg_signal_backend',
                                 'pg_checkpoint', 'pg_database_owner', 'guardian_owner', 'guardian_admin')))
$$;
COMMENT ON FUNCTION guardian._is_privileged_role(oid) IS
    'Internal: does membership in this role grant power (superuser, createrole, bypassrls, replication, file or all-data access, guardian admin)?';

CREATE FUNCTION guardian._check_role_changes()
RETURNS SETOF guardian.finding
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now     guardian.role_snapshot[];
    v_tracked boolean;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('guardian.role_snapshot', 0));
    IF NOT EXISTS (SELECT FROM guardian.role_snapshot) THEN
        PERFORM guardian._take_role_snapshot();
        RETURN;
    END IF;
    v_now := ARRAY(SELECT r FROM guardian._current_roles() AS r);
    v_tracked := EXISTS (SELECT FROM unnest(v_now) AS n WHERE n.password_digest IS NOT NULL)
                 OR NOT EXISTS (SELECT FROM unnest(v_now) AS n WHERE n.rolcanlogin);

    -- New roles.
    RETURN QUERY
    SELECT (ROW('role_changes', 'ROLE_CREATED',
               CASE WHEN n.rolsuper THEN 'CRITICAL'
                    WHEN n.rolcreaterole OR n.rolbypassrls OR n.rolreplication THEN 'HIGH' ELSE 'MEDIUM' END,
               NULL, n.rolname,
               format('new role %s (%s)', n.rolname,
                      concat_ws(', ', CASE WHEN n.rolsuper THEN 'SUPERUSER' END, CASE WHEN n.rolcreaterole THEN 'CREATEROLE' END,
                                CASE WHEN n.rolbypassrls THEN 'BYPASSRLS' END, CASE WHEN n.rolreplication THEN 'REPLICATION' END,
                                CASE WHEN n.rolcreatedb THEN 'CREATEDB' END,
                                CASE WHEN n.rolcanlogin THEN 'LOGIN' ELSE 'NOLOGIN' END)),
               'Confirm the role was created on purpose and by whom; drop it if not (DROP ROLE).',
               jsonb_build_object('role', n.rolname, 'superuser', n.rolsuper, 'createrole', n.rolcreaterole,
                                  'bypassrls', n.rolbypassrls, 'replication', n.rolreplication, 'login', n.rolcanlogin),
               format('created:%s:%s', n.role_oid, n.rolname))::guardian.finding).*
      FROM unnest(v_now) AS n
     WHERE NOT EXISTS (SELECT FROM guardian.role_snapshot AS o WHERE o.role_oid = n.role_oid);

    -- Dropped roles.
    RETURN QUERY
    SELECT (ROW('role_changes', 'ROLE_DROPPED', 'LOW', NULL, o.rolname,
               format('role %s was dropped', o.rolname),
               'Nothing to do if intended.',
               jsonb_build_object('role', o.rolname, 'was_superuser', o.rolsuper),
               format('dropped:%s:%s', o.role_oid, o.rolname))::guardian.finding).*
      FROM guardian.role_snapshot AS o
     WHERE NOT EXISTS (SELECT FROM unnest(v_now) AS n WHERE n.role_oid = o.role_oid);

    -- Attributes gained: the escalations that matter.
    RETURN QUERY
    SELECT (ROW('role_changes', 'ROLE_ESCALATION',
               CASE g.attr WHEN 'SUPERUSER' THEN 'CRITICAL' WHEN 'CREATEDB' THEN 'MEDIUM' WHEN 'LOGIN' THEN 'LOW' ELSE 'HIGH' END,
               NULL, g.rolname,
               format('role %s gained %s', g.rolname, g.attr),
               format('If this was not an approved change: ALTER ROLE %I NO%s; and find who did it (log_statement = ''ddl'').',
                      g.rolname, g.attr),
               jsonb_build_object('role', g.rolname, 'attribute', g.attr),
               format('gained:%s:%s', g.role_oid, g.attr))::guardian.finding).*
      FROM (SELECT n.role_oid, n.rolname, a.attr
              FROM unnest(v_now) AS n
              JOIN guardian.role_snapshot AS o ON o.role_oid = n.role_oid
              CROSS JOIN LATERAL (VALUES ('SUPERUSER', n.rolsuper AND NOT o.rolsuper),
                                         ('CREATEROLE', n.rolcreaterole AND NOT o.rolcreaterole),
                                         ('BYPASSRLS', n.rolbypassrls AND NOT o.rolbypassrls),
                                         ('REPLICATION', n.rolreplication AND NOT o.rolreplication),
                                         ('CREATEDB', n.rolcreatedb AND NOT o.rolcreatedb),
                                         ('LOGIN', n.rolcanlogin AND NOT o.rolcanlogin)) AS a(attr, gained)
             WHERE a.gained) AS g;

    -- Renames and password changes.
    RETURN QUERY
    SELECT (ROW('role_changes', 'ROLE_RENAMED', 'LOW', NULL, n.rolname,
               format('role %s was renamed to %s', o.rolname, n.rolname), 'Nothing to do if intended.',
               jsonb_build_object('old', o.rolname, 'new', n.rolname),
               format('renamed:%s:%s', n.role_oid, n.rolname))::guardian.finding).*
      FROM unnest(v_now) AS n JOIN guardian.role_snapshot AS o ON o.role_oid = n.role_oid
     WHERE n.rolname <> o.rolname;
    RETURN QUERY
    SELECT (ROW('role_changes', 'ROLE_PASSWORD_CHANGED', 'LOW', NULL, n.rolname,
               format('password of role %s was %s', n.rolname, CASE WHEN n.password_digest IS NULL THEN 'removed'
                                                                   WHEN o.password_digest IS NULL THEN 'set' ELSE 'changed' END),
               'Expected during a rotation; otherwise treat the role as compromised.',
               jsonb_build_object('role', n.rolname),
               format('password:%s:%s', n.role_oid, extract(epoch FROM now())))::guardian.finding).*
      FROM unnest(v_now) AS n JOIN guardian.role_snapshot AS o ON o.role_oid = n.role_oid
     WHERE v_tracked AND n.password_digest IS DISTINCT FROM o.password_digest;
    IF NOT v_tracked THEN
        RETURN QUERY SELECT (ROW('role_changes', 'CHECK_DEGRADED', 'INFO', NULL, NULL,
            'password changes are not tracked: the password verifiers are not readable here',
            'Install pg_guardian as a superuser (it then defines guardian._role_password_digests()).',
            '{}'::jsonb, NULL)::guardian.finding).*;
    END IF;

    -- Memberships granted.
    RETURN QUERY
    SELECT (ROW('role_changes', 'ROLE_MEMBERSHIP_GRANTED',
               CASE WHEN guardian._is_privileged_role(m.roleid) THEN 'HIGH' ELSE 'MEDIUM' END,
               NULL, pg_get_userbyid(m.member)::text,
               format('role %s was granted membership in %s%s', pg_get_userbyid(m.member), pg_get_userbyid(m.roleid),
                      CASE WHEN m.admin_option THEN ' WITH ADMIN OPTION' ELSE '' END),
               format('If not approved: REVOKE %I FROM %I;', pg_get_userbyid(m.roleid), pg_get_userbyid(m.member)),
               jsonb_build_object('role', pg_get_userbyid(m.roleid), 'member', pg_get_userbyid(m.member),
                                  'admin_option', m.admin_option, 'privileged', guardian._is_privileged_role(m.roleid)),
               format('member:%s:%s', m.roleid, m.member))::guardian.finding).*
      FROM (SELECT a.roleid, a.member, bool_or(a.admin_option) AS admin_option
              FROM pg_catalog.pg_auth_members AS a GROUP BY a.roleid, a.member) AS m
     WHERE NOT EXISTS (SELECT FROM guardian.role_membership_snapshot AS o
                        WHERE o.roleid = m.roleid AND o.member = m.member);

    DELETE FROM guardian.role_snapshot;
    INSERT INTO guardian.role_snapshot SELECT * FROM unnest(v_now);
    DELETE FROM guardian.role_membership_snapshot;
    INSERT INTO guardian.role_membership_snapshot (roleid, member, admin_option)
    SELECT a.roleid, a.member, bool_or(a.admin_option)
      FROM pg_catalog.pg_auth_members AS a GROUP BY a.roleid, a.member;
END
$$;
COMMENT ON FUNCTION guardian._check_role_changes() IS
    'Check role_changes: compares the role catalog with the last snapshot: ROLE_CREATED, ROLE_DROPPED, ROLE_ESCALATION (superuser, createrole, bypassrls, replication, createdb, login gained), ROLE_RENAMED, ROLE_PASSWORD_CHANGED, ROLE_MEMBERSHIP_GRANTED.';
