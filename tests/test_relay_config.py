"""Relay configuration: environment variables, routing, refusing bad input (every problem)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from pg_guardian.cli import main
from pg_guardian.errors import ConfigError
from pg_guardian.relay import config as config_mod

SLACK = "https://hooks.slack.com/services/T000/B000/SECRETPART"


def test_documented_environment_variables_configure_the_channels() -> None:
    cfg = config_mod.load(
        None,
        env={
            "SLACK_WEBHOOK_URL": SLACK,
            "ADMIN_EMAIL": "ops@example.com, dba@example.com",
            "SMTP_HOST": "mail.example.com",
            "SMTP_PORT": "2525",
            "SMTP_USER": "u",
            "SMTP_PASSWORD": "p",
            "SMTP_SECURITY": "ssl",
            "SMTP_FROM": "guardian@example.com",
            "APP_URL": "https://admin.example.com/",
            "GUARDIAN_WEBHOOK_URL": "http://127.0.0.1:9/hook",
            "GUARDIAN_WEBHOOK_SECRET": "k",
            "GUARDIAN_RELAY_MAX_ATTEMPTS": "3",
            "MONITORING_ENABLED": "true",
        },
    )
    assert set(cfg.channels) == {"slack", "email", "webhook"}
    email = cfg.channels["email"]
    assert email.to == ("ops@example.com", "dba@example.com")
    assert (email.host, email.port, email.security, email.smtp_user, email.sender) == (
        "mail.example.com",
        2525,
        "ssl",
        "u",
        "guardian@example.com",
    )
    assert cfg.channels["webhook"].secret == "k"
    assert cfg.relay.max_attempts == 3
    assert cfg.app_url == "https://admin.example.com"


def test_default_routes_follow_the_design() -> None:
    cfg = config_mod.load(None, env={"SLACK_WEBHOOK_URL": SLACK, "ADMIN_EMAIL": "ops@example.com"})
    assert cfg.route({"severity": "CRITICAL", "type": "X"}) == ["slack", "email"]
    assert cfg.route({"severity": "HIGH", "type": "X"}) == ["slack"]
    assert cfg.route({"severity": "MEDIUM", "type": "X"}) == []
    assert cfg.route({"severity": "INFO", "type": "X"}) == []


def test_routes_match_type_globs_environment_and_continue() -> None:
    cfg = config_mod.load(
        None,
        env={},
        overrides={
            "channels": {
                "ops": {"type": "slack", "url": SLACK},
                "hook": {"type": "webhook", "url": "http://127.0.0.1:9/"},
            },
            "routes": [
                {
                    "type": ["TEST_DATA_*"],
                    "environment": ["production"],
                    "channels": ["ops"],
                    "continue": True,
                },
                {"severity": ["critical", "HIGH"], "channels": ["hook"]},
                {"channels": []},
            ],
        },
    )
    prod = {"severity": "LOW", "type": "TEST_DATA_CONTAMINATION", "environment": "production"}
    assert cfg.route(prod) == ["ops"]
    assert cfg.route({**prod, "severity": "CRITICAL"}) == ["ops", "hook"]
    assert cfg.route({**prod, "environment": "staging"}) == []


def test_dead_letter_alerts_go_to_every_other_channel() -> None:
    cfg = config_mod.load(None, env={"SLACK_WEBHOOK_URL": SLACK, "ADMIN_EMAIL": "ops@example.com"})
    alert = {"severity": "HIGH", "type": "RELAY_DEAD_LETTER", "failed_channel": "slack"}
    assert cfg.route(alert) == ["email"]


def test_invalid_configuration_lists_every_problem() -> None:
    with pytest.raises(ConfigError) as err:
        config_mod.load(
            None,
            env={
                "SLACK_WEBHOOK_URL": "htp:/hooks.slack.com",
                "GUARDIAN_WEBHOOK_URL": "http://exa mple.com/x",
                "ADMIN_EMAIL": "not-an-address",
                "SMTP_SECURITY": "tls",
                "SMTP_USER": "only-user",
                "GUARDIAN_RELAY_POLL_INTERVAL": "soon",
                "MONITORING_ENABLED": "perhaps",
                "APP_URL": "admin",
            },
            overrides={
                "routes": [{"severity": ["URGENT"], "channels": ["pager"]}],
                "relay": {"bogus": 1},
            },
        )
    problems = err.value.problems
    text = "\n".join(problems)
    for expected in (
        "channels.slack.url",
        "channels.webhook.url",
        "channels.email.to",
        "channels.email.security",
        "needs both username",
        "relay.poll_interval",
        "monitoring_enabled",
        "app_url",
        "'URGENT' is not one of",
        "no channel named 'pager'",
        "relay.bogus: unknown setting",
    ):
        assert expected in text, expected
    assert len(problems) >= 11
    assert str(err.value).startswith(f"invalid configuration ({len(problems)} problems):")


def test_secrets_are_masked_when_the_configuration_is_shown() -> None:
    cfg = config_mod.load(
        None,
        env={
            "SLACK_WEBHOOK_URL": SLACK,
            "GUARDIAN_WEBHOOK_URL": "http://127.0.0.1:9/x",
            "GUARDIAN_WEBHOOK_SECRET": "topsecret",
        },
    )
    shown = str(cfg.describe())
    assert "SECRETPART" not in shown and "topsecret" not in shown
    assert "hooks.slack.com" in shown


def test_config_file_is_read_and_environment_wins(tmp_path: Path) -> None:
    path = tmp_path / "guardian.toml"
    path.write_text(
        'app_url = "https://file.example.com"\n'
        "[relay]\nmax_attempts = 4\n"
        '[channels.webhook]\nurl = "http://127.0.0.1:1/from-file"\ngroup_by = ["id"]\n'
    )
    cfg = config_mod.load(path, env={"APP_URL": "https://env.example.com"})
    assert cfg.app_url == "https://env.example.com"
    assert cfg.relay.max_attempts == 4
    assert cfg.channels["webhook"].url.endswith("/from-file")
    assert not cfg.channels["webhook"].grouped


def test_config_check_cli_exits_2_with_every_problem() -> None:
    result = CliRunner().invoke(
        main,
        ["config", "check"],
        env={"SLACK_WEBHOOK_URL": "not a url", "ADMIN_EMAIL": "x", "GUARDIAN_CONFIG": ""},
    )
    assert result.exit_code == 2
    assert result.output.startswith("error: invalid configuration (2 problems):")
    assert "channels.slack.url" in result.output and "channels.email.to" in result.output
    assert "Traceback" not in result.output


def test_config_check_cli_shows_channels_and_routes() -> None:
    result = CliRunner().invoke(main, ["config", "check"], env={"SLACK_WEBHOOK_URL": SLACK, "GUARDIAN_CONFIG": ""})
    assert result.exit_code == 0, result.output
    assert "channel slack [slack]" in result.output
    assert "route severity=CRITICAL -> slack" in result.output


def test_template_with_a_syntax_error_is_refused_at_start(tmp_path: Path) -> None:
    (tmp_path / "email").mkdir()
    (tmp_path / "email" / "alert.html.j2").write_text("<p>\n{{ message }\n</p>\n")
    with pytest.raises(ConfigError) as err:
        config_mod.load(None, env={"GUARDIAN_TEMPLATE_DIR": str(tmp_path), "ADMIN_EMAIL": "ops@example.com"})
    assert err.value.problems == [f"template {tmp_path}/email/alert.html.j2 line 2: unexpected '}}'"]


def test_durations_accept_units_and_refuse_nonsense() -> None:
    assert [config_mod.parse_duration(v) for v in (5, "500ms", "30s", "5m", "4h", "1d")] == [
        5.0,
        0.5,
        30.0,
        300.0,
        14400.0,
        86400.0,
    ]
    for bad in ("-1s", "soon", True, None):
        with pytest.raises(ValueError):
            config_mod.parse_duration(bad)
