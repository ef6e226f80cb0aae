"""The audit log's write path against the driver's ceiling: the same rows, ours and raw ``sqlite3``, in one run.

    python bench/store_ceiling.py [--cases 30000] [--repeats 3] [--data DIR]

The Maven CRM sample set's open deals (read through the ``maven`` mapping, repeated with distinct
ids to ``--cases``) are evaluated once under the course playbook, untimed.  Then, alternately,
``--repeats`` times each, into a fresh SQLite file each time, in batches of 2,000 cases (one
transaction each, as an import does):

- **ours**: :meth:`engine.store.Store.append` — the rows built from the results (JSON encoded,
  hashed into the chain) and written;
- **raw**: the rows exactly as ours stored them (read back beforehand, untimed) inserted with
  ``sqlite3``'s ``executemany`` into the same schema, no Python work per row but the driver's: the
  ceiling for these bytes on this machine.

The best time of each (the machine is shared: the minimum is the least disturbed) is reported
per case, with CPU time, and the ratio raw / ours (1.0 = ours at the driver's limit).  Prints a
table; writes bench/results/store_ceiling.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.import_run import Source  # noqa: E402
from adapters.mapping import load_mapping  # noqa: E402
from bench.end_to_end import CLOSED_STAGES, DEFAULT_DATA, read_pipeline, write_repeated  # noqa: E402
from engine import Evaluator, compile_playbook, load_playbook  # noqa: E402
from engine.audit import outcome_to_file  # noqa: E402
from engine.store import Appended, Store, iter_chunks  # noqa: E402

AS_OF = dt.date(2017, 3, 1)
BATCH = 2000


def open_deal_cases(data: Path, count: int) -> list[tuple[str, dict[str, Any]]]:
    """``count`` cases: the set's open deals through the maven mapping, repeated with distinct ids."""
    header, pipeline = read_pipeline(data)
    open_deals = [row for row in pipeline if row["deal_stage"] not in CLOSED_STAGES]
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        for lookup in ("accounts.csv", "products.csv", "sales_teams.csv"):  # the preset's lookups, beside it
            shutil.copy(data / lookup, work / lookup)
        write_repeated(header, open_deals, count, work / "sales_pipeline.csv")
        records = Source(str(work / "sales_pipeline.csv"), load_mapping("maven")).records(None)
        return [item for _, item in records if isinstance(item, tuple)]


def timed(work: Any) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=30_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    cases = open_deal_cases(args.data, args.cases)
    with compile_playbook(load_playbook(ROOT / "playbooks" / "course.yaml")) as compiled:
        evaluator = Evaluator(compiled)
        items = []
        for case_id, facts in cases:
            outcome, filed = outcome_to_file(evaluator, case_id, facts, AS_OF)
            items.append(Appended(outcome, filed, import_key=f"bench:{case_id}"))
        playbook = evaluator.playbook
    work = Path(tempfile.mkdtemp(prefix="store-ceiling-"))
    runs: dict[str, list[tuple[float, float]]] = {"ours": [], "raw": []}
    stored_rows: dict[str, list[tuple[Any, ...]]] = {}
    schema: list[str] = []
    for attempt in range(args.repeats):
        ours_db = work / f"ours-{attempt}.db"
        store = Store(f"sqlite:///{ours_db}")

        def ours(store: Store = store) -> None:
            for chunk in iter_chunks(items, BATCH):
                store.append(playbook, chunk, source="bench", as_of=AS_OF)

        runs["ours"].append(timed(ours))
        store.close()
        if not stored_rows:  # the rows as stored, and the schema, for the raw writer
            with sqlite3.connect(ours_db) as conn:
                schema = [sql for (sql,) in conn.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL")]
                for table in ("evaluation_rows", "recommendation_rows"):
                    stored_rows[table] = conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()  # noqa: S608
                stored_rows["log_texts"] = conn.execute("SELECT * FROM log_texts").fetchall()
        raw_db = work / f"raw-{attempt}.db"
        conn = sqlite3.connect(raw_db, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        for statement in schema:
            conn.execute(statement)
        conn.execute("PRAGMA foreign_keys=OFF")  # the playbook row is not copied: the rows only
        # the few dozen texts the rows refer to (schema version 11), untimed: ours stores them once per log too
        conn.executemany("INSERT INTO log_texts VALUES (?, ?, ?)", stored_rows["log_texts"])

        def raw(conn: sqlite3.Connection = conn) -> None:
            evaluations = stored_rows["evaluation_rows"]
            recs = stored_rows["recommendation_rows"]
            width_e, width_r = len(evaluations[0]), len(recs[0])
            insert_e = f"INSERT INTO evaluation_rows VALUES ({', '.join('?' * width_e)})"  # noqa: S608 (placeholders)
            insert_r = f"INSERT INTO recommendation_rows VALUES ({', '.join('?' * width_r)})"  # noqa: S608
            r = 0
            for start in range(0, len(evaluations), BATCH):
                chunk = evaluations[start : start + BATCH]
                last = chunk[-1][0]
                end = r
                while end < len(recs) and recs[end][0] <= last:
                    end += 1
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(insert_e, chunk)
                conn.executemany(insert_r, recs[r:end])
                conn.execute(
                    "UPDATE chain_head SET seq = ?, hash = ? WHERE chain = 'evaluations'", (last, chunk[-1][-1])
                )
                conn.execute("COMMIT")
                r = end

        runs["raw"].append(timed(raw))
        conn.close()
        for path in work.glob("*.db*"):
            path.unlink()
    os.rmdir(work)
    n = len(items)
    best = {name: (min(w for w, _ in times), min(c for _, c in times)) for name, times in runs.items()}
    recs_per_case = len(stored_rows["recommendation_rows"]) / n
    print(f"{n} cases ({recs_per_case:.1f} recommendations each), batches of {BATCH}, best of {args.repeats}")
    print(f"{'writer':<6} {'wall µs/case':>12} {'CPU µs/case':>11} {'cases/s':>8}")
    for name, (wall, cpu) in best.items():
        print(f"{name:<6} {wall / n * 1e6:>12.1f} {cpu / n * 1e6:>11.1f} {n / wall:>8.0f}")
    ratio_wall, ratio_cpu = best["raw"][0] / best["ours"][0], best["raw"][1] / best["ours"][1]
    print(f"ours / raw ceiling: {ratio_wall:.2f}× (wall), {ratio_cpu:.2f}× (CPU); target ≥ 0.6×")
    results = {
        "cases": n,
        "recommendations_per_case": round(recs_per_case, 2),
        "repeats": args.repeats,
        "runs": {name: [{"wall": round(w, 4), "cpu": round(c, 4)} for w, c in times] for name, times in runs.items()},
        "ratio_wall": round(ratio_wall, 3),
        "ratio_cpu": round(ratio_cpu, 3),
        "load_average": os.getloadavg(),
    }
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "store_ceiling.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
