"""`pg-guardian relay` over the databases of the configuration file (``[databases.*]``): one relay
per database in one process, against a real server and a real HTTP receiver."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from pg_guardian.cli import main
from pg_guardian.cluster import LocalCluster
from support.queries import scalar
from support.relay import Receiver, Reply, receiver
from test_drift_fixtures import create_database, drop_database

__all__ = ["receiver"]  # fixtures
CONTROLLER = str(Path(__file__).resolve().parents[1] / "controller")
# Only what each test passes: no channel, database or file from the environment.
ENV: dict[str, str | None] = {
    name: None
    for name in (
        "DATABASE_URL",
        "GUARDIAN_CONFIG",
        "SLACK_WEBHOOK_URL",
        "ADMIN_EMAIL",
        "GUARDIAN_WEBHOOK_URL",
        "GUARDIAN_APPRISE_URLS",
        "GUARDIAN_DATADOG_API_KEY",
        "GUARDIAN_SENTRY_DSN",
        "MONITORING_ENABLED",
    )
}


@pytest.fixture(autouse=True)
def _signal_handlers() -> Iterator[None]:
    """The relay command sets SIGTERM/SIGINT handlers: give pytest its own back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.fixture
def guarded(cluster: LocalCluster, template_db: str) -> Iterator[Callable[[str], str]]:
    """Make guarded databases set to an environment, each with one CRITICAL alert waiting to be
    relayed; returns the database's name."""
    made: list[str] = []

    def make(environment: str) -> str:
        name = f"many{os.getpid()}_{len(made)}"
        create_database(cluster, name, template=template_db)
        made.append(name)
        with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
            conn.execute("SELECT guardian.set_environment(%s)", (environment,))
            conn.execute("DELETE FROM guardian.relay_intake")  # the ENVIRONMENT_CHANGED alert
            conn.execute("SELECT guardian.raise_alert('TEST_DATA_CONTAMINATION', 'CRITICAL', %s)", (environment,))
        return name

    yield make
    for name in made:
        drop_database(cluster, name)


