"""The audit log's bytes on disk per evaluation, for the Maven import: the rows as this code writes them (the
shared texts of schema version 11; since 13, hashes as bytes and times as numbers) against the same rows
laid out as version 10 stored them, in one run.  (The figures' keys still say ``v11``: bench/all.py reads them.)

    python bench/store_size.py [--data DIR] [--keep DIR]

Runs ``playbook recommend`` on the Maven CRM sample set (``--mapping maven --as-of 2017-03-01``) into a
fresh SQLite log, then copies its evaluations and recommendations, as the views show them, into the
tables of version 10 (their definitions kept in engine/store/schema.py for the migration) in a second
file.  Sizes are SQLite's own page counts (``dbstat``): each table and its indexes.  New: evaluation_rows,
recommendation_rows, log_texts; old: evaluations, recommendations; the playbook's text (stored once
either way) and the tasks are left out.  Prints a table with the load average; writes
bench/results/store_size.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.end_to_end import DEFAULT_DATA  # noqa: E402
from engine.store.schema import _v10_evaluations, _v10_recommendations, legacy  # noqa: E402

NEW_TABLES = ("evaluation_rows", "recommendation_rows", "log_texts")
OLD_TABLES = ("evaluations", "recommendations")


def bytes_by_table(db: Path, tables: tuple[str, ...]) -> dict[str, int]:
    """Each table's pages on disk in bytes, its indexes' included."""
    with sqlite3.connect(db) as conn:
        owner = dict(conn.execute("SELECT name, tbl_name FROM sqlite_master WHERE type IN ('table', 'index')"))
        sizes = dict.fromkeys(tables, 0)
        for name, size in conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"):
            table = owner.get(name, name)
            if table in sizes:
                sizes[table] += int(size)
    return sizes


def as_version_10(new_db: Path, old_db: Path) -> None:
    """The evaluations and recommendations of ``new_db`` in the tables of version 10, in ``old_db``."""
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{old_db}")
    with engine.begin() as conn:
        for table in (_v10_evaluations, _v10_recommendations):
            table.create(conn)
    engine.dispose()
    with sqlite3.connect(old_db) as conn:
        conn.execute("ATTACH DATABASE ? AS new", (str(new_db),))
        for table in (_v10_evaluations, _v10_recommendations):
            columns = ", ".join(c.name for c in table.columns)
            conn.execute(f"INSERT INTO main.{table.name} ({columns}) SELECT {columns} FROM new.{table.name}")  # noqa: S608 (our names)
        conn.commit()
        conn.execute("DETACH DATABASE new")
        conn.execute("VACUUM")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--keep", type=Path, help="Leave the two databases in this folder.")
    args = parser.parse_args()
    assert legacy.tables  # the definitions of version 10 are there to copy into
    work = args.keep or Path(tempfile.mkdtemp(prefix="store-size-"))
    work.mkdir(parents=True, exist_ok=True)
    new_db, old_db = work / "v11.db", work / "v10.db"
    for path in (new_db, old_db):
        path.unlink(missing_ok=True)
    load_before = os.getloadavg()
    command = [
        sys.executable,
        str(ROOT / "cli.py"),
        "recommend",
        "--input",
        str(args.data / "sales_pipeline.csv"),
        "--mapping",
        "maven",
        "--as-of",
        "2017-03-01",
        "--format",
        "summary",
        "--db",
        f"sqlite:///{new_db}",
    ]
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
    with sqlite3.connect(new_db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (evaluations,) = conn.execute("SELECT COUNT(*) FROM evaluation_rows").fetchone()
        (advised,) = conn.execute("SELECT COUNT(*) FROM recommendation_rows").fetchone()
    as_version_10(new_db, old_db)
    new, old = bytes_by_table(new_db, NEW_TABLES), bytes_by_table(old_db, OLD_TABLES)
    new_total, old_total = sum(new.values()), sum(old.values())
    load = os.getloadavg()
    loads = f"load {load_before[0]:.1f} -> {load[0]:.1f}"
    print(f"Maven import: {evaluations} evaluations, {advised} recommendations; {loads}")
    print(f"{'table (with its indexes)':<34} {'bytes':>10} {'per evaluation':>15}")
    for name, size in [
        *old.items(),
        ("version 10, in all", old_total),
        *new.items(),
        ("now (version 11 and later), in all", new_total),
    ]:
        print(f"{name:<34} {size:>10,} {size / evaluations:>15,.0f}")
    print(f"now / version 10: {new_total / old_total:.2f}")
    results = {
        "date": dt.date.today().isoformat(),
        "loadavg": [round(x, 2) for x in load],
        "evaluations": evaluations,
        "recommendations": advised,
        "v10_bytes": old,
        "v11_bytes": new,
        "v10_bytes_per_evaluation": round(old_total / evaluations),
        "v11_bytes_per_evaluation": round(new_total / evaluations),
        "ratio": round(new_total / old_total, 3),
    }
    out = ROOT / "bench" / "results" / "store_size.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    if args.keep is None:
        for path in work.glob("*"):
            path.unlink()
        work.rmdir()


if __name__ == "__main__":
    main()
