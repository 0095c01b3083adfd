"""Datadog events and Sentry events end to end: a real database, the receiver as the API."""

from __future__ import annotations

import json
from typing import Any

import psycopg
from pg_guardian.relay import Relay, running
from support.queries import scalar
from support.relay import Received, Receiver, Reply, receiver, relay_config
from test_relay_delivery import once, raise_alert

__all__ = ["receiver"]  # fixtures

TEXT = "Test email pattern detected in production: a@tenant-a.test"


def datadog(receiver: Receiver, **extra: Any) -> dict[str, Any]:
    return {
        "type": "datadog",
        "api_key": "dd-secret-key",
        "api_url": receiver.url("/api/v1/events"),
        "group_by": ["id"],
        **extra,
    }


def sentry(receiver: Receiver, **extra: Any) -> dict[str, Any]:
    port = receiver.server.server_address[1]
    return {"type": "sentry", "dsn": f"http://publickey123@127.0.0.1:{port}/42", "group_by": ["id"], **extra}


def envelope(post: Received) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Envelope header, item header and event of one Sentry envelope."""
    head, item, event = post.body.split(b"\n")
    assert json.loads(item)["length"] == len(event)
    return json.loads(head), json.loads(item), json.loads(event)


def production(db: psycopg.Connection) -> None:
    db.execute("SELECT guardian.set_environment('production')")
    db.execute("DELETE FROM guardian.relay_intake")  # the ENVIRONMENT_CHANGED alert


def test_datadog_event_has_api_key_tags_alert_type_and_fingerprint_as_aggregation_key(
    db: psycopg.Connection, dsn: str, receiver: Receiver
) -> None:
    production(db)
    receiver.answer = lambda got: Reply(202, body=b'{"status":"ok"}')
    aid = raise_alert(db, message=TEXT, fingerprint="contamination-users-1")
    raise_alert(db, "MEDIUM", "OFF_HOURS_WRITE", "insert at 03:12", "public.patients", None)
    cfg = relay_config(
        {"datadog": datadog(receiver, tags=["team:dba"])},
        routes=[{"channels": ["datadog"]}],
        app_url="https://admin.example.com",
    )
    assert once(dsn, cfg)["delivered"] == 2
    events = {r.json["title"]: r for r in receiver.on("/api/v1/events")}
    post = events["CRITICAL: TEST_DATA_CONTAMINATION"]
    assert post.headers["dd-api-key"] == "dd-secret-key"
    assert post.headers["content-type"] == "application/json"
    event = post.json
    assert event["alert_type"] == "error" and event["priority"] == "normal"
    assert event["aggregation_key"] == "contamination-users-1"
    assert event["tags"] == [
        "env:production",
        "severity:critical",
        "alert_type:test_data_contamination",
        "table:public.users",
        "team:dba",
    ]
    assert event["text"].startswith(TEXT)
    assert f"https://admin.example.com/admin/cleanup/{aid}" in event["text"]
    assert event["text"].endswith(f"pg_guardian relay · {aid}:datadog:0")
    medium = events["MEDIUM: OFF_HOURS_WRITE"].json
    assert (medium["alert_type"], medium["priority"]) == ("warning", "low")


def test_datadog_repeat_of_an_alert_keeps_its_aggregation_key(
    db: psycopg.Connection, dsn: str, receiver: Receiver
) -> None:
    cfg = relay_config({"datadog": datadog(receiver, repeat_interval="1h", group_interval="0s")})
    raise_alert(db, fingerprint="disk-full")
    raise_alert(db, type_="BULK_OPERATION", message="bulk", fingerprint="bulk-1")
    assert once(dsn, cfg)["delivered"] == 2
    raise_alert(db, fingerprint="disk-full")
    assert once(dsn, cfg)["delivered"] == 0  # the repeat waits for the repeat interval
    db.execute("UPDATE guardian.relay_outbox SET due_at = now() WHERE seq = 1")
    assert once(dsn, cfg)["delivered"] == 1
    keys = [(r.json["aggregation_key"], r.json["title"]) for r in receiver.requests]
    assert sorted(keys[:2]) == [
        ("bulk-1", "CRITICAL: BULK_OPERATION"),
        ("disk-full", "CRITICAL: TEST_DATA_CONTAMINATION"),
    ]
    assert keys[2] == ("disk-full", "CRITICAL: TEST_DATA_CONTAMINATION (still open)")


def test_datadog_refusing_the_api_key_is_dead_lettered_at_once(
    db: psycopg.Connection, dsn: str, receiver: Receiver
) -> None:
    receiver.script.append(Reply(403, body=b'{"errors":["Forbidden"]}'))
    cfg = relay_config({"datadog": datadog(receiver)})
    raise_alert(db)
    assert once(dsn, cfg) == {"routed": 1, "notices": 1, "delivered": 0, "failed": 1, "dead": 1}
    error = scalar(db, "SELECT last_error FROM guardian.relay_messages")
    assert error.startswith("datadog http://127.0.0.1:")
    assert 'answered HTTP 403: {"errors":["Forbidden"]} (the receiver refused the message; not retried)' in error
    assert "dd-secret-key" not in error


def test_sentry_envelope_has_auth_level_environment_tags_and_the_alert_fingerprint(
    db: psycopg.Connection, dsn: str, receiver: Receiver
) -> None:
    production(db)
    cfg = relay_config({"sentry": sentry(receiver)}, app_url="https://admin.example.com")
    aid = raise_alert(db, message=TEXT, fingerprint="contamination-users-1")
    assert once(dsn, cfg)["delivered"] == 1
    (post,) = receiver.requests
    assert post.path == "/api/42/envelope/"
    assert post.headers["content-type"] == "application/x-sentry-envelope"
    auth = post.headers["x-sentry-auth"]
    assert auth.startswith("Sentry sentry_version=7, sentry_key=publickey123, sentry_client=pg-guardian-relay/")
    head, item, event = envelope(post)
    assert item["type"] == "event" and head["event_id"] == event["event_id"]
    assert event["fingerprint"] == ["contamination-users-1"]
    assert event["level"] == "fatal" and event["environment"] == "production"
    assert event["logentry"]["formatted"].startswith(f"TEST_DATA_CONTAMINATION: {TEXT}\n\n{TEXT}")
    assert event["tags"] == {
        "severity": "CRITICAL",
        "alert_type": "TEST_DATA_CONTAMINATION",
        "table": "public.users",
        "channel": "sentry",
    }
    assert event["extra"]["alert_ids"] == [aid]
    assert event["extra"]["cleanup_url"] == f"https://admin.example.com/admin/cleanup/{aid}"


def test_sentry_5xx_is_retried_with_the_same_event_id_then_delivered(
    db: psycopg.Connection, dsn: str, receiver: Receiver
) -> None:
    cfg = relay_config({"sentry": sentry(receiver)}, routes=[{"channels": ["sentry"]}])
    receiver.script.extend([Reply(503, body=b"upstream unavailable"), Reply(500)])
    raise_alert(db, "HIGH", "BULK_OPERATION", "82 rows inserted in 3 s", "public.patients", None)
    with running(Relay(dsn, cfg)):
        posts = receiver.wait_for(lambda r: len(r) >= 3)
    ids = {envelope(p)[2]["event_id"] for p in posts}
    assert len(ids) == 1  # Sentry drops a second event with the same id: a retry is never a duplicate
    assert envelope(posts[0])[2]["level"] == "error"
    row = db.execute("SELECT status, attempts, last_error FROM guardian.relay_messages").fetchone()
    assert row is not None and row[:2] == ("delivered", 3)
    assert "answered HTTP 500" in row[2]


def test_sentry_rate_limit_429_waits_for_retry_after(db: psycopg.Connection, dsn: str, receiver: Receiver) -> None:
    cfg = relay_config({"sentry": sentry(receiver)})
    receiver.script.append(Reply(429, {"Retry-After": "1", "X-Sentry-Rate-Limits": "1:error:org"}, b""))
    raise_alert(db)
    with running(Relay(dsn, cfg)):
        first, second = receiver.wait_for(lambda r: len(r) >= 2)
    assert second.at - first.at >= 0.9
