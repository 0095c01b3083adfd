-- The two hot-path primitives of the WHEN clauses on watched tables. Where the server has the
-- extension's shared library they are C (a single pass over the value); on managed Postgres
-- (plain-SQL install, no library) the same functions are SQL with the same results, slower.
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
    -- The whole-row prefilter of the WHEN clauses (STABLE: it reads the compiled rules).
    CREATE FUNCTION guardian._suspect(p_new record)
    RETURNS boolean
    LANGUAGE c STABLE STRICT
    AS '$libdir/pg_guardian', 'pg_guardian_suspect';
    CREATE FUNCTION guardian._suspect(p_new record, p_old record)
    RETURNS boolean
    LANGUAGE c STABLE
    AS '$libdir/pg_guardian', 'pg_guardian_suspect';
    -- The scan's prefilter: (attnum, value) pairs straight from the scanned columns.
    CREATE FUNCTION guardian._suspect_columns(p_table regclass, VARIADIC p_columns "any")
    RETURNS boolean
    LANGUAGE c STABLE PARALLEL SAFE
    AS '$libdir/pg_guardian', 'pg_guardian_suspect_columns';
    COMMENT ON FUNCTION guardian._suspect_columns(regclass, "any") IS
        'Internal prefilter (C) for scans: may these columns of a row, given as (attnum, value) pairs, hold test data whatever the guard mode?';
    COMMENT ON FUNCTION guardian._suspect(record) IS
        'Internal prefilter (C): may this new row hold test data? One call checks every watched column.';
    COMMENT ON FUNCTION guardian._suspect(record, record) IS
        'Internal prefilter (C): may this updated row hold test data in a column that changed?';
EXCEPTION WHEN undefined_file OR insufficient_privilege OR undefined_function THEN
    RAISE NOTICE 'pg_guardian: shared library not available, using SQL matchers (slower writes on watched tables)';
    CREATE FUNCTION guardian._contains_any(p_value text, p_needles text[])
    RETURNS boolean
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $sql$
        -- The C search's meaning: fullwidth forms fold to ASCII and ASCII letters to lower case;
        -- a word character is an ASCII letter or digit or any non-ASCII character.
        SELECT EXISTS (
            SELECT FROM unnest(p_needles) AS n(needle),
                   (SELECT translate(p_value,
                                     '！＂＃＄％＆＇（）＊＋，－．／０１２３４５６７８９：；＜＝＞？＠ＡＢＣＤＥＦＧＨＩＪＫＬＭＮＯＰＱＲＳＴＵＶＷＸＹＺ［＼］＾＿｀ａｂｃｄｅｆｇｈｉｊｋｌｍｎｏｐｑｒｓｔｕｖｗｘｙｚ｛｜｝～ABCDEFGHIJKLMNOPQRSTUVWXYZ',
                                     '!"#$%&''()*+,-./0123456789:;<=>?@abcdefghijklmnopqrstuvwxyz[\]^_`abcdefghijklmnopqrstuvwxyz{|}~abcdefghijklmnopqrstuvwxyz') AS v) AS f
             WHERE n.needle IS NOT NULL
               AND (n.needle IN ('', '^', '$', '#') OR n.needle ~ '^#[^0-9]*$'
                    OR (n.needle LIKE '#%' AND regexp_replace(f.v, '[^0-9]', '', 'g') ~ (
                            -- digits, '?' any digit, a trailing '$' the end of the digits
                            replace(regexp_replace(regexp_replace(n.needle, '^#[^0-9]*', ''), '[^0-9?]', '', 'g'), '?', '[0-9]')
                            || CASE WHEN n.needle LIKE '%$' THEN '$' ELSE '' END))
                    OR n.needle NOT LIKE '#%' AND f.v ~ (
                        CASE WHEN n.needle LIKE '^_%' THEN '(^|[\x01-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f])' ELSE '' END
                        || regexp_replace(translate(regexp_replace(regexp_replace(n.needle, '^\^(.)', '\1'), '(.)\$$', '\1'),
                                                    'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz'),
                                          '([^[:alnum:][:space:]])', '\\\1', 'g')
                        || CASE WHEN n.needle LIKE '%_$' THEN '($|[\x01-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f])' ELSE '' END)))
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
    'Internal prefilter: does the value contain any needle (ASCII case-insensitive)? A leading ^ / trailing $ on a needle asks for a word boundary there; a leading # looks in the digits only; an empty needle matches everything.';
COMMENT ON FUNCTION guardian._uuid_matches(uuid, uuid[]) IS
    'Internal prefilter: does the uuid fall in any [low, high] pair of the bounds array?';
