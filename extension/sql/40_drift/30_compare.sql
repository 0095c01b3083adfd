-- Comparing two fingerprints in SQL, so that a team can check drift from psql: export one
-- with `SELECT guardian.schema_fingerprint()`, import it elsewhere with
-- guardian.import_fingerprint(), compare. The controller's `pg-guardian drift` computes the
-- same differences (same kinds, identities, changes and attributes) in Python.
CREATE FUNCTION guardian._check_fingerprint(p_fingerprint jsonb, p_name text)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_fingerprint IS NULL OR jsonb_typeof(p_fingerprint) <> 'object'
       OR p_fingerprint->>'format' IS DISTINCT FROM 'pg_guardian.fingerprint/1'
       OR jsonb_typeof(p_fingerprint->'objects') IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION '% is not a pg_guardian fingerprint', p_name
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Expected a JSON object with "format": "pg_guardian.fingerprint/1" and "objects"; got %s.',
                                  coalesce(left(p_fingerprint::text, 60), 'NULL')),
                  HINT = 'Produce one with SELECT guardian.schema_fingerprint(); or pg-guardian fingerprint --dsn ...';
    END IF;
    RETURN p_fingerprint;
END
$$;
COMMENT ON FUNCTION guardian._check_fingerprint(jsonb, text) IS
    'Internal: raises a clear error unless the value is a pg_guardian fingerprint document.';

-- Which attributes hold text whose formatting is the author's (function bodies in SQL and
-- PL/pgSQL, view definitions, policy expressions); everything else is deparsed by the server
-- and has no formatting of its own.
CREATE FUNCTION guardian._formatting_attribute(p_kind text, p_attribute text, p_source jsonb, p_target jsonb)
RETURNS boolean
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN p_kind IN ('function', 'procedure') AND p_attribute = 'body'
            THEN p_source->>'language' IN ('sql', 'plpgsql')
                 AND p_source->>'language' IS NOT DISTINCT FROM p_target->>'language'
        WHEN p_kind IN ('view', 'materialized view') THEN p_attribute = 'definition'
        WHEN p_kind = 'policy' THEN p_attribute IN ('using', 'with_check')
        ELSE false
    END
$$;
COMMENT ON FUNCTION guardian._formatting_attribute(text, text, jsonb, jsonb) IS
    'Internal: can a difference in this attribute be formatting only (bodies, view definitions, policy expressions)?';

-- Column order is compared on the columns both sides have: an added or dropped column is
-- reported once, as a column, not again as a change of order.
CREATE FUNCTION guardian._common_order(p_order jsonb, p_other jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(jsonb_agg(c.value ORDER BY c.n), '[]'::jsonb)
      FROM jsonb_array_elements(coalesce(p_order, '[]'::jsonb)) WITH ORDINALITY AS c(value, n)
     WHERE coalesce(p_other, '[]'::jsonb) @> jsonb_build_array(c.value)
$$;
COMMENT ON FUNCTION guardian._common_order(jsonb, jsonb) IS
    'Internal: the elements of p_order that p_other also has, in p_order''s order.';

CREATE FUNCTION guardian.compare_fingerprints(
    p_source jsonb, p_target jsonb, p_include_cosmetic boolean DEFAULT false)
RETURNS TABLE (kind text, identity text, parent text, change text, cosmetic boolean, detail jsonb)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    PERFORM guardian._check_fingerprint(p_source, 'the source');
    PERFORM guardian._check_fingerprint(p_target, 'the target');
    IF p_source->>'checksum' IS NOT DISTINCT FROM p_target->>'checksum' THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH pairs AS (
        SELECT coalesce(s.key, t.key) AS key, s.value AS src, t.value AS tgt,
               coalesce(s.value, t.value) AS any_side
          FROM jsonb_each(p_source->'objects') AS s
          FULL JOIN jsonb_each(p_target->'objects') AS t ON t.key = s.key
         WHERE s.value->>'checksum' IS DISTINCT FROM t.value->>'checksum'
    ),
    attrs AS (
        SELECT p.key, a.attribute,
               p.src->'definition'->a.attribute AS src_value,
               p.tgt->'definition'->a.attribute AS tgt_value,
               p.src IS NOT NULL AND p.tgt IS NOT NULL
                 AND guardian._formatting_attribute(p.any_side->>'kind', a.attribute,
                                                    p.src->'definition', p.tgt->'definition')
                 AND guardian.normalize_sql(p.src->'definition'->>a.attribute)
                     IS NOT DISTINCT FROM guardian.normalize_sql(p.tgt->'definition'->>a.attribute) AS formatting
          FROM pairs AS p,
               LATERAL (SELECT jsonb_object_keys(coalesce(p.src->'definition', '{}'::jsonb))
                        UNION
                        SELECT jsonb_object_keys(coalesce(p.tgt->'definition', '{}'::jsonb))) AS a(attribute)
         WHERE (p.src->'definition'->a.attribute) IS DISTINCT FROM (p.tgt->'definition'->a.attribute)
           AND NOT (a.attribute = 'column_order' AND p.src IS NOT NULL AND p.tgt IS NOT NULL
                    AND guardian._common_order(p.src->'definition'->'column_order', p.tgt->'definition'->'column_order')
                        = guardian._common_order(p.tgt->'definition'->'column_order', p.src->'definition'->'column_order'))
    ),
    diffs AS (
        SELECT a.key, bool_and(a.formatting) AS cosmetic,
               jsonb_object_agg(a.attribute,
                   jsonb_build_object('source', a.src_value, 'target', a.tgt_value)
                   || CASE WHEN a.formatting THEN '{"cosmetic": true}'::jsonb ELSE '{}'::jsonb END) AS detail
          FROM attrs AS a
         GROUP BY a.key
    )
    SELECT p.any_side->>'kind', p.any_side->>'identity', p.any_side->>'parent',
           CASE WHEN p.src IS NULL THEN 'added' WHEN p.tgt IS NULL THEN 'removed' ELSE 'changed' END,
           coalesce(d.cosmetic AND p.src IS NOT NULL AND p.tgt IS NOT NULL, false),
           coalesce(d.detail, '{}'::jsonb)
      FROM pairs AS p
      LEFT JOIN diffs AS d ON d.key = p.key
     -- an object both sides have is only reported if some attribute differs (column order
     -- among shared columns alone is not a difference); one side only is always reported
     WHERE (d.key IS NOT NULL OR p.src IS NULL OR p.tgt IS NULL)
       AND (p_include_cosmetic OR NOT coalesce(d.cosmetic AND p.src IS NOT NULL AND p.tgt IS NOT NULL, false))
     ORDER BY coalesce(p.any_side->>'parent', p.any_side->>'identity') COLLATE "C",
              p.any_side ? 'parent', p.any_side->>'kind' COLLATE "C", p.any_side->>'identity' COLLATE "C";
END
$$;
COMMENT ON FUNCTION guardian.compare_fingerprints(jsonb, jsonb, boolean) IS
    'Differences between two fingerprints, one row per object: change is added (only in the target), removed (only in the source) or changed; detail maps each differing attribute to {source, target}. Formatting-only differences are cosmetic and left out unless p_include_cosmetic.';
