-- What a cleanup touches, from the catalog alone: starting at the tables of the contaminated
-- rows, every foreign key that references a table whose rows are deleted, followed through
-- ON DELETE CASCADE (and, when the cleanup is asked to include restricted rows, through ON
-- DELETE RESTRICT / NO ACTION too). The steps are derived from these edges only (never from
-- data), so that the script generated for an alert and the capture that runs it agree on step
-- numbers.
CREATE FUNCTION guardian._table_root(p_table regclass)
RETURNS regclass
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- Rows of a partition are rows of its partitioned table: foreign keys name the root.
    SELECT coalesce(pg_partition_root(p_table), p_table)
$$;
COMMENT ON FUNCTION guardian._table_root(regclass) IS 'Internal: the partitioned table a partition belongs to, else the table itself.';

CREATE FUNCTION guardian._regclass_of(p_name text)
RETURNS regclass
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    -- to_regclass() needs USAGE on the schema, which the guardian's own role does not have:
    -- a schema-qualified name (as regclass prints it here) is looked up in the catalog.
    SELECT c.oid::regclass
      FROM (SELECT parse_ident(p_name) AS parts) AS p
      JOIN pg_catalog.pg_namespace AS n ON n.nspname = p.parts[1]
      JOIN pg_catalog.pg_class AS c ON c.relnamespace = n.oid AND c.relname = p.parts[2]
     WHERE cardinality(p.parts) = 2
$$;
COMMENT ON FUNCTION guardian._regclass_of(text) IS 'Internal: the table a schema-qualified name denotes, or NULL.';

CREATE FUNCTION guardian._jsonb_texts(p_value jsonb)
RETURNS text[]
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN jsonb_typeof(p_value) = 'array' THEN ARRAY(SELECT jsonb_array_elements_text(p_value)) END
$$;
COMMENT ON FUNCTION guardian._jsonb_texts(jsonb) IS 'Internal: a JSON array of strings as text[] (NULL for anything else).';

