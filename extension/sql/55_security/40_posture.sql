-- Risky posture (splinter: rls_disabled_in_public, function_search_path_mutable; pgspot).
-- These are states: their alerts resolve themselves once fixed. Objects that belong to an
-- extension are left to that extension, except the guardian's own schema.
CREATE FUNCTION guardian._is_extension_member(p_classid regclass, p_objid oid)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (SELECT FROM pg_catalog.pg_depend AS d
                    WHERE d.classid = p_classid AND d.objid = p_objid AND d.deptype = 'e')
$$;
COMMENT ON FUNCTION guardian._is_extension_member(regclass, oid) IS
    'Internal: does this object belong to an extension?';

CREATE FUNCTION guardian._check_rls_disabled_with_policies()
RETURNS SETOF guardian.finding
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (ROW('rls_disabled_with_policies', 'RLS_DISABLED_WITH_POLICIES', 'HIGH', c.oid::regclass::text, NULL,
               format('table %s has %s row-level security policies but RLS is disabled: the policies do nothing and every role with table privileges sees all rows',
                      c.oid::regclass, (SELECT count(*) FROM pg_catalog.pg_policy AS p WHERE p.polrelid = c.oid)),
               format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY; (or drop the policies if they are obsolete)', c.oid::regclass),
               jsonb_build_object('table', c.oid::regclass::text,
                                  'policies', (SELECT jsonb_agg(p.polname ORDER BY p.polname)
                                                 FROM pg_catalog.pg_policy AS p WHERE p.polrelid = c.oid)),
               c.oid::regclass::text)::guardian.finding).*
      FROM pg_catalog.pg_class AS c
     WHERE c.relkind IN ('r', 'p')
       AND NOT c.relrowsecurity
       AND EXISTS (SELECT FROM pg_catalog.pg_policy AS p WHERE p.polrelid = c.oid)
       AND NOT guardian._is_extension_member('pg_catalog.pg_class', c.oid)
$$;
COMMENT ON FUNCTION guardian._check_rls_disabled_with_policies() IS
    'Check rls_disabled_with_policies: tables with policies whose row-level security is off (RLS_DISABLED_WITH_POLICIES).';

CREATE FUNCTION guardian._check_security_definer_search_path()
RETURNS SETOF guardian.finding
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (ROW('security_definer_search_path', 'SECURITY_DEFINER_SEARCH_PATH', 'HIGH', NULL, p.oid::regprocedure::text,
               format('SECURITY DEFINER function %s (owner %s) does not pin search_path: a caller can plant objects that run with the owner''s rights',
                      p.oid::regprocedure, pg_get_userbyid(p.proowner)),
               format('ALTER FUNCTION %s SET search_path = pg_catalog, pg_temp; and schema-qualify what it uses.', p.oid::regprocedure),
               jsonb_build_object('function', p.oid::regprocedure::text, 'owner', pg_get_userbyid(p.proowner)),
               p.oid::regprocedure::text)::guardian.finding).*
      FROM pg_catalog.pg_proc AS p
     WHERE p.prosecdef
       AND p.pronamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
       AND NOT EXISTS (SELECT FROM unnest(p.proconfig) AS c WHERE c LIKE 'search\_path=%')
       AND (NOT guardian._is_extension_member('pg_catalog.pg_proc', p.oid)
            OR p.pronamespace = 'guardian'::regnamespace)
$$;
COMMENT ON FUNCTION guardian._check_security_definer_search_path() IS
    'Check security_definer_search_path: SECURITY DEFINER functions without a pinned search_path (SECURITY_DEFINER_SEARCH_PATH).';

CREATE FUNCTION guardian._check_public_readable_tables()
RETURNS SETOF guardian.finding
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (ROW('public_readable_tables', 'TABLE_READABLE_BY_PUBLIC',
               CASE WHEN c.relrowsecurity THEN 'LOW' ELSE 'MEDIUM' END, c.oid::regclass::text, NULL,
               format('%s %s is readable by every role (SELECT granted to PUBLIC)%s',
                      CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' ELSE 'table' END,
                      c.oid::regclass, CASE WHEN c.relrowsecurity THEN ', rows filtered by RLS' ELSE '' END),
               format('REVOKE SELECT ON %s FROM PUBLIC; and grant it to the roles that need it.', c.oid::regclass),
               jsonb_build_object('table', c.oid::regclass::text, 'rls', c.relrowsecurity),
               c.oid::regclass::text)::guardian.finding).*
      FROM pg_catalog.pg_class AS c
     WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
       AND c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
       AND c.relacl IS NOT NULL
       AND EXISTS (SELECT FROM aclexplode(c.relacl) AS x WHERE x.grantee = 0 AND x.privilege_type = 'SELECT')
       AND (NOT guardian._is_extension_member('pg_catalog.pg_class', c.oid)
            OR c.relnamespace = 'guardian'::regnamespace)
$$;
COMMENT ON FUNCTION guardian._check_public_readable_tables() IS
    'Check public_readable_tables: tables and views with SELECT granted to PUBLIC (TABLE_READABLE_BY_PUBLIC; LOW when RLS filters rows).';

CREATE FUNCTION guardian._check_public_schema_create()
RETURNS SETOF guardian.finding
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (ROW('public_schema_create', 'SCHEMA_WRITABLE_BY_PUBLIC', 'MEDIUM', NULL, n.nspname::text,
               format('every role may create objects in schema %s: one can plant functions or tables that shadow others'' names', n.nspname),
               format('REVOKE CREATE ON SCHEMA %I FROM PUBLIC;', n.nspname),
               jsonb_build_object('schema', n.nspname),
               n.nspname::text)::guardian.finding).*
      FROM pg_catalog.pg_namespace AS n
     WHERE n.nspacl IS NOT NULL
       AND EXISTS (SELECT FROM aclexplode(n.nspacl) AS x WHERE x.grantee = 0 AND x.privilege_type = 'CREATE')
$$;
COMMENT ON FUNCTION guardian._check_public_schema_create() IS
    'Check public_schema_create: schemas where PUBLIC may CREATE (SCHEMA_WRITABLE_BY_PUBLIC), the pre-PostgreSQL 15 default for public.';
