INSERT INTO guardian.parameters (name, default_value, min_value, max_value, unit, description) VALUES
    ('security.brute_force.failures', 5, 2, 1000000, 'failed logins', 'Failed logins for one role, or from one address, within the window that count as brute force'),
    ('security.brute_force.window_seconds', 300, 1, 86400, 'seconds', 'Window in which brute-force failures are counted'),
    ('security.server_log.max_bytes_per_run', 16777216, 65536, 1073741824, 'bytes', 'At most this much of the server log is read per run (the rest next run)');

INSERT INTO guardian.checks (name, category, function, description, is_condition, builtin) VALUES
    ('server_log', 'security', 'guardian._check_server_log', 'Failed logins, brute force, permission-denied errors and strict-mode rejections from the CSV server log', false, true),
    ('role_changes', 'security', 'guardian._check_role_changes', 'New roles, escalations, renames, password changes and membership grants', false, true),
    ('privilege_changes', 'security', 'guardian._check_privilege_changes', 'GRANT/REVOKE on this database''s objects missed by the event trigger', false, true),
    ('rls_disabled_with_policies', 'posture', 'guardian._check_rls_disabled_with_policies', 'Tables with policies but row-level security off', true, true),
    ('security_definer_search_path', 'posture', 'guardian._check_security_definer_search_path', 'SECURITY DEFINER functions without a pinned search_path', true, true),
    ('public_readable_tables', 'posture', 'guardian._check_public_readable_tables', 'Tables and views readable by PUBLIC', true, true),
    ('public_schema_create', 'posture', 'guardian._check_public_schema_create', 'Schemas where PUBLIC may create objects', true, true);

INSERT INTO guardian.jobs (name, schedule, command, description, max_lag, builtin) VALUES
    ('security_events', '* * * * *', 'SELECT guardian.run_checks_job(''security'')',
     'Read the server log (failed logins, brute force, permission denied, strict-mode rejections) and compare roles and privileges with their snapshots',
     '15 minutes', true),
    ('security_posture', '23 * * * *', 'SELECT guardian.run_checks_job(''posture'')',
     'Risky posture: RLS off on tables with policies, SECURITY DEFINER without search_path, PUBLIC-readable tables, PUBLIC-writable schemas',
     '3 hours', true);

-- These look at the whole cluster: one guarded database of it runs them.
UPDATE guardian.checks SET scope = 'cluster'
 WHERE name IN ('server_log', 'role_changes');