CREATE FUNCTION guardian._attnames(p_table regclass, p_attnums int2[])
RETURNS text[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT ARRAY(SELECT a.attname::text
                   FROM unnest(p_attnums) WITH ORDINALITY AS k(attnum, ord)
                   JOIN pg_catalog.pg_attribute AS a ON a.attrelid = p_table AND a.attnum = k.attnum
                  ORDER BY k.ord)
$$;
COMMENT ON FUNCTION guardian._attnames(regclass, int2[]) IS 'Internal: column names for attribute numbers, in order.';

CREATE TYPE guardian.cleanup_edge AS (
    constraint_name text,
    child           regclass,
    parent          regclass,
    child_columns   text[],
    parent_columns  text[],
    on_delete       text,
    set_columns     text[]
);
COMMENT ON TYPE guardian.cleanup_edge IS
    'Internal: a foreign key as a cleanup sees it: child and parent tables and columns, ON DELETE action, columns it sets.';

CREATE FUNCTION guardian._cleanup_edges(p_roots regclass[], p_include_restricted boolean DEFAULT false)
RETURNS SETOF guardian.cleanup_edge
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_deletable regclass[] := ARRAY(SELECT DISTINCT guardian._table_root(r) FROM unnest(p_roots) AS r);
    v_more      regclass[];
BEGIN
    LOOP
        v_more := ARRAY(SELECT DISTINCT c.conrelid::regclass
                          FROM pg_catalog.pg_constraint AS c
                         WHERE c.contype = 'f' AND c.conparentid = 0
                           AND (c.confdeltype = 'c' OR (p_include_restricted AND c.confdeltype IN ('r', 'a')))
                           AND c.confrelid = ANY (v_deletable) AND c.conrelid <> ALL (v_deletable));
        EXIT WHEN cardinality(v_more) = 0;
        v_deletable := v_deletable || v_more;
    END LOOP;
    RETURN QUERY
    SELECT c.conname::text, c.conrelid::regclass, c.confrelid::regclass,
           guardian._attnames(c.conrelid::regclass, c.conkey), guardian._attnames(c.confrelid::regclass, c.confkey),
           CASE c.confdeltype WHEN 'c' THEN 'cascade' WHEN 'n' THEN 'set null' WHEN 'd' THEN 'set default'
                              WHEN 'r' THEN 'restrict' ELSE 'no action' END,
           CASE WHEN c.confdeltype IN ('n', 'd')
                THEN guardian._attnames(c.conrelid::regclass, coalesce(c.confdelsetcols, c.conkey)) END
      FROM pg_catalog.pg_constraint AS c
     WHERE c.contype = 'f' AND c.conparentid = 0 AND c.confrelid = ANY (v_deletable)
     ORDER BY c.conrelid::regclass::text, c.conname;
END
$$;
COMMENT ON FUNCTION guardian._cleanup_edges(regclass[], boolean) IS
    'Internal: the foreign keys a cleanup of rows in these tables has to honour (followed through ON DELETE CASCADE, and through RESTRICT / NO ACTION with p_include_restricted), with their ON DELETE action.';

-- Steps: first every SET NULL / SET DEFAULT (the referencing rows stay, their key goes), then
-- the deletes, children before parents. Tables that reference each other in a cycle form one
-- group, deleted by one statement (foreign keys are checked at its end). RESTRICT and NO
-- ACTION references become checks: a referencing row that is not itself removed blocks the
-- cleanup. With p_include_restricted they become deletes instead: a table reached through
-- RESTRICT / NO ACTION (or through CASCADE from such a table) gets a second delete step of its
-- own (restricted), in the same group as its first, so that the rows removed only because a
-- person asked for it are counted, listed and warned about apart.
CREATE FUNCTION guardian._cleanup_steps(p_roots regclass[], p_include_restricted boolean DEFAULT false)
RETURNS TABLE (step integer, stmt_group integer, relid regclass, action text, columns text[], via text[],
               parent regclass, restricted boolean)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_roots      regclass[] := ARRAY(SELECT DISTINCT guardian._table_root(r) FROM unnest(p_roots) AS r);
    v_edges      guardian.cleanup_edge[] := ARRAY(SELECT e FROM guardian._cleanup_edges(v_roots, p_include_restricted) AS e);
    v_edge       guardian.cleanup_edge;
    v_cascade    regclass[] := v_roots;
    v_restricted regclass[] := '{}';
    v_more       regclass[];
    v_tables     regclass[];
    v_placed     regclass[] := '{}';
    v_group      regclass[];
    v_n          integer := 0;
    v_g          integer := 0;
    v_t          regclass;
BEGIN
    -- Deleted: the roots and every table reached through ON DELETE CASCADE ...
    LOOP
        v_more := ARRAY(SELECT DISTINCT e.child FROM unnest(v_edges) AS e
                         WHERE e.on_delete = 'cascade' AND e.parent = ANY (v_cascade) AND e.child <> ALL (v_cascade));
        EXIT WHEN cardinality(v_more) = 0;
        v_cascade := v_cascade || v_more;
    END LOOP;
    -- ... and, when asked, every table reached through RESTRICT / NO ACTION from a deleted
    -- table, with what cascades from those.
    WHILE p_include_restricted LOOP
        v_more := ARRAY(SELECT DISTINCT e.child FROM unnest(v_edges) AS e
                         WHERE e.child <> ALL (v_restricted)
                           AND ((e.on_delete IN ('restrict', 'no action')
                                 AND (e.parent = ANY (v_cascade) OR e.parent = ANY (v_restricted)))
                                OR (e.on_delete = 'cascade' AND e.parent = ANY (v_restricted))));
        EXIT WHEN cardinality(v_more) = 0;
        v_restricted := v_restricted || v_more;
    END LOOP;
    v_tables := ARRAY(SELECT DISTINCT x FROM unnest(v_cascade || v_restricted) AS x ORDER BY 1);

    FOR v_edge IN
        SELECT e.* FROM unnest(v_edges) AS e
         WHERE e.on_delete IN ('set null', 'set default')
         ORDER BY e.child::text, e.constraint_name
    LOOP
        v_n := v_n + 1;
        v_g := v_g + 1;
        step := v_n; stmt_group := v_g; relid := v_edge.child; action := v_edge.on_delete;
        columns := v_edge.set_columns; via := ARRAY[v_edge.constraint_name]; parent := v_edge.parent;
        restricted := false;
        RETURN NEXT;
    END LOOP;

    -- Children first: a table is placed once every other table referencing it is placed; a
    -- cycle is placed whole, as the strongly connected set of tables that reach each other.
    WHILE cardinality(v_placed) < cardinality(v_tables) LOOP
        SELECT ARRAY[t] INTO v_group
          FROM unnest(v_tables) AS t
         WHERE t <> ALL (v_placed)
           AND NOT EXISTS (SELECT FROM unnest(v_edges) AS e
                            WHERE e.parent = t AND e.child <> t
                              AND e.child = ANY (v_tables) AND e.child <> ALL (v_placed))
         ORDER BY t::text
         LIMIT 1;
        IF v_group IS NULL THEN
            -- Stuck on a cycle: take the first unplaced table's strongly connected set,
            -- provided nothing outside it still waits; else the next table's.
            FOR v_t IN SELECT t FROM unnest(v_tables) AS t WHERE t <> ALL (v_placed) ORDER BY t::text LOOP
                WITH RECURSIVE reach(a, b) AS (
                    SELECT e.child, e.parent FROM unnest(v_edges) AS e
                     WHERE e.child = ANY (v_tables) AND e.child <> ALL (v_placed)
                       AND e.parent = ANY (v_tables) AND e.parent <> ALL (v_placed)
                    UNION
                    SELECT r.a, e.parent FROM reach AS r JOIN unnest(v_edges) AS e ON e.child = r.b
                     WHERE e.parent = ANY (v_tables) AND e.parent <> ALL (v_placed))
                SELECT array_agg(s.x ORDER BY s.x::text) INTO v_group
                  FROM (SELECT v_t AS x
                        UNION SELECT r.b FROM reach AS r
                               WHERE r.a = v_t AND EXISTS (SELECT FROM reach AS r2 WHERE r2.a = r.b AND r2.b = v_t)) AS s;
                EXIT WHEN NOT EXISTS (
                    SELECT FROM unnest(v_edges) AS e
                     WHERE e.parent = ANY (v_group) AND e.child <> ALL (v_group)
                       AND e.child = ANY (v_tables) AND e.child <> ALL (v_placed));
            END LOOP;
        END IF;
        v_g := v_g + 1;
        FOREACH v_t IN ARRAY v_group LOOP
            stmt_group := v_g; relid := v_t; action := 'delete'; columns := NULL; parent := NULL;
            IF v_t = ANY (v_cascade) THEN
                v_n := v_n + 1;
                step := v_n; restricted := false;
                via := CASE WHEN v_t = ANY (v_roots) THEN ARRAY['contaminated'] ELSE '{}'::text[] END
                       || ARRAY(SELECT e.constraint_name FROM unnest(v_edges) AS e
                                 WHERE e.child = v_t AND e.on_delete = 'cascade' AND e.parent = ANY (v_cascade)
                                 ORDER BY e.constraint_name);
                RETURN NEXT;
            END IF;
            IF v_t = ANY (v_restricted) THEN
                v_n := v_n + 1;
                step := v_n; restricted := true;
                via := ARRAY(SELECT e.constraint_name FROM unnest(v_edges) AS e
                              WHERE e.child = v_t
                                AND ((e.on_delete IN ('restrict', 'no action') AND e.parent = ANY (v_tables))
                                     OR (e.on_delete = 'cascade' AND e.parent = ANY (v_restricted)))
                              ORDER BY e.constraint_name);
                RETURN NEXT;
            END IF;
        END LOOP;
        v_placed := v_placed || v_group;
    END LOOP;

    FOR v_edge IN
        SELECT e.* FROM unnest(v_edges) AS e
         WHERE e.on_delete IN ('restrict', 'no action') AND NOT p_include_restricted
         ORDER BY e.child::text, e.constraint_name
    LOOP
        v_n := v_n + 1;
        step := v_n; stmt_group := NULL; relid := v_edge.child; action := 'blocked';
        columns := v_edge.child_columns; via := ARRAY[v_edge.constraint_name]; parent := v_edge.parent;
        restricted := false;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION guardian._cleanup_steps(regclass[], boolean) IS
    'Internal: the steps of a cleanup of rows in these tables, from the catalog: SET NULL/SET DEFAULT updates, deletes children first (a cycle as one group), and RESTRICT/NO ACTION checks (action blocked); with p_include_restricted, deletes (restricted) of the rows those checks would find instead.';
