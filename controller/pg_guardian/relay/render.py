"""What a message says on each channel: Slack attachments, webhook JSON, email from Jinja2, and
plain text (title and body) for Apprise, Datadog events and Sentry events.

Email templates live in ``pg_guardian/relay/templates/email/`` (``subject.txt.j2``, ``alert.txt.j2``,
``alert.html.j2``); a file of the same name under the configured ``template_dir`` replaces the
packaged one. Templates use StrictUndefined: a mistake is an error, never a silently empty field.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from pg_guardian import __version__
from pg_guardian.relay.model import AlertView, Message

EMAIL_TEMPLATES = ("email/subject.txt.j2", "email/alert.txt.j2", "email/alert.html.j2")
SEVERITY_COLORS = {
    "CRITICAL": "#d50200",
    "HIGH": "#ff6f00",
    "MEDIUM": "#f2c744",
    "LOW": "#439fe0",
    "INFO": "#9e9e9e",
}
SEVERITY_ICONS = {"CRITICAL": "🚨", "HIGH": "⚠️", "MEDIUM": "🔶", "LOW": "🔷", "INFO": "ℹ️"}
SLACK_TEXT_LIMIT = 3000
EMAIL_TEXT_LIMIT = 10000
WEBHOOK_TEXT_LIMIT = 16384
PLAIN_TEXT_LIMIT = 4000  # Apprise: the services themselves cut or split longer bodies
DATADOG_TEXT_LIMIT = 4000  # Datadog's limit for an event's text
SENTRY_TEXT_LIMIT = 8000  # Sentry cuts a message at 8192 characters
DATADOG_ALERT_TYPES = {"CRITICAL": "error", "HIGH": "error", "MEDIUM": "warning", "LOW": "info", "INFO": "info"}
SENTRY_LEVELS = {"CRITICAL": "fatal", "HIGH": "error", "MEDIUM": "warning", "LOW": "info", "INFO": "info"}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")

# What the reader should do, by alert type; metadata.action_required overrides.
ACTIONS = {
    "TEST_DATA_CONTAMINATION": "Test data reached this database. Find how it got in, "
    "stop the source, "
    "then review and run the cleanup script.",
    "TEST_DATA_PATTERN": "Test data reached this database. Find how it got in, stop the source, "
    "then review and run the cleanup script.",
    "TEST_TOOL_WRITE": "A test tool or CI job wrote to production: find the job behind this session, point it at a "
    "test database, and scan the table for what it wrote.",
    "CONTAMINATION_RISK": "This source brought test data before: check what it writes today.",
    "SUSPECTED_TEST_DATA": "A value looks unlike the column's real data: review the record, then label it test or "
    "real with guardian.label_records.",
    "BULK_OPERATION": "Check that this bulk change was intended and who made it.",
    "ACTIVITY_ANOMALY": "Check who wrote this and why; if it was planned, declare such windows with "
    "guardian.expect so they are not flagged again.",
    "METRIC_ANOMALY": "Find what changed at that time; if it was planned, declare it with guardian.expect.",
    "ENVIRONMENT_DRIFT": "Compare the schemas and bring the environments back in line.",
    "ENVIRONMENT_CHANGED": "Confirm that the environment change was intended.",
    "GUARD_MODE_CHANGED": "Confirm that the guard mode change was intended.",
    "JOB_FAILED": "Read the job's error in guardian.job_status and fix its cause.",
    "RELAY_DEAD_LETTER": "Fix the failing channel, then re-send with `pg-guardian relay retry`.",
    "TABLE_TRUNCATED": "Confirm the TRUNCATE was intended; if not, restore the table from a backup.",
    "WATCH_LOST": "Watch the table again (guardian.watch) or drop its leftover guardian triggers.",
}
SEVERITY_ACTIONS = {
    "CRITICAL": "Act now: investigate and contain.",
    "HIGH": "Investigate today.",
}


class RenderError(Exception):
    """A template failed to load or render; the message names the template and line."""


def clean(text: str | None, limit: int) -> str:
    """Text safe to show: control characters made visible (``\\x1b``), cut to ``limit``."""
    if text is None:
        return ""
    shown = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256 else " ", text)
    if len(shown) > limit:
        shown = shown[: max(limit - 40, 0)] + f"… [cut: {len(text):,} characters in all]"
    return shown


def action_required(alert: AlertView) -> str:
    """What the reader should do about an alert."""
    custom = alert.metadata.get("action_required") if isinstance(alert.metadata, dict) else None
    if isinstance(custom, str) and custom.strip():
        return custom.strip()
    return ACTIONS.get(alert.type) or SEVERITY_ACTIONS.get(alert.severity, "Review the alert.")


def cleanup_url(app_url: str | None, alert: AlertView) -> str | None:
    """``${APP_URL}/admin/cleanup/<alert id>``, when APP_URL is set."""
    return f"{app_url}/admin/cleanup/{alert.id}" if app_url else None


def _time(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else ""


def title(msg: Message) -> str:
    """``SEVERITY: TYPE``, with the count for a group and a mark for a repeat."""
    lead = msg.lead
    text = f"{lead.severity}: {lead.type}"
    if msg.alert_count > 1:
        text += f" ({msg.alert_count:,} alerts)"
    if msg.repeat:
        text += " (still open)"
    return text


def summary(msg: Message, limit: int) -> str:
    """The body text: the lead alert's message, then what the group adds."""
    lead = msg.lead
    lines = [clean(lead.message, limit)]
    if lead.message_length > len(lead.message):
        lines[0] = clean(lead.message, min(limit, len(lead.message) - 1))
    if msg.repeat:
        lines.append(f"Still open: seen {lead.occurrences:,} times since {_time(lead.created_at)}.")
    elif lead.occurrences > 1 and msg.alert_count == 1:
        lines.append(f"Seen {lead.occurrences:,} times.")
    if msg.alert_count > 1:
        lines.append(
            f"{msg.alert_count:,} alerts in this group ({msg.total_occurrences:,} occurrences) "
            f"between {_time(msg.first_at)} and {_time(msg.last_at)}."
        )
        for other in msg.alerts[1:]:
            lines.append(f"• {other.severity} {clean(other.message, 200)}")
        if msg.more:
            lines.append(f"… and {msg.more:,} more.")
    return "\n".join(lines)


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(
    msg: Message,
    *,
    app_url: str | None,
    channel: str | None = None,
    username: str = "Database Guardian",
    icon_emoji: str = ":warning:",
) -> dict[str, Any]:
    """The design's Slack message: one attachment coloured by severity, with fields and a button
    (the weekly digest: its summary, see :mod:`.digest`)."""
    from pg_guardian.relay import digest

    report = digest.report_of(msg)
    if report is not None:
        return digest.slack_payload(
            msg, report, app_url=app_url, channel=channel, username=username, icon_emoji=icon_emoji
        )
    lead = msg.lead
    fields = [
        {
            "title": "Environment",
            "value": _slack_escape(lead.environment or "unknown"),
            "short": True,
        },
        {"title": "Table", "value": _slack_escape(lead.table_name or "-"), "short": True},
        {"title": "Time", "value": _time(lead.created_at), "short": True},
    ]
    if msg.alert_count > 1:
        fields.append({"title": "Alerts", "value": f"{msg.alert_count:,}", "short": True})
    if lead.occurrences > 1 or msg.total_occurrences > msg.alert_count:
        fields.append(
            {
                "title": "Occurrences",
                "value": f"{max(msg.total_occurrences, lead.occurrences):,}",
                "short": True,
            }
        )
    attachment: dict[str, Any] = {
        "color": SEVERITY_COLORS.get(lead.severity, "#9e9e9e"),
        "title": _slack_escape(title(msg)),
        "text": _slack_escape(summary(msg, SLACK_TEXT_LIMIT)),
        "fallback": _slack_escape(f"{title(msg)}: {clean(lead.message, 200)}"),
        "fields": fields,
        "footer": f"pg_guardian relay · {msg.idempotency_key}",
    }
    url = cleanup_url(app_url, lead)
    if url:
        attachment["actions"] = [{"type": "button", "text": "View Cleanup Script", "url": url}]
    payload: dict[str, Any] = {
        "username": username,
        "icon_emoji": icon_emoji,
        "attachments": [attachment],
    }
    if channel:
        payload["channel"] = channel
    return payload


