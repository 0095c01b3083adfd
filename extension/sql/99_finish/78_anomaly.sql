-- Metric history: readers see it, admins add their own samples and describe their metrics.
GRANT SELECT ON guardian.metrics, guardian.metric_samples TO guardian_reader;
GRANT INSERT, UPDATE, DELETE ON guardian.metric_samples TO guardian_admin;
GRANT INSERT, UPDATE, DELETE ON guardian.metrics TO guardian_admin;
GRANT EXECUTE ON FUNCTION guardian.record_metric(text, text, double precision, timestamptz) TO guardian_admin;

-- Anomaly detection: readers see verdicts and may backtest; admins declare windows and set
-- sensitivity. The detector itself (_anomaly_resume, PL/Python) is called only by the
-- guardian's own functions, as guardian_owner.
GRANT SELECT ON guardian.anomaly_series, guardian.anomaly_scores, guardian.anomaly_windows, guardian.anomaly_settings
    TO guardian_reader;
GRANT DELETE ON guardian.anomaly_windows TO guardian_admin;
GRANT UPDATE (enabled, sensitivity, time_zone), DELETE ON guardian.anomaly_settings TO guardian_admin;
GRANT EXECUTE ON FUNCTION guardian.detect_anomalies(text, text, timestamptz, timestamptz),
    guardian.backtest_anomalies(timestamptz[], double precision[], text, text, double precision),
    guardian.anomaly_detection_available()
    TO guardian_reader;
GRANT EXECUTE ON FUNCTION guardian.expect(text, text, timestamptz, timestamptz, text),
    guardian.mark_incident(text, text, timestamptz, timestamptz, text),
    guardian.set_anomaly_settings(text, text, boolean, double precision, text, text)
    TO guardian_admin;
GRANT EXECUTE ON FUNCTION guardian.anomalies(timestamptz, text, text, timestamptz) TO guardian_reader;
