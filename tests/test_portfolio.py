"""engine/portfolio.py and the group language: aggregates over cases, groups decided in durable-rules
like cases, their JSON, and the checker's located errors for group_by and aggregates."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner

from cli import main
from engine import CaseError, Evaluator, PlaybookError, compile_playbook, load_playbook, load_playbook_text
from engine.analyse import analyse
from engine.evaluate import Result
from engine.explain import why, why_not
from engine.model import Playbook
from engine.portfolio import AggregateValue, Portfolio, compute_aggregates, evaluate_portfolio
from engine.testing import load_tests, run_tests
from tests.conftest import FIXTURES, ROOT

AS_OF = dt.date(2026, 1, 5)

CASES: dict[str, dict[str, Any]] = {
    "a1": {
        "opportunity": {
            "owner": "ann", "region": "north", "market": "m1", "amount": 10, "weeks_in_stage": 9,
            "weeks_to_close": 5, "origin": "inbound",
        },
        "market": {"internal": "strength"},
    },
    "a2": {"opportunity": {"owner": "ann", "region": "north", "market": "m1", "amount": 5, "weeks_in_stage": 12,
                           "weeks_to_close": 20}},
    "b1": {
        "opportunity": {
            "owner": "bob", "region": "south", "market": "m2", "amount": 7, "weeks_in_stage": 1,
            "weeks_to_close": 1, "origin": "outbound",
        },
        "market": {"internal": "weakness"},
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def playbook() -> Playbook:
    return load_playbook(FIXTURES / "portfolio.yaml")


@pytest.fixture(scope="module")
def results(playbook: Playbook) -> Iterator[list[Result]]:
    with compile_playbook(playbook) as compiled:
        evaluator = Evaluator(compiled)
        yield [evaluator.evaluate_case(facts, AS_OF, case_id) for case_id, facts in CASES.items()]


def test_group_decisions_and_rules_live_in_their_groupings_not_in_the_case_playbook(playbook: Playbook) -> None:
    assert set(playbook.decisions) == {"layer", "stalled"}
    assert [rule.id for rule in playbook.rules] == ["watch_case"]
    assert {name: level.field for name, level in playbook.groups.items()} == {
        "owner": "opportunity.owner",
        "region": "opportunity.region",
        "market": "opportunity.market",
    }
    # a decision declared group_by [owner, region] is decided in each grouping
    assert set(playbook.groups["owner"].playbook.decisions) == {"health", "inbound_share"}
    assert set(playbook.groups["region"].playbook.decisions) == {"health"}
    assert set(playbook.groups["owner"].playbook.inputs) == {
        "group.upper",
        "group.stalled",
        "group.inbound",
        "group.total",
    }


def test_aggregates_count_share_and_sum_over_each_group_naming_the_cases(
    playbook: Playbook, results: list[Result]
) -> None:
    values = compute_aggregates(playbook.groups["owner"], results)
    assert list(values) == ["ann", "bob"]
    ann = values["ann"]
    assert ann["stalled"] == AggregateValue(2, ("a1", "a2"))
    assert ann["total"] == AggregateValue(15, ("a1", "a2"))
    # a2 has no origin: the share is over the deals whose origin is known, and a2 is named as unknown
    assert ann["inbound"] == AggregateValue(1.0, ("a1",), ("a2",))
    assert values["bob"]["upper"] == AggregateValue(0, ())


def test_min_max_and_distinct_and_an_aggregate_no_case_has_the_data_for() -> None:
    text = (FIXTURES / "portfolio.yaml").read_text(encoding="utf-8")
    text = text.replace(
        "      total: {sum: opportunity.amount, label: {zh: 金额合计, en: total amount}}",
        "      total: {sum: opportunity.amount, label: {zh: 金额合计, en: total amount}}\n"
        "      smallest: {min: opportunity.amount, where: {layer: upper}}\n"
        "      largest: {max: opportunity.amount}\n"
        "      markets: {distinct: opportunity.market}\n"
        "      region_of: {value: opportunity.region}",
    )
    pb = load_playbook_text(text, "portfolio.yaml")
    with compile_playbook(pb) as compiled:
        evaluator = Evaluator(compiled)
        results = [evaluator.evaluate_case(facts, AS_OF, case_id) for case_id, facts in CASES.items()]
        results.append(evaluator.evaluate_case({"opportunity": {"owner": "dan", "market": "m1"}}, AS_OF, "d1"))
    values = compute_aggregates(pb.groups["owner"], results)
    assert values["ann"]["smallest"] == AggregateValue(5, ("a2",))
    assert values["ann"]["largest"] == AggregateValue(10, ("a1",))
    assert values["bob"]["smallest"].value is None  # no upper-funnel deal: no smallest
    assert values["ann"]["markets"].value == 1
    # dan's one deal has neither an origin nor a funnel layer: those aggregates are unknown, not zero
    assert values["dan"]["inbound"] == AggregateValue(None, (), ("d1",))
    assert values["dan"]["upper"].value is None
    assert values["dan"]["markets"].value == 1
    # the one value the cases that have one agree on; none when none has it
    assert values["ann"]["region_of"] == AggregateValue("north", ("a1", "a2"))
    assert values["dan"]["region_of"] == AggregateValue(None, (), ("d1",))
    assert pb.groups["owner"].playbook.inputs["group.region_of"].type == "string"


def test_a_group_result_has_the_documented_shape_and_reuses_the_case_pieces(
    playbook: Playbook, results: list[Result]
) -> None:
    groups = evaluate_portfolio(playbook, results, AS_OF)
    assert [(g.group_by, g.key, g.open) for g in groups] == [
        ("owner", "ann", 2), ("owner", "bob", 1), ("region", "north", 2), ("region", "south", 1),
        ("market", "m1", 2), ("market", "m2", 1),
    ]  # fmt: skip
    ann = groups[0].to_json("en")
    assert ann["group_by"] == "owner" and ann["key"] == "ann" and ann["open"] == 2
    assert ann["aggregates"]["stalled"] == {
        "value": 2,
        "label": "stalled deals",
        "members": ["a1", "a2"],
        "members_total": 2,
    }
    health = ann["decisions"]["health"]
    assert health["value"] == "danger" and health["value_label"] == "danger" and health["label"] == "funnel health"
    assert health["row"] == "danger_stalled" and health["source"] == {"guide": "G-18", "quote": "良性中性危险"}
    assert health["trace"][0]["fired"][0]["conditions"][0] == {
        "input": "group.stalled",
        "test": "≥ many_stalled (2)",
        "value": 2,
        "result": True,
    }
    assert [(r["id"], r["params"], r["rule"]) for r in ann["recommendations"]] == [
        ("fix_funnel", {"stalled": 2}, "fix_funnel")
    ]
    zh = groups[0].to_json("zh", trace=False)
    assert zh["decisions"]["inbound_share"]["value_label"] == "是"
    assert zh["aggregates"]["stalled"]["label"] == "停滞项目数"
    assert "trace" not in zh["decisions"]["health"]


def test_a_group_missing_the_data_an_aggregate_needs_is_undetermined_naming_it(playbook: Playbook) -> None:
    with compile_playbook(playbook) as compiled:
        result = Evaluator(compiled).evaluate_case({"opportunity": {"owner": "eve", "amount": 1}}, AS_OF, "e1")
    (eve,) = evaluate_portfolio(playbook, [result], AS_OF, ["owner"])
    out = eve.to_json("en")
    assert eve.decisions["inbound_share"] is None
    assert out["decisions"]["inbound_share"]["missing"] == ["group.inbound"]
    assert out["decisions"]["inbound_share"]["needs"] == ["opportunity.origin"]
    assert set(out["decisions"]["health"]["needs"]) == {"layer", "stalled"}


def test_an_undetermined_group_names_the_variable_an_aggregate_compares_with() -> None:
    text = (FIXTURES / "portfolio.yaml").read_text(encoding="utf-8")
    amount = "  opportunity.amount: {type: number, label: {zh: 金额, en: amount}}\n"
    inbound = "inbound: {share: {where: {opportunity.origin: inbound}}"
    assert amount in text and inbound in text
    text = text.replace(amount, amount + "  opportunity.floor: {type: number, label: {zh: 下限, en: floor}}\n", 1)
    text = text.replace(inbound, "inbound: {share: {where: {opportunity.amount: {gt: {var: opportunity.floor}}}}", 1)
    playbook = load_playbook_text(text, "portfolio.yaml")
    with compile_playbook(playbook) as compiled:
        result = Evaluator(compiled).evaluate_case({"opportunity": {"owner": "eve", "amount": 1}}, AS_OF, "e1")
    (eve,) = evaluate_portfolio(playbook, [result], AS_OF, ["owner"])
    assert eve.to_json("en")["decisions"]["inbound_share"]["needs"] == ["opportunity.amount", "opportunity.floor"]


def test_why_and_why_not_read_a_group_as_they_read_a_case(playbook: Playbook, results: list[Result]) -> None:
    bob = next(g for g in evaluate_portfolio(playbook, results, AS_OF, ["owner"]) if g.key == "bob")
    assert not isinstance(bob.outcome, CaseError)
    level = playbook.groups["owner"].playbook
    said = why(level, bob.outcome.to_json("zh"), "zh")
    assert "缺乏后劲" in said and "表层或中层项目数" in said
    said_not = why_not(level, bob.outcome.to_json("en"), "health=healthy", "en")
    assert "deals in the upper funnel" in said_not


def test_aggregates_from_elsewhere_decide_groups_the_same_way(playbook: Playbook) -> None:
    """The second step alone: values as a database would give them."""
    with Portfolio(playbook, cache_size=0) as portfolio:
        (north,) = portfolio.decide(
            "region",
            {"north": {"upper": AggregateValue(3, ("x", "y", "z")), "stalled": AggregateValue(1, ("x",))}},
            AS_OF,
            {"north": 4},
        )
    assert north.decisions == {"health": "healthy"} and north.open == 4
    assert north.to_json()["aggregates"]["upper"]["members"] == ["x", "y", "z"]


def test_playbook_tests_give_cases_and_expected_groups_and_count_group_rows(playbook: Playbook) -> None:
    tests = load_tests([FIXTURES / "tests" / "portfolio" / "groups.yaml"], playbook)
    report = run_tests(playbook, tests)
    assert [o.differences for o in report.outcomes] == [[], []]
    assert "health.danger_no_stamina" in report.members and "market_guidance" in report.members
    assert report.coverage == 100.0
    wrong = next(t for t in tests if t.cases)
    wrong.expect["groups"]["owner"]["ann"]["aggregates"]["stalled"] = {"value": 1, "members": ["a1"]}
    differences = run_tests(playbook, [wrong]).outcomes[0].differences
    assert differences == [
        'groups.owner.ann.aggregates.stalled: expected {"value": 1, "members": ["a1"]}, '
        'got {"value": 2, "members": ["a1", "a2"]}'
    ]


def test_the_table_checker_finds_gaps_in_group_tables_and_counts_are_never_negative(playbook: Playbook) -> None:
    assert analyse(playbook) == []
    text = (FIXTURES / "portfolio.yaml").read_text(encoding="utf-8")
    gap = text.replace(
        "        when: {group.weak: 0}\n        then: develop",
        "        when: {group.weak: 0, group.strong: {gt: 0}}\n        then: develop",
    )
    problems = analyse(load_playbook_text(gap, "portfolio.yaml"))
    assert [(p.code, p.message) for p in problems] == [
        ("table_gap", "no row of 'posture' covers group.weak = 0, group.strong = 0")
    ]


def _problems(text: str) -> list[tuple[int, str, str]]:
    with pytest.raises(PlaybookError) as caught:
        load_playbook_text(text, "portfolio.yaml")
    return [(p.location.line, p.code, p.message) for p in caught.value.problems]


@pytest.mark.parametrize(
    ("old", "new", "code", "words"),
    [
        ("    group_by: market\n    aggregates:", "    group_by: markt\n    aggregates:", "unknown_group_field",
         "is no grouping (owner, team, region, market, account) nor case field (did you mean 'market'?)"),
        ("when: {group.stalled: {gte:", "when: {group.staled: {gte:", "unknown_aggregate",
         "no aggregate 'staled' is declared for group_by owner (did you mean 'stalled'?)"),
        ("upper: {count: {where: {layer: upper}}, label:", "upper: {count: {}, sum: opportunity.amount, label:",
         "aggregate_function", "exactly one of count, share, sum, min, max, distinct, value; it has count and sum"),
        ("total: {sum: opportunity.amount,", "total: {sum: opportunity.owner,", "aggregate_type",
         "sum needs a number; 'opportunity.owner' is of type string"),
        ("        when: {group.weak: 0}", "        when: {group.weak: 0, layer: upper}", "wrong_level",
         "'layer' is decided per case; a decision made per market reads it through an aggregate"),
        ("    when: {layer: bottom}", "    when: {layer: bottom, health: danger}", "wrong_level",
         "'health' is decided once per group (owner, region); it cannot be read per case"),
    ],
)  # fmt: skip
def test_group_language_errors_are_located_with_stable_codes(old: str, new: str, code: str, words: str) -> None:
    text = (FIXTURES / "portfolio.yaml").read_text(encoding="utf-8")
    assert old in text
    bad = text.replace(old, new, 1)
    problems = _problems(bad)
    assert problems and problems[0][1] == code, problems
    assert words in problems[0][2]
    line = next(i for i, content in enumerate(bad.splitlines(), 1) if new.splitlines()[0].strip() in content)
    assert problems[0][0] == line


def test_one_aggregate_defined_two_ways_in_a_grouping_is_refused() -> None:
    text = (FIXTURES / "portfolio.yaml").read_text(encoding="utf-8")
    bad = text.replace(
        "      total: {sum: opportunity.amount, label: {zh: 金额合计, en: total amount}}",
        "      total: {sum: opportunity.amount, label: {zh: 金额合计, en: total amount}}\n      stalled: {count: {}}",
    )
    problems = _problems(bad)
    assert [(code, message) for _, code, message in problems] == [
        ("aggregate_conflict", "aggregate 'stalled' of group_by owner is defined differently at line 74")
    ]


def test_recommend_prints_each_group_once_after_the_cases(tmp_path: Path) -> None:
    lines = [{"id": case_id, **facts} for case_id, facts in CASES.items()]
    lines.append({"id": "a3", "opportunity": {"owner": "ann", "region": "north", "market": "m1", "weeks_to_close": 30}})
    cases = tmp_path / "cases.jsonl"
    cases.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    args = ["recommend", "--playbook", str(FIXTURES / "portfolio.yaml"), "--input", str(cases), "--no-store"]
    args += ["--as-of", AS_OF.isoformat(), "--groups"]
    result = CliRunner().invoke(main, [*args, "--format", "json", "--lang", "en"])
    assert result.exit_code == 0, result.output
    schema = json.loads((ROOT / "schemas" / "result.schema.json").read_text(encoding="utf-8"))
    printed = [json.loads(line) for line in result.stdout.splitlines()]
    for line in printed:
        jsonschema.validate(line, schema)
    assert [line.get("case") for line in printed[:4]] == ["a1", "a2", "b1", "a3"]
    groups = [(line["group"]["group_by"], line["group"]["key"]) for line in printed[4:]]
    # market m1 has three deals and is decided once: one "grow the market", not three
    assert groups.count(("market", "m1")) == 1 and len(printed) == 4 + len(groups)
    m1 = next(line["group"] for line in printed[4:] if line["group"]["key"] == "m1")
    assert m1["open"] == 3 and [rec["id"] for rec in m1["recommendations"]] == ["grow_market"]
    assert "6 groups decided (owner 2, region 2, market 2)" in result.stderr
    zh = CliRunner().invoke(main, [*args, "--lang", "zh"])
    assert "判断了 6 个组(客户经理 2、区域 2、产品市场 2)" in zh.stderr  # the summary in the run's language
    block = zh.stdout.split("按客户经理:ann(在途项目 3 个)")[1].split("\n\n")[0]
    assert "停滞项目数 2" in block and "漏斗健康: 危险" in block and "修复漏斗" in block
    assert "入站占比高: 未定" not in block
    assert not re.search(r"[A-Za-z]{3,}", block.replace("G-18", "")), block


def test_a_decision_read_only_as_the_other_side_of_an_aggregate_comparison_is_used() -> None:
    text = (FIXTURES / "portfolio.yaml").read_text(encoding="utf-8")
    threshold = """
  threshold:
    label: {zh: 大额门槛, en: large-deal threshold}
    source: {guide: G-18, quote: 长时间无法向漏斗底层靠近}
    type: number
    rows:
      - id: far
        label: {zh: 远期, en: far}
        when: {opportunity.weeks_to_close: {gt: 50}}
        then: 9
      - id: usual
        label: {zh: 通常, en: usual}
        otherwise: true
        then: 6

  health:
"""
    stalled = "      stalled: {count: {where: {stalled: true}}, label: {zh: 停滞项目数, en: stalled deals}}"
    large = "      large: {count: {where: {opportunity.amount: {gt: {var: threshold}}}}, label: {zh: 大额, en: large}}"
    assert "\n  health:\n" in text and stalled in text
    text = text.replace("\n  health:\n", threshold, 1).replace(stalled, f"{stalled}\n{large}", 1)
    playbook = load_playbook_text(text, "portfolio.yaml")
    assert [p.code for p in analyse(playbook) if "threshold" in p.message] == []
