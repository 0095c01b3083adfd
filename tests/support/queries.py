"""Small helpers shared by the tests."""

from __future__ import annotations

from typing import Any

import psycopg


def scalar(conn: psycopg.Connection, query: str, params: Any = None) -> Any:
    """The single value a query returns."""
    row = conn.execute(query, params).fetchone()
    assert row is not None, f"no row from {query}"
    return row[0]


def catalog_snapshot(conn: psycopg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Everything pg_guardian creates, described without OIDs, for comparing two installs."""
    queries = {
        "relations": """
            SELECT c.relname, c.relkind, pg_get_userbyid(c.relowner), c.relacl::text
              FROM pg_class c WHERE c.relnamespace = 'guardian'::regnamespace
               AND c.relname <> 'migrations' AND c.relname NOT LIKE 'migrations\\_%'""",
        "columns": """
            SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                   pg_get_expr(d.adbin, d.adrelid)
              FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
              LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
             WHERE c.relnamespace = 'guardian'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
               AND c.relname <> 'migrations' AND c.relname NOT LIKE 'migrations\\_%'""",
        "constraints": """
            SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
              FROM pg_constraint WHERE connamespace = 'guardian'::regnamespace
               AND conrelid::regclass::text NOT LIKE 'guardian.migrations%'""",
        "indexes": """
            SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'guardian'
               AND tablename <> 'migrations'""",
        "functions": """
            SELECT p.oid::regprocedure::text, pg_get_userbyid(p.proowner), p.prosecdef,
                   p.provolatile, p.proconfig::text, p.proacl::text, md5(p.prosrc)
              FROM pg_proc p WHERE p.pronamespace = 'guardian'::regnamespace""",
        "triggers": """
            SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid)
              FROM pg_trigger WHERE NOT tgisinternal
               AND tgrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'guardian'::regnamespace)""",
        "views": """
            SELECT viewname, definition FROM pg_views WHERE schemaname = 'guardian'""",
        "event_triggers": """
            SELECT evtname, evtevent, evttags::text, evtfoid::regproc::text, evtenabled
              FROM pg_event_trigger WHERE evtfoid::regproc::text LIKE 'guardian.%'""",
        "types": """
            SELECT t.typname, t.typtype FROM pg_type t
             WHERE t.typnamespace = 'guardian'::regnamespace AND t.typname NOT LIKE '%migrations%'""",
        "comments": """
            SELECT d.classoid::regclass::text, d.objsubid, d.description
              FROM pg_description d
             WHERE (d.classoid = 'pg_proc'::regclass
                    AND d.objoid IN (SELECT oid FROM pg_proc WHERE pronamespace = 'guardian'::regnamespace))
                OR (d.classoid = 'pg_class'::regclass
                    AND d.objoid IN (SELECT oid FROM pg_class WHERE relnamespace = 'guardian'::regnamespace
                                     AND relname <> 'migrations'))""",
    }
    return {name: sorted(conn.execute(q).fetchall(), key=repr) for name, q in queries.items()}
