"""ZEN anchor: the same playbook, the same cases, run by GoRules ZEN (zen-engine) and by our engine.

    python bench/zen_anchor.py [--playbook playbooks/course.yaml] [--cases 100000] [--check 2000]
    python bench/zen_anchor.py --rules 10,100,1000 [--rule-cases 10000] [--runs 3]   # big playbooks, both engines

1. :func:`to_jdm` converts our playbook model into a GoRules JSON Decision Model (JDM), the
   decision graph zen-engine runs.  It is driven by the model only (no table is written by
   hand), so it also serves benchmarks on generated playbooks:

   * an input node, then an expression node that derives the ``derive:`` inputs the way
     ``engine.evaluate.prepare_inputs`` does (weeks until a date, a rounded ratio);
   * one decision table per decision table, with an equivalent hit policy (ZEN has ``first``
     and ``collect``): ``unique`` runs as ``first`` (the table checker proves its rows free of
     overlaps), ``priority`` as ``first`` over rows sorted by output rank, ``collect`` as
     ``collect`` followed by an expression node that turns the matched rows into our list;
   * one ``collect`` table per rules node of ``Playbook.order``, whose rows give the rule id,
     its recommendations and the decisions it sets; an expression node per decision set by
     rules lifts the value (and any conflict) out of those rows;
   * edges from each node to the nodes that read what it makes, as in ``Playbook.order``,
     and from every producer to the output node.

2. :func:`check` evaluates cases (``--check`` generated ones, 2,000 by default) with both
   engines and fails, listing the differences, unless every decision and the set of
   recommended action ids agree for every case.

3. :func:`run` times both engines over the same generated cases in one process: ours
   (``Evaluator.evaluate``, traces recorded, no JSON) and ZEN case by case
   (``ZenEngine.evaluate`` behind a loader returning the compiled ``ZenDecisionContent``)
   and in batches (``ZenEngine.evaluate_batch``, whose binding hands the cases of a batch to
   a pool of one worker thread per CPU: CPU seconds are printed beside wall seconds).  ZEN's
   time includes building its context and reading its answer back into decisions and
   recommendations, as ours includes building its Result.  Prints a table and writes
   bench/results/zen_anchor.json.

Where ZEN does not do what we do (none changes a decision or an action on the generated cases):

* it reads the case as given: no input typing (our ``bad_input``), and a date with a time
  of day counts its hours where we read the date only;
* ``unique`` runs as ``first``, so rows that overlap at run time give the first row where we
  fail the case with ``hit_policy_violation`` (the checker proves tables free of overlaps);
* a ``value_of`` outside the decision's values passes through a first/unique table, and
  matches no row of a priority/collect one, where we fail the case with ``bad_output``;
* a rule that sets a decision to a missing value (``value_of`` nothing) is not seen;
* ZEN computes in decimals and rounds a tie away from zero: the derived ratio 49,827.50 /
  1,000,000 = 0.0498275 becomes 0.049828, where Python rounds the nearest binary float and
  gets 0.049827.  About 0.6% of generated cases hold such a tie; none sits on a threshold
  (0.0999995 or 0.2999995), so no decision differs, only a parameter that shows the ratio.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zen

if TYPE_CHECKING:
    from zen import EvaluateBatchRequest, EvaluateBatchResult

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere, as the other benchmarks are

from bench.cases import AS_OF, generate  # noqa: E402
from bench.report import add_json_option, load_average, write_json  # noqa: E402
from engine import CaseError, Evaluator, compile_playbook, load_playbook  # noqa: E402
from engine.conditions import conjuncts  # noqa: E402
from engine.model import (  # noqa: E402
    AllOf,
    AnyOf,
    Atom,
    Condition,
    Decision,
    Interval,
    Literal,
    Not,
    Output,
    Playbook,
    Row,
    Rule,
    ValueOf,
)

__all__ = [
    "ZenGraph",
    "ZenMismatch",
    "ZenOutcome",
    "check",
    "run",
    "to_jdm",
    "zen_engine",
]

DECISION_KEY = "playbook"
"""The key the loader answers to; one engine serves one converted playbook."""

AS_OF_KEY = "_as_of"
"""Where the context carries ``as_of``.  Our names start with a letter, so it cannot collide."""

RULES_KEY = "_rules"  # rows each rules node fired: {RULES_KEY: {"r<k>": [{rule, recommend, set}, ...]}}
COLLECT_KEY = "_collect"  # rows a collect table matched, before they become the decision's list
CONFLICTS_KEY = "_conflicts"  # decision -> true when two rules set it to different values
ITEM_FIELD = "v"  # the output column of a collect table

RESERVED = frozenset({"and", "or", "not", "in", "true", "false", "null"})
"""Words ZEN's parser reads as operators or constants, never as a name (checked on 2.1.3)."""

