"""Cross-environment drift: compare schema fingerprints and say exactly what differs.

Two environments: :func:`diff` lists, per object, what the *target* has that the *source*
(the reference, e.g. production) has not (``added``), what it lacks (``removed``) and which
attributes differ (``changed``), both values each. It computes the same differences as
``guardian.compare_fingerprints()`` in SQL. Formatting-only differences are marked
``cosmetic`` (parse trees compared with pglast) and are not drift unless asked.

Several environments: :func:`diff_many` shows, per object, which environments differ from the
first (the reference) and each one's value of every differing attribute.

Fingerprints come from a DSN (read from the catalogs, pg_guardian not needed) or from a file
exported with ``pg-guardian fingerprint``; :func:`fetch_all` reads several at once.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pg_guardian import db
from pg_guardian.drift import catalog, normalize
from pg_guardian.drift.catalog import Fingerprint, SchemaObject

CHANGES = ("added", "removed", "changed")
KIND_ORDER = (
    "schema",
    "extension",
    "type",
    "domain",
    "sequence",
    "table",
    "foreign table",
    "column",
    "constraint",
    "index",
    "view",
    "materialized view",
    "function",
    "procedure",
    "aggregate",
    "trigger",
    "rule",
    "policy",
    "default privileges",
    "event trigger",
)


@dataclass
class Difference:
    """One object that differs: detail maps each differing attribute to its two values."""

    kind: str
    identity: str
    parent: str | None
    change: str
    cosmetic: bool
    detail: dict[str, dict[str, Any]]
    group_kind: str = field(default="table", compare=False, repr=False)

    @property
    def group(self) -> str:
        """The top-level object the difference belongs to (a column's table, say)."""
        return self.parent or self.identity

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "identity": self.identity,
            "parent": self.parent,
            "change": self.change,
            "cosmetic": self.cosmetic,
            "detail": self.detail,
        }


def _common_order(order: Any, other: Any) -> list[Any]:
    others = set(other or [])
    return [c for c in (order or []) if c in others]


def _attribute_differences(
    kind: str, src: Mapping[str, Any] | None, tgt: Mapping[str, Any] | None
) -> dict[str, dict[str, Any]]:
    src, tgt = src or {}, tgt or {}
    both = bool(src) and bool(tgt)
    detail: dict[str, dict[str, Any]] = {}
    for attribute in sorted(set(src) | set(tgt)):
        a, b = src.get(attribute), tgt.get(attribute)
        if a == b:
            continue
        if attribute == "column_order" and both and _common_order(a, b) == _common_order(b, a):
            continue
        entry: dict[str, Any] = {"source": a, "target": b}
        if both and normalize.formatting_only(kind, attribute, src, tgt):
            entry["cosmetic"] = True
        detail[attribute] = entry
    return detail


def _sort_key(d: Difference) -> tuple[str, bool, str, str]:
    return (d.group, d.parent is not None, d.kind, d.identity)


def diff(source: Fingerprint, target: Fingerprint) -> list[Difference]:
    """What differs in ``target`` relative to ``source``, grouped by top-level object."""
    src, tgt = source.objects, target.objects
    keys = [k for k, o in src.items() if (t := tgt.get(k)) is None or t.checksum != o.checksum]
    keys += [k for k in tgt if k not in src]
    out = []
    for key in keys:
        s, t = src.get(key), tgt.get(key)
        any_side = s or t
        assert any_side is not None
        detail = _attribute_differences(any_side.kind, s.definition if s else None, t.definition if t else None)
        change = "added" if s is None else "removed" if t is None else "changed"
        if change == "changed" and not detail:
            continue  # only the order of columns differs, and not among shared columns
        cosmetic = change == "changed" and all(e.get("cosmetic", False) for e in detail.values())
        out.append(
            Difference(
                any_side.kind,
                any_side.identity,
                any_side.parent,
                change,
                cosmetic,
                detail,
                _group_kind(any_side, source, target),
            )
        )
    return sorted(out, key=_sort_key)


_PARENT_KINDS = ("table", "foreign table", "view", "materialized view")