def _alert_json(alert: AlertView, app_url: str | None) -> dict[str, Any]:
    return {
        "id": str(alert.id),
        "idempotency_key": alert.idempotency_key,
        "severity": alert.severity,
        "type": alert.type,
        "message": alert.message[:WEBHOOK_TEXT_LIMIT],
        "message_truncated": alert.message_length > min(len(alert.message), WEBHOOK_TEXT_LIMIT),
        "message_length": alert.message_length,
        "table_name": alert.table_name,
        "record_id": alert.record_id,
        "environment": alert.environment,
        "metadata": alert.metadata,
        "fingerprint": alert.fingerprint,
        "occurrences": alert.occurrences,
        "repeat": alert.seq > 0,
        "created_at": alert.created_at.isoformat(),
        "last_seen_at": alert.last_seen_at.isoformat(),
        "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
        "cleanup_url": cleanup_url(app_url, alert),
    }


def webhook_payload(msg: Message, *, app_url: str | None) -> dict[str, Any]:
    """The generic webhook's JSON: the message, its totals and its (sampled) alerts."""
    return {
        "version": 1,
        "source": f"pg_guardian {__version__}",
        "idempotency_key": msg.idempotency_key,
        "message_id": str(msg.id),
        "channel": msg.channel,
        "title": title(msg),
        "severity": msg.lead.severity,
        "type": msg.lead.type,
        "group_key": msg.group_key,
        "alert_count": msg.alert_count,
        "occurrences": msg.total_occurrences,
        "repeat": msg.repeat,
        "attempt": msg.attempts,
        "first_at": msg.first_at.isoformat() if msg.first_at else None,
        "last_at": msg.last_at.isoformat() if msg.last_at else None,
        "alerts_omitted": msg.more,
        "alerts": [_alert_json(a, app_url) for a in msg.alerts],
    }


