"""engine/evaluate.py on the fixture playbook: hit policies, derivations, rules, errors, determinism."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from engine import CaseError, Evaluator, compile_playbook, load_playbook_text
from engine.explain import why
from tests.conftest import AS_OF, FIXTURES


def run(evaluator: Evaluator, **objects: Any) -> Any:
    return evaluator.evaluate_case(objects, AS_OF, "c")


def test_weeks_are_derived_from_the_close_date_and_as_of(evaluator: Evaluator) -> None:
    result = run(evaluator, opportunity={"close_date": "2027-02-19"})  # 12 weeks after AS_OF
    assert result.inputs["opportunity.weeks_to_close"] == 12
    assert result.decisions["funnel_layer"] == "surface"
    assert result.trace[0]["derived"]["from"] == {"opportunity.close_date": "2027-02-19", "as_of": "2026-11-27"}
    later = evaluator.evaluate_case({"opportunity": {"close_date": "2027-02-19"}}, dt.date(2027, 2, 12), "c")
    assert later.decisions["funnel_layer"] == "bottom"


def test_a_given_field_wins_over_its_derivation(evaluator: Evaluator) -> None:
    result = run(evaluator, opportunity={"close_date": "2027-02-19", "weeks_to_close": 1})
    assert result.decisions["funnel_layer"] == "bottom"
    assert not any("derived" in step for step in result.trace)


@pytest.mark.parametrize(("weeks", "layer"), [(10, "middle"), (10.0001, "surface"), (2, "bottom"), (2.5, "middle")])
def test_interval_ends(evaluator: Evaluator, weeks: float, layer: str) -> None:
    assert run(evaluator, opportunity={"weeks_to_close": weeks}).decisions["funnel_layer"] == layer


def test_first_hit_policy_takes_the_first_matching_row(evaluator: Evaluator) -> None:
    result = run(evaluator, opportunity={"milestones": ["a", "b"]})
    assert result.decisions["progress"] == 40
    step = next(s for s in result.trace if s.get("decision") == "progress")
    assert [(f["row"], f["chosen"]) for f in step["fired"]] == [("two", True), ("one", False), ("none", False)]


def test_value_of_passes_a_given_value_through(evaluator: Evaluator) -> None:
    assert run(evaluator, opportunity={"win_rate": 60, "milestones": ["a"]}).decisions["progress"] == 60


def test_collect_gathers_every_matching_row(evaluator: Evaluator) -> None:
    result = run(evaluator, opportunity={"milestones": ["d"]}, account={"vip": True, "segment": "gov", "name": "Acme"})
    assert result.decisions["tags"] == ["hot", "gov"]


def test_priority_ranks_by_declared_values(evaluator: Evaluator) -> None:
    big_at_bottom = run(evaluator, opportunity={"weeks_to_close": 1, "amount": 9, "period_target": 10})
    assert big_at_bottom.decisions["attention"] == "high"
    big_only = run(evaluator, opportunity={"weeks_to_close": 5, "amount": 9, "period_target": 10})
    assert big_only.decisions["attention"] == "medium"


def test_a_share_of_zero_is_a_share_and_no_bound_is_put_on_other_numbers(evaluator: Evaluator) -> None:
    result = run(evaluator, opportunity={"amount": 0, "period_target": 10, "weeks_to_close": -3})
    assert (result.inputs["opportunity.share"], result.inputs["opportunity.weeks_to_close"]) == (0, -3)


def test_ratio_with_a_zero_denominator_stays_missing(evaluator: Evaluator) -> None:
    result = run(evaluator, opportunity={"amount": 9, "period_target": 0})
    assert "opportunity.share" not in result.inputs
    assert result.decisions["size"] is None


def test_rules_set_decisions_and_recommend_with_params(evaluator: Evaluator) -> None:
    result = run(evaluator, opportunity={"weeks_to_close": 1, "win_rate": 80}, account={"segment": "retail"})
    assert result.decisions["flagged"] is True
    assert result.recommendations == [
        {
            "id": "follow_up",
            "params": {"funnel_layer": "bottom", "high_win_rate": 60},
            "rule": "push",
            "source": {"guide": "G-22", "quote": "积极跟进、机会难得"},
        }
    ]
    quiet = run(evaluator, opportunity={"weeks_to_close": 5}, account={"segment": "bank"})
    assert [r["id"] for r in quiet.recommendations] == ["wait"]
    assert quiet.decisions["flagged"] is None


def test_no_matching_row_leaves_the_decision_undetermined(evaluator: Evaluator) -> None:
    result = run(evaluator)
    assert result.decisions["funnel_layer"] is None
    step = next(s for s in result.trace if s.get("decision") == "funnel_layer")
    assert step["fired"] == []
    assert step["missing"] == ["opportunity.weeks_to_close"]  # the input that would have decided it


def test_a_test_on_a_missing_value_is_unknown_and_not_of_it_too(evaluator: Evaluator) -> None:
    """``not: {flagged: true}`` does not hold just because nothing set ``flagged``: the rule stays undetermined."""
    text = (FIXTURES / "pipeline.yaml").read_text(encoding="utf-8")
    strict = text.replace("{any: [{flagged: {missing: true}}, {not: {flagged: true}}]}", "{not: {flagged: true}}")
    with compile_playbook(load_playbook_text(strict, "strict.yaml")) as compiled:
        quiet = Evaluator(compiled, cache_size=0).evaluate_case(
            {"opportunity": {"weeks_to_close": 5}, "account": {"segment": "bank"}}, AS_OF, "q"
        )
    assert quiet.recommendations == []
    [step] = [s["undetermined"] for s in quiet.trace if "undetermined" in s]
    assert step["rule"] == "watch"
    assert step["missing"] == ["flagged"]
    assert [c["result"] for c in step["conditions"]] == [True, None]  # attention ≠ high holds; flagged unknown
    strict_playbook = load_playbook_text(strict, "strict.yaml")
    zh, en = why(strict_playbook, quiet.to_json("zh"), "zh"), why(strict_playbook, quiet.to_json(), "en")
    assert "  规则「观察」 [G-19 「等待观察」]\n      未能判断(缺少:标记)" in zh
    assert "  rule watch “watch” [G-19 「等待观察」]\n      could not be decided (missing: flagged)" in en


@pytest.mark.parametrize(
    ("objects", "message"),
    [
        ({"opportunity": {"win_rate": 65}}, "opportunity.win_rate: '65' is not one of"),
        ({"opportunity": {"win_rate": "60"}}, "opportunity.win_rate"),
        ({"opportunity": {"weeks_to_close": "3"}}, "is not a number"),
        ({"opportunity": {"weeks_to_close": True}}, "is not a number"),
        ({"opportunity": {"close_date": "next week"}}, "is not a date"),
        ({"opportunity": {"milestones": ["a", "q"]}}, "'q' is not one of"),
        ({"opportunity": "big"}, "'opportunity' should be an object"),
        ({"opportunity": {"weeks_to_close": float("inf")}}, "'inf' is not a finite number"),
        ({"opportunity": {"weeks_to_close": -(10**400)}}, "an integer too large to be a finite number"),
        # a negative amount over a negative target would be a positive share: both sources of a ratio are refused
        ({"opportunity": {"amount": -9, "period_target": -10}}, "opportunity.amount: '-9' is negative"),
        ({"opportunity": {"amount": 9, "period_target": -10}}, "opportunity.period_target: '-10' is negative"),
        ({"opportunity": {"amount": -0.5}}, "'-0.5' is negative; the share opportunity.share is derived"),
    ],
)
def test_bad_input_is_one_clear_error(evaluator: Evaluator, objects: dict[str, Any], message: str) -> None:
    with pytest.raises(CaseError) as info:
        evaluator.evaluate_case(objects, AS_OF, "c7")
    assert info.value.code == "bad_input"
    assert info.value.case_id == "c7"
    assert message in info.value.message


def test_unique_violation_is_an_error_of_that_case_only() -> None:
    text = (
        (FIXTURES / "pipeline.yaml")
        .read_text(encoding="utf-8")
        .replace(
            "when: {opportunity.weeks_to_close: {gt: 2, lte: 10}}",
            "when: {opportunity.weeks_to_close: {gte: 2, lte: 10}}",
        )
    )
    with compile_playbook(load_playbook_text(text, "overlap.yaml")) as compiled:
        out = list(
            Evaluator(compiled).evaluate(
                [("a", {"opportunity": {"weeks_to_close": 2}}), ("b", {"opportunity": {"weeks_to_close": 3}})], AS_OF
            )
        )
    assert isinstance(out[0], CaseError)
    assert out[0].code == "hit_policy_violation"
    assert "'middle', 'bottom'" in out[0].message
    assert out[1].decisions["funnel_layer"] == "middle"  # type: ignore[union-attr]


def test_conflicting_rules_fail_the_case() -> None:
    text = (
        (FIXTURES / "pipeline.yaml")
        .read_text(encoding="utf-8")
        .replace(
            "  - id: push\n",
            "  - id: unflag\n    label: {zh: 取消, en: unflag}\n    source: {guide: G-10, quote: q}\n"
            "    when: {account.segment: retail}\n    then:\n      set: {flagged: false}\n  - id: push\n",
        )
    )
    with compile_playbook(load_playbook_text(text, "conflict.yaml")) as compiled, pytest.raises(CaseError) as info:
        Evaluator(compiled).evaluate_case({"account": {"segment": "retail"}}, AS_OF, "c")
    assert info.value.code == "decision_conflict"


def test_same_input_same_output_byte_for_byte(compiled: Any) -> None:
    case = {"opportunity": {"close_date": "2026-12-20", "milestones": ["a", "c"], "amount": 3, "period_target": 4}}
    first = json.dumps(Evaluator(compiled).evaluate_case(case, AS_OF, "c").to_json("zh"), ensure_ascii=False)
    warm = Evaluator(compiled)
    for _ in range(3):
        warm.evaluate_case(case, AS_OF, "c")
    again = json.dumps(warm.evaluate_case(case, AS_OF, "c").to_json("zh"), ensure_ascii=False)
    uncached = json.dumps(
        Evaluator(compiled, cache_size=0).evaluate_case(case, AS_OF, "c").to_json("zh"), ensure_ascii=False
    )
    assert first == again == uncached


def test_two_versions_of_one_playbook_in_one_process_give_their_own_results() -> None:
    text = (FIXTURES / "pipeline.yaml").read_text(encoding="utf-8")
    v1 = load_playbook_text(text, "v1.yaml")
    v2 = load_playbook_text(
        text.replace("value: 60\n", "value: 80\n", 1).replace('version: "1"', 'version: "2"'), "v2.yaml"
    )
    case = {"opportunity": {"win_rate": 60}}
    with compile_playbook(v1) as c1, compile_playbook(v2) as c2:
        assert c1.ruleset_name != c2.ruleset_name
        r1 = Evaluator(c1).evaluate_case(case, AS_OF, "c")
        r2 = Evaluator(c2).evaluate_case(case, AS_OF, "c")
        assert r1.decisions["tags"] == ["hot", "nameless"]  # no milestones: "stuck" is unknown
        assert r2.decisions["tags"] == ["nameless"]
        assert r1.to_json()["playbook"]["hash"] != r2.to_json()["playbook"]["hash"]
        # interleaved use keeps them apart
        assert Evaluator(c1).evaluate_case(case, AS_OF, "c").decisions == r1.decisions


def test_the_same_playbook_compiled_twice_does_not_collide(pipeline: Any) -> None:
    with compile_playbook(pipeline) as a, compile_playbook(pipeline) as b:
        assert a.ruleset_name == b.ruleset_name
        case = {"opportunity": {"weeks_to_close": 1}}
        assert (
            Evaluator(a).evaluate_case(case, AS_OF, "c").decisions
            == Evaluator(b).evaluate_case(case, AS_OF, "c").decisions
        )


def test_priority_with_a_passed_through_value_is_not_reused_across_cases() -> None:
    # Under priority the choice depends on every fired row's output; a value_of row's output is the
    # case's own value, so a choice must not be reused for a case whose conditions merely match.
    text = """
