-- The two hot-path primitives of the WHEN clauses on watched tables. Where the server has the
-- extension's shared library they are C (a single pass over the value); on managed Postgres
-- (plain-SQL install, no library) the same functions are SQL with the same results, slower.
-- Any role may call them (the WHEN clauses run as whoever writes): the C functions answer NULLs
-- and arguments of the wrong kind with a defined result or a clean ERROR.
DO $matchers$
BEGIN
    CREATE FUNCTION guardian._contains_any(p_value text, p_needles text[])
    RETURNS boolean
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS '$libdir/pg_guardian', 'pg_guardian_contains_any';
    CREATE FUNCTION guardian._uuid_matches(p_value uuid, p_bounds uuid[])
    RETURNS boolean
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS '$libdir/pg_guardian', 'pg_guardian_uuid_matches';
    -- The whole-row prefilter of the WHEN clauses (STABLE: it reads the compiled rules). A row
    -- that is not a watched table's (ROW(...), a composite type, another table) holds nothing.
    CREATE FUNCTION guardian._suspect(p_new record)
    RETURNS boolean
    LANGUAGE c STABLE STRICT
    AS '$libdir/pg_guardian', 'pg_guardian_suspect';
    -- Not STRICT: a NULL old row (or one of another type) makes every value new, as for an
    -- insert; a NULL new row holds nothing (false).
    CREATE FUNCTION guardian._suspect(p_new record, p_old record)
    RETURNS boolean
    LANGUAGE c STABLE CALLED ON NULL INPUT
    AS '$libdir/pg_guardian', 'pg_guardian_suspect';
    -- The scan's prefilter: (attnum, value) pairs straight from the scanned columns. Not STRICT:
    -- values may be NULL (a NULL table: false); attnums must be integer constants.
    CREATE FUNCTION guardian._suspect_columns(p_table regclass, VARIADIC p_columns "any")
    RETURNS boolean
    LANGUAGE c STABLE CALLED ON NULL INPUT PARALLEL SAFE
    AS '$libdir/pg_guardian', 'pg_guardian_suspect_columns';
    COMMENT ON FUNCTION guardian._suspect_columns(regclass, "any") IS
        'Internal prefilter (C) for scans: may these columns of a row, given as (attnum, value) pairs, hold test data whatever the guard mode?';
    COMMENT ON FUNCTION guardian._suspect(record) IS
        'Internal prefilter (C): may this new row hold test data? One call checks every watched column.';
    COMMENT ON FUNCTION guardian._suspect(record, record) IS
        'Internal prefilter (C): may this updated row hold test data in a column that changed? (NULL old row: every column.)';
