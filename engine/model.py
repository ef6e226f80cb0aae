"""The typed playbook: what validation builds and every later stage reads.

Nothing here knows YAML or durable-rules.  Every object keeps the
:class:`~engine.errors.Location` it came from, so later checks can point at it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from engine.errors import Location

if TYPE_CHECKING:
    from engine.workflow import Schedule, Work

__all__ = [
    "GROUPINGS",
    "Action",
    "Aggregate",
    "AllOf",
    "AnyOf",
    "Atom",
    "Compare",
    "Condition",
    "Decision",
    "GroupLevel",
    "InputField",
    "Interval",
    "Literal",
    "Node",
    "Not",
    "Output",
    "Parameter",
    "Playbook",
    "Recommend",
    "Row",
    "Rule",
    "Source",
    "Text",
    "ValueOf",
]

Text = dict[str, str]
"""A text in each of the playbook's languages: ``{"zh": ..., "en": ...}``."""


@dataclass(frozen=True)
class Source:
    """Where a piece of guidance comes from: a course entry (``guide`` G-nn and its ``quote``), or the
    company's own reference (``policy``, an internal sales policy or a board decision, and its ``text``)."""

    guide: str = ""
    quote: str = ""
    note: Text | None = None
    policy: str = ""
    text: str = ""
    location: Location | None = field(default=None, compare=False)  # of the quote or text, for check --course

    @property
    def ref(self) -> str:
        """The entry or policy id (``G-07``, ``SP-2024-03``): what a trace names."""
        return self.policy or self.guide

    @property
    def words(self) -> str:
        """The quote, or the policy's text."""
        return self.text if self.policy else self.quote

    def to_json(self) -> dict[str, Any]:
        if self.policy:
            out: dict[str, Any] = {"policy": self.policy, "text": self.text}
        else:
            out = {"guide": self.guide, "quote": self.quote}
        if self.note:
            out["note"] = dict(self.note)
        return out


@dataclass(frozen=True)
class Parameter:
    name: str
    value: Any
    label: Text
    description: Text | None
    source: Source | None
    location: Location


@dataclass(frozen=True)
class InputField:
    """A field of an input fact, such as ``opportunity.weeks_to_close``."""

    name: str
    type: str  # number | string | boolean | date | enum | list
    values: tuple[Any, ...] | None
    label: Text
    derive: tuple[str, tuple[str, ...]] | None  # ("weeks_until" | "weeks_since", (date,)) or ("ratio", (a, b))
    location: Location
    value_labels: dict[str, Text] = field(default_factory=dict)
    minimum: float | None = None  # known never below (a count or a share): the table checker looks no lower


@dataclass(frozen=True)
class Interval:
    low: float | None
    low_closed: bool
    high: float | None
    high_closed: bool


@dataclass(frozen=True)
class Compare:
    """The operand of a test against another variable: this value ``op`` (gt, gte, lt, lte, equals,
    not_equals) the other's, times ``factor`` when given."""

    op: str
    other: str
    factor: float | None = None


@dataclass(frozen=True)
class Atom:
    """One test on one variable: the smallest unit the trace reports on."""

    var: str
    op: str  # a key of engine.conditions.OPERATORS
    operand: Any  # value, tuple of values, Interval, bool or Compare, parameters resolved
    text: str  # how the test reads, parameter names kept ("≥ high_win_rate (60)")
    location: Location
    params: tuple[str | None, ...] = ()  # the parameter behind each operand (an interval: low, high), if any


@dataclass(frozen=True)
class AllOf:
    items: tuple[Condition, ...]


@dataclass(frozen=True)
class AnyOf:
    items: tuple[Condition, ...]


@dataclass(frozen=True)
class Not:
    item: Condition


Condition = Atom | AllOf | AnyOf | Not


@dataclass(frozen=True)
class Literal:
    value: Any


@dataclass(frozen=True)
class ValueOf:
    var: str


Output = Literal | ValueOf


@dataclass(frozen=True)
class Row:
    id: str
    index: int
    label: Text
    explain: Text | None
    source: Source
    when: Condition | None  # an otherwise row: every other row's condition negated
    then: Output
    location: Location
    otherwise: bool = False


@dataclass(frozen=True)
class Decision:
    """A derived fact.  With rows it is a decision table; without, rules set it."""

    name: str
    label: Text
    description: Text | None
    source: Source
    type: str  # enum | list | number | string | boolean
    values: tuple[Any, ...] | None
    value_labels: dict[str, Text]
    hit_policy: str
    rows: tuple[Row, ...]
    location: Location
    output: bool = False  # shown to people; nothing else need read it

    def value_label(self, value: Any, lang: str) -> str:
        labels = self.value_labels.get(str(value))
        return labels[lang] if labels else str(value)


