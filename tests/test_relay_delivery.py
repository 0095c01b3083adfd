"""The relay end to end against a real server, a real HTTP receiver and a real SMTP server."""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from helpers import scalar
from relay_support import Receiver, Reply, SmtpServer, certificate, receiver, relay_config, smtp, start_smtp

from pg_guardian.cli import main
from pg_guardian.cluster import LocalCluster
from pg_guardian.errors import GuardianError
from pg_guardian.relay import Relay, channels, running

__all__ = ["certificate", "receiver", "smtp"]  # fixtures


def email_channel(server: SmtpServer, **extra: Any) -> dict[str, Any]:
    return {"type": "email", "host": server.host, "port": server.port, "security": "plain",
            "to": ["ops@example.com"], "from": "guardian@example.com", "username": "guardian",
            "password": "s3cret", **extra}


def raise_alert(db: psycopg.Connection, severity: str = "CRITICAL", type_: str = "TEST_DATA_CONTAMINATION",
                message: str = "Test email pattern detected in production: a@tenant-a.test",
                table: str | None = "public.users", record: str | None = "1", **kw: Any) -> str:
    return str(scalar(db, "SELECT guardian.raise_alert(%s, %s, %s, %s, %s, %s, %s)",
                      (type_, severity, message, table, record, json.dumps(kw.get("metadata", {})),
                       kw.get("fingerprint"))))


def once(dsn: str, cfg: Any) -> dict[str, int]:
    return Relay(dsn, cfg, once=True).run().as_dict()


def outbox(db: psycopg.Connection) -> list[tuple[Any, ...]]:
    return db.execute("SELECT channel, status, seq FROM guardian.relay_outbox ORDER BY channel, seq").fetchall()


def test_critical_goes_to_slack_and_email_high_to_slack_others_are_logged(
        db: psycopg.Connection, dsn: str, receiver: Receiver, smtp: SmtpServer,
        caplog: pytest.LogCaptureFixture) -> None:
    db.execute("SELECT guardian.set_environment('production')")
    db.execute("DELETE FROM guardian.relay_intake")
    cfg = relay_config({"slack": {"type": "slack", "url": receiver.url("/slack")}, "email": email_channel(smtp)},
                       app_url="https://admin.example.com")
    critical = raise_alert(db, metadata={"cleanup_script": "DELETE FROM public.users WHERE id = 1;"})
    raise_alert(db, "HIGH", "BULK_OPERATION", "82 rows inserted in 3 s", "public.patients", None)
    raise_alert(db, "MEDIUM", "OFF_HOURS_WRITE", "insert at 03:12", "public.patients", None)
    with caplog.at_level("INFO", logger="pg_guardian.relay"):
        summary = once(dsn, cfg)
    assert summary["delivered"] == 3 and summary["failed"] == 0
    posts = receiver.on("/slack")
    assert sorted(p.json["attachments"][0]["title"] for p in posts) == [
        "CRITICAL: TEST_DATA_CONTAMINATION", "HIGH: BULK_OPERATION"]
    crit = next(p for p in posts if p.json["attachments"][0]["title"].startswith("CRITICAL"))
    assert crit.json["attachments"][0]["actions"][0]["url"] == f"https://admin.example.com/admin/cleanup/{critical}"
    assert crit.json["attachments"][0]["fields"][0] == {"title": "Environment", "value": "production", "short": True}
    assert crit.headers["idempotency-key"] == f"{critical}:slack:0"
    (mail,) = smtp.mailbox.wait_for(1)
    assert mail["Subject"] == "🚨 CRITICAL: TEST_DATA_CONTAMINATION"
    assert mail["To"] == "ops@example.com"
    assert "DELETE FROM public.users WHERE id = 1;" in mail.get_body(("plain",)).get_content()
    logged = [r for r in caplog.records if getattr(r, "event", "") == "alert.logged"]
    assert [(r.severity, r.type) for r in logged] == [("MEDIUM", "OFF_HOURS_WRITE")]
    assert outbox(db) == [("email", "delivered", 0), ("slack", "delivered", 0), ("slack", "delivered", 0)]