playbook: {id: prio, version: "1", languages: [en], title: {en: t}}
inputs:
  account.temperature: {type: enum, values: [hot, warm, cold], label: {en: t}}
decisions:
  heat:
    label: {en: heat}
    source: {guide: G-19, quote: q}
    values: [hot, warm, cold]
    hit_policy: priority
    rows:
      - {id: given, label: {en: g}, when: {account.temperature: {present: true}}, then: {value_of: account.temperature}}
      - {id: floor, label: {en: f}, then: warm}
"""
    with compile_playbook(load_playbook_text(text)) as compiled:
        evaluator = Evaluator(compiled)
        for temperature, heat in (("cold", "warm"), ("hot", "hot"), ("cold", "warm"), ("warm", "warm")):
            result = evaluator.evaluate_case({"account": {"temperature": temperature}}, AS_OF, "c")
            assert result.decisions["heat"] == heat


OTHERWISE = """
playbook: {id: t, version: "1", languages: [en], title: {en: test}}
inputs:
  opportunity.weeks: {type: number, label: {en: weeks}}
  account.segment: {type: enum, values: [gov, bank, retail], label: {en: segment}}
decisions:
  layer:
    label: {en: layer}
    source: {guide: G-17, quote: "表层"}
    values: [bottom, gov, rest]
    output: true
    rows:
      - {id: bottom, label: {en: bottom}, when: {opportunity.weeks: {lte: 2}}, then: bottom}
      - id: gov
        label: {en: gov}
        when: {all: [{opportunity.weeks: {gt: 2}}, {not: {account.segment: {not_equals: gov}}}]}
        then: gov
      - {id: rest, label: {en: the rest}, otherwise: true, then: rest}
