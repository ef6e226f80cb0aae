"""The portfolio: decisions and rules made once per group of cases (per owner, region, market, ...).

Two steps, kept apart so that a database can supply the aggregates instead of memory:
:func:`compute_aggregates` reads the evaluated cases of one grouping and gives each group's aggregate
values, with the cases that made each; :meth:`Portfolio.decide` decides the groups from those values.

Each grouping's decisions and rules form a playbook of their own (``Playbook.groups``, built by the
checker) whose inputs are the aggregates, ``group.NAME``.  It is compiled once, and each group is one
case of it, evaluated by the same :class:`~engine.evaluate.Evaluator` in durable-rules: the trace, the
sources, the labels, what is missing, why and why-not are a case's, and cannot disagree with it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.compile import CompiledPlaybook, compile_playbook
from engine.conditions import evaluate_condition, variables_of
from engine.errors import CaseError
from engine.evaluate import Evaluator, Result
from engine.explain import value_text
from engine.model import Aggregate, Condition, GroupLevel, Playbook

__all__ = [
    "MEMBERS_SHOWN",
    "AggregateSpec",
    "AggregateValue",
    "GroupResult",
    "Member",
    "Portfolio",
    "aggregate_specs",
    "compute_aggregates",
    "evaluate_portfolio",
    "group_key",
]

MEMBERS_SHOWN = 50
"""The cases named per aggregate in a group's JSON; ``members_total`` says how many there are."""

AggregateSpec = tuple[str, str, str | None, Condition | None]
"""(name, function, field or None, where or None): an aggregate as a provider of values reads it."""


@dataclass(frozen=True)
class AggregateValue:
    """One aggregate of one group: its value (None: no case had the data it needs), the cases that made it
    (counted, whose field it summed or counted, or at the min or max), and the cases left out because
    their ``where`` or field was missing."""

    value: Any
    members: tuple[str, ...]
    unknown: tuple[str, ...] = ()


class Member(Protocol):
    """What grouping reads of an evaluated case: its id, and its values (inputs and decisions).  A
    :class:`~engine.evaluate.Result` is one; a caller holding many cases may keep just these two."""

    @property
    def case(self) -> str: ...

    @property
    def values(self) -> dict[str, Any]: ...


def aggregate_specs(level: GroupLevel) -> list[AggregateSpec]:
    return [(a.name, a.function, a.field, a.where) for a in level.aggregates.values()]


def group_key(level: GroupLevel, values: dict[str, Any]) -> Hashable:
    """The group a case belongs to: its value of the grouping's field (None when it has none)."""
    value = values.get(level.field)
    return tuple(value) if isinstance(value, list) else value


def _aggregate(agg: Aggregate, members: list[tuple[str, dict[str, Any]]]) -> AggregateValue:
    chosen: list[tuple[str, Any]] = []
    unknown: list[str] = []
    for case_id, values in members:
        verdict = True if agg.where is None else evaluate_condition(agg.where, values)
        if verdict is None:
            unknown.append(case_id)
        elif verdict:
            value = values.get(agg.field) if agg.field else True
            if value is None:
                unknown.append(case_id)
            else:
                chosen.append((case_id, value))
    ids = tuple(case_id for case_id, _ in chosen)
    if len(unknown) == len(members):
        return AggregateValue(None, (), tuple(unknown))  # nothing known: the data it needs is absent
    taken = [value for _, value in chosen]
    result: Any
    if agg.function == "count":
        result = len(chosen)
    elif agg.function == "share":
        result = round(len(chosen) / (len(members) - len(unknown)), 6)
    elif agg.function == "sum":
        result = sum(taken)
    elif agg.function == "distinct":
        seen = {item for value in taken for item in (value if isinstance(value, list) else [value])}
        result = len(seen)
    elif agg.function == "value":
        agreed = set(taken)
        result = agreed.pop() if len(agreed) == 1 else None  # none given, or the cases disagree
    elif taken:
        result = min(taken) if agg.function == "min" else max(taken)
        ids = tuple(case_id for case_id, value in chosen if value == result)  # the cases at the extreme
    else:
        result = None  # the min or max of no case
    return AggregateValue(result, ids, tuple(unknown))


def compute_aggregates(level: GroupLevel, cases: Iterable[Member]) -> dict[Hashable, dict[str, AggregateValue]]:
    """Each group's aggregate values, from evaluated cases held in memory (groups in first-seen order)."""
    groups: dict[Hashable, list[tuple[str, dict[str, Any]]]] = {}
    for result in cases:
        groups.setdefault(group_key(level, result.values), []).append((result.case, result.values))
    return {
        key: {name: _aggregate(agg, members) for name, agg in level.aggregates.items()}
        for key, members in groups.items()
    }


def _group_sizes(level: GroupLevel, cases: Iterable[Member]) -> dict[Hashable, int]:
    sizes: dict[Hashable, int] = {}
    for result in cases:
        key = group_key(level, result.values)
        sizes[key] = sizes.get(key, 0) + 1
    return sizes


