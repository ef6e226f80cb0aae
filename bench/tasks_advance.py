"""What moving time costs: ``engine.tasks.advance`` over ``--tasks`` open tasks in a SQLite audit log.

    python bench/tasks_advance.py [--tasks 100000]

Generated cases (bench/cases.py, seeded) are evaluated under the course playbook and appended in
batches of 2,000, as an import does, until their recommendations have made ``--tasks`` tasks (each
recommendation is one).  Then time is moved three weeks on, once (most dated work falls overdue,
intensive attacks escalate, repeating work gets its next occurrences), and again at the same day
(idempotent: nothing moves, but every task due is read).  Reports each one's wall time, the tasks
moved, and the peak of Python's allocations during it (tracemalloc) and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.cases import AS_OF, generate  # noqa: E402
from bench.report import add_json_option, load_average, write_json  # noqa: E402
from engine import Evaluator, compile_playbook, load_playbook  # noqa: E402
from engine.audit import outcome_to_file  # noqa: E402
from engine.store import Appended, Store  # noqa: E402
from engine.tasks import advance  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    add_json_option(parser)
    args = parser.parse_args()
    result: dict[str, object] = {"tasks": args.tasks, "advances": []}
    course = load_playbook(ROOT / "playbooks" / "course.yaml")
    with tempfile.TemporaryDirectory() as folder, compile_playbook(course) as compiled:
        store = Store(f"sqlite:///{Path(folder) / 'tasks.db'}")
        evaluator = Evaluator(compiled)
        made = cases = 0
        started = time.perf_counter()
        batch: list[Appended] = []
        for case_id, facts in generate(10 * args.tasks):
            outcome, filed = outcome_to_file(evaluator, case_id, facts, AS_OF)
            made += len(getattr(outcome, "recommendations", []))
            cases += 1
            batch.append(Appended(outcome, filed))
            if len(batch) == 2000 or made >= args.tasks:
                store.append(course, batch, source="bench", as_of=AS_OF)
                batch = []
            if made >= args.tasks:
                break
        filed_in = time.perf_counter() - started
        print(f"{cases:,} cases filed with {made:,} tasks in {filed_in:.1f} s")
        result |= {"cases": cases, "tasks_made": made, "fill_s": round(filed_in, 2)}
        day = AS_OF + dt.timedelta(weeks=3)
        for run in ("first", "again"):
            tracemalloc.start()
            started = time.perf_counter()
            counts = advance(store, day)
            took = time.perf_counter() - started
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(
                f"advance to {day} ({run}): {took:.2f} s; {counts['overdue']:,} overdue, "
                f"{counts['escalated']:,} escalated, {counts['repeated']:,} repeated; "
                f"peak allocations {peak / 2**20:.0f} MiB, process peak RSS {rss:.0f} MiB"
            )
            advances = result["advances"]
            assert isinstance(advances, list)
            advances.append(
                {"run": run, "seconds": round(took, 2), **counts, "peak_alloc_mib": round(peak / 2**20, 1)}
                | {"peak_rss_mib": round(rss, 1), "load_average": load_average()}
            )
        problems = store.verify()
        print(f"audit verify: {'clean' if not problems else problems[0]}")
        store.close()
    write_json({**result, "verify_clean": not problems}, "tasks_advance", args.json)


if __name__ == "__main__":
    main()