"""


@pytest.mark.parametrize(
    ("facts", "layer", "missing"),
    [
        ({"opportunity": {"weeks": 1}, "account": {"segment": "bank"}}, "bottom", None),
        ({"opportunity": {"weeks": 9}, "account": {"segment": "gov"}}, "gov", None),
        ({"opportunity": {"weeks": 9}, "account": {"segment": "bank"}}, "rest", None),  # every other row false
        ({"opportunity": {"weeks": 9}}, None, ["account.segment"]),  # the gov row is unknown: so is otherwise
        ({"opportunity": {"weeks": 1}}, "bottom", None),  # a row that holds decides, whatever is missing
    ],
)
def test_an_otherwise_row_fires_only_when_every_other_row_is_false(
    facts: dict[str, Any], layer: str | None, missing: list[str] | None
) -> None:
    playbook = load_playbook_text(OTHERWISE, "otherwise.yaml")
    with compile_playbook(playbook) as compiled:  # every question to durable-rules: it must agree
        result = Evaluator(compiled, cache_size=0).evaluate_case(facts, AS_OF, "c")
    assert result.decisions["layer"] == layer
    [step] = result.trace
    assert step.get("missing") == missing
    if layer == "rest":
        assert "otherwise: every other row is false" in why(playbook, result.to_json(), "en")
        assert "否则:其他各行都不成立" in why(playbook, result.to_json("zh"), "zh")


COMPARED = """
playbook: {id: t, version: "1", languages: [en], title: {en: test}}
parameters:
  a_share: {value: 0.5, label: {en: A share}}
