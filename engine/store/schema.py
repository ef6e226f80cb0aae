"""The audit log's tables, its schema version, and the way up to it: one migration per version.

:data:`MIGRATIONS` maps each version to the function that makes it from the one before (tables
created, chain heads inserted); :func:`migrate` walks them in order inside the caller's transaction.
:func:`_schema_damage` says what is missing of the schema a database says it has: nothing is
repaired or created over it.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    bindparam,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy import column as column_named
from sqlalchemy import table as table_named
from sqlalchemy.engine.reflection import ObjectKind

from engine.limits import ID_LENGTH
from engine.store.batch import _insert_many, iter_chunks
from engine.store.chain import _PLAIN, GENESIS, _record_change_hash, _state_hash, canonical

SCHEMA_VERSION = 13


_SCHEMA_LOCK = 0x706C6179626F6F6B  # PostgreSQL advisory lock held while the schema is made: "playbook"


def hash_bytes(value: str | None) -> bytes | None:
    """A SHA-256 hash's hex text as its 32 bytes; ValueError unless the bytes give the same text back."""
    if value is None:
        return None
    stored = bytes.fromhex(value)
    if len(stored) != 32 or stored.hex() != value:
        raise ValueError(f"{value!r} is not a SHA-256 hash in lowercase hex")
    return stored


def hash_text(value: bytes | None) -> str | None:
    return None if value is None else bytes(value).hex()


class Sha256(TypeDecorator[str]):
    """A SHA-256 hash (a link's hash) stored as its 32 bytes, half its hex text: Python reads and writes
    the hex as before, lowercase as ``hexdigest`` gives it (schema version 13).  Every driver takes and
    gives bytes as they are: the conversion is the whole processing (rows go to the driver by the
    thousand: engine/store/batch.py)."""

    impl = LargeBinary(32)
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> bytes | None:
        return hash_bytes(value)

    def process_result_value(self, value: bytes | None, dialect: Any) -> str | None:
        return hash_text(value)

    def bind_processor(self, dialect: Any) -> Callable[[str | None], bytes | None]:
        return hash_bytes

    def result_processor(self, dialect: Any, coltype: Any) -> Callable[[bytes | None], str | None]:
        return hash_text


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


@functools.lru_cache(maxsize=256)  # a transaction stamps all its rows with one time
def stamp_number(text: str) -> int:
    """A stamp (engine/store/clock.py: ISO 8601 in UTC to the microsecond) as microseconds since 1970.
    ValueError for any other text: only a stamp comes back the very same text, which links hash."""
    number = (dt.datetime.fromisoformat(text) - _EPOCH) // _MICROSECOND
    if stamp_text(number) != text:
        raise ValueError(f"{text!r} is not a time as the store stamps it (ISO 8601 in UTC, to the microsecond)")
    return number


def stamp_text(number: int) -> str:
    return (_EPOCH + number * _MICROSECOND).isoformat(timespec="microseconds")


def _stamp_number(value: str | None) -> int | None:
    return None if value is None else stamp_number(value)


def _stamp_text(value: int | None) -> str | None:
    return None if value is None else stamp_text(int(value))


