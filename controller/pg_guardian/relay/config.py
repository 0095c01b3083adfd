"""The relay's configuration: defaults, then the TOML file, then environment variables, then flags.

The file (:mod:`pg_guardian.config`) is named by ``--config`` or ``GUARDIAN_CONFIG``; without one
the defaults and the environment are enough (``SLACK_WEBHOOK_URL=... pg-guardian relay``). Its
tables here: ``monitoring_enabled``, ``app_url``, ``template_dir``, ``[relay]``,
``[channel_defaults]``, ``[channels.<name>]`` and ``[[routes]]``; the databases to relay without
``--dsn`` (``[databases.*]``) are read by :func:`pg_guardian.config.databases`. Documented
variables:

=========================  ====================================================================
``MONITORING_ENABLED``     ``true``/``false``: deliver alerts at all (default true)
``APP_URL``                base URL of the admin app; Slack gets a "View Cleanup Script" button
``SLACK_WEBHOOK_URL``      Slack incoming webhook: channel ``slack`` (``SLACK_CHANNEL``: #room)
``ADMIN_EMAIL``            recipients (comma-separated): channel ``email``
``SMTP_HOST`` ...          ``SMTP_PORT``, ``SMTP_USER``, ``SMTP_PASSWORD``, ``SMTP_FROM``,
                           ``SMTP_SECURITY`` (starttls, ssl, plain), ``SMTP_TIMEOUT``: every
                           email channel
``GUARDIAN_WEBHOOK_URL``   generic JSON webhook: channel ``webhook``
                           (``GUARDIAN_WEBHOOK_SECRET``: HMAC-SHA256 signing key)
``GUARDIAN_APPRISE_URLS``  Apprise URLs (space- or comma-separated): channel ``apprise``
``GUARDIAN_DATADOG_...``   ``API_KEY``, ``SITE``: every datadog channel (else channel ``datadog``)
``GUARDIAN_SENTRY_DSN``    Sentry project DSN: channel ``sentry``
``GUARDIAN_TEMPLATE_DIR``  folder whose templates override the packaged ones
``GUARDIAN_RELAY_<KEY>``   any ``[relay]`` setting, e.g. ``GUARDIAN_RELAY_MAX_ATTEMPTS=5``
=========================  ====================================================================

:func:`load` checks everything and raises one :class:`ConfigError` listing every problem.
"""

from __future__ import annotations

import fnmatch
import functools
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pg_guardian.config import Checker, merge, parse_bool, parse_duration, positive_int, read_file
from pg_guardian.errors import ConfigError
from pg_guardian.vocabulary import SEVERITIES

CHANNEL_TYPES = ("slack", "email", "webhook", "apprise", "datadog", "sentry")
GROUP_FIELDS = ("severity", "type", "environment", "table_name", "record_id", "fingerprint", "id")
SMTP_SECURITY = ("starttls", "ssl", "plain")
CHANNEL_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
DEAD_LETTER_TYPE = "RELAY_DEAD_LETTER"