inputs:
  opportunity.amount: {type: number, label: {en: amount}}
  opportunity.period_target: {type: number, label: {en: period target}}
  opportunity.close_date: {type: date, label: {en: decision date}}
  opportunity.budget_date: {type: date, label: {en: budget date}}
decisions:
  against:
    label: {en: tests that hold}
    source: {guide: G-16, quote: "重要非常大A类"}
    type: list
    values: [gt, gte, lt, lte, equals, not_equals, half, not_half, before, not_before]
    hit_policy: collect
    output: true
    rows:
      - {id: gt, label: {en: gt}, when: {opportunity.amount: {gt: {var: opportunity.period_target}}}, then: gt}
      - {id: gte, label: {en: gte}, when: {opportunity.amount: {gte: {var: opportunity.period_target}}}, then: gte}
      - {id: lt, label: {en: lt}, when: {opportunity.amount: {lt: {var: opportunity.period_target}}}, then: lt}
      - {id: lte, label: {en: lte}, when: {opportunity.amount: {lte: {var: opportunity.period_target}}}, then: lte}
      - {id: equals, label: {en: equals}, when: {opportunity.amount: {var: opportunity.period_target}}, then: equals}
      - id: not_equals
        label: {en: not equals}
        when: {opportunity.amount: {not_equals: {var: opportunity.period_target}}}
        then: not_equals
      - id: half
        label: {en: half}
        when: {opportunity.amount: {gte: {var: opportunity.period_target, times: {param: a_share}}}}
        then: half
      - id: not_half
        label: {en: not half}
        when: {not: {opportunity.amount: {gte: {var: opportunity.period_target, times: {param: a_share}}}}}
        then: not_half
      - id: before
        label: {en: before}
        when: {opportunity.close_date: {lt: {var: opportunity.budget_date}}}
        then: before
      - id: not_before
        label: {en: not before}
        when: {not: {opportunity.close_date: {lt: {var: opportunity.budget_date}}}}
        then: not_before
