"""`playbook check` against the size of a table: one decision of N adjacent interval rows on one number.

    python bench/check_scaling.py [--rows 300,1000,3000,10000] [--repeat 3]

Times each stage apart in this process (YAML load, the JSON Schema pass, the rest of validation,
the table checker), then the whole command as a user runs it (``python cli.py check FILE`` from this
checkout, so two checkouts can be compared), Python's start-up included.  Seconds are CPU seconds
(best of --repeat), which a busy machine disturbs less than the wall clock; the wall clock of the
command is printed beside them, with the load average.  The table checker's steps (combinations
visited plus row matches found) grow in proportion to N.

Above 4,000 rows the engine refuses the playbook (``playbook_too_large``) once it is validated:
those rows time loading and validation, and the refusal.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import add_json_option, load_average, write_json  # noqa: E402


def interval_playbook(rows: int) -> str:
    """N rows: amount < 0, then [0, 10), [10, 20), ... — no gap but above the last, no overlap."""
    lines = [
        'playbook: {id: big, version: "1", languages: [en], title: {en: big}}',
        "inputs:",
        "  opportunity.amount: {type: number, label: {en: amount}}",
        "decisions:",
        "  tier:",
        "    label: {en: tier}",
        "    source: {guide: G-17, quote: q}",
        "    values: [a, b]",
        "    value_labels: {a: {en: a}, b: {en: b}}",
        "    output: true",
        "    rows:",
        "      - {id: r0, label: {en: r}, when: {opportunity.amount: {lt: 0}}, then: a}",
    ]
    for i in range(1, rows - 1):
        low = (i - 1) * 10
        lines.append(
            f"      - {{id: r{i}, label: {{en: r}}, when: {{opportunity.amount: {{gte: {low}, lt: {low + 10}}}}}, "
            f"then: {'ab'[i % 2]}}}"
        )
    top = (rows - 2) * 10
    last = f"{{id: r{rows - 1}, label: {{en: r}}, when: {{opportunity.amount: {{gte: {top}}}}}, then: a}}"
    lines.append(f"      - {last}")
    return "\n".join(lines) + "\n"


def stages(path: Path) -> tuple[list[float], int, str]:
    """CPU seconds of load, schema pass, the rest of validation, table checker; steps; outcome."""
    from engine.analyse import _Analyser
    from engine.errors import PlaybookError
    from engine.load import load_file
    from engine.validate import DocumentChecker, build_playbook

    schema_seconds = [0.0]
    schema_pass = DocumentChecker.schema_pass

    def timed_schema_pass(self: DocumentChecker, data: Any, schema: dict[str, Any]) -> None:
        start = time.process_time()
        schema_pass(self, data, schema)
        schema_seconds[0] = time.process_time() - start

    DocumentChecker.schema_pass = timed_schema_pass  # type: ignore[method-assign]
    try:
        t0 = time.process_time()
        doc = load_file(path)
        t1 = time.process_time()
        try:
            playbook = build_playbook(doc)
        except PlaybookError as error:
            t2 = time.process_time()
            return [t1 - t0, schema_seconds[0], t2 - t1 - schema_seconds[0], 0.0], 0, error.problems[0].code
        t2 = time.process_time()
        checker = _Analyser(playbook)
        problems = checker.run()
        t3 = time.process_time()
    finally:
        DocumentChecker.schema_pass = schema_pass  # type: ignore[method-assign]
    assert not problems, problems
    return [t1 - t0, schema_seconds[0], t2 - t1 - schema_seconds[0], t3 - t2], checker.steps, "ok"


def command(path: Path) -> tuple[float, float]:
    """CPU and wall seconds of ``python cli.py check FILE`` in this checkout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "cli.py", "check", str(path)], cwd=ROOT, capture_output=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="300,1000,3000,10000")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each size; the best is printed")
    add_json_option(parser)
    args = parser.parse_args()
    figures = []
    start_cpu = min(command(Path(os.devnull))[0] for _ in range(args.repeat))  # Python and the CLI, no file
    print(f"python cli.py check (start-up: an empty file): {start_cpu:.2f} s CPU")
    print(
        "rows | load s | schema s | rest of validation s | table checker s | check s (in process) "
        "| command CPU s | command wall s | steps | outcome | load average"
    )
    with tempfile.TemporaryDirectory() as folder:
        for rows in (int(x) for x in args.rows.split(",")):
            path = Path(folder) / f"table-{rows}.yaml"
            path.write_text(interval_playbook(rows), encoding="utf-8")
            runs = [stages(path) for _ in range(args.repeat)]
            best, steps, outcome = min(runs, key=lambda run: sum(run[0]))
            cpu, wall = min(command(path) for _ in range(args.repeat))
            load = os.getloadavg()[0]
            stage_names = ("load_s", "schema_s", "rest_of_validation_s", "table_checker_s")
            figures.append(
                {"rows": rows, **{k: round(v, 4) for k, v in zip(stage_names, best, strict=True)}}
                | {"check_s": round(sum(best), 4), "command_cpu_s": round(cpu, 3), "command_wall_s": round(wall, 3)}
                | {"steps": steps, "outcome": outcome, "load_average": load_average()}
            )
            print(
                f"{rows} | {best[0]:.3f} | {best[1]:.3f} | {best[2]:.3f} | {best[3]:.3f} | {sum(best):.3f} "
                f"| {cpu:.2f} | {wall:.2f} | {steps} | {outcome} | {load:.1f}"
            )
    write_json(
        {"startup_cpu_s": round(start_cpu, 3), "repeat": args.repeat, "sizes": figures}, "check_scaling", args.json
    )


if __name__ == "__main__":
    main()
