"""`pg-guardian drift` and `pg-guardian fingerprint` through the CLI, against real databases."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pglast
import psycopg
import pytest
from click.testing import CliRunner
from pg_guardian.cli import main
from pg_guardian.cluster import LocalCluster
from test_drift_fixtures import create_database, drop_database

SCHEMA = """
CREATE TABLE public.patients (id int PRIMARY KEY, email text NOT NULL);
CREATE FUNCTION public.patient_count() RETURNS bigint LANGUAGE sql STABLE
    AS $$ SELECT count(*) FROM public.patients $$;
"""


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def envs(cluster: LocalCluster) -> Iterator[Callable[[str], str]]:
    """Make databases without pg_guardian, each with SCHEMA plus some SQL; yields their DSNs."""
    made: list[str] = []

    def make(extra_sql: str = "") -> str:
        name = f"cli{os.getpid()}_{len(made)}"
        create_database(cluster, name)
        made.append(name)
        with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
            conn.execute(SCHEMA + extra_sql)
        return cluster.dsn(name)

    yield make
    for name in made:
        drop_database(cluster, name)


def test_drift_exits_0_when_the_schemas_match(envs: Callable[[str], str]) -> None:
    code, out, _ = run("drift", "--source", envs(""), "--target", envs(""))
    assert (code, out.strip()) == (0, "no drift: target matches source")


def test_drift_exits_1_and_prints_a_json_list_of_differences(envs: Callable[[str], str]) -> None:
    prod, staging = envs(""), envs("ALTER TABLE public.patients ALTER COLUMN email DROP NOT NULL;")
    code, out, _ = run("drift", "--source", prod, "--target", staging, "--format", "json")
    assert code == 1
    assert json.loads(out) == [
        {
            "kind": "column",
            "identity": "public.patients.email",
            "parent": "public.patients",
            "change": "changed",
            "cosmetic": False,
            "detail": {"not_null": {"source": True, "target": False}},
        }
    ]


def test_text_output_reads_like_a_review(envs: Callable[[str], str]) -> None:
    prod = envs("CREATE INDEX patients_email_idx ON public.patients (email);")
    staging = envs(
        "ALTER TABLE public.patients ADD COLUMN phone text; "
        "CREATE OR REPLACE FUNCTION public.patient_count() RETURNS bigint LANGUAGE sql STABLE "
        "AS $$ SELECT count(*) FROM public.patients WHERE phone IS NOT NULL $$;"
    )
    code, out, _ = run("drift", "--source", prod, "--target", staging)
    assert code == 1
    assert out.splitlines()[:4] == [
        "function public.patient_count()",
        "  ~ body: source SELECT count(*) FROM public.patients | "
        "target SELECT count(*) FROM public.patients WHERE phone IS NOT NULL",
        "",
        "table public.patients",
    ]
    assert "  + column public.patients.phone: only in target: text" in out
    assert (
        "  - index public.patients_email_idx: only in source: "
        "CREATE INDEX patients_email_idx ON public.patients USING btree (email)" in out
    )
    assert out.rstrip().endswith("3 differences in 2 objects (1 added, 1 removed, 1 changed in target)")


def test_formatting_only_differences_are_not_drift_unless_asked(envs: Callable[[str], str]) -> None:
    prod = envs("")
    staging = envs(
        "CREATE OR REPLACE FUNCTION public.patient_count() RETURNS bigint LANGUAGE sql STABLE "
        "AS $$\n"
        "    -- how many\n    select count(*)\n      from public.patients\n$$;"
    )
    code, out, _ = run("drift", "--source", prod, "--target", staging)
    assert code == 0
    assert "formatting only, not counted as drift" in out
    assert "  ~ function public.patient_count(): body" in out  # listed after the drift
    code, out, _ = run("drift", "--source", prod, "--target", staging, "--include-cosmetic")
    assert code == 1
    assert "body differs (formatting only)" in out


def test_several_environments_show_which_ones_differ(envs: Callable[[str], str]) -> None:
    production = envs("")
    staging = envs("ALTER TABLE public.patients ADD COLUMN phone text;")
    local = envs("ALTER TABLE public.patients ADD COLUMN phone varchar(20);")
    code, out, _ = run(
        "drift",
        "--env",
        f"production={production}",
        "--env",
        f"staging={staging}",
        "--env",
        f"local={local}",
        "--format",
        "json",
    )
    assert code == 1
    [column] = json.loads(out)
    assert column["identity"] == "public.patients.phone"
    assert column["change"] == "added"
    assert column["environments"] == {"production": "missing", "staging": "extra", "local": "extra"}
    assert column["detail"]["data_type"] == {
        "production": None,
        "staging": "text",
        "local": "character varying(20)",
    }
    code, out, _ = run(
        "drift",
        "--env",
        f"production={production}",
        "--env",
        f"staging={staging}",
        "--env",
        f"local={production}",
    )
    assert code == 1
    assert "  + column public.patients.phone: production missing, staging extra" in out
    assert "1 object differ across production, staging, local (reference: production)" in out


def test_sql_refuses_destructive_statements_without_unsafe(envs: Callable[[str], str]) -> None:
    prod, staging = envs(""), envs("ALTER TABLE public.patients ADD COLUMN phone text;")
    code, _, err = run("drift", "--source", prod, "--target", staging, "--sql")
    assert code == 2
    assert "ALTER TABLE public.patients DROP COLUMN phone" in err
    assert "re-run with --unsafe" in err


def test_sql_brings_the_target_in_line(envs: Callable[[str], str]) -> None:
    prod = envs(
        "CREATE INDEX patients_email_idx ON public.patients (email); COMMENT ON TABLE public.patients IS 'people';"
    )
    staging = envs("ALTER TABLE public.patients ADD COLUMN phone text;")
    code, script, _ = run("drift", "--source", prod, "--target", staging, "--sql", "--unsafe")
    assert code == 1
    pglast.parse_sql(script)
    with psycopg.connect(staging, autocommit=True) as conn:
        conn.execute(script)
    assert run("drift", "--source", prod, "--target", staging)[0] == 0


def test_fingerprint_file_can_stand_in_for_a_database(envs: Callable[[str], str], tmp_path: Path) -> None:
    prod = envs("")
    exported = tmp_path / "production.json"
    code, _, err = run("fingerprint", "--dsn", prod, "--output", str(exported))
    assert code == 0
    assert "wrote " in err
    assert run("drift", "--source", str(exported), "--target", envs(""))[0] == 0
    assert (
        run(
            "drift",
            "--source",
            str(exported),
            "--target",
            envs("DROP FUNCTION public.patient_count();"),
        )[0]
        == 1
    )


def test_pg_guardian_itself_is_not_drift(cluster: LocalCluster, dbname: str, envs: Callable[[str], str]) -> None:
    with psycopg.connect(cluster.dsn(dbname), autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute("SELECT guardian.approve_baseline()")
    blank = envs("CREATE EXTENSION plpython3u;")  # the test template has it too
    code, out, _ = run("drift", "--source", blank, "--target", cluster.dsn(dbname))
    assert (code, out.strip()) == (0, "no drift: target matches source")


def test_schema_filter_limits_the_comparison(envs: Callable[[str], str]) -> None:
    prod = envs("CREATE SCHEMA scratch; CREATE TABLE scratch.tmp (a int);")
    staging = envs("")
    assert run("drift", "--source", prod, "--target", staging, "--schema", "public")[0] == 0
    assert run("drift", "--source", prod, "--target", staging, "--exclude-schema", "scratch")[0] == 0
    assert run("drift", "--source", prod, "--target", staging)[0] == 1


def test_unreachable_database_is_a_clear_error(envs: Callable[[str], str]) -> None:
    code, _, err = run("drift", "--source", envs(""), "--target", "postgresql://nobody@127.0.0.1:1/nowhere")
    assert code == 2
    assert err.startswith("error: cannot connect to database nowhere on 127.0.0.1:1")


def test_permission_denied_on_the_catalogs_is_a_clear_error(
    cluster: LocalCluster, envs: Callable[[str], str], make_role: Callable[..., str]
) -> None:
    locked = envs("REVOKE SELECT ON pg_catalog.pg_proc FROM PUBLIC;")
    role = make_role("drift_auditor")
    dsn = locked.replace("user=postgres", f"user={role}")
    code, _, err = run("drift", "--source", envs(""), "--target", dsn)
    assert code == 2
    assert "permission denied reading the catalogs" in err
    assert f"as role {role}" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--source", "x"), "give --source and --target"),
        (("--env", "production"), "is not NAME=DSN"),
        (("--env", "a=postgresql:///a"), "at least two environments"),
    ],
)
def test_bad_arguments_say_what_to_pass(args: tuple[str, ...], message: str) -> None:
    code, _, err = run("drift", *args)
    assert code == 2
    assert message in err


def test_corrupt_fingerprint_file_is_refused(envs: Callable[[str], str], tmp_path: Path) -> None:
    exported = tmp_path / "prod.json"
    assert run("fingerprint", "--dsn", envs(""), "-o", str(exported))[0] == 0
    document = json.loads(exported.read_text())
    document["objects"]["table public.patients"]["definition"]["persistence"] = "unlogged"
    exported.write_text(json.dumps(document))
    code, _, err = run("drift", "--source", str(exported), "--target", envs(""))
    assert code == 2
    assert "is corrupt: object 'table public.patients' does not match its checksum" in err
    exported.write_text("{not json")
    assert "is not JSON" in run("drift", "--source", str(exported), "--target", envs(""))[2]
