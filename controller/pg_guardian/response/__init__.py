"""Auto-response (``extension/sql/60_response``): what the guardian does about what it found.

:mod:`actions` calls the SQL that cleans up contaminated rows (quarantined first), restores
them, and locks an environment down; :mod:`policy` turns a per-environment TOML policy into
SQL (its template is ``templates/policy/apply.sql.j2``) and applies it.

The actions are the package's face: ``response.cleanup_plan``, ``response.lockdown``, ...
"""

from pg_guardian.response.actions import (
    ResponseError,
    cleanup_plan,
    cleanup_script,
    describe_lockdown,
    lockdown,
    lockdown_roles,
    lockdown_status,
    prune,
    quarantine,
    quarantined_rows,
    restore,
    run_script,
    unlock,
)

__all__ = [
    "ResponseError",
    "cleanup_plan",
    "cleanup_script",
    "describe_lockdown",
    "lockdown",
    "lockdown_roles",
    "lockdown_status",
    "prune",
    "quarantine",
    "quarantined_rows",
    "restore",
    "run_script",
    "unlock",
]