def _group_kind(obj: SchemaObject, *fingerprints: Fingerprint) -> str:
    if obj.parent is None:
        return obj.kind
    for kind in _PARENT_KINDS:
        if any(f"{kind} {obj.parent}" in fp.objects for fp in fingerprints):
            return kind
    return "table"


def counted(differences: Iterable[Difference], include_cosmetic: bool = False) -> list[Difference]:
    """The differences that count as drift."""
    return [d for d in differences if include_cosmetic or not d.cosmetic]


# -- several environments ---------------------------------------------------------------------


@dataclass
class EnvironmentDifference:
    """One object that is not the same everywhere: each environment's state and values."""

    kind: str
    identity: str
    parent: str | None
    change: str
    cosmetic: bool
    environments: dict[str, str]
    detail: dict[str, dict[str, Any]] = field(default_factory=dict)
    group_kind: str = field(default="table", compare=False, repr=False)

    @property
    def group(self) -> str:
        return self.parent or self.identity

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "identity": self.identity,
            "parent": self.parent,
            "change": self.change,
            "cosmetic": self.cosmetic,
            "environments": self.environments,
            "detail": self.detail,
        }


def diff_many(fingerprints: Mapping[str, Fingerprint]) -> list[EnvironmentDifference]:
    """Per object, which environments differ from the first one (the reference).

    ``environments`` maps each name to ``reference``, ``same``, ``different``, ``missing``
    (the reference has it, this one not) or ``extra`` (this one has it, the reference not);
    ``detail`` maps each differing attribute to every environment's value.
    """
    names = list(fingerprints)
    if len({fp.checksum for fp in fingerprints.values()}) <= 1:
        return []
    reference = names[0]
    keys = set().union(*(fp.objects.keys() for fp in fingerprints.values()))
    out = []
    for key in keys:
        present = {n: fingerprints[n].objects.get(key) for n in names}
        if len({o.checksum if o else None for o in present.values()}) == 1:
            continue
        any_side = next(o for o in present.values() if o is not None)
        ref = present[reference]
        states: dict[str, str] = {}
        detail: dict[str, dict[str, Any]] = {}
        cosmetic = True
        for name in names:
            obj = present[name]
            if name == reference:
                states[name] = "reference" if obj else "missing"
            elif obj is None:
                states[name] = "missing"
            elif ref is None:
                states[name] = "extra"
            elif obj.checksum == ref.checksum:
                states[name] = "same"
            else:
                attrs = _attribute_differences(any_side.kind, ref.definition, obj.definition)
                states[name] = "different" if attrs else "same"
                for attribute, entry in attrs.items():
                    detail.setdefault(attribute, {})
                    cosmetic = cosmetic and entry.get("cosmetic", False)
            if obj is None or ref is None:
                cosmetic = False
        if all(s in ("reference", "same") for s in states.values()):
            continue
        if ref is None or any(s == "missing" for s in states.values()):
            for attribute in set().union(*(o.definition for o in present.values() if o)):
                detail.setdefault(attribute, {})
        for attribute in detail:
            detail[attribute] = {n: (obj.definition.get(attribute) if (obj := present[n]) else None) for n in names}
        change = "added" if ref is None else "removed" if any(s == "missing" for s in states.values()) else "changed"
        out.append(
            EnvironmentDifference(
                any_side.kind,
                any_side.identity,
                any_side.parent,
                change,
                cosmetic,
                states,
                dict(sorted(detail.items())),
                _group_kind(any_side, *fingerprints.values()),
            )
        )
    return sorted(out, key=lambda d: (d.group, d.parent is not None, d.kind, d.identity))


# -- reading fingerprints -----------------------------------------------------------------------


def fetch(spec: str, name: str = "database") -> Fingerprint:
    """A fingerprint from a DSN, or from a JSON file when ``spec`` names an existing file."""
    path = Path(spec)
    if not spec.startswith(("postgresql:", "postgres:")) and "=" not in spec and path.is_file():
        return catalog.load_fingerprint_file(path)
    with db.connect(spec, "drift", autocommit=True) as conn:
        return catalog.read_fingerprint(conn, f"{name} ({db.describe(spec)})")


