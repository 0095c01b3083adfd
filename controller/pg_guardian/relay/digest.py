"""The weekly digest (a REPORT_DIGEST alert carrying guardian.report()) as each channel shows it:
the whole HTML report by email (the plain-text report beside it), a short summary with the
missed metrics to Slack. Webhooks get the alert as usual, the report in its metadata."""

from __future__ import annotations

import re
from email.message import EmailMessage
from typing import Any

from pg_guardian.analytics import render as report_render
from pg_guardian.analytics.html import html
from pg_guardian.analytics.report import Combined, combine
from pg_guardian.relay.model import Message

DIGEST_TYPE = "REPORT_DIGEST"


def report_of(msg: Message) -> Combined | None:
    """The report a digest message carries (None for any other message)."""
    lead = msg.lead
    report = lead.metadata.get("report") if isinstance(lead.metadata, dict) else None
    if lead.type != DIGEST_TYPE or not isinstance(report, dict) or "success_metrics" not in report:
        return None
    return combine([(lead.environment or report["period"].get("guardian_environment") or "database", report)])


def subject(combined: Combined) -> str:
    env = combined.names[0]
    period = combined.first["period"]
    missed = [label for _, label, per_env in combined.metrics() if per_env[env]["status"] == "missed"]
    verdict = "every success metric met" if not missed else f"{len(missed)} success metric(s) missed"
    return (
        f"pg_guardian report for {env}, {period['from'][:10]} to {period['to'][:10]}: "
        f"{combined.first['totals']['alerts']:,} alerts, {verdict}"
    )


def slack_payload(
    msg: Message, combined: Combined, *, app_url: str | None, channel: str | None, username: str, icon_emoji: str
) -> dict[str, Any]:
    env = combined.names[0]
    report = combined.first
    totals = report["totals"]
    lines = [
        f"{totals['alerts']:,} alerts ({totals['previous']:,} the period before)"
        + "".join(f", {totals['by_severity'][s]['alerts']} {s.lower()}" for s in ("CRITICAL", "HIGH")),
    ]
    for _, label, per_env in combined.metrics():
        metric = per_env[env]
        mark = {"met": ":white_check_mark:", "missed": ":x:"}.get(metric["status"], ":grey_question:")
        lines.append(f"{mark} {label}: {report_render.STATUS_MARK[metric['status']]} ({metric['detail']})")
    attachment: dict[str, Any] = {
        "color": "#2e7d32" if combined.met else "#ef6c00",
        "title": subject(combined),
        "text": "\n".join(lines),
        "fallback": subject(combined),
        "footer": f"pg_guardian relay · {msg.idempotency_key}",
    }
    if app_url:
        attachment["actions"] = [
            {"type": "button", "text": "Open the analytics", "url": app_url.rstrip("/") + "/analytics"}
        ]
    payload: dict[str, Any] = {"username": username, "icon_emoji": icon_emoji, "attachments": [attachment]}
    if channel:
        payload["channel"] = channel
    return payload


def email_message(msg: Message, combined: Combined, *, sender: str, to: tuple[str, ...]) -> EmailMessage:
    email = EmailMessage()
    email["Subject"] = subject(combined)[:250]
    email["From"] = sender
    email["To"] = ", ".join(to)
    safe_key = re.sub(r"[^A-Za-z0-9-]", ".", msg.idempotency_key)
    email["Message-ID"] = f"<{safe_key}@pg-guardian>"
    email["X-Guardian-Idempotency-Key"] = msg.idempotency_key
    email["X-Guardian-Severity"] = msg.lead.severity
    email.set_content(report_render.text(combined))
    email.add_alternative(html(combined), subtype="html")
    return email
