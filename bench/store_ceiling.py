"""The audit log's write path against the driver's ceiling: the same rows, ours and raw, in one run.

    python bench/store_ceiling.py [--cases 30000] [--repeats 3] [--data DIR] [--pg auto|none|URL] [--json PATH]

The Maven CRM sample set's open deals (the ``maven`` mapping, repeated with distinct ids to
``--cases`` rows) are measured two ways, each on SQLite and on PostgreSQL (``--pg auto``, the
default, starts a server of this run's own when PostgreSQL is installed; ``none`` skips it):

- **import** (end to end): ``python cli.py recommend --input … --mapping maven --db URL`` as a user
  runs it (CSV read, mapped, evaluated, stored), against the raw ceiling for the same work: the same
  command with ``--no-store`` plus the raw writer storing the rows the import stored.  Ratio
  (no-store + raw) / ours;
- **store**: the cases evaluated once, untimed; then :meth:`engine.store.Store.append` in batches of
  2,000 (the rows built from the results: JSON encoded, hashed into the chain, and written), against
  the raw writer alone.  Ratio raw / ours.

The raw writer is the ceiling for these bytes on this machine: every row of every table ours wrote,
read back beforehand (untimed), written again into a fresh database of the same schema with no
Python work per row but the driver's, as many transactions as ours had: ``sqlite3``'s
``executemany``, PostgreSQL's ``COPY … FROM STDIN`` (psycopg) of the text ``COPY … TO STDOUT``
gave.  It copies every table, so it follows the schema as it changes.  (On PostgreSQL the CPU
column is this process's only, not the server's: compare wall times there.)

ours and raw alternate ``--repeats`` times, each into a fresh database; the best time of each
counts (the machine may be shared: the minimum is the least disturbed), with the load average.
The target (issue 14): ours ≥ 0.6× the raw ceiling.  Prints a table; writes
bench/results/store_ceiling.json (or ``--json PATH``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import math
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.import_run import Source  # noqa: E402
from adapters.mapping import load_mapping  # noqa: E402
from bench.end_to_end import CLOSED_STAGES, DEFAULT_DATA, read_pipeline, write_repeated  # noqa: E402
from bench.report import add_json_option, load_average, write_json  # noqa: E402
from engine import Evaluator, compile_playbook, load_playbook  # noqa: E402
from engine.audit import outcome_to_file  # noqa: E402
from engine.store import Appended, Store, iter_chunks  # noqa: E402

AS_OF = dt.date(2017, 3, 1)
BATCH = 2000  # cases per transaction, as an import commits


def open_deals_csv(data: Path, count: int, work: Path) -> Path:
    """``count`` rows of the set's open deals, repeated with distinct ids, with the preset's lookups beside."""
    header, pipeline = read_pipeline(data)
    open_deals = [row for row in pipeline if row["deal_stage"] not in CLOSED_STAGES]
    for lookup in ("accounts.csv", "products.csv", "sales_teams.csv"):
        shutil.copy(data / lookup, work / lookup)
    write_repeated(header, open_deals, count, work / "open.csv")
    return work / "open.csv"


def timed(work: Callable[[], object]) -> tuple[float, float]:
    """(wall, CPU) seconds of ``work`` in this process."""
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def cli_seconds(args: list[str]) -> float:
    """Wall seconds of ``python cli.py ARGS`` in this checkout; it must succeed."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], cwd=ROOT, capture_output=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"python cli.py {' '.join(args)} failed:\n{done.stderr.decode(errors='replace')[-2000:]}")
    return seconds


@dataclass
class Dump:
    """Every row ours wrote, per table in creation order, as the raw writer gives them back."""

    schema: list[str]  # SQLite: the statements making the tables and indexes
    tables: list[tuple[str, list[Any]]]  # (table, rows): tuples for SQLite, COPY text lines for PostgreSQL

    @property
    def rows(self) -> int:
        return sum(len(rows) for _, rows in self.tables)


def _slices(rows: list[Any], batches: int) -> Iterator[list[Any]]:
    size = max(1, math.ceil(len(rows) / batches))
    for start in range(0, batches * size, size):
        yield rows[start : start + size]


