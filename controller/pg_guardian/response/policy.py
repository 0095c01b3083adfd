"""Per-environment policies: one TOML file says how each environment is guarded.

A policy file has a ``[defaults]`` table and one ``[environments.<name>]`` table per
environment (production, staging, local, ...); an environment is its defaults overridden by
its own table. Each may set the guard mode, rule packs and rule overrides, per-table modes
(and which columns are watched), activity thresholds, auto-cleanup, lockdown, quarantine
retention, alert routes and anomaly detection (per environment, metric and table); what it
leaves out is left as the database has it.

:func:`load` checks a file and raises one :class:`PolicyError` listing every problem with its
line; :func:`render` turns an environment into SQL (Jinja2 templates in
``templates/policy``) that changes only what differs, so applying it twice changes nothing;
:func:`diff` compares a database with the file; :func:`apply` parses the SQL with pglast and
runs it in one transaction. A database refuses a policy written for another environment
unless forced.

The design's environment variables override the file for the environment being rendered
(and say so in the SQL): ``AUTO_CLEANUP_ENABLED`` (auto_cleanup.enabled) and
``LOCKDOWN_THRESHOLD`` (lockdown.threshold).

What a file says ends up in SQL: no name or value may hold a control character (a line break
would end the ``--`` comment it is shown in and make the rest SQL). In the template every value
goes through exactly one filter: ``literal``, ``array`` or ``jsonb`` (quoted SQL, never spanning
a line) in code, ``comment`` (control characters escaped) in comments.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import psycopg
from psycopg.rows import dict_row

from pg_guardian.errors import GuardianError
from pg_guardian.vocabulary import KINDS, MODES, SEVERITIES

ENV_NAME = re.compile(r"[a-z][a-z0-9_-]{0,62}")
TABLE_NAME = re.compile(r'("[^"]+"|[^".\s]+)\.("[^"]+"|[^".\s]+)')
# Characters no name or value may hold: C0/C1 controls (line breaks among them), the Unicode
# line and paragraph separators, and the bidirectional controls that make text read otherwise
# than it runs. Patterns are matched whole (fullmatch): ``$`` would let a final newline through.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
HHMM = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")
METRIC_NAME = re.compile(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)*")
ENV_OVERRIDES = {
    "AUTO_CLEANUP_ENABLED": ("auto_cleanup", "enabled"),
    "LOCKDOWN_THRESHOLD": ("lockdown", "threshold"),
}

_SECTION_KEYS = {
    "mode",
    "packs",
    "rules",
    "tables",
    "activity",
    "auto_cleanup",
    "lockdown",
    "quarantine",
    "routes",
    "anomalies",
}
_RULE_KEYS = {"enabled", "severity", "safe_for_automation"}
_TABLE_KEYS = {"mode", "watch", "columns", "activity", "anomalies"}
_ACTIVITY_KEYS = {"threshold", "enabled", "start", "end", "timezone"}
_AUTO_CLEANUP_KEYS = {"enabled", "max_rows", "scripts_with_alerts", "script_max_records"}
_LOCKDOWN_KEYS = {
    "auto",
    "threshold",
    "window_minutes",
    "roles",
    "admin_roles",
    "read_only",
    "revoke",
    "end_sessions",
}
_QUARANTINE_KEYS = {"retention_days"}
_ROUTE_KEYS = {"channels", "severity", "type", "table_name", "continue"}
# Anomaly detection (guardian.anomaly_settings, pg_guardian 0.2.0): these fields at every level,
# and per metric at the environment's level.
_ANOMALY_FIELDS = ("enabled", "sensitivity", "time_zone")
_ANOMALY_VERSION = "0.2.0"
_INT_RANGES = {
    ("auto_cleanup", "max_rows"): (1, 10_000_000),
    ("auto_cleanup", "script_max_records"): (0, 100_000),
    ("lockdown", "threshold"): (1, 1_000_000_000),
    ("lockdown", "window_minutes"): (1, 10_080),
    ("quarantine", "retention_days"): (0, 36_500),
}
_PARAMS = {
    ("auto_cleanup", "max_rows"): "auto_cleanup.max_rows",
    ("auto_cleanup", "script_max_records"): "cleanup.auto_script_max_records",
    ("lockdown", "threshold"): "lockdown.threshold",
    ("lockdown", "window_minutes"): "lockdown.window_minutes",
    ("quarantine", "retention_days"): "retention.quarantine_days",
}
_FLAGS = {
    ("auto_cleanup", "enabled"): ("auto_cleanup.enabled", False),
    ("auto_cleanup", "scripts_with_alerts"): ("cleanup.auto_script", True),
    ("lockdown", "auto"): ("lockdown.auto", False),
    ("lockdown", "read_only"): ("lockdown.read_only", True),
    ("lockdown", "revoke"): ("lockdown.revoke", True),
    ("lockdown", "end_sessions"): ("lockdown.end_sessions", False),
}
_ROLE_LISTS = {
    ("lockdown", "roles"): "lockdown.roles",
    ("lockdown", "admin_roles"): "lockdown.admin_roles",
}


class PolicyError(GuardianError):
    """A policy file is invalid, does not fit the database, or was refused by it.

    ``problems`` lists every problem found (each ``file:line: path: message``).
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems if problems is not None else [message]


@dataclass(frozen=True)
class Difference:
    """How the database differs from the policy at ``path`` (``None``: not set)."""

    path: str
    database: Any
    policy: Any

    def describe(self) -> str:
        return f"{self.path}: database {_show(self.database)}, policy {_show(self.policy)}"