class Stamp(TypeDecorator[str]):
    """A stamp stored as microseconds since 1970 (8 bytes, not 32), read back as the same text."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> int | None:
        return _stamp_number(value)

    def process_result_value(self, value: int | None, dialect: Any) -> str | None:
        return _stamp_text(value)

    def bind_processor(self, dialect: Any) -> Callable[[str | None], int | None]:
        return _stamp_number

    def result_processor(self, dialect: Any, coltype: Any) -> Callable[[int | None], str | None]:
        return _stamp_text


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

# Schema version 11 keeps each distinct text the log repeats once, numbered: the playbook's hash, the
# decisions and the rules fired (a few dozen sets among thousands of cases), errors, and each
# recommendation's action, rule and parameters.  Rows hold the numbers; the views ``evaluations`` and
# ``recommendations`` give the texts back, so every reader and every link's text is as before.
log_texts = Table(
    "log_texts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("hash", String(64), nullable=False, unique=True),  # SHA-256 of the text: its key, whatever its length
    Column("text", Text, nullable=False),
)

evaluation_rows = Table(
    "evaluation_rows",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("created_at", Stamp, nullable=False),
    Column("as_of", String(10), nullable=False),
    Column("playbook", Integer, nullable=False),  # the log text of the playbook's hash (playbooks.hash)
    Column("source", String(200), nullable=False),
    Column("case_id", String(ID_LENGTH), nullable=False),
    Column("record_id", String(ID_LENGTH)),
    Column("account_id", String(ID_LENGTH)),
    Column("event_id", String(ID_LENGTH)),
    Column("import_key", String(ID_LENGTH)),
    Column("status", String(10), nullable=False),  # ok | error
    Column("facts", Text, nullable=False),
    Column("decisions", Integer, nullable=False),  # log texts, as all three below
    Column("fired", Integer, nullable=False),
    Column("no_action", Boolean, nullable=False),
    Column("error", Integer, nullable=False),
    Column("prev_hash", Sha256, nullable=False),
    Column("entry_hash", Sha256, nullable=False),
    UniqueConstraint("source", "import_key", name="uq_evaluation_rows_import"),
    UniqueConstraint("source", "event_id", name="uq_evaluation_rows_event"),
)
Index("ix_evaluation_rows_record", evaluation_rows.c.record_id)
Index("ix_evaluation_rows_account", evaluation_rows.c.account_id)
Index("ix_evaluation_rows_as_of", evaluation_rows.c.as_of)

recommendation_rows = Table(
    "recommendation_rows",
    metadata,
    Column("evaluation_seq", Integer, ForeignKey("evaluation_rows.seq"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("action", Integer, nullable=False),  # log texts, as the two below
    Column("rule", Integer, nullable=False),
    Column("params", Integer, nullable=False),
    # Clustered by evaluation: one B-tree to write per row, which is most of an import's cost.
    # Listing by action or rule reads the table through (an audit query, not a hot path).
    sqlite_with_rowid=False,
)


def _evaluation_columns() -> list[Column[Any]]:
    return [
        Column("seq", Integer, primary_key=True, autoincrement=False),
        Column("created_at", String(40), nullable=False),
        Column("as_of", String(10), nullable=False),
        Column("playbook_hash", String(64), nullable=False),
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
    ]


def _recommendation_columns() -> list[Column[Any]]:
    return [
        Column("evaluation_seq", Integer, primary_key=True),
        Column("position", Integer, primary_key=True),
        Column("action", String(200), nullable=False),
        Column("rule", String(200), nullable=False),
        Column("params", Text, nullable=False),
    ]


# What is read: the views over the rows above (never created from these definitions, see _VIEWS).
views = MetaData()
evaluations = Table("evaluations", views, *_evaluation_columns())
recommendations = Table("recommendations", views, *_recommendation_columns())

# Since version 13 the rows hold hashes as bytes and times as numbers (:class:`Sha256`, :class:`Stamp`):
# the view gives them back as the texts every link was hashed over, for any reader, SQL's included.
_SHOWN = {
    "sqlite": {
        "hash": "lower(hex({}))",
        "stamp": "strftime('%Y-%m-%dT%H:%M:%S', {0} / 1000000, 'unixepoch') || printf('.%06d+00:00', {0} % 1000000)",
    },
    "postgresql": {
        "hash": "encode({}, 'hex')",
        "stamp": "to_char(TIMESTAMP '1970-01-01' + {} * INTERVAL '1 microsecond', "
        "'YYYY-MM-DD\"T\"HH24:MI:SS.US') || '+00:00'",
    },
}


def _views(dialect: str) -> dict[str, str]:
    """Each view's query in ``dialect``."""
    shown = _SHOWN[dialect]
    stamp, prev, entry = (
        shown["stamp"].format("e.created_at"),
        shown["hash"].format("e.prev_hash"),
        shown["hash"].format("e.entry_hash"),
    )
    # the expressions are this module's own, no input: nothing to bind
    return {
        "evaluations": (
            f"SELECT e.seq, {stamp} AS created_at, e.as_of, p.hash AS playbook_hash, p.playbook_id, "  # noqa: S608
            "p.version AS playbook_version, e.source, e.case_id, e.record_id, e.account_id, e.event_id, "
            "e.import_key, e.status, e.facts, d.text AS decisions, f.text AS fired, e.no_action, x.text AS error, "
            f"{prev} AS prev_hash, {entry} AS entry_hash "
            "FROM evaluation_rows e JOIN log_texts h ON h.id = e.playbook JOIN playbooks p ON p.hash = h.text "
            "JOIN log_texts d ON d.id = e.decisions JOIN log_texts f ON f.id = e.fired "
            "JOIN log_texts x ON x.id = e.error"
        ),
        "recommendations": (
            "SELECT r.evaluation_seq, r.position, a.text AS action, u.text AS rule, p.text AS params "
            "FROM recommendation_rows r JOIN log_texts a ON a.id = r.action JOIN log_texts u ON u.id = r.rule "
            "JOIN log_texts p ON p.id = r.params"
        ),
    }


_VIEWS = tuple(_views("sqlite"))


def _create_views(conn: Connection) -> None:
    for name, query in _views(conn.dialect.name).items():
        conn.exec_driver_sql(f"CREATE VIEW {name} AS {query}")


# The tables of versions 1 to 10 that version 11 replaced, as those versions made them.
legacy = MetaData()
_v10_evaluations = Table(
    "evaluations",
    legacy,
    *[
        Column(c.name, c.type, ForeignKey(playbooks.c.hash), nullable=False) if c.name == "playbook_hash" else c
        for c in _evaluation_columns()
    ],
    UniqueConstraint("source", "import_key", name="uq_evaluations_import"),
    UniqueConstraint("source", "event_id", name="uq_evaluations_event"),
)
Index("ix_evaluations_record", _v10_evaluations.c.record_id)
Index("ix_evaluations_account", _v10_evaluations.c.account_id)
Index("ix_evaluations_as_of", _v10_evaluations.c.as_of)
_v10_recommendations = Table(
    "recommendations",
    legacy,
    *[
        Column(c.name, c.type, ForeignKey(_v10_evaluations.c.seq), primary_key=True)
        if c.name == "evaluation_seq"
        else c
        for c in _recommendation_columns()
    ],
    sqlite_with_rowid=False,
)


