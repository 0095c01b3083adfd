"""The SQL the dashboard reads with (and the few writes no other module offers).

Each function takes a connection to one environment and returns plain data. Every query is
bounded (LIMIT, a time window on an indexed column) so that pages stay light on databases
with a long alert history. Writes that exist elsewhere (cleanups, restores, silences) are
imported from their modules by the actions, not repeated here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

from pg_guardian import vocabulary
from pg_guardian.dashboard.envs import NotInstalled

SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "INFO")
STATES = ("open", "unacknowledged", "acknowledged", "resolved", "all")
# guardian.monitoring_alerts.outcome (monitoring_alerts_outcome_chk): why an alert was closed.
OUTCOMES = vocabulary.OUTCOMES
NO_OUTCOME = "none"  # the alerts filter's "resolved without an outcome"
ALERT_TYPE = re.compile(r"^[A-Z][A-Z0-9_]{0,62}$")
ACTIVITY_ALERTS = ("BULK_OPERATION", "OFF_HOURS_ACTIVITY", "RAPID_CREATION", "UNFILTERED_WRITE", "ACTIVITY_ANOMALY")
SECURITY_ALERT_PATTERN = r"^(ROLE_|PRIVILEGE_|LOGIN_|BRUTE_FORCE|SECURITY_DEFINER|RLS_|SCHEMA_WRITABLE)"
GUARD_STATUS = "SELECT guarded, scheduler, scheduled_in, overdue_jobs, problem, fix FROM guardian.guard_status()"
ALERT_COLUMNS = """a.id, a.severity, a.type, a.message, a.table_name, a.record_id, a.environment,
       a.occurrences, a.created_at, a.last_seen_at, a.acknowledged_at, a.acknowledged_by,
       a.resolved_at, a.resolved_by, a.resolution_note, a.outcome, a.fingerprint"""


def _rows(conn: psycopg.Connection, query: str, params: Any = None) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.cursor(row_factory=dict_row).execute(query, params).fetchall()]


def _row(conn: psycopg.Connection, query: str, params: Any = None) -> dict[str, Any] | None:
    row = conn.cursor(row_factory=dict_row).execute(query, params).fetchone()
    return dict(row) if row is not None else None


def installed(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT to_regclass('guardian.monitoring_alerts') IS NOT NULL").fetchone()
    return bool(row and row[0])


def _require(conn: psycopg.Connection) -> None:
    if not installed(conn):
        raise NotInstalled(f"pg_guardian is not installed in database {conn.info.dbname}: run `pg-guardian install`")


# -- overview -----------------------------------------------------------------------------------


def overview(conn: psycopg.Connection) -> dict[str, Any]:
    """One environment at a glance: mode, lockdown, open alerts, jobs, drift, last scan, relay."""
    _require(conn)
    data = _row(
        conn,
        """SELECT guardian.current_environment() AS environment, guardian.current_mode() AS mode,
                  guardian.version() AS version, pg_catalog.now() AS now,
                  (SELECT count(*) FROM guardian.watched_tables) AS watched_tables""",
    )
    assert data is not None
    counts = _rows(
        conn,
        """SELECT a.severity, count(*) AS n, count(*) FILTER (WHERE a.acknowledged_at IS NULL) AS unacknowledged
             FROM guardian.monitoring_alerts AS a WHERE a.resolved_at IS NULL GROUP BY a.severity""",
    )
    data["open_alerts"] = {s: 0 for s in SEVERITIES} | {r["severity"]: int(r["n"]) for r in counts}
    data["open_total"] = sum(data["open_alerts"].values())
    data["unacknowledged"] = sum(int(r["unacknowledged"]) for r in counts)
    data["lockdown"] = _row(
        conn,
        """SELECT id, reason, automatic, started_at, started_by, roles, revoked
             FROM guardian.lockdown_status LIMIT 1""",
    )
    data["guard"] = _row(conn, GUARD_STATUS)
    data["jobs"] = _rows(
        conn,
        """SELECT name, enabled, last_status, last_finished_at, last_ok_at, overdue, failures, runs,
                  extract(epoch FROM lag)::float8 AS lag_seconds, last_error, last_result
             FROM guardian.job_status ORDER BY name""",
    )
    data["failed_jobs"] = [j["name"] for j in data["jobs"] if j["enabled"] and j["last_status"] == "error"]
    data["overdue_jobs"] = [j["name"] for j in data["jobs"] if j["overdue"]]
    data["drift"] = drift_summary(conn)
    scan = _row(
        conn,
        """SELECT (SELECT max(f.created_at) FROM guardian.findings AS f
                    WHERE f.operation = 'SCAN' AND f.created_at > now() - interval '30 days') AS last_scan,
                  (SELECT max(c.last_run_at) FROM guardian.checks AS c) AS last_checks,
                  (SELECT count(*) FROM guardian.check_status AS c
                    WHERE c.enabled AND c.last_status IN ('degraded', 'error')) AS checks_attention""",
    )
    data.update(scan or {})
    data["relay"] = _row(
        conn,
        """SELECT coalesce(sum(pending), 0)::bigint AS pending, coalesce(sum(dead_messages), 0)::bigint AS dead,
                  extract(epoch FROM max(oldest_undelivered_age))::float8 AS oldest_seconds
             FROM guardian.relay_status""",
    )
    return data


def drift_summary(conn: psycopg.Connection) -> dict[str, Any]:
    """The baseline, the open drift alert (with its count of differences), the last check."""
    baseline = _row(
        conn,
        """SELECT id, label, taken_at, approved_at, approved_by, objects
             FROM guardian.schema_snapshots WHERE baseline""",
    )
    alert = _row(
        conn,
        """SELECT id, severity, message, last_seen_at, (metadata ->> 'count')::int AS differences
             FROM guardian.monitoring_alerts
            WHERE type = 'ENVIRONMENT_DRIFT' AND resolved_at IS NULL
            ORDER BY last_seen_at DESC LIMIT 1""",
    )
    check = _row(
        conn, "SELECT last_finished_at, last_status, last_result FROM guardian.job_status WHERE name = 'drift_check'"
    )
    return {
        "baseline": baseline,
        "alert": alert,
        "differences": int(alert["differences"] or 0) if alert else 0,
        "last_check": check,
    }


def recent_alerts(conn: psycopg.Connection, limit: int = 20) -> list[dict[str, Any]]:
    """The newest alerts (new or repeated), for the live feed."""
    return _rows(
        conn,
        f"""SELECT {ALERT_COLUMNS} FROM guardian.monitoring_alerts AS a
             ORDER BY a.created_at DESC LIMIT %s""",
        (limit,),
    )


def new_alerts(conn: psycopg.Connection, since: datetime, limit: int = 200) -> list[dict[str, Any]]:
    """Alerts created, or open ones repeated, after ``since`` (the live feed's catch-up)."""
    return _rows(
        conn,
        f"""SELECT * FROM (
                SELECT {ALERT_COLUMNS} FROM guardian.monitoring_alerts AS a WHERE a.created_at > %(since)s
                UNION
                SELECT {ALERT_COLUMNS} FROM guardian.monitoring_alerts AS a
                 WHERE a.resolved_at IS NULL AND a.last_seen_at > %(since)s) AS x
             ORDER BY x.last_seen_at LIMIT %(limit)s""",
        {"since": since, "limit": limit},
    )


def activity(conn: psycopg.Connection, hours: int) -> dict[str, Any]:
    """Rows written per table and minute over the last hours, with bulk and off-hours alerts, and
    the anomaly detector's expected band per 10 minutes (all three operations together). Tables
    are named schema-qualified whatever the session's search_path, as alerts and metrics name them."""
    series = _rows(
        conn,
        """SELECT format('%%I.%%I', n.nspname, c.relname) AS table_name, w.minute, w.inserts, w.updates, w.deletes
             FROM guardian.activity_windows AS w
             JOIN pg_catalog.pg_class AS c ON c.oid = w.relid
             JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
            WHERE w.minute >= date_trunc('minute', now()) - make_interval(hours => %s)
            ORDER BY 1, 2""",
        (hours,),
    )
    markers = _rows(
        conn,
        """SELECT a.id, a.type, a.severity, a.table_name, a.message, a.created_at, a.last_seen_at
             FROM guardian.monitoring_alerts AS a
            WHERE a.created_at >= now() - make_interval(hours => %s) - interval '1 day'
              AND a.type = ANY(%s) AND a.last_seen_at >= now() - make_interval(hours => %s)
            ORDER BY a.last_seen_at""",
        (hours, list(ACTIVITY_ALERTS), hours),
    )
    now = _row(conn, "SELECT date_trunc('minute', now()) AS now")
    bands = (
        _rows(
            conn,
            """SELECT s.subject AS table_name, s.sampled_at, sum(x.value) AS value,
                  sum(s.expected) AS expected,
                  sum(greatest(s.lower_bound, 0)) AS lower, sum(s.upper_bound) AS upper,
                  bool_or(s.is_anomaly) AS anomaly,
                  string_agg(CASE WHEN s.is_anomaly THEN format('%%s %%s (usually %%s-%%s)', x.value::bigint,
                             substr(s.metric, 8), greatest(floor(s.lower_bound), 0)::bigint,
                             ceil(s.upper_bound)::bigint) END, ', ') AS what
             FROM guardian.anomaly_scores AS s
             CROSS JOIN LATERAL (SELECT y.value FROM guardian.metric_samples AS y
                                  WHERE y.metric = s.metric AND y.subject = s.subject
                                    AND y.sampled_at = s.sampled_at LIMIT 1) AS x
            WHERE s.metric IN ('writes.insert', 'writes.update', 'writes.delete')
              AND s.sampled_at >= date_trunc('minute', now()) - make_interval(hours => %s) - interval '10 minutes'
              AND s.is_anomaly IS NOT NULL
            GROUP BY 1, 2 ORDER BY 1, 2""",
            (hours,),
        )
        if _has_anomaly_scores(conn)
        else []
    )
    tables: dict[str, dict[str, Any]] = {}
    for row in series:
        entry = tables.setdefault(
            row["table_name"], {"table": row["table_name"], "points": [], "markers": [], "totals": [0, 0, 0]}
        )
        entry["points"].append(
            {"minute": row["minute"], "inserts": row["inserts"], "updates": row["updates"], "deletes": row["deletes"]}
        )
        entry["totals"] = [
            entry["totals"][0] + row["inserts"],
            entry["totals"][1] + row["updates"],
            entry["totals"][2] + row["deletes"],
        ]
    for marker in markers:
        entry = tables.setdefault(
            marker["table_name"] or "?",
            {"table": marker["table_name"] or "?", "points": [], "markers": [], "totals": [0, 0, 0]},
        )
        entry["markers"].append(marker)
    for band in bands:
        if band["table_name"] in tables:
            tables[band["table_name"]].setdefault("bands", []).append(band)
    return {"hours": hours, "now": now["now"] if now else None, "tables": sorted(tables.values(), key=_busiest)}


def _has_anomaly_scores(conn: psycopg.Connection) -> bool:
    """Anomaly verdicts exist from pg_guardian 0.2.0 on (an older environment has none)."""
    row = conn.execute("SELECT to_regclass('guardian.anomaly_scores') IS NOT NULL").fetchone()
    return bool(row and row[0])


def _busiest(entry: dict[str, Any]) -> tuple[int, str]:
    return (-sum(entry["totals"]) - 1000 * len(entry["markers"]), entry["table"])


# -- alerts -------------------------------------------------------------------------------------


@dataclass
class AlertFilter:
    """Checked filters of the alerts page (every field optional).

    ``outcomes`` are values of :data:`OUTCOMES` and :data:`NO_OUTCOME` (no outcome said).
    """

    environments: list[str] = field(default_factory=list)
    severities: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    table: str | None = None
    state: str = "open"
    text: str | None = None
    limit: int = 200
    outcomes: list[str] = field(default_factory=list)

    def where(self) -> tuple[str, dict[str, Any]]:
        clauses: list[str] = []
        params: dict[str, Any] = {"limit": self.limit}
        if self.severities:
            clauses.append("a.severity = ANY(%(severities)s)")
            params["severities"] = self.severities
        if self.types:
            clauses.append("a.type = ANY(%(types)s)")
            params["types"] = self.types
        if self.table:
            clauses.append("a.table_name = %(table)s")
            params["table"] = self.table
        if self.text:
            clauses.append("strpos(lower(a.message), lower(%(text)s)) > 0")
            params["text"] = self.text
        if self.outcomes:
            clauses.append("(a.outcome = ANY(%(outcomes)s) OR (%(no_outcome)s AND a.outcome IS NULL))")
            params["outcomes"] = [o for o in self.outcomes if o != NO_OUTCOME]
            params["no_outcome"] = NO_OUTCOME in self.outcomes
        clauses.append(
            {
                "open": "a.resolved_at IS NULL",
                "unacknowledged": "a.resolved_at IS NULL AND a.acknowledged_at IS NULL",
                "acknowledged": "a.resolved_at IS NULL AND a.acknowledged_at IS NOT NULL",
                "resolved": "a.resolved_at IS NOT NULL",
                "all": "true",
            }[self.state]
        )
        return " AND ".join(clauses), params


def alerts(conn: psycopg.Connection, flt: AlertFilter) -> list[dict[str, Any]]:
    """Alerts matching the filter, newest first."""
    where, params = flt.where()
    return _rows(
        conn,
        f"""SELECT {ALERT_COLUMNS} FROM guardian.monitoring_alerts AS a
             WHERE {where} ORDER BY a.created_at DESC LIMIT %(limit)s""",
        params,
    )


def alert_groups(conn: psycopg.Connection, flt: AlertFilter) -> list[dict[str, Any]]:
    """Matching alerts grouped by fingerprint: how often, since when, and the latest of each.

    ``regression`` marks a group whose condition came back after one of its alerts was resolved.
    """
    where, params = flt.where()
    return _rows(
        conn,
        f"""WITH m AS (SELECT {ALERT_COLUMNS} FROM guardian.monitoring_alerts AS a
                        WHERE {where} ORDER BY a.created_at DESC LIMIT 5000)
            SELECT m.fingerprint, count(*) AS alerts, sum(m.occurrences)::bigint AS occurrences,
                   min(m.created_at) AS first_seen, max(m.last_seen_at) AS last_seen,
                   count(*) FILTER (WHERE m.resolved_at IS NULL) AS open,
                   bool_or(m.resolved_at IS NOT NULL) AND bool_or(m.resolved_at IS NULL) AS regression,
                   (array_agg(m.id ORDER BY m.created_at DESC))[1] AS id,
                   (array_agg(m.severity ORDER BY m.created_at DESC))[1] AS severity,
                   (array_agg(m.type ORDER BY m.created_at DESC))[1] AS type,
                   (array_agg(m.message ORDER BY m.created_at DESC))[1] AS message,
                   (array_agg(m.table_name ORDER BY m.created_at DESC))[1] AS table_name,
                   array_agg(m.id ORDER BY m.created_at DESC) FILTER (WHERE m.resolved_at IS NULL) AS open_ids
              FROM m GROUP BY m.fingerprint ORDER BY max(m.last_seen_at) DESC LIMIT %(limit)s""",
        params,
    )


def alert_types(conn: psycopg.Connection) -> list[str]:
    """Every alert type in the table (the filter's choices), by a skip scan of its type index."""
    return [
        r[0]
        for r in conn.execute(
            """WITH RECURSIVE t(type) AS (
                   SELECT min(a.type) FROM guardian.monitoring_alerts AS a
                   UNION ALL
                   SELECT (SELECT min(a.type) FROM guardian.monitoring_alerts AS a WHERE a.type > t.type)
                     FROM t WHERE t.type IS NOT NULL)
               SELECT type FROM t WHERE type IS NOT NULL LIMIT 500"""
        ).fetchall()
    ]


def alert(conn: psycopg.Connection, alert_id: UUID) -> dict[str, Any] | None:
    """One alert with its context and metadata."""
    return _row(
        conn,
        f"SELECT {ALERT_COLUMNS}, a.context, a.metadata FROM guardian.monitoring_alerts AS a WHERE a.id = %s",
        (alert_id,),
    )


def findings(conn: psycopg.Connection, alert_id: UUID, limit: int = 200) -> list[dict[str, Any]]:
    """The contaminated values of an alert: record, column, rule and the redacted sample."""
    return _rows(
        conn,
        """SELECT f.relid::text AS table_name, f.record_id, f.column_name, f.rule, f.severity, f.sample,
                  f.operation, f.created_at
             FROM guardian.findings AS f WHERE f.alert_id = %s ORDER BY f.id LIMIT %s""",
        (alert_id, limit),
    )


def findings_count(conn: psycopg.Connection, alert_id: UUID) -> int:
    row = conn.execute(
        "SELECT count(DISTINCT record_id) FROM guardian.findings WHERE alert_id = %s", (alert_id,)
    ).fetchone()
    return int(row[0]) if row else 0


def stored_script(conn: psycopg.Connection, alert_id: UUID) -> dict[str, Any] | None:
    """The newest cleanup script generated for an alert (with it, or by a person)."""
    return _row(
        conn,
        """SELECT batch_id, script, automatic, created_at, created_by
             FROM guardian.cleanup_scripts WHERE alert_id = %s ORDER BY created_at DESC LIMIT 1""",
        (alert_id,),
    )


def quarantine_batches(conn: psycopg.Connection, alert_id: UUID) -> list[dict[str, Any]]:
    """The cleanups of an alert: batches with their rows per table and restore state."""
    return _rows(
        conn,
        """SELECT batch_id, status, automatic, row_count, tables, created_at, created_by, applied_at,
                  restored_at, restored_by, kept_until
             FROM guardian.quarantine_status WHERE alert_id = %s ORDER BY created_at DESC""",
        (alert_id,),
    )


def quarantine_batch(conn: psycopg.Connection, batch: UUID) -> dict[str, Any] | None:
    return _row(
        conn,
        "SELECT batch_id, alert_id, status, row_count FROM guardian.quarantine_status WHERE batch_id = %s",
        (batch,),
    )


def silences(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Silences in force now or later."""
    return _rows(
        conn,
        """SELECT s.id, s.matchers, s.channel, s.starts_at, s.ends_at, s.comment, s.created_by, s.held_notices
             FROM guardian.active_silences AS s ORDER BY s.ends_at""",
    )


def silence_exists(conn: psycopg.Connection, silence: UUID) -> bool:
    row = conn.execute("SELECT EXISTS (SELECT FROM guardian.relay_silences WHERE id = %s)", (silence,)).fetchone()
    return bool(row and row[0])


# -- contamination ------------------------------------------------------------------------------


def contamination(conn: psycopg.Connection, days: int = 30) -> dict[str, Any]:
    """Watched tables (mode, column kinds), findings by rule, the rules and the allowlist."""
    _require(conn)
    watched = _rows(
        conn,
        """SELECT w.relid::text AS table_name, guardian.effective_mode(w.relid) AS mode, w.columns,
                  w.key_columns, w.watched_at, w.watched_by
             FROM guardian.watched_tables AS w ORDER BY 1""",
    )
    by_rule = _rows(
        conn,
        """SELECT f.rule, f.relid::text AS table_name, max(f.severity) AS severity, count(*) AS findings,
                  count(DISTINCT f.record_id) AS records, max(f.created_at) AS last_at
             FROM guardian.findings AS f
            WHERE f.created_at > now() - make_interval(days => %s)
            GROUP BY 1, 2 ORDER BY count(*) DESC LIMIT 200""",
        (days,),
    )
    rules = _rows(
        conn,
        """SELECT name, pack, kinds, column_pattern, match_type, severity, enabled, environments, description,
                  builtin, updated_at, updated_by
             FROM guardian.rules ORDER BY pack, name""",
    )
    allowlist = _rows(
        conn,
        """SELECT id, rule, relid::text AS table_name, column_name, value, reason, expires_at, created_at,
                  created_by
             FROM guardian.allowlist ORDER BY created_at DESC LIMIT 500""",
    )
    # rules learned from labels (0.2.0): the open suggestions, without their examples (values)
    suggestions = (
        _rows(
            conn,
            """SELECT s.id, s.relid::text AS table_name, s.column_name, s.kind, s.match_type,
                      coalesce(s.pattern, array_to_string(s.terms, ', ')) AS match, s.test_hits, s.real_hits,
                      s.matches_now, s.est_precision::float AS est_precision, s.created_at
                 FROM guardian.rule_suggestions AS s
                WHERE s.status = 'open'
                ORDER BY s.est_precision DESC, s.test_hits DESC, s.id LIMIT 100""",
        )
        if _row(conn, "SELECT to_regclass('guardian.rule_suggestions') IS NOT NULL AS ok") == {"ok": True}
        else []
    )
    return {
        "days": days,
        "watched": watched,
        "findings_by_rule": by_rule,
        "rules": rules,
        "allowlist": allowlist,
        "suggestions": suggestions,
    }


def watched_table(conn: psycopg.Connection, table: str) -> str | None:
    """The watched table a name denotes, schema-qualified as the guardian writes it; else None."""
    row = conn.execute(
        "SELECT w.relid::text FROM guardian.watched_tables AS w WHERE w.relid = to_regclass(%s)", (table,)
    ).fetchone()
    return str(row[0]) if row else None


def set_rule_enabled(conn: psycopg.Connection, rule: str, enabled: bool) -> bool:
    """Switch a rule on or off (guardian_admin may update guardian.rules); False if unknown."""
    cur = conn.execute("UPDATE guardian.rules SET enabled = %s WHERE name = %s", (enabled, rule))
    return cur.rowcount == 1


def delete_allowlist(conn: psycopg.Connection, entry: int) -> bool:
    cur = conn.execute("DELETE FROM guardian.allowlist WHERE id = %s", (entry,))
    return cur.rowcount == 1


def allow(
    conn: psycopg.Connection,
    *,
    rule: str | None,
    table: str | None,
    column: str | None,
    value: str | None,
    reason: str,
) -> int:
    """Allowlist a false positive through guardian.allow(); returns the entry id."""
    row = conn.execute(
        "SELECT guardian.allow(p_rule => %s, p_table => %s::regclass, p_column => %s, p_value => %s, p_reason => %s)",
        (rule, table, column, value, reason),
    ).fetchone()
    assert row is not None
    return int(row[0])


# -- drift --------------------------------------------------------------------------------------


def drift(conn: psycopg.Connection, changes: int = 50) -> dict[str, Any]:
    """Baseline and snapshots, the last drift check, recent schema changes and who made them."""
    _require(conn)
    data = drift_summary(conn)
    data["snapshots"] = _rows(
        conn,
        """SELECT id, label, source, environment, taken_at, taken_by, objects, baseline, approved_at, approved_by
             FROM guardian.schema_snapshots ORDER BY taken_at DESC LIMIT 20""",
    )
    data["changes"] = _rows(
        conn,
        """SELECT occurred_at, command_tag, object_type, object_identity, role_name, session_user_name,
                  application_name, host(client_addr) AS client_addr, alert_id
             FROM guardian.schema_changes ORDER BY occurred_at DESC, id DESC LIMIT %s""",
        (changes,),
    )
    return data


def baseline_differences(conn: psycopg.Connection, include_cosmetic: bool = False) -> list[dict[str, Any]]:
    """How the live schema differs from the approved baseline (empty without a baseline)."""
    if not _row(conn, "SELECT id FROM guardian.schema_snapshots WHERE baseline"):
        return []
    return _rows(
        conn,
        "SELECT kind, identity, parent, change, cosmetic, detail FROM guardian.diff_schema(NULL, %s) LIMIT 1000",
        (include_cosmetic,),
    )


# -- health and security ------------------------------------------------------------------------


def health(conn: psycopg.Connection) -> dict[str, Any]:
    """Each check's last result, the jobs, and whether anything runs them."""
    _require(conn)
    return {
        "checks": _rows(
            conn,
            """SELECT name, category, enabled, is_condition, description, last_run_at, last_status, last_detail,
                      last_findings, extract(epoch FROM last_duration)::float8 AS seconds, scope
                 FROM guardian.check_status ORDER BY category, name""",
        ),
        "guard": _row(
            conn, "SELECT guarded, scheduler, scheduled_in, overdue_jobs, problem, fix FROM guardian.guard_status()"
        ),
        "jobs": _rows(
            conn,
            """SELECT name, schedule, enabled, last_status, last_finished_at, last_ok_at, overdue, runs, failures,
                      extract(epoch FROM lag)::float8 AS lag_seconds, last_error, last_result
                 FROM guardian.job_status ORDER BY name""",
        ),
    }


def security(conn: psycopg.Connection, days: int = 7) -> dict[str, Any]:
    """Failed logins, role and privilege changes and posture findings of the last days."""
    _require(conn)
    return {
        "days": days,
        "failed_logins": _rows(
            conn,
            """SELECT occurred_at, role_name, database_name, client_addr, application_name, message
                 FROM guardian.security_events
                WHERE kind = 'login_failed' AND occurred_at > now() - make_interval(days => %s)
                ORDER BY occurred_at DESC LIMIT 200""",
            (days,),
        ),
        "failed_by_role": _rows(
            conn,
            """SELECT role_name, client_addr, count(*) AS attempts, max(occurred_at) AS last_at
                 FROM guardian.security_events
                WHERE kind = 'login_failed' AND occurred_at > now() - make_interval(days => %s)
                GROUP BY 1, 2 ORDER BY count(*) DESC LIMIT 50""",
            (days,),
        ),
        "alerts": _rows(
            conn,
            f"""SELECT {ALERT_COLUMNS}, a.metadata FROM guardian.monitoring_alerts AS a
                 WHERE a.created_at > now() - make_interval(days => %s) AND a.type ~ %s
                 ORDER BY a.created_at DESC LIMIT 200""",
            (days, SECURITY_ALERT_PATTERN),
        ),
    }


# -- metrics ------------------------------------------------------------------------------------


def metrics_sample(conn: psycopg.Connection) -> dict[str, Any]:
    """Everything /metrics reports about one environment, in few round trips."""
    _require(conn)
    return {
        "open": _rows(
            conn,
            """SELECT severity, type, count(*) AS n FROM guardian.monitoring_alerts
                WHERE resolved_at IS NULL GROUP BY 1, 2""",
        ),
        "raised": _rows(conn, "SELECT severity, type, count(*) AS n FROM guardian.monitoring_alerts GROUP BY 1, 2"),
        "relay": _rows(
            conn,
            """SELECT channel, pending + in_messages AS depth, dead_messages,
                      extract(epoch FROM oldest_undelivered_age)::float8 AS oldest_seconds
                 FROM guardian.relay_status""",
        ),
        "intake": _row(
            conn,
            """SELECT intake_backlog, extract(epoch FROM now() - oldest_intake_at)::float8 AS oldest_seconds
                 FROM guardian.relay_overview()""",
        ),
        "jobs": _rows(
            conn,
            """SELECT name, extract(epoch FROM last_ok_at)::float8 AS last_ok, extract(epoch FROM lag)::float8 AS lag,
                      failures, runs, overdue
                 FROM guardian.job_status""",
        ),
        "state": _row(
            conn,
            """SELECT (SELECT count(*) FROM guardian.watched_tables) AS watched,
                      EXISTS (SELECT FROM guardian.lockdown_status) AS lockdown,
                      (SELECT guarded FROM guardian.guard_status()) AS guarded,
                      coalesce((SELECT (metadata ->> 'count')::int FROM guardian.monitoring_alerts
                                 WHERE type = 'ENVIRONMENT_DRIFT' AND resolved_at IS NULL
                                 ORDER BY last_seen_at DESC LIMIT 1), 0) AS drift""",
        ),
    }
