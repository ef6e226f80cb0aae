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
was stored before explaining it.  Since schema version 11 the texts the rows repeat
(the playbook's hash, decisions, rules fired, errors, recommendations' action, rule and
parameters) are stored once each, in ``log_texts``, and the views ``evaluations`` and
``recommendations`` show the rows as before (engine/store/schema.py).

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
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Generator, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Connection,
    Engine,
    cast,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
    type_coerce,
    update,
)
from sqlalchemy.engine import make_url

from engine.model import Condition, Playbook
from engine.store.batch import iter_chunks
from engine.store.book import (
    AggregateSpec,
    GroupAggregate,
    OpenBook,
    _condition_sql,
    _json_reader,
    _open_cases,
    aggregate_variables,
)
from engine.store.chain import _PLAIN, CHECKPOINT_FORMAT, AuditKeyError, _outcome_hash, _Seal, canonical
from engine.store.clock import Clock, stamp, utc_now
from engine.store.entries import (
    OUTCOME_STATUSES,
    Appended,
    QuarantinedEvent,
    RecordState,
    StoredEvaluation,
    _outcome_of,
    _state_of,
)
from engine.store.partitions import ChainHeads, _partitions, partition_head
from engine.store.schema import (
    CHAINS,
    SchemaDamaged,
    _is_empty,
    _meta_value,
    _schema_damage,
    chain_head,
    console_users,
    evaluations,
    meta,
    migrate,
    outcomes,
    playbooks,
    quarantined_events,
    recommendations,
    records,
)
from engine.store.verify import (
    ChainProblem,
    _against_checkpoint,
    _reseal_chain,
    _verify_chain,
    _verify_playbook_texts,
    _verify_record_states,
    _verify_task_states,
)
from engine.store.writer import Reading, Writer, _lock_head

DEFAULT_URL = "sqlite:///playbook.db"
_TEXTS_KNOWN = 100_000  # log texts' numbers kept in memory, at most


class TamperedRecord(LookupError):
    """A stored text does not match the hash it is filed under."""


class NoAuditLog(LookupError):
    """The database opened to be read holds no audit log (a SQLite file that does not exist: none is made)."""


class Store:
    """An audit log in one database.  Open with a SQLAlchemy URL; the schema is created or upgraded.

    ``create`` False: the log must exist already (commands that only read it); else :class:`NoAuditLog`.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        key: bytes | None = None,
        create: bool = True,
        clock: Clock = utc_now,
        partitions: int | None = None,
    ) -> None:
        """``key``: the audit key (see :func:`audit_key`); without it a keyed log can be read but not
        written, and verified for its structure only.  ``clock``: the time rows are stamped with (the
        real UTC clock unless a test or a simulation fixes it).  ``partitions``: how many partitions the
        record chains of a log made now have (default 1; engine/store/partitions.py); a log that
        exists keeps its own."""
        self.clock = clock
        self.partitions = partitions or 1
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
        self._known_texts: dict[str, int] = {}  # the numbers of log texts committed (schema.LogTexts)
        self._seal = _Seal(key)
        self.key_id = self._seal.key_id
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
            engine = create_engine(url, pool_pre_ping=True)
            if parsed.get_backend_name() == "postgresql":
                event.listen(engine, "connect", _custom_plans_only)
            return engine
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
            # given to the driver itself: through SQLAlchemy the statement cost more than SQLite's BEGIN and COMMIT
            driver = conn.connection.driver_connection
            assert driver is not None
            driver.execute("BEGIN IMMEDIATE" if writes else "BEGIN")

        return engine

    def now(self) -> str:
        """The time now by the store's clock, as rows are stamped with it."""
        return stamp(self.clock())

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
        """Create the schema, or bring an older one up to SCHEMA_VERSION in place (schema.migrate).

        SchemaDamaged when a table or column of the version the database says it has is missing:
        nothing is repaired or created over it.
        """
        with self._begin() as conn:
            migrate(conn, self.partitions)
            if self._seal.key_id is not None and _meta_value(conn, "audit_key_id") is None and _is_empty(conn):
                # A new (or still empty) log is sealed with the key it is first opened with.
                conn.execute(insert(meta), [{"key": "audit_key_id", "value": self._seal.key_id}])
            self.partitions = int(_meta_value(conn, "partitions") or 1)

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
        """One write transaction (see :class:`Writer` for what it locks): it all commits, or none of it."""
        with self._begin() as conn:
            writer = Writer(conn, self._known_playbooks, self._sealing, self.clock, self.partitions, self._known_texts)
            yield writer
            writer.finish()
        self._known_playbooks |= writer.playbooks_saved  # committed: playbook rows are never removed
        if "texts" in writer.__dict__:  # committed: log texts are never removed, their numbers never change
            if len(self._known_texts) > _TEXTS_KNOWN:
                self._known_texts = {}  # a new one: writers still running keep theirs
            self._known_texts.update(writer.texts.found)

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
                "at": self.now(),
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
            conn.execute(insert(console_users), [{**row, "created_at": self.now()}])

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
                problems += _against_checkpoint(conn, self._seal, checkpoint, stored)
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
                "made_at": self.now(),
                "chains": heads,
            }
        return body | {"mac": seal.link("", canonical(body))}


def _custom_plans_only(dbapi_connection: Any, _record: Any) -> None:
    """Plan each statement for its own parameters.  psycopg prepares a statement run five times, and
    PostgreSQL then keeps one generic plan for it, costed with the statistics the tables had: none yet
    for a log being filled.  A batch's look-up of 500 keys then scanned every row of its table with each
    key in turn (two look-ups of an import's batch of 2,000 cases took 170 ms, 1.5 ms with its plan)."""
    if dbapi_connection.info.server_version < 120000:  # the setting is PostgreSQL 12's
        return
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET plan_cache_mode = force_custom_plan")
    dbapi_connection.commit()


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
