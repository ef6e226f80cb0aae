"""`playbook check` against the size of a table: one decision of N adjacent interval rows on one number.

    python bench/check_scaling.py [--rows 300,1000,3000]

Times each stage apart (YAML load, validation, the table checker) and counts the table checker's
steps (combinations visited plus row matches found), which grow in proportion to N.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


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


def main() -> None:
    from engine.analyse import _Analyser
    from engine.load import load_text
    from engine.validate import build_playbook

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="300,1000,3000")
    args = parser.parse_args()
    print("rows | load s | validate s | table checker s | steps | load average")
    for rows in (int(x) for x in args.rows.split(",")):
        text = interval_playbook(rows)
        t0 = time.perf_counter()
        doc = load_text(text, "big.yaml")
        t1 = time.perf_counter()
        playbook = build_playbook(doc)
        t2 = time.perf_counter()
        checker = _Analyser(playbook)
        problems = checker.run()
        t3 = time.perf_counter()
        assert not problems, problems
        load = os.getloadavg()[0]
        print(f"{rows} | {t1 - t0:.2f} | {t2 - t1:.2f} | {t3 - t2:.3f} | {checker.steps} | {load:.1f}")


if __name__ == "__main__":
    main()
