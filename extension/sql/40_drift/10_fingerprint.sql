-- The schema fingerprint: one canonical JSON description of the user schemas, with a checksum
-- per object and one overall. guardian.schema_objects() is one self-contained query with no
-- guardian dependencies, because the controller runs this very text (read from this file, with
-- the same SET clauses) against databases that do not have pg_guardian: cross-environment
-- diffs and drift checks share one canonical form.
--
-- pg_guardian's own objects are left out: schemas guardian, guardian_ext (where it keeps
-- dblink) and guardian_history, extensions installed there, and its triggers on user tables.
--
-- Canonical means: no OIDs, no creation order, no data (sequence positions, statistics), no
-- owners or tablespaces (they legitimately differ between environments); identities are
-- schema-qualified and quoted as pg_identify_object() does; arrays whose order means nothing
-- are sorted in "C" order; text the server deparses (defaults, indexes, constraints, views,
-- policies) is rendered under the fixed settings below, so the caller's DateStyle, TimeZone or
-- search_path cannot change it. Joins rather than correlated subqueries (and hash joins
-- rather than nested loops over CTEs, no JIT, enough work_mem to stay off disk), each large
-- catalog read once and through its index where only a few of its rows are ours, and no
-- per-row work whose result is thrown away keep it well under a second for 2,000 tables.
-- What remains is mostly the server's own deparsing (pg_get_indexdef, pg_get_constraintdef,
-- pg_get_viewdef), md5 and, in schema_fingerprint(), parsing the document.
--
-- Shape: {"format": "pg_guardian.fingerprint/1", "checksum": md5,
--         "objects": {"<kind> <identity>": {"kind", "identity", "parent", "checksum",
--                                           "definition": {attribute: value, ...}}}}
-- An object's checksum is md5(definition::text); the overall checksum is the md5 of the
-- "key=checksum" lines in "C" order. md5 identifies here, it does not protect.
CREATE FUNCTION guardian.schema_objects()
RETURNS TABLE (key text, kind text, identity text, parent text, checksum text, definition text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
SET DateStyle = 'ISO, YMD'
SET IntervalStyle = 'postgres'
SET TimeZone = 'UTC'
SET extra_float_digits = '1'
SET bytea_output = 'hex'
SET quote_all_identifiers = 'off'
SET jit = 'off'
SET enable_nestloop = 'off'
SET work_mem = '64MB'
AS $objects$
WITH
-- Every 'e' dependency points at an extension; saying so lets the scan use the reference
-- index instead of reading all of pg_depend.
ext_member AS (
    SELECT d.classid, d.objid
      FROM pg_catalog.pg_depend AS d
     WHERE d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass AND d.deptype = 'e'
),
ns AS (
    SELECT n.oid, n.nspname, n.nspowner, n.nspacl, pg_catalog.quote_ident(n.nspname) AS ident
      FROM pg_catalog.pg_namespace AS n
     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast', 'guardian', 'guardian_ext', 'guardian_history')
       AND n.nspname !~ '^pg_(toast_)?temp_'
       AND NOT EXISTS (SELECT FROM ext_member AS e
                        WHERE e.classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND e.objid = n.oid)
),
rel AS (
    SELECT c.oid, c.relname, c.relkind, c.relowner, c.relacl, c.reloptions, c.relpersistence,
           c.relispartition, c.relrowsecurity, c.relforcerowsecurity, c.relreplident, c.reloftype,
           c.relam, c.relpartbound, ns.ident AS schema_ident,
           ns.ident || '.' || pg_catalog.quote_ident(c.relname) AS ident
      FROM pg_catalog.pg_class AS c
      JOIN ns ON ns.oid = c.relnamespace
     WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
       AND NOT EXISTS (SELECT FROM ext_member AS e
                        WHERE e.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND e.objid = c.oid)
),
fn AS (
    SELECT p.*
      FROM pg_catalog.pg_proc AS p
      JOIN ns ON ns.oid = p.pronamespace
     WHERE NOT EXISTS (SELECT FROM ext_member AS e
                        WHERE e.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND e.objid = p.oid)
),
typ AS (
    SELECT t.*, ns.ident AS schema_ident
      FROM pg_catalog.pg_type AS t
      JOIN ns ON ns.oid = t.typnamespace
     WHERE t.typtype IN ('b', 'c', 'd', 'e', 'r')
       -- a table's row type is the table's; only stand-alone composite types count
       AND (t.typrelid = 0 OR t.typrelid IN (SELECT c.oid FROM pg_catalog.pg_class AS c WHERE c.relkind = 'c'))
       AND NOT (t.typtype = 'b' AND t.typcategory = 'A' AND t.typelem <> 0)
       AND NOT EXISTS (SELECT FROM ext_member AS e
                        WHERE e.classid = 'pg_catalog.pg_type'::pg_catalog.regclass AND e.objid = t.oid)
),
-- The live columns of those relations (sequences' own columns describe nothing), read once:
-- the column privileges, the column order and the columns all need them. pg_attribute is the
-- largest catalog (every index, toast table and system column has rows there), so its index
-- is probed for just these relations rather than the whole of it read.
att AS (
    SELECT a.attrelid, a.attnum, a.attname, a.atttypid, a.atttypmod, a.attnotnull, a.attidentity,
           a.attgenerated, a.attcollation, a.attislocal, a.attacl, r.relkind, r.relispartition, r.ident AS rel_ident
      FROM pg_catalog.pg_attribute AS a
      JOIN rel AS r ON r.oid = a.attrelid
     WHERE a.attrelid = ANY (ARRAY(SELECT r.oid FROM rel AS r WHERE r.relkind <> 'S'))
       AND a.attnum > 0 AND NOT a.attisdropped
),
-- Privileges, one shape for every object: {"grantee": "PRIV, PRIV WITH GRANT OPTION"}. A NULL
-- ACL means the built-in default, which is expanded; the owner's own rights are implied
-- (columns and default privileges have no owner of their own: NULL).
acl AS (
    SELECT 'pg_catalog.pg_namespace'::pg_catalog.regclass AS classid, ns.oid AS objid, 0 AS objsubid,
           coalesce(ns.nspacl, pg_catalog.acldefault('n', ns.nspowner)) AS acl, ns.nspowner AS owner
      FROM ns
    UNION ALL
    SELECT 'pg_catalog.pg_class'::pg_catalog.regclass, r.oid, 0, r.relacl, r.relowner
      FROM rel AS r WHERE r.relacl IS NOT NULL
    UNION ALL
    SELECT 'pg_catalog.pg_class'::pg_catalog.regclass, a.attrelid, a.attnum, a.attacl, NULL::pg_catalog.oid
      FROM att AS a WHERE a.attacl IS NOT NULL
    UNION ALL
    SELECT 'pg_catalog.pg_proc'::pg_catalog.regclass, p.oid, 0,
           coalesce(p.proacl, pg_catalog.acldefault('f', p.proowner)), p.proowner
      FROM fn AS p
    UNION ALL
    SELECT 'pg_catalog.pg_type'::pg_catalog.regclass, t.oid, 0,
           coalesce(t.typacl, pg_catalog.acldefault('T', t.typowner)), t.typowner
      FROM typ AS t
    UNION ALL
    SELECT 'pg_catalog.pg_default_acl'::pg_catalog.regclass, da.oid, 0, da.defaclacl, NULL::pg_catalog.oid
      FROM pg_catalog.pg_default_acl AS da
),
privs AS (
    SELECT g.classid, g.objid, g.objsubid, pg_catalog.jsonb_object_agg(g.grantee, g.privileges) AS privileges
      FROM (SELECT s.classid, s.objid, s.objsubid,
                   CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(x.grantee)::text END AS grantee,
                   pg_catalog.string_agg(x.privilege_type || CASE WHEN x.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END,
                                         ', ' ORDER BY x.privilege_type COLLATE "C") AS privileges
              FROM acl AS s, pg_catalog.aclexplode(s.acl) AS x
             WHERE x.grantee IS DISTINCT FROM s.owner
             GROUP BY 1, 2, 3, 4) AS g
     GROUP BY 1, 2, 3
),
-- the column each sequence belongs to: 'i' identity columns, 'a' serial (OWNED BY); the
-- sequences' own dependencies, found through the index, not all of pg_depend
seq_owner AS (
    SELECT d.objid AS seqid, d.deptype, d.refobjid AS relid, d.refobjsubid AS attnum
      FROM pg_catalog.pg_depend AS d
     WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
       AND d.objid = ANY (ARRAY(SELECT r.oid FROM rel AS r WHERE r.relkind = 'S'))
       AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
       AND d.deptype IN ('i', 'a') AND d.refobjsubid > 0
),
-- Each definition is written as the text jsonb would print (keys by length, then bytes; ", "
-- and ": " separators; absent attributes left out), so md5(definition) is the checksum
-- without building a jsonb value per object: three times faster on a large schema. Nested
-- arrays and objects are built as jsonb, whose text is already canonical.
objects AS (
    -- schemas
    SELECT 'schema' AS kind, ns.ident AS identity, NULL::text AS parent,
           '{' || concat_ws(', ',
               '"comment": ' || pg_catalog.to_json(d.description)::text,
               '"privileges": ' || pv.privileges::text) || '}' AS definition
      FROM ns
      LEFT JOIN pg_catalog.pg_description AS d ON d.classoid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND d.objoid = ns.oid AND d.objsubid = 0
      LEFT JOIN privs AS pv ON pv.classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND pv.objid = ns.oid AND pv.objsubid = 0

    UNION ALL
    -- extensions: their member objects are described by the version alone
    SELECT 'extension', pg_catalog.quote_ident(x.extname), NULL,
           '{' || concat_ws(', ',
               '"schema": ' || pg_catalog.to_json(pg_catalog.quote_ident(n.nspname))::text,
               '"version": ' || pg_catalog.to_json(x.extversion)::text) || '}'
      FROM pg_catalog.pg_extension AS x
      JOIN pg_catalog.pg_namespace AS n ON n.oid = x.extnamespace
     WHERE x.extname <> 'pg_guardian'
       AND n.nspname NOT IN ('guardian', 'guardian_ext', 'guardian_history')

    UNION ALL
    -- tables, partitioned tables and foreign tables
    SELECT CASE r.relkind WHEN 'f' THEN 'foreign table' ELSE 'table' END, r.ident, NULL,
           '{' || concat_ws(', ',
               '"comment": ' || pg_catalog.to_json(d.description)::text,
               CASE WHEN r.reloftype <> 0 THEN '"of_type": ' || pg_catalog.to_json(pg_catalog.format_type(r.reloftype, NULL))::text END,
               CASE WHEN r.reloptions IS NOT NULL THEN '"options": ' ||
                    (SELECT pg_catalog.jsonb_agg(o ORDER BY o COLLATE "C") FROM pg_catalog.unnest(r.reloptions) AS o)::text END,
               '"inherits": ' || inh.inherits::text,
               '"privileges": ' || pv.privileges::text,
               '"persistence": ' || CASE r.relpersistence WHEN 'u' THEN '"unlogged"' ELSE '"permanent"' END,
               '"column_order": ' || cols.names::text,
               '"partition_of": ' || pg_catalog.to_json(inh.partition_of)::text,
               CASE WHEN am.amname <> 'heap' THEN '"access_method": ' || pg_catalog.to_json(am.amname)::text END,
               CASE WHEN r.relkind = 'p' THEN '"partition_key": ' || pg_catalog.to_json(pg_catalog.pg_get_partkeydef(r.oid))::text END,
               '"foreign_server": ' || pg_catalog.to_json(pg_catalog.quote_ident(fs.srvname))::text,
               CASE WHEN ft.ftoptions IS NOT NULL THEN '"foreign_options": ' ||
                    (SELECT pg_catalog.jsonb_agg(o ORDER BY o COLLATE "C") FROM pg_catalog.unnest(ft.ftoptions) AS o)::text END,
               CASE WHEN r.relispartition THEN '"partition_bound": ' || pg_catalog.to_json(pg_catalog.pg_get_expr(r.relpartbound, r.oid))::text END,
               '"replica_identity": ' || CASE r.relreplident WHEN 'n' THEN '"nothing"' WHEN 'f' THEN '"full"' WHEN 'i' THEN '"index"' END,
               '"row_level_security": ' || CASE WHEN r.relrowsecurity AND r.relforcerowsecurity THEN '"enabled, forced"'
                                                WHEN r.relrowsecurity THEN '"enabled"'
                                                WHEN r.relforcerowsecurity THEN '"disabled, forced"'
                                                ELSE '"disabled"' END) || '}'
      FROM rel AS r
      LEFT JOIN pg_catalog.pg_am AS am ON am.oid = r.relam
      LEFT JOIN pg_catalog.pg_foreign_table AS ft ON ft.ftrelid = r.oid
      LEFT JOIN pg_catalog.pg_foreign_server AS fs ON fs.oid = ft.ftserver
      LEFT JOIN (SELECT i.inhrelid,
                        pg_catalog.min(CASE WHEN c.relispartition THEN p.ident END) AS partition_of,
                        pg_catalog.jsonb_agg(p.ident ORDER BY i.inhseqno) FILTER (WHERE NOT c.relispartition) AS inherits
                   FROM pg_catalog.pg_inherits AS i
                   JOIN rel AS p ON p.oid = i.inhparent
                   JOIN pg_catalog.pg_class AS c ON c.oid = i.inhrelid
                  GROUP BY i.inhrelid) AS inh ON inh.inhrelid = r.oid
      LEFT JOIN (SELECT a.attrelid, pg_catalog.jsonb_agg(a.attname ORDER BY a.attnum) AS names
                   FROM att AS a
                  WHERE a.relkind IN ('r', 'p', 'f')
                  GROUP BY a.attrelid) AS cols ON cols.attrelid = r.oid
      LEFT JOIN pg_catalog.pg_description AS d ON d.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objoid = r.oid AND d.objsubid = 0
      LEFT JOIN privs AS pv ON pv.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND pv.objid = r.oid AND pv.objsubid = 0
     WHERE r.relkind IN ('r', 'p', 'f')

    UNION ALL
    -- views and materialized views (their columns follow from the definition)
    SELECT CASE r.relkind WHEN 'v' THEN 'view' ELSE 'materialized view' END, r.ident, NULL,
           '{' || concat_ws(', ',
               '"comment": ' || pg_catalog.to_json(d.description)::text,
               CASE WHEN r.reloptions IS NOT NULL THEN '"options": ' ||
                    (SELECT pg_catalog.jsonb_agg(o ORDER BY o COLLATE "C") FROM pg_catalog.unnest(r.reloptions) AS o)::text END,
               '"definition": ' || pg_catalog.to_json(pg_catalog.pg_get_viewdef(r.oid))::text,
               '"privileges": ' || pv.privileges::text,
               '"column_comments": ' || (SELECT pg_catalog.jsonb_object_agg(a.attname, cd.description)
                                           FROM pg_catalog.pg_attribute AS a
                                           JOIN pg_catalog.pg_description AS cd ON cd.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass
                                                                                AND cd.objoid = a.attrelid AND cd.objsubid = a.attnum
                                          WHERE a.attrelid = r.oid AND a.attnum > 0)::text,
               '"column_privileges": ' || (SELECT pg_catalog.jsonb_object_agg(a.attname, cp.privileges)
                                             FROM pg_catalog.pg_attribute AS a
                                             JOIN privs AS cp ON cp.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                                                             AND cp.objid = a.attrelid AND cp.objsubid = a.attnum
                                            WHERE a.attrelid = r.oid AND a.attnum > 0 AND a.attacl IS NOT NULL)::text) || '}'
      FROM rel AS r
      LEFT JOIN pg_catalog.pg_description AS d ON d.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objoid = r.oid AND d.objsubid = 0
      LEFT JOIN privs AS pv ON pv.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND pv.objid = r.oid AND pv.objsubid = 0
     WHERE r.relkind IN ('v', 'm')

    UNION ALL
    -- sequences: parameters, never positions; identity sequences belong to their column
    SELECT 'sequence', r.ident, NULL,
           '{' || concat_ws(', ',
               '"cache": ' || s.seqcache,
               '"cycle": ' || s.seqcycle,
               '"start": ' || s.seqstart,
               '"comment": ' || pg_catalog.to_json(d.description)::text,
               '"maximum": ' || s.seqmax,
               '"minimum": ' || s.seqmin,
               '"owned_by": ' || pg_catalog.to_json(owner_rel.ident || '.' || pg_catalog.quote_ident(oa.attname))::text,
               '"data_type": ' || pg_catalog.to_json(pg_catalog.format_type(s.seqtypid, NULL))::text,
               '"increment": ' || s.seqincrement,
               '"privileges": ' || pv.privileges::text) || '}'
      FROM rel AS r
      JOIN pg_catalog.pg_sequence AS s ON s.seqrelid = r.oid
      LEFT JOIN seq_owner AS so ON so.seqid = r.oid
      LEFT JOIN rel AS owner_rel ON owner_rel.oid = so.relid
      LEFT JOIN att AS oa ON oa.attrelid = so.relid AND oa.attnum = so.attnum
      LEFT JOIN pg_catalog.pg_description AS d ON d.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objoid = r.oid AND d.objsubid = 0
      LEFT JOIN privs AS pv ON pv.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND pv.objid = r.oid AND pv.objsubid = 0
     WHERE r.relkind = 'S' AND so.deptype IS DISTINCT FROM 'i'

    UNION ALL
    -- columns of tables and foreign tables (a partition's inherited columns are its parent's)
    SELECT 'column', a.rel_ident || '.' || pg_catalog.quote_ident(a.attname), a.rel_ident,
           '{' || concat_ws(', ',
               '"comment": ' || pg_catalog.to_json(d.description)::text,
               -- a default cannot refer to columns, so it is deparsed without opening the table
               CASE WHEN a.attgenerated = '' THEN '"default": ' || pg_catalog.to_json(pg_catalog.pg_get_expr(ad.adbin, 0))::text END,
               '"identity": ' || CASE a.attidentity WHEN 'a' THEN '"always"' WHEN 'd' THEN '"by default"' END,
               '"not_null": ' || a.attnotnull,
               CASE WHEN a.attcollation <> t.typcollation THEN
                    '"collation": ' || pg_catalog.to_json(pg_catalog.quote_ident(cn.nspname) || '.' || pg_catalog.quote_ident(co.collname))::text END,
               '"data_type": ' || pg_catalog.to_json(pg_catalog.format_type(a.atttypid, a.atttypmod))::text,
               CASE WHEN a.attgenerated = 's' THEN '"generated": ' || pg_catalog.to_json(pg_catalog.pg_get_expr(ad.adbin, ad.adrelid))::text END,
               '"privileges": ' || pv.privileges::text,
               -- written out like the rest: one jsonb_build_object per identity column costs more
               -- than all the other attributes of the column together
               CASE WHEN a.attidentity <> '' THEN '"identity_sequence": {"cache": ' || s.seqcache || ', "cycle": ' || s.seqcycle
                    || ', "start": ' || s.seqstart || ', "maximum": ' || s.seqmax || ', "minimum": ' || s.seqmin
                    || ', "increment": ' || s.seqincrement || '}' END) || '}'
      FROM att AS a
      JOIN pg_catalog.pg_type AS t ON t.oid = a.atttypid
      LEFT JOIN pg_catalog.pg_attrdef AS ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
      LEFT JOIN pg_catalog.pg_collation AS co ON co.oid = a.attcollation AND a.attcollation <> t.typcollation
      LEFT JOIN pg_catalog.pg_namespace AS cn ON cn.oid = co.collnamespace
      LEFT JOIN seq_owner AS so ON so.relid = a.attrelid AND so.attnum = a.attnum AND so.deptype = 'i'
      LEFT JOIN pg_catalog.pg_sequence AS s ON s.seqrelid = so.seqid
      LEFT JOIN pg_catalog.pg_description AS d ON d.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objoid = a.attrelid AND d.objsubid = a.attnum
      LEFT JOIN privs AS pv ON pv.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND pv.objid = a.attrelid AND pv.objsubid = a.attnum
     WHERE a.relkind IN ('r', 'p', 'f')
       AND (a.attislocal OR NOT a.relispartition)

    UNION ALL
    -- indexes, except those a constraint made (the constraint describes them) and those
    -- attached to a partitioned index (the parent index describes them)
    SELECT 'index', r.schema_ident || '.' || pg_catalog.quote_ident(ic.relname), r.ident,
           '{' || concat_ws(', ',
               '"valid": ' || i.indisvalid,
               '"comment": ' || pg_catalog.to_json(d.description)::text,
               '"definition": ' || pg_catalog.to_json(pg_catalog.pg_get_indexdef(i.indexrelid))::text) || '}'
      FROM pg_catalog.pg_index AS i
      JOIN rel AS r ON r.oid = i.indrelid
      JOIN pg_catalog.pg_class AS ic ON ic.oid = i.indexrelid
      LEFT JOIN pg_catalog.pg_description AS d ON d.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objoid = i.indexrelid AND d.objsubid = 0
     WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_constraint AS k
                        WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid AND k.contype IN ('p', 'u', 'x'))
       AND NOT (ic.relispartition AND EXISTS (SELECT FROM pg_catalog.pg_inherits AS h WHERE h.inhrelid = i.indexrelid))

    UNION ALL
    -- table constraints (constraint triggers are triggers; a partition's cloned constraints are
    -- its parent's)
    SELECT 'constraint', pg_catalog.quote_ident(k.conname) || ' on ' || r.ident, r.ident,
           '{' || concat_ws(', ',
               '"type": ' || CASE k.contype WHEN 'p' THEN '"primary key"' WHEN 'u' THEN '"unique"' WHEN 'c' THEN '"check"'
                                            WHEN 'x' THEN '"exclusion"' WHEN 'f' THEN '"foreign key"' END,
               '"comment": ' || pg_catalog.to_json(d.description)::text,
               '"definition": ' || pg_catalog.to_json(pg_catalog.pg_get_constraintdef(k.oid))::text,
               -- the storage parameters of the index behind a key, which its definition leaves
               -- out (an exclusion constraint's names them)
               '"index_options": ' || pg_catalog.to_json(pg_catalog.array_to_string(ci.reloptions, ', '))::text) || '}'
      FROM pg_catalog.pg_constraint AS k
      JOIN rel AS r ON r.oid = k.conrelid
      LEFT JOIN pg_catalog.pg_class AS ci ON ci.oid = k.conindid AND k.contype IN ('p', 'u')
      LEFT JOIN pg_catalog.pg_description AS d ON d.classoid = 'pg_catalog.pg_constraint'::pg_catalog.regclass AND d.objoid = k.oid AND d.objsubid = 0
     WHERE k.contype IN ('p', 'u', 'c', 'x', 'f')
       AND k.conparentid = 0
       AND (k.conislocal OR NOT r.relispartition)

    UNION ALL
    -- triggers: not the internal ones behind foreign keys, not clones on partitions, not
    -- pg_guardian's own
    SELECT 'trigger', pg_catalog.quote_ident(tg.tgname) || ' on ' || r.ident, r.ident,
           '{' || concat_ws(', ',
               '"comment": ' || pg_catalog.to_json(d.description)::text,
               '"enabled": ' || CASE tg.tgenabled WHEN 'O' THEN '"origin"' WHEN 'D' THEN '"disabled"'
                                                  WHEN 'R' THEN '"replica"' WHEN 'A' THEN '"always"' END,
               '"definition": ' || pg_catalog.to_json(pg_catalog.pg_get_triggerdef(tg.oid))::text) || '}'
      FROM pg_catalog.pg_trigger AS tg
      JOIN rel AS r ON r.oid = tg.tgrelid
      JOIN pg_catalog.pg_proc AS tf ON tf.oid = tg.tgfoid
      JOIN pg_catalog.pg_namespace AS tfn ON tfn.oid = tf.pronamespace
      LEFT JOIN pg_catalog.pg_description AS d ON d.classoid = 'pg_catalog.pg_trigger'::pg_catalog.regclass AND d.objoid = tg.oid AND d.objsubid = 0
     WHERE NOT tg.tgisinternal AND tg.tgparentid = 0
       AND tfn.nspname <> 'guardian'

    UNION ALL
    -- rules, other than the ones that make views
    SELECT 'rule', pg_catalog.quote_ident(rw.rulename) || ' on ' || r.ident, r.ident,
           '{' || concat_ws(', ',
               '"comment": ' || pg_catalog.to_json(d.description)::text,
               '"enabled": ' || CASE rw.ev_enabled WHEN 'O' THEN '"origin"' WHEN 'D' THEN '"disabled"'
                                                   WHEN 'R' THEN '"replica"' WHEN 'A' THEN '"always"' END,
               '"definition": ' || pg_catalog.to_json(pg_catalog.pg_get_ruledef(rw.oid))::text) || '}'
      FROM pg_catalog.pg_rewrite AS rw
      JOIN rel AS r ON r.oid = rw.ev_class
      LEFT JOIN pg_catalog.pg_description AS d ON d.classoid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.objoid = rw.oid AND d.objsubid = 0
     WHERE rw.rulename <> '_RETURN'

    UNION ALL
    -- row-level security policies
    SELECT 'policy', pg_catalog.quote_ident(po.polname) || ' on ' || r.ident, r.ident,
           '{' || concat_ws(', ',
               '"roles": ' || (SELECT pg_catalog.jsonb_agg(x.rn ORDER BY x.rn COLLATE "C") FROM (
                                  SELECT CASE WHEN ro = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(ro)::text END AS rn
                                    FROM pg_catalog.unnest(po.polroles) AS ro) AS x)::text,
               '"using": ' || pg_catalog.to_json(pg_catalog.pg_get_expr(po.polqual, po.polrelid))::text,
               '"command": ' || CASE po.polcmd WHEN 'r' THEN '"SELECT"' WHEN 'a' THEN '"INSERT"' WHEN 'w' THEN '"UPDATE"'
                                               WHEN 'd' THEN '"DELETE"' ELSE '"ALL"' END,
               '"comment": ' || pg_catalog.to_json(d.description)::text,
               '"permissive": ' || po.polpermissive,
               '"with_check": ' || pg_catalog.to_json(pg_catalog.pg_get_expr(po.polwithcheck, po.polrelid))::text) || '}'
      FROM pg_catalog.pg_policy AS po
      JOIN rel AS r ON r.oid = po.polrelid
      LEFT JOIN pg_catalog.pg_description AS d ON d.classoid = 'pg_catalog.pg_policy'::pg_catalog.regclass AND d.objoid = po.oid AND d.objsubid = 0

    UNION ALL
    -- functions, procedures and aggregates
    SELECT CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate' ELSE 'function' END,
           p.oid::pg_catalog.regprocedure::text, NULL,
           '{' || concat_ws(', ',
               CASE WHEN p.prokind <> 'a' THEN '"body": ' || pg_catalog.to_json(
                    CASE WHEN p.prosqlbody IS NOT NULL THEN pg_catalog.pg_get_function_sqlbody(p.oid) ELSE p.prosrc END)::text END,
               CASE WHEN p.prokind IN ('f', 'w') THEN '"cost": ' || pg_catalog.to_json(p.procost::numeric)::text END,
               CASE WHEN p.proretset THEN '"rows": ' || pg_catalog.to_json(p.prorows::numeric)::text END,
               CASE WHEN p.proconfig IS NOT NULL THEN '"config": ' ||
                    (SELECT pg_catalog.jsonb_agg(c ORDER BY c COLLATE "C") FROM pg_catalog.unnest(p.proconfig) AS c)::text END,
               CASE WHEN p.prokind IN ('f', 'w') THEN '"strict": ' || p.proisstrict END,
               CASE WHEN p.prokind = 'w' THEN '"window": true' END,
               '"comment": ' || pg_catalog.to_json(d.description)::text,
               '"library": ' || pg_catalog.to_json(p.probin)::text,
               CASE WHEN p.prokind <> 'p' THEN '"returns": ' || pg_catalog.to_json(pg_catalog.pg_get_function_result(p.oid))::text END,
               '"language": ' || pg_catalog.to_json(l.lanname)::text,
               CASE WHEN p.prokind <> 'p' THEN '"parallel": ' || CASE p.proparallel WHEN 's' THEN '"safe"' WHEN 'r' THEN '"restricted"'
                                                                                   ELSE '"unsafe"' END END,
               CASE WHEN p.prokind = 'a' THEN '"aggregate": ' || pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                    'state_function', ag.aggtransfn::pg_catalog.regproc::text,
                    'state_type', pg_catalog.format_type(ag.aggtranstype, NULL),
                    'final_function', NULLIF(ag.aggfinalfn, 0)::pg_catalog.regproc::text,
                    'combine_function', NULLIF(ag.aggcombinefn, 0)::pg_catalog.regproc::text,
                    'initial_condition', ag.agginitval,
                    'kind', ag.aggkind))::text END,
               '"arguments": ' || pg_catalog.to_json(pg_catalog.pg_get_function_arguments(p.oid))::text,
               CASE WHEN p.prokind IN ('f', 'w') THEN '"leakproof": ' || p.proleakproof END,
               '"privileges": ' || pv.privileges::text,
               CASE WHEN p.prokind <> 'p' THEN '"volatility": ' || CASE p.provolatile WHEN 'i' THEN '"immutable"'
                                                                     WHEN 's' THEN '"stable"' ELSE '"volatile"' END END,
               '"security_definer": ' || p.prosecdef) || '}'
      FROM fn AS p
      JOIN pg_catalog.pg_language AS l ON l.oid = p.prolang
      LEFT JOIN pg_catalog.pg_aggregate AS ag ON ag.aggfnoid = p.oid
      LEFT JOIN pg_catalog.pg_description AS d ON d.classoid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.objoid = p.oid AND d.objsubid = 0
      LEFT JOIN privs AS pv ON pv.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND pv.objid = p.oid AND pv.objsubid = 0

    UNION ALL
    -- enum, composite, range and base types, and domains (array types come with them)
    SELECT CASE t.typtype WHEN 'd' THEN 'domain' ELSE 'type' END,
           t.schema_ident || '.' || pg_catalog.quote_ident(t.typname), NULL,
           '{' || concat_ws(', ',
               CASE WHEN t.typtype <> 'd' THEN '"type": ' || CASE t.typtype WHEN 'e' THEN '"enum"' WHEN 'c' THEN '"composite"'
                                                                           WHEN 'r' THEN '"range"' ELSE '"base"' END END,
               CASE WHEN t.typtype = 'e' THEN '"labels": ' ||
                    (SELECT pg_catalog.jsonb_agg(e.enumlabel ORDER BY e.enumsortorder)
                       FROM pg_catalog.pg_enum AS e WHERE e.enumtypid = t.oid)::text END,
               '"comment": ' || pg_catalog.to_json(d.description)::text,
               '"default": ' || pg_catalog.to_json(t.typdefault)::text,
               CASE WHEN t.typtype = 'r' THEN '"subtype": ' ||
                    (SELECT pg_catalog.to_json(pg_catalog.format_type(rg.rngsubtype, NULL))
                       FROM pg_catalog.pg_range AS rg WHERE rg.rngtypid = t.oid)::text END,
               CASE WHEN t.typtype = 'd' THEN '"not_null": ' || t.typnotnull END,
               CASE WHEN t.typtype = 'd' THEN '"base_type": ' || pg_catalog.to_json(pg_catalog.format_type(t.typbasetype, t.typtypmod))::text END,
               CASE WHEN t.typtype = 'd' AND t.typcollation <> 0 AND t.typcollation <> bt.typcollation THEN '"collation": ' ||
                    (SELECT pg_catalog.to_json(pg_catalog.quote_ident(cn.nspname) || '.' || pg_catalog.quote_ident(co.collname))
                       FROM pg_catalog.pg_collation AS co
                       JOIN pg_catalog.pg_namespace AS cn ON cn.oid = co.collnamespace
                      WHERE co.oid = t.typcollation)::text END,
               CASE WHEN t.typtype = 'c' THEN '"attributes": ' ||
                    (SELECT pg_catalog.jsonb_agg(pg_catalog.quote_ident(a.attname) || ' '
                                                 || pg_catalog.format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum)
                       FROM pg_catalog.pg_attribute AS a
                      WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped)::text END,
               '"privileges": ' || pv.privileges::text,
               CASE WHEN t.typtype = 'd' THEN '"constraints": ' ||
                    (SELECT pg_catalog.jsonb_object_agg(k.conname, pg_catalog.pg_get_constraintdef(k.oid))
                       FROM pg_catalog.pg_constraint AS k WHERE k.contypid = t.oid)::text END,
               CASE WHEN t.typtype = 'b' THEN '"input_function": ' || pg_catalog.to_json(t.typinput::pg_catalog.regproc::text)::text END,
               CASE WHEN t.typtype = 'b' THEN '"output_function": ' || pg_catalog.to_json(t.typoutput::pg_catalog.regproc::text)::text END) || '}'
      FROM typ AS t
      LEFT JOIN pg_catalog.pg_type AS bt ON bt.oid = t.typbasetype
      LEFT JOIN pg_catalog.pg_description AS d ON d.classoid = 'pg_catalog.pg_type'::pg_catalog.regclass AND d.objoid = t.oid AND d.objsubid = 0
      LEFT JOIN privs AS pv ON pv.classid = 'pg_catalog.pg_type'::pg_catalog.regclass AND pv.objid = t.oid AND pv.objsubid = 0

    UNION ALL
    -- default privileges for objects created later (ALTER DEFAULT PRIVILEGES)
    SELECT 'default privileges',
           'for role ' || pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(da.defaclrole))
           || coalesce(' in schema ' || pg_catalog.quote_ident(n.nspname), '')
           || ' on ' || CASE da.defaclobjtype WHEN 'r' THEN 'tables' WHEN 'S' THEN 'sequences'
                                              WHEN 'f' THEN 'functions' WHEN 'T' THEN 'types'
                                              ELSE 'schemas' END,
           NULL,
           '{' || concat_ws(', ', '"privileges": ' || pv.privileges::text) || '}'
      FROM pg_catalog.pg_default_acl AS da
      LEFT JOIN pg_catalog.pg_namespace AS n ON n.oid = da.defaclnamespace
      LEFT JOIN privs AS pv ON pv.classid = 'pg_catalog.pg_default_acl'::pg_catalog.regclass AND pv.objid = da.oid AND pv.objsubid = 0
     WHERE n.nspname IS NULL OR n.nspname NOT IN ('guardian', 'guardian_ext', 'guardian_history')

    UNION ALL
    -- event triggers, not pg_guardian's own
    SELECT 'event trigger', pg_catalog.quote_ident(et.evtname), NULL,
           '{' || concat_ws(', ',
               '"tags": ' || (SELECT pg_catalog.jsonb_agg(tag ORDER BY tag COLLATE "C") FROM pg_catalog.unnest(et.evttags) AS tag)::text,
               '"event": ' || pg_catalog.to_json(et.evtevent)::text,
               '"comment": ' || pg_catalog.to_json(d.description)::text,
               '"enabled": ' || CASE et.evtenabled WHEN 'O' THEN '"origin"' WHEN 'D' THEN '"disabled"'
                                                   WHEN 'R' THEN '"replica"' WHEN 'A' THEN '"always"' END,
               '"function": ' || pg_catalog.to_json(et.evtfoid::pg_catalog.regprocedure::text)::text) || '}'
      FROM pg_catalog.pg_event_trigger AS et
      JOIN pg_catalog.pg_proc AS ef ON ef.oid = et.evtfoid
      JOIN pg_catalog.pg_namespace AS en ON en.oid = ef.pronamespace
      LEFT JOIN pg_catalog.pg_description AS d ON d.classoid = 'pg_catalog.pg_event_trigger'::pg_catalog.regclass AND d.objoid = et.oid AND d.objsubid = 0
     WHERE en.nspname <> 'guardian'
       AND NOT EXISTS (SELECT FROM ext_member AS e
                        WHERE e.classid = 'pg_catalog.pg_event_trigger'::pg_catalog.regclass AND e.objid = et.oid)
)
SELECT o.kind || ' ' || o.identity, o.kind, o.identity, o.parent, pg_catalog.md5(o.definition), o.definition
  FROM objects AS o
