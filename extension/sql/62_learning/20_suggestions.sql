-- Pattern induction: from the values labelled test, candidate rules in the rule language
-- (domains, local-part shapes with digit runs generalised, name tokens, numbered templates,
-- UUID families, phone ranges), each scored against the labels and the table's current data.
-- Accepting one makes it an ordinary rule, examples included (the rule validator keeps it
-- honest).
INSERT INTO guardian.parameters (name, default_value, min_value, max_value, unit, description) VALUES
    ('learning.sample_rows', 200000, 1000, 100000000, 'rows',
     'guardian.suggest_rules() counts a suggestion''s matches on at most about this many rows of the table (a sample beyond)'),
    ('learning.min_support', 2, 1, 1000, 'records',
     'A suggested rule must match at least this many records labelled test');

CREATE TABLE guardian.rule_suggestions (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    relid         regclass NOT NULL,
    column_name   text NOT NULL,
    kind          text NOT NULL,
    match_type    text NOT NULL,
    pattern       text,
    terms         text[],
    anchors       text[],
    matcher       text NOT NULL,
    examples      text[] NOT NULL,
    nonmatch      text,
    test_hits     integer NOT NULL,
    real_hits     integer NOT NULL,
    matches_now   bigint NOT NULL,
    est_precision numeric(4, 3) NOT NULL,
    status        text NOT NULL DEFAULT 'open',
    rule_name     text,
    created_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    decided_at    timestamptz,
    decided_by    text,
    CONSTRAINT rule_suggestions_status_chk CHECK (status IN ('open', 'accepted', 'dismissed'))
);
COMMENT ON TABLE guardian.rule_suggestions IS
    'Rules induced from labelled test values by guardian.suggest_rules(): open ones are replaced on every call; accepted and dismissed ones stay (a dismissed rule is not suggested again).';
COMMENT ON COLUMN guardian.rule_suggestions.est_precision IS
    'Estimated share of the rule''s matches that are test data: labelled test hits against labelled real hits (of the kind, any table) and the matches in the table''s current data that the labelled sample does not explain.';
COMMENT ON COLUMN guardian.rule_suggestions.nonmatch IS
    'A value labelled real that the rule does not match: the rule''s example_nonmatch once accepted.';
SELECT pg_catalog.pg_extension_config_dump('guardian.rule_suggestions', '');
SELECT pg_catalog.pg_extension_config_dump('guardian.rule_suggestions_id_seq', '');
CREATE INDEX rule_suggestions_relid_idx ON guardian.rule_suggestions (relid, status);

-- The candidate rules one normalised test value suggests, from specific to general.
CREATE FUNCTION guardian._induce(p_kind text, p_value text)
RETURNS TABLE (match_type text, pattern text, terms text[], anchors text[], family text)
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_local  text;
    v_domain text;
    v_labels text[];
    v_parent text;
    v_token  text;
    v_prefix text;
    v_digits text;
    v_k      integer;
    v_n      integer;
