"""Real receivers for relay tests: a threaded HTTP server, an HTTPS proxy that ends TLS for any
host with a test CA's certificate (services with a fixed host), and an aiosmtpd SMTP server."""

from __future__ import annotations

import json
import socketserver
import ssl
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from pg_guardian.cluster import free_port
from pg_guardian.relay import config as config_mod


@dataclass
class Received:
    """One POST the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def host(self) -> str:
        """The Host header without its port: the service a proxied request was meant for."""
        return self.headers.get("host", "").rsplit(":", 1)[0]


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"


class Receiver:
    """HTTP server on 127.0.0.1 recording every POST; answers 200 unless scripted otherwise.

    ``script`` holds replies to use in order (then 200 again); ``answer`` (if set) decides per
    request; ``delay`` holds every answer back (the request is recorded first).
    """

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.script: deque[Reply] = deque()
        self.answer: Callable[[Received], Reply] | None = None
        self.delay = 0.0
        self.cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # answers in two writes must not wait for delayed ACKs

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                if len(body) < length:  # the sender died mid-request: nothing was delivered
                    self.close_connection = True
                    return
                got = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time())
                with receiver.cond:
                    receiver.requests.append(got)
                    reply = receiver.script.popleft() if receiver.script else None
                    receiver.cond.notify_all()
                if reply is None:
                    reply = receiver.answer(got) if receiver.answer else Reply()
                if receiver.delay:
                    time.sleep(receiver.delay)
                self.send_response(reply.status)
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a relay killed mid-request: expected here

        self.handler = Handler
        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def on(self, path: str) -> list[Received]:
        with self.cond:
            return [r for r in self.requests if r.path == path]

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float = 10.0) -> list[Received]:
        """Wait until ``predicate(requests)`` holds; fails the test on timeout."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate(self.requests):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"receiver: not met in {timeout}s; got {len(self.requests)} requests")
                self.cond.wait(left)
            return list(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class InterceptingProxy:
    """An HTTPS proxy on 127.0.0.1 that answers CONNECT itself: it ends TLS with a certificate for
    the requested host, issued by a test CA (trustme), and hands the request inside to a Receiver.

    A client that trusts the CA (``REQUESTS_CA_BUNDLE``) and uses the proxy (``HTTPS_PROXY``)
    reaches ``https://events.pagerduty.com/...`` and the like without leaving the machine.
    ``tunnels`` lists the ``host:port`` of every CONNECT.
    """

    def __init__(self, receiver: Receiver, ca: trustme.CA) -> None:
        self.receiver, self.ca = receiver, ca
        self.tunnels: list[str] = []
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._lock = threading.Lock()
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                head = b""
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    chunk = self.request.recv(1)  # byte by byte: nothing of the TLS handshake is read
                    if not chunk:
                        return
                    head += chunk
                method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
                if method != "CONNECT":
                    self.request.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                    return
                with proxy._lock:
                    proxy.tunnels.append(target)
                self.request.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                host = target.rsplit(":", 1)[0]
                try:
                    tls = proxy.context(host).wrap_socket(self.request, server_side=True)
                except (ssl.SSLError, OSError):
                    return
                try:
                    proxy.receiver.handler(tls, self.client_address, proxy.receiver.server)
                finally:
                    tls.close()

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def context(self, host: str) -> ssl.SSLContext:
        with self._lock:
            ctx = self._contexts.get(host)
            if ctx is None:
                ctx = self._contexts[host] = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                self.ca.issue_cert(host).configure_cert(ctx)
            return ctx

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Mailbox:
    """aiosmtpd handler keeping every message it is given."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.cond = threading.Condition()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = message_from_bytes(envelope.content, policy=policy.default)
        with self.cond:
            self.messages.append(msg)  # type: ignore[arg-type]
            self.cond.notify_all()
        return "250 OK"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[EmailMessage]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"mailbox: {len(self.messages)} of {count} messages in {timeout}s")
                self.cond.wait(left)
            return list(self.messages)


@dataclass
class SmtpServer:
    host: str
    port: int
    mailbox: Mailbox


def _auth(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and data.login == b"guardian" and data.password == b"s3cret"
    return AuthResult(success=ok, handled=False)


def start_smtp(
    *, tls_context: Any = None, ssl_context: Any = None, auth: bool = False
) -> tuple[Controller, SmtpServer]:
    mailbox = Mailbox()
    port = free_port()
    kwargs: dict[str, Any] = {}
    if auth:
        kwargs.update(authenticator=_auth, auth_require_tls=tls_context is not None)
    if tls_context is not None:
        kwargs.update(tls_context=tls_context, require_starttls=True)
    if ssl_context is not None:
        kwargs.update(ssl_context=ssl_context)
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    return controller, SmtpServer("127.0.0.1", port, mailbox)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.close()


@pytest.fixture
def https_proxy(receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[InterceptingProxy]:
    """Every HTTPS request made with ``requests`` (Apprise) in this test goes to ``receiver``."""
    ca = trustme.CA()
    bundle = tmp_path / "test-ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    proxy = InterceptingProxy(receiver, ca)
    for name in ("HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(name, proxy.url)
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    yield proxy
    proxy.close()


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    controller, server = start_smtp(auth=True)
    yield server
    controller.stop()


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl), as (cert, key)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def relay_config(
    channels: dict[str, dict[str, Any]],
    *,
    routes: list[dict[str, Any]] | None = None,
    relay: dict[str, Any] | None = None,
    **top: Any,
) -> config_mod.Config:
    """A checked configuration for tests: fast retries and polling unless overridden."""
    raw: dict[str, Any] = {
        "relay": {
            "poll_interval": "1s",
            "backoff_initial": "50ms",
            "backoff_max": "200ms",
            **(relay or {}),
        },
        "channels": channels,
        **top,
    }
    if routes is not None:
        raw["routes"] = routes
    return config_mod.load(None, env={}, overrides=raw)
