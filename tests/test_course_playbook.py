"""The course playbook: complete labels, and the table checker finding seeded defects in copies of it."""

from __future__ import annotations

import re
from typing import Any

import pytest

from engine import Evaluator, compile_playbook
from engine.analyse import analyse
from engine.validate import load_playbook, load_playbook_text
from tests.conftest import AS_OF, ROOT

COURSE = ROOT / "playbooks" / "course.yaml"
TEXT = COURSE.read_text(encoding="utf-8")


def without_row(text: str, row_id: str) -> str:
    """The text with one block-style row (``      - id: <row_id>`` up to the next row) cut out."""
    start = text.index(f"      - id: {row_id}\n")
    end = re.compile(r"^      - id: |^  \S|^\S", re.M).search(text, start + 1)
    assert end is not None
    return text[:start] + text[end.start() :]


def line_of(text: str, needle: str) -> int:
    return text[: text.index(needle)].count("\n") + 1


def problems(text: str) -> list[tuple[str, int, str]]:
    return [(p.code, p.location.line, p.message) for p in analyse(load_playbook_text(text, "copy.yaml"))]


def test_the_course_playbook_is_clean() -> None:
    assert analyse(load_playbook(COURSE)) == []


def test_without_the_rows_that_close_them_the_checker_finds_exactly_the_course_gaps() -> None:
    text = without_row(without_row(TEXT, "gap_2_to_4_weeks"), "gap_6_to_10_weeks")
    where = line_of(text, "\n  funnel_layer:\n") + 1
    assert problems(text) == [
        ("table_gap", where, "no row of 'funnel_layer' covers opportunity.weeks_to_close in (2, 4)"),
        ("table_gap", where, "no row of 'funnel_layer' covers opportunity.weeks_to_close in (6, 10]"),
    ]


def test_seeded_overlap() -> None:
    text = TEXT.replace(
        "when: {opportunity.weeks_to_close: {gte: 4, lte: 6}}", "when: {opportunity.weeks_to_close: {gte: 3, lte: 6}}"
    )
    [(code, line, message)] = problems(text)
    assert (code, line) == ("table_overlap", line_of(text, "      - id: middle\n"))
    assert "rows 'gap_2_to_4_weeks' and 'middle'" in message


def test_seeded_unreachable_row() -> None:
    late = (  # after the win rate's default row, under the hit policy first
        "      - id: late_attack\n        label: {zh: 迟到, en: late}\n"
        "        when: {opportunity.milestones: {contains: need_clarified}}\n        then: 20\n"
    )
    start = TEXT.index("      - id: none\n")
    end = re.compile(r"^  \S", re.M).search(TEXT, start)
    assert end is not None
    text = TEXT[: end.start()] + late + TEXT[end.start() :]
    [(code, line, message)] = problems(text)
    assert (code, line) == ("row_unreachable", line_of(text, "      - id: late_attack"))
    assert "never fires first" in message


def test_seeded_gap_and_dangling_decision() -> None:
    text = TEXT.replace("when: {opportunity.weeks_to_close: {gt: 10}}", "when: {opportunity.weeks_to_close: {gt: 12}}")
    text = text.replace(
        "\n  funnel_layer:\n",
        "\n  dangling:\n    label: {zh: 悬空, en: dangling}\n    source: {guide: G-17, quote: 漏斗位置}\n"
        "    values: [x]\n    value_labels: {x: {zh: 某, en: x}}\n    rows: [{id: x, label: {zh: x, en: x}, then: x}]\n"
        "  funnel_layer:\n",
    )
    assert [(c, line) for c, line, _ in problems(text)] == [
        ("decision_unused", line_of(text, "\n  dangling:\n") + 1),
        ("table_gap", line_of(text, "\n  funnel_layer:\n") + 1),
    ]
    assert "opportunity.weeks_to_close in (10, 12]" in problems(text)[1][2]


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_every_label_a_director_sees_exists_in_both_languages(lang: str) -> None:
    playbook = load_playbook(COURSE)
    for action in playbook.actions.values():
        assert action.label.get(lang), action.id
    for decision in playbook.decisions.values():
        assert decision.label.get(lang), decision.name
        if decision.type in ("enum", "list") and decision.values:
            for value in decision.values:
                assert decision.value_labels.get(str(value), {}).get(lang), (decision.name, value)
        for row in decision.rows:
            assert row.label.get(lang), (decision.name, row.id)
    for rule in playbook.rules:
        assert rule.label.get(lang), rule.id


COURSE_TEXT = ROOT.parent / "shared" / "course" / "course-zh.txt"


def course_sources() -> list[Any]:
    playbook = load_playbook(COURSE)
    sources = [a.source for a in playbook.actions.values()] + [r.source for r in playbook.rules]
    for decision in playbook.decisions.values():
        sources += [decision.source] + [row.source for row in decision.rows]
    return sources


def test_every_part_cites_a_guide_entry() -> None:
    for source in course_sources():
        assert re.fullmatch(r"G-\d\d", source.guide)


