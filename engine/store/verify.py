"""Tamper evidence: every chain walked and its links checked, records' and tasks' rows against the
states their chains hold, playbook texts against their hashes, a log against a checkpoint; and
every link sealed again under a new key (reseal)."""

from __future__ import annotations

import hashlib
import hmac
import operator
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, TypeDecorator, bindparam, func, select, update

from engine.store.chain import (
    _JSON_FIELDS,
    _PLAIN_FIELDS,
    CHECKPOINT_FORMAT,
    GENESIS,
    _evaluation_body,
    _link_body,
    _link_hash,
    _Seal,
    _state_hash,
    canonical,
)
from engine.store.partitions import _partitions, head_partition, link_seq, partition_head
from engine.store.schema import (
    _CHAIN_ROWS,
    _CHAIN_TABLES,
    _meta_value,
    chain_head,
    chained_event,
    evaluations,
    playbooks,
    recommendations,
    record_changes,
    records,
    task_event_rows,
    task_events,
    task_state,
    tasks,
)


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


def _chain_rows(conn: Connection, chain: str) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Each link of ``chain`` in order, with its recommendations (evaluations) - in pages, so that the
    caller may write between them."""
    table = _CHAIN_TABLES[chain]
    query: Any = task_event_rows() if chain == "tasks" else select(table)
    after = 0
    while True:
        page = [r._asdict() for r in conn.execute(query.where(table.c.seq > after).order_by(table.c.seq).limit(2000))]
        if chain == "tasks":
            page = [chained_event(row) for row in page]
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
    if conn.dialect.name == "postgresql":
        # Every row is read: a plan for the whole result, never a nested loop that a fresh log's stale
        # statistics can make quadratic (the pairing queries group the chain and join it back).
        conn.exec_driver_sql("SET LOCAL enable_nestloop = off")
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None  # the connection is open
    # the columns of the store's own types (hashes as bytes, times as numbers) given back as their texts
    converted = [
        (place, processor)
        for place, column in enumerate(query.selected_columns)
        if isinstance(column.type, TypeDecorator) and (processor := column.type.result_processor(conn.dialect, None))
    ]
    cursor = dbapi.cursor(name=f"playbook_{uuid.uuid4().hex}") if conn.dialect.name == "postgresql" else dbapi.cursor()
    try:
        cursor.execute(str(query.compile(dialect=conn.dialect)))
        while page := cursor.fetchmany(2000):
            if converted:
                for values in page:
                    row = list(values)
                    for place, process in converted:
                        row[place] = process(row[place])
                    yield tuple(row)
            else:
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
    query: Any = task_event_rows() if chain == "tasks" else select(table)  # a task event's state put back
    names = tuple(column.name for column in query.selected_columns)
    seq_at, prev_at, entry_at = names.index("seq"), names.index("prev_hash"), names.index("entry_hash")
    rows = _driver_rows(conn, query.order_by(table.c.seq))
    if chain != "evaluations":
        for values in rows:
            row = dict(zip(names, values, strict=True))
            if chain == "tasks" and bodies:
                row = chained_event(row)
            # an event whose task's row is gone has no state to check: the task is named deleted
            body = _link_body(chain, row) if bodies and row.get("state", "") is not None else None
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


def _latest_links(table: Any, *keys: Any) -> Any:
    """Each key's latest link in ``table``'s chain: the keys and the greatest ``seq`` among their links."""
    return select(*keys, func.max(table.c.seq).label("seq")).group_by(*keys).subquery("latest")


def _named_rows(conn: Connection, query: Any) -> Iterator[dict[str, Any]]:
    """A query's rows as dicts by column name, streamed (:func:`_driver_rows`)."""
    names = tuple(query.selected_columns.keys())
    for values in _driver_rows(conn, query):
        yield dict(zip(names, values, strict=True))


