"""Scaling: evaluation time against the number of rules, and against the number of cases.

    python bench/scaling.py [--rules 10,100,1000] [--rule-cases 20000] [--cases 1000,10000,100000] [--full]
    python bench/scaling.py --print-playbook 10      # the generated playbook of 10 rows and 10 rules

Rules: a playbook is generated for each size N (``generated_playbook``): one decision table
of N rows of amount intervals (hit policy unique) giving one of ten tiers, and N rules over
the tier, the win rate, the attractiveness score and the market stance, each recommending
one of up to 20 actions.  It must pass the validator (``load_playbook_text``) and the table
checker (``engine.analyse``) with no problem.  Each playbook evaluates ``--rule-cases``
generated cases (default 20,000).

Cases: the course playbook (playbooks/course.yaml) over 1,000, 10,000 and 100,000 cases from
bench/cases.py; ``--full`` adds 1,000,000 (several minutes).

Each size runs in a fresh process (its peak RSS is its own), through the public API
(``from engine import load_playbook_text, compile_playbook, Evaluator``), and, as
``playbook recommend --format json`` does, builds each result's trace and encodes it as JSON.
Reports seconds (load and compile apart from evaluation), cases/s, peak RSS, durable-rules
questions, and the growth ratio from one size to the next.  Prints tables; writes
bench/results/scaling.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import add_json_option, write_json  # noqa: E402

COURSE = ROOT / "playbooks" / "course.yaml"
TIERS = 10  # values of the generated table's decision
MAX_ACTIONS = 20
STANCES = ["leader", "challenger", "follower", "specialist"]
# The generated table's inputs and their ranges [0, top): its rows cut each range into intervals.
TABLE_INPUTS = (("opportunity.amount", 100_000), ("opportunity.win_rate", 100), ("account.attractiveness_score", 100))
RULE_AS_OF = dt.date(2026, 11, 27)
SOURCE = {"guide": "G-99", "quote": "生成的基准剧本"}  # the schema wants a guide id and a quote


def _text(en: str) -> dict[str, str]:
    return {"zh": en, "en": en}


def table_shape(n: int, shape: str) -> tuple[int, int, int]:
    """How many intervals each table input is cut into, their product being N.

    ``grid`` cuts all three inputs about evenly (1,000 rows: 10 x 10 x 10).  ``band`` cuts the
    amount alone into N intervals.  A band table of more than 65 rows fails at run time with
    durable-rules error 303 (ERR_MAX_STACK_SIZE: its alpha network holds at most 64 pending
    matches, and every lower bound under the amount matches), though the validator accepts it;
    ``--shape band`` shows it.
    """
    if shape == "band":
        return n, 1, 1
    best = (n, 1, 1)
    for a in range(1, n + 1):
        for b in range(1, n // a + 1):
            if n % (a * b) == 0 and max(a, b, n // (a * b)) < max(best):
                best = (a, b, n // (a * b))
    return best


def _interval(part: int, parts: int, top: int) -> dict[str, float]:
    """Interval ``part`` of ``parts`` over [0, top): the first is open below, the last above, so they cover."""
    interval: dict[str, float] = {}
    if part > 0:
        interval["gte"] = round(top * part / parts, 4)
    if part < parts - 1:
        interval["lt"] = round(top * (part + 1) / parts, 4)
    return interval


def _rule_condition(j: int, rng: random.Random) -> dict[str, Any]:
    """Rule j's condition: its tier, plus one of three sets of other inputs.

    Three different sets of variables make three rule nodes (rules that read the same
    variables are asked as one question), so both a node's width and the number of nodes
    grow with N.
    """
    tests: dict[str, Any] = {"tier": f"t{j % TIERS}"}
    low = rng.randrange(0, 90, 5)
    kind = j % 3
    if kind == 0:
        tests["opportunity.win_rate"] = {"gte": low, "lt": low + rng.choice([10, 20, 30])}
    elif kind == 1:
        tests["account.attractiveness_score"] = {"gte": low}
        tests["market.stance"] = {"one_of": rng.sample(STANCES, rng.randint(1, 3))}
    else:
        tests["opportunity.win_rate"] = {"lt": low + 10}
        tests["account.attractiveness_score"] = {"gt": low, "lte": min(100, low + 40)}
    return tests


def generated_playbook(n: int, shape: str = "grid", seed: int = 7) -> str:
    """A valid playbook of one N-row interval table (hit policy unique) and N rules, as YAML text."""
    rng = random.Random(seed)
    parts = table_shape(n, shape)
    rows = []
    for index in range(n):
        place, when = index, {}
        for (name, top), count in zip(TABLE_INPUTS, parts, strict=True):
            place, part = divmod(place, count)
            if count > 1:
                when[name] = _interval(part, count, top)
        row: dict[str, Any] = {"id": f"row_{index}", "label": _text(f"row {index}")}
        if when:  # a one-row table has a default row
            row["when"] = when
        row["then"] = f"t{index * TIERS // n}"
        rows.append(row)
    actions = min(n, MAX_ACTIONS)
    rules = [
        {
            "id": f"rule_{j}",
            "label": _text(f"rule {j}"),
            "source": dict(SOURCE),
            "when": _rule_condition(j, rng),
            "then": {"recommend": [{"action": f"action_{j % actions}", "params": {"tier": {"value_of": "tier"}}}]},
        }
        for j in range(n)
    ]
    doc = {
        "playbook": {"id": f"scaling_{n}", "version": "1", "languages": ["zh", "en"], "title": _text(f"{n} rules")},
        "inputs": {
            **{name: {"type": "number", "label": _text(name)} for name, _ in TABLE_INPUTS},
            "market.stance": {
                "type": "enum",
                "values": list(STANCES),
                "value_labels": {stance: _text(stance) for stance in STANCES},
                "label": _text("stance"),
            },
        },
        "decisions": {
            "tier": {
                "label": _text("tier"),
                "source": dict(SOURCE),
                "values": [f"t{k}" for k in range(min(TIERS, n))],
                "value_labels": {f"t{k}": _text(f"tier {k}") for k in range(min(TIERS, n))},
                "rows": rows,
            }
        },
        "rules": rules,
        "actions": {f"action_{a}": {"label": _text(f"action {a}"), "source": dict(SOURCE)} for a in range(actions)},
    }
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=200)


def rule_cases(count: int, seed: int = 3) -> Iterator[tuple[str, dict[str, Any]]]:
    """Cases for the generated playbooks: values over every interval, and some missing, as in CRM data."""
    rng = random.Random(seed)
    for i in range(count):
        opportunity: dict[str, Any] = {"id": f"opp-{i:07d}", "amount": round(rng.uniform(0, 100_000), 2)}
        if rng.random() < 0.9:
            opportunity["win_rate"] = rng.randint(0, 100)
        account: dict[str, Any] = {}
        if rng.random() < 0.8:
            account["attractiveness_score"] = rng.randint(0, 100)
        market = {"stance": rng.choice(STANCES)}
        yield (
            opportunity["id"],
            {"id": opportunity["id"], "opportunity": opportunity, "account": account, "market": market},
        )


def measure(text: str, file: str, cases: Iterator[tuple[str, dict[str, Any]]], as_of: dt.date) -> dict[str, Any]:
    """Load, compile and evaluate, every result's trace encoded as JSON; the times of each part and the peak RSS."""
    from engine import CaseError, Evaluator, compile_playbook, load_playbook_text

    started = time.perf_counter()
    playbook = load_playbook_text(text, file)
    with compile_playbook(playbook) as compiled:
        evaluator = Evaluator(compiled)
        ready = time.perf_counter()
        count = errors = recommendations = 0
        for item in evaluator.evaluate(cases, as_of):
            count += 1
            if isinstance(item, CaseError):
                errors += 1
            else:
                recommendations += len(item.recommendations)
            json.dumps(item.to_json(), ensure_ascii=False)
        seconds = time.perf_counter() - ready
        questions = compiled.questions_asked
        nodes = len(compiled.nodes)
    return {
        "cases": count,
        "load_compile_seconds": round(ready - started, 3),
        "seconds": round(seconds, 3),
        "cases_per_second": round(count / seconds),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "errors": errors,
        "recommendations_per_case": round(recommendations / max(count, 1), 2),
        "durable_questions": questions,
        "nodes": nodes,
    }