SECONDS_PER_WEEK = 7 * 24 * 3600
DEFAULT_CASES = 100_000
DEFAULT_CHECK = 2_000
DEFAULT_BATCH = 1_000
MISMATCHES_SHOWN = 20


# -- ZEN expressions ------------------------------------------------------------------------


def zen_literal(value: Any) -> str:
    """A value as a ZEN literal."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        # ZEN reads 1e-07 but not 1E3 or 1e+16: spell exponents out.
        return format(Decimal(text), "f") if "e" in text or "E" in text else text
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(zen_literal(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_string(str(k))}: {zen_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no ZEN literal for {value!r}")


def _string(text: str) -> str:
    # ZEN strings have no escapes: quote with the quote the text lacks, or join pieces with '+'.
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    return ' + "\'" + '.join(f"'{piece}'" for piece in text.split("'"))


def _member(base: str, name: str) -> str:
    return f"{base}['{name}']" if name in RESERVED else f"{base}.{name}"


def zen_ref(var: str) -> str:
    """A reference to an input (``object.field``) or a decision (a bare name) in the ZEN context."""
    parts = var.split(".")
    if any(part in RESERVED for part in parts):
        return "$root" + "".join(f"['{part}']" for part in parts)
    return var


def _list(values: Iterable[Any]) -> str:
    return "[" + ", ".join(zen_literal(v) for v in values) + "]"


def atom_test(atom: Atom, ref: str) -> str:
    """An atom as a ZEN boolean expression on ``ref`` that is false, never an error, on a missing value.

    ZEN compares nothing with null (``null > 2`` is an error, which a table cell reads as
    "no match" but which aborts a whole ``not``/``or``), so every test that could meet null
    checks for it first: for us a test on a missing value is unknown, and only a true condition
    fires (``present`` is never unknown).
    """
    op, operand = atom.op, atom.operand
    if op == "present":
        return f"{ref} != null" if operand else f"{ref} == null"
    if op == "equals":
        return f"{ref} == {zen_literal(operand)}"  # null equals no value
    if op == "one_of":
        return f"{ref} in {_list(operand)}"  # null is in no list
    if op == "not_equals":
        return f"{ref} != null and {ref} != {zen_literal(operand)}"
    if op == "not_one_of":
        return f"{ref} != null and not ({ref} in {_list(operand)})"
    if op == "interval":
        return f"{ref} != null and {_interval_test(operand, ref)}"
    items = operand if isinstance(operand, tuple | list) else (operand,)
    if op == "contains":
        return f"{ref} != null and {zen_literal(operand)} in {ref}"
    if op == "contains_all":
        return f"{ref} != null and all({_list(items)}, # in {ref})"
    if op == "contains_any":
        return f"{ref} != null and some({_list(items)}, # in {ref})"
    raise ValueError(f"no ZEN form for operator '{op}'")


def _interval_test(interval: Interval, ref: str) -> str:
    low, high = interval.low, interval.high
    if low is not None and high is not None:
        opening = "[" if interval.low_closed else "("
        closing = "]" if interval.high_closed else ")"
        return f"{ref} in {opening}{zen_literal(low)}..{zen_literal(high)}{closing}"
    if low is not None:
        return f"{ref} {'>=' if interval.low_closed else '>'} {zen_literal(low)}"
    assert high is not None  # validation refuses an interval without bounds
    return f"{ref} {'<=' if interval.high_closed else '<'} {zen_literal(high)}"


def unary_cell(atoms: Sequence[Atom]) -> str:
    """The cell of a column (the column's field is ``$``) holding one row's tests of that variable.

    One equality or one_of is written the way a ZEN table is usually written (``'a'``,
    ``'a', 'b'``); both are false on null.  Anything else is a ``$`` expression.
    """
    if len(atoms) == 1:
        atom = atoms[0]
        if atom.op == "equals":
            return zen_literal(atom.operand)
        if atom.op == "one_of":
            return ", ".join(zen_literal(v) for v in atom.operand)
    return " and ".join(atom_test(atom, "$") for atom in atoms)


@dataclass(frozen=True)
class Unmatched:
    """An earlier row that did not match: its condition not true (false or unknown), unlike ``not``."""

    item: Condition


def condition_expr(condition: Condition | Unmatched, negated: bool = False) -> str:
    """A whole condition as one standard ZEN expression (for conditions that are not a plain conjunction):
    true exactly when ours is true.  ``not`` is pushed down to the tests, where a negated test also needs its
    value (Kleene: ``not`` of unknown is unknown)."""
    if isinstance(condition, Unmatched):
        inner = condition_expr(condition.item)
        return inner if negated else f"not {inner}"
    if isinstance(condition, Atom):
        test = atom_test(condition, zen_ref(condition.var))
        if not negated:
            return f"({test})"
        if condition.op == "present":
            return f"(not ({test}))"
        return f"({zen_ref(condition.var)} != null and not ({test}))"
    if isinstance(condition, Not):
        return condition_expr(condition.item, not negated)
    joiner = " and " if isinstance(condition, AllOf) != negated else " or "
    return "(" + joiner.join(condition_expr(item, negated) for item in condition.items) + ")"


def output_expr(output: Output) -> str:
    return zen_ref(output.var) if isinstance(output, ValueOf) else zen_literal(output.value)


# -- conditions rewritten for ZEN's hit policies ---------------------------------------------


def _all(*conditions: Condition | None) -> Condition | None:
    """The conjunction; ``None`` (no condition) is true."""
    items = tuple(c for c in conditions if c is not None)
    if not items:
        return None
    return items[0] if len(items) == 1 else AllOf(items)


@dataclass(frozen=True)
class ZenRow:
    """One row of a ZEN decision table: our row or rule id, its condition, its output cells."""

    id: str
    when: Condition | None
    outputs: dict[str, str]  # output field -> ZEN expression


def _expand_value_of(decision: Decision, row: Row, var: str) -> list[tuple[str, Condition | None, Any]]:
    """A ``value_of`` row as one row per value the decision can take: ``when and var = value``.

    This makes its output a constant, which ``priority`` can rank and ``collect`` can
    de-duplicate when converting; a value outside the decision's values is ``bad_output``
    for us and matches no row in ZEN.
    """
    return [
        (f"{row.id}={value}", _all(row.when, Atom(var, "equals", value, f"= {value}", row.location)), value)
        for value in decision.values or ()
    ]


def decision_rows(decision: Decision) -> tuple[str, list[ZenRow]]:
    """ZEN's hit policy and rows for one of our decision tables."""
    name = decision.name
    if decision.hit_policy in ("unique", "first"):
        # unique: the table checker proves no two rows overlap, so the first match is the only one.
        return "first", [ZenRow(row.id, row.when, {name: output_expr(row.then)}) for row in decision.rows]
    # A collect row gives one item; a priority row of a list decision gives a list, which ranks last.
    one_value = decision.hit_policy == "collect" or decision.type != "list"
    constants: list[tuple[str, Condition | None, Any]] = []  # (row id, condition, constant output or ValueOf)
    for row in decision.rows:
        if isinstance(row.then, ValueOf) and decision.values and one_value:
            constants.extend(_expand_value_of(decision, row, row.then.var))
        else:
            constants.append((row.id, row.when, row.then.value if isinstance(row.then, Literal) else row.then))
    if decision.hit_policy == "priority":
        ranking = list(decision.values or ())

        def rank(item: tuple[str, Any, Any]) -> int:
            out = item[2]
            return ranking.index(out) if not isinstance(out, ValueOf | list) and out in ranking else len(ranking)

        ordered = sorted(constants, key=rank)  # stable: file order within a rank, as ours breaks ties
        return "first", [ZenRow(i, when, {name: _const_expr(out)}) for i, when, out in ordered]
    # collect: our list holds each output once, at its first matching row.  A row therefore
    # contributes only when no earlier row with the same output matched: that is decided here,
    # once, because ZEN's expressions cannot de-duplicate a list in order.
    rows: list[ZenRow] = []
    earlier: dict[str, list[Condition]] = {}  # output -> the conditions of the rows that gave it so far
    always: set[str] = set()  # outputs of an earlier row without a condition
    for row_id, row_when, out in constants:
        key = json.dumps(out, sort_keys=True, default=str)
        if key in always:
            continue  # an earlier row with this output always matches: this one never adds anything
        before = earlier.setdefault(key, [])
        unmatched = Unmatched(before[0] if len(before) == 1 else AnyOf(tuple(before)))
        when = _all(row_when, unmatched) if before else row_when  # type: ignore[arg-type]
        rows.append(ZenRow(row_id, when, {ITEM_FIELD: _const_expr(out)}))
        if row_when is None:
            always.add(key)
        else:
            before.append(row_when)
    return "collect", rows


def _const_expr(out: Any) -> str:
    return output_expr(out) if isinstance(out, ValueOf) else zen_literal(out)


def rule_row(rule: Rule) -> ZenRow:
    """A rule as a row of a collect table: its id, its recommendations, the decisions it sets."""
    outputs = {"rule": zen_literal(rule.id)}
    if rule.recommends:
        recs = []
        for rec in rule.recommends:
            params = ", ".join(f"{_string(k)}: {output_expr(v)}" for k, v in rec.params.items())
            recs.append(f"{{id: {zen_literal(rec.action)}, params: {{{params}}}}}")
        outputs["recommend"] = "[" + ", ".join(recs) + "]"
    for target, output in rule.sets.items():
        outputs[f"set.{target}"] = output_expr(output)
    return ZenRow(rule.id, rule.when, outputs)


def table_content(rows: Sequence[ZenRow], hit_policy: str, output_path: str | None = None) -> dict[str, Any]:
    """A decisionTableNode's content: a column per variable a row tests in a plain conjunction, with
    unary cells, and one expression column for whatever is not (``any``, ``not``)."""
    columns: dict[str, str] = {}  # variable -> column id
    needs_expression = False
    for row in rows:
        for part in conjuncts(row.when):
            if isinstance(part, Atom):
                columns.setdefault(part.var, f"in{len(columns)}")
            else:
                needs_expression = True
    inputs = [{"id": cid, "name": var, "field": zen_ref(var)} for var, cid in columns.items()]
    if needs_expression:
        inputs.append({"id": "when", "name": "condition"})  # no field: its cells are standard expressions
    out_ids = {name: f"out{i}" for i, name in enumerate(dict.fromkeys(k for row in rows for k in row.outputs))}
    outputs = [{"id": oid, "name": name, "field": name} for name, oid in out_ids.items()]
    rules = []
    for row in rows:
        cells: dict[str, str] = {"_id": row.id}
        by_var: dict[str, list[Atom]] = {}
        rest: list[str] = []
        for part in conjuncts(row.when):
            if isinstance(part, Atom):
                by_var.setdefault(part.var, []).append(part)
            else:
                rest.append(condition_expr(part))
        for var, atoms in by_var.items():
            cells[columns[var]] = unary_cell(atoms)
        if rest:
            cells["when"] = " and ".join(rest)
        cells.update({out_ids[name]: expr for name, expr in row.outputs.items()})
        rules.append(cells)
    content: dict[str, Any] = {"hitPolicy": hit_policy, "inputs": inputs, "outputs": outputs, "rules": rules}
    if output_path:
        content["outputPath"] = output_path
    return content


# -- the decision graph ------------------------------------------------------------------


@dataclass
class ZenOutcome:
    """What ZEN decided for one case, shaped like our Result's decisions and recommendations."""

    decisions: dict[str, Any]
    recommendations: list[dict[str, Any]]
    conflicts: list[str]


@dataclass
class ZenGraph:
    """A playbook as a JDM document, with what is needed to call it and to read its answer."""

    playbook: Playbook
    jdm: dict[str, Any]
    rule_keys: tuple[str, ...]  # keys under RULES_KEY, in evaluation order
    stats: dict[str, int] = field(default_factory=dict)

    def context(self, case: dict[str, Any], as_of: dt.date) -> dict[str, Any]:
        """The evaluation context: the case as it is, plus ``as_of`` for the derived inputs."""
        return {**case, AS_OF_KEY: as_of.isoformat()}

    def outcome(self, result: dict[str, Any]) -> ZenOutcome:
        """Read ZEN's result: every decision (``None`` when not made), the recommendations in order."""
        decisions = {name: result.get(name) for name in self.playbook.decisions}
        fired = result.get(RULES_KEY) or {}
        recommendations = [
            {**rec, "rule": row["rule"]}
            for key in self.rule_keys
            for row in fired.get(key, ())
            for rec in row.get("recommend", ())
        ]
        conflicts = [name for name, clash in (result.get(CONFLICTS_KEY) or {}).items() if clash]
        return ZenOutcome(decisions, recommendations, conflicts)


class _GraphBuilder:
    """Builds the JDM graph node by node, in the playbook's evaluation order."""

    def __init__(self, playbook: Playbook) -> None:
        self.playbook = playbook
        self.nodes: list[dict[str, Any]] = []
        self.edges: list[dict[str, str]] = []
        self.depth: dict[str, int] = {}  # node id -> its column in the editor's layout
        self.height: dict[int, int] = {}  # column -> nodes placed in it
        self.producers: dict[str, str] = {}  # decision -> the node whose output carries it at the top
        self.results: list[str] = []  # nodes whose output goes into the result
        self.rule_keys: list[str] = []
        self.rows = 0

    def add(self, node_id: str, kind: str, name: str, content: dict[str, Any], parents: Iterable[str]) -> str:
        parents = list(dict.fromkeys(parents))
        depth = 1 + max((self.depth[p] for p in parents), default=-1)
        self.depth[node_id] = depth
        self.height[depth] = self.height.get(depth, 0) + 1
        self.nodes.append(
            {
                "id": node_id,
                "type": kind,
                "name": name,
                "position": {"x": 260 * depth, "y": 90 * self.height[depth]},  # for the JDM editor only
                "content": content,
            }
        )
        for parent in parents:
            self.edges.append({"id": f"{parent}->{node_id}", "sourceId": parent, "targetId": node_id, "type": "edge"})
        return node_id

    def build(self) -> ZenGraph:
        pb = self.playbook
        derive = self.derive_node(self.add("input", "inputNode", "case", {}, []))
        setters: dict[str, list[int]] = {}  # decision -> the rules nodes that set it, in order
        for k, node in enumerate(pb.order):
            for member in node.members if node.kind == "rules" else ():
                for target in pb.rules_by_id[member].sets:
                    setters.setdefault(target, [])
                    if k not in setters[target]:
                        setters[target].append(k)
        for k, node in enumerate(pb.order):
            parents = self.parents_of(node.reads, derive)
            if node.kind == "table":
                self.table(pb.decisions[node.name], parents)
                continue
            rows = [rule_row(pb.rules_by_id[member]) for member in node.members]
            self.rows += len(rows)
            content = table_content(rows, "collect", f"{RULES_KEY}.r{k}")
            self.results.append(self.add(f"rules_{k}", "decisionTableNode", node.name, content, parents))
            self.rule_keys.append(f"r{k}")
            # Every reader of a decision comes after every rules node that sets it (Playbook.order),
            # so the value is lifted out right after the last of them.
            for target, nodes in setters.items():
                if nodes[-1] == k:
                    self.lift_set(target, nodes)
        self.add("output", "outputNode", "result", {}, self.results)
        jdm = {"contentType": "application/vnd.gorules.decision", "nodes": self.nodes, "edges": self.edges}
        stats = {"nodes": len(self.nodes), "edges": len(self.edges), "rows": self.rows}
        return ZenGraph(pb, jdm, tuple(self.rule_keys), stats)

    def parents_of(self, reads: Iterable[str], derive: str) -> list[str]:
        parents: list[str] = []
        for var in reads:
            if "." in var:
                parents.append(derive)
            else:
                parents.append(self.producers[var])
        return parents or [derive]  # a node that reads nothing still hangs off the input

    def derive_node(self, facts: str) -> str:
        """The expression node computing derived inputs, as prepare_inputs does; the case passes through."""
        expressions: list[dict[str, str]] = []
        for name, spec in self.playbook.inputs.items():
            if spec.derive is None:
                continue
            how, sources = spec.derive
            if how in ("weeks_until", "weeks_since"):
                (date,) = (zen_ref(s) for s in sources)
                later, earlier = (date, AS_OF_KEY) if how == "weeks_until" else (AS_OF_KEY, date)
                computed = f"({date} != null ? round((date({later}) - date({earlier})) / {SECONDS_PER_WEEK}, 4) : null)"
            else:
                a, b = (zen_ref(s) for s in sources)
                computed = f"({a} != null and {b} != null and {b} != 0 ? round({a} / {b}, 6) : null)"
            # A derived input given in the case is used as given.
            expressions.append(
                {"id": f"derive{len(expressions)}", "key": name, "value": f"{zen_ref(name)} ?? {computed}"}
            )
        if not expressions:
            return facts
        return self.add(
            "derive", "expressionNode", "derived inputs", {"expressions": expressions, "passThrough": True}, [facts]
        )

    def table(self, decision: Decision, parents: list[str]) -> None:
        hit_policy, rows = decision_rows(decision)
        self.rows += len(rows)
        name = decision.name
        if hit_policy == "first":
            node = self.add(f"table_{name}", "decisionTableNode", name, table_content(rows, "first"), parents)
        else:
            path = f"{COLLECT_KEY}.{name}"
            matched = self.add(
                f"table_{name}", "decisionTableNode", name, table_content(rows, "collect", path), parents
            )
            items = _member(COLLECT_KEY, name)
            lift = {
                "expressions": [
                    {"id": "list", "key": name, "value": f"len({items}) > 0 ? map({items}, #.{ITEM_FIELD}) : null"}
                ]
            }
            node = self.add(f"list_{name}", "expressionNode", f"{name} (list)", lift, [matched])
        self.producers[name] = node
        self.results.append(node)

    def lift_set(self, target: str, setters: list[int]) -> None:
        """An expression node giving a decision the value the rules set, and whether two of them disagreed.

        A rule that sets a decision to a missing value (value_of nothing) is not seen here: ZEN
        drops nulls from rows, so such a rule neither sets nor conflicts.
        """
        tables = [_member(RULES_KEY, f"r{k}") for k in setters]
        rows = tables[0] if len(tables) == 1 else f"flatten([{', '.join(tables)}])"
        item = _member(_member("#", "set"), target)
        values = f"map(filter({rows}, {item} != null), {item})"
        content = {
            "expressions": [
                {"id": "value", "key": target, "value": f"{values}[0]"},
                # `$` holds what the expressions above in this node gave.
                {
                    "id": "conflict",
                    "key": f"{CONFLICTS_KEY}.{target}",
                    "value": f"some({values}, # != {_member('$', target)})",
                },
            ]
        }
        parents = [f"rules_{k}" for k in setters]
        node = self.add(f"set_{target}", "expressionNode", f"{target} (set by rules)", content, parents)
        self.producers[target] = node
        self.results.append(node)


def to_jdm(playbook: Playbook) -> ZenGraph:
    """Convert a checked playbook into a JDM decision graph for zen-engine."""
    return _GraphBuilder(playbook).build()


def zen_engine(graph: ZenGraph) -> zen.ZenEngine:
    """An engine whose loader hands out the graph compiled once.

    The loader is the fast way in: ``create_decision(...).evaluate()`` measured about 20× slower
    on a trivial graph, and ``get_decision(...).evaluate()`` about 2.4× slower on the course's.
    """
    content = zen.ZenDecisionContent(json.dumps(graph.jdm, ensure_ascii=False))

    def loader(key: str) -> zen.ZenDecisionContent:
        return content

    return zen.ZenEngine({"loader": loader})


# -- correctness ---------------------------------------------------------------------------


class ZenMismatch(AssertionError):
    """ZEN and our engine disagree on at least one case: the figures would compare different work."""


def _ours_outcome(item: Any) -> tuple[dict[str, Any] | None, set[str], str | None]:
    if isinstance(item, CaseError):
        return None, set(), item.code
    return item.decisions, {rec["id"] for rec in item.recommendations}, None


def _same_recommendations(ours: Sequence[dict[str, Any]], theirs: Sequence[dict[str, Any]]) -> bool:
    """The same recommendations, rules and parameters, in any order (4 and 4.0 are the same number)."""

    if len(ours) != len(theirs):
        return False
    theirs_left = list(theirs)
    for rec in ours:
        same = (rec["id"], rec["rule"], rec["params"])
        match = next(
            (i for i, other in enumerate(theirs_left) if (other["id"], other["rule"], other["params"]) == same), None
        )
        if match is None:
            return False
        del theirs_left[match]
    return True


def compare(case_id: str, ours: Any, theirs: ZenOutcome) -> list[str]:
    """Differences for one case: each decision, the set of action ids, an error only one side has."""
    decisions, actions, error = _ours_outcome(ours)
    if error is not None or theirs.conflicts:
        zen_error = "decision_conflict" if theirs.conflicts else None
        return [] if error == zen_error else [f"{case_id}: ours {error or 'no error'}, ZEN {zen_error or 'no error'}"]
    assert decisions is not None
    problems = [
        f"{case_id}: {name} = {decisions[name]!r} (ours) vs {theirs.decisions.get(name)!r} (ZEN)"
        for name in decisions
        if decisions[name] != theirs.decisions.get(name)
    ]
    zen_actions = {rec["id"] for rec in theirs.recommendations}
    if actions != zen_actions:
        problems.append(
            f"{case_id}: actions only ours {sorted(actions - zen_actions)}, only ZEN {sorted(zen_actions - actions)}"
        )
    return problems


def check(
    playbook: Playbook, graph: ZenGraph, cases: Sequence[tuple[str, dict[str, Any]]], as_of: dt.date = AS_OF
) -> dict[str, Any]:
    """Evaluate the cases with both engines (ZEN one by one and in batches); raise :class:`ZenMismatch`,
    after printing the differences, unless every decision and the set of action ids agree.

    Recommendation parameters (and the rule behind each) are compared too, but only reported:
    the brief of this anchor is the decisions and the actions.
    """
    engine = zen_engine(graph)
    with compile_playbook(playbook) as compiled:
        ours = list(Evaluator(compiled).evaluate(cases, as_of))
    single = [graph.outcome(engine.evaluate(DECISION_KEY, graph.context(case, as_of))["result"]) for _, case in cases]
    batch = [graph.outcome(r["data"]["result"]) for r in _zen_batch(engine, graph, cases, as_of, DEFAULT_BATCH)]
    problems: list[str] = []
    params_differ = 0
    for (case_id, _), mine, one, many in zip(cases, ours, single, batch, strict=True):
        problems += compare(case_id, mine, one)
        problems += [f"{p} [batch]" for p in compare(case_id, mine, many)]
        if not isinstance(mine, CaseError) and not _same_recommendations(mine.recommendations, one.recommendations):
            params_differ += 1
    errors = sum(isinstance(item, CaseError) for item in ours)
    if problems:
        for line in problems[:MISMATCHES_SHOWN]:
            print("MISMATCH", line)
        raise ZenMismatch(f"ZEN and our engine disagree: {len(problems)} differences over {len(cases)} cases")
    return {"cases": len(cases), "mismatches": 0, "case_errors_both": errors, "params_differ": params_differ}


def _zen_batch(
    engine: zen.ZenEngine, graph: ZenGraph, cases: Sequence[tuple[str, dict[str, Any]]], as_of: dt.date, size: int
) -> Iterator[EvaluateBatchResult]:
    for start in range(0, len(cases), size):
        requests: list[EvaluateBatchRequest] = [
            {"key": DECISION_KEY, "context": graph.context(case, as_of)} for _, case in cases[start : start + size]
        ]
        for response in engine.evaluate_batch(requests):
            if not response["success"]:
                raise RuntimeError(f"ZEN failed: {response.get('error')}")
            yield response


# -- timing --------------------------------------------------------------------------------


@dataclass
class Timing:
    engine: str
    cases: int
    seconds: float
    cpu_seconds: float  # all threads of the process: above `seconds` when a run uses several cores
    errors: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "cases": self.cases,
            "seconds": round(self.seconds, 3),
            "cpu_seconds": round(self.cpu_seconds, 3),
            "cases_per_second": round(self.cases / self.seconds),
            "errors": self.errors,
        }


