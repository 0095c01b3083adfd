"""Dashboard fixtures: configuration files with users, the app on TestClient, the app served
by uvicorn on a thread (for the browser), and one headless Chromium per module."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from dashboard_support import ADMIN, ADMIN_PASSWORD, UNREACHABLE_DSN, VIEWER, VIEWER_PASSWORD, login
from pg_guardian.cluster import LocalCluster
from pg_guardian.dashboard import create_app
from pg_guardian.dashboard.auth import hash_password
from starlette.applications import Starlette
from support.response import load_dental, seed_test_clinic

with warnings.catch_warnings():  # Starlette 1.x would rather have httpx2; httpx works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


@pytest.fixture(scope="session")
def password_hashes() -> dict[str, str]:
    return {ADMIN: hash_password(ADMIN_PASSWORD), VIEWER: hash_password(VIEWER_PASSWORD)}


@pytest.fixture
def write_config(tmp_path: Path, password_hashes: dict[str, str]) -> Callable[..., Path]:
    """A controller TOML file with the two users and the given databases."""

    def write(databases: dict[str, str], **dashboard: Any) -> Path:
        lines = []
        for name, dsn in databases.items():
            lines += [f"[databases.{name}]", f"dsn = {dsn!r}", ""]
        lines.append("[dashboard]")
        lines.append("secret_key = 'test-secret-key-0123456789abcdef'")
        for key, value in dashboard.items():
            lines.append(f"{key} = {value!r}" if not isinstance(value, bool) else f"{key} = {str(value).lower()}")
        for user, role in ((ADMIN, "admin"), (VIEWER, "viewer")):
            lines += ["", f"[dashboard.users.{user}]", f"password_hash = '{password_hashes[user]}'", f"role = '{role}'"]
        path = tmp_path / "guardian.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    return write


@pytest.fixture
def dental(db: psycopg.Connection) -> psycopg.Connection:
    """The guarded test database with the dental sample and a test clinic in it."""
    load_dental(db)
    seed_test_clinic(db)
    return db


@pytest.fixture
def production_dsn(cluster: LocalCluster, dbname: str) -> str:
    return cluster.dsn(dbname)


@pytest.fixture
def app(write_config: Callable[..., Path], production_dsn: str) -> Starlette:
    """The dashboard over the test database (production) and an unreachable one (staging)."""
    return create_app(config_path=write_config({"production": production_dsn, "staging": UNREACHABLE_DSN}), live=False)


@pytest.fixture
def admin(app: Starlette) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as client:
        yield login(client, ADMIN, ADMIN_PASSWORD)


@pytest.fixture
def viewer(app: Starlette) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as client:
        yield login(client, VIEWER, VIEWER_PASSWORD)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Debian Chromium per module, driven through Debian's chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def screenshot_path() -> Path | None:
    value = os.environ.get("GUARDIAN_SCREENSHOT")
    return Path(value) if value else None
