"""``/metrics``: the guardian of every environment in Prometheus' format, read at scrape time.

Each app has its own registry: a collector that asks every environment at once (one that is
down is ``pg_guardian_environment_up 0`` and nothing else), and the dashboard's own request
latency histogram. The Grafana dashboard in ``grafana/pg-guardian.json`` is built on these names.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pg_guardian.dashboard import queries
from pg_guardian.dashboard.envs import Environments

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0)


class GuardianCollector(Collector):
    """Reads every environment when scraped."""

    def __init__(self, environments: Environments) -> None:
        self.environments = environments

    def describe(self) -> list[Metric]:  # no scrape at registration
        return []

    def collect(self) -> Iterator[Metric]:
        env_label = ["environment"]
        up = GaugeMetricFamily(
            "pg_guardian_environment_up", "1 if the environment answered and has pg_guardian", labels=env_label
        )
        open_alerts = GaugeMetricFamily(
            "pg_guardian_alerts_open", "Open (unresolved) alerts", labels=["environment", "severity", "type"]
        )
        raised = CounterMetricFamily(
            "pg_guardian_alerts_raised",
            "Alerts raised (rows in guardian.monitoring_alerts; retention deletes old ones)",
            labels=["environment", "severity", "type"],
        )
        depth = GaugeMetricFamily(
            "pg_guardian_relay_queue_depth", "Relay notices waiting or in messages", labels=["environment", "channel"]
        )
        oldest = GaugeMetricFamily(
            "pg_guardian_relay_oldest_undelivered_seconds",
            "Age of the oldest undelivered relay notice (not counting silenced ones)",
            labels=["environment", "channel"],
        )
        dead = GaugeMetricFamily(
            "pg_guardian_relay_dead_letters", "Relay messages dead-lettered", labels=["environment", "channel"]
        )
        backlog = GaugeMetricFamily(
            "pg_guardian_relay_intake_backlog", "Alerts the relay has not routed yet", labels=env_label
        )
        backlog_age = GaugeMetricFamily(
            "pg_guardian_relay_intake_oldest_seconds", "How long the oldest unrouted alert has waited", labels=env_label
        )
        job_ok = GaugeMetricFamily(
            "pg_guardian_job_last_success_timestamp_seconds",
            "When the job last finished without error",
            labels=["environment", "job"],
        )
        job_lag = GaugeMetricFamily(
            "pg_guardian_job_lag_seconds", "Seconds since the job last finished", labels=["environment", "job"]
        )
        job_overdue = GaugeMetricFamily(
            "pg_guardian_job_overdue", "1 if the job has not run within its max_lag", labels=["environment", "job"]
        )
        job_failures = CounterMetricFamily(
            "pg_guardian_job_failures", "Failed runs of the job", labels=["environment", "job"]
        )
        job_runs = CounterMetricFamily("pg_guardian_job_runs", "Runs of the job", labels=["environment", "job"])
        guarded = GaugeMetricFamily(
            "pg_guardian_guarded", "1 if something runs the guardian's jobs and none is overdue", labels=env_label
        )
        watched = GaugeMetricFamily("pg_guardian_watched_tables", "Tables watched for test data", labels=env_label)
        lockdown = GaugeMetricFamily(
            "pg_guardian_lockdown_active", "1 while the environment is locked down", labels=env_label
        )
        drift = GaugeMetricFamily(
            "pg_guardian_drift_differences",
            "Schema differences from the approved baseline (the open ENVIRONMENT_DRIFT alert)",
            labels=env_label,
        )
        for result in self.environments.gather(queries.metrics_sample):
            env = result.env
            up.add_metric([env], 1.0 if result.ok else 0.0)
            if not result.ok or result.value is None:
                continue
            sample: dict[str, Any] = result.value
            for row in sample["open"]:
                open_alerts.add_metric([env, row["severity"], row["type"]], float(row["n"]))
            for row in sample["raised"]:
                raised.add_metric([env, row["severity"], row["type"]], float(row["n"]))
            for row in sample["relay"]:
                depth.add_metric([env, row["channel"]], float(row["depth"]))
                dead.add_metric([env, row["channel"]], float(row["dead_messages"]))
                oldest.add_metric([env, row["channel"]], float(row["oldest_seconds"] or 0.0))
            intake = sample["intake"] or {}
            backlog.add_metric([env], float(intake.get("intake_backlog") or 0))
            backlog_age.add_metric([env], float(intake.get("oldest_seconds") or 0.0))
            for row in sample["jobs"]:
                labels = [env, row["name"]]
                if row["last_ok"] is not None:
                    job_ok.add_metric(labels, float(row["last_ok"]))
                job_lag.add_metric(labels, float(row["lag"] or 0.0))
                job_overdue.add_metric(labels, 1.0 if row["overdue"] else 0.0)
                job_failures.add_metric(labels, float(row["failures"]))
                job_runs.add_metric(labels, float(row["runs"]))
            state = sample["state"] or {}
            guarded.add_metric([env], 1.0 if state.get("guarded") else 0.0)
            watched.add_metric([env], float(state.get("watched") or 0))
            lockdown.add_metric([env], 1.0 if state.get("lockdown") else 0.0)
            drift.add_metric([env], float(state.get("drift") or 0))
        yield from (
            up,
            open_alerts,
            raised,
            depth,
            oldest,
            dead,
            backlog,
            backlog_age,
            job_ok,
            job_lag,
            job_overdue,
            job_failures,
            job_runs,
            guarded,
            watched,
            lockdown,
            drift,
        )


def registry(environments: Environments) -> tuple[CollectorRegistry, Histogram]:
    """A registry of its own (so that several apps in one process never clash)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(GuardianCollector(environments))
    latency = Histogram(
        "pg_guardian_dashboard_request_duration_seconds",
        "Dashboard request latency by route",
        ["method", "route", "status"],
        registry=reg,
        buckets=LATENCY_BUCKETS,
    )
    return reg, latency