BEGIN
    IF p_value IS NULL OR p_value = '' THEN
        RETURN;
    END IF;
    IF p_kind = 'email' THEN
        v_local := substring(p_value FROM '^(.+)@[^@]+$');
        v_domain := substring(p_value FROM '@([^@]+)$');
        IF v_local IS NULL OR v_domain IS NULL THEN
            RETURN;
        END IF;
        -- the domain, and the organisation's domain of a sub-domain (staging.acme.io: acme.io)
        IF v_domain ~ '^[a-z0-9-]+(\.[a-z0-9-]+)+$' AND NOT guardian._real_mail_provider(v_domain) THEN
            RETURN QUERY SELECT 'domains', NULL::text, ARRAY[v_domain], NULL::text[], 'domain'::text;
            v_labels := string_to_array(v_domain, '.');
            IF cardinality(v_labels) >= 3 THEN
                v_parent := array_to_string(v_labels[2:], '.');
                IF v_parent !~ '^(co|com|org|net|ac|gov|edu|ltd|plc|nhs|or|ne|go)\.[a-z]{2}$'
                   AND NOT guardian._real_mail_provider(v_parent) THEN
                    RETURN QUERY SELECT 'domains', NULL::text, ARRAY[v_parent], NULL::text[], 'domain'::text;
                END IF;
            END IF;
        END IF;
        -- the local part's shape, digit runs generalised: cypress+1702@ -> ^cypress\+[0-9]+@
        v_prefix := substring(v_local FROM '^([a-z]{2,})');
        IF v_local ~ '[0-9]' AND v_prefix IS NOT NULL THEN
            RETURN QUERY SELECT 'regex', '^' || regexp_replace(guardian._regex_literal(v_local), '[0-9]+', '[0-9]+', 'g') || '@',
                                NULL::text[], ARRAY['^' || v_prefix], 'shape'::text;
            RETURN QUERY SELECT 'regex', '^' || regexp_replace(guardian._regex_literal(v_local), '[0-9]+', '[0-9]+', 'g') || '@'
                                         || guardian._regex_literal(v_domain) || '$',
                                NULL::text[], ARRAY['^' || v_prefix], 'shape'::text;
        END IF;
        -- each word of the local part as a marker: playwright_user_3@, jane.cypress@
        FOR v_token IN SELECT DISTINCT m[1] FROM regexp_matches(v_local, '([a-z]{3,})', 'g') AS m LOOP
            RETURN QUERY SELECT 'regex', '(^|[^[:alnum:]@])' || v_token || '([^[:alpha:]@][^@]*)?@', NULL::text[],
                                ARRAY['^' || v_token], 'token'::text;
        END LOOP;
        -- a sub-address tag: jane+cypress42@
        v_token := substring(v_local FROM '\+([a-z]{2,})');
        IF v_token IS NOT NULL THEN
            RETURN QUERY SELECT 'regex', '\+' || v_token || '[^@]*@', NULL::text[], ARRAY['+' || v_token], 'tag'::text;
        END IF;
    ELSIF p_kind = 'phone' THEN
        -- the number's last ten digits with its last 2, 3 or 4 digits free: a range
        v_digits := right(regexp_replace(p_value, '[^0-9]', '', 'g'), 10);
        IF length(v_digits) >= 8 THEN
            FOREACH v_k IN ARRAY ARRAY[2, 3, 4] LOOP
                v_prefix := left(v_digits, length(v_digits) - v_k);
                RETURN QUERY SELECT 'digits', v_prefix || '[0-9]{' || v_k || '}$', NULL::text[],
                                    ARRAY['#' || v_prefix || repeat('?', v_k) || '$'], 'range'::text;
            END LOOP;
        END IF;
    ELSIF p_kind = 'identifier' THEN
        IF p_value ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
            RETURN QUERY SELECT 'uuids', NULL::text, ARRAY[p_value], NULL::text[], 'uuid'::text;
            -- a family: the same first groups (random UUIDs share 32 bits once in four billion)
            FOREACH v_n IN ARRAY ARRAY[24, 19, 14, 9] LOOP
                RETURN QUERY SELECT 'uuids', NULL::text, ARRAY[left(p_value, v_n)], NULL::text[], 'uuid'::text;
            END LOOP;
        END IF;
    ELSE
        -- names, organisations, text: its words, numbered templates (not the whole value: a name
        -- is a pattern only when different test values share it, and a whole value is one)
        FOR v_token IN SELECT DISTINCT m[1] FROM regexp_matches(p_value, '([[:alpha:]]{3,})', 'g') AS m LOOP
            RETURN QUERY SELECT 'words', NULL::text, ARRAY[v_token], NULL::text[], 'word'::text;
        END LOOP;
        FOR v_token IN SELECT DISTINCT m[1] FROM regexp_matches(p_value, '([[:alpha:]]{2,})[ _-]?[0-9]+', 'g') AS m LOOP
            RETURN QUERY SELECT 'regex', '(^|[^[:alnum:]])' || guardian._regex_literal(v_token) || '[ _-]?[0-9]+($|[^[:alnum:]])',
                                NULL::text[], ARRAY['^' || v_token], 'template'::text;
        END LOOP;
        v_prefix := substring(p_value FROM '^([[:alpha:]]{2,})');
        IF p_value ~ '[0-9]' AND v_prefix IS NOT NULL THEN
            RETURN QUERY SELECT 'regex', '^' || regexp_replace(guardian._regex_literal(p_value), '[0-9]+', '[0-9]+', 'g') || '$',
                                NULL::text[], ARRAY['^' || v_prefix], 'template'::text;
        END IF;
    END IF;
