"""The condition operators, one registry entry per YAML key.

Each operator knows three things: which input types it applies to, how it
reads a value (for the trace and the why-not explanation), and how it is
written for durable-rules, both as itself and negated (durable-rules has no
general ``not`` over one message, so negation is pushed down to the atoms).
The two must agree; ``tests/test_conditions.py`` checks that they do.

Missing values follow Kleene's three-valued logic: a test on a missing value is
*unknown* (``None``), except ``present``, which is always known; ``not`` of
unknown is unknown; ``all`` is false if any item is false, else unknown if any
is unknown; ``any`` is true if any item is true, else unknown if any is unknown.
Only a condition that is true fires.  With negation pushed down to the atoms,
"true" is exactly the plain two-valued reading in which every test on a missing
value fails, negated or not: so durable-rules needs no third value, only
negated tests that also require the value to be present.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from engine.model import AllOf, AnyOf, Atom, Compare, Condition, Interval, Not

__all__ = [
    "COMPARE_OPS",
    "COMPARISON_KEYS",
    "OPERATORS",
    "OPPOSITE_KEYS",
    "SYMBOLS",
    "Operator",
    "atom_matches",
    "atoms_of",
    "compare_matches",
    "conjuncts",
    "durable_expr",
    "durable_safe",
    "evaluate_condition",
    "items_of",
    "list_key",
    "numbers_of",
]

Expr = dict[str, Any]

COMPARISON_KEYS = ("gt", "gte", "lt", "lte")
"""YAML keys that together make one ``interval`` atom."""

SYMBOLS = {"gt": ">", "gte": "≥", "lt": "<", "lte": "≤", "equals": "=", "not_equals": "≠"}
"""How each comparison reads in every language: a test ``{gte: 60}`` is shown ``≥ 60``."""

COMPARE_OPS: dict[str, tuple[Callable[[Any, Any], bool], str, str, str]] = {
    "gt": (lambda a, b: a > b, "$gt", "$lte", f"{SYMBOLS['gt']} "),
    "gte": (lambda a, b: a >= b, "$gte", "$lt", f"{SYMBOLS['gte']} "),
    "lt": (lambda a, b: a < b, "$lt", "$gte", f"{SYMBOLS['lt']} "),
    "lte": (lambda a, b: a <= b, "$lte", "$gt", f"{SYMBOLS['lte']} "),
    "equals": (lambda a, b: a == b, "", "$neq", f"{SYMBOLS['equals']} "),
    "not_equals": (lambda a, b: a != b, "$neq", "", f"{SYMBOLS['not_equals']} "),
}
"""Tests of a value against another variable's (``compare`` atoms): how each reads a pair of values, its
durable-rules operator as itself and negated ("" is equality), and its symbol."""

OPPOSITE_KEYS = {"missing": "present"}
"""YAML keys that are another operator with its boolean operand reversed (``missing: true`` is ``present: false``)."""


def list_key(index: int) -> str:
    """The key under which a list item, by its position in ``values``, is sent to durable-rules."""
    return f"i{index}"


def _present(field: str, is_list: bool) -> Expr:
    return {"$ex": {f"{field}.n" if is_list else field: 1}}


def _missing(field: str, is_list: bool) -> Expr:
    return {"$nex": {f"{field}.n" if is_list else field: 1}}


def _and(items: Sequence[Expr]) -> Expr:
    return items[0] if len(items) == 1 else {"$and": list(items)}


def _or(items: Sequence[Expr]) -> Expr:
    return items[0] if len(items) == 1 else {"$or": list(items)}


@dataclass(frozen=True)
class Operator:
    """One condition operator.

    ``matches(value, operand)`` is called only with a present value.
    ``durable(field, operand, negated, item_index)`` returns the durable-rules expression;
    ``item_index`` maps a list item to its position in the variable's declared values.
    """

    types: frozenset[str]
    matches: Callable[[Any, Any], bool]
    durable: Callable[[str, Any, bool, Callable[[Any], int]], Expr]


def _equals_durable(field: str, operand: Any, negated: bool, _: Callable[[Any], int]) -> Expr:
    if negated:
        return {"$neq": {field: operand}}
    return {field: operand}


def _not_equals_durable(field: str, operand: Any, negated: bool, _: Callable[[Any], int]) -> Expr:
    if negated:
        return {field: operand}
    return {"$neq": {field: operand}}


def _one_of_durable(field: str, operand: Any, negated: bool, _: Callable[[Any], int]) -> Expr:
    if negated:
        return _and([{"$neq": {field: v}} for v in operand])
    return _or([{field: v} for v in operand])


def _not_one_of_durable(field: str, operand: Any, negated: bool, _: Callable[[Any], int]) -> Expr:
    if negated:
        return _or([{field: v} for v in operand])
    return _and([{"$neq": {field: v}} for v in operand])


def _interval_matches(value: Any, interval: Interval) -> bool:
    if interval.low is not None and (value < interval.low or (value == interval.low and not interval.low_closed)):
        return False
    return not (
        interval.high is not None and (value > interval.high or (value == interval.high and not interval.high_closed))
    )


def _interval_durable(field: str, iv: Interval, negated: bool, _: Callable[[Any], int]) -> Expr:
    inside: list[Expr] = []
    outside: list[Expr] = []
    if iv.low is not None:
        inside.append({"$gte" if iv.low_closed else "$gt": {field: iv.low}})
        outside.append({"$lt" if iv.low_closed else "$lte": {field: iv.low}})
    if iv.high is not None:
        inside.append({"$lte" if iv.high_closed else "$lt": {field: iv.high}})
        outside.append({"$gt" if iv.high_closed else "$gte": {field: iv.high}})
    return _or(outside) if negated else _and(inside)


def _present_durable(field: str, wanted: bool, negated: bool, _: Callable[[Any], int], *, is_list: bool) -> Expr:
    return _present(field, is_list) if wanted != negated else _missing(field, is_list)


def _contains(field: str, item: Any, negated: bool, index_of: Callable[[Any], int]) -> Expr:
    key = f"{field}.{list_key(index_of(item))}"
    # a missing list is unknown, so "does not contain" needs the list itself present
    return _and([_present(field, True), {"$nex": {key: 1}}]) if negated else {"$ex": {key: 1}}


def _contains_all_durable(field: str, items: Any, negated: bool, index_of: Callable[[Any], int]) -> Expr:
    parts = [_contains(field, item, negated, index_of) for item in items]
    return _or(parts) if negated else _and(parts)


def _contains_any_durable(field: str, items: Any, negated: bool, index_of: Callable[[Any], int]) -> Expr:
    parts = [_contains(field, item, negated, index_of) for item in items]
    return _and(parts) if negated else _or(parts)


_SCALAR = frozenset({"number", "string", "boolean", "date", "enum"})
_ORDERED = frozenset({"number"})
_ANY = _SCALAR | {"list"}

OPERATORS: dict[str, Operator] = {
    "equals": Operator(_SCALAR, lambda v, x: bool(v == x), _equals_durable),
    "not_equals": Operator(_SCALAR, lambda v, x: bool(v != x), _not_equals_durable),
    "one_of": Operator(_SCALAR, lambda v, xs: v in xs, _one_of_durable),
    "not_one_of": Operator(_SCALAR, lambda v, xs: v not in xs, _not_one_of_durable),
    "interval": Operator(_ORDERED, _interval_matches, _interval_durable),
    "present": Operator(
        _ANY,
        lambda v, wanted: bool(wanted),
        lambda f, x, n, i: _present_durable(f, x, n, i, is_list=False),
    ),
    "contains": Operator(frozenset({"list"}), lambda v, x: x in v, _contains),
    "contains_all": Operator(frozenset({"list"}), lambda v, xs: all(x in v for x in xs), _contains_all_durable),
    "contains_any": Operator(frozenset({"list"}), lambda v, xs: any(x in v for x in xs), _contains_any_durable),
}
"""Normalised atom operators.  The YAML keys are these, except that gt/gte/lt/lte make ``interval``."""


def durable_safe(number: float | int) -> bool:
    """Can durable-rules read this number as Python writes it?  Its JSON reader refuses an exponent
    without a decimal point (``1e-05``, ``1e+16``); ``1.5e-05`` and plain decimals are fine."""
    text = repr(number)
    mantissa, e, _ = text.lower().partition("e")
    return not e or "." in mantissa


def items_of(atom: Atom) -> tuple[Any, ...]:
    """The values a test names: each of a list operand, else the operand itself."""
    return atom.operand if isinstance(atom.operand, tuple) else (atom.operand,)


def numbers_of(atom: Atom) -> list[float]:
    """The numbers a test compares with."""
    operand = atom.operand
    if isinstance(operand, Interval):
        return [b for b in (operand.low, operand.high) if b is not None]
    return [x for x in items_of(atom) if isinstance(x, int | float) and not isinstance(x, bool)]


def compare_matches(value: Any, other: Any, compare: Compare) -> bool:
    """A value against another variable's: numbers as numbers, dates as their ISO text (which sorts as they do)."""
    scaled = other if compare.factor is None else other * compare.factor
    return bool(COMPARE_OPS[compare.op][0](value, scaled))


