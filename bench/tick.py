"""What ``playbook tick`` costs over ``--tasks`` open tasks: wall time and peak memory of the command itself.

    python bench/tick.py [--tasks 100000] [--db URL]

Generated cases (bench/cases.py, seeded) are evaluated under the course playbook and filed in batches of
2,000, as an import does, until their recommendations have made ``--tasks`` tasks.  Then the real command
runs, as cron would, each time in a fresh process whose peak RSS is read back (``wait4``):

1. ``tick --as-of`` three weeks on, the clock's first tick: every open record with a date is re-checked
   (re-evaluated at the day; stored when its result changed), then tasks fall overdue, escalate, repeat;
2. the same day again (idempotent: nothing changes, but everything is read and re-checked);
3. the next day: a normal day's tick.

Prints each with the machine's load average beside it (the machine may be shared), and ``audit verify``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.cases import AS_OF, generate  # noqa: E402
from bench.report import add_json_option, write_json  # noqa: E402
from engine import Evaluator, compile_playbook, load_playbook  # noqa: E402
from engine.audit import outcome_to_file  # noqa: E402
from engine.store import Appended, Store  # noqa: E402

COURSE = ROOT / "playbooks" / "course.yaml"


def fill(url: str, tasks: int) -> tuple[int, int]:
    course = load_playbook(COURSE)
    made = cases = 0
    with compile_playbook(course) as compiled, Store(url) as store:
        evaluator = Evaluator(compiled)
        batch: list[Appended] = []
        for case_id, facts in generate(10 * tasks):
            outcome, filed = outcome_to_file(evaluator, case_id, facts, AS_OF)
            made += len(getattr(outcome, "recommendations", []))
            cases += 1
            batch.append(Appended(outcome, filed))
            if len(batch) == 2000 or made >= tasks:
                store.append(course, batch, source="bench", as_of=AS_OF)
                batch = []
            if made >= tasks:
                break
    return cases, made


def run_tick(url: str, day: dt.date) -> tuple[dict[str, object], float, float, float]:
    """The command's report, its wall seconds, its peak RSS in MiB, and the 1-minute load average before it."""
    load = os.getloadavg()[0]
    command = [sys.executable, "cli.py", "tick", "--db", url, "--playbook", str(COURSE), "--as-of", str(day)]
    started = time.perf_counter()
    process = subprocess.Popen([*command, "--format", "json"], cwd=ROOT, stdout=subprocess.PIPE)
    assert process.stdout is not None
    out = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    took = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"tick failed at {day}")
    return json.loads(out), took, usage.ru_maxrss / 1024, load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--db", help="an empty database URL (default: a SQLite file in a temporary folder)")
    add_json_option(parser)
    args = parser.parse_args()
    ticks = []
    with tempfile.TemporaryDirectory() as folder:
        url = args.db or f"sqlite:///{Path(folder) / 'tick.db'}"
        started = time.perf_counter()
        cases, made = fill(url, args.tasks)
        print(f"{cases:,} cases filed with {made:,} tasks in {time.perf_counter() - started:.1f} s")
        first = AS_OF + dt.timedelta(weeks=3)
        for what, day in (("three weeks on", first), ("same day again", first), ("next day", first + dt.timedelta(1))):
            report, took, rss, load = run_tick(url, day)
            ticks.append({"what": what, "day": str(day), "wall_s": round(took, 2), "peak_rss_mib": round(rss, 1)})
            ticks[-1] |= {"load_average": load, "report": report}
            print(
                f"tick {day} ({what}): {took:.2f} s wall, peak RSS {rss:.0f} MiB, load average {load:.1f}; "
                f"{report['checked']:,} records re-checked, {report['reevaluated']:,} re-evaluated, "
                f"{report['overdue']:,} overdue, {report['escalated']:,} escalated, {report['repeated']:,} repeated"
            )
        with Store(url) as store:
            problems = store.verify()
        print(f"audit verify: {'clean' if not problems else problems[0]}; load average now {os.getloadavg()[0]:.1f}")
    write_json({"tasks": made, "cases": cases, "ticks": ticks, "verify_clean": not problems}, "tick", args.json)


if __name__ == "__main__":
    main()
