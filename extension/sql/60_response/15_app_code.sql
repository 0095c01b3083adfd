-- Whose code runs where. A role that reads or changes an application's table runs some of
-- the application's code with its own rights: the table's triggers and rules, the CHECKs,
-- defaults, generated columns and index expressions that call the application's functions,
-- the casts and operators of the application's types (to_jsonb() of a value calls a cast to
-- json, key = key calls the type's "=" operator) and its row-level security policies. For a
-- superuser that is the application running as a superuser. The guardian's tools that change
-- application rows (cleanup, restore) name that code and refuse a superuser; the scan reads
-- values only through type output functions and runs none of it.
--
-- Application code is what is not built in (oid >= 16384), not the guardian's own (schema
-- guardian) and not part of an extension (installed by a superuser from the server's files).

CREATE FUNCTION guardian._app_function(p_func oid)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p_func >= 16384
       AND NOT EXISTS (SELECT FROM pg_catalog.pg_proc AS p
                        WHERE p.oid = p_func AND p.pronamespace = 'guardian'::pg_catalog.regnamespace)
       AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend AS d
                        WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.objid = p_func
                          AND d.deptype = 'e')
$$;
COMMENT ON FUNCTION guardian._app_function(oid) IS
    'Internal: is this function the application''s code (not built in, not the guardian''s, not an extension''s)?';

