"""The whole audit log's bytes on disk per evaluation at scale, and the size it projects at 1,000,000 evaluations.

    python bench/million.py [--evaluations 100000] [--anchor /work/main] [--data DIR] [--keep DIR] [--json PATH]

The Maven sample set's open deals (Prospecting, Engaging: every one a case) are repeated to
``--evaluations`` rows, each copy's opportunity id made distinct (bench/end_to_end.py's input), and
imported through the real write path:

    python cli.py recommend --input open.csv --mapping maven --as-of 2017-03-01 --format summary --db sqlite:///<tmp>.db

so the log holds what an import writes: evaluations, recommendations, tasks, task events, the outbox.
Sizes are SQLite's own (``dbstat``, every table with its indexes; the file after a checkpoint).
``--anchor DIR``: the same import by another checkout's CLI (e.g. main, an older schema) in the same
run, for the ratio.  Prints a table with the load average; writes bench/results/million.json.
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.end_to_end import CLOSED_STAGES, DEFAULT_DATA, read_pipeline, write_repeated  # noqa: E402
from bench.report import add_json_option, load_average, write_json  # noqa: E402

MILLION = 1_000_000


def bytes_by_table(db: Path) -> dict[str, int]:
    """Each table's pages on disk in bytes, its indexes' included."""
    with sqlite3.connect(db) as conn:
        owner = dict(conn.execute("SELECT name, tbl_name FROM sqlite_master WHERE type IN ('table', 'index')"))
        sizes: dict[str, int] = {}
        for name, size in conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"):
            table = owner.get(name, name)
            sizes[table] = sizes.get(table, 0) + int(size)
    return dict(sorted(sizes.items(), key=lambda item: -item[1]))


def imported(checkout: Path, csv_path: Path, db: Path) -> dict[str, Any]:
    """``checkout``'s CLI imports ``csv_path`` into a new log ``db``: its size, by table and per evaluation."""
    db.unlink(missing_ok=True)
    command = [sys.executable, str(checkout / "cli.py"), "recommend", "--input", str(csv_path), "--mapping", "maven"]
    command += ["--as-of", "2017-03-01", "--format", "summary", "--db", f"sqlite:///{db}"]
    started = time.process_time(), time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=checkout)
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (evaluations,) = conn.execute("SELECT COUNT(*) FROM evaluations").fetchone()
        (version,) = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    tables = bytes_by_table(db)
    on_disk = db.stat().st_size
    return {
        "checkout": str(checkout),
        "schema_version": int(version),
        "evaluations": evaluations,
        "seconds": round(time.perf_counter() - started[1], 1),
        "file_bytes": on_disk,
        "bytes_per_evaluation": round(on_disk / evaluations),
        "projected_bytes_at_1m": round(on_disk / evaluations * MILLION),
        "tables_bytes_per_evaluation": {name: round(size / evaluations) for name, size in tables.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--evaluations", type=int, default=100_000, help="open deals imported (default 100000)")
    parser.add_argument("--anchor", type=Path, help="another checkout whose CLI imports the same rows, compared")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--keep", type=Path, help="leave the input and the logs in this folder")
    add_json_option(parser)
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="million-"))
    work.mkdir(parents=True, exist_ok=True)
    header, rows = read_pipeline(args.data)
    for name in ("accounts.csv", "products.csv", "sales_teams.csv"):
        (work / name).write_bytes((args.data / name).read_bytes())
    open_deals = [row for row in rows if row["deal_stage"] not in CLOSED_STAGES]
    csv_path = work / "open.csv"
    write_repeated(header, open_deals, args.evaluations, csv_path)
    load_before = load_average()
    runs = [imported(ROOT, csv_path, work / "log.db")]
    if args.anchor:
        runs.append(imported(args.anchor.resolve(), csv_path, work / "anchor.db"))
    load_after = load_average()
    print(f"{args.evaluations:,} open Maven deals imported; load {load_before[0]:.1f} -> {load_after[0]:.1f}")
    for run in runs:
        gb = run["projected_bytes_at_1m"] / 1e9
        print(
            f"schema {run['schema_version']} ({run['checkout']}): {run['file_bytes']:,} bytes on disk, "
            f"{run['bytes_per_evaluation']:,} per evaluation, {gb:.2f} GB at 1M evaluations ({run['seconds']} s)"
        )
    names = list(runs[0]["tables_bytes_per_evaluation"])
    print(
        f"{'table (with its indexes), bytes per evaluation':<48}"
        + "".join(f"{'v' + str(r['schema_version']):>8}" for r in runs)
    )
    for name in names:
        sizes = "".join(f"{r['tables_bytes_per_evaluation'].get(name, 0):>8,}" for r in runs)
        print(f"{name:<48}{sizes}")
    result: dict[str, Any] = {"evaluations": args.evaluations, "load_average_at_start": load_before, "runs": runs}
    if args.anchor:
        result["ratio_to_anchor"] = round(runs[0]["file_bytes"] / runs[1]["file_bytes"], 3)
        print(f"this checkout / anchor: {result['ratio_to_anchor']:.2f}")
    write_json(result, "million", args.json)
    if args.keep is None:
        for path in work.glob("*"):
            path.unlink()
        work.rmdir()


if __name__ == "__main__":
    main()
