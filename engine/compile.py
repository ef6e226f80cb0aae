"""A checked playbook -> durable-rules ruleset, asked one question at a time.

durable-rules stays the engine of record: every row that fires, fires in it.
This module also keeps its known traps (see docs/architecture.md) away from
results:

* the stock ``Host`` runs actions on background timer threads after a call
  returns; :class:`_QuietHost` has no such threads, so every action has run
  when ``assert_fact`` returns;
* message identity is a 32-bit hash of the ``id``: a question asked alone is
  the only fact in its session; questions asked in a batch each have an id of
  their own, whose hashes are checked distinct when compiling; every fact is
  retracted before the next call, so no two live messages can collide;
* a ruleset holds at most 1,024 sessions: each compiled playbook uses one;
* exceptions in actions are swallowed: the actions only append to a list,
  any error they or the engine record is raised by :meth:`ask`;
* a fact no rule matches is dropped: one catch-all rule matches every
  question, fires after the members with all the facts of a call at once,
  and :meth:`ask` checks that it saw each question;
* a rule made only of absence tests loops: every rule tests ``node`` first;
* a ruleset name can never be registered twice: names carry the playbook's
  content hash and every compiled playbook has a host of its own.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import durable_rules_engine
from durable.engine import Host

from engine.conditions import atoms_of, durable_expr, durable_safe, list_key, numbers_of
from engine.errors import EngineFault
from engine.limits import QUESTION_CHUNK as CHUNK
from engine.model import Atom, Node, Playbook

__all__ = ["QUESTION_ID", "SESSION_ID", "CompiledNode", "CompiledPlaybook", "compile_playbook", "fnv1a32"]

SESSION_ID = "q"
QUESTION_ID = "q"
_CATCH_ALL_PRI = 1_000_000


class _QuietHost(Host):  # type: ignore[misc]
    """A Host without the background dispatcher threads of the stock one."""

    def _run(self) -> None:
        pass


@dataclass(frozen=True)
class CompiledNode:
    index: int
    node: Node
    fields: dict[str, str]  # variable -> field name in the question fact
    list_values: dict[str, tuple[Any, ...]]  # list variable -> its declared values
    members: tuple[str, ...]  # row ids of a table, or the rule ids
    chunks: tuple[tuple[tuple[int, ...], int], ...]  # (members by index, in order; question id): one fact each
    atoms: tuple[Atom, ...]  # every test of the node


class CompiledPlaybook:
    """One playbook version registered in durable-rules, under a name made of its content hash."""

    def __init__(self, playbook: Playbook) -> None:
        self.playbook = playbook
        self.ruleset_name = f"pb_{playbook.content_hash[:16]}"
        self._next_question = 0
        self.nodes: tuple[CompiledNode, ...] = tuple(self._compile_node(i, n) for i, n in enumerate(playbook.order))
        self._lock = threading.Lock()
        self._fired: list[tuple[int, str]] = []
        self._errors: list[str] = []
        self._closed = False
        self._fact_ids = _fact_ids(self._next_question)
        self._host = _QuietHost()
        self._host.register_rulesets({self.ruleset_name: self._ruleset()})
        self.questions_asked = 0

    # -- compiling -----------------------------------------------------------

    def _compile_node(self, index: int, node: Node) -> CompiledNode:
        fields = {var: f"v{i}" for i, var in enumerate(node.reads)}
        list_values: dict[str, tuple[Any, ...]] = {}
        for var in node.reads:
            kind, values = self.playbook.var_type(var)
            if kind == "list":
                list_values[var] = values or ()
        chunks = []
        conditions = self.playbook.conditions_of(node)
        grouped = _grouped([atoms_of(c) for c in conditions])
        for start in range(0, max(len(node.members), 1), CHUNK):
            chunks.append((tuple(sorted(grouped[start : start + CHUNK])), self._next_question))
            self._next_question += 1
        atoms = tuple(a for c in conditions for a in atoms_of(c))
        return CompiledNode(index, node, fields, list_values, node.members, tuple(chunks), atoms)

    def _ruleset(self) -> dict[str, Any]:
        rules: dict[str, Any] = {}
        for cnode in self.nodes:
            list_vars = frozenset(cnode.list_values)

            def index_of(var: str, item: Any, cnode: CompiledNode = cnode) -> int:
                return cnode.list_values[var].index(item)

            conditions = self.playbook.conditions_of(cnode.node)
            for members, question in cnode.chunks:
                node_test = {"node": question}
                for k in members:
                    test: dict[str, Any] = node_test
                    when = conditions[k]
                    if when is not None:
                        expr = durable_expr(when, cnode.fields.__getitem__, index_of, list_vars)
                        test = {"$and": [node_test, expr]}
                    rules[f"q{question}_m{k}"] = {
                        "all": [{"m": test}],
                        "pri": k,
                        "run": self._action(question, cnode.members[k]),
                    }
        # One catch-all for every question, firing once per call with every fact asked (``cap``), after the
        # members: an action of durable-rules costs far more than the answer it carries, and most facts fire
        # nothing else.  It reports each fact it saw as its question's end, as a catch-all per question would.
        ends = [self._action(question, "") for question in range(self._next_question)]

        def seen(c: Any) -> None:
            for fact in c.m:
                ends[fact.node](c)

        rules["seen"] = {
            "all": [{"m": {"$gte": {"node": 0}}}],
            "pri": _CATCH_ALL_PRI,
            "cap": max(self._next_question, 1),
            "run": seen,
        }
        return rules

    def _action(self, node_index: int, member: str) -> Callable[[Any], None]:
        # A closure of one argument: durable-rules treats any other signature as asynchronous.
        def record(c: Any) -> None:
            try:
                self._fired.append((node_index, member))
            except BaseException as exc:  # noqa: BLE001 - durable-rules would swallow it
                self._errors.append(repr(exc))

        return record

    # -- asking --------------------------------------------------------------

    def encode(self, cnode: CompiledNode, values: dict[str, Any]) -> dict[str, Any]:
        """The question fact for one node: the values it reads, lists as sets of item keys."""
        fact: dict[str, Any] = {"id": QUESTION_ID, "sid": SESSION_ID}
        for var, field in cnode.fields.items():
            value: Any = values.get(var)
            if value is None:
                continue
            if isinstance(value, float) and not durable_safe(value):
                value = self._neighbour(cnode, var, value)
            if var in cnode.list_values:
                declared = cnode.list_values[var]
                encoded: dict[str, int] = {"n": len(value)}
                for item in value:
                    encoded[list_key(declared.index(item))] = 1
                fact[field] = encoded
            else:
                fact[field] = value
        return fact

    def _neighbour(self, cnode: CompiledNode, var: str, value: float) -> float:
        """An adjacent float durable-rules can read, on the same side of every bound the node tests.

        durable-rules' JSON reader refuses a number like ``1e-05`` (an exponent without a point);
        Python writes some floats that way.  The bounds are checked readable at validation, so
        ``value`` is no bound, and a neighbour that is no bound either answers every test alike.
        """
        bounds = {b for atom in cnode.atoms if atom.var == var for b in numbers_of(atom)}
        for candidate in (math.nextafter(value, math.inf), math.nextafter(value, -math.inf)):
            if candidate not in bounds and durable_safe(candidate):
                return candidate
        raise EngineFault(f"'{var}' = {value!r} cannot be written for durable-rules on node '{cnode.node.name}'")

    def ask(self, cnode: CompiledNode, values: dict[str, Any]) -> tuple[str, ...]:
        """Which members (rows, or rules) of a node durable-rules fires for these values, in member order."""
        base = self.encode(cnode, values)
        fired: set[str] = set()
        for _, question in cnode.chunks:
            fired.update(self._ask_once(cnode, {**base, "node": question}, question))
        return tuple(member for member in cnode.members if member in fired)

    def ask_chunks(self, cnode: CompiledNode, values: dict[str, Any], chunks: Sequence[int]) -> list[tuple[str, ...]]:
        """For each chunk of a node (an index into ``cnode.chunks``), the members durable-rules fires for these
        values, in member order: every chunk asked in one batch of facts, one fact each, then retracted.

        The facts of a batch live together in the session, so each has an id of its own, its question's,
        whose 32-bit hash no other question's shares (checked when compiling).
        """
        base = self.encode(cnode, values)
        questions = [cnode.chunks[c][1] for c in chunks]
        facts = [{**base, "id": self._fact_ids[q], "node": q} for q in questions]
        fired = self._send(cnode, facts, batch=True)
        # Every question seen through: the catch-all reported its end once, after its members, and nothing else fired.
        last = dict(fired)  # each question's last action
        ends = sum(1 for _, member in fired if member == "")
        if ends != len(questions) or sorted(last) != sorted(questions) or any(last[q] != "" for q in questions):
            self._reset_session()
            raise EngineFault(f"durable-rules did not see the questions for node '{cnode.node.name}' through: {fired}")
        by_question: dict[int, set[str]] = {}
        for question, member in fired:
            if member:
                by_question.setdefault(question, set()).add(member)
        # A rule whose condition has an ``any`` fires once per alternative that holds: a set counts it once.
        answers: list[tuple[str, ...]] = []
        for members, question in (cnode.chunks[c] for c in chunks):
            got = by_question.get(question)
            answers.append(tuple(cnode.members[m] for m in members if cnode.members[m] in got) if got else ())
        return answers

    def _send(self, cnode: CompiledNode, facts: list[dict[str, Any]], *, batch: bool) -> list[tuple[int, str]]:
        """Assert and retract these facts under the lock (``batch``: in one call, each fact its own id; else the
        one fact alone); what fired, as (question, member) in firing order.  Raises EngineFault (the session
        reset) when durable-rules fails or an action failed."""
        with self._lock:
            if self._closed:
                raise EngineFault(f"playbook {self.playbook.id} {self.playbook.version} is closed")
            self._fired = []
            self._errors = []
            self.questions_asked += len(facts)
            try:
                if batch:
                    state = self._host.assert_facts(self.ruleset_name, facts)
                    self._host.retract_facts(self.ruleset_name, facts)
                else:
                    (fact,) = facts
                    state = self._host.assert_fact(self.ruleset_name, fact)
                    self._host.retract_fact(self.ruleset_name, fact)
            except Exception as exc:
                self._reset_session()
                raise EngineFault(f"durable-rules failed on node '{cnode.node.name}': {exc}") from exc
            fired, errors = self._fired, self._errors
        if errors or not isinstance(state, dict) or state.get("exception"):
            self._reset_session()
            detail = errors or [str(state.get("exception") if isinstance(state, dict) else state)]
            raise EngineFault(f"an action failed on node '{cnode.node.name}': {'; '.join(detail)}")
        return fired

    def _ask_once(self, cnode: CompiledNode, fact: dict[str, Any], question: int) -> list[str]:
        fired = self._send(cnode, [fact], batch=False)
        if not fired or fired[-1] != (question, "") or any(n != question for n, _ in fired):
            self._reset_session()
            raise EngineFault(f"durable-rules did not see the question for node '{cnode.node.name}' through: {fired}")
        # A rule whose condition has an ``any`` fires once per alternative that holds: count it once.
        return list(dict.fromkeys(member for _, member in fired[:-1]))

    def _reset_session(self) -> None:
        # The session may not exist yet; then there is nothing to undo.
        with contextlib.suppress(Exception):
            self._host.delete_state(self.ruleset_name, SESSION_ID)

    def live_facts(self) -> list[Any]:
        """Facts still held in the session (always none between questions)."""
        with self._lock:
            try:
                facts: list[Any] = self._host.get_facts(self.ruleset_name, SESSION_ID)
            except Exception:  # noqa: BLE001 - no session yet means no facts
                return []
            return facts

    def close(self) -> None:
        """Free the ruleset in durable-rules; this object cannot be asked again."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._reset_session()
            handle = self._host.get_ruleset(self.ruleset_name)._handle
            durable_rules_engine.delete_ruleset(handle)

    def __enter__(self) -> CompiledPlaybook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _grouped(atoms: list[list[Atom]]) -> list[int]:
    """The members (by index) in the order they are cut into question facts: in their own order, or, when
    that makes fewer distinct questions likely, along a Z-order curve over the tests they make of each
    variable, so that each fact holds members testing few distinct values of each variable (rules of one
    tier together, say).  A fact's answer is remembered by the results of its tests: the fewer distinct
    tests it holds, the fewer distinct questions durable-rules is asked."""
    # a test -> its rank among the tests of its variable, from 0 (the curve's blocks then align with them)
    ranks: dict[tuple[str, str, str], int] = {}
    per_var: dict[str, int] = {}
    for member in atoms:
        for atom in member:
            same = (atom.var, atom.op, repr(atom.operand))
            if same not in ranks:
                ranks[same] = per_var.get(atom.var, 0)
                per_var[atom.var] = ranks[same] + 1
    variables = sorted(per_var)
    place = {var: i for i, var in enumerate(variables)}
    width = max(per_var.values(), default=0).bit_length()

    def z_order(member: int) -> int:
        coordinate: list[int | None] = [None] * len(variables)  # a member's first test of each variable
        for atom in atoms[member]:
            slot = place[atom.var]
            if coordinate[slot] is None:
                coordinate[slot] = ranks[(atom.var, atom.op, repr(atom.operand))]
        key = 0
        for bit in range(width):
            for slot, rank in enumerate(coordinate):
                key |= (((rank or 0) >> bit) & 1) << (bit * len(variables) + slot)
        return key

    def likely_questions(order: list[int]) -> int:
        """For each fact, the product over variables of the distinct tests it holds, plus one."""
        total = 0
        for start in range(0, len(order), CHUNK):
            tests: dict[str, set[tuple[str, str]]] = {}
            for member in order[start : start + CHUNK]:
                for atom in atoms[member]:
                    tests.setdefault(atom.var, set()).add((atom.op, repr(atom.operand)))
            total += math.prod(len(held) + 1 for held in tests.values())
        return total

    own = list(range(len(atoms)))
    if len(own) <= CHUNK:
        return own
    curve = sorted(own, key=lambda member: (z_order(member), member))
    return curve if likely_questions(curve) < likely_questions(own) else own


def fnv1a32(text: str) -> int:
    """The 32-bit hash durable-rules identifies a message by (FNV-1a of its id)."""
    h = 0x811C9DC5
    for byte in text.encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h


def _fact_ids(questions: int) -> list[str]:
    """An id for each question's fact in a batch: no two of them, nor the session's state, share a hash."""
    ids = [f"{QUESTION_ID}{question}" for question in range(questions)]
    hashes = {fnv1a32(i) for i in ids} | {fnv1a32(f"sid-{SESSION_ID}")}
    if len(hashes) != len(ids) + 1:  # not met below millions of questions; refuse rather than lose an answer
        raise EngineFault(f"the ids of {questions} questions collide in durable-rules' 32-bit message identity")
    return ids


def compile_playbook(playbook: Playbook) -> CompiledPlaybook:
    return CompiledPlaybook(playbook)
