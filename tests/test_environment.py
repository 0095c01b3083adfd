"""Environment identity and guard mode: set, read, override per table, audited."""

from __future__ import annotations

import psycopg
import pytest
from support.queries import scalar


def test_fresh_install_is_local_in_warn_mode(db: psycopg.Connection) -> None:
    assert db.execute("SELECT environment, mode FROM guardian.environment_status").fetchone() == ("local", "warn")


def test_set_environment_is_read_back_and_audited(db: psycopg.Connection) -> None:
    assert scalar(db, "SELECT guardian.set_environment('Production')") == "production"
    assert scalar(db, "SELECT guardian.current_environment()") == "production"
    row = db.execute(
        "SELECT severity, message, metadata->>'old', metadata->>'new', context->>'session_user' "
        "FROM guardian.monitoring_alerts WHERE type = 'ENVIRONMENT_CHANGED'"
    ).fetchone()
    assert row == (
        "HIGH",
        "environment changed from local to production by postgres",
        "local",
        "production",
        "postgres",
    )


def test_setting_the_same_environment_again_is_not_audited_twice(db: psycopg.Connection) -> None:
    db.execute("SELECT guardian.set_environment('staging')")
    db.execute("SELECT guardian.set_environment('staging')")
    assert scalar(db, "SELECT count(*) FROM guardian.monitoring_alerts WHERE type = 'ENVIRONMENT_CHANGED'") == 1


def test_any_lowercase_environment_name_is_accepted(db: psycopg.Connection) -> None:
    assert scalar(db, "SELECT guardian.set_environment('qa-eu-2')") == "qa-eu-2"
    assert scalar(db, "SELECT severity FROM guardian.monitoring_alerts WHERE type = 'ENVIRONMENT_CHANGED'") == "INFO"


@pytest.mark.parametrize("bad", ["", "prod env", "1prod", "x" * 64])
def test_invalid_environment_name_is_rejected_with_hint(db: psycopg.Connection, bad: str) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue) as err:
        db.execute("SELECT guardian.set_environment(%s)", (bad,))
    assert "invalid environment name" in str(err.value)
    assert "guardian.set_environment('production')" in (err.value.diag.message_hint or "")
    assert scalar(db, "SELECT guardian.current_environment()") == "local"


def test_unknown_mode_is_rejected_and_nothing_changes(db: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue) as err:
        db.execute("SELECT guardian.set_mode('paranoid')")
    assert "unknown guard mode 'paranoid'" in str(err.value)
    assert "off, warn or strict" in (err.value.diag.message_hint or "")
    assert scalar(db, "SELECT guardian.current_mode()") == "warn"
    assert scalar(db, "SELECT count(*) FROM guardian.monitoring_alerts") == 0


def test_relaxing_production_mode_is_a_high_alert(db: psycopg.Connection) -> None:
    db.execute("SELECT guardian.set_environment('production')")
    db.execute("SELECT guardian.set_mode('strict')")
    db.execute("SELECT guardian.set_mode('off')")
    rows = db.execute(
        "SELECT severity, metadata->>'old', metadata->>'new' FROM guardian.monitoring_alerts "
        "WHERE type = 'GUARD_MODE_CHANGED' ORDER BY created_at, last_seen_at"
    ).fetchall()
    assert rows == [("INFO", "warn", "strict"), ("HIGH", "strict", "off")]


def test_table_mode_overrides_environment_mode(db: psycopg.Connection) -> None:
    db.execute("CREATE TABLE public.patients (id int primary key)")
    db.execute("CREATE TABLE public.notes (id int primary key)")
    db.execute("SELECT guardian.set_mode('warn')")
    assert scalar(db, "SELECT guardian.set_table_mode('public.patients', 'STRICT')") == "strict"
    assert scalar(db, "SELECT guardian.effective_mode('public.patients')") == "strict"
    assert scalar(db, "SELECT guardian.effective_mode('public.notes')") == "warn"
    assert scalar(db, "SELECT table_modes->>'patients' FROM guardian.environment_status") == "strict"
    db.execute("SELECT guardian.set_table_mode('public.patients', NULL)")
    assert scalar(db, "SELECT guardian.effective_mode('public.patients')") == "warn"
    assert scalar(db, "SELECT count(*) FROM guardian.monitoring_alerts WHERE table_name = 'public.patients'") == 2


def test_table_mode_for_missing_table_names_the_table(db: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.UndefinedTable) as err:
        db.execute("SELECT guardian.set_table_mode('public.nope', 'strict')")
    assert "public.nope" in str(err.value)


def test_settings_fall_back_from_environment_to_default(db: psycopg.Connection) -> None:
    db.execute(
        "INSERT INTO guardian.settings (environment, key, value) VALUES ('*', 'lockdown.threshold', '100'), "
        "('production', 'lockdown.threshold', '20')"
    )
    assert scalar(db, "SELECT guardian.setting('lockdown.threshold')") == 100
    db.execute("SELECT guardian.set_environment('production')")
    assert scalar(db, "SELECT guardian.setting('lockdown.threshold')") == 20
    assert scalar(db, "SELECT guardian.setting('missing', '7')") == 7