def webhook_body(msg: Message, *, app_url: str | None) -> bytes:
    """The webhook payload as compact UTF-8 JSON (control characters escaped by JSON)."""
    return json.dumps(webhook_payload(msg, app_url=app_url), separators=(",", ":"), default=str).encode()


# ---- plain text: Apprise, Datadog, Sentry --------------------------------------------------


def plain_text(msg: Message, *, app_url: str | None, limit: int = PLAIN_TEXT_LIMIT) -> str:
    """The body for plain-text channels: the summary, where and when, what to do, the link."""
    lead = msg.lead
    lines = [
        summary(msg, limit),
        f"Environment: {clean(lead.environment or 'unknown', 64)} · Table: {clean(lead.table_name or '-', 200)}"
        f" · Time: {_time(lead.created_at)}",
        f"Action: {clean(action_required(lead), 500)}",
    ]
    url = cleanup_url(app_url, lead)
    if url:
        lines.append(f"Cleanup script: {url}")
    return "\n".join(lines)


def now_iso() -> str:
    """The current UTC time in ISO 8601 (Sentry's ``sent_at``)."""
    return datetime.now(UTC).isoformat()


def _first_line(text: str, limit: int) -> str:
    return clean(text.strip().splitlines()[0] if text.strip() else "", limit)


