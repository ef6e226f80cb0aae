"""Schema version 12: task events and deliveries without their copies of the task.

The logs in tests/fixtures/workflow_log were written by schema version 10's code (tests/workflow_log.py,
at 1baa9bc): tasks made, moved by outcomes and ticks, notifications dead, put back, delivered, failing
and never tried.  Migrated, on SQLite and PostgreSQL, with and without an audit key, they keep every
hash, every task state and every delivery's id and bytes, and answer as a log written fresh from the
same inputs."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy import select

from adapters.notify import Deliverer, NotifyConfig
from adapters.webhook import verify_generic
from cli import main
from engine.store import SCHEMA_VERSION, Store, audit_key, meta, task_events
from engine.store.outbox import KINDS, listing
from engine.store.schema import deliveries
from engine.tasks import history
from tests import workflow_log
from tests.test_import_run import needs_maven

FIXTURES = Path(__file__).parent / "fixtures" / "workflow_log"
KEY = "k" * 64  # the keyed fixture's audit key (a test's, not a secret)
LOGS = {"plain": None, "keyed": KEY}
LATER = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)  # every delivery due


def _key(name: str) -> bytes | None:
    given = LOGS[name]
    return None if given is None else audit_key(given)


def _old_file(name: str, folder: Path) -> Path:
    path = folder / f"v10-{name}.db"
    path.write_bytes(gzip.decompress((FIXTURES / f"v10-{name}.db.gz").read_bytes()))
    return path


def _load(old: Path, url: str) -> None:
    """The version-10 log ``old`` at ``url``: the file itself for SQLite; for PostgreSQL, its tables made
    there as version 10 defined them (read from the file) and its rows copied."""
    if url.startswith("sqlite"):
        Path(url.removeprefix("sqlite:///")).write_bytes(old.read_bytes())
        return
    source, target = sa.create_engine(f"sqlite:///{old}"), sa.create_engine(url)
    tables = sa.MetaData()
    tables.reflect(source)
    with source.connect() as reading, target.begin() as writing:
        tables.create_all(writing)
        for table in tables.sorted_tables:
            rows = [row._asdict() for row in reading.execute(select(table))]
            if rows:
                writing.execute(sa.insert(table), rows)
    source.dispose()
    target.dispose()


def _old_rows(old: Path, query: str) -> list[dict[str, Any]]:
    with sqlite3.connect(old) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute(query)]


@pytest.mark.parametrize("name", sorted(LOGS))
def test_a_migrated_log_keeps_every_hash_task_state_and_delivery(db_url: str, tmp_path: Path, name: str) -> None:
    old = _old_file(name, tmp_path)
    _load(old, db_url)
    store = Store(db_url, key=_key(name), clock=lambda: LATER)
    try:
        assert store.verify() == []
        with store._connect() as conn:
            version = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
            assert version == str(SCHEMA_VERSION)
            # nothing copied is kept: every state and body is built again, the same
            assert conn.execute(select(sa.func.count()).where(task_events.c.state.is_not(None))).scalar() == 0
            assert conn.execute(select(sa.func.count()).where(deliveries.c.body.is_not(None))).scalar() == 0
            shown = {row["event_seq"]: row for row in listing(conn)}
            dead = listing(conn, dead=True)

        events = _old_rows(old, "SELECT * FROM task_events ORDER BY seq")
        for task_id in sorted({event["task_id"] for event in events}):
            moves = [e for e in events if e["task_id"] == task_id]
            assert [
                {**move, "task": json.dumps(move["task"], sort_keys=True, separators=(",", ":"))}
                for move in history(store, task_id)
            ] == [
                {"event": e["seq"], "status": e["status"], "who": e["who"], "why": e["why"], "as_of": e["as_of"],
                 "at": e["at"], "task": e["state"]}
                for e in moves
            ]  # fmt: skip

        sent = _old_rows(old, "SELECT * FROM deliveries ORDER BY event_seq")
        assert {seq: {**row, "body": None} for seq, row in shown.items()} == {
            row["event_seq"]: {k: v for k, v in row.items() if k not in ("lease_owner", "lease_until")} | {"body": None}
            for row in sent
        }
        assert dead == [
            {k: v for k, v in row.items() if k not in ("body", "lease_owner", "lease_until")}
            for row in _old_rows(
                old,
                "SELECT d.*, l.died_at FROM deliveries d JOIN dead_letters l ON l.event_seq = d.event_seq "
                "WHERE l.retried_at IS NULL ORDER BY d.event_seq",
            )
        ]

        # the pending ones are sent as they were written: the same id, kind and bytes, signed
        receiver = workflow_log.Receiver()
        try:
            targets = dict.fromkeys(KINDS.values(), f"{receiver.url}/ok")
            report = Deliverer(store, NotifyConfig(targets, workflow_log.SECRET)).run_once()
        finally:
            receiver.close()
        pending = {row["delivery_id"]: row for row in sent if row["status"] == "pending"}
        assert report.delivered == len(pending) > 0
        assert {delivery: (kind, body.decode()) for delivery, kind, _, body in receiver.received} == {
            delivery: (row["kind"], row["body"]) for delivery, row in pending.items()
        }
        for _, _, signature, body in receiver.received:
            verify_generic(workflow_log.SECRET, body=body, signature=signature, now=LATER.timestamp())
        assert store.verify() == []
    finally:
        store.close()


def _answers(url: str, key: str | None) -> dict[str, str]:
    """What the log shows of its tasks and notifications, every command's output, the log's id and the
    receivers' ports made the same."""
    env = {"PLAYBOOK_AUDIT_KEY": key} if key else {}
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(main, [*args, "--db", url], env=env, catch_exceptions=False)
        assert result.exit_code == 0, (args, result.output)
        return str(result.output)  # verify says its verdict on stderr

    engine = sa.create_engine(url)
    with engine.connect() as conn:
        log_id = str(conn.execute(select(meta.c.value).where(meta.c.key == "log_id")).scalar())
        records = list(conn.execute(sa.text("SELECT DISTINCT record FROM tasks ORDER BY record")).scalars())
        task_ids = list(conn.execute(sa.text("SELECT id FROM tasks ORDER BY id")).scalars())
        evaluated = list(conn.execute(sa.text("SELECT seq FROM evaluations ORDER BY seq")).scalars())
    engine.dispose()
    shown = {
        "verify": run("audit", "verify"),
        "agenda": run("agenda", "--as-of", "2017-04-16", "--format", "json"),
        "agenda zh": run("agenda", "--as-of", "2017-04-16", "--lang", "zh"),
        "tasks": run("tasks", "list", "--format", "json"),
        "deliveries": run("deliveries", "--format", "json"),
        "dead": run("deliveries", "--dead", "--format", "json"),
    }
    shown |= {f"task {n}": run("tasks", "history", str(n), "--format", "json") for n in task_ids}
    shown |= {f"history {r}": run("history", r, "--format", "json", "--lang", "en") for r in records}
    shown |= {f"why {s}": run("why", str(s), "--format", "json", "--lang", "en") for s in evaluated}
    return {k: re.sub(r"127\.0\.0\.1:\d+", "PORT", v.replace(log_id, "LOG")) for k, v in shown.items()}


