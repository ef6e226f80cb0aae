"""Each durable-rules trap the design could meet, shown unable to hurt a result.

See ../shared/engine-notes/durable_rules.md and the docstring of engine/compile.py.
"""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from engine import CompiledPlaybook, EngineFault, Evaluator, PlaybookError, compile_playbook, load_playbook_text
from engine.compile import QUESTION_ID, SESSION_ID, _fact_ids
from engine.compile import fnv1a32 as compiled_fnv1a32
from tests.conftest import AS_OF


def fnv1a32(text: str) -> int:
    h = 0x811C9DC5
    for byte in text.encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h


def random_case(rng: random.Random, i: int) -> tuple[str, dict[str, Any]]:
    opportunity: dict[str, Any] = {"id": f"deal-{i}", "amount": rng.randint(1, 1000), "period_target": 1000}
    if rng.random() < 0.8:
        opportunity["weeks_to_close"] = rng.choice([rng.randint(-2, 20), rng.random() * 20])
    if rng.random() < 0.5:
        opportunity["win_rate"] = rng.choice([0, 20, 40, 60, 80])
    opportunity["milestones"] = rng.sample(["a", "b", "c", "d"], rng.randint(0, 4))
    account = {"segment": rng.choice(["gov", "bank", "retail"]), "vip": rng.random() < 0.3}
    return f"deal-{i}", {"opportunity": opportunity, "account": account}


def test_colliding_ids_cannot_reject_a_case(compiled: CompiledPlaybook) -> None:
    # These two ids share a 32-bit FNV-1a hash: as fact ids in one session, the second would be refused.
    assert fnv1a32("deal-309876") == fnv1a32("deal-1122490")
    evaluator = Evaluator(compiled, cache_size=0)
    cases = [
        ("deal-309876", {"id": "deal-309876", "opportunity": {"weeks_to_close": 1}}),
        ("deal-1122490", {"id": "deal-1122490", "opportunity": {"weeks_to_close": 1}}),
    ]
    results = list(evaluator.evaluate(cases, AS_OF))
    assert [r.case for r in results] == ["deal-309876", "deal-1122490"]  # type: ignore[union-attr]
    assert all(r.decisions["funnel_layer"] == "bottom" for r in results)  # type: ignore[union-attr]


def test_the_one_question_never_collides_with_the_session_state() -> None:
    assert fnv1a32(QUESTION_ID) != fnv1a32(f"sid-{SESSION_ID}")


def test_the_session_holds_nothing_between_questions(compiled: CompiledPlaybook) -> None:
    evaluator = Evaluator(compiled, cache_size=0)
    rng = random.Random(3)
    before = compiled.questions_asked
    for item in evaluator.evaluate((random_case(rng, i) for i in range(3000)), AS_OF):
        assert not hasattr(item, "code"), item
    assert compiled.questions_asked - before == 3000 * len(compiled.nodes)
    assert compiled.live_facts() == []


def test_no_background_threads_and_every_action_ran_before_return(pipeline: Any) -> None:
    before = threading.active_count()
    with compile_playbook(pipeline) as compiled:
        evaluator = Evaluator(compiled, cache_size=0)
        result = evaluator.evaluate_case({"opportunity": {"weeks_to_close": 1, "win_rate": 80}}, AS_OF, "c")
        assert threading.active_count() == before
        assert [r["id"] for r in result.recommendations] == ["follow_up"]


class _BrokenActions(CompiledPlaybook):
    """Actions that raise, as a bug in an action would: durable-rules swallows such errors."""

    def _action(self, node_index: int, member: str):  # type: ignore[no-untyped-def]
        def explode(c: Any) -> None:
            raise RuntimeError("boom")

        return explode


def test_an_exception_inside_an_action_fails_loudly(pipeline: Any) -> None:
    with _BrokenActions(pipeline) as compiled:
        with pytest.raises(EngineFault, match="boom"):
            Evaluator(compiled).evaluate_case({"opportunity": {"weeks_to_close": 1}}, AS_OF, "c")
        # and the session is left clean for the next question
        assert compiled.live_facts() == []


def test_absence_only_conditions_terminate_and_are_right() -> None:
    text = """
playbook: {id: absent, version: "1", languages: [en], title: {en: t}}
inputs:
  account.name: {type: string, label: {en: name}}
decisions:
  nameless:
    label: {en: nameless}
    source: {guide: G-04, quote: q}
    type: boolean
    rows:
      - {id: yes_row, label: {en: y}, when: {account.name: {present: false}}, then: true}
      - {id: no_row, label: {en: n}, when: {not: {account.name: {present: false}}}, then: false}
"""
    with compile_playbook(load_playbook_text(text)) as compiled:
        evaluator = Evaluator(compiled, cache_size=0)
        assert evaluator.evaluate_case({}, AS_OF, "a").decisions["nameless"] is True
        assert evaluator.evaluate_case({"account": {"name": "x"}}, AS_OF, "b").decisions["nameless"] is False