# Schema version 2 added outcomes.
def _outcome_columns(evaluation: Column[Any]) -> list[Column[Any]]:
    return [
        Column("seq", Integer, primary_key=True, autoincrement=False),
        Column("evaluation_seq", Integer, ForeignKey(evaluation), nullable=False),
        Column("position", Integer, nullable=False),
        Column("action", String(200), nullable=False),
        Column("status", String(20), nullable=False),
        Column("who", String(200), nullable=False),
        Column("why", Text, nullable=False),
        Column("at", String(40), nullable=False),
        Column("prev_hash", String(64), nullable=False),
        Column("entry_hash", String(64), nullable=False),
    ]


outcomes = Table("outcomes", metadata, *_outcome_columns(evaluation_rows.c.seq))
Index("ix_outcomes_evaluation", outcomes.c.evaluation_seq)
_v10_outcomes = Table("outcomes", legacy, *_outcome_columns(_v10_evaluations.c.seq))
Index("ix_outcomes_evaluation", _v10_outcomes.c.evaluation_seq)

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
# every move of it in the chain of task events, which chains the state after the move.  A move changes a
# task's status and day only, so since version 12 an event stores no copy of the row: its state is the
# task's row with the event's status and as_of (:func:`event_state`), hashed as before.
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


def _task_event_columns(hash_type: Any, stamp_type: Any) -> list[Column[Any]]:
    return [
        Column("seq", Integer, primary_key=True, autoincrement=False),
        Column("task_id", Integer, nullable=False),
        Column("status", String(12), nullable=False),
        Column("who", String(200), nullable=False),
        Column("why", Text),  # NULL: engine/tasks.py's usual reason for the move (:func:`usual_why`)
        Column("as_of", String(10), nullable=False),
        Column("at", stamp_type, nullable=False),
        # canonical JSON of the task's row after the move, only where the row and the event do not give it
        # (a log migrated to version 12 whose task row had changed behind it); NULL: :func:`event_state`
        Column("state", Text),
        Column("prev_hash", hash_type, nullable=False),
        Column("entry_hash", hash_type, nullable=False),
    ]


task_events = Table("task_events", metadata, *_task_event_columns(Sha256, Stamp))
Index("ix_task_events_task", task_events.c.task_id)

# Task events as versions 6 to 12 stored them, hashes and times as text (version 12 rebuilds this table).
_v12_task_events = Table("task_events", legacy, *_task_event_columns(String(64), String(40)))
Index("ix_task_events_task", _v12_task_events.c.task_id)


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

# Schema version 8 added the workflow clock's timers (engine/clock.py): each one's last fired day, and who
# fired it when.  The lease is the row's lock, held by the transaction that fires the timer: it ends with
# that transaction or its connection, however the process ends.
clock_timers = Table(
    "clock_timers",
    metadata,
    Column("timer", String(40), primary_key=True),
    Column("fired_as_of", String(10)),  # the last day the timer fired for; None: never
    Column("fired_at", String(40)),  # the wall clock then
    Column("fired_by", String(200)),  # host and process that fired it
)

# Schema version 10 added the outbox of notifications (engine/store/outbox.py, adapters/notify.py): one
# delivery per task event a CRM is told of, written in the event's own transaction, and the dead letters
# of those that failed every attempt.  Since version 12 a delivery holds only its sending's state: its id,
# kind, task, creation time and body are its task event's (built when it is sent, the same bytes).
deliveries = Table(
    "deliveries",
    metadata,
    Column("event_seq", Integer, primary_key=True, autoincrement=False),  # the task event it tells of
    Column("status", String(12), nullable=False),  # pending | delivered | dead | skipped
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", String(40)),  # NULL: due since it was made (its event's time)
    Column("lease_owner", String(64)),  # the deliverer sending it now, until lease_until
    Column("lease_until", String(40)),
    Column("url", Text),  # where it was last sent
    Column("last_error", Text),
    Column("delivered_at", String(40)),
    # the JSON to send where its event no longer gives it (a log migrated to version 12); NULL: built
    Column("body", Text),
)
Index("ix_deliveries_due", deliveries.c.status, deliveries.c.next_attempt_at)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_seq", Integer, ForeignKey("deliveries.event_seq"), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("url", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text, nullable=False),
    Column("died_at", String(40), nullable=False),
    Column("retried_at", String(40)),  # when it was put back in the outbox; listed no more
)
Index("ix_dead_letters_event", dead_letters.c.event_seq)

