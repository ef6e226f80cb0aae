"""Several service processes on one audit log (issue #18): partitioned chains, verified and tamper-evident
in every partition, and ``playbook serve`` processes on one PostgreSQL losing and doubling nothing.

The workload, the sender and the checks are bench/workers.py's (the benchmark runs them at 20,000
events); here the count is PLAYBOOK_WORKERS_EVENTS, 1,000 unless set, to keep the suite short on a
loaded machine (20,000 run so: PLAYBOOK_WORKERS_EVENTS=20000 python3 -m pytest tests/test_workers.py -k four).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text

from adapters.ingest import Feed, Ingestor
from adapters.mapping import load_mapping
from adapters.webhook import RecordEvent
from bench import workers
from engine import Evaluator, compile_playbook, load_playbook
from engine.store import (
    SCHEMA_VERSION,
    ChainHeads,
    Store,
    audit_key,
    chain_head,
    evaluation_rows,
    evaluations,
    link_seq,
    partition_of,
    record_changes,
)
from tests.conftest import ROOT
from tests.test_store_compact import v10_log

COURSE = ROOT / "playbooks" / "course.yaml"
NOW = 1795767944.0  # 2026-11-27
GENERIC = Feed("webhook:generic", load_mapping("generic"))
PARTITIONS = 4
EVENTS = int(os.environ.get("PLAYBOOK_WORKERS_EVENTS", "1000"))


@pytest.fixture(scope="module")
def course() -> Iterator[Any]:
    with compile_playbook(load_playbook(COURSE)) as compiled:
        yield compiled


def opportunity(record: str, event_id: str, at: int, amount: float) -> RecordEvent:
    fields = {
        "id": record,
        "opportunity.id": record,
        "opportunity.amount": amount,
        "opportunity.close_date": "2027-01-15",
        "opportunity.period_target": 1_000_000,
    }
    return RecordEvent("generic", "opportunity", record, event_id, "update", fields, at, None)


def fill(store: Store, course: Any, records: int = 24, updates: int = 3) -> None:
    """Records created and updated through the ingestor, several per delivery."""
    ingestor = Ingestor(store, Evaluator(course), clock=lambda: NOW)
    try:
        for step in range(updates):
            batch = [
                opportunity(f"opp-{r}", f"e-{r}-{step}", 1000 + step, 1000.0 * (r + step + 1)) for r in range(records)
            ]
            for start in range(0, records, 5):
                ingestor.ingest(GENERIC, batch[start : start + 5])
    finally:
        ingestor.close()


@pytest.fixture
def partitioned(db_url: str, course: Any) -> Iterator[Store]:
    store = Store(db_url, partitions=PARTITIONS)
    fill(store, course)
    yield store
    store.close()


def tamper(store: Store, sql: str, **params: Any) -> None:
    with store.engine.begin() as conn:
        conn.execute(text(sql), params)


def problems(store: Store, checkpoint: dict[str, Any] | None = None) -> list[tuple[str, int, str]]:
    return [(p.chain, p.seq, p.kind) for p in store.verify(checkpoint)]


def evaluation_seqs(store: Store, partition: int) -> list[int]:
    with store.engine.connect() as conn:
        seqs = [int(s) for (s,) in conn.execute(select(evaluations.c.seq).order_by(evaluations.c.seq))]
    return [s for s in seqs if (s - 1) % PARTITIONS == partition]


# -- partitioned chains ---------------------------------------------------------------------------


def test_a_partitioned_log_files_each_records_links_in_its_partition_and_verifies(partitioned: Store) -> None:
    store = partitioned
    assert store.partitions == PARTITIONS and store.count() == 24 * 3
    heads = store.head()
    assert {name for name in heads if name.startswith("evaluations")} == {
        "evaluations",
        "evaluations/1",
        "evaluations/2",
        "evaluations/3",
    }
    with store.engine.connect() as conn:
        rows = conn.execute(select(evaluations.c.seq, evaluations.c.source, evaluations.c.record_id)).all()
        links = conn.execute(select(record_changes.c.seq, record_changes.c.source, record_changes.c.record_id)).all()
    for seq, source, record in [*rows, *links]:  # numbers interleave: a link's number names its partition
        assert (seq - 1) % PARTITIONS == partition_of(PARTITIONS, source, record)
    for partition in range(PARTITIONS):  # each partition's links are numbered without a gap
        count = heads[f"evaluations/{partition}" if partition else "evaluations"][0]
        assert evaluation_seqs(store, partition) == [link_seq(PARTITIONS, partition, k) for k in range(1, count + 1)]
    assert all(heads[f"evaluations/{p}" if p else "evaluations"][0] > 0 for p in range(PARTITIONS))
    assert store.verify() == []
    # each record's newest evaluation is of its last update
    assert store.get(max(s.seq for s in store.search(record_id="opp-5"))).event_id == "e-5-2"


def test_an_edit_a_deletion_and_a_reordering_in_any_partition_are_found(partitioned: Store) -> None:
    store = partitioned
    second, third = evaluation_seqs(store, 2)[:2], evaluation_seqs(store, 3)
    tamper(store, "UPDATE evaluation_rows SET facts = '{}' WHERE seq = :s", s=second[0])
    assert problems(store) == [("evaluations/2", second[0], "edited")]
    middle = third[1]
    tamper(store, "DELETE FROM recommendation_rows WHERE evaluation_seq = :s", s=middle)
    tamper(store, "DELETE FROM evaluation_rows WHERE seq = :s", s=middle)
    assert ("evaluations/3", middle, "deleted") in problems(store)


def test_two_links_of_a_partition_swapped_are_found(partitioned: Store) -> None:
    store = partitioned
    first, second = evaluation_seqs(store, 1)[:2]
    with store.engine.begin() as conn:  # their contents and links trade places
        swapped = ("facts", "decisions", "fired", "prev_hash", "entry_hash")
        rows = {
            seq: conn.execute(
                select(*(evaluation_rows.c[c] for c in swapped)).where(evaluation_rows.c.seq == seq)
            ).one()
            for seq in (first, second)
        }
        for seq, other in ((first, second), (second, first)):
            values = dict(zip(swapped, rows[other], strict=True))
            conn.execute(evaluation_rows.update().where(evaluation_rows.c.seq == seq).values(values))
    found = problems(store)
    assert ("evaluations/1", first, "edited") in found and ("evaluations/1", second, "edited") in found


def test_a_checkpoint_binds_every_partitions_head(db_url: str, course: Any) -> None:
    key = audit_key("k" * 40)
    store = Store(db_url, key=key, partitions=PARTITIONS)
    fill(store, course, records=12, updates=2)
    checkpoint = store.checkpoint()
    assert {f"records/{p}" for p in range(1, PARTITIONS)} <= checkpoint["chains"].keys()
    assert store.verify(checkpoint) == []
    last = evaluation_seqs(store, 3)[-1]
    # the last link of partition 3 removed and its head moved back: the chain alone looks whole
    tamper(store, "DELETE FROM recommendation_rows WHERE evaluation_seq = :s", s=last)
    tamper(store, "DELETE FROM evaluation_rows WHERE seq = :s", s=last)
    with store.engine.begin() as conn:
        previous = conn.execute(select(evaluations.c.entry_hash).where(evaluations.c.seq == last - PARTITIONS)).scalar()
        conn.execute(
            chain_head.update()
            .where(chain_head.c.chain == "evaluations/3")
            .values(seq=chain_head.c.seq - 1, hash=previous)
        )
    assert problems(store) == []
    assert problems(store, checkpoint) == [("evaluations/3", last, "truncated")]
    store.close()


def test_a_log_resealed_verifies_in_every_partition(partitioned: Store) -> None:
    partitioned.reseal(audit_key("r" * 40))
    resealed = Store(partitioned.url, key=audit_key("r" * 40))
    assert resealed.verify() == [] and resealed.seals_checked()
    resealed.close()


def test_a_missing_partition_head_is_damage(partitioned: Store) -> None:
    tamper(partitioned, "DELETE FROM chain_head WHERE chain = 'tasks/2'")
    partitioned.close()
    with pytest.raises(Exception, match="the chain head of 'tasks/2' is missing"):
        Store(partitioned.url)


def test_a_version_7_log_keeps_its_chain_as_partition_0_and_verifies(db_url: str, course: Any, tmp_path: Path) -> None:
    v10_log("v10-log.sqlite.gz", db_url, tmp_path)  # written by the code of version 10, made version 7 here
    engine = create_engine(db_url)
    with engine.begin() as conn:  # as the log was before version 9
        conn.execute(text("DELETE FROM meta WHERE key = 'partitions'"))
        conn.execute(text("UPDATE meta SET value = '7' WHERE key = 'schema_version'"))
    engine.dispose()
    upgraded = Store(db_url, partitions=8)  # a log that exists keeps one partition
    before = upgraded.count()
    assert upgraded.schema_version() == SCHEMA_VERSION and upgraded.partitions == 1
    assert upgraded.verify() == []
    fill(upgraded, course, records=6, updates=3)
    assert upgraded.count() == before + 18 and upgraded.verify() == []
    upgraded.close()


def test_writers_naming_their_records_wait_only_for_those_partitions(db_url: str, course: Any) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite lets one writer in at a time whatever it locks")
    store = Store(db_url, partitions=PARTITIONS)
    fill(store, course, records=8, updates=1)

    def partition(record: str) -> int:
        return partition_of(PARTITIONS, "webhook:generic", record)

    first = "opp-0"
    other = next(f"opp-{r}" for r in range(1, 8) if partition(f"opp-{r}") != partition(first))
    with store.write() as writer:
        writer.lock_records([("webhook:generic", first)])
        with store.engine.connect() as conn:  # another process's transaction, on another record's partition
            with conn.begin():
                conn.execute(text("SET LOCAL lock_timeout = '2s'"))
                ChainHeads(conn, PARTITIONS).lock_partitions([partition(other)])  # at once
            with conn.begin(), pytest.raises(Exception, match="lock timeout"):
                conn.execute(text("SET LOCAL lock_timeout = '2s'"))
                ChainHeads(conn, PARTITIONS).lock_partitions([partition(first)])
    store.close()


# -- the service: several processes on one PostgreSQL --------------------------------------------


@pytest.fixture
def postgres_log(postgres_server: str) -> str:
    url = workers.create_database(postgres_server)
    Store(url, partitions=16).close()
    return url


def test_four_service_processes_lose_and_double_nothing(postgres_log: str, tmp_path: Path) -> None:
    """Two ``playbook serve --workers 2`` (four processes, as two hosts behind a load balancer would
    be) take EVENTS deliveries concurrently: redeliveries, updates out of order."""
    deliveries = workers.workload(EVENTS)
    secret = uuid.uuid4().hex
    ports = [workers.free_port(), workers.free_port()]
    services = []
    try:
        for number, port in enumerate(ports):
            services.append(workers.serve(postgres_log, port, 2, secret, tmp_path / f"serve-{number}.log"))
        delivered, _ = workers.send(ports, deliveries, secret, clients=12)
    finally:
        for service in services:
            workers.stop(service)
    found = workers.check(postgres_log, delivered, workers.expected_states(deliveries))
    assert found["refused"] == 0 and len(delivered) == len(deliveries)
    assert found["lost"] == [] and found["doubled"] == []
    assert found["states_differ"] == []
    assert found["verify_problems"] == []
    assert found["statuses"].get("duplicate", 0) >= EVENTS // 10  # the redeliveries, each answered duplicate
    logs = "".join((tmp_path / f"serve-{n}.log").read_text() for n in range(2))
    assert "Traceback" not in logs and logs.count("Application shutdown complete") == 4  # each stopped cleanly
    verify = subprocess.run(
        [sys.executable, "-m", "cli", "audit", "verify", "--db", postgres_log],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
