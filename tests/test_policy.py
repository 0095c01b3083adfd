"""Policy files: check, render (golden files), diff and apply, per environment."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pglast
import psycopg
import pytest
from click.testing import CliRunner
from helpers import scalar
from pg_guardian import policy
from pg_guardian.cli import main
from response_support import load_dental

FIXTURES = Path(__file__).parent / "fixtures" / "policy"
DENTAL = FIXTURES / "dental.toml"
ENVIRONMENTS = ("production", "staging", "local")

# Everything a policy can change, to prove that a second apply changes nothing.
STATE = """
SELECT (SELECT jsonb_agg(to_jsonb(e) ORDER BY true) FROM guardian.environment AS e),
       (SELECT jsonb_agg(jsonb_build_array(r.name, r.enabled, r.severity, r.safe_for_automation,
                                           r.updated_at) ORDER BY r.name)
          FROM guardian.rules AS r),
       (SELECT jsonb_agg(to_jsonb(w) ORDER BY w.relid) FROM guardian.watched_tables AS w),
       (SELECT jsonb_agg(to_jsonb(t) ORDER BY t.relid) FROM guardian.table_modes AS t),
       (SELECT jsonb_agg(to_jsonb(a) ORDER BY a.name) FROM guardian.activity_rules AS a),
       (SELECT jsonb_agg(to_jsonb(t) ORDER BY t.relid, t.name)
          FROM guardian.table_activity_rules AS t),
       (SELECT jsonb_agg(to_jsonb(s) ORDER BY s.environment, s.key) FROM guardian.settings AS s),
       (SELECT jsonb_agg(to_jsonb(p) ORDER BY p.environment) FROM guardian.policies AS p),
       (SELECT count(*) FROM guardian.monitoring_alerts),
       (SELECT jsonb_agg(t.tgname ORDER BY t.tgrelid, t.tgname)
          FROM pg_trigger AS t WHERE t.tgname LIKE 'guardian\\_%')
