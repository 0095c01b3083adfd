"""The SQL that would bring a target schema in line with its source, from two fingerprints.

Statements come in a safe order: drops first (most dependent objects first), then creates and
alters (schemas, extensions, types, sequences, tables, columns, constraints, indexes,
functions, views, triggers, policies, comments, privileges). Anything that can lose data or
remove an object (every DROP, a column type change) is *unsafe* and is refused unless the
caller allows it; what cannot be done by a statement (removing an enum label, moving a table
into a partition tree) is a ``-- manual:`` comment. Every script parses with pglast before it
is returned. Review it before running it: this is a starting point, not a migration tool.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pglast

from pg_guardian.drift.catalog import Fingerprint, SchemaObject
from pg_guardian.drift.compare import Difference
from pg_guardian.errors import GuardianError

# Creation order; drops run in the reverse order first. Indexes come after materialized views
# (they may be on one) and before foreign keys (which may rely on a unique index).
PHASES = (
    "schema",
    "extension",
    "type",
    "domain",
    "sequence",
    "table",
    "foreign table",
    "column",
    "sequence owner",
    "constraint",
    "function",
    "procedure",
    "aggregate",
    "view",
    "materialized view",
    "index",
    "foreign key",
    "trigger",
    "rule",
    "policy",
    "default privileges",
    "event trigger",
    "comment",
    "privileges",
)


class UnsafeMigration(GuardianError):
    """The migration needs destructive statements and they were not allowed."""


@dataclass(frozen=True)
class Statement:
    phase: str
    sql: str
    unsafe: bool = False
    drop: bool = False

    @property
    def manual(self) -> bool:
        return self.sql.startswith("-- manual:")


def literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def dollar(body: str) -> str:
    tag, n = "$body$", 0
    while tag in body:
        n += 1
        tag = f"$body{n}$"
    return f"{tag}{body}{tag}"


def role(name: str) -> str:
    if name == "PUBLIC":
        return "PUBLIC"
    return (
        name if re.fullmatch(r"[a-z_][a-z0-9_$]*", name) and not _keyword(name) else '"' + name.replace('"', '""') + '"'
    )


def _keyword(name: str) -> bool:
    from pglast import keywords

    return (
        name in keywords.RESERVED_KEYWORDS
        or name in keywords.TYPE_FUNC_NAME_KEYWORDS
        or name in keywords.COL_NAME_KEYWORDS
    )


_PART = r'(?:"(?:[^"]|"")*"|[^".\s(]+)'


def quoted_parts(identity: str) -> list[str]:
    """The dotted parts of an identity, still quoted: ``public."My T".c`` -> 3 parts."""
    return re.findall(_PART, identity)


def on_parts(identity: str) -> tuple[str, str]:
    """``name on schema.table`` -> (name, schema.table), both quoted as in the identity."""
    name, _, table = identity.partition(" on ")
    return name, table


def constraint_sql(definition: dict[str, Any]) -> str:
    """A key's definition with its index's storage parameters put back."""
    options = definition.get("index_options")
    return f"{definition['definition']} WITH ({options})" if options else str(definition["definition"])


def function_name(identity: str) -> str:
    return identity.split("(", 1)[0]


class _Builder:
    def __init__(self, source: Fingerprint, target: Fingerprint) -> None:
        self.source, self.target = source, target
        self.out: list[Statement] = []
        self.created_tables: set[str] = set()

    def add(self, phase: str, sql: str, *, unsafe: bool = False, drop: bool = False) -> None:
        self.out.append(
            Statement(
                phase,
                sql.rstrip().rstrip(";") + ";" if not sql.startswith("--") else sql,
                unsafe or drop,
                drop,
            )
        )

    def manual(self, phase: str, text: str) -> None:
        self.out.append(Statement(phase, f"-- manual: {text}"))

    # -- objects of the source the target lacks, or has differently ----------------------------

    def columns_of(self, table: str) -> list[SchemaObject]:
        cols = {o.identity: o for o in self.source.objects.values() if o.kind == "column" and o.parent == table}
        order = (
            self.source.objects[f"table {table}"].definition.get("column_order", [])
            if f"table {table}" in self.source.objects
            else []
        )
        by_name = {quoted_parts(c.identity)[-1]: c for c in cols.values()}
        ordered = [by_name[q] for q in (_quote_name(n) for n in order) if q in by_name]
        return ordered + [c for c in cols.values() if c not in ordered]

    def column_sql(self, obj: SchemaObject) -> str:
        d = obj.definition
        parts = [quoted_parts(obj.identity)[-1], d["data_type"]]
        if d.get("collation"):
            parts.append(f"COLLATE {d['collation']}")
        if d.get("generated"):
            parts.append(f"GENERATED ALWAYS AS ({d['generated']}) STORED")
        if d.get("identity"):
            options = _seq_options(d.get("identity_sequence"), "(", ")")
            parts.append(f"GENERATED {d['identity'].upper()} AS IDENTITY{options}")
        if d.get("default") is not None:
            parts.append(f"DEFAULT {d['default']}")
        if d.get("not_null") and not d.get("identity"):
            parts.append("NOT NULL")
        return " ".join(parts)

    def create(self, obj: SchemaObject) -> None:
        d, ident, kind = obj.definition, obj.identity, obj.kind
        if kind == "schema":
            self.add(kind, f"CREATE SCHEMA {ident}")
        elif kind == "extension":
            self.add(
                kind,
                f"CREATE EXTENSION IF NOT EXISTS {ident} WITH SCHEMA {d['schema']} VERSION {literal(d['version'])}",
            )
        elif kind == "type":
            if d.get("type") == "enum":
                self.add(
                    kind,
                    f"CREATE TYPE {ident} AS ENUM ({', '.join(literal(x) for x in d.get('labels', []))})",
                )
            elif d.get("type") == "composite":
                self.add(kind, f"CREATE TYPE {ident} AS ({', '.join(d.get('attributes', []))})")
            elif d.get("type") == "range":
                self.add(kind, f"CREATE TYPE {ident} AS RANGE (SUBTYPE = {d['subtype']})")
            else:
                self.manual(
                    kind,
                    f"create base type {ident} (input {d.get('input_function')}, output {d.get('output_function')})",
                )
        elif kind == "domain":
            sql = f"CREATE DOMAIN {ident} AS {d['base_type']}"
            if d.get("collation"):
                sql += f" COLLATE {d['collation']}"
            if d.get("default") is not None:
                sql += f" DEFAULT {d['default']}"
            if d.get("not_null"):
                sql += " NOT NULL"
            for name, definition in sorted((d.get("constraints") or {}).items()):
                sql += f" CONSTRAINT {_quote_name(name)} {definition}"
            self.add(kind, sql)
        elif kind == "sequence":
            self.add(kind, f"CREATE SEQUENCE {ident} AS {d['data_type']}{_seq_options(d)}")
            if d.get("owned_by"):
                self.add("sequence owner", f"ALTER SEQUENCE {ident} OWNED BY {d['owned_by']}")
        elif kind in ("table", "foreign table"):
            self.create_table(obj)
        elif kind == "column":
            if obj.parent in self.created_tables:
                return
            self.add(kind, f"ALTER TABLE {obj.parent} ADD COLUMN {self.column_sql(obj)}")
        elif kind == "constraint":
            name, table = on_parts(ident)
            phase = "foreign key" if d.get("type") == "foreign key" else "constraint"
            self.add(phase, f"ALTER TABLE {table} ADD CONSTRAINT {name} {constraint_sql(d)}")
        elif kind in ("index", "trigger", "rule"):
            self.add(kind, d["definition"])
            if kind == "trigger" and d.get("enabled", "origin") != "origin":
                self.trigger_enabled(obj)
        elif kind in ("function", "procedure"):
            self.add(kind, self.function_sql(obj))
        elif kind == "aggregate":
            self.manual(kind, f"create aggregate {ident} ({d.get('arguments')}) with {d.get('aggregate')}")
        elif kind in ("view", "materialized view"):
            options = f" WITH ({', '.join(d['options'])})" if d.get("options") else ""
            keyword = "VIEW" if kind == "view" else "MATERIALIZED VIEW"
            self.add(kind, f"CREATE {keyword} {ident}{options} AS {d['definition'].strip().rstrip(';')}")
        elif kind == "policy":
            self.add(kind, self.policy_sql(obj))
        elif kind == "event trigger":
            tags = f" WHEN TAG IN ({', '.join(literal(t) for t in d['tags'])})" if d.get("tags") else ""
            self.add(
                kind,
                f"CREATE EVENT TRIGGER {ident} ON {d['event']}{tags} EXECUTE FUNCTION {function_name(d['function'])}()",
            )
        elif kind == "default privileges":
            pass  # privileges below
        self.comment(obj, None, d.get("comment"))
        self.privileges(obj, _DEFAULT_PRIVILEGES.get(kind, {}), d.get("privileges") or {})
        if kind in ("view", "materialized view"):
            for column, privs in (d.get("column_privileges") or {}).items():
                self.privileges(obj, {}, privs, column=_quote_name(column))

    def create_table(self, obj: SchemaObject) -> None:
        d, ident = obj.definition, obj.identity
        self.created_tables.add(ident)
        columns = [self.column_sql(c) for c in self.columns_of(ident)]
        if obj.kind == "foreign table":
            options = (
                f" OPTIONS ({', '.join(_option(o) for o in d['foreign_options'])})" if d.get("foreign_options") else ""
            )
            self.add(
                "table",
                f"CREATE FOREIGN TABLE {ident} ({', '.join(columns)}) SERVER {d['foreign_server']}{options}",
            )
        elif d.get("partition_of"):
            self.add(
                "table",
                f"CREATE TABLE {ident} PARTITION OF {d['partition_of']} {d['partition_bound']}"
                + (f" PARTITION BY {d['partition_key']}" if d.get("partition_key") else ""),
            )
        else:
            unlogged = "UNLOGGED " if d.get("persistence") == "unlogged" else ""
            sql = f"CREATE {unlogged}TABLE {ident} ({', '.join(columns)})"
            if d.get("inherits"):
                sql += f" INHERITS ({', '.join(d['inherits'])})"
            if d.get("partition_key"):
                sql += f" PARTITION BY {d['partition_key']}"
            if d.get("options"):
                sql += f" WITH ({', '.join(d['options'])})"
            self.add("table", sql)
        self.row_level_security(ident, "disabled", d.get("row_level_security", "disabled"))
        for column in self.columns_of(ident):
            self.comment(column, None, column.definition.get("comment"))
            self.privileges(column, {}, column.definition.get("privileges") or {})

    def function_sql(self, obj: SchemaObject, replace: bool = True) -> str:
        d = obj.definition
        keyword = "PROCEDURE" if obj.kind == "procedure" else "FUNCTION"
        or_replace = "OR REPLACE " if replace else ""
        name = function_name(obj.identity)
        sql = f"CREATE {or_replace}{keyword} {name}({d.get('arguments', '')})"
        if d.get("returns"):
            sql += f" RETURNS {d['returns']}"
        sql += f" LANGUAGE {d['language']}"
        if obj.kind != "procedure":
            sql += f" {d.get('volatility', 'volatile').upper()}"
            if d.get("strict"):
                sql += " STRICT"
            if d.get("leakproof"):
                sql += " LEAKPROOF"
            if d.get("window"):
                sql += " WINDOW"
            sql += f" PARALLEL {d.get('parallel', 'unsafe').upper()}"
            if d.get("cost") is not None:
                sql += f" COST {d['cost']}"
            if d.get("rows") is not None:
                sql += f" ROWS {d['rows']}"
        if d.get("security_definer"):
            sql += " SECURITY DEFINER"
        for setting in d.get("config") or []:
            name, _, value = setting.partition("=")
            sql += f" SET {name} = {literal(value)}" if name != "search_path" else f" SET search_path = {value}"
        body = d.get("body") or ""
        if d.get("library"):
            sql += f" AS {literal(d['library'])}, {literal(body)}"
        elif d.get("language") == "sql" and re.match(r"\s*(BEGIN ATOMIC|RETURN)\b", body):
            sql += f"\n{body}"
        else:
            sql += f" AS {dollar(body)}"
        return sql

    def policy_sql(self, obj: SchemaObject) -> str:
        d = obj.definition
        name, table = on_parts(obj.identity)
        sql = (
            f"CREATE POLICY {name} ON {table} "
            f"AS {'PERMISSIVE' if d.get('permissive', True) else 'RESTRICTIVE'} "
            f"FOR {d.get('command', 'ALL')} "
            f"TO {', '.join(role(r) for r in d.get('roles', ['PUBLIC']))}"
        )
        if d.get("using") is not None:
            sql += f" USING ({d['using']})"
        if d.get("with_check") is not None:
            sql += f" WITH CHECK ({d['with_check']})"
        return sql

    # -- pieces shared by create and change -----------------------------------------------------

    def row_level_security(self, table: str, old: str, new: str) -> None:
        """States are 'disabled', 'enabled', 'enabled, forced' or 'disabled, forced'."""
        if old.startswith("enabled") != new.startswith("enabled"):
            self.add(
                "policy",
                f"ALTER TABLE {table} {'ENABLE' if new.startswith('enabled') else 'DISABLE'} ROW LEVEL SECURITY",
            )
        if old.endswith("forced") != new.endswith("forced"):
            self.add(
                "policy",
                f"ALTER TABLE {table} {'FORCE' if new.endswith('forced') else 'NO FORCE'} ROW LEVEL SECURITY",
            )

    def trigger_enabled(self, obj: SchemaObject) -> None:
        name, table = on_parts(obj.identity)
        how = {
            "origin": "ENABLE",
            "disabled": "DISABLE",
            "replica": "ENABLE REPLICA",
            "always": "ENABLE ALWAYS",
        }
        keyword = "RULE" if obj.kind == "rule" else "TRIGGER"
        self.add(
            obj.kind,
            f"ALTER TABLE {table} {how[obj.definition.get('enabled', 'origin')]} {keyword} {name}",
        )

    def comment(self, obj: SchemaObject, old: str | None, new: str | None) -> None:
        if old == new:
            return
        target = _comment_target(obj)
        if target is None:
            return
        self.add("comment", f"COMMENT ON {target} IS {literal(new) if new is not None else 'NULL'}")

    def privileges(
        self,
        obj: SchemaObject,
        old: Mapping[str, str],
        new: Mapping[str, str],
        column: str | None = None,
    ) -> None:
        target = _grant_target(obj)
        if target is None:
            return
        on, ident = target
        cols = ""
        if obj.kind == "column":
            table = obj.parent
            cols, on, ident = f" ({quoted_parts(obj.identity)[-1]})", "TABLE", str(table)
        elif column:
            cols = f" ({column})"
        prefix = ""
        if obj.kind == "default privileges":
            match = re.match(r"for role (.+?)(?: in schema (.+))? on (\w+)$", obj.identity)
            if not match:
                return
            prefix = (
                f"ALTER DEFAULT PRIVILEGES FOR ROLE {match.group(1)}"
                + (f" IN SCHEMA {match.group(2)}" if match.group(2) else "")
                + " "
            )
            on, ident = match.group(3).upper(), ""
        for grantee in sorted(set(old) | set(new)):
            have, want = _privs(old.get(grantee)), _privs(new.get(grantee))
            grant = sorted(p for p in want if want[p] != have.get(p) and (p not in have or want[p]))
            revoke = sorted(p for p in have if p not in want)
            revoke_option = sorted(p for p in want if have.get(p) and not want[p])
            what = f"{on} {ident}".rstrip()
            for option in (False, True):
                names = [p for p in grant if want[p] == option]
                if names:
                    self.add(
                        "privileges",
                        f"{prefix}GRANT {', '.join(names)}{cols} ON {what} TO {role(grantee)}"
                        + (" WITH GRANT OPTION" if option else ""),
                    )
            if revoke_option:
                self.add(
                    "privileges",
                    f"{prefix}REVOKE GRANT OPTION FOR {', '.join(revoke_option)}{cols} ON {what} FROM {role(grantee)}",
                )
            if revoke:
                self.add(
                    "privileges",
                    f"{prefix}REVOKE {', '.join(revoke)}{cols} ON {what} FROM {role(grantee)}",
                )

    # -- objects the target has that the source has not -----------------------------------------

    def drop(self, obj: SchemaObject) -> None:
        d, ident, kind = obj.definition, obj.identity, obj.kind
        if kind == "column":
            if f"table {obj.parent}" in self.target.objects and f"table {obj.parent}" not in self.source.objects:
                return  # the whole table goes
            self.add(kind, f"ALTER TABLE {obj.parent} DROP COLUMN {quoted_parts(ident)[-1]}", drop=True)
        elif kind == "constraint":
            if self._parent_dropped(obj):
                return
            name, table = on_parts(ident)
            self.add(
                "foreign key" if d.get("type") == "foreign key" else kind,
                f"ALTER TABLE {table} DROP CONSTRAINT {name}",
                drop=True,
            )
        elif kind in ("trigger", "rule", "policy"):
            if self._parent_dropped(obj):
                return
            name, table = on_parts(ident)
            self.add(kind, f"DROP {kind.upper()} {name} ON {table}", drop=True)
        elif kind == "index":
            if self._parent_dropped(obj):
                return
            self.add(kind, f"DROP INDEX {ident}", drop=True)
        elif kind in ("function", "procedure", "aggregate"):
            self.add(kind, f"DROP {kind.upper()} {ident}", drop=True)
        elif kind == "default privileges":
            self.privileges(obj, d.get("privileges") or {}, {})
        elif kind == "sequence" and d.get("owned_by"):
            table = d["owned_by"].rsplit(".", 1)[0]
            if f"table {table}" in self.target.objects and f"table {table}" not in self.source.objects:
                return
            self.add(kind, f"DROP SEQUENCE {ident}", drop=True)
        else:
            keyword = {
                "type": "TYPE",
                "domain": "DOMAIN",
                "sequence": "SEQUENCE",
                "table": "TABLE",
                "foreign table": "FOREIGN TABLE",
                "view": "VIEW",
                "materialized view": "MATERIALIZED VIEW",
                "schema": "SCHEMA",
                "extension": "EXTENSION",
                "event trigger": "EVENT TRIGGER",
            }[kind]
            self.add(kind, f"DROP {keyword} {ident}", drop=True)

    def _parent_dropped(self, obj: SchemaObject) -> bool:
        return any(
            f"{k} {obj.parent}" in self.target.objects and f"{k} {obj.parent}" not in self.source.objects
            for k in ("table", "foreign table", "materialized view", "view")
        )

    # -- objects both have, differently -----------------------------------------------------------

    def change(self, diff: Difference, src: SchemaObject, tgt: SchemaObject) -> None:
        kind, ident = src.kind, src.identity
        sd, td = src.definition, tgt.definition
        detail = {a: e for a, e in diff.detail.items() if not e.get("cosmetic")}
        handled = {"comment", "privileges", "column_privileges", "column_comments"}
        if "comment" in detail:
            self.comment(src, td.get("comment"), sd.get("comment"))
        if "privileges" in detail:
            self.privileges(src, td.get("privileges") or {}, sd.get("privileges") or {})
        if "column_privileges" in detail:
            for column in sorted(set(sd.get("column_privileges") or {}) | set(td.get("column_privileges") or {})):
                self.privileges(
                    src,
                    (td.get("column_privileges") or {}).get(column, {}),
                    (sd.get("column_privileges") or {}).get(column, {}),
                    column=_quote_name(column),
                )
        if "column_comments" in detail:
            for column in sorted(set(sd.get("column_comments") or {}) | set(td.get("column_comments") or {})):
                old, new = (
                    (td.get("column_comments") or {}).get(column),
                    (sd.get("column_comments") or {}).get(column),
                )
                if old != new:
                    self.add(
                        "comment",
                        f"COMMENT ON COLUMN {ident}.{_quote_name(column)} IS "
                        + (literal(new) if new is not None else "NULL"),
                    )
        rest = [a for a in detail if a not in handled]
        if not rest:
            return
        if kind == "column":
            self.change_column(src, tgt, rest)
        elif kind in ("table", "foreign table"):
            for attribute in rest:
                if attribute == "row_level_security":
                    self.row_level_security(ident, td.get(attribute, "disabled"), sd.get(attribute, "disabled"))
                elif attribute == "persistence":
                    self.add(
                        "table",
                        f"ALTER TABLE {ident} SET {'UNLOGGED' if sd[attribute] == 'unlogged' else 'LOGGED'}",
                    )
                elif attribute == "options":
                    old, new = set(td.get("options") or []), set(sd.get("options") or [])
                    if old - new:
                        self.add(
                            "table",
                            f"ALTER TABLE {ident} RESET ({_option_names(old - new)})",
                        )
                    if new - old:
                        self.add("table", f"ALTER TABLE {ident} SET ({', '.join(sorted(new - old))})")
                elif attribute == "replica_identity":
                    value = sd.get(attribute) or "default"
                    if value == "index":
                        self.manual(
                            "table",
                            f"set the replica identity of {ident} to its index as in the source",
                        )
                    else:
                        self.add("table", f"ALTER TABLE {ident} REPLICA IDENTITY {value.upper()}")
                else:
                    self.manual(
                        "table",
                        f"{ident}: {attribute} differs ({_show(td.get(attribute))} here, "
                        f"{_show(sd.get(attribute))} in the source)",
                    )
        elif kind in ("function", "procedure"):
            if {"returns", "arguments"} & set(rest):
                self.add(kind, f"DROP {kind.upper()} {ident}", drop=True)
                self.add(kind, self.function_sql(src, replace=False))
            else:
                self.add(kind, self.function_sql(src))
        elif kind == "view":
            if "definition" in rest:
                self.add(
                    kind,
                    f"CREATE OR REPLACE VIEW {ident} AS {sd['definition'].strip().rstrip(';')}",
                )
            if "options" in rest:
                old, new = set(td.get("options") or []), set(sd.get("options") or [])
                if old - new:
                    self.add(
                        kind,
                        f"ALTER VIEW {ident} RESET ({_option_names(old - new)})",
                    )
                if new - old:
                    self.add(kind, f"ALTER VIEW {ident} SET ({', '.join(sorted(new - old))})")
        elif kind == "trigger" and set(rest) <= {"definition", "enabled"}:
            if "definition" in rest:
                self.add(
                    kind,
                    sd["definition"]
                    .replace("CREATE TRIGGER", "CREATE OR REPLACE TRIGGER", 1)
                    .replace("CREATE CONSTRAINT TRIGGER", "CREATE OR REPLACE CONSTRAINT TRIGGER", 1),
                )
            if "enabled" in rest or "definition" in rest:
                self.trigger_enabled(src)
        elif kind == "rule" and set(rest) <= {"definition", "enabled"}:
            if "definition" in rest:
                self.add(kind, sd["definition"].replace("CREATE RULE", "CREATE OR REPLACE RULE", 1))
            if "enabled" in rest:
                self.trigger_enabled(src)
        elif kind == "policy" and set(rest) <= {"roles", "using", "with_check"}:
            name, table = on_parts(ident)
            sql = f"ALTER POLICY {name} ON {table}"
            if "roles" in rest:
                sql += f" TO {', '.join(role(r) for r in sd.get('roles', ['PUBLIC']))}"
            if "using" in rest and sd.get("using") is not None:
                sql += f" USING ({sd['using']})"
            if "with_check" in rest and sd.get("with_check") is not None:
                sql += f" WITH CHECK ({sd['with_check']})"
            self.add(kind, sql)
        elif kind == "extension":
            if "version" in rest:
                self.add(kind, f"ALTER EXTENSION {ident} UPDATE TO {literal(sd['version'])}")
            if "schema" in rest:
                self.add(kind, f"ALTER EXTENSION {ident} SET SCHEMA {sd['schema']}")
        elif kind == "sequence":
            if set(rest) - {"owned_by"}:
                self.add(kind, f"ALTER SEQUENCE {ident} AS {sd['data_type']}{_seq_options(sd)}")
            if "owned_by" in rest:
                self.add(
                    "sequence owner",
                    f"ALTER SEQUENCE {ident} OWNED BY {sd.get('owned_by') or 'NONE'}",
                )
        elif kind == "type" and rest == ["labels"] and sd.get("type") == "enum":
            self.enum_labels(ident, td.get("labels") or [], sd.get("labels") or [])
        elif kind == "domain" and set(rest) <= {"not_null", "default", "constraints"}:
            if "not_null" in rest:
                self.add(kind, f"ALTER DOMAIN {ident} {'SET' if sd.get('not_null') else 'DROP'} NOT NULL")
            if "default" in rest:
                self.add(
                    kind,
                    f"ALTER DOMAIN {ident} SET DEFAULT {sd['default']}"
                    if sd.get("default") is not None
                    else f"ALTER DOMAIN {ident} DROP DEFAULT",
                )
            if "constraints" in rest:
                old, new = td.get("constraints") or {}, sd.get("constraints") or {}
                for name in sorted(set(old) | set(new)):
                    if name in old and old[name] != new.get(name):
                        self.add(
                            kind,
                            f"ALTER DOMAIN {ident} DROP CONSTRAINT {_quote_name(name)}",
                            drop=True,
                        )
                    if name in new and old.get(name) != new[name]:
                        self.add(
                            kind,
                            f"ALTER DOMAIN {ident} ADD CONSTRAINT {_quote_name(name)} {new[name]}",
                        )
        elif kind == "event trigger" and rest == ["enabled"]:
            how = {
                "origin": "ENABLE",
                "disabled": "DISABLE",
                "replica": "ENABLE REPLICA",
                "always": "ENABLE ALWAYS",
            }
            self.add(kind, f"ALTER EVENT TRIGGER {ident} {how[sd.get('enabled', 'origin')]}")
        elif kind == "index" and rest == ["valid"]:
            self.add(kind, f"REINDEX INDEX {ident}")
        elif kind in (
            "constraint",
            "index",
            "trigger",
            "rule",
            "policy",
            "materialized view",
            "event trigger",
        ):
            # no ALTER for these: drop and create again
            self.drop(tgt)
            self.create(src)
        else:
            self.manual(kind, f"{kind} {ident}: {', '.join(rest)} differ; recreate it as in the source")

    def change_column(self, src: SchemaObject, tgt: SchemaObject, rest: list[str]) -> None:
        sd, td = src.definition, tgt.definition
        table, column = src.parent, quoted_parts(src.identity)[-1]
        alter = f"ALTER TABLE {table} ALTER COLUMN {column}"
        if "data_type" in rest or "collation" in rest:
            collate = f" COLLATE {sd['collation']}" if sd.get("collation") else ""
            self.add("column", f"{alter} TYPE {sd['data_type']}{collate}", unsafe=True)
        if "default" in rest:
            self.add(
                "column",
                f"{alter} SET DEFAULT {sd['default']}" if sd.get("default") is not None else f"{alter} DROP DEFAULT",
            )
        if "identity" in rest:
            if not sd.get("identity"):
                self.add("column", f"{alter} DROP IDENTITY")
            elif not td.get("identity"):
                self.add(
                    "column",
                    f"{alter} ADD GENERATED {sd['identity'].upper()} AS IDENTITY"
                    f"{_seq_options(sd.get('identity_sequence'), '(', ')')}",
                )
            else:
                self.add("column", f"{alter} SET GENERATED {sd['identity'].upper()}")
        elif "identity_sequence" in rest and sd.get("identity"):
            self.add(
                "column",
                f"{alter}{_seq_options(sd.get('identity_sequence'), '', '', prefix=' SET ')}",
            )
        if "not_null" in rest:
            self.add("column", f"{alter} {'SET' if sd.get('not_null') else 'DROP'} NOT NULL")
        if "generated" in rest:
            self.manual(
                "column",
                f"{src.identity}: generated expression differs; drop and add the column as in the source",
            )

    def enum_labels(self, ident: str, old: list[str], new: list[str]) -> None:
        if [x for x in old if x in new] != [x for x in new if x in old]:
            self.manual("type", f"{ident}: enum labels are in another order; recreate the type")
            return
        removed = [x for x in old if x not in new]
        if removed:
            self.manual(
                "type",
                f"{ident}: remove enum labels {', '.join(removed)} (PostgreSQL cannot drop labels; recreate the type)",
            )
        for i, label in enumerate(new):
            if label in old:
                continue
            after = next((new[j] for j in range(i - 1, -1, -1) if new[j] in old or new[j] in new[:i]), None)
            position = f" AFTER {literal(after)}" if after else (f" BEFORE {literal(old[0])}" if old else "")
            self.add("type", f"ALTER TYPE {ident} ADD VALUE {literal(label)}{position}")


# What a new object grants before anyone runs GRANT or REVOKE.
_DEFAULT_PRIVILEGES = {
    "function": {"PUBLIC": "EXECUTE"},
    "procedure": {"PUBLIC": "EXECUTE"},
    "aggregate": {"PUBLIC": "EXECUTE"},
    "type": {"PUBLIC": "USAGE"},
    "domain": {"PUBLIC": "USAGE"},
}


def _privs(text: str | None) -> dict[str, bool]:
    """``"INSERT, SELECT WITH GRANT OPTION"`` -> {privilege: grantable}."""
    out = {}
    for item in (text or "").split(", "):
        if item:
            out[item.removesuffix(" WITH GRANT OPTION")] = item.endswith(" WITH GRANT OPTION")
    return out


def _seq_options(d: Mapping[str, Any] | None, open_: str = "", close: str = "", prefix: str = " ") -> str:
    if not d:
        return ""
    parts = [
        f"START WITH {d['start']}",
        f"INCREMENT BY {d['increment']}",
        f"MINVALUE {d['minimum']}",
        f"MAXVALUE {d['maximum']}",
        f"CACHE {d['cache']}",
        "CYCLE" if d.get("cycle") else "NO CYCLE",
    ]
    if prefix == " SET ":
        return " " + " ".join(f"SET {p}" for p in parts)
    return f" {open_}{' '.join(parts)}{close}"


def _option_names(options: set[str]) -> str:
    return ", ".join(sorted(o.split("=")[0] for o in options))


def _option(option: str) -> str:
    name, _, value = option.partition("=")
    return f"{name} {literal(value)}"


def _quote_name(name: str) -> str:
    return role(name) if name != "PUBLIC" else '"PUBLIC"'


def _show(value: Any) -> str:
    return "(none)" if value is None else str(value)


_COMMENT_KEYWORDS = {
    "schema": "SCHEMA",
    "table": "TABLE",
    "foreign table": "FOREIGN TABLE",
    "view": "VIEW",
    "materialized view": "MATERIALIZED VIEW",
    "sequence": "SEQUENCE",
    "column": "COLUMN",
    "index": "INDEX",
    "function": "FUNCTION",
    "procedure": "PROCEDURE",
    "aggregate": "AGGREGATE",
    "type": "TYPE",
    "domain": "DOMAIN",
    "extension": "EXTENSION",
    "event trigger": "EVENT TRIGGER",
}


def _comment_target(obj: SchemaObject) -> str | None:
    if obj.kind in _COMMENT_KEYWORDS:
        return f"{_COMMENT_KEYWORDS[obj.kind]} {obj.identity}"
    if obj.kind in ("constraint", "trigger", "rule", "policy"):
        return f"{obj.kind.upper()} {obj.identity}"
    return None


def _grant_target(obj: SchemaObject) -> tuple[str, str] | None:
    on = {
        "schema": "SCHEMA",
        "table": "TABLE",
        "foreign table": "TABLE",
        "view": "TABLE",
        "materialized view": "TABLE",
        "sequence": "SEQUENCE",
        "function": "FUNCTION",
        "procedure": "PROCEDURE",
        "aggregate": "FUNCTION",
        "type": "TYPE",
        "domain": "DOMAIN",
        "column": "TABLE",
        "default privileges": "TABLES",
    }.get(obj.kind)
    return (on, obj.identity) if on else None


def plan(differences: Iterable[Difference], source: Fingerprint, target: Fingerprint) -> list[Statement]:
    """The statements that turn ``target`` into ``source`` for these differences, in order."""
    builder = _Builder(source, target)
    drops: list[Difference] = []
    rest: list[Difference] = []
    for d in differences:
        if d.cosmetic:
            continue
        (drops if d.change == "added" else rest).append(d)
    for d in drops:
        builder.drop(target.objects[f"{d.kind} {d.identity}"])
    # tables (and parents before their partitions) before anything that lives in them
    rest.sort(
        key=lambda d: (
            d.kind not in ("table", "foreign table"),
            bool(d.change == "removed" and source.objects[f"{d.kind} {d.identity}"].definition.get("partition_of")),
        )
    )
    for d in rest:
        key = f"{d.kind} {d.identity}"
        if d.change == "removed":
            builder.create(source.objects[key])
        else:
            builder.change(d, source.objects[key], target.objects[key])
    order = {p: i for i, p in enumerate(PHASES)}
    dropped = [s for s in builder.out if s.drop]
    created = [s for s in builder.out if not s.drop]
    dropped.sort(key=lambda s: -order[s.phase])
    created.sort(key=lambda s: order[s.phase])
    return dropped + created


def render(statements: list[Statement], *, unsafe: bool, header: str) -> str:
    """The script, or :class:`UnsafeMigration` naming the destructive statements.

    Raises GuardianError if the script does not parse (a bug, never silently printed).
    """
    refused = [s for s in statements if s.unsafe]
    if refused and not unsafe:
        listed = "; ".join(s.sql.split("\n", 1)[0].rstrip(";") for s in refused[:5])
        more = f" and {len(refused) - 5} more" if len(refused) > 5 else ""
        raise UnsafeMigration(
            f"bringing the target in line needs {len(refused)} destructive statement"
            f"{'s' if len(refused) != 1 else ''} ({listed}{more}); "
            "review them and re-run with --unsafe"
        )
    lines = [f"-- {line}" for line in header.splitlines()]
    # as pg_dump does: function bodies may refer to objects created further down
    lines.append("SET check_function_bodies = false;")
    if not statements:
        lines.append("-- nothing to do: the target matches the source")
    for s in statements:
        if s.drop:
            lines.append("-- destructive (allowed by --unsafe): removes an object")
        elif s.unsafe:
            lines.append("-- unsafe (allowed by --unsafe): may lose or rewrite data")
        lines.append(s.sql)
    script = "\n".join(lines) + "\n"
    try:
        pglast.parse_sql(script)
    except pglast.parser.ParseError as exc:
        raise GuardianError(f"internal error: the generated SQL does not parse ({exc}); please report it") from exc
    return script
