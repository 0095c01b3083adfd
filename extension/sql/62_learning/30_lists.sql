-- Curated lists: rules whose terms come from a maintained source (a package's list of
-- disposable mailbox domains), where each came from and when it was last refreshed.
-- `pg-guardian rules update` refreshes them through guardian.update_rule_list().
CREATE TABLE guardian.rule_lists (
    rule       text PRIMARY KEY REFERENCES guardian.rules (name) ON UPDATE CASCADE ON DELETE CASCADE,
    source     text NOT NULL,
    version    text,
    entries    integer NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_by text NOT NULL
);
COMMENT ON TABLE guardian.rule_lists IS
    'Rules whose terms are a curated list: the source and version the terms came from, how many, when and by whom they were last refreshed (pg-guardian rules update).';
SELECT pg_catalog.pg_extension_config_dump('guardian.rule_lists', '');
INSERT INTO guardian.rule_lists (rule, source, version, entries, updated_by)
SELECT r.name, 'disposable-email-domains (PyPI), as shipped with pg_guardian',
-- @@ list version disposable_email_domains.txt @@
       , cardinality(r.terms), 'pg_guardian'
  FROM guardian.rules AS r
 WHERE r.name = 'disposable_mail_domain'
ON CONFLICT (rule) DO NOTHING;

CREATE FUNCTION guardian.update_rule_list(p_rule text, p_terms text[], p_source text, p_version text DEFAULT NULL)
RETURNS TABLE (added integer, removed integer, entries integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_rule guardian.rules;
    v_new  text[];
BEGIN
    SELECT r.* INTO v_rule FROM guardian.rules AS r WHERE r.name = p_rule FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no rule named %', coalesce(quote_literal(p_rule), 'NULL')
            USING ERRCODE = 'undefined_object',
                  HINT = 'List the rules with: SELECT name, match_type FROM guardian.rules ORDER BY name;';
    END IF;
    IF v_rule.match_type NOT IN ('domains', 'words', 'exact', 'uuids') THEN
        RAISE EXCEPTION 'rule % matches by %, not by a list of terms', p_rule, v_rule.match_type
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Lists replace the terms of domains, words, exact and uuids rules.';
    END IF;
    IF coalesce(cardinality(p_terms), 0) = 0 OR array_position(p_terms, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'the new list of % is empty or holds a NULL', p_rule
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A list replaces the rule''s terms: give at least one, or disable the rule with UPDATE guardian.rules SET enabled = false.';
    END IF;
    IF coalesce(p_source, '') = '' THEN
        RAISE EXCEPTION 'say where the list of % comes from (p_source)', p_rule
            USING ERRCODE = 'invalid_parameter_value', HINT = 'e.g. p_source => ''disposable-email-domains (PyPI)''.';
    END IF;
    -- the rule's validator normalises the terms and checks its examples against them
    UPDATE guardian.rules AS r SET terms = p_terms WHERE r.name = p_rule RETURNING r.terms INTO v_new;
    INSERT INTO guardian.rule_lists AS l (rule, source, version, entries, updated_by)
    VALUES (p_rule, p_source, p_version, cardinality(v_new), guardian._actor())
    ON CONFLICT (rule) DO UPDATE
       SET source = EXCLUDED.source, version = EXCLUDED.version, entries = EXCLUDED.entries,
           updated_at = now(), updated_by = EXCLUDED.updated_by;
    added := (SELECT count(*) FROM unnest(v_new) AS t WHERE NOT t = ANY (v_rule.terms));
    removed := (SELECT count(*) FROM unnest(v_rule.terms) AS t WHERE NOT t = ANY (v_new));
    entries := cardinality(v_new);
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION guardian.update_rule_list(text, text[], text, text) IS
    'Replace the terms of a list rule (e.g. disposable_mail_domain) with a curated list, recording its source and version in guardian.rule_lists; the rule''s examples must still match and pass. Returns how many terms were added and removed. pg-guardian rules update calls it.';

-- The labels that mark a non-production sub-domain (staging.acme.com) for the
-- nonprod_mail_subdomain rule.
CREATE FUNCTION guardian.set_nonprod_labels(p_labels text[])
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_labels text[];
    v_bad    text;
BEGIN
    v_labels := ARRAY(SELECT DISTINCT lower(btrim(l)) FROM unnest(p_labels) AS l WHERE btrim(l) <> '' ORDER BY 1);
    IF coalesce(cardinality(v_labels), 0) = 0 THEN
        RAISE EXCEPTION 'no labels given'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'e.g. SELECT guardian.set_nonprod_labels(ARRAY[''staging'', ''qa'', ''dev'']); to stop the rule: UPDATE guardian.rules SET enabled = false WHERE name = ''nonprod_mail_subdomain'';';
    END IF;
    SELECT l INTO v_bad FROM unnest(v_labels) AS l WHERE l !~ '^[a-z0-9][a-z0-9-]*$' LIMIT 1;
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION 'label % is not a domain label', quote_literal(v_bad)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A label is letters, digits and hyphens, like staging or pre-prod (without dots).';
    END IF;
    UPDATE guardian.rules AS r
       SET pattern = '@(' || array_to_string(v_labels, '|') || ')[0-9]*\.([a-z0-9-]+\.)+[a-z]{2,}[.>]*$',
           anchors = ARRAY(SELECT '@' || l FROM unnest(v_labels) AS l),
           example_match = 'jane@' || v_labels[1] || '.brightsmiles.com'
     WHERE r.name = 'nonprod_mail_subdomain';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'rule nonprod_mail_subdomain does not exist'
            USING ERRCODE = 'undefined_object', HINT = 'It is a built-in rule: reinstall or upgrade pg_guardian.';
    END IF;
    RETURN array_to_string(v_labels, ', ');
END
$$;
COMMENT ON FUNCTION guardian.set_nonprod_labels(text[]) IS
    'Set the sub-domain labels (staging, qa, dev, sandbox, ...) that make an e-mail domain non-production for the nonprod_mail_subdomain rule; returns them.';

-- Mailbox providers real people use (extension/lists/real_mail_providers.txt): never a list's
-- entry, never a learned rule's domain.
CREATE FUNCTION guardian._real_mail_provider(p_domain text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p_domain = ANY (
-- @@ list real_mail_providers.txt @@
    ::text[])
$$;
COMMENT ON FUNCTION guardian._real_mail_provider(text) IS
    'Internal: is this a mailbox provider real people use (gmail.com, outlook.com, mail.com, ...)?';
