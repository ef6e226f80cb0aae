"""engine/validate.py: every problem at once, sorted, named; the registries match the schema."""

from __future__ import annotations

import pytest

from engine.conditions import COMPARISON_KEYS, OPERATORS, OPPOSITE_KEYS
from engine.errors import PlaybookError
from engine.validate import load_playbook_text, playbook_schema
from tests.conftest import FIXTURES

HEAD = """playbook: {id: t, version: "1", languages: [en], title: {en: t}}
inputs:
  opportunity.weeks: {type: number, label: {en: weeks}}
"""


def problems(text: str) -> list[tuple[str, int]]:
    with pytest.raises(PlaybookError) as info:
        load_playbook_text(text, "t.yaml")
    return [(p.code, p.location.line) for p in info.value.problems]


def test_all_semantic_problems_come_at_once_in_file_order() -> None:
    text = (
        HEAD
        + """decisions:
  layer:
    label: {en: layer}
    source: {guide: G-17, quote: q}
    values: [a, b]
    rows:
      - {id: r1, label: {en: r}, when: {opportunity.wekks: 1}, then: a}
      - {id: r2, label: {en: r}, when: {opportunity.weeks: {gt: 3, lt: 1}}, then: c}
      - {id: r3, label: {en: r}, when: {opportunity.weeks: {gt: {param: nope}}}, then: a}
"""
    )
    assert problems(text) == [
        ("unknown_input", 10),
        ("interval_empty", 11),
        ("unknown_value", 11),
        ("unknown_parameter", 12),
    ]


def test_schema_and_name_problems_are_reported_together() -> None:
    text = (
        HEAD
        + """decisions:
  layer:
    label: {en: layer}
    source: {guide: G-17, quote: q}
    values: [a, b]
    colour: red
    rows:
      - {id: r1, label: {en: r}, when: {opportunity.wekks: 1}, then: a}
"""
    )
    assert problems(text) == [("unknown_key", 9), ("unknown_input", 11)]


def test_did_you_mean_for_decision_values() -> None:
    text = (
        HEAD
        + """decisions:
  layer:
    label: {en: layer}
    source: {guide: G-17, quote: q}
    values: [surface, bottom]
    rows:
      - {id: r1, label: {en: r}, then: surfase}
"""
    )
    with pytest.raises(PlaybookError) as info:
        load_playbook_text(text, "t.yaml")
    assert "did you mean 'surface'?" in info.value.problems[0].message


def test_a_cycle_names_its_loop() -> None:
    text = (
        HEAD
        + """decisions:
  a:
    label: {en: a}
    source: {guide: G-17, quote: q}
    values: [x]
    rows: [{id: r, label: {en: r}, when: {b: x}, then: x}]
  b:
    label: {en: b}
    source: {guide: G-17, quote: q}
    values: [x]
    rows: [{id: r, label: {en: r}, when: {a: x}, then: x}]
"""
    )
    with pytest.raises(PlaybookError) as info:
        load_playbook_text(text, "t.yaml")
    [problem] = info.value.problems
    assert problem.code == "decision_cycle"
    assert "a → b → a" in problem.message


def test_evaluation_order_follows_dependencies_not_file_order(pipeline) -> None:  # type: ignore[no-untyped-def]
    order = [node.name for node in pipeline.order]
    assert order.index("funnel_layer") < order.index("attention")
    assert order.index("size") < order.index("attention")
    assert order.index("flag_retail") < order.index("watch")  # watch reads flagged, which flag_retail sets


def test_content_hash_identifies_the_text() -> None:
    text = (FIXTURES / "pipeline.yaml").read_text(encoding="utf-8")
    one = load_playbook_text(text, "a.yaml")
    two = load_playbook_text(text + "\n# a comment\n", "a.yaml")
    assert one.content_hash != two.content_hash
    assert one.content_hash == load_playbook_text(text, "b.yaml").content_hash


def test_schema_operator_keys_match_the_registry() -> None:
    schema_ops = set(playbook_schema()["$defs"]["test_operators"]["then"]["properties"])
    registry = (set(OPERATORS) - {"interval"}) | set(COMPARISON_KEYS) | set(OPPOSITE_KEYS)
    assert schema_ops == registry


def test_an_unknown_operator_is_reported_not_raised() -> None:
    text = (
        HEAD
        + """decisions:
  layer:
    label: {en: layer}
    source: {guide: G-17, quote: q}
    values: [a, b]
    rows:
      - {id: r1, label: {en: r}, when: {opportunity.weeks: {equal: 1}}, then: a}
      - {id: r2, label: {en: r}, when: {opportunity.weeks: {gte: 1, foo: 2}}, then: b}
"""
    )
    assert problems(text) == [("unknown_key", 10), ("unknown_key", 11)]


def test_parameters_stand_for_single_values_and_lists() -> None:
    text = """playbook: {id: t, version: "1", languages: [en], title: {en: t}}
parameters:
  key_classes: {value: [a, b], label: {en: key classes}}
  usual: {value: b, label: {en: usual}}
inputs:
  account.kind: {type: enum, values: [a, b, c], label: {en: kind}}
decisions:
  key:
    label: {en: key}
    source: {guide: G-04, quote: q}
    type: boolean
    hit_policy: first
    rows:
      - {id: usual, label: {en: u}, when: {account.kind: {param: usual}}, then: true}
      - {id: listed, label: {en: l}, when: {account.kind: {one_of: {param: key_classes}}}, then: true}
      - {id: other, label: {en: o}, then: false}
"""
    playbook = load_playbook_text(text, "t.yaml")
    [usual, listed, _] = playbook.decisions["key"].rows
    assert (usual.when.op, usual.when.operand, usual.when.text) == ("equals", "b", "= usual (b)")  # type: ignore[union-attr]
    assert listed.when.operand == ("a", "b")  # type: ignore[union-attr]


