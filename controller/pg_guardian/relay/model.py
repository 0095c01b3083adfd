"""What the relay sends: a message (one alert, or a group of them) and the alerts in it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID


@dataclass(frozen=True)
class AlertView:
    """One alert as a message shows it (``guardian.relay_message_alerts``)."""

    id: UUID
    seq: int
    idempotency_key: str
    severity: str
    type: str
    message: str
    message_length: int
    table_name: str | None
    record_id: str | None
    environment: str | None
    metadata: dict[str, Any]
    fingerprint: str
    occurrences: int
    created_at: datetime
    last_seen_at: datetime
    resolved_at: datetime | None

    @property
    def cleanup_script(self) -> str | None:
        value = self.metadata.get("cleanup_script") if isinstance(self.metadata, dict) else None
        return value if isinstance(value, str) and value else None


@dataclass
class Message:
    """A leased message: its identity, attempt number and (a sample of) its alerts."""

    id: UUID
    channel: str
    idempotency_key: str
    group_key: str | None
    alert_count: int
    attempts: int
    alerts: list[AlertView] = field(default_factory=list)
    total_occurrences: int = 0
    first_at: datetime | None = None
    last_at: datetime | None = None

    @property
    def lead(self) -> AlertView:
        """The alert a message is titled after (the most severe, then the oldest)."""
        return self.alerts[0]

    @property
    def repeat(self) -> bool:
        """A reminder about alerts already notified on this channel."""
        return bool(self.alerts) and all(a.seq > 0 for a in self.alerts)

    @property
    def more(self) -> int:
        """Alerts in the message beyond the sample it shows."""
        return max(self.alert_count - len(self.alerts), 0)
