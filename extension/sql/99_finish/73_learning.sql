-- Learned detection: labels keep application values, so only admins read them; the guardian's
-- own functions (resolving an alert) keep labels through SECURITY DEFINER helpers.
GRANT SELECT, DELETE ON guardian.labels TO guardian_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON guardian.rule_suggestions TO guardian_admin;
GRANT UPDATE (label_values) ON guardian.kinds TO guardian_admin;
GRANT EXECUTE ON FUNCTION guardian.label_records(regclass, text[], text), guardian.suggest_rules(regclass),
    guardian.accept_rule_suggestion(bigint), guardian.dismiss_rule_suggestion(bigint),
    guardian._store_labels(regclass, text, jsonb, text, uuid), guardian._label_rows(regclass, text[]),
    guardian._fill_labels(regclass), guardian._suggest_for_column(regclass, text, text),
    guardian._induce(text, text), guardian._candidate_anchors(text, text, text[], text[]),
    guardian._open_suggestion(bigint)
    TO guardian_admin;
GRANT SELECT ON guardian.rule_lists TO guardian_reader;
GRANT EXECUTE ON FUNCTION guardian.update_rule_list(text, text[], text, text), guardian.set_nonprod_labels(text[])
    TO guardian_admin;
GRANT INSERT, UPDATE ON guardian.rule_lists TO guardian_admin;

-- Sources: admins say what a test tool looks like; readers see the scores. The write path asks
-- guardian._source_verdict() (SECURITY DEFINER) as whoever writes.
GRANT SELECT ON guardian.test_sources, guardian.source_risk TO guardian_reader;
GRANT INSERT, UPDATE, DELETE ON guardian.test_sources TO guardian_admin;
GRANT EXECUTE ON FUNCTION guardian._source_verdict() TO PUBLIC;
GRANT EXECUTE ON FUNCTION guardian.score_sources() TO guardian_admin;
