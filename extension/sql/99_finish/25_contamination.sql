-- The WHEN clauses of guardian triggers run as whoever writes to a watched table.
GRANT EXECUTE ON FUNCTION guardian._contains_any(text, text[]), guardian._uuid_matches(uuid, uuid[]),
    guardian._anchors(text, text), guardian._uuid_bounds(text)
    TO PUBLIC;
REVOKE EXECUTE ON FUNCTION guardian._record_rejection(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION guardian._record_rejection(jsonb) TO guardian_owner;

-- The application-side check is for everyone; it only reads the catalogue.
ALTER FUNCTION guardian.check_payload(jsonb, text) SECURITY DEFINER;
ALTER FUNCTION guardian.check_payload(jsonb, text) OWNER TO guardian_owner;
GRANT EXECUTE ON FUNCTION guardian.check_payload(jsonb, text) TO PUBLIC;

GRANT SELECT ON guardian.kinds, guardian.rules, guardian.allowlist, guardian.watched_tables, guardian.findings,
    guardian.activity_windows, guardian.activity_rules, guardian.table_activity_rules
    TO guardian_reader;
GRANT EXECUTE ON FUNCTION guardian.scan(regclass, boolean, bigint, bigint), guardian._scan_plan(regclass),
    guardian._row_findings(guardian.watched_tables, jsonb, jsonb, jsonb), guardian._match(text, text, text, regclass, boolean),
    guardian._rule_matches(text, text, text[], text), guardian._mail_domains(text), guardian._gate(text, boolean), guardian._listed_domains(text[]), guardian._rule_matcher(text, text, text[]), guardian._regex_literal(text), guardian._normalize(text), guardian._redact(text, text, text[]),
    guardian._record_ref(guardian.watched_tables, jsonb), guardian._rule_anchors(guardian.rules),
    guardian._uuid_range(text), guardian._applicable_rules(), guardian._plan_watch(regclass, jsonb),
    guardian._record_key(regclass), guardian._infer_kind(text, text, regtype), guardian._watch_of(regclass),
    guardian._relation_tree(regclass), guardian._watch_record(regclass, jsonb, jsonb),
    guardian._watched_attnums(guardian.watched_tables, regclass), guardian._key_text(guardian.watched_tables, text, text),
    guardian._json_safe_type(oid), guardian._row_json_sql(regclass, text[], smallint[], text[])
    TO guardian_reader;

GRANT INSERT, UPDATE, DELETE ON guardian.rules, guardian.allowlist, guardian.activity_rules,
    guardian.table_activity_rules
    TO guardian_admin;
GRANT EXECUTE ON FUNCTION guardian.watch(regclass, jsonb, text), guardian.unwatch(regclass),
    guardian.allow(text, regclass, text, text, text, timestamptz),
    guardian._guard_watchable(regclass), guardian._trigger_ddl(regclass, jsonb), guardian._trigger_names(jsonb),
    guardian._drop_watch_triggers(regclass), guardian._column_test(text, jsonb),
    guardian._register_watch(regclass, jsonb, jsonb), guardian._statement_trigger_ddl(regclass, boolean),
    guardian._on_truncate(), guardian._on_contamination(), guardian._on_statement(), guardian._before_statement(),
    guardian._statement_followup(regclass, text, bigint),
    guardian._record_scan_finding(regclass, text, jsonb, text, text, text, text), guardian._flush_findings(regclass),
    guardian._compile_rules(), guardian.rollup_activity(), guardian.prune_activity()
    TO guardian_admin;

-- The C prefilter reads the specification of a table as the function's owner, so PUBLIC
-- (whoever writes) needs no EXECUTE on it: the anchors are the rules' terms.
GRANT EXECUTE ON FUNCTION guardian._prefilter_spec(regclass, boolean) TO guardian_reader;

-- The C triggers and prefilter exist only where the library is installed.
DO $grant_c$
BEGIN
    -- each group is created by its own block (21_activity, 20_contamination/00_matchers)
    IF to_regprocedure('guardian._activity_end()') IS NOT NULL THEN
        GRANT EXECUTE ON FUNCTION guardian._activity_start(), guardian._activity_end() TO guardian_admin;
    END IF;
    IF to_regprocedure('guardian._suspect_columns(regclass, "any")') IS NOT NULL THEN
        GRANT EXECUTE ON FUNCTION guardian._suspect(record), guardian._suspect(record, record),
            guardian._suspect_columns(regclass, "any") TO PUBLIC;
        -- The WHEN clauses then call only _suspect(): the compiled anchors (the rules' terms)
        -- are no one's business but the guardian's.
        REVOKE EXECUTE ON FUNCTION guardian._anchors(text, text), guardian._uuid_bounds(text) FROM PUBLIC;
    END IF;
END
$grant_c$;

-- The row trigger's function is cloned onto every new partition of a watched table by whoever
-- creates the partition, which needs EXECUTE on it. A trigger function cannot be called other
-- than as a trigger, and on a table that is not watched it does nothing.
GRANT EXECUTE ON FUNCTION guardian._on_contamination() TO PUBLIC;