"""


def state(conn: psycopg.Connection) -> tuple[Any, ...]:
    row = conn.execute(STATE).fetchone()
    assert row is not None
    return tuple(row)


@pytest.fixture
def dental(db: psycopg.Connection) -> psycopg.Connection:
    load_dental(db, data=False)
    db.execute("SELECT guardian.unwatch('dental.clinics'), guardian.unwatch('dental.patients')")
    return db


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_render_matches_the_golden_file(environment: str) -> None:
    rendered = policy.render(policy.load(DENTAL, env={}), environment)
    golden = FIXTURES / f"{environment}.sql"
    if os.environ.get("GUARDIAN_UPDATE_GOLDEN"):
        golden.write_text(rendered)
    assert rendered == golden.read_text()
    assert pglast.parse_sql(rendered)


def test_apply_makes_the_database_match_and_a_second_apply_changes_nothing(
    dental: psycopg.Connection,
) -> None:
    dental.execute("SELECT guardian.set_environment('production')")
    pol = policy.load(DENTAL, env={})
    first = policy.apply(dental, pol, "production")
    assert {c.path for c in first.changes} >= {
        "environments.production.mode",
        'environments.production.tables."dental.patients".mode',
        "environments.production.rules.degenerate_phone.enabled",
        "environments.production.lockdown.auto",
        "environments.production.routes",
    }
    assert policy.diff(dental, pol, "production") == []
    assert scalar(dental, "SELECT guardian.effective_mode('dental.patients')") == "strict"
    assert scalar(dental, "SELECT auto_lockdown FROM guardian.response_settings") is True
    assert scalar(dental, "SELECT guardian.setting('alerts.routes')")[0]["channels"] == [
        "slack",
        "email",
    ]
    watched = scalar(
        dental,
        "SELECT columns FROM guardian.watched_tables WHERE relid = 'dental.appointments'::regclass",
    )
    kinds = {c["column"]: c["kind"] for c in watched}
    assert kinds["notes"] == "free_text" and "procedure" not in kinds  # procedure = false
    before = state(dental)
    second = policy.apply(dental, pol, "production")
    assert second.changes == []
    assert state(dental) == before
    # The rendered SQL itself is idempotent too, run as it is.
    dental.execute(policy.render(pol, "production"))
    assert state(dental) == before


def test_a_database_refuses_a_policy_for_another_environment_unless_forced(
    dental: psycopg.Connection,
) -> None:
    pol = policy.load(DENTAL, env={})
    before = state(dental)
    with pytest.raises(
        policy.PolicyError,
        match="this database is environment local, not production: refusing the production policy",
    ):
        policy.apply(dental, pol, "production")
    # The SQL refuses on its own too (psql -f).
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="refusing the production policy"):
        dental.execute(policy.render(pol, "production"))
    dental.execute("ROLLBACK")  # the script's own BEGIN
    assert state(dental) == before
    result = policy.apply(dental, pol, "production", force=True)
    assert result.forced and result.database_environment == "local"
    assert scalar(dental, "SELECT guardian.current_mode()") == "strict"
    assert scalar(dental, "SELECT severity FROM guardian.monitoring_alerts WHERE type = 'POLICY_APPLIED'") == "HIGH"
    # A production database refuses the local policy just the same.
    dental.execute("SELECT guardian.set_environment('production')")
    with pytest.raises(policy.PolicyError, match="refusing the local policy"):
        policy.apply(dental, pol, "local")


def test_a_broken_policy_file_lists_every_error_with_its_line() -> None:
    with pytest.raises(policy.PolicyError) as caught:
        policy.load(FIXTURES / "broken.toml", env={})
    problems = [p.replace(str(FIXTURES) + "/", "") for p in caught.value.problems]
    assert problems == [
        "broken.toml:4: defaults.mode: 'paranoid' is not one of off, warn, strict",
        "broken.toml:9: environments.production.colour: unknown setting (known: activity, "
        "auto_cleanup, lockdown, mode, packs, quarantine, routes, rules, tables)",
        "broken.toml:12: environments.production.rules.test_marker.enabled: must be true or false, not 'yes'",
        "broken.toml:12: environments.production.rules.test_marker.severity: 'URGENT' is not one "
        "of CRITICAL, HIGH, MEDIUM, LOW, INFO",
        "broken.toml:15: environments.production.tables.patients: tables are named schema.table, "
        'e.g. "dental.patients"',
        "broken.toml:16: environments.production.tables.\"dental.clinics\".columns.name: 'label' "
        "is not a kind (email, person_name, organization, phone, identifier, free_text) or false "
        "(not watched)",
        "broken.toml:19: environments.production.activity.bulk_statement.threshold: must be a "
        "whole number from 0 to 1000000000, not -5",
        "broken.toml:20: environments.production.activity.off_hours.start: must be a time as HH:MM, not '25:00'",
        "broken.toml:20: environments.production.activity.off_hours: an off-hours window needs both start and end",
        "broken.toml:23: environments.production.lockdown.auto: must be true or false, not 'on'",
        "broken.toml:24: environments.production.lockdown.threshold: must be a whole number from "
        "1 to 1000000000, not 0",
        'broken.toml:26: environments.production.routes.0: a route needs channels, e.g. channels = ["slack"]',
        "broken.toml:27: environments.production.routes.0.severity: 'SEVERE' is not one of "
        "CRITICAL, HIGH, MEDIUM, LOW, INFO",
        "broken.toml:29: environments.Staging: environment names are lower-case words, e.g. production",
    ]


def test_a_broken_policy_file_is_rejected_with_nothing_applied(dental: psycopg.Connection, dsn: str) -> None:
    before = state(dental)
    result = CliRunner().invoke(
        main,
        [
            "policy",
            "apply",
            "--env",
            "production",
            "--dsn",
            dsn,
            "-f",
            str(FIXTURES / "broken.toml"),
        ],
    )
    assert result.exit_code == 2
    assert result.output.startswith(f"error: invalid policy file {FIXTURES / 'broken.toml'} (14 problems):")
    assert state(dental) == before


def test_a_policy_naming_what_the_database_lacks_is_refused_whole(
    dental: psycopg.Connection,
) -> None:
    pol = policy.load(FIXTURES / "unknown_names.toml", env={})
    before = state(dental)
    with pytest.raises(policy.PolicyError) as caught:
        policy.apply(dental, pol, "local")
    assert "(6 problems; nothing was changed)" in str(caught.value)
    problems = sorted(p.replace(str(FIXTURES) + "/", "") for p in caught.value.problems)
    packs = scalar(dental, "SELECT string_agg(DISTINCT pack, ', ' ORDER BY pack) FROM guardian.rules")
    assert problems == sorted(
        [
            f"unknown_names.toml:4: defaults.packs: no rule pack named made_up_pack (packs: {packs})",
            "unknown_names.toml:10: environments.local.rules.no_such_rule: no rule named "
            "no_such_rule (see SELECT name, pack FROM guardian.rules)",
            'unknown_names.toml:12: environments.local.tables."dental.nonexistent": no table named '
            "dental.nonexistent in this database",
            'unknown_names.toml:16: environments.local.tables."dental.patients".columns.shoe_size: '
            "table dental.patients has no column shoe_size",
            "unknown_names.toml:19: environments.local.activity.bulk_statment: no activity rule "
            "named bulk_statment (rules: bulk_minute, bulk_statement, off_hours, rapid_creation, "
            "suspicious_rate, unfiltered_write)",
            "unknown_names.toml:21: environments.local.lockdown: no role named ghost_role",
        ]
    )
    assert state(dental) == before


def test_the_sql_refuses_missing_names_on_its_own(dental: psycopg.Connection) -> None:
    pol = policy.load(FIXTURES / "unknown_names.toml", env={})
    with pytest.raises(
        psycopg.errors.UndefinedObject,
        match=r"no rule named no_such_rule.*no table named dental\.nonexistent",
    ):
        dental.execute(policy.render(pol, "local"))
    dental.execute("ROLLBACK")


def test_invalid_toml_and_unknown_environments_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[environments.production]\nmode = "strict\n')
    with pytest.raises(policy.PolicyError, match=r"bad.toml:2: not valid TOML"):
        policy.load(bad)
    with pytest.raises(
        policy.PolicyError,
        match=r"has no environment 'prod' \(environments: local, production, staging\)",
    ):
        policy.render(policy.load(DENTAL, env={}), "prod")
    with pytest.raises(policy.PolicyError, match=r"policy file .*missing\.toml does not exist"):
        policy.load(tmp_path / "missing.toml")


def test_the_designs_environment_variables_override_the_file() -> None:
    pol = policy.load(DENTAL, env={"AUTO_CLEANUP_ENABLED": "true", "LOCKDOWN_THRESHOLD": "250"})
    rendered = policy.render(pol, "production")
    assert "-- overridden from the environment: AUTO_CLEANUP_ENABLED=true" in rendered
    assert "SELECT guardian.set_response_setting('auto_cleanup.enabled', 'true'::jsonb)" in rendered
    assert "SELECT guardian.set_param('lockdown.threshold', 250, guardian.current_environment())" in rendered
    with pytest.raises(policy.PolicyError, match="LOCKDOWN_THRESHOLD: 'lots' is not a whole number"):
        policy.load(DENTAL, env={"LOCKDOWN_THRESHOLD": "lots"})


def test_policy_cli_check_render_diff_apply(dental: psycopg.Connection, dsn: str) -> None:
    runner = CliRunner()
    env = {"AUTO_CLEANUP_ENABLED": "", "LOCKDOWN_THRESHOLD": "", "GUARDIAN_CONFIG": ""}
    checked = runner.invoke(main, ["policy", "check", "-f", str(DENTAL), "--dsn", dsn], env=env)
    assert checked.exit_code == 0, checked.output
    assert checked.output == f"policy {DENTAL} ok: environments local, production, staging\n"
    rendered = runner.invoke(main, ["policy", "render", "--env", "staging", "-f", str(DENTAL)], env=env)
    assert rendered.exit_code == 0 and rendered.output == (FIXTURES / "staging.sql").read_text()
    dental.execute("SELECT guardian.set_environment('staging')")
    diffed = runner.invoke(main, ["policy", "diff", "--env", "staging", "-f", str(DENTAL), "--dsn", dsn], env=env)
    assert diffed.exit_code == 1
    assert "environments.staging.auto_cleanup.enabled: database false, policy true" in diffed.output
    applied = runner.invoke(main, ["policy", "apply", "--env", "staging", "-f", str(DENTAL), "--dsn", dsn], env=env)
    assert applied.exit_code == 0 and "applied the staging policy to staging" in applied.output
    again = runner.invoke(main, ["policy", "apply", "--env", "staging", "-f", str(DENTAL), "--dsn", dsn], env=env)
    assert again.output == "nothing to change: the database already matches the staging policy\n"
    clean = runner.invoke(main, ["policy", "diff", "--env", "staging", "-f", str(DENTAL), "--dsn", dsn], env=env)
    assert clean.exit_code == 0 and "the database matches the staging policy" in clean.output
    refused = runner.invoke(main, ["policy", "apply", "--env", "production", "-f", str(DENTAL), "--dsn", dsn], env=env)
    assert refused.exit_code == 2 and "pass --force" in refused.output
    missing = runner.invoke(
        main, ["policy", "check", "-f", str(FIXTURES / "unknown_names.toml"), "--dsn", dsn], env=env
    )
    assert missing.exit_code == 2 and "no rule named no_such_rule" in missing.output


def test_routes_are_checked_against_the_relay_configuration(tmp_path: Path) -> None:
    pol = policy.load(DENTAL, env={})
    assert policy.check_routes(pol, {"slack", "email"}) == []
    problems = policy.check_routes(pol, {"slack"})
    assert len(problems) == 1 and "no channel named 'email' in the relay configuration (channels: slack)" in problems[0]


def test_the_relay_routes_by_the_routes_of_the_policy(dental: psycopg.Connection, dsn: str) -> None:
    import logging

    from pg_guardian import config as config_mod
    from pg_guardian.relay import Relay

    # Two webhook channels and no routes of its own: by default CRITICAL goes to both.
    cfg = config_mod.load(
        None,
        env={},
        overrides={
            "channels": {
                "ops": {"type": "webhook", "url": "http://127.0.0.1:9/ops"},
                "oncall": {"type": "webhook", "url": "http://127.0.0.1:9/oncall"},
            }
        },
    )

    def routed(message: str) -> set[str]:
        alert = scalar(dental, "SELECT guardian.raise_alert('LOCKDOWN', 'CRITICAL', %s)", (message,))
        Relay(dsn, cfg, once=True, log=logging.getLogger("test.relay")).run()
        return {r[0] for r in dental.execute("SELECT channel FROM guardian.relay_outbox WHERE alert_id = %s", (alert,))}

    assert routed("before any policy") == {"ops", "oncall"}
    dental.execute("""SELECT guardian.set_response_setting('alerts.routes',
                          '[{"channels": ["oncall"], "severity": ["CRITICAL"]}]')""")
    assert routed("with the policy's routes") == {"oncall"}