_TABLES_BY_VERSION = {
    1: [meta, playbooks, chain_head, _v10_evaluations, _v10_recommendations],
    2: [_v10_outcomes],
    3: [records],
    4: [record_changes],
    5: [quarantined_events],
    6: [tasks, task_events],
    7: [console_users],
    8: [clock_timers],
    9: [],  # partitioned chains (engine/store/partitions.py): meta 'partitions' and a head per partition
    10: [deliveries, dead_letters],
    11: [log_texts, evaluation_rows, recommendation_rows, outcomes],  # and the views (_VIEWS)
    12: [],  # task events and deliveries without copies of the task (columns changed, no table added)
    13: [],  # hashes and times of evaluation rows and task events as bytes and numbers (types changed)
}
_REPLACED_AT_11 = (_v10_evaluations, _v10_recommendations, _v10_outcomes)
CHAINS = ("evaluations", "outcomes", "records", "quarantined", "tasks")
PARTITIONED = ("evaluations", "quarantined", "records", "tasks")  # by record: see engine/store/partitions.py
_CHAIN_TABLES = {
    "evaluations": evaluations,
    "outcomes": outcomes,
    "records": record_changes,
    "quarantined": quarantined_events,
    "tasks": task_events,
}
_CHAIN_ROWS = {**_CHAIN_TABLES, "evaluations": evaluation_rows}  # where each chain's links are written
_CHAIN_SINCE = {
    "evaluations": 1,
    "outcomes": 2,
    "records": 4,
    "quarantined": 5,
    "tasks": 6,
}  # the schema version that added each chain


TASK_FIELDS = tuple(c.name for c in tasks.c)


def task_state(row: Any) -> str:
    """A task's row as chained: canonical JSON of its columns, as the database gives them back."""
    values = row if isinstance(row, dict) else row._asdict()
    return canonical({f: values[f] for f in TASK_FIELDS})


def task_event_rows(events: Table = task_events) -> Any:
    """Task events with their task's columns (``t_<name>``; NULL when the task's row is gone), for
    :func:`event_state`.  ``events``: the table as the log's version defines it."""
    columns = [tasks.c[f].label(f"t_{f}") for f in TASK_FIELDS]
    return select(events, *columns).select_from(events.outerjoin(tasks, tasks.c.id == events.c.task_id))


def usual_why(status: str, as_of: str, task: dict[str, Any]) -> str | None:
    """The reason engine/tasks.py gives a move of its own, from the task's row after it: a task made for a
    rule's recommendation or a repeat, overdue, escalated; None for other moves.

    A task event whose reason is this one stores none (:func:`chained_event` puts it back), so these
    texts are part of the log's format: never reworded here (a new wording in engine/tasks.py is stored
    in full, as any reason that is not one of these)."""
    if status == "open" and task["occurrence"] == 1:
        return f"rule {task['rule']} recommended it (evaluation #{task['evaluation_seq']})"
    if status == "open":
        return f"{task['action']} repeats every {task['every']} while rule {task['rule']} holds"
    if status == "overdue":
        return f"due {task['due']}, not done by {as_of}"
    if status == "escalated":
        return f"overdue since {task['due']}: escalated to {task['escalate_to']}"
    return None


def event_state(row: Any) -> str | None:
    """The state a task event chains (canonical JSON of the task's row after the move), from a row of
    :func:`task_event_rows`: its stored state where it keeps one, else its task's row with the event's
    status and day (the only columns a move changes).  None when the task's row is gone."""
    values = row if isinstance(row, dict) else row._asdict()
    if values["state"] is not None:
        return str(values["state"])
    if values["t_status"] is None:
        return None
    state = {f: values[f"t_{f}"] for f in TASK_FIELDS}
    state.update(status=values["status"], as_of=values["as_of"])
    return canonical(state)


def chained_event(row: Any) -> dict[str, Any]:
    """A row of :func:`task_event_rows` as its event was chained: its state (:func:`event_state`) and its
    reason (stored, else :func:`usual_why`) put back."""
    values = row if isinstance(row, dict) else row._asdict()
    why = values["why"]
    if why is None and values["t_status"] is not None:
        why = usual_why(values["status"], values["as_of"], {f: values[f"t_{f}"] for f in TASK_FIELDS})
    return {**values, "state": event_state(values), "why": why}


class SchemaDamaged(Exception):
    """The database's tables are not the audit log's: one is missing or lacks a column."""

    def __init__(self, damage: list[str]) -> None:
        super().__init__("the audit log's schema is damaged: " + "; ".join(damage))
        self.damage = damage


def _meta_value(conn: Connection, key: str) -> str | None:
    value = conn.execute(_META_VALUE, {"key": key}).scalar()
    return None if value is None else str(value)


_META_VALUE = select(meta.c.value).where(meta.c.key == bindparam("key"))  # built once: read by every write


def _is_empty(conn: Connection) -> bool:
    return all(int(r.seq) == 0 for r in conn.execute(select(chain_head.c.seq)))


# SQLite's catalog in one statement: each table with its columns, each view (a view's columns are not asked
# for: one whose table is gone cannot list them).  The inspector asks once per table and parses every type.
_SQLITE_CATALOG = text(
    "SELECT m.type, m.name, c.name AS column_name FROM sqlite_master AS m "
    "LEFT JOIN pragma_table_xinfo(CASE m.type WHEN 'table' THEN m.name END, 'main') AS c "
    "WHERE m.type IN ('table', 'view') AND m.name NOT LIKE 'sqlite~_%' ESCAPE '~'"
)

_SQLITE_VIEW_COLUMNS = text("SELECT name FROM pragma_table_xinfo(:name, 'main')")


