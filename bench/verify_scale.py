"""`audit verify` rows/s at two sizes, and peak RSS of recommend, replay and verify at both: are they linear
and flat?

    python bench/verify_scale.py [--sizes 50000,200000] [--data DIR] [--keep DIR] [--repeats 3]

The Maven open deals are repeated to each size with distinct ids (bench/end_to_end.py's
``write_repeated``) and imported into a fresh SQLite log through this tree's CLI:

    python3 cli.py recommend --input open.csv --mapping maven --as-of 2017-03-01 --format summary --db sqlite:///N.db

then, on that log, ``python3 cli.py audit verify`` and ``python3 cli.py replay`` (a candidate with
``high_win_rate`` 60 -> 80, so every record is evaluated again), each a subprocess whose own peak
RSS is read with ``os.wait4``.  ``Store.verify()`` is also run in this process, best of
``--repeats``, its CPU time (``time.process_time``) giving evaluations verified per second; beside it
the anchor of the same run: the two tables it reads (evaluations, recommendations) read whole with
raw ``sqlite3`` and nothing done with the rows, and the ratio of the two.  The load average is printed
beside every figure (the machine is shared).  ``--keep DIR`` keeps the logs there and reuses them.
Writes bench/results/verify_scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.end_to_end import CLOSED_STAGES, DEFAULT_DATA, read_pipeline, run_cli, write_repeated

ROOT = Path(__file__).resolve().parent.parent
AS_OF = "2017-03-01"
# the tables verify reads: chain links, recommendations, records' and tasks' states
CHECKED = ["evaluations", "recommendations", "outcomes", "record_changes", "records", "quarantined_events"]
CHECKED += ["task_events", "tasks"]


def cli(tree: Path) -> list[str]:
    return [sys.executable, str(tree / "cli.py")]


def load() -> str:
    return "{:.1f}/{:.1f}/{:.1f}".format(*os.getloadavg())


def build_log(size: int, work: Path, header: list[str], deals: list[dict[str, str]]) -> dict[str, Any]:
    """The log of ``size`` open deals (made unless kept from an earlier run), with the import's peak RSS."""
    db = work / f"open-{size}.db"
    if db.exists():
        return {"db": db, "recommend": None}
    csv_path = work / f"open-{size}.csv"
    write_repeated(header, deals, size, csv_path)
    command = [*cli(ROOT), "recommend", "--input", str(csv_path), "--mapping", "maven", "--as-of", AS_OF]
    command += ["--format", "summary", "--db", f"sqlite:///{db}"]
    at_start = load()
    seconds, rss, code = run_cli(command, work, work / f"recommend-{size}.stderr")
    if code:
        sys.exit(f"recommend failed: {(work / f'recommend-{size}.stderr').read_text()[-2000:]}")
    csv_path.unlink()
    return {"db": db, "recommend": {"seconds": round(seconds, 1), "peak_rss_mb": round(rss, 1), "load": at_start}}


def raw_read(db: Path) -> float:
    """CPU seconds to read the evaluations and recommendations whole with sqlite3, doing nothing with them."""
    conn = sqlite3.connect(db)
    started = time.process_time()
    for table, order in (("evaluations", "seq"), ("recommendations", "evaluation_seq, position")):
        cursor = conn.execute(f"SELECT * FROM {table} ORDER BY {order}")  # noqa: S608 - fixed names
        while cursor.fetchmany(2000):
            pass
    spent = time.process_time() - started
    conn.close()
    return spent


def in_process_verify(tree: Path, db: Path, repeats: int) -> dict[str, Any]:
    """``Store.verify()`` of ``tree``'s code run here, best of ``repeats`` by CPU time, beside the raw read of
    the same run."""
    sys.path.insert(0, str(tree))  # before this tree's, which the bench's own import put first
    from engine.store import Store

    store = Store(f"sqlite:///{db}", create=False)
    evaluations = store.count()
    best, anchor = float("inf"), float("inf")
    at_start = load()
    for _ in range(repeats):
        anchor = min(anchor, raw_read(db))
        started = time.process_time()
        problems = store.verify()
        best = min(best, time.process_time() - started)
        if problems:
            sys.exit(f"the log does not verify: {problems[0]}")
    store.close()
    with sqlite3.connect(db) as conn:
        rows = sum(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in CHECKED)  # noqa: S608
    return {
        "evaluations": evaluations,
        "rows_checked": rows,
        "verify_cpu_s": round(best, 3),
        "evaluations_per_s": round(evaluations / best),
        "rows_per_s": round(rows / best),
        "raw_read_cpu_s": round(anchor, 3),
        "verify_over_raw_read": round(best / anchor, 2),
        "load": f"{at_start} -> {load()}",
    }