@dataclass
class Policy:
    """A checked policy file: each environment already merged with the defaults."""

    path: Path
    environments: dict[str, dict[str, Any]]
    lines: dict[tuple[str, ...], int] = field(default_factory=dict)
    overrides: dict[str, list[str]] = field(default_factory=dict)

    def environment(self, name: str) -> dict[str, Any]:
        """The merged section of one environment; PolicyError naming the known ones."""
        if name not in self.environments:
            known = ", ".join(sorted(self.environments)) or "none"
            raise PolicyError(
                f"{self.path} has no environment {name!r} (environments: {known}); add an [environments.{name}] table"
            )
        return self.environments[name]

    def sha256(self, name: str) -> str:
        """A fingerprint of one environment's policy (what policy_finish() records)."""
        canonical = json.dumps(self.environment(name), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def where(self, path: tuple[str, ...]) -> str:
        """``file:line`` of the deepest part of ``path`` found in the file."""
        for n in range(len(path), 0, -1):
            line = self.lines.get(path[:n])
            if line:
                return f"{visible(str(self.path))}:{line}"
        return visible(str(self.path))


def _show(value: Any) -> str:
    if value is None:
        return "not set"
    if isinstance(value, str):
        return repr(value)
    return json.dumps(value, sort_keys=True)


def visible(text: str) -> str:
    """``text`` with each control character written as an escape (``\\n``, ``\\x1b``, ``\\u2028``)."""

    def escape(match: re.Match[str]) -> str:
        char = match.group()
        named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
        if char in named:
            return named[char]
        return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"

    return CONTROL.sub(escape, text)


def _shown_key(part: str) -> str:
    return f'"{visible(part)}"' if "." in part or CONTROL.search(part) else part


# ---- locations --------------------------------------------------------------------------

_KEY_PART = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
_KEY = rf"{_KEY_PART}(?:\s*\.\s*{_KEY_PART})*"
_HEADER = re.compile(rf"^\s*(\[\[|\[)\s*({_KEY})\s*\]\]?\s*(#.*)?$")
_ASSIGN = re.compile(rf"^\s*({_KEY})\s*=")
_INLINE = re.compile(rf"({_KEY_PART})\s*=")


def _split_key(text: str) -> tuple[str, ...]:
    parts = re.findall(_KEY_PART, text)
    return tuple(_unquote(p) for p in parts)


def _unquote(part: str) -> str:
    if part[:1] == "'":
        return part[1:-1]
    if part[:1] == '"':
        try:  # a basic string: its escapes (\n, \") decoded as TOML does
            return str(tomllib.loads(f"k = {part}")["k"])
        except tomllib.TOMLDecodeError:
            return part[1:-1]
    return part


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """The line of each table header and key in a TOML text (arrays of tables by index).

    Good enough for messages: keys inside inline tables map to their line too.
    """
    lines: dict[tuple[str, ...], int] = {}
    current: tuple[str, ...] = ()
    counters: dict[tuple[str, ...], int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            path = _split_key(header.group(2))
            if header.group(1) == "[[":
                index = counters.get(path, -1) + 1
                counters[path] = index
                path = (*path, str(index))
            current = path
            lines.setdefault(current, number)
            continue
        assign = _ASSIGN.match(line)
        if assign:
            path = (*current, *_split_key(assign.group(1)))
            lines.setdefault(path, number)
            rest = line[assign.end() :]
            if "{" in rest:
                for inner in _INLINE.finditer(rest):
                    lines.setdefault((*path, *_split_key(inner.group(1))), number)
    return lines


# ---- loading and checking ----------------------------------------------------------------


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if key != "routes" and isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


class _Checker:
    """Collects every problem, each with where in the file it is."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.problems: list[str] = []

    def add(self, path: tuple[str, ...], message: str) -> None:
        shown = ".".join(_shown_key(p) for p in path)
        self.problems.append(f"{self.policy.where(path)}: {shown}: {message}")

    def text(self, path: tuple[str, ...], value: Any) -> None:
        """Every key and string below ``path``: none may hold a control character."""
        if isinstance(value, Mapping):
            for key, item in value.items():
                key = str(key)
                if CONTROL.search(key):
                    self.add((*path, key), _control_problem("the name", key))
                self.text((*path, key), item)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                self.text((*path, str(index)) if isinstance(item, Mapping) else path, item)
        elif isinstance(value, str) and CONTROL.search(value):
            self.add(path, _control_problem("the value", value))

    def keys(self, path: tuple[str, ...], table: Mapping[str, Any], allowed: set[str]) -> None:
        for key in sorted(set(table) - allowed):
            self.add((*path, key), f"unknown setting (known: {', '.join(sorted(allowed))})")

    def table(self, path: tuple[str, ...], value: Any) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            self.add(path, f"must be a table, not {_show(value)}")
            return {}
        return dict(value)

    def boolean(self, path: tuple[str, ...], value: Any) -> None:
        if not isinstance(value, bool):
            self.add(path, f"must be true or false, not {_show(value)}")

    def integer(self, path: tuple[str, ...], value: Any, low: int, high: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.add(path, f"must be a whole number from {low} to {high}, not {_show(value)}")

    def strings(self, path: tuple[str, ...], value: Any) -> list[str]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.add(path, f"must be a list of strings, not {_show(value)}")
            return []
        return list(value)


def _control_problem(what: str, text: str) -> str:
    char = CONTROL.search(text)
    assert char is not None
    return (
        f"{what} {text!r} holds a control character ({visible(char.group())}); names and values "
        "in a policy cannot hold line breaks or other control characters: remove it from the file"
    )


def _check_section(chk: _Checker, path: tuple[str, ...], raw: Mapping[str, Any]) -> None:
    chk.keys(path, raw, _SECTION_KEYS)
    if "mode" in raw and raw["mode"] not in MODES:
        chk.add((*path, "mode"), f"{_show(raw['mode'])} is not one of {', '.join(MODES)}")
    if "packs" in raw:
        chk.strings((*path, "packs"), raw["packs"])
    for name, rule in chk.table((*path, "rules"), raw.get("rules", {})).items():
        where = (*path, "rules", name)
        rule = chk.table(where, rule)
        chk.keys(where, rule, _RULE_KEYS)
        for key in ("enabled", "safe_for_automation"):
            if key in rule:
                chk.boolean((*where, key), rule[key])
        if "severity" in rule and rule["severity"] not in SEVERITIES:
            chk.add(
                (*where, "severity"),
                f"{_show(rule['severity'])} is not one of {', '.join(SEVERITIES)}",
            )
    for name, table in chk.table((*path, "tables"), raw.get("tables", {})).items():
        where = (*path, "tables", name)
        if not CONTROL.search(name) and not TABLE_NAME.fullmatch(name):
            chk.add(where, 'tables are named schema.table, e.g. "dental.patients"')
        if isinstance(table, str):
            table = {"mode": table}
        table = chk.table(where, table)
        chk.keys(where, table, _TABLE_KEYS)
        if "mode" in table and table["mode"] not in (*MODES, "default"):
            chk.add(
                (*where, "mode"),
                f"{_show(table['mode'])} is not one of {', '.join(MODES)} or default",
            )
        if "watch" in table:
            chk.boolean((*where, "watch"), table["watch"])
        for column, kind in chk.table((*where, "columns"), table.get("columns", {})).items():
            if kind is not False and kind not in KINDS:
                chk.add(
                    (*where, "columns", column),
                    f"{_show(kind)} is not a kind ({', '.join(KINDS)}) or false (not watched)",
                )
        _check_activity(chk, (*where, "activity"), table.get("activity", {}))
        if "anomalies" in table:
            _check_anomalies(chk, (*where, "anomalies"), table["anomalies"], per_metric=False)
    _check_activity(chk, (*path, "activity"), raw.get("activity", {}))
    if "anomalies" in raw:
        _check_anomalies(chk, (*path, "anomalies"), raw["anomalies"], per_metric=True)
    for section, keys in (
        ("auto_cleanup", _AUTO_CLEANUP_KEYS),
        ("lockdown", _LOCKDOWN_KEYS),
        ("quarantine", _QUARANTINE_KEYS),
    ):
        values = chk.table((*path, section), raw.get(section, {}))
        chk.keys((*path, section), values, keys)
        for key, value in values.items():
            where = (*path, section, key)
            if (section, key) in _FLAGS:
                chk.boolean(where, value)
            elif (section, key) in _INT_RANGES:
                chk.integer(where, value, *_INT_RANGES[(section, key)])
            elif (section, key) in _ROLE_LISTS:
                chk.strings(where, value)
    if "routes" in raw:
        routes = raw["routes"]
        if not isinstance(routes, list):
            chk.add((*path, "routes"), "must be an array of tables ([[...routes]])")
            routes = []
        for index, route in enumerate(routes):
            where = (*path, "routes", str(index))
            route = chk.table(where, route)
            chk.keys(where, route, _ROUTE_KEYS)
            if "channels" not in route:
                chk.add(where, 'a route needs channels, e.g. channels = ["slack"]')
            for key in ("channels", "type", "table_name"):
                if key in route:
                    chk.strings((*where, key), route[key])
            for severity in chk.strings((*where, "severity"), route.get("severity", [])):
                if severity.upper() not in SEVERITIES:
                    chk.add((*where, "severity"), f"{severity!r} is not one of {', '.join(SEVERITIES)}")
            if "continue" in route:
                chk.boolean((*where, "continue"), route["continue"])


def _check_activity(chk: _Checker, path: tuple[str, ...], raw: Any) -> None:
    for name, value in chk.table(path, raw).items():
        where = (*path, name)
        if isinstance(value, int) and not isinstance(value, bool):
            value = {"threshold": value}
        value = chk.table(where, value)
        chk.keys(where, value, _ACTIVITY_KEYS)
        if "threshold" in value:
            chk.integer((*where, "threshold"), value["threshold"], 0, 1_000_000_000)
        if "enabled" in value:
            chk.boolean((*where, "enabled"), value["enabled"])
        for key in ("start", "end"):
            if key in value and not (isinstance(value[key], str) and HHMM.fullmatch(value[key])):
                chk.add((*where, key), f"must be a time as HH:MM, not {_show(value[key])}")
        if ("start" in value) != ("end" in value):
            chk.add(where, "an off-hours window needs both start and end")
        if "timezone" in value and not isinstance(value["timezone"], str):
            chk.add((*where, "timezone"), "must be a time zone name such as Europe/London")


def _check_anomalies(chk: _Checker, path: tuple[str, ...], raw: Any, *, per_metric: bool) -> None:
    values = chk.table(path, raw)
    chk.keys(path, values, {*_ANOMALY_FIELDS, *(("metrics",) if per_metric else ())})
    if "enabled" in values:
        chk.boolean((*path, "enabled"), values["enabled"])
    if "sensitivity" in values:
        value = values["sensitivity"]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.25 <= value <= 4:
            chk.add(
                (*path, "sensitivity"),
                f"must be a number from 0.25 to 4 (1 is the default, 2 alerts on smaller departures, "
                f"0.5 only on larger ones), not {_show(value)}",
            )
    if "time_zone" in values and not (isinstance(values["time_zone"], str) and values["time_zone"].strip()):
        chk.add(
            (*path, "time_zone"), f"must be a time zone name such as Europe/Berlin, not {_show(values['time_zone'])}"
        )
    if per_metric:
        for metric, spec in chk.table((*path, "metrics"), values.get("metrics", {})).items():
            where = (*path, "metrics", metric)
            if not CONTROL.search(metric) and not METRIC_NAME.fullmatch(metric):
                chk.add(
                    where, "metrics are named like connections or writes.update (see SELECT name FROM guardian.metrics)"
                )
            _check_anomalies(chk, where, spec, per_metric=False)


def _normalise(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Shorthands spelled out: ``"schema.t" = "strict"``, ``bulk_statement = 100``."""
    section = copy.deepcopy(dict(raw))
    tables = section.get("tables")
    if isinstance(tables, dict):
        for name, table in list(tables.items()):
            if isinstance(table, str):
                tables[name] = {"mode": table}
    for container in [section, *(t for t in (tables or {}).values() if isinstance(t, dict))]:
        activity = container.get("activity")
        if isinstance(activity, dict):
            for name, value in list(activity.items()):
                if isinstance(value, int) and not isinstance(value, bool):
                    activity[name] = {"threshold": value}
    return section


def _env_overrides(env: Mapping[str, str], chk: _Checker) -> dict[str, Any]:
    """The design's environment variables, as a section to merge over each environment."""
    extra: dict[str, Any] = {}
    for var in ENV_OVERRIDES:
        if CONTROL.search(env.get(var) or ""):
            chk.problems.append(f"{var}: {_control_problem('the value', env[var])}")
    value = env.get("AUTO_CLEANUP_ENABLED")
    if value:
        if value.strip().lower() in ("1", "true", "yes", "on"):
            extra.setdefault("auto_cleanup", {})["enabled"] = True
        elif value.strip().lower() in ("0", "false", "no", "off"):
            extra.setdefault("auto_cleanup", {})["enabled"] = False
        else:
            chk.problems.append(f"AUTO_CLEANUP_ENABLED: {value!r} is not true or false")
    value = env.get("LOCKDOWN_THRESHOLD")
    if value:
        if value.strip().isdigit() and 1 <= int(value) <= 1_000_000_000:
            extra.setdefault("lockdown", {})["threshold"] = int(value)
        else:
            chk.problems.append(f"LOCKDOWN_THRESHOLD: {value!r} is not a whole number from 1 to 1000000000")
    return extra


def load(path: Path | str, *, env: Mapping[str, str] | None = None) -> Policy:
    """Read and check a policy file; PolicyError lists every problem with file and line."""
    path = Path(path)
    env = os.environ if env is None else env
    policy = Policy(path=path, environments={})
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise PolicyError(f"policy file {path} does not exist") from None
    except OSError as exc:
        raise PolicyError(f"cannot read policy file {path}: {exc}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        where = f"{path}:{match.group(1)}" if match else str(path)
        problem = f"{where}: not valid TOML: {exc}"
        raise PolicyError(f"invalid policy file {path}:\n  - {problem}", [problem]) from None
    policy.lines = key_lines(text)
    chk = _Checker(policy)
    bad = CONTROL.search(path.name)
    if bad:  # the file's name is shown in the rendered SQL too
        chk.problems.append(
            f"{visible(str(path))}: the file name holds a control character ({visible(bad.group())}): rename the file"
        )
    chk.text((), raw)
    chk.keys((), raw, {"version", "defaults", "environments"})
    if raw.get("version", 1) != 1:
        chk.add(("version",), f"{_show(raw.get('version'))}: this pg-guardian reads version 1")
    defaults = chk.table(("defaults",), raw.get("defaults", {}))
    _check_section(chk, ("defaults",), defaults)
    environments = chk.table(("environments",), raw.get("environments", {}))
    if not environments and isinstance(raw.get("environments", {}), Mapping):
        chk.add(("environments",), "no environments: add e.g. [environments.production]")
    overrides = _env_overrides(env, chk)
    for name, section in environments.items():
        env_path = ("environments", name)
        if not CONTROL.search(name) and not ENV_NAME.fullmatch(name):
            chk.add(env_path, "environment names are lower-case words, e.g. production")
        section = chk.table(env_path, section)
        _check_section(chk, env_path, section)
        merged = _merge(_normalise(defaults), _normalise(section))
        if overrides:
            _merge(merged, overrides)
            policy.overrides[name] = sorted(f"{var}={env[var]}" for var in ENV_OVERRIDES if env.get(var))
        policy.environments[name] = merged
    if chk.problems:
        count = len(chk.problems)
        raise PolicyError(
            f"invalid policy file {path} ({count} problem{'s' if count != 1 else ''}):\n"
            + "\n".join(f"  - {p}" for p in chk.problems),
            problems=chk.problems,
        )
    return policy


# ---- what the database has to have ----------------------------------------------------------


def _names(section: Mapping[str, Any]) -> dict[str, Any]:
    """Everything an environment names that must exist in the database."""
    tables = section.get("tables", {})
    activity = set(section.get("activity", {}))
    for table in tables.values():
        activity |= set(table.get("activity", {}))
    lockdown = section.get("lockdown", {})
    return {
        "rules": sorted(section.get("rules", {})),
        "packs": sorted(set(section.get("packs", []))),
        "tables": sorted(tables),
        "columns": {name: sorted(t.get("columns", {})) for name, t in sorted(tables.items()) if t.get("columns")},
        "activity_rules": sorted(activity),
        "roles": sorted(set(lockdown.get("roles", [])) | set(lockdown.get("admin_roles", []))),
    }


def problems(conn: psycopg.Connection, policy: Policy, name: str) -> list[str]:
    """What the environment's policy names that this database does not have, with locations."""
    section = policy.environment(name)
    names = _names(section)
    rows = conn.execute(
        "SELECT kind, name, problem FROM guardian.policy_problems(%s, %s, %s, %s, %s, %s)",
        (
            names["rules"],
            names["packs"],
            names["tables"],
            json.dumps(names["columns"]),
            names["activity_rules"],
            names["roles"],
        ),
    ).fetchall()
    found: list[str] = []
    for kind, item, problem in rows:
        tail: tuple[str, ...]
        if kind == "rule":
            tail = ("rules", item)
        elif kind == "pack":
            tail = ("packs",)
        elif kind == "table":
            tail = ("tables", item)
        elif kind == "column":
            table, _, column = item.rpartition(".")
            tail = ("tables", table, "columns", column)
        elif kind == "activity rule":
            tail = ("activity", item)
        else:
            tail = ("lockdown",)
        found.append(_problem_at(policy, name, tail, problem))
    return found + _anomaly_problems(conn, policy, name)


def _problem_at(policy: Policy, name: str, tail: tuple[str, ...], problem: str) -> str:
    """A problem at ``environments.<name>.<tail>``, or at ``defaults.<tail>`` when that is
    where the file says it."""
    path = ("environments", name, *tail)
    if path not in policy.lines and ("defaults", *tail) in policy.lines:
        path = ("defaults", *tail)
    shown = ".".join(f'"{p}"' if "." in p else p for p in path)
    return f"{policy.where(path)}: {shown}: {problem}"


def _has_anomaly_settings(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT to_regclass('guardian.anomaly_settings') IS NOT NULL").fetchone()
    return bool(row and row[0])


def _anomaly_problems(conn: psycopg.Connection, policy: Policy, name: str) -> list[str]:
    """Anomaly settings this database cannot take: none at all before 0.2.0, unknown time
    zones (pg_timezone_names) and metrics (neither in guardian.metrics nor sampled)."""
    settings = _anomaly_settings(policy.environment(name))
    if not settings:
        return []
    if not _has_anomaly_settings(conn):
        row = conn.execute("SELECT guardian.version()").fetchone()
        version = row[0] if row else "unknown"
        return [
            _problem_at(
                policy,
                name,
                settings[0]["path"],
                f"anomaly detection needs pg_guardian {_ANOMALY_VERSION} or later, and this database "
                f"has {version}: upgrade it first (pg-guardian upgrade), or leave anomalies out of the policy",
            )
        ]
    found = []
    zones = sorted({s["settings"]["time_zone"] for s in settings if "time_zone" in s["settings"]})
    unknown_zones = {
        r[0]
        for r in conn.execute(
            """SELECT z FROM unnest(%s::text[]) AS z
                WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_timezone_names AS n WHERE n.name = z)""",
            (zones,),
        )
    }
    metrics = sorted({s["metric"] for s in settings if s["metric"] != "*"})
    unknown_metrics = {
        r[0]
        for r in conn.execute(
            """SELECT m FROM unnest(%s::text[]) AS m
                WHERE NOT EXISTS (SELECT FROM guardian.metrics AS x WHERE x.name = m)
                  AND NOT EXISTS (SELECT FROM guardian.metric_samples AS x WHERE x.metric = m)""",
            (metrics,),
        )
    }
    known = ""
    if unknown_metrics:
        row = conn.execute("SELECT string_agg(name, ', ' ORDER BY name) FROM guardian.metrics").fetchone()
        known = row[0] if row and row[0] else "none"
    for item in settings:
        if item["metric"] in unknown_metrics:
            found.append(
                _problem_at(policy, name, item["path"], f"no metric named {item['metric']} (metrics: {known})")
            )
        zone = item["settings"].get("time_zone")
        if zone in unknown_zones:
            found.append(
                _problem_at(
                    policy,
                    name,
                    (*item["path"], "time_zone"),
                    f"unknown time zone {zone!r}: use a name from pg_timezone_names, e.g. Europe/Berlin "
                    "(not an abbreviation: seasons must follow daylight-saving changes)",
                )
            )
    return found


def _anomaly_settings(section: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The anomaly settings an environment makes, each for one (metric, table) in
    guardian.anomaly_settings (metric ``*``: every metric; table ``None``: every subject):
    the environment's, then per metric, then per table (its writes.* series), with the path of
    its section in the file and the fields it sets."""
    found = []
    top = section.get("anomalies", {})
    parts: list[tuple[tuple[str, ...], str, str | None, Mapping[str, Any]]] = [(("anomalies",), "*", None, top)]
    parts += [(("anomalies", "metrics", m), m, None, top["metrics"][m]) for m in sorted(top.get("metrics", {}))]
    parts += [
        (("tables", t, "anomalies"), "*", t, section["tables"][t]["anomalies"])
        for t in sorted(section.get("tables", {}))
        if "anomalies" in section["tables"][t]
    ]
    for path, metric, table, spec in parts:
        settings = {k: spec[k] for k in _ANOMALY_FIELDS if k in spec}
        if settings:
            found.append({"path": path, "metric": metric, "table": table, "settings": settings})
    return found


def check_routes(policy: Policy, channels: set[str]) -> list[str]:
    """Routes naming channels the relay configuration does not have."""
    found = []
    for name, section in sorted(policy.environments.items()):
        for index, route in enumerate(section.get("routes", [])):
            for channel in route.get("channels", []):
                if channel not in channels:
                    path = ("environments", name, "routes", str(index), "channels")
                    known = ", ".join(sorted(channels)) or "none configured"
                    found.append(
                        f"{policy.where(path)}: {'.'.join(path)}: no channel named "
                        f"{channel!r} in the relay configuration (channels: {known})"
                    )
    return found


# ---- rendering --------------------------------------------------------------------------


def sql_literal(value: Any) -> str:
    """A value as an SQL literal: strings quoted (E'' when they hold a backslash or a control
    character, which is written as an escape, so that a literal never spans a line), numbers,
    booleans and NULL as themselves."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value)
    quoted = "'" + text.replace("'", "''") + "'"
    if "\\" in text or CONTROL.search(text):
        quoted = "E" + CONTROL.sub(_e_escape, quoted.replace("\\", "\\\\"))
    return quoted


def _e_escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}"


def sql_comment(value: Any) -> str:
    """Text for the rest of a ``--`` comment line: control characters written as escapes, so
    that nothing a value holds can end the comment."""
    return visible(str(value))


def sql_array(values: list[str]) -> str:
    """A text[] literal."""
    return "ARRAY[" + ", ".join(sql_literal(v) for v in values) + "]::text[]"


def sql_jsonb(value: Any) -> str:
    """A jsonb literal."""
    return sql_literal(json.dumps(value, sort_keys=True)) + "::jsonb"


def _environment() -> jinja2.Environment:
    loader = jinja2.FunctionLoader(
        lambda name: resources.files("pg_guardian.response").joinpath("templates", "policy", name).read_text()
    )
    jenv = jinja2.Environment(
        loader=loader,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    jenv.filters["literal"] = sql_literal
    jenv.filters["array"] = sql_array
    jenv.filters["jsonb"] = sql_jsonb
    jenv.filters["comment"] = sql_comment
    return jenv


def _context(policy: Policy, name: str, force: bool) -> dict[str, Any]:
    section = policy.environment(name)
    packs = sorted(set(section["packs"])) if "packs" in section else None
    rules = {rule: section["rules"][rule] for rule in sorted(section.get("rules", {}))}
    tables = []
    for table in sorted(section.get("tables", {})):
        spec = section["tables"][table]
        columns = spec.get("columns")
        tables.append(
            {
                "name": table,
                "watch": spec.get("watch", True),
                "columns": None
                if columns is None
                else {c: (None if k is False else k) for c, k in sorted(columns.items())},
                "mode": spec.get("mode"),
                "activity": [{"rule": rule, **spec["activity"][rule]} for rule in sorted(spec.get("activity", {}))],
            }
        )
    activity = [{"rule": rule, **section["activity"][rule]} for rule in sorted(section.get("activity", {}))]
    for item in activity:
        item["params"] = {k: item[k] for k in ("start", "end", "timezone") if k in item}
    flags = [
        {"key": key, "value": section[s][k], "default": default}
        for (s, k), (key, default) in sorted(_FLAGS.items(), key=lambda x: x[1][0])
        if k in section.get(s, {})
    ]
    params = [
        {"name": param, "value": section[s][k]}
        for (s, k), param in sorted(_PARAMS.items(), key=lambda x: x[1])
        if k in section.get(s, {})
    ]
    role_lists = [
        {"key": key, "value": sorted(set(section[s][k]))}
        for (s, k), key in sorted(_ROLE_LISTS.items(), key=lambda x: x[1])
        if k in section.get(s, {})
    ]
    routes = None
    if "routes" in section:
        routes = [_route(r) for r in section["routes"]]
    return {
        "environment": name,
        "force": force,
        "source": policy.path.name,
        "sha256": policy.sha256(name),
        "overrides": policy.overrides.get(name, []),
        "names": _names(section),
        "mode": section.get("mode"),
        "packs": packs,
        "rules": rules,
        "pinned": sorted(r for r, spec in rules.items() if "enabled" in spec),
        "tables": tables,
        "activity": activity,
        "flags": flags,
        "params": params,
        "role_lists": role_lists,
        "routes": routes,
        "anomalies": _anomaly_settings(section),
    }


def _route(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A route as the database keeps it: lists everywhere, severities upper-case."""
    route: dict[str, Any] = {"channels": list(raw.get("channels", []))}
    for key in ("severity", "type", "table_name"):
        if key in raw:
            values = [raw[key]] if isinstance(raw[key], str) else list(raw[key])
            route[key] = [v.upper() for v in values] if key == "severity" else values
    if raw.get("continue"):
        route["continue"] = True
    return route


def render(policy: Policy, name: str, *, force: bool = False) -> str:
    """The SQL that makes a database match one environment of the policy."""
    return _environment().get_template("apply.sql.j2").render(**_context(policy, name, force))


def check_script(script: str) -> None:
    """Refuse a rendered policy script with a statement the template never makes (PolicyError):
    only BEGIN/COMMIT, SELECTs (the guardian's functions) and UPDATE/INSERT of guardian tables,
    none with a WITH clause (which could hold a data-changing statement of its own)."""
    import pglast

    try:
        parsed = pglast.parse_sql(script)
    except pglast.parser.ParseError as exc:
        raise PolicyError(f"the SQL does not parse: {exc}") from exc
    for item in parsed:
        stmt = item.stmt
        kind = type(stmt).__name__
        target = getattr(stmt, "relation", None)
        schema = getattr(target, "schemaname", None)
        with_clause = getattr(stmt, "withClause", None) is not None
        if not with_clause and (
            kind in ("TransactionStmt", "SelectStmt") or (kind in ("UpdateStmt", "InsertStmt") and schema == "guardian")
        ):
            continue
        what = kind if target is None else f"{kind} into {'.'.join(filter(None, (schema, target.relname)))}"
        what += " with a WITH clause" if with_clause else ""
        raise PolicyError(
            f"the SQL holds a statement the policy template does not make: {what}; nothing was changed "
            "(a policy renders only BEGIN, COMMIT, SELECT and changes to guardian tables)"
        )


def statements(script: str, *, without_transaction: bool = False) -> list[str]:
    """The statements of a script, parsed by pglast (PolicyError when it does not parse).

    ``without_transaction`` leaves out BEGIN and COMMIT, for a caller that runs the rest in a
    transaction of its own.
    """
    import pglast

    try:
        parsed = pglast.parse_sql(script)
    except pglast.parser.ParseError as exc:
        raise PolicyError(f"the SQL does not parse: {exc}") from exc
    raw = script.encode()
    found = []
    for item in parsed:
        if without_transaction and type(item.stmt).__name__ == "TransactionStmt":
            continue
        start = item.stmt_location or 0
        text = raw[start : start + item.stmt_len].decode() if item.stmt_len else raw[start:].decode()
        found.append(text.strip().rstrip(";").strip())
    return found


# ---- comparing and applying ------------------------------------------------------------------


def _state(conn: psycopg.Connection, section: Mapping[str, Any]) -> dict[str, Any]:
    cur = conn.cursor(row_factory=dict_row)
    state: dict[str, Any] = {}
    env = cur.execute("SELECT environment, mode FROM guardian.environment_status").fetchone()
    assert env is not None
    state["environment"], state["mode"] = env["environment"], env["mode"]
    state["rules"] = {
        r["name"]: r
        for r in cur.execute("SELECT name, pack, enabled, severity, safe_for_automation FROM guardian.rules")
    }
    state["watched"] = {
        r["name"]: r["columns"] for r in cur.execute("SELECT relid::text AS name, columns FROM guardian.watched_tables")
    }
    state["table_modes"] = {
        r["name"]: r["mode"] for r in cur.execute("SELECT relid::text AS name, mode FROM guardian.table_modes")
    }
    state["activity"] = {
        r["name"]: r for r in cur.execute("SELECT name, threshold, enabled, params FROM guardian.activity_rules")
    }
    state["table_activity"] = {
        (r["name"], r["rule"]): r
        for r in cur.execute(
            "SELECT relid::text AS name, name AS rule, threshold, enabled FROM guardian.table_activity_rules"
        )
    }
    state["flags"] = {
        key: cur.execute("SELECT guardian._response_flag(%s, %s) AS v", (key, default)).fetchone()["v"]  # type: ignore[index]
        for key, default in _FLAGS.values()
    }
    state["params"] = {
        p: cur.execute("SELECT guardian.param(%s) AS v", (p,)).fetchone()["v"]  # type: ignore[index]
        for p in _PARAMS.values()
    }
    state["settings"] = {
        key: cur.execute("SELECT guardian.setting(%s) AS v", (key,)).fetchone()["v"]  # type: ignore[index]
        for key in (*_ROLE_LISTS.values(), "alerts.routes")
    }
    # Anomaly settings of this environment, by (metric, subject); None before 0.2.0 (problems()
    # says so). A table's series are named by the table as format('%I.%I') writes it.
    state["anomalies"] = None
    state["subjects"] = {}
    settings = _anomaly_settings(section)
    if settings and _has_anomaly_settings(conn):
        state["anomalies"] = {
            (r["metric"], r["subject"]): r
            for r in cur.execute(
                """SELECT metric, subject, enabled, sensitivity, time_zone FROM guardian.anomaly_settings
                    WHERE environment = guardian.current_environment()"""
            )
        }
        for table in sorted({s["table"] for s in settings if s["table"] is not None}):
            try:
                with conn.transaction():
                    row = cur.execute(
                        "SELECT format('%%I.%%I', VARIADIC parse_ident(%s)) AS subject", (table,)
                    ).fetchone()
                state["subjects"][table] = row["subject"] if row else table
            except psycopg.Error:  # not a name: problems() says so
                state["subjects"][table] = table
    # What watch() would make of each table, to compare with what it has.
    state["plans"] = {}
    for table, spec in section.get("tables", {}).items():
        columns = spec.get("columns")
        overrides = None if columns is None else {c: (None if k is False else k) for c, k in columns.items()}
        try:
            with conn.transaction():
                row = cur.execute(
                    "SELECT guardian._plan_watch(%s::regclass, %s) AS plan",
                    (table, None if overrides is None else json.dumps(overrides)),
                ).fetchone()
            state["plans"][table] = row["plan"] if row else None
        except psycopg.Error:  # a table or column that is missing: problems() says so
            state["plans"][table] = None
    return state


def diff(conn: psycopg.Connection, policy: Policy, name: str) -> list[Difference]:
    """How the database differs from the environment's policy (empty: it matches)."""
    section = policy.environment(name)
    state = _state(conn, section)
    out: list[Difference] = []
    prefix = f"environments.{name}"
    if state["environment"] != name:
        out.append(Difference("environment", state["environment"], name))
    if section.get("mode") and state["mode"] != section["mode"]:
        out.append(Difference(f"{prefix}.mode", state["mode"], section["mode"]))
    packs = set(section["packs"]) if "packs" in section else None
    for rule_name, rule in sorted(state["rules"].items()):
        spec = section.get("rules", {}).get(rule_name, {})
        wanted = spec.get("enabled", None if packs is None else rule["pack"] in packs)
        if wanted is not None and rule["enabled"] != wanted:
            out.append(Difference(f"{prefix}.rules.{rule_name}.enabled", rule["enabled"], wanted))
        for key in ("severity", "safe_for_automation"):
            if key in spec and rule[key] != spec[key]:
                out.append(Difference(f"{prefix}.rules.{rule_name}.{key}", rule[key], spec[key]))
    for table, spec in sorted(section.get("tables", {}).items()):
        where = f'{prefix}.tables."{table}"'
        watched = state["watched"].get(table)
        if spec.get("watch", True):
            if watched is None:
                out.append(Difference(f"{where}.watch", False, True))
            elif state["plans"].get(table) is not None and state["plans"][table] != watched:
                out.append(
                    Difference(
                        f"{where}.columns",
                        {c["column"]: c["kind"] for c in watched},
                        {c["column"]: c["kind"] for c in state["plans"][table]},
                    )
                )
        elif watched is not None:
            out.append(Difference(f"{where}.watch", True, False))
        if "mode" in spec:
            wanted_mode = None if spec["mode"] == "default" else spec["mode"]
            if state["table_modes"].get(table) != wanted_mode:
                out.append(Difference(f"{where}.mode", state["table_modes"].get(table), wanted_mode))
        for rule, override in sorted(spec.get("activity", {}).items()):
            row = state["table_activity"].get((table, rule)) or {}
            for key in ("threshold", "enabled"):
                have = row.get(key)
                have = int(have) if key == "threshold" and have is not None else have
                if have != override.get(key):
                    out.append(Difference(f"{where}.activity.{rule}.{key}", have, override.get(key)))
    for rule, override in sorted(section.get("activity", {}).items()):
        row = state["activity"].get(rule)
        if row is None:
            continue
        if "threshold" in override and int(row["threshold"]) != override["threshold"]:
            out.append(
                Difference(
                    f"{prefix}.activity.{rule}.threshold",
                    int(row["threshold"]),
                    override["threshold"],
                )
            )
        if "enabled" in override and row["enabled"] != override["enabled"]:
            out.append(Difference(f"{prefix}.activity.{rule}.enabled", row["enabled"], override["enabled"]))
        for key in ("start", "end", "timezone"):
            if key in override and row["params"].get(key) != override[key]:
                out.append(Difference(f"{prefix}.activity.{rule}.{key}", row["params"].get(key), override[key]))
    for (section_name, key), (setting, _default) in sorted(_FLAGS.items()):
        if key in section.get(section_name, {}) and state["flags"][setting] != section[section_name][key]:
            out.append(
                Difference(
                    f"{prefix}.{section_name}.{key}",
                    state["flags"][setting],
                    section[section_name][key],
                )
            )
    for (section_name, key), param in sorted(_PARAMS.items()):
        if key in section.get(section_name, {}) and state["params"][param] != section[section_name][key]:
            out.append(
                Difference(
                    f"{prefix}.{section_name}.{key}",
                    _number(state["params"][param]),
                    section[section_name][key],
                )
            )
    for (section_name, key), setting in sorted(_ROLE_LISTS.items()):
        if key in section.get(section_name, {}):
            wanted_roles = sorted(set(section[section_name][key]))
            if state["settings"][setting] != wanted_roles:
                out.append(Difference(f"{prefix}.{section_name}.{key}", state["settings"][setting], wanted_roles))
    if "routes" in section:
        wanted_routes = [_route(r) for r in section["routes"]]
        if state["settings"]["alerts.routes"] != wanted_routes:
            out.append(Difference(f"{prefix}.routes", state["settings"]["alerts.routes"], wanted_routes))
    if state["anomalies"] is not None:
        for item in _anomaly_settings(section):
            subject = "*" if item["table"] is None else state["subjects"][item["table"]]
            row = state["anomalies"].get((item["metric"], subject)) or {}
            where = ".".join([prefix, *(f'"{p}"' if "." in p else p for p in item["path"])])
            for key, wanted in item["settings"].items():
                if row.get(key) != wanted:
                    out.append(Difference(f"{where}.{key}", row.get(key), wanted))
    return out


def unmanaged(conn: psycopg.Connection, policy: Policy, name: str) -> list[str]:
    """Guard settings the database has that the policy does not mention (left alone by apply)."""
    section = policy.environment(name)
    mentioned = set(section.get("tables", {}))
    notes = []
    for row in conn.execute(
        """SELECT relid::text, guardian.effective_mode(relid) FROM guardian.watched_tables
           UNION SELECT relid::text, mode FROM guardian.table_modes ORDER BY 1"""
    ).fetchall():
        if row[0] not in mentioned:
            notes.append(f"table {row[0]} is guarded ({row[1]}) but not in the policy; apply leaves it as it is")
    return sorted(set(notes))


def _number(value: Any) -> Any:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    return int(number) if number.is_integer() else number


@dataclass(frozen=True)
class ApplyResult:
    """What ``apply`` did: the differences it removed (empty: nothing to change)."""

    environment: str
    database_environment: str
    changes: list[Difference]
    forced: bool
    sha256: str


def _sql_error(exc: psycopg.Error) -> PolicyError:
    diag = exc.diag
    message = diag.message_primary or str(exc).strip()
    parts = [message]
    if diag.message_detail:
        parts.append(diag.message_detail.rstrip("."))
    if diag.message_hint:
        parts.append(diag.message_hint)
    return PolicyError("; ".join(parts))


def apply(conn: psycopg.Connection, policy: Policy, name: str, *, force: bool = False) -> ApplyResult:
    """Make the database match one environment of the policy, in one transaction.

    Refused (PolicyError, nothing changed) when the database is another environment and
    ``force`` is not given, when the policy names anything the database lacks (every problem
    listed), or when the database rejects a statement.
    """
    policy.environment(name)
    current = conn.execute("SELECT guardian.current_environment()").fetchone()[0]  # type: ignore[index]
    if current != name and not force:
        raise PolicyError(
            f"this database is environment {current}, not {name}: refusing the {name} policy "
            f"(nothing was changed); apply the {current} policy, or pass --force to apply it anyway"
        )
    found = problems(conn, policy, name)
    if found:
        raise PolicyError(
            f"the {name} policy does not fit this database ({len(found)} problem"
            f"{'s' if len(found) != 1 else ''}; nothing was changed):\n" + "\n".join(f"  - {p}" for p in found),
            problems=found,
        )
    changes = diff(conn, policy, name)
    changes = [c for c in changes if c.path != "environment"]
    script = render(policy, name, force=force)
    check_script(script)
    parsed = statements(script, without_transaction=True)
    if changes:
        try:
            with conn.transaction():
                for statement in parsed:
                    conn.execute(statement)
        except psycopg.Error as exc:
            raise _sql_error(exc) from exc
    return ApplyResult(name, current, changes, force and current != name, policy.sha256(name))
