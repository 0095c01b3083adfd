"""The guardian's jobs and checks (``extension/sql/10_jobs``, run by pg_cron or the controller).

:mod:`runner` runs due jobs once or keeps running them (``jobs run``, ``jobs serve``);
:mod:`scheduling` schedules them with pg_cron and says whether anything runs them;
:mod:`checks` runs and tunes the health, security and posture checks (``50_health``,
``55_security``); :mod:`metrics` exposes each job's last success to Prometheus.
"""