def child_rules(n: int, count: int, shape: str) -> dict[str, Any]:
    from engine import load_playbook_text
    from engine.analyse import analyse

    text = generated_playbook(n, shape)
    problems = analyse(load_playbook_text(text, f"<generated {n}>"))  # the validator raises; the checker lists
    if problems:
        raise SystemExit("the generated playbook has problems:\n" + "\n".join(str(p) for p in problems[:20]))
    about = {"rules": n, "table_shape": "x".join(map(str, table_shape(n, shape))), "playbook_kb": len(text) // 1024}
    return about | measure(text, f"<generated {n}>", rule_cases(count), RULE_AS_OF)


def child_cases(count: int) -> dict[str, Any]:
    from bench.cases import AS_OF, generate

    return measure(COURSE.read_text(encoding="utf-8"), str(COURSE), generate(count), AS_OF)


def in_fresh_process(size_key: str, size: int, *flags: str) -> dict[str, Any]:
    """One size in a process of its own; a run that fails is kept, with the last line of its error."""
    out = subprocess.run([sys.executable, __file__, *flags], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["(no output)"])[-1]
        print(f"  {size_key} {size} FAILED: {last}", file=sys.stderr)
        return {size_key: size, "failed": last}
    result: dict[str, Any] = json.loads(out.stdout)
    print(f"  {size_key} {size}: {result['seconds']} s", file=sys.stderr)
    return result


def add_growth(runs: list[dict[str, Any]], size_key: str) -> None:
    """Each run's growth over the previous one: of the size, the evaluation time and the peak RSS."""
    for before, after in pairwise(runs):
        if "failed" in before or "failed" in after:
            continue
        after["growth"] = {
            "size": round(after[size_key] / before[size_key], 2),
            "seconds": round(after["seconds"] / before["seconds"], 2),
            "peak_rss": round(after["peak_rss_mb"] / before["peak_rss_mb"], 2),
        }


def print_table(title: str, runs: list[dict[str, Any]], size_key: str) -> None:
    print(title)
    print(
        f"{size_key:>8} {'cases':>8} {'nodes':>5} {'load+compile s':>14} {'seconds':>8} {'cases/s':>8} "
        f"{'peak RSS MB':>11} {'questions':>9} {'x size':>6} {'x time':>6} {'x RSS':>5}"
    )
    for r in runs:
        if "failed" in r:
            print(f"{r[size_key]:>8} FAILED: {r['failed']}")
            continue
        g = r.get("growth", {})
        print(
            f"{r[size_key]:>8} {r['cases']:>8} {r['nodes']:>5} {r['load_compile_seconds']:>14} {r['seconds']:>8} "
            f"{r['cases_per_second']:>8} {r['peak_rss_mb']:>11} {r['durable_questions']:>9} "
            f"{g.get('size', '-'):>6} {g.get('seconds', '-'):>6} {g.get('peak_rss', '-'):>5}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rules", default="10,100,1000", help="rule counts (N table rows and N rules)")
    parser.add_argument("--rule-cases", type=int, default=20_000, help="cases per generated playbook")
    parser.add_argument("--shape", choices=["grid", "band"], default="grid", help="how the table cuts its inputs")
    parser.add_argument("--cases", default="1000,10000,100000", help="case counts for the course playbook")
    parser.add_argument("--full", action="store_true", help="also 1,000,000 cases (minutes)")
    parser.add_argument("--print-playbook", type=int, metavar="N", help="print the generated playbook of N and stop")
    parser.add_argument("--child-rules", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-cases", type=int, help=argparse.SUPPRESS)
    add_json_option(parser)
    args = parser.parse_args()
    if args.print_playbook:
        print(generated_playbook(args.print_playbook, args.shape), end="")
        return
    if args.child_rules:
        print(json.dumps(child_rules(args.child_rules, args.rule_cases, args.shape)))
        return
    if args.child_cases:
        print(json.dumps(child_cases(args.child_cases)))
        return

    rule_sizes = [int(s) for s in args.rules.split(",") if s]
    case_sizes = [int(s) for s in args.cases.split(",") if s] + ([1_000_000] if args.full else [])
    rule_flags = ["--rule-cases", str(args.rule_cases), "--shape", args.shape]
    by_rules = [in_fresh_process("rules", n, "--child-rules", str(n), *rule_flags) for n in rule_sizes]
    by_cases = [in_fresh_process("cases", count, "--child-cases", str(count)) for count in case_sizes]
    add_growth(by_rules, "rules")
    add_growth(by_cases, "cases")
    if by_rules:
        title = f"against rules: generated playbooks ({args.shape} table), {args.rule_cases} cases each"
        print_table(title, by_rules, "rules")
    if by_cases:
        print_table("against cases: playbooks/course.yaml", by_cases, "cases")

    result = {
        "by_rules": {"shape": args.shape, "cases_each": args.rule_cases, "runs": by_rules},
        "by_cases": {"playbook": str(COURSE), "runs": by_cases},
    }
    write_json(result, "scaling", args.json)
    if any("failed" in r for r in by_rules + by_cases):
        sys.exit(1)


if __name__ == "__main__":
    main()
