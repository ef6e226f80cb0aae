"""Every operator, alone, combined and negated, means the same to durable-rules as to the trace.

Hypothesis writes random conditions into a playbook, and random cases (with
missing values) into it; the evaluator asks durable-rules every question
(``cache_size=0``) and raises EngineFault if what fired differs from the
condition results in the trace.  The outcome is also compared with a small
reference reading of the YAML written here, independent of engine/conditions.py.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import Evaluator, compile_playbook, load_playbook_text
from engine.conditions import atom_matches
from engine.evaluate import _cell_reader
from engine.model import Atom, Interval
from tests.conftest import AS_OF

VARS: dict[str, dict[str, Any]] = {
    "opportunity.n": {"type": "number"},
    "opportunity.m": {"type": "number"},
    "opportunity.e": {"type": "enum", "values": ["a", "b", "c"]},
    "opportunity.w": {"type": "enum", "values": [0, 20, 40]},
    "opportunity.l": {"type": "list", "values": ["x", "y", "z"]},
    "opportunity.b": {"type": "boolean"},
}

numbers = st.sampled_from([-1, 0, 2, 2.5, 4, 6, 10, 11])
enum_values = st.sampled_from(["a", "b", "c"])
list_items = st.sampled_from(["x", "y", "z"])


@st.composite
def interval(draw: st.DrawFn) -> dict[str, Any]:
    low, high = sorted(draw(st.lists(numbers, min_size=2, max_size=2, unique=True)))
    return {draw(st.sampled_from(["gt", "gte"])): low, draw(st.sampled_from(["lt", "lte"])): high}


def atom() -> st.SearchStrategy[dict[str, Any]]:
    presence = st.one_of(
        st.fixed_dictionaries({"present": st.booleans()}), st.fixed_dictionaries({"missing": st.booleans()})
    )
    return st.one_of(
        st.fixed_dictionaries(
            {
                "opportunity.n": st.one_of(
                    numbers,
                    st.builds(
                        lambda op, x: {op: x},
                        st.sampled_from(["gt", "gte", "lt", "lte", "equals", "not_equals"]),
                        numbers,
                    ),
                    interval(),
                    st.builds(lambda xs: {"one_of": xs}, st.lists(numbers, min_size=1, max_size=3, unique=True)),
                    presence,
                    st.builds(  # against another variable, maybe scaled
                        lambda op, times: {op: {"var": "opportunity.m", **times}},
                        st.sampled_from(["gt", "gte", "lt", "lte", "equals", "not_equals"]),
                        st.one_of(st.just({}), st.builds(lambda x: {"times": x}, st.sampled_from([0.5, 2, 0.3]))),
                    ),
                    st.builds(lambda: {"var": "opportunity.m"}),
                )
            }
        ),
        st.fixed_dictionaries(
            {
                "opportunity.e": st.one_of(
                    enum_values,
                    st.builds(lambda op, x: {op: x}, st.sampled_from(["equals", "not_equals"]), enum_values),
                    st.builds(
                        lambda op, xs: {op: xs},
                        st.sampled_from(["one_of", "not_one_of"]),
                        st.lists(enum_values, min_size=1, max_size=3, unique=True),
                    ),
                    presence,
                )
            }
        ),
        st.fixed_dictionaries(
            {
                "opportunity.w": st.one_of(
                    st.sampled_from([0, 20, 40]), st.builds(lambda x: {"gte": x}, st.sampled_from([0, 20, 40]))
                )
            }
        ),
        st.fixed_dictionaries(
            {
                "opportunity.l": st.one_of(
                    st.builds(lambda x: {"contains": x}, list_items),
                    st.builds(
                        lambda op, xs: {op: xs},
                        st.sampled_from(["contains_all", "contains_any"]),
                        st.lists(list_items, min_size=1, max_size=3, unique=True),
                    ),
                    presence,
                )
            }
        ),
        st.fixed_dictionaries({"opportunity.b": st.one_of(st.booleans(), presence)}),
    )


conditions = st.recursive(
    atom(),
    lambda inner: st.one_of(
        st.builds(lambda xs: {"all": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda xs: {"any": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda x: {"not": x}, inner),
    ),
    max_leaves=6,
)

cases = st.fixed_dictionaries(
    {},
    optional={
        "n": numbers,
        "m": numbers,
        "e": enum_values,
        "w": st.sampled_from([0, 20, 40]),
        "l": st.lists(list_items, unique=True, max_size=3),
        "b": st.booleans(),
    },
)


def reference(condition: dict[str, Any], case: dict[str, Any]) -> bool | None:
    """The documented meaning, read straight from the YAML, in Kleene's three values: a test on a missing
    value is unknown (None) except present; not unknown is unknown; all/any as in the truth tables."""
    if "all" in condition:
        return kleene_all([reference(c, case) for c in condition["all"]])
    if "any" in condition:
        items = [reference(c, case) for c in condition["any"]]
        return True if True in items else (None if None in items else False)
    if "not" in condition:
        inner = reference(condition["not"], case)
        return None if inner is None else not inner
    results: list[bool | None] = []
    for var, test in condition.items():
        value = case.get(var.split(".")[1])
        test = test if isinstance(test, dict) and "var" not in test else {"equals": test}
        for op, x in test.items():
            if op == "present":
                results.append((value is not None) == x)
            elif op == "missing":
                results.append((value is None) == x)
            elif value is None:
                results.append(None)
            elif isinstance(x, dict):  # another variable's value, maybe scaled
                other = case.get(x["var"].split(".")[1])
                if other is None:
                    results.append(None)
                    continue
                scaled = other * x.get("times", 1)
                results.append(
                    {
                        "equals": scaled == value,
                        "not_equals": scaled != value,
                        "gt": value > scaled,
                        "gte": value >= scaled,
                        "lt": value < scaled,
                        "lte": value <= scaled,
                    }[op]
                )
            else:
                results.append(
                    {
                        "equals": lambda v, x: v == x,
                        "not_equals": lambda v, x: v != x,
                        "one_of": lambda v, x: v in x,
                        "not_one_of": lambda v, x: v not in x,
                        "gt": lambda v, x: v > x,
                        "gte": lambda v, x: v >= x,
                        "lt": lambda v, x: v < x,
                        "lte": lambda v, x: v <= x,
                        "contains": lambda v, x: x in v,
                        "contains_all": lambda v, x: all(i in v for i in x),
                        "contains_any": lambda v, x: any(i in v for i in x),
                    }[op](value, x)
                )
    return kleene_all(results)


def kleene_all(items: list[bool | None]) -> bool | None:
    return False if False in items else (None if None in items else True)


def playbook_text(rows: list[dict[str, Any]]) -> str:
    doc = {
        "playbook": {"id": "gen", "version": "1", "languages": ["en"], "title": {"en": "generated"}},
        "inputs": {name: {**spec, "label": {"en": name}} for name, spec in VARS.items()},
        "decisions": {
            "matched": {
                "label": {"en": "matched rows"},
                "source": {"guide": "G-17", "quote": "test"},
                "type": "list",
                "values": [f"r{i}" for i in range(len(rows))],
                "hit_policy": "collect",
                "rows": [{"id": f"r{i}", "label": {"en": "r"}, "when": c, "then": f"r{i}"} for i, c in enumerate(rows)],
            }
        },
    }
    return json.dumps(doc)  # JSON is YAML


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(conditions, min_size=1, max_size=4), st.lists(cases, min_size=1, max_size=8))
def test_durable_rules_and_the_trace_agree(rows: list[dict[str, Any]], inputs: list[dict[str, Any]]) -> None:
    playbook = load_playbook_text(playbook_text(rows), "generated.yaml")
    with compile_playbook(playbook) as compiled:
        evaluator = Evaluator(compiled, cache_size=0)  # every question goes to durable-rules
        for i, case in enumerate(inputs):
            result = evaluator.evaluate_case({"opportunity": case}, AS_OF, str(i))
            expected = [f"r{k}" for k, c in enumerate(rows) if reference(c, case) is True]
            assert (result.decisions["matched"] or []) == expected
            [step] = result.trace
            assert [f["row"] for f in step["fired"]] == expected
            assert compiled.live_facts() == []


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(conditions, min_size=1, max_size=4), st.lists(cases, min_size=2, max_size=12))
def test_reused_answers_give_the_same_results_and_traces(
    rows: list[dict[str, Any]], inputs: list[dict[str, Any]]
) -> None:
    """Answers reused for values in the same cells are exactly what durable-rules says afresh."""
    playbook = load_playbook_text(playbook_text(rows), "generated.yaml")
    with compile_playbook(playbook) as compiled:
        fresh = Evaluator(compiled, cache_size=0)
        reusing = Evaluator(compiled)
        for _ in range(2):  # the second round answers from memory
            for i, case in enumerate(inputs):
                want = fresh.evaluate_case({"opportunity": case}, AS_OF, str(i)).to_json()
                assert reusing.evaluate_case({"opportunity": case}, AS_OF, str(i)).to_json() == want


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(conditions, min_size=17, max_size=40), st.lists(cases, min_size=2, max_size=10))
def test_answers_reused_chunk_by_chunk_are_what_durable_rules_says_afresh(
    rows: list[dict[str, Any]], inputs: list[dict[str, Any]]
) -> None:
    """A table wider than one question fact is asked in chunks, each reused by its own cells: the same
    results and traces as every chunk asked for every case, and the same rows as the reference reading."""
    playbook = load_playbook_text(playbook_text(rows), "generated.yaml")
    with compile_playbook(playbook) as compiled:
        assert len(compiled.nodes[0].chunks) > 1
        fresh = Evaluator(compiled, cache_size=0)
        reusing = Evaluator(compiled)
        for _ in range(2):
            for i, case in enumerate(inputs):
                want = fresh.evaluate_case({"opportunity": case}, AS_OF, str(i)).to_json()
                got = reusing.evaluate_case({"opportunity": case}, AS_OF, str(i)).to_json()
                assert got == want
                assert (got["decisions"]["matched"] or []) == [
                    f"r{k}" for k, c in enumerate(rows) if reference(c, case) is True
                ]


cuts = st.lists(st.sampled_from([-1e300, -3, 0, 0.1, 2, 2.5, 7, 1e15, 1e300, 10**400]), max_size=4, unique=True)
kinds = st.lists(st.sampled_from(["gt", "gte", "lt", "lte", "equals", "not_equals", "between"]), min_size=1, max_size=4)


@settings(max_examples=200, deadline=None)
@given(cuts, kinds)
def test_numbers_in_one_cell_pass_and_fail_the_same_tests(bounds: list[Any], ops: list[str]) -> None:
    """Cells a number line is cut into are merged only where every test answers alike: reuse stays exact,
    with huge bounds and bounds only an integer can hold too."""
    atoms = []
    for op in ops:
        for x in bounds:
            if op in ("equals", "not_equals"):
                atoms.append(Atom("opportunity.n", "one_of" if op == "equals" else "not_one_of", (x,), op, None))  # type: ignore[arg-type]
                continue
            low, high = (x, None) if op in ("gt", "gte") else (None, x) if op in ("lt", "lte") else (x, x * 2 + 1)
            interval = Interval(low, op != "gt", high, op != "lt")
            atoms.append(Atom("opportunity.n", "interval", interval, op, None))  # type: ignore[arg-type]
    cell = _cell_reader("opportunity.n", atoms, "number", None)
    assert cell is not None
    probes = [-1e308, -1e300, -5, -3, -1, 0, 0.05, 0.1, 1, 2, 2.2, 2.5, 3, 7, 8, 15, 1e15, 1e16, 1e300, 1e308, 10**400]
    by_cell: dict[Any, list[bool | None]] = {}
    for x in probes:
        results = [atom_matches(a, {"opportunity.n": x}) for a in atoms]
        assert by_cell.setdefault(cell(x), results) == results, (x, cell(x))
