"""Schema version 13: hashes stored as their 32 bytes and times as microseconds in evaluation rows and task events.

The logs in tests/fixtures/v12_log were written by schema version 12's code (tests/workflow_log.py, at
a653d04): evaluations, tasks moved by outcomes and ticks, notifications dead, retried and delivered.
Migrated, on SQLite and PostgreSQL, with and without an audit key, they keep every hash and every
text a reader sees, and answer as a log written fresh from the same inputs."""

from __future__ import annotations

import datetime as dt
import gzip
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy import select, text

from cli import main
from engine import Evaluator, compile_playbook, load_playbook
from engine.audit import import_cases
from engine.store import SCHEMA_VERSION, Store, chain_head, evaluations, meta, task_events
from engine.store.batch import COPY_FROM
from engine.store.schema import Sha256, Stamp, stamp_number, stamp_text
from tests import workflow_log
from tests.conftest import AS_OF
from tests.test_import_run import needs_maven
from tests.test_store import sample_items
from tests.test_workflow_migration import KEY, _another_database, _answers, _load

FIXTURES = Path(__file__).parent / "fixtures" / "v12_log"
LOGS = {"plain": None, "keyed": KEY}
COURSE = Path(__file__).resolve().parent.parent / "playbooks" / "course.yaml"


def _old_file(name: str, folder: Path) -> Path:
    path = folder / f"v12-{name}.db"
    path.write_bytes(gzip.decompress((FIXTURES / f"v12-{name}.db.gz").read_bytes()))
    return path


def _old_rows(old: Path, query: str) -> list[dict[str, Any]]:
    with sqlite3.connect(old) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute(query)]


def _load_v12(old: Path, url: str) -> None:
    """The version-12 log ``old`` at ``url``: on PostgreSQL its tables copied (:func:`_load`), its views
    made as version 12 made them and its numbering going on after the rows copied."""
    _load(old, url)
    if url.startswith("sqlite"):
        return
    views = _old_rows(old, "SELECT sql FROM sqlite_master WHERE type = 'view' ORDER BY name")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for view in views:
            conn.exec_driver_sql(view["sql"])
        for table in ("log_texts", "dead_letters"):
            conn.execute(
                text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT MAX(id) FROM {table}))")  # noqa: S608
            )
    engine.dispose()


def _migrated(old: Path, url: str, name: str) -> None:
    _load_v12(old, url)
    with CliRunner().isolated_filesystem():
        env = {"PLAYBOOK_AUDIT_KEY": LOGS[name]} if LOGS[name] else {}
        result = CliRunner().invoke(main, ["audit", "verify", "--db", url], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "ok: the chains verify" in result.output


@pytest.mark.parametrize("name", sorted(LOGS))
def test_a_migrated_log_keeps_every_hash_and_text(db_url: str, tmp_path: Path, name: str) -> None:
    old = _old_file(name, tmp_path)
    _migrated(old, db_url, name)
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).scalar() == str(
                SCHEMA_VERSION
            )
            heads = {r.chain: (r.seq, r.hash) for r in conn.execute(select(chain_head))}
            # a reader of SQL sees the view's texts as before, hashes and times included
            shown = [dict(r) for r in conn.execute(text("SELECT * FROM evaluations ORDER BY seq")).mappings()]
            events = [dict(r) for r in conn.execute(select(task_events).order_by(task_events.c.seq)).mappings()]
            stored = conn.execute(text("SELECT created_at, entry_hash FROM evaluation_rows WHERE seq = 1")).one()
    finally:
        engine.dispose()
    assert heads == {r["chain"]: (r["seq"], r["hash"]) for r in _old_rows(old, "SELECT * FROM chain_head")}
    before = _old_rows(old, "SELECT * FROM evaluations ORDER BY seq")
    assert [{**row, "no_action": bool(row["no_action"])} for row in shown] == [
        {**row, "no_action": bool(row["no_action"])} for row in before
    ]
    assert events == _old_rows(old, "SELECT * FROM task_events ORDER BY seq")
    # and stores them in their compact types: 32 bytes, a number
    assert stored.entry_hash == bytes.fromhex(before[0]["entry_hash"]) and len(stored.entry_hash) == 32
    assert stored.created_at == stamp_number(before[0]["created_at"])