RELAY_DEFAULTS: dict[str, Any] = {
    "poll_interval": "5s",  # fallback for a lost notification; also how often timers are checked
    "batch_size": 50,  # messages claimed per channel per round
    "intake_batch": 2000,  # alerts routed per transaction
    "max_attempts": 8,  # then the message is dead-lettered
    "backoff_initial": "2s",
    "backoff_max": "10m",
    "lease": "2m",  # a message not reported by then is taken over by another relay
    "max_age": "24h",  # alerts older than this when first routed are logged, not sent
}
CHANNEL_DEFAULTS: dict[str, Any] = {
    "group_by": ["severity", "type", "environment", "table_name"],
    "group_wait": "0s",
    "group_interval": "1m",
    "repeat_interval": "4h",
    "sample": 10,
    "timeout": "10s",
}
TYPE_DEFAULTS: dict[str, dict[str, Any]] = {
    "slack": {"min_interval": "1s", "concurrency": 1},
    "webhook": {"min_interval": "0s", "concurrency": 4, "headers": {}},
    "email": {
        "min_interval": "0s",
        "concurrency": 1,
        "host": "localhost",
        "security": "starttls",
        "from": "pg-guardian@localhost",
        "verify": True,
        "timeout": "30s",
    },
    # Chat and push services limit posts per chat to about one a second.
    "apprise": {"min_interval": "1s", "concurrency": 1},
    "datadog": {"min_interval": "0s", "concurrency": 2, "site": "datadoghq.com", "tags": []},
    "sentry": {"min_interval": "0s", "concurrency": 2},
}
_COMMON_KEYS = {"type", *CHANNEL_DEFAULTS, "min_interval", "concurrency"}
_CHANNEL_KEYS = {
    "slack": _COMMON_KEYS | {"url", "slack_channel", "username", "icon_emoji"},
    "webhook": _COMMON_KEYS | {"url", "secret", "headers"},
    "email": _COMMON_KEYS | {"to", "from", "host", "port", "security", "username", "password", "ca_file", "verify"},
    "apprise": _COMMON_KEYS | {"url"},
    "datadog": _COMMON_KEYS | {"api_key", "site", "api_url", "tags"},
    "sentry": _COMMON_KEYS | {"dsn"},
}
_ROUTE_KEYS = {"channels", "severity", "type", "environment", "table_name", "continue"}
_TOP_KEYS = {
    "monitoring_enabled",
    "app_url",
    "template_dir",
    "relay",
    "channel_defaults",
    "channels",
    "routes",
    # Read elsewhere: [databases.*] by pg_guardian.config.databases (the relay without --dsn, the
    # dashboard, drift --env; pg_guardian.relay.many), [dashboard] by the dashboard. Not checked
    # here, so that `relay --dsn` runs whatever they say.
    "databases",
    "dashboard",
}
_SECRET_KEYS = {"password", "secret", "api_key"}
_DATADOG_SITE = re.compile(r"^[a-z0-9][a-z0-9.-]*\.[a-z]{2,}$")
# Apprise URLs in one string: split where a new scheme starts after a space, comma or semicolon.
_URL_SPLIT = re.compile(r"[\s,;]+(?=[A-Za-z][A-Za-z0-9+.-]*://)")


@dataclass(frozen=True)
class RelaySettings:
    """How the relay works (``[relay]``); durations in seconds."""

    poll_interval: float
    batch_size: int
    intake_batch: int
    max_attempts: int
    backoff_initial: float
    backoff_max: float
    lease: float
    max_age: float


@dataclass(frozen=True)
class ChannelConfig:
    """One delivery channel (``[channels.<name>]``); durations in seconds."""

    name: str
    type: str
    group_by: tuple[str, ...]
    group_wait: float
    group_interval: float
    repeat_interval: float
    sample: int
    timeout: float
    min_interval: float
    concurrency: int
    url: str | None = None
    secret: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    slack_channel: str | None = None
    username: str = "Database Guardian"
    icon_emoji: str = ":warning:"
    to: tuple[str, ...] = ()
    sender: str = "pg-guardian@localhost"
    host: str = "localhost"
    port: int = 0
    security: str = "starttls"
    smtp_user: str | None = None
    password: str | None = None
    ca_file: str | None = None
    verify: bool = True
    urls: tuple[str, ...] = ()  # apprise
    api_key: str | None = None  # datadog
    site: str = "datadoghq.com"
    tags: tuple[str, ...] = ()
    dsn: str | None = None  # sentry; url is then its envelope endpoint

    @property
    def grouped(self) -> bool:
        """False when every alert is its own message (``group_by`` includes ``id``)."""
        return "id" not in self.group_by

    @property
    def destination(self) -> str:
        """Where the channel sends (one pacer per destination): its URL(s) or SMTP server."""
        if self.urls:
            return "apprise:" + " ".join(self.urls)
        return self.url or f"smtp://{self.host}:{self.port}"


