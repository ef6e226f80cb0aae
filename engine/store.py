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

Each evaluation's link covers its content and the previous link; ``chain_head`` holds
the last one.  Appends lock the head, so writers are serialised and sequence numbers
have no gaps.  Outcomes have a chain of their own, and so do records' states (schema
version 4) and quarantined events (version 5): each save of a state appends a link holding the state's hash, so the
``records`` table is checked against the latest link of each record.

A log made with a key (schema version 4) seals its links with HMAC-SHA256 under a key
kept outside the database; only the key's id is stored (``meta.audit_key_id``).  A
log without one is chained with plain SHA-256, which anyone who can write to the
database can recompute.  :meth:`Store.checkpoint` signs every chain's head for keeping
elsewhere; :meth:`Store.verify` checks the log against one.  docs/audit-threat-model.md
says what each proves.

Events set aside as bad data (a webhook's record that maps to no case: a closed deal, a
missing amount) are kept in ``quarantined_events`` (schema version 5), each with its
source, event and record ids, when it was received, the code and reason, and the event
itself; an event redelivered is kept once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import hmac
import json
import operator
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    bindparam,
    case,
    cast,
    create_engine,
    delete,
    distinct,
    event,
    func,
    insert,
    inspect,
    literal,
    not_,
    null,
    or_,
    select,
    true,
    type_coerce,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import make_url

from engine.conditions import variables_of
from engine.errors import CaseError
from engine.evaluate import Result
from engine.model import AllOf, AnyOf, Compare, Condition, Interval, Not, Playbook

__all__ = [
    "CHECKPOINT_FORMAT",
    "DEFAULT_URL",
    "MIN_KEY_BYTES",
    "SCHEMA_VERSION",
    "AggregateSpec",
    "Appended",
    "AuditKeyError",
    "ChainProblem",
    "GroupAggregate",
    "NoAuditLog",
    "OpenBook",
    "QuarantinedEvent",
    "RecordState",
    "SchemaDamaged",
    "Store",
    "StoredEvaluation",
    "TamperedRecord",
    "Writer",
    "audit_key",
    "backup_sqlite",
    "canonical",
    "iter_chunks",
    "key_id",
    "oversized_id",
]

DEFAULT_URL = "sqlite:///playbook.db"
SCHEMA_VERSION = 9
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

