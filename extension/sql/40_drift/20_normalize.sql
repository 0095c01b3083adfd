-- Formatting-only differences (whitespace, comments, keyword case) in function bodies, view
-- definitions and policy expressions are not drift. In SQL there is no parser to call, so this
-- is a lexical normaliser: it splits the text into SQL tokens, drops comments and whitespace,
-- and folds the case of everything that is not quoted (unquoted identifiers fold to lower
-- case anyway, so this never hides a real change). String literals, quoted identifiers and
-- dollar quotes keep their exact text. The controller compares parse trees with pglast
-- instead, which also sees through redundant parentheses and the like.
CREATE FUNCTION guardian.normalize_sql(p_text text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.string_agg(
               CASE WHEN m.token ~ '^[eE]''' THEN 'e' || pg_catalog.substr(m.token, 2)
                    WHEN m.token ~ '^(''|"|\$[^0-9])' THEN m.token
                    ELSE pg_catalog.lower(m.token) END,
               ' ' ORDER BY m.n)
      FROM (SELECT t.match[1] AS token, t.n
              FROM pg_catalog.regexp_matches(p_text,
                       -- One token per match. POSIX takes the longest alternative, as a lexer
                       -- does (E'..' over E, a -- comment over the - operator); a dollar quote
                       -- runs to the last closing tag, so text between two quotes with one tag
                       -- is kept verbatim: that can only report drift, never hide it.
                       '(--[^\n]*'
                       || '|/\*(?:[^*]|\*+[^*/])*\*+/'
                       || '|[eE]''(?:[^''\\]|\\.|'''')*'''
                       || '|''(?:[^'']|'''')*'''
                       || '|"(?:[^"]|"")*"'
                       || '|\$([A-Za-z_][A-Za-z_0-9]*|)\$.*\$\2\$'
                       || '|\$[0-9]+'
                       || '|[[:alnum:]_][[:alnum:]_$]*'
                       || '|[-+*/<>=~!@#%^&|`?]+'
                       || '|[^[:space:]])',
                       'g') WITH ORDINALITY AS t(match, n)) AS m
     WHERE m.token !~ '^(--|/\*)'
$$;
COMMENT ON FUNCTION guardian.normalize_sql(text) IS
    'SQL or PL/pgSQL text reduced to its tokens: comments and whitespace dropped, unquoted text lower-cased, literals kept. Two texts with equal normal forms differ only in formatting.';
