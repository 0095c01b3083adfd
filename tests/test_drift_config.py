"""`pg-guardian drift` with the databases of the configuration file (``[databases.*]``), and the
shared reading of those tables (:func:`pg_guardian.config.databases`)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from pg_guardian import config
from pg_guardian.cli import main
from pg_guardian.cluster import LocalCluster
from pg_guardian.dashboard.settings import load as load_dashboard
from pg_guardian.errors import ConfigError
from test_drift_fixtures import create_database, drop_database

SCHEMA = "CREATE TABLE public.patients (id int PRIMARY KEY, email text NOT NULL);"
PHONE = "ALTER TABLE public.patients ADD COLUMN phone text;"
DIFFERENCE = "  + column public.patients.phone: production missing, staging extra"
USER = "[dashboard.users.alice]\nrole = 'admin'\npassword_hash = '{hash}'\n"
ENV = {"GUARDIAN_CONFIG": None, "DATABASE_URL": None}  # only what each test passes


def run(*args: str, **env: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env={**ENV, **env})
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def envs(cluster: LocalCluster) -> Iterator[Callable[[str], str]]:
    """Make databases without pg_guardian, each with SCHEMA plus some SQL; yields their DSNs."""
    made: list[str] = []

    def make(extra_sql: str = "") -> str:
        name = f"cfg{os.getpid()}_{len(made)}"
        create_database(cluster, name)
        made.append(name)
        with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
            conn.execute(SCHEMA + extra_sql)
        return cluster.dsn(name)

    yield make
    for name in made:
        drop_database(cluster, name)


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    """A configuration file naming the given databases (name -> dsn, or name -> table), in order."""

    def make(**databases: str | dict[str, str]) -> Path:
        lines: list[str] = []
        for name, entry in databases.items():
            table = entry if isinstance(entry, dict) else {"dsn": entry}
            lines += [f"[databases.{name}]", *(f"{k} = {json.dumps(v)}" for k, v in table.items()), ""]
        path = tmp_path / "guardian.toml"
        path.write_text("\n".join(lines))
        return path

    return make


def test_env_names_take_their_dsn_from_the_config(envs: Callable[[str], str], write: Callable[..., Path]) -> None:
    path = write(production=envs(""), staging=envs(PHONE))
    code, out, err = run("drift", "--config", str(path), "--env", "production", "--env", "staging")
    assert code == 1, err
    assert DIFFERENCE in out
    assert "1 object differ across production, staging (reference: production)" in out


def test_env_names_read_the_file_named_by_guardian_config(
    envs: Callable[[str], str], write: Callable[..., Path]
) -> None:
    path = write(production=envs(""), staging=envs(PHONE))
    code, out, _ = run("drift", "--env", "production", "--env", "staging", GUARDIAN_CONFIG=str(path))
    assert code == 1
    assert DIFFERENCE in out


def test_named_and_explicit_envs_mix_in_the_order_given(envs: Callable[[str], str], write: Callable[..., Path]) -> None:
    path = write(production=envs(""), staging=envs(PHONE))
    local = envs(PHONE)
    code, out, _ = run(
        "drift", "--config", str(path), "--env", "staging", "--env", f"local={local}", "--env", "production"
    )
    assert code == 1
    assert "  - column public.patients.phone: production missing" in out
    assert "(reference: staging)" in out


def test_without_env_every_configured_database_is_compared_the_first_being_the_reference(
    envs: Callable[[str], str], write: Callable[..., Path]
) -> None:
    path = write(production=envs(""), staging=envs(PHONE), local=envs(""))
    code, out, _ = run("drift", "--config", str(path), "--format", "json")
    assert code == 1
    [column] = json.loads(out)
    assert column["identity"] == "public.patients.phone"
    assert column["environments"] == {"production": "missing", "staging": "extra", "local": "missing"}
    assert list(column["detail"]["data_type"]) == ["production", "staging", "local"]


def test_configured_databases_that_match_exit_0(envs: Callable[[str], str], write: Callable[..., Path]) -> None:
    path = write(production=envs(""), staging=envs(""))
    code, out, err = run("drift", "--config", str(path))
    assert code == 0, err
    assert "production" in out and "staging" in out


def test_unknown_name_is_a_one_line_error_naming_the_known_ones(write: Callable[..., Path]) -> None:
    path = write(production="postgresql:///a", staging="postgresql:///b")
    code, out, err = run("drift", "--config", str(path), "--env", "production", "--env", "qa")
    assert code == 2
    assert out == ""
    assert err == (
        f"error: --env qa: no [databases.qa] in {path} (known: production, staging); "
        "add [databases.qa] with dsn = 'postgresql://...' there, or pass --env qa=DSN\n"
    )


def test_bare_name_without_a_config_file_says_how_to_give_the_dsn() -> None:
    code, _, err = run("drift", "--env", "production", "--env", "staging")
    assert code == 2
    assert "is not NAME=DSN, and no configuration file names databases" in err
    assert "--env production=postgresql://host/db, or --config FILE with [databases.production]" in err


def test_one_configured_database_is_not_enough_to_compare(write: Callable[..., Path]) -> None:
    path = write(production="postgresql:///a")
    code, _, err = run("drift", "--config", str(path))
    assert code == 2
    assert f"drift compares two or more databases, and {path} names 1 (production)" in err


def test_no_config_and_no_arguments_says_what_to_pass() -> None:
    code, _, err = run("drift")
    assert code == 2
    assert "give --source and --target" in err and "--config FILE naming [databases.*]" in err


def test_a_bad_database_entry_is_reported_before_connecting(write: Callable[..., Path]) -> None:
    path = write(production="postgresql:///a", staging={"dsn": "postgresql:///b", "relay_dsn": "not a dsn ="})
    code, _, err = run("drift", "--config", str(path), "--env", "production", "--env", "staging")
    assert code == 2
    assert "databases.staging.relay_dsn: invalid DSN" in err


def test_databases_keep_file_order_and_default_relay_dsn_to_dsn() -> None:
    found, problems = config.databases(
        {
            "databases": {
                "staging": {"dsn": "postgresql:///s"},
                "production": {"dsn": "postgresql:///p", "relay_dsn": "postgresql://relay_bot@/p"},
            }
        }
    )
    assert problems == []
    assert [(d.name, d.delivery_dsn, d.action_dsn) for d in found] == [
        ("staging", "postgresql:///s", "postgresql:///s"),
        ("production", "postgresql://relay_bot@/p", "postgresql:///p"),
    ]


def test_database_problems_are_listed_together() -> None:
    found, problems = config.databases(
        {"databases": {"bad name!": {"dsn": "postgresql:///a"}, "qa": {"dsn": "", "relay": "x"}, "x": 3}}
    )
    assert found == []
    assert problems == [
        "databases.bad name!: the name 'bad name!' must be letters, digits, '_', '.', '-' (at most 63)",
        "databases.qa.relay: unknown setting (known: admin_dsn, dsn, relay_dsn)",
        "databases.qa.dsn: must be a DSN such as postgresql://user@host:5432/db",
        "databases.x: must be a table with dsn = ...",
    ]


def test_the_dashboard_accepts_relay_dsn(write: Callable[..., Path], password_hash: str) -> None:
    path = write(production={"dsn": "postgresql:///p", "relay_dsn": "postgresql://relay_bot@/p"})
    path.write_text(path.read_text() + USER.format(hash=password_hash))
    settings = load_dashboard(path, env={})
    [production] = settings.databases
    assert (production.name, production.dsn, production.relay_dsn) == (
        "production",
        "postgresql:///p",
        "postgresql://relay_bot@/p",
    )


def test_the_dashboard_still_reports_bad_databases_in_its_own_words(write: Callable[..., Path]) -> None:
    path = write(production={"dsn": "postgresql:///p", "relay_dsn": 5})
    with pytest.raises(ConfigError) as raised:
        load_dashboard(path, env={})
    assert "databases.production.relay_dsn: must be a DSN such as postgresql://user@host:5432/db" in (
        raised.value.problems
    )
    assert str(raised.value).startswith("invalid dashboard configuration")


@pytest.fixture(scope="module")
def password_hash() -> str:
    from argon2 import PasswordHasher

    return PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("a good password")