def write_config(path: Path, receiver: Receiver, databases: dict[str, dict[str, str]]) -> Path:
    lines = [
        "[relay]",
        'poll_interval = "1s"',
        'backoff_initial = "50ms"',
        'backoff_max = "50ms"',
        "[channels.webhook]",
        'type = "webhook"',
        f'url = "{receiver.url()}"',
        'group_by = ["id"]',
    ]
    for name, entry in databases.items():
        lines += [f"[databases.{name}]", *(f"{key} = '{value}'" for key, value in entry.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def relay(*args: str, **env: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["relay", "--log-format", "text", *args], env={**ENV, **env})
    return result.exit_code, result.stdout, result.stderr


def waiting(cluster: LocalCluster, dbname: str) -> int:
    with psycopg.connect(cluster.dsn(dbname), autocommit=True) as conn:
        return int(scalar(conn, "SELECT count(*) FROM guardian.relay_intake"))


def environments(receiver: Receiver) -> list[str]:
    return sorted(alert["environment"] for r in receiver.requests for alert in r.json["alerts"])


@pytest.fixture
def two(
    cluster: LocalCluster, guarded: Callable[[str], str], receiver: Receiver, tmp_path: Path, make_role: Any
) -> tuple[Path, str, str]:
    """A configuration with production and staging; staging's dsn is a role without relay rights
    and its relay_dsn one with guardian_relay, so only relay_dsn can deliver there."""
    make_role("many_reader")
    make_role("many_relay_bot", "guardian_relay")
    production, staging = guarded("production"), guarded("staging")
    path = write_config(
        tmp_path / "guardian.toml",
        receiver,
        {
            "production": {"dsn": cluster.dsn(production)},
            "staging": {
                "dsn": cluster.dsn(staging, user="many_reader"),
                "relay_dsn": cluster.dsn(staging, user="many_relay_bot"),
            },
        },
    )
    return path, production, staging


def test_once_relays_every_configured_database_each_with_its_environment(
    two: tuple[Path, str, str], receiver: Receiver
) -> None:
    path, _, _ = two
    code, out, err = relay("--once", "--config", str(path))
    assert code == 0, err
    assert out.splitlines() == [
        "production: routed=1 notices=1 delivered=1 failed=0 dead=0",
        "staging: routed=1 notices=1 delivered=1 failed=0 dead=0",
        "routed=2 notices=2 delivered=2 failed=0 dead=0",
    ]
    assert environments(receiver) == ["production", "staging"]
    assert "target=staging" in err and "target=production" in err


def test_the_file_can_be_named_by_guardian_config(two: tuple[Path, str, str], receiver: Receiver) -> None:
    path, _, _ = two
    code, _, err = relay("--once", GUARDIAN_CONFIG=str(path))
    assert code == 0, err
    assert environments(receiver) == ["production", "staging"]


def test_env_restricts_the_relay_to_the_named_databases(
    cluster: LocalCluster, two: tuple[Path, str, str], receiver: Receiver
) -> None:
    path, production, _ = two
    code, out, err = relay("--once", "--config", str(path), "--env", "staging")
    assert code == 0, err
    assert environments(receiver) == ["staging"]
    assert out.splitlines()[-1] == "routed=1 notices=1 delivered=1 failed=0 dead=0"
    assert waiting(cluster, production) == 1


def test_env_wins_over_database_url(cluster: LocalCluster, two: tuple[Path, str, str], receiver: Receiver) -> None:
    path, production, _ = two
    code, _, err = relay("--once", "--config", str(path), "--env", "staging", DATABASE_URL=cluster.dsn(production))
    assert code == 0, err
    assert environments(receiver) == ["staging"]


def test_a_dsn_relays_that_database_alone_as_before(
    cluster: LocalCluster, two: tuple[Path, str, str], receiver: Receiver
) -> None:
    path, production, staging = two
    code, out, err = relay("--once", "--config", str(path), "--dsn", cluster.dsn(production))
    assert code == 0, err
    assert out == "routed=1 notices=1 delivered=1 failed=0 dead=0\n"
    assert environments(receiver) == ["production"]
    assert waiting(cluster, staging) == 1


def test_a_failed_delivery_in_one_database_makes_once_exit_1(two: tuple[Path, str, str], receiver: Receiver) -> None:
    path, _, _ = two
    path.write_text(path.read_text().replace('"50ms"', '"1h"'))  # the failed one is not retried in this run
    receiver.script.append(Reply(500))
    code, out, _ = relay("--once", "--config", str(path))
    assert code == 1
    assert out.splitlines()[-1] == "routed=2 notices=2 delivered=1 failed=1 dead=0"


def test_dsn_and_env_together_are_refused(two: tuple[Path, str, str]) -> None:
    path, _, _ = two
    code, _, err = relay("--once", "--config", str(path), "--dsn", "postgresql:///x", "--env", "staging")
    assert code == 2
    assert "use either --dsn or --env NAME ..., not both" in err


def test_unknown_env_names_the_configured_databases(tmp_path: Path, receiver: Receiver) -> None:
    path = write_config(tmp_path / "guardian.toml", receiver, {"production": {"dsn": "postgresql:///p"}})
    code, _, err = relay("--once", "--config", str(path), "--env", "qa")
    assert code == 2
    assert err == (
        f"error: --env qa: no [databases.qa] in {path} (known: production); "
        "add [databases.qa] with dsn = 'postgresql://...' there, or leave --env out\n"
    )


def test_no_databases_and_no_dsn_is_the_usual_clear_error(tmp_path: Path, receiver: Receiver) -> None:
    path = write_config(tmp_path / "guardian.toml", receiver, {})
    code, _, err = relay("--once", "--config", str(path))
    assert code == 2
    assert err == "error: no database given: pass --dsn 'postgresql://user@host/db' or set DATABASE_URL\n"


def test_a_database_the_relay_may_not_use_stops_all_and_is_named(
    cluster: LocalCluster, guarded: Callable[[str], str], receiver: Receiver, tmp_path: Path, make_role: Any
) -> None:
    make_role("many_nobody")
    production, staging = guarded("production"), guarded("staging")
    path = write_config(
        tmp_path / "guardian.toml",
        receiver,
        {
            "production": {"dsn": cluster.dsn(production)},
            "staging": {"dsn": cluster.dsn(staging, user="many_nobody")},
        },
    )
    code, _, err = relay("--config", str(path))  # not --once: the refusal must still end the process
    assert code == 2
    assert (
        "error: relay for database staging: role many_nobody may not run the relay; "
        "a superuser runs: GRANT guardian_relay TO many_nobody;"
    ) in err


def test_sigterm_stops_every_database_relay(two: tuple[Path, str, str], receiver: Receiver) -> None:
    path, _, _ = two
    env = {**os.environ, "PYTHONPATH": CONTROLLER, "GUARDIAN_CONFIG": str(path)}
    for name, value in ENV.items():
        if value is None and name != "GUARDIAN_CONFIG":
            env.pop(name, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pg_guardian.cli", "relay", "--log-format", "text"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        receiver.wait_for(lambda r: len(r) == 2, timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert environments(receiver) == ["production", "staging"]
    assert err.decode().count("relay.stopped") == 2