class SqliteTarget:
    name = "SQLite"

    def __init__(self, work: Path) -> None:
        self.work = work

    def fresh(self) -> str:
        return f"sqlite:///{self.work / f'{uuid.uuid4().hex}.db'}"

    def dump(self, url: str) -> Dump:
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
            made = conn.execute("SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY rowid")
            entries = made.fetchall()
            schema = [sql for _, name, sql in entries if not name.startswith("sqlite_")]
            tables = [
                (name, conn.execute(f'SELECT * FROM "{name}"').fetchall())  # noqa: S608 - the log's own table names
                for kind, name, _ in entries
                if kind == "table" and not name.startswith("sqlite_")
            ]
        return Dump(schema, [(name, rows) for name, rows in tables if rows])

    def raw_write(self, dump: Dump, batches: int) -> tuple[float, float]:
        conn = sqlite3.connect(self.fresh().removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        for statement in dump.schema:
            conn.execute(statement)
        conn.execute("PRAGMA foreign_keys=OFF")  # the rows as ours stored them; their order is not checked again
        inserts = [
            (f'INSERT INTO "{name}" VALUES ({", ".join("?" * len(rows[0]))})', list(_slices(rows, batches)))  # noqa: S608
            for name, rows in dump.tables
        ]

        def write() -> None:
            for batch in range(batches):
                conn.execute("BEGIN IMMEDIATE")
                for statement, slices in inserts:
                    if slices[batch]:
                        conn.executemany(statement, slices[batch])
                conn.execute("COMMIT")

        try:
            return timed(write)
        finally:
            conn.close()


class PostgresTarget:
    name = "PostgreSQL"

    def __init__(self, base: str) -> None:
        self.base = base  # a SQLAlchemy URL without a database

    def _connect(self, url: str, **options: Any) -> Any:
        import psycopg

        return psycopg.connect(url.replace("postgresql+psycopg", "postgresql"), **options)

    def fresh(self) -> str:
        name = f"ceiling_{uuid.uuid4().hex[:12]}"
        with self._connect(f"{self.base}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # a generated name
        return f"{self.base}/{name}"

    def _tables(self, conn: Any) -> list[str]:
        found = conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY c.oid"
        )
        return [name for (name,) in found]

    def dump(self, url: str) -> Dump:
        tables = []
        with self._connect(url) as conn, conn.cursor() as cursor:
            for name in self._tables(conn):
                with cursor.copy(f'COPY (SELECT * FROM "{name}") TO STDOUT') as copy:  # noqa: S608
                    text = b"".join(bytes(block) for block in copy)
                if text:
                    tables.append((name, text.splitlines(keepends=True)))  # COPY's text escapes newlines in values
        return Dump([], tables)

    def raw_write(self, dump: Dump, batches: int) -> tuple[float, float]:
        url = self.fresh()
        Store(url).close()  # the same schema as ours, made by the store
        with self._connect(url) as conn, conn.cursor() as cursor:
            cursor.execute("SET session_replication_role = replica")  # no foreign-key triggers: rows as stored
            for name, _ in dump.tables:
                cursor.execute(f'TRUNCATE "{name}" CASCADE')  # what making the schema put there
            conn.commit()
            copies = [(f'COPY "{name}" FROM STDIN', list(_slices(rows, batches))) for name, rows in dump.tables]

            def write() -> None:
                for batch in range(batches):
                    for statement, slices in copies:
                        if slices[batch]:
                            with cursor.copy(statement) as copy:
                                copy.write(b"".join(slices[batch]))
                    conn.commit()

            return timed(write)


@contextlib.contextmanager
def postgres_base(choice: str) -> Iterator[str | None]:
    """The PostgreSQL server to measure on: ``none``, a URL given, or (``auto``) one of this run's own."""
    if choice == "none":
        yield None
    elif choice != "auto":
        yield choice.rstrip("/")
    elif not (shutil.which("initdb") or list(Path("/usr/lib/postgresql").glob("*/bin/initdb"))):
        print("PostgreSQL is not installed here: measured on SQLite only", file=sys.stderr)
        yield None
    else:
        from bench.workers import postgres

        with contextlib.contextmanager(postgres)() as base:
            yield base


def best(times: list[tuple[float, float]]) -> dict[str, float]:
    return {"wall": round(min(w for w, _ in times), 4), "cpu": round(min(c for _, c in times), 4)}


def measure(
    target: SqliteTarget | PostgresTarget, csv_path: Path, items: list[Appended], playbook: Any, repeats: int
) -> dict[str, Any]:
    """Both comparisons on one database kind, ours and raw alternately."""
    batches = math.ceil(len(items) / BATCH)
    recommend = ["recommend", "--input", str(csv_path), "--mapping", "maven", "--as-of", AS_OF.isoformat()]
    recommend += ["--format", "summary"]
    runs: dict[str, list[tuple[float, float]]] = {"import": [], "no_store": [], "raw_import": []}
    runs |= {"append": [], "raw_append": []}
    dumps: dict[str, Dump] = {}
    for attempt in range(repeats):
        load = load_average()[0]
        url = target.fresh()
        runs["import"].append((cli_seconds([*recommend, "--db", url]), 0.0))
        runs["no_store"].append((cli_seconds([*recommend, "--no-store"]), 0.0))
        dumps.setdefault("import", target.dump(url))
        runs["raw_import"].append(target.raw_write(dumps["import"], batches))

        url = target.fresh()
        with Store(url) as store:

            def append(store: Store = store) -> None:
                for chunk in iter_chunks(items, BATCH):
                    store.append(playbook, chunk, source="bench", as_of=AS_OF)

            runs["append"].append(timed(append))
        dumps.setdefault("append", target.dump(url))
        runs["raw_append"].append(target.raw_write(dumps["append"], batches))
        print(f"  {target.name}, run {attempt + 1}: load {load:.2f}", file=sys.stderr)
    fastest = {name: best(times) for name, times in runs.items()}
    import_ratio = (fastest["no_store"]["wall"] + fastest["raw_import"]["wall"]) / fastest["import"]["wall"]
    return {
        "database": target.name,
        "cases": len(items),
        "transactions": batches,
        "rows_written": {kind: dump.rows for kind, dump in dumps.items()},
        "tables_written": {kind: [name for name, _ in dump.tables] for kind, dump in dumps.items()},
        "runs": {name: [{"wall": round(w, 4), "cpu": round(c, 4)} for w, c in times] for name, times in runs.items()},
        "best": fastest,
        "ratio_import": round(import_ratio, 3),
        "ratio_store_wall": round(fastest["raw_append"]["wall"] / fastest["append"]["wall"], 3),
        "ratio_store_cpu": round(fastest["raw_append"]["cpu"] / fastest["append"]["cpu"], 3),
    }


def print_result(result: dict[str, Any]) -> None:
    n, fastest = result["cases"], result["best"]
    print(f"{result['database']}: {n} cases, {result['transactions']} transactions, rows {result['rows_written']}")
    print(f"  {'what':<44} {'wall µs/case':>12} {'CPU µs/case':>11} {'cases/s':>8}")
    labels = {
        "import": "import, ours (recommend --db)",
        "no_store": "import without the store (--no-store)",
        "raw_import": "raw writer, the import's rows",
        "append": "store, ours (Store.append)",
        "raw_append": "raw writer, the append's rows",
    }
    for name, label in labels.items():
        wall, cpu = fastest[name]["wall"], fastest[name]["cpu"]
        cpu_text = f"{cpu / n * 1e6:>11.1f}" if cpu else f"{'-':>11}"
        print(f"  {label:<44} {wall / n * 1e6:>12.1f} {cpu_text} {n / wall:>8.0f}")
    print(
        f"  ours / raw ceiling: import end to end {result['ratio_import']:.2f}×, store alone "
        f"{result['ratio_store_wall']:.2f}× (wall), {result['ratio_store_cpu']:.2f}× (CPU); target ≥ 0.6×"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=30_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--pg", default="auto", help="auto (a server of this run's own), none, or a server's URL")
    add_json_option(parser)
    args = parser.parse_args()
    load_before = load_average()
    work = Path(tempfile.mkdtemp(prefix="store-ceiling-"))
    try:
        csv_path = open_deals_csv(args.data, args.cases, work)
        mapped = Source(str(csv_path), load_mapping("maven")).records(None)
        cases = [item for _, item in mapped if isinstance(item, tuple)]
        with compile_playbook(load_playbook(ROOT / "playbooks" / "course.yaml")) as compiled:
            evaluator = Evaluator(compiled)
            items = []
            for case_id, facts in cases:
                outcome, filed = outcome_to_file(evaluator, case_id, facts, AS_OF)
                items.append(Appended(outcome, filed, import_key=f"bench:{case_id}"))
            playbook = evaluator.playbook
        results = [measure(SqliteTarget(work), csv_path, items, playbook, args.repeats)]
        print_result(results[-1])
        with postgres_base(args.pg) as base:
            if base is not None:
                results.append(measure(PostgresTarget(base), csv_path, items, playbook, args.repeats))
                print_result(results[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average {', '.join(map(str, load_before))} before, {', '.join(map(str, load_average()))} after")
    document = {"cases": len(items), "repeats": args.repeats, "load_average_before": load_before, "databases": results}
    write_json(document, "store_ceiling", args.json)


if __name__ == "__main__":
    main()
