"""The relay end to end against a real server, a real HTTP receiver and a real SMTP server."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from pg_guardian.cli import main
from pg_guardian.cluster import LocalCluster
from pg_guardian.errors import GuardianError
from pg_guardian.relay import Relay, channels, running
from support.queries import scalar
from support.relay import (
    Receiver,
    Reply,
    SmtpServer,
    certificate,
    receiver,
    relay_config,
    smtp,
    start_smtp,
)

__all__ = ["certificate", "receiver", "smtp"]  # fixtures


def email_channel(server: SmtpServer, **extra: Any) -> dict[str, Any]:
    return {
        "type": "email",
        "host": server.host,
        "port": server.port,
        "security": "plain",
        "to": ["ops@example.com"],
        "from": "guardian@example.com",
        "username": "guardian",
        "password": "s3cret",
        **extra,
    }


def raise_alert(
    db: psycopg.Connection,
    severity: str = "CRITICAL",
    type_: str = "TEST_DATA_CONTAMINATION",
    message: str = "Test email pattern detected in production: a@tenant-a.test",
    table: str | None = "public.users",
    record: str | None = "1",
    **kw: Any,
) -> str:
    return str(
        scalar(
            db,
            "SELECT guardian.raise_alert(%s, %s, %s, %s, %s, %s, %s)",
            (
                type_,
                severity,
                message,
                table,
                record,
                json.dumps(kw.get("metadata", {})),
                kw.get("fingerprint"),
            ),
        )
    )


def once(dsn: str, cfg: Any) -> dict[str, int]:
    return Relay(dsn, cfg, once=True).run().as_dict()


def outbox(db: psycopg.Connection) -> list[tuple[Any, ...]]:
    return db.execute("SELECT channel, status, seq FROM guardian.relay_outbox ORDER BY channel, seq").fetchall()


def test_critical_goes_to_slack_and_email_high_to_slack_others_are_logged(
    db: psycopg.Connection,
    dsn: str,
    receiver: Receiver,
    smtp: SmtpServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    db.execute("SELECT guardian.set_environment('production')")
    db.execute("DELETE FROM guardian.relay_intake")
    cfg = relay_config(
        {"slack": {"type": "slack", "url": receiver.url("/slack")}, "email": email_channel(smtp)},
        app_url="https://admin.example.com",
    )
    critical = raise_alert(db, metadata={"cleanup_script": "DELETE FROM public.users WHERE id = 1;"})
    raise_alert(db, "HIGH", "BULK_OPERATION", "82 rows inserted in 3 s", "public.patients", None)
    raise_alert(db, "MEDIUM", "OFF_HOURS_WRITE", "insert at 03:12", "public.patients", None)
    with caplog.at_level("INFO", logger="pg_guardian.relay"):
        summary = once(dsn, cfg)
    assert summary["delivered"] == 3 and summary["failed"] == 0
    posts = receiver.on("/slack")
    assert sorted(p.json["attachments"][0]["title"] for p in posts) == [
        "CRITICAL: TEST_DATA_CONTAMINATION",
        "HIGH: BULK_OPERATION",
    ]
    crit = next(p for p in posts if p.json["attachments"][0]["title"].startswith("CRITICAL"))
    assert crit.json["attachments"][0]["actions"][0]["url"] == f"https://admin.example.com/admin/cleanup/{critical}"
    assert crit.json["attachments"][0]["fields"][0] == {
        "title": "Environment",
        "value": "production",
        "short": True,
    }
    assert crit.headers["idempotency-key"] == f"{critical}:slack:0"
    (mail,) = smtp.mailbox.wait_for(1)
    assert mail["Subject"] == "🚨 CRITICAL: TEST_DATA_CONTAMINATION"
    assert mail["To"] == "ops@example.com"
    assert "DELETE FROM public.users WHERE id = 1;" in mail.get_body(("plain",)).get_content()
    logged = [r for r in caplog.records if getattr(r, "event", "") == "alert.logged"]
    assert [(r.severity, r.type) for r in logged] == [("MEDIUM", "OFF_HOURS_WRITE")]
    assert outbox(db) == [
        ("email", "delivered", 0),
        ("slack", "delivered", 0),
        ("slack", "delivered", 0),
    ]


def test_webhook_posts_json_with_idempotency_key_and_valid_signature(
    db: psycopg.Connection, dsn: str, receiver: Receiver
) -> None:
    cfg = relay_config(
        {
            "webhook": {
                "type": "webhook",
                "url": receiver.url(),
                "secret": "k",
                "group_by": ["id"],
                "headers": {"X-Team": "dba"},
            }
        }
    )
    aid = raise_alert(db)
    assert once(dsn, cfg)["delivered"] == 1
    (post,) = receiver.requests
    body = post.json
    assert body["alerts"][0]["id"] == aid and body["alert_count"] == 1
    assert post.headers["idempotency-key"] == f"{aid}:webhook:0" == body["idempotency_key"]
    assert post.headers["x-team"] == "dba"
    assert post.headers["x-guardian-signature"] == channels.signature(
        "k", post.body, post.headers["x-guardian-timestamp"]
    )


def test_listen_notify_delivers_without_waiting_for_the_poll(
    db: psycopg.Connection, dsn: str, receiver: Receiver
) -> None:
    cfg = relay_config(
        {"webhook": {"type": "webhook", "url": receiver.url(), "group_by": ["id"]}},
        relay={"poll_interval": "60s"},
    )
    with running(Relay(dsn, cfg)):
        time.sleep(0.5)  # connected and idle
        for _ in range(3):
            raise_alert(db, message=f"m{time.monotonic()}")
            committed = time.time()
            seen = len(receiver.requests)
            got = receiver.wait_for(lambda r, n=seen: len(r) > n, timeout=5)
            assert got[-1].at - committed < 1.0


def test_burst_of_ten_thousand_rows_is_a_handful_of_messages(
    db: psycopg.Connection, dsn: str, receiver: Receiver
) -> None:
    cfg = relay_config({"slack": {"type": "slack", "url": receiver.url("/slack"), "group_interval": "1s"}})
    db.execute("""INSERT INTO guardian.monitoring_alerts
                      (severity, type, message, table_name, record_id)
                  SELECT 'CRITICAL', 'TEST_DATA_CONTAMINATION',
                         'test email user' || g || '@tenant-a.test',
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
    db: psycopg.Connection, dsn: str, receiver: Receiver
) -> None:
    cfg = relay_config(
        {
            "webhook": {
                "type": "webhook",
                "url": receiver.url(),
                "repeat_interval": "2s",
                "group_interval": "0s",
            }
        }
    )
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