class _Catalog:
    """The tables and views a database holds, and the column names of the tables asked for."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._inspector = None if conn.dialect.name == "sqlite" else inspect(conn)
        self._columns: dict[str, set[str]] = {}
        if self._inspector is None:
            self.views: set[str] = set()
            for kind, name, column in conn.execute(_SQLITE_CATALOG):
                if kind == "view":
                    self.views.add(name)
                else:
                    self._columns.setdefault(name, set()).update([column] if column is not None else [])
            self.tables = set(self._columns)
        else:
            self.views = set(self._inspector.get_view_names())
            self.tables = set(self._inspector.get_table_names())

    def columns(self, tables: list[str]) -> dict[str, set[str]]:
        """Each of ``tables``' column names (tables the database holds)."""
        if self._inspector is not None:
            found = self._inspector.get_multi_columns(filter_names=tables, kind=ObjectKind.ANY)
            return {table: {c["name"] for c in cols} for (_, table), cols in found.items()}
        return {table: self._columns.get(table) or self._view_columns(table) for table in tables}

    def _view_columns(self, name: str) -> set[str]:
        # a view where an older version had a table (a log whose version was set back): asked only then, since
        # reading a view's columns makes SQLite prepare the view
        return set(self._conn.execute(_SQLITE_VIEW_COLUMNS, {"name": name}).scalars())


def _schema_damage(conn: Connection, version: int, catalog: _Catalog | None = None) -> list[str]:
    """What is missing of the schema ``version`` says there is, in words; [] when whole."""
    catalog = catalog or _Catalog(conn)
    present = catalog.tables | catalog.views
    expected = [t for v in range(1, version + 1) for t in _TABLES_BY_VERSION[v]]
    if version >= 11:
        expected = [t for t in expected if t not in _REPLACED_AT_11]
    if version == 0:  # a new database, unless some of the log's tables are there without meta
        others = sorted(t.name for tables in _TABLES_BY_VERSION.values() for t in tables if t.name in present)
        return [f"the table 'meta' is missing (the log's tables {', '.join(others)} are there)"] if others else []
    damage = [f"the table '{t.name}' is missing" for t in expected if t.name not in present]
    kept = [t for t in expected if t.name in present]
    found = catalog.columns([t.name for t in kept])
    for table in kept:
        damage += [f"the column '{table.name}.{c.name}' is missing" for c in table.c if c.name not in found[table.name]]
    if version >= 11:
        damage += [f"the view '{name}' is missing" for name in _VIEWS if name not in catalog.views]
    heads = {r.chain for r in conn.execute(select(chain_head.c.chain))} if "chain_head" in present else set(CHAINS)
    damage += [
        f"the chain head of '{chain}' is missing"
        for chain in CHAINS
        if _CHAIN_SINCE[chain] <= version and chain not in heads
    ]
    if version >= 9 and "meta" in present:
        partitions = int(_meta_value(conn, "partitions") or 1)
        damage += [
            f"the chain head of '{chain}/{p}' is missing"
            for chain in PARTITIONED
            for p in range(1, partitions)
            if f"{chain}/{p}" not in heads
        ]
    return damage


def _head(conn: Connection, chain: str) -> None:
    conn.execute(insert(chain_head), [{"chain": chain, "seq": 0, "hash": GENESIS}])


def _create(conn: Connection, tables: list[Table]) -> None:
    for table in tables:
        table.create(conn, checkfirst=True)


def _to_v1(conn: Connection) -> None:
    """The evaluations chain, the playbooks' texts and the schema's version."""
    _create(conn, _TABLES_BY_VERSION[1])
    _head(conn, "evaluations")
    conn.execute(insert(meta), [{"key": "schema_version", "value": "1"}])


def _to_v2(conn: Connection) -> None:
    """Outcomes, chained."""
    _create(conn, _TABLES_BY_VERSION[2])
    _head(conn, "outcomes")


def _to_v3(conn: Connection) -> None:
    """Records' last known states."""
    metadata.create_all(conn, tables=_TABLES_BY_VERSION[3])


def _to_v4(conn: Connection) -> None:
    """A log id, and a link for each record's state already stored (under plain SHA-256, as every log
    before keys is chained)."""
    metadata.create_all(conn, tables=_TABLES_BY_VERSION[4])
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


def _to_v5(conn: Connection) -> None:
    """Quarantined events, chained."""
    metadata.create_all(conn, tables=_TABLES_BY_VERSION[5])
    _head(conn, "quarantined")


def _to_v6(conn: Connection) -> None:
    """Tasks, and the chain of their moves."""
    metadata.create_all(conn, tables=_TABLES_BY_VERSION[6])
    _head(conn, "tasks")


def _to_v7(conn: Connection) -> None:
    """The web console's users."""
    metadata.create_all(conn, tables=_TABLES_BY_VERSION[7])


def _to_v8(conn: Connection) -> None:
    """The workflow clock's timers, the daily tick's row there to be locked (never fired)."""
    metadata.create_all(conn, tables=_TABLES_BY_VERSION[8])
    if conn.execute(select(clock_timers.c.timer)).first() is None:
        conn.execute(insert(clock_timers), [{"timer": "tick"}])


def _to_v9(conn: Connection, partitions: int = 1) -> None:
    """Partitioned record chains: the log's number of partitions, and a head for each partition but the
    first.  A log made now gets the partitions asked for; a log upgraded keeps one, its chains as they
    are (each chain is its partition 0, its links numbered as before)."""
    if _meta_value(conn, "partitions") is None:
        conn.execute(insert(meta), [{"key": "partitions", "value": str(partitions)}])
    count = int(_meta_value(conn, "partitions") or 1)
    heads = [{"chain": f"{chain}/{p}", "seq": 0, "hash": GENESIS} for chain in PARTITIONED for p in range(1, count)]
    if heads:
        conn.execute(insert(chain_head), heads)


