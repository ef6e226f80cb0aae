"""Recommendations as tracked work: tasks in the audit log, each move chained with who, when and why.

Each recommendation of a stored evaluation becomes a task of its record (:func:`follow_evaluations`,
inside the evaluation's own transaction): owned, due and escalating as its action's ``work`` says
(:mod:`engine.workflow`).  A record evaluated again keeps the task it has for an action (no
second one, whatever its state but ``cancelled``: a task done is not asked again; a repeating
action's next occurrences come from its ``every``); the tasks of actions its new evaluation no
longer recommends are cancelled, saying which evaluation dropped them.  A closed opportunity
cancels its record's tasks (:func:`close_records`).  Outcomes move them (:func:`move_on_outcome`),
and time does when told (:func:`advance`): overdue, escalated, the next occurrence.

Every move is an event of the ``tasks`` chain sealing the task's row after it, so ``audit
verify`` finds a task changed in the database behind the log's back.  The event stores no copy of
the row (a move changes only the status and the day, which the event holds), nor the usual reason
for its move (:func:`engine.store.chained_event` puts both back).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, func, select, update

from engine.model import Playbook
from engine.store import (
    ChainHeads,
    Store,
    _meta_value,
    _now,
    _Seal,
    _task_event_hash,
    chained_event,
    evaluations,
    iter_chunks,
    partition_of,
    recommendations,
    task_event_rows,
    task_events,
    task_state,
    tasks,
    usual_why,
)
from engine.store.batch import _insert_many, execute_many, key_among, key_lists
from engine.store.outbox import enqueue
from engine.workflow import ACTIVE, Duration, Work, moves, parse_duration, task_fields

__all__ = [
    "CLOSING_CODES",
    "Task",
    "TaskBook",
    "advance",
    "advance_book",
    "close_records",
    "deal_people",
    "follow_evaluations",
    "history",
    "listing",
]

CLOSING_CODES = frozenset({"closed_deal"})  # quarantine codes that mean the opportunity is closed
CLOCK = "clock"  # who moves tasks when time passes
PLAYBOOK = "playbook"  # who makes and cancels them from evaluations


@dataclass(frozen=True)
class Task:
    id: int
    series: int
    occurrence: int
    source: str
    record: str
    evaluation_seq: int
    action: str
    cause: str
    rule: str
    owner: str
    due: str | None
    escalate_at: str | None
    escalate_to: str | None
    escalate_action: str | None
    every: str | None
    status: str
    as_of: str

    def to_json(self) -> dict[str, Any]:
        return {"task": self.id, **{k: v for k, v in self.__dict__.items() if k != "id"}}


def _task(row: Any) -> Task:
    values = row if isinstance(row, dict) else row._asdict()
    return Task(**{k: values[k] for k in Task.__dataclass_fields__})


_UPDATE_TASK = (
    update(tasks)
    .where(tasks.c.id == bindparam("b_id"))
    .values(status=bindparam("b_status"), as_of=bindparam("b_as_of"))
)


class TaskBook:
    """The moves of tasks within one transaction: the tasks chain's head locked at the first.

    Rows are written in batches (before any read of the tasks, and at :meth:`finish`): a tick moves
    thousands of tasks."""

    def __init__(self, conn: Connection, seal: _Seal, now: str | None = None, heads: ChainHeads | None = None) -> None:
        """``heads``: the writer's, when the book is part of its transaction."""
        self.conn = conn
        self.seal = seal
        self.now = now or _now()
        self.heads = heads or ChainHeads(conn, int(_meta_value(conn, "partitions") or 1))
        self._events: list[dict[str, Any]] = []
        self._rows: list[dict[str, Any]] = []  # the events as stored
        self._inserts: list[dict[str, Any]] = []
        self._updates: list[dict[str, Any]] = []

    def _partition(self, task: dict[str, Any]) -> int:
        return partition_of(self.heads.partitions, task["source"], task["record"])

    def _link(self, task: dict[str, Any], who: str, why: str) -> None:
        partition = self._partition(task)
        prev = self.heads.get("tasks", partition)[1]
        event = {
            "seq": self.heads.next_seq("tasks", partition),
            "task_id": task["id"],
            "status": task["status"],
            "who": who,
            "why": why,
            "as_of": task["as_of"],
            "at": self.now,
            "state": task_state(task),
            "prev_hash": prev,
        }
        event["entry_hash"] = _task_event_hash(self.seal, prev, event)
        self._events.append(event)
        # stored without what its task's row gives back: the state, and the reason when it is the usual one
        stored_why = None if why == usual_why(task["status"], task["as_of"], task) else why
        self._rows.append({**event, "state": None, "why": stored_why})
        self.heads.advance("tasks", partition, event["entry_hash"])

    def next_id(self, partition: int = 0) -> int:
        """The id the next task made in ``partition`` gets (the number of the event that makes it); the
        tasks chain is locked (on a partitioned log, every partition) if it was not."""
        return self.heads.next_seq("tasks", partition)

    def create(self, fields: dict[str, Any], who: str, why: str) -> Task:
        task_id = self.next_id(self._partition(fields))
        row = {"id": task_id, "series": task_id, "occurrence": 1, **fields, "status": "open"}
        row = {name: row.get(name) for name in Task.__dataclass_fields__}
        self._inserts.append(row)
        self._link(row, who, why)
        return _task(row)

    def move(self, task: Task, status: str, as_of: str, who: str, why: str) -> Task:
        row = {**task.__dict__, "status": status, "as_of": as_of}
        self._updates.append({"b_id": task.id, "b_status": status, "b_as_of": as_of})
        self._link(row, who, why)
        return _task(row)

    def flush(self) -> None:
        """Write the rows made and moved so far (their events wait for :meth:`finish`)."""
        if self._inserts:
            _insert_many(self.conn, tasks, self._inserts)
            self._inserts = []
        if self._updates:
            execute_many(self.conn, _UPDATE_TASK, self._updates)
            self._updates = []

    def finish(self) -> None:
        self.flush()
        if not self._events:
            return
        _insert_many(self.conn, task_events, self._rows)
        enqueue(self.conn, self._events)  # the CRM's notifications, in the events' transaction
        self.heads.save(["tasks"])
        self._events, self._rows = [], []

    def tasks_of(self, source: str, records: Iterable[str]) -> dict[str, list[Task]]:
        self.flush()
        found: dict[str, list[Task]] = {}
        dialect = self.conn.dialect.name
        for chunk in key_lists(dialect, sorted(set(records))):
            for row in self.conn.execute(_tasks_of(dialect), {"source": source, "records": chunk}):
                found.setdefault(row.record, []).append(_task(row))
        return found


