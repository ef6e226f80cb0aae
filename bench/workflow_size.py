"""What the workflow's tables take on disk: the Maven import, then three weeks of time moved on, per evaluation.

    python bench/workflow_size.py [--before /path/to/an/older/checkout]

The whole Maven export (../shared/crm-data) is imported at 2017-03-01 into a SQLite audit log (every
recommendation a task, every task event a pending delivery: no deliverer runs), then ``tick`` moves
time to 2017-03-22.  After each, SQLite's dbstat gives the bytes of the task and notification tables
and their indexes, divided by the evaluations stored.  ``--before``: the same runs with that
checkout's cli.py too (e.g. the main branch before schema version 12), side by side, in the same run.
Sizes do not depend on the machine's load; the load average is printed all the same.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = ROOT.parent / "shared" / "crm-data" / "maven-crm-sales-opportunities" / "sales_pipeline.csv"
TABLES = {
    "tasks": ("tasks", "ix_tasks_record", "ix_tasks_status", "sqlite_autoindex_tasks_1"),
    "task_events": ("task_events", "ix_task_events_task"),
    "deliveries": ("deliveries", "ix_deliveries_due", "sqlite_autoindex_deliveries_1"),
    "dead_letters": ("dead_letters", "ix_dead_letters_event"),
}
STEPS = (
    ("import", ["recommend", "--input", str(PIPELINE), "--mapping", "maven", "--as-of", "2017-03-01",
                "--format", "summary"]),
    ("tick", ["tick", "--as-of", "2017-03-22", "--format", "json"]),
)  # fmt: skip


def sizes(db: Path) -> tuple[int, dict[str, int]]:
    """(evaluations stored, bytes per workflow table with its indexes)."""
    with sqlite3.connect(db) as conn:
        pages = dict(conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall())
        evaluations = int(conn.execute("SELECT count(*) FROM evaluations").fetchone()[0])
    return evaluations, {table: sum(pages.get(name, 0) for name in names) for table, names in TABLES.items()}


def run(checkout: Path, folder: Path) -> list[tuple[str, int, dict[str, int]]]:
    db = folder / f"{checkout.name}.db"
    found = []
    for step, args in STEPS:
        subprocess.run(
            [sys.executable, str(checkout / "cli.py"), *args, "--db", f"sqlite:///{db}"],
            cwd=checkout,
            check=True,
            capture_output=True,
        )
        found.append((step, *sizes(db)))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="an older checkout, measured the same way beside this one")
    args = parser.parse_args()
    if not PIPELINE.is_file():
        sys.exit(f"the Maven export is not at {PIPELINE}")
    checkouts = ([args.before.resolve()] if args.before else []) + [ROOT]
    print(f"load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as folder:
        results = {checkout: run(checkout, Path(folder)) for checkout in checkouts}
    for checkout, steps in results.items():
        for step, evaluations, tables in steps:
            total = sum(tables.values())
            per_table = ", ".join(f"{name} {size / evaluations:,.0f}" for name, size in tables.items())
            print(
                f"{checkout.name:>12} after {step:<6}: {evaluations:,} evaluations, workflow tables "
                f"{total / 1e6:.2f} MB = {total / evaluations:,.0f} bytes per evaluation ({per_table})"
            )
    if args.before:
        for (step, _, before), (_, _, after) in zip(results[checkouts[0]], results[ROOT], strict=True):
            print(f"after {step}: {sum(after.values()) / sum(before.values()):.2f}x the bytes of {checkouts[0].name}")


if __name__ == "__main__":
    main()
