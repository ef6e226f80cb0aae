"""Record events -> the record's merged state -> a case -> an evaluation, stored with the state in one transaction.

A :class:`Feed` is one CRM's events: the source the audit log files them under, the
kind of record evaluated and the mapping that makes a case of one.  For each event the
:class:`Ingestor` takes the record's last known state, merges the event into it
(:func:`adapters.webhook.merge`), maps the whole state and evaluates the case; the
evaluation and the new state are saved together, or neither is.  An event already
stored is not evaluated again.

Group commit: callers submit their events and wait; one writer thread takes every
submission waiting, opens one write transaction (:meth:`engine.store.Store.write`),
reads there what they need (events already stored, records' states) and evaluates
and stores them all, in order.  Reading under the write lock means no state can
change between its read and its save, so nothing is merged twice or retried; one
transaction for many requests means one commit, one chain-head update and a few
statements for all of them, which is what keeps webhook latency low under load.

Coalescing: the events of one submission (one delivery) that change the same record are
merged in order and the record's final state is evaluated once, filed under the last of
them; the others are answered ``coalesced`` with that evaluation's number.  Intermediate
states (a HubSpot batch sets one property per event) are never evaluated.

An event whose record maps to no case (a closed deal, a missing amount) is quarantined: kept in
the audit log's quarantined events with the code and reason (:meth:`engine.store.Writer.quarantine`),
in the same transaction, once however often it is delivered.

Every event ends as exactly one :class:`EventOutcome`: evaluated (a result or a case
error, both stored), coalesced, duplicate, quarantined, deleted or ignored.  An event
is a duplicate when it is already stored, or when it changes nothing in a record whose
state was already evaluated on the same day under the same playbook, or in a delivery
one of whose events is already stored (a redelivered batch).  A submission whose
events cannot be evaluated (an engine fault) fails alone.  A transaction the database
refuses keeps nothing; its submissions are tried again one per transaction, so that only
the one at fault fails (and when the database itself is down, each fails).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import bindparam, select

from adapters.mapping import Mapping, Quarantined
from adapters.webhook import IgnoredEvent, RecordEvent, merge
from engine.audit import outcome_to_file
from engine.errors import CaseError
from engine.evaluate import Evaluator, Result
from engine.store import (
    PARTITIONED,
    Appended,
    QuarantinedEvent,
    Reading,
    RecordState,
    Store,
    Writer,
    evaluations,
    filed_record,
)

__all__ = ["LINGER", "MAX_BATCH", "STORED", "EventOutcome", "Feed", "Ingestor"]

log = logging.getLogger("playbook.ingest")

MAX_BATCH = 500  # events per transaction, at most (a single submission may be larger)
LINGER = 0.001  # seconds the busy writer waits, at most, for its transaction to fill


@dataclass(frozen=True)
class Feed:
    """One CRM's events: the source they are filed under, the mapping that makes cases, the record type evaluated.

    ``object_type`` None evaluates records of every type; else only that type's (others are ignored).
    """

    source: str
    mapping: Mapping
    object_type: str | None = None


STORED = ("evaluated", "error")  # the statuses of an event whose evaluation was stored by this submission


@dataclass(frozen=True)
class EventOutcome:
    event_id: str
    record_id: str | None
    status: str  # evaluated | error | coalesced | duplicate | quarantined | deleted | ignored
    evaluation: int | None = None
    recommendations: tuple[dict[str, Any], ...] = ()  # as Result.recommendations: id, params, rule, source
    code: str | None = None
    reason: str | None = None

    def to_json(self, label: Callable[[str], str] | None = None) -> dict[str, Any]:
        """The outcome as the service answers it; ``label`` names an action in the reader's language."""
        data: dict[str, Any] = {"event": self.event_id, "record": self.record_id, "status": self.status}
        if self.evaluation is not None:
            data["evaluation"] = self.evaluation
        if self.status == "evaluated":
            data["recommendations"] = [
                {**rec, "label": label(rec["id"]) if label else rec["id"]} for rec in self.recommendations
            ]
        if self.code is not None:
            data["code"] = self.code
        if self.reason is not None:
            data["reason"] = self.reason
        return data


