-- Precise matching, used by the row trigger (candidate rows only), the scanner and
-- guardian.check_payload(): one implementation over one catalogue.
CREATE FUNCTION guardian._redact(p_value text, p_kind text, p_anchors text[])
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    -- Words that hold the evidence (contain an anchor) stay; other words keep their first
    -- character only; the e-mail domain and identifiers are kept whole.
    SELECT left(CASE
        WHEN p_kind = 'identifier' THEN p_value
        WHEN p_kind = 'email' AND strpos(p_value, '@') > 0 THEN
            guardian._redact(split_part(p_value, '@', 1), 'free_text', p_anchors) || '@' ||
            substring(p_value FROM '@([^@]*)$')
        ELSE (SELECT string_agg(CASE WHEN w.word = '' OR guardian._contains_any(w.word, p_anchors)
                                     OR w.word !~ '[[:alnum:]]' THEN w.word
                                     ELSE left(w.word, 1) || repeat('*', length(w.word) - 1) END,
                                '' ORDER BY w.n)
                FROM regexp_split_to_table(p_value, '(?=[^[:alnum:]])|(?<=[^[:alnum:]])') WITH ORDINALITY AS w(word, n))
    END, 120)
$$;
COMMENT ON FUNCTION guardian._redact(text, text, text[]) IS
    'Internal: a sample of a matched value that shows the evidence and masks the rest.';

CREATE FUNCTION guardian._match(
    p_kind text, p_column text, p_value text, p_relid regclass DEFAULT NULL, p_exact_only boolean DEFAULT false)
RETURNS TABLE (rule text, severity text, sample text)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
-- Planning the query below for each value's parameters took 1.7 ms, running it 0.05 ms.
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_norm   text := guardian._normalize(p_value);
    v_text   boolean;
    v_digits boolean;
    v_listed text[];