@functools.cache
def _tasks_of(dialect: str) -> Any:
    # built once: a tasks_of per write transaction
    where = key_among(tasks.c.record, dialect, "records")
    return select(tasks).where(tasks.c.source == bindparam("source"), where).order_by(tasks.c.id)


@dataclass(frozen=True)
class Followed:
    """One stored evaluation, for :func:`follow_evaluations`."""

    seq: int
    record: str
    facts: dict[str, Any]
    recommendations: Sequence[dict[str, Any]]  # each with "id" and "rule", in order


def _work_of(playbook: Playbook, action: str) -> Work | None:
    spec = playbook.actions.get(action)
    return spec.work if spec is not None else None


def follow_evaluations(
    book: TaskBook, playbook: Playbook, source: str, as_of: dt.date, followed: Sequence[Followed]
) -> None:
    """Make each new recommendation a task; cancel the active tasks of actions no longer recommended."""
    if not followed:
        return
    day = as_of.isoformat()
    known = book.tasks_of(source, (f.record for f in followed))
    for evaluation in followed:
        held = known.setdefault(evaluation.record, [])
        recommended = {rec["id"]: rec for rec in evaluation.recommendations}
        for i, task in enumerate(held):
            if task.status in ACTIVE and task.cause not in recommended:
                why = (
                    f"evaluation #{evaluation.seq} no longer recommends {task.cause}: the decision of rule "
                    f"{task.rule} changed"
                )
                held[i] = book.move(task, "cancelled", day, PLAYBOOK, why)
        have = {t.cause for t in held if t.status != "cancelled"}
        for action, rec in recommended.items():
            if action in have:
                continue
            fields = {
                "source": source,
                "record": evaluation.record,
                "evaluation_seq": evaluation.seq,
                "action": action,
                "cause": action,
                "rule": rec["rule"],
                "as_of": day,
                **task_fields(_work_of(playbook, action), as_of, evaluation.facts),
            }
            held.append(
                book.create(fields, PLAYBOOK, f"rule {rec['rule']} recommended it (evaluation #{evaluation.seq})")
            )


def close_records(book: TaskBook, source: str, closed: dict[str, str], as_of: str) -> None:
    """Cancel the active tasks of records whose opportunity closed; ``closed``: record -> the reason."""
    for record, held in book.tasks_of(source, closed).items():
        for task in held:
            if task.status in ACTIVE:
                book.move(task, "cancelled", as_of, PLAYBOOK, f"the opportunity closed: {closed[record]}")


