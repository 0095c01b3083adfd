"""``anomalies``: what the detector found, and ``anomalies backtest`` for one's own samples."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from pg_guardian import anomaly
from pg_guardian.analytics.report import parse_since
from pg_guardian.cli.options import connection, dsn_option
from pg_guardian.cli.output import exit_finding, table

FORMATS = ("text", "json", "csv")


def _number(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.0f}" if float(value).is_integer() or abs(value) >= 100 else f"{value:.2f}"


def _print(rows: list[dict[str, Any]], fmt: str, columns: list[str]) -> None:
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, default=str))
    elif fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        click.echo(out.getvalue(), nl=False)
    else:
        shown = [
            {**r, **{k: _number(r[k]) for k in ("value", "expected", "lower_bound", "upper_bound", "score") if k in r}}
            for r in rows
        ]
        table(shown, columns)


@click.group("anomalies", invoke_without_command=True)
@dsn_option
@click.option("--metric", help="Only this metric, e.g. writes.update.")
@click.option("--subject", help="Only this subject, e.g. dental.patients.")
@click.option("--since", default="1d", show_default=True, help="How far back, e.g. 12h, 7d, 2w.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True)
@click.pass_context
def anomalies_command(
    ctx: click.Context, dsn: str | None, metric: str | None, subject: str | None, since: str, fmt: str
) -> None:
    """The anomalies found since --since, newest first, each in a sentence.

    Exit 0 when there are none, 1 when there are, 2 on an error.
    """
    if ctx.invoked_subcommand is not None:
        return
    start = datetime.now(UTC) - parse_since(since)
    with connection(dsn, "anomalies") as conn:
        rows = anomaly.list_anomalies(conn, start, metric, subject)
    if fmt == "text" and not rows:
        click.echo(f"no anomalies since {start:%Y-%m-%d %H:%M} UTC")
    elif fmt == "text":
        for r in rows:
            click.echo(f"{r['sampled_at']:%Y-%m-%d %H:%M %Z}  {r['alert_type']:<16}  {r['sentence']}")
    else:
        columns = [
            "sampled_at",
            "metric",
            "subject",
            "value",
            "expected",
            "lower_bound",
            "upper_bound",
            "score",
            "rule",
            "baseline",
            "alert_type",
            "sentence",
        ]
        _print(rows, fmt, columns)
    exit_finding(rows)


@anomalies_command.command("backtest")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
@dsn_option
@click.option(
    "--kind",
    type=click.Choice(["count", "gauge"]),
    help="Counts per sample or a level (default: decided from the data).",
)
@click.option(
    "--time-zone", default="UTC", show_default=True, help="Seasons (hours, weekdays) are counted in this zone."
)
@click.option(
    "--sensitivity",
    type=click.FloatRange(0.25, 4),
    default=1.0,
    show_default=True,
    help="Thresholds are divided by it: 2 flags smaller departures, 0.5 only larger ones.",
)
@click.option("--all", "show_all", is_flag=True, help="Print every sample's verdict, not only the anomalies.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True)
def backtest_command(
    path: Path, dsn: str | None, kind: str | None, time_zone: str, sensitivity: float, show_all: bool, fmt: str
) -> None:
    """Score PATH (CSV: time,value[,label]) with the database's detector; nothing is stored.

    Each verdict uses only the samples before it, as the live job would. With a label column
    (1 inside an anomaly), precision and recall are printed, event by event. Exit 1 when an
    anomaly was found, 0 when none, 2 on an error.
    """
    samples = anomaly.read_csv(path)
    with connection(dsn, "anomalies backtest") as conn:
        verdicts = anomaly.backtest(conn, samples, kind, time_zone, sensitivity)
    flagged = [v for v in verdicts if v["is_anomaly"]]
    columns = ["sampled_at", "value", "expected", "lower_bound", "upper_bound", "score", "is_anomaly", "rule", "note"]
    _print(verdicts if show_all else flagged, fmt, columns)
    judged = sum(v["is_anomaly"] is not None for v in verdicts)
    if fmt == "text":
        first = next((v["sampled_at"] for v in verdicts if v["is_anomaly"] is not None), None)
        click.echo(
            f"{len(verdicts)} samples, {judged} judged"
            + (f" (from {first:%Y-%m-%d %H:%M %Z})" if first else " (too little history: a day and 24 samples)")
            + f", {len(flagged)} anomalous"
        )
        if all(s.label is not None for s in samples):
            by_time = {s.at: s.label for s in samples}
            score = anomaly.score_events(verdicts, [bool(by_time[v["sampled_at"]]) for v in verdicts])
            click.echo(
                f"labelled events: {score.events}, detected {score.detected}, false alarms {score.false_alarms}; "
                f"precision {score.precision:.2f}, recall {score.recall:.2f}"
            )
    exit_finding(flagged)


COMMANDS = (anomalies_command,)
