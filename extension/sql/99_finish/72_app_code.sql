-- Rights for the helpers that name the application's code a tool would run
-- (60_response/15_app_code.sql) and for the restore that asks to run it anyway.
--
-- The exposure helpers are SECURITY INVOKER and read only the catalog, which every role may
-- read already: they show nothing new. They are called by the scan (guardian_reader), by
-- restores and cleanup scripts (admins) and by the auto-response, which runs inside the
-- committing session whatever its role, so PUBLIC may execute them. Refusing is the caller's
-- own safety (it only ever refuses a superuser), so no one gains anything by calling them.
GRANT EXECUTE ON FUNCTION guardian._app_function(oid), guardian._app_code_exposure(regclass[]),
    guardian._refuse_app_code(regclass[], text, text, text[])
    TO PUBLIC;

-- The scan and the cleanup steps build a row's JSON with it: readers scan, and the
-- auto-response's cleanup runs in the committing session (it returns SQL text, nothing else).
GRANT EXECUTE ON FUNCTION guardian._scan_row_json(regclass, text), guardian._json_safe_type(oid) TO guardian_reader, PUBLIC;

-- A restore that runs the application's code as asked is a restore: admins only, as the
-- two-argument form (99_finish/70_response.sql).
GRANT EXECUTE ON FUNCTION guardian.restore(uuid, boolean, boolean) TO guardian_admin;
