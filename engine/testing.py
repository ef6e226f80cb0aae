"""Playbook tests: cases with the outcome sales ops expect, and how much of the playbook they reach.

A test file (YAML, see ``schemas/playbook-test.schema.json``)::

    tests:
      - name: exactly 10 weeks counts as the middle layer
        guide: G-17
        as_of: "2026-11-27"
        facts: {opportunity: {weeks_to_close: 10}}
        expect:
          decisions: {funnel_layer: middle}     # only the decisions named are compared
          recommendations: [market_action_4]    # the exact actions, in any order
          reasons: [funnel_layer.gap_6_to_10_weeks, blitz_follow_up]   # rows (decision.row) and rules that fired
          error: bad_input                      # or: the case must fail with this code
          tasks:                                # time moved on, nobody doing anything: each action's task
            - after: 3 weeks
              states: {intensive_attack: escalated, director_steps_in: open}

Coverage counts the rows chosen and the rules fired by any test, over all rows and rules.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.compile import compile_playbook
from engine.errors import CaseError, Location, PlaybookError, did_you_mean
from engine.evaluate import Evaluator, Result
from engine.load import load_file
from engine.model import Playbook
from engine.validate import DocumentChecker, load_schema
from engine.workflow import Duration, parse_duration, tasks_at

__all__ = [
    "PlaybookTest",
    "TestOutcome",
    "TestReport",
    "default_test_dir",
    "load_tests",
    "run_tests",
]

DEFAULT_AS_OF = "2026-01-01"


@dataclass(frozen=True)
class PlaybookTest:
    name: str
    location: Location
    as_of: dt.date
    facts: dict[str, Any]
    expect: dict[str, Any]


@dataclass
class TestOutcome:
    test: PlaybookTest
    differences: list[str]

    @property
    def passed(self) -> bool:
        return not self.differences


@dataclass
class TestReport:
    outcomes: list[TestOutcome]
    reached: set[str]
    members: list[str]  # every row (decision.row) and rule id, in playbook order
    not_reached: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[TestOutcome]:
        return [o for o in self.outcomes if not o.passed]

    @property
    def coverage(self) -> float:
        return 100.0 * len(self.reached & set(self.members)) / len(self.members) if self.members else 100.0


def default_test_dir(playbook_path: str | Path) -> Path:
    """``playbooks/course.yaml`` keeps its tests in ``playbooks/tests/course/``."""
    path = Path(playbook_path)
    return path.parent / "tests" / path.stem


def _members(playbook: Playbook) -> list[str]:
    rows = [f"{d.name}.{row.id}" for d in playbook.decisions.values() for row in d.rows]
    return rows + [rule.id for rule in playbook.rules]


def load_tests(paths: list[Path], playbook: Playbook) -> list[PlaybookTest]:
    """Read test files; raise :class:`PlaybookError` with every problem, located."""
    tests: list[PlaybookTest] = []
    problems = []
    members = _members(playbook)
    for path in paths:
        try:
            doc = load_file(path)
        except PlaybookError as error:
            problems.extend(error.problems)
            continue
        checker = DocumentChecker(doc)
        checker.schema_pass(doc.data, load_schema("playbook-test.schema.json"))
        listed = doc.data.get("tests") if isinstance(doc.data, dict) else None
        for i, spec in enumerate(listed if isinstance(listed, list) else []):  # not a list: the schema said so
            where: tuple[str | int, ...] = ("tests", i)
            if not isinstance(spec, dict) or checker.is_broken(where):
                continue
            expect = spec.get("expect") or {}
            for name in expect.get("decisions") or {}:
                if name not in playbook.decisions:
                    checker.report(
                        (*where, "expect", "decisions", name),
                        "unknown_decision",
                        f"unknown decision '{name}'{did_you_mean(name, playbook.decisions)}",
                        key=True,
                    )
            for k, action in enumerate(expect.get("recommendations") or []):
                if action not in playbook.actions:
                    checker.report(
                        (*where, "expect", "recommendations", k),
                        "unknown_action",
                        f"unknown action '{action}'{did_you_mean(action, playbook.actions)}",
                    )
            for k, reason in enumerate(expect.get("reasons") or []):
                if reason not in members:
                    checker.report(
                        (*where, "expect", "reasons", k),
                        "unknown_reason",
                        f"'{reason}' is no row (decision.row) or rule of the playbook{did_you_mean(reason, members)}",
                    )
            for k, step in enumerate(expect.get("tasks") or []):
                if parse_duration(str(step.get("after"))) is None:
                    checker.report(
                        (*where, "expect", "tasks", k, "after"),
                        "bad_duration",
                        f"'{step.get('after')}' is not a span of time: a whole number and a unit (day, week, month)",
                    )
                for action in step.get("states") or {}:
                    if action not in playbook.actions:
                        checker.report(
                            (*where, "expect", "tasks", k, "states", action),
                            "unknown_action",
                            f"unknown action '{action}'{did_you_mean(action, playbook.actions)}",
                            key=True,
                        )
            as_of = str(spec.get("as_of", DEFAULT_AS_OF))
            try:
                when = dt.date.fromisoformat(as_of)
            except ValueError:
                checker.report((*where, "as_of"), "bad_value", f"'{as_of}' is not a date")
                continue
            tests.append(PlaybookTest(str(spec["name"]), checker.loc(where), when, spec["facts"], expect))
        problems.extend(checker.problems)
    if problems:
        raise PlaybookError(problems)
    return tests


def _fired(result: Result) -> set[str]:
    fired: set[str] = set()
    for step in result.trace:
        if "decision" in step:
            fired.update(f"{step['decision']}.{f['row']}" for f in step["fired"] if f["chosen"])
        elif "rule" in step:
            fired.add(step["rule"])
    return fired


def _compare(test: PlaybookTest, outcome: Result | CaseError) -> list[str]:
    expect = test.expect
    if isinstance(outcome, CaseError):
        if expect.get("error") == outcome.code:
            return []
        return [f"the case failed: {outcome.code}: {outcome.message}"]
    diffs = []
    if "error" in expect:
        diffs.append(f"expected the case to fail with {expect['error']}, but it gave a result")
    for name, wanted in (expect.get("decisions") or {}).items():
        got = outcome.decisions.get(name)
        if got != wanted or isinstance(got, bool) != isinstance(wanted, bool):
            diffs.append(
                f"decisions.{name}: expected {json.dumps(wanted, ensure_ascii=False)}, "
                f"got {json.dumps(got, ensure_ascii=False)}"
            )
    if "recommendations" in expect:
        wanted_recs = Counter(expect["recommendations"])
        got_recs = Counter(rec["id"] for rec in outcome.recommendations)
        missing = sorted((wanted_recs - got_recs).elements())
        extra = sorted((got_recs - wanted_recs).elements())
        if missing:
            diffs.append(f"recommendations: expected but missing {missing}")
        if extra:
            diffs.append(f"recommendations: not expected {extra}")
    diffs += _compare_tasks(test, outcome)
    fired = _fired(outcome)
    not_fired = [r for r in expect.get("reasons") or [] if r not in fired]
    if not_fired:
        diffs.append(f"reasons: did not fire {not_fired}; fired: {sorted(fired)}")
    return diffs


def _compare_tasks(test: PlaybookTest, outcome: Result) -> list[str]:
    """Each ``tasks`` step: time moved on from the test's day, the state of each action's task."""
    diffs: list[str] = []
    playbook = outcome.playbook
    works = {rec["id"]: playbook.actions[rec["id"]].work for rec in outcome.recommendations}
    for step in test.expect.get("tasks") or []:
        parsed = parse_duration(str(step["after"]))
        assert parsed is not None  # load_tests refused the test otherwise
        day = Duration(*parsed).after(test.as_of)
        states = tasks_at(works, test.as_of, test.facts, day)
        for action, wanted in step["states"].items():
            got = states.get(action, "no task")
            if got != wanted:
                diffs.append(f"tasks after {step['after']} ({day.isoformat()}): {action} expected {wanted}, got {got}")
    return diffs


def run_tests(playbook: Playbook, tests: list[PlaybookTest]) -> TestReport:
    """Evaluate every test case (durable-rules asked every question) and compare."""
    outcomes = []
    reached: set[str] = set()
    with compile_playbook(playbook) as compiled:
        evaluator = Evaluator(compiled, cache_size=0)
        for test in tests:
            outcome: Result | CaseError
            try:
                outcome = evaluator.evaluate_case(test.facts, test.as_of, test.name)
                reached |= _fired(outcome)
            except CaseError as error:
                outcome = error
            outcomes.append(TestOutcome(test, _compare(test, outcome)))
    members = _members(playbook)
    return TestReport(outcomes, reached, members, [m for m in members if m not in reached])
