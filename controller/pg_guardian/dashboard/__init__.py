"""``pg-guardian dashboard``: every environment at a glance, alert triage, the cleanup page.

A Starlette app served by uvicorn, server-rendered (Jinja2, SVG charts, a little plain JS for
the live feed). :func:`create_app` builds it, :func:`serve` runs it; the configuration is
described in :mod:`pg_guardian.dashboard.settings`. Make a password hash for a user with
``python -m pg_guardian.dashboard hash-password``.
"""

from pg_guardian.dashboard.app import create_app, serve

__all__ = ["create_app", "serve"]