def _compare_durable(field: str, other_field: str, compare: Compare, negated: bool) -> Expr:
    rvalue: Any = {"$m": other_field}
    if compare.factor is not None:
        rvalue = {"$mul": {"$l": rvalue, "$r": compare.factor}}
    _, positive, negative, _ = COMPARE_OPS[compare.op]
    key = negative if negated else positive
    test = {field: rvalue} if not key else {key: {field: rvalue}}
    # durable-rules reads a missing right-hand field as matching anything: require it
    return _and([_present(other_field, False), test])


def atom_matches(atom: Atom, values: dict[str, Any]) -> bool | None:
    """The test's result: ``None`` (unknown) when a value it reads is missing, unless it tests presence."""
    value = values.get(atom.var)
    if atom.op == "present":
        return (value is not None) == bool(atom.operand)
    if value is None:
        return None
    if atom.op == "compare":
        other = values.get(atom.operand.other)
        return None if other is None else compare_matches(value, other, atom.operand)
    return OPERATORS[atom.op].matches(value, atom.operand)


def evaluate_condition(
    condition: Condition, values: dict[str, Any], out: list[bool | None] | None = None
) -> bool | None:
    """A condition's three-valued result (``None``: unknown); append each atom's result, in order, to ``out``.

    Every atom is evaluated (no short circuit), so the trace can report them all.
    """
    if isinstance(condition, Atom):
        result = atom_matches(condition, values)
        if out is not None:
            out.append(result)
        return result
    if isinstance(condition, Not):
        inner = evaluate_condition(condition.item, values, out)
        return None if inner is None else not inner
    results = [evaluate_condition(item, values, out) for item in condition.items]
    decisive = isinstance(condition, AnyOf)  # the value that settles it: true for any, false for all
    if decisive in results:
        return decisive
    return None if None in results else not decisive