COURSE = (FIXTURES.parent.parent / "playbooks" / "course.yaml").read_text(encoding="utf-8")


def test_rows_that_are_not_a_list_are_a_located_error() -> None:
    text = COURSE.replace("    rows:\n      - id: given\n", "    rows: 5\n    old_rows:\n      - id: given\n", 1)
    line = text[: text.index("    rows: 5")].count("\n") + 1
    assert ("wrong_type", line) in problems(text)


def test_a_rule_whose_then_is_a_list_is_a_located_error() -> None:
    text = COURSE.replace(
        "    then:\n      recommend: [{action: look_after_fat_sheep",
        "    then:\n      - recommend: [{action: look_after_fat_sheep",
        1,
    )
    line = text[: text.index("      - recommend: [{action: look_after_fat_sheep")].count("\n") + 1
    assert problems(text) == [("wrong_type", line)]


@pytest.mark.parametrize("shape", ["5", "[1, 2]", "x", "{recommend: 5}", "{recommend: [5]}", "{set: [1]}"])
def test_odd_shapes_of_a_rule_are_errors_not_crashes(shape: str) -> None:
    text = COURSE.replace(
        "    then:\n      recommend: [{action: look_after_fat_sheep, "
        "params: {contribution_type: {value_of: contribution_type}}}]",
        f"    then: {shape}",
        1,
    )
    assert problems(text)


@pytest.mark.parametrize("bound", [".inf", "-.inf", ".nan"])
def test_a_bound_that_is_not_finite_is_refused_where_it_is_written(bound: str) -> None:
    text = COURSE.replace(
        "when: {opportunity.weeks_to_close: {lt: 0}}", f"when: {{opportunity.weeks_to_close: {{lt: {bound}}}}}", 1
    )
    line = text[: text.index(f"lt: {bound}")].count("\n") + 1
    assert problems(text) == [("number_not_finite", line)]


def test_all_that_is_not_a_list_is_an_error_not_a_crash() -> None:
    text = COURSE.replace("when: {opportunity.weeks_to_close: {lt: 0}}", "when: {all: 5}", 1)
    assert problems(text)


WORK = """playbook: {id: t, version: "1", languages: [en], title: {en: t}}
parameters:
  follow_every: {value: "1 week", label: {en: interval}}
  badly: {value: "weekly", label: {en: not a span}}
inputs:
  opportunity.amount: {type: number, label: {en: amount}}
  opportunity.close_date: {type: date, label: {en: close}}
decisions:
  big:
    label: {en: big}
    source: {policy: P, text: t}
    type: boolean
    rows: [{id: r, label: {en: r}, when: {opportunity.amount: {gte: 1}}, then: true}]
rules:
  - {id: r1, label: {en: r}, source: {policy: P, text: t}, when: {big: true}, then: {recommend: [{action: call}]}}
actions:
  escalation: {label: {en: e}, source: {policy: P, text: t}}
  call:
    label: {en: call}
    source: {policy: P, text: t}
"""


@pytest.mark.parametrize(
    ("work", "expected"),
    [
        ("    owner: director\n    due: 2 weeks\n    every: {param: follow_every}\n", []),
        ("    due: {by: 2 weeks, before: opportunity.close_date}\n", []),
        ("    owner: acount_manager\n", [("bad_value", 21, "did you mean 'account_manager'")]),
        ("    due: 2 wekks\n", [("bad_duration", 21, "'2 wekks' is not a span of time")]),
        ("    due: {by: 1 week, before: opportunity.amount}\n", [("anchor_not_date", 21, "is of type number")]),
        ("    due: {by: 1 week, after: opportunity.close_dat}\n", [("unknown_input", 21, "did you mean")]),
        ("    due: 1 week\n    every: {param: follow_evry}\n", [("unknown_parameter", 22, "'follow_every'")]),
        ("    due: 1 week\n    every: {param: badly}\n", [("bad_duration", 4, "parameter 'badly' is 'weekly'")]),
        ("    due: 1 week\n    every: 0 days\n", [("bad_duration", 22, "above 0")]),
        (
            "    due: 1 week\n    escalate_after: {after: 1 week, to: director, action: escalaton}\n",
            [("unknown_action", 22, "did you mean 'escalation'")],
        ),
        ("    escalate_after: {after: 1 week, to: director}\n", [("escalation_needs_due", 21, "has no 'due'")]),
    ],
)
def test_an_actions_work_is_checked_at_its_place_with_a_stable_code(
    work: str, expected: list[tuple[str, int, str]]
) -> None:
    text = WORK + work
    if not expected:
        assert load_playbook_text(text, "t.yaml").actions["call"].work is not None
        return
    with pytest.raises(PlaybookError) as info:
        load_playbook_text(text, "t.yaml")
    found = info.value.problems
    assert [(p.code, p.location.line) for p in found] == [(code, line) for code, line, _ in expected]
    assert all(words in p.message for p, (_, _, words) in zip(found, expected, strict=True))


def test_a_schedules_calendar_and_weekday_are_checked() -> None:
    text = WORK + (
        "schedules:\n  weekly_revenue:\n    label: {en: w}\n    source: {policy: P, text: t}\n"
        "    calendar: weekli\n    weekday: mondy\n"
    )
    with pytest.raises(PlaybookError) as info:
        load_playbook_text(text, "t.yaml")
    assert [(p.code, p.location.line) for p in info.value.problems] == [("bad_value", 25), ("bad_value", 26)]
    assert "did you mean 'weekly'" in info.value.problems[0].message
