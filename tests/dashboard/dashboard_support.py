"""What the dashboard tests share besides fixtures: users, login, the served app."""

from __future__ import annotations

import socket
import threading
import time
import warnings

from starlette.applications import Starlette

with warnings.catch_warnings():  # Starlette 1.x would rather have httpx2; httpx works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

ADMIN, ADMIN_PASSWORD = "alice", "alice-secret-1"
VIEWER, VIEWER_PASSWORD = "victor", "victor-secret-1"
# Nothing listens on port 1: connecting is refused at once.
UNREACHABLE_DSN = "postgresql://postgres@127.0.0.1:1/nowhere?connect_timeout=2"


def login(client: TestClient, user: str, password: str) -> TestClient:
    """Log in through the form, as a browser does (the CSRF token comes from the login page)."""
    page = client.get("/login")
    token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    response = client.post(
        "/login", data={"username": user, "password": password, "csrf_token": token}, follow_redirects=False
    )
    assert response.status_code == 303, response.text
    return client


def csrf_of(client: TestClient) -> str:
    page = client.get("/alerts?state=all")
    return page.text.split('data-csrf="', 1)[1].split('"', 1)[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Served:
    """The app served by uvicorn on a thread, on a free port of 127.0.0.1."""

    def __init__(self, app: Starlette) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", timeout_graceful_shutdown=1)
        )
        self.thread = threading.Thread(target=self.server.run, name="dashboard", daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the dashboard did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