$objects$;
COMMENT ON FUNCTION guardian.schema_objects() IS
    'One row per user schema object (pg_guardian''s own excluded): key, kind, identity, parent, md5 checksum and definition (canonical jsonb text: cast it to jsonb to query it). The rows of guardian.schema_fingerprint().';

-- The document is assembled as text and parsed once: nesting each definition with
-- jsonb_build_object would copy it twice and costs twice as much on a large schema.
CREATE FUNCTION guardian.schema_fingerprint()
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
SET work_mem = '64MB'
AS $$
    SELECT ('{"format": "pg_guardian.fingerprint/1", "checksum": "'
            || pg_catalog.md5(coalesce(pg_catalog.string_agg(o.key || '=' || o.checksum, E'\n' ORDER BY o.key COLLATE "C"), ''))
            || '", "objects": {'
            || coalesce(pg_catalog.string_agg(
                   -- kinds are plain words; the identity is escaped once and reused in the key;
                   -- the keys come in jsonb's order (length, then bytes), which the parser keeps
                   '"' || o.kind || ' ' || o.identity_esc
                   || '": {"kind": "' || o.kind
                   || coalesce('", "parent": ' || o.parent_json || ', "checksum": "', '", "checksum": "') || o.checksum
                   || '", "identity": "' || o.identity_esc
                   || '", "definition": ' || o.definition || '}', ', '), '')
            || '}}')::jsonb
      -- Identities and parents are built from quote_ident()ed names, so one without a double
      -- quote holds nothing JSON escapes and is written as it is: to_json() on every one was
      -- a tenth of the cost of assembling the document. The others still go through it.
      FROM (SELECT x.key, x.kind, x.checksum, x.definition,
                   CASE WHEN pg_catalog.strpos(x.identity, '"') = 0 THEN x.identity
                        ELSE pg_catalog.left(pg_catalog.substr(pg_catalog.to_json(x.identity)::text, 2), -1) END AS identity_esc,
                   CASE WHEN pg_catalog.strpos(x.parent, '"') = 0 THEN '"' || x.parent || '"'
                        ELSE pg_catalog.to_json(x.parent)::text END AS parent_json
              FROM guardian.schema_objects() AS x) AS o
$$;
COMMENT ON FUNCTION guardian.schema_fingerprint() IS
    'Canonical JSON description of the user schemas (tables, columns, indexes, constraints, triggers, functions, views, sequences, types, policies, privileges, extensions, comments) with an md5 per object and overall. Independent of OIDs and creation order; pg_guardian''s own objects excluded.';