"""


@pytest.mark.parametrize(
    ("opportunity", "holding"),
    [
        ({"amount": 5, "period_target": 10}, ["lt", "lte", "not_equals", "half"]),
        ({"amount": 4.5, "period_target": 10}, ["lt", "lte", "not_equals", "not_half"]),
        ({"amount": 10, "period_target": 10}, ["gte", "lte", "equals", "half"]),
        ({"amount": 11, "period_target": 10}, ["gt", "gte", "not_equals", "half"]),
        ({"amount": 11}, None),  # the other side missing: every test unknown, negated or not
        ({"period_target": 10}, None),
        ({"close_date": "2026-12-31", "budget_date": "2027-01-01"}, ["before"]),
        ({"close_date": "2027-01-01", "budget_date": "2027-01-01"}, ["not_before"]),
        ({"close_date": "2027-01-01"}, None),
    ],
)
def test_a_value_against_another_variables(opportunity: dict[str, Any], holding: list[str] | None) -> None:
    playbook = load_playbook_text(COMPARED, "compared.yaml")
    with compile_playbook(playbook) as compiled:  # every question to durable-rules: it must agree
        evaluator = Evaluator(compiled, cache_size=0)
        result = evaluator.evaluate_case({"opportunity": opportunity}, AS_OF, "c")
        reusing = Evaluator(compiled)  # answers reused by key: the comparison's result is part of it
        for _ in range(2):
            assert reusing.evaluate_case({"opportunity": opportunity}, AS_OF, "c").to_json() == result.to_json()
    assert result.decisions["against"] == holding


def test_reused_answers_tell_comparisons_of_the_same_values_apart() -> None:
    """amount 5 against targets 4 and 10: the same cell for each value alone, different answers."""
    cases = [{"amount": 5, "period_target": t} for t in (4, 10, 5, 4)]
    with compile_playbook(load_playbook_text(COMPARED, "compared.yaml")) as compiled:
        fresh, reusing = Evaluator(compiled, cache_size=0), Evaluator(compiled)
        for i, opportunity in enumerate(cases):
            want = fresh.evaluate_case({"opportunity": opportunity}, AS_OF, str(i)).to_json()
            assert reusing.evaluate_case({"opportunity": opportunity}, AS_OF, str(i)).to_json() == want


FOR_EACH = """
playbook: {id: t, version: "1", languages: [zh, en], title: {zh: 测试, en: test}}
inputs:
  opportunity.steps:
    type: list
    values: [call, demo, offer]
    label: {zh: 步骤, en: steps}
    value_labels: {call: {zh: 电话, en: call}, demo: {zh: 演示, en: demo}, offer: {zh: 报价, en: offer}}
  account.vip: {type: boolean, label: {zh: 重要客户, en: VIP}}