def _to_v10(conn: Connection) -> None:
    """The outbox of notifications and its dead letters."""
    metadata.create_all(conn, tables=_TABLES_BY_VERSION[10])


def insert_new_only(conn: Connection, table: Table, keys: list[str] | None = None) -> Any:
    """An INSERT into ``table`` whose rows already there (by ``keys``, else any unique key) are left as they
    are.  Each dialect's module is imported only when its database is in use: the PostgreSQL one costs
    start-up to a SQLite log."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        return postgresql_insert(table).on_conflict_do_nothing(index_elements=keys)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).on_conflict_do_nothing(index_elements=keys)


class LogTexts:
    """The numbers of the log's texts (:data:`log_texts`): each text stored once, the first time it is
    needed, in the caller's transaction.  ``known``: numbers of texts already committed, shared; the
    numbers found here are in :attr:`found`, to be added to it once the transaction commits."""

    def __init__(self, conn: Connection, known: dict[str, int] | None = None) -> None:
        self.conn = conn
        self.known = {} if known is None else known
        self.found: dict[str, int] = {}

    def store(self, texts: Iterable[str]) -> None:
        """Number the texts not yet numbered, storing those not yet stored; then ``self[text]`` is each one's."""
        known, found = self.known, self.found
        missing = {t for t in texts if t not in known and t not in found}
        for chunk in iter_chunks(sorted(missing), 500):
            by_hash = {hashlib.sha256(t.encode()).hexdigest(): t for t in chunk}
            # Writers of different partitions may both find a text new: the first one's row stands.
            self.conn.execute(
                insert_new_only(self.conn, log_texts, ["hash"]),
                [{"hash": h, "text": t} for h, t in by_hash.items()],
            )
            rows = self.conn.execute(select(log_texts.c.hash, log_texts.c.id).where(log_texts.c.hash.in_(by_hash)))
            found.update({by_hash[row.hash]: int(row.id) for row in rows})

    def __getitem__(self, text: str) -> int:
        known = self.known.get(text)
        return known if known is not None else self.found[text]


def evaluation_row(row: dict[str, Any], texts: LogTexts) -> dict[str, Any]:
    """An evaluation as :data:`evaluations` shows it, as it is written to :data:`evaluation_rows`: its texts
    by number (each already among ``texts``)."""
    compact = {name: row[name] for name in _EVALUATION_ROW_KEPT}
    compact["playbook"] = texts[row["playbook_hash"]]
    compact["decisions"] = texts[row["decisions"]]
    compact["fired"] = texts[row["fired"]]
    compact["error"] = texts[row["error"]]
    return compact


def evaluation_texts(row: dict[str, Any]) -> tuple[str, str, str, str]:
    return (row["playbook_hash"], row["decisions"], row["fired"], row["error"])


def recommendation_row(rec: dict[str, Any], texts: LogTexts) -> dict[str, Any]:
    return {
        "evaluation_seq": rec["evaluation_seq"],
        "position": rec["position"],
        "action": texts[rec["action"]],
        "rule": texts[rec["rule"]],
        "params": texts[rec["params"]],
    }


_EVALUATION_ROW_KEPT = tuple(
    c.name for c in evaluation_rows.c if c.name not in ("playbook", "decisions", "fired", "error")
)


def _to_v11(conn: Connection) -> None:
    """Each text the log repeats stored once (:data:`log_texts`), the rows holding its number, and the views
    that show them as before; outcomes refer to the new rows.  Every link's text is unchanged: the
    entries' hashes stay valid.  Rows already compact (the view there: a log marked older than its tables)
    are left as they are."""
    if "evaluations" in inspect(conn).get_view_names():
        return
    _create(conn, [log_texts, evaluation_rows, recommendation_rows])
    texts = LogTexts(conn)
    after = 0
    while page := [
        r._asdict()
        for r in conn.execute(
            select(_v10_evaluations).where(_v10_evaluations.c.seq > after).order_by(_v10_evaluations.c.seq).limit(2000)
        )
    ]:
        texts.store(t for row in page for t in evaluation_texts(row))
        _insert_many(conn, evaluation_rows, [evaluation_row(row, texts) for row in page])
        recs = [
            r._asdict()
            for r in conn.execute(
                select(_v10_recommendations).where(
                    _v10_recommendations.c.evaluation_seq.between(page[0]["seq"], page[-1]["seq"])
                )
            )
        ]
        texts.store(t for rec in recs for t in (rec["action"], rec["rule"], rec["params"]))
        if recs:
            _insert_many(conn, recommendation_rows, [recommendation_row(rec, texts) for rec in recs])
        after = page[-1]["seq"]
    if conn.dialect.name == "postgresql":
        for key in inspect(conn).get_foreign_keys("outcomes"):
            conn.exec_driver_sql(f'ALTER TABLE outcomes DROP CONSTRAINT "{key["name"]}"')
        conn.exec_driver_sql(
            "ALTER TABLE outcomes ADD CONSTRAINT outcomes_evaluation_seq_fkey "
            "FOREIGN KEY (evaluation_seq) REFERENCES evaluation_rows (seq)"
        )
    else:  # SQLite alters no constraint: the table is made again, under the same name
        conn.exec_driver_sql("ALTER TABLE outcomes RENAME TO outcomes_v10")
        conn.exec_driver_sql("DROP INDEX ix_outcomes_evaluation")
        _create(conn, [outcomes])
        conn.exec_driver_sql("INSERT INTO outcomes SELECT * FROM outcomes_v10")
        conn.exec_driver_sql("DROP TABLE outcomes_v10")
    _v10_recommendations.drop(conn)
    _v10_evaluations.drop(conn)
    _create_views(conn)


