-- Everything below qualifies guardian objects; built-ins resolve from pg_catalog only, so no
-- object in a schema someone else controls can stand in for them while the script runs.
-- (CREATE EXTENSION restores the caller's setting afterwards; the plain-SQL path runs in one
-- transaction, which SET LOCAL does not outlive.)
SET LOCAL search_path = pg_catalog, pg_temp;