def test_a_case_no_row_matches_is_not_lost(compiled: CompiledPlaybook) -> None:
    result = Evaluator(compiled, cache_size=0).evaluate_case({"opportunity": {}}, AS_OF, "empty")
    assert result.case == "empty"
    assert result.decisions["funnel_layer"] is None


def test_more_playbooks_than_a_ruleset_has_sessions(pipeline: Any) -> None:
    # Each compiled playbook uses one session of its own ruleset; closing frees the ruleset.
    for _ in range(1100):
        with compile_playbook(pipeline) as compiled:
            Evaluator(compiled, cache_size=0).evaluate_case({"opportunity": {"weeks_to_close": 3}}, AS_OF, "c")


def test_a_closed_playbook_refuses_questions(pipeline: Any) -> None:
    compiled = compile_playbook(pipeline)
    compiled.close()
    with pytest.raises(EngineFault, match="closed"):
        Evaluator(compiled).evaluate_case({"opportunity": {"weeks_to_close": 3}}, AS_OF, "c")


def test_threads_sharing_one_playbook_get_their_own_results(compiled: CompiledPlaybook) -> None:
    rng = random.Random(11)
    cases = [random_case(rng, i) for i in range(2000)]
    expected = {r.case: r.to_json() for r in Evaluator(compiled).evaluate(cases, AS_OF)}  # type: ignore[union-attr]
    shared = Evaluator(compiled, cache_size=0)

    def work(chunk: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        return [r.to_json() for r in shared.evaluate(chunk, AS_OF)]  # type: ignore[union-attr]

    with ThreadPoolExecutor(4) as pool:
        got = [r for chunk in pool.map(work, [cases[i::4] for i in range(4)]) for r in chunk]
    assert len(got) == len(cases)
    assert {r["case"]: r for r in got} == expected


def test_one_hundred_thousand_distinct_cases_give_one_hundred_thousand_results(compiled: CompiledPlaybook) -> None:
    rng = random.Random(7)
    seen: set[str] = set()
    count = 0
    for item in Evaluator(compiled).evaluate((random_case(rng, i) for i in range(100_000)), AS_OF):
        assert not hasattr(item, "code"), item
        seen.add(item.case)  # type: ignore[union-attr]
        count += 1
    assert count == len(seen) == 100_000


def test_a_node_of_many_interval_rows_on_one_number_does_not_overflow_durable_rules() -> None:
    # In one fact, durable-rules overflows its match stack (error 303) past ~64 pending partial
    # matches: 66 rows of amount bands did, for a large amount.  Nodes are asked in chunks.
    rows = "\n".join(
        f"      - {{id: b{i}, label: {{en: b}}, then: {i}, "
        f"when: {{opportunity.amount: {{gte: {i * 1000}, lt: {(i + 1) * 1000}}}}}}}"
        for i in range(100)
    )
    text = f"""
playbook: {{id: bands, version: "1", languages: [en], title: {{en: t}}}}
inputs:
  opportunity.amount: {{type: number, label: {{en: amount}}}}
decisions:
  band:
    label: {{en: band}}
    source: {{guide: G-16, quote: q}}
    type: number
    rows:
{rows}
"""
    with compile_playbook(load_playbook_text(text)) as compiled:
        evaluator = Evaluator(compiled, cache_size=0)
        for amount in (500, 64_500, 65_500, 99_999):
            assert (
                evaluator.evaluate_case({"opportunity": {"amount": amount}}, AS_OF, "c").decisions["band"]
                == amount // 1000
            )


def test_numbers_durable_rules_cannot_read_are_sent_as_an_equivalent_neighbour() -> None:
    # durable-rules' JSON reader refuses 1e-05 and 1e+16 (an exponent without a point); Python writes
    # those floats that way.  The case must still be evaluated, and alike on both sides of each bound.
    text = """
playbook: {id: tiny, version: "1", languages: [en], title: {en: t}}
inputs:
  opportunity.share: {type: number, label: {en: share}}
decisions:
  level:
    label: {en: level}
    source: {guide: G-16, quote: q}
    values: [none, some, much]
    rows:
      - {id: none, label: {en: n}, when: {opportunity.share: {lte: 0}}, then: none}
      - {id: some, label: {en: s}, when: {opportunity.share: {gt: 0, lt: 0.5}}, then: some}
      - {id: much, label: {en: m}, when: {opportunity.share: {gte: 0.5}}, then: much}
"""
    with compile_playbook(load_playbook_text(text)) as compiled:
        evaluator = Evaluator(compiled, cache_size=0)
        for share, level in ((1e-05, "some"), (-2e-07, "none"), (1e16, "much"), (0.0, "none")):
            result = evaluator.evaluate_case({"opportunity": {"share": share}}, AS_OF, "c")
            assert result.decisions["level"] == level
            assert result.inputs["opportunity.share"] == share  # the case keeps its own value


def test_a_bound_durable_rules_cannot_read_is_refused_at_validation() -> None:
    text = """
playbook: {id: tiny, version: "1", languages: [en], title: {en: t}}
inputs:
  opportunity.share: {type: number, label: {en: share}}
decisions:
  level:
    label: {en: level}
    source: {guide: G-16, quote: q}
    values: [some]
    rows:
      - {id: some, label: {en: s}, when: {opportunity.share: {gt: 0.00001}}, then: some}
"""
    with pytest.raises(PlaybookError) as info:
        load_playbook_text(text)
    assert [p.code for p in info.value.problems] == ["number_unreadable"]


def _bands(count: int) -> Any:
    """A table of ``count`` adjacent amount bands: wider than one question fact, so asked in a batch of chunks."""
    rows = "\n".join(
        f"      - {{id: b{i}, label: {{en: b}}, then: {i}, "
        f"when: {{opportunity.amount: {{gte: {i * 1000}, lt: {(i + 1) * 1000}}}}}}}"
        for i in range(count)
    )
    text = f"""
playbook: {{id: bands{count}, version: "1", languages: [en], title: {{en: t}}}}
inputs:
  opportunity.amount: {{type: number, label: {{en: amount}}}}
decisions:
  band:
    label: {{en: band}}
    source: {{guide: G-16, quote: q}}
    type: number
    rows:
{rows}
"""
    return load_playbook_text(text)


def test_the_facts_of_one_batch_never_share_a_32_bit_identity() -> None:
    assert fnv1a32("deal-309876") == compiled_fnv1a32("deal-309876")  # the same hash as durable-rules'
    ids = _fact_ids(200_000)
    assert len({fnv1a32(i) for i in ids} | {fnv1a32(f"sid-{SESSION_ID}")}) == len(ids) + 1


def test_a_batch_of_questions_is_answered_by_durable_rules_and_leaves_nothing_behind() -> None:
    with compile_playbook(_bands(100)) as compiled:
        [node] = compiled.nodes
        assert len(node.chunks) == 7
        evaluator = Evaluator(compiled, cache_size=0)
        before = compiled.questions_asked
        for amount in range(0, 100_000, 997):
            result = evaluator.evaluate_case({"opportunity": {"amount": amount}}, AS_OF, "c")
            assert result.decisions["band"] == amount // 1000
            # the same as each chunk asked alone, one fact at a time
            assert compiled.ask(node, result.values) == (f"b{amount // 1000}",)
        assert compiled.questions_asked - before == 2 * 7 * len(range(0, 100_000, 997))
        assert compiled.live_facts() == []


class _LyingActions(CompiledPlaybook):
    """Actions that report the member after the one that fired, as a mix-up inside a batch would."""

    def _action(self, node_index: int, member: str):  # type: ignore[no-untyped-def]
        members = self.playbook.decisions["band"].rows
        ids = [row.id for row in members]
        told = ids[(ids.index(member) + 1) % len(ids)] if member else member

        def record(c: Any) -> None:
            self._fired.append((node_index, told))

        return record


class _ForgetfulActions(CompiledPlaybook):
    """A catch-all that does not report its question: as if durable-rules had dropped that fact of a batch."""

    def _action(self, node_index: int, member: str):  # type: ignore[no-untyped-def]
        def record(c: Any) -> None:
            if member or node_index != 3:
                self._fired.append((node_index, member))

        return record


@pytest.mark.parametrize(
    ("host", "message"), [(_LyingActions, "durable-rules fired"), (_ForgetfulActions, "did not see the questions")]
)
def test_a_wrong_or_missing_answer_in_a_batch_fails_loudly(host: type[CompiledPlaybook], message: str) -> None:
    with host(_bands(100)) as compiled:
        with pytest.raises(EngineFault, match=message):
            Evaluator(compiled).evaluate_case({"opportunity": {"amount": 64_500}}, AS_OF, "c")
        assert compiled.live_facts() == []


def test_an_exception_inside_an_action_of_a_batch_fails_loudly() -> None:
    with _BrokenActions(_bands(100)) as compiled:
        with pytest.raises(EngineFault, match="boom"):
            Evaluator(compiled).evaluate_case({"opportunity": {"amount": 64_500}}, AS_OF, "c")
        assert compiled.live_facts() == []
