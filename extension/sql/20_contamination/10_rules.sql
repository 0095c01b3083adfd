-- The rule catalogue. Users add, disable and tune rules with plain SQL; every change is
-- validated here and recompiles the write-path prefilters (see 40_compile.sql).
CREATE TABLE guardian.kinds (
    kind        text PRIMARY KEY,
    description text NOT NULL
);
COMMENT ON TABLE guardian.kinds IS 'Semantic kinds of columns that rules apply to.';
INSERT INTO guardian.kinds (kind, description) VALUES
    ('email',        'e-mail addresses'),
    ('person_name',  'names of people (first, last, full, display names)'),
    ('organization', 'names of clinics, practices, companies, tenants'),
    ('phone',        'telephone and fax numbers'),
    ('identifier',   'UUIDs and other record identifiers'),
    ('free_text',    'notes, descriptions, titles and other text');

CREATE TABLE guardian.rules (
    name                text PRIMARY KEY,
    pack                text NOT NULL DEFAULT 'custom',
    kinds               text[] NOT NULL DEFAULT '{}',
    column_pattern      text,
    match_type          text NOT NULL,
    pattern             text,
    terms               text[],
    anchors             text[],
    matcher             text,
    severity            text NOT NULL DEFAULT 'HIGH',
    enabled             boolean NOT NULL DEFAULT true,
    environments        text[],
    safe_for_automation boolean NOT NULL DEFAULT false,
    description         text NOT NULL,
    example_match       text,
    example_nonmatch    text,
    builtin             boolean NOT NULL DEFAULT false,
    updated_at          timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_by          text NOT NULL DEFAULT CURRENT_USER,
    CONSTRAINT rules_name_chk CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    CONSTRAINT rules_match_type_chk
        CHECK (match_type IN ('regex', 'words', 'exact', 'prefix', 'domains', 'uuids', 'digits')),
    CONSTRAINT rules_severity_chk CHECK (severity IN ('CRITICAL', 'HIGH', 'MEDIUM', 'LOW', 'INFO')),
    CONSTRAINT rules_target_chk CHECK (cardinality(kinds) > 0 OR column_pattern IS NOT NULL)
);
COMMENT ON TABLE guardian.rules IS
    'Test-data rules: what they apply to (kinds and/or a column-name pattern), how they match, severity, environments. Edit with SQL; invalid rules are rejected on write.';
COMMENT ON COLUMN guardian.rules.match_type IS
    'regex: pattern (case-insensitive) on the normalised value; words: any term as a whole word; exact: the whole normalised value is a term; prefix: starts with pattern; domains: e-mail domain equals or ends with a term; uuids: value equals a term or starts with a term ending in ''-''; digits: pattern (regex) on the value''s digits only.';
COMMENT ON COLUMN guardian.rules.anchors IS
    'Literal substrings, one of which every matching value contains: the write-path prefilter. A leading ^ / trailing $ asks for a word boundary there; #digits is looked for in the value''s digits only, where ? stands for any digit and a trailing $ for the end of the digits (#55501??$); @=domain is an e-mail address at that domain or a sub-domain of it. NULL: derived from terms; for regex rules without anchors every value is checked (slower).';
COMMENT ON COLUMN guardian.rules.matcher IS
    'Derived on write: the one regular expression (or, for exact, nothing) that decides a match on the normalised value; a domains rule''s expression says what it means, but its domains are looked up (guardian._mail_domains).';
COMMENT ON COLUMN guardian.rules.environments IS 'Environments the rule applies to; NULL means every environment.';
SELECT pg_catalog.pg_extension_config_dump('guardian.rules', 'WHERE NOT builtin');