def datadog_event(msg: Message, *, app_url: str | None, tags: tuple[str, ...] = ()) -> dict[str, Any]:
    """A Datadog event (Events API v1): the lead alert's fingerprint is its aggregation key, so
    Datadog rolls the repeats of one alert up together. No ``date_happened``: Datadog refuses
    events older than 18 hours, and a repeat is about an older alert; it stamps the arrival."""
    lead = msg.lead
    text = plain_text(msg, app_url=app_url, limit=DATADOG_TEXT_LIMIT - 600)
    text += f"\npg_guardian relay · {msg.idempotency_key}"
    labels = [
        f"env:{lead.environment or 'unknown'}",
        f"severity:{lead.severity.lower()}",
        f"alert_type:{lead.type.lower()}",
        *([f"table:{lead.table_name}"] if lead.table_name else []),
        *tags,
    ]
    return {
        "title": clean(title(msg), 100),
        "text": text[:DATADOG_TEXT_LIMIT],
        "alert_type": DATADOG_ALERT_TYPES.get(lead.severity, "info"),
        "priority": "normal" if lead.severity in ("CRITICAL", "HIGH") else "low",
        "aggregation_key": _short_key(lead.fingerprint, 100),
        "tags": [_datadog_tag(t) for t in labels],
    }


def _datadog_tag(tag: str) -> str:
    # Datadog lower-cases tags and turns what it does not accept into underscores; do it here so
    # that the tags sent are the tags shown.
    return re.sub(r"[^a-z0-9_:./-]", "_", tag.lower())[:200]


def _short_key(value: str, limit: int) -> str:
    return value if len(value) <= limit else hashlib.sha256(value.encode()).hexdigest()


def sentry_event(msg: Message, *, app_url: str | None) -> dict[str, Any]:
    """A Sentry event: ``fingerprint`` is the alert's, so Sentry makes one issue of its repeats;
    ``event_id`` is derived from the idempotency key, so a retried send is not a second event."""
    lead = msg.lead
    headline = f"{lead.type}: {_first_line(lead.message, 200)}"
    event: dict[str, Any] = {
        "event_id": uuid.uuid5(uuid.NAMESPACE_URL, f"pg-guardian:{msg.idempotency_key}").hex,
        "timestamp": lead.last_seen_at.astimezone(UTC).isoformat(),
        "platform": "other",
        "level": SENTRY_LEVELS.get(lead.severity, "info"),
        "logger": "pg_guardian",
        "logentry": {"formatted": headline + "\n\n" + plain_text(msg, app_url=app_url, limit=SENTRY_TEXT_LIMIT)},
        "fingerprint": [lead.fingerprint],
        "tags": {
            "severity": lead.severity,
            "alert_type": lead.type,
            "table": clean(lead.table_name or "-", 200),
            "channel": msg.channel,
        },
        "extra": {
            "title": title(msg),
            "alert_ids": [str(a.id) for a in msg.alerts],
            "alert_count": msg.alert_count,
            "occurrences": max(msg.total_occurrences, lead.occurrences),
            "record_id": lead.record_id,
            "idempotency_key": msg.idempotency_key,
            "cleanup_url": cleanup_url(app_url, lead),
            "action_required": action_required(lead),
        },
        "sdk": {"name": "pg-guardian-relay", "version": __version__},
    }
    if lead.environment:
        # Sentry refuses environments with slashes or line breaks, and longer than 64 characters.
        event["environment"] = re.sub(r"[/\s]", "_", lead.environment)[:64]
    return event


# ---- email ---------------------------------------------------------------------------------


def _packaged(name: str) -> str | None:
    node = resources.files("pg_guardian.relay").joinpath("templates", *name.split("/"))
    return node.read_text(encoding="utf-8") if node.is_file() else None


def environment(template_dir: Path | None) -> jinja2.Environment:
    """Jinja2 with the user's folder first, then the packaged templates."""
    loaders: list[jinja2.BaseLoader] = []
    if template_dir is not None:
        loaders.append(jinja2.FileSystemLoader(str(template_dir)))
    loaders.append(jinja2.FunctionLoader(_packaged))
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2"), default=False),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def _describe(exc: Exception, name: str) -> str:
    if isinstance(exc, jinja2.TemplateSyntaxError):
        where = exc.filename or name
        return f"template {where} line {exc.lineno}: {exc.message}"
    line = None
    tb = exc.__traceback__
    while tb is not None:  # the innermost frame in a template names its line
        if tb.tb_frame.f_code.co_filename.endswith(".j2") or tb.tb_frame.f_globals.get("__jinja_template__"):
            line = tb.tb_lineno
        tb = tb.tb_next
    return f"template {name}{f' line {line}' if line else ''}: {type(exc).__name__}: {exc}"


