"""Cases -> results: every decision, the recommendations, and the trace.

For each case, nodes run in the playbook's dependency order.  For each node the
engine first reads every condition of its rows (the trace needs each result);
that vector of condition results is the question's identity.  durable-rules is
asked each distinct question once per evaluator, remembered by the cells of the
values read; the rows it fired are kept and reused for every later case in the
same cells, which is exact: a row's verdict depends on nothing else.  A node
wider than one question fact is asked in chunks, each remembered by the results
of its own tests (its part of the question), and the chunks a case is new to are
asked in one batch.  When
durable-rules is asked, its answer is compared with the condition results, and
any disagreement is an :class:`~engine.errors.EngineFault`, never a silent result.

Every case yields exactly one :class:`Result` or one :class:`CaseError`.
"""

from __future__ import annotations

import datetime as dt
import math
from bisect import bisect_left
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from operator import itemgetter
from typing import Any

from engine.compile import CompiledNode, CompiledPlaybook
from engine.conditions import OPERATORS, atom_matches, atoms_of, evaluate_condition, items_of, numbers_of
from engine.errors import CaseError, EngineFault, Location
from engine.model import (
    AllOf,
    AnyOf,
    Atom,
    Compare,
    Condition,
    Decision,
    InputField,
    Literal,
    Not,
    Output,
    Playbook,
    Rule,
    ValueOf,
)

__all__ = ["Evaluator", "Result", "condition_trace", "negated_atoms", "prepare_inputs"]

DEFAULT_CACHE_SIZE = 200_000
"""Distinct questions remembered per evaluator; past this the memory is cleared (results never change)."""


