"""The one writer of the audit log's partitions for the length of a transaction: evaluations appended,
records' states saved, events quarantined, the heads of the partitions written locked first."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from engine.errors import CaseError
from engine.evaluate import Result
from engine.model import Playbook
from engine.store.batch import _insert_many, key_among, key_lists
from engine.store.chain import (
    _compact,
    _evaluation_hash,
    _quarantined_hash,
    _record_change_hash,
    _Seal,
    _state_hash,
    canonical,
)
from engine.store.clock import Clock, stamp, utc_now
from engine.store.entries import Appended, Prepared, QuarantinedEvent, RecordState, _ids, _state_of, filed_record
from engine.store.partitions import ChainHeads, partition_of
from engine.store.schema import (
    PARTITIONED,
    LogTexts,
    chain_head,
    evaluation_row,
    evaluation_rows,
    evaluation_texts,
    insert_new_only,
    playbooks,
    quarantined_events,
    recommendation_row,
    recommendation_rows,
    record_changes,
    records,
)


def _rec_texts(rec: dict[str, Any]) -> tuple[str, str, str]:
    return (rec["action"], rec["rule"], rec["params"])


@functools.lru_cache(maxsize=4096)
def _params_text_of(items: tuple[tuple[str, type, Any], ...]) -> str:
    return canonical({name: value for name, _, value in items})


def _params_text(params: dict[str, Any]) -> str:
    """canonical(params), remembered: recommendations repeat the same few parameter sets.

    The key holds each value's type: 1, 1.0 and True are equal in Python but not in JSON.
    """
    try:
        return _params_text_of(tuple((name, type(value), value) for name, value in params.items()))
    except TypeError:  # a list among the values: not hashable, written out each time
        return canonical(params)


_TEXTS_KEPT = 4096
_fired_texts: dict[tuple[Any, ...], tuple[str, list[Any]]] = {}
_decisions_texts: dict[tuple[Any, ...], str] = {}


def _fired_text(result: Result) -> str:
    """The stored text of ``result.fired()``, remembered by the rows and rules each step chose: the cases
    of an import repeat a few dozen patterns (43 among 5,000 Maven deals), and building and encoding it
    was a tenth of a stored case's cost.

    Keyed by each step's plan object, by id: the entry keeps the plans, so no id is reused while it lives.
    """
    steps = [(plan, chosen) for plan, _, _, chosen, _, _ in result.steps if chosen]
    key = tuple([(id(plan), chosen) for plan, chosen in steps])
    known = _fired_texts.get(key)
    if known is None:
        if len(_fired_texts) >= _TEXTS_KEPT:
            _fired_texts.clear()
        known = _fired_texts[key] = (_compact(result.fired()), [plan for plan, _ in steps])
    return known[0]


def _decisions_text(decisions: dict[str, Any]) -> str:
    """``_compact(decisions)``, remembered: decisions take few distinct sets of values (29 among 5,000 Maven deals).

    The key holds each value's type, as :func:`_params_text`'s does.
    """
    try:
        key = (
            tuple(decisions),
            *[(type(v), tuple([(type(x), x) for x in v]) if type(v) is list else v) for v in decisions.values()],
        )
        known = _decisions_texts.get(key)
    except TypeError:  # a value that is not hashable even as a tuple: written out each time
        return _compact(decisions)
    if known is None:
        if len(_decisions_texts) >= _TEXTS_KEPT:
            _decisions_texts.clear()
        known = _decisions_texts[key] = _compact(decisions)
    return known


class Reading:
    """What a writer looks up before it writes: events already stored, records' states.  Read without
    a lock (:meth:`Store.reading`) it may change before the write; in a :class:`Writer`, it cannot."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._records_read: dict[tuple[str, str], bool] = {}  # (source, record) -> is it stored

    def _rows_among(self, column: Any, source: str, keys: Iterable[str], *also: Any) -> Iterator[Any]:
        """Rows (``column``, ``*also``) of ``source`` in ``column``'s table whose ``column`` is among ``keys``."""
        dialect = self.conn.dialect.name
        statement = _rows_among_statement(column, also, dialect)
        for chunk in key_lists(dialect, keys):
            yield from self.conn.execute(statement, {"source": source, "keys": chunk})

    def events_stored(self, source: str, event_ids: Iterable[str]) -> dict[str, int]:
        """Of these events of ``source``, those already evaluated, with their evaluation's number."""
        found = self._rows_among(evaluation_rows.c.event_id, source, event_ids, evaluation_rows.c.seq)
        return {row.event_id: int(row.seq) for row in found}

    def record_states(self, source: str, record_ids: Iterable[str]) -> dict[str, RecordState]:
        """These records' states (an empty one at version 0 for a record never stored)."""
        wanted = set(record_ids)
        others = [c for c in records.c if c.name != "record_id"]
        states = {
            row.record_id: _state_of(row) for row in self._rows_among(records.c.record_id, source, wanted, *others)
        }
        for record_id in wanted:
            self._records_read[(source, record_id)] = record_id in states
            states.setdefault(record_id, RecordState(source, record_id, {}, {}))
        return states


