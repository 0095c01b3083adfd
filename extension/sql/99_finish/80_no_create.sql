-- Before the privilege snapshot (90_security_baseline.sql), so that it is not reported as a
-- change: guardian_owner owns what it needs and may create nothing more. Without CREATE on
-- the schema it cannot CREATE OR REPLACE any function, nor add a view or a type, so no code
-- runs as it but what this script installed (the DDL guard refuses it the rest: ALTER, RULE,
-- TRIGGER, DROP; see 00_core/60_tamper_guard.sql).
REVOKE CREATE ON SCHEMA guardian FROM guardian_owner;
