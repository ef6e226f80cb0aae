"""The workflow clock: ``playbook tick`` from cron, and the same timer inside ``playbook serve``.

A tick at a day does, in one transaction per day: re-check the time-based rules (each open record
whose result can change with time is evaluated again at the day, from its stored facts under the
playbook given; when its decisions or recommended actions differ from its latest evaluation's, the new
result is stored as a normal evaluation, so its tasks are made and cancelled the usual way,
engine/tasks.py), then move the tasks on (:func:`engine.tasks.advance_book`: overdue, escalated, the
next occurrences), then mark the day fired in the ``clock_timers`` row of the timer.

Which records can change with time: evaluation reads the clock only through the inputs a playbook
derives from a date and the evaluation's day (``weeks_until``, ``weeks_since``: the weeks to a
decision date, the weeks in a stage).  A record is evaluated again when its facts hold the date one of
the playbook's derived inputs is made from (and not that input itself); a record without such a date
gives the same result on any day.  Whether the result changed is then decided by evaluating it, not
guessed: the cells a number falls in are the evaluator's business.  Parameters that quote a moving
value (``weeks_to_close`` in a recommendation's params) change every day; a new evaluation is stored
only when a decision or a recommended action (or its rule) changes, so a daily tick does not file a
copy of every dated deal every day.

Days missed (the service down, cron not run) are ticked one by one, oldest first, up to
:data:`CATCH_UP_DAYS` back: the work a day would have made is made with that day's dates.  The timer's
row is locked by the transaction that fires a day (``SELECT ... FOR UPDATE``, or ``SKIP LOCKED`` for
the service, which leaves the day to the process holding it; SQLite's write lock does the same): a
second process waits or skips, then finds the day fired.  A process killed mid-day leaves nothing of
that day (its transaction never commits) and the lock goes with its connection: nothing is lost or
done twice.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, select, update

from engine.errors import CaseError
from engine.evaluate import Evaluator, Result
from engine.model import Playbook
from engine.store import Appended, Store, Writer, canonical, clock_timers, evaluations, iter_chunks, recommendations
from engine.store.book import _open_cases
from engine.tasks import CLOCK, advance_book

__all__ = ["CATCH_UP_DAYS", "TICK", "ServiceClock", "TickReport", "tick", "time_sources"]

log = logging.getLogger("playbook.clock")

TICK = "tick"  # the timer of the daily tick (the row engine/store.py makes at schema version 8)
CATCH_UP_DAYS = 366  # days missed ticked one by one at most; older ones are not made up
_CHUNK = 2000  # records evaluated and stored per batch within a day's transaction


@dataclass
class TickReport:
    """What ticks did: the days ticked, records evaluated again and stored, tasks made and moved."""

    days: list[str] = field(default_factory=list)
    checked: int = 0  # records whose result could change with time, evaluated again
    reevaluated: int = 0  # of those, stored: their decisions or recommended actions changed
    failed: int = 0  # evaluated again with an error (kept as they were)
    repeated: int = 0
    overdue: int = 0
    escalated: int = 0
    busy: bool = False  # another process was firing the timer (service only): nothing done here

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def time_sources(playbook: Playbook) -> list[tuple[str, str, str, str]]:
    """The inputs the playbook derives from a date and the day: (object, derived field, object, date field)."""
    found = []
    for name, spec in playbook.inputs.items():
        if spec.derive is not None and spec.derive[0] in ("weeks_until", "weeks_since"):
            kind, _, key = name.partition(".")
            source_kind, _, source_key = spec.derive[1][0].partition(".")
            found.append((kind, key, source_kind, source_key))
    return found


def _time_based(facts: dict[str, Any], sources: list[tuple[str, str, str, str]]) -> bool:
    for kind, key, source_kind, source_key in sources:
        holder, source = facts.get(kind), facts.get(source_kind)
        given = isinstance(holder, dict) and holder.get(key) is not None  # given, not derived: fixed
        if not given and isinstance(source, dict) and source.get(source_key) is not None:
            return True
    return False


def _who() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def tick(
    store: Store,
    evaluator: Evaluator | None,
    as_of: dt.date,
    *,
    service: bool = False,
    who: str = CLOCK,
    on_day: Callable[[str], None] | None = None,
    stopping: Callable[[], bool] | None = None,
) -> TickReport:
    """Move time to ``as_of``: each day from the one after the timer last fired (at most
    :data:`CATCH_UP_DAYS` back; only ``as_of`` when it never fired) in turn, each in its own transaction.

    ``evaluator``: the playbook time-based rules are checked under (None: tasks only, as ``tasks advance``).
    ``service``: the service's clock: a day fired already is not done again, and when another process
    holds the timer this one does nothing (``busy``).  Otherwise (``playbook tick``) the day ``as_of`` is
    ticked again even when fired, changing nothing unless work came due since.  Idempotent.
    ``on_day`` is told each day committed; ``stopping`` is asked after each whether to stop there.
    """
    report = TickReport()
    if service and _fired_by(store, as_of):
        # the service checks every minute and nearly always finds the day done: a read, which waits for
        # no writer, says so without taking the write lock the webhooks' writer queues on
        return report
    while True:
        with store._begin() as conn:
            claimed = conn.execute(
                select(clock_timers.c.fired_as_of)
                .where(clock_timers.c.timer == TICK)
                .with_for_update(skip_locked=service)
            ).first()
            if claimed is None:  # held by another service process: it fires the day
                report.busy = True
                return report
            fired = None if claimed.fired_as_of is None else dt.date.fromisoformat(claimed.fired_as_of)
            if fired is not None and (fired > as_of or (service and fired == as_of)):
                return report  # that day is done (and time never moves back)
            if fired is None or fired >= as_of:
                day = as_of
            else:
                day = max(fired + dt.timedelta(days=1), as_of - dt.timedelta(days=CATCH_UP_DAYS - 1))
            _tick_day(store, conn, evaluator, day, who, report)
            conn.execute(
                update(clock_timers)
                .where(clock_timers.c.timer == TICK)
                .values(fired_as_of=day.isoformat(), fired_at=store.now(), fired_by=_who())
            )
        report.days.append(day.isoformat())
        if on_day is not None:
            on_day(day.isoformat())
        if day >= as_of or (stopping is not None and stopping()):
            return report


def _fired_by(store: Store, as_of: dt.date) -> bool:
    """Whether the timer has fired ``as_of`` or a later day (read without a lock: days fired only grow)."""
    with store._connect() as conn:
        fired = conn.execute(select(clock_timers.c.fired_as_of).where(clock_timers.c.timer == TICK)).scalar()
    return fired is not None and fired >= as_of.isoformat()


def _tick_day(
    store: Store, conn: Connection, evaluator: Evaluator | None, day: dt.date, who: str, report: TickReport
) -> None:
    # the evaluations' head locked: none comes between
    writer = Writer(conn, store._known_playbooks, store._sealing, store.clock, store.partitions)
    if evaluator is not None:
        playbook = evaluator.playbook
        sources = time_sources(playbook)
        if sources:
            for chunk in iter_chunks(_candidates(conn, day), _CHUNK):
                by_source: dict[str, list[Appended]] = {}
                for stored in _latest(conn, chunk):
                    if not _time_based(stored["facts"], sources):
                        continue
                    report.checked += 1
                    try:
                        result = evaluator.evaluate_case(stored["facts"], day, stored["case_id"])
                    except CaseError:
                        report.failed += 1
                        continue
                    if _changed(stored, result):
                        by_source.setdefault(stored["source"], []).append(Appended(result, stored["facts"]))
                for source, items in by_source.items():
                    writer.append(playbook, items, source=source, as_of=day)
                    report.reevaluated += len(items)
    counts = advance_book(writer.tasks, day, who=who)
    writer.finish()
    report.repeated += counts["repeated"]
    report.overdue += counts["overdue"]
    report.escalated += counts["escalated"]


def _candidates(conn: Connection, day: dt.date) -> list[int]:
    """The seqs of each open record's latest evaluation made before ``day`` (one made on it or after is current)."""
    cases = _open_cases(None)
    query = (
        select(evaluations.c.seq)
        .where(evaluations.c.seq.in_(select(cases.c.seq)), evaluations.c.as_of < day.isoformat())
        .order_by(evaluations.c.seq)
    )
    return [int(seq) for seq in conn.execute(query).scalars()]


