-- Reports read the guardian's own tables only (as guardian_owner): anyone who may read the
-- alerts may read the report.
GRANT EXECUTE ON FUNCTION guardian.report(timestamptz, timestamptz, text, text),
    guardian.alert_timeseries(timestamptz, timestamptz, text, text, text, text, text)
    TO guardian_reader;
GRANT EXECUTE ON FUNCTION guardian.report_digest(timestamptz) TO guardian_admin;