def verify_in(tree: Path, db: Path, repeats: int) -> dict[str, Any]:
    """:func:`in_process_verify` in a child running ``tree``'s code (this one's, or another checkout's)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--measure", str(db), "--repeats", str(repeats)]
    found = subprocess.run([*command, "--baseline", str(tree)], cwd=tree, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(found.stdout)
    return result


def subprocess_run(name: str, command: list[str], work: Path) -> dict[str, Any]:
    at_start = load()
    seconds, rss, code = run_cli(command, work, work / f"{name}.stderr")
    if code:
        sys.exit(f"{name} failed: {(work / f'{name}.stderr').read_text()[-2000:]}")
    return {"seconds": round(seconds, 1), "peak_rss_mb": round(rss, 1), "load": at_start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="50000,200000", help="evaluations in each log (default 50000,200000)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the Maven CRM sample set's folder")
    parser.add_argument("--keep", type=Path, help="keep the logs in this folder (and reuse those there)")
    parser.add_argument("--repeats", type=int, default=3, help="in-process verify runs per size, best taken")
    parser.add_argument("--baseline", type=Path, help="another checkout (e.g. main's) measured on the same logs")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the child of verify_in
    args = parser.parse_args()
    if args.measure is not None:
        print(json.dumps(in_process_verify(args.baseline or ROOT, args.measure, args.repeats)))
        return
    if not (args.data / "sales_pipeline.csv").is_file():
        sys.exit(f"no Maven data at {args.data} (give --data)")
    sizes = [int(s) for s in args.sizes.split(",")]
    header, pipeline = read_pipeline(args.data)
    deals = [row for row in pipeline if row["deal_stage"] not in CLOSED_STAGES]
    candidate_text = (ROOT / "playbooks" / "course.yaml").read_text(encoding="utf-8")
    changed = candidate_text.replace("  high_win_rate:\n    value: 60\n", "  high_win_rate:\n    value: 80\n")
    assert changed != candidate_text, "the course playbook's high_win_rate moved: update this bench"
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for lookup in ("accounts.csv", "products.csv", "sales_teams.csv"):
            shutil.copy(args.data / lookup, work / lookup)
        candidate = work / "candidate.yaml"
        candidate.write_text(changed, encoding="utf-8")
        for size in sizes:
            built = build_log(size, work, header, deals)
            url = f"sqlite:///{built['db']}"
            row: dict[str, Any] = {"size": size, "recommend": built["recommend"]}
            trees = {"this": ROOT} | ({"baseline": args.baseline} if args.baseline else {})
            for name, tree in trees.items():
                verify = [*cli(tree), "audit", "verify", "--db", url]
                replay = [*cli(tree), "replay", "--playbook", str(candidate), "--format", "json", "--db", url]
                row[name] = {
                    "verify_command": subprocess_run(f"verify-{size}", verify, work),
                    "replay_command": subprocess_run(f"replay-{size}", replay, work),
                    "verify": verify_in(tree, built["db"], args.repeats),
                }
            row["db_mb"] = round(built["db"].stat().st_size / 2**20, 1)
            results.append(row)
            print(json.dumps(row), file=sys.stderr)
    print(f"load now {load()}; CPU seconds of Store.verify() (best of {args.repeats}), the raw read in the same run")
    print(
        f"{'code':<9} {'size':>7} {'rows':>8} {'verify s':>8} {'evals/s':>8} {'rows/s':>8} {'raw read s':>10} "
        f"{'÷raw':>5} {'RSS MB: recommend':>17} {'replay':>6} {'verify':>6}  load"
    )
    for r in results:
        for name in ("baseline", "this"):
            if name not in r:
                continue
            m, v = r[name], r[name]["verify"]
            imported = r["recommend"]["peak_rss_mb"] if r["recommend"] and name == "this" else "-"
            print(
                f"{name:<9} {r['size']:>7} {v['rows_checked']:>8} {v['verify_cpu_s']:>8} {v['evaluations_per_s']:>8} "
                f"{v['rows_per_s']:>8} {v['raw_read_cpu_s']:>10} {v['verify_over_raw_read']:>5} {imported:>17} "
                f"{m['replay_command']['peak_rss_mb']:>6} {m['verify_command']['peak_rss_mb']:>6}  {v['load']}"
            )
    if len(results) >= 2:
        small, big = results[0], results[-1]
        for name in ("baseline", "this"):
            if name not in small:
                continue
            a, b = small[name], big[name]
            growth = {
                "size": big["size"] / small["size"],
                "verify CPU": b["verify"]["verify_cpu_s"] / a["verify"]["verify_cpu_s"],
                "RSS replay": b["replay_command"]["peak_rss_mb"] / a["replay_command"]["peak_rss_mb"],
                "RSS verify": b["verify_command"]["peak_rss_mb"] / a["verify_command"]["peak_rss_mb"],
            }
            if name == "this" and small["recommend"] and big["recommend"]:
                growth["RSS recommend"] = big["recommend"]["peak_rss_mb"] / small["recommend"]["peak_rss_mb"]
            print(f"growth ({name}), largest over smallest: " + ", ".join(f"{k} {v:.2f}×" for k, v in growth.items()))
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "verify_scale.json").write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
