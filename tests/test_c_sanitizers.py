"""The C part built with sanitizers.

- The needle search (extension/src/needles.c) as a plain program (tests/c_harness/harness.c)
  with AddressSanitizer and UndefinedBehaviorSanitizer, every value in a block of its own exact
  size, so that a read one byte past a value fails.
- (slow) The whole library built with UndefinedBehaviorSanitizer (and the checks GCC adds with
  -fsanitize=bounds-strict and -fstack-protector-all) in a second throwaway cluster: the
  entry-point fuzz, the prefilter vectors and a write/scan workload through the real server.
  Any report aborts the backend (the cluster restarts, which the test sees) and is left in a log
  file the test reads. AddressSanitizer cannot run there: its runtime has to be preloaded into
  the server, and Debian's postgres binary then hangs at startup (in glibc's gettext lock, taken
  by the constructors of the libraries it links), whichever runtime, GCC's or clang's.

Both need only gcc and the server's development files (build-essential, postgresql-server-dev-15).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import test_c_entry_points as entry_points
import test_prefilter as prefilter
import test_prefilter_unicode as unicode_cases
from pg_guardian import install as install_mod
from pg_guardian.cluster import SERVER_USER, LocalCluster, bindir
from support.queries import scalar

ROOT = Path(__file__).parents[1]
SOURCES = ROOT / "extension" / "src"
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g", "-O1"]
# in the server: no AddressSanitizer (see above)
SANITIZE_SERVER = [
    "-fsanitize=undefined,bounds-strict",
    "-fno-sanitize-recover=all",
    "-fstack-protector-all",
    "-fno-omit-frame-pointer",
    "-g",
    "-O1",
]


def pg_config(option: str) -> str:
    return subprocess.run(["pg_config", option], capture_output=True, text=True, check=True).stdout.strip()


def compile_(args: list[str]) -> None:
    proc = subprocess.run(["gcc", *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_needle_search_is_clean_under_address_and_undefined_behavior_sanitizers(tmp_path: Path) -> None:
    harness = tmp_path / "harness"
    compile_(
        [
            "-std=gnu99",
            *SANITIZE,
            "-DFRONTEND",
            f"-I{pg_config('--includedir-server')}",
            f"-I{SOURCES}",
            str(ROOT / "tests" / "c_harness" / "harness.c"),
            str(SOURCES / "needles.c"),
            f"-L{pg_config('--pkglibdir')}",
            "-lpgcommon_shlib",
            "-lpgport_shlib",
            "-o",
            str(harness),
        ]
    )
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0", "UBSAN_OPTIONS": "print_stacktrace=1"}
    for seed in (1, 2):
        proc = subprocess.run([str(harness), str(seed), "30"], capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
        assert proc.stdout.strip().endswith("passed, 0 failed"), proc.stdout[-3000:]
        assert "runtime error" not in proc.stderr and "AddressSanitizer" not in proc.stderr, proc.stderr[-6000:]


class SanitizedCluster(LocalCluster):
    """A LocalCluster whose server runs with the sanitizer options in its environment."""

    environment: dict[str, str]

    def start(self) -> None:
        command = [
            str(bindir() / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-l",
            str(self.datadir / "startup.log"),
            "-w",
            "-t",
            "60",
            "start",
        ]
        command = ["env", *(f"{k}={v}" for k, v in self.environment.items()), *command]
        if self.as_root:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        proc = subprocess.run(command, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr + (self.datadir / "startup.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def sanitized() -> Iterator[tuple[SanitizedCluster, Path, str]]:
    """A cluster with pg_guardian installed in database 'fuzz' and its C functions pointed at a
    sanitizer build of the library; yields the cluster, the report folder and the library path."""
    workdir = Path(tempfile.mkdtemp(prefix="pg-guardian-ubsan-"))
    workdir.chmod(0o755)
    reports = workdir / "reports"
    reports.mkdir(mode=0o777)
    reports.chmod(0o777)
    library = workdir / "pg_guardian_ubsan.so"
    objects = []
    for source in sorted(path.name for path in SOURCES.glob("*.c")):
        obj = workdir / source.replace(".c", ".o")
        compile_(
            [
                *pg_config("--cflags").split(),
                *pg_config("--cflags_sl").split(),
                *SANITIZE_SERVER,
                f"-I{SOURCES}",
                f"-I{pg_config('--includedir-server')}",
                "-c",
                str(SOURCES / source),
                "-o",
                str(obj),
            ]
        )
        objects.append(str(obj))
    compile_(["-shared", *SANITIZE_SERVER, *objects, "-o", str(library)])
    library.chmod(0o755)
    cluster = SanitizedCluster(datadir=workdir / "data", settings={"fsync": "off", "max_worker_processes": "8"})
    cluster.environment = {"UBSAN_OPTIONS": f"print_stacktrace=1:log_path={reports}/ubsan"}
    cluster.init()
    try:
        cluster.start()
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE fuzz")
        with psycopg.connect(cluster.dsn("fuzz"), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION plpython3u")
            install_mod.install(conn, method="extension")
            # every backend from now on loads the sanitizer build
            conn.execute(
                "UPDATE pg_catalog.pg_proc SET probin = %s WHERE probin = '$libdir/pg_guardian'",
                (str(library.with_suffix("")),),
            )
        yield cluster, reports, str(library.with_suffix(""))
    finally:
        cluster.destroy()
        shutil.rmtree(workdir, ignore_errors=True)


def sanitizer_reports(reports: Path) -> str:
    return "\n".join(p.read_text(errors="replace")[-4000:] for p in sorted(reports.iterdir()))


@pytest.mark.slow
def test_c_functions_are_clean_under_undefined_behavior_sanitizer_in_a_real_server(
    sanitized: tuple[SanitizedCluster, Path, str],
) -> None:
    cluster, reports, library = sanitized
    with psycopg.connect(cluster.dsn("fuzz"), autocommit=True) as db:
        started = scalar(db, "SELECT pg_postmaster_start_time()")
        assert scalar(db, "SELECT count(*) FROM pg_catalog.pg_proc WHERE probin = %s", (library,)) == len(
            entry_points.C_FUNCTIONS
        )
        db.execute(entry_points.SETUP)
        db.execute("SELECT guardian.set_environment('production')")
        loaded = scalar(db, "SELECT guardian._contains_any('x', '{x}') AND guardian._suspect(NULL, NULL) IS FALSE")
        assert loaded
        maps = Path(f"/proc/{scalar(db, 'SELECT pg_backend_pid()')}/maps")
        if os.access(maps, os.R_OK):  # the server's user, or root
            assert library in maps.read_text()

        # the entry-point fuzz, as the superuser
        failures = []
        for expression in entry_points.CALLS:
            kind, outcome = entry_points.call(db, expression)
            if kind == "error" and (outcome is None or str(outcome).startswith(entry_points.UNCLEAN_CLASSES)):
                failures.append((expression, outcome))
        assert failures == []

        # the needle search against its definition
        for name, needles in prefilter.NEEDLE_SETS.items():
            values = prefilter.random_values(random.Random(name), 400)
            assert prefilter.disagreements(db, "guardian._contains_any", needles, values) == [], name

        # the write path (row and statement triggers), updates (_suspect with OLD) and a scan
        cases = unicode_cases.make_cases(db)[:400]
        unicode_cases.people_table(db, "people_ubsan", watch=True)
        unicode_cases.insert_cases(db, "people_ubsan", cases)
        db.execute("UPDATE public.people_ubsan SET notes = coalesce(notes, '') || ' (TEST)' WHERE id % 7 = 0")
        db.execute("UPDATE public.people_ubsan SET email = upper(email) WHERE id % 5 = 0")
        found = db.execute(
            "SELECT DISTINCT record_id, column_name FROM guardian.scan('public.people_ubsan')"
        ).fetchall()
        assert unicode_cases.missed(cases, set(found)) == []
        db.execute("SELECT guardian.set_mode('strict')")
        with pytest.raises(psycopg.Error) as err:
            db.execute("INSERT INTO public.people_ubsan (id, clinic) VALUES (100000, 'Test\u00a0Clinic')")
        assert err.value.sqlstate == "GD001"

        # wrong kinds of triggers
        for function, trigger in [
            ("_activity_start", "BEFORE INSERT ON public.unwatched FOR EACH ROW"),
            ("_activity_end", "AFTER TRUNCATE ON public.unwatched FOR EACH STATEMENT"),
        ]:
            db.execute(f"CREATE TRIGGER zz_odd {trigger} EXECUTE FUNCTION guardian.{function}()")
            statement = (
                "TRUNCATE public.unwatched" if "TRUNCATE" in trigger else "INSERT INTO public.unwatched VALUES (9, 'x')"
            )
            with pytest.raises(psycopg.Error):
                db.execute(statement)
            db.execute("DROP TRIGGER zz_odd ON public.unwatched")

        assert scalar(db, "SELECT pg_postmaster_start_time()") == started
    assert sanitizer_reports(reports) == ""
