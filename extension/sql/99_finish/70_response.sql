-- Rights for auto-response: cleanup scripts, quarantine and restore, auto-cleanup, lockdown,
-- policies.
--
-- Cleanups and restores read and change application rows with the rights of whoever runs
-- them, never the guardian's. The auto-response runs inside the committing session, whatever
-- its role, so the helpers it needs are executable by PUBLIC: the SECURITY INVOKER ones only
-- do what the caller could do anyway, and every SECURITY DEFINER one checks
-- guardian._response_caller() (an admin, or the guardian's own auto-response of this very
-- transaction) before it touches guardian state.
GRANT EXECUTE ON FUNCTION
    guardian._table_root(regclass), guardian._regclass_of(text), guardian._jsonb_texts(jsonb),
    guardian._attnames(regclass, int2[]), guardian._cleanup_edges(regclass[], boolean), guardian._cleanup_steps(regclass[], boolean),
    guardian._key_expr(regclass, text), guardian._column_list(text, text[]), guardian._cleanup_roots(jsonb),
    guardian._cleanup_collect(jsonb, boolean, boolean), guardian._comment(text),
    guardian._cleanup_counts(jsonb, guardian.cleanup_row[], boolean), guardian._cleanup_group_sql(uuid, jsonb, integer),
    guardian._cleanup_step_list(jsonb, jsonb, boolean),
    guardian._render_cleanup_script(uuid, guardian.monitoring_alerts, jsonb, jsonb, boolean),
    guardian._cleanup_prepare(jsonb, uuid, boolean, boolean), guardian._table_shape(regclass), guardian._json_columns(regclass),
    guardian._row_json_expr(regclass, text), guardian.cleanup_begin(uuid, jsonb, jsonb),
    guardian._auto_cleanup(jsonb, uuid, numeric), guardian._record_key(regclass),
    -- SECURITY DEFINER, gated by guardian._response_caller():
    guardian._response_caller(), guardian._register_cleanup_script(uuid, uuid, jsonb, jsonb, boolean, boolean),
    guardian._cleanup_registered(uuid), guardian._quarantine_open(uuid),
    guardian._quarantine_put(uuid, guardian.quarantine_item[]), guardian.cleanup_targets(uuid, integer),
    guardian.cleanup_step(uuid, integer, bigint), guardian.cleanup_finish(uuid),
    guardian._auto_alert_roots(uuid), guardian._auto_response_report(text, uuid, text, jsonb),
    -- SECURITY DEFINER, acting only on this backend's own transaction or on the guardian's
    -- own thresholds:
    guardian._auto_response_begin(), guardian._auto_response_end(), guardian._auto_lockdown_check()
    TO PUBLIC;

GRANT SELECT ON guardian.cleanup_scripts, guardian.quarantine_batches, guardian.quarantine_status,
    guardian.lockdowns, guardian.lockdown_changes, guardian.lockdown_status, guardian.policies,
    guardian.response_settings
    TO guardian_reader;
GRANT EXECUTE ON FUNCTION guardian._alert_roots(uuid), guardian._table_roots(regclass, text[]),
    guardian._plan_of(jsonb, boolean), guardian.cleanup_plan(uuid, boolean),
    guardian.cleanup_plan(regclass, text[], boolean),
    guardian.lockdown_roles(), guardian._lockdown_protected(oid), guardian._response_flag(text, boolean),
    guardian.policy_problems(text[], text[], text[], jsonb, text[], text[])
    TO guardian_reader;

-- The relay routes by the policy of the environment when it sets routes.
GRANT EXECUTE ON FUNCTION guardian.policy_routes() TO guardian_relay, guardian_reader;

-- Whole quarantined rows are application data: admins only.
GRANT SELECT ON guardian.quarantine, guardian.quarantined_rows TO guardian_admin;
GRANT EXECUTE ON FUNCTION guardian.cleanup_script(uuid, boolean), guardian.cleanup_script(regclass, text[], boolean),
    guardian.restore(uuid, boolean), guardian._quarantine_claim(uuid), guardian._quarantine_restored(uuid, text),
    guardian._restore_value(regclass, text, jsonb), guardian._shape_difference(jsonb, jsonb),
    guardian.prune_quarantine(), guardian.lockdown(text), guardian.unlock(text),
    guardian.set_response_setting(text, jsonb, text), guardian.set_auto_cleanup(boolean, text),
    guardian.set_auto_lockdown(boolean, integer, text),
    guardian.policy_begin(text, boolean, text[], text[], text[], jsonb, text[], text[]),
    guardian.policy_finish(text, text, text, boolean)
    TO guardian_admin;

-- The three lockdown helpers stay with the installing superuser (see 60_response/70_lockdown.sql);
-- only the guardian's own lockdown()/unlock() call them.
REVOKE ALL ON FUNCTION guardian._lockdown_privilege(boolean, regclass, oid, text[], text, boolean),
    guardian._lockdown_read_only(oid, text), guardian._lockdown_end_sessions(oid[])
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION guardian._lockdown_privilege(boolean, regclass, oid, text[], text, boolean),
    guardian._lockdown_read_only(oid, text), guardian._lockdown_end_sessions(oid[])
    TO guardian_owner;
