"""The audit log: every evaluation kept, append-only and hash-chained, under the playbook version that made it.

SQLite by default (WAL, ``BEGIN IMMEDIATE`` for every transaction), PostgreSQL by
URL.  All SQL goes through SQLAlchemy Core with bound parameters.

What is stored per evaluation: when, ``as_of``, the playbook (id, version, content
hash; its text is stored once by hash), where the case came from (source, record,
account, event, import key), the case's facts as given, every decision, the rows
chosen and rules fired, the recommendations (one row each, for filtering and
outcomes) and whether nothing was recommended; or, for a case that failed, its
error.  The values each row read are the stored facts and decisions: ``why``
re-evaluates them under the stored playbook text and checks that it fires what
was stored before explaining it.

Records that CRMs change piece by piece (webhooks) keep their last known state in
``records`` (schema version 3): the fields, when each was last set, and how many
times it changed.  They are read and saved inside a :class:`Writer`'s transaction,
with the evaluations made from them, so neither is ever stored without the other.

Events set aside as bad data (a webhook's record that maps to no case: a closed deal, a
missing amount) are kept in ``quarantined_events`` (schema version 4), each with its
source, event and record ids, when it was received, the code and reason, and the event
itself; an event redelivered is kept once.

Each evaluation's hash covers its content and the previous evaluation's hash;
``chain_head`` holds the last one.  Appends lock the head, so writers are
serialised and sequence numbers have no gaps.  Outcomes and quarantined events have
a chain each of their own.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import make_url

from engine.errors import CaseError
from engine.evaluate import Result
from engine.model import Playbook

__all__ = [
    "DEFAULT_URL",
    "SCHEMA_VERSION",
    "Appended",
    "ChainProblem",
    "NoAuditLog",
    "QuarantinedEvent",
    "RecordState",
    "Store",
    "StoredEvaluation",
    "Writer",
    "backup_sqlite",
    "canonical",
    "iter_chunks",
    "oversized_id",
]

DEFAULT_URL = "sqlite:///playbook.db"
SCHEMA_VERSION = 4
GENESIS = "0" * 64
_SCHEMA_LOCK = 0x706C6179626F6F6B  # PostgreSQL advisory lock held while the schema is made: "playbook"
OUTCOME_STATUSES = ("accepted", "dismissed", "done")
ID_LENGTH = 500  # characters of the ids evaluations and records are filed under (PostgreSQL enforces it)

metadata = MetaData()

meta = Table("meta", metadata, Column("key", String(64), primary_key=True), Column("value", Text, nullable=False))

playbooks = Table(
    "playbooks",
    metadata,
    Column("hash", String(64), primary_key=True),
    Column("playbook_id", String(200), nullable=False),
    Column("version", String(200), nullable=False),
    Column("text", Text, nullable=False),
    Column("first_used", String(40), nullable=False),
)

chain_head = Table(
    "chain_head",
    metadata,
    Column("chain", String(32), primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("hash", String(64), nullable=False),
)

evaluations = Table(
    "evaluations",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("created_at", String(40), nullable=False),
    Column("as_of", String(10), nullable=False),
    Column("playbook_hash", String(64), ForeignKey("playbooks.hash"), nullable=False),
    Column("playbook_id", String(200), nullable=False),
    Column("playbook_version", String(200), nullable=False),
    Column("source", String(200), nullable=False),
    Column("case_id", String(ID_LENGTH), nullable=False),
    Column("record_id", String(ID_LENGTH)),
    Column("account_id", String(ID_LENGTH)),
    Column("event_id", String(ID_LENGTH)),
    Column("import_key", String(ID_LENGTH)),
    Column("status", String(10), nullable=False),  # ok | error
    Column("facts", Text, nullable=False),
    Column("decisions", Text, nullable=False),
    Column("fired", Text, nullable=False),
    Column("no_action", Boolean, nullable=False),
    Column("error", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("entry_hash", String(64), nullable=False),
    UniqueConstraint("source", "import_key", name="uq_evaluations_import"),
    UniqueConstraint("source", "event_id", name="uq_evaluations_event"),
)
Index("ix_evaluations_record", evaluations.c.record_id)
Index("ix_evaluations_account", evaluations.c.account_id)
Index("ix_evaluations_as_of", evaluations.c.as_of)

recommendations = Table(
    "recommendations",
    metadata,
    Column("evaluation_seq", Integer, ForeignKey("evaluations.seq"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("action", String(200), nullable=False),
    Column("rule", String(200), nullable=False),
    Column("params", Text, nullable=False),
    # Clustered by evaluation: one B-tree to write per row, which is most of an import's cost.
    # Listing by action or rule reads the table through (an audit query, not a hot path).
    sqlite_with_rowid=False,
)

# Schema version 2 added outcomes.
outcomes = Table(
    "outcomes",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("evaluation_seq", Integer, ForeignKey("evaluations.seq"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("action", String(200), nullable=False),
    Column("status", String(20), nullable=False),
    Column("who", String(200), nullable=False),
    Column("why", Text, nullable=False),
    Column("at", String(40), nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("entry_hash", String(64), nullable=False),
)
Index("ix_outcomes_evaluation", outcomes.c.evaluation_seq)

# Schema version 3 added records: the last known state of each record that webhooks change piece by piece.
records = Table(
    "records",
    metadata,
    Column("source", String(200), primary_key=True),
    Column("record_id", String(ID_LENGTH), primary_key=True),
    Column("fields", Text, nullable=False),  # canonical JSON: CRM field -> value
    Column("stamps", Text, nullable=False),  # canonical JSON: CRM field -> when it was set (ms since 1970)
    Column("deleted", Boolean, nullable=False),
    Column("version", Integer, nullable=False),  # 1 when first saved, one more at each save
    Column("updated_at", String(40), nullable=False),
    Column("last_event_id", String(ID_LENGTH)),
)

# Schema version 4 added quarantined events: what was set aside as bad data, and why.
quarantined_events = Table(
    "quarantined_events",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("received_at", String(40), nullable=False),
    Column("source", String(200), nullable=False),
    Column("event_id", String(ID_LENGTH), nullable=False),
    Column("record_id", String(ID_LENGTH)),
    Column("code", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Column("event", Text, nullable=False),  # canonical JSON: the event as received (its fields, change, time)
    Column("prev_hash", String(64), nullable=False),
    Column("entry_hash", String(64), nullable=False),
    UniqueConstraint("source", "event_id", name="uq_quarantined_event"),
)
Index("ix_quarantined_received", quarantined_events.c.received_at)

_TABLES_BY_VERSION = {
    1: [meta, playbooks, chain_head, evaluations, recommendations],
    2: [outcomes],
    3: [records],
    4: [quarantined_events],
}
CHAINS = ("evaluations", "outcomes", "quarantined")  # chain_head's rows


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical(value: Any) -> str:
    """The one JSON text of a value: sorted keys, no spaces, UTF-8 kept."""
    return _CANONICAL.encode(value)


# The big per-case columns keep their keys' order (the mapping's and the playbook's, both fixed):
# they are hashed as stored, so they need no sorting, which costs a third of their encoding.
_compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


_EVALUATION_FIELDS = (
    "seq",
    "created_at",
    "as_of",
    "playbook_hash",
    "playbook_id",
    "playbook_version",
    "source",
    "case_id",
    "record_id",
    "account_id",
    "event_id",
    "import_key",
    "status",
    "facts",
    "decisions",
    "fired",
    "no_action",
    "error",
)
_OUTCOME_FIELDS = ("seq", "evaluation_seq", "position", "action", "status", "who", "why", "at")
_QUARANTINED_FIELDS = ("seq", "received_at", "source", "event_id", "record_id", "code", "reason", "event")
_RECOMMENDATION_FIELDS = ("position", "action", "rule", "params")


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


@functools.lru_cache(maxsize=16)
def _insert_statement(table: Table, dialect: Any) -> tuple[str, tuple[str, ...] | None]:
    compiled = insert(table).compile(dialect=dialect)
    return str(compiled), tuple(compiled.positiontup) if compiled.positional and compiled.positiontup else None


def _insert_many(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert rows with one prepared statement through the driver, parameters still bound.

    The statement is SQLAlchemy's own for the table; passing the rows straight to the driver skips
    SQLAlchemy's per-row parameter processing, a tenth of an import's time.  Values are plain
    text, integers and booleans, which every driver binds as they are.
    """
    statement, order = _insert_statement(table, conn.dialect)
    if order is None:
        conn.exec_driver_sql(statement, rows)  # named parameters: the dicts as they are
    else:
        conn.exec_driver_sql(statement, [tuple(row[name] for name in order) for row in rows])