def _rebuild(conn: Connection, table: Table, values: dict[str, str]) -> None:
    """``table`` made again as it is defined now, its rows copied into it: each column as it was, or as
    the SQL ``values`` gives it.  (SQLite cannot drop a unique column nor make one nullable in place.)"""
    for index in table.indexes:
        conn.execute(text(f"DROP INDEX {index.name}"))
    fresh = table.to_metadata(MetaData(), name=f"{table.name}_v12")
    fresh.create(conn)
    names = ", ".join(c.name for c in table.c)
    copied = ", ".join(values.get(c.name, c.name) for c in table.c)
    # identifiers and expressions of this module's own, no input: nothing to bind
    conn.execute(text(f"INSERT INTO {fresh.name} ({names}) SELECT {copied} FROM {table.name}"))  # noqa: S608
    conn.execute(text(f"DROP TABLE {table.name}"))
    conn.execute(text(f"ALTER TABLE {fresh.name} RENAME TO {table.name}"))


def _to_v12(conn: Connection) -> None:
    """Task events and deliveries without their copies of the task, each hash and each body as it was.

    An event keeps its stored state only where its task's row, with the event's status and day, does
    not give that state back (a row changed behind the log's back: verify still says so); a delivery
    keeps its body only where its event does not build the same bytes.  Its id, kind, task and
    creation time were its event's already (``<log id>-<seq>``, the status, the task, the moment), and
    a delivery never tried is due from then (``next_attempt_at`` NULL).  An event's reason is dropped
    where it is the usual one (:func:`usual_why`).  Dead letters are copied over (they refer to the
    deliveries table, made again)."""
    from engine.store.outbox import delivery_body  # the outbox reads this module's tables

    if "delivery_id" not in {c["name"] for c in inspect(conn).get_columns("deliveries")}:
        return  # a log made now: its tables were made as they are defined here
    log_id = _meta_value(conn, "log_id") or "log"
    kept_states: dict[int, str] = {}
    usual: list[int] = []
    events = task_event_rows(_v12_task_events).order_by(_v12_task_events.c.seq)
    for row in conn.execute(events.execution_options(yield_per=2000)):
        event = row._asdict()
        if event_state({**event, "state": None}) != event["state"]:
            kept_states[int(row.seq)] = event["state"]
        elif chained_event({**event, "why": None})["why"] == event["why"]:
            usual.append(int(row.seq))
    old = table_named("deliveries", column_named("event_seq"), column_named("body"))  # as version 10 made it
    told = select(old.c.event_seq, old.c.body, _v12_task_events).join(
        _v12_task_events, _v12_task_events.c.seq == old.c.event_seq
    )
    kept_bodies: dict[int, str] = {}
    for row in conn.execute(told.execution_options(yield_per=2000)):
        if delivery_body(log_id, row._asdict()) != row.body:
            kept_bodies[int(row.event_seq)] = row.body
    dead = [r._asdict() for r in conn.execute(select(dead_letters).order_by(dead_letters.c.id))]
    dead_letters.drop(conn)
    due_at_once = "CASE WHEN next_attempt_at = created_at THEN NULL ELSE next_attempt_at END"
    _rebuild(conn, deliveries, {"body": "NULL", "next_attempt_at": due_at_once})
    dead_letters.create(conn)
    if dead:
        conn.execute(insert(dead_letters), dead)
        if conn.dialect.name == "postgresql":
            conn.execute(
                select(func.setval(func.pg_get_serial_sequence("dead_letters", "id"), max(r["id"] for r in dead)))
            )
    _rebuild(conn, _v12_task_events, {"state": "NULL"})
    for seq, state in kept_states.items():
        conn.execute(update(_v12_task_events).where(_v12_task_events.c.seq == seq).values(state=state))
    for chunk in iter_chunks(usual, 500):  # reasons are dropped only where the state is the task's
        conn.execute(update(_v12_task_events).where(_v12_task_events.c.seq.in_(chunk)).values(why=None))
    for seq, body in kept_bodies.items():
        conn.execute(update(deliveries).where(deliveries.c.event_seq == seq).values(body=body))


_RETYPED = {  # each table's time, then its hashes
    "evaluation_rows": ("created_at", "prev_hash", "entry_hash"),
    "task_events": ("at", "prev_hash", "entry_hash"),
}
_TEXT_TO_NUMBER = {  # PostgreSQL: a stamp as microseconds since 1970, exactly (EXTRACT gives a numeric)
    "created_at": "(EXTRACT(EPOCH FROM CAST(created_at AS TIMESTAMPTZ)) * 1000000)::BIGINT",
    "at": "(EXTRACT(EPOCH FROM CAST(at AS TIMESTAMPTZ)) * 1000000)::BIGINT",
}


