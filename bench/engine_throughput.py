"""Engine-only throughput and memory: cases/s and peak RSS as the number of cases grows.

    python bench/engine_throughput.py [--playbook playbooks/course.yaml] [--sizes 10000,100000]

Each size runs in a fresh process, so its peak RSS is its own.  A run generates the
cases, evaluates them with traces, and encodes every result as JSON (discarded), as
`playbook recommend --format json` does.  Prints a table; writes bench/results/engine_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import add_json_option, load_average, write_json  # noqa: E402


def one_run(playbook_path: str, count: int) -> dict[str, float]:
    from bench.cases import AS_OF, generate
    from engine import CaseError, Evaluator, compile_playbook, load_playbook

    playbook = load_playbook(playbook_path)
    with compile_playbook(playbook) as compiled:
        evaluator = Evaluator(compiled)
        errors = 0
        started = time.perf_counter()
        for item in evaluator.evaluate(generate(count), AS_OF):
            if isinstance(item, CaseError):
                errors += 1
            json.dumps(item.to_json(), ensure_ascii=False)
        seconds = time.perf_counter() - started
        questions = compiled.questions_asked
    return {
        "cases": count,
        "seconds": round(seconds, 3),
        "cases_per_second": round(count / seconds),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "errors": errors,
        "durable_questions": questions,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--playbook", default=str(ROOT / "playbooks" / "course.yaml"))
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    add_json_option(parser)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_run(args.playbook, args.child)))
        return
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        out = subprocess.run(
            [sys.executable, __file__, "--playbook", args.playbook, "--child", str(size)],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append({**json.loads(out.stdout), "load_average": load_average()})
    print(f"{'cases':>10} {'seconds':>9} {'cases/s':>9} {'peak RSS MB':>12} {'errors':>7} {'durable questions':>18}")
    for r in rows:
        print(
            f"{r['cases']:>10} {r['seconds']:>9} {r['cases_per_second']:>9} {r['peak_rss_mb']:>12} "
            f"{r['errors']:>7} {r['durable_questions']:>18}"
        )
    if len(rows) > 1:
        print(f"peak RSS ratio, largest/smallest: {rows[-1]['peak_rss_mb'] / rows[0]['peak_rss_mb']:.2f}")
    result: dict[str, object] = {"playbook": args.playbook, "runs": rows}
    if len(rows) > 1:
        result["peak_rss_ratio_largest_to_smallest"] = round(rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"], 3)
    write_json(result, "engine_throughput", args.json)


if __name__ == "__main__":
    main()
