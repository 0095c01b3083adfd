"""Channels: put one message on the wire. Each ``send`` returns or raises DeliveryFailed.

HTTP uses the standard library (``http.client``) with one keep-alive connection per thread
and host; SMTP uses ``smtplib``. Neither retries: the outbox decides when to try again.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import smtplib
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import jinja2

from pg_guardian import __version__
from pg_guardian.config import ChannelConfig
from pg_guardian.relay import render
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


def make_sender(config: ChannelConfig, app_url: str | None, template_dir: Path | None = None) -> Sender:
    """The sender for a channel's type."""
    if config.type == "slack":
        return SlackSender(config, app_url)
    if config.type == "webhook":
        return WebhookSender(config, app_url)
    return EmailSender(config, app_url, render.environment(template_dir))