def test_silence_holds_notices_back_and_releases_them_when_it_ends(
    db: psycopg.Connection, dsn: str, receiver: Receiver
) -> None:
    cfg = relay_config({"webhook": {"type": "webhook", "url": receiver.url(), "group_by": ["id"]}})
    sid = scalar(
        db,
        "SELECT guardian.create_silence("
        "ARRAY['type=TEST_DATA_CONTAMINATION', 'table_name=~public\\..*'],"
        " '1 hour', 'cleanup in progress')",
    )
    held = raise_alert(db)
    other = raise_alert(db, type_="BULK_OPERATION", message="bulk")
    assert once(dsn, cfg)["delivered"] == 1
    assert [r.json["alerts"][0]["id"] for r in receiver.requests] == [other]
    assert scalar(db, "SELECT held_notices FROM guardian.active_silences WHERE id = %s", (sid,)) == 1
    status = CliRunner().invoke(main, ["relay", "status", "--dsn", dsn, "--format", "json"])
    assert json.loads(status.output)["channels"][0]["silenced"] == 1
    db.execute("SELECT guardian.expire_silence(%s)", (sid,))
    assert once(dsn, cfg)["delivered"] == 1
    assert receiver.requests[-1].json["alerts"][0]["id"] == held


def test_alert_resolved_while_silenced_is_not_sent(db: psycopg.Connection, dsn: str, receiver: Receiver) -> None:
    cfg = relay_config({"webhook": {"type": "webhook", "url": receiver.url()}})
    sid = scalar(db, "SELECT guardian.create_silence(ARRAY['severity=CRITICAL'], '1 hour', 'maintenance')")
    aid = raise_alert(db)
    once(dsn, cfg)
    db.execute("SELECT guardian.resolve_alert(%s)", (aid,))
    db.execute("SELECT guardian.expire_silence(%s)", (sid,))
    assert once(dsn, cfg)["delivered"] == 0
    assert scalar(db, "SELECT note FROM guardian.relay_outbox") == "alert resolved while silenced"
    assert receiver.requests == []


