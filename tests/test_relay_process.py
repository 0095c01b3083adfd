"""The relay as a real process: SIGKILLed again and again mid-delivery, and a database restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from pg_guardian.cluster import LocalCluster
from pg_guardian.relay import Relay, running
from support.queries import scalar
from support.relay import Receiver, receiver, relay_config

__all__ = ["receiver"]
CONTROLLER = str(Path(__file__).resolve().parents[1] / "controller")


def start_relay(dsn: str, config: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": CONTROLLER, "GUARDIAN_CONFIG": str(config)}
    for name in ("SLACK_WEBHOOK_URL", "ADMIN_EMAIL", "GUARDIAN_WEBHOOK_URL", "MONITORING_ENABLED"):
        env.pop(name, None)
    return subprocess.Popen(
        [sys.executable, "-m", "pg_guardian.cli", "relay", "--dsn", dsn, *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.slow
def test_relay_killed_mid_delivery_many_times_loses_nothing(
    db: psycopg.Connection, dsn: str, receiver: Receiver, tmp_path: Path
) -> None:
    concurrency, alerts, kills = 2, 150, 8
    config = tmp_path / "relay.toml"
    config.write_text(
        '[relay]\npoll_interval = "1s"\nbackoff_initial = "50ms"\nbackoff_max = "200ms"\n'
        "max_attempts = 100\n"
        f'[channels.webhook]\ntype = "webhook"\nurl = "{receiver.url()}"\ngroup_by = ["id"]\n'
        f"concurrency = {concurrency}\n"
    )
    db.execute(
        """INSERT INTO guardian.monitoring_alerts (severity, type, message)
                  SELECT 'CRITICAL', 'TEST_DATA_CONTAMINATION', 'row ' || g
                    FROM generate_series(1, %s) AS g""",
        (alerts,),
    )
    receiver.delay = 0.03  # every answer is late: a kill lands between "received" and "recorded"
    for _ in range(kills):
        seen = len(receiver.requests)
        proc = start_relay(dsn, config)
        try:
            receiver.wait_for(lambda r, n=seen: len(r) >= n + 3, timeout=30)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
    delivered_before = scalar(db, "SELECT count(*) FROM guardian.relay_outbox WHERE status = 'delivered'")
    assert delivered_before < alerts  # the kills really interrupted the work
    receiver.delay = 0
    final = start_relay(dsn, config, "--once")
    _, err = final.communicate(timeout=60)
    assert final.returncode == 0, err.decode()[-2000:]
    ids = Counter(r.json["alerts"][0]["id"] for r in receiver.requests)
    assert len(ids) == alerts  # nothing lost
    duplicates = sum(ids.values()) - alerts
    print(f"{kills} kills: {duplicates} duplicates")
    assert duplicates <= kills * concurrency, f"{duplicates} duplicates for {kills} kills"
    assert scalar(db, "SELECT count(*) FROM guardian.relay_outbox WHERE status <> 'delivered'") == 0
    # Every duplicate carried the same idempotency key as the original, so receivers can drop it.
    keys = Counter(r.headers["idempotency-key"] for r in receiver.requests)
    assert len(keys) == alerts


@pytest.mark.slow
def test_relay_survives_a_database_restart(cluster: LocalCluster, dbname: str, dsn: str, receiver: Receiver) -> None:
    cfg = relay_config(
        {"webhook": {"type": "webhook", "url": receiver.url(), "group_by": ["id"]}},
        relay={"poll_interval": "2s"},
    )
    with running(Relay(dsn, cfg)) as relay:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT guardian.raise_alert('BEFORE_RESTART', 'CRITICAL', 'one')")
        receiver.wait_for(lambda r: len(r) == 1)
        cluster.restart()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT guardian.raise_alert('AFTER_RESTART', 'CRITICAL', 'two')")
        posts = receiver.wait_for(lambda r: len(r) == 2, timeout=20)
    assert [p.json["type"] for p in posts] == ["BEFORE_RESTART", "AFTER_RESTART"]
    assert relay.summary.delivered == 2