def fetch_all(specs: Mapping[str, str], reader: Callable[[str, str], Fingerprint] = fetch) -> dict[str, Fingerprint]:
    """Read several fingerprints at once (each server does its own catalog work in parallel)."""
    with ThreadPoolExecutor(max_workers=max(1, len(specs))) as pool:
        futures = {name: pool.submit(reader, spec, name) for name, spec in specs.items()}
        return {name: future.result() for name, future in futures.items()}


# -- text output ---------------------------------------------------------------------------------

_SIGN = {"added": "+", "removed": "-", "changed": "~"}
_MAX_VALUE = 160
_MAX_DIFF_LINES = 40


def show(value: Any) -> str:
    """A value on one line, as a reviewer wants to read it."""
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping):
        return "; ".join(f"{k}: {show(v)}" for k, v in value.items()) or "(none)"
    if isinstance(value, list):
        return ", ".join(show(v) for v in value) or "(none)"
    text = " ".join(str(value).split())
    return text if len(text) <= _MAX_VALUE else text[: _MAX_VALUE - 3] + "..."


def summary(obj_definition: Mapping[str, Any], kind: str) -> str:
    """One line that says what an object is, for objects only one side has."""
    d = obj_definition
    if kind == "column":
        parts = [show(d.get("data_type"))]
        if d.get("not_null"):
            parts.append("NOT NULL")
        if d.get("default") is not None:
            parts.append(f"DEFAULT {d['default']}")
        if d.get("identity"):
            parts.append(f"GENERATED {d['identity'].upper()} AS IDENTITY")
        if d.get("generated"):
            parts.append(f"GENERATED ALWAYS AS ({d['generated']}) STORED")
        return " ".join(parts)
    if kind in ("index", "constraint", "trigger", "rule"):
        return show(d.get("definition"))
    if kind in ("function", "procedure", "aggregate"):
        returns = f" returns {d['returns']}" if d.get("returns") else ""
        return f"({d.get('arguments', '')}){returns} language {d.get('language')}"
    if kind in ("table", "foreign table"):
        n = len(d.get("column_order", []))
        return f"{n} column{'s' if n != 1 else ''}, {d.get('persistence', 'permanent')}"
    if kind == "policy":
        return f"{d.get('command')} to {show(d.get('roles'))} using {show(d.get('using'))}"
    if kind == "extension":
        return f"version {d.get('version')} in schema {d.get('schema')}"
    if kind in ("type", "domain", "sequence"):
        keys = ("type", "labels", "base_type", "data_type", "start", "increment")
        return ", ".join(f"{k} {show(d[k])}" for k in keys if k in d)
    return ", ".join(sorted(d)) or "(empty)"


def _multiline(value: Any) -> bool:
    return isinstance(value, str) and "\n" in value.strip()


def _body_diff(a: str, b: str, names: tuple[str, str]) -> list[str]:
    lines = list(
        difflib.unified_diff(
            a.strip("\n").splitlines(),
            b.strip("\n").splitlines(),
            names[0],
            names[1],
            lineterm="",
            n=1,
        )
    )
    if len(lines) > _MAX_DIFF_LINES:
        lines = [*lines[:_MAX_DIFF_LINES], f"... {len(lines) - _MAX_DIFF_LINES} more lines"]
    return ["      " + line for line in lines]


