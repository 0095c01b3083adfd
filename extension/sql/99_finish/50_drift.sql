-- Drift: readers may see fingerprints, snapshots, schema changes and differences; admins take
-- snapshots, import fingerprints, approve baselines and run the check.
GRANT SELECT ON guardian.schema_snapshots, guardian.schema_changes TO guardian_reader;
GRANT DELETE ON guardian.schema_snapshots TO guardian_admin;

GRANT EXECUTE ON FUNCTION guardian.schema_objects(), guardian.schema_fingerprint(),
    guardian.normalize_sql(text), guardian.compare_fingerprints(jsonb, jsonb, boolean),
    guardian.diff_schema(bigint, boolean), guardian._check_fingerprint(jsonb, text),
    guardian._formatting_attribute(text, text, jsonb, jsonb), guardian._common_order(jsonb, jsonb),
    guardian._snapshot(bigint)
    TO guardian_reader;

GRANT EXECUTE ON FUNCTION guardian.snapshot_schema(text), guardian.import_fingerprint(text, jsonb, text),
    guardian.approve_baseline(bigint), guardian.check_drift(),
    guardian.record_schema_change(text, text, text, text, text, jsonb)
    TO guardian_admin;
