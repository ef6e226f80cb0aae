"""adapters/ingest.py with engine/store.py's record state, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import inspect, select

from adapters.ingest import Ingestor
from adapters.mapping import load_mapping
from adapters.webhook import RecordEvent, parse_hubspot
from engine import Evaluator, compile_playbook, load_playbook
from engine.store import SCHEMA_VERSION, Appended, RecordChanged, RecordState, Store, records
from tests.conftest import AS_OF, ROOT

COURSE = ROOT / "playbooks" / "course.yaml"
NOW = 1795767944.0  # 2026-11-27


@pytest.fixture(scope="module")
def course() -> Iterator[Any]:
    with compile_playbook(load_playbook(COURSE)) as compiled:
        yield compiled


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    opened = Store(db_url)
    yield opened
    opened.close()


def hubspot(course: Any, store: Store) -> Ingestor:
    return Ingestor(
        store,
        Evaluator(course),
        load_mapping("hubspot_deal"),
        source="webhook:hubspot",
        object_type="deal",
        clock=lambda: NOW,
    )


def change(event_id: str, at: int, change: str = "update", **fields: str) -> RecordEvent:
    return RecordEvent("hubspot", "deal", "42", event_id, change, {"hs_object_id": "42", **fields}, at, "7")


def test_partial_updates_are_merged_and_each_evaluation_is_of_the_whole_record(course: Any, store: Store) -> None:
    ingest = hubspot(course, store)
    outcomes = ingest.ingest(
        [
            change("a", 1000, "create"),
            change("b", 2000, amount="250000"),
            change("c", 3000, closedate="1798761600000"),  # 2027-01-01
            change("d", 4000, hs_deal_stage_probability="0.6"),
        ]
    )
    assert [o.status for o in outcomes] == ["evaluated"] * 4
    assert [o.evaluation for o in outcomes] == [1, 2, 3, 4]
    last = store.get(4)
    assert last.facts["opportunity"] == {"id": "42", "amount": 250000, "close_date": "2027-01-01", "win_rate": 60}
    assert (last.source, last.event_id, last.record_id, last.as_of) == ("webhook:hubspot", "d", "42", "2026-11-27")
    state = store.record_state("webhook:hubspot", "7/42")
    assert state.fields["amount"] == "250000" and state.version == 4 and state.last_event_id == "d"
    assert store.verify() == []


def test_a_redelivered_event_changes_nothing(course: Any, store: Store) -> None:
    ingest = hubspot(course, store)
    first = ingest.ingest([change("a", 1000, amount="1"), change("b", 2000, amount="2")])
    state = store.record_state("webhook:hubspot", "7/42")
    again = ingest.ingest([change("a", 1000, amount="1")] * 3)
    assert [o.status for o in again] == ["duplicate"] * 3
    assert {o.evaluation for o in again} == {first[0].evaluation}
    assert store.count() == 2
    assert store.record_state("webhook:hubspot", "7/42") == state  # amount stays "2", version unchanged


def test_a_late_older_event_is_evaluated_without_undoing_the_newer_value(course: Any, store: Store) -> None:
    ingest = hubspot(course, store)
    ingest.ingest([change("new", 2000, amount="3000")])
    [late] = ingest.ingest([change("old", 1000, amount="2000", closedate="1798761600000")])
    assert late.status == "evaluated"
    assert store.get(2).facts["opportunity"] == {"id": "42", "amount": 3000, "close_date": "2027-01-01"}


def test_closed_and_deleted_deals_are_kept_in_state_but_not_evaluated(course: Any, store: Store) -> None:
    ingest = hubspot(course, store)
    outcomes = ingest.ingest(
        [
            change("a", 1000, amount="5"),
            change("b", 2000, dealstage="closedwon"),
            change("c", 3000, amount="6"),
            change("d", 4000, "delete"),
            change("d", 4000, "delete"),
        ]
    )
    assert [o.status for o in outcomes] == ["evaluated", "quarantined", "quarantined", "deleted", "deleted"]
    assert outcomes[1].code == "closed_deal" and "closedwon" in str(outcomes[1].reason)
    assert store.count() == 1
    state = store.record_state("webhook:hubspot", "7/42")
    assert state.deleted and state.fields["amount"] == "6" and state.version == 4


def test_other_objects_and_unhandled_events_are_reported_as_ignored(course: Any, store: Store) -> None:
    body = json.dumps(
        [
            {"eventId": 1, "portalId": 2, "occurredAt": 3, "subscriptionType": "contact.creation", "objectId": 4},
            {"eventId": 5, "portalId": 2, "occurredAt": 3, "subscriptionType": "deal.merge", "objectId": 4},
        ]
    ).encode()
    outcomes = hubspot(course, store).ingest(parse_hubspot(body))
    assert [o.status for o in outcomes] == ["ignored", "ignored"]
    assert "contact records are not evaluated" in str(outcomes[0].reason)
    assert store.count() == 0


def test_the_same_event_from_many_threads_is_evaluated_once(course: Any, store: Store) -> None:
    ingest = hubspot(course, store)
    results: list[str] = []
    barrier = threading.Barrier(8)

    def deliver() -> None:
        barrier.wait()
        results.extend(o.status for o in ingest.ingest([change("same", 1000, amount="9")]))

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["duplicate"] * 7 + ["evaluated"]
    assert store.count() == 1 and store.record_state("webhook:hubspot", "7/42").version == 1


def test_an_evaluation_and_its_record_state_are_stored_together_or_not_at_all(course: Any, store: Store) -> None:
    outcome = Evaluator(course).evaluate_case({"opportunity": {"id": "9"}}, AS_OF, "9")

    def append(event_id: str, state: RecordState) -> list[int]:
        item = Appended(outcome, {}, event_id=event_id, record=state)
        return store.append(course.playbook, [item], source="webhook:test", as_of=AS_OF)

    assert append("e1", RecordState("webhook:test", "9", {"a": 1}, {"a": 1})) == [1]
    assert store.record_state("webhook:test", "9").version == 1
    with pytest.raises(RecordChanged):  # merged from the state as it was before e1
        append("e2", RecordState("webhook:test", "9", {"a": 2}, {"a": 2}, version=0))
    assert store.count() == 1 and store.evaluation_of_event("webhook:test", "e2") is None
    assert store.record_state("webhook:test", "9").fields == {"a": 1}
    assert append("e1", RecordState("webhook:test", "9", {"a": 3}, {"a": 3}, version=0)) == [-1]  # e1 again
    assert store.record_state("webhook:test", "9").fields == {"a": 1}


def test_a_version_2_database_gets_the_records_table_in_place(db_url: str, course: Any) -> None:
    store = Store(db_url)
    hubspot(course, store).ingest([change("a", 1000, amount="1")])
    before = [s.to_json() for s in store.search()]
    with store.engine.begin() as conn:
        records.drop(conn)
        conn.exec_driver_sql("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    store.close()
    upgraded = Store(db_url)
    assert upgraded.schema_version() == SCHEMA_VERSION == 3
    assert inspect(upgraded.engine).has_table("records")
    assert [s.to_json() for s in upgraded.search()] == before
    with upgraded.engine.connect() as conn:
        assert conn.execute(select(records)).all() == []
    hubspot(course, upgraded).ingest([change("b", 2000, amount="2")])
    assert upgraded.count() == 2 and upgraded.verify() == []
    upgraded.close()