def _hashed(prev_hash: str, fields: Sequence[Any], children: Sequence[Sequence[Any]] = ()) -> str:
    body = canonical([list(fields), [list(c) for c in children]])
    return hashlib.sha256(f"{prev_hash}{body}".encode()).hexdigest()


_JSON_FIELDS = ("facts", "decisions", "fired", "error")
_PLAIN_FIELDS = tuple(f for f in _EVALUATION_FIELDS if f not in _JSON_FIELDS)


def _evaluation_hash(prev_hash: str, row: dict[str, Any], recs: Sequence[dict[str, Any]]) -> str:
    # The JSON columns are hashed as the text they are stored as, joined by a separator no JSON text
    # holds raw (U+001E); encoding them again inside one JSON document was the import's largest cost.
    # Values are normalised as the database gives them back (SQLite has no booleans).
    plain = [bool(row[f]) if f == "no_action" else row[f] for f in _PLAIN_FIELDS]
    children = [[rec["position"], rec["action"], rec["rule"]] for rec in recs]
    body = "\x1e".join(
        [canonical([plain, children]), *(row[f] for f in _JSON_FIELDS), *(rec["params"] for rec in recs)]
    )
    return hashlib.sha256(f"{prev_hash}{body}".encode()).hexdigest()


def _outcome_hash(prev_hash: str, row: dict[str, Any]) -> str:
    return _hashed(prev_hash, [row[f] for f in _OUTCOME_FIELDS])