decisions:
  vip:
    label: {zh: 重要, en: important}
    source: {guide: G-17, quote: "表层"}
    type: boolean
    rows:
      - {id: vip, label: {zh: 重要客户, en: a VIP}, when: {account.vip: true}, then: true}
      - {id: other, label: {zh: 其他, en: others}, otherwise: true, then: false}
rules:
  - id: follow
    label: {zh: 跟进, en: follow up}
    source: {guide: G-17, quote: "表层"}
    for_each: opportunity.steps
    when: {vip: true}
    then:
      recommend: [{action: "follow_{item}", params: {steps: {item_of: opportunity.steps}}}]
actions:
  follow_call: {label: {zh: 回电, en: call back}, source: {guide: G-17, quote: "表层"}}
  follow_demo: {label: {zh: 再演示, en: demo again}, source: {guide: G-17, quote: "表层"}}
  follow_offer: {label: {zh: 跟进报价, en: chase the offer}, source: {guide: G-17, quote: "表层"}}
"""


def test_for_each_recommends_once_per_item_with_the_item_as_a_parameter() -> None:
    playbook = load_playbook_text(FOR_EACH, "for_each.yaml")
    assert [rule.id for rule in playbook.rules] == ["follow_call", "follow_demo", "follow_offer"]
    with compile_playbook(playbook) as compiled:  # every question to durable-rules: it must agree
        evaluator = Evaluator(compiled, cache_size=0)
        result = evaluator.evaluate_case(
            {"opportunity": {"steps": ["offer", "call"]}, "account": {"vip": True}}, AS_OF, "c"
        )
        unknown = evaluator.evaluate_case({"opportunity": {"steps": ["demo"]}}, AS_OF, "u")
    assert [(r["id"], r["rule"], r["params"]) for r in result.recommendations] == [
        ("follow_call", "follow_call", {"steps": "call"}),
        ("follow_offer", "follow_offer", {"steps": "offer"}),
    ]
    traced = [s for s in result.trace if "rule" in s]  # one step per item, each with its own test of the item
    assert [s["conditions"][0]["test"] for s in traced] == ["contains call", "contains offer"]
    assert [s["undetermined"]["rule"] for s in unknown.trace if "undetermined" in s] == ["follow_demo"]
    zh = why(playbook, result.to_json("zh"), "zh")
    assert "规则「跟进:电话」" in zh and "步骤 = 电话、报价 (包含 电话) ✓" in zh


def test_a_big_generated_playbook_gives_the_same_results_and_traces_reusing_answers_or_not() -> None:
    """The benchmark's wide playbook (300 table rows, 300 rules): answers reused by node and by chunk, as
    evaluation runs, against durable-rules asked every chunk of every node for every case."""
    from bench.scaling import RULE_AS_OF, generated_playbook, rule_cases

    playbook = load_playbook_text(generated_playbook(300), "<generated 300>")
    cases = list(rule_cases(400, seed=5))
    cases += [(f"again-{case_id}", case) for case_id, case in cases[:150]]  # answered from memory
    with compile_playbook(playbook) as compiled:
        assert max(len(node.chunks) for node in compiled.nodes) > 10
        reusing = [r.to_json() for r in Evaluator(compiled).evaluate(cases, RULE_AS_OF)]  # type: ignore[union-attr]
        reused_questions = compiled.questions_asked
        fresh = [r.to_json() for r in Evaluator(compiled, cache_size=0).evaluate(cases, RULE_AS_OF)]  # type: ignore[union-attr]
        every_question = compiled.questions_asked - reused_questions
    assert reusing == fresh  # decisions, recommendations and traces
    assert every_question == len(cases) * sum(len(node.chunks) for node in compiled.nodes)
    assert reused_questions < every_question / 3
    assert sum(len(r["recommendations"]) for r in fresh) > len(cases)  # rules did fire
