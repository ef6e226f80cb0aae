"""The outbox of notifications: each task event a CRM is told of, as a delivery waiting to be sent.

A delivery is written by :func:`enqueue` in the same transaction as its task event (so an event is
never stored without its delivery, nor a delivery without its event), and drained later by a
deliverer (``adapters/notify.py``).  A deliverer :func:`claim` s due deliveries under a lease
(``lease_owner``/``lease_until``, taken by a conditional UPDATE), so two deliverers never send one
delivery at the same time; it :func:`settle` s each: delivered, or failed and due again after an
exponential backoff, or, past the retry budget, dead: kept in ``dead_letters`` until :func:`retry`
puts it back.  The delivery id (``<log id>-<event seq>``) is the same on every attempt: a receiver
that keeps the ids it has seen acts once on each event.

A delivery's row holds only how its sending goes: its id, kind, task, creation time and the body sent
are its task event's, and the body is built from the event when it is sent (:func:`delivery_body`),
the same bytes whenever.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, or_, select, update

from engine.store.batch import _insert_many, iter_chunks
from engine.store.chain import canonical
from engine.store.schema import (
    TASK_FIELDS,
    _meta_value,
    chained_event,
    dead_letters,
    deliveries,
    task_events,
    tasks,
)

__all__ = [
    "KINDS",
    "Delivery",
    "DeliveryPolicy",
    "claim",
    "delivery_body",
    "enqueue",
    "listing",
    "retry",
    "settle",
]

# The task event statuses a CRM is told of, and the kind each is sent as.  A task is only ever
# "open" when it is made (nothing moves a task back to open), so an "open" event is a creation.
KINDS = {"open": "task.created", "overdue": "task.overdue", "escalated": "task.escalated"}


@dataclass(frozen=True)
class Delivery:
    event_seq: int
    delivery_id: str
    kind: str
    task_id: int
    body: str
    status: str
    attempts: int
    next_attempt_at: str
    url: str | None
    last_error: str | None
    created_at: str
    delivered_at: str | None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "body"}


def delivery_body(log_id: str, event: dict[str, Any]) -> str:
    """The JSON a delivery sends: its task event (``seq``, ``status``, ``who``, ``why``, ``as_of``, ``at``)
    and the task's row after it (``state``, as chained)."""
    body = {
        "delivery": f"{log_id}-{event['seq']}",
        "kind": KINDS[event["status"]],
        "event": event["seq"],
        "task": json.loads(event["state"]),
        "who": event["who"],
        "why": event["why"],
        "as_of": event["as_of"],
        "at": event["at"],
    }
    return canonical(body)


def _log_id(conn: Connection) -> str:
    return _meta_value(conn, "log_id") or "log"


def _told() -> Any:
    """Deliveries with their task events and the events' tasks, as :func:`_delivery` reads them: the
    event's columns as ``e_<name>``, its task's as ``e_t_<name>`` (see :func:`task_event_rows`)."""
    event_columns = [c.label(f"e_{c.name}") for c in task_events.c if c.name not in ("prev_hash", "entry_hash")]
    task_columns = [tasks.c[f].label(f"e_t_{f}") for f in TASK_FIELDS]
    joined = deliveries.join(task_events, task_events.c.seq == deliveries.c.event_seq).outerjoin(
        tasks, tasks.c.id == task_events.c.task_id
    )
    return select(deliveries, *event_columns, *task_columns).select_from(joined)


def _delivery(log_id: str, row: Any) -> Delivery:
    values = row._asdict()
    event = chained_event({name[2:]: value for name, value in values.items() if name.startswith("e_")})
    body = values["body"]
    if body is None:  # empty when its task's row is gone: never claimed, listed as it stands
        body = "" if event["state"] is None else delivery_body(log_id, event)
    return Delivery(
        event_seq=values["event_seq"],
        delivery_id=f"{log_id}-{values['event_seq']}",
        kind=KINDS[event["status"]],
        task_id=event["task_id"],
        body=body,
        status=values["status"],
        attempts=values["attempts"],
        next_attempt_at=values["next_attempt_at"] or event["at"],
        url=values["url"],
        last_error=values["last_error"],
        created_at=event["at"],
        delivered_at=values["delivered_at"],
    )


@dataclass(frozen=True)
class DeliveryPolicy:
    """How hard a deliverer tries: attempts before a delivery is dead, and the waits between them
    (``backoff`` seconds after the first failure, doubling, at most ``max_backoff``)."""

    max_attempts: int = 10
    backoff: float = 30.0
    max_backoff: float = 3600.0

    def wait_after(self, attempts: int) -> float:
        return float(min(self.backoff * 2 ** max(attempts - 1, 0), self.max_backoff))


def enqueue(conn: Connection, events: Sequence[dict[str, Any]]) -> None:
    """A delivery for each task event a CRM is told of (created, overdue, escalated), in the caller's
    transaction: the one that writes the events; due at once (``next_attempt_at`` NULL)."""
    rows = [{**_NEW_DELIVERY, "event_seq": event["seq"]} for event in events if event["status"] in KINDS]
    if rows:
        _insert_many(conn, deliveries, rows)


_NEW_DELIVERY = {**dict.fromkeys(c.name for c in deliveries.c), "status": "pending", "attempts": 0}


def _due(now: str) -> Any:
    return or_(deliveries.c.next_attempt_at.is_(None), deliveries.c.next_attempt_at <= now)


def _free(now: str) -> Any:
    return or_(deliveries.c.lease_until.is_(None), deliveries.c.lease_until < now)