@dataclass
class Result:
    """The outcome for one case.  ``to_json`` is the documented output (schemas/result.schema.json)."""

    case: str
    as_of: str
    playbook: Playbook
    inputs: dict[str, Any]
    decisions: dict[str, Any]
    recommendations: list[dict[str, Any]]
    derived: list[dict[str, Any]] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict, repr=False)
    # (node plan, fired members, atom results, chosen members, decisions a rule set, members whose condition
    # is unknown): the trace, unexpanded; a group of rules has one step per rule that fired, and one for those
    # left undetermined
    steps: list[
        tuple[Any, tuple[int, ...], tuple[bool | None, ...], tuple[int, ...], dict[str, Any] | None, tuple[int, ...]]
    ] = field(default_factory=list, repr=False)
    _trace: list[dict[str, Any]] | None = field(default=None, repr=False)

    @property
    def trace(self) -> list[dict[str, Any]]:
        """Every step in evaluation order: derivations, each table, each rule that fired, each rule a missing
        value left undetermined (built on first use)."""
        if self._trace is None:
            self._trace = [{"derived": d} for d in self.derived]
            for step in self.steps:
                self._trace.extend(self._step(*step))
        return self._trace

    def _conditions(self, plan: Any, member: int, results: tuple[bool | None, ...]) -> list[dict[str, Any]]:
        atoms, start = plan.atoms[member], plan.offsets[member]
        return condition_trace(atoms, plan.negations[member], results[start : start + len(atoms)], self.values)

    def _missing(self, plan: Any, members: Iterable[int]) -> list[str]:
        """The variables, missing in this case, that the tests of these members read: why they are unknown."""
        read = (v for m in members for a in plan.atoms[m] if a.op != "present" for v in _reads(a))
        return list(dict.fromkeys(v for v in read if self.values.get(v) is None))

    def undetermined(self) -> dict[str, list[str]]:
        """Each decision a missing value left undetermined -> the case's missing input fields it waits for.

        Followed down to what the case should hold: a decision missing because another one is becomes that
        one's missing fields, a derived field becomes the fields it is derived from (itself when those are
        all there, as for a share of a zero target).  A decision no row fits, though nothing is missing,
        has no entry: nothing the case could add would decide it.
        """
        direct = {
            plan.name: self._missing(plan, unknown)
            for plan, _, _, _, _, unknown in self.steps
            if plan.decision is not None and unknown and self.decisions.get(plan.name) is None
        }
        inputs = self.playbook.inputs

        def fields(var: str, seen: frozenset[str]) -> list[str]:
            if var in seen:
                return []
            below = direct.get(var)
            derive = inputs[var].derive if var in inputs else None
            if derive is not None:
                below = [source for source in derive[1] if self.values.get(source) is None]
            if not below:
                return [var]
            return [f for v in below for f in fields(v, seen | {var})]

        return {name: list(dict.fromkeys(fields(name, frozenset()))) for name in direct}

    def _step(
        self,
        plan: Any,
        fired: tuple[int, ...],
        results: tuple[bool | None, ...],
        chosen: tuple[int, ...],
        sets: dict[str, Any] | None,
        unknown: tuple[int, ...],
    ) -> list[dict[str, Any]]:
        name = plan.cnode.node.name
        if plan.cnode.node.kind == "rules" and not fired:
            return [
                {
                    "undetermined": {
                        "rule": plan.cnode.members[i],
                        "missing": self._missing(plan, (i,)),
                        "conditions": self._conditions(plan, i, results),
                        "source": self.playbook.rules_by_id[plan.cnode.members[i]].source.guide,
                    }
                }
                for i in unknown
            ]
        if plan.cnode.node.kind == "rules":
            rule = self.playbook.rules_by_id[plan.cnode.members[chosen[0]]]
            entry: dict[str, Any] = {
                "rule": rule.id,
                "conditions": self._conditions(plan, chosen[0], results),
                "source": rule.source.ref,
            }
            if sets:
                entry["set"] = sets
            if rule.recommends:
                entry["recommend"] = [rec.action for rec in rule.recommends]
            return [entry]
        decision = self.playbook.decisions[name]
        entry = {
            "decision": name,
            "hit_policy": decision.hit_policy,
            "value": self.decisions[name],
            "fired": [
                {
                    "row": decision.rows[i].id,
                    "chosen": i in chosen,
                    "conditions": self._conditions(plan, i, results),
                    "source": decision.rows[i].source.ref,
                }
                for i in fired
            ],
            "source": decision.source.ref,
        }
        if self.decisions[name] is None and unknown:
            entry["missing"] = self._missing(plan, unknown)  # undetermined: the inputs that would have told
        return [entry]

    def fired(self) -> dict[str, list[str]]:
        """The rows each table chose, and under ``$rules`` the rules that fired: what the audit log keeps."""
        fired: dict[str, list[str]] = {}
        rules: list[str] = []
        for plan, _, _, chosen, _, _ in self.steps:  # once per stored case: kept lean
            if chosen:
                members = plan.cnode.members
                if plan.decision is None:
                    rules += [members[i] for i in chosen]
                else:
                    fired[plan.name] = [members[i] for i in chosen]
        if rules:
            fired["$rules"] = rules
        return fired

    def to_json(self, lang: str = "en", *, trace: bool = True) -> dict[str, Any]:
        """The documented output; ``trace=False`` leaves the trace out (for reports that do not show it)."""
        pb = self.playbook
        out = {
            "case": self.case,
            "as_of": self.as_of,
            "playbook": {"id": pb.id, "version": pb.version, "hash": pb.content_hash},
            "inputs": self.inputs,
            "decisions": self.decisions,
            "recommendations": [
                {**rec, "label": pb.actions[rec["id"]].label.get(lang, rec["id"])} for rec in self.recommendations
            ],
        }
        out["undetermined"] = self.undetermined()
        if trace:
            out["trace"] = self.trace
        return out


def _reads(atom: Atom) -> tuple[str, ...]:
    """The variables a test reads: its own, and the other one it compares with."""
    return (atom.var, atom.operand.other) if isinstance(atom.operand, Compare) else (atom.var,)


def condition_trace(
    atoms: Iterable[Atom], negations: Iterable[bool], results: Iterable[bool | None], values: dict[str, Any]
) -> list[dict[str, Any]]:
    """A condition as the trace shows it: each test, the input it read, that input's value, the result
    (``None``: unknown, the value is missing)."""
    out = []
    for atom, negated, result in zip(atoms, negations, results, strict=True):
        item: dict[str, Any] = {"input": atom.var, "test": atom.text, "value": values.get(atom.var), "result": result}
        if isinstance(atom.operand, Compare):
            other = atom.operand.other
            item["compared_with"] = {"input": other, "value": values.get(other)}
        if negated:
            item["negated"] = True
        out.append(item)
    return out


def negated_atoms(condition: Condition | None) -> list[bool]:
    """For each atom (in report order): does it stand under an odd number of ``not``?"""
    out: list[bool] = []

    def walk(cond: Condition, negated: bool) -> None:
        if isinstance(cond, Atom):
            out.append(negated)
        elif isinstance(cond, Not):
            walk(cond.item, not negated)
        elif isinstance(cond, AllOf | AnyOf):
            for item in cond.items:
                walk(item, negated)

    if condition is not None:
        walk(condition, False)
    return out


def _parse_date(value: Any) -> dt.date | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.date.fromisoformat(value[:10])
    except ValueError:
        return None