@dataclass(frozen=True)
class Route:
    """``[[routes]]``: alerts matching every given field go to ``channels``.

    Values are lists; ``type``, ``environment`` and ``table_name`` take shell-style globs
    (``TEST_DATA_*``). Routes are tried in order and the first match decides, unless it says
    ``continue = true``.
    """

    channels: tuple[str, ...]
    severity: tuple[str, ...] | None = None
    type: tuple[str, ...] | None = None
    environment: tuple[str, ...] | None = None
    table_name: tuple[str, ...] | None = None
    cont: bool = False

    def matches(self, alert: Mapping[str, Any]) -> bool:
        """Does an alert (a mapping with severity, type, environment, table_name) match?"""
        if self.severity is not None and alert.get("severity") not in self.severity:
            return False
        for key in ("type", "environment", "table_name"):
            patterns: tuple[str, ...] | None = getattr(self, key)
            if patterns is not None:
                value = alert.get(key) or ""
                if not any(fnmatch.fnmatchcase(value, p) for p in patterns):
                    return False
        return True


@dataclass(frozen=True)
class Config:
    """The controller's configuration, checked."""

    monitoring_enabled: bool
    app_url: str | None
    template_dir: Path | None
    relay: RelaySettings
    channels: Mapping[str, ChannelConfig]
    routes: tuple[Route, ...]
    default_routes: bool
    sources: tuple[str, ...]
    warnings: tuple[str, ...] = ()

    def route(self, alert: Mapping[str, Any]) -> list[str]:
        """The channels an alert goes to, in configuration order (empty: dashboard only).

        A RELAY_DEAD_LETTER alert goes to every channel except the one that failed, whatever
        the routes say, so that the failure is heard somewhere that works.
        """
        if alert.get("type") == DEAD_LETTER_TYPE:
            failed = alert.get("failed_channel")
            return [name for name in self.channels if name != failed]
        chosen: list[str] = []
        for route in self.routes:
            if route.matches(alert):
                chosen.extend(c for c in route.channels if c not in chosen)
                if not route.cont:
                    break
        return chosen

    def describe(self) -> dict[str, Any]:
        """Plain data for ``config check``, with secrets masked."""

        def channel(c: ChannelConfig) -> dict[str, Any]:
            keys = _CHANNEL_KEYS[c.type] - {"from", "username"}
            out: dict[str, Any] = {"type": c.type}
            for key in sorted(keys - {"type"}):
                attr = {"username": "smtp_user"}.get(key, key)
                value = getattr(c, attr, None)
                if key in _SECRET_KEYS and value:
                    value = "********"
                if key == "url" and value:
                    value = mask_url(value)
                if key == "dsn" and value:
                    value = mask_dsn(value)
                out[key] = list(value) if isinstance(value, tuple) else value
            if c.type == "email":
                out["from"] = c.sender
                out["username"] = c.smtp_user
            if c.type == "apprise":
                # One string, as Apprise itself takes them; Apprise knows which parts are secret.
                out["url"] = ", ".join(apprise_privacy_url(u) for u in c.urls)
            if c.type in ("datadog", "sentry"):
                out["url"] = c.url  # the endpoint: the key goes in a header, never in this URL
            if c.type == "datadog":
                out["api_url"] = c.url
            return out

        return {
            "sources": list(self.sources),
            "monitoring_enabled": self.monitoring_enabled,
            "app_url": self.app_url,
            "template_dir": str(self.template_dir) if self.template_dir else None,
            "relay": dict(vars(self.relay)),
            "channels": {name: channel(c) for name, c in self.channels.items()},
            "routes": [
                {
                    "match": {
                        k: list(v)
                        for k in ("severity", "type", "environment", "table_name")
                        if (v := getattr(r, k)) is not None
                    },
                    "channels": list(r.channels),
                    "continue": r.cont,
                }
                for r in self.routes
            ],
            "default_routes": self.default_routes,
            "warnings": list(self.warnings),
        }


def mask_url(url: str) -> str:
    """A URL safe to print: Slack and most webhooks carry their secret in the path."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return "<invalid url>"
    path = parts.path
    if len(path) > 12:
        path = path[:12] + "…"
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{path}"


def mask_dsn(dsn: str) -> str:
    """A Sentry DSN safe to print: its key hidden, host and project shown."""
    parts = urlsplit(dsn)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    key = "****@" if parts.username else ""
    return f"{parts.scheme}://{key}{host}{port}{parts.path}"


def apprise_privacy_url(url: str) -> str:
    """An Apprise URL safe to print, as Apprise masks it (keys and tokens hidden)."""
    import apprise

    with apprise.LogCapture(level=logging.WARNING):  # type: ignore[no-untyped-call]
        plugin = apprise.Apprise.instantiate(url)
    if plugin is None:
        return url.split("://", 1)[0] + "://…"
    return str(plugin.url(privacy=True)).split("?", 1)[0]  # type: ignore[no-untyped-call]


def sentry_envelope_url(dsn: str) -> str:
    """``<scheme>://<host>[:port][/prefix]/api/<project>/envelope/`` for a checked DSN."""
    parts = urlsplit(dsn)
    prefix, _, project = parts.path.rstrip("/").rpartition("/")
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}{prefix}/api/{project}/envelope/"