_OUTCOME_FROM = {"accepted": ("open",), "done": ACTIVE, "dismissed": ACTIVE}


def move_on_outcome(
    book: TaskBook, evaluation_seq: int, action: str, status: str, who: str, why: str, as_of: str
) -> Task | None:
    """Move the task an outcome is about: its record's task of that action (the one still active, else the
    one this evaluation made).  None when there is none, or it cannot move so (done already, cancelled)."""
    found = book.conn.execute(
        select(
            evaluations.c.source, func.coalesce(evaluations.c.record_id, evaluations.c.case_id).label("record")
        ).where(evaluations.c.seq == evaluation_seq)
    ).first()
    if found is None:
        return None
    held = [t for t in book.tasks_of(found.source, [found.record]).get(found.record, []) if t.action == action]
    active = [t for t in held if t.status in ACTIVE]
    chosen = active[-1] if active else next((t for t in held if t.evaluation_seq == evaluation_seq), None)
    if chosen is None or chosen.status not in _OUTCOME_FROM[status]:
        return None
    return book.move(chosen, status, as_of, who, why or f"outcome of evaluation #{evaluation_seq}")


def _still_recommended(conn: Connection, held: Sequence[Task]) -> set[tuple[str, str, str]]:
    """(source, record, action) of these tasks' records whose latest evaluation recommends the action."""
    record = func.coalesce(evaluations.c.record_id, evaluations.c.case_id)
    found: set[tuple[str, str, str]] = set()
    by_source: dict[str, set[str]] = {}
    for task in held:
        by_source.setdefault(task.source, set()).add(task.record)
    for source, records in by_source.items():
        for chunk in iter_chunks(sorted(records), 500):
            latest = (
                select(func.max(evaluations.c.seq))
                .where(evaluations.c.source == source, record.in_(chunk))
                .group_by(record)
            )
            rows = conn.execute(
                select(record.label("record"), recommendations.c.action)
                .join(recommendations, recommendations.c.evaluation_seq == evaluations.c.seq)
                .where(evaluations.c.seq.in_(latest))
            )
            found.update((source, row.record, row.action) for row in rows)
    return found


def advance(store: Store, as_of: dt.date, *, who: str = CLOCK) -> dict[str, int]:
    """Move time to ``as_of``: the next occurrences of repeating tasks whose last fell due while their rule
    still holds, then every active task past its due date overdue, and past its escalation date
    escalated (with its escalation action as a new task).  Idempotent: run again at the same date, or
    an earlier one, it changes nothing.  Returns how many tasks it made, and moved to each state."""
    with store._begin() as conn:
        book = TaskBook(conn, store._sealing(conn), store.now())
        counts = advance_book(book, as_of, who=who)
        book.finish()
    return counts


def advance_book(book: TaskBook, as_of: dt.date, *, who: str = CLOCK) -> dict[str, int]:
    """:func:`advance` within the transaction of ``book`` (``playbook tick`` re-evaluates records first in it);
    the caller finishes the book."""
    day = as_of.isoformat()
    counts = {"repeated": 0, "overdue": 0, "escalated": 0}
    conn = book.conn
    book.next_id()  # the head locked first: one clock at a time, on any number of processes
    latest = (
        select(tasks.c.series, func.max(tasks.c.occurrence).label("occurrence"))
        .where(tasks.c.every.is_not(None))
        .group_by(tasks.c.series)
        .subquery()
    )
    last_occurrences = [
        _task(row)
        for row in conn.execute(
            select(tasks)
            .join(latest, (tasks.c.series == latest.c.series) & (tasks.c.occurrence == latest.c.occurrence))
            .where(tasks.c.status != "cancelled", tasks.c.due.is_not(None), tasks.c.due <= day)
            .order_by(tasks.c.id)
        )
    ]
    holding = _still_recommended(conn, last_occurrences)
    for task in last_occurrences:
        if (task.source, task.record, task.cause) not in holding:
            continue
        parsed = parse_duration(task.every or "")
        assert parsed is not None and task.due is not None
        every = Duration(*parsed)
        due = dt.date.fromisoformat(task.due)
        occurrence = task.occurrence
        while due.isoformat() <= day:
            due, occurrence = every.after(due), occurrence + 1
            gap = (
                None
                if task.escalate_at is None
                else dt.date.fromisoformat(task.escalate_at) - dt.date.fromisoformat(task.due)
            )
            fields = {
                **{k: v for k, v in task.__dict__.items() if k not in ("id", "status")},
                "due": due.isoformat(),
                "escalate_at": None if gap is None else (due + gap).isoformat(),
                "as_of": day,
            }
            fields["occurrence"] = occurrence
            book.create(fields, who, f"{task.action} repeats every {task.every} while rule {task.rule} holds")
            counts["repeated"] += 1
    book.flush()
    due_now = conn.execute(
        select(tasks)
        .where(tasks.c.status.in_(("open", "accepted", "overdue")))
        .where((tasks.c.due < day) | (tasks.c.escalate_at <= day))
        .order_by(tasks.c.id)
    )
    for task in [_task(row) for row in due_now]:
        for status in moves(task.status, task.due, task.escalate_at, as_of):
            if status == "overdue":
                task = book.move(task, status, day, who, f"due {task.due}, not done by {day}")
            else:
                task = book.move(task, status, day, who, f"overdue since {task.due}: escalated to {task.escalate_to}")
                if task.escalate_action:
                    _escalation_task(book, task, day, who)
            counts[status] += 1

    return counts