def claim(conn: Connection, owner: str, now: str, lease_until: str, limit: int) -> list[Delivery]:
    """Up to ``limit`` pending deliveries due by ``now`` and under no live lease, leased to ``owner``.

    Each is taken by an UPDATE that re-checks the lease: of two deliverers racing for one row, the
    second finds it leased (PostgreSQL re-reads the row after the first commits) and leaves it."""
    # a delivery whose task's row is gone has nothing to send (verify names the task deleted)
    sendable = deliveries.join(task_events, task_events.c.seq == deliveries.c.event_seq).join(
        tasks, tasks.c.id == task_events.c.task_id
    )
    due = conn.execute(
        select(deliveries.c.event_seq)
        .select_from(sendable)
        .where(deliveries.c.status == "pending", _due(now), _free(now))
        .order_by(deliveries.c.event_seq)
        .limit(limit)
    ).scalars()
    taken = []
    for seq in list(due):
        result = conn.execute(
            update(deliveries)
            .where(deliveries.c.event_seq == seq, deliveries.c.status == "pending", _free(now))
            .values(lease_owner=owner, lease_until=lease_until)
        )
        if result.rowcount == 1:
            taken.append(seq)
    if not taken:
        return []
    log_id = _log_id(conn)
    rows = conn.execute(_told().where(deliveries.c.event_seq.in_(taken)).order_by(deliveries.c.event_seq))
    return [_delivery(log_id, row) for row in rows]


def _later(now: str, seconds: float) -> str:
    return (dt.datetime.fromisoformat(now) + dt.timedelta(seconds=seconds)).isoformat(timespec="microseconds")


def settle(
    conn: Connection,
    delivery: Delivery,
    owner: str,
    now: str,
    *,
    url: str | None,
    error: str | None,
    policy: DeliveryPolicy,
) -> str:
    """Record how an attempt went: ``error`` None is delivered (or, with ``url`` None, skipped: no URL
    for its kind).  Returns the delivery's status after, or "lost" when its lease had passed to
    another deliverer (which then owns the outcome)."""
    mine = (deliveries.c.event_seq == delivery.event_seq) & (deliveries.c.lease_owner == owner)
    released = {"lease_owner": None, "lease_until": None}
    if error is None:
        status = "delivered" if url is not None else "skipped"
        values: dict[str, Any] = {"status": status, "url": url, "delivered_at": now, "last_error": None}
        if url is not None:
            values["attempts"] = delivery.attempts + 1
        result = conn.execute(update(deliveries).where(mine).values(**values, **released))
        return status if result.rowcount == 1 else "lost"
    attempts = delivery.attempts + 1
    dead = attempts >= policy.max_attempts
    values = {
        "status": "dead" if dead else "pending",
        "attempts": attempts,
        "url": url,
        "last_error": error,
        "next_attempt_at": now if dead else _later(now, policy.wait_after(attempts)),
    }
    result = conn.execute(update(deliveries).where(mine).values(**values, **released))
    if result.rowcount != 1:
        return "lost"
    if dead:
        conn.execute(
            insert(dead_letters),
            [
                {
                    "event_seq": delivery.event_seq,
                    "kind": delivery.kind,
                    "url": url or "",
                    "attempts": attempts,
                    "last_error": error,
                    "died_at": now,
                }
            ],
        )
    return str(values["status"])


def listing(conn: Connection, *, dead: bool = False) -> list[dict[str, Any]]:
    """Deliveries in event order; ``dead``: the dead letters not yet retried, with when they died."""
    log_id = _log_id(conn)
    if not dead:
        return [_delivery(log_id, row).to_json() for row in conn.execute(_told().order_by(deliveries.c.event_seq))]
    query = (
        _told()
        .add_columns(dead_letters.c.died_at)
        .join(dead_letters, dead_letters.c.event_seq == deliveries.c.event_seq)
        .where(dead_letters.c.retried_at.is_(None))
        .order_by(deliveries.c.event_seq)
    )
    return [{**_delivery(log_id, row).to_json(), "died_at": row.died_at} for row in conn.execute(query)]


def retry(conn: Connection, now: str, ids: Sequence[str] | None = None) -> list[int]:
    """Put dead deliveries back in the outbox, due now with a fresh retry budget: those named (by event
    number or delivery id), or every one (``ids`` None).  Returns the event numbers put back.
    LookupError naming any given id that is not a dead delivery."""
    log_id = _log_id(conn)
    query = select(deliveries.c.event_seq).where(deliveries.c.status == "dead")
    dead = {seq: f"{log_id}-{seq}" for seq in conn.execute(query).scalars()}
    if ids is None:
        chosen = sorted(dead)
    else:
        by_name = {str(seq): seq for seq in dead} | {delivery_id: seq for seq, delivery_id in dead.items()}
        unknown = [given for given in ids if given not in by_name]
        if unknown:
            raise LookupError(f"no dead delivery {', '.join(unknown)}: `playbook deliveries --dead` lists them")
        chosen = sorted({by_name[given] for given in ids})
    for chunk in iter_chunks(chosen, 500):
        conn.execute(
            update(deliveries)
            .where(deliveries.c.event_seq.in_(chunk))
            .values(status="pending", attempts=0, next_attempt_at=now, lease_owner=None, lease_until=None)
        )
        conn.execute(
            update(dead_letters)
            .where(dead_letters.c.event_seq.in_(chunk), dead_letters.c.retried_at.is_(None))
            .values(retried_at=now)
        )
    return chosen