def _timed(name: str, count: int, work: Callable[[], int]) -> Timing:
    wall, cpu = time.perf_counter(), time.process_time()
    errors = work()
    return Timing(name, count, time.perf_counter() - wall, time.process_time() - cpu, errors)


def time_ours(playbook: Playbook, cases: Sequence[tuple[str, dict[str, Any]]], as_of: dt.date) -> Timing:
    """Our engine as `playbook recommend` runs it, traces recorded, without encoding JSON."""
    with compile_playbook(playbook) as compiled:
        evaluator = Evaluator(compiled)

        def work() -> int:
            return sum(isinstance(item, CaseError) for item in evaluator.evaluate(cases, as_of))

        return _timed("ours: Evaluator.evaluate", len(cases), work)


def time_zen_single(graph: ZenGraph, cases: Sequence[tuple[str, dict[str, Any]]], as_of: dt.date) -> Timing:
    """ZEN called once per case, its answer read into decisions and recommendations."""
    engine = zen_engine(graph)
    evaluate, context, outcome = engine.evaluate, graph.context, graph.outcome

    def work() -> int:
        return sum(bool(outcome(evaluate(DECISION_KEY, context(case, as_of))["result"]).conflicts) for _, case in cases)

    return _timed("ZEN: evaluate, case by case", len(cases), work)


