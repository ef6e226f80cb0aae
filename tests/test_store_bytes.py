"""The bytes the store writes are fixed: the same inputs give, table by table, the rows the code before the
rows were built as tuples (main at a653d04) wrote: every column, every link's hash, every task's state.

tests/fixtures/store_bytes.json holds a digest of each table of two logs (the same on SQLite and PostgreSQL),
written by that code through
this module (``PLAYBOOK_WRITE_STORE_BYTES=PATH python3 -m pytest tests/test_store_bytes.py``, run in its
checkout, writes them): the workflow's whole life through the CLI (tests/workflow_log.py, keyed), and a
partitioned log filled through :meth:`Store.append` with records evaluated twice in a batch, an import
resumed, outcomes and time moving on.  What differs between two runs of the same code is masked: the log's
id, the loopback port of the receiver, which deliverer or clock process wrote a row.  The store's tables are
read through its own column types (schema 13 keeps hashes as bytes and times as numbers; they read back as the
texts hashed), so a change of how a column is stored keeps the digests; a change of what is stored changes
them: write them again with the code before the change, then compare.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from adapters.jsonl import read_cases
from engine import Evaluator, compile_playbook, load_playbook, tasks
from engine.audit import ImportItem, import_cases
from engine.store import Store, audit_key, schema
from tests import workflow_log
from tests.conftest import AS_OF, ROOT
from tests.test_import_run import needs_maven

DIGESTS = Path(__file__).parent / "fixtures" / "store_bytes.json"
WRITE = os.environ.get("PLAYBOOK_WRITE_STORE_BYTES")  # a path: write the digests there instead of comparing
KEY = "s" * 64  # a test's audit key, not a secret


def table_digests(url: str) -> dict[str, str]:
    """Each table's rows in key order as JSON, hashed; booleans as SQLite gives them back (0, 1)."""
    engine = sa.create_engine(url)
    tables = sa.MetaData()
    tables.reflect(engine)
    # the store's own tables read through its column types: a hash stored as bytes (schema 13) is read as the
    # hex text it was written from, so the digests say what was stored, not how
    read_as = {name: schema.metadata.tables.get(name, table) for name, table in tables.tables.items()}
    digests = {}
    with engine.connect() as conn:
        log_id = conn.execute(sa.text("SELECT value FROM meta WHERE key = 'log_id'")).scalar_one()
        for name, table in sorted(read_as.items()):
            order = list(table.primary_key.columns) or list(table.columns)
            rows = [
                [_masked(column, value, log_id) for column, value in row._mapping.items()]
                for row in conn.execute(sa.select(table).order_by(*order))
                if row._mapping.get("key") != "schema_version"  # what a new version changes by definition
            ]
            text = json.dumps(rows, ensure_ascii=False)
            digests[name] = f"{len(rows)} rows {hashlib.sha256(text.encode()).hexdigest()}"
    engine.dispose()
    return digests


def _masked(column: str, value: Any, log_id: str) -> Any:
    if isinstance(value, bool):
        return int(value)
    if column in ("lease_owner", "fired_by") and value is not None:  # a deliverer's, a clock's host and process
        return "WHO"
    if isinstance(value, str):
        return re.sub(r"127\.0\.0\.1:\d+", "PORT", value.replace(log_id, "LOG"))
    return value


def filled(url: str) -> None:
    """A log of three partitions filled through Store.append: the sample cases, batches that hold a record
    twice, an import resumed, outcomes, time moving on."""
    moment = [dt.datetime(2026, 11, 27, 9, tzinfo=dt.UTC)]
    with compile_playbook(load_playbook(ROOT / "playbooks" / "course.yaml")) as course:
        with (ROOT / "samples" / "cases.jsonl").open(encoding="utf-8") as lines:
            cases = list(read_cases(lines))
        evaluator = Evaluator(course)
        store = Store(url, key=audit_key(KEY), clock=lambda: moment[0], partitions=3)
        first = [ImportItem(f"a:{i}", case) for i, case in enumerate(cases)]
        again = [ImportItem(f"b:{i}", case) for i, case in enumerate(cases[::2])]  # the same records once more
        list(import_cases(store, evaluator, first[:20] + again[:5] + first[20:], AS_OF, source="t", batch=13))
        moment[0] += dt.timedelta(hours=1)
        changed = [ImportItem(f"c:{i}", _fewer_milestones(case)) for i, case in enumerate(cases[1::3])]
        resumed = first[:10] + changed  # the first ten stored already: skipped
        list(import_cases(store, evaluator, resumed, AS_OF + dt.timedelta(days=3), source="t", batch=17))
        for seq in (1, 2, 5):
            recommended = store.get(seq).recommendations
            if recommended:
                store.record_outcome(seq, recommended[0]["id"], "accepted", "ann", "on it", as_of="2026-11-28")
        moment[0] += dt.timedelta(days=30)
        tasks.advance(store, AS_OF + dt.timedelta(days=30))
        moment[0] += dt.timedelta(days=60)
        tasks.advance(store, AS_OF + dt.timedelta(days=90))
        assert store.verify() == []
        store.close()


def _fewer_milestones(case: Any) -> Any:
    """The case with its deal two milestones in: other recommendations, some tasks cancelled."""
    if not isinstance(case, tuple) or not isinstance(case[1].get("opportunity"), dict):
        return case
    case_id, facts = case
    opportunity = facts["opportunity"]
    return case_id, {**facts, "opportunity": {**opportunity, "milestones": opportunity.get("milestones", [])[:2]}}


def _compare_or_write(log: str, digests: dict[str, str]) -> None:
    """The digests against the fixture's (the same on SQLite and PostgreSQL); or written there (``WRITE``)."""
    if WRITE:
        path = Path(WRITE)
        written = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        assert written.setdefault(log, digests) == digests  # the other database gave the same
        path.write_text(json.dumps(written, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        return
    expected = json.loads(DIGESTS.read_text(encoding="utf-8"))[log]
    assert digests.keys() == expected.keys()
    for table in expected:
        assert digests[table] == expected[table], table


def test_a_log_filled_through_append_holds_the_bytes_it_always_did(db_url: str) -> None:
    filled(db_url)
    _compare_or_write("append", table_digests(db_url))


@needs_maven
def test_the_workflow_s_log_holds_the_bytes_it_always_did(db_url: str, tmp_path: Path) -> None:
    (tmp_path / "inputs").mkdir()
    workflow_log.build(db_url, tmp_path / "inputs", KEY)
    _compare_or_write("workflow", table_digests(db_url))


def test_two_runs_of_the_same_inputs_give_the_same_digests(tmp_path: Path) -> None:
    """The masking leaves nothing that differs from run to run (else the comparisons above prove nothing)."""
    one, two = f"sqlite:///{tmp_path / 'one.db'}", f"sqlite:///{tmp_path / 'two.db'}"
    filled(one)
    filled(two)
    assert table_digests(one) == table_digests(two)
    assert len(table_digests(one)) > 10