# Schema version 4 chained records' states: one link per save of a state, holding its hash.
record_changes = Table(
    "record_changes",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("source", String(200), nullable=False),
    Column("record_id", String(ID_LENGTH), nullable=False),
    Column("version", Integer, nullable=False),
    Column("state_hash", String(64), nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("entry_hash", String(64), nullable=False),
)

# Schema version 5 added quarantined events: what was set aside as bad data, and why.
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

# Schema version 6 added tasks: each recommendation as tracked work (engine/tasks.py), its state here and
# every move of it in the chain of task events, which holds the state after the move.
tasks = Table(
    "tasks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),  # the number of the event that made it
    Column("series", Integer, nullable=False),  # a repeating action's occurrences share the first one's id
    Column("occurrence", Integer, nullable=False),
    Column("source", String(200), nullable=False),
    Column("record", String(ID_LENGTH), nullable=False),  # the record id, else the case id
    Column("evaluation_seq", Integer, nullable=False),  # the evaluation that recommended it
    Column("action", String(200), nullable=False),
    Column("cause", String(200), nullable=False),  # the recommended action (an escalation's: the undone one)
    Column("rule", String(200), nullable=False),
    Column("owner", String(40), nullable=False),
    Column("due", String(10)),
    Column("escalate_at", String(10)),
    Column("escalate_to", String(40)),
    Column("escalate_action", String(200)),
    Column("every", String(20)),
    Column("status", String(12), nullable=False),
    Column("as_of", String(10), nullable=False),  # the day of its last move
    UniqueConstraint("series", "occurrence", name="uq_tasks_occurrence"),
)
Index("ix_tasks_record", tasks.c.source, tasks.c.record)
Index("ix_tasks_status", tasks.c.status)

task_events = Table(
    "task_events",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("task_id", Integer, nullable=False),
    Column("status", String(12), nullable=False),
    Column("who", String(200), nullable=False),
    Column("why", Text, nullable=False),
    Column("as_of", String(10), nullable=False),
    Column("at", String(40), nullable=False),
    Column("state", Text, nullable=False),  # canonical JSON: the task's row after the move
    Column("prev_hash", String(64), nullable=False),
    Column("entry_hash", String(64), nullable=False),
)
Index("ix_task_events_task", task_events.c.task_id)


# Schema version 7 added the web console's users: a role, the owners a manager answers for, an argon2 hash.
console_users = Table(
    "console_users",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("role", String(20), nullable=False),  # auditor | ops | manager
    Column("team", Text, nullable=False),  # JSON list of the owners whose advice a manager may answer
    Column("password_hash", Text, nullable=False),
    Column("created_at", String(40), nullable=False),
)

_TABLES_BY_VERSION = {
    1: [meta, playbooks, chain_head, evaluations, recommendations],
    2: [outcomes],
    3: [records],
    4: [record_changes],
    5: [quarantined_events],
    6: [tasks, task_events],
    7: [console_users],
    8: [],  # (schema version 8 is another branch's: the merger renumbers)
    9: [],  # partitioned chains: meta 'partitions' and a head per partition (see partition_head)
}
CHAINS = ("evaluations", "outcomes", "records", "quarantined", "tasks")
# Chains split into partitions by record (schema version 9): one record's links are always in one
# partition, so transactions on records of different partitions lock different heads.
PARTITIONED = ("evaluations", "quarantined", "records", "tasks")
_CHAIN_TABLES = {
    "evaluations": evaluations,
    "outcomes": outcomes,
    "records": record_changes,
    "quarantined": quarantined_events,
    "tasks": task_events,
}
_CHAIN_SINCE = {
    "evaluations": 1,
    "outcomes": 2,
    "records": 4,
    "quarantined": 5,
    "tasks": 6,
}  # the schema version that added each chain


def partition_head(chain: str, partition: int) -> str:
    """The chain head row of a chain's partition: the chain's own name for partition 0, then ``chain/N``."""
    return chain if partition == 0 else f"{chain}/{partition}"


def head_partition(name: str) -> tuple[str, int]:
    """(chain, partition) of a chain head row's name."""
    chain, _, number = name.partition("/")
    return chain, int(number) if number else 0


def partition_of(partitions: int, source: str, record: str) -> int:
    """The partition a record's links are in: a hash of its source and id, fixed for the log's life."""
    if partitions == 1:
        return 0
    digest = hashlib.blake2b(f"{source}\x1f{record}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % partitions


def link_seq(partitions: int, partition: int, position: int) -> int:
    """The sequence number of a partition's ``position``-th link (from 1): partitions interleave, so
    numbers stay unique across the log with no counter shared between them (1, 2, 3... with one)."""
    return (position - 1) * partitions + partition + 1


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
_TASK_EVENT_FIELDS = ("seq", "task_id", "status", "who", "why", "as_of", "at", "state")
TASK_FIELDS = tuple(c.name for c in tasks.c)
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


@functools.lru_cache(maxsize=16)
def _insert_statement(table: Table, dialect: Any) -> tuple[str, Callable[[dict[str, Any]], tuple[Any, ...]] | None]:
    """The table's insert as SQL for the driver, and for positional parameters the row's values in order."""
    compiled = insert(table).compile(dialect=dialect)
    if not (compiled.positional and compiled.positiontup):
        return str(compiled), None
    order = tuple(compiled.positiontup)
    getter = operator.itemgetter(*order)
    return str(compiled), (getter if len(order) > 1 else lambda row: (getter(row),))


def _insert_many(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert rows with one prepared statement through the driver, parameters still bound.

    The statement is SQLAlchemy's own for the table; passing the rows straight to the driver skips
    SQLAlchemy's per-row parameter processing, a tenth of an import's time.  Values are plain
    text, integers and booleans, which every driver binds as they are.
    """
    statement, values = _insert_statement(table, conn.dialect)
    if values is None:
        conn.exec_driver_sql(statement, rows)  # named parameters: the dicts as they are
    else:
        conn.exec_driver_sql(statement, list(map(values, rows)))


MIN_KEY_BYTES = 32
CHECKPOINT_FORMAT = "playbook-audit-checkpoint/1"


class AuditKeyError(Exception):
    """The log's key is needed and missing, or another key was given, or a key is too weak."""


class SchemaDamaged(Exception):
    """The database's tables are not the audit log's: one is missing or lacks a column."""

    def __init__(self, damage: list[str]) -> None:
        super().__init__("the audit log's schema is damaged: " + "; ".join(damage))
        self.damage = damage


class TamperedRecord(LookupError):
    """A stored text does not match the hash it is filed under."""


def audit_key(raw: bytes | str) -> bytes:
    """A key as given (a key file's bytes or an environment variable), surrounding whitespace dropped."""
    key = (raw.encode() if isinstance(raw, str) else raw).strip()
    if len(key) < MIN_KEY_BYTES:
        raise AuditKeyError(
            f"an audit key must be at least {MIN_KEY_BYTES} bytes (e.g. the output of `openssl rand -hex 32`); "
            f"this one has {len(key)}"
        )
    return key


def key_id(key: bytes) -> str:
    """The key's public name: the start of its HMAC of a fixed text (the key cannot be found from it)."""
    return hmac.new(key, b"playbook audit key id", hashlib.sha256).hexdigest()[:16]


class _Seal:
    """How links are made: HMAC-SHA256 under a key, or plain SHA-256 for a log without one."""

    def __init__(self, key: bytes | None) -> None:
        self.key_id = None if key is None else key_id(key)
        self._mac = None if key is None else hmac.new(key, digestmod=hashlib.sha256)

    def link(self, prev_hash: str, body: str) -> str:
        data = f"{prev_hash}{body}".encode()
        if self._mac is None:
            return hashlib.sha256(data).hexdigest()
        mac = self._mac.copy()  # the key's padding is hashed once, not per link
        mac.update(data)
        return mac.hexdigest()


_PLAIN = _Seal(None)

_JSON_FIELDS = ("facts", "decisions", "fired", "error")
_PLAIN_FIELDS = tuple(f for f in _EVALUATION_FIELDS if f not in _JSON_FIELDS)
_RECORD_CHANGE_FIELDS = ("seq", "source", "record_id", "version", "state_hash")
_RECORD_STATE_FIELDS = ("source", "record_id", "fields", "stamps", "deleted", "version", "updated_at", "last_event_id")


def _evaluation_body(
    plain: Sequence[Any], children: Sequence[Sequence[Any]], json_texts: Sequence[str], params: Sequence[str]
) -> str:
    # The JSON columns are hashed as the text they are stored as, joined by a separator no JSON text
    # holds raw (U+001E); encoding them again inside one JSON document was the import's largest cost.
    return "\x1e".join([canonical([plain, children]), *json_texts, *params])


def _evaluation_hash(seal: _Seal, prev_hash: str, row: dict[str, Any], recs: Sequence[dict[str, Any]]) -> str:
    # Values are normalised as the database gives them back (SQLite has no booleans).
    plain = [bool(row[f]) if f == "no_action" else row[f] for f in _PLAIN_FIELDS]
    children = [[rec["position"], rec["action"], rec["rule"]] for rec in recs]
    body = _evaluation_body(plain, children, [row[f] for f in _JSON_FIELDS], [rec["params"] for rec in recs])
    return seal.link(prev_hash, body)


def _outcome_hash(seal: _Seal, prev_hash: str, row: dict[str, Any]) -> str:
    return seal.link(prev_hash, _link_body("outcomes", row))


def _record_change_hash(seal: _Seal, prev_hash: str, row: dict[str, Any]) -> str:
    return seal.link(prev_hash, _link_body("records", row))


def _quarantined_hash(seal: _Seal, prev_hash: str, row: dict[str, Any]) -> str:
    return seal.link(prev_hash, _link_body("quarantined", row))


def _link_body(chain: str, row: dict[str, Any]) -> str:
    """The text a link seals, but for an evaluation's (:func:`_evaluation_body`)."""
    if chain == "outcomes":
        return canonical([[row[f] for f in _OUTCOME_FIELDS], []])
    if chain == "quarantined":
        return canonical([[row[f] for f in _QUARANTINED_FIELDS], []])
    if chain == "tasks":
        return canonical([row[f] for f in _TASK_EVENT_FIELDS])
    return canonical([row[f] for f in _RECORD_CHANGE_FIELDS])


def _task_event_hash(seal: _Seal, prev_hash: str, row: dict[str, Any]) -> str:
    return seal.link(prev_hash, _link_body("tasks", row))


def task_state(row: Any) -> str:
    """A task's row as chained: canonical JSON of its columns, as the database gives them back."""
    values = row if isinstance(row, dict) else row._asdict()
    return canonical({f: values[f] for f in TASK_FIELDS})


def _state_hash(row: dict[str, Any]) -> str:
    """A record's stored state, hashed as the database gives it back (SQLite has no booleans)."""
    values = [bool(row[f]) if f == "deleted" else row[f] for f in _RECORD_STATE_FIELDS]
    return hashlib.sha256(canonical(values).encode()).hexdigest()


def _link_hash(seal: _Seal, chain: str, row: dict[str, Any], children: Sequence[dict[str, Any]]) -> str:
    if chain == "evaluations":
        return _evaluation_hash(seal, row["prev_hash"], row, children)
    if chain == "outcomes":
        return _outcome_hash(seal, row["prev_hash"], row)
    if chain == "quarantined":
        return _quarantined_hash(seal, row["prev_hash"], row)
    if chain == "tasks":
        return _task_event_hash(seal, row["prev_hash"], row)
    return _record_change_hash(seal, row["prev_hash"], row)


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
    """One thing wrong with the log; ``kind`` is a stable code (docs/audit-threat-model.md lists them)."""

    chain: str  # evaluations | outcomes | records | quarantined | playbooks | key | checkpoint
    seq: int  # the link at fault; 0 when the problem is not one link's
    kind: str  # edited | deleted | inserted | broken_link | unchained | wrong_key | not_keyed | truncated | ...
    message: str

    def __str__(self) -> str:
        where = f"{self.chain} #{self.seq}" if self.seq else self.chain
        return f"{where}: {self.kind}: {self.message}"


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


def filed_record(item: Appended) -> str:
    """The record an evaluation is filed under (its record id, else its case id): what its partition is chosen by."""
    record_id, _ = _ids(item.facts)
    if record_id is not None:
        return record_id
    return item.outcome.case_id if isinstance(item.outcome, CaseError) else item.outcome.case


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

    def __init__(
        self, url: str = DEFAULT_URL, *, key: bytes | None = None, create: bool = True, partitions: int | None = None
    ) -> None:
        """``key``: the audit key (see :func:`audit_key`); without it a keyed log can be read but not
        written, and verified for its structure only.  ``partitions``: how many partitions the record
        chains of a log made now have (default 1); a log that exists keeps its own."""
        if url.startswith(("postgresql://", "postgres://")):  # the driver installed with the postgres extra
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        self.url = url
        if not create:
            sqlite_file = sqlite_path(url)
            if sqlite_file is not None and not sqlite_file.exists():
                raise NoAuditLog(f"there is no audit log at {url}: {sqlite_file} does not exist")
        self.engine: Engine = self._make_engine(url)
        if not create and self.schema_version() == 0:
            with self.engine.connect() as conn:
                damage = _schema_damage(conn, 0)  # some of the log's tables without meta: damaged, not absent
            self.engine.dispose()
            if damage:
                raise SchemaDamaged(damage)
            raise NoAuditLog(f"{url} holds no audit log")
        # SQLite lets one writer in at a time and makes the others sleep and retry, with growing
        # sleeps: threads of one process queue on this lock instead (webhook p99 at 8 clients: 158 ms
        # with 4 workers, 41 ms with 1).  PostgreSQL serialises appends on the chain head row itself.
        self._queue: AbstractContextManager[Any] = (
            threading.RLock() if self.engine.dialect.name == "sqlite" else contextlib.nullcontext()
        )
        self._known_playbooks: set[str] = set()  # stored playbook versions, to skip the look-up per append
        self._seal = _Seal(key)
        self.key_id = self._seal.key_id
        self.partitions = partitions or 1
        try:
            self.upgrade()
        except BaseException:
            self.engine.dispose()  # nothing is left open behind a log that cannot be opened
            raise

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
            cursor.execute("PRAGMA busy_timeout=60000")
            _wal_mode(cursor)
            cursor.execute("PRAGMA foreign_keys=ON")
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
        """Create the schema, or bring an older one up to SCHEMA_VERSION in place.

        SchemaDamaged when a table or column of the version the database says it has is missing:
        nothing is repaired or created over it.
        """
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
            damage = _schema_damage(conn, current)
            if damage:
                raise SchemaDamaged(damage)
            for version in range(current + 1, SCHEMA_VERSION + 1):
                metadata.create_all(conn, tables=_TABLES_BY_VERSION[version])
                if version == 1:
                    conn.execute(insert(chain_head), [{"chain": "evaluations", "seq": 0, "hash": GENESIS}])
                if version == 2:
                    conn.execute(insert(chain_head), [{"chain": "outcomes", "seq": 0, "hash": GENESIS}])
                if version == 4:
                    _chain_record_states(conn)
                if version == 5:
                    conn.execute(insert(chain_head), [{"chain": "quarantined", "seq": 0, "hash": GENESIS}])
                if version == 6:
                    conn.execute(insert(chain_head), [{"chain": "tasks", "seq": 0, "hash": GENESIS}])
                if version == 9:
                    self._partition_chains(conn, made=current == 0)
                if current == 0 and version == 1:
                    conn.execute(insert(meta), [{"key": "schema_version", "value": "1"}])
                conn.execute(update(meta).where(meta.c.key == "schema_version").values(value=str(version)))
            if self._seal.key_id is not None and _meta_value(conn, "audit_key_id") is None and _is_empty(conn):
                # A new (or still empty) log is sealed with the key it is first opened with.
                conn.execute(insert(meta), [{"key": "audit_key_id", "value": self._seal.key_id}])
            self.partitions = int(_meta_value(conn, "partitions") or 1)

    def _partition_chains(self, conn: Connection, *, made: bool) -> None:
        """Schema version 9: the partitions of the record chains.  A log made now gets the partitions
        asked for; a log upgraded keeps one, its chains as they are (partition 0, numbered as before)."""
        partitions = self.partitions if made else 1
        if _meta_value(conn, "partitions") is None:
            conn.execute(insert(meta), [{"key": "partitions", "value": str(partitions)}])
        heads = [
            {"chain": partition_head(chain, p), "seq": 0, "hash": GENESIS}
            for chain in PARTITIONED
            for p in range(1, int(_meta_value(conn, "partitions") or 1))
        ]
        if heads:
            conn.execute(insert(chain_head), heads)

    # -- keys ----------------------------------------------------------------------

    def stored_key_id(self) -> str | None:
        """The id of the key the log is sealed with; None for a log chained with plain SHA-256."""
        with self._connect() as conn:
            return _meta_value(conn, "audit_key_id")

    def check_writable(self) -> None:
        """AuditKeyError when this store could not append: the log's key missing, or another one given."""
        with self._connect() as conn:
            self._sealing(conn)

    def _sealing(self, conn: Connection) -> _Seal:
        """The seal appends are made with, once the log's key and the one given agree."""
        stored = _meta_value(conn, "audit_key_id")
        given = self._seal.key_id
        if stored is None and given is not None:
            raise AuditKeyError(
                "this audit log was chained before keys (plain SHA-256); seal it with your key first: "
                "playbook audit migrate"
            )
        if stored is not None and given is None:
            raise AuditKeyError(
                f"this audit log is sealed with key {stored}: give that key (PLAYBOOK_AUDIT_KEY or "
                "--audit-key-file) to write to it"
            )
        if stored != given:
            raise AuditKeyError(f"this audit log is sealed with key {stored}, not with the key given ({given})")
        return self._seal

    def reseal(self, new_key: bytes) -> None:
        """Seal every link again under ``new_key``: a plain log's migration, or a key's rotation.

        The log is first verified under its present seal (the key given to this store, or plain
        SHA-256); a log that does not verify is not resealed (AuditKeyError names the first problem).
        All in one transaction, every chain's head locked.  Checkpoints taken before no longer
        match the heads: take a new one.
        """
        new = _Seal(new_key)
        with self._begin() as conn:
            ChainHeads(conn, self.partitions).lock(
                partition_head(chain, p) for chain in CHAINS for p in range(_partitions(conn, chain))
            )
            stored = _meta_value(conn, "audit_key_id")
            if stored is not None and stored != self._seal.key_id:
                raise AuditKeyError(
                    f"this audit log is sealed with key {stored}: give that key (the current one) to reseal it"
                )
            old = self._seal if stored is not None else _PLAIN
            problems = [p for chain in CHAINS for p in _verify_chain(conn, chain, old, structure_only=False)]
            if problems:
                raise AuditKeyError(
                    f"the log does not verify under its present seal, so it is not resealed: {problems[0]}"
                )
            for chain in CHAINS:
                _reseal_chain(conn, chain, new)
            if stored is None:
                conn.execute(insert(meta), [{"key": "audit_key_id", "value": new.key_id}])
            else:
                conn.execute(update(meta).where(meta.c.key == "audit_key_id").values(value=new.key_id))
        self._seal = new
        self.key_id = new.key_id

    # -- writing -----------------------------------------------------------------

    @contextlib.contextmanager
    def reading(self) -> Iterator[Reading]:
        """A read of what writers look up (events stored, records' states), no lock taken: what is read may
        change before a write; :meth:`Writer.lock_records` and reading again there tells."""
        with self._connect() as conn:
            yield Reading(conn)

    @contextlib.contextmanager
    def write(self) -> Iterator[Writer]:
        """One write transaction, the evaluations chain's head locked: it all commits, or none of it."""
        with self._begin() as conn:
            writer = Writer(conn, self._known_playbooks, self._sealing, self.partitions)
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

    def record_outcome(
        self, evaluation_seq: int, action: str, status: str, who: str, why: str, *, as_of: str | None = None
    ) -> int:
        """Mark a recommendation accepted, dismissed or done; outcomes are kept as history.

        Its record's task of that action moves with it (engine/tasks.py), on ``as_of`` (a date; today when
        None)."""
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
            seal = self._sealing(conn)
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
            row["entry_hash"] = _outcome_hash(seal, prev, row)
            conn.execute(insert(outcomes), [row])
            conn.execute(
                update(chain_head).where(chain_head.c.chain == "outcomes").values(seq=seq, hash=row["entry_hash"])
            )
            from engine.tasks import TaskBook, move_on_outcome

            book = TaskBook(conn, seal, row["at"])
            move_on_outcome(book, evaluation_seq, row["action"], status, who, why, as_of or row["at"][:10])
            book.finish()
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
        if hashlib.sha256(str(value).encode("utf-8")).hexdigest() != content_hash:
            raise TamperedRecord(
                f"the stored text of playbook {content_hash[:12]} does not match its hash: it was changed "
                "in the database, so nothing is explained under it (see playbook audit verify)"
            )
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
        playbook_version: str | None = None,
        owner: str | None = None,
        region: str | None = None,
        newest_first: bool = False,
    ) -> Generator[StoredEvaluation, None, None]:
        """Evaluations in sequence order, filtered; ``since``/``until`` compare ``as_of`` (inclusive);
        ``owner`` and ``region`` the case's ``opportunity.owner`` and ``opportunity.region``, as text.

        ``latest_per_record``: only each record's newest evaluation (a record is its record id, else
        its case id), before the other filters apply.
        """
        query = select(evaluations).order_by(evaluations.c.seq.desc() if newest_first else evaluations.c.seq)
        if latest_per_record:
            record = func.coalesce(evaluations.c.record_id, evaluations.c.case_id)
            query = query.where(evaluations.c.seq.in_(select(func.max(evaluations.c.seq)).group_by(record)))
        if record_id is not None:
            query = query.where(evaluations.c.record_id == record_id)
        if account_id is not None:
            query = query.where(evaluations.c.account_id == account_id)
        if playbook_version is not None:
            query = query.where(evaluations.c.playbook_version == playbook_version)
        for name, wanted in (("owner", owner), ("region", region)):
            if wanted is not None:
                query = query.where(self._fact_text("opportunity", name) == wanted)
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
            try:
                for chunk in result.partitions():
                    for stored in self._stored(conn, chunk):
                        if (
                            rule is None
                            or rule in stored.fired.get("$rules", [])
                            or any(r["rule"] == rule for r in stored.recommendations)
                        ):
                            yield stored
            finally:
                result.close()  # a reader that stops early leaves no server cursor open

    # -- console users -------------------------------------------------------------

    def save_user(self, name: str, role: str, team: Sequence[str], password_hash: str) -> None:
        """Add a console user, or replace one of that name (a new password or role)."""
        row = {"name": name, "role": role, "team": json.dumps(list(team)), "password_hash": password_hash}
        with self._begin() as conn:
            conn.execute(delete(console_users).where(console_users.c.name == name))
            conn.execute(insert(console_users), [{**row, "created_at": _now()}])

    def user(self, name: str) -> dict[str, Any] | None:
        """A console user's role, team and password hash; None when there is none of that name."""
        with self._connect() as conn:
            row = conn.execute(select(console_users).where(console_users.c.name == name)).first()
        if row is None:
            return None
        return {"name": row.name, "role": row.role, "team": json.loads(row.team), "password_hash": row.password_hash}

    def playbook_versions(self) -> list[dict[str, str]]:
        """The playbook versions stored, oldest first: hash, id, version, when first used."""
        with self._connect() as conn:
            rows = conn.execute(
                select(playbooks.c.hash, playbooks.c.playbook_id, playbooks.c.version, playbooks.c.first_used).order_by(
                    playbooks.c.first_used, playbooks.c.hash
                )
            )
            return [
                {"hash": r.hash, "id": r.playbook_id, "version": r.version, "first_used": r.first_used} for r in rows
            ]

    def _fact_text(self, *path: str) -> Any:
        """A field of the stored facts, read by the database as text (facts are JSON text)."""
        facts = evaluations.c.facts
        document = cast(facts, JSON) if self.engine.dialect.name == "postgresql" else type_coerce(facts, JSON)
        return document[path].as_string()

    # -- the open book: each record's latest evaluation, still open ------------------

    def latest_open(
        self, as_of: str | None = None, *, where: Condition | None = None, page: int = 500
    ) -> Iterator[StoredEvaluation]:
        """Each record's latest evaluation (made ``as_of`` or before) that is still open, streamed in pages.

        Open: it evaluated (status ok), and no ``closed_deal`` event of the record was set aside after
        it.  ``where`` (an engine.model condition over case fields and decision values) filters them.
        """
        with self._connect() as conn:
            cases = _open_cases(as_of)
            chosen = select(cases.c.seq)
            if where is not None:
                chosen = chosen.where(_condition_sql(where, _json_reader(conn.dialect.name, cases)))
            query = select(evaluations).where(evaluations.c.seq.in_(chosen)).order_by(evaluations.c.seq)
            result = conn.execution_options(yield_per=page).execute(query)
            for chunk in result.partitions():
                yield from self._stored(conn, chunk)

    @contextlib.contextmanager
    def open_book(
        self, as_of: str | None, variables: Iterable[str], *, where: Condition | None = None
    ) -> Iterator[OpenBook]:
        """The open deals as of ``as_of`` (see :meth:`latest_open`), ``where`` holds, with ``variables`` (case
        fields ``object.field`` and decisions) read out of their JSON once into a temporary table, for
        the figures of one report: each query then groups plain columns, in the database."""
        with self._connect() as conn, conn.begin():
            book = OpenBook(self, conn, as_of, variables, where)
            try:
                yield book
            finally:
                book.table.drop(conn)

    def aggregate_open_cases(
        self,
        group_field: str | None,
        specs: Sequence[AggregateSpec],
        as_of: str | None = None,
        *,
        members: int = 20,
        where: Condition | None = None,
    ) -> dict[Any, dict[str, GroupAggregate]]:
        """Per group of the open cases (``group_field``'s value; None: one group, key None), each spec's value
        and up to ``members`` of the record ids it was made of, with their total; see :meth:`OpenBook.aggregate`."""
        variables = [name for name in [group_field] if name] + [v for spec in specs for v in aggregate_variables(spec)]
        with self.open_book(as_of, variables, where=where) as book:
            return book.aggregate(group_field, specs, members=members)

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
        """The evaluations stored: the links of every partition of their chain."""
        with self._connect() as conn:
            names = [partition_head("evaluations", p) for p in range(self.partitions)]
            links = conn.execute(select(func.sum(chain_head.c.seq)).where(chain_head.c.chain.in_(names)))
            return int(links.scalar_one())

    # -- tamper evidence ---------------------------------------------------------------

    def verify(self, checkpoint: dict[str, Any] | None = None) -> list[ChainProblem]:
        """Walk every chain, the records' states and the playbook texts; report everything wrong.

        With the log's key every link's seal is checked; without it (:meth:`seals_checked` is False)
        only the structure: sequence, links, heads, states' and texts' hashes.  With ``checkpoint``
        (from :meth:`checkpoint`), also whether the log still holds what it saw: truncation and
        rewriting since are found only so.
        """
        problems: list[ChainProblem] = []
        with self._connect() as conn:
            stored = _meta_value(conn, "audit_key_id")
            given = self._seal.key_id
            seal, structure_only = self._seal, False
            if stored is None:
                seal = _PLAIN
                if given is not None:
                    problems.append(
                        ChainProblem(
                            "key",
                            0,
                            "not_keyed",
                            "the log is chained with plain SHA-256, which anyone who can write to the database "
                            "can recompute; seal it with your key: playbook audit migrate",
                        )
                    )
            elif given is None:
                structure_only = True
            elif given != stored:
                problems.append(
                    ChainProblem(
                        "key", 0, "wrong_key", f"the log is sealed with key {stored}, not with the key given ({given})"
                    )
                )
                structure_only = True
            for chain in CHAINS:
                problems += _verify_chain(conn, chain, seal, structure_only=structure_only)
            problems += _verify_record_states(conn)
            problems += _verify_task_states(conn)
            problems += _verify_playbook_texts(conn)
            if checkpoint is not None:
                problems += self._against_checkpoint(conn, checkpoint, stored)
        return problems

    def seals_checked(self) -> bool:
        """Whether :meth:`verify` checks the links' seals: the log is plain, or its key was given."""
        stored = self.stored_key_id()
        return stored is None or stored == self._seal.key_id

    def head(self) -> dict[str, tuple[int, str]]:
        """The last sequence number and hash of each chain: note them elsewhere to anchor the log."""
        with self._connect() as conn:
            return {r.chain: (r.seq, r.hash) for r in conn.execute(select(chain_head))}

    def checkpoint(self) -> dict[str, Any]:
        """Every chain's head (count, hash) now, signed with the log's key: keep it outside the database.

        The log is verified first: a checkpoint never vouches for a log that does not verify
        (AuditKeyError names the first problem).
        """
        with self._connect() as conn:
            seal = self._sealing(conn)
            if seal.key_id is None:
                raise AuditKeyError(
                    "a checkpoint is signed with the log's key: give one (PLAYBOOK_AUDIT_KEY or --audit-key-file)"
                )
        problems = self.verify()
        if problems:
            raise AuditKeyError(f"the log does not verify, so no checkpoint vouches for it: {problems[0]}")
        with self._connect() as conn:
            heads = {r.chain: {"count": int(r.seq), "head": r.hash} for r in conn.execute(select(chain_head))}
            body: dict[str, Any] = {
                "format": CHECKPOINT_FORMAT,
                "log": _meta_value(conn, "log_id"),
                "key_id": seal.key_id,
                "made_at": _now(),
                "chains": heads,
            }
        return body | {"mac": seal.link("", canonical(body))}

    def _against_checkpoint(
        self, conn: Connection, checkpoint: dict[str, Any], stored_key: str | None
    ) -> list[ChainProblem]:
        def problem(kind: str, message: str, chain: str = "checkpoint", seq: int = 0) -> list[ChainProblem]:
            return [ChainProblem(chain, seq, kind, message)]

        body = {k: v for k, v in checkpoint.items() if k != "mac"}
        chains = body.get("chains")
        if body.get("format") != CHECKPOINT_FORMAT or not isinstance(chains, dict):
            return problem("checkpoint_unreadable", f"this is not a checkpoint of this program ({CHECKPOINT_FORMAT})")
        if self._seal.key_id is not None:
            if body.get("key_id") != self._seal.key_id:
                return problem(
                    "checkpoint_other_key",
                    f"the checkpoint was signed with key {body.get('key_id')}, not with the key given "
                    f"({self._seal.key_id}); verify it with its own key",
                )
            expected = self._seal.link("", canonical(body))
            if not hmac.compare_digest(expected, str(checkpoint.get("mac", ""))):
                return problem("checkpoint_forged", "the checkpoint's signature does not match: it was changed")
        made_at = body.get("made_at", "?")
        found: list[ChainProblem] = []
        if body.get("log") != _meta_value(conn, "log_id"):
            found += problem(
                "replaced",
                f"this database is not the log the checkpoint of {made_at} was taken of: it was wiped and "
                "made again, or swapped",
            )
        if stored_key != body.get("key_id"):
            found += problem(
                "key_changed",
                f"the checkpoint of {made_at} saw a log sealed with key {body.get('key_id')}; it is now "
                f"{stored_key or 'not sealed with a key'}",
            )
        heads = {r.chain: int(r.seq) for r in conn.execute(select(chain_head))}
        for name, seen in sorted(chains.items()):
            chain, partition = head_partition(str(name))
            if chain not in _CHAIN_TABLES or not isinstance(seen, dict):
                continue
            partitions = _partitions(conn, chain)
            count, head = int(seen.get("count", 0)), str(seen.get("head", ""))
            now = heads.get(name, 0)
            table = _CHAIN_TABLES[chain]
            last = link_seq(partitions, partition, count)
            row = conn.execute(select(table.c.entry_hash).where(table.c.seq == last)).first() if count else None
            if now < count:
                first = link_seq(partitions, partition, now + 1)
                found += problem(
                    "truncated",
                    f"the chain holds {now} records; the checkpoint of {made_at} saw {count}: "
                    f"#{first}..#{last} were removed",
                    name,
                    first,
                )
            elif count and (row is None or row.entry_hash != head):
                found += problem(
                    "rewritten",
                    f"#{last} is not the record the checkpoint of {made_at} saw: the log was rewritten since",
                    name,
                    last,
                )
        return found


def _meta_value(conn: Connection, key: str) -> str | None:
    value = conn.execute(select(meta.c.value).where(meta.c.key == key)).scalar()
    return None if value is None else str(value)


def _is_empty(conn: Connection) -> bool:
    return all(int(r.seq) == 0 for r in conn.execute(select(chain_head.c.seq)))


def _schema_damage(conn: Connection, version: int) -> list[str]:
    """What is missing of the schema ``version`` says there is, in words; [] when whole."""
    inspector = inspect(conn)
    present = set(inspector.get_table_names())
    expected = [t for v in range(1, version + 1) for t in _TABLES_BY_VERSION[v]]
    if version == 0:  # a new database, unless some of the log's tables are there without meta
        others = sorted(t.name for tables in _TABLES_BY_VERSION.values() for t in tables if t.name in present)
        return [f"the table 'meta' is missing (the log's tables {', '.join(others)} are there)"] if others else []
    damage = [f"the table '{t.name}' is missing" for t in expected if t.name not in present]
    kept = [t for t in expected if t.name in present]
    columns = inspector.get_multi_columns(filter_names=[t.name for t in kept])
    found = {table: {c["name"] for c in cols} for (_, table), cols in columns.items()}
    for table in kept:
        damage += [f"the column '{table.name}.{c.name}' is missing" for c in table.c if c.name not in found[table.name]]
    heads = {r.chain for r in conn.execute(select(chain_head.c.chain))} if "chain_head" in present else set(CHAINS)
    damage += [
        f"the chain head of '{chain}' is missing"
        for chain in CHAINS
        if _CHAIN_SINCE[chain] <= version and chain not in heads
    ]
    if version >= 9 and "meta" in present:
        partitions = int(_meta_value(conn, "partitions") or 1)
        damage += [
            f"the chain head of '{name}' is missing"
            for chain in PARTITIONED
            for name in (partition_head(chain, p) for p in range(1, partitions))
            if name not in heads
        ]
    return damage


def _wal_mode(cursor: Any) -> None:
    """Put a SQLite file in WAL mode.  On a new file programs started at once race to switch it, and
    the switch is refused at once (not after the busy timeout) while another connection holds a lock."""
    deadline = time.monotonic() + 60
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _chain_record_states(conn: Connection) -> None:
    """Schema version 4: a log id, and a link for each record's state already stored (under plain SHA-256,
    as every log before keys is chained)."""
    conn.execute(insert(meta), [{"key": "log_id", "value": uuid.uuid4().hex}])
    seq, prev = 0, GENESIS
    links: list[dict[str, Any]] = []
    rows = conn.execute(select(records).order_by(records.c.source, records.c.record_id)).mappings()
    for state in rows:
        seq += 1
        link = {
            "seq": seq,
            "source": state["source"],
            "record_id": state["record_id"],
            "version": int(state["version"]),
            "state_hash": _state_hash(dict(state)),
            "prev_hash": prev,
        }
        link["entry_hash"] = prev = _record_change_hash(_PLAIN, prev, link)
        links.append(link)
    for chunk in iter_chunks(links, 1000):
        _insert_many(conn, record_changes, chunk)
    conn.execute(insert(chain_head), [{"chain": "records", "seq": seq, "hash": prev}])


def _chain_rows(conn: Connection, chain: str) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Each link of ``chain`` in order, with its recommendations (evaluations) - in pages, so that the
    caller may write between them."""
    table = _CHAIN_TABLES[chain]
    after = 0
    while True:
        page = [
            r._asdict()
            for r in conn.execute(select(table).where(table.c.seq > after).order_by(table.c.seq).limit(2000))
        ]
        if not page:
            return
        children: dict[int, list[dict[str, Any]]] = {}
        if chain == "evaluations":
            for rec in conn.execute(
                select(recommendations)
                .where(recommendations.c.evaluation_seq.between(page[0]["seq"], page[-1]["seq"]))
                .order_by(recommendations.c.evaluation_seq, recommendations.c.position)
            ):
                children.setdefault(rec.evaluation_seq, []).append(rec._asdict())
        for row in page:
            yield row, children.get(row["seq"], [])
        after = page[-1]["seq"]


def _driver_rows(conn: Connection, query: Any) -> Iterator[tuple[Any, ...]]:
    """A query's rows as the driver gives them, fetched 2,000 at a time; on PostgreSQL through a
    server-side cursor, so that a page at a time is held.  (Through SQLAlchemy a row costs 2-5 µs
    more, a third of a verify.)  For queries without parameters."""
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None  # the connection is open
    cursor = dbapi.cursor(name=f"playbook_{uuid.uuid4().hex}") if conn.dialect.name == "postgresql" else dbapi.cursor()
    try:
        cursor.execute(str(query.compile(dialect=conn.dialect)))
        while page := cursor.fetchmany(2000):
            yield from page
    finally:
        cursor.close()


_EVALUATION_NAMES = [column.name for column in evaluations.columns]
_EVALUATION_PLAIN = operator.itemgetter(*(_EVALUATION_NAMES.index(name) for name in _PLAIN_FIELDS))
_EVALUATION_JSON = operator.itemgetter(*(_EVALUATION_NAMES.index(name) for name in _JSON_FIELDS))
_NO_ACTION_PLACE = _PLAIN_FIELDS.index("no_action")


def _chain_links(conn: Connection, chain: str, *, bodies: bool) -> Iterator[tuple[int, str, str, str | None]]:
    """Each link of ``chain`` in order, for reading only: (seq, prev_hash, entry_hash, the text it seals,
    or None without ``bodies``).

    Two cursors read on, each in its own order, and are merged by sequence number: one pass over each
    table whatever its length, a page of each held at a time.  (Pages of 2,000 links, as
    :func:`_chain_rows` reads them so that its caller may write between them, cost a query each and a
    dict per row: most of a verify.)  An evaluation's text is built from the row's values as they come,
    as :func:`_evaluation_hash` builds it from the row's dict.
    """
    table = _CHAIN_TABLES[chain]
    names = tuple(column.name for column in table.columns)
    seq_at, prev_at, entry_at = names.index("seq"), names.index("prev_hash"), names.index("entry_hash")
    rows = _driver_rows(conn, select(table).order_by(table.c.seq))
    if chain != "evaluations":
        for values in rows:
            body = _link_body(chain, dict(zip(names, values, strict=True))) if bodies else None
            yield values[seq_at], values[prev_at], values[entry_at], body
        return
    recs = _driver_rows(
        conn, select(recommendations).order_by(recommendations.c.evaluation_seq, recommendations.c.position)
    )
    pending = next(recs, None)  # the first recommendation not yet given to a link
    for values in rows:
        seq = values[seq_at]
        while pending is not None and pending[0] < seq:  # a recommendation of no link (inserted): skipped
            pending = next(recs, None)
        children, params = [], []
        while pending is not None and pending[0] == seq:
            _, position, action, rule, text = pending
            children.append((position, action, rule))
            params.append(text)
            pending = next(recs, None)
        body = None
        if bodies:
            plain = list(_EVALUATION_PLAIN(values))
            plain[_NO_ACTION_PLACE] = bool(plain[_NO_ACTION_PLACE])
            body = _evaluation_body(plain, children, _EVALUATION_JSON(values), params)
        yield seq, values[prev_at], values[entry_at], body


def _partitions(conn: Connection, chain: str) -> int:
    """How many partitions ``chain`` has in this log."""
    return int(_meta_value(conn, "partitions") or 1) if chain in PARTITIONED else 1


def _verify_chain(conn: Connection, chain: str, seal: _Seal, *, structure_only: bool) -> list[ChainProblem]:
    """Walk a chain's links in one pass, each partition's links (interleaved by number) a chain of their own."""
    partitions = _partitions(conn, chain)
    names = [partition_head(chain, p) for p in range(partitions)]
    heads = {
        row.chain: (int(row.seq), str(row.hash))
        for row in conn.execute(select(chain_head).where(chain_head.c.chain.in_(names)))
    }
    problems: list[ChainProblem] = []
    expected = [1] * partitions  # each partition's next position
    prev_hashes = [GENESIS] * partitions
    for seq, link_prev, link_hash, body in _chain_links(conn, chain, bodies=not structure_only):
        partition, position = (seq - 1) % partitions, (seq - 1) // partitions + 1
        name = names[partition]
        head_count, _ = heads.get(name, (0, GENESIS))
        if position > head_count:
            last = link_seq(partitions, partition, head_count)
            problems.append(ChainProblem(name, seq, "inserted", f"#{seq} lies beyond the chain head #{last}"))
            continue
        if position != expected[partition]:
            first, last = link_seq(partitions, partition, expected[partition]), seq - partitions
            problems.append(ChainProblem(name, first, "deleted", f"#{first}..#{last} are missing"))
        if body is not None and seal.link(link_prev, body) != link_hash:
            problems.append(
                ChainProblem(name, seq, "edited", f"#{seq} does not match its seal: its content was changed")
            )
        elif link_prev != prev_hashes[partition] and position == expected[partition]:
            problems.append(
                ChainProblem(name, seq, "broken_link", f"#{seq} does not follow the record before it: one was replaced")
            )
        expected[partition], prev_hashes[partition] = position + 1, link_hash
    for partition, name in enumerate(names):
        head_count, head_hash = heads.get(name, (0, GENESIS))
        reached = expected[partition] - 1
        if reached < head_count:
            first, last = (link_seq(partitions, partition, k) for k in (reached + 1, head_count))
            problems.append(ChainProblem(name, first, "deleted", f"#{first}..#{last} are missing from the end"))
        elif reached == head_count and head_count and prev_hashes[partition] != head_hash:
            last = link_seq(partitions, partition, head_count)
            problems.append(ChainProblem(name, last, "broken_link", f"#{last} does not match the chain head"))
    return problems


def _verify_record_states(conn: Connection) -> list[ChainProblem]:
    """Each record's stored state against the latest link of it in the records chain."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in conn.execution_options(yield_per=2000).execute(select(record_changes).order_by(record_changes.c.seq)):
        latest[(row.source, row.record_id)] = row._asdict()
    problems: list[ChainProblem] = []
    for state in conn.execution_options(yield_per=2000).execute(select(records)).mappings():
        key = (state["source"], state["record_id"])
        name = f"record {state['record_id']} of {state['source']}"
        link = latest.pop(key, None)
        if link is None:
            problems.append(
                ChainProblem("records", 0, "unchained", f"the state of {name} is in no link of the chain: it was added")
            )
        elif _state_hash(dict(state)) != link["state_hash"] or int(state["version"]) != link["version"]:
            problems.append(
                ChainProblem(
                    "records",
                    link["seq"],
                    "edited",
                    f"the stored state of {name} is not the one chained at #{link['seq']}: it was changed",
                )
            )
    for (source, record_id), link in sorted(latest.items()):
        problems.append(
            ChainProblem(
                "records",
                link["seq"],
                "deleted",
                f"the state of record {record_id} of {source}, chained at #{link['seq']}, is missing",
            )
        )
    return problems


def _verify_task_states(conn: Connection) -> list[ChainProblem]:
    """Each task's row against the state its latest event chained."""
    latest: dict[int, tuple[int, str]] = {}
    for row in conn.execution_options(yield_per=2000).execute(
        select(task_events.c.seq, task_events.c.task_id, task_events.c.state).order_by(task_events.c.seq)
    ):
        latest[int(row.task_id)] = (int(row.seq), str(row.state))
    problems: list[ChainProblem] = []
    for row in conn.execution_options(yield_per=2000).execute(select(tasks)):
        link = latest.pop(int(row.id), None)
        if link is None:
            problems.append(ChainProblem("tasks", 0, "unchained", f"task {row.id} is in no event of the chain"))
        elif task_state(row) != link[1]:
            problems.append(
                ChainProblem(
                    "tasks", link[0], "edited", f"task {row.id} is not as its event #{link[0]} left it: it was changed"
                )
            )
    for task_id, (seq, _) in sorted(latest.items()):
        problems.append(ChainProblem("tasks", seq, "deleted", f"task {task_id}, moved at #{seq}, is missing"))
    return problems


def _verify_playbook_texts(conn: Connection) -> list[ChainProblem]:
    problems: list[ChainProblem] = []
    for row in conn.execute(select(playbooks).order_by(playbooks.c.first_used)):
        if hashlib.sha256(row.text.encode("utf-8")).hexdigest() != row.hash:
            problems.append(
                ChainProblem(
                    "playbooks",
                    0,
                    "edited",
                    f"the stored text of playbook {row.playbook_id} {row.version} ({row.hash[:12]}) does not "
                    "match its hash: it was changed",
                )
            )
    return problems


def _reseal_chain(conn: Connection, chain: str, seal: _Seal) -> None:
    table = _CHAIN_TABLES[chain]
    statement = (
        update(table)
        .where(table.c.seq == bindparam("b_seq"))
        .values(prev_hash=bindparam("b_prev"), entry_hash=bindparam("b_entry"))
    )
    partitions = _partitions(conn, chain)
    prev_hashes, pending = [GENESIS] * partitions, []
    for row, children in _chain_rows(conn, chain):
        partition = (row["seq"] - 1) % partitions
        row["prev_hash"] = prev_hashes[partition]
        prev_hashes[partition] = _link_hash(seal, chain, row, children)
        pending.append({"b_seq": row["seq"], "b_prev": row["prev_hash"], "b_entry": prev_hashes[partition]})
        if len(pending) >= 2000:
            conn.execute(statement, pending)
            pending = []
    if pending:
        conn.execute(statement, pending)
    for partition, prev in enumerate(prev_hashes):
        conn.execute(update(chain_head).where(chain_head.c.chain == partition_head(chain, partition)).values(hash=prev))


class ChainHeads:
    """The chain heads one write transaction holds, each a partition's (links, hash of the last), locked first.

    Heads are locked in the order of their names, those named together in one statement: a writer
    that names every record it writes (:meth:`Writer.lock_records`) waits for the writers of those
    records' partitions only, and two such writers cannot deadlock.  A head asked for unnamed is
    locked then, with (on a partitioned log) every partition of every partitioned chain: a writer
    that does not say what it writes (an import, a tick) takes the whole log, as all did before.
    """

    def __init__(self, conn: Connection, partitions: int) -> None:
        self.conn = conn
        self.partitions = partitions
        self.held: dict[str, tuple[int, str]] = {}
        self._moved: set[str] = set()

    def lock(self, names: Iterable[str]) -> int:
        """Lock these heads (those not held yet); how many were locked now."""
        wanted = sorted(set(names) - self.held.keys())
        if not wanted:
            return 0
        rows = self.conn.execute(
            select(chain_head.c.chain, chain_head.c.seq, chain_head.c.hash)
            .where(chain_head.c.chain.in_(wanted))
            .order_by(chain_head.c.chain)
            .with_for_update()
        )
        self.held |= {row.chain: (int(row.seq), str(row.hash)) for row in rows}
        missing = [name for name in wanted if name not in self.held]
        if missing:
            raise LookupError(f"the chain head of '{missing[0]}' is missing")
        return len(wanted)

    def lock_partitions(self, partitions: Iterable[int]) -> int:
        """Lock every partitioned chain's head of these partitions."""
        return self.lock(partition_head(chain, p) for p in set(partitions) for chain in PARTITIONED)

    def get(self, chain: str, partition: int = 0) -> tuple[int, str]:
        """(links, last hash) of a chain's partition, locked."""
        name = partition_head(chain, partition)
        if name not in self.held:
            self.lock([name] if self.partitions == 1 else self._every_partition())
        return self.held[name]

    def _every_partition(self) -> list[str]:
        return [partition_head(chain, p) for chain in PARTITIONED for p in range(self.partitions)]

    def next_seq(self, chain: str, partition: int) -> int:
        """The sequence number the partition's next link gets."""
        return link_seq(self.partitions, partition, self.get(chain, partition)[0] + 1)

    def advance(self, chain: str, partition: int, entry_hash: str) -> int:
        """One link added to the partition, sealed as ``entry_hash``; its sequence number."""
        seq = self.next_seq(chain, partition)
        name = partition_head(chain, partition)
        self.held[name] = (self.held[name][0] + 1, entry_hash)
        self._moved.add(name)
        return seq

    def save(self, chains: Iterable[str]) -> None:
        """Write these chains' heads that moved."""
        chosen = set(chains)
        moved = sorted(name for name in self._moved if head_partition(name)[0] in chosen)
        if moved:
            self.conn.execute(
                update(chain_head).where(chain_head.c.chain == bindparam("b_chain")),
                [{"b_chain": name, "seq": self.held[name][0], "hash": self.held[name][1]} for name in moved],
            )
            self._moved -= set(moved)


class Reading:
    """What a writer looks up before it writes: events already stored, records' states.  Read without
    a lock (:meth:`Store.reading`) it may change before the write; in a :class:`Writer`, it cannot."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._records_read: dict[tuple[str, str], bool] = {}  # (source, record) -> is it stored

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


class Writer(Reading):
    """The writer of the audit log's partitions it holds for the length of a transaction (:meth:`Store.write`).

    On a log of one partition the evaluations chain's head is locked first: SQLite takes its write
    lock at ``BEGIN IMMEDIATE``, PostgreSQL locks the head row, and writers take turns.  On a
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
        partitions: int = 1,
    ) -> None:
        super().__init__(conn)
        self.now = _now()
        self.playbooks_saved: set[str] = set()
        self._known_playbooks = known_playbooks
        self.partitions = partitions
        self.heads = ChainHeads(conn, partitions)
        self._sealing = sealing
        if partitions == 1:
            self.heads.get("evaluations")

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
            _insert_many(self.conn, evaluations, rows)
            if children:
                _insert_many(self.conn, recommendations, children)
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
            if isinstance(item.outcome, Result):
                record = row["record_id"] if row["record_id"] is not None else row["case_id"]
                followed.append(Followed(seq, record, item.facts, item.outcome.recommendations))
        follow_evaluations(self.tasks, playbook, source, as_of, followed)

    @functools.cached_property
    def tasks(self) -> Any:
        """The moves of tasks made in this transaction (an engine.tasks.TaskBook), their chain locked at the first."""
        from engine.tasks import TaskBook

        return TaskBook(self.conn, self._seal, self.now, heads=self.heads)

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
            self.heads.save(["records"])

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
        self.heads.save(["quarantined"])
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
        """Move the chain heads to the last evaluation appended and task moved; called just before the commit."""
        if "tasks" in self.__dict__:
            self.tasks.finish()
        self.heads.save(["evaluations"])


@functools.lru_cache(maxsize=8)
def _rows_among_statement(column: Any, also: tuple[Any, ...]) -> Any:
    # Built once: building a statement costs more than running it on a small batch.
    table = column.table
    return select(column, *also).where(
        table.c.source == bindparam("source"), column.in_(bindparam("keys", expanding=True))
    )


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
        {
            "evaluation_seq": seq,
            "position": k,
            "action": rec["id"],
            "rule": rec["rule"],
            "params": _params_text(rec["params"]),
        }
        for k, rec in enumerate(outcome.recommendations)
    ]
    row |= {
        "case_id": outcome.case,
        "status": "ok",
        "decisions": _decisions_text(outcome.decisions),
        "fired": _fired_text(outcome),
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


# -- the open book in SQL: each record's latest open evaluation, values read from its JSON -------------

AGGREGATE_FUNCTIONS = ("count", "share", "sum", "min", "max", "distinct", "value")


@dataclass(frozen=True)
class AggregateSpec:
    """One figure per group: ``function`` (count, share, sum, min, max, distinct) of ``field`` (a case field
    ``object.field`` or a decision; None for count and share) over the cases for which ``where`` holds
    (None: every case).  share: the cases where ``where`` holds, over the group's open cases."""

    name: str
    function: str
    field: str | None = None
    where: Condition | None = None


@dataclass(frozen=True)
class GroupAggregate:
    """A figure, and the record ids it was made of: the first few (sorted), and how many in all."""

    value: Any
    members: tuple[str, ...]
    members_total: int


# How a variable is read in SQL: (name, numeric) -> an expression.  Text is JSON's own rendering of the
# value ('true', '5000', 'A'); numeric is its number, NULL when it holds none.
Reader = Callable[[str, bool], Any]


class OpenBook:
    """The open deals of one report in a temporary table: ``seq``, ``record`` and, per variable, its text
    and its number (see :meth:`Store.open_book`).  Every method runs one query (or two) over it."""

    def __init__(
        self, store: Store, conn: Connection, as_of: str | None, variables: Iterable[str], where: Condition | None
    ) -> None:
        self.store, self.conn = store, conn
        dialect = conn.dialect.name
        names = list(dict.fromkeys([*variables, *variables_of(where)]))
        self.columns = {name: (f"t{k}", f"n{k}") for k, name in enumerate(names)}
        self.table = Table(
            f"open_book_{uuid.uuid4().hex[:12]}",
            MetaData(),
            Column("seq", Integer, primary_key=True),
            Column("record", String(ID_LENGTH), nullable=False),
            *[Column(c, Text) for c, _ in self.columns.values()],
            *[Column(n, Float) for _, n in self.columns.values()],
            prefixes=["TEMPORARY"],
        )
        self.table.create(conn)
        cases = _open_cases(as_of)
        read = _json_reader(dialect, cases)
        values = [cases.c.seq, cases.c.record]
        values += [read(name, False) for name in names] + [read(name, True) for name in names]
        query = select(*values)
        if where is not None:
            query = query.where(_condition_sql(where, read))
        conn.execute(insert(self.table).from_select([c.name for c in self.table.c], query))

    @property
    def by_record(self) -> Any:
        """Record ids in code-point order on both databases (PostgreSQL would sort by its locale)."""
        record = self.table.c.record
        return record.collate("C") if self.conn.dialect.name == "postgresql" else record

    def read(self, name: str, numeric: bool) -> Any:
        text, number = self.columns[name]
        return self.table.c[number if numeric else text]

    def figures(
        self, group_field: str | None, decisions: Sequence[str]
    ) -> list[tuple[Any, tuple[Any, ...], int, float]]:
        """(group key, the ``decisions``' values, open cases, their summed ``opportunity.amount``) for every
        combination present: one GROUP BY."""
        t = self.table
        group = self.read(group_field, False) if group_field else literal(None)
        values = [self.read(name, False) for name in decisions]
        amount = func.coalesce(func.sum(self.read("opportunity.amount", True)), 0)
        query = select(group, *values, func.count(), amount).select_from(t).group_by(group, *values)
        return [(row[0], tuple(row[1:-2]), int(row[-2]), float(row[-1])) for row in self.conn.execute(query)]

    def aggregate(
        self,
        group_field: str | None,
        specs: Sequence[AggregateSpec],
        *,
        members: int = 20,
        listed: Iterable[str] | None = None,
    ) -> dict[Any, dict[str, GroupAggregate]]:
        """Per group, each spec's value (and ``open``: the group's open cases), and for the ``listed`` ones (all,
        ``open`` too, when None) up to ``members`` record ids (sorted) of the cases it was made of, with their total.
        ValueError for a spec or condition SQL cannot express (a list test, a value derived when evaluating)."""
        group = self.read(group_field, False) if group_field else literal(None)
        columns: list[Any] = [group.label("group_key"), func.count().label("open")]
        involved: dict[str, Any] = {"open": true()}
        for spec in specs:
            value, made_of = _aggregate_sql(spec, self.read)
            columns.append(value)
            involved[spec.name] = made_of
        out: dict[Any, dict[str, GroupAggregate]] = {}
        for row in self.conn.execute(select(*columns).select_from(self.table).group_by(group)):
            values = {"open": row[1], **{spec.name: _rounded(spec, row[i + 2]) for i, spec in enumerate(specs)}}
            out[row[0]] = {name: GroupAggregate(_plain_number(value), (), 0) for name, value in values.items()}
        wanted = set(involved) if listed is None else set(listed)
        if members > 0:
            for name, holds in involved.items():
                if name in wanted:
                    for key, ids, total in self._members(group, holds, members):
                        out[key][name] = GroupAggregate(out[key][name].value, ids, total)
        return out

    def _members(self, group: Any, holds: Any, limit: int) -> Iterator[tuple[Any, tuple[str, ...], int]]:
        """Per group: the first ``limit`` record ids (sorted) of the cases where ``holds``, and their total."""
        t = self.table
        ranked = (
            select(
                group.label("group_key"),
                t.c.record,
                func.row_number().over(partition_by=group, order_by=self.by_record).label("place"),
                func.count().over(partition_by=group).label("total"),
            )
            .where(holds)
            .subquery()
        )
        found: dict[Any, tuple[list[str], int]] = {}
        query = select(ranked.c.group_key, ranked.c.record, ranked.c.total).where(ranked.c.place <= limit)
        for row in self.conn.execute(query.order_by(ranked.c.place)):
            found.setdefault(row.group_key, ([], int(row.total)))[0].append(row.record)
        for key, (ids, total) in found.items():
            yield key, tuple(ids), total

    def first(
        self, partition_field: str | None, order: Sequence[tuple[str, Sequence[Any]]], *, limit: int = 10
    ) -> list[tuple[Any, int, StoredEvaluation]]:
        """The first ``limit`` deals of each partition (``partition_field``'s value), with the partition's
        total: by each (decision or field, its values in order) — a value not listed, or none, after the
        listed ones — then the larger amount, then the record id.  Ranked in the database."""
        t = self.table
        part = self.read(partition_field, False) if partition_field else literal(None)
        ranks = [
            case(
                *[(self.read(name, False) == _json_text(value), place) for place, value in enumerate(values)],
                else_=len(values),
            )
            for name, values in order
        ]
        ordering = [*ranks, func.coalesce(self.read("opportunity.amount", True), 0).desc(), self.by_record]
        ranked = select(
            t.c.seq,
            part.label("part"),
            func.row_number().over(partition_by=part, order_by=ordering).label("place"),
            func.count().over(partition_by=part).label("total"),
        ).subquery()
        rows = self.conn.execute(
            select(ranked).where(ranked.c.place <= limit).order_by(ranked.c.part, ranked.c.place)
        ).all()
        stored: dict[int, StoredEvaluation] = {}
        for chunk in iter_chunks([row.seq for row in rows], 500):
            found = self.conn.execute(select(evaluations).where(evaluations.c.seq.in_(chunk))).all()
            stored.update((s.seq, s) for s in self.store._stored(self.conn, found))
        return [(row.part, int(row.total), stored[row.seq]) for row in rows]


def _open_cases(as_of: str | None) -> Any:
    """Each record's latest evaluation (``as_of`` or before) that evaluated and was not closed after: a CTE
    of seq, record (its record id, else case id), facts and decisions (JSON text).

    Two passes over the log, whatever its size: the newest evaluation per record (GROUP BY), and the
    last ``closed_deal`` event per record (GROUP BY), joined.
    """
    e = evaluations
    record = func.coalesce(e.c.record_id, e.c.case_id)
    newest = select(func.max(e.c.seq)).group_by(record)
    if as_of is not None:
        newest = newest.where(e.c.as_of <= as_of)
    q = quarantined_events
    closed = (
        select(q.c.record_id, func.max(q.c.received_at).label("closed_at"))
        .where(q.c.code == "closed_deal", q.c.record_id.is_not(None))
        .group_by(q.c.record_id)
        .subquery("closed")
    )
    query = (
        select(e.c.seq, record.label("record"), e.c.facts, e.c.decisions)
        .select_from(e.outerjoin(closed, closed.c.record_id == record))
        .where(
            e.c.seq.in_(newest),
            e.c.status == "ok",
            or_(closed.c.closed_at.is_(None), closed.c.closed_at <= e.c.created_at),
        )
    )
    return query.cte("open_cases")


def _json_reader(dialect: str, cases: Any) -> Reader:
    """Variables read from the JSON of :func:`_open_cases`: a case field from its facts, a decision from its
    decisions; the same text on SQLite and PostgreSQL."""

    def read(name: str, numeric: bool) -> Any:
        column, path = (cases.c.facts, name.split(".")) if "." in name else (cases.c.decisions, [name])
        if dialect == "postgresql":
            document = cast(column, JSONB)
            keys = [literal(p) for p in path]
            text = func.jsonb_extract_path_text(document, *keys)
            if not numeric:
                return text
            return case((func.jsonb_typeof(func.jsonb_extract_path(document, *keys)) == "number", cast(text, Float)))
        where = "$" + "".join(f'."{p}"' for p in path)
        kind = func.json_type(column, where)
        if numeric:
            return case((kind.in_(("integer", "real")), cast(func.json_extract(column, where), Float)))
        # JSON's own text, as PostgreSQL gives it: true and false as words, numbers as written
        return case(
            (kind == "true", literal("true")),
            (kind == "false", literal("false")),
            else_=cast(func.json_extract(column, where), Text),
        )

    return read


def _json_text(value: Any) -> Any:
    """A test's operand as a bound parameter in the text a reader gives (see :data:`Reader`)."""
    if isinstance(value, bool):
        return literal("true" if value else "false")
    if isinstance(value, dt.date):
        return literal(value.isoformat())
    return literal(value if isinstance(value, str) else json.dumps(value))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def aggregate_variables(spec: AggregateSpec) -> list[str]:
    """The case values an aggregate reads: its field and its condition's."""
    return ([spec.field] if spec.field else []) + variables_of(spec.where)


def _condition_sql(condition: Condition, read: Reader) -> Any:
    """An engine.model condition as SQL, with SQL's three-valued logic, which is the engine's (a test on a
    missing value is unknown; only a true condition holds).  Operands are bound parameters.
    ValueError for a test SQL cannot read (on lists)."""
    if isinstance(condition, AllOf):
        return and_(*[_condition_sql(item, read) for item in condition.items])
    if isinstance(condition, AnyOf):
        return or_(*[_condition_sql(item, read) for item in condition.items])
    if isinstance(condition, Not):
        return not_(_condition_sql(condition.item, read))
    atom = condition
    if atom.op == "present":
        value = read(atom.var, False)
        return value.is_not(None) if atom.operand else value.is_(None)
    if atom.op == "interval":
        value = read(atom.var, True)
        interval: Interval = atom.operand
        parts = [value.is_not(None)]
        if interval.low is not None:
            parts.append(value >= interval.low if interval.low_closed else value > interval.low)
        if interval.high is not None:
            parts.append(value <= interval.high if interval.high_closed else value < interval.high)
        return and_(*parts)
    if atom.op == "compare":
        compare: Compare = atom.operand
        value, other = read(atom.var, True), read(compare.other, True)
        if compare.factor is not None:
            other = other * compare.factor
        return {
            "gt": value > other, "gte": value >= other, "lt": value < other, "lte": value <= other,
            "equals": value == other, "not_equals": value != other,
        }[compare.op]  # fmt: skip
    operands = atom.operand if isinstance(atom.operand, tuple) else (atom.operand,)
    if atom.op not in ("equals", "not_equals", "one_of", "not_one_of"):
        raise ValueError(f"the test '{atom.var} {atom.op}' cannot be read in the database")
    numeric = all(_is_number(v) for v in operands)
    value = read(atom.var, numeric)
    bound = [literal(v) if numeric else _json_text(v) for v in operands]
    if atom.op == "equals":
        return value == bound[0]
    if atom.op == "not_equals":
        return value != bound[0]
    if atom.op == "one_of":
        return value.in_(bound)
    return value.not_in(bound)


def _aggregate_sql(spec: AggregateSpec, read: Reader) -> tuple[Any, Any]:
    """(the spec's value as an SQL aggregate, the condition of the cases it is made of)."""
    if spec.function not in AGGREGATE_FUNCTIONS:
        raise ValueError(f"unknown aggregate function '{spec.function}'; one of {', '.join(AGGREGATE_FUNCTIONS)}")
    holds = _condition_sql(spec.where, read) if spec.where is not None else true()
    if spec.function in ("count", "share"):
        # as engine/portfolio.py counts in memory: a case whose condition is unknown (its facts missing)
        # is neither counted nor in the share's base, and a group where every case is unknown has no figure
        counted = func.count(case((holds, 1)))
        known = func.count(case((holds, 1), (not_(holds), 0)))
        if spec.function == "count":
            return case((known == 0, null()), else_=counted), holds
        return cast(counted, Float) / func.nullif(known, 0), holds
    if spec.field is None:
        raise ValueError(f"the aggregate '{spec.name}' ({spec.function}) needs a field")
    value = read(spec.field, spec.function not in ("distinct", "value"))
    chosen = case((holds, value))
    aggregate = {
        "sum": func.sum(chosen), "min": func.min(chosen), "max": func.max(chosen),
        "distinct": func.count(distinct(chosen)),
        # the one value the cases agree on; none when they disagree or give none
        "value": case((func.count(distinct(chosen)) == 1, func.min(chosen)), else_=null()),
    }[spec.function]  # fmt: skip
    return aggregate, and_(holds, value.is_not(None))


def _rounded(spec: AggregateSpec, value: Any) -> Any:
    """A share to six places, as engine/portfolio.py gives it (the last bits differ between databases)."""
    return round(value, 6) if spec.function == "share" and value is not None else value


def _plain_number(value: Any) -> Any:
    """A figure as JSON would give it: a decimal as a float, a whole float as an int."""
    if isinstance(value, Decimal):
        value = float(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
