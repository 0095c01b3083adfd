"""What messages say: the design's Slack format, email templates, webhook JSON, bad input."""

from __future__ import annotations

import hmac
import json
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from pg_guardian.relay import channels, render
from pg_guardian.relay.model import AlertView, Message

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def alert(
    severity: str = "CRITICAL",
    type_: str = "TEST_DATA_CONTAMINATION",
    message: str = "Test email pattern detected in production: a@tenant-a.test",
    seq: int = 0,
    **metadata: object,
) -> AlertView:
    aid = uuid4()
    return AlertView(
        id=aid,
        seq=seq,
        idempotency_key=f"{aid}:slack:{seq}",
        severity=severity,
        type=type_,
        message=message,
        message_length=len(message),
        table_name="public.users",
        record_id="42",
        environment="production",
        metadata=dict(metadata),
        fingerprint="f",
        occurrences=1,
        created_at=T0,
        last_seen_at=T0,
        resolved_at=None,
    )


def message(*alerts: AlertView, count: int | None = None) -> Message:
    count = count or len(alerts)
    return Message(
        id=uuid4(),
        channel="slack",
        idempotency_key=alerts[0].idempotency_key,
        group_key=None,
        alert_count=count,
        attempts=1,
        alerts=list(alerts),
        total_occurrences=count,
        first_at=T0,
        last_at=T0,
    )


def test_slack_payload_follows_the_design() -> None:
    a = alert()
    payload = render.slack_payload(message(a), app_url="https://admin.example.com", channel="#database-alerts")
    assert payload["username"] == "Database Guardian"
    assert payload["icon_emoji"] == ":warning:"
    assert payload["channel"] == "#database-alerts"
    (att,) = payload["attachments"]
    assert att["color"] == render.SEVERITY_COLORS["CRITICAL"]
    assert att["title"] == "CRITICAL: TEST_DATA_CONTAMINATION"
    assert att["text"] == "Test email pattern detected in production: a@tenant-a.test"
    assert [(f["title"], f["value"], f["short"]) for f in att["fields"]] == [
        ("Environment", "production", True),
        ("Table", "public.users", True),
        ("Time", "2025-03-01 12:00:00 UTC", True),
    ]
    assert att["actions"] == [
        {
            "type": "button",
            "text": "View Cleanup Script",
            "url": f"https://admin.example.com/admin/cleanup/{a.id}",
        }
    ]


def test_slack_has_no_cleanup_button_without_app_url() -> None:
    payload = render.slack_payload(message(alert(severity="HIGH")), app_url=None)
    assert "actions" not in payload["attachments"][0]
    assert payload["attachments"][0]["color"] == render.SEVERITY_COLORS["HIGH"]


def test_grouped_message_has_the_count_and_a_sample() -> None:
    alerts = [alert(message=f"row {i}") for i in range(3)]
    payload = render.slack_payload(message(*alerts, count=10_000), app_url=None)
    att = payload["attachments"][0]
    assert att["title"] == "CRITICAL: TEST_DATA_CONTAMINATION (10,000 alerts)"
    assert "10,000 alerts in this group" in att["text"]
    assert "… and 9,997 more." in att["text"]
    assert {"title": "Alerts", "value": "10,000", "short": True} in att["fields"]


def test_huge_message_with_control_characters_is_cut_and_made_visible() -> None:
    text = "\x1b[31mred\x07 <b>&" + "x" * 1_048_576
    a = alert(message=text[:16384])
    a = AlertView(**{**a.__dict__, "message_length": len(text)})
    att = render.slack_payload(message(a), app_url=None)["attachments"][0]
    assert att["text"].startswith("\\x1b[31mred\\x07 &lt;b&gt;&amp;")
    assert len(att["text"]) < 3200
    assert "characters in all]" in att["text"]
    body = json.loads(render.webhook_body(message(a), app_url=None))
    assert body["alerts"][0]["message_truncated"] is True
    assert body["alerts"][0]["message_length"] == len(text)


def test_email_has_the_design_subject_and_both_parts() -> None:
    a = alert(cleanup_script="DELETE FROM public.users WHERE id = 42;")
    env = render.environment(None)
    email = render.email_message(
        message(a),
        env=env,
        sender="g@example.com",
        to=("ops@example.com",),
        app_url="https://admin.example.com",
    )
    assert email["Subject"] == "🚨 CRITICAL: TEST_DATA_CONTAMINATION"
    assert email["Message-ID"] == f"<{a.idempotency_key.replace(':', '.')}@pg-guardian>"
    text = email.get_body(("plain",)).get_content()
    html = email.get_body(("html",)).get_content()
    for part in (text, html):
        assert "CRITICAL" in part
        assert "a@tenant-a.test" in part
        assert "Find how it got in" in part  # action required
        assert "DELETE FROM public.users WHERE id = 42;" in part
        assert f"https://admin.example.com/admin/cleanup/{a.id}" in part


def test_email_html_escapes_the_alert_message() -> None:
    env = render.environment(None)
    email = render.email_message(
        message(alert(message="<script>alert(1)</script>")),
        env=env,
        sender="g@example.com",
        to=("ops@example.com",),
        app_url=None,
    )
    html = email.get_body(("html",)).get_content()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "N/A" in html  # no cleanup script


def test_user_template_overrides_the_packaged_one(tmp_path: Path) -> None:
    (tmp_path / "email").mkdir()
    (tmp_path / "email" / "subject.txt.j2").write_text("[db] {{ severity }} {{ type }}\n")
    email = render.email_message(
        message(alert()),
        env=render.environment(tmp_path),
        sender="g@example.com",
        to=("ops@example.com",),
        app_url=None,
    )
    assert email["Subject"] == "[db] CRITICAL TEST_DATA_CONTAMINATION"


def test_template_error_at_render_names_the_template(tmp_path: Path) -> None:
    (tmp_path / "email").mkdir()
    (tmp_path / "email" / "alert.txt.j2").write_text("line one\n{{ alert.metadata.ticket.upper() }}\n")
    with pytest.raises(render.RenderError, match=r"template email/alert.txt.j2 line 2: UndefinedError: .*ticket"):
        render.email_message(
            message(alert()),
            env=render.environment(tmp_path),
            sender="g@example.com",
            to=("ops@example.com",),
            app_url=None,
        )


def test_webhook_signature_is_hmac_sha256_of_timestamp_and_body() -> None:
    body = b'{"a":1}'
    sig = channels.signature("k", body, "1700000000")
    expected = hmac.new(b"k", b"1700000000." + body, "sha256").hexdigest()
    assert sig == f"sha256={expected}"


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert channels.retry_after("7") == 7.0
    assert channels.retry_after(None) is None
    assert channels.retry_after("soon") is None
    when = datetime(2030, 1, 1, tzinfo=UTC)
    assert channels.retry_after(format_datetime(when, usegmt=True), now=when.timestamp() - 30) == pytest.approx(30)


def test_repeat_is_marked_still_open() -> None:
    a = alert(seq=1)
    a = AlertView(**{**a.__dict__, "occurrences": 12})
    att = render.slack_payload(message(a), app_url=None)["attachments"][0]
    assert att["title"].endswith("(still open)")
    assert "seen 12 times" in att["text"]
    assert UUID(str(a.id))