def _quarantined_hash(prev_hash: str, row: dict[str, Any]) -> str:
    return _hashed(prev_hash, [row[f] for f in _QUARANTINED_FIELDS])


@dataclass(frozen=True)
class StoredEvaluation:
    seq: int
    created_at: str
    as_of: str
    playbook_hash: str
    playbook_id: str
    playbook_version: str
    source: str
    case_id: str
    record_id: str | None
    account_id: str | None
    event_id: str | None
    import_key: str | None
    status: str
    facts: dict[str, Any]
    decisions: dict[str, Any]
    fired: dict[str, list[str]]
    no_action: bool
    error: dict[str, str] | None
    recommendations: list[dict[str, Any]]
    outcomes: list[dict[str, Any]] = field(default_factory=list)  # what became of the recommendations, in order

    def to_json(self) -> dict[str, Any]:
        """The evaluation as stored, each recommendation with its state: its latest outcome's status, else open."""
        states = {done["position"]: done["status"] for done in self.outcomes}  # in order: the latest wins
        return {
            "evaluation": self.seq,
            "created_at": self.created_at,
            "as_of": self.as_of,
            "playbook": {"id": self.playbook_id, "version": self.playbook_version, "hash": self.playbook_hash},
            "source": self.source,
            "case": self.case_id,
            "record_id": self.record_id,
            "account_id": self.account_id,
            "event_id": self.event_id,
            "status": self.status,
            "decisions": self.decisions,
            "recommendations": [{**rec, "state": states.get(rec["position"], "open")} for rec in self.recommendations],
            "no_action": self.no_action,
            "error": self.error,
            "outcomes": self.outcomes,
        }


@dataclass(frozen=True)
class QuarantinedEvent:
    """An event set aside as bad data: given to :meth:`Writer.quarantine`, read back by :meth:`Store.quarantined`."""

    source: str
    event_id: str
    record_id: str | None
    received_at: str  # ISO 8601, UTC
    code: str
    reason: str
    event: dict[str, Any]  # the event as received
    seq: int | None = None  # its place in the chain, once stored

    def to_json(self) -> dict[str, Any]:
        return {
            "quarantined": self.seq,
            "received_at": self.received_at,
            "source": self.source,
            "event_id": self.event_id,
            "record_id": self.record_id,
            "code": self.code,
            "reason": self.reason,
            "event": self.event,
        }


@dataclass(frozen=True)
class ChainProblem:
    chain: str  # evaluations | outcomes | quarantined
    seq: int
    kind: str  # edited | deleted | inserted | broken_link
    message: str

    def __str__(self) -> str:
        return f"{self.chain} #{self.seq}: {self.kind}: {self.message}"


@dataclass(frozen=True)
class RecordState:
    """The last known state of one record that events change piece by piece.

    ``version`` counts the changes saved (0: never stored); ``last_event_id`` is the event that
    made the last one.  States are read and saved through a :class:`Writer`.
    """

    source: str
    record_id: str
    fields: dict[str, Any]
    stamps: dict[str, int]
    deleted: bool = False
    version: int = 0
    updated_at: str | None = None
    last_event_id: str | None = None


@dataclass(frozen=True)
class Appended:
    """One case given to :meth:`Writer.append`: its result or error, and where it came from."""

    outcome: Result | CaseError
    facts: dict[str, Any]
    import_key: str | None = None
    event_id: str | None = None


def _ids(facts: dict[str, Any]) -> tuple[str | None, str | None]:
    opportunity: dict[str, Any] = facts["opportunity"] if isinstance(facts.get("opportunity"), dict) else {}
    account: dict[str, Any] = facts["account"] if isinstance(facts.get("account"), dict) else {}
    record = opportunity.get("id") or account.get("id")
    account_id = opportunity.get("account_id") or account.get("id")
    return (str(record) if record is not None else None, str(account_id) if account_id is not None else None)


def oversized_id(case_id: str, facts: dict[str, Any]) -> str | None:
    """Why a case cannot be filed under its ids (one is over ID_LENGTH characters), or None when all fit."""
    record_id, account_id = _ids(facts)
    for what, value in (("case id", case_id), ("record id", record_id), ("account id", account_id)):
        if value is not None and len(value) > ID_LENGTH:
            return f"the {what} '{value[:40]}...' is over {ID_LENGTH} characters, more than the audit log files"
    return None


class NoAuditLog(LookupError):
    """The database opened to be read holds no audit log (a SQLite file that does not exist: none is made)."""


