-- The plain-SQL install's record of what was applied (the extension path uses pg_extension).
CREATE TABLE guardian.migrations (
    version       text PRIMARY KEY,
    kind          text NOT NULL,
    applied_at    timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    applied_by    text NOT NULL DEFAULT CURRENT_USER,
    script_sha256 text NOT NULL,
    CONSTRAINT migrations_kind_chk CHECK (kind IN ('install', 'update'))
);
COMMENT ON TABLE guardian.migrations IS
    'pg_guardian versions applied by the plain-SQL install path (pg-guardian install on managed Postgres).';