def _tag(value: Any) -> str:
    # 1 == True and "1" != 1 in Python; the declared type decides which a value may match.
    if isinstance(value, bool):
        return "b"
    if isinstance(value, int | float):
        return "n"
    return "s" if isinstance(value, str) else "?"


def _reader(field: InputField, share: str | None = None) -> Callable[[Any], Any]:
    """The function giving a raw value in the field's declared type, or raising ValueError saying why not.

    ``share`` names the ratio a number field is a source of: then a negative value is refused too
    (a negative amount over a negative target would be a positive share).
    """
    kind = field.type
    if kind == "number":

        def number(value: Any) -> Any:
            if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
                raise ValueError(f"'{value}' is not a number")
            try:
                finite = math.isfinite(value)
            except OverflowError:
                raise ValueError("an integer too large to be a finite number") from None
            if not finite:
                raise ValueError(f"'{value}' is not a finite number")
            if share is not None and value < 0:
                raise ValueError(f"'{value}' is negative; the share {share} is derived from numbers of at least 0 only")
            return value

        return number
    if kind in ("boolean", "string"):
        wanted, what = (bool, "true or false") if kind == "boolean" else (str, "text")

        def plain(value: Any) -> Any:
            if not isinstance(value, wanted):
                raise ValueError(f"'{value}' is not {what}")
            return value

        return plain
    if kind == "date":

        def date(value: Any) -> Any:
            parsed = _parse_date(value)
            if parsed is None:
                raise ValueError(f"'{value}' is not a date (YYYY-MM-DD)")
            return parsed.isoformat()

        return date
    declared = field.values or ()
    canonical = {(_tag(v), v): v for v in declared}
    choices = ", ".join(str(v) for v in declared)

    def one(value: Any) -> Any:
        try:
            return canonical[(_tag(value), value)]
        except (KeyError, TypeError):
            raise ValueError(f"'{value}' is not one of: {choices}") from None

    if kind == "enum":
        return one

    def many(value: Any) -> Any:
        if not isinstance(value, list):
            raise ValueError(f"'{value}' is not a list")
        items = {one(item) for item in value}
        return [v for v in declared if v in items]

    return many


@dataclass(frozen=True)
class _InputPlan:
    readers: tuple[tuple[str, str, str, Callable[[Any], Any]], ...]  # name, object, key, reader
    derived: tuple[tuple[str, str, tuple[str, ...]], ...]  # name, how, sources


def _input_plan(playbook: Playbook) -> _InputPlan:
    shares = playbook.share_sources
    readers = tuple((name, *name.split(".", 1), _reader(f, shares.get(name))) for name, f in playbook.inputs.items())
    derived = tuple((name, f.derive[0], f.derive[1]) for name, f in playbook.inputs.items() if f.derive is not None)
    return _InputPlan(readers, derived)  # type: ignore[arg-type]


