"""Anomaly detection, as the controller sees it: the anomalies a database found
(``guardian.anomalies``) and backtests of one's own samples with the same detector
(``guardian.backtest_anomalies``, which keeps nothing).

The detector lives in the extension (``extension/python/anomaly_detector.py``, run by
PL/Python); this package only reads, parses CSV files and scores verdicts against labels.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pg_guardian.errors import GuardianError

__all__ = ["Sample", "Score", "backtest", "list_anomalies", "read_csv", "score_events"]

LABEL_TRUE = {"1", "true", "t", "yes", "y", "anomaly"}
LABEL_FALSE = {"", "0", "false", "f", "no", "n", "normal"}


@dataclass(frozen=True)
class Sample:
    """One row of a backtest file: when, the value, and (optionally) whether it is labelled anomalous."""

    at: datetime
    value: float
    label: bool | None = None


@dataclass(frozen=True)
class Score:
    """Event-level precision and recall of verdicts against labelled anomaly windows."""

    events: int
    detected: int
    false_alarms: int

    @property
    def precision(self) -> float:
        flagged = self.detected + self.false_alarms
        return self.detected / flagged if flagged else 1.0

    @property
    def recall(self) -> float:
        return self.detected / self.events if self.events else float("nan")


def list_anomalies(
    conn: psycopg.Connection, since: datetime, metric: str | None, subject: str | None
) -> list[dict[str, Any]]:
    """The anomalies found since ``since``, newest first (series are brought up to date first)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM guardian.anomalies(%s, %s, %s)", (since, metric, subject))
        return cur.fetchall()


def _moment(text: str, where: str) -> datetime:
    raw = text.strip()
    try:
        if raw.replace(".", "", 1).isdigit():
            return datetime.fromtimestamp(float(raw), UTC)
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise GuardianError(
            f"{where}: time {text!r} is neither an ISO time (2026-03-01T10:00:00+00:00) nor epoch seconds"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def read_csv(path: Path) -> list[Sample]:
    """Samples from a CSV file: ``time,value[,label]`` with or without a header line.

    Times are ISO 8601 (UTC when no offset is given) or epoch seconds; values must be finite
    numbers; a label is 1/0, true/false or yes/no (1 = inside an anomaly).
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise GuardianError(f"cannot read {path}: {exc.strerror}") from None
    rows = [r for r in csv.reader(text.splitlines()) if r and any(c.strip() for c in r)]
    if rows and not _looks_numeric(rows[0][1] if len(rows[0]) > 1 else ""):
        rows = rows[1:]  # a header
    samples = []
    for n, row in enumerate(rows, start=1):
        where = f"{path.name} data row {n}"
        if len(row) < 2:
            raise GuardianError(f"{where}: expected time,value[,label], got {','.join(row)!r}")
        try:
            value = float(row[1])
        except ValueError:
            raise GuardianError(f"{where}: value {row[1]!r} is not a number") from None
        if not math.isfinite(value):
            raise GuardianError(f"{where}: value {row[1]!r} is not finite; leave a missing sample out")
        label = None
        if len(row) > 2:
            flag = row[2].strip().lower()
            if flag not in LABEL_TRUE | LABEL_FALSE:
                raise GuardianError(f"{where}: label {row[2]!r} is not 1/0, true/false or yes/no")
            label = flag in LABEL_TRUE
        samples.append(Sample(_moment(row[0], where), value, label))
    if not samples:
        raise GuardianError(f"{path} has no samples: expected lines of time,value[,label]")
    return samples


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def backtest(
    conn: psycopg.Connection, samples: list[Sample], kind: str | None, time_zone: str, sensitivity: float
) -> list[dict[str, Any]]:
    """Every sample's verdict from the database's detector; nothing is stored."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT * FROM guardian.backtest_anomalies(%s::timestamptz[], %s::double precision[], %s, %s, %s)",
            ([s.at for s in samples], [s.value for s in samples], kind, time_zone, sensitivity),
        )
        return cur.fetchall()


def score_events(verdicts: list[dict[str, Any]], labels: list[bool]) -> Score:
    """Event-level scoring, as ``bench/anomalies`` does: a labelled event is a run of labelled
    samples and counts once if any of its samples is flagged; every run of flagged samples
    outside the labels is one false alarm."""
    events = detected = false_alarms = 0
    in_event = hit = False
    outside_run = False
    for verdict, label in zip(verdicts, labels, strict=True):
        flagged = bool(verdict["is_anomaly"])
        if label:
            if not in_event:
                events += 1
                in_event, hit = True, False
            if flagged and not hit:
                detected += 1
                hit = True
            outside_run = False
        else:
            in_event = False
            if flagged and not outside_run:
                false_alarms += 1
            outside_run = flagged
    return Score(events, detected, false_alarms)
