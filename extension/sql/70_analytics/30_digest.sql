-- The digest: the report of the last week (report.digest_days), raised as one REPORT_DIGEST
-- alert that carries the whole report, so that the relay sends it like any alert: the HTML
-- report by email, a short summary to Slack, the JSON to webhooks (route the type where it
-- should go). Off until enabled: SELECT guardian.set_job('report_digest', p_enabled => true);
CREATE FUNCTION guardian.report_digest(p_to timestamptz DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_to     timestamptz := coalesce(p_to, now());
    v_days   numeric := guardian.param('report.digest_days');
    v_zone   text := coalesce(guardian.setting('report.time_zone') #>> '{}', 'UTC');
    v_from   timestamptz := v_to - make_interval(days => v_days::integer);
    v_report jsonb;
    v_missed text[];
    v_alert  uuid;
BEGIN
    v_report := guardian.report(v_from, v_to, NULL, v_zone);
    v_missed := ARRAY(SELECT m ->> 'label' FROM jsonb_array_elements(v_report -> 'success_metrics') AS m
                       WHERE m ->> 'status' = 'missed');
    -- The previous digest has done its job.
    PERFORM guardian.resolve_alert(a.id, 'superseded by the next digest', 'expected')
       FROM guardian.monitoring_alerts AS a
      WHERE a.type = 'REPORT_DIGEST' AND a.resolved_at IS NULL;
    v_alert := guardian.raise_alert(
        'REPORT_DIGEST', CASE WHEN cardinality(v_missed) > 0 THEN 'MEDIUM' ELSE 'INFO' END,
        format('%s report, %s to %s: %s alert(s) (%s before); %s',
               guardian.current_environment(),
               to_char(v_from AT TIME ZONE v_zone, 'YYYY-MM-DD'), to_char(v_to AT TIME ZONE v_zone, 'YYYY-MM-DD'),
               v_report #>> '{totals,alerts}', v_report #>> '{totals,previous}',
               CASE WHEN cardinality(v_missed) = 0 THEN 'every success metric met'
                    ELSE format('missed: %s', array_to_string(v_missed, ', ')) END),
        NULL, NULL,
        jsonb_build_object('report', v_report, 'from', v_from, 'to', v_to, 'time_zone', v_zone,
                           'missed', to_jsonb(v_missed)),
        md5(concat_ws('|', 'REPORT_DIGEST', guardian.current_environment(), v_from::text, v_to::text)));
    RETURN format('digest %s: %s alert(s), %s missed metric(s)', v_alert, v_report #>> '{totals,alerts}', cardinality(v_missed));
END
$$;
COMMENT ON FUNCTION guardian.report_digest(timestamptz) IS
    'Raise the REPORT_DIGEST alert carrying guardian.report() of the last report.digest_days days (in the report.time_zone setting, default UTC) for the relay to send; closes the previous digest. Run weekly by the report_digest job once enabled.';

INSERT INTO guardian.parameters (name, default_value, min_value, max_value, unit, description, not_above) VALUES
    ('report.digest_days', 7, 1, 366, 'days', 'Days the report digest covers, up to the moment it runs', NULL);

INSERT INTO guardian.jobs (name, schedule, command, description, max_lag, builtin, enabled)
VALUES ('report_digest', '0 8 * * 1', 'SELECT guardian.report_digest()',
        'Raise the weekly REPORT_DIGEST alert (the report of the last week) for the relay; off until enabled',
        '8 days', true, false);