BEGIN
    IF v_norm IS NULL OR v_norm = '' THEN
        RETURN;
    END IF;
    -- does any of the kind's expressions match at all? (see guardian._gate)
    v_text := coalesce(v_norm ~* guardian._gate(p_kind, false), false);
    v_digits := coalesce(regexp_replace(v_norm, '[^0-9]', '', 'g') ~ guardian._gate(p_kind, true), false);
    v_listed := CASE WHEN strpos(v_norm, '@') > 0 THEN guardian._listed_domains(guardian._mail_domains(v_norm)) END;
    -- One static query (its plan is cached for the session); _rule_matches inlines into it.
    RETURN QUERY
        -- (a domain rule's anchors, thousands of domains, show nothing in the local part)
        SELECT r.name, r.severity,
               guardian._redact(p_value, p_kind, CASE WHEN r.match_type = 'domains' THEN '{}'::text[]
                                                      ELSE guardian._rule_anchors(r) END)
          FROM guardian.rules AS r
         WHERE r.enabled
           AND (r.environments IS NULL OR guardian.current_environment() = ANY (r.environments))
           AND (p_kind = ANY (r.kinds) OR (r.column_pattern IS NOT NULL AND p_column ~* r.column_pattern))
           AND (NOT p_exact_only OR r.match_type = 'exact')
           -- a domain rule is looked up in the compiled lists (its terms are not read here);
           -- the others first pass their kind's gate (guardian._gate)
           AND CASE WHEN r.match_type = 'domains' THEN r.name = ANY (v_listed)
                    WHEN p_kind = ANY (r.kinds) AND r.match_type IN ('regex', 'words', 'prefix', 'uuids')
                         AND NOT v_text AND r.matcher !~ '\\[1-9]' THEN false
                    WHEN p_kind = ANY (r.kinds) AND r.match_type = 'digits'
                         AND NOT v_digits AND r.matcher !~ '\\[1-9]' THEN false
                    ELSE guardian._rule_matches(r.match_type, r.matcher, r.terms, v_norm) END
           AND NOT EXISTS (
                SELECT FROM guardian.allowlist AS a
                 WHERE (a.rule IS NULL OR a.rule = r.name)
                   AND (a.relid IS NULL OR a.relid = p_relid)
                   AND (a.column_name IS NULL OR a.column_name = p_column)
                   AND (a.value IS NULL OR a.value = v_norm)
                   AND (a.expires_at IS NULL OR a.expires_at > now()))
         ORDER BY array_position(ARRAY['CRITICAL','HIGH','MEDIUM','LOW','INFO'], r.severity), r.name;
END
$$;
COMMENT ON FUNCTION guardian._match(text, text, text, regclass, boolean) IS
    'Internal: the rules a value matches (allowlist applied), with a redacted sample.';

-- Every finding in one row of one table: the value of each watched column that changed and
-- passes the prefilter, plus the person's full name across name columns (John / Doe).
CREATE FUNCTION guardian._row_findings(
    p_watch guardian.watched_tables, p_new jsonb, p_old jsonb DEFAULT NULL, p_anchors jsonb DEFAULT NULL)
RETURNS TABLE (column_name text, rule text, severity text, sample text, value text)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_i       integer;
    v_column  text;
    v_kind    text;
    v_value   text;
    v_names   text[] := '{}';
    v_suspect boolean := false;
BEGIN
    FOR v_i IN 1 .. cardinality(p_watch.column_names) LOOP
        v_column := p_watch.column_names[v_i];
        v_kind := p_watch.column_kinds[v_i];
        v_value := p_new ->> v_column;
        IF v_kind = 'person_name' AND v_value IS NOT NULL THEN
            v_names := v_names || v_value;
        END IF;
        CONTINUE WHEN v_value IS NULL OR v_value = '';
        CONTINUE WHEN p_old IS NOT NULL AND (p_old ->> v_column) IS NOT DISTINCT FROM v_value;
        -- Only values that pass the prefilter get the precise (costlier) check.
        IF p_watch.column_types[v_i] = 'uuid' AND p_anchors IS NULL THEN
            CONTINUE WHEN NOT guardian._uuid_matches(v_value::uuid, guardian._uuid_bounds(v_column));
        ELSIF p_watch.column_types[v_i] <> 'uuid' THEN
            CONTINUE WHEN NOT guardian._contains_any(v_value,
                CASE WHEN p_anchors IS NULL THEN guardian._anchors(v_kind, v_column)
                     ELSE ARRAY(SELECT jsonb_array_elements_text(p_anchors -> v_column)) END);
        END IF;
        IF v_kind = 'person_name' THEN
            v_suspect := true;
        END IF;
        RETURN QUERY
            SELECT v_column, m.rule, m.severity, m.sample, v_value
              FROM guardian._match(v_kind, v_column, v_value, p_watch.relid) AS m;
    END LOOP;
    IF v_suspect AND cardinality(v_names) > 1 THEN
        RETURN QUERY
            SELECT array_to_string(ARRAY(SELECT p_watch.column_names[i]
                                           FROM generate_subscripts(p_watch.column_names, 1) AS i
                                          WHERE p_watch.column_kinds[i] = 'person_name'), '+'),
                   m.rule, m.severity, m.sample, array_to_string(v_names, ' ')
              FROM guardian._match('person_name', '', array_to_string(v_names, ' '), p_watch.relid, true) AS m;
    END IF;
END
$$;
COMMENT ON FUNCTION guardian._row_findings(guardian.watched_tables, jsonb, jsonb, jsonb) IS
    'Internal: the findings in one row (only changed columns when p_old is given); p_anchors (column -> anchors) replaces the compiled prefilter, for scans.';

-- A record id is shown to readers, the relay and chat: when the key is itself a watched
-- column of personal data (an e-mail as primary key), it is redacted like a sample, with a
-- short digest that keeps different records apart.
CREATE FUNCTION guardian._key_text(p_watch guardian.watched_tables, p_column text, p_value text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN p_value IS NULL
                  OR coalesce(p_watch.column_kinds[array_position(p_watch.column_names, p_column)], '')
                     NOT IN ('email', 'phone', 'person_name')
                THEN p_value
                ELSE guardian._redact(p_value, p_watch.column_kinds[array_position(p_watch.column_names, p_column)],
                                      guardian._anchors(p_watch.column_kinds[array_position(p_watch.column_names, p_column)], p_column))
                     || '#' || left(md5(p_value), 6) END
$$;
COMMENT ON FUNCTION guardian._key_text(guardian.watched_tables, text, text) IS
    'Internal: a key value as record ids show it (redacted, with a digest, when the key column holds personal data).';

CREATE FUNCTION guardian._record_ref(p_watch guardian.watched_tables, p_row jsonb, OUT record_id text, OUT record_key jsonb)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
             WHEN p_watch.key_columns IS NULL THEN 'row:' || left(md5(p_row::text), 16)
             WHEN cardinality(p_watch.key_columns) = 1
                 THEN guardian._key_text(p_watch, p_watch.key_columns[1], p_row ->> p_watch.key_columns[1])
             ELSE '(' || (SELECT string_agg(coalesce(guardian._key_text(p_watch, k, p_row ->> k), ''), ',' ORDER BY o)
                            FROM unnest(p_watch.key_columns) WITH ORDINALITY AS u(k, o)) || ')'
           END,
           CASE
             WHEN p_watch.key_columns IS NULL THEN jsonb_build_object('row_md5', md5(p_row::text))
             ELSE (SELECT jsonb_object_agg(k, p_row -> k) FROM unnest(p_watch.key_columns) AS k)
           END
$$;
COMMENT ON FUNCTION guardian._record_ref(guardian.watched_tables, jsonb) IS
    'Internal: the record id (primary key as text) and key of a row, or a fingerprint when the table has no key.';