CREATE TABLE guardian.allowlist (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule        text REFERENCES guardian.rules (name) ON UPDATE CASCADE ON DELETE CASCADE,
    relid       regclass,
    column_name text,
    value       text,
    reason      text NOT NULL,
    expires_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    created_by  text NOT NULL DEFAULT CURRENT_USER,
    CONSTRAINT allowlist_scope_chk CHECK (num_nonnulls(rule, relid, column_name, value) > 0),
    CONSTRAINT allowlist_column_needs_table_chk CHECK (column_name IS NULL OR relid IS NOT NULL)
);
COMMENT ON TABLE guardian.allowlist IS
    'Known false positives: an entry silences findings that match all of its non-NULL fields (rule, table, column, normalised value) until it expires. Add with guardian.allow().';
SELECT pg_catalog.pg_extension_config_dump('guardian.allowlist', '');
SELECT pg_catalog.pg_extension_config_dump('guardian.allowlist_id_seq', '');

-- Normalisation used by every precise match: Unicode NFKC, lower case, collapsed white space.
CREATE FUNCTION guardian._normalize(p_value text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT btrim(regexp_replace(lower(normalize(p_value, NFKC)), '\s+', ' ', 'g'))
$$;
COMMENT ON FUNCTION guardian._normalize(text) IS
    'Internal: NFKC, lower case, single spaces, trimmed: the form every rule sees.';

CREATE FUNCTION guardian._regex_literal(p_text text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT regexp_replace(p_text, '([^[:alnum:][:space:]])', '\\\1', 'g')
$$;
COMMENT ON FUNCTION guardian._regex_literal(text) IS 'Internal: a string escaped to match itself in a regular expression.';

-- Every match type becomes one regular expression on the normalised value (exact: equality).
CREATE FUNCTION guardian._rule_matcher(p_match_type text, p_pattern text, p_terms text[])
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE p_match_type
        WHEN 'regex' THEN p_pattern
        WHEN 'digits' THEN p_pattern
        WHEN 'words' THEN '(^|[^[:alnum:]])(' || t.alternation || ')($|[^[:alnum:]])'
        WHEN 'domains' THEN '@([^@]*\.)?(' || t.alternation || ')[.>]*$'
        WHEN 'prefix' THEN '^' || guardian._regex_literal(lower(p_pattern))
        WHEN 'uuids' THEN '^(' || (SELECT string_agg(guardian._regex_literal(x) || CASE WHEN right(x, 1) = '-' THEN '' ELSE '$' END, '|')
                                       FROM unnest(p_terms) AS x) || ')'
    END
      FROM (SELECT string_agg(guardian._regex_literal(x), '|' ORDER BY length(x) DESC) AS alternation
              FROM unnest(p_terms) AS x) AS t
$$;
COMMENT ON FUNCTION guardian._rule_matcher(text, text, text[]) IS 'Internal: the regular expression that decides a rule.';

-- The e-mail domain of a normalised value and each of its parent domains: what a domains rule
-- looks up (a list of thousands of domains is a lookup, not a regular expression).
CREATE FUNCTION guardian._mail_domains(p_value text)
RETURNS text[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN x.d IS NULL THEN '{}'::text[]
                ELSE ARRAY[x.d] || ARRAY(SELECT substr(x.d, g.i + 1) FROM generate_series(1, length(x.d)) AS g(i)
                                          WHERE substr(x.d, g.i, 1) = '.' ORDER BY g.i) END
      FROM (SELECT rtrim(substring(p_value FROM '@([^@]*)$'), '.>') AS d) AS x
$$;
COMMENT ON FUNCTION guardian._mail_domains(text) IS
    'Internal: the domain after the last @ of a normalised value (trailing . and > dropped) and its parent domains.';

-- The precise test. Deliberately without SET search_path so that it inlines into its callers,
-- all of which pin search_path; every operator is schema-qualified.
CREATE FUNCTION guardian._rule_matches(p_match_type text, p_matcher text, p_terms text[], p_value text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT p_value OPERATOR(pg_catalog.<>) ''
       AND ((p_match_type OPERATOR(pg_catalog.=) 'exact' AND p_value OPERATOR(pg_catalog.=) ANY (p_terms))
            OR (p_match_type OPERATOR(pg_catalog.=) 'domains'
                AND guardian._mail_domains(p_value) OPERATOR(pg_catalog.&&) p_terms)
            OR (p_match_type OPERATOR(pg_catalog.=) 'digits'
                AND pg_catalog.regexp_replace(p_value, '[^0-9]', '', 'g') OPERATOR(pg_catalog.~) p_matcher)
            OR (p_match_type OPERATOR(pg_catalog.<>) ALL (ARRAY['exact', 'digits', 'domains'])
                AND p_value OPERATOR(pg_catalog.~*) p_matcher))
$$;
COMMENT ON FUNCTION guardian._rule_matches(text, text, text[], text) IS
    'Internal: does a rule (match type, matcher, terms) match this normalised value?';

CREATE FUNCTION guardian._rule_anchors(p_rule guardian.rules)
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    -- The C prefilter folds ASCII case only: add case variants of non-ASCII anchors.
    SELECT ARRAY(
        SELECT DISTINCT v.variant
          FROM unnest(CASE
                 WHEN p_rule.anchors IS NOT NULL THEN p_rule.anchors
                 -- an e-mail domain is looked up, not searched for (lists run to thousands)
                 WHEN p_rule.match_type = 'domains' THEN ARRAY(SELECT '@=' || t FROM unnest(p_rule.terms) AS t)
                 WHEN p_rule.match_type = 'uuids' THEN p_rule.terms
                 -- whole words: '^' and '$' ask the prefilter for word boundaries
                 WHEN p_rule.match_type = 'words' THEN ARRAY(SELECT '^' || t || '$' FROM unnest(p_rule.terms) AS t)
                 WHEN p_rule.match_type = 'exact' THEN
                     ARRAY(SELECT '^' || (regexp_split_to_array(t, ' '))[cardinality(regexp_split_to_array(t, ' '))] || '$'
                             FROM unnest(p_rule.terms) AS t)
                 WHEN p_rule.match_type = 'prefix' THEN ARRAY[lower(p_rule.pattern)]
                 ELSE ARRAY['']
               END) AS a(anchor),
               LATERAL unnest(CASE WHEN a.anchor ~ '[^\x01-\x7f]'
                                   THEN ARRAY[lower(a.anchor), upper(a.anchor), initcap(a.anchor)]
                                   ELSE ARRAY[lower(a.anchor)] END) AS v(variant)
         ORDER BY 1)
$$;
COMMENT ON FUNCTION guardian._rule_anchors(guardian.rules) IS
    'Internal: the literal substrings the prefilter looks for on behalf of a rule (^/$: word boundary; '''' = every value).';

CREATE FUNCTION guardian._validate_rule()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_kind  text;
    v_regex text;
BEGIN
    NEW.severity := upper(btrim(NEW.severity));
    NEW.match_type := lower(btrim(NEW.match_type));
    NEW.updated_at := now();
    NEW.updated_by := SESSION_USER;
    FOREACH v_kind IN ARRAY NEW.kinds LOOP
        IF NOT EXISTS (SELECT FROM guardian.kinds AS k WHERE k.kind = v_kind) THEN
            RAISE EXCEPTION 'rule %: unknown kind %', NEW.name, quote_literal(v_kind)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Known kinds: ' || (SELECT string_agg(k.kind, ', ' ORDER BY k.kind) FROM guardian.kinds AS k);
        END IF;
    END LOOP;
    IF NEW.match_type IN ('regex', 'prefix', 'digits') AND coalesce(NEW.pattern, '') = '' THEN
        RAISE EXCEPTION 'rule %: match_type % needs a pattern', NEW.name, NEW.match_type
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Set pattern, e.g. pattern => ''^test[0-9]*@''.';
    END IF;
    IF NEW.match_type IN ('words', 'exact', 'domains', 'uuids') AND coalesce(cardinality(NEW.terms), 0) = 0 THEN
        RAISE EXCEPTION 'rule %: match_type % needs terms', NEW.name, NEW.match_type
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Set terms, e.g. terms => ARRAY[''example.com''].';
    END IF;
    FOREACH v_regex IN ARRAY ARRAY[CASE WHEN NEW.match_type IN ('regex', 'digits') THEN NEW.pattern END,
                                   NEW.column_pattern] LOOP
        CONTINUE WHEN v_regex IS NULL;
        BEGIN
            PERFORM '' ~ v_regex;
        EXCEPTION WHEN invalid_regular_expression THEN
            RAISE EXCEPTION 'rule %: invalid regular expression %', NEW.name, quote_literal(v_regex)
                USING ERRCODE = 'invalid_regular_expression',
                      DETAIL = SQLERRM,
                      HINT = 'Patterns use PostgreSQL POSIX regular expressions (\m and \M for word boundaries).';
        END;
    END LOOP;
    -- Terms are compared with normalised values, so store them normalised.
    IF NEW.terms IS NOT NULL THEN
        NEW.terms := ARRAY(SELECT DISTINCT guardian._normalize(t) FROM unnest(NEW.terms) AS t
                            WHERE guardian._normalize(t) <> '' ORDER BY 1);
    END IF;
    IF NEW.anchors IS NOT NULL THEN
        NEW.anchors := ARRAY(SELECT DISTINCT lower(a) FROM unnest(NEW.anchors) AS a WHERE a IS NOT NULL ORDER BY 1);
        -- '#' looks in the digits: without a digit such an anchor would let every value through
        SELECT a INTO v_regex FROM unnest(NEW.anchors) AS a WHERE length(a) > 1 AND left(a, 1) = '#' AND a !~ '[0-9]' LIMIT 1;
        IF v_regex IS NOT NULL THEN
            RAISE EXCEPTION 'rule %: anchor % has no digit', NEW.name, quote_literal(v_regex)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'An anchor starting with # is looked for in the value''s digits (#55501??$); for a literal #, anchor on what follows it.';
        END IF;
    END IF;
    NEW.matcher := guardian._rule_matcher(NEW.match_type, NEW.pattern, NEW.terms);
    BEGIN
        -- (a domains rule's expression only shows what it means: domains are looked up)
        PERFORM '' ~ NEW.matcher WHERE NEW.match_type <> 'domains';
    EXCEPTION WHEN invalid_regular_expression THEN
        RAISE EXCEPTION 'rule %: its terms do not make a valid expression: %', NEW.name, SQLERRM
            USING ERRCODE = 'invalid_regular_expression', HINT = 'Check the terms for stray characters.';
    END;
    IF NEW.example_match IS NOT NULL
       AND NOT guardian._rule_matches(NEW.match_type, NEW.matcher, NEW.terms, guardian._normalize(NEW.example_match)) THEN
        RAISE EXCEPTION 'rule %: example_match % does not match the rule', NEW.name, quote_literal(NEW.example_match)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Fix the pattern or terms, or the example.';
    END IF;
    IF NEW.example_nonmatch IS NOT NULL
       AND guardian._rule_matches(NEW.match_type, NEW.matcher, NEW.terms, guardian._normalize(NEW.example_nonmatch)) THEN
        RAISE EXCEPTION 'rule %: example_nonmatch % matches the rule', NEW.name, quote_literal(NEW.example_nonmatch)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The rule is too broad: tighten the pattern or terms.';
    END IF;
    IF NEW.example_match IS NOT NULL
       AND NOT guardian._contains_any(NEW.example_match, guardian._rule_anchors(NEW)) THEN
        RAISE EXCEPTION 'rule %: example_match % contains none of the anchors %', NEW.name,
                        quote_literal(NEW.example_match), NEW.anchors
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Every value the rule matches must contain one of its anchors; add one, or set anchors to NULL.';
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION guardian._validate_rule() IS
    'Internal: rejects invalid rules (unknown kind, bad regex, examples that contradict the rule) on INSERT or UPDATE.';

CREATE TRIGGER rules_validate
    BEFORE INSERT OR UPDATE ON guardian.rules
    FOR EACH ROW EXECUTE FUNCTION guardian._validate_rule();