def prepare_inputs(
    playbook: Playbook, case: dict[str, Any], as_of: dt.date, case_id: str, plan: _InputPlan | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Declared input fields of a case, checked and typed, plus the derivations made."""
    plan = plan or _input_plan(playbook)
    values: dict[str, Any] = {}
    derived: list[dict[str, Any]] = []
    for name, obj_name, key, read in plan.readers:
        obj = case.get(obj_name)
        if obj is None:
            continue
        if not isinstance(obj, dict):
            raise CaseError(case_id, "bad_input", f"'{obj_name}' should be an object")
        raw = obj.get(key)
        if raw is None:
            continue
        try:
            values[name] = read(raw)
        except ValueError as exc:
            raise CaseError(case_id, "bad_input", f"{name}: {exc}", input=name) from None
    for name, how, sources in plan.derived:
        if name in values or any(source not in values for source in sources):
            continue
        if how in ("weeks_until", "weeks_since"):
            days = (dt.date.fromisoformat(values[sources[0]]) - as_of).days
            value: float = round((days if how == "weeks_until" else -days) / 7, 4)
            basis = {sources[0]: values[sources[0]], "as_of": as_of.isoformat()}
        else:
            numerator, denominator = (values[s] for s in sources)
            if denominator == 0:
                continue  # no share of a zero target: the field stays missing, as the trace shows
            value = round(numerator / denominator, 6)
            basis = {s: values[s] for s in sources}
        values[name] = value
        derived.append({"input": name, "how": how, "value": value, "from": basis})
    return values, derived


_OTHER = ("other",)  # the cell of any value no test names


def _cell_reader(
    var: str, atoms: list[Atom], kind: str, values: tuple[Any, ...] | None
) -> Callable[[Any], Hashable] | None:
    """A function from a value of ``var`` to its cell: values in one cell pass and fail the same tests.

    This is what makes reusing an answer exact: every test of the node gives the
    same result for every value of a cell (``tests/test_conditions.py`` checks it).
    """
    mine = [a for a in atoms if a.var == var]
    if kind == "list":
        tested = frozenset(x for a in mine if a.op.startswith("contains") for x in items_of(a))
        if values is not None and tested.issuperset(values):
            # every item is tested: the list itself (typed inputs are deduplicated, in declared order) is its cell
            return lambda v: None if v is None else tuple(v)
        return lambda v: None if v is None else tested.intersection(v)
    numeric = kind == "number" or (
        kind == "enum"
        and values is not None
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    )
    if numeric:
        bounds = sorted({n for a in mine for n in numbers_of(a)})
        count = len(bounds)
        same = _same_cells(var, mine, bounds)

        def numeric_cell(v: Any) -> Hashable:
            if v is None:
                return None
            i = bisect_left(bounds, v)
            return same[2 * i + 1 if i < count and bounds[i] == v else 2 * i]

        return numeric_cell
    named = frozenset(x for a in mine if a.op in ("equals", "not_equals", "one_of", "not_one_of") for x in items_of(a))
    domain = (True, False) if kind == "boolean" else values
    if domain and all(v in named for v in domain):
        return None  # every possible value is named: the value is its own cell
    return lambda v: None if v is None else (v if v in named else _OTHER)


def _same_cells(var: str, atoms: list[Atom], bounds: list[Any]) -> list[int]:
    """For each interval the bounds cut a number line into (even: between bounds, odd: on one), the first
    one its tests answer alike: below the lowest bound and above the highest, for one, are one cell when
    every test says the same of both, and so is a bound a test includes with the interval beside it."""
    tests = [a for a in atoms if a.var == var and a.op not in ("present", "compare")]
    samples: list[Any] = []  # a value in each interval
    unmerged = list(range(2 * len(bounds) + 1))
    try:
        for i, bound in enumerate(bounds):
            below = bound - max(1, abs(bound)) if i == 0 else bounds[i - 1] / 2 + bound / 2
            samples += [below, bound]
        samples.append(bounds[-1] + max(1, abs(bounds[-1])) if bounds else 0)
        if any(not a < b for a, b in pairwise(samples)) or not all(map(math.isfinite, samples)):
            return unmerged  # some interval has no value that can be written (adjacent floats): no merging
    except OverflowError:
        return unmerged
    first: dict[tuple[bool | None, ...], int] = {}
    return [first.setdefault(tuple(atom_matches(t, {var: x}) for t in tests), cell) for cell, x in enumerate(samples)]


_Answer = tuple[tuple[int, ...], tuple[bool | None, ...], tuple[int, ...]]
"""Fired members, every atom's result, members whose condition is unknown (members by index in the node)."""

_Part = tuple[tuple[int, ...], tuple[int, ...]]
"""A chunk's fired members and members whose condition is unknown (by index in the node)."""


def _picker(indices: Sequence[int]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """A function giving the items at these indices of a sequence, as a tuple (one C call for several)."""
    if not indices:
        return lambda _: ()
    if len(indices) == 1:
        only = indices[0]
        return lambda items: (items[only],)
    return itemgetter(*indices)


@dataclass
class _ChunkPlan:
    """The members of a node durable-rules is asked about in one fact, and the tests that decide them alone."""

    index: int  # in the compiled node's chunks
    members: int  # its members (bits of an int, by index in the node)
    # the results of the chunk's own tests (from the node's distinct tests): what its answer is remembered by,
    # as exact as the cells of its values (values in one cell give every test the same result) and cheaper to read
    key: Callable[[Sequence[bool | None]], tuple[bool | None, ...]]
    other: list[int]  # members whose condition is not all of some tests: read by walking it
    answers: dict[Hashable, _Part] = field(default_factory=dict)


@dataclass
class _NodePlan:
    cnode: CompiledNode
    conditions: list[Condition | None]
    atoms: list[list[Atom]]
    offsets: list[int]  # where each member's atoms start in the node's atom results
    negations: list[list[bool]]
    readers: list[tuple[str, Callable[[Any], Hashable] | None]]  # None: the value is its own cell
    # tests of one variable against another: no cell of one value decides them, so their results join the key
    pairs: list[Atom]
    decision: Decision | None  # for a table
    literal: bool  # every row's output is a constant: the rows chosen and the value follow from the key
    rules: list[Rule]  # for a group of rules, by member
    # by key: fired members, atom results, members whose condition is unknown
    answers: dict[Hashable, _Answer] = field(default_factory=dict)
    # a table's whole outcome by key: fired rows, atom results, chosen rows, value, rows unknown
    outcomes: dict[Hashable, tuple[tuple[int, ...], tuple[bool | None, ...], tuple[int, ...], Any, tuple[int, ...]]] = (
        field(default_factory=dict)
    )
    name: str = ""  # the decision a table makes
    # A node too wide for one fact is asked in chunks; each chunk's answer is reused by the results of its own
    # tests, far fewer than the node's: a case new to a wide node is mostly made of chunks already answered.
    chunks: list[_ChunkPlan] = field(default_factory=list)
    # by member, if its condition is all of some tests: those tests, as indices into ``tests`` (distinct tests)
    flat: list[tuple[int, ...] | None] = field(default_factory=list)
    tests: list[Atom] = field(default_factory=list)  # the node's distinct tests: one shared by many rows is read once
    readings: list[Callable[[dict[str, Any]], bool | None]] = field(default_factory=list)  # by test: its result
    # the results of every atom of every member, in report order, from the results of the distinct tests
    results: Callable[[Sequence[bool | None]], tuple[bool | None, ...]] = tuple
    # by distinct test, the members (bits of an int) whose condition is all of some tests, this one among them:
    # a member holds when none of its tests is false or unknown, found for all members in a few operations
    holders: list[int] = field(default_factory=list)
    conjunctions: int = 0  # the members whose condition is all of some tests (bits)
    # by member of a group of rules: each recommendation as (action, its parameters as (name, the variable read
    # or None, else the constant), the action's course source)
    recommends: list[list[tuple[str, list[tuple[str, str | None, Any]], dict[str, Any]]]] = field(default_factory=list)


class Evaluator:
    """Evaluates cases against one compiled playbook.  Safe to share between threads."""

    def __init__(self, compiled: CompiledPlaybook, *, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        """``cache_size`` 0 asks durable-rules every question of every case (for tests and audits)."""
        self.compiled = compiled
        self.playbook = compiled.playbook
        self.cache_size = cache_size
        self._remembered = 0
        # shared by every result (read-only): an action's course source
        self._sources = {name: action.source.to_json() for name, action in self.playbook.actions.items()}
        self._plans = [self._plan(cnode) for cnode in compiled.nodes]
        self._inputs = _input_plan(self.playbook)

    def _plan(self, cnode: CompiledNode) -> _NodePlan:
        conditions = self.playbook.conditions_of(cnode.node)
        atoms = [atoms_of(c) for c in conditions]
        offsets = [sum(len(a) for a in atoms[:i]) for i in range(len(atoms))]
        every_atom = [a for member in atoms for a in member]
        tested = list(dict.fromkeys(a.var for a in every_atom))
        readers = [(var, _cell_reader(var, every_atom, *self.playbook.var_type(var))) for var in tested]
        node = cnode.node
        decision = self.playbook.decisions[node.name] if node.kind == "table" else None
        rules = [self.playbook.rules_by_id[m] for m in node.members] if node.kind == "rules" else []
        # Under priority the choice reads every fired row's output, so any value_of row rules out reuse.
        literal = decision is not None and all(isinstance(row.then, Literal) for row in decision.rows)
        distinct_tests: list[Atom] = []
        test_index: dict[tuple[str, str, str], int] = {}

        def distinct(atom: Atom) -> int:
            """The index of the test among the node's distinct ones (the same test at two places is one)."""
            same = (atom.var, atom.op, repr(atom.operand))  # repr: 1, 1.0 and True stay apart
            if same not in test_index:
                test_index[same] = len(distinct_tests)
                distinct_tests.append(atom)
            return test_index[same]

        every_test = [[distinct(a) for a in member] for member in atoms]
        flat = [None if tests is None else tuple(distinct(t) for t in tests) for tests in map(_flat, conditions)]
        holders = [0] * len(distinct_tests)
        for member, tests in enumerate(flat):
            for test in tests or ():
                holders[test] |= 1 << member
        chunks = [
            _ChunkPlan(
                index,
                sum(1 << member for member in members),
                _picker(sorted({t for member in members for t in every_test[member]})),
                [member for member in members if flat[member] is None],
            )
            for index, (members, _) in enumerate(cnode.chunks)
        ]
        return _NodePlan(
            cnode,
            conditions,
            atoms,
            offsets,
            [negated_atoms(c) for c in conditions],
            readers,
            [a for a in every_atom if a.op == "compare"],
            decision,
            literal,
            rules,
            name=node.name,
            chunks=chunks,
            flat=flat,
            tests=distinct_tests,
            readings=[_reading(test) for test in distinct_tests],
            holders=holders,
            conjunctions=sum(1 << member for member, tests in enumerate(flat) if tests is not None),
            results=_picker([t for member in every_test for t in member]),
            recommends=[
                [
                    (
                        rec.action,
                        [
                            (name, out.var, None) if isinstance(out, ValueOf) else (name, None, out.value)
                            for name, out in rec.params.items()
                        ],
                        self._sources[rec.action],
                    )
                    for rec in rule.recommends
                ]
                for rule in rules
            ],
        )

    # -- public ------------------------------------------------------------------

    def evaluate(
        self, cases: Iterable[tuple[str, dict[str, Any]] | CaseError], as_of: dt.date
    ) -> Iterator[Result | CaseError]:
        """One result or one error per case, in input order; an input already in error passes through."""
        for item in cases:
            if isinstance(item, CaseError):
                yield item
                continue
            case_id, case = item
            try:
                yield self.evaluate_case(case, as_of, case_id)
            except CaseError as error:
                yield error

    def evaluate_case(self, case: dict[str, Any], as_of: dt.date, case_id: str) -> Result:
        if not isinstance(case, dict):
            raise CaseError(case_id, "bad_input", "a case is an object with opportunity, account and market")
        inputs, derived = prepare_inputs(self.playbook, case, as_of, case_id, self._inputs)
        values = dict(inputs)
        result = Result(
            case=case_id,
            as_of=as_of.isoformat(),
            playbook=self.playbook,
            inputs=inputs,
            decisions=dict.fromkeys(self.playbook.decisions),
            recommendations=[],
            derived=derived,
            values=values,
        )
        set_by: dict[str, Rule] = {}
        decisions, steps, reuse = result.decisions, result.steps, bool(self.cache_size)
        for plan in self._plans:
            key = _key(plan.readers, plan.pairs, values)
            if reuse and plan.decision is not None:
                known = plan.outcomes.get(key)
                if known is not None:  # the hot path: a table's whole outcome follows from the key
                    fired, results, chosen, value, unknown = known
                    if type(value) is list:
                        value = list(value)
                    values[plan.name] = decisions[plan.name] = value
                    steps.append((plan, fired, results, chosen, None, unknown))
                    continue
            fired, results, unknown = self._answer(plan, key, values)
            if plan.decision is not None:
                self._table(plan, key, fired, results, unknown, result, case_id)
            else:
                recommends, recommendations = plan.recommends, result.recommendations
                for member in fired:
                    rule = plan.rules[member]
                    if rule.sets:
                        self._rule(plan, member, results, result, set_by, case_id)
                        continue
                    # the common rule, which only recommends: built here, once per rule that fires
                    rule_id = rule.id
                    for action, params, source in recommends[member]:
                        given = {}
                        for name, var, constant in params:  # a parameter sets no decision: nothing to check
                            value = constant if var is None else values.get(var)
                            given[name] = list(value) if isinstance(value, list) else value
                        recommendations.append({"id": action, "params": given, "rule": rule_id, "source": source})
                    single = (member,)
                    steps.append((plan, single, results, single, {}, ()))
                if unknown:
                    steps.append((plan, (), results, (), None, unknown))
        return result

    # -- one node ----------------------------------------------------------------

    def _answer(self, plan: _NodePlan, key: Hashable, values: dict[str, Any]) -> _Answer:
        """The members durable-rules fires for these values (indices), every atom's result, and the members
        whose condition is unknown (a value it needs is missing).

        Chunks whose tests gave the same results before reuse their answer; the others are asked of
        durable-rules together, in one batch.
        """
        reuse = bool(self.cache_size)
        if reuse:
            known = plan.answers.get(key)
            if known is not None:
                return known
        seen = [read(values) for read in plan.readings]
        chunks = plan.chunks
        wide = len(chunks) > 1  # one chunk: the node's own answer is remembered below
        parts: list[_Part | None] = [None] * len(chunks)
        asked: list[tuple[_ChunkPlan, Hashable]] = []
        for chunk in chunks:
            chunk_key = chunk.key(seen) if wide else key
            part = chunk.answers.get(chunk_key) if reuse and wide else None
            if part is None:
                asked.append((chunk, chunk_key))
            else:
                parts[chunk.index] = part
        if asked:
            answers = self.compiled.ask_chunks(plan.cnode, values, [chunk.index for chunk, _ in asked])
            false = unknown = 0
            for holders, result in zip(plan.holders, seen, strict=True):
                if result is not True:
                    if result is False:
                        false |= holders
                    else:
                        unknown |= holders
            holding = plan.conjunctions & ~false
            verdicts = (holding & ~unknown, holding & unknown)
            for (chunk, chunk_key), answer in zip(asked, answers, strict=True):
                part = parts[chunk.index] = self._checked(plan, chunk, answer, values, verdicts)
                if reuse and wide:
                    self._remember(chunk.answers, chunk_key, part)
        if wide:  # a chunk's members need not follow each other: the node's are put back in order
            known = (
                tuple(sorted([i for part in parts if part for i in part[0]])),
                plan.results(seen),
                tuple(sorted([i for part in parts if part for i in part[1]])),
            )
        else:
            only = parts[0]
            assert only is not None
            known = (only[0], plan.results(seen), only[1])
        if reuse:
            self._remember(plan.answers, key, known)
        return known

    def _checked(
        self,
        plan: _NodePlan,
        chunk: _ChunkPlan,
        answer: tuple[str, ...],
        values: dict[str, Any],
        verdicts: tuple[int, int],
    ) -> _Part:
        """A chunk's answer from durable-rules, compared with the conditions.

        ``verdicts``: the members whose condition is all of some tests that hold, and those unknown (bits).
        """
        matched, unknown = _members(verdicts[0] & chunk.members), _members(verdicts[1] & chunk.members)
        if chunk.other:
            walked = [(member, plan.conditions[member]) for member in chunk.other]
            results = {member: True if when is None else evaluate_condition(when, values) for member, when in walked}
            matched = sorted(matched + [member for member, result in results.items() if result is True])
            unknown = sorted(unknown + [member for member, result in results.items() if result is None])
        members = plan.cnode.members
        if answer != tuple(members[i] for i in matched):
            raise EngineFault(
                f"durable-rules fired {list(answer)} on '{plan.cnode.node.name}' where the conditions "
                f"give {[members[i] for i in matched]}"
            )
        return tuple(matched), tuple(unknown)

    def _remember(self, memory: dict[Hashable, Any], key: Hashable, answer: Any) -> None:
        if self._remembered >= self.cache_size:
            for other in self._plans:
                other.answers.clear()
                other.outcomes.clear()
                for chunk in other.chunks:
                    chunk.answers.clear()
            self._remembered = 0
        memory[key] = answer
        self._remembered += 1

    def _table(
        self,
        plan: _NodePlan,
        key: Hashable,
        fired: tuple[int, ...],
        results: tuple[bool | None, ...],
        unknown: tuple[int, ...],
        result: Result,
        case_id: str,
    ) -> None:
        decision = plan.decision
        assert decision is not None
        values = result.values
        rows = decision.rows
        chosen = self._hit_policy(decision, fired, values, case_id)
        if decision.hit_policy == "collect":
            outputs = [self._output(rows[i].then, values, decision, case_id, rows[i].location) for i in chosen]
            # no row fits and none is unknown: nothing to collect, a known empty list
            value = list(dict.fromkeys(outputs)) if chosen or not unknown else None
        else:
            first = rows[chosen[0]] if chosen else None
            value = self._output(first.then, values, decision, case_id, first.location) if first else None
        if self.cache_size and plan.literal:  # literal outputs: the same key gives the same rows and value
            plan.outcomes[key] = (fired, results, chosen, list(value) if isinstance(value, list) else value, unknown)
        values[decision.name] = value
        result.decisions[decision.name] = value
        result.steps.append((plan, fired, results, chosen, None, unknown))

    def _hit_policy(
        self, decision: Decision, fired: tuple[int, ...], values: dict[str, Any], case_id: str
    ) -> tuple[int, ...]:
        if not fired:
            return ()
        policy = decision.hit_policy
        if policy == "unique" and len(fired) > 1:
            ids = ", ".join(f"'{decision.rows[i].id}'" for i in fired)
            at = [decision.rows[i].location for i in fired]
            raise CaseError(
                case_id,
                "hit_policy_violation",
                f"rows {ids} of '{decision.name}' all match, but its hit policy is unique{_at(at)}",
                details={
                    "decision": decision.name,
                    "rows": [decision.rows[i].id for i in fired],
                    "locations": [location.to_json() for location in at],
                },
            )
        if policy == "collect":
            return fired
        if policy == "priority":
            ranking = list(decision.values or ())

            def rank(i: int) -> int:
                out = self._output(decision.rows[i].then, values, decision, case_id, decision.rows[i].location)
                return ranking.index(out) if out in ranking else len(ranking)

            return (min(fired, key=lambda i: (rank(i), i)),)
        return (fired[0],)

    def _output(
        self, output: Output, values: dict[str, Any], decision: Decision | None, case_id: str, at: Location
    ) -> Any:
        """The value a row or rule (at ``at``) gives, checked against the decision it sets."""
        if isinstance(output, Literal):
            return list(output.value) if isinstance(output.value, list) else output.value
        value = values.get(output.var)
        if decision is not None and value is not None and decision.values is not None:
            items = value if decision.type == "list" and isinstance(value, list) else [value]
            if any(item not in decision.values for item in items):
                raise CaseError(
                    case_id,
                    "bad_output",
                    f"'{output.var}' = {value!r} is not a value of decision '{decision.name}'{_at([at])}",
                    details={
                        "decision": decision.name,
                        "from": output.var,
                        "value": value,
                        "locations": [at.to_json()],
                    },
                )
        return list(value) if isinstance(value, list) else value

    def _rule(
        self,
        plan: _NodePlan,
        member: int,
        results: tuple[bool | None, ...],
        result: Result,
        set_by: dict[str, Rule],
        case_id: str,
    ) -> None:
        rule = plan.rules[member]
        values = result.values
        sets: dict[str, Any] = {}
        for target, output in rule.sets.items():
            value = self._output(output, values, self.playbook.decisions[target], case_id, rule.location)
            if target in set_by and result.decisions[target] != value:
                earlier = set_by[target]
                raise CaseError(
                    case_id,
                    "decision_conflict",
                    f"rules '{earlier.id}' and '{rule.id}' set '{target}' "
                    f"to {result.decisions[target]!r} and {value!r}{_at([earlier.location, rule.location])}",
                    details={
                        "decision": target,
                        "rules": [earlier.id, rule.id],
                        "values": [result.decisions[target], value],
                        "locations": [earlier.location.to_json(), rule.location.to_json()],
                    },
                )
            set_by[target] = rule
            result.decisions[target] = value
            values[target] = value
            sets[target] = value
        for rec in rule.recommends:
            params = {name: self._output(out, values, None, case_id, rec.location) for name, out in rec.params.items()}
            result.recommendations.append(
                {"id": rec.action, "params": params, "rule": rule.id, "source": self._sources[rec.action]}
            )
        result.steps.append((plan, (member,), results, (member,), sets, ()))


def _reading(atom: Atom) -> Callable[[dict[str, Any]], bool | None]:
    """A test's result for some values, as :func:`~engine.conditions.atom_matches` gives it, with the
    operator looked up once."""
    if atom.op in ("present", "compare"):
        return lambda values: atom_matches(atom, values)
    var, matches, operand = atom.var, OPERATORS[atom.op].matches, atom.operand

    def reading(values: dict[str, Any]) -> bool | None:
        value = values.get(var)
        return None if value is None else matches(value, operand)

    return reading


def _members(bits: int) -> list[int]:
    """The members whose bits are set, in order."""
    found = []
    while bits:
        lowest = bits & -bits
        found.append(lowest.bit_length() - 1)
        bits ^= lowest
    return found


def _flat(condition: Condition | None) -> tuple[Atom, ...] | None:
    """The tests of a condition that is one test or all of several (it holds when all do), else None."""
    if isinstance(condition, Atom):
        return (condition,)
    if isinstance(condition, AllOf) and all(isinstance(item, Atom) for item in condition.items):
        return condition.items  # type: ignore[return-value]
    return None


def _key(
    readers: list[tuple[str, Callable[[Any], Hashable] | None]], pairs: list[Atom], values: dict[str, Any]
) -> Hashable:
    """The cells these values fall in for these tests: what an answer is remembered by."""
    key: Hashable
    if len(readers) == 1:  # the common case, kept cheap
        var, cell = readers[0]
        key = values.get(var) if cell is None else cell(values.get(var))
    else:
        key = tuple([values.get(var) if cell is None else cell(values.get(var)) for var, cell in readers])
    if pairs:
        key = (key, tuple([atom_matches(atom, values) for atom in pairs]))
    return key


def _at(locations: list[Location]) -> str:
    """Where in the playbook the rows or rules at fault are, for a runtime error's message (as OPA's say)."""
    return f" (at {', '.join(str(location) for location in locations)})"
