"""The table checker finds seeded defects, each at its place with its code."""

from __future__ import annotations

import pytest

from engine.analyse import _Analyser, analyse
from engine.validate import load_playbook_text
from tests.conftest import FIXTURES
from tests.test_evaluate import OTHERWISE

TEXT = (FIXTURES / "pipeline.yaml").read_text(encoding="utf-8")
ORPHAN = """  orphan:
    label: {zh: 孤, en: orphan}
    source: {guide: G-10, quote: q}
    values: [x]
    value_labels: {x: {zh: 某, en: x}}
    rows: [{id: x, label: {zh: x, en: x}, then: x}]
"""


def found(text: str) -> list[tuple[str, int, str]]:
    return [(p.code, p.location.line, p.message) for p in analyse(load_playbook_text(text, "seeded.yaml"))]


def line_of(text: str, needle: str) -> int:
    return text[: text.index(needle)].count("\n") + 1


def test_the_fixture_is_clean() -> None:
    assert found(TEXT) == []


def test_a_gap_is_reported_as_the_interval_no_row_covers() -> None:
    text = TEXT.replace(
        "when: {opportunity.weeks_to_close: {gt: 2, lte: 10}}", "when: {opportunity.weeks_to_close: {gt: 4, lte: 10}}"
    )
    assert found(text) == [
        (
            "table_gap",
            line_of(text, "  funnel_layer:"),
            "no row of 'funnel_layer' covers opportunity.weeks_to_close in (2, 4]",
        )
    ]


def test_an_overlap_under_unique_is_reported_at_the_later_row() -> None:
    text = TEXT.replace("when: {opportunity.weeks_to_close: {lte: 2}}", "when: {opportunity.weeks_to_close: {lte: 3}}")
    [(code, line, message)] = found(text)
    assert code == "table_overlap"
    assert line == line_of(text, "      - id: bottom")
    assert (
        "rows 'middle' and 'bottom' of 'funnel_layer' both match when opportunity.weeks_to_close in (2, 3)" in message
    )


def test_a_row_shadowed_under_first_is_unreachable() -> None:
    text = TEXT.replace(
        "        when: {opportunity.milestones: {contains: a}}\n        then: 20",
        "        when: {opportunity.milestones: {contains_all: [a, b, c]}}\n        then: 20",
    )
    [(code, line, message)] = found(text)
    assert (code, line) == ("row_unreachable", line_of(text, "      - id: one"))
    assert "never fires first" in message


def test_a_row_that_can_never_hold() -> None:
    text = TEXT.replace(
        "        when: {account.name: {present: false}}",
        "        when: {all: [{account.name: {present: false}}, {account.name: x}]}",
    )
    [(code, line, message)] = found(text)
    assert (code, line) == ("row_unreachable", line_of(text, "      - id: nameless"))
    assert "can never hold" in message


def test_a_dangling_decision_and_an_unreachable_action() -> None:
    text = TEXT.replace(
        "  flagged:\n",
        ORPHAN + "  flagged:\n",
    )
    text += "  never:\n    label: {zh: 从不, en: never}\n    source: {guide: G-19, quote: q}\n"
    assert [(c, line) for c, line, _ in found(text)] == [
        ("decision_unused", line_of(text, "  orphan:")),
        ("action_unreachable", line_of(text, "  never:")),
    ]


def test_a_rule_waiting_for_a_value_no_row_gives_is_unreachable() -> None:
    text = TEXT.replace(
        "        - {attention: high}\n",
        "        - {attention: high}\n        - {funnel_layer: surface}\n        - {funnel_layer: bottom}\n",
    )
    codes = [(c, line) for c, line, _ in found(text)]
    assert ("rule_unreachable", line_of(text, "  - id: push")) in codes
    assert ("action_unreachable", line_of(text, "  follow_up:")) in codes


def test_output_decisions_are_not_unused() -> None:
    text = TEXT.replace(
        "  flagged:\n",
        ORPHAN + "    output: true\n  flagged:\n",
    )
    assert found(text) == []


def interval_table(rows: int) -> str:
    """One table of ``rows`` adjacent intervals on one number (bench/check_scaling.py times 3,000)."""
    from bench.check_scaling import interval_playbook

    return interval_playbook(rows)


@pytest.mark.parametrize("rows", [100, 400])
def test_checking_interval_rows_takes_steps_in_proportion_to_the_rows(rows: int) -> None:
    playbook = load_playbook_text(interval_table(rows), "big.yaml")
    checker = _Analyser(playbook)
    problems = checker.run()
    assert [p.code for p in problems] == []
    # every row meets the two or three cells its interval spans; before, each of the 2N cells met every row
    assert checker.steps <= 6 * rows


def test_a_gap_and_an_overlap_among_many_interval_rows_are_still_found() -> None:
    text = interval_table(300).replace("{gte: 1000, lt: 1010}", "{gte: 1001, lt: 1010}")
    text = text.replace("{gte: 2000, lt: 2010}", "{gte: 2000, lt: 2011}")
    assert [(c, m) for c, _, m in found(text)] == [
        ("table_gap", "no row of 'tier' covers opportunity.amount in [1000, 1001)"),
        (
            "table_overlap",
            "rows 'r201' and 'r202' of 'tier' both match when opportunity.amount = 2010, but its hit policy is unique",
        ),
    ]


def test_a_value_or_an_action_parameter_without_a_label_is_reported_where_it_is_declared() -> None:
    text = TEXT.replace("    value_labels: {big: {zh: 大, en: big}, small: {zh: 小, en: small}}\n", "")
    text = text.replace("params: {funnel_layer: {value_of: funnel_layer}", "params: {layer: {value_of: funnel_layer}")
    assert found(text) == [
        (
            "missing_label",
            line_of(text, "  size:"),
            "'size' has no value_labels for big, small; text would show the identifiers",
        ),
        (
            "missing_label",
            line_of(text, "        - action: follow_up"),
            "parameter 'layer' of 'follow_up' names no input, decision or parameter, so it has no label; "
            "name it after the one it carries",
        ),
    ]


def test_an_otherwise_row_closes_the_gaps_of_a_unique_table() -> None:

    without = OTHERWISE.replace("      - {id: rest, label: {en: the rest}, otherwise: true, then: rest}\n", "")
    assert without != OTHERWISE
    codes = [p.code for p in analyse(load_playbook_text(without, "o.yaml"))]
    assert codes.count("table_gap") == 2  # weeks over 2 and a bank or retail segment
    assert [p.code for p in analyse(load_playbook_text(OTHERWISE, "o.yaml")) if p.code.startswith("table")] == []