def test_silence_cli_adds_lists_and_expires(db: psycopg.Connection, dsn: str) -> None:
    runner = CliRunner()
    added = runner.invoke(
        main,
        [
            "silence",
            "add",
            "--dsn",
            dsn,
            "-m",
            "type=TEST_DATA_CONTAMINATION",
            "-m",
            "environment!=production",
            "--for",
            "2h",
            "--comment",
            "load test",
        ],
    )
    assert added.exit_code == 0, added.output
    sid = added.output.split()[1]
    listed = runner.invoke(main, ["silence", "list", "--dsn", dsn])
    assert "type=TEST_DATA_CONTAMINATION, environment!=production" in listed.output and "load test" in listed.output
    bad = runner.invoke(main, ["silence", "add", "--dsn", dsn, "-m", "colour=red", "--for", "1h", "--comment", "x"])
    assert bad.exit_code == 2
    assert bad.output.startswith("error: unknown silence matcher field 'colour' (Match on severity, type")
    expired = runner.invoke(main, ["silence", "expire", "--dsn", dsn, sid[:8]])
    assert expired.exit_code == 0, expired.output
    assert runner.invoke(main, ["silence", "list", "--dsn", dsn]).output.strip() == "no active silences"


def test_failed_sends_are_retried_with_backoff_until_delivered(
    db: psycopg.Connection, dsn: str, receiver: Receiver
) -> None:
    cfg = relay_config({"webhook": {"type": "webhook", "url": receiver.url()}})
    receiver.script.extend([Reply(500, body=b"boom"), Reply(503)])
    aid = raise_alert(db)
    with running(Relay(dsn, cfg)):
        posts = receiver.wait_for(lambda r: len(r) >= 3)
    assert {p.headers["idempotency-key"] for p in posts} == {f"{aid}:webhook:0"}
    assert [p.json["attempt"] for p in posts] == [1, 2, 3]
    row = db.execute("SELECT status, attempts, last_error FROM guardian.relay_messages").fetchone()
    assert row is not None and row[:2] == ("delivered", 3)
    assert "answered HTTP 503" in row[2]


def test_429_retry_after_is_honoured(db: psycopg.Connection, dsn: str, receiver: Receiver) -> None:
    cfg = relay_config({"slack": {"type": "slack", "url": receiver.url("/slack")}})
    receiver.script.append(Reply(429, {"Retry-After": "2"}, b"rate_limited"))
    raise_alert(db)
    with running(Relay(dsn, cfg)):
        first, second = receiver.wait_for(lambda r: len(r) >= 2, timeout=10)
    assert second.at - first.at >= 1.9


def test_slack_is_paced_to_about_one_post_per_second(db: psycopg.Connection, dsn: str, receiver: Receiver) -> None:
    cfg = relay_config({"slack": {"type": "slack", "url": receiver.url("/slack"), "group_by": ["id"]}})
    for i in range(3):
        raise_alert(db, message=f"m{i}")
    with running(Relay(dsn, cfg)):
        posts = receiver.wait_for(lambda r: len(r) >= 3, timeout=10)
    gaps = [b.at - a.at for a, b in itertools.pairwise(posts)]
    assert min(gaps) >= 0.9


def test_dead_letter_after_max_attempts_raises_an_alert_on_a_working_channel(
    db: psycopg.Connection, dsn: str, receiver: Receiver
) -> None:
    cfg = relay_config(
        {
            "webhook": {"type": "webhook", "url": receiver.url("/broken")},
            "slack": {"type": "slack", "url": receiver.url("/slack")},
        },
        routes=[{"severity": ["CRITICAL"], "channels": ["webhook"]}],
        relay={"max_attempts": 2},
    )
    receiver.answer = lambda got: Reply(500) if got.path == "/broken" else Reply()
    aid = raise_alert(db)
    with running(Relay(dsn, cfg)):
        (post,) = receiver.wait_for(lambda r: any(p.path == "/slack" for p in r), timeout=10)[2:]
    att = post.json["attachments"][0]
    assert att["title"] == "HIGH: RELAY_DEAD_LETTER"
    assert "relay gave up on a webhook message (1 alert) after 2 attempts" in att["text"]
    assert len(receiver.on("/broken")) == 2
    assert scalar(db, "SELECT status FROM guardian.relay_outbox WHERE alert_id = %s", (aid,)) == "dead"
    status = CliRunner().invoke(main, ["relay", "status", "--dsn", dsn])
    assert status.exit_code == 1 and "webhook: 1 dead-lettered message(s)" in status.output
    # Fixed: re-send the dead letter from scratch.
    receiver.answer = None
    retried = CliRunner().invoke(main, ["relay", "retry", "--dsn", dsn, "--channel", "webhook"])
    assert retried.output.strip() == "1 dead-lettered message(s) queued again"
    assert once(dsn, cfg)["delivered"] >= 1
    assert scalar(db, "SELECT status FROM guardian.relay_outbox WHERE alert_id = %s", (aid,)) == "delivered"