def test_webhook_posts_json_with_idempotency_key_and_valid_signature(
        db: psycopg.Connection, dsn: str, receiver: Receiver) -> None:
    cfg = relay_config({"webhook": {"type": "webhook", "url": receiver.url(), "secret": "k", "group_by": ["id"],
                                    "headers": {"X-Team": "dba"}}})
    aid = raise_alert(db)
    assert once(dsn, cfg)["delivered"] == 1
    (post,) = receiver.requests
    body = post.json
    assert body["alerts"][0]["id"] == aid and body["alert_count"] == 1
    assert post.headers["idempotency-key"] == f"{aid}:webhook:0" == body["idempotency_key"]
    assert post.headers["x-team"] == "dba"
    assert post.headers["x-guardian-signature"] == channels.signature("k", post.body, post.headers["x-guardian-timestamp"])


def test_listen_notify_delivers_without_waiting_for_the_poll(
        db: psycopg.Connection, dsn: str, receiver: Receiver) -> None:
    cfg = relay_config({"webhook": {"type": "webhook", "url": receiver.url(), "group_by": ["id"]}},
                       relay={"poll_interval": "60s"})
    with running(Relay(dsn, cfg)):
        time.sleep(0.5)  # connected and idle
        for _ in range(3):
            raise_alert(db, message=f"m{time.monotonic()}")
            committed = time.time()
            got = receiver.wait_for(lambda r, n=len(receiver.requests): len(r) > n, timeout=5)
            assert got[-1].at - committed < 1.0


def test_burst_of_ten_thousand_rows_is_a_handful_of_messages(
        db: psycopg.Connection, dsn: str, receiver: Receiver) -> None:
    cfg = relay_config({"slack": {"type": "slack", "url": receiver.url("/slack"), "group_interval": "1s"}})
    db.execute("""INSERT INTO guardian.monitoring_alerts (severity, type, message, table_name, record_id)
                  SELECT 'CRITICAL', 'TEST_DATA_CONTAMINATION', 'test email user' || g || '@tenant-a.test',
                         'public.users', g::text FROM generate_series(1, 10000) AS g""")
    with running(Relay(dsn, cfg)):
        posts = receiver.wait_for(lambda r: sum(_count(p) for p in r) >= 10_000, timeout=30)
    assert len(posts) <= 5
    assert sum(_count(p) for p in posts) == 10_000
    assert scalar(db, "SELECT count(*) FROM guardian.relay_outbox WHERE status = 'delivered'") == 10_000


def _count(post: Any) -> int:
    fields = {f["title"]: f["value"] for f in post.json["attachments"][0]["fields"]}
    return int(fields.get("Alerts", "1").replace(",", ""))


def test_open_alert_is_resent_only_after_the_repeat_interval(
        db: psycopg.Connection, dsn: str, receiver: Receiver) -> None:
    cfg = relay_config({"webhook": {"type": "webhook", "url": receiver.url(), "repeat_interval": "2s",
                                    "group_interval": "0s"}})
    aid = raise_alert(db, fingerprint="disk-full")
    assert once(dsn, cfg)["delivered"] == 1
    for _ in range(5):
        raise_alert(db, fingerprint="disk-full")
    assert once(dsn, cfg)["delivered"] == 0  # repeat is queued, not due yet
    assert scalar(db, "SELECT due_at - now() > '1 second' FROM guardian.relay_outbox WHERE seq = 1")
    db.execute("UPDATE guardian.relay_outbox SET due_at = now() WHERE seq = 1")  # let 2 s pass
    assert once(dsn, cfg)["delivered"] == 1
    repeat = receiver.requests[-1].json
    assert repeat["repeat"] is True and repeat["alerts"][0]["occurrences"] == 6
    assert receiver.requests[-1].json["alerts"][0]["idempotency_key"] == f"{aid}:webhook:1"
    assert once(dsn, cfg)["delivered"] == 0  # nothing new, nothing sent


def test_repeat_of_a_resolved_alert_is_dropped(db: psycopg.Connection, dsn: str, receiver: Receiver) -> None:
    cfg = relay_config({"webhook": {"type": "webhook", "url": receiver.url(), "repeat_interval": "1h"}})
    aid = raise_alert(db, fingerprint="fp")
    once(dsn, cfg)
    raise_alert(db, fingerprint="fp")
    once(dsn, cfg)  # the repeat waits for the repeat interval
    db.execute("SELECT guardian.resolve_alert(%s)", (aid,))
    db.execute("UPDATE guardian.relay_outbox SET due_at = now() WHERE seq = 1")
    assert once(dsn, cfg)["delivered"] == 0
    assert outbox(db) == [("webhook", "delivered", 0), ("webhook", "dropped", 1)]
    assert len(receiver.requests) == 1
