"""The relay's advice by alert type names types the extension really raises."""

from __future__ import annotations

import re
from pathlib import Path

from pg_guardian.relay.render import ACTIONS

SQL = Path(__file__).resolve().parents[1] / "extension" / "sql"
# Returned by check-payload, never stored as an alert row.
NOT_RAISED = {"TEST_DATA_PATTERN"}


def test_every_action_names_an_alert_type_the_extension_raises() -> None:
    text = "\n".join(p.read_text() for p in SQL.rglob("*.sql"))
    raised = set(re.findall(r"'([A-Z][A-Z0-9_]{3,})'", text))
    unknown = sorted(set(ACTIONS) - raised - NOT_RAISED)
    assert not unknown, f"advice for alert types nothing raises: {unknown}"
