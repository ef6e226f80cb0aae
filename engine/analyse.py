"""The table checker: gaps, overlaps, unreachable rows and rules, unused decisions, unreachable actions.

Runs over a checked playbook, never over cases.  Each variable a table reads is
split into *cells*: the regions its tests cannot tell apart (for numbers, the
points and open stretches between every bound the table uses; for enumerations,
each value a decision can actually take; for lists, which of the tested items
are in it; "missing" where a row tests ``present``).  Every combination of cells
is one representative case; reading each row's condition over it shows which
rows cover it.  Uncovered combinations are merged back into readable regions.
"""

from __future__ import annotations

import itertools
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from engine.conditions import atom_matches, atoms_of, conjuncts, evaluate_condition, items_of, numbers_of, variables_of
from engine.errors import Problem
from engine.model import Atom, Condition, Decision, InputField, Interval, Playbook, ValueOf

__all__ = ["MAX_COMBINATIONS", "analyse", "missing_labels"]

MAX_COMBINATIONS = 50_000
"""Tables whose combinations of cells exceed this are not searched for gaps and overlaps."""

_MISSING_TEXT = "missing"


@dataclass(frozen=True)
class _Cell:
    value: Any  # a representative value (None: missing)
    text: str
    low: float | None = None  # numeric cells: the stretch they stand for
    low_closed: bool = False
    high: float | None = None
    high_closed: bool = False
    numeric: bool = False


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _numeric_cells(bounds: Iterable[float]) -> list[_Cell]:
    points = sorted(set(bounds))
    if not points:
        return [_Cell(0, "any number", numeric=True)]
    cells = [_Cell(points[0] - 1, "", None, False, points[0], False, True)]
    for i, p in enumerate(points):
        cells.append(_Cell(p, "", p, True, p, True, True))
        nxt = points[i + 1] if i + 1 < len(points) else None
        cells.append(_Cell((p + nxt) / 2 if nxt is not None else p + 1, "", p, False, nxt, False, True))
    return cells


def _range_text(cells: Sequence[_Cell]) -> str:
    first, last = cells[0], cells[-1]
    if first.low is not None and first.low == last.high and first.low_closed and last.high_closed:
        return f"= {_fmt(first.low)}"
    low = _fmt(first.low) if first.low is not None else "-∞"
    high = _fmt(last.high) if last.high is not None else "∞"
    return f"in {'[' if first.low_closed else '('}{low}, {high}{']' if last.high_closed else ')'}"