@pytest.mark.skipif(not COURSE_TEXT.is_file(), reason=f"the course text is not at {COURSE_TEXT}")
def test_every_part_quotes_the_course_word_for_word() -> None:
    course = COURSE_TEXT.read_text(encoding="utf-8")
    for source in course_sources():
        assert source.quote in course, source.quote


def test_the_directors_amount_class_is_a_parameter() -> None:
    """G-19's "consolidate-A, invest-A": tuning the parameter, not the rows, moves a B project to intensive attack."""
    case = {
        "opportunity": {"weeks_to_close": 1, "amount": 20, "period_target": 100},
        "account": {"attractiveness": "high", "advantage": "high", "roles_known": []},
    }
    tuned = TEXT.replace("  director_amount_class:\n    value: A\n", "  director_amount_class:\n    value: B\n")
    assert tuned != TEXT
    outcomes = []
    for text in (TEXT, tuned):
        with compile_playbook(load_playbook_text(text, "course.yaml")) as compiled:
            result = Evaluator(compiled, cache_size=0).evaluate_case(case, AS_OF, "c")
        outcomes.append((result.decisions["amount_class"], result.decisions["director_action"]))
    assert outcomes == [("B", "wait_and_watch"), ("B", "intensive_attack")]


# A consolidate customer (attractive, we are strong) at the bottom of the funnel, every role known.
CONSOLIDATE = {
    "attractiveness": "high",
    "advantage": "high",
    "roles_known": ["raise_need", "search", "decide", "use", "evaluate"],
}


def course_result(opportunity: dict[str, Any]) -> Any:
    with compile_playbook(load_playbook(COURSE)) as compiled:
        return Evaluator(compiled).evaluate_case({"opportunity": opportunity, "account": CONSOLIDATE}, AS_OF, "c1")


def test_without_a_period_target_the_directors_call_waits_for_it_instead_of_wait_and_watch() -> None:
    result = course_result({"amount": 900000, "weeks_to_close": 1, "win_rate": 80})
    assert result.decisions["amount_class"] is None and result.decisions["director_action"] is None
    undetermined = result.undetermined()
    assert undetermined["amount_class"] == ["opportunity.period_target"]
    assert undetermined["director_action"] == ["opportunity.period_target"]  # through the amount class it reads
    assert "wait_and_watch" not in [rec["id"] for rec in result.recommendations]
    assert "fight_blitz" in [rec["id"] for rec in result.recommendations]  # what does not need it still holds


def test_without_a_close_date_the_layer_and_what_reads_it_wait_for_the_close_date() -> None:
    result = course_result({"amount": 50, "period_target": 100, "win_rate": 80})
    undetermined = result.undetermined()
    for name in ("funnel_layer", "director_action", "battle_type"):
        assert result.decisions[name] is None
        assert undetermined[name] == ["opportunity.close_date"]  # the field the case lacks, not weeks_to_close
    assert result.decisions["amount_class"] == "A" and "amount_class" not in undetermined


def test_a_zero_target_names_the_share_it_cannot_derive_and_a_known_decision_has_no_entry() -> None:
    result = course_result({"amount": 50, "period_target": 0, "weeks_to_close": 1, "win_rate": 80})
    assert result.undetermined()["amount_class"] == ["opportunity.amount_share"]  # the target is there, but 0
    assert result.to_json()["undetermined"] == result.undetermined()
    assert set(result.undetermined()) == {name for name, value in result.decisions.items() if value is None}


def test_weeks_in_stage_are_derived_from_the_stage_date_and_a_long_stay_in_the_middle_is_stalled() -> None:
    result = course_result({"weeks_to_close": 5, "stage_entered_date": "2026-09-18"})  # 10 weeks before AS_OF
    derived = next(step["derived"] for step in result.trace if step.get("derived", {}).get("how") == "weeks_since")
    assert derived == {
        "input": "opportunity.weeks_in_stage",
        "how": "weeks_since",
        "value": 10,
        "from": {"opportunity.stage_entered_date": "2026-09-18", "as_of": AS_OF.isoformat()},
    }
    assert result.decisions["stalled_project"] is True
    assert "move_stalled_project" in [rec["id"] for rec in result.recommendations]


def test_a_stall_that_cannot_be_told_names_the_stage_date_or_the_close_date() -> None:
    no_stage_date = course_result({"weeks_to_close": 5})
    assert no_stage_date.undetermined()["stalled_project"] == ["opportunity.stage_entered_date"]
    no_layer = course_result({"stage_entered_date": "2026-01-02"})
    assert no_layer.undetermined()["stalled_project"] == ["opportunity.close_date"]


def test_a_crm_win_rate_without_milestones_is_flagged_but_still_read_and_neither_known_names_both() -> None:
    given = course_result({"win_rate": 60, "weeks_to_close": 1})
    assert (given.decisions["win_rate"], given.decisions["win_rate_by_intuition"]) == (60, True)
    assert "verify_win_rate" in [rec["id"] for rec in given.recommendations]
    neither = course_result({"weeks_to_close": 1})
    assert neither.decisions["win_rate_by_intuition"] is None
    assert neither.undetermined()["win_rate_by_intuition"] == ["opportunity.win_rate", "opportunity.milestones"]
