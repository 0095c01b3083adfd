"""``pg-guardian demo --dashboard``: the README's one command serves the demo database."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from dashboard_support import free_port


def _read_until(proc: subprocess.Popen[str], pattern: str, limit: float) -> tuple[re.Match[str], str]:
    assert proc.stdout is not None
    seen = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        match = re.search(pattern, line)
        if match:
            return match, "".join(seen)
    raise AssertionError(f"no line matching {pattern!r} in:\n{''.join(seen)}")


def test_demo_serves_the_dashboard_until_interrupted_then_removes_its_cluster() -> None:
    # Not under pytest's tmp_path: the postgres user must be able to reach the cluster's folder.
    with tempfile.TemporaryDirectory(prefix="pg-guardian-demo-") as folder:
        os.chmod(folder, 0o755)
        _demo_with_dashboard(Path(folder) / "demo")


def _demo_with_dashboard(directory: Path) -> None:
    port = free_port()
    cli = Path(sys.executable).with_name("pg-guardian")
    proc = subprocess.Popen(
        [str(cli), "demo", "--dir", str(directory), "--dashboard", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        creds, _ = _read_until(proc, r"dashboard: user (\S+), password (\S+) \(in (.+)\)", 240)
        user, password, config = creds.groups()
        _read_until(proc, rf"serving http://127\.0\.0\.1:{port}/", 30)
        assert (os.stat(config).st_mode & 0o777) == 0o600
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the dashboard never answered /healthz"
                time.sleep(0.2)
            page = client.get("/login")
            token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
            assert token is not None
            client.post("/login", data={"username": user, "password": password, "csrf_token": token.group(1)})
            overview = client.get("/api/overview").json()
        [env] = overview["environments"]
        assert env["name"] == "production" and env["error"] is None
        # The demo's walk-through left open alerts behind, among them the fixture clinic's.
        assert env["data"]["open_total"] > 0 and env["data"]["open_alerts"]["CRITICAL"] > 0
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, rest
    assert "throwaway cluster stopped and removed" in rest
    assert not (directory / "pgdata").exists()
