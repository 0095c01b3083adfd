-- Learned detection: labels keep application values, so only admins read them; the guardian's
-- own functions (resolving an alert) keep labels through SECURITY DEFINER helpers.
GRANT SELECT, DELETE ON guardian.labels TO guardian_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON guardian.rule_suggestions TO guardian_admin;
GRANT UPDATE (label_values) ON guardian.kinds TO guardian_admin;
GRANT EXECUTE ON FUNCTION guardian.label_records(regclass, text[], text), guardian.suggest_rules(regclass),
    guardian.accept_rule_suggestion(bigint), guardian.dismiss_rule_suggestion(bigint),
    guardian._store_labels(regclass, text, jsonb, text, uuid), guardian._label_rows(regclass, text[]),
    guardian._fill_labels(regclass), guardian._suggest_for_column(regclass, text, text, text[]),
    guardian._induce(text, text), guardian._candidate_anchors(text, text, text[], text[]),
    guardian._open_suggestion(bigint)
    TO guardian_admin;
GRANT SELECT ON guardian.rule_lists TO guardian_reader;
GRANT EXECUTE ON FUNCTION guardian.update_rule_list(text, text[], text, text), guardian.set_nonprod_labels(text[]),
    guardian._real_mail_provider(text)
    TO guardian_admin;
GRANT INSERT, UPDATE ON guardian.rule_lists TO guardian_admin;

-- Sources: admins say what a test tool looks like; readers see the scores. The write path asks
-- guardian._source_verdict() from the C statement trigger (a direct call) or the PL/pgSQL one
-- (SECURITY DEFINER): PUBLIC needs no right to it.
GRANT SELECT ON guardian.test_sources, guardian.source_risk TO guardian_reader;
GRANT INSERT, UPDATE, DELETE ON guardian.test_sources TO guardian_admin;
GRANT EXECUTE ON FUNCTION guardian.score_sources() TO guardian_admin;

-- Column models: readers inspect them and score values; admins train them and scan.
GRANT SELECT ON guardian.column_models, guardian.column_model_grams, guardian.test_models, guardian.test_model_grams,
    guardian.suspect_watermarks TO guardian_reader;
GRANT EXECUTE ON FUNCTION guardian._shape(text), guardian._surprise(bigint, bigint),
    guardian._model_scores(regclass, jsonb, boolean), guardian.score_value(regclass, text, text)
    TO guardian_reader;
GRANT INSERT, UPDATE, DELETE ON guardian.column_models, guardian.column_model_grams, guardian.test_models,
    guardian.test_model_grams, guardian.suspect_watermarks TO guardian_admin;
GRANT EXECUTE ON FUNCTION guardian.train_column_models(regclass), guardian._train_test_models(), guardian._test_examples(),
    guardian.scan_suspects(regclass, boolean, xid8), guardian.run_suspect_scan()
    TO guardian_admin;

-- The dashboard lists open suggestions to readers, without their examples (values).
GRANT SELECT (id, relid, column_name, kind, match_type, pattern, terms, anchors, matcher, test_hits, real_hits,
              matches_now, est_precision, status, rule_name, created_at, decided_at, decided_by)
    ON guardian.rule_suggestions TO guardian_reader;