@needs_maven
@pytest.mark.parametrize("name", sorted(LOGS))
def test_a_migrated_log_answers_as_one_written_fresh(db_url: str, tmp_path: Path, name: str) -> None:
    _load(_old_file(name, tmp_path), db_url)
    Store(db_url, key=_key(name)).close()  # migrated
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}" if db_url.startswith("sqlite") else _another_database(db_url)
    (tmp_path / "inputs").mkdir()
    workflow_log.build(fresh, tmp_path / "inputs", LOGS[name])
    migrated, written = _answers(db_url, LOGS[name]), _answers(fresh, LOGS[name])
    assert migrated.keys() == written.keys()
    for what in migrated:
        assert migrated[what] == written[what], what
    assert "ok: the chains verify" in migrated["verify"]


def _another_database(url: str) -> str:
    """A new PostgreSQL database on the server of ``url``."""
    import uuid

    import psycopg

    base = url.rsplit("/", 1)[0]
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base.replace("postgresql+psycopg", "postgresql") + "/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # a generated name, not user input
    return f"{base}/{name}"


def test_a_delivery_whose_task_was_deleted_is_listed_not_sent(db_url: str, tmp_path: Path) -> None:
    """Its body is built from its task's row: with the row gone there is nothing true to send, so it
    waits in the outbox (listed) while verify names the task deleted; the others go out."""
    old = _old_file("plain", tmp_path)
    _load(old, db_url)
    store = Store(db_url, clock=lambda: LATER)
    pending = [
        row for row in _old_rows(old, "SELECT * FROM deliveries ORDER BY event_seq") if row["status"] == "pending"
    ]
    gone = pending[0]
    try:
        with store.engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM tasks WHERE id = :t"), {"t": gone["task_id"]})
        assert ("tasks", "deleted") in {(p.chain, p.kind) for p in store.verify()}
        receiver = workflow_log.Receiver()
        try:
            targets = dict.fromkeys(KINDS.values(), f"{receiver.url}/ok")
            Deliverer(store, NotifyConfig(targets, workflow_log.SECRET)).run_once()
        finally:
            receiver.close()
        sent = {delivery for delivery, *_ in receiver.received}
        assert gone["delivery_id"] not in sent
        assert sent == {row["delivery_id"] for row in pending if row["task_id"] != gone["task_id"]}
        with store._connect() as conn:
            assert {row["event_seq"]: row["status"] for row in listing(conn)}[gone["event_seq"]] == "pending"
    finally:
        store.close()
