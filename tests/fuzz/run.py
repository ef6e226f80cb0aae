"""Fuzz the webhook parsers or the playbook checker: ``python -m tests.fuzz.run [--target NAME] [--minutes 10]``.

Runs the property of tests/fuzz/webhooks.py (a target per parser) or tests/fuzz/playbooks.py
(``--target playbook``: the loader, validator and table checker) on hypothesis-made inputs, in rounds of
``--round`` examples with fresh random seeds, until the time is up; prints per target the
executions, how many bodies were refused (400) or accepted, and the crashes.  A crash stops that
target: its smallest failing body is written to ``corpus/<target>/crash-<sha256 prefix>`` (so it
becomes a seed, and the normal test run replays it) and the command exits 1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import traceback
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings

from tests.fuzz import playbooks
from tests.fuzz.webhooks import CORPUS, TARGETS, Target, bodies, check

PLAYBOOK = "playbook"  # not part of "all": "all" is the webhook parsers


def fuzz(target: Target | None, seconds: float, per_round: int) -> dict[str, Any]:
    """Fuzz a webhook parser, or the playbook checker when ``target`` is None."""
    counts: Counter[str] = Counter()
    failing: list[Any] = []
    inputs: Any = bodies(target) if target is not None else playbooks.texts()

    @settings(
        max_examples=per_round,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        # shrinking a playbook of thousands of lines can take longer than the run: save it as found
        phases=list(Phase) if target is not None else [Phase.explicit, Phase.reuse, Phase.generate],
    )
    @given(inputs)
    def one(body: Any) -> None:
        counts["executions"] += 1
        try:
            counts[check(target, body) if target is not None else playbooks.check(body)] += 1
        except BaseException:
            failing.append(body)  # the last one is hypothesis's smallest, replayed at the end
            raise

    started = time.monotonic()
    crash = None
    while time.monotonic() - started < seconds:
        try:
            one()
        except Exception:  # noqa: BLE001 - a crash: recorded below
            crash = traceback.format_exc(limit=8)
            break
    name = target.name if target is not None else PLAYBOOK
    result: dict[str, Any] = {
        "target": name,
        "seconds": round(time.monotonic() - started, 1),
        "executions": counts["executions"],
        "refused": counts["refused"],
        "accepted": counts["accepted"],
        "crashes": 0,
    }
    if crash is not None:
        body = failing[-1]
        data = body if isinstance(body, bytes) else body.encode("utf-8", "surrogatepass")
        saved = CORPUS / name / f"crash-{hashlib.sha256(data).hexdigest()[:12]}"
        saved.write_bytes(data)
        result |= {"crashes": 1, "saved": str(saved), "error": crash}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=[*TARGETS, PLAYBOOK, "all"], default="all")
    parser.add_argument("--minutes", type=float, default=10.0, help="per target")
    parser.add_argument("--round", type=int, default=2000, help="examples per hypothesis run")
    args = parser.parse_args()
    names = list(TARGETS) if args.target == "all" else [args.target]
    failed = False
    for name in names:
        result = fuzz(TARGETS[name] if name != PLAYBOOK else None, args.minutes * 60, args.round)
        result["loadavg"] = [round(x, 2) for x in os.getloadavg()]
        print(json.dumps(result), flush=True)
        failed = failed or result["crashes"] > 0
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