def render_text(
    differences: Sequence[Difference],
    names: tuple[str, str] = ("source", "target"),
    include_cosmetic: bool = False,
) -> list[str]:
    """A review of the differences: grouped by object, one line per difference, both values."""
    lines: list[str] = []
    real = counted(differences, include_cosmetic)
    cosmetic = [d for d in differences if d not in real]
    src, tgt = names
    current = None
    for d in real:
        if d.group != current:
            current = d.group
            if lines:
                lines.append("")
            lines.append(f"{d.group_kind} {d.group}")
        # the group's own object is named in the heading; its parts are named on their line
        label = "" if d.identity == d.group else f"{d.kind} {d.identity}: "
        if d.change == "added":
            values = {a: e["target"] for a, e in d.detail.items()}
            lines.append(f"  + {label}only in {tgt}: {summary(values, d.kind)}")
        elif d.change == "removed":
            values = {a: e["source"] for a, e in d.detail.items()}
            lines.append(f"  - {label}only in {src}: {summary(values, d.kind)}")
        else:
            for attribute, entry in d.detail.items():
                a, b = entry["source"], entry["target"]
                note = " (formatting only)" if entry.get("cosmetic") else ""
                if _multiline(a) or _multiline(b):
                    lines.append(f"  ~ {label}{attribute} differs{note}")
                    lines.extend(_body_diff(str(a or ""), str(b or ""), names))
                else:
                    lines.append(f"  ~ {label}{attribute}: {src} {show(a)} | {tgt} {show(b)}{note}")
    if cosmetic:
        if lines:
            lines.append("")
        lines.append("formatting only, not counted as drift (--include-cosmetic counts them):")
        for d in cosmetic:
            lines.append(f"  ~ {d.kind} {d.identity}: {', '.join(d.detail)}")
    counts = {c: sum(1 for d in real if d.change == c) for c in CHANGES}
    if real:
        lines.append("")
        groups = len({d.group for d in real})
        lines.append(
            f"{len(real)} difference{'s' if len(real) != 1 else ''} in {groups} "
            f"object{'s' if groups != 1 else ''} ({counts['added']} added, "
            f"{counts['removed']} removed, {counts['changed']} changed in {tgt})"
        )
    else:
        lines.append(f"no drift: {tgt} matches {src}")
    return lines


def render_many_text(
    differences: Sequence[EnvironmentDifference],
    names: Sequence[str],
    include_cosmetic: bool = False,
) -> list[str]:
    """Per object, which environments differ and each one's value of every differing attribute."""
    real = [d for d in differences if include_cosmetic or not d.cosmetic]
    lines: list[str] = []
    width = max(len(n) for n in names)
    current = None
    for d in real:
        if d.group != current:
            current = d.group
            if lines:
                lines.append("")
            lines.append(f"{d.group_kind} {d.group}")
        states = ", ".join(f"{n} {s}" for n, s in d.environments.items() if s not in ("reference", "same"))
        label = "" if d.identity == d.group else f"{d.kind} {d.identity}: "
        lines.append(f"  {_SIGN[d.change]} {label}{states}")
        missing_any = any(s in ("missing", "extra") for s in d.environments.values())
        if missing_any:
            for name in names:
                obj = {a: v.get(name) for a, v in d.detail.items() if v.get(name) is not None}
                lines.append(f"      {name.ljust(width)}  {summary(obj, d.kind) if obj else '(missing)'}")
            continue
        for attribute, values in d.detail.items():
            lines.append(f"      {attribute}:")
            if not any(_multiline(v) for v in values.values()):
                for name in names:
                    lines.append(f"        {name.ljust(width)}  {show(values.get(name))}")
                continue
            # long text (a body, a view): name each distinct version, diff it with the reference
            versions: dict[str, str] = {}
            for name in names:
                text = str(values.get(name) or "")
                label = versions.setdefault(text, chr(ord("A") + len(versions)))
                reference_text = str(values.get(names[0]) or "")
                same = f" (as {names[0]})" if name != names[0] and text == reference_text else ""
                lines.append(f"        {name.ljust(width)}  version {label}{same}")
            reference = str(values.get(names[0]) or "")
            for text, label in versions.items():
                if text != reference:
                    lines.extend(_body_diff(reference, text, (f"version A ({names[0]})", f"version {label}")))
    cosmetic = [d for d in differences if d not in real]
    if cosmetic:
        if lines:
            lines.append("")
        lines.append("formatting only, not counted as drift (--include-cosmetic counts them):")
        for d in cosmetic:
            lines.append(f"  ~ {d.kind} {d.identity}")
    if real:
        lines.append("")
        lines.append(
            f"{len(real)} object{'s' if len(real) != 1 else ''} differ across "
            f"{', '.join(names)} (reference: {names[0]})"
        )
    else:
        lines.append(f"no drift: {', '.join(names)} match")
    return lines