def _verify_record_states(conn: Connection) -> list[ChainProblem]:
    """Each record's stored state against the latest link of it in the records chain.

    The database pairs each state with its latest link, both ways, and the pairs are streamed: memory does not
    grow with the records (a dict of every record's latest link held them all)."""
    latest = _latest_links(record_changes, record_changes.c.source, record_changes.c.record_id)
    link = record_changes.alias("link")
    same_record = (latest.c.source == records.c.source) & (latest.c.record_id == records.c.record_id)
    problems: list[ChainProblem] = []
    states = (
        select(records, link.c.seq.label("link_seq"), link.c.version.label("link_version"), link.c.state_hash)
        .select_from(records.outerjoin(latest, same_record).outerjoin(link, link.c.seq == latest.c.seq))
        .order_by(records.c.source, records.c.record_id)
    )
    for state in _named_rows(conn, states):
        name = f"record {state['record_id']} of {state['source']}"
        seq = state["link_seq"]
        if seq is None:
            problems.append(
                ChainProblem("records", 0, "unchained", f"the state of {name} is in no link of the chain: it was added")
            )
        elif _state_hash(state) != state["state_hash"] or int(state["version"]) != state["link_version"]:
            problems.append(
                ChainProblem(
                    "records",
                    seq,
                    "edited",
                    f"the stored state of {name} is not the one chained at #{seq}: it was changed",
                )
            )
    missing = (
        select(latest.c.seq, latest.c.source, latest.c.record_id)
        .select_from(latest.outerjoin(records, same_record))
        .where(records.c.record_id.is_(None))
        .order_by(latest.c.source, latest.c.record_id)
    )
    for seq, source, record_id in _driver_rows(conn, missing):
        problems.append(
            ChainProblem(
                "records", seq, "deleted", f"the state of record {record_id} of {source}, chained at #{seq}, is missing"
            )
        )
    return problems


def _verify_task_states(conn: Connection) -> list[ChainProblem]:
    """Each task's row against the state its latest event chained: the state it stores, else (schema
    version 12) the row with the event's status and day, which is the row itself when they match.
    Streamed as the records' states are."""
    latest = _latest_links(task_events, task_events.c.task_id)
    link = task_events.alias("link")
    problems: list[ChainProblem] = []
    rows = (
        select(
            tasks,
            link.c.seq.label("link_seq"),
            link.c.state.label("link_state"),
            link.c.status.label("link_status"),
            link.c.as_of.label("link_as_of"),
        )
        .select_from(
            tasks.outerjoin(latest, latest.c.task_id == tasks.c.id).outerjoin(link, link.c.seq == latest.c.seq)
        )
        .order_by(tasks.c.id)
    )
    for row in _named_rows(conn, rows):
        seq = row["link_seq"]
        if seq is None:
            problems.append(ChainProblem("tasks", 0, "unchained", f"task {row['id']} is in no event of the chain"))
        elif (
            task_state(row) != row["link_state"]
            if row["link_state"] is not None
            else (row["status"], row["as_of"]) != (row["link_status"], row["link_as_of"])
        ):
            problems.append(
                ChainProblem(
                    "tasks", seq, "edited", f"task {row['id']} is not as its event #{seq} left it: it was changed"
                )
            )
    missing = (
        select(latest.c.seq, latest.c.task_id)
        .select_from(latest.outerjoin(tasks, latest.c.task_id == tasks.c.id))
        .where(tasks.c.id.is_(None))
        .order_by(latest.c.task_id)
    )
    for seq, task_id in _driver_rows(conn, missing):
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
    table = _CHAIN_ROWS[chain]
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


def _against_checkpoint(
    conn: Connection, seal: _Seal, checkpoint: dict[str, Any], stored_key: str | None
) -> list[ChainProblem]:
    """What of ``checkpoint`` the log no longer holds; its signature checked when ``seal`` has a key."""

    def problem(kind: str, message: str, chain: str = "checkpoint", seq: int = 0) -> list[ChainProblem]:
        return [ChainProblem(chain, seq, kind, message)]

    body = {k: v for k, v in checkpoint.items() if k != "mac"}
    chains = body.get("chains")
    if body.get("format") != CHECKPOINT_FORMAT or not isinstance(chains, dict):
        return problem("checkpoint_unreadable", f"this is not a checkpoint of this program ({CHECKPOINT_FORMAT})")
    if seal.key_id is not None:
        if body.get("key_id") != seal.key_id:
            return problem(
                "checkpoint_other_key",
                f"the checkpoint was signed with key {body.get('key_id')}, not with the key given "
                f"({seal.key_id}); verify it with its own key",
            )
        expected = seal.link("", canonical(body))
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