def time_zen_batch(
    graph: ZenGraph, cases: Sequence[tuple[str, dict[str, Any]]], as_of: dt.date, size: int = DEFAULT_BATCH
) -> Timing:
    """ZEN called with ``size`` cases at a time; the binding runs them on a worker thread per CPU."""
    engine = zen_engine(graph)

    def work() -> int:
        return sum(
            bool(graph.outcome(r["data"]["result"]).conflicts) for r in _zen_batch(engine, graph, cases, as_of, size)
        )

    return _timed(f"ZEN: evaluate_batch, {size} a call", len(cases), work)


def run(
    playbook_path: str,
    count: int = DEFAULT_CASES,
    *,
    check_count: int = DEFAULT_CHECK,
    batch_size: int = DEFAULT_BATCH,
    seed: int = 1,
) -> dict[str, Any]:
    """Convert, check on ``check_count`` cases, then time both engines on the same ``count`` cases."""
    playbook = load_playbook(playbook_path)
    started = time.perf_counter()
    graph = to_jdm(playbook)
    zen.ZenDecisionContent(json.dumps(graph.jdm, ensure_ascii=False))  # what zen_engine compiles, timed once here
    convert_seconds = time.perf_counter() - started
    correctness = check(playbook, graph, list(generate(check_count, seed)))
    cases = list(generate(count, seed))
    runs = [time_ours(playbook, cases, AS_OF), time_zen_single(graph, cases, AS_OF)]
    if hasattr(zen.ZenEngine, "evaluate_batch"):
        runs.append(time_zen_batch(graph, cases, AS_OF, batch_size))
    ours_rate = runs[0].cases / runs[0].seconds
    ratios = {f"ours/{r.engine}": round(ours_rate / (r.cases / r.seconds), 3) for r in runs[1:]}
    return {
        "zen_engine": version("zen-engine"),
        "playbook": playbook_path,
        "playbook_hash": playbook.content_hash,
        "jdm": {**graph.stats, "convert_and_compile_seconds": round(convert_seconds, 4)},
        "check": correctness,
        "runs": [r.to_json() for r in runs],
        "ratio_ours_to_zen": ratios[f"ours/{runs[1].engine}"],  # cases/s over cases/s, ZEN case by case
        "ratios": ratios,
    }