def _check_texts(conn: Connection, name: str) -> None:
    """ValueError naming the first row of ``name`` whose stored hash or time would not come back as the
    same text from its new type (a row changed behind the log's back): nothing is converted then."""
    query = text(f"SELECT seq, {', '.join(_RETYPED[name])} FROM {name} ORDER BY seq")  # noqa: S608 (our names)
    for seq, stamp, *hashes in conn.execute(query.execution_options(yield_per=5000)):
        try:
            stamp_number(stamp)
            for value in hashes:
                Sha256().process_bind_param(value, conn.dialect)
        except ValueError as error:
            raise ValueError(f"{name} row {seq} cannot be stored as schema version 13 stores it: {error}") from None


def _to_v13(conn: Connection) -> None:
    """Hashes as 32 bytes and times as microseconds since 1970 in the two tables that grow with every
    case, evaluation rows and task events (:class:`Sha256`, :class:`Stamp`): each comes back the same
    text, so every link's hash stays what it was; the view shows texts as before.  Tables already made
    so (a log made now, or evaluation rows made by version 11's migration) are left as they are."""
    views = set(inspect(conn).get_view_names())
    for name in _views(conn.dialect.name):
        if name in views:
            conn.exec_driver_sql(f"DROP VIEW {name}")
    for table in (evaluation_rows, task_events):
        stored = {c["name"]: c["type"] for c in inspect(conn).get_columns(table.name)}
        if isinstance(stored["entry_hash"], LargeBinary):
            continue
        _check_texts(conn, table.name)
        if conn.dialect.name == "postgresql":
            stamp_column, *hash_columns = _RETYPED[table.name]
            changes = [f"ALTER COLUMN {c} TYPE BYTEA USING decode({c}, 'hex')" for c in hash_columns]
            changes.append(f"ALTER COLUMN {stamp_column} TYPE BIGINT USING {_TEXT_TO_NUMBER[stamp_column]}")
            conn.exec_driver_sql(f"ALTER TABLE {table.name} {', '.join(changes)}")
            continue
        # SQLite changes no column's type: the table is made again.  Dropping a table that rows of other
        # tables refer to (evaluation rows: recommendations, outcomes) counts them as broken references,
        # mended as each row is put back in the new table, all before the commit checks.
        conn.exec_driver_sql("PRAGMA defer_foreign_keys = ON")
        conn.exec_driver_sql(f"CREATE TABLE {table.name}_v12 AS SELECT * FROM {table.name}")  # noqa: S608
        conn.exec_driver_sql(f"DROP TABLE {table.name}")
        table.create(conn)
        # one query streamed (a page per query would sort the copy, which has no key, each time)
        copied = text(f"SELECT * FROM {table.name}_v12 ORDER BY seq")  # noqa: S608
        rows = conn.execute(copied.execution_options(yield_per=5000))
        for page in iter_chunks(rows.mappings(), 5000):
            _insert_many(conn, table, [dict(row) for row in page])
        conn.exec_driver_sql(f"DROP TABLE {table.name}_v12")
    _create_views(conn)


# Each version's migration from the one before: additive (tables created, chain heads inserted), but
# version 11's, which rewrote the evaluations' rows, version 12's, which makes two tables again
# without the copies they held, and version 13's, which changes the types of their hashes and times.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {
    1: _to_v1,
    2: _to_v2,
    3: _to_v3,
    4: _to_v4,
    5: _to_v5,
    6: _to_v6,
    7: _to_v7,
    8: _to_v8,
    9: _to_v9,
    10: _to_v10,
    11: _to_v11,
    12: _to_v12,
    13: _to_v13,
}


def migrate(conn: Connection, partitions: int = 1) -> None:
    """Create the schema, or bring an older one up to SCHEMA_VERSION in place, in the caller's write
    transaction: each version's migration in turn, and the version noted after each.

    SchemaDamaged when a table or column of the version the database says it has is missing:
    nothing is repaired or created over it.  ``partitions``: of the record chains, for a log made now.
    """
    if conn.dialect.name == "postgresql":
        # programs started at once on a fresh database would race on CREATE TABLE: one at a
        # time, each seeing what the one before it made (SQLite's BEGIN IMMEDIATE does this)
        conn.execute(select(func.pg_advisory_xact_lock(_SCHEMA_LOCK)))
    current = 0
    catalog = _Catalog(conn)
    if "meta" in catalog.tables:
        current = int(_meta_value(conn, "schema_version") or 0)
    if current > SCHEMA_VERSION:
        raise RuntimeError(f"the database has schema version {current}; this program knows up to {SCHEMA_VERSION}")
    damage = _schema_damage(conn, current, catalog)
    if damage:
        raise SchemaDamaged(damage)
    for version in range(current + 1, SCHEMA_VERSION + 1):
        if version == 9 and current == 0:
            _to_v9(conn, partitions)
        else:
            MIGRATIONS[version](conn)
        conn.execute(update(meta).where(meta.c.key == "schema_version").values(value=str(version)))
