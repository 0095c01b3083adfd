"""Quarantine and restore: nothing a cleanup removes is lost."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest
from click.testing import CliRunner
from pg_guardian import response
from pg_guardian.cli import main
from support.queries import scalar
from support.response import (
    SNAPSHOT,
    TEST_CLINIC,
    contamination_alert,
    count,
    load_dental,
    seed_test_clinic,
)


@pytest.fixture
def cleaned(db: psycopg.Connection) -> tuple[psycopg.Connection, str, str]:
    """The dental sample after the test clinic's cleanup: (connection, batch, snapshot before)."""
    load_dental(db)
    seed_test_clinic(db)
    before = scalar(db, SNAPSHOT)
    response.run_script(db, response.cleanup_script(db, alert=contamination_alert(db)))
    batch = str(scalar(db, "SELECT id FROM guardian.quarantine_batches"))
    return db, batch, before


def test_restore_puts_back_every_row_byte_for_byte(
    cleaned: tuple[psycopg.Connection, str, str],
) -> None:
    db, batch, before = cleaned
    assert scalar(db, SNAPSHOT) != before
    # Restored under other output settings than the capture had: the values must not care.
    db.execute(
        "SET datestyle = 'SQL, DMY'; SET intervalstyle = 'iso_8601'; "
        "SET timezone = 'Asia/Kolkata'; SET bytea_output = 'escape'; SET extra_float_digits = 0"
    )
    summary = response.restore(db, batch)
    assert summary.startswith(f"restored quarantine batch {batch}: 8 row(s)")
    db.execute("RESET ALL")
    assert scalar(db, SNAPSHOT) == before
    # Types the sample uses, compared as values too: arrays with NULLs, jsonb, numeric,
    # timestamps with microseconds, intervals, bytea, identity columns.
    row = db.execute(
        """SELECT allergies, preferences, balance, created_at, xray, date_of_birth
             FROM dental.patients WHERE first_name = 'Ann'"""
    ).fetchone()
    assert row == (
        ["a b", "latex", None],
        {"z": 1, "a": [1.5, None], "s": "x'y"},
        Decimal("1234567.89"),
        datetime(2024, 2, 29, 18, 29, 59, 123456, tzinfo=UTC),
        b"\x00\xff\x10",
        datetime(1999, 12, 31).date(),
    )
    assert scalar(db, "SELECT duration FROM dental.appointments WHERE procedure = 'cleaning'") == timedelta(
        days=1, hours=2, minutes=3, seconds=4, microseconds=500000
    )
    assert scalar(db, "SELECT status FROM guardian.quarantine_batches WHERE id = %s", (batch,)) == "restored"


def test_restore_keeps_json_text_exactly(db: psycopg.Connection) -> None:
    db.execute("""
        CREATE TABLE public.events (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, email text,
                                    payload json, tags varchar(10)[], score float8, at timestamp,
                                    doubled bigint GENERATED ALWAYS AS (id * 2) STORED);
        SELECT guardian.watch('public.events');
        INSERT INTO public.events (email, payload, tags, score, at)
        VALUES ('qa@example.com', '{"b": 1,  "a": [2, 3], "b": 4}', '{x,"y z"}', 0.1 + 0.2,
                '2024-01-01 00:00:00.000001');
    """)
    before = scalar(db, "SELECT e::text FROM public.events AS e")
    response.run_script(db, response.cleanup_script(db, alert=contamination_alert(db, "public.events")))
    assert count(db, "SELECT count(*) FROM public.events") == 0
    response.restore(db, str(scalar(db, "SELECT id FROM guardian.quarantine_batches")))
    assert scalar(db, "SELECT e::text FROM public.events AS e") == before


def test_restoring_twice_is_refused(cleaned: tuple[psycopg.Connection, str, str]) -> None:
    db, batch, before = cleaned
    response.restore(db, batch)
    with pytest.raises(
        response.ResponseError,
        match=f"quarantine batch {batch} was already restored .* by postgres",
    ):
        response.restore(db, batch)
    assert scalar(db, SNAPSHOT) == before


def test_restore_into_a_changed_table_is_refused_and_nothing_is_lost(
    cleaned: tuple[psycopg.Connection, str, str],
) -> None:
    db, batch, _ = cleaned
    db.execute("ALTER TABLE dental.patients ADD COLUMN insurer text, ALTER COLUMN balance TYPE numeric(14, 2)")
    after_cleanup = scalar(db, SNAPSHOT)
    with pytest.raises(
        response.ResponseError,
        match=r"cannot restore quarantine batch .*: dental.patients changed since its rows were "
        r"quarantined: column balance changed type from numeric\(12,2\) to numeric\(14,2\); "
        r"column insurer \(text\) was added.*Nothing was restored",
    ):
        response.restore(db, batch)
    assert scalar(db, SNAPSHOT) == after_cleanup
    assert count(db, "SELECT count(*) FROM guardian.quarantine WHERE batch_id = %s", (batch,)) == 8
    assert scalar(db, "SELECT status FROM guardian.quarantine_batches WHERE id = %s", (batch,)) == "applied"


def test_restore_into_a_dropped_table_is_refused(
    cleaned: tuple[psycopg.Connection, str, str],
) -> None:
    db, batch, _ = cleaned
    db.execute("DROP TABLE dental.invoices")
    with pytest.raises(response.ResponseError, match=r"table dental\.invoices no longer exists"):
        response.restore(db, batch)


