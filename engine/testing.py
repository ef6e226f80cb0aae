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
      - name: two stalled deals put an owner's funnel in danger
        cases: {a1: {opportunity: {owner: ann, ...}}, a2: {...}}   # a set of cases, for group decisions
        expect:
          groups:
            owner:                               # per grouping, per group key
              ann: {decisions: {funnel_health: danger}, aggregates: {stalled: 2}, recommendations: [...]}

Coverage counts the rows chosen and the rules fired by any test, over all rows and rules, the
portfolio's (group decisions and rules) among them.
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
from engine.portfolio import GroupResult, Portfolio
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
    cases: dict[str, dict[str, Any]] | None = None  # a test of group decisions: its set of cases


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
    parts = [playbook, *(level.playbook for level in playbook.groups.values())]
    rows = [f"{d.name}.{row.id}" for part in parts for d in part.decisions.values() for row in d.rows]
    return list(dict.fromkeys(rows + [rule.id for part in parts for rule in part.rules]))


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
            if ("facts" in spec) == ("cases" in spec):
                checker.report(where, "missing_key", f"test '{spec.get('name')}' needs either facts or cases")
                continue
            _check_expect(checker, playbook, members, expect, (*where, "expect"), playbook.decisions)
            for group_by, groups in (expect.get("groups") or {}).items():
                at: tuple[str | int, ...] = (*where, "expect", "groups", group_by)
                level = playbook.groups.get(group_by)
                if level is None:
                    checker.report(
                        at,
                        "unknown_group_field",
                        f"the playbook decides nothing per '{group_by}'{did_you_mean(group_by, playbook.groups)}",
                        key=True,
                    )
                    continue
                for key, wanted in groups.items():
                    _check_expect(checker, playbook, members, wanted, (*at, key), level.playbook.decisions)
                    for name in wanted.get("aggregates") or {}:
                        if name not in level.aggregates:
                            checker.report(
                                (*at, key, "aggregates", name),
                                "unknown_aggregate",
                                f"no aggregate '{name}' per {group_by}{did_you_mean(name, level.aggregates)}",
                                key=True,
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
            cases = spec.get("cases")
            tests.append(
                PlaybookTest(str(spec["name"]), checker.loc(where), when, spec.get("facts") or {}, expect, cases)
            )
        problems.extend(checker.problems)
    if problems:
        raise PlaybookError(problems)
    return tests


def _check_expect(
    checker: DocumentChecker,
    playbook: Playbook,
    members: list[str],
    expect: dict[str, Any],
    at: tuple[str | int, ...],
    decisions: dict[str, Any],
) -> None:
    """The names an expectation (of a case, or of a group) uses: decisions, actions, reasons."""
    for name in expect.get("decisions") or {}:
        if name not in decisions:
            checker.report(
                (*at, "decisions", name),
                "unknown_decision",
                f"unknown decision '{name}'{did_you_mean(name, decisions)}",
                key=True,
            )
    for k, action in enumerate(expect.get("recommendations") or []):
        if action not in playbook.actions:
            checker.report(
                (*at, "recommendations", k),
                "unknown_action",
                f"unknown action '{action}'{did_you_mean(action, playbook.actions)}",
            )
    for k, reason in enumerate(expect.get("reasons") or []):
        if reason not in members:
            checker.report(
                (*at, "reasons", k),
                "unknown_reason",
                f"'{reason}' is no row (decision.row) or rule of the playbook{did_you_mean(reason, members)}",
            )


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
    return diffs + _differences(expect, outcome) + _compare_tasks(test, outcome)


def _differences(expect: dict[str, Any], outcome: Result, prefix: str = "") -> list[str]:
    """What a result gives that differs from what is expected: decisions, recommendations, reasons."""
    diffs = []
    for name, wanted in (expect.get("decisions") or {}).items():
        got = outcome.decisions.get(name)
        if got != wanted or isinstance(got, bool) != isinstance(wanted, bool):
            diffs.append(
                f"{prefix}decisions.{name}: expected {json.dumps(wanted, ensure_ascii=False)}, "
                f"got {json.dumps(got, ensure_ascii=False)}"
            )
    if "recommendations" in expect:
        wanted_recs = Counter(expect["recommendations"])
        got_recs = Counter(rec["id"] for rec in outcome.recommendations)
        missing = sorted((wanted_recs - got_recs).elements())
        extra = sorted((got_recs - wanted_recs).elements())
        if missing:
            diffs.append(f"{prefix}recommendations: expected but missing {missing}")
        if extra:
            diffs.append(f"{prefix}recommendations: not expected {extra}")
    fired = _fired(outcome)
    not_fired = [r for r in expect.get("reasons") or [] if r not in fired]
    if not_fired:
        diffs.append(f"{prefix}reasons: did not fire {not_fired}; fired: {sorted(fired)}")
    return diffs


def _compare_groups(expect: dict[str, Any], groups: list[GroupResult]) -> list[str]:
    by_key = {(g.group_by, str(g.key)): g for g in groups}
    diffs = []
    for group_by, wanted_groups in (expect.get("groups") or {}).items():
        for key, wanted in wanted_groups.items():
            at = f"groups.{group_by}.{key}."
            group = by_key.get((group_by, str(key)))
            if group is None:
                found = sorted(str(g.key) for g in groups if g.group_by == group_by)
                diffs.append(f"groups.{group_by}: no group '{key}'; the cases make {found}")
                continue
            if isinstance(group.outcome, CaseError):
                diffs.append(f"{at[:-1]} failed: {group.outcome.code}: {group.outcome.message}")
                continue
            if "open" in wanted and wanted["open"] != group.open:
                diffs.append(f"{at}open: expected {wanted['open']}, got {group.open}")
            for name, value in (wanted.get("aggregates") or {}).items():
                got = group.aggregates[name]
                shown: Any = got.value
                if isinstance(value, dict):
                    value = {k: sorted(v) if k == "members" else v for k, v in value.items()}
                    both = {"value": got.value, "members": sorted(got.members)}
                    shown = {k: both[k] for k in value if k in both}
                if shown != value:
                    diffs.append(
                        f"{at}aggregates.{name}: expected {json.dumps(value, ensure_ascii=False)}, "
                        f"got {json.dumps(shown, ensure_ascii=False)}"
                    )
            diffs += _differences(wanted, group.outcome, at)
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
    with compile_playbook(playbook) as compiled, Portfolio(playbook, cache_size=0) as portfolio:
        evaluator = Evaluator(compiled, cache_size=0)
        for test in tests:
            if test.cases is not None:
                outcomes.append(TestOutcome(test, _group_test(test, evaluator, portfolio, reached)))
                continue
            outcome: Result | CaseError
            try:
                outcome = evaluator.evaluate_case(test.facts, test.as_of, test.name)
                reached |= _fired(outcome)
            except CaseError as error:
                outcome = error
            outcomes.append(TestOutcome(test, _compare(test, outcome)))
    members = _members(playbook)
    return TestReport(outcomes, reached, members, [m for m in members if m not in reached])


def _group_test(test: PlaybookTest, evaluator: Evaluator, portfolio: Portfolio, reached: set[str]) -> list[str]:
    """Evaluate a test's set of cases, then the groups they make; compare the groups named."""
    results: list[Result] = []
    diffs: list[str] = []
    for case_id, facts in (test.cases or {}).items():
        try:
            result = evaluator.evaluate_case(facts, test.as_of, str(case_id))
        except CaseError as error:
            diffs.append(f"case {case_id} failed: {error.code}: {error.message}")
            continue
        reached |= _fired(result)
        results.append(result)
    groups = list(portfolio.evaluate(results, test.as_of))
    for group in groups:
        if not isinstance(group.outcome, CaseError):
            reached |= _fired(group.outcome)
    return diffs + _compare_groups(test.expect, groups)
