"""Test-data detection: row-level precision and recall on a labelled corpus of patient rows.

The corpus (``bench/contamination_corpus.py``, seed ``BENCH_DETECTION_SEED``, default 7) has
``BENCH_DETECTION_ROWS`` rows (default 20,000): 15 % test data in many fixture styles, the rest
real patients, 5 % of them hard negatives (Testa, Sample Road Dental, "pulp vitality test"). It is
loaded into ``public.patients`` of a throwaway cluster with pg_guardian, the table is watched,
and a row counts as flagged when ``guardian.scan`` reports any finding in it.

(1) The default rule packs: precision and recall over all rows, recall per test style (lowest
    first), false positives per real style with the rules and values behind them, and the 40
    most common values of each column among the test rows the packs miss.
(2) Labelling and suggestions (skipped where ``guardian.label_records`` is not installed): 10 %
    of the test rows and 10 % of the real rows, drawn at random, are labelled; every rule that
    ``guardian.suggest_rules`` suggests with an estimated precision of at least 0.99 is accepted;
    the table is scanned again. Scored on the unlabelled rows only: the packs alone, and the packs
    with the accepted suggestions.
(3) Column models (skipped where ``guardian.train_column_models`` is not installed): trained on
    70 % of the rows, scored as new writes on the other 30 %; and the training time of a
    BENCH_DETECTION_MODEL_ROWS-row table (default 1,000,000).
"""

from __future__ import annotations

import collections
import os
import random
import time
import uuid
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

import psycopg
from pg_guardian import install as install_mod

from bench.common import bench_cluster
from bench.contamination_corpus import COLUMNS, Row, generate, load

ROWS = int(os.environ.get("BENCH_DETECTION_ROWS", "20000"))
SEED = int(os.environ.get("BENCH_DETECTION_SEED", "7"))
TABLE = "public.patients"
LABEL_SHARE = 0.10
ACCEPT_AT = 0.99
TOP = 40
PHASE2 = (
    "guardian.label_records(regclass, text[], text)",
    "guardian.suggest_rules(regclass)",
    "guardian.accept_rule_suggestion(bigint)",
)

Findings = dict[str, list[tuple[str, str, str]]]  # record id -> (column, rule, sample)


@dataclass(frozen=True)
class Score:
    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def record_id(row: Row) -> str:
    """The row's id as ``guardian.scan`` names it (the primary key's text)."""
    return str(uuid.UUID(row.id))


def score(rows: Iterable[Row], flagged: Collection[str]) -> Score:
    tp = fp = fn = tn = 0
    for row in rows:
        hit = record_id(row) in flagged
        if row.label == "test":
            tp, fn = tp + hit, fn + (not hit)
        else:
            fp, tn = fp + hit, tn + (not hit)
    return Score(tp, fp, fn, tn)


def score_line(name: str, s: Score) -> str:
    return (
        f"  {name:<34} precision {s.precision:5.3f}  recall {s.recall:5.3f}  F1 {s.f1:5.3f}  "
        f"(TP {s.tp:,}, FP {s.fp:,}, FN {s.fn:,}, TN {s.tn:,})"
    )


def scan(conn: psycopg.Connection) -> tuple[float, Findings]:
    start = time.perf_counter()
    found = conn.execute(f"SELECT record_id, column_name, rule, sample FROM guardian.scan('{TABLE}')").fetchall()
    took = time.perf_counter() - start
    findings: Findings = collections.defaultdict(list)
    for rid, column, rule, sample in found:
        findings[rid].append((column, rule, sample))
    return took, findings


def _short(value: object, width: int = 64) -> str:
    text = "NULL" if value is None else repr(value) if isinstance(value, str) and value.strip() != value else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def per_style(rows: Iterable[Row], flagged: Collection[str]) -> dict[str, tuple[int, int]]:
    """style -> (rows, flagged)."""
    counts: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for row in rows:
        counts[row.style][0] += 1
        counts[row.style][1] += record_id(row) in flagged
    return {style: (n, hit) for style, (n, hit) in counts.items()}


