"""Schema fingerprints read straight from the catalogs of any database.

The query is ``guardian.schema_objects()`` from the extension's own SQL
(``extension/sql/40_drift/10_fingerprint.sql``), run as a plain query under the same SET
clauses. So a database without pg_guardian is described exactly as
``guardian.schema_fingerprint()`` would describe it, and a fingerprint exported with psql can
be compared with one read here.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import psycopg
from psycopg.adapt import Loader

from pg_guardian import scripts
from pg_guardian.errors import GuardianError

FORMAT = "pg_guardian.fingerprint/1"
MIN_SERVER_VERSION = 140000
SOURCE_FILE = Path("sql") / "40_drift" / "10_fingerprint.sql"


class CatalogError(GuardianError):
    """A fingerprint could not be read or loaded."""


@dataclass(frozen=True)
class ObjectsQuery:
    """The catalog query and the settings it must run under."""

    text: str
    settings: tuple[tuple[str, str], ...]


@cache
def objects_query() -> ObjectsQuery:
    """``guardian.schema_objects()``'s body and SET clauses, parsed from the extension source."""
    path = scripts.extension_dir() / SOURCE_FILE
    source = path.read_text()
    match = re.search(
        r"CREATE FUNCTION guardian\.schema_objects\(\)(?P<header>.*?)"
        r"AS \$objects\$(?P<body>.*?)\$objects\$;",
        source,
        re.S,
    )
    if not match:
        raise CatalogError(f"guardian.schema_objects() not found in {path}; the package is damaged")
    settings = tuple((m.group(1), m.group(2)) for m in re.finditer(r"^SET (\w+) = (.+)$", match.group("header"), re.M))
    return ObjectsQuery(match.group("body").strip(), settings)


class SchemaObject:
    """One object of a fingerprint. The definition is parsed only when someone looks at it:
    most objects are the same on both sides and only their checksums are ever compared."""

    __slots__ = ("_definition", "checksum", "definition_json", "identity", "key", "kind", "parent")

    def __init__(
        self,
        key: str,
        kind: str,
        identity: str,
        parent: str | None,
        checksum: str,
        definition_json: str,
    ) -> None:
        self.key, self.kind, self.identity, self.parent = key, kind, identity, parent
        self.checksum, self.definition_json = checksum, definition_json
        self._definition: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"SchemaObject({self.key!r}, checksum={self.checksum!r})"

    @property
    def definition(self) -> dict[str, Any]:
        if self._definition is None:
            value = json.loads(self.definition_json)
            assert isinstance(value, dict)
            self._definition = value
        return self._definition

    def to_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"kind": self.kind, "identity": self.identity}
        if self.parent is not None:
            entry["parent"] = self.parent
        entry["checksum"] = self.checksum
        entry["definition"] = self.definition
        return entry


def jsonb_text(value: Any) -> str:
    """``value::text`` as PostgreSQL prints jsonb: keys by length then bytes, ", " and ": "."""
    if isinstance(value, Mapping):
        keys = sorted(value, key=lambda k: (len(k.encode()), k.encode()))
        return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)}: {jsonb_text(value[k])}" for k in keys) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(jsonb_text(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def definition_checksum(definition: Mapping[str, Any]) -> str:
    """md5 of a definition's jsonb text, as ``guardian.schema_objects()`` computes it."""
    return hashlib.md5(jsonb_text(definition).encode()).hexdigest()


def overall_checksum(objects: Iterable[SchemaObject]) -> str:
    """md5 of the ``key=checksum`` lines in byte order, as ``guardian.schema_fingerprint()``."""
    lines = sorted((o.key, o.checksum) for o in objects)
    return hashlib.md5("\n".join(f"{k}={c}" for k, c in lines).encode()).hexdigest()


@dataclass
class Fingerprint:
    """A database's schema as comparable objects, and where it came from."""

    objects: dict[str, SchemaObject]
    origin: str

    @cached_property
    def checksum(self) -> str:
        return overall_checksum(self.objects.values())

    def to_document(self) -> dict[str, Any]:
        """The same JSON document as ``SELECT guardian.schema_fingerprint()``."""
        return {
            "format": FORMAT,
            "checksum": self.checksum,
            "objects": {k: self.objects[k].to_dict() for k in sorted(self.objects)},
        }

    def only(self, schemas: Iterable[str] = (), exclude: Iterable[str] = ()) -> Fingerprint:
        """The objects in (or not in) the given schemas; objects outside any schema (extensions,
        event triggers, database-wide default privileges) are left out when ``schemas`` is given."""
        wanted, unwanted = set(schemas), set(exclude)
        if not wanted and not unwanted:
            return self
        kept = {}
        for key, obj in self.objects.items():
            schema = schema_of(obj)
            if wanted and schema not in wanted:
                continue
            if schema is not None and schema in unwanted:
                continue
            kept[key] = obj
        return Fingerprint(kept, self.origin)


