"""Channels: put one message on the wire. Each ``send`` returns or raises DeliveryFailed.

HTTP uses the standard library (``http.client``) with one keep-alive connection per thread
and host (Slack, webhooks, Datadog, Sentry); SMTP uses ``smtplib``; the long tail of services
goes through Apprise (which uses ``requests``). None retries: the outbox decides when to try again.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import re
import smtplib
import socket
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import jinja2

from pg_guardian import __version__
from pg_guardian.errors import GuardianError
from pg_guardian.relay import render
from pg_guardian.relay.config import ChannelConfig
from pg_guardian.relay.model import Message

USER_AGENT = f"pg-guardian-relay/{__version__}"
# 4xx answers that say "not now" rather than "never".
_RETRYABLE_4XX = {408, 409, 425, 429}


class DeliveryFailed(Exception):
    """A send failed. ``retry_after``: the receiver said when to come back (seconds);
    ``permanent``: retrying the same message cannot help (dead-letter it now)."""

    def __init__(self, reason: str, *, retry_after: float | None = None, permanent: bool = False) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
        self.permanent = permanent


class Sender(Protocol):
    """A channel: ``send`` delivers one message or raises DeliveryFailed."""

    config: ChannelConfig

    def send(self, msg: Message) -> None: ...

    def close(self) -> None: ...


class Pacer:
    """At most one send per ``interval`` for one destination, and pauses asked for by 429s."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next = 0.0
        self._lock = threading.Lock()

    def ready_in(self) -> float:
        """Seconds until the next send may start."""
        with self._lock:
            return max(self._next - time.monotonic(), 0.0)

    def take(self) -> float:
        """Reserve the next slot; returns how long to wait for it."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
            return start - now

    def pause(self, seconds: float) -> None:
        """Nothing before ``seconds`` from now (HTTP 429 Retry-After)."""
        with self._lock:
            self._next = max(self._next, time.monotonic() + seconds)


_pacers: dict[str, Pacer] = {}
_pacers_lock = threading.Lock()


def pacer_for(key: str, interval: float) -> Pacer:
    """One pacer per destination (webhook URL, SMTP server) in this process."""
    with _pacers_lock:
        pacer = _pacers.get(key)
        if pacer is None or pacer.interval != interval:
            pacer = _pacers[key] = Pacer(interval)
        return pacer


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


@dataclass(frozen=True)
class _Endpoint:
    scheme: str
    host: str
    port: int
    target: str


class HttpPoster:
    """POSTs to one URL over a keep-alive connection per thread."""

    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        self.endpoint = _Endpoint(
            parts.scheme,
            parts.hostname or "",
            parts.port or (443 if parts.scheme == "https" else 80),
            (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
        )
        self.timeout = timeout
        self.where = f"{parts.scheme}://{parts.hostname}:{self.endpoint.port}"
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            ep = self.endpoint
            if ep.scheme == "https":
                conn = http.client.HTTPSConnection(
                    ep.host, ep.port, timeout=self.timeout, context=ssl.create_default_context()
                )
            else:
                conn = http.client.HTTPConnection(ep.host, ep.port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, str, str | None]:
        """(status, start of the answer, Retry-After); DeliveryFailed on network errors."""
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers}
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request("POST", self.endpoint.target, body=body, headers=headers)
                resp = conn.getresponse()
                text = resp.read(65536).decode("utf-8", "replace")
                if resp.will_close:
                    self._drop()
                return resp.status, " ".join(text.split())[:300], resp.getheader("Retry-After")
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                # A keep-alive connection the server closed meanwhile: one fresh try.
                self._drop()
                if attempt == 2:
                    raise DeliveryFailed(f"cannot reach {self.where}: {exc or type(exc).__name__}") from exc
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                reason = (
                    "timed out" if isinstance(exc, TimeoutError | socket.timeout) else str(exc) or type(exc).__name__
                )
                raise DeliveryFailed(f"cannot reach {self.where}: {reason}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        self._drop()


def _check_status(where: str, status: int, text: str, after: str | None) -> None:
    if 200 <= status < 300:
        return
    detail = f"{where} answered HTTP {status}" + (f": {text}" if text else "")
    if status == 429:
        raise DeliveryFailed(detail, retry_after=retry_after(after) or 1.0)
    if 400 <= status < 500 and status not in _RETRYABLE_4XX:
        raise DeliveryFailed(detail + " (the receiver refused the message; not retried)", permanent=True)
    raise DeliveryFailed(detail, retry_after=retry_after(after))


class SlackSender:
    """Slack incoming webhook, in the design's format."""

    def __init__(self, config: ChannelConfig, app_url: str | None) -> None:
        assert config.url
        self.config = config
        self.app_url = app_url
        self.poster = HttpPoster(config.url, config.timeout)

    def send(self, msg: Message) -> None:
        payload = render.slack_payload(
            msg,
            app_url=self.app_url,
            channel=self.config.slack_channel,
            username=self.config.username,
            icon_emoji=self.config.icon_emoji,
        )
        body = json.dumps(payload, ensure_ascii=False).encode()
        status, text, after = self.poster.post(body, {"Idempotency-Key": msg.idempotency_key})
        _check_status("slack webhook " + self.poster.where, status, text, after)

    def close(self) -> None:
        self.poster.close()


