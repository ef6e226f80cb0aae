"""What sealing the audit log with a key costs: appends and verify, plain SHA-256 against HMAC-SHA256.

    python bench/audit_seal.py [--cases 20000] [--repeats 5]

The sample cases (samples/cases.jsonl, 41 of them) are evaluated once under the course playbook and
repeated to ``--cases`` evaluations; each is then appended to a fresh SQLite audit log in batches of
2,000 (as an import does), once chained with plain SHA-256 and once sealed with a key, alternately,
``--repeats`` times each; then the whole log is verified.  The best time of each is reported (the
machine is shared: the minimum is the least disturbed), with the difference per case.  Those
differences are within the noise of a shared machine, so the links themselves are also timed
alone: every stored evaluation's link computed again from the rows as read back, both ways.
"""

from __future__ import annotations

import argparse
import datetime as dt
import secrets
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.jsonl import read_cases  # noqa: E402
from bench.report import add_json_option, load_average, write_json  # noqa: E402
from engine import Evaluator, compile_playbook, load_playbook  # noqa: E402
from engine.audit import outcome_to_file  # noqa: E402
from engine.store import Appended, Store, iter_chunks  # noqa: E402
from engine.store.chain import _link_hash, _Seal  # noqa: E402
from engine.store.verify import _chain_rows  # noqa: E402

AS_OF = dt.date(2026, 11, 27)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    add_json_option(parser)
    args = parser.parse_args()
    load_before = load_average()
    with compile_playbook(load_playbook(ROOT / "playbooks" / "course.yaml")) as compiled:
        evaluator = Evaluator(compiled)
        with (ROOT / "samples" / "cases.jsonl").open(encoding="utf-8") as lines:
            cases = [case for case in read_cases(lines) if isinstance(case, tuple)]
        items = []
        for i in range(args.cases):
            case_id, facts = cases[i % len(cases)]
            outcome, filed = outcome_to_file(evaluator, case_id, facts, AS_OF)
            items.append(Appended(outcome, filed, import_key=f"run:{i}"))
        playbook = compiled.playbook
    best: dict[str, dict[str, float]] = {"plain": {}, "keyed": {}}
    with tempfile.TemporaryDirectory(prefix="bench-seal-") as tmp:
        for repeat in range(args.repeats):
            for kind in ("plain", "keyed"):
                key = secrets.token_hex(32).encode() if kind == "keyed" else None
                with Store(f"sqlite:///{tmp}/{kind}-{repeat}.db", key=key) as store:
                    started = time.perf_counter()
                    for batch in iter_chunks(items, 2000):
                        store.append(playbook, batch, source="bench", as_of=AS_OF)
                    appended = time.perf_counter() - started
                    started = time.perf_counter()
                    problems = store.verify()
                    verified = time.perf_counter() - started
                if problems:
                    sys.exit(f"the {kind} log does not verify: {problems[0]}")
                for what, seconds in (("append", appended), ("verify", verified)):
                    best[kind][what] = min(best[kind].get(what, seconds), seconds)
        with Store(f"sqlite:///{tmp}/plain-0.db") as store, store.engine.connect() as conn:
            rows = list(_chain_rows(conn, "evaluations"))
    links: dict[str, float] = {}
    for _ in range(args.repeats):
        for kind, seal in (("plain", _Seal(None)), ("keyed", _Seal(secrets.token_hex(32).encode()))):
            started = time.perf_counter()
            for row, children in rows:
                _link_hash(seal, "evaluations", row, children)
            links[kind] = min(links.get(kind, float("inf")), time.perf_counter() - started)
    print(f"{args.cases} evaluations, best of {args.repeats}, SQLite")
    print(f"{'':8} {'append s':>9} {'µs/case':>8} {'verify s':>9} {'µs/case':>8}")
    for kind, times in best.items():
        per = {what: seconds / args.cases * 1e6 for what, seconds in times.items()}
        print(f"{kind:8} {times['append']:9.2f} {per['append']:8.1f} {times['verify']:9.2f} {per['verify']:8.1f}")
    for what in ("append", "verify"):
        extra = (best["keyed"][what] - best["plain"][what]) / args.cases * 1e6
        print(f"HMAC costs {extra:+.1f} µs per case in {what}")
    per_link = {kind: seconds / len(rows) * 1e6 for kind, seconds in links.items()}
    print(
        f"a link alone (its row and recommendations encoded and hashed): SHA-256 {per_link['plain']:.1f} µs, "
        f"HMAC-SHA256 {per_link['keyed']:.1f} µs, {per_link['keyed'] - per_link['plain']:+.1f} µs"
    )
    per_case = {
        kind: {f"{what}_us_per_case": round(s / args.cases * 1e6, 1) for what, s in times.items()}
        for kind, times in best.items()
    }
    write_json(
        {"cases": args.cases, "repeats": args.repeats, "load_average_before": load_before, "best": per_case}
        | {"link_us": {kind: round(us, 1) for kind, us in per_link.items()}},
        "audit_seal",
        args.json,
    )


if __name__ == "__main__":
    main()
