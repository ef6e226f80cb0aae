"""The audit log: every evaluation kept, append-only and hash-chained, under the playbook version that made it.

One module per concern: ``schema`` (tables, version, one migration per version), ``chain`` (canonical
JSON, keys and seals, the text each link seals), ``clock`` (the time rows are stamped with),
``entries`` (what is appended and read back), ``writer`` (one write transaction), ``verify``
(tamper evidence, reseal), ``book`` (the open book and its aggregates in SQL) and ``core``
(:class:`Store`: connections, upgrades, queries, backups).  The names below are the package's
(and, as ``X as X``, the private ones engine/tasks.py takes from here).
"""

from engine.limits import ID_LENGTH
from engine.store.batch import iter_chunks
from engine.store.book import AGGREGATE_FUNCTIONS, AggregateSpec, GroupAggregate, OpenBook, aggregate_variables
from engine.store.chain import CHECKPOINT_FORMAT, GENESIS, MIN_KEY_BYTES, AuditKeyError, audit_key, canonical, key_id
from engine.store.chain import _Seal as _Seal
from engine.store.chain import _task_event_hash as _task_event_hash
from engine.store.clock import Clock, stamp, utc_now
from engine.store.clock import _now as _now
from engine.store.core import DEFAULT_URL, NoAuditLog, Store, TamperedRecord, backup_sqlite, sqlite_path
from engine.store.entries import (
    OUTCOME_STATUSES,
    Appended,
    Prepared,
    QuarantinedEvent,
    RecordState,
    StoredEvaluation,
    filed_record,
    oversized_id,
)
from engine.store.partitions import ChainHeads, link_seq, partition_head, partition_of
from engine.store.schema import (
    CHAINS,
    PARTITIONED,
    SCHEMA_VERSION,
    TASK_FIELDS,
    SchemaDamaged,
    chain_head,
    chained_event,
    clock_timers,
    console_users,
    evaluation_rows,
    evaluations,
    log_texts,
    meta,
    metadata,
    outcomes,
    playbooks,
    quarantined_events,
    recommendation_rows,
    recommendations,
    record_changes,
    records,
    task_event_rows,
    task_events,
    task_state,
    tasks,
    usual_why,
)
from engine.store.schema import _meta_value as _meta_value
from engine.store.verify import ChainProblem
from engine.store.writer import Reading, Writer, prepare
from engine.store.writer import _lock_head as _lock_head

__all__ = [
    "AGGREGATE_FUNCTIONS",
    "CHAINS",
    "CHECKPOINT_FORMAT",
    "DEFAULT_URL",
    "GENESIS",
    "ID_LENGTH",
    "MIN_KEY_BYTES",
    "OUTCOME_STATUSES",
    "PARTITIONED",
    "SCHEMA_VERSION",
    "TASK_FIELDS",
    "AggregateSpec",
    "Appended",
    "AuditKeyError",
    "ChainHeads",
    "ChainProblem",
    "Clock",
    "GroupAggregate",
    "NoAuditLog",
    "OpenBook",
    "Prepared",
    "QuarantinedEvent",
    "Reading",
    "RecordState",
    "SchemaDamaged",
    "Store",
    "StoredEvaluation",
    "TamperedRecord",
    "Writer",
    "aggregate_variables",
    "audit_key",
    "backup_sqlite",
    "canonical",
    "chain_head",
    "chained_event",
    "clock_timers",
    "console_users",
    "evaluation_rows",
    "evaluations",
    "filed_record",
    "iter_chunks",
    "key_id",
    "link_seq",
    "log_texts",
    "meta",
    "metadata",
    "outcomes",
    "oversized_id",
    "partition_head",
    "partition_of",
    "playbooks",
    "prepare",
    "quarantined_events",
    "recommendation_rows",
    "recommendations",
    "record_changes",
    "records",
    "sqlite_path",
    "stamp",
    "task_event_rows",
    "task_events",
    "task_state",
    "tasks",
    "usual_why",
    "utc_now",
]
