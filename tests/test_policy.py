"""Policy files: check, render (golden files), diff and apply, per environment."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pglast
import psycopg
import pytest
from click.testing import CliRunner
from pg_guardian.cli import main
from pg_guardian.response import policy
from support.queries import scalar
from support.response import load_dental

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
       (SELECT jsonb_agg(to_jsonb(s) ORDER BY s.environment, s.metric, s.subject)
          FROM guardian.anomaly_settings AS s),
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
        "anomalies, auto_cleanup, lockdown, mode, packs, quarantine, routes, rules, tables)",
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

    from pg_guardian.relay import Relay
    from pg_guardian.relay import config as config_mod

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


# ---- L1: nothing in a policy file becomes SQL of its own ------------------------------------

INJECTED = "INSERT INTO public.sec_proof VALUES ('from the policy');--"


def test_a_table_name_with_a_line_break_and_sql_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "evil.toml"
    path.write_text(f'[environments.local.tables]\n"public.\\"p\\n{INJECTED}\\"" = "warn"\n')
    with pytest.raises(policy.PolicyError) as caught:
        policy.load(path, env={})
    [problem] = caught.value.problems
    assert problem.startswith(f"{path}:2: environments.local.tables.")
    assert "\n" not in problem  # the name is shown escaped, on one line
    name = f'public."p\n{INJECTED}"'
    assert f"the name {name!r} holds a control character (\\n)" in problem
    assert problem.endswith("cannot hold line breaks or other control characters: remove it from the file")


def test_control_characters_are_reported_with_every_other_problem(tmp_path: Path) -> None:
    path = tmp_path / "evil.toml"
    path.write_text(
        "[environments.local]\n"
        'mode = "paranoid"\n'
        'packs = ["reserved_domains\\r"]\n'
        '[environments.local.activity.off_hours]\nstart = "22:00"\nend = "06:00"\ntimezone = "UTC\\u2028"\n'
        '[environments."staging\\n"]\n'
    )
    with pytest.raises(policy.PolicyError) as caught:
        policy.load(path, env={"LOCKDOWN_THRESHOLD": "250\n"})
    text = "\n".join(caught.value.problems)
    assert len(caught.value.problems) == 5, text
    assert "environments.local.packs: the value 'reserved_domains\\r' holds a control character (\\r)" in text
    assert "environments.local.activity.off_hours.timezone: the value 'UTC\\u2028' holds a control character" in text
    assert "environments.\"staging\\n\": the name 'staging\\n' holds a control character (\\n)" in text
    assert "LOCKDOWN_THRESHOLD: the value '250\\n' holds a control character (\\n)" in text
    assert "environments.local.mode: 'paranoid' is not one of off, warn, strict" in text
    assert str(caught.value).startswith(f"invalid policy file {path} (5 problems):")


def test_names_with_a_final_newline_do_not_pass_the_patterns() -> None:
    assert not policy.TABLE_NAME.fullmatch("public.p\n")
    assert not policy.ENV_NAME.fullmatch("production\n")
    assert not policy.HHMM.fullmatch("22:00\n")


def _hostile(word: str) -> str:
    return f"{word}\n{INJECTED}\r\u2028\x1b'\\"


def _policy_naming(name: Any) -> policy.Policy:
    """A policy (not checked by load()) whose every name and string comes from ``name``."""
    table = f'public."{name("patients")}"'
    section = {
        "mode": "strict",
        "packs": [name("pack")],
        "rules": {name("rule"): {"enabled": True, "severity": "HIGH"}},
        "tables": {
            table: {
                "mode": "warn",
                "columns": {name("email"): "email", name("notes"): False},
                "activity": {name("bulk_statement"): {"threshold": 5}},
                "anomalies": {"enabled": False, "time_zone": name("tz")},
            },
            f"public.{name('gone')}": {"watch": False},
        },
        "activity": {name("off_hours"): {"start": "22:00", "end": "06:00", "timezone": name("tz")}},
        "lockdown": {"roles": [name("role")], "threshold": 5},
        "routes": [{"channels": [name("slack")], "type": [name("TYPE")], "table_name": [table]}],
        "anomalies": {
            "enabled": True,
            "sensitivity": 0.5,
            "time_zone": name("tz"),
            "metrics": {name("connections"): {"sensitivity": 2, "time_zone": name("tz")}},
        },
    }
    env = name("production")
    pol = policy.Policy(path=Path(f"{name('policy')}.toml"), environments={env: section})
    pol.overrides[env] = [f"LOCKDOWN_THRESHOLD={name('5')}"]
    return pol


def _skeleton(node: Any) -> Any:
    """A parse tree with every string constant and position blanked out."""
    if isinstance(node, dict):
        if node.get("@") == "String" and "sval" in node:
            return {"@": "String", "sval": "?"}
        return {k: _skeleton(v) for k, v in node.items() if k != "location"}
    if isinstance(node, list | tuple):
        return [_skeleton(v) for v in node]
    return node


def test_a_rendered_script_holds_only_the_templates_lines_and_statements() -> None:
    plain = _policy_naming(lambda word: word)
    hostile = _policy_naming(_hostile)
    wanted = policy.render(plain, "production")
    got = policy.render(hostile, _hostile("production"))
    assert INJECTED in got  # the payload is there, but only as text
    assert len(got.splitlines()) == len(wanted.splitlines())
    for line, template_line in zip(got.splitlines(), wanted.splitlines(), strict=True):
        assert line.startswith("--") == template_line.startswith("--"), line
    # Parsed, the two scripts are the same statements, differing only in their string constants.
    assert [_skeleton(s.stmt(skip_none=True)) for s in pglast.parse_sql(got)] == [
        _skeleton(s.stmt(skip_none=True)) for s in pglast.parse_sql(wanted)
    ]
    kinds = {type(s.stmt).__name__ for s in pglast.parse_sql(got)}
    assert kinds == {"TransactionStmt", "SelectStmt", "UpdateStmt", "InsertStmt"}
    policy.check_script(got)  # what apply() checks before it runs anything


def test_apply_refuses_a_script_with_a_statement_the_template_does_not_make() -> None:
    with pytest.raises(policy.PolicyError, match=r"a statement the policy template does not make: DeleteStmt"):
        policy.check_script("BEGIN;\nSELECT 1;\nDELETE FROM public.sec_proof;\nCOMMIT;\n")
    with pytest.raises(policy.PolicyError, match=r"InsertStmt into public\.sec_proof"):
        policy.check_script("INSERT INTO public.sec_proof VALUES (1);\n")
    with pytest.raises(policy.PolicyError, match=r"SelectStmt with a WITH clause"):
        policy.check_script("WITH gone AS (DELETE FROM public.sec_proof RETURNING 1) SELECT count(*) FROM gone;\n")


def test_the_reproduction_changes_nothing_through_the_cli(dental: psycopg.Connection, dsn: str, tmp_path: Path) -> None:
    dental.execute("CREATE TABLE public.sec_proof (note text)")
    path = tmp_path / "evil.toml"
    path.write_text(f'[environments.local.tables]\n"public.\\"p\\n{INJECTED}\\"" = "warn"\n')
    before = state(dental)
    result = CliRunner().invoke(main, ["policy", "apply", "--env", "local", "--dsn", dsn, "-f", str(path)])
    assert result.exit_code == 2
    assert "holds a control character (\\n)" in result.output
    assert state(dental) == before
    assert scalar(dental, "SELECT count(*) FROM public.sec_proof") == 0


# ---- anomaly detection -----------------------------------------------------------------------

ANOMALIES = """\
[defaults.anomalies]
enabled = true
sensitivity = 1.0
time_zone = "Europe/Berlin"

