"""Schema drift between environments (``extension/sql/40_drift``).

:mod:`catalog` reads a schema fingerprint from any database's catalogs (``10_fingerprint.sql``)
or from a file; :mod:`normalize` tells formatting from meaning (``20_normalize.sql``);
:mod:`compare` lists what differs (``30_compare.sql``); :mod:`migration` writes the SQL that
would bring a target in line with its source (``pg-guardian drift --sql``).

The comparison is the package's face: ``drift.fetch_all``, ``drift.diff``, ``drift.render_text``.
"""

from pg_guardian.drift.compare import (
    Difference,
    EnvironmentDifference,
    counted,
    diff,
    diff_many,
    fetch,
    fetch_all,
    render_many_text,
    render_text,
)

__all__ = [
    "Difference",
    "EnvironmentDifference",
    "counted",
    "diff",
    "diff_many",
    "fetch",
    "fetch_all",
    "render_many_text",
    "render_text",
]
