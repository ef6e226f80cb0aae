"""An audit log for the web console's tests: the sample cases with owners and regions, under two
playbook versions, one case holding markup in its fields, and console users of every role."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from adapters.console import add_user
from engine import Evaluator, compile_playbook, load_playbook
from engine.audit import ImportItem, import_cases
from engine.store import Store
from engine.validate import load_playbook_text

ROOT = Path(__file__).resolve().parent.parent
COURSE = ROOT / "playbooks" / "course.yaml"
SAMPLES = ROOT / "samples" / "cases.jsonl"
PASSWORD = "correct horse battery"  # noqa: S105 - a test user's password
XSS = "<script>alert('x')</script>"
FORMULA = '=HYPERLINK("http://example.com","x")'
OWNERS = ("Dana Lee", "Ravi Patel")
REGIONS = ("East", "West")


def sample_cases(count: int = 12) -> list[dict[str, Any]]:
    cases = [json.loads(line) for line in SAMPLES.read_text(encoding="utf-8").splitlines()[:count]]
    for n, case in enumerate(cases):
        case["opportunity"]["owner"] = OWNERS[n % 2]
        case["opportunity"]["region"] = REGIONS[n // 2 % 2]
    cases[1]["opportunity"]["name"] = XSS
    cases[3]["opportunity"]["account_id"] = FORMULA
    return cases


def later_version() -> Any:
    """The course playbook with one parameter changed and a new version: a second version to compare."""
    text = COURSE.read_text(encoding="utf-8")
    changed = text.replace('version: "1.0.0"', 'version: "1.1.0"', 1).replace("value: 0.30", "value: 0.90", 1)
    assert changed.count("1.1.0") == 1 and "value: 0.90" in changed
    return load_playbook_text(changed, "<later playbook>")


def store_all(store: Store, playbook: Any, cases: list[dict[str, Any]], as_of: dt.date, source: str) -> None:
    with compile_playbook(playbook) as compiled:
        items = [ImportItem(f"{source}:{n}", (case["id"], case)) for n, case in enumerate(cases)]
        for _ in import_cases(store, Evaluator(compiled), items, as_of, source=source):
            pass


def make_console_log(url: str) -> Store:
    """Evaluations 1-12 under the course playbook as of 2026-11-27, 13-24 under a later version as of
    2026-12-20; users: auditor 'ann', ops 'otto', manager 'mia' (team: Dana Lee)."""
    store = Store(url)
    cases = sample_cases()
    store_all(store, load_playbook(COURSE), cases, dt.date(2026, 11, 27), "first")
    store_all(store, later_version(), cases, dt.date(2026, 12, 20), "second")
    add_user(store, "ann", "auditor", PASSWORD)
    add_user(store, "otto", "ops", PASSWORD)
    add_user(store, "mia", "manager", PASSWORD, [OWNERS[0]])
    return store
