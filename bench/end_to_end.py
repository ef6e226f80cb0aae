"""End to end: a CRM CSV export -> cases -> evaluation -> the audit log in SQLite, through the real CLI.

    python bench/end_to_end.py [--rows 100000] [--data DIR] [--as-of 2017-03-01] [--format summary|json|text]

The Maven CRM sample set (sales_pipeline.csv, with accounts.csv, products.csv and sales_teams.csv beside it)
is repeated to ``--rows`` rows in a temporary folder, each copy's opportunity ids made
distinct (``<id>-r<k>``) so every row is a record of its own.  Two inputs are written:

- ``mixed``: the set as it is, repeated.  Most Maven deals are closed (Won, Lost) and the
  ``maven`` preset quarantines them, so only about a quarter of the rows become cases;
- ``open``: only the open deals (Prospecting, Engaging), repeated to the same row count,
  so every row is evaluated and stored.

Each input is run twice, as a subprocess with stdout to /dev/null:

    playbook recommend --input big.csv --mapping maven --as-of 2017-03-01 --format json --db sqlite:///<tmp>.db
    playbook recommend ... --no-store

measuring wall time and the child's own peak RSS (``os.wait4`` gives one child's rusage).
Reports rows/s and cases evaluated/s, the stored evaluations read back from the database
(they must equal the evaluated cases), and the store's share of the time.  A one-row input
run both ways first measures the fixed start-up (imports, playbook, compile, schema), so
cases/s are also given net of it.  Prints a table;
writes bench/results/end_to_end.json; exits 1 when a count does not match.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from itertools import cycle
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import add_json_option, load_average, write_json  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "crm-data" / "maven-crm-sales-opportunities"
CLOSED_STAGES = ("Won", "Lost")  # what the maven preset quarantines as closed_deal
SUMMARY = re.compile(
    r"(?P<rows>\d+) rows: (?P<evaluated>\d+) cases evaluated \((?P<results>\d+) results, (?P<errors>\d+) errors\)"
    r"(?:, (?P<quarantined>\d+) quarantined)?"
)


def playbook_command() -> list[str]:
    """This checkout's CLI (``python cli.py``: its folder comes first on the path), whatever an installed
    ``playbook`` script points at, so a worktree measures its own code."""
    return [sys.executable, str(ROOT / "cli.py")]


def read_pipeline(data: Path) -> tuple[list[str], list[dict[str, str]]]:
    with (data / "sales_pipeline.csv").open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def write_repeated(header: list[str], source: list[dict[str, str]], rows: int, path: Path) -> None:
    """``rows`` rows cycling through ``source``; copy k > 0 of a row gets the id ``<id>-r<k>``.

    Distinct ids keep the copies distinct records in the audit log (record_id), as a real
    export of that many deals would be, rather than one record evaluated many times.
    """
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        for n, row in zip(range(rows), cycle(source), strict=False):
            copy = n // len(source)
            if copy:
                row = {**row, "opportunity_id": f"{row['opportunity_id']}-r{copy}"}
            writer.writerow(row)


def run_cli(args: list[str], cwd: Path, stderr_path: Path) -> tuple[float, float, int]:
    """Run one command; (wall seconds, the child's peak RSS in MB, exit code).

    ``os.wait4`` reaps exactly this child and returns its own rusage, so the peak RSS is
    this run's alone (RUSAGE_CHILDREN would be the largest of every child reaped so far).
    """
    with stderr_path.open("wb") as err:
        started = time.perf_counter()
        child = subprocess.Popen(args, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait for it
    return seconds, usage.ru_maxrss / 1024, child.returncode


def parse_summary(stderr: str) -> dict[str, int]:
    """The CLI's summary line: rows, cases evaluated (results, errors), quarantined."""
    found = SUMMARY.search(stderr)
    if found is None:
        raise RuntimeError(f"no summary line in the CLI's stderr:\n{stderr[-2000:]}")
    return {name: int(value or 0) for name, value in found.groupdict().items()}


def stored_evaluations(db: Path) -> dict[str, int]:
    """Evaluations in the audit log by status, read back with sqlite3 (not through the code under test)."""
    with sqlite3.connect(db) as conn:
        by_status = dict(conn.execute("SELECT status, count(*) FROM evaluations GROUP BY status").fetchall())
        (head,) = conn.execute("SELECT seq FROM chain_head WHERE chain = 'evaluations'").fetchone()
    return {"stored": sum(by_status.values()), "stored_by_status": by_status, "chain_head": head}


def one_run(
    input_name: str, csv_path: Path, *, store: bool, as_of: str, work: Path, fmt: str = "summary"
) -> dict[str, Any]:
    label = f"{input_name}, {'audit log' if store else '--no-store'}"
    db = work / f"{input_name}-{'store' if store else 'nostore'}.db"  # a fresh database: no resumed import
    command = [*playbook_command(), "recommend", "--input", str(csv_path), "--mapping", "maven", "--lang", "en"]
    command += ["--as-of", as_of, "--format", fmt]
    command += ["--db", f"sqlite:///{db}"] if store else ["--no-store"]
    stderr_path = work / f"{db.stem}.stderr"
    seconds, rss_mb, code = run_cli(command, work, stderr_path)
    summary = parse_summary(stderr_path.read_text(encoding="utf-8", errors="replace"))
    run: dict[str, Any] = {
        "run": label,
        "input": input_name,
        "store": store,
        "exit_code": code,
        **summary,
        "seconds": round(seconds, 3),
        "rows_per_second": round(summary["rows"] / seconds),
        "cases_per_second": round(summary["evaluated"] / seconds),
        "peak_rss_mb": round(rss_mb, 1),
    }
    if store:
        run |= stored_evaluations(db)
        run["db_mb"] = round(sum(p.stat().st_size for p in work.glob(f"{db.name}*")) / 2**20, 1)
        run["stored_matches_evaluated"] = run["stored"] == summary["evaluated"] == run["chain_head"]
    print(f"  {label}: {seconds:.1f} s", file=sys.stderr)
    return run


def print_table(runs: list[dict[str, Any]]) -> None:
    print(
        f"{'run':<24} {'rows':>8} {'evaluated':>9} {'quarant.':>8} {'seconds':>8} {'rows/s':>7} {'cases/s':>7} "
        f"{'net cases/s':>11} {'peak RSS MB':>11} {'stored':>7} {'DB MB':>6}"
    )
    for r in runs:
        print(
            f"{r['run']:<24} {r['rows']:>8} {r['evaluated']:>9} {r['quarantined']:>8} {r['seconds']:>8.2f} "
            f"{r['rows_per_second']:>7} {r['cases_per_second']:>7} {r['cases_per_second_after_startup'] or '-':>11} "
            f"{r['peak_rss_mb']:>11} "
            f"{r.get('stored', '-'):>7} {r.get('db_mb', '-'):>6}"
        )


def store_shares(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Per input, the share of the run's time that keeping the audit log adds: (with - without) / with."""
    shares = {}
    for name in dict.fromkeys(r["input"] for r in runs):
        with_store = next(r for r in runs if r["input"] == name and r["store"])
        without = next(r for r in runs if r["input"] == name and not r["store"])
        shares[name] = round((with_store["seconds"] - without["seconds"]) / with_store["seconds"], 3)
    return shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="rows in each repeated CSV (default 100000)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the Maven CRM sample set's folder")
    parser.add_argument("--as-of", default="2017-03-01", help="evaluation date (the set's deals are of 2016-17)")
    parser.add_argument(
        "--format",
        default="summary",
        choices=["summary", "json", "text"],
        help="what recommend prints per case (default summary: an import's results go to the audit log)",
    )
    add_json_option(parser)
    args = parser.parse_args()
    load_before = load_average()

    header, pipeline = read_pipeline(args.data)
    open_deals = [row for row in pipeline if row["deal_stage"] not in CLOSED_STAGES]
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        work = Path(tmp)
        for lookup in ("accounts.csv", "products.csv", "sales_teams.csv"):  # the preset's lookups, beside the input
            shutil.copy(args.data / lookup, work / lookup)
        # One open deal: what every run pays before its first case (imports, playbook, compile, schema).
        write_repeated(header, open_deals, 1, work / "startup.csv")
        startup = {
            store: one_run("startup", work / "startup.csv", store=store, as_of=args.as_of, work=work, fmt=args.format)
            for store in (True, False)
        }
        inputs = {"mixed": pipeline, "open": open_deals}
        for name, source in inputs.items():
            csv_path = work / f"{name}.csv"
            write_repeated(header, source, args.rows, csv_path)
            for store in (True, False):
                runs.append(one_run(name, csv_path, store=store, as_of=args.as_of, work=work, fmt=args.format))
    for run in runs:
        net = run["seconds"] - startup[run["store"]]["seconds"]
        run["cases_per_second_after_startup"] = round(run["evaluated"] / net) if net > 0 else None

    print_table(runs)
    for run in startup.values():
        print(f"startup ({run['run']}, one case): {run['seconds']:.2f} s, peak RSS {run['peak_rss_mb']} MB")
    shares = store_shares(runs)
    for name, share in shares.items():
        print(f"audit log's share of the time, {name}: {share:.0%}")
    mismatches = [r["run"] for r in runs if r["store"] and not r["stored_matches_evaluated"]]
    failed = [r["run"] for r in runs if r["exit_code"] != 0]
    for run in mismatches:
        print(f"MISMATCH: {run}: stored evaluations differ from the cases evaluated")
    for run in failed:
        print(f"EXIT CODE: {run} exited non-zero (a case in error, or a failed run)")

    result = {
        "load_average_before": load_before,
        "rows": args.rows,
        "as_of": args.as_of,
        "source_rows": len(pipeline),
        "source_open_rows": len(open_deals),
        "startup": list(startup.values()),
        "runs": runs,
        "store_share": shares,
    }
    write_json(result, "end_to_end", args.json)
    if mismatches:
        sys.exit(1)


if __name__ == "__main__":
    main()