def run_generated(sizes: Sequence[int], count: int, check_count: int = 500, runs: int = 1) -> dict[str, Any]:
    """Both engines on bench/scaling.py's generated playbooks (an N-row table and N rules), the same
    ``count`` cases each, one after the other in this process, ``runs`` times per size (which engine goes
    first alternates from run to run), with the load average beside each run."""
    from bench.scaling import RULE_AS_OF, generated_playbook, rule_cases
    from engine import load_playbook_text

    measured = []
    for n in sizes:
        playbook = load_playbook_text(generated_playbook(n), f"<generated {n}>")
        graph = to_jdm(playbook)
        cases = list(rule_cases(count))
        correctness = check(playbook, graph, cases[:check_count], RULE_AS_OF)
        for attempt in range(1, runs + 1):
            load_before = os.getloadavg()[0]
            if attempt % 2:
                zen_timing = time_zen_single(graph, cases, RULE_AS_OF)
                ours_timing = time_ours(playbook, cases, RULE_AS_OF)
            else:
                ours_timing = time_ours(playbook, cases, RULE_AS_OF)
                zen_timing = time_zen_single(graph, cases, RULE_AS_OF)
            measured.append(
                {
                    "rules": n,
                    "run": attempt,
                    "table_rows": n,
                    "jdm": graph.stats,
                    "check": correctness,
                    "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                    "ours": ours_timing.to_json(),
                    "zen": zen_timing.to_json(),
                    # ours/ZEN in cases/s.  The machine may be shared: CPU seconds compare the work,
                    # wall seconds include waiting for a core.
                    "ratio_wall": round(zen_timing.seconds / ours_timing.seconds, 2),
                    "ratio_cpu": round(zen_timing.cpu_seconds / ours_timing.cpu_seconds, 2),
                }
            )
    return {
        "zen_engine": version("zen-engine"),
        "cases_each": count,
        "runs_each": runs,
        "runs": measured,
        "ratio_wall_by_rules": {str(n): [r["ratio_wall"] for r in measured if r["rules"] == n] for n in sizes},
    }