def test_restore_of_a_row_created_again_is_refused(
    cleaned: tuple[psycopg.Connection, str, str],
) -> None:
    db, batch, _ = cleaned
    db.execute("INSERT INTO dental.clinics (id, name) VALUES (%s, 'Somebody Else')", (TEST_CLINIC,))
    with pytest.raises(response.ResponseError, match=r"a row it holds is already back in its table.*Key \(id\)"):
        response.restore(db, batch)
    assert count(db, "SELECT count(*) FROM dental.patients") == 4


def test_restored_rows_are_allowlisted_and_pass_strict_mode(
    cleaned: tuple[psycopg.Connection, str, str],
) -> None:
    db, batch, before = cleaned
    db.execute("SELECT guardian.set_mode('strict')")
    response.restore(db, batch)
    assert scalar(db, SNAPSHOT) == before
    rules = {
        r[0]
        for r in db.execute("SELECT rule FROM guardian.allowlist WHERE reason LIKE 'restored from quarantine batch%'")
    }
    assert rules == {"reserved_example_domain", "test_organization"}
    assert count(db, "SELECT count(*) FROM guardian.scan('dental.clinics')") == 0


def test_restore_without_allowlist_is_rejected_in_strict_mode_with_nothing_changed(
    cleaned: tuple[psycopg.Connection, str, str],
) -> None:
    db, batch, _ = cleaned
    db.execute("SELECT guardian.set_mode('strict')")
    after_cleanup = scalar(db, SNAPSHOT)
    with pytest.raises(response.ResponseError, match="strict mode rejected test data"):
        response.restore(db, batch, allowlist=False)
    assert scalar(db, SNAPSHOT) == after_cleanup
    assert scalar(db, "SELECT status FROM guardian.quarantine_batches WHERE id = %s", (batch,)) == "applied"


def test_quarantine_keeps_who_what_and_why(cleaned: tuple[psycopg.Connection, str, str]) -> None:
    db, batch, _ = cleaned
    row = db.execute(
        """SELECT table_name, row_key, findings, quarantined_by, alert_id IS NOT NULL,
                  script LIKE '-- pg_guardian cleanup script%%'
             FROM guardian.quarantined_rows WHERE batch_id = %s AND findings IS NOT NULL""",
        (batch,),
    ).fetchone()
    assert row is not None
    assert row[0] == "dental.clinics" and row[1] == {"id": TEST_CLINIC}
    assert {f["rule"] for f in row[2]} == {"reserved_example_domain", "test_organization"}
    assert row[3:] == ("postgres", True, True)


def test_retention_prunes_old_batches_and_says_so(
    cleaned: tuple[psycopg.Connection, str, str],
) -> None:
    db, batch, _ = cleaned
    assert "pruned 0 quarantine batch(es)" in response.prune(db)
    db.execute("UPDATE guardian.quarantine_batches SET applied_at = now() - interval '31 days'")
    summary = response.prune(db)
    assert summary.startswith("pruned 1 quarantine batch(es) (8 row(s))") and "older than 30 days" in summary
    alert = db.execute(
        "SELECT severity, metadata FROM guardian.monitoring_alerts WHERE type = 'QUARANTINE_PRUNED'"
    ).fetchone()
    assert alert is not None and alert[0] == "INFO" and alert[1]["batches"] == [batch]
    assert count(db, "SELECT count(*) FROM guardian.quarantine") == 0


def test_retention_zero_keeps_quarantine(cleaned: tuple[psycopg.Connection, str, str]) -> None:
    db, _, _ = cleaned
    db.execute("SELECT guardian.set_param('retention.quarantine_days', 0)")
    db.execute("UPDATE guardian.quarantine_batches SET applied_at = now() - interval '10 years'")
    assert response.prune(db) == "quarantine kept until deleted by hand (retention.quarantine_days = 0)"
    assert count(db, "SELECT count(*) FROM guardian.quarantine") == 8
    assert scalar(db, "SELECT kept_until FROM guardian.quarantine_status") is None
    assert "quarantine_retention" in {r[0] for r in db.execute("SELECT name FROM guardian.jobs")}


def test_quarantine_cli_list_show_restore(cleaned: tuple[psycopg.Connection, str, str], dsn: str) -> None:
    db, batch, before = cleaned
    runner = CliRunner()
    listed = runner.invoke(main, ["quarantine", "list", "--dsn", dsn])
    assert listed.exit_code == 0 and batch in listed.output and "applied" in listed.output
    shown = runner.invoke(main, ["quarantine", "show", batch, "--dsn", dsn])
    assert shown.exit_code == 0 and '"Test Clinic"' in shown.output
    restored = runner.invoke(main, ["quarantine", "restore", batch, "--dsn", dsn])
    assert restored.exit_code == 0, restored.output
    again = runner.invoke(main, ["quarantine", "restore", batch, "--dsn", dsn])
    assert (
        again.exit_code == 2
        and again.output.startswith("error: quarantine batch")
        and "already restored" in again.output
    )
    bad = runner.invoke(main, ["quarantine", "restore", "nope", "--dsn", dsn])
    assert bad.exit_code == 2 and "'nope' is not a batch id" in bad.output
    assert scalar(db, SNAPSHOT) == before