[environments.staging.anomalies]
sensitivity = 2

[environments.staging.anomalies.metrics."connections"]
sensitivity = 0.5
time_zone = "America/New_York"

[environments.staging.tables."dental.patients".anomalies]
enabled = false

[environments.production]
mode = "strict"
"""


def _anomaly_policy(tmp_path: Path, text: str = ANOMALIES) -> policy.Policy:
    path = tmp_path / "anomalies.toml"
    path.write_text(text)
    return policy.load(path, env={})


def _config(conn: psycopg.Connection, metric: str, subject: str) -> tuple[Any, ...]:
    row = conn.execute("SELECT * FROM guardian._anomaly_config(%s, %s)", (metric, subject)).fetchone()
    assert row is not None
    return tuple(row)


def test_anomaly_settings_are_checked_with_their_lines(tmp_path: Path) -> None:
    path = tmp_path / "anomalies.toml"
    path.write_text(
        "[defaults.anomalies]\n"
        'enabled = "yes"\n'
        "sensitivity = 5\n"
        "time_zone = 3\n"
        'timezone = "UTC"\n'
        '[environments.staging.anomalies.metrics."Connections!"]\n'
        "sensitivity = true\n"
        '[environments.staging.tables."dental.patients".anomalies]\n'
        "metrics = {}\n"
        "sensitivity = 0.1\n"
    )
    with pytest.raises(policy.PolicyError) as caught:
        policy.load(path, env={})
    assert [p.replace(f"{tmp_path}/", "") for p in caught.value.problems] == [
        "anomalies.toml:5: defaults.anomalies.timezone: unknown setting (known: enabled, metrics, "
        "sensitivity, time_zone)",
        "anomalies.toml:2: defaults.anomalies.enabled: must be true or false, not 'yes'",
        "anomalies.toml:3: defaults.anomalies.sensitivity: must be a number from 0.25 to 4 (1 is the "
        "default, 2 alerts on smaller departures, 0.5 only on larger ones), not 5",
        "anomalies.toml:4: defaults.anomalies.time_zone: must be a time zone name such as Europe/Berlin, not 3",
        'anomalies.toml:9: environments.staging.tables."dental.patients".anomalies.metrics: unknown '
        "setting (known: enabled, sensitivity, time_zone)",
        'anomalies.toml:10: environments.staging.tables."dental.patients".anomalies.sensitivity: must '
        "be a number from 0.25 to 4 (1 is the default, 2 alerts on smaller departures, 0.5 only on "
        "larger ones), not 0.1",
        "anomalies.toml:6: environments.staging.anomalies.metrics.Connections!: metrics are named like "
        "connections or writes.update (see SELECT name FROM guardian.metrics)",
        "anomalies.toml:7: environments.staging.anomalies.metrics.Connections!.sensitivity: must be a "
        "number from 0.25 to 4 (1 is the default, 2 alerts on smaller departures, 0.5 only on larger "
        "ones), not true",
    ]


def test_apply_sets_anomaly_detection_per_environment_metric_and_table(
    dental: psycopg.Connection, tmp_path: Path
) -> None:
    dental.execute("SELECT guardian.set_environment('staging')")
    database = scalar(dental, "SELECT current_database()")
    pol = _anomaly_policy(tmp_path)
    assert {d.describe() for d in policy.diff(dental, pol, "staging")} >= {
        "environments.staging.anomalies.sensitivity: database not set, policy 2",
        "environments.staging.anomalies.metrics.connections.sensitivity: database not set, policy 0.5",
        'environments.staging.tables."dental.patients".anomalies.enabled: database not set, policy false',
    }
    result = policy.apply(dental, pol, "staging")
    assert {c.path for c in result.changes} >= {
        "environments.staging.anomalies.enabled",
        "environments.staging.anomalies.time_zone",
        "environments.staging.anomalies.metrics.connections.time_zone",
    }
    # The table's writes are off; every other series follows the environment and the metric.
    for metric in ("writes.insert", "writes.update", "writes.delete"):
        assert _config(dental, metric, "dental.patients") == (False, 2.0, "Europe/Berlin")
    assert _config(dental, "writes.update", "dental.clinics") == (True, 2.0, "Europe/Berlin")
    assert _config(dental, "connections", database) == (True, 0.5, "America/New_York")
    # Scoped to this environment: production is untouched.
    assert scalar(dental, "SELECT count(*) FROM guardian.anomaly_settings WHERE environment <> 'staging'") == 0
    assert policy.diff(dental, pol, "staging") == []


def test_a_second_anomaly_apply_changes_nothing(dental: psycopg.Connection, tmp_path: Path) -> None:
    dental.execute("SELECT guardian.set_environment('staging')")
    pol = _anomaly_policy(tmp_path)
    policy.apply(dental, pol, "staging")
    before = state(dental)
    assert policy.apply(dental, pol, "staging").changes == []
    dental.execute(policy.render(pol, "staging"))  # the SQL itself, run as it is
    assert state(dental) == before


def test_diff_reports_anomaly_settings_changed_in_the_database(dental: psycopg.Connection, tmp_path: Path) -> None:
    dental.execute("SELECT guardian.set_environment('staging')")
    pol = _anomaly_policy(tmp_path)
    policy.apply(dental, pol, "staging")
    dental.execute(
        """SELECT guardian.set_anomaly_settings('*', 'dental.patients', p_enabled => true, p_environment => 'staging'),
                  guardian.set_anomaly_settings(p_time_zone => 'UTC', p_environment => 'staging')"""
    )
    assert [d.describe() for d in policy.diff(dental, pol, "staging")] == [
        "environments.staging.anomalies.time_zone: database 'UTC', policy 'Europe/Berlin'",
        'environments.staging.tables."dental.patients".anomalies.enabled: database true, policy false',
    ]
    assert len(policy.apply(dental, pol, "staging").changes) == 2
    assert _config(dental, "writes.insert", "dental.patients") == (False, 2.0, "Europe/Berlin")


def test_unknown_time_zones_and_metrics_are_refused_with_their_lines(
    dental: psycopg.Connection, tmp_path: Path
) -> None:
    pol = _anomaly_policy(
        tmp_path,
        '[environments.local.anomalies]\ntime_zone = "CEST"\n'
        '[environments.local.anomalies.metrics."conections"]\nenabled = false\n',
    )
    before = state(dental)
    with pytest.raises(policy.PolicyError) as caught:
        policy.apply(dental, pol, "local")
    problems = [p.replace(f"{tmp_path}/", "") for p in caught.value.problems]
    assert problems[0] == (
        "anomalies.toml:2: environments.local.anomalies.time_zone: unknown time zone 'CEST': use a name "
        "from pg_timezone_names, e.g. Europe/Berlin (not an abbreviation: seasons must follow "
        "daylight-saving changes)"
    )
    assert problems[1].startswith(
        "anomalies.toml:3: environments.local.anomalies.metrics.conections: no metric named conections "
        "(metrics: alerts.raised, connections, "
    )
    assert len(problems) == 2
    assert state(dental) == before


def test_a_database_before_0_2_0_refuses_only_a_policy_with_anomalies(
    cluster: Any, blank_dbname: str, tmp_path: Path
) -> None:
    from pg_guardian import install as install_mod

    with psycopg.connect(cluster.dsn(blank_dbname), autocommit=True) as conn:
        install_mod.install(conn, method="sql", version="0.1.0")
        pol = _anomaly_policy(
            tmp_path, '[defaults]\nmode = "strict"\n[environments.local.anomalies]\nenabled = false\n'
        )
        problem = (
            f"{tmp_path}/anomalies.toml:3: environments.local.anomalies: anomaly detection needs pg_guardian "
            "0.2.0 or later, and this database has 0.1.0: upgrade it first (pg-guardian upgrade), or leave "
            "anomalies out of the policy"
        )
        assert policy.problems(conn, pol, "local") == [problem]
        assert [d.path for d in policy.diff(conn, pol, "local")] == ["environments.local.mode"]
        mode = scalar(conn, "SELECT guardian.current_mode()")
        with pytest.raises(policy.PolicyError) as caught:
            policy.apply(conn, pol, "local")
        assert caught.value.problems == [problem]
        assert scalar(conn, "SELECT guardian.current_mode()") == mode != "strict"
        # Without the section, the same policy applies as before.
        plain = _anomaly_policy(tmp_path, '[environments.local]\nmode = "strict"\n')
        assert policy.problems(conn, plain, "local") == []
        assert [c.path for c in policy.apply(conn, plain, "local").changes] == ["environments.local.mode"]