@dataclass
class GroupResult:
    """The outcome for one group: its aggregates, and the result (or error) of its decisions and rules."""

    level: GroupLevel
    key: Hashable
    open: int
    aggregates: dict[str, AggregateValue]
    outcome: Result | CaseError
    _json: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    @property
    def group_by(self) -> str:
        return self.level.group_by

    @property
    def decisions(self) -> dict[str, Any]:
        return {} if isinstance(self.outcome, CaseError) else self.outcome.decisions

    @property
    def recommendations(self) -> list[dict[str, Any]]:
        return [] if isinstance(self.outcome, CaseError) else self.outcome.recommendations

    def needs(self, name: str) -> list[str]:
        """The case fields an undetermined decision waits for: what its missing aggregates read."""
        if isinstance(self.outcome, CaseError):
            return []
        read: list[str] = []
        for var in self.outcome.undetermined().get(name, []):
            agg = self.level.aggregates.get(var.removeprefix("group."))
            if agg is not None:
                read += variables_of(agg.where) + ([agg.field] if agg.field else [])
        return list(dict.fromkeys(read))

    def to_json(self, lang: str = "en", *, trace: bool = True, members: int | None = MEMBERS_SHOWN) -> dict[str, Any]:
        """The documented group result (schemas/group-result.schema.json)."""
        cache_key = f"{lang}:{trace}:{members}"
        if cache_key in self._json:
            return self._json[cache_key]
        pb = self.level.playbook
        out: dict[str, Any] = {
            "group_by": self.group_by,
            "key": self.key if not isinstance(self.key, tuple) else list(self.key),
            "open": self.open,
            "aggregates": {
                name: {
                    "value": value.value,
                    "label": self.level.aggregates[name].label.get(lang, name),
                    "members": list(value.members[:members] if members is not None else value.members),
                    "members_total": len(value.members),
                    **({"unknown_total": len(value.unknown)} if value.unknown else {}),
                }
                for name, value in self.aggregates.items()
            },
        }
        if isinstance(self.outcome, CaseError):
            out["error"] = self.outcome.to_json()["error"]
            self._json[cache_key] = out
            return out
        case_json = self.outcome.to_json(lang, trace=True)
        fired = self.outcome.fired()
        undetermined = case_json["undetermined"]
        steps = case_json["trace"]
        decisions: dict[str, Any] = {}
        for name, value in self.outcome.decisions.items():
            decision = pb.decisions[name]
            rows = fired.get(name, [])
            row = next((r for r in decision.rows if rows and r.id == rows[0]), None)
            entry: dict[str, Any] = {
                "value": value,
                "value_label": None if value is None else value_text(pb, name, value, lang),
                "label": decision.label.get(lang, name),
                "row": rows[0] if len(rows) == 1 else rows or None,
                "source": (row.source if row is not None else decision.source).to_json(),
            }
            if name in undetermined:
                entry["missing"] = undetermined[name]
                entry["needs"] = self.needs(name)
            if trace:
                entry["trace"] = [s for s in steps if s.get("decision") == name or name in s.get("set", {})]
            decisions[name] = entry
        out["decisions"] = decisions
        out["recommendations"] = case_json["recommendations"]
        if trace:
            out["trace"] = steps
        self._json[cache_key] = out
        return out


def _key_order(key: Hashable) -> tuple[int, str]:
    return (1, "") if key is None else (0, str(key))


class Portfolio:
    """A playbook's groupings, each compiled once; decides groups from their aggregate values."""

    def __init__(self, playbook: Playbook, *, cache_size: int | None = None) -> None:
        self.playbook = playbook
        self._compiled: dict[str, CompiledPlaybook] = {}
        self._evaluators: dict[str, Evaluator] = {}
        try:
            for name, level in playbook.groups.items():
                compiled = self._compiled[name] = compile_playbook(level.playbook)
                kwargs = {} if cache_size is None else {"cache_size": cache_size}
                self._evaluators[name] = Evaluator(compiled, **kwargs)
        except BaseException:
            self.close()
            raise

    def decide(
        self,
        group_by: str,
        aggregates: dict[Hashable, dict[str, AggregateValue]],
        as_of: dt.date,
        sizes: dict[Hashable, int] | None = None,
    ) -> list[GroupResult]:
        """Each group's decisions and rules from its aggregate values (from memory or a database), by key.

        ``sizes``: each group's number of open cases, when the aggregates come without them."""
        level = self.playbook.groups[group_by]
        evaluator = self._evaluators[group_by]
        out = []
        for key in sorted(aggregates, key=_key_order):
            values = aggregates[key]
            case = {"group": {name: value.value for name, value in values.items()}}
            outcome: Result | CaseError
            try:
                outcome = evaluator.evaluate_case(case, as_of, f"{group_by}:{key}")
            except CaseError as error:
                outcome = error
            size = sizes[key] if sizes is not None else 0
            out.append(GroupResult(level, key, size, values, outcome))
        return out

    def evaluate(
        self, cases: Iterable[Member], as_of: dt.date, group_by: Iterable[str] | None = None
    ) -> Iterator[GroupResult]:
        """Every group of every grouping named (all the playbook's when None), grouping by grouping."""
        held = list(cases)
        for name in self.playbook.groups if group_by is None else group_by:
            level = self.playbook.groups[name]
            yield from self.decide(name, compute_aggregates(level, held), as_of, _group_sizes(level, held))

    def close(self) -> None:
        for compiled in self._compiled.values():
            compiled.close()

    def __enter__(self) -> Portfolio:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def evaluate_portfolio(
    playbook: Playbook, cases: Iterable[Member], as_of: dt.date, group_by: Iterable[str] | None = None
) -> list[GroupResult]:
    """The group results of evaluated cases: each grouping's groups, decided once each (the library's entry)."""
    if not playbook.groups:
        return []
    with Portfolio(playbook) as portfolio:
        return list(portfolio.evaluate(cases, as_of, group_by))