def _from_env(env: Mapping[str, str], raw: dict[str, Any]) -> list[str]:
    """Apply the documented environment variables to ``raw``; returns the names used."""
    used: list[str] = []

    def take(name: str) -> str | None:
        value = env.get(name)
        if value is None or value == "":
            return None
        used.append(name)
        return value

    channels: dict[str, Any] = raw.setdefault("channels", {})
    if (v := take("MONITORING_ENABLED")) is not None:
        raw["monitoring_enabled"] = v
    if (v := take("APP_URL")) is not None:
        raw["app_url"] = v
    if (v := take("GUARDIAN_TEMPLATE_DIR")) is not None:
        raw["template_dir"] = v
    if (v := take("SLACK_WEBHOOK_URL")) is not None:
        channels.setdefault("slack", {"type": "slack"})["url"] = v
    if (v := take("SLACK_CHANNEL")) is not None:
        channels.setdefault("slack", {"type": "slack"})["slack_channel"] = v
    if (v := take("ADMIN_EMAIL")) is not None:
        channels.setdefault("email", {"type": "email"})["to"] = [a.strip() for a in v.split(",") if a.strip()]
    smtp = {
        "SMTP_HOST": "host",
        "SMTP_PORT": "port",
        "SMTP_USER": "username",
        "SMTP_PASSWORD": "password",
        "SMTP_FROM": "from",
        "SMTP_SECURITY": "security",
        "SMTP_TIMEOUT": "timeout",
    }
    smtp_values = {key: v for name, key in smtp.items() if (v := take(name)) is not None}
    if smtp_values:
        email_channels = [c for c in channels.values() if isinstance(c, dict) and c.get("type") == "email"]
        if not email_channels:
            email_channels = [channels.setdefault("email", {"type": "email"})]
        for chan in email_channels:
            chan.update(smtp_values)
    if (v := take("GUARDIAN_WEBHOOK_URL")) is not None:
        channels.setdefault("webhook", {"type": "webhook"})["url"] = v
    if (v := take("GUARDIAN_WEBHOOK_SECRET")) is not None:
        channels.setdefault("webhook", {"type": "webhook"})["secret"] = v
    if (v := take("GUARDIAN_APPRISE_URLS")) is not None:
        channels.setdefault("apprise", {"type": "apprise"})["url"] = split_urls(v)
    datadog = {"GUARDIAN_DATADOG_API_KEY": "api_key", "GUARDIAN_DATADOG_SITE": "site"}
    datadog_values = {key: v for name, key in datadog.items() if (v := take(name)) is not None}
    if datadog_values:
        dd_channels = [c for c in channels.values() if isinstance(c, dict) and c.get("type") == "datadog"]
        if not dd_channels:
            dd_channels = [channels.setdefault("datadog", {"type": "datadog"})]
        for chan in dd_channels:
            chan.update(datadog_values)
    if (v := take("GUARDIAN_SENTRY_DSN")) is not None:
        channels.setdefault("sentry", {"type": "sentry"})["dsn"] = v
    for key in RELAY_DEFAULTS:
        if (v := take(f"GUARDIAN_RELAY_{key.upper()}")) is not None:
            raw.setdefault("relay", {})[key] = v
    return used