END
$$;
COMMENT ON FUNCTION guardian._induce(text, text) IS
    'Internal: candidate rules (match type, pattern, terms, anchors) that one normalised value of a kind suggests, with their family (domain, shape, token, tag, range, uuid, word, template).';

-- The literal substrings a candidate's matches all contain (what _rule_anchors gives a rule).
CREATE FUNCTION guardian._candidate_anchors(p_match_type text, p_pattern text, p_terms text[], p_anchors text[])
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN p_anchors IS NOT NULL THEN p_anchors
        WHEN p_match_type = 'domains' THEN ARRAY(SELECT '@=' || t FROM unnest(p_terms) AS t)
        WHEN p_match_type = 'uuids' THEN p_terms
        WHEN p_match_type = 'words' THEN ARRAY(SELECT '^' || t || '$' FROM unnest(p_terms) AS t)
        WHEN p_match_type = 'exact' THEN
            ARRAY(SELECT '^' || (regexp_split_to_array(t, ' '))[cardinality(regexp_split_to_array(t, ' '))] || '$'
                    FROM unnest(p_terms) AS t)
        WHEN p_match_type = 'prefix' THEN ARRAY[lower(p_pattern)]
        ELSE ARRAY['']
    END
$$;
COMMENT ON FUNCTION guardian._candidate_anchors(text, text, text[], text[]) IS
    'Internal: the prefilter anchors of a candidate rule.';