def _latest(conn: Connection, seqs: list[int]) -> Iterator[dict[str, Any]]:
    actions: dict[int, list[tuple[str, str]]] = {seq: [] for seq in seqs}
    rows = conn.execute(
        select(recommendations.c.evaluation_seq, recommendations.c.action, recommendations.c.rule)
        .where(recommendations.c.evaluation_seq.in_(seqs))
        .order_by(recommendations.c.evaluation_seq, recommendations.c.position)
    )
    for rec in rows:
        actions[rec.evaluation_seq].append((rec.action, rec.rule))
    columns = (evaluations.c.seq, evaluations.c.source, evaluations.c.case_id, evaluations.c.facts)
    # in the log's order: the re-evaluations are filed in it (a view's join order is no order)
    latest = select(*columns, evaluations.c.decisions).where(evaluations.c.seq.in_(seqs)).order_by(evaluations.c.seq)
    for row in conn.execute(latest):
        yield {
            "seq": row.seq,
            "source": row.source,
            "case_id": row.case_id,
            "facts": json.loads(row.facts),
            "decisions": row.decisions,
            "actions": actions[row.seq],
        }


def _changed(stored: dict[str, Any], result: Result) -> bool:
    """Whether a decision or a recommended action (by which rule) differs from the stored evaluation's."""
    if [(r["id"], r["rule"]) for r in result.recommendations] != stored["actions"]:
        return True
    return canonical(json.loads(stored["decisions"])) != canonical(json.loads(canonical(result.decisions)))


class ServiceClock:
    """The tick inside ``playbook serve``: a thread that fires the day's tick once the day turns (local time, as
    ``--as-of`` defaults),
    checking every ``every`` seconds.  Any number of service processes may run one on a database: the
    timer's lock lets one fire each day.  An error is logged, never swallowed silently, and tried again at
    the next check; :meth:`stop` waits for a tick under way to commit."""

    def __init__(
        self,
        store: Store,
        evaluator: Evaluator,
        *,
        every: float = 60.0,
        today: Callable[[], dt.date] = dt.date.today,
    ) -> None:
        self.store = store
        self.evaluator = evaluator
        self.every = every
        self.today = today
        self.last: TickReport | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="playbook-clock", daemon=True)

    def start(self) -> ServiceClock:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def fire(self) -> TickReport:
        """One check: tick up to today unless it is done (or another process is doing it)."""
        report = tick(
            self.store, self.evaluator, self.today(), service=True, on_day=self._fired, stopping=self._stop.is_set
        )
        self.last = report
        return report

    def _fired(self, day: str) -> None:
        log.info("clock: ticked %s", day)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.fire()
            except Exception:
                log.exception("clock: the tick failed; it is tried again in %s s", self.every)
            self._stop.wait(self.every)
