"""Logins, sessions, CSRF tokens and the login rate limit.

Users and their roles come from the configuration (argon2 hashes). A login stores the user's
name, the time of login and a random CSRF token in the signed session cookie (HttpOnly,
SameSite=Lax, Secure when ``secure_cookies``). Every request looks the user up again in the
configuration, so the role is never taken from the cookie, and a session older than
``session_max_age`` is over. Every POST carries the session's CSRF token (a form field
``csrf_token`` or an ``X-CSRF-Token`` header).
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import deque

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from starlette.requests import HTTPConnection, Request

from pg_guardian.dashboard.settings import Settings, User

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
_hasher = PasswordHasher()
# Verifying against this keeps an unknown user as slow as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


def hash_password(password: str) -> str:
    """An argon2id hash for ``[dashboard.users.NAME] password_hash``."""
    return _hasher.hash(password)


def verify_password(user: User | None, password: str) -> bool:
    """Whether the password is the user's; as slow for unknown users as for known ones."""
    try:
        return _hasher.verify(user.password_hash if user else _DUMMY_HASH, password) and user is not None
    except (VerificationError, InvalidHashError):
        return False


class RateLimiter:
    """Failed logins per key (user name, client address) within a sliding window."""

    def __init__(self, attempts: int, window: float) -> None:
        self.attempts = attempts
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        entries = self._failures.setdefault(key, deque())
        while entries and entries[0] <= now - self.window:
            entries.popleft()
        return entries

    def retry_after(self, *keys: str) -> float:
        """Seconds until another attempt is allowed for every key (0: allowed now)."""
        now = time.monotonic()
        wait = 0.0
        with self._lock:
            for key in keys:
                entries = self._recent(key, now)
                if len(entries) >= self.attempts:
                    wait = max(wait, entries[0] + self.window - now)
        return wait

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in keys:
                self._recent(key, now).append(now)
            if len(self._failures) > 10_000:  # forget idle keys rather than grow for ever
                for key in [k for k, v in self._failures.items() if not v]:
                    del self._failures[key]

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)


def client_address(conn: HTTPConnection) -> str:
    return conn.client.host if conn.client else "unknown"


def csrf_token(conn: HTTPConnection) -> str:
    """The session's CSRF token (made on first use, also before login for the login form)."""
    token = conn.session.get("csrf")
    if not isinstance(token, str) or len(token) < 32:
        token = secrets.token_urlsafe(32)
        conn.session["csrf"] = token
    return token


def csrf_ok(request: Request, submitted: str | None) -> bool:
    """Whether a POST carries the session's token (form field or header)."""
    expected = request.session.get("csrf")
    value = submitted or request.headers.get(CSRF_HEADER)
    return isinstance(expected, str) and isinstance(value, str) and hmac.compare_digest(expected, value)


def login(request: Request, user: User) -> None:
    """Start a session: a fresh CSRF token, so one taken before login is worthless after."""
    request.session.clear()
    request.session.update({"user": user.name, "at": time.time(), "csrf": secrets.token_urlsafe(32)})


def logout(request: Request) -> None:
    request.session.clear()


def current_user(conn: HTTPConnection, settings: Settings) -> User | None:
    """The logged-in user, as configured now; None when not logged in or the session is over."""
    name = conn.session.get("user")
    at = conn.session.get("at")
    if not isinstance(name, str) or not isinstance(at, int | float):
        return None
    if time.time() - at > settings.session_max_age:
        conn.session.clear()
        return None
    return settings.users.get(name)