def _escalation_task(book: TaskBook, task: Task, day: str, who: str) -> Task | None:
    """The escalation action of an undone task, for whom it escalated to; it ends with the task's cause.

    None when they have that task for the record and cause already, still active: occurrences of
    repeating work that escalate one after another ask them once."""
    held = book.tasks_of(task.source, [task.record]).get(task.record, [])
    if any(t.action == task.escalate_action and t.cause == task.cause and t.status in ACTIVE for t in held):
        return None
    kept = ("source", "record", "evaluation_seq", "cause", "rule")
    fields = {
        **{name: getattr(task, name) for name in kept},
        "action": task.escalate_action,
        "owner": task.escalate_to or "director",
        "as_of": day,
    }
    return book.create(fields, who, f"task {task.id} ({task.action}) was not done: escalated to {task.escalate_to}")


def listing(
    store: Store,
    *,
    owner: str | None = None,
    statuses: Sequence[str] | None = None,
    record: str | None = None,
) -> list[Task]:
    """Tasks, in the order they were made; ``owner`` also finds the tasks escalated to that owner."""
    query = select(tasks).order_by(tasks.c.id)
    if owner is not None:
        query = query.where(
            (tasks.c.owner == owner) | ((tasks.c.status == "escalated") & (tasks.c.escalate_to == owner))
        )
    if statuses:
        query = query.where(tasks.c.status.in_(list(statuses)))
    if record is not None:
        query = query.where(tasks.c.record == record)
    with store._connect() as conn:
        return [_task(row) for row in conn.execute(query)]


def history(store: Store, task_id: int) -> list[dict[str, Any]]:
    """Every move of a task, in order: its state after, who moved it, when (the day and the clock) and why."""
    with store._connect() as conn:
        rows = conn.execute(task_event_rows().where(task_events.c.task_id == task_id).order_by(task_events.c.seq))
        events = [move_of(row) for row in rows]
    if not events:
        raise LookupError(f"there is no task {task_id}")
    return events


def move_of(row: Any) -> dict[str, Any]:
    """A task's move as ``history`` and timelines give it, from a row of :func:`engine.store.task_event_rows`."""
    event = chained_event(row)
    task = None if event["state"] is None else json.loads(event["state"])
    said = {name: event[name] for name in ("status", "who", "why", "as_of", "at")}
    return {"event": event["seq"], **said, "task": task}


def deal_people(store: Store, held: Iterable[Task]) -> dict[tuple[str, str], tuple[str | None, str | None]]:
    """(source, record) -> (its owner, its team) as the record's latest evaluation holds them
    (``opportunity.owner``, ``opportunity.team``); None for what the CRM did not say."""
    record = func.coalesce(evaluations.c.record_id, evaluations.c.case_id)
    by_source: dict[str, set[str]] = {}
    for task in held:
        by_source.setdefault(task.source, set()).add(task.record)
    found: dict[tuple[str, str], tuple[str | None, str | None]] = {}
    with store._connect() as conn:
        for source, records in by_source.items():
            for chunk in iter_chunks(sorted(records), 500):
                latest = (
                    select(func.max(evaluations.c.seq))
                    .where(evaluations.c.source == source, record.in_(chunk))
                    .group_by(record)
                )
                rows = conn.execute(
                    select(record.label("record"), evaluations.c.facts).where(evaluations.c.seq.in_(latest))
                )
                for row in rows:
                    opportunity = json.loads(row.facts).get("opportunity")
                    said = opportunity if isinstance(opportunity, dict) else {}
                    owner, team = said.get("owner"), said.get("team")
                    found[(source, row.record)] = (
                        None if owner is None else str(owner),
                        None if team is None else str(team),
                    )
    return found