class _Analyser:
    def __init__(self, playbook: Playbook) -> None:
        self.playbook = playbook
        self.problems: list[Problem] = []
        self.domains = self._decision_domains()
        self.reachable: set[str] = set()
        self.steps = 0  # combinations visited and row matches found: the table checker's work

    def report(self, location: Any, code: str, message: str) -> None:
        self.problems.append(Problem(location, code, message))

    # -- what each variable can be -----------------------------------------------

    def _decision_domains(self) -> dict[str, tuple[Any, ...] | None]:
        """The values each enumerated decision can really take (None: not enumerable)."""
        domains: dict[str, tuple[Any, ...] | None] = {}
        for decision in self.playbook.decisions.values():
            if decision.values is None or decision.type == "list":
                domains[decision.name] = None
                continue
            outputs: list[Any] = []
            sources = [row.then for row in decision.rows] + [
                rule.sets[decision.name] for rule in self.playbook.rules if decision.name in rule.sets
            ]
            for out in sources:
                if isinstance(out, ValueOf):
                    outputs = list(decision.values)
                    break
                outputs.append(out.value)
            domains[decision.name] = tuple(v for v in decision.values if v in outputs)
        return domains

    def cells(self, var: str, atoms: list[Atom]) -> list[_Cell] | None:
        mine = [a for a in atoms if a.var == var]
        if var in self.playbook.inputs:
            field = self.playbook.inputs[var]
            kind, values = field.type, field.values
        else:
            decision = self.playbook.decisions[var]
            kind, values = decision.type, self.domains.get(var)
            if kind == "list":
                values = decision.values
        cells: list[_Cell]
        if kind == "list":
            tested = sorted(
                {x for a in mine if a.op.startswith("contains") for x in items_of(a)},
                key=lambda x: (values or ()).index(x) if values and x in values else 0,
            )
            if len(tested) > 12:
                return None
            cells = []
            for picks in itertools.product([False, True], repeat=len(tested)):
                chosen = [x for x, on in zip(tested, picks, strict=True) if on]
                others = [x for x, on in zip(tested, picks, strict=True) if not on]
                text = (
                    "has {"
                    + ", ".join(map(str, chosen))
                    + "}"
                    + (f" not {{{', '.join(map(str, others))}}}" if others else "")
                )
                cells.append(_Cell(chosen, text))
        elif values is not None:
            cells = [_Cell(v, f"= {v}") for v in values]
        elif kind == "boolean":
            cells = [_Cell(True, "= true"), _Cell(False, "= false")]
        elif kind == "number":
            cells = _numeric_cells(n for a in mine for n in numbers_of(a))
            least = self.playbook.inputs[var].minimum if var in self.playbook.inputs else None
            if least is not None:  # a count or a share: the cells wholly below it cannot occur
                cells = [c for c in cells if c.high is None or c.high > least or (c.high == least and c.high_closed)]
        else:
            named = sorted({str(x) for a in mine if a.op != "present" for x in items_of(a)})
            cells = [_Cell(v, f"= {v}") for v in named] + [_Cell("\x00other", "other")]
        if any(a.op == "present" for a in mine):
            cells.append(_Cell(None, _MISSING_TEXT))
        return cells

    # -- tables ----------------------------------------------------------------

    def combinations(self, conditions: list[Condition | None]) -> tuple[list[str], list[list[_Cell]]] | None:
        atoms = [a for c in conditions for a in atoms_of(c)]
        if any(a.op == "compare" for a in atoms):
            return None  # a test of one variable against another has no cells of its own: not searched
        variables = list(dict.fromkeys(a.var for a in atoms))
        grid = []
        for var in variables:
            cells = self.cells(var, atoms)
            if cells is None:
                return None
            grid.append(cells)
        total = 1
        for cells in grid:
            total *= len(cells)
        if total > MAX_COMBINATIONS:
            return None
        return variables, grid

    def hits(
        self, conditions: list[Condition | None], variables: list[str], grid: list[list[_Cell]]
    ) -> list[list[int]]:
        """For every combination of cells (in ``itertools.product`` order), the rows that match it, in order.

        A row that is a conjunction of tests is spread over the combinations its tests allow, each
        variable's cells found apart (an interval's by bisection), so a table of N interval rows costs
        about N steps, not N times its 2N cells.  Other rows are evaluated on every combination.
        """
        sizes = [len(cells) for cells in grid]
        strides = [1] * len(grid)
        for k in range(len(grid) - 2, -1, -1):
            strides[k] = strides[k + 1] * sizes[k + 1]
        total = strides[0] * sizes[0] if grid else 1
        hits: list[list[int]] = [[] for _ in range(total)]
        numbers = [[c.value for c in cells if c.numeric] for cells in grid]  # numeric cells come first, in order
        for r, condition in enumerate(conditions):
            allowed = _allowed_cells(condition, variables, grid, numbers)
            if allowed is None:
                self.steps += total
                for flat, combo in enumerate(itertools.product(*(range(n) for n in sizes))):
                    values = {var: grid[k][i].value for k, (var, i) in enumerate(zip(variables, combo, strict=True))}
                    if evaluate_condition(condition, values):  # type: ignore[arg-type]
                        hits[flat].append(r)
                continue
            for combo in itertools.product(*allowed):
                hits[sum(i * stride for i, stride in zip(combo, strides, strict=True))].append(r)
        self.steps += total + sum(len(h) for h in hits)
        return hits

    def table(self, decision: Decision) -> None:
        conditions = [row.when for row in decision.rows]
        found = self.combinations(conditions)
        if found is None:
            return
        variables, grid = found
        hits_of = self.hits(conditions, variables, grid)
        uncovered: list[tuple[int, ...]] = []
        first_hits: set[int] = set()
        matched_ever: set[int] = set()
        overlaps: dict[tuple[int, int], tuple[int, ...]] = {}
        for combo, hits in zip(itertools.product(*(range(len(cells)) for cells in grid)), hits_of, strict=True):
            matched_ever.update(hits)
            if hits:
                first_hits.add(hits[0])
            elif any(grid[k][i].value is not None for k, i in enumerate(combo)):
                uncovered.append(combo)  # a case that knows none of the table's inputs may stay undetermined
            if decision.hit_policy == "unique" and len(hits) > 1:
                for pair in itertools.combinations(hits, 2):
                    overlaps.setdefault(pair, combo)
        name = decision.name
        if decision.hit_policy != "collect":
            for region in _merge(uncovered, grid):
                self.report(
                    decision.location,
                    "table_gap",
                    f"no row of '{name}' covers {_region_text(region, variables, grid)}",
                )
        for (a, b), combo in sorted(overlaps.items()):
            rows = decision.rows
            where = _region_text([(i, i) for i in combo], variables, grid)
            self.report(
                rows[b].location,
                "table_overlap",
                f"rows '{rows[a].id}' and '{rows[b].id}' of '{name}' both match when {where}, "
                "but its hit policy is unique",
            )
        for r, row in enumerate(decision.rows):
            if r not in matched_ever:
                self.report(
                    row.location, "row_unreachable", f"row '{row.id}' of '{name}': its conditions can never hold"
                )
            elif decision.hit_policy == "first" and r not in first_hits:
                self.report(
                    row.location,
                    "row_unreachable",
                    f"row '{row.id}' of '{name}' never fires first: earlier rows take every case it matches",
                )

    # -- rules, decisions, actions --------------------------------------------

    def rules(self) -> set[str]:
        """Check each rule can fire; return the actions that some firing rule recommends."""
        reachable: set[str] = set()
        for rule in self.playbook.rules:
            found = self.combinations([rule.when])
            fires = True
            if found is not None and rule.when is not None:
                variables, grid = found
                fires = any(
                    evaluate_condition(
                        rule.when, {v: grid[k][i].value for k, (v, i) in enumerate(zip(variables, combo, strict=True))}
                    )
                    for combo in itertools.product(*(range(len(cells)) for cells in grid))
                )
            if not fires:
                self.report(rule.location, "rule_unreachable", f"rule '{rule.id}': its conditions can never hold")
                continue
            reachable.update(rec.action for rec in rule.recommends)
        return reachable

    def run(self, read_elsewhere: frozenset[str] = frozenset(), *, actions: bool = True) -> list[Problem]:
        """Check the tables, rules, decisions (``read_elsewhere``: also read by the portfolio's aggregates)
        and, with ``actions``, that some rule that can fire recommends each action (``self.reachable``)."""
        for decision in self.playbook.decisions.values():
            if decision.rows:
                self.table(decision)
        self.reachable = _with_escalations(self.playbook, self.rules())
        read = {var for node in self.playbook.order for var in node.reads} | read_elsewhere
        for decision in self.playbook.decisions.values():
            if decision.name not in read and not decision.output:
                self.report(
                    decision.location,
                    "decision_unused",
                    f"nothing reads decision '{decision.name}'; use it, remove it, or mark it output: true",
                )
        for action in self.playbook.actions.values() if actions else ():
            if action.id not in self.reachable:
                self.report(
                    action.location, "action_unreachable", f"no rule that can fire recommends action '{action.id}'"
                )
        return self.problems


