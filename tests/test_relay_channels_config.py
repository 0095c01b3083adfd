"""Configuring the Apprise, Datadog and Sentry channels: environment, checks, masking."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from pg_guardian.cli import main
from pg_guardian.errors import ConfigError
from pg_guardian.relay import config as config_mod

PAGERDUTY = "pagerduty://R0UT1NGKEY0123456789@APIKEY0123456789"
TELEGRAM = "tgram://123456789:AAbbCCddEEffGGhhIIjj/987654321"
DSN = "https://f00dkey123@o1.ingest.sentry.io/4242"


def load(**channels: dict[str, object]) -> config_mod.Config:
    return config_mod.load(None, env={}, overrides={"channels": channels})


def problems(**channels: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load(**channels)
    return err.value.problems


def test_environment_variables_configure_apprise_datadog_and_sentry() -> None:
    cfg = config_mod.load(
        None,
        env={
            "GUARDIAN_APPRISE_URLS": f"{PAGERDUTY}, {TELEGRAM} ntfy://ntfy.example.com/db",
            "GUARDIAN_DATADOG_API_KEY": "dd-key",
            "GUARDIAN_DATADOG_SITE": "datadoghq.eu",
            "GUARDIAN_SENTRY_DSN": DSN,
        },
    )
    assert cfg.channels["apprise"].urls == (PAGERDUTY, TELEGRAM, "ntfy://ntfy.example.com/db")
    dd = cfg.channels["datadog"]
    assert (dd.api_key, dd.url) == ("dd-key", "https://api.datadoghq.eu/api/v1/events")
    sentry = cfg.channels["sentry"]
    assert (sentry.dsn, sentry.url) == (DSN, "https://o1.ingest.sentry.io/api/4242/envelope/")
    assert "environment GUARDIAN_APPRISE_URLS, GUARDIAN_DATADOG_API_KEY" in cfg.sources[-1]


def test_datadog_key_from_the_environment_goes_to_every_datadog_channel(tmp_path: Path) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(
        '[channels.dd-prod]\ntype = "datadog"\n[channels.dd-us5]\ntype = "datadog"\nsite = "us5.datadoghq.com"\n'
    )
    cfg = config_mod.load(path, env={"GUARDIAN_DATADOG_API_KEY": "dd-key"})
    assert set(cfg.channels) == {"dd-prod", "dd-us5"}
    assert {c.api_key for c in cfg.channels.values()} == {"dd-key"}
    assert cfg.channels["dd-us5"].url == "https://api.us5.datadoghq.com/api/v1/events"


def test_apprise_url_takes_one_url_or_a_list() -> None:
    one = load(pager={"type": "apprise", "url": PAGERDUTY})
    many = load(push={"type": "apprise", "url": [PAGERDUTY, TELEGRAM]})
    assert one.channels["pager"].urls == (PAGERDUTY,)
    assert many.channels["push"].urls == (PAGERDUTY, TELEGRAM)


def test_unknown_apprise_scheme_is_refused_naming_the_value_and_where_to_look() -> None:
    (problem,) = problems(pager={"type": "apprise", "url": "pagerdooty://x@y"})
    assert problem.startswith("channels.pager.url[0]: pagerdooty://… is not a service Apprise ")
    assert problem.endswith("find the service's URL form at https://appriseit.com/services/")


def test_apprise_url_its_plugin_refuses_gives_apprise_reason_without_the_secret() -> None:
    (bad_key, unparsable) = problems(
        pager={"type": "apprise", "url": ["pagerduty://SECRETPART", "tgram://SECRETBOT"]},
    )
    assert bad_key.startswith(
        "channels.pager.url[0]: Apprise cannot use this Pager Duty URL (pagerduty://…): "
        "An invalid Pager Duty Routing Key () was specified; "
    )
    assert unparsable.startswith("channels.pager.url[1]: Apprise cannot parse this Telegram URL (tgram://…)")
    assert "SECRETPART" not in bad_key + unparsable and "SECRETBOT" not in unparsable


def test_apprise_channel_without_url_says_how_to_give_one() -> None:
    (problem,) = problems(pager={"type": "apprise"})
    assert problem.startswith('channels.pager.url: missing (url = "pagerduty://<routing key>@<api key>"')
    assert "GUARDIAN_APPRISE_URLS" in problem


def test_datadog_and_sentry_need_their_key_and_a_well_formed_dsn() -> None:
    found = problems(
        dd={"type": "datadog", "site": "datadog hq"},
        sentry={"type": "sentry", "dsn": "https://o1.ingest.sentry.io/4242"},
        sentry2={"type": "sentry"},
    )
    assert found == [
        "channels.dd.api_key: missing (set it in the file or with GUARDIAN_DATADOG_API_KEY)",
        "channels.dd.site: 'datadog hq' is not a Datadog site such as datadoghq.com, datadoghq.eu or "
        "us5.datadoghq.com (or set api_url)",
        "channels.sentry.dsn: 'https://o1.ingest.sentry.io/4242' is not a Sentry DSN; a Sentry DSN is "
        "https://<key>@<host>/<project id>: copy it from Project Settings > Client Keys",
        "channels.sentry2.dsn: missing (set it in the file or with GUARDIAN_SENTRY_DSN)",
    ]


def test_sentry_dsn_with_a_path_prefix_keeps_it_before_api() -> None:
    cfg = load(sentry={"type": "sentry", "dsn": "http://k@sentry.internal:9000/sentry/7"})
    assert cfg.channels["sentry"].url == "http://sentry.internal:9000/sentry/api/7/envelope/"


def test_secrets_of_the_new_channels_are_masked_in_config_check() -> None:
    env = {
        "GUARDIAN_APPRISE_URLS": f"{PAGERDUTY} {TELEGRAM}",
        "GUARDIAN_DATADOG_API_KEY": "dd-secret-key",
        "GUARDIAN_SENTRY_DSN": DSN,
        "GUARDIAN_CONFIG": "",
    }
    shown = CliRunner().invoke(main, ["config", "check", "--format", "json"], env=env)
    assert shown.exit_code == 0, shown.output
    for secret in ("R0UT1NGKEY", "APIKEY0123", "AAbbCCdd", "dd-secret-key", "f00dkey123"):
        assert secret not in shown.output, secret
    channels = json.loads(shown.output)["channels"]
    assert channels["apprise"]["url"].startswith("pagerduty://****@****/")
    assert channels["datadog"]["api_key"] == "********"
    assert channels["sentry"]["dsn"] == "https://****@o1.ingest.sentry.io/4242"
    text = CliRunner().invoke(main, ["config", "check"], env=env).output
    assert "channel sentry [sentry] https://o1.ingest.sentry.io/api/4242/envelope/" in text
    assert "channel datadog [datadog] https://api.datadoghq.com/api/v1/events" in text


def test_each_channel_is_paced_by_its_own_destination() -> None:
    cfg = load(
        pager={"type": "apprise", "url": PAGERDUTY},
        chat={"type": "apprise", "url": TELEGRAM},
        dd={"type": "datadog", "api_key": "k"},
        sentry={"type": "sentry", "dsn": DSN},
    )
    assert len({c.destination for c in cfg.channels.values()}) == 4