def print_recall_by_style(rows: list[Row], flagged: Collection[str]) -> None:
    styles = per_style((r for r in rows if r.label == "test"), flagged)
    print("\n  recall per test style (lowest first):")
    print(f"    {'style':<26} {'rows':>6} {'flagged':>8} {'recall':>7}")
    for style, (n, hit) in sorted(styles.items(), key=lambda kv: (kv[1][1] / kv[1][0], kv[0])):
        print(f"    {style:<26} {n:>6,} {hit:>8,} {hit / n:>7.2f}")


def print_false_positives(rows: list[Row], findings: Findings) -> None:
    real = [r for r in rows if r.label == "real"]
    styles = per_style(real, findings)
    print("\n  false positives per real style:")
    print(f"    {'style':<26} {'rows':>6} {'flagged':>8} {'rate':>7}")
    for style, (n, hit) in sorted(styles.items(), key=lambda kv: (-kv[1][1] / kv[1][0], kv[0])):
        print(f"    {style:<26} {n:>6,} {hit:>8,} {hit / n:>7.3f}")
    print_rules_of_false_positives(real, findings)


def print_rules_of_false_positives(real: Iterable[Row], findings: Findings, limit: int = 20) -> None:
    """The findings in real rows by column and rule, with their most common values."""
    by_rule: collections.Counter[tuple[str, str]] = collections.Counter()
    values: dict[tuple[str, str], collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for row in real:
        for column, rule, _ in findings.get(record_id(row), []):
            by_rule[(column, rule)] += 1
            values[(column, rule)][_short(dict(zip(COLUMNS, row.values(), strict=True)).get(column), 48)] += 1
    if by_rule:
        print("\n  findings in real rows by column and rule (the most common values):")
        for (column, rule), count in by_rule.most_common(limit):
            common = ", ".join(f"{v} ({c})" if c > 1 else v for v, c in values[(column, rule)].most_common(6))
            print(f"    {count:>5} {column}/{rule}: {common}")


def _id_shape(value: str | None) -> str:
    """Random UUIDv4s as one value (nothing to learn from each); any other id as it is."""
    if value is None:
        return "NULL"
    parsed = uuid.UUID(value)
    return "(a random-looking UUIDv4)" if parsed.version == 4 and parsed.variant == uuid.RFC_4122 else value


def print_missed_values(rows: list[Row], flagged: Collection[str]) -> None:
    missed = [r for r in rows if r.label == "test" and record_id(r) not in flagged]
    print(f"\n  the {TOP} most common values among the {len(missed):,} test rows the packs miss, per column:")
    columns: dict[str, collections.Counter[str]] = {c: collections.Counter() for c in COLUMNS}
    columns["email domain"] = collections.Counter()
    for row in missed:
        for column, value in zip(COLUMNS, row.values(), strict=True):
            columns[column][_id_shape(value) if column == "id" else _short(value)] += 1
        columns["email domain"][row.email.rsplit("@", 1)[-1] if row.email and "@" in row.email else "-"] += 1
    for column in ("id", "first_name", "last_name", "email", "email domain", "phone", "clinic", "notes"):
        counter = columns[column]
        print(f"\n    {column} ({len(counter):,} distinct):")
        for value, count in counter.most_common(TOP):
            print(f"      {count:>5}  {value}")


def phase1(rows: list[Row], findings: Findings, took: float) -> None:
    total = score(rows, findings)
    n_test = sum(r.label == "test" for r in rows)
    print(f"\n(1) default rule packs: guardian.scan over {len(rows):,} rows ({n_test:,} test) in {took:.2f} s")
    print(score_line("all rows", total))
    hard = [r for r in rows if r.label == "real" and r.style != "real"]
    print(score_line("test rows + hard negatives only", score([r for r in rows if r.label == "test"] + hard, findings)))
    print_recall_by_style(rows, findings)
    print_false_positives(rows, findings)
    print_missed_values(rows, findings)


def _missing(conn: psycopg.Connection, signatures: Iterable[str]) -> list[str]:
    return [s for s in signatures if conn.execute("SELECT to_regprocedure(%s)", (s,)).fetchone() == (None,)]


def _restrict(findings: Mapping[str, object], ids: Collection[str]) -> set[str]:
    return {rid for rid in findings if rid in ids}


def phase2(conn: psycopg.Connection, rows: list[Row], before: Findings) -> None:
    print("\n(2) labelling 10 % of the rows and accepting suggestions of estimated precision >= 0.99")
    missing = _missing(conn, PHASE2)
    if missing:
        print(f"  skipped: {missing[0].split('(')[0]} not installed")
        return
    rng = random.Random(SEED)
    labelled: set[str] = set()
    for label in ("test", "real"):
        pool = sorted(record_id(r) for r in rows if r.label == label)
        chosen = rng.sample(pool, round(len(pool) * LABEL_SHARE))
        start = time.perf_counter()
        done = conn.execute(
            "SELECT guardian.label_records(%s::regclass, %s::text[], %s)", (TABLE, chosen, label)
        ).fetchone()
        print(f"  labelled {done[0] if done else 0:,} records {label} in {time.perf_counter() - start:.1f} s")
        labelled.update(chosen)
    start = time.perf_counter()
    suggestions = conn.execute(
        "SELECT suggestion_id, column_name, kind, match_type, matcher, examples, matches_now, est_precision"
        f"  FROM guardian.suggest_rules('{TABLE}'::regclass)"
    ).fetchall()
    print(f"  guardian.suggest_rules: {len(suggestions)} suggestions in {time.perf_counter() - start:.1f} s")
    print(f"    {'id':>4} {'column':<10} {'kind':<11} {'match':<9} {'now':>5} {'est. P':>6}  matcher; examples")
    accepted = 0
    for sid, column, kind, match_type, matcher, examples, now, precision in suggestions:
        mark = "*" if precision is not None and precision >= ACCEPT_AT else " "
        shown = ", ".join(_short(e, 32) for e in (examples or [])[:3])
        print(
            f"   {mark}{sid:>4} {column:<10} {kind:<11} {match_type:<9} {now:>5,} {precision:>6.3f}  "
            f"{_short(matcher, 60)}; {shown}"
        )
    for sid, *_, precision in suggestions:
        if precision is not None and precision >= ACCEPT_AT:
            conn.execute("SELECT guardian.accept_rule_suggestion(%s)", (sid,))
            accepted += 1
    print(f"  accepted {accepted} (marked *)")
    took, after = scan(conn)
    unlabelled = [r for r in rows if record_id(r) not in labelled]
    ids = {record_id(r) for r in unlabelled}
    print(f"\n  scored on the {len(unlabelled):,} unlabelled rows (scan {took:.2f} s):")
    packs, learned = _restrict(before, ids), _restrict(after, ids)
    print(score_line("default packs", score(unlabelled, packs)))
    print(score_line("packs + accepted suggestions", score(unlabelled, learned)))
    print_rules_of_false_positives((r for r in unlabelled if r.label == "real"), after)
    old, new = per_style(unlabelled, packs), per_style(unlabelled, learned)
    changed = [(s, n, old[s][1], new[s][1]) for s, (n, _) in sorted(old.items()) if old[s][1] != new[s][1]]
    if changed:
        print("\n  styles whose flagged count changed (unlabelled rows):")
        for style, n, a, b in changed:
            print(f"    {style:<26} {n:>6,} rows: {a:>6,} -> {b:>6,} flagged")


PHASE3 = ("guardian.train_column_models(regclass)", "guardian.scan_suspects(regclass, boolean, xid8)")
MODEL_ROWS = int(os.environ.get("BENCH_DETECTION_MODEL_ROWS", "1000000"))
HISTORY_SHARE = 0.7


def phase3(conn: psycopg.Connection, rows: list[Row], findings: Findings) -> None:
    """Column models on rows not used for training: 70 % of the corpus is the table's history
    (the models learn from it), the other 30 % arrive afterwards and are scored as new writes."""
    print("\n(3) column models: trained on 70 % of the rows, scored on the 30 % written afterwards")
    missing = _missing(conn, PHASE3)
    if missing:
        print(f"  skipped: {missing[0].split('(')[0]} not installed")
        return
    rng = random.Random(SEED + 3)
    shuffled = rows[:]
    rng.shuffle(shuffled)
    cut = round(len(shuffled) * HISTORY_SHARE)
    history, new = shuffled[:cut], shuffled[cut:]
    load(conn, "public.history", history)
    conn.execute("SELECT guardian.watch('public.history')")
    start = time.perf_counter()
    trained = conn.execute(
        "SELECT column_name, rows_seen, grams, cutoff_nll FROM guardian.train_column_models('public.history')"
    ).fetchall()
    print(f"  trained {len(trained)} column models on {cut:,} rows in {time.perf_counter() - start:.1f} s")
    since = conn.execute("SELECT pg_current_xact_id()").fetchone()[0]  # type: ignore[index]
    with conn.cursor() as cur, cur.copy(f"COPY public.history ({', '.join(COLUMNS)}) FROM STDIN") as copy:
        for r in new:
            copy.write_row(r.values())
    start = time.perf_counter()
    suspects = conn.execute(
        "SELECT DISTINCT record_id FROM guardian.scan_suspects('public.history', false, %s)", (since,)
    ).fetchall()
    took = time.perf_counter() - start
    flagged = {r[0] for r in suspects}
    new_ids = {record_id(r) for r in new}
    packs = _restrict(findings, new_ids)
    print(f"  scan_suspects over the {len(new):,} new rows: {took:.1f} s")
    print(score_line("column models alone", score(new, flagged)))
    print(score_line("default packs", score(new, packs)))
    print(score_line("packs + column models", score(new, packs | flagged)))
    by_style = collections.Counter(r.style for r in new if record_id(r) in flagged)
    print("  suspects by style: " + ", ".join(f"{s} {n}" for s, n in by_style.most_common()))
    # training time on a large column: the history, repeated to MODEL_ROWS rows
    conn.execute("CREATE TABLE public.large (LIKE public.history)")
    conn.execute(
        "INSERT INTO public.large SELECT gen_random_uuid(), h.first_name, h.last_name, h.email, h.phone, h.clinic, "
        "h.notes FROM public.history AS h, generate_series(1, %s) AS g LIMIT %s",
        (MODEL_ROWS // max(cut, 1) + 1, MODEL_ROWS),
    )
    conn.execute("ANALYZE public.large")
    conn.execute("SELECT guardian.watch('public.large')")
    start = time.perf_counter()
    trained = conn.execute("SELECT column_name FROM guardian.train_column_models('public.large')").fetchall()
    took = time.perf_counter() - start
    print(
        f"  training on a {MODEL_ROWS:,}-row table: {took:.1f} s for {len(trained)} columns "
        f"({took / max(len(trained), 1):.1f} s a column; sample of learning.model_sample_rows)"
    )


def main() -> None:
    started = time.perf_counter()
    rows = generate(SEED, ROWS)
    print(
        f"corpus: {len(rows):,} rows, seed {SEED}, {len({r.style for r in rows})} styles "
        f"(made in {time.perf_counter() - started:.1f} s)"
    )
    with bench_cluster() as pg:
        with psycopg.connect(pg.dsn(), autocommit=True) as admin:
            admin.execute("CREATE DATABASE bench_detection")
        with psycopg.connect(pg.dsn("bench_detection"), autocommit=True) as conn:
            # GUARDIAN_TEST_INSTALL=sql: this checkout's SQL, as the tests do (no `make install`)
            state = install_mod.install(conn, method=os.environ.get("GUARDIAN_TEST_INSTALL", "auto"))
            load(conn, TABLE, rows)
            conn.execute(f"ANALYZE {TABLE}")
            watched = conn.execute(f"SELECT column_name, kind FROM guardian.watch('{TABLE}')").fetchall()
            unwatched = [c for c in COLUMNS if c not in {w[0] for w in watched}]
            print(
                f"pg_guardian {state.version} ({state.method}); watching "
                + ", ".join(f"{c} as {k}" for c, k in watched)
                + (f"; not watching {', '.join(unwatched)}" if unwatched else "")
            )
            took, findings = scan(conn)
            phase1(rows, findings, took)
            phase2(conn, rows, findings)
            phase3(conn, rows, findings)
    print(f"\ndetection benchmark: {time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