def _with_escalations(playbook: Playbook, reachable: set[str]) -> set[str]:
    """An escalation action is reached when the action it escalates is."""
    escalated = {a.work.escalate.action: a.id for a in playbook.actions.values() if a.work and a.work.escalate}
    return reachable | {target for target, source in escalated.items() if target and source in reachable}


def _conjunct_atoms(condition: Condition) -> list[Atom] | None:
    """The tests of a condition that is their conjunction, else None."""
    parts = conjuncts(condition)
    return [part for part in parts if isinstance(part, Atom)] if all(isinstance(p, Atom) for p in parts) else None


def _allowed_cells(
    condition: Condition | None, variables: list[str], grid: list[list[_Cell]], numbers: list[list[Any]]
) -> list[Sequence[int]] | None:
    """Per variable, the cells a conjunctive condition allows; None for any other condition."""
    allowed: list[Sequence[int]] = [range(len(cells)) for cells in grid]
    if condition is None:
        return allowed
    atoms = _conjunct_atoms(condition)
    if atoms is None:
        return None
    for atom in sorted(atoms, key=lambda a: a.op != "interval"):  # narrow by bisection first (numbers)
        k = variables.index(atom.var)
        cells = grid[k]
        before = allowed[k]
        if atom.op == "interval" and isinstance(before, range) and cells[0].numeric:
            reps = numbers[k]
            iv: Interval = atom.operand
            low = 0 if iv.low is None else (bisect_left if iv.low_closed else bisect_right)(reps, iv.low)
            high = len(reps) if iv.high is None else (bisect_right if iv.high_closed else bisect_left)(reps, iv.high)
            allowed[k] = range(max(low, before.start), min(high, before.stop))
        else:
            allowed[k] = [i for i in before if atom_matches(atom, {atom.var: cells[i].value})]
    return allowed