@dataclass(frozen=True)
class Recommend:
    action: str
    params: dict[str, Output]
    location: Location


@dataclass(frozen=True)
class Rule:
    id: str
    index: int
    label: Text
    explain: Text | None
    source: Source
    when: Condition | None
    sets: dict[str, Output]
    recommends: tuple[Recommend, ...]
    location: Location
    for_each: tuple[str, str, Any] | None = None  # one item of a for_each rule: (the rule's id, the list, the item)


@dataclass(frozen=True)
class Action:
    id: str
    label: Text
    explain: Text | None
    source: Source
    location: Location
    # what a parameter means when its name would say otherwise (a role still to find, passed as roles_known)
    param_labels: dict[str, Text] = field(default_factory=dict)
    work: Work | None = None  # who does it, by when, how often, whom it escalates to (None: no owner, no date)


@dataclass(frozen=True)
class Node:
    """One step of evaluation, one question to durable-rules: a decision table (its rows are the
    members), or the rules that read exactly the same variables (each rule a member)."""

    kind: str  # "table" | "rules"
    name: str  # the decision's name, or the rules' ids joined by commas
    reads: tuple[str, ...]
    members: tuple[str, ...]  # row ids, or rule ids, in file order


GROUPINGS = {
    "owner": "opportunity.owner",
    "team": "opportunity.team",
    "region": "opportunity.region",
    "market": "opportunity.market",
    "account": "account.id",
}
"""The groupings a ``group_by`` may name, and the case field each groups by (any case field may be named too)."""

AGGREGATE_FUNCTIONS = ("count", "share", "sum", "min", "max", "distinct", "value")


@dataclass(frozen=True)
class Aggregate:
    """A value over a group's cases: ``function`` (count, share, sum, min, max, distinct, value) of ``field``
    (a case input or per-case decision; none for count and share) over the cases ``where`` holds (all when
    None).  ``value`` is the one value the cases that have one agree on (a market's facts, given on each
    of its deals): none when they disagree."""

    name: str
    function: str
    field: str | None
    where: Condition | None
    label: Text
    location: Location


@dataclass(frozen=True)
class GroupLevel:
    """The decisions and rules made once per group of cases sharing one value of ``field``.

    ``playbook`` is their own playbook, evaluated by the same machinery as a case's: its inputs are the
    aggregates, as ``group.NAME``; each group is one case of it."""

    group_by: str  # as the playbook names it: owner, region, ... or a case field
    field: str  # the case variable grouped by
    aggregates: dict[str, Aggregate]
    playbook: Playbook


@dataclass
class Playbook:
    id: str
    version: str
    languages: tuple[str, ...]
    title: Text
    description: Text | None
    parameters: dict[str, Parameter]
    inputs: dict[str, InputField]
    decisions: dict[str, Decision]
    rules: tuple[Rule, ...]
    actions: dict[str, Action]
    file: str
    content_hash: str
    text: str = field(repr=False)
    order: tuple[Node, ...] = ()
    groups: dict[str, GroupLevel] = field(default_factory=dict)  # by group_by: the portfolio, decided per group
    # review.priority: how the director's review orders an owner's week, (decision, its values first to last)
    review_priority: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    schedules: dict[str, Schedule] = field(default_factory=dict)  # the recurring reviews (G-26)

    @cached_property
    def rules_by_id(self) -> dict[str, Rule]:
        return {rule.id: rule for rule in self.rules}

    @cached_property
    def share_sources(self) -> dict[str, str]:
        """Input fields a ``ratio`` is derived from -> that ratio: an amount and a target, never negative."""
        return {
            source: name
            for name, input_ in self.inputs.items()
            if input_.derive is not None and input_.derive[0] == "ratio"
            for source in input_.derive[1]
        }

    def var_type(self, var: str) -> tuple[str, tuple[Any, ...] | None]:
        """(type, declared values) of a variable: an input field (``object.field``) or a decision."""
        if var in self.inputs:
            field_ = self.inputs[var]
            return field_.type, field_.values
        decision = self.decisions[var]
        return decision.type, decision.values

    def param_variable(self, key: str) -> str | None:
        """The variable an action parameter is named after: a decision, an input, or the field part of
        exactly one input (``contact_state`` for ``account.contact_state``).  Its labels name the parameter."""
        if key in self.decisions or key in self.inputs:
            return key
        fields = [name for name in self.inputs if name.partition(".")[2] == key]
        return fields[0] if len(fields) == 1 else None

    def conditions_of(self, node: Node) -> list[Condition | None]:
        """The condition of each member of a node, in member order."""
        if node.kind == "table":
            return [row.when for row in self.decisions[node.name].rows]
        return [self.rules_by_id[member].when for member in node.members]
