"""Scans started from the contamination page: run on a thread, progress read by the page.

A scan goes batch by batch (each its own short transaction, as ``pg-guardian scan`` does),
so writers never wait; the page polls ``/api/scans/<id>`` for pages done out of pages total.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from pg_guardian.dashboard.envs import Environment

KEEP = 50


@dataclass
class Scan:
    id: str
    environment: str
    table: str
    record: bool
    user: str
    state: str = "running"  # running, done, failed
    pages_done: int = 0
    pages_total: int = 0
    findings: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["percent"] = round(100.0 * self.pages_done / self.pages_total, 1) if self.pages_total else 0.0
        data["findings"] = self.findings[:200]
        data["finding_count"] = len(self.findings)
        return data


class Scans:
    """The scans of this dashboard process, newest last (the last KEEP are remembered)."""

    def __init__(self) -> None:
        self._scans: dict[str, Scan] = {}
        self._lock = threading.Lock()

    def get(self, scan_id: str) -> Scan | None:
        with self._lock:
            return self._scans.get(scan_id)

    def recent(self) -> list[Scan]:
        with self._lock:
            return list(reversed(self._scans.values()))

    def start(self, env: Environment, table: str, *, record: bool, user: str) -> Scan:
        scan = Scan(secrets.token_hex(8), env.name, table, record, user)
        with self._lock:
            self._scans[scan.id] = scan
            while len(self._scans) > KEEP:
                self._scans.pop(next(iter(self._scans)))
        threading.Thread(target=self._run, args=(env, scan), name=f"scan {table}", daemon=True).start()
        return scan

    def _run(self, env: Environment, scan: Scan) -> None:
        from pg_guardian import contamination
        from pg_guardian.errors import GuardianError

        try:
            with env.actor(scan.user) as conn:
                scan.pages_total = sum(b[3] for b in contamination.scan_batches(conn, scan.table))

                def progress(pages: int) -> None:
                    scan.pages_done += pages

                for finding in contamination.scan(conn, scan.table, record=scan.record, progress=progress):
                    scan.findings.append(finding.as_dict())
            scan.state = "done"
        except (GuardianError, Exception) as exc:  # reported on the page, never raised into a thread
            scan.state = "failed"
            scan.error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        finally:
            scan.finished_at = time.time()