@needs_maven
@pytest.mark.parametrize("name", sorted(LOGS))
def test_a_migrated_log_answers_as_one_written_fresh(db_url: str, tmp_path: Path, name: str) -> None:
    _migrated(_old_file(name, tmp_path), db_url, name)
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}" if db_url.startswith("sqlite") else _another_database(db_url)
    (tmp_path / "inputs").mkdir()
    workflow_log.build(fresh, tmp_path / "inputs", LOGS[name])
    migrated, written = _answers(db_url, LOGS[name]), _answers(fresh, LOGS[name])
    migrated |= _listed(db_url, LOGS[name])
    written |= _listed(fresh, LOGS[name])
    assert migrated.keys() == written.keys()
    for what in migrated:
        assert migrated[what] == written[what], what
    assert migrated["list"].count("\n") == 12


def _listed(url: str, key: str | None) -> dict[str, str]:
    """``list`` and ``replay`` as they show the log (the log's texts, its times and hashes left out of
    neither)."""
    env = {"PLAYBOOK_AUDIT_KEY": key} if key else {}
    runner = CliRunner()
    shown = {}
    for what, args in {
        "list": ["list", "--format", "json"],
        "list action": ["list", "--action", "reconfirm_close_date", "--format", "json"],
        "replay": ["replay", "--playbook", str(COURSE), "--format", "json", "--lang", "en", "--all"],
    }.items():
        result = runner.invoke(main, [*args, "--db", url], env=env, catch_exceptions=False)
        assert result.exit_code == 0, (args, result.output)
        shown[what] = str(result.stdout)
    return shown


def test_a_log_written_now_stores_hashes_as_bytes_and_times_as_numbers(db_url: str) -> None:
    with Store(db_url) as store:
        assert store.schema_version() == SCHEMA_VERSION
    engine = sa.create_engine(db_url)
    try:
        columns = {c["name"]: c["type"] for c in sa.inspect(engine).get_columns("evaluation_rows")}
        assert isinstance(columns["entry_hash"], sa.LargeBinary)
        assert isinstance(columns["created_at"], sa.BigInteger | sa.Integer)
        columns = {c["name"]: c["type"] for c in sa.inspect(engine).get_columns("task_events")}
        assert isinstance(columns["prev_hash"], sa.LargeBinary)
        assert isinstance(columns["at"], sa.BigInteger | sa.Integer)
    finally:
        engine.dispose()
    assert evaluations.c.entry_hash.type.python_type is str


@pytest.mark.parametrize(
    "moment",
    ["1970-01-01T00:00:00.000000+00:00", "2017-03-01T09:00:00.000000+00:00", "2026-12-03T18:36:48.668617+00:00"],
)
def test_a_stamp_comes_back_the_same_text(moment: str) -> None:
    assert stamp_text(stamp_number(moment)) == moment
    assert Stamp().process_result_value(Stamp().process_bind_param(moment, None), None) == moment


@pytest.mark.parametrize(
    "given", ["2017-03-01T09:00:00+00:00", "2017-03-01 09:00:00.000000+00:00", "2017-03-01T10:00:00.000000+01:00"]
)
def test_a_time_that_would_not_come_back_the_same_text_is_refused(given: str) -> None:
    with pytest.raises(ValueError, match="not a time as the store stamps it"):
        stamp_number(given)


@pytest.mark.parametrize("given", ["ab" * 31, "AB" * 32, "zz" * 32])
def test_a_hash_that_would_not_come_back_the_same_text_is_refused(given: str) -> None:
    with pytest.raises(ValueError):
        Sha256().process_bind_param(given, None)


@pytest.fixture(scope="module")
def course() -> Any:
    with compile_playbook(load_playbook(COURSE)) as compiled:
        yield compiled


def test_rows_written_in_bulk_keep_their_texts(db_url: str, course: Any) -> None:
    """Batches of hundreds of rows go to the driver by its own statement or, on PostgreSQL, by COPY: the
    column types convert there too, and the evaluations read back and verify as written."""
    items = [item for copy in range(40) for item in sample_items(f"run{copy}")]
    moment = dt.datetime(2026, 12, 3, 18, 36, 48, 668617, tzinfo=dt.UTC)
    with Store(db_url, clock=lambda: moment) as store:
        list(import_cases(store, Evaluator(course), items, AS_OF, source="test", batch=len(items)))
        assert store.count() == len(items) >= COPY_FROM
        assert store.verify() == []
        last = store.get(len(items))
        assert last.created_at == "2026-12-03T18:36:48.668617+00:00"
        with store._connect() as conn:
            hashes = [r.entry_hash for r in conn.execute(select(evaluations.c.entry_hash).order_by(evaluations.c.seq))]
    assert len(set(hashes)) == len(items) and all(len(h) == 64 and h == h.lower() for h in hashes)