def _http_url(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a URL")
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{mask_url(value) if parts.netloc else value[:60]!r} is not an http(s) URL with a host")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise ValueError(f"bad port in URL: {exc}") from None
    if any(c.isspace() or ord(c) < 32 for c in value.strip()):
        raise ValueError("URL contains spaces or control characters")
    return value.strip()


def split_urls(value: str) -> list[str]:
    """Apprise URLs from one string, separated by spaces, commas or semicolons."""
    return [u.strip(" ,;") for u in _URL_SPLIT.split(value.strip()) if u.strip(" ,;")]


def _apprise_url(value: Any) -> str:
    """A URL Apprise can load; the error gives Apprise's reason and where to find the right form."""
    where = "find the service's URL form at https://appriseit.com/services/"
    if not isinstance(value, str) or "://" not in value:
        raise ValueError(
            f"{str(value)[:40]!r} is not an Apprise URL such as pagerduty://<routing key>@<api key>; {where}"
        )
    import apprise

    url: str = value.strip()
    scheme = url.split("://", 1)[0].lower()
    services = _apprise_services()
    if scheme not in services:
        raise ValueError(f"{scheme}://… is not a service Apprise {apprise.__version__} knows; {where}")
    # Apprise logs why it cannot load a URL, with the URL and its secrets: keep that off stderr.
    with apprise.LogCapture(level=logging.WARNING):  # type: ignore[no-untyped-call]
        try:
            plugin = apprise.Apprise.instantiate(url, suppress_exceptions=False)
        except Exception as exc:  # the plugin refused a field, and its message names the field
            reason = str(exc).strip().rstrip(".")
            raise ValueError(
                f"Apprise cannot use this {services[scheme]} URL ({scheme}://…): {reason}; {where}"
            ) from None
    if plugin is None:
        raise ValueError(f"Apprise cannot parse this {services[scheme]} URL ({scheme}://…); {where}")
    return url


@functools.cache
def _apprise_services() -> dict[str, str]:
    """Every scheme the installed Apprise knows, with its service's name."""
    import apprise

    names: dict[str, str] = {}
    for service in apprise.Apprise().details()["schemas"]:
        for key in ("protocols", "secure_protocols"):
            for scheme in service.get(key) or ():
                names[str(scheme).lower()] = str(service["service_name"])
    return names


def _sentry_dsn(value: Any) -> str:
    hint = "a Sentry DSN is https://<key>@<host>/<project id>: copy it from Project Settings > Client Keys"
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a DSN; {hint}")
    dsn: str = value.strip()
    parts = urlsplit(dsn)
    shown = mask_dsn(dsn) if parts.netloc else dsn[:40]
    project = parts.path.rstrip("/").rpartition("/")[2]
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError(f"{shown!r} has a bad port; {hint}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or not parts.username or not project.isdigit():
        raise ValueError(f"{shown!r} is not a Sentry DSN; {hint}")
    return dsn


def _tags(value: Any) -> tuple[str, ...]:
    tags = _str_list(value)
    for tag in tags:
        if not tag or any(c.isspace() for c in tag) or len(tag) > 200:
            raise ValueError(f"{tag!r} is not a Datadog tag such as team:dba (no spaces, at most 200 characters)")
    return tags


def _email(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[^@\s<>,]+@[^@\s<>,]+", value.strip()):
        raise ValueError(f"{value!r} is not an email address")
    return value.strip()


def _str_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{value!r} is not a list of strings")
    return tuple(value)


def _channel(name: str, raw: Mapping[str, Any], defaults: Mapping[str, Any], chk: Checker) -> ChannelConfig | None:
    where = f"channels.{name}"
    if not CHANNEL_NAME.match(name):
        chk.problems.append(f"{where}: channel names are lower-case letters, digits, - and _ (at most 40)")
    kind = raw.get("type", name if name in CHANNEL_TYPES else None)
    if kind not in CHANNEL_TYPES:
        chk.problems.append(f"{where}.type: {kind!r} is not one of {', '.join(CHANNEL_TYPES)}")
        return None
    chk.unknown(where, raw, _CHANNEL_KEYS[kind])
    merged = {**CHANNEL_DEFAULTS, **TYPE_DEFAULTS[kind], **defaults, **raw}
    group_by = chk.get(f"{where}.group_by", merged["group_by"], _str_list, ())
    for item in group_by:
        if item not in GROUP_FIELDS:
            chk.problems.append(f"{where}.group_by: {item!r} is not one of {', '.join(GROUP_FIELDS)}")
    common: dict[str, Any] = {
        "name": name,
        "type": kind,
        "group_by": group_by,
        "group_wait": chk.get(f"{where}.group_wait", merged["group_wait"], parse_duration, 0.0),
        "group_interval": chk.get(f"{where}.group_interval", merged["group_interval"], parse_duration, 60.0),
        "repeat_interval": chk.get(f"{where}.repeat_interval", merged["repeat_interval"], parse_duration, 14400.0),
        "sample": chk.get(f"{where}.sample", merged["sample"], positive_int, 10),
        "timeout": chk.get(f"{where}.timeout", merged["timeout"], parse_duration, 10.0),
        "min_interval": chk.get(f"{where}.min_interval", merged["min_interval"], parse_duration, 0.0),
        "concurrency": chk.get(f"{where}.concurrency", merged["concurrency"], positive_int, 1),
    }
    if common["timeout"] is not None and common["timeout"] <= 0:
        chk.problems.append(f"{where}.timeout: must be more than 0s")
    if kind in ("slack", "webhook"):
        if not merged.get("url"):
            env = "SLACK_WEBHOOK_URL" if kind == "slack" else "GUARDIAN_WEBHOOK_URL"
            chk.problems.append(f"{where}.url: missing (set it in the file or with {env})")
            url = None
        else:
            url = chk.get(f"{where}.url", merged["url"], _http_url)
        extra: dict[str, Any] = {"url": url}
        if kind == "slack":
            extra.update(
                slack_channel=merged.get("slack_channel"),
                username=str(merged.get("username", "Database Guardian")),
                icon_emoji=str(merged.get("icon_emoji", ":warning:")),
            )
        else:
            headers = merged.get("headers") or {}
            if not isinstance(headers, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) and "\n" not in v + k for k, v in headers.items()
            ):
                chk.problems.append(f"{where}.headers: must be a table of header names to string values")
                headers = {}
            extra.update(secret=merged.get("secret") or None, headers=dict(headers))
        return ChannelConfig(**common, **extra)
    if kind == "apprise":
        raw_urls = merged.get("url")
        if isinstance(raw_urls, str):
            raw_urls = split_urls(raw_urls)
        if not raw_urls:
            chk.problems.append(
                f'{where}.url: missing (url = "pagerduty://<routing key>@<api key>", a list of URLs, '
                "or GUARDIAN_APPRISE_URLS)"
            )
            return ChannelConfig(**common)
        if not isinstance(raw_urls, list | tuple):
            chk.problems.append(f"{where}.url: must be an Apprise URL or a list of them")
            return ChannelConfig(**common)
        urls = [chk.get(f"{where}.url[{i}]", u, _apprise_url) for i, u in enumerate(raw_urls)]
        return ChannelConfig(**common, urls=tuple(u for u in urls if u))
    if kind == "datadog":
        api_key = merged.get("api_key") or None
        if not api_key or not isinstance(api_key, str):
            chk.problems.append(f"{where}.api_key: missing (set it in the file or with GUARDIAN_DATADOG_API_KEY)")
        site = str(merged.get("site") or "datadoghq.com").strip().lower()
        if not _DATADOG_SITE.match(site):
            chk.problems.append(
                f"{where}.site: {site!r} is not a Datadog site such as datadoghq.com, datadoghq.eu "
                "or us5.datadoghq.com (or set api_url)"
            )
        if merged.get("api_url"):
            url = chk.get(f"{where}.api_url", merged["api_url"], _http_url)
        else:
            url = f"https://api.{site}/api/v1/events"
        return ChannelConfig(
            **common,
            url=url,
            api_key=api_key,
            site=site,
            tags=chk.get(f"{where}.tags", merged.get("tags") or [], _tags, ()),
        )
    if kind == "sentry":
        if not merged.get("dsn"):
            chk.problems.append(f"{where}.dsn: missing (set it in the file or with GUARDIAN_SENTRY_DSN)")
            return ChannelConfig(**common)
        dsn = chk.get(f"{where}.dsn", merged["dsn"], _sentry_dsn)
        return ChannelConfig(**common, dsn=dsn, url=sentry_envelope_url(dsn) if dsn else None)
    # email
    to = chk.get(f"{where}.to", merged.get("to", []), _str_list, ())
    if not to:
        chk.problems.append(f'{where}.to: no recipients (set ADMIN_EMAIL or to = ["ops@example.com"])')
    to = tuple(chk.get(f"{where}.to", a, _email, a) for a in to)
    security = str(merged.get("security", "starttls")).lower()
    if security not in SMTP_SECURITY:
        chk.problems.append(f"{where}.security: {security!r} is not one of {', '.join(SMTP_SECURITY)}")
    port_default = {"starttls": 587, "ssl": 465}.get(security, 25)
    port = chk.get(f"{where}.port", merged.get("port", port_default), positive_int, port_default)
    if port and port > 65535:
        chk.problems.append(f"{where}.port: {port} is not a TCP port")
    ca_file = merged.get("ca_file")
    if ca_file and not Path(ca_file).is_file():
        chk.problems.append(f"{where}.ca_file: {ca_file} does not exist")
    username = merged.get("username") or None
    password = merged.get("password") or None
    if bool(username) != bool(password):
        chk.problems.append(
            f"{where}: SMTP authentication needs both username (SMTP_USER) and password (SMTP_PASSWORD)"
        )
    host = str(merged.get("host") or "")
    if not host or any(c.isspace() for c in host):
        chk.problems.append(f"{where}.host: {host!r} is not a host name")
    return ChannelConfig(
        **common,
        to=to,
        sender=chk.get(f"{where}.from", merged.get("from"), _email, "pg-guardian@localhost"),
        host=host,
        port=port,
        security=security,
        smtp_user=username,
        password=password,
        ca_file=ca_file,
        verify=chk.get(f"{where}.verify", merged.get("verify", True), parse_bool, True),
    )


def _route(index: int, raw: Any, channels: Mapping[str, ChannelConfig], chk: Checker) -> Route | None:
    where = f"routes[{index}]"
    if not isinstance(raw, Mapping):
        chk.problems.append(f"{where}: must be a table with channels and match fields")
        return None
    chk.unknown(where, raw, _ROUTE_KEYS)
    targets = chk.get(f"{where}.channels", raw.get("channels", []), _str_list, ())
    for name in targets:
        if name not in channels:
            known = ", ".join(channels) or "none configured"
            chk.problems.append(f"{where}.channels: no channel named {name!r} (channels: {known})")
    match: dict[str, tuple[str, ...] | None] = {}
    for key in ("severity", "type", "environment", "table_name"):
        match[key] = chk.get(f"{where}.{key}", raw[key], _str_list) if key in raw else None
    if match["severity"] is not None:
        match["severity"] = tuple(s.upper() for s in match["severity"])
        for sev in match["severity"]:
            if sev not in SEVERITIES:
                chk.problems.append(f"{where}.severity: {sev!r} is not one of {', '.join(SEVERITIES)}")
    cont = chk.get(f"{where}.continue", raw.get("continue", False), parse_bool, False)
    return Route(channels=tuple(targets), cont=cont, **match)


def _default_routes(channels: Mapping[str, ChannelConfig]) -> tuple[Route, ...]:
    """The design's routing: CRITICAL to every channel at once, HIGH to Slack (and webhooks)."""
    every = tuple(channels)
    chat = tuple(n for n, c in channels.items() if c.type in ("slack", "webhook"))
    routes = []
    if every:
        routes.append(Route(channels=every, severity=("CRITICAL",)))
    if chat:
        routes.append(Route(channels=chat, severity=("HIGH",)))
    return tuple(routes)


def load(
    path: Path | str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    check_templates: bool = True,
) -> Config:
    """Build and check the configuration; raises ConfigError listing every problem."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {"monitoring_enabled": True, "relay": dict(RELAY_DEFAULTS)}
    sources = ["defaults"]
    problems: list[str] = []
    file = read_file(path, env)
    merge(raw, file.tables)
    sources.extend(file.sources)
    problems.extend(file.problems)
    used = _from_env(env, raw)
    if used:
        sources.append("environment " + ", ".join(used))
    if overrides:
        merge(raw, overrides)
        sources.append("flags")
    cfg, more = _check(raw, tuple(sources), check_templates)
    problems.extend(more)
    if problems or cfg is None:
        raise ConfigError(
            f"invalid configuration ({len(problems)} problem{'s' if len(problems) != 1 else ''}):\n"
            + "\n".join(f"  - {p}" for p in problems),
            problems=problems,
        )
    return cfg


def _check(raw: dict[str, Any], sources: tuple[str, ...], check_templates: bool) -> tuple[Config | None, list[str]]:
    chk = Checker()
    chk.unknown("", raw, _TOP_KEYS)
    relay_raw = raw.get("relay", {})
    if not isinstance(relay_raw, Mapping):
        chk.problems.append("relay: must be a table")
        relay_raw = dict(RELAY_DEFAULTS)
    chk.unknown("relay", relay_raw, set(RELAY_DEFAULTS))
    merged = {**RELAY_DEFAULTS, **relay_raw}
    ints = {"batch_size", "intake_batch", "max_attempts"}
    values = {
        key: chk.get(f"relay.{key}", merged[key], positive_int if key in ints else parse_duration, 1)
        for key in RELAY_DEFAULTS
    }
    for key in ("poll_interval", "lease"):
        if values[key] is not None and values[key] <= 0:
            chk.problems.append(f"relay.{key}: must be more than 0s")
    relay = RelaySettings(**values)
    defaults = raw.get("channel_defaults", {})
    if not isinstance(defaults, Mapping):
        chk.problems.append("channel_defaults: must be a table")
        defaults = {}
    chk.unknown("channel_defaults", defaults, set(CHANNEL_DEFAULTS))
    channels: dict[str, ChannelConfig] = {}
    raw_channels = raw.get("channels", {})
    if not isinstance(raw_channels, Mapping):
        chk.problems.append("channels: must be a table of channels")
        raw_channels = {}
    for name, chan_raw in raw_channels.items():
        if not isinstance(chan_raw, Mapping):
            chk.problems.append(f"channels.{name}: must be a table")
            continue
        chan = _channel(name, chan_raw, defaults, chk)
        if chan is not None:
            channels[name] = chan
    raw_routes = raw.get("routes")
    if raw_routes is None:
        routes = _default_routes(channels)
        default_routes = True
    elif not isinstance(raw_routes, list):
        chk.problems.append("routes: must be an array of tables ([[routes]])")
        routes, default_routes = (), False
    else:
        parsed = [_route(i, item, channels, chk) for i, item in enumerate(raw_routes)]
        routes = tuple(r for r in parsed if r is not None)
        default_routes = False
    enabled = chk.get("monitoring_enabled", raw.get("monitoring_enabled", True), parse_bool, True)
    app_url = raw.get("app_url") or None
    if app_url is not None:
        app_url = chk.get("app_url (APP_URL)", app_url, _http_url)
        app_url = app_url.rstrip("/") if app_url else None
    template_dir = raw.get("template_dir") or None
    tdir = Path(template_dir) if template_dir else None
    if tdir is not None and not tdir.is_dir():
        chk.problems.append(f"template_dir: {tdir} is not a folder")
    elif check_templates:
        from pg_guardian.relay import render  # the templates belong to the relay

        chk.problems.extend(render.template_problems(tdir))
    warnings = []
    if enabled and not channels:
        warnings.append(
            "no channels configured: alerts are only logged "
            "(set SLACK_WEBHOOK_URL, ADMIN_EMAIL or GUARDIAN_WEBHOOK_URL)"
        )
    for name, chan in channels.items():
        if chan.type == "email" and chan.security == "plain" and chan.password:
            warnings.append(f"channels.{name}: SMTP password sent without TLS (security = plain)")
    routed = {c for r in routes for c in r.channels}
    for name in channels:
        if name not in routed:
            warnings.append(f"channels.{name}: no route sends alerts to it (it still gets RELAY_DEAD_LETTER alerts)")
    if chk.problems:
        return None, chk.problems
    return (
        Config(
            monitoring_enabled=enabled,
            app_url=app_url,
            template_dir=tdir,
            relay=relay,
            channels=channels,
            routes=routes,
            default_routes=default_routes,
            sources=sources,
            warnings=tuple(warnings),
        ),
        [],
    )
