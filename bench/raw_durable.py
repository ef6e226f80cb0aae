"""durable-rules asked every question: the engine with no reuse of answers, against the engine as it runs.

    python bench/raw_durable.py [--cases 20000]

"Raw durable-rules" here is the same compiled rulesets and the same per-node questions, but every
question of every case goes to durable-rules (``Evaluator(cache_size=0)``): what the playbook layer
would cost without reusing answers.  Both runs record traces (not expanded).  Writes
bench/results/raw_durable.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import add_json_option, load_average, write_json  # noqa: E402


def timed(evaluator: object, cases: list, as_of: object) -> float:
    started = time.perf_counter()
    for _ in evaluator.evaluate(cases, as_of):  # type: ignore[attr-defined]
        pass
    return time.perf_counter() - started


def run(count: int) -> dict[str, object]:
    from bench.cases import AS_OF, generate
    from engine import Evaluator, compile_playbook, load_playbook

    cases = list(generate(count))
    with compile_playbook(load_playbook(ROOT / "playbooks" / "course.yaml")) as compiled:
        before = compiled.questions_asked
        raw_seconds = timed(Evaluator(compiled, cache_size=0), cases, AS_OF)
        raw_questions = compiled.questions_asked - before
        before = compiled.questions_asked
        ours_seconds = timed(Evaluator(compiled), cases, AS_OF)
        ours_questions = compiled.questions_asked - before
    return {
        "cases": count,
        "raw_durable_cases_per_second": round(count / raw_seconds),
        "raw_durable_questions": raw_questions,
        "ours_cases_per_second": round(count / ours_seconds),
        "ours_questions": ours_questions,
        "ratio_ours_to_raw": round(raw_seconds / ours_seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=20_000)
    add_json_option(parser)
    args = parser.parse_args()
    load_before = load_average()
    result = {**run(args.cases), "load_average_before": load_before}
    print(f"{'engine':<40} {'cases/s':>9} {'durable questions':>18}")
    print(
        f"{'durable-rules asked every question':<40} "
        f"{result['raw_durable_cases_per_second']:>9} {result['raw_durable_questions']:>18}"
    )
    print(f"{'ours (answers reused)':<40} {result['ours_cases_per_second']:>9} {result['ours_questions']:>18}")
    print(f"ratio ours / raw durable-rules: {result['ratio_ours_to_raw']}")
    print(f"load average {', '.join(map(str, load_average()))}")
    write_json(result, "raw_durable", args.json)


if __name__ == "__main__":
    main()