@dataclass
class _Submission:
    feed: Feed
    events: Sequence[RecordEvent | IgnoredEvent]
    received: float  # seconds since 1970, by the ingestor's clock
    future: Future[list[EventOutcome]]
    waiter: _Waiter | None = None  # an event loop's future to answer too (Ingestor.ingest_async)


_Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[list[EventOutcome]]"]


_STOP = None


class Ingestor:
    """Evaluates and stores record events, those of concurrent callers in one transaction.  Thread-safe.

    It runs a writer thread from the start: :meth:`close` it when done.
    """

    def __init__(
        self,
        store: Store,
        evaluator: Evaluator,
        *,
        clock: Callable[[], float] = time.time,
        max_batch: int = MAX_BATCH,
        on_evaluated: Callable[[float], None] | None = None,
        linger: float = LINGER,
    ) -> None:
        """``on_evaluated`` is told the seconds each evaluation took (for metrics); it runs on the writer thread.

        ``linger``: when the last transaction held several submissions, the writer waits up to this
        long for as many before it begins the next (0: never waits).
        """
        self.store = store
        self.evaluator = evaluator
        self.clock = clock
        self.max_batch = max_batch
        self.on_evaluated = on_evaluated
        self.linger = linger
        self._last_batch = 1
        self._queue: queue.SimpleQueue[_Submission | None] = queue.SimpleQueue()
        self._closing = threading.Lock()  # nothing is queued behind the stop
        self._closed = False
        self._held: _Submission | None = None  # taken from the queue, for the next transaction
        # what the write transactions cost: their number, the seconds their partitions were locked
        # (from the lock to the commit), and how many found a record changed since it was read
        self.transactions = 0
        self.locked_seconds = 0.0
        self.restaged = 0
        self.partitions_locked = 0  # chain heads, four per partition
        self.locked_cpu_seconds = 0.0  # of those seconds, the writer thread's own CPU time
        self._reported = False
        self._one_writer = store.engine.dialect.name == "sqlite"
        self._writer = threading.Thread(target=self._write_batches, name="playbook-ingest", daemon=True)
        self._writer.start()

    def submit(self, feed: Feed, events: Sequence[RecordEvent | IgnoredEvent]) -> Future[list[EventOutcome]]:
        """Queue events for the writer; the future gives one outcome per event, in order, once committed.

        Its exception, if any, is a store or engine failure: nothing of the events was stored.
        """
        return self._submit(feed, events, None)

    def _submit(
        self, feed: Feed, events: Sequence[RecordEvent | IgnoredEvent], waiter: _Waiter | None
    ) -> Future[list[EventOutcome]]:
        future: Future[list[EventOutcome]] = Future()
        with self._closing:
            if self._closed:
                raise RuntimeError("the ingestor is closed")
            self._queue.put(_Submission(feed, events, self.clock(), future, waiter))
        return future

    async def ingest_async(self, feed: Feed, events: Sequence[RecordEvent | IgnoredEvent]) -> list[EventOutcome]:
        """:meth:`ingest` awaited on the caller's event loop.  The writer wakes a loop once per transaction
        for all the submissions it answers there, where a future wrapped for each woke it once each.

        Cancelled before the writer takes it, the submission is not stored (a request given up on)."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[list[EventOutcome]] = loop.create_future()
        future = self._submit(feed, events, (loop, waiter))
        try:
            return await waiter
        except asyncio.CancelledError:
            future.cancel()
            raise

    def pending(self) -> int:
        """Submissions waiting for the writer (not counting the transaction being written)."""
        return self._queue.qsize() + (self._held is not None)

    def ingest(self, feed: Feed, events: Sequence[RecordEvent | IgnoredEvent]) -> list[EventOutcome]:
        """Submit and wait: one outcome per event, in order.  Store and engine failures are raised."""
        return self.submit(feed, events).result()

    def close(self) -> None:
        """Store what was submitted, then stop the writer; log what its transactions cost."""
        with self._closing:
            if not self._closed:
                self._closed = True
                self._queue.put(_STOP)
        self._writer.join()
        if self.transactions and not self._reported:  # bench/workers.py reads this line
            self._reported = True
            log.info(
                "ingest: %d transactions, %.3f s with partitions locked, %d evaluated again, %d partitions locked, "
                "%.3f s of CPU with them locked",
                self.transactions,
                self.locked_seconds,
                self.restaged,
                self.partitions_locked // len(PARTITIONED),
                self.locked_cpu_seconds,
            )

    # -- the writer thread ---------------------------------------------------------------

    def _write_batches(self) -> None:
        try:
            while True:
                batch, stop = self._take()
                if batch:
                    try:
                        self._write(batch)
                    finally:
                        _wake(batch)
                if stop:
                    return
        finally:  # however the writer ends, nothing submitted waits for ever
            with self._closing:
                self._closed = True
            left: list[_Submission | None] = [self._held]
            while not self._queue.empty():
                left.append(self._queue.get())
            stopped = [submission for submission in left if submission is not None]
            for submission in stopped:
                if submission.future.set_running_or_notify_cancel():
                    submission.future.set_exception(RuntimeError("the ingestor stopped before storing these events"))
            _wake(stopped)

    def _take(self) -> tuple[list[_Submission], bool]:
        """The next submission (waiting for it) and those queued behind it, up to max_batch events in all."""
        first = self._held if self._held is not None else self._queue.get()
        self._held = None
        if first is _STOP:
            return [], True
        batch, size = [first], len(first.events)
        deadline = 0.0
        while size < self.max_batch:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                # Busy (the last transaction held more submissions than this one yet): wait up to
                # ``linger`` for as many, since a commit costs as much as evaluating a few events.
                # Idle (one at a time), nothing waits.
                if len(batch) >= self._last_batch:
                    break
                now = time.monotonic()
                deadline = deadline or now + self.linger
                if now >= deadline:
                    break
                try:
                    more = self._queue.get(timeout=deadline - now)
                except queue.Empty:
                    break
            if more is _STOP:
                return batch, True
            if size + len(more.events) > self.max_batch:
                self._held = more
                break
            batch.append(more)
            size += len(more.events)
        self._last_batch = len(batch)
        return batch, False

    def _write(self, batch: list[_Submission]) -> None:
        live = [s for s in batch if s.future.set_running_or_notify_cancel()]  # not those given up on
        try:
            if live and not self._commit(live) and len(live) > 1:
                # Something in one submission the database refuses fails the whole transaction; nothing
                # was kept, so each is tried alone, and only that one fails.
                for submission in live:
                    if not submission.future.done():
                        self._commit([submission])
        except BaseException as error:  # the writer is stopping: answer before it does
            for submission in live:
                if not submission.future.done():
                    submission.future.set_exception(error)
            raise

    def _commit(self, live: list[_Submission]) -> bool:
        """Store the submissions in one transaction and answer them; False when it was rolled back.

        They are evaluated first, outside any lock, from what the log held then; the write transaction
        locks the partitions of their records and reads again what they were evaluated from.  Only if
        another process changed one of those records (or stored one of their events) in between are
        they evaluated again, there, under the lock: so no state is merged from a stale read.  On SQLite,
        which lets one writer in at a time whatever it locks, they are read and evaluated under the
        lock at once: reading first would spare no other writer a wait, and cost a transaction and
        every read twice.
        """
        try:
            transaction: _Transaction | None = None
            staged: list[tuple[_Submission, _Staged]] = []
            pending = live
            if not self._one_writer:
                with self.store.reading() as reading:
                    transaction = _Transaction(reading, self.evaluator, live, self.on_evaluated)
                    staged = self._stage(transaction, live)
                pending = [s for s, _ in staged]
            with self.store.write() as writer:
                if transaction is not None:
                    self.partitions_locked += writer.lock_records(transaction.partition_keys())
                started = time.perf_counter()  # the partitions are held from here to the commit
                cpu_started = time.thread_time()
                if transaction is None or not transaction.still_current(writer):
                    if transaction is not None:
                        self.restaged += 1
                    transaction = _Transaction(writer, self.evaluator, pending, self.on_evaluated)
                    staged = self._stage(transaction, pending)
                    self.partitions_locked += writer.lock_records(transaction.partition_keys())
                transaction.store(writer)  # a store failure fails them all
                answers = [(submission, transaction.outcomes(done)) for submission, done in staged]
            self.transactions += 1
            self.locked_seconds += time.perf_counter() - started
            self.locked_cpu_seconds += time.thread_time() - cpu_started
        except Exception as error:  # noqa: BLE001 - rolled back: none is half-stored
            if len(live) == 1 and not live[0].future.done():
                live[0].future.set_exception(error)
            return False
        for submission, outcomes in answers:  # committed
            submission.future.set_result(outcomes)
        return True

    @staticmethod
    def _stage(transaction: _Transaction, submissions: list[_Submission]) -> list[tuple[_Submission, _Staged]]:
        staged: list[tuple[_Submission, _Staged]] = []
        for submission in submissions:
            try:
                staged.append((submission, transaction.stage(submission)))
            except Exception as error:  # noqa: BLE001 - it cannot be evaluated: it alone fails
                submission.future.set_exception(error)
        return staged


def _wake(submissions: list[_Submission]) -> None:
    """Answer the event loops waiting for these submissions (all answered), one wake-up per loop."""
    answered: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Future[Any]]]] = {}
    for submission in submissions:
        if submission.waiter is not None and submission.future.done():
            loop, waiter = submission.waiter
            answered.setdefault(loop, []).append((waiter, submission.future))
    for loop, pairs in answered.items():
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits there any more
            loop.call_soon_threadsafe(_settle, pairs)


def _settle(pairs: list[tuple[asyncio.Future[Any], Future[Any]]]) -> None:
    """On the waiting loop: each waiter given its submission's outcomes, or its failure."""
    for waiter, future in pairs:
        if waiter.done():  # given up on
            continue
        if future.cancelled():
            waiter.cancel()
        elif (error := future.exception()) is not None:
            waiter.set_exception(error)
        else:
            waiter.set_result(future.result())