EXCEPTION WHEN undefined_file OR insufficient_privilege OR undefined_function THEN
    RAISE NOTICE 'pg_guardian: the C prefilter is not loaded (%): using the SQL matchers (slower writes on watched tables)', SQLERRM;
    CREATE FUNCTION guardian._contains_any(p_value text, p_needles text[])
    RETURNS boolean
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $sql$
        -- The C search's meaning (extension/src/needles.c). Needles are looked for in the value's
        -- folded text (v): what the precise rules see (NFKC, U+0130 lowered, runs of any white
        -- space \s may match in some locale as one space), with every other non-ASCII character
        -- as chr(127), which is no word character; ASCII letters compare case-insensitively. A
        -- word character is an ASCII letter or digit, or any non-ASCII character. When the value
        -- and a needle hold non-ASCII characters, lower(NFKC(value)) with white space collapsed
        -- (v2) is searched too.
        -- '@=' needles: the value's e-mail domain (after the last '@', without trailing white
        -- space, '.' or '>') or a parent domain of it is the needle's; a value with non-ASCII
        -- characters matches any (folding could make it any address).
        -- The domain (in lower case) and its parents are looked up among the needles, which are
        -- written in lower case as rules' anchors are: a needle with capitals never matches.
        SELECT (p_value ~ '[^\x01-\x7f]'
                AND EXISTS (SELECT FROM unnest(p_needles) AS n(needle) WHERE length(n.needle) > 2 AND left(n.needle, 2) = '@='))
            OR EXISTS (
            SELECT FROM (SELECT translate(rtrim(substring(p_value FROM '@([^@]*)$'), E' \t\n\v\f\r\x1c\x1d\x1e\x1f.>'),
                                          'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz') AS d) AS x,
                 LATERAL (SELECT x.d AS s
                          UNION ALL
                          SELECT substr(x.d, g.i + 1) FROM generate_series(1, length(x.d)) AS g(i)
                           WHERE substr(x.d, g.i, 1) = '.') AS sfx
             WHERE x.d IS NOT NULL AND sfx.s <> ''
               AND '@=' || sfx.s = ANY (p_needles))
        OR EXISTS (
            SELECT FROM (SELECT f0.*, regexp_replace(f0.v, '[^0-9]', '', 'g') AS dg FROM (SELECT translate(regexp_replace(regexp_replace(
                                    replace(normalize(p_value, NFKC), chr(304), lower(chr(304))),
                                    '[\t\n\v\f\r\x1c-\x1f \u0085\u00a0\u1680\u180e\u2000-\u200b\u2028\u2029\u202f\u205f\u3000]+', ' ', 'g'),
                                    '[^\x01-\x7f]', chr(127), 'g'),
                                 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz') AS v,
                         CASE WHEN p_value ~ '[^\x01-\x7f]'
                               AND EXISTS (SELECT FROM unnest(p_needles) AS x(needle) WHERE x.needle ~ '[^\x01-\x7f]')
                              THEN translate(regexp_replace(lower(normalize(p_value, NFKC)),
                                       '[\t\n\v\f\r\x1c-\x1f \u0085\u00a0\u1680\u180e\u2000-\u200b\u2028\u2029\u202f\u205f\u3000]+', ' ', 'g'),
                                   'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz') END AS v2) AS f0) AS f,
                 unnest(p_needles) AS n(needle),
                 -- '#': digits, '?' any digit after the first digit, a trailing '$' the end of the digits
                 LATERAL (SELECT length(n.needle) > 1 AND left(n.needle, 1) = '#' AS is_digits,
                                 ltrim(regexp_replace(substr(n.needle, 2), '[^0-9?]', '', 'g'), '?') AS digits) AS d,
                 -- else a leading '^' and then a trailing '$' (each on more than one character) ask for word boundaries
                 LATERAL (SELECT length(n.needle) > 1 AND left(n.needle, 1) = '^' AS word_start,
                                 CASE WHEN length(n.needle) > 1 AND left(n.needle, 1) = '^' THEN substr(n.needle, 2) ELSE n.needle END AS rest) AS s,
                 LATERAL (SELECT length(s.rest) > 1 AND right(s.rest, 1) = '$' AS word_end,
                                 CASE WHEN length(s.rest) > 1 AND right(s.rest, 1) = '$' THEN left(s.rest, -1) ELSE s.rest END AS body) AS e,
                 LATERAL (SELECT CASE WHEN s.word_start THEN '(^|[\x01-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f])' ELSE '' END
                                 || regexp_replace(translate(e.body, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz'),
                                                   '([^[:alnum:][:space:]])', '\\\1', 'g')
                                 || CASE WHEN e.word_end THEN '($|[\x01-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f])' ELSE '' END AS pattern) AS r
             WHERE n.needle IS NOT NULL
               AND NOT (length(n.needle) > 2 AND left(n.needle, 2) = '@=')
               -- a literal part of the needle must occur before its expression is tried
               AND CASE WHEN d.is_digits
                        THEN d.digits = ''
                             OR (strpos(f.dg, split_part(d.digits, '?', 1)) > 0
                                 AND f.dg ~ (replace(d.digits, '?', '[0-9]') || CASE WHEN right(n.needle, 1) = '$' THEN '$' ELSE '' END))
                        ELSE e.body = ''
                             OR (strpos(f.v, translate(e.body, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')) > 0
                                 AND f.v ~ r.pattern)
                             OR (f.v2 IS NOT NULL AND f.v2 ~ r.pattern) END)
    $sql$;
    CREATE FUNCTION guardian._uuid_matches(p_value uuid, p_bounds uuid[])
    RETURNS boolean
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $sql$
        SELECT EXISTS (SELECT FROM generate_series(1, coalesce(array_length(p_bounds, 1), 0), 2) AS g(i)
                        WHERE p_value BETWEEN p_bounds[g.i] AND p_bounds[g.i + 1])
    $sql$;
END
$matchers$;
COMMENT ON FUNCTION guardian._contains_any(text, text[]) IS
    'Internal prefilter: does the value contain any needle? Looked for in the value as the rules see it (NFKC, white space runs as one space; other non-ASCII characters allow a word boundary), ASCII case-insensitive. A leading ^ / trailing $ on a needle asks for a word boundary there; a leading # looks in the digits only; @=domain (in lower case) matches an e-mail address at that domain or a sub-domain of it (thousands of these cost one lookup); an empty needle matches everything.';
COMMENT ON FUNCTION guardian._uuid_matches(uuid, uuid[]) IS
    'Internal prefilter: does the uuid fall in any [low, high] pair of the bounds array?';