CREATE FUNCTION guardian._app_code_exposure(p_tables regclass[])
RETURNS TABLE (relid regclass, kind text, runs_on text, code text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- PL/pgSQL, not SQL: a SQL function with a SET clause plans this query again at every call
    -- (~80 ms); here the plan is kept for the session.
    -- runs_on: 'write' runs when rows are inserted, updated or deleted; 'read' when rows are
    -- read by a role that row-level security applies to (superusers and BYPASSRLS roles never);
    -- 'values' when a tool converts or compares the column's values with casts or operators
    -- (to_jsonb, ::text, =) rather than through type output functions.
    RETURN QUERY
    WITH RECURSIVE tree(rel) AS (
        SELECT t.oid FROM unnest(p_tables) AS t(oid) WHERE t.oid IS NOT NULL
        UNION
        SELECT i.inhrelid FROM tree AS tr JOIN pg_catalog.pg_inherits AS i ON i.inhparent = tr.rel
    ), col_types(rel, attname, typ, depth) AS (
        SELECT a.attrelid, a.attname, a.atttypid, 0
          FROM tree AS tr JOIN pg_catalog.pg_attribute AS a ON a.attrelid = tr.rel
         WHERE a.attnum > 0 AND NOT a.attisdropped
        UNION
        -- what a value of the type is made of: a domain's base type, an array's element
        -- type, a composite's attributes, a range's subtype, a multirange's range
        SELECT c.rel, c.attname, x.next, c.depth + 1
          FROM col_types AS c
          JOIN pg_catalog.pg_type AS t ON t.oid = c.typ
         CROSS JOIN LATERAL (
               SELECT t.typbasetype WHERE t.typtype = 'd'
               UNION ALL SELECT t.typelem WHERE t.typelem <> 0
               UNION ALL SELECT ca.atttypid FROM pg_catalog.pg_attribute AS ca
                          WHERE t.typtype = 'c' AND ca.attrelid = t.typrelid AND ca.attnum > 0 AND NOT ca.attisdropped
               UNION ALL SELECT r.rngsubtype FROM pg_catalog.pg_range AS r WHERE t.typtype = 'r' AND r.rngtypid = t.oid
               UNION ALL SELECT r.rngtypid FROM pg_catalog.pg_range AS r WHERE t.typtype = 'm' AND r.rngmultitypid = t.oid
           ) AS x(next)
         WHERE c.depth < 16
    ), user_types AS (
        SELECT DISTINCT c.rel, c.attname, c.typ FROM col_types AS c WHERE c.typ >= 16384
    )
    SELECT x.relid::regclass, x.kind, x.runs_on, x.code
      FROM (
        SELECT tg.tgrelid AS relid, 'trigger' AS kind, 'write' AS runs_on,
               format('trigger %I (%s)', tg.tgname, tg.tgfoid::regprocedure) AS code
          FROM tree AS tr JOIN pg_catalog.pg_trigger AS tg ON tg.tgrelid = tr.rel
         WHERE NOT tg.tgisinternal AND tg.tgenabled <> 'D' AND guardian._app_function(tg.tgfoid)
        UNION ALL
        SELECT r.ev_class, 'rule', 'write', format('rule %I', r.rulename)
          FROM tree AS tr JOIN pg_catalog.pg_rewrite AS r ON r.ev_class = tr.rel
         WHERE r.rulename <> '_RETURN' AND r.ev_enabled <> 'D'
        UNION ALL
        SELECT c.oid, 'row_security', 'read',
               format('row-level security%s (policies: %s)', CASE WHEN c.relforcerowsecurity THEN ', forced' ELSE '' END,
                      coalesce((SELECT string_agg(quote_ident(p.polname), ', ' ORDER BY p.polname)
                                  FROM pg_catalog.pg_policy AS p WHERE p.polrelid = c.oid), 'none'))
          FROM tree AS tr JOIN pg_catalog.pg_class AS c ON c.oid = tr.rel
         WHERE c.relrowsecurity
        UNION ALL
        -- CHECK constraints, defaults, generated columns and indexes (expressions, predicates)
        -- that call the application's functions or operators
        SELECT o.rel, 'expression', 'write',
               format('%s calls %s', o.what, CASE WHEN d.refclassid = 'pg_catalog.pg_proc'::regclass
                                                  THEN d.refobjid::regprocedure::text
                                                  ELSE 'operator ' || d.refobjid::regoperator::text END)
          FROM (SELECT con.conrelid AS rel, 'pg_catalog.pg_constraint'::regclass AS classid, con.oid,
                       format('constraint %I', con.conname) AS what
                  FROM tree AS tr JOIN pg_catalog.pg_constraint AS con ON con.conrelid = tr.rel
                UNION ALL
                SELECT ad.adrelid, 'pg_catalog.pg_attrdef'::regclass, ad.oid,
                       format('%s of column %I', CASE WHEN a.attgenerated <> '' THEN 'generated value' ELSE 'default' END,
                              a.attname)
                  FROM tree AS tr JOIN pg_catalog.pg_attrdef AS ad ON ad.adrelid = tr.rel
                  JOIN pg_catalog.pg_attribute AS a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
                UNION ALL
                SELECT ix.indrelid, 'pg_catalog.pg_class'::regclass, ix.indexrelid,
                       format('index %s', ix.indexrelid::regclass)
                  FROM tree AS tr JOIN pg_catalog.pg_index AS ix ON ix.indrelid = tr.rel) AS o
          JOIN pg_catalog.pg_depend AS d ON d.classid = o.classid AND d.objid = o.oid
         WHERE (d.refclassid = 'pg_catalog.pg_proc'::regclass AND guardian._app_function(d.refobjid))
            OR (d.refclassid = 'pg_catalog.pg_operator'::regclass
                AND guardian._app_function((SELECT op.oprcode FROM pg_catalog.pg_operator AS op WHERE op.oid = d.refobjid)))
        UNION ALL
        SELECT u.rel, 'cast', 'values',
               format('column %I: cast (%s AS %s) with %s', u.attname, ca.castsource::regtype, ca.casttarget::regtype,
                      ca.castfunc::regprocedure)
          FROM user_types AS u
          JOIN pg_catalog.pg_cast AS ca ON (ca.castsource = u.typ OR ca.casttarget = u.typ)
         WHERE ca.castmethod = 'f' AND guardian._app_function(ca.castfunc)
        UNION ALL
        SELECT u.rel, 'operator', 'values',
               format('column %I: operator %s with %s', u.attname, op.oid::regoperator, op.oprcode::regprocedure)
          FROM user_types AS u
          JOIN pg_catalog.pg_operator AS op ON (op.oprleft = u.typ OR op.oprright = u.typ)
         WHERE guardian._app_function(op.oprcode)
        UNION ALL
        SELECT u.rel, 'domain_check', 'write',
               format('column %I: check %I of domain %s calls %s', u.attname, con.conname, u.typ::regtype,
                      CASE WHEN d.refclassid = 'pg_catalog.pg_proc'::regclass
                           THEN d.refobjid::regprocedure::text
                           ELSE 'operator ' || d.refobjid::regoperator::text END)
          FROM user_types AS u
          JOIN pg_catalog.pg_constraint AS con ON con.contypid = u.typ
          JOIN pg_catalog.pg_depend AS d
            ON d.classid = 'pg_catalog.pg_constraint'::regclass AND d.objid = con.oid
         WHERE (d.refclassid = 'pg_catalog.pg_proc'::regclass AND guardian._app_function(d.refobjid))
            OR (d.refclassid = 'pg_catalog.pg_operator'::regclass
                AND guardian._app_function((SELECT op.oprcode FROM pg_catalog.pg_operator AS op WHERE op.oid = d.refobjid)))
      ) AS x
     GROUP BY x.relid, x.kind, x.runs_on, x.code
     ORDER BY x.relid::regclass::text, x.kind, x.code;
END
$$;
COMMENT ON FUNCTION guardian._app_code_exposure(regclass[]) IS
    'What application code runs for a role that reads or changes these tables (and their partitions and inheritance children): triggers, rules, row-level security, CHECKs, defaults, generated columns and index expressions calling application functions, and the casts, operators and domain checks of the application''s types in their columns. runs_on: write, read (row security) or values (casts and operators, when a tool converts or compares values).';

CREATE FUNCTION guardian._refuse_app_code(
    p_tables regclass[], p_action text, p_hint text DEFAULT NULL, p_runs text[] DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_runs   text[] := coalesce(p_runs, ARRAY['read', 'write', 'values']);
    v_code   text;
    v_tables text;
    v_owners text;
BEGIN
    -- SECURITY INVOKER: CURRENT_USER is whoever runs the tool (after any SET ROLE). A
    -- superuser bypasses row-level security, the only code a plain read runs.
    IF NOT coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles AS r WHERE r.rolname = CURRENT_USER), false)
       OR NOT (v_runs && ARRAY['write', 'values']) THEN
        RETURN;
    END IF;
    SELECT string_agg(format('%s: %s', e.relid, e.code), '; ' ORDER BY e.relid::text, e.kind, e.code),
           string_agg(DISTINCT e.relid::text, ', ')
      INTO v_code, v_tables
      FROM guardian._app_code_exposure(p_tables) AS e
     WHERE e.runs_on = ANY (v_runs) AND e.kind <> 'row_security';
    IF v_code IS NULL THEN
        RETURN;
    END IF;
    SELECT string_agg(DISTINCT quote_ident(pg_catalog.pg_get_userbyid(c.relowner)), ' or ')
      INTO v_owners
      FROM pg_catalog.pg_class AS c WHERE c.oid = ANY (p_tables);
    RAISE EXCEPTION 'refusing %: it would run application code of % as superuser %', p_action, v_tables, CURRENT_USER
        USING ERRCODE = 'insufficient_privilege',
              DETAIL = format('It would run, with superuser rights: %s.', v_code),
              HINT = coalesce(p_hint,
                              format('Run it as the table owner, whose rights that code should have: SET ROLE %s; then RESET ROLE;',
                                     v_owners));
END
$$;
COMMENT ON FUNCTION guardian._refuse_app_code(regclass[], text, text, text[]) IS
    'Raises insufficient_privilege, naming the tables and the code, when the current user is a superuser and reading or changing these tables would run application code (guardian._app_code_exposure; p_runs limits it to write, read or values). p_action names the tool in the message; p_hint replaces the default HINT (SET ROLE <owner>).';
