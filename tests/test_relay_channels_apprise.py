"""Apprise channels end to end: the real Apprise plugins, a real database, local receivers.

Self-hosted targets (``json://``, ``ntfy://``) are pointed at the receiver; services on a fixed
host (PagerDuty, Opsgenie, Teams, Discord, Telegram, Pushover, ntfy.sh) reach it through an
HTTPS proxy that ends TLS with a test CA's certificate for the real host name.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from pg_guardian.cluster import free_port
from pg_guardian.relay import Relay, running
from support.queries import scalar
from support.relay import InterceptingProxy, Received, Receiver, Reply, https_proxy, receiver, relay_config
from test_relay_delivery import once, raise_alert

__all__ = ["https_proxy", "receiver"]  # fixtures

TEXT = "Test email pattern detected in production: a@tenant-a.test"
FAST = {"min_interval": "0s", "group_by": ["id"]}


def apprise_channel(*urls: str, **extra: Any) -> dict[str, Any]:
    return {"type": "apprise", "url": list(urls) if len(urls) > 1 else urls[0], **FAST, **extra}


def service_reply(got: Received) -> Reply:
    """What each service answers on success (Opsgenie and Telegram read their answer)."""
    if got.host == "api.opsgenie.com":
        return Reply(202, {"Content-Type": "application/json"}, b'{"result":"ok","requestId":"r-1"}')
    if got.host == "api.telegram.org":
        return Reply(200, {"Content-Type": "application/json"}, b'{"ok":true,"result":{"message_id":1}}')
    if got.host == "api.pushover.net":
        return Reply(200, {"Content-Type": "application/json"}, b'{"status":1,"request":"r-1"}')
    if got.host == "events.pagerduty.com":
        return Reply(202, {"Content-Type": "application/json"}, b'{"status":"success","dedup_key":"k"}')
    return Reply(200, {"Content-Type": "application/json"}, b"{}")


SERVICES = {
    # name: (Apprise URL, host, path the service's API takes)
    "pagerduty": (
        "pagerduty://R0UT1NGKEY0123456789@APIKEY0123456789",
        "events.pagerduty.com",
        "/v2/enqueue",
    ),
    "opsgenie": ("opsgenie://0PSGEN1EKEY0123456789", "api.opsgenie.com", "/v2/alerts"),
    "teams": (
        "workflow://prod-00.westus.logic.azure.com:443/wf0123456789/S1GNATURE0123",
        "prod-00.westus.logic.azure.com",
        "/workflows/wf0123456789/triggers/manual/paths/invoke?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun"
        "&sv=1.0&sig=S1GNATURE0123",
    ),
    "discord": (
        "discord://123456789012345678/WEBHOOKTOKEN0123",
        "discord.com",
        "/api/webhooks/123456789012345678/WEBHOOKTOKEN0123",
    ),
    "telegram": (
        "tgram://123456789:AAbbCCddEEffGGhhIIjj/987654321",
        "api.telegram.org",
        "/bot123456789:AAbbCCddEEffGGhhIIjj/sendMessage",
    ),
    "pushover": (
        "pover://uQiRzpo4DXghDmr9QzzfQu27cmVRsG@azGDORePK8gMaC0QOYAMyEEuzJnyUi",
        "api.pushover.net",
        "/1/messages.json",
    ),
    "ntfy-cloud": ("ntfy://guardian-alerts", "ntfy.sh", "/"),
}


def test_json_and_self_hosted_ntfy_get_title_text_and_severity(
    db: psycopg.Connection, dsn: str, receiver: Receiver
) -> None:
    db.execute("SELECT guardian.set_environment('production')")
    db.execute("DELETE FROM guardian.relay_intake")  # the ENVIRONMENT_CHANGED alert
    port = receiver.server.server_address[1]
    cfg = relay_config(
        {"push": apprise_channel(f"json://127.0.0.1:{port}/guardian", f"ntfy://127.0.0.1:{port}/db-alerts")},
        routes=[{"channels": ["push"]}],
        app_url="https://admin.example.com",
    )
    crit = raise_alert(db, message=TEXT)
    raise_alert(db, "MEDIUM", "OFF_HOURS_WRITE", "insert at 03:12", "public.patients", None)
    raise_alert(db, "LOW", "RETENTION_PRUNED", "pruned 12 alerts", None, None)
    assert once(dsn, cfg)["delivered"] == 3
    hooks = {r.json["title"]: r.json for r in receiver.on("/guardian")}
    assert {t: b["type"] for t, b in hooks.items()} == {
        "CRITICAL: TEST_DATA_CONTAMINATION": "failure",
        "MEDIUM: OFF_HOURS_WRITE": "warning",
        "LOW: RETENTION_PRUNED": "info",
    }
    body = hooks["CRITICAL: TEST_DATA_CONTAMINATION"]["message"]
    assert body.startswith(TEXT)
    assert "Environment: production · Table: public.users" in body
    assert f"Cleanup script: https://admin.example.com/admin/cleanup/{crit}" in body
    ntfy = {r.json["title"]: r.json for r in receiver.on("/")}
    assert set(ntfy) == set(hooks)
    assert ntfy["CRITICAL: TEST_DATA_CONTAMINATION"]["topic"] == "db-alerts"
    assert ntfy["CRITICAL: TEST_DATA_CONTAMINATION"]["message"].startswith(TEXT)


def test_grouped_alerts_are_one_apprise_message_with_a_count(
    db: psycopg.Connection, dsn: str, receiver: Receiver
) -> None:
    port = receiver.server.server_address[1]
    cfg = relay_config(
        {"push": {"type": "apprise", "url": f"json://127.0.0.1:{port}/g", "min_interval": "0s"}},
    )
    db.execute("""INSERT INTO guardian.monitoring_alerts (severity, type, message, table_name)
                  SELECT 'CRITICAL', 'TEST_DATA_CONTAMINATION', 'user' || g || '@tenant-a.test', 'public.users'
                    FROM generate_series(1, 3) AS g""")
    assert once(dsn, cfg)["delivered"] == 1
    (post,) = receiver.requests
    assert post.json["title"] == "CRITICAL: TEST_DATA_CONTAMINATION (3 alerts)"
    assert "3 alerts in this group" in post.json["message"]


@pytest.mark.parametrize("service", list(SERVICES))
def test_fixed_host_service_gets_the_alert_on_its_real_host_and_path(
    db: psycopg.Connection, dsn: str, receiver: Receiver, https_proxy: InterceptingProxy, service: str
) -> None:
    url, host, path = SERVICES[service]
    receiver.answer = service_reply
    cfg = relay_config({service: apprise_channel(url)})
    raise_alert(db, message=TEXT)
    assert once(dsn, cfg) == {"routed": 1, "notices": 1, "delivered": 1, "failed": 0, "dead": 0}
    (post,) = receiver.requests
    assert https_proxy.tunnels == [f"{host}:443"]
    assert (post.host, post.path) == (host, path)
    text = post.body.decode()
    if post.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        from urllib.parse import parse_qs

        text = json.dumps(parse_qs(text))
    text = text.replace("\\\\", "")  # markdown escapes (Teams): TEST\\_DATA in JSON
    assert "TEST_DATA_CONTAMINATION" in text and "a@tenant-a.test" in text


def test_pagerduty_payload_carries_the_routing_key_and_critical_severity(
    db: psycopg.Connection, dsn: str, receiver: Receiver, https_proxy: InterceptingProxy
) -> None:
    receiver.answer = service_reply
    cfg = relay_config({"pagerduty": apprise_channel(SERVICES["pagerduty"][0])})
    raise_alert(db, message=TEXT)
    assert once(dsn, cfg)["delivered"] == 1
    event = receiver.requests[0].json
    assert event["routing_key"] == "R0UT1NGKEY0123456789"
    assert event["event_action"] == "trigger"
    assert event["payload"]["severity"] == "critical"
    assert event["payload"]["summary"].startswith("CRITICAL: TEST_DATA_CONTAMINATION")


def test_routing_pages_pagerduty_for_critical_but_not_for_low(
    db: psycopg.Connection, dsn: str, receiver: Receiver, https_proxy: InterceptingProxy
) -> None:
    receiver.answer = service_reply
    port = receiver.server.server_address[1]
    cfg = relay_config(
        {
            "pagerduty": apprise_channel(SERVICES["pagerduty"][0]),
            "ntfy": apprise_channel(f"ntfy://127.0.0.1:{port}/everything"),
        },
        routes=[
            {"severity": ["CRITICAL"], "channels": ["pagerduty"], "continue": True},
            {"channels": ["ntfy"]},
        ],
    )
    raise_alert(db, "CRITICAL", message=TEXT)
    raise_alert(db, "LOW", "RETENTION_PRUNED", "pruned 12 alerts", None, None)
    assert once(dsn, cfg)["delivered"] == 3
    paged = [r for r in receiver.requests if r.host == "events.pagerduty.com"]
    assert [p.json["payload"]["summary"].split("\r\n")[0] for p in paged] == ["CRITICAL: TEST_DATA_CONTAMINATION"]
    assert sorted(r.json["title"] for r in receiver.requests if r.host == "127.0.0.1") == [
        "CRITICAL: TEST_DATA_CONTAMINATION",
        "LOW: RETENTION_PRUNED",
    ]


def test_5xx_is_retried_with_backoff_then_delivered(db: psycopg.Connection, dsn: str, receiver: Receiver) -> None:
    port = receiver.server.server_address[1]
    cfg = relay_config({"push": apprise_channel(f"json://127.0.0.1:{port}/push")})
    receiver.script.extend([Reply(503, body=b"busy"), Reply(502)])
    raise_alert(db)
    with running(Relay(dsn, cfg)):
        posts = receiver.wait_for(lambda r: len(r) >= 3)
    assert len(posts) == 3 and len({p.body for p in posts}) == 1
    row = db.execute("SELECT status, attempts, last_error FROM guardian.relay_messages").fetchone()
    assert row is not None and row[:2] == ("delivered", 3)
    assert "error=502" in row[2]


def test_4xx_from_the_service_is_dead_lettered_at_once_with_apprise_reason(
    db: psycopg.Connection, dsn: str, receiver: Receiver, https_proxy: InterceptingProxy
) -> None:
    receiver.answer = lambda got: Reply(400, body=b'{"status":"invalid event","message":"Event object is invalid"}')
    cfg = relay_config({"pagerduty": apprise_channel(SERVICES["pagerduty"][0])})
    aid = raise_alert(db)
    assert once(dsn, cfg) == {"routed": 1, "notices": 1, "delivered": 0, "failed": 1, "dead": 1}
    error = scalar(db, "SELECT last_error FROM guardian.relay_messages")
    assert error.startswith("Pager Duty pagerduty://****@****/")
    assert "Failed to send Pager Duty notification: Bad Request" in error and "error=400" in error
    assert error.endswith("(the service refused the message; not retried)")
    assert "R0UT1NGKEY" not in error
    assert scalar(db, "SELECT status FROM guardian.relay_outbox WHERE alert_id = %s", (aid,)) == "dead"
    assert len(receiver.requests) == 1


def test_unreachable_service_is_a_retryable_connection_error(db: psycopg.Connection, dsn: str) -> None:
    cfg = relay_config({"push": apprise_channel(f"json://127.0.0.1:{free_port()}/push")})
    raise_alert(db)
    assert once(dsn, cfg) == {"routed": 1, "notices": 1, "delivered": 0, "failed": 1, "dead": 0}
    error = scalar(db, "SELECT last_error FROM guardian.relay_messages")
    assert "connection error" in error.lower()


def test_one_failing_url_of_two_gets_the_retry_and_the_other_is_not_sent_twice(
    db: psycopg.Connection, dsn: str, receiver: Receiver
) -> None:
    port = receiver.server.server_address[1]
    cfg = relay_config({"push": apprise_channel(f"json://127.0.0.1:{port}/a", f"json://127.0.0.1:{port}/b")})
    receiver.script.extend([Reply(), Reply(500)])  # /a takes it, /b fails once
    raise_alert(db)
    with running(Relay(dsn, cfg)):
        receiver.wait_for(lambda r: len(r) >= 3)
    assert (len(receiver.on("/a")), len(receiver.on("/b"))) == (1, 2)
    row = db.execute("SELECT status, attempts, last_error FROM guardian.relay_messages").fetchone()
    assert row is not None and row[:2] == ("delivered", 2)
    assert row[2].startswith("1 of 2 Apprise URLs failed: JSON json://127.0.0.1:")


def test_dead_apprise_channel_raises_a_dead_letter_alert_on_another_channel(
    db: psycopg.Connection, dsn: str, receiver: Receiver, https_proxy: InterceptingProxy
) -> None:
    port = receiver.server.server_address[1]
    receiver.answer = lambda got: Reply(401) if got.host == "api.opsgenie.com" else Reply()
    cfg = relay_config(
        {
            "opsgenie": apprise_channel(SERVICES["opsgenie"][0]),
            "hook": {"type": "webhook", "url": f"http://127.0.0.1:{port}/hook"},
        },
        routes=[{"severity": ["CRITICAL"], "channels": ["opsgenie"]}],
    )
    raise_alert(db)
    once(dsn, cfg)
    once(dsn, cfg)  # routes the dead letter alert raised by the first run
    (hook,) = receiver.on("/hook")
    assert hook.json["type"] == "RELAY_DEAD_LETTER"
    assert "opsgenie" in hook.json["alerts"][0]["message"]