def test_receiver_refusal_is_dead_lettered_at_once(db: psycopg.Connection, dsn: str, receiver: Receiver) -> None:
    cfg = relay_config({"webhook": {"type": "webhook", "url": receiver.url()}})
    receiver.script.append(Reply(404, body=b"no_service"))
    raise_alert(db)
    assert once(dsn, cfg) == {"routed": 1, "notices": 1, "delivered": 0, "failed": 1, "dead": 1}
    error = scalar(db, "SELECT last_error FROM guardian.relay_messages")
    assert "answered HTTP 404: no_service (the receiver refused the message; not retried)" in error


def test_unreachable_smtp_server_fails_cleanly_and_other_channels_still_deliver(
    db: psycopg.Connection, dsn: str, receiver: Receiver
) -> None:
    from pg_guardian.cluster import free_port

    dead = SmtpServer("127.0.0.1", free_port(), None)  # type: ignore[arg-type]
    cfg = relay_config(
        {
            "email": email_channel(dead, username=None, password=None),
            "slack": {"type": "slack", "url": receiver.url("/slack")},
        },
        relay={"max_attempts": 2},
    )
    raise_alert(db)
    with running(Relay(dsn, cfg)):
        posts = receiver.wait_for(lambda r: len(r) >= 2, timeout=10)
        raise_alert(db, type_="BULK_OPERATION", message="still running")
        receiver.wait_for(lambda r: len(r) >= 3, timeout=10)
    titles = [p.json["attachments"][0]["title"] for p in posts]
    assert titles == ["CRITICAL: TEST_DATA_CONTAMINATION", "HIGH: RELAY_DEAD_LETTER"]
    error = scalar(db, "SELECT last_error FROM guardian.relay_messages WHERE channel = 'email'")
    assert error.startswith(f"cannot reach SMTP server 127.0.0.1:{dead.port}: ")
    assert "Connection refused" in error


def test_template_error_at_render_is_a_clear_failure_and_nothing_is_lost(
    db: psycopg.Connection, dsn: str, smtp: SmtpServer, tmp_path: Any
) -> None:
    (tmp_path / "email").mkdir()
    bad = tmp_path / "email" / "alert.txt.j2"
    bad.write_text("{{ alert.metadata.ticket }}\n")
    cfg = relay_config({"email": email_channel(smtp)}, template_dir=str(tmp_path))
    raise_alert(db)
    assert once(dsn, cfg)["failed"] == 1
    error = scalar(db, "SELECT last_error FROM guardian.relay_messages")
    assert error.startswith("template email/alert.txt.j2 line 1: UndefinedError:") and "ticket" in error
    bad.write_text("ticket {{ alert.metadata.get('ticket', 'none') }}\n")
    fixed = relay_config({"email": email_channel(smtp)}, template_dir=str(tmp_path))
    db.execute("UPDATE guardian.relay_messages SET next_attempt_at = now()")
    assert once(dsn, fixed)["delivered"] == 1
    (mail,) = smtp.mailbox.wait_for(1)
    assert mail.get_body(("plain",)).get_content().strip() == "ticket none"


def test_megabyte_message_with_control_characters_is_delivered_cut(
    db: psycopg.Connection, dsn: str, receiver: Receiver, smtp: SmtpServer
) -> None:
    cfg = relay_config(
        {
            "slack": {"type": "slack", "url": receiver.url("/slack")},
            "webhook": {"type": "webhook", "url": receiver.url("/hook")},
            "email": email_channel(smtp),
        }
    )
    text = "\x1b[2J\x07 evil\r\nSubject: injected\n" + "x" * 1_048_576
    raise_alert(db, message=text)
    assert once(dsn, cfg)["delivered"] == 3
    slack = receiver.on("/slack")[0].json["attachments"][0]["text"]
    assert slack.startswith("\\x1b[2J\\x07 evil\\x0d\nSubject: injected") and len(slack) < 3100
    hook = receiver.on("/hook")[0].json["alerts"][0]
    assert hook["message_truncated"] and hook["message_length"] == len(text)
    (mail,) = smtp.mailbox.wait_for(1)
    assert mail["Subject"] == "🚨 CRITICAL: TEST_DATA_CONTAMINATION"
    assert mail["X-Guardian-Severity"] == "CRITICAL"


