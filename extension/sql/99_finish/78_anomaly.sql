-- Metric history: readers see it, admins add their own samples and describe their metrics.
GRANT SELECT ON guardian.metrics, guardian.metric_samples TO guardian_reader;
GRANT INSERT, UPDATE, DELETE ON guardian.metric_samples TO guardian_admin;
GRANT INSERT, UPDATE, DELETE ON guardian.metrics TO guardian_admin;
GRANT EXECUTE ON FUNCTION guardian.record_metric(text, text, double precision, timestamptz) TO guardian_admin;