class Writer(Reading):
    """The writer of the audit log's partitions it holds for the length of a transaction (:meth:`Store.write`).

    On a log of one partition the heads of the chains it writes (evaluations, records' states,
    quarantined events, tasks) are locked first: SQLite takes its write lock at ``BEGIN IMMEDIATE``,
    PostgreSQL locks the head rows, and writers take turns.  On a
    partitioned log a writer locks the partitions of the records it names (:meth:`lock_records`),
    else all of them at its first write.  Either way, whatever is read here about a record whose
    partition is held (events stored, its state) stays true until the transaction ends, in this
    process and in any other sharing the database.
    """

    def __init__(
        self,
        conn: Connection,
        known_playbooks: set[str],
        sealing: Callable[[Connection], _Seal],
        clock: Clock = utc_now,
        partitions: int = 1,
        known_texts: dict[str, int] | None = None,
    ) -> None:
        super().__init__(conn)
        self._known_texts = known_texts
        self.now = stamp(clock())  # every row of the transaction is stamped with this one time
        self.playbooks_saved: set[str] = set()
        self._known_playbooks = known_playbooks
        self.partitions = partitions
        self.heads = ChainHeads(conn, partitions)
        self._sealing = sealing
        if partitions == 1:
            self.heads.lock_partitions([0])  # every chain it may write, in one statement

    @functools.cached_property
    def _seal(self) -> _Seal:
        """The seal links are made with: asked once a head is locked, so that a reseal cannot come between."""
        if not self.heads.held:
            self.heads.get("evaluations")
        return self._sealing(self.conn)

    def lock_records(self, keys: Iterable[tuple[str, str]]) -> int:
        """Lock the partitions of these (source, record) pairs, at once and in order; how many heads were
        locked now.  What is read of those records from then on stays true until the commit."""
        return self.heads.lock_partitions(partition_of(self.partitions, source, record) for source, record in keys)

    def append(self, playbook: Playbook, items: Sequence[Appended], *, source: str, as_of: dt.date) -> list[int]:
        """Add evaluations to the chain; return their sequence numbers.

        Items whose (source, import key) or (source, event id) is already stored are
        skipped (their place in the returned list is -1): a resumed import or a
        redelivered event never stores twice.
        """
        content_hash = playbook.content_hash
        if content_hash not in self._known_playbooks and content_hash not in self.playbooks_saved:
            _save_playbook(self.conn, playbook, self.now)
            self.playbooks_saved.add(content_hash)
        skip = self._already_stored(source, items)
        rows: list[dict[str, Any]] = []
        children: list[dict[str, Any]] = []
        seqs: list[int] = []
        heads, seal = self.heads, self._seal
        for i, item in enumerate(items):
            if i in skip:
                seqs.append(-1)
                continue
            partition = partition_of(self.partitions, source, filed_record(item))
            seq = heads.next_seq("evaluations", partition)
            row, recs = _evaluation_row(playbook, item, source, as_of, self.now, seq)
            row["prev_hash"] = prev = heads.get("evaluations", partition)[1]
            row["entry_hash"] = _evaluation_hash(seal, prev, row, recs)
            heads.advance("evaluations", partition, row["entry_hash"])
            rows.append(row)
            children.extend(recs)
            seqs.append(seq)
        if rows:
            texts = self.texts
            texts.store(
                [*{t for row in rows for t in evaluation_texts(row)}, *{t for rec in children for t in _rec_texts(rec)}]
            )
            _insert_many(self.conn, evaluation_rows, [evaluation_row(row, texts) for row in rows])
            if children:
                _insert_many(self.conn, recommendation_rows, [recommendation_row(rec, texts) for rec in children])
        self._follow(playbook, items, seqs, rows, source, as_of)
        return seqs

    def _follow(
        self,
        playbook: Playbook,
        items: Sequence[Appended],
        seqs: list[int],
        rows: list[dict[str, Any]],
        source: str,
        as_of: dt.date,
    ) -> None:
        """The evaluations' recommendations as tasks (engine/tasks.py), in this same transaction."""
        from engine.tasks import Followed, follow_evaluations

        stored = iter(rows)
        followed = []
        for item, seq in zip(items, seqs, strict=True):
            if seq < 0:
                continue
            row = next(stored)
            record = row["record_id"] if row["record_id"] is not None else row["case_id"]
            if isinstance(item.outcome, Result):
                followed.append(Followed(seq, record, item.facts, item.outcome.recommendations))
            elif isinstance(item.outcome, Prepared) and item.outcome.status == "ok":
                advised = [{"id": action, "rule": rule} for action, rule, _ in item.outcome.recommendations]
                followed.append(Followed(seq, record, item.facts, advised))
        follow_evaluations(self.tasks, playbook, source, as_of, followed)

    @functools.cached_property
    def texts(self) -> LogTexts:
        """The numbers of the log's texts: those committed before (shared by the store), those stored now."""
        return LogTexts(self.conn, self._known_texts)

    @functools.cached_property
    def tasks(self) -> Any:
        """The moves of tasks made in this transaction (an engine.tasks.TaskBook), their chain locked at the first."""
        from engine.tasks import TaskBook

        return TaskBook(self.conn, self._seal, self.now, heads=self.heads)

    def _already_stored(self, source: str, items: Sequence[Appended]) -> set[int]:
        skip: set[int] = set()
        for column, attr in ((evaluation_rows.c.import_key, "import_key"), (evaluation_rows.c.event_id, "event_id")):
            keys = [getattr(item, attr) for item in items if getattr(item, attr) is not None]
            if not keys:
                continue
            found = {row[0] for row in self._rows_among(column, source, keys)}
            seen: set[str] = set()
            for i, item in enumerate(items):
                key = getattr(item, attr)
                if key is not None and (key in found or key in seen):
                    skip.add(i)
                if key is not None:
                    seen.add(key)
        return skip

    def save_records(self, states: Iterable[RecordState]) -> None:
        """Save records' new states, each read by :meth:`record_states` in this same transaction."""
        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        links: list[dict[str, Any]] = []
        for state in states:
            key = (state.source, state.record_id)
            if key not in self._records_read:
                raise ValueError(f"record {state.record_id} of {state.source} was not read in this transaction")
            values = {
                "fields": canonical(state.fields),
                "stamps": canonical(state.stamps),
                "deleted": state.deleted,
                "version": state.version,
                "updated_at": self.now,
                "last_event_id": state.last_event_id,
            }
            partition = partition_of(self.partitions, state.source, state.record_id)
            link: dict[str, Any] = {
                "seq": self.heads.next_seq("records", partition),
                "source": state.source,
                "record_id": state.record_id,
                "version": state.version,
                "state_hash": _state_hash({"source": state.source, "record_id": state.record_id, **values}),
                "prev_hash": self.heads.get("records", partition)[1],
            }
            link["entry_hash"] = entry_hash = _record_change_hash(self._seal, link["prev_hash"], link)
            self.heads.advance("records", partition, entry_hash)
            links.append(link)
            if self._records_read[key]:
                updates.append({"b_source": state.source, "b_record_id": state.record_id, **values})
            else:
                inserts.append({"source": state.source, "record_id": state.record_id, **values})
                self._records_read[key] = True
        if inserts:
            _insert_many(self.conn, records, inserts)
        if updates:
            self.conn.execute(_UPDATE_RECORD, updates)
        if links:
            _insert_many(self.conn, record_changes, links)

    def quarantine(self, events: Sequence[QuarantinedEvent]) -> list[int]:
        """Keep events set aside as bad data; return their numbers (-1 for one of an event already kept).

        An event is kept once per source: redelivered, it is answered again but not stored again.
        """
        seqs = [-1] * len(events)
        by_source: dict[str, list[int]] = {}
        for i, quarantined in enumerate(events):
            by_source.setdefault(quarantined.source, []).append(i)
        fresh: list[int] = []
        for source, positions in by_source.items():
            ids = {events[i].event_id for i in positions}
            kept = {row[0] for row in self._rows_among(quarantined_events.c.event_id, source, ids)}
            for i in positions:
                if events[i].event_id not in kept:
                    kept.add(events[i].event_id)
                    fresh.append(i)
        if not fresh:
            return seqs
        rows: list[dict[str, Any]] = []
        for i in sorted(fresh):
            quarantined = events[i]
            partition = partition_of(self.partitions, quarantined.source, quarantined.record_id or quarantined.event_id)
            row: dict[str, Any] = {
                "seq": self.heads.next_seq("quarantined", partition),
                "received_at": quarantined.received_at,
                "source": quarantined.source,
                "event_id": quarantined.event_id,
                "record_id": quarantined.record_id,
                "code": quarantined.code,
                "reason": quarantined.reason,
                "event": canonical(quarantined.event),
            }
            row["prev_hash"] = self.heads.get("quarantined", partition)[1]
            row["entry_hash"] = _quarantined_hash(self._seal, row["prev_hash"], row)
            seqs[i] = self.heads.advance("quarantined", partition, row["entry_hash"])
            rows.append(row)
        _insert_many(self.conn, quarantined_events, rows)
        self._close_tasks([events[i] for i in sorted(fresh)])
        return seqs

    def _close_tasks(self, kept: Sequence[QuarantinedEvent]) -> None:
        """A closed deal's event cancels its record's tasks (engine/tasks.py)."""
        from engine.tasks import CLOSING_CODES, close_records

        by_source: dict[str, dict[str, str]] = {}
        for event_ in kept:
            if event_.code in CLOSING_CODES and event_.record_id is not None:
                by_source.setdefault(event_.source, {})[event_.record_id] = event_.reason
        for source, closed in by_source.items():
            close_records(self.tasks, source, closed, self.now[:10])

    def finish(self) -> None:
        """Move the chain heads to the last link appended (evaluations, records' states, quarantined events,
        tasks moved), in one statement; called just before the commit."""
        if "tasks" in self.__dict__:
            self.tasks.finish()
        self.heads.save(PARTITIONED)