CREATE FUNCTION guardian._suggest_for_column(p_table regclass, p_column text, p_kind text, p_covered text[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $$
DECLARE
    v_type      oid;
    v_expr      text;
    v_limit     numeric := guardian.param('learning.sample_rows');
    v_support   numeric := guardian.param('learning.min_support');
    v_estimate  numeric;
    v_sample    text := '';
    v_scale     numeric := 1;
    v_values    text[];
    v_counts    bigint[];
    v_rows      numeric;
    v_labelled  numeric;
    v_has_real  boolean;
    v_count     integer;
BEGIN
    SELECT a.atttypid INTO v_type
      FROM pg_catalog.pg_attribute AS a
     WHERE a.attrelid = p_table AND a.attname = p_column AND NOT a.attisdropped;
    IF v_type IS NULL THEN
        RETURN 0;
    END IF;
    -- The column's current values (a sample of a large table), read without application code.
    v_expr := format(CASE WHEN guardian._json_safe_type(v_type) THEN 't.%I::pg_catalog.text'
                          ELSE 'pg_catalog.format(''%%s'', t.%I)' END, p_column);
    SELECT greatest(c.reltuples, 0) INTO v_estimate FROM pg_catalog.pg_class AS c WHERE c.oid = p_table;
    IF v_estimate > v_limit THEN
        v_sample := format(' TABLESAMPLE SYSTEM (%s)', round(100 * v_limit / v_estimate, 4));
    END IF;
    EXECUTE format('SELECT coalesce(array_agg(x.value), ''{}''), coalesce(array_agg(x.n), ''{}''), coalesce(sum(x.n), 0)
                      FROM (SELECT guardian._normalize(%1$s) AS value, count(*) AS n
                              FROM %2$s AS t%3$s GROUP BY 1) AS x', v_expr, p_table, v_sample)
        INTO v_values, v_counts, v_rows;
    IF v_sample <> '' AND v_rows > 0 THEN
        v_scale := greatest(v_estimate / v_rows, 1);
        v_rows := v_estimate;
    END IF;
    SELECT count(DISTINCT l.record_id), bool_or(l.label = 'real') INTO v_labelled, v_has_real
      FROM guardian.labels AS l WHERE l.relid = p_table;

    WITH tests AS (
        SELECT l.record_id, l.value, l.record_id = ANY (p_covered) AS covered
          FROM guardian.labels AS l
         WHERE l.relid = p_table AND l.column_name = p_column AND l.label = 'test' AND l.value IS NOT NULL
    ), reals AS (
        SELECT DISTINCT l.value FROM guardian.labels AS l
         WHERE l.kind = p_kind AND l.label = 'real' AND l.value IS NOT NULL
    ), candidates AS (
        -- only what at least v_support labelled records suggest is worth matching against them all
        -- (a candidate's matches are mostly the records that suggest it: this spares compiling
        -- one expression per value)
        SELECT c.match_type, c.pattern, c.terms, c.anchors, min(c.family) AS family
          FROM (SELECT t.value, array_agg(t.record_id) AS records FROM tests AS t GROUP BY t.value) AS t,
               guardian._induce(p_kind, t.value) AS c,
               unnest(t.records) AS r(record_id)
         GROUP BY 1, 2, 3, 4
        HAVING count(DISTINCT r.record_id) >= v_support
    ), compiled AS (
        SELECT c.*, guardian._rule_matcher(c.match_type, c.pattern, c.terms) AS matcher,
               guardian._candidate_anchors(c.match_type, c.pattern, c.terms, c.anchors) AS prefilter
          FROM candidates AS c
    ), supported AS (
        SELECT c.*, h.hits, h.new_hits, h.examples
          FROM compiled AS c,
               LATERAL (SELECT array_agg(DISTINCT t.record_id ORDER BY t.record_id) AS hits,
                               count(DISTINCT t.record_id) FILTER (WHERE NOT t.covered) AS new_hits,
                               count(DISTINCT t.value) AS distinct_values,
                               (array_agg(DISTINCT t.value))[1:3] AS examples
                          FROM tests AS t
                         WHERE guardian._rule_matches(c.match_type, c.matcher, c.terms, t.value)) AS h
         WHERE cardinality(h.hits) >= v_support AND h.new_hits > 0
           -- a name or a word is a pattern only when different test values share it (fixture rows
           -- often carry a realistic name whose record is test for another column's sake)
           AND (c.family NOT IN ('token', 'word') OR h.distinct_values >= 2)
           -- not a rule that exists, nor one someone dismissed
           AND NOT EXISTS (SELECT FROM guardian.rules AS r
                            WHERE r.match_type = c.match_type AND r.kinds @> ARRAY[p_kind]
                              AND r.matcher = c.matcher)
           AND NOT EXISTS (SELECT FROM guardian.rule_suggestions AS s
                            WHERE s.relid = p_table AND s.column_name = p_column AND s.status <> 'open'
                              AND s.match_type = c.match_type AND s.matcher = c.matcher)
    ), scored AS (
        SELECT s.*, r.real_hits, r.nonmatch, n.matches_now
          FROM supported AS s,
               LATERAL (SELECT count(*) FILTER (WHERE m) AS real_hits, (array_agg(x.value) FILTER (WHERE NOT m))[1] AS nonmatch
                          FROM (SELECT rv.value, guardian._rule_matches(s.match_type, s.matcher, s.terms, rv.value) AS m
                                  FROM reals AS rv) AS x) AS r,
               LATERAL (SELECT round(coalesce(sum(v.n), 0) * v_scale)::bigint AS matches_now
                          FROM unnest(v_values, v_counts) AS v(value, n)
                         WHERE guardian._contains_any(v.value, s.prefilter)
                           AND guardian._rule_matches(s.match_type, s.matcher, s.terms, v.value)) AS n
    ), estimated AS (
        -- Matches now that neither labelled test hits nor what the unlabelled share of the test
        -- data would add explain (three times the expected number, plus 3) count as real. Without
        -- any real label, every unlabelled match does.
        SELECT s.*,
               round((cardinality(s.hits) / (cardinality(s.hits) + s.real_hits + 0.01 + CASE
                   WHEN NOT coalesce(v_has_real, false)
                       THEN greatest(s.matches_now - cardinality(s.hits), 0)
                   -- names and words: the expected number plus two standard deviations, plus 2
                   WHEN s.family IN ('token', 'word')
                       THEN greatest(s.matches_now - cardinality(s.hits) - s.real_hits
                                     - cardinality(s.hits) * (v_rows - v_labelled) / greatest(v_labelled, 1)
                                     - 2 * sqrt(cardinality(s.hits) * (v_rows - v_labelled) / greatest(v_labelled, 1)) - 2, 0)
                   ELSE greatest(s.matches_now - cardinality(s.hits) - s.real_hits
                                 - 3 * cardinality(s.hits) * (v_rows - v_labelled) / greatest(v_labelled, 1) - 3, 0)
               END))::numeric, 3) AS est_precision
          FROM scored AS s
    ), kept AS (
        -- a candidate whose test hits another as good (or better) also has is left out
        SELECT e.* FROM estimated AS e
         WHERE NOT EXISTS (
               SELECT FROM estimated AS o
                WHERE o.hits @> e.hits AND (o.match_type, o.matcher) IS DISTINCT FROM (e.match_type, e.matcher)
                  AND (o.est_precision > e.est_precision
                       OR (o.est_precision = e.est_precision AND cardinality(o.hits) > cardinality(e.hits))
                       -- the same records: of one match type, the simplest stays (a domain and a
                       -- local-part shape both stay: each catches what the other does not)
                       OR (o.est_precision = e.est_precision AND cardinality(o.hits) = cardinality(e.hits)
                           AND o.match_type = e.match_type
                           AND (o.matches_now, -length(o.matcher), o.matcher)
                               > (e.matches_now, -length(e.matcher), e.matcher))))
         ORDER BY e.est_precision DESC, cardinality(e.hits) DESC
         LIMIT 50
    )
    INSERT INTO guardian.rule_suggestions (relid, column_name, kind, match_type, pattern, terms, anchors, matcher,
                                           examples, nonmatch, test_hits, real_hits, matches_now, est_precision)
    SELECT p_table, p_column, p_kind, k.match_type, k.pattern, k.terms, k.anchors, k.matcher, k.examples,
           k.nonmatch, cardinality(k.hits), k.real_hits, k.matches_now, k.est_precision
      FROM kept AS k
     WHERE k.est_precision >= 0.5;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION guardian._suggest_for_column(regclass, text, text, text[]) IS
    'Internal: induces, scores and keeps the rule suggestions of one column from its labelled test values (p_covered: the test records a rule already finds).';

CREATE FUNCTION guardian.suggest_rules(p_table regclass DEFAULT NULL)
RETURNS TABLE (suggestion_id bigint, column_name text, kind text, match_type text, matcher text, examples text[],
               matches_now bigint, est_precision numeric)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_table   regclass;
    v_column  record;
    v_covered text[];
BEGIN
    IF p_table IS NOT NULL AND NOT EXISTS (SELECT FROM guardian.labels AS l WHERE l.relid = p_table) THEN
        RAISE NOTICE 'no records of % are labelled: nothing to learn from', p_table
            USING HINT = 'Label records with guardian.label_records(table, record_ids, ''test'' or ''real''), or resolve its contamination alerts with an outcome.';
    END IF;
    FOR v_table IN
        SELECT DISTINCT l.relid FROM guardian.labels AS l
         WHERE (p_table IS NULL OR l.relid = p_table) AND l.label = 'test'
           AND EXISTS (SELECT FROM pg_catalog.pg_class AS c WHERE c.oid = l.relid)
         ORDER BY 1
    LOOP
        PERFORM guardian._refuse_app_code(ARRAY[v_table], format('guardian.suggest_rules(%L)', v_table::text),
                                          p_runs => ARRAY['read']);
        PERFORM guardian._fill_labels(v_table);
        DELETE FROM guardian.rule_suggestions AS s WHERE s.relid = v_table AND s.status = 'open';
        -- the test records a rule already finds (in any of their columns)
        v_covered := ARRAY(SELECT DISTINCT o.record_id FROM guardian.labels AS o
                            WHERE o.relid = v_table AND o.label = 'test' AND o.value IS NOT NULL
                              AND EXISTS (SELECT FROM guardian._match(o.kind, o.column_name, o.value, v_table)));
        FOR v_column IN
            SELECT l.column_name, l.kind FROM guardian.labels AS l
             WHERE l.relid = v_table AND l.label = 'test' AND l.value IS NOT NULL
             GROUP BY 1, 2 ORDER BY 1
        LOOP
            PERFORM guardian._suggest_for_column(v_table, v_column.column_name, v_column.kind, v_covered);
        END LOOP;
    END LOOP;
    RETURN QUERY
        SELECT s.id, s.column_name, s.kind, s.match_type, s.matcher, s.examples, s.matches_now, s.est_precision
          FROM guardian.rule_suggestions AS s
         WHERE s.status = 'open' AND (p_table IS NULL OR s.relid = p_table)
         ORDER BY s.est_precision DESC, s.test_hits DESC, s.id;
END
$$;
COMMENT ON FUNCTION guardian.suggest_rules(regclass) IS
    'Rules learned from labelled test values (guardian.label_records, resolved alerts): for each, the column, the match, examples, how many rows of the table it would flag now and its estimated precision (against real labels and the table''s data). Replaces the open suggestions of the tables it looks at. Accept one with guardian.accept_rule_suggestion(id).';

CREATE FUNCTION guardian._open_suggestion(p_suggestion_id bigint)
RETURNS guardian.rule_suggestions
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_suggestion guardian.rule_suggestions;
BEGIN
    SELECT s.* INTO v_suggestion FROM guardian.rule_suggestions AS s WHERE s.id = p_suggestion_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no rule suggestion with id %', coalesce(p_suggestion_id::text, 'NULL')
            USING ERRCODE = 'no_data_found',
                  HINT = 'List suggestions with: SELECT * FROM guardian.suggest_rules();';
    END IF;
    IF v_suggestion.status <> 'open' THEN
        RAISE EXCEPTION 'rule suggestion % is already %', p_suggestion_id,
                        v_suggestion.status || coalesce(' (rule ' || v_suggestion.rule_name || ')', '')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'List the open ones with: SELECT * FROM guardian.suggest_rules();';
    END IF;
    RETURN v_suggestion;
END
$$;
COMMENT ON FUNCTION guardian._open_suggestion(bigint) IS 'Internal: an open rule suggestion, locked, or an error.';

CREATE FUNCTION guardian.accept_rule_suggestion(p_suggestion_id bigint)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_suggestion guardian.rule_suggestions := guardian._open_suggestion(p_suggestion_id);
    v_name       text := format('learned_%s_%s', v_suggestion.kind, v_suggestion.id);
BEGIN
    INSERT INTO guardian.rules (name, pack, kinds, match_type, pattern, terms, anchors, severity, description,
                                example_match, example_nonmatch)
    VALUES (v_name, 'learned', ARRAY[v_suggestion.kind], v_suggestion.match_type, v_suggestion.pattern,
            v_suggestion.terms, v_suggestion.anchors, 'MEDIUM',
            format('Learned from %s records of %s labelled test (%s %s on %s; suggestion %s, estimated precision %s).',
                   v_suggestion.test_hits, v_suggestion.relid, v_suggestion.match_type,
                   coalesce(v_suggestion.pattern, array_to_string(v_suggestion.terms, ', ')), v_suggestion.column_name,
                   v_suggestion.id, v_suggestion.est_precision),
            v_suggestion.examples[1], v_suggestion.nonmatch);
    UPDATE guardian.rule_suggestions AS s
       SET status = 'accepted', rule_name = v_name, decided_at = now(), decided_by = guardian._actor()
     WHERE s.id = v_suggestion.id;
    RETURN v_name;
END
$$;
COMMENT ON FUNCTION guardian.accept_rule_suggestion(bigint) IS
    'Turn a rule suggestion into an ordinary rule (pack learned, severity MEDIUM, with its first example as example_match and a real labelled value it does not match as example_nonmatch); returns the rule''s name. Edit or disable it like any rule.';

CREATE FUNCTION guardian.dismiss_rule_suggestion(p_suggestion_id bigint)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_suggestion guardian.rule_suggestions := guardian._open_suggestion(p_suggestion_id);
BEGIN
    UPDATE guardian.rule_suggestions AS s
       SET status = 'dismissed', decided_at = now(), decided_by = guardian._actor()
     WHERE s.id = v_suggestion.id;
END
$$;
COMMENT ON FUNCTION guardian.dismiss_rule_suggestion(bigint) IS
    'Dismiss a rule suggestion: the same rule is not suggested again for that column.';
