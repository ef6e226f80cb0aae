"""The decision graph: the walk over a whole playbook, the order of its nodes (and cycles), the engine's limits."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from engine.errors import did_you_mean
from engine.limits import MAX_DURABLE_RULES, MAX_NODE_PROPERTIES, QUESTION_CHUNK
from engine.model import (
    Action,
    Condition,
    Decision,
    GroupLevel,
    Node,
    Output,
    Playbook,
    ValueOf,
)
from engine.validate.common import Path_, _listing
from engine.validate.document import (
    playbook_schema,
)
from engine.validate.groups import Groups, group_names
from engine.validate.work import WorkChecks


class Builder(Groups, WorkChecks):
    # -- the walk --------------------------------------------------------

    def build(self) -> Playbook | None:
        data = self.doc.data
        if not isinstance(data, dict):
            self.report((), "wrong_type", "a playbook is a mapping with the keys playbook, decisions, ...")
            return None
        self.schema_pass(data, playbook_schema())
        meta: dict[str, Any] = data["playbook"] if isinstance(data.get("playbook"), dict) else {}
        langs = meta.get("languages") if isinstance(meta, dict) else None
        if isinstance(langs, list) and langs and all(isinstance(x, str) for x in langs):
            self.languages = tuple(langs)
        for name, spec in self.items(data, "parameters"):
            self.build_parameter(name, spec)
        for name, spec in self.items(data, "inputs"):
            self.build_input(name, spec)
        for name, spec in self.items(data, "inputs"):
            self.check_derive(name, spec)
        every_decision = self.items(data, "decisions")
        self.group_decisions = {name: group_names(spec) for name, spec in every_decision if group_names(spec)}
        for name, spec in every_decision:
            if name not in self.group_decisions:
                self.decision_specs[name] = spec
        self.case_decisions = frozenset(self.decision_specs)
        self.case_inputs = frozenset(self.inputs)
        decisions = {
            name: d
            for name, spec in every_decision
            if name in self.decision_specs
            if (d := self.build_decision(name, spec))
        }
        actions = {name: a for name, spec in self.items(data, "actions") if (a := self.build_action(name, spec))}
        actions = {name: self.build_work(a, data["actions"][name], actions) for name, a in actions.items()}
        schedules = {name: s for name, spec in self.items(data, "schedules") if (s := self.build_schedule(name, spec))}
        raw_rules = _listing(data.get("rules"))
        rules = self.build_rules([None if group_names(spec) else spec for spec in raw_rules], decisions, actions)
        review_priority = self.build_review_priority(data.get("review"), decisions)
        if self.problems:
            return None
        title = self.text(meta.get("title"), ("playbook", "title")) or {}
        text = self.doc.text
        playbook = Playbook(
            id=str(meta.get("id")),
            version=str(meta.get("version")),
            languages=self.languages,
            title=title,
            description=self.text(meta.get("description"), ("playbook", "description")),
            parameters=self.parameters,
            inputs=self.inputs,
            decisions=decisions,
            rules=tuple(rules),
            actions=actions,
            schedules=schedules,
            file=self.doc.file,
            content_hash=hashlib.sha256(text.encode("utf-8")).hexdigest(),
            text=text,
            review_priority=review_priority,
        )
        order = self.order(playbook)
        if self.problems:
            return None
        playbook.order = order
        self.check_limits(playbook)
        self.case_models = playbook.decisions
        playbook.groups = self.build_groups(data, playbook, actions)
        return None if self.problems else playbook

    # -- group decisions and rules ----------------------------------------------

    def build_groups(
        self, data: dict[str, Any], playbook: Playbook, actions: dict[str, Action]
    ) -> dict[str, GroupLevel]:
        """Each grouping's own playbook: its aggregates as inputs, its decisions and rules, in order."""
        raw_rules = _listing(data.get("rules"))
        entries: dict[str, list[tuple[Path_, dict[str, Any]]]] = {}
        for name, spec in self.items(data, "decisions"):
            for level in group_names(spec):
                entries.setdefault(level, []).append((("decisions", name), spec))
        for index, spec in enumerate(raw_rules):
            if isinstance(spec, dict) and not self.is_broken(("rules", index)):
                for level in group_names(spec):
                    entries.setdefault(level, []).append((("rules", index), spec))
        first_problem = len(self.problems)
        levels: dict[str, GroupLevel] = {}
        case_scope = (self.inputs, self.decision_specs)
        for level, specs in entries.items():
            field = self.group_field(level, (*specs[0][0], "group_by"))
            aggregates, inputs = self.level_aggregates(level, specs)
            self.level, self.inputs = level, inputs
            self.decision_specs = {str(path[1]): spec for path, spec in specs if path[0] == "decisions"}
            try:
                decisions = {
                    name: d for name, spec in self.decision_specs.items() if (d := self.build_decision(name, spec))
                }
                rules = self.build_rules(
                    [spec if level in group_names(spec) else None for spec in raw_rules], decisions, actions
                )
                sub = Playbook(
                    id=playbook.id,
                    version=playbook.version,
                    languages=playbook.languages,
                    title=playbook.title,
                    description=playbook.description,
                    parameters=playbook.parameters,
                    inputs=inputs,
                    decisions=decisions,
                    rules=tuple(rules),
                    actions=actions,
                    file=playbook.file,
                    content_hash=hashlib.sha256(f"{playbook.content_hash} group_by {level}".encode()).hexdigest(),
                    text=playbook.text,
                )
                if len(self.problems) == first_problem:
                    sub.order = self.order(sub)
                    self.check_limits(sub)
            finally:
                self.level = None
                self.inputs, self.decision_specs = case_scope
            if field is not None:
                levels[level] = GroupLevel(level, field, aggregates, sub)
        self.drop_repeats(first_problem)
        return levels

    def drop_repeats(self, start: int) -> None:
        """A decision of two groupings is checked in each: its problems are told once."""
        seen: set[tuple[object, str, str]] = set()
        kept = []
        for problem, about in zip(self.problems[start:], self.subjects[start:], strict=True):
            key = (problem.location, problem.code, problem.message)
            if key not in seen:
                seen.add(key)
                kept.append((problem, about))
        self.problems[start:] = [p for p, _ in kept]
        self.subjects[start:] = [a for _, a in kept]

    def build_review_priority(
        self, review: Any, decisions: dict[str, Decision]
    ) -> tuple[tuple[str, tuple[Any, ...]], ...]:
        """``review.priority``: each a decision with declared values and some of them, in order, once each."""
        if not isinstance(review, dict) or not isinstance(review.get("priority"), list):
            return ()
        priority: list[tuple[str, tuple[Any, ...]]] = []
        seen: set[str] = set()
        earlier_problems = bool(self.problems)
        for i, item in enumerate(review["priority"]):
            path: tuple[str | int, ...] = ("review", "priority", i)
            if not isinstance(item, dict) or not isinstance(item.get("decision"), str):
                continue  # the schema pass has said why
            name, order = item["decision"], item.get("order")
            decision = decisions.get(name)
            if name in seen:
                self.report((*path, "decision"), "priority_repeated", f"'{name}' is already a priority above")
                continue
            seen.add(name)
            if decision is None:
                # a decision that did not build, or any name while the playbook has other problems, may be
                # their consequence (a misspelt section): reported once those are fixed
                if name not in self.decision_specs and not earlier_problems:
                    self.resolve_var(name, (*path, "decision"))  # reports the unknown decision, with "did you mean"
                continue
            values = (True, False) if decision.type == "boolean" else decision.values
            if values is None or decision.type == "list":
                self.report(
                    (*path, "decision"),
                    "priority_unordered",
                    f"'{name}' is a {decision.type} decision, which cannot order a list; choose one with values",
                )
                continue
            if not isinstance(order, list):
                continue
            for k, value in enumerate(order):
                if value not in values or isinstance(value, bool) != (decision.type == "boolean"):
                    self.report(
                        (*path, "order", k),
                        "unknown_value",
                        f"'{value}' is not a value of '{name}'{did_you_mean(str(value), [str(v) for v in values])}",
                    )
                elif order.index(value) != k:
                    self.report((*path, "order", k), "duplicate_value", f"'{value}' is listed twice")
            priority.append((name, tuple(order)))
        return tuple(priority)

    # -- the decision graph ---------------------------------------------------

    def order(self, playbook: Playbook) -> tuple[Node, ...]:
        """Nodes in an order where every decision is made before it is read."""
        from engine.conditions import variables_of

        def reads_of(when: Condition | None, outputs: Iterable[Output]) -> tuple[str, ...]:
            names = variables_of(when)
            names += [out.var for out in outputs if isinstance(out, ValueOf)]
            return tuple(dict.fromkeys(names))

        nodes: list[Node] = []
        producers: dict[str, list[int]] = {}
        for decision in playbook.decisions.values():
            if decision.rows:
                reads = tuple(dict.fromkeys(v for row in decision.rows for v in reads_of(row.when, [row.then])))
                producers.setdefault(decision.name, []).append(len(nodes))
                nodes.append(Node("table", decision.name, reads, tuple(row.id for row in decision.rows)))
        for rule in playbook.rules:
            outputs = [*rule.sets.values(), *(p for rec in rule.recommends for p in rec.params.values())]
            for target in rule.sets:
                producers.setdefault(target, []).append(len(nodes))
            nodes.append(Node("rules", rule.id, reads_of(rule.when, outputs), (rule.id,)))
        deps = [sorted({p for var in node.reads if "." not in var for p in producers.get(var, [])}) for node in nodes]

        state = [0] * len(nodes)  # 0 new, 1 on the stack, 2 done
        done: list[int] = []

        def visit(i: int, stack: list[int]) -> bool:
            if state[i] == 2:
                return True
            if state[i] == 1:
                cycle = [*stack[stack.index(i) :], i]
                names = [nodes[j].name for j in cycle]
                first = nodes[i]
                where: Path_ = (
                    ("decisions", first.name)
                    if first.kind == "table"
                    else ("rules", playbook.rules_by_id[first.name].index)
                )
                self.report(
                    where,
                    "decision_cycle",
                    "decisions depend on each other in a cycle: " + " → ".join(names),
                    key=first.kind == "table",
                )
                return False
            state[i] = 1
            for j in deps[i]:
                if not visit(j, [*stack, i]):
                    return False
            state[i] = 2
            done.append(i)
            return True

        for i in range(len(nodes)):
            if not visit(i, []):
                break
        return _group_rules([nodes[i] for i in done])

    def check_limits(self, playbook: Playbook) -> None:
        durable_rules = sum(len(n.members) + -(-len(n.members) // QUESTION_CHUNK) for n in playbook.order)
        if durable_rules > MAX_DURABLE_RULES:
            self.report(
                (),
                "playbook_too_large",
                f"{durable_rules} rows and rules; the engine holds at most {MAX_DURABLE_RULES}",
            )
        for node in playbook.order:
            width = 3
            for var in node.reads:
                found = self.var_type(var)
                width += 1 + len(found[1] or ()) if found and found[0] == "list" else 1
            if width > MAX_NODE_PROPERTIES:
                where: Path_ = ("decisions", node.name) if node.kind == "table" else ("rules",)
                self.report(
                    where,
                    "node_too_wide",
                    f"'{node.name}' reads {width} values; at most {MAX_NODE_PROPERTIES}",
                    key=True,
                )


def _group_rules(ordered: list[Node]) -> tuple[Node, ...]:
    """Rules that read exactly the same variables become one node (one question), at the first one's place.

    That place is valid for all of them: their inputs are the same, so all are ready there, and
    whatever reads what one of them sets comes after it, hence after the first.
    """
    groups: dict[tuple[str, ...], list[Node]] = {}
    for node in ordered:
        if node.kind == "rules":
            groups.setdefault(tuple(sorted(node.reads)), []).append(node)
    out: list[Node] = []
    for node in ordered:
        if node.kind != "rules":
            out.append(node)
            continue
        group = groups[tuple(sorted(node.reads))]
        if group[0] is node:
            members = tuple(m for n in group for m in n.members)  # rules in file order, as ordered
            reads = tuple(dict.fromkeys(v for n in group for v in n.reads))
            out.append(Node("rules", ",".join(members), reads, members))
    return tuple(out)