def signature(secret: str, body: bytes, timestamp: str) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of ``<timestamp>.<body>`` with the shared secret."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class WebhookSender:
    """Generic JSON webhook with an optional HMAC signature.

    Headers: ``Idempotency-Key`` (stable across retries), ``X-Guardian-Timestamp`` and, with a
    secret, ``X-Guardian-Signature: sha256=HMAC(secret, "<timestamp>.<body>")``.
    """

    def __init__(self, config: ChannelConfig, app_url: str | None) -> None:
        assert config.url
        self.config = config
        self.app_url = app_url
        self.poster = HttpPoster(config.url, config.timeout)

    def send(self, msg: Message) -> None:
        body = render.webhook_body(msg, app_url=self.app_url)
        stamp = str(int(time.time()))
        headers = {
            **self.config.headers,
            "Idempotency-Key": msg.idempotency_key,
            "X-Guardian-Timestamp": stamp,
        }
        if self.config.secret:
            headers["X-Guardian-Signature"] = signature(self.config.secret, body, stamp)
        status, text, after = self.poster.post(body, headers)
        _check_status("webhook " + self.poster.where, status, text, after)

    def close(self) -> None:
        self.poster.close()


class EmailSender:
    """SMTP with STARTTLS, implicit TLS (ssl) or none (plain), and optional authentication."""

    def __init__(self, config: ChannelConfig, app_url: str | None, templates: jinja2.Environment) -> None:
        self.config = config
        self.app_url = app_url
        self.templates = templates
        self.where = f"SMTP server {config.host}:{config.port}"

    def _tls(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.config.ca_file)
        if not self.config.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def _connect(self) -> smtplib.SMTP:
        c = self.config
        if c.security == "ssl":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(c.host, c.port, timeout=c.timeout, context=self._tls())
        else:
            smtp = smtplib.SMTP(c.host, c.port, timeout=c.timeout)
        try:
            smtp.ehlo()
            if c.security == "starttls":
                if not smtp.has_extn("starttls"):
                    raise DeliveryFailed(f'{self.where} does not offer STARTTLS (set security = "ssl" or "plain")')
                smtp.starttls(context=self._tls())
                smtp.ehlo()
            if c.smtp_user and c.password:
                smtp.login(c.smtp_user, c.password)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def send(self, msg: Message) -> None:
        try:
            email = render.email_message(
                msg,
                env=self.templates,
                sender=self.config.sender,
                to=self.config.to,
                app_url=self.app_url,
            )
        except render.RenderError as exc:
            raise DeliveryFailed(str(exc)) from exc
        try:
            smtp = self._connect()
            try:
                refused = smtp.send_message(email)
            finally:
                try:
                    smtp.quit()
                except (smtplib.SMTPException, OSError):
                    smtp.close()
        except DeliveryFailed:
            raise
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryFailed(
                f"{self.where} refused the login: {exc.smtp_code} {_smtp_text(exc.smtp_error)}",
                permanent=True,
            ) from exc
        except smtplib.SMTPRecipientsRefused as exc:
            raise DeliveryFailed(f"{self.where} refused every recipient: {exc.recipients}", permanent=True) from exc
        except smtplib.SMTPResponseException as exc:
            raise DeliveryFailed(
                f"{self.where} answered {exc.smtp_code} {_smtp_text(exc.smtp_error)}",
                permanent=500 <= exc.smtp_code < 600,
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:
            reason = "timed out" if isinstance(exc, TimeoutError | socket.timeout) else str(exc) or type(exc).__name__
            raise DeliveryFailed(f"cannot reach {self.where}: {reason}") from exc
        if refused:
            # Some recipients took it: a retry would send them a duplicate, so this counts as sent.
            return

    def close(self) -> None:
        pass


def _smtp_text(value: bytes | str) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return " ".join(text.split())[:300]


class DatadogSender:
    """A Datadog event per message (Events API v1, ``DD-API-KEY``), on the standard-library poster.

    Datadog answers 202; a wrong key is a 403 (dead-lettered at once), its rate limit a 429.
    """

    def __init__(self, config: ChannelConfig, app_url: str | None) -> None:
        assert config.url and config.api_key
        self.config = config
        self.app_url = app_url
        self.poster = HttpPoster(config.url, config.timeout)

    def send(self, msg: Message) -> None:
        event = render.datadog_event(msg, app_url=self.app_url, tags=self.config.tags)
        body = json.dumps(event, ensure_ascii=False).encode()
        assert self.config.api_key
        status, text, after = self.poster.post(body, {"DD-API-KEY": self.config.api_key})
        _check_status("datadog " + self.poster.where, status, text, after)

    def close(self) -> None:
        self.poster.close()


class SentrySender:
    """A Sentry event per message, posted as an envelope to ``/api/<project>/envelope/``.

    Not through sentry-sdk: its transport queues events on a background thread and reports
    neither success nor failure to the caller, and the relay needs both (retries, dead letters).
    """

    def __init__(self, config: ChannelConfig, app_url: str | None) -> None:
        assert config.url and config.dsn
        self.config = config
        self.app_url = app_url
        self.poster = HttpPoster(config.url, config.timeout)
        key = urlsplit(config.dsn).username or ""
        self.auth = f"Sentry sentry_version=7, sentry_key={key}, sentry_client={USER_AGENT}"

    def envelope(self, msg: Message) -> bytes:
        """Envelope header, item header, event: one JSON document a line."""
        event = render.sentry_event(msg, app_url=self.app_url)
        payload = json.dumps(event, ensure_ascii=False, default=str).encode()
        header = {"event_id": event["event_id"], "sent_at": render.now_iso()}
        item = {"type": "event", "length": len(payload), "content_type": "application/json"}
        return b"\n".join([json.dumps(header).encode(), json.dumps(item).encode(), payload])

    def send(self, msg: Message) -> None:
        headers = {"Content-Type": "application/x-sentry-envelope", "X-Sentry-Auth": self.auth}
        status, text, after = self.poster.post(self.envelope(msg), headers)
        _check_status("sentry " + self.poster.where, status, text, after)

    def close(self) -> None:
        self.poster.close()


# Apprise's plugins say why a send failed only in their log: "..., error=503." for an HTTP
# answer, "A connection error occurred ..." when the service could not be reached.
_APPRISE_STATUS = re.compile(r"\berror=(\d{3})\b")
APPRISE_NOTIFY_TYPES = {"CRITICAL": "failure", "HIGH": "failure", "MEDIUM": "warning", "LOW": "info", "INFO": "info"}


class _AppriseCapture(logging.Handler):
    """Keeps Apprise's warnings per sending thread, so that concurrent sends keep theirs apart.

    Installed once on the ``apprise`` logger; while it is there Python's last-resort handler
    no longer prints Apprise's lines (with their URLs) on stderr: the relay reports the reasons
    in its own ``message.failed`` events instead.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        lines: list[str] | None = getattr(self.local, "lines", None)
        if lines is not None:
            lines.append(" ".join(record.getMessage().split()))

    @contextmanager
    def capture(self) -> Iterator[list[str]]:
        lines: list[str] = []
        self.local.lines = lines
        try:
            yield lines
        finally:
            self.local.lines = None


_apprise_capture: _AppriseCapture | None = None


def _apprise_log() -> _AppriseCapture:
    global _apprise_capture
    with _pacers_lock:
        if _apprise_capture is None:
            logger = logging.getLogger("apprise")  # every Apprise version logs there
            if not logger.isEnabledFor(logging.WARNING):
                logger.setLevel(logging.WARNING)
            _apprise_capture = _AppriseCapture()
            logger.addHandler(_apprise_capture)
        return _apprise_capture


def apprise_failure(service: str, lines: list[str]) -> DeliveryFailed:
    """A DeliveryFailed from what an Apprise plugin logged: 4xx (other than 408/409/425/429) is
    permanent, 429 waits, the rest (5xx, connection errors, no reason given) is retried."""
    text = "; ".join(lines)[:300] or "failed (Apprise gave no reason)"
    statuses = _APPRISE_STATUS.findall(text)
    status = int(statuses[-1]) if statuses else None
    detail = f"{service}: {text}"
    if status == 429:
        return DeliveryFailed(detail, retry_after=1.0)
    if status is not None and 400 <= status < 500 and status not in _RETRYABLE_4XX:
        return DeliveryFailed(detail + " (the service refused the message; not retried)", permanent=True)
    return DeliveryFailed(detail)


@dataclass
class _AppriseService:
    plugin: Any
    shown: str  # the URL as Apprise prints it, secrets hidden
    lock: threading.Lock = field(default_factory=threading.Lock)  # plugins are not made for threads


class AppriseSender:
    """Apprise URLs (PagerDuty, Opsgenie, Teams, Discord, Telegram, ntfy, Pushover, ...).

    Each URL is sent to on its own, so that its outcome is known: the message is delivered when
    every URL took it. On a retry, the URLs that already took it are skipped (in this process).
    Apprise's own throttle is off: the channel's ``min_interval`` paces it.
    """

    _DONE_KEPT = 1000  # messages whose partly done sends are remembered

    def __init__(self, config: ChannelConfig, app_url: str | None) -> None:
        import apprise

        self.config = config
        self.app_url = app_url
        self.log = _apprise_log()
        self.format = apprise.NotifyFormat.TEXT
        self.types = apprise.NotifyType
        self.services: list[_AppriseService] = []
        with self.log.capture() as lines:
            for url in config.urls:
                plugin = apprise.Apprise.instantiate(url, suppress_exceptions=False)
                if plugin is None:  # checked at configuration load; a changed Apprise may differ
                    raise GuardianError(
                        f"channel {config.name}: Apprise cannot load {url.split('://')[0]}://… ({'; '.join(lines)})"
                    )
                plugin.request_rate_per_sec = 0
                plugin.socket_connect_timeout = plugin.socket_read_timeout = config.timeout
                shown = str(plugin.url(privacy=True)).split("?", 1)[0]  # type: ignore[no-untyped-call]
                name = f"{plugin.service_name} {shown}"
                self.services.append(_AppriseService(plugin, name))
        self._done: OrderedDict[str, set[int]] = OrderedDict()
        self._lock = threading.Lock()

    def send(self, msg: Message) -> None:
        title = render.clean(render.title(msg), 250)
        body = render.plain_text(msg, app_url=self.app_url)
        notify_type = getattr(self.types, APPRISE_NOTIFY_TYPES.get(msg.lead.severity, "info").upper())
        with self._lock:
            done = self._done.pop(msg.idempotency_key, set())
        failures: list[DeliveryFailed] = []
        for index, service in enumerate(self.services):
            if index in done:
                continue
            with service.lock, self.log.capture() as lines:
                try:
                    ok = service.plugin.notify(body=body, title=title, notify_type=notify_type, body_format=self.format)
                except Exception as exc:  # a plugin bug must not hide the other URLs' outcome
                    ok = False
                    lines.append(f"{type(exc).__name__}: {exc}")
            if ok:
                done.add(index)
            else:
                failures.append(apprise_failure(service.shown, lines))
        if not failures:
            return
        with self._lock:
            if done:
                self._done[msg.idempotency_key] = done
                while len(self._done) > self._DONE_KEPT:
                    self._done.popitem(last=False)
        reason = " | ".join(str(f) for f in failures)
        if len(self.services) > 1:
            reason = f"{len(failures)} of {len(self.services)} Apprise URLs failed: {reason}"
        waits = [f.retry_after for f in failures if f.retry_after]
        raise DeliveryFailed(
            reason, retry_after=max(waits) if waits else None, permanent=all(f.permanent for f in failures)
        )

    def close(self) -> None:
        pass


def make_sender(config: ChannelConfig, app_url: str | None, template_dir: Path | None = None) -> Sender:
    """The sender for a channel's type."""
    if config.type == "slack":
        return SlackSender(config, app_url)
    if config.type == "webhook":
        return WebhookSender(config, app_url)
    if config.type == "apprise":
        return AppriseSender(config, app_url)
    if config.type == "datadog":
        return DatadogSender(config, app_url)
    if config.type == "sentry":
        return SentrySender(config, app_url)
    return EmailSender(config, app_url, render.environment(template_dir))