class _TextLoader(Loader):
    """Keep jsonb as its text: most definitions are only compared by checksum, never parsed."""

    def load(self, data: Any) -> str:
        return bytes(data).decode()


def read_fingerprint(conn: psycopg.Connection, origin: str | None = None) -> Fingerprint:
    """Read the fingerprint of the database ``conn`` is connected to (pg_guardian not needed).

    Runs in its own read-only, repeatable-read transaction. Raises :class:`CatalogError` when
    the role may not read a catalog.
    """
    query = objects_query()
    origin = origin or f"database {conn.info.dbname}"
    if conn.info.server_version < MIN_SERVER_VERSION:
        raise CatalogError(
            f"{origin} runs PostgreSQL {conn.info.server_version // 10000}; fingerprints need "
            "PostgreSQL 14 or newer (the catalogs they read)"
        )
    cursor = conn.cursor()
    cursor.adapters.register_loader("jsonb", _TextLoader)
    try:
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            for name, value in query.settings:
                conn.execute(f"SET LOCAL {name} = {value}")
            rows = cursor.execute(query.text).fetchall()
    except psycopg.errors.InsufficientPrivilege as exc:
        raise CatalogError(
            f"permission denied reading the catalogs of {origin} as role {conn.info.user}: "
            f"{_first_line(exc)}; connect as a role that may read pg_catalog "
            "(every role may, unless SELECT was revoked from PUBLIC)"
        ) from exc
    except psycopg.Error as exc:
        raise CatalogError(f"cannot read the schema of {origin}: {_first_line(exc)}") from exc
    objects = {
        key: SchemaObject(key, kind, identity, parent, checksum, definition)
        for key, kind, identity, parent, checksum, definition in rows
    }
    return Fingerprint(objects, origin)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def fingerprint_from_document(document: Any, origin: str) -> Fingerprint:
    """A fingerprint from its JSON document, with every checksum verified.

    Raises :class:`CatalogError` when it is not a fingerprint or was edited or truncated.
    """
    if (
        not isinstance(document, Mapping)
        or document.get("format") != FORMAT
        or not isinstance(document.get("objects"), Mapping)
    ):
        raise CatalogError(
            f"{origin} is not a pg_guardian fingerprint (expected a JSON object with "
            f'"format": "{FORMAT}"); produce one with `pg-guardian fingerprint --dsn ...`'
        )
    objects = {}
    for key, entry in document["objects"].items():
        try:
            definition = entry["definition"]
            obj = SchemaObject(
                key,
                entry["kind"],
                entry["identity"],
                entry.get("parent"),
                entry["checksum"],
                jsonb_text(definition),
            )
        except (KeyError, TypeError) as exc:
            raise CatalogError(f"{origin}: object {key!r} is incomplete ({exc})") from exc
        if key != f"{obj.kind} {obj.identity}" or obj.checksum != definition_checksum(definition):
            raise CatalogError(
                f"{origin} is corrupt: object {key!r} does not match its checksum; export it again unchanged"
            )
        objects[key] = obj
    fingerprint = Fingerprint(objects, origin)
    if fingerprint.checksum != document.get("checksum"):
        raise CatalogError(f"{origin} is corrupt: its checksum does not match its objects; export it again unchanged")
    return fingerprint


def load_fingerprint_file(path: Path) -> Fingerprint:
    """A fingerprint exported to a file (``pg-guardian fingerprint`` or psql)."""
    try:
        document = json.loads(path.read_text())
    except OSError as exc:
        raise CatalogError(f"cannot read {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise CatalogError(f"{path} is not JSON ({exc.msg} at line {exc.lineno})") from exc
    return fingerprint_from_document(document, str(path))


_IDENT = r'(?:"(?:[^"]|"")*"|[^".\s(]+)'


def split_identity(identity: str) -> list[str]:
    """The dotted parts of a quoted identity: ``public."My T".c`` -> ``['public', 'My T', 'c']``."""
    parts = []
    for match in re.finditer(_IDENT + r"(?=\.|$|\()", identity.split(" on ")[-1]):
        part = match.group(0)
        parts.append(part[1:-1].replace('""', '"') if part.startswith('"') else part)
    return parts


def schema_of(obj: SchemaObject) -> str | None:
    """The schema an object lives in, or None for database-wide objects."""
    if obj.kind == "schema":
        return split_identity(obj.identity)[0]
    if obj.kind in ("extension", "event trigger"):
        return None
    if obj.kind == "default privileges":
        match = re.search(r" in schema (" + _IDENT + ")", obj.identity)
        return split_identity(match.group(1))[0] if match else None
    parts = split_identity(obj.parent or obj.identity)
    return parts[0] if parts else None