def template_problems(template_dir: Path | None) -> list[str]:
    """Every email template that fails to load (syntax errors with file and line)."""
    env = environment(template_dir)
    problems = []
    for name in EMAIL_TEMPLATES:
        try:
            env.get_template(name)
        except jinja2.TemplateNotFound:
            problems.append(f"template {name} not found")
        except jinja2.TemplateSyntaxError as exc:
            problems.append(_describe(exc, name))
    return problems


def email_context(msg: Message, app_url: str | None) -> dict[str, Any]:
    """What the email templates see."""
    lead = msg.lead
    alerts = [
        {
            "id": str(a.id),
            "severity": a.severity,
            "type": a.type,
            "message": clean(a.message, EMAIL_TEXT_LIMIT),
            "table_name": a.table_name,
            "record_id": a.record_id,
            "environment": a.environment,
            "occurrences": a.occurrences,
            "time": _time(a.created_at),
            "metadata": a.metadata,
            "cleanup_script": a.cleanup_script,
            "cleanup_url": cleanup_url(app_url, a),
        }
        for a in msg.alerts
    ]
    return {
        "severity": lead.severity,
        "type": lead.type,
        "icon": SEVERITY_ICONS.get(lead.severity, ""),
        "title": title(msg),
        "message": clean(lead.message, EMAIL_TEXT_LIMIT),
        "summary": summary(msg, EMAIL_TEXT_LIMIT),
        "environment": lead.environment or "unknown",
        "table_name": lead.table_name,
        "time": _time(lead.created_at),
        "action_required": action_required(lead),
        "cleanup_script": lead.cleanup_script,
        "cleanup_url": cleanup_url(app_url, lead),
        "app_url": app_url,
        "alert": alerts[0],
        "alerts": alerts,
        "count": msg.alert_count,
        "more": msg.more,
        "occurrences": msg.total_occurrences,
        "repeat": msg.repeat,
        "first_at": _time(msg.first_at),
        "last_at": _time(msg.last_at),
        "idempotency_key": msg.idempotency_key,
    }


def email_message(
    msg: Message, *, env: jinja2.Environment, sender: str, to: tuple[str, ...], app_url: str | None
) -> EmailMessage:
    """A multipart (text + HTML) email; raises RenderError naming the template that failed. The
    weekly digest is the report itself (:mod:`.digest`), whatever the templates say."""
    from pg_guardian.relay import digest

    report = digest.report_of(msg)
    if report is not None:
        return digest.email_message(msg, report, sender=sender, to=to)
    context = email_context(msg, app_url)
    rendered: dict[str, str] = {}
    for name in EMAIL_TEMPLATES:
        try:
            rendered[name] = env.get_template(name).render(context)
        except jinja2.TemplateError as exc:
            raise RenderError(_describe(exc, name)) from exc
        except Exception as exc:  # a filter or method call in a user's template
            raise RenderError(_describe(exc, name)) from exc
    subject = " ".join(rendered[EMAIL_TEMPLATES[0]].split())[:250]
    email = EmailMessage()
    email["Subject"] = subject
    email["From"] = sender
    email["To"] = ", ".join(to)
    safe_key = re.sub(r"[^A-Za-z0-9-]", ".", msg.idempotency_key)
    email["Message-ID"] = f"<{safe_key}@pg-guardian>"
    email["X-Guardian-Idempotency-Key"] = msg.idempotency_key
    email["X-Guardian-Severity"] = msg.lead.severity
    email.set_content(rendered[EMAIL_TEMPLATES[1]])
    email.add_alternative(rendered[EMAIL_TEMPLATES[2]], subtype="html")
    return email