def atoms_of(condition: Condition | None) -> list[Atom]:
    """The atoms of a condition, in the order :func:`evaluate_condition` reports them."""
    if condition is None:
        return []
    if isinstance(condition, Atom):
        return [condition]
    if isinstance(condition, Not):
        return atoms_of(condition.item)
    return [atom for item in condition.items for atom in atoms_of(item)]


def variables_of(condition: Condition | None) -> list[str]:
    """The variables a condition reads, atom by atom: each test's own, and the other one it compares with."""
    return [v for atom in atoms_of(condition) for v in (atom.var, *_compared_with(atom))]


def _compared_with(atom: Atom) -> tuple[str, ...]:
    return (atom.operand.other,) if isinstance(atom.operand, Compare) else ()


def conjuncts(condition: Condition | None) -> list[Condition]:
    """The parts a condition requires together: an ``all`` flattened, anything else itself."""
    if condition is None:
        return []
    if isinstance(condition, AllOf):
        return [part for item in condition.items for part in conjuncts(item)]
    return [condition]


def durable_expr(
    condition: Condition,
    field_of: Callable[[str], str],
    index_of: Callable[[str, Any], int],
    list_vars: frozenset[str],
    negated: bool = False,
) -> Expr:
    """The durable-rules expression for a condition, negations pushed down to the atoms."""
    if isinstance(condition, Atom):
        var = condition.var
        field = field_of(var)
        if condition.op == "present":
            return _present_durable(field, condition.operand, negated, lambda _: 0, is_list=var in list_vars)
        if condition.op == "compare":
            return _compare_durable(field, field_of(condition.operand.other), condition.operand, negated)
        return OPERATORS[condition.op].durable(field, condition.operand, negated, lambda item: index_of(var, item))
    if isinstance(condition, Not):
        return durable_expr(condition.item, field_of, index_of, list_vars, not negated)
    parts = [durable_expr(item, field_of, index_of, list_vars, negated) for item in condition.items]
    conjunction = isinstance(condition, AllOf) != negated  # De Morgan
    return _and(parts) if conjunction else _or(parts)