def _merge(combos: list[tuple[int, ...]], grid: list[list[_Cell]]) -> list[list[tuple[int, int]]]:
    """Merge uncovered combinations into regions: contiguous numeric cells, whole enumerations."""
    regions = [[(i, i) for i in combo] for combo in combos]
    for k, cells in enumerate(grid):
        groups: dict[tuple[tuple[int, int], ...], list[tuple[int, int]]] = {}
        for region in regions:
            rest = tuple(region[:k] + region[k + 1 :])
            groups.setdefault(rest, []).append(region[k])
        merged = []
        for rest, spans in groups.items():
            spans.sort()
            if cells[0].numeric:
                joined: list[tuple[int, int]] = []
                for lo, hi in spans:
                    if joined and joined[-1][1] + 1 == lo and cells[lo].numeric and cells[joined[-1][1]].numeric:
                        joined[-1] = (joined[-1][0], hi)
                    else:
                        joined.append((lo, hi))
            elif len(spans) == len(cells):
                joined = [(0, len(cells) - 1)]
            else:
                joined = spans
            for span in joined:
                merged.append([*rest[:k], span, *rest[k:]])
        regions = merged
    return sorted(regions)


def _region_text(region: list[tuple[int, int]], variables: list[str], grid: list[list[_Cell]]) -> str:
    parts = []
    for var, (lo, hi), cells in zip(variables, region, grid, strict=True):
        if lo == 0 and hi == len(cells) - 1 and len(cells) > 1:
            continue  # any value of this variable
        if cells[lo].numeric:
            parts.append(f"{var} {_range_text(cells[lo : hi + 1])}")
        else:
            parts.append(f"{var} {cells[lo].text}")
    return ", ".join(parts) or "any case"


def missing_labels(playbook: Playbook) -> list[Problem]:
    """Where text would have to show an identifier for want of a label: a value (not a number or a
    yes/no) of an enumeration or list without ``value_labels``, or an action parameter named after no
    input, decision or parameter (an action parameter reads by that one's label)."""
    problems = []
    owners: list[InputField | Decision] = [*playbook.inputs.values(), *playbook.decisions.values()]
    for owner in owners:
        name = owner.name
        unlabelled = [v for v in owner.values or () if isinstance(v, str) and v not in owner.value_labels]
        if unlabelled:
            problems.append(
                Problem(
                    owner.location,
                    "missing_label",
                    f"'{name}' has no value_labels for {', '.join(unlabelled)}; text would show the identifiers",
                )
            )
    for rule in playbook.rules:
        for rec in rule.recommends:
            for key in rec.params:
                if playbook.param_variable(key) is None and key not in playbook.parameters:
                    problems.append(
                        Problem(
                            rec.location,
                            "missing_label",
                            f"parameter '{key}' of '{rec.action}' names no input, decision or parameter, so it has "
                            "no label; name it after the one it carries",
                        )
                    )
    return problems


def analyse(playbook: Playbook) -> list[Problem]:
    """Every table, reachability and label problem of a checked playbook and its groupings, in file order."""
    by_aggregates = frozenset(
        var
        for level in playbook.groups.values()
        for agg in level.aggregates.values()
        for var in ([agg.field] if agg.field else []) + variables_of(agg.where)
    )
    problems: list[Problem] = []
    reachable: set[str] = set()
    for part in (playbook, *(level.playbook for level in playbook.groups.values())):
        analyser = _Analyser(part)
        problems += [
            *analyser.run(by_aggregates if part is playbook else frozenset(), actions=False),
            *missing_labels(part),
        ]
        reachable |= analyser.reachable
    reachable = _with_escalations(playbook, reachable)
    for action in playbook.actions.values():
        if action.id not in reachable:
            problems.append(
                Problem(action.location, "action_unreachable", f"no rule that can fire recommends action '{action.id}'")
            )
    # a decision of two groupings is checked in each: told once
    unique = {(p.location, p.code, p.message): p for p in problems}
    return sorted(unique.values(), key=lambda p: p.sort_key())
