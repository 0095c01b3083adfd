"""The controller's contamination commands: watch, scan, check-payload."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
from click.testing import CliRunner
from pg_guardian import contamination
from pg_guardian.cli import main
from pg_guardian.demo import package_sql


def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_watch_command_overrides_and_skips_columns(db: psycopg.Connection, dsn: str) -> None:
    db.execute("CREATE TABLE public.contacts (id int PRIMARY KEY, email text, code text, remarks text)")
    code, out, err = run(
        "watch",
        "public.contacts",
        "--column",
        "code=-",
        "--column",
        "remarks=free_text",
        "--mode",
        "strict",
        "--dsn",
        dsn,
    )
    assert code == 0, err
    assert out.split() == ["email", "email", "auto", "remarks", "free_text", "override"]
    assert db.execute("SELECT guardian.effective_mode('public.contacts')").fetchone() == ("strict",)


def test_watch_command_reports_database_errors_in_one_line(db: psycopg.Connection, dsn: str) -> None:
    db.execute("CREATE TABLE public.contacts (id int PRIMARY KEY, email text)")
    code, _, err = run("watch", "public.contacts", "--column", "email=mail", "--dsn", dsn)
    assert code == 2
    assert err.startswith("error: unknown kind 'mail' for column email (hint: Known kinds:")
    assert len(err.strip().splitlines()) == 1


def test_scan_command_finds_test_data_with_exit_code_one(db: psycopg.Connection, dsn: str) -> None:
    db.execute(package_sql("demo_schema.sql"))
    db.execute(package_sql("demo_data.sql"))
    db.execute("SELECT guardian.watch('dental.clinics'), guardian.watch('dental.patients')")
    code, out, _ = run("scan", "--dsn", dsn)
    assert code == 0 and "0 finding(s) in 2 table(s)" in out
    db.execute("SELECT guardian.set_mode('off')")
    db.execute("INSERT INTO dental.clinics (name, email) VALUES ('Test Clinic', 'user@tenant-a.test')")
    code, out, err = run("scan", "--dsn", dsn, "--format", "json", "--record")
    assert code == 1
    data = json.loads(out)
    assert {d["rule"] for d in data} == {"test_organization", "reserved_test_tld", "tenant_fixture"}
    assert {d["table"] for d in data} == {"dental.clinics"}
    assert "scanning dental.clinics" in err
    assert db.execute(
        "SELECT count(*) FROM guardian.monitoring_alerts WHERE type = 'TEST_DATA_CONTAMINATION'"
    ).fetchone() == (3,)


def test_scan_in_batches_sees_every_row(db: psycopg.Connection) -> None:
    db.execute("CREATE TABLE public.big (id int PRIMARY KEY, email text)")
    db.execute(
        "INSERT INTO public.big SELECT i, CASE WHEN i % 1000 = 0 THEN 'qa+' || i || '@gmail.com' "
        "ELSE 'p' || i || '@gmail.com' END FROM generate_series(1, 20000) AS i"
    )
    batches = contamination.scan_batches(db, "public.big", batch_pages=10)
    assert len(batches) > 5 and batches[-1][2] is None
    pages: list[int] = []
    found = list(contamination.scan(db, "public.big", batch_pages=10, progress=pages.append))
    assert sorted({int(f.record_id or 0) for f in found}) == list(range(1000, 20001, 1000))
    assert sum(pages) == sum(b[3] for b in batches)


def test_scan_of_missing_table_is_a_clear_error(dsn: str) -> None:
    code, _, err = run("scan", "public.nope", "--dsn", dsn)
    assert code == 2 and "table 'public.nope' does not exist" in err


def test_check_payload_command(dsn: str, tmp_path: Path) -> None:
    body = tmp_path / "signup.json"
    body.write_text(
        json.dumps([{"email": "user@tenant-a.test", "name": "Ana"}] + [{"email": f"p{i}@gmail.com"} for i in range(60)])
    )
    code, out, _ = run("check-payload", str(body), "--table", "users", "--dsn", dsn)
    assert code == 1
    alerts = json.loads(out)
    assert [a["type"] for a in alerts] == ["TEST_DATA_PATTERN", "BULK_OPERATION"]
    assert alerts[0]["severity"] == "CRITICAL" and alerts[0]["findings"][0]["path"] == "$[0].email"
    assert alerts[1]["record_count"] == 61
    code, out, _ = run("check-payload", "--dsn", dsn, stdin='{"email": "celeste.testa@gmail.com"}')
    assert code == 0 and json.loads(out) == []
    code, _, err = run("check-payload", "--dsn", dsn, stdin="{not json")
    assert code == 2 and "is not valid JSON" in err