class Store:
    """An audit log in one database.  Open with a SQLAlchemy URL; the schema is created or upgraded.

    ``create`` False: the log must exist already (commands that only read it); else :class:`NoAuditLog`.
    """

    def __init__(self, url: str = DEFAULT_URL, *, create: bool = True) -> None:
        if url.startswith(("postgresql://", "postgres://")):  # the driver installed with the postgres extra
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        self.url = url
        if not create:
            sqlite_file = sqlite_path(url)
            if sqlite_file is not None and not sqlite_file.exists():
                raise NoAuditLog(f"there is no audit log at {url}: {sqlite_file} does not exist")
        self.engine: Engine = self._make_engine(url)
        if not create and self.schema_version() == 0:
            self.engine.dispose()
            raise NoAuditLog(f"{url} holds no audit log")
        # SQLite lets one writer in at a time and makes the others sleep and retry, with growing
        # sleeps: threads of one process queue on this lock instead (webhook p99 at 8 clients: 158 ms
        # with 4 workers, 41 ms with 1).  PostgreSQL serialises appends on the chain head row itself.
        self._queue: AbstractContextManager[Any] = (
            threading.RLock() if self.engine.dialect.name == "sqlite" else contextlib.nullcontext()
        )
        self._known_playbooks: set[str] = set()  # stored playbook versions, to skip the look-up per append
        self.upgrade()

    @contextlib.contextmanager
    def _begin(self) -> Iterator[Connection]:
        """A write transaction: on SQLite ``BEGIN IMMEDIATE``, one writer at a time."""
        with self._queue, self.engine.connect() as conn:
            conn.execution_options(playbook_write=True)
            with conn.begin():
                yield conn

    @contextlib.contextmanager
    def _connect(self) -> Iterator[Connection]:
        """A read: on SQLite a deferred transaction, which in WAL mode waits for no writer."""
        with self.engine.connect() as conn:
            yield conn

    @staticmethod
    def _make_engine(url: str) -> Engine:
        parsed = make_url(url)
        if parsed.get_backend_name() != "sqlite":
            return create_engine(url, pool_pre_ping=True)
        engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            # Writers take the write lock at once, so that checks made inside see a settled log;
            # readers see a snapshot and never wait.
            writes = conn.get_execution_options().get("playbook_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")

        return engine

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema ------------------------------------------------------------------

    def schema_version(self) -> int:
        if not inspect(self.engine).has_table("meta"):
            return 0
        with self._connect() as conn:
            value = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
        return int(value) if value is not None else 0

    def upgrade(self) -> None:
        """Create the schema, or bring an older one up to SCHEMA_VERSION in place."""
        with self._begin() as conn:
            if conn.dialect.name == "postgresql":
                # programs started at once on a fresh database would race on CREATE TABLE: one at a
                # time, each seeing what the one before it made (SQLite's BEGIN IMMEDIATE does this)
                conn.execute(select(func.pg_advisory_xact_lock(_SCHEMA_LOCK)))
            current = 0
            if inspect(conn).has_table("meta"):
                value = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
                current = int(value) if value is not None else 0
            if current > SCHEMA_VERSION:
                raise RuntimeError(
                    f"the database has schema version {current}; this program knows up to {SCHEMA_VERSION}"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                metadata.create_all(conn, tables=_TABLES_BY_VERSION[version])
                if version == 1:
                    conn.execute(insert(chain_head), [{"chain": "evaluations", "seq": 0, "hash": GENESIS}])
                if version == 2:
                    conn.execute(insert(chain_head), [{"chain": "outcomes", "seq": 0, "hash": GENESIS}])
                if version == 4:
                    conn.execute(insert(chain_head), [{"chain": "quarantined", "seq": 0, "hash": GENESIS}])
                if current == 0 and version == 1:
                    conn.execute(insert(meta), [{"key": "schema_version", "value": "1"}])
                conn.execute(update(meta).where(meta.c.key == "schema_version").values(value=str(version)))

    # -- writing -----------------------------------------------------------------

    @contextlib.contextmanager
    def write(self) -> Iterator[Writer]:
        """One write transaction, the evaluations chain's head locked: it all commits, or none of it."""
        with self._begin() as conn:
            writer = Writer(conn, self._known_playbooks)
            yield writer
            writer.finish()
        self._known_playbooks |= writer.playbooks_saved  # committed: playbook rows are never removed

    def append(self, playbook: Playbook, items: Sequence[Appended], *, source: str, as_of: dt.date) -> list[int]:
        """Store a batch of evaluations in one transaction; see :meth:`Writer.append`."""
        if not items:
            return []
        with self.write() as writer:
            return writer.append(playbook, items, source=source, as_of=as_of)

    def record_state(self, source: str, record_id: str) -> RecordState:
        """The last known state of a record; an empty one at version 0 when none is stored."""
        with self._connect() as conn:
            row = conn.execute(
                select(records).where(records.c.source == source, records.c.record_id == record_id)
            ).first()
        return RecordState(source, record_id, {}, {}) if row is None else _state_of(row)

    # -- outcomes -----------------------------------------------------------------

    def record_outcome(self, evaluation_seq: int, action: str, status: str, who: str, why: str) -> int:
        """Mark a recommendation accepted, dismissed or done; outcomes are kept as history."""
        if status not in OUTCOME_STATUSES:
            raise ValueError(f"status must be one of {', '.join(OUTCOME_STATUSES)}, not '{status}'")
        with self._begin() as conn:
            recs = conn.execute(
                select(recommendations.c.position, recommendations.c.action)
                .where(recommendations.c.evaluation_seq == evaluation_seq)
                .order_by(recommendations.c.position)
            ).all()
            matching = [r for r in recs if r.action == action or str(r.position) == action]
            if not matching:
                offered = ", ".join(r.action for r in recs) or "nothing"
                raise LookupError(
                    f"evaluation {evaluation_seq} did not recommend '{action}' (it recommended: {offered})"
                )
            seq, prev = _lock_head(conn, "outcomes")
            seq += 1
            row = {
                "seq": seq,
                "evaluation_seq": evaluation_seq,
                "position": matching[0].position,
                "action": matching[0].action,
                "status": status,
                "who": who,
                "why": why,
                "at": _now(),
            }
            row["prev_hash"] = prev
            row["entry_hash"] = _outcome_hash(prev, row)
            conn.execute(insert(outcomes), [row])
            conn.execute(
                update(chain_head).where(chain_head.c.chain == "outcomes").values(seq=seq, hash=row["entry_hash"])
            )
        return seq

    # -- reading -----------------------------------------------------------------

    def stored_imports(self, source: str, prefix: str) -> dict[str, int]:
        """The import keys of ``source`` that start with ``prefix``, each with its evaluation's number."""
        with self._connect() as conn:
            rows = conn.execute(
                select(evaluations.c.import_key, evaluations.c.seq).where(
                    evaluations.c.source == source, evaluations.c.import_key.startswith(prefix, autoescape=True)
                )
            )
            return {row.import_key: int(row.seq) for row in rows}

    def playbook_text(self, content_hash: str) -> str:
        with self._connect() as conn:
            value = conn.execute(select(playbooks.c.text).where(playbooks.c.hash == content_hash)).scalar()
        if value is None:
            raise LookupError(f"no playbook with hash {content_hash}")
        return str(value)

    def _stored(self, conn: Connection, rows: Sequence[Any]) -> list[StoredEvaluation]:
        seqs = [row.seq for row in rows]
        recs: dict[int, list[dict[str, Any]]] = {seq: [] for seq in seqs}
        done: dict[int, list[dict[str, Any]]] = {seq: [] for seq in seqs}
        for chunk in iter_chunks(seqs, 500):
            for rec in conn.execute(
                select(recommendations)
                .where(recommendations.c.evaluation_seq.in_(chunk))
                .order_by(recommendations.c.evaluation_seq, recommendations.c.position)
            ):
                recs[rec.evaluation_seq].append(
                    {"position": rec.position, "id": rec.action, "rule": rec.rule, "params": json.loads(rec.params)}
                )
            for row in conn.execute(
                select(outcomes).where(outcomes.c.evaluation_seq.in_(chunk)).order_by(outcomes.c.seq)
            ):
                done[row.evaluation_seq].append(_outcome_of(row))
        return [
            StoredEvaluation(
                seq=row.seq,
                created_at=row.created_at,
                as_of=row.as_of,
                playbook_hash=row.playbook_hash,
                playbook_id=row.playbook_id,
                playbook_version=row.playbook_version,
                source=row.source,
                case_id=row.case_id,
                record_id=row.record_id,
                account_id=row.account_id,
                event_id=row.event_id,
                import_key=row.import_key,
                status=row.status,
                facts=json.loads(row.facts),
                decisions=json.loads(row.decisions),
                fired=json.loads(row.fired),
                no_action=bool(row.no_action),
                error=json.loads(row.error) if row.error else None,
                recommendations=recs[row.seq],
                outcomes=done[row.seq],
            )
            for row in rows
        ]

    def get(self, seq: int) -> StoredEvaluation:
        with self._connect() as conn:
            row = conn.execute(select(evaluations).where(evaluations.c.seq == seq)).first()
            if row is None:
                raise LookupError(f"no evaluation {seq}")
            return self._stored(conn, [row])[0]

    def get_many(self, seqs: Sequence[int]) -> list[StoredEvaluation]:
        """These evaluations, in the order given (each must exist)."""
        found: dict[int, StoredEvaluation] = {}
        with self._connect() as conn:
            for chunk in iter_chunks(seqs, 500):
                rows = conn.execute(select(evaluations).where(evaluations.c.seq.in_(chunk))).all()
                found.update((stored.seq, stored) for stored in self._stored(conn, rows))
        missing = [seq for seq in seqs if seq not in found]
        if missing:
            raise LookupError(f"no evaluation {missing[0]}")
        return [found[seq] for seq in seqs]

    def search(
        self,
        *,
        record_id: str | None = None,
        account_id: str | None = None,
        action: str | None = None,
        rule: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int | None = None,
        latest_per_record: bool = False,
    ) -> Iterator[StoredEvaluation]:
        """Evaluations in sequence order, filtered; ``since``/``until`` compare ``as_of`` (inclusive).

        ``latest_per_record``: only each record's newest evaluation (a record is its record id, else
        its case id), before the other filters apply.
        """
        query = select(evaluations).order_by(evaluations.c.seq)
        if latest_per_record:
            record = func.coalesce(evaluations.c.record_id, evaluations.c.case_id)
            query = query.where(evaluations.c.seq.in_(select(func.max(evaluations.c.seq)).group_by(record)))
        if record_id is not None:
            query = query.where(evaluations.c.record_id == record_id)
        if account_id is not None:
            query = query.where(evaluations.c.account_id == account_id)
        if since is not None:
            query = query.where(evaluations.c.as_of >= since)
        if until is not None:
            query = query.where(evaluations.c.as_of <= until)
        if action is not None:
            query = query.where(
                evaluations.c.seq.in_(
                    select(recommendations.c.evaluation_seq).where(recommendations.c.action == action)
                )
            )
        if rule is not None:
            # a rule fired if it recommended something, or is listed in the fired rules
            query = query.where(
                evaluations.c.seq.in_(select(recommendations.c.evaluation_seq).where(recommendations.c.rule == rule))
                | evaluations.c.fired.contains(f'"{rule}"', autoescape=True)
            )
        if limit is not None:
            query = query.limit(limit)
        with self._connect() as conn:
            result = conn.execution_options(yield_per=500).execute(query)
            for chunk in result.partitions():
                for stored in self._stored(conn, chunk):
                    if (
                        rule is None
                        or rule in stored.fired.get("$rules", [])
                        or any(r["rule"] == rule for r in stored.recommendations)
                    ):
                        yield stored

    def outcomes_of(self, evaluation_seq: int) -> list[dict[str, Any]]:
        with self._connect() as conn:
            rows = conn.execute(
                select(outcomes).where(outcomes.c.evaluation_seq == evaluation_seq).order_by(outcomes.c.seq)
            )
            return [_outcome_of(r) for r in rows]

    def quarantined(
        self,
        *,
        source: str | None = None,
        since: str | None = None,
        until: str | None = None,
        after: int = 0,
        limit: int | None = None,
    ) -> Iterator[QuarantinedEvent]:
        """Quarantined events in the order they were kept, numbered above ``after``; ``since``/``until``
        compare the day received (inclusive)."""
        query = select(quarantined_events).where(quarantined_events.c.seq > after).order_by(quarantined_events.c.seq)
        day = func.substr(quarantined_events.c.received_at, 1, 10)
        if source is not None:
            query = query.where(quarantined_events.c.source == source)
        if since is not None:
            query = query.where(day >= since)
        if until is not None:
            query = query.where(day <= until)
        if limit is not None:
            query = query.limit(limit)
        with self._connect() as conn:
            for row in conn.execution_options(yield_per=500).execute(query):
                yield QuarantinedEvent(
                    source=row.source,
                    event_id=row.event_id,
                    record_id=row.record_id,
                    received_at=row.received_at,
                    code=row.code,
                    reason=row.reason,
                    event=json.loads(row.event),
                    seq=row.seq,
                )

    def count(self) -> int:
        with self._connect() as conn:
            return int(conn.execute(select(chain_head.c.seq).where(chain_head.c.chain == "evaluations")).scalar_one())

    # -- tamper evidence ---------------------------------------------------------------

    def verify(self) -> list[ChainProblem]:
        """Walk every chain; report every edited, deleted or inserted record."""
        problems: list[ChainProblem] = []
        with self._connect() as conn:
            for chain in CHAINS:
                problems += self._verify_chain(conn, chain)
        return problems

    def _verify_chain(self, conn: Connection, chain: str) -> list[ChainProblem]:
        table, entry_hash = _CHAINED[chain]
        head_seq, head_hash = conn.execute(
            select(chain_head.c.seq, chain_head.c.hash).where(chain_head.c.chain == chain)
        ).one()
        problems: list[ChainProblem] = []
        expected_seq, prev_hash = 1, GENESIS
        result = conn.execution_options(yield_per=1000).execute(select(table).order_by(table.c.seq))
        for chunk in result.partitions():
            children: dict[int, list[dict[str, Any]]] = {}
            if chain == "evaluations":
                seqs = [row.seq for row in chunk]
                for rec in conn.execute(
                    select(recommendations)
                    .where(recommendations.c.evaluation_seq.in_(seqs))
                    .order_by(recommendations.c.position)
                ):
                    children.setdefault(rec.evaluation_seq, []).append(rec._asdict())
            for row in chunk:
                data = row._asdict()
                seq = data["seq"]
                if seq > head_seq:
                    problems.append(
                        ChainProblem(chain, seq, "inserted", f"#{seq} lies beyond the chain head #{head_seq}")
                    )
                    continue
                if seq != expected_seq:
                    problems.append(
                        ChainProblem(chain, expected_seq, "deleted", f"#{expected_seq}..#{seq - 1} are missing")
                    )
                if chain == "evaluations":
                    recomputed = _evaluation_hash(data["prev_hash"], data, children.get(seq, []))
                else:
                    recomputed = entry_hash(data["prev_hash"], data)
                if recomputed != data["entry_hash"]:
                    problems.append(
                        ChainProblem(chain, seq, "edited", f"#{seq} does not match its hash: its content was changed")
                    )
                elif data["prev_hash"] != prev_hash and seq == expected_seq:
                    problems.append(
                        ChainProblem(
                            chain, seq, "broken_link", f"#{seq} does not follow the record before it: one was replaced"
                        )
                    )
                expected_seq, prev_hash = seq + 1, data["entry_hash"]
        if expected_seq - 1 < head_seq:
            problems.append(
                ChainProblem(chain, expected_seq, "deleted", f"#{expected_seq}..#{head_seq} are missing from the end")
            )
        elif expected_seq - 1 == head_seq and head_seq and prev_hash != head_hash:
            problems.append(ChainProblem(chain, head_seq, "broken_link", f"#{head_seq} does not match the chain head"))
        return problems

    def head(self) -> dict[str, tuple[int, str]]:
        """The last sequence number and hash of each chain: note them elsewhere to anchor the log."""
        with self._connect() as conn:
            return {r.chain: (r.seq, r.hash) for r in conn.execute(select(chain_head))}


class Writer:
    """The one writer of the audit log for the length of a transaction (:meth:`Store.write`).

    The evaluations chain's head is locked first: SQLite takes its write lock at ``BEGIN
    IMMEDIATE``, PostgreSQL locks the head row.  So whatever is read here (events already
    stored, records' states) stays true until the transaction ends, in this process and in
    any other sharing the database.
    """

    def __init__(self, conn: Connection, known_playbooks: set[str]) -> None:
        self.conn = conn
        self.now = _now()
        self.playbooks_saved: set[str] = set()
        self._known_playbooks = known_playbooks
        self._seq, self._hash = _lock_head(conn, "evaluations")
        self._head_seq = self._seq
        self._records_read: dict[tuple[str, str], bool] = {}  # (source, record) -> is it stored

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
        seq, prev = self._seq, self._hash
        for i, item in enumerate(items):
            if i in skip:
                seqs.append(-1)
                continue
            seq += 1
            row, recs = _evaluation_row(playbook, item, source, as_of, self.now, seq)
            row["prev_hash"] = prev
            row["entry_hash"] = prev = _evaluation_hash(prev, row, recs)
            rows.append(row)
            children.extend({"evaluation_seq": seq, **rec} for rec in recs)
            seqs.append(seq)
        if rows:
            _insert_many(self.conn, evaluations, rows)
            if children:
                _insert_many(self.conn, recommendations, children)
        self._seq, self._hash = seq, prev
        return seqs

    def _already_stored(self, source: str, items: Sequence[Appended]) -> set[int]:
        skip: set[int] = set()
        for column, attr in ((evaluations.c.import_key, "import_key"), (evaluations.c.event_id, "event_id")):
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

    def _rows_among(self, column: Any, source: str, keys: Iterable[str], *also: Any) -> Iterator[Any]:
        """Rows (``column``, ``*also``) of ``source`` in ``column``'s table whose ``column`` is among ``keys``."""
        statement = _rows_among_statement(column, also)
        for chunk in iter_chunks(keys, 500):
            yield from self.conn.execute(statement, {"source": source, "keys": chunk})

    def events_stored(self, source: str, event_ids: Iterable[str]) -> dict[str, int]:
        """Of these events of ``source``, those already evaluated, with their evaluation's number."""
        found = self._rows_among(evaluations.c.event_id, source, event_ids, evaluations.c.seq)
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

    def save_records(self, states: Iterable[RecordState]) -> None:
        """Save records' new states, each read by :meth:`record_states` in this same transaction."""
        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
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
            if self._records_read[key]:
                updates.append({"b_source": state.source, "b_record_id": state.record_id, **values})
            else:
                inserts.append({"source": state.source, "record_id": state.record_id, **values})
                self._records_read[key] = True
        if inserts:
            _insert_many(self.conn, records, inserts)
        if updates:
            self.conn.execute(_UPDATE_RECORD, updates)

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
        seq, prev = _lock_head(self.conn, "quarantined")
        rows: list[dict[str, Any]] = []
        for i in sorted(fresh):
            quarantined = events[i]
            seq += 1
            row: dict[str, Any] = {
                "seq": seq,
                "received_at": quarantined.received_at,
                "source": quarantined.source,
                "event_id": quarantined.event_id,
                "record_id": quarantined.record_id,
                "code": quarantined.code,
                "reason": quarantined.reason,
                "event": canonical(quarantined.event),
            }
            row["prev_hash"] = prev
            row["entry_hash"] = prev = _quarantined_hash(prev, row)
            rows.append(row)
            seqs[i] = seq
        _insert_many(self.conn, quarantined_events, rows)
        self.conn.execute(update(chain_head).where(chain_head.c.chain == "quarantined").values(seq=seq, hash=prev))
        return seqs

    def finish(self) -> None:
        """Move the chain head to the last evaluation appended; called just before the commit."""
        if self._seq != self._head_seq:
            self.conn.execute(
                update(chain_head).where(chain_head.c.chain == "evaluations").values(seq=self._seq, hash=self._hash)
            )
            self._head_seq = self._seq


@functools.lru_cache(maxsize=8)
def _rows_among_statement(column: Any, also: tuple[Any, ...]) -> Any:
    # Built once: building a statement costs more than running it on a small batch.
    table = column.table
    return select(column, *also).where(
        table.c.source == bindparam("source"), column.in_(bindparam("keys", expanding=True))
    )


_CHAINED: dict[str, tuple[Table, Any]] = {
    "evaluations": (evaluations, _evaluation_hash),
    "outcomes": (outcomes, _outcome_hash),
    "quarantined": (quarantined_events, _quarantined_hash),
}

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
        conn.execute(insert(playbooks), [row])


def _outcome_of(row: Any) -> dict[str, Any]:
    return {
        "outcome": row.seq,
        "action": row.action,
        "position": row.position,
        "status": row.status,
        "who": row.who,
        "why": row.why,
        "at": row.at,
    }


def _state_of(row: Any) -> RecordState:
    return RecordState(
        source=row.source,
        record_id=row.record_id,
        fields=json.loads(row.fields),
        stamps=json.loads(row.stamps),
        deleted=bool(row.deleted),
        version=int(row.version),
        updated_at=row.updated_at,
        last_event_id=row.last_event_id,
    )


def _evaluation_row(
    playbook: Playbook, item: Appended, source: str, as_of: dt.date, now: str, seq: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    record_id, account_id = _ids(item.facts)
    outcome = item.outcome
    row: dict[str, Any] = {
        "seq": seq,
        "created_at": now,
        "as_of": as_of.isoformat(),
        "playbook_hash": playbook.content_hash,
        "playbook_id": playbook.id,
        "playbook_version": playbook.version,
        "source": source,
        "record_id": record_id,
        "account_id": account_id,
        "event_id": item.event_id,
        "import_key": item.import_key,
        "facts": _compact(item.facts),
    }
    if isinstance(outcome, CaseError):
        row |= {
            "case_id": outcome.case_id,
            "status": "error",
            "decisions": "{}",
            "fired": "{}",
            "no_action": True,
            "error": canonical({"code": outcome.code, "message": outcome.message}),
        }
        return row, []
    recs = [
        {"position": k, "action": rec["id"], "rule": rec["rule"], "params": _params_text(rec["params"])}
        for k, rec in enumerate(outcome.recommendations)
    ]
    row |= {
        "case_id": outcome.case,
        "status": "ok",
        "decisions": _compact(outcome.decisions),
        "fired": _compact(outcome.fired()),
        "no_action": not recs,
        "error": "",
    }
    return row, recs


def backup_sqlite(url: str, target: Path) -> None:
    """Copy a live SQLite audit log to ``target`` with SQLite's online backup API: one consistent snapshot.

    A file copy of a log being written misses what is still in its write-ahead log (``-wal``) and can
    catch a page half-written; the backup reads one snapshot, every transaction committed before it
    began, and writers go on meanwhile.  The copy is a single file (no ``-wal`` beside it), written
    under a temporary name and renamed, so a failed backup leaves nothing behind.  FileExistsError
    when ``target`` exists; :class:`NoAuditLog` when ``url`` is no SQLite file holding an audit log.
    """
    source_file = sqlite_path(url)
    if source_file is None:
        raise ValueError(f"{url} is not a SQLite file")
    if not source_file.exists():
        raise NoAuditLog(f"there is no audit log at {url}: {source_file} does not exist")
    if target.exists():
        raise FileExistsError(f"{target} exists already; give the backup a new file")
    partial = target.with_name(f".{target.name}.partial")
    source = sqlite3.connect(source_file, timeout=60)
    try:
        if source.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone() is None:
            raise NoAuditLog(f"{url} holds no audit log")
        partial.unlink(missing_ok=True)
        copy = sqlite3.connect(partial)
        try:
            source.backup(copy)  # all pages in one step: one read transaction, one snapshot
            copy.execute("PRAGMA journal_mode=DELETE")  # the copy stands alone, no -wal beside it
        finally:
            copy.close()
        partial.replace(target)
    finally:
        source.close()
        partial.unlink(missing_ok=True)


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL; None for another database or SQLite in memory."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(str(parsed.database))


def iter_chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
