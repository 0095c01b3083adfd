"""The weekly digest: one REPORT_DIGEST alert carrying the report, sent by the relay as the HTML
report by email (a real SMTP server) and a short summary to Slack (a local receiver)."""

from __future__ import annotations

import psycopg
from pg_guardian.relay import Relay
from support.history import fill_history
from support.queries import scalar
from support.relay import Receiver, SmtpServer, receiver, relay_config, smtp

__all__ = ["receiver", "smtp"]  # fixtures

DIGEST_TO = "2026-03-05 00:00+00"


def test_the_job_is_off_until_enabled_and_covers_the_last_week(db: psycopg.Connection) -> None:
    row = db.execute("SELECT enabled, schedule FROM guardian.jobs WHERE name = 'report_digest'").fetchone()
    assert row == (False, "0 8 * * 1")
    fill_history(db)
    first = scalar(db, "SELECT guardian.report_digest(%s)", (DIGEST_TO,))
    assert first.endswith(": 8 alert(s), 5 missed metric(s)")
    alert = db.execute(
        """SELECT severity, message, metadata -> 'report' -> 'period' ->> 'from', metadata -> 'missed'
             FROM guardian.monitoring_alerts WHERE type = 'REPORT_DIGEST'"""
    ).fetchone()
    assert alert is not None
    severity, message, start, missed = alert
    assert severity == "MEDIUM" and start.startswith("2026-02-26T00:00:00")
    assert message.startswith("production report, 2026-02-26 to 2026-03-05: 8 alert(s) (0 before); missed: ")
    assert "False-positive rate" in missed
    # The next digest closes this one.
    scalar(db, "SELECT guardian.report_digest(%s)", ("2026-03-12 00:00+00",))
    states = db.execute(
        "SELECT resolved_at IS NOT NULL, outcome FROM guardian.monitoring_alerts WHERE type = 'REPORT_DIGEST' "
        "ORDER BY created_at"
    ).fetchall()
    assert states == [(True, "expected"), (False, None)]


def test_the_relay_mails_the_html_report_and_posts_a_summary_to_slack(
    db: psycopg.Connection, dsn: str, receiver: Receiver, smtp: SmtpServer
) -> None:
    fill_history(db)
    db.execute("DELETE FROM guardian.relay_intake")
    db.execute("SELECT guardian.report_digest(%s)", (DIGEST_TO,))
    cfg = relay_config(
        {
            "slack": {"type": "slack", "url": receiver.url("/slack")},
            "email": {
                "type": "email",
                "host": smtp.host,
                "port": smtp.port,
                "security": "plain",
                "to": ["lead@example.com"],
                "from": "guardian@example.com",
                "username": "guardian",
                "password": "s3cret",
            },
        },
        routes=[{"type": ["REPORT_DIGEST"], "channels": ["email", "slack"]}],
        app_url="https://guardian.example.com",
    )
    summary = Relay(dsn, cfg, once=True).run().as_dict()
    assert summary["delivered"] == 2 and summary["failed"] == 0
    (mail,) = smtp.mailbox.wait_for(1)
    assert mail["Subject"].startswith("pg_guardian report for production, 2026-02-26 to 2026-03-05: 8 alerts,")
    assert mail["Subject"].endswith("5 success metric(s) missed")
    html_part = mail.get_body(preferencelist=("html",))
    text_part = mail.get_body(preferencelist=("plain",))
    assert html_part is not None and text_part is not None
    html = html_part.get_content()
    assert html.startswith("<!doctype html>") and 'id="scorecard"' in html and 'data-series="CRITICAL"' in html
    assert "<script" not in html
    assert text_part.get_content().startswith("pg_guardian report 2026-02-26 00:00 to 2026-03-05 00:00 UTC")

    (post,) = receiver.on("/slack")
    attachment = post.json["attachments"][0]
    assert attachment["title"] == mail["Subject"]
    assert ":x: False-positive rate: MISSED" in attachment["text"]
    assert attachment["actions"][0]["url"] == "https://guardian.example.com/analytics"