@dataclass(frozen=True)
class _Staged:
    """A submission evaluated, not yet stored."""

    outcomes: list[EventOutcome]  # those evaluated, coalesced or duplicate still without their evaluation's number
    numbered: list[tuple[int, tuple[str, str]]]  # (outcome, (source, event filed)) to number once stored


class _Transaction:
    """The submissions of one write transaction: what they read, in one query per source, and what they change."""

    def __init__(
        self,
        reading: Reading,
        evaluator: Evaluator,
        submissions: list[_Submission],
        on_evaluated: Callable[[float], None] | None = None,
    ) -> None:
        self.reading = reading
        self.evaluator = evaluator
        self.on_evaluated = on_evaluated
        event_ids: defaultdict[str, set[str]] = defaultdict(set)
        record_ids: defaultdict[str, set[str]] = defaultdict(set)
        for submission in submissions:
            for event in submission.events:
                if isinstance(event, RecordEvent):
                    event_ids[submission.feed.source].add(event.event_id)
                    record_ids[submission.feed.source].add(event.key)
        self.evaluations: dict[tuple[str, str], int] = {  # (source, event) -> its evaluation's number
            (source, event_id): seq
            for source, ids in event_ids.items()
            for event_id, seq in reading.events_stored(source, ids).items()
        }
        self.states: dict[tuple[str, str], RecordState] = {
            (source, record_id): state
            for source, ids in record_ids.items()
            for record_id, state in reading.record_states(source, ids).items()
        }
        self.event_ids, self.record_ids = event_ids, record_ids
        self.versions_read = {key: state.version for key, state in self.states.items()}
        self.evaluations_read = dict(self.evaluations)
        # events evaluated in this transaction -> the event their evaluation is filed under
        self.evaluated: dict[tuple[str, str], tuple[str, str]] = {}
        self.runs: list[tuple[str, dt.date, list[Appended]]] = []  # to append: runs of one source and day
        self.changed: dict[tuple[str, str], RecordState] = {}
        self.quarantined: list[QuarantinedEvent] = []

    def stage(self, submission: _Submission) -> _Staged:
        """Merge each record's events, map and evaluate its final state; kept for :meth:`store` only if it returns."""
        feed = submission.feed
        as_of = dt.datetime.fromtimestamp(submission.received, dt.UTC).date()
        received_ms = int(submission.received * 1000)
        outcomes: list[EventOutcome | None] = [None] * len(submission.events)
        numbered: list[tuple[int, tuple[str, str]]] = []
        folds: dict[tuple[str, str], list[int]] = {}  # record -> positions of its new events, in order
        known: dict[tuple[str, str], tuple[str, str]] = {}  # record -> an event of it already stored, filed
        for position, event in enumerate(submission.events):
            if isinstance(event, IgnoredEvent):
                outcomes[position] = EventOutcome(event.event_id, event.record_id, "ignored", reason=event.reason)
                continue
            if feed.object_type is not None and event.object_type != feed.object_type:
                reason = f"{event.object_type} records are not evaluated here, only {feed.object_type} records"
                outcomes[position] = EventOutcome(event.event_id, event.record_id, "ignored", reason=reason)
                continue
            event_key, record_key = (feed.source, event.event_id), (feed.source, event.key)
            filed = event_key if event_key in self.evaluations else self.evaluated.get(event_key)
            if filed is not None:
                numbered.append((position, filed))
                outcomes[position] = EventOutcome(event.event_id, event.record_id, "duplicate")
                known.setdefault(record_key, filed)
                continue
            folds.setdefault(record_key, []).append(position)
        states: dict[tuple[str, str], RecordState] = {}
        items: list[Appended] = []
        quarantined: list[QuarantinedEvent] = []
        for record_key, positions in folds.items():
            events = [event for p in positions if isinstance(event := submission.events[p], RecordEvent)]
            last = events[-1]
            state = self.states[record_key]
            fields, stamps, deleted, changed = state.fields, state.stamps, state.deleted, False
            for event in events:
                merged = merge(fields, stamps, deleted, event, received_ms)
                fields, stamps, deleted = merged.fields, merged.stamps, merged.deleted
                changed = changed or merged.changed
            if not changed and (seen := self._seen(record_key, known, as_of)) is not None:
                covering, reason = seen
                for position, event in zip(positions, events, strict=True):
                    if isinstance(covering, tuple):
                        numbered.append((position, covering))
                    evaluation = covering if isinstance(covering, int) else None
                    outcomes[position] = EventOutcome(
                        event.event_id, event.record_id, "duplicate", evaluation=evaluation, reason=reason
                    )
                continue
            new_state = RecordState(
                feed.source,
                last.key,
                fields,
                stamps,
                deleted,
                version=state.version + len(positions),
                last_event_id=last.event_id,
            )
            if deleted:
                if changed:
                    states[record_key] = new_state
                for position, event in zip(positions, events, strict=True):
                    outcomes[position] = EventOutcome(event.event_id, event.record_id, "deleted")
                continue
            mapped = feed.mapping.to_case(fields)
            if isinstance(mapped, Quarantined):
                if changed:
                    states[record_key] = new_state
                received_at = dt.datetime.fromtimestamp(submission.received, dt.UTC).isoformat(timespec="microseconds")
                for position, event in zip(positions, events, strict=True):
                    quarantined.append(
                        QuarantinedEvent(
                            feed.source,
                            event.event_id,
                            event.record_id,
                            received_at,
                            mapped.code,
                            mapped.reason,
                            _as_received(event),
                        )
                    )
                    outcomes[position] = EventOutcome(
                        event.event_id, event.record_id, "quarantined", code=mapped.code, reason=mapped.reason
                    )
                continue
            started = time.perf_counter()
            result, facts = outcome_to_file(self.evaluator, mapped.case_id, mapped.case, as_of)
            if self.on_evaluated is not None:
                self.on_evaluated(time.perf_counter() - started)
            states[record_key] = new_state  # the state an evaluation was made from is saved with it
            filed = (feed.source, last.event_id)
            items.append(Appended(result, facts, event_id=last.event_id))
            for position, event in zip(positions, events, strict=True):
                self.evaluated[(feed.source, event.event_id)] = filed
                numbered.append((position, filed))
                if position == positions[-1]:
                    outcomes[position] = _evaluated(event, result)
                else:
                    reason = (
                        f"merged with the later events of this delivery: the state after {last.event_id} was evaluated"
                    )
                    outcomes[position] = EventOutcome(event.event_id, event.record_id, "coalesced", reason=reason)
        self.states |= states
        self.changed |= states
        self.quarantined += quarantined
        if items:
            if self.runs and self.runs[-1][:2] == (feed.source, as_of):
                self.runs[-1][2].extend(items)
            else:
                self.runs.append((feed.source, as_of, items))
        done = [o for o in outcomes if o is not None]
        assert len(done) == len(outcomes)  # every event has exactly one outcome
        return _Staged(done, numbered)

    def _seen(
        self, record_key: tuple[str, str], known: dict[tuple[str, str], tuple[str, str]], as_of: dt.date
    ) -> tuple[tuple[str, str] | int, str] | None:
        """For events that change nothing: what already covers the record's state (an event filed, or an
        evaluation's number) and why; None when the state is to be evaluated.

        Either the same delivery holds an event already stored (a batch delivered again: its other
        events were coalesced into that one), or the state's last event was evaluated on the same
        day under this playbook, so evaluating it again would store the same result twice.
        """
        if record_key in known:
            return known[record_key], "changes nothing; this delivery was already evaluated"
        source, last_event = record_key[0], self.states[record_key].last_event_id
        if last_event is None:
            return None
        filed = self.evaluations.get((source, last_event)) or self.evaluated.get((source, last_event))
        if isinstance(filed, tuple):
            return filed, "changes nothing in the record's state, evaluated earlier in this transaction"
        row = self.reading.conn.execute(_LAST_EVALUATION, {"source": source, "event_id": last_event}).first()
        if row is None or row.as_of != as_of.isoformat() or row.playbook_hash != self.evaluator.playbook.content_hash:
            return None
        return int(row.seq), f"changes nothing in the record's state, evaluated as of {row.as_of}"

    def partition_keys(self) -> set[tuple[str, str]]:
        """(source, record) of everything this transaction reads or writes: the partitions to lock."""
        keys = {(source, record_id) for source, ids in self.record_ids.items() for record_id in ids}
        keys |= {(source, filed_record(item)) for source, _, items in self.runs for item in items}
        keys |= {(q.source, q.record_id or q.event_id) for q in self.quarantined}
        return keys

    def still_current(self, writer: Writer) -> bool:
        """Whether what was read to evaluate (events stored, records' versions) is still so, read under the lock."""
        for source, ids in self.event_ids.items():
            stored = writer.events_stored(source, ids)
            if {(source, e): seq for e, seq in stored.items()} != {
                key: seq for key, seq in self.evaluations_read.items() if key[0] == source
            }:
                return False
        for source, ids in self.record_ids.items():
            for record_id, state in writer.record_states(source, ids).items():
                if state.version != self.versions_read[(source, record_id)]:
                    return False
        return True

    def store(self, writer: Writer) -> None:
        """Append every evaluation staged, in order, a statement per table and run; save the states."""
        playbook = self.evaluator.playbook
        for source, as_of, items in self.runs:
            seqs = writer.append(playbook, items, source=source, as_of=as_of)
            if -1 in seqs:  # cannot be: every event was looked up under this same write lock
                raise RuntimeError(f"an event of {source} was already stored though it was not found")
            self.evaluations |= {(source, str(item.event_id)): seq for item, seq in zip(items, seqs, strict=True)}
        writer.save_records(self.changed.values())
        writer.quarantine(self.quarantined)

    def outcomes(self, staged: _Staged) -> list[EventOutcome]:
        """A submission's outcomes, each evaluated, coalesced or duplicate event with its evaluation's number."""
        outcomes = staged.outcomes
        for position, filed in staged.numbered:
            outcomes[position] = replace(outcomes[position], evaluation=self.evaluations[filed])
        return outcomes


# The evaluation filed under a record's last event: read (rarely) for events that change nothing.
# Here, not in the store, until the store has a query for it.
_LAST_EVALUATION = select(evaluations.c.seq, evaluations.c.as_of, evaluations.c.playbook_hash).where(
    evaluations.c.source == bindparam("source"), evaluations.c.event_id == bindparam("event_id")
)


def _as_received(event: RecordEvent) -> dict[str, Any]:
    """The event as the CRM sent it, for the quarantined events' log (texts no database stores escaped)."""
    return {
        "system": event.system,
        "object_type": event.object_type,
        "tenant": event.tenant,
        "change": event.change,
        "occurred_at": event.occurred_at,
        "fields": _storable(event.fields),
    }


def _storable(value: Any) -> Any:
    # lone surrogates (JSON allows them) and NUL (PostgreSQL refuses it) as backslash escapes
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_storable(v) for v in value]
    return value


def _evaluated(event: RecordEvent, result: Result | CaseError) -> EventOutcome:
    if isinstance(result, CaseError):
        return EventOutcome(event.event_id, event.record_id, "error", code=result.code, reason=result.message)
    return EventOutcome(event.event_id, event.record_id, "evaluated", recommendations=tuple(result.recommendations))