def test_two_relays_in_parallel_send_each_alert_once(db: psycopg.Connection, dsn: str, receiver: Receiver) -> None:
    cfg = relay_config(
        {
            "webhook": {
                "type": "webhook",
                "url": receiver.url(),
                "group_by": ["id"],
                "concurrency": 2,
            }
        }
    )
    receiver.delay = 0.005
    with running(Relay(dsn, cfg)), running(Relay(dsn, cfg)):
        db.execute("""INSERT INTO guardian.monitoring_alerts (severity, type, message)
                      SELECT 'CRITICAL', 'BULK_OPERATION', 'alert ' || g
                        FROM generate_series(1, 300) AS g""")
        posts = receiver.wait_for(lambda r: len(r) >= 300, timeout=30)
        time.sleep(0.3)
    ids = [p.json["alerts"][0]["id"] for p in receiver.requests]
    assert len(ids) == len(set(ids)) == 300
    tokens = {p.headers["user-agent"] for p in posts}
    assert tokens == {f"pg-guardian-relay/{__import__('pg_guardian').__version__}"}


def test_relay_runs_as_a_role_with_only_guardian_relay(
    cluster: LocalCluster, dbname: str, make_role: Any, receiver: Receiver, db: psycopg.Connection
) -> None:
    make_role("relay_bot", "guardian_relay", password="pw")
    make_role("nobody_bot", password="pw")
    cfg = relay_config({"webhook": {"type": "webhook", "url": receiver.url()}})
    raise_alert(db)
    assert once(cluster.dsn(dbname, user="relay_bot"), cfg)["delivered"] == 1
    with pytest.raises(
        GuardianError,
        match="role nobody_bot may not run the relay; a superuser runs: GRANT guardian_relay TO nobody_bot;",
    ):
        once(cluster.dsn(dbname, user="nobody_bot"), cfg)
    with (
        psycopg.connect(cluster.dsn(dbname, user="relay_bot")) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("UPDATE guardian.relay_outbox SET status = 'delivered'")


def test_relay_once_cli_prints_a_summary_and_exits_1_on_failures(
    db: psycopg.Connection, dsn: str, receiver: Receiver
) -> None:
    raise_alert(db)
    env = {
        "GUARDIAN_WEBHOOK_URL": receiver.url(),
        "GUARDIAN_CONFIG": "",
        "GUARDIAN_RELAY_MAX_ATTEMPTS": "3",
    }
    receiver.script.append(Reply(500))
    failed = CliRunner().invoke(main, ["relay", "--once", "--dsn", dsn, "--log-format", "text"], env=env)
    assert failed.exit_code == 1, failed.output
    assert "routed=1 notices=1 delivered=0 failed=1 dead=0" in failed.output
    db.execute("UPDATE guardian.relay_messages SET next_attempt_at = now()")
    ok = CliRunner().invoke(main, ["relay", "--once", "--dsn", dsn], env=env)
    assert ok.exit_code == 0, ok.output
    assert "delivered=1" in ok.output


def test_monitoring_disabled_sends_nothing(db: psycopg.Connection, dsn: str, receiver: Receiver) -> None:
    raise_alert(db)
    env = {
        "GUARDIAN_WEBHOOK_URL": receiver.url(),
        "MONITORING_ENABLED": "false",
        "GUARDIAN_CONFIG": "",
    }
    result = CliRunner().invoke(main, ["relay", "--dsn", dsn], env=env)
    assert result.exit_code == 0
    assert receiver.requests == []
    assert scalar(db, "SELECT count(*) FROM guardian.relay_intake") == 1


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_email_over_tls_with_authentication(db: psycopg.Connection, dsn: str, certificate: Any, security: str) -> None:
    import ssl

    cert, key = certificate
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    controller, server = start_smtp(
        **({"tls_context": ctx} if security == "starttls" else {"ssl_context": ctx}), auth=True
    )
    try:
        cfg = relay_config({"email": email_channel(server, security=security, ca_file=str(cert))})
        raise_alert(db)
        assert once(dsn, cfg)["delivered"] == 1
        (mail,) = server.mailbox.wait_for(1)
        assert mail["Subject"] == "🚨 CRITICAL: TEST_DATA_CONTAMINATION"
    finally:
        controller.stop()


def test_wrong_smtp_password_is_dead_lettered_with_the_reason(
    db: psycopg.Connection, dsn: str, smtp: SmtpServer
) -> None:
    cfg = relay_config({"email": email_channel(smtp, password="wrong")})
    raise_alert(db)
    assert once(dsn, cfg)["dead"] == 1
    assert "refused the login: 535" in scalar(db, "SELECT last_error FROM guardian.relay_messages")
