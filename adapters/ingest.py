"""Record events -> the record's merged state -> a case -> an evaluation, stored with the state in one transaction.

One :class:`Ingestor` per CRM: it knows the source name the audit log files its events
under, the kind of record it evaluates and the mapping that makes a case of one.  For each
event it reads the record's last known state, merges the event into it
(:func:`adapters.webhook.merge`), maps the whole state and evaluates the case; the
evaluation and the new state are saved together (:meth:`engine.store.Store.append`), or
neither is.  An event already stored is not evaluated again; a state saved by another
worker meanwhile makes it read and merge again.

Every event ends as exactly one :class:`EventOutcome`: evaluated (a result or a case
error, both stored), duplicate, quarantined, deleted or ignored.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from adapters.mapping import Mapping, Quarantined
from adapters.webhook import IgnoredEvent, RecordEvent, merge
from engine.errors import CaseError
from engine.evaluate import Evaluator, Result
from engine.store import Appended, RecordChanged, RecordState, Store

__all__ = ["ATTEMPTS", "EventOutcome", "Ingestor", "StateContention"]

ATTEMPTS = 20  # reads and merges of one event before giving up (the sender retries later)


class StateContention(Exception):
    """A record's state kept changing under one event: the sender should deliver it again later."""


@dataclass(frozen=True)
class EventOutcome:
    event_id: str
    record_id: str | None
    status: str  # evaluated | error | duplicate | quarantined | deleted | ignored
    evaluation: int | None = None
    recommendations: tuple[str, ...] = ()
    code: str | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"event": self.event_id, "record": self.record_id, "status": self.status}
        if self.evaluation is not None:
            data["evaluation"] = self.evaluation
        if self.status == "evaluated":
            data["recommendations"] = list(self.recommendations)
        if self.code is not None:
            data["code"] = self.code
        if self.reason is not None:
            data["reason"] = self.reason
        return data


class Ingestor:
    """Evaluates and stores the events of one CRM.  Safe to share between threads."""

    def __init__(
        self,
        store: Store,
        evaluator: Evaluator,
        mapping: Mapping,
        *,
        source: str,
        object_type: str | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``object_type`` None evaluates records of every type; else only that type's (others are ignored)."""
        self.store = store
        self.evaluator = evaluator
        self.mapping = mapping
        self.source = source
        self.object_type = object_type
        self.clock = clock

    def ingest(self, events: Sequence[RecordEvent | IgnoredEvent]) -> list[EventOutcome]:
        """One outcome per event, in order.  Store and engine failures are raised, not reported."""
        now = self.clock()
        as_of = dt.datetime.fromtimestamp(now, dt.UTC).date()
        return [self._one(event, as_of, int(now * 1000)) for event in events]

    def _one(self, event: RecordEvent | IgnoredEvent, as_of: dt.date, received_ms: int) -> EventOutcome:
        if isinstance(event, IgnoredEvent):
            return EventOutcome(event.event_id, event.record_id, "ignored", reason=event.reason)
        if self.object_type is not None and event.object_type != self.object_type:
            reason = f"{event.object_type} records are not evaluated here, only {self.object_type} records"
            return EventOutcome(event.event_id, event.record_id, "ignored", reason=reason)
        for _ in range(ATTEMPTS):
            try:
                return self._attempt(event, as_of, received_ms)
            except RecordChanged:
                continue
        raise StateContention(f"record {event.record_id} kept changing while event {event.event_id} was merged")

    def _attempt(self, event: RecordEvent, as_of: dt.date, received_ms: int) -> EventOutcome:
        known, state = self.store.event_and_record(self.source, event.event_id, event.key)
        if known is not None:
            return EventOutcome(event.event_id, event.record_id, "duplicate", evaluation=known)
        merged = merge(state.fields, state.stamps, state.deleted, event, received_ms)
        new_state = RecordState(
            self.source, event.key, merged.fields, merged.stamps, merged.deleted, version=state.version
        )
        if merged.deleted:
            if merged.changed:
                self.store.save_record(new_state, event.event_id)
            return EventOutcome(event.event_id, event.record_id, "deleted")
        mapped = self.mapping.to_case(merged.fields)
        if isinstance(mapped, Quarantined):
            if merged.changed:
                self.store.save_record(new_state, event.event_id)
            return EventOutcome(event.event_id, event.record_id, "quarantined", code=mapped.code, reason=mapped.reason)
        outcome: Result | CaseError
        try:
            outcome = self.evaluator.evaluate_case(mapped.case, as_of, mapped.case_id)
        except CaseError as error:
            outcome = error
        appended = Appended(outcome, mapped.case, event_id=event.event_id, record=new_state)
        [seq] = self.store.append(self.evaluator.playbook, [appended], source=self.source, as_of=as_of)
        if seq < 0:  # stored by another worker since we looked
            known = self.store.evaluation_of_event(self.source, event.event_id)
            return EventOutcome(event.event_id, event.record_id, "duplicate", evaluation=known)
        if isinstance(outcome, CaseError):
            return EventOutcome(
                event.event_id, event.record_id, "error", evaluation=seq, code=outcome.code, reason=outcome.message
            )
        actions = tuple(rec["id"] for rec in outcome.recommendations)
        return EventOutcome(event.event_id, event.record_id, "evaluated", evaluation=seq, recommendations=actions)