def print_generated(result: dict[str, Any]) -> None:
    print(f"generated playbooks (N table rows, N rules), {result['cases_each']} cases each, ZEN {result['zen_engine']}")
    print(
        f"{'rules':>6} {'run':>4} {'load':>11} {'ours c/s':>9} {'ours CPU s':>10} {'ZEN c/s':>8} {'ZEN CPU s':>9} "
        f"{'ours/ZEN wall':>13} {'ours/ZEN CPU':>12}"
    )
    for r in result["runs"]:
        load = "-".join(str(x) for x in r["load_average"])
        print(
            f"{r['rules']:>6} {r['run']:>4} {load:>11} {r['ours']['cases_per_second']:>9} "
            f"{r['ours']['cpu_seconds']:>10} {r['zen']['cases_per_second']:>8} {r['zen']['cpu_seconds']:>9} "
            f"{r['ratio_wall']:>13} {r['ratio_cpu']:>12}"
        )
    for rules, ratios in result["ratio_wall_by_rules"].items():
        print(f"ours/ZEN (cases/s, wall) at {rules} rules: {', '.join(map(str, ratios))}")


def print_table(result: dict[str, Any]) -> None:
    check_ = result["check"]
    print(
        f"ZEN {result['zen_engine']} vs ours, {result['playbook']}: JDM of {result['jdm']['nodes']} nodes, "
        f"{result['jdm']['edges']} edges, {result['jdm']['rows']} rows; "
        f"{check_['cases']} cases checked, {check_['mismatches']} mismatches"
    )
    print(f"{'engine':<34} {'cases':>9} {'seconds':>9} {'CPU s':>8} {'cases/s':>9}")
    for r in result["runs"]:
        print(f"{r['engine']:<34} {r['cases']:>9} {r['seconds']:>9} {r['cpu_seconds']:>8} {r['cases_per_second']:>9}")
    for name, ratio in result["ratios"].items():
        print(f"ratio of cases/s, {name}: {ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--playbook", default=str(ROOT / "playbooks" / "course.yaml"))
    parser.add_argument("--cases", type=int, default=DEFAULT_CASES, help="cases timed (default %(default)s)")
    parser.add_argument("--check", type=int, default=DEFAULT_CHECK, help="cases compared (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH)
    parser.add_argument("--jdm", type=Path, help="also write the converted JDM graph to this file")
    parser.add_argument("--rules", help="instead: bench/scaling.py's generated playbooks of these sizes (10,100,1000)")
    parser.add_argument("--rule-cases", type=int, default=10_000, help="cases per generated playbook (with --rules)")
    parser.add_argument("--rule-check", type=int, default=500, help="cases compared per generated playbook")
    parser.add_argument("--runs", type=int, default=1, help="timed runs per generated playbook (with --rules)")
    add_json_option(parser)
    args = parser.parse_args()
    load_before = load_average()
    if args.rules:
        sizes = [int(n) for n in args.rules.split(",")]
        try:
            generated = run_generated(sizes, args.rule_cases, min(args.rule_check, args.rule_cases), args.runs)
        except ZenMismatch as exc:
            sys.exit(f"FAILED: {exc}")
        print_generated(generated)
        write_json({**generated, "load_average_before": load_before}, "zen_scaling", args.json)
        return
    if args.jdm:
        graph = to_jdm(load_playbook(args.playbook))
        args.jdm.write_text(json.dumps(graph.jdm, ensure_ascii=False, indent=2), encoding="utf-8")
    try:
        result = run(args.playbook, args.cases, check_count=args.check, batch_size=args.batch_size)
    except ZenMismatch as exc:
        sys.exit(f"FAILED: {exc}")
    print_table(result)
    print(f"load average {', '.join(map(str, load_before))} before, {', '.join(map(str, load_average()))} after")
    write_json({**result, "load_average_before": load_before}, "zen_anchor", args.json)


if __name__ == "__main__":
    main()