@functools.lru_cache(maxsize=8)
def _rows_among_statement(column: Any, also: tuple[Any, ...], dialect: str) -> Any:
    # Built once: building a statement costs more than running it on a small batch.
    return select(column, *also).where(column.table.c.source == bindparam("source"), key_among(column, dialect))


_UPDATE_RECORD = update(records).where(
    records.c.source == bindparam("b_source"), records.c.record_id == bindparam("b_record_id")
)


def _lock_head(conn: Connection, chain: str) -> tuple[int, str]:
    row = conn.execute(
        select(chain_head.c.seq, chain_head.c.hash).where(chain_head.c.chain == chain).with_for_update()
    ).one()
    return int(row.seq), str(row.hash)


def _save_playbook(conn: Connection, playbook: Playbook, now: str) -> None:
    known = conn.execute(select(playbooks.c.hash).where(playbooks.c.hash == playbook.content_hash)).first()
    if known is None:
        row = {
            "hash": playbook.content_hash,
            "playbook_id": playbook.id,
            "version": playbook.version,
            "text": playbook.text,
            "first_used": now,
        }
        # Writers of different partitions may both find it new: the first one's row stands.
        conn.execute(insert_new_only(conn, playbooks), [row])


def prepare(item: Appended) -> Prepared:
    """The texts ``item`` is stored with, whatever its sequence number, source and time."""
    outcome = item.outcome
    if isinstance(outcome, Prepared):
        return outcome
    record_id, account_id = _ids(item.facts)
    facts = _compact(item.facts)
    if isinstance(outcome, CaseError):
        error = canonical({"code": outcome.code, "message": outcome.message})
        return Prepared(outcome.case_id, "error", record_id, account_id, facts, "{}", "{}", error, ())
    return Prepared(
        outcome.case,
        "ok",
        record_id,
        account_id,
        facts,
        _decisions_text(outcome.decisions),
        _fired_text(outcome),
        "",
        tuple((rec["id"], rec["rule"], _params_text(rec["params"])) for rec in outcome.recommendations),
    )


def _evaluation_row(
    playbook: Playbook, item: Appended, source: str, as_of: dt.date, now: str, seq: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    prepared = prepare(item)
    row: dict[str, Any] = {
        "seq": seq,
        "created_at": now,
        "as_of": as_of.isoformat(),
        "playbook_hash": playbook.content_hash,
        "playbook_id": playbook.id,
        "playbook_version": playbook.version,
        "source": source,
        "record_id": prepared.record_id,
        "account_id": prepared.account_id,
        "event_id": item.event_id,
        "import_key": item.import_key,
        "facts": prepared.facts,
        "case_id": prepared.case_id,
        "status": prepared.status,
        "decisions": prepared.decisions,
        "fired": prepared.fired,
        "no_action": not prepared.recommendations,
        "error": prepared.error,
    }
    recs = [
        {"evaluation_seq": seq, "position": k, "action": action, "rule": rule, "params": params}
        for k, (action, rule, params) in enumerate(prepared.recommendations)
    ]
    return row, recs
