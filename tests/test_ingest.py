"""adapters/ingest.py with engine/store.py's record state, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import inspect, select

from adapters.ingest import EventOutcome, Feed, Ingestor
from adapters.mapping import load_mapping
from adapters.webhook import RecordEvent, parse_generic, parse_hubspot
from engine import Evaluator, compile_playbook, load_playbook
from engine.store import SCHEMA_VERSION, RecordState, Store, chain_head, quarantined_events, record_changes, records
from tests.conftest import ROOT

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


HUBSPOT = Feed("webhook:hubspot", load_mapping("hubspot_deal"), "deal")


class Hubspot:
    """An ingestor of HubSpot deal events on a fixed clock."""

    def __init__(self, course: Any, store: Store) -> None:
        self.ingestor = Ingestor(store, Evaluator(course), clock=lambda: NOW)

    def ingest(self, events: list[Any]) -> list[EventOutcome]:
        return self.ingestor.ingest(HUBSPOT, events)


@pytest.fixture
def hubspot(course: Any, store: Store) -> Iterator[Hubspot]:
    opened = Hubspot(course, store)
    yield opened
    opened.ingestor.close()


def change(event_id: str, at: int, change: str = "update", **fields: str) -> RecordEvent:
    return RecordEvent("hubspot", "deal", "42", event_id, change, {"hs_object_id": "42", **fields}, at, "7")


def test_partial_updates_are_merged_and_each_evaluation_is_of_the_whole_record(hubspot: Hubspot, store: Store) -> None:
    ingest = hubspot
    ingest.ingest([change("a", 1000, "create")])
    ingest.ingest([change("b", 2000, amount="250000")])
    ingest.ingest([change("c", 3000, closedate="1798761600000")])  # 2027-01-01
    [outcome] = ingest.ingest([change("d", 4000, hs_deal_stage_probability="0.6")])
    assert (outcome.status, outcome.evaluation) == ("evaluated", 4)
    last = store.get(4)
    assert last.facts["opportunity"] == {"id": "42", "amount": 250000, "close_date": "2027-01-01", "win_rate": 60}
    assert (last.source, last.event_id, last.record_id, last.as_of) == ("webhook:hubspot", "d", "42", "2026-11-27")
    state = store.record_state("webhook:hubspot", "7/42")
    assert state.fields["amount"] == "250000" and state.version == 4 and state.last_event_id == "d"
    assert store.verify() == []


def test_a_redelivered_event_changes_nothing(hubspot: Hubspot, store: Store) -> None:
    ingest = hubspot
    first = ingest.ingest([change("a", 1000, amount="1"), change("b", 2000, amount="2")])
    state = store.record_state("webhook:hubspot", "7/42")
    again = ingest.ingest([change("a", 1000, amount="1")] * 3)  # coalesced into b's evaluation the first time
    assert [o.status for o in again] == ["duplicate"] * 3
    assert {o.evaluation for o in again} == {first[0].evaluation}
    batch = ingest.ingest([change("a", 1000, amount="1"), change("b", 2000, amount="2")])  # the batch, again
    assert [(o.status, o.evaluation) for o in batch] == [("duplicate", 1), ("duplicate", 1)]
    assert store.count() == 1
    assert store.record_state("webhook:hubspot", "7/42") == state  # amount stays "2", version unchanged


def test_a_batch_is_evaluated_once_per_record_in_its_final_state(hubspot: Hubspot, store: Store) -> None:
    # HubSpot sends a deal's creation and each property change as separate events of one batch:
    # the intermediate states (a deal without its amount, then without its close date) are never evaluated.
    other = RecordEvent("hubspot", "deal", "43", "x", "update", {"hs_object_id": "43", "amount": "7"}, 1500, "7")
    outcomes = hubspot.ingest(
        [
            change("a", 1000, "create"),
            change("b", 2000, amount="250000"),
            other,
            change("c", 3000, closedate="1798761600000"),  # 2027-01-01
            change("d", 4000, hs_deal_stage_probability="0.6"),
        ]
    )
    assert [o.status for o in outcomes] == ["coalesced", "coalesced", "evaluated", "coalesced", "evaluated"]
    assert [o.evaluation for o in outcomes] == [1, 1, 2, 1, 1]  # records in the order they first appear
    assert "the state after d was evaluated" in str(outcomes[0].reason)
    assert store.count() == 2
    final = store.get(1)
    assert final.event_id == "d"
    assert final.facts["opportunity"] == {"id": "42", "amount": 250000, "close_date": "2027-01-01", "win_rate": 60}
    assert store.record_state("webhook:hubspot", "7/42").version == 4
    # an event that changes nothing (same values, same times: b, coalesced, delivered alone) in a state
    # evaluated today is not evaluated again; one that changes it is
    [same] = hubspot.ingest([change("b", 2000, amount="250000")])
    assert (same.status, same.evaluation) == ("duplicate", 1)
    [changed] = hubspot.ingest([change("f", 6000, amount="260000")])
    assert (changed.status, changed.evaluation) == ("evaluated", 3)
    assert store.verify() == []


def test_a_batch_whose_record_ends_deleted_or_closed_evaluates_nothing(hubspot: Hubspot, store: Store) -> None:
    closed = hubspot.ingest([change("a", 1000, amount="5"), change("b", 2000, dealstage="closedwon")])
    assert [(o.status, o.code) for o in closed] == [("quarantined", "closed_deal")] * 2
    reopened = hubspot.ingest([change("c", 3000, dealstage="appointmentscheduled"), change("d", 4000, "delete")])
    assert [o.status for o in reopened] == ["deleted", "deleted"]
    assert store.count() == 0 and store.record_state("webhook:hubspot", "7/42").version == 4


def test_a_late_older_event_is_evaluated_without_undoing_the_newer_value(hubspot: Hubspot, store: Store) -> None:
    ingest = hubspot
    ingest.ingest([change("new", 2000, amount="3000")])
    [late] = ingest.ingest([change("old", 1000, amount="2000", closedate="1798761600000")])
    assert late.status == "evaluated"
    assert store.get(2).facts["opportunity"] == {"id": "42", "amount": 3000, "close_date": "2027-01-01"}


def test_closed_and_deleted_deals_are_kept_in_state_but_not_evaluated(hubspot: Hubspot, store: Store) -> None:
    ingest = hubspot
    outcomes = [
        ingest.ingest([event])[0]
        for event in (
            change("a", 1000, amount="5"),
            change("b", 2000, dealstage="closedwon"),
            change("c", 3000, amount="6"),
            change("d", 4000, "delete"),
            change("d", 4000, "delete"),
        )
    ]
    assert [o.status for o in outcomes] == ["evaluated", "quarantined", "quarantined", "deleted", "deleted"]
    assert outcomes[1].code == "closed_deal" and "closedwon" in str(outcomes[1].reason)
    assert store.count() == 1
    state = store.record_state("webhook:hubspot", "7/42")
    assert state.deleted and state.fields["amount"] == "6" and state.version == 4


def test_other_objects_and_unhandled_events_are_reported_as_ignored(hubspot: Hubspot, store: Store) -> None:
    body = json.dumps(
        [
            {"eventId": 1, "portalId": 2, "occurredAt": 3, "subscriptionType": "contact.creation", "objectId": 4},
            {"eventId": 5, "portalId": 2, "occurredAt": 3, "subscriptionType": "deal.merge", "objectId": 4},
        ]
    ).encode()
    outcomes = hubspot.ingest(parse_hubspot(body))
    assert [o.status for o in outcomes] == ["ignored", "ignored"]
    assert "contact records are not evaluated" in str(outcomes[0].reason)
    assert store.count() == 0


def test_the_same_event_from_many_threads_is_evaluated_once(hubspot: Hubspot, store: Store) -> None:
    results: list[str] = []
    barrier = threading.Barrier(8)

    def deliver() -> None:
        barrier.wait()
        results.extend(o.status for o in hubspot.ingest([change("same", 1000, amount="9")]))

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["duplicate"] * 7 + ["evaluated"]
    assert store.count() == 1 and store.record_state("webhook:hubspot", "7/42").version == 1


def test_concurrent_changes_to_one_record_are_all_merged_and_each_evaluated(hubspot: Hubspot, store: Store) -> None:
    # Eight senders, 25 changes each, to one deal: each sets its own property, so the final state
    # must hold all eight, and every change must be an evaluation of the state it made.
    senders, changes = 8, 25
    barrier = threading.Barrier(senders)
    answers: list[list[EventOutcome]] = []

    def deliver(sender: int) -> None:
        barrier.wait()
        for k in range(changes):
            at = 1000 + k
            answers.append(hubspot.ingest([change(f"s{sender}-{k}", at, **{f"p{sender}": str(k)})]))

    threads = [threading.Thread(target=deliver, args=(n,)) for n in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = [o.status for answer in answers for o in answer]
    assert statuses == ["evaluated"] * senders * changes
    numbers = sorted(o.evaluation or 0 for answer in answers for o in answer)
    assert numbers == list(range(1, senders * changes + 1))
    state = store.record_state("webhook:hubspot", "7/42")
    assert state.version == senders * changes
    assert {f"p{n}": str(changes - 1) for n in range(senders)}.items() <= state.fields.items()
    assert state.last_event_id == store.get(senders * changes).event_id
    assert store.verify() == []


class BrokenMapping:
    """A mapping that fails on one deal as a bug in the engine would: nothing is wrong with the data."""

    def __init__(self, broken: str, error: BaseException) -> None:
        self.inner, self.broken, self.error = load_mapping("hubspot_deal"), broken, error

    def to_case(self, fields: dict[str, Any]) -> Any:
        if fields.get("hs_object_id") == self.broken:
            raise self.error
        return self.inner.to_case(fields)


def deal_event(event_id: str, deal: str, amount: str = "5") -> RecordEvent:
    return RecordEvent("hubspot", "deal", deal, event_id, "update", {"hs_object_id": deal, "amount": amount}, 1, "7")


def test_a_request_that_cannot_be_evaluated_fails_alone_in_its_transaction(course: Any, store: Store) -> None:
    feed = Feed("webhook:hubspot", BrokenMapping("13", RuntimeError("the engine failed")), "deal")  # type: ignore[arg-type]
    ingestor = Ingestor(store, Evaluator(course), clock=lambda: NOW)
    event = deal_event
    try:
        with store.write():  # the writer waits: what is submitted meanwhile is stored in one transaction
            futures = [
                ingestor.submit(feed, [event("g1", "42")]),
                ingestor.submit(feed, [event("g2", "42"), event("b1", "13")]),
                ingestor.submit(feed, [event("b2", "13")]),
                ingestor.submit(feed, [event("g3", "42", "6")]),  # changes the state g1 left
            ]
        for good in (futures[0], futures[3]):
            assert [o.status for o in good.result()] == ["evaluated"]
        for failed in futures[1:3]:
            with pytest.raises(RuntimeError, match="the engine failed"):
                failed.result()
    finally:
        ingestor.close()
    assert [store.get(seq).event_id for seq in (1, 2)] == ["g1", "g3"] and store.count() == 2
    assert store.record_state("webhook:hubspot", "7/42").version == 2  # g2 changed nothing: its request failed
    assert store.record_state("webhook:hubspot", "7/13").version == 0
    assert store.verify() == []


def test_requests_awaited_on_an_event_loop_are_each_answered_or_fail_alone(course: Any, store: Store) -> None:
    """As the service awaits them (Ingestor.ingest_async): the writer answers a transaction's waiters on
    their loop together, each with its own outcomes or its own failure."""
    feed = Feed("webhook:hubspot", BrokenMapping("13", RuntimeError("the engine failed")), "deal")  # type: ignore[arg-type]
    ingestor = Ingestor(store, Evaluator(course), clock=lambda: NOW)

    async def requests() -> list[Any]:
        with store.write():  # the writer waits: what is submitted meanwhile is stored in one transaction
            waiting = [
                asyncio.ensure_future(ingestor.ingest_async(feed, events))
                for events in (
                    [deal_event("g1", "42")],
                    [deal_event("b1", "13")],
                    [deal_event("g2", "43"), deal_event("g3", "42", "6")],
                )
            ]
            await asyncio.sleep(0)  # each submitted
        return await asyncio.gather(*waiting, return_exceptions=True)

    try:
        first, failed, last = asyncio.run(requests())
    finally:
        ingestor.close()
    assert isinstance(failed, RuntimeError) and "the engine failed" in str(failed)
    assert [(o.event_id, o.status) for o in first + last] == [
        ("g1", "evaluated"),
        ("g2", "evaluated"),
        ("g3", "evaluated"),
    ]
    assert sorted(o.evaluation for o in first + last) == [1, 2, 3] and store.count() == 3
    assert store.verify() == []


def test_a_transaction_the_database_refuses_keeps_neither_evaluations_nor_states(
    hubspot: Hubspot, store: Store
) -> None:
    hubspot.ingest([change("a", 1000, amount="1")])
    with store.engine.begin() as conn:  # the records table refuses every write from now on
        if store.engine.dialect.name == "sqlite":
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse BEFORE UPDATE ON records BEGIN SELECT RAISE(ABORT, 'disk full'); END"
            )
        else:
            conn.exec_driver_sql(
                "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'disk full'; END $$"
                " LANGUAGE plpgsql"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse BEFORE UPDATE ON records FOR EACH ROW EXECUTE FUNCTION refuse()"
            )
    before = store.record_state("webhook:hubspot", "7/42")
    with pytest.raises(Exception, match="disk full"):
        hubspot.ingest([change("b", 2000, amount="2"), change("c", 3000, amount="3")])
    assert store.count() == 1 and store.verify() == []  # the evaluations inserted before the refusal are gone
    assert store.record_state("webhook:hubspot", "7/42") == before
    with store.engine.begin() as conn:
        conn.exec_driver_sql(
            "DROP TRIGGER refuse" if store.engine.dialect.name == "sqlite" else "DROP TRIGGER refuse ON records"
        )
    assert [o.status for o in hubspot.ingest([change("b", 2000, amount="2")])] == ["evaluated"]  # delivered again
    assert store.count() == 2 and store.get(2).facts["opportunity"]["amount"] == 2


def test_a_request_the_database_refuses_fails_alone_in_its_transaction(course: Any, store: Store) -> None:
    with store.engine.begin() as conn:  # refuses one deal's evaluations, as a value too long for a column would
        if store.engine.dialect.name == "sqlite":
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse BEFORE INSERT ON evaluation_rows WHEN NEW.record_id = '13'"
                " BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
        else:
            conn.exec_driver_sql(
                "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN IF NEW.record_id = '13' THEN"
                " RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse BEFORE INSERT ON evaluation_rows FOR EACH ROW EXECUTE FUNCTION refuse()"
            )
    ingestor = Ingestor(store, Evaluator(course), clock=lambda: NOW)
    try:
        with store.write():  # the writer waits: what is submitted meanwhile is stored in one transaction
            futures = [
                ingestor.submit(HUBSPOT, [deal_event(e, deal, amount)])
                for e, deal, amount in (("g1", "42", "5"), ("b", "13", "5"), ("g2", "42", "6"))
            ]
        assert [o.status for o in futures[0].result()] == ["evaluated"]
        assert [o.status for o in futures[2].result()] == ["evaluated"]
        with pytest.raises(Exception, match="refused"):
            futures[1].result()
    finally:
        ingestor.close()
    assert [store.get(seq).event_id for seq in (1, 2)] == ["g1", "g2"] and store.count() == 2
    assert store.record_state("webhook:hubspot", "7/13").version == 0 and store.verify() == []


def test_evaluations_are_numbered_in_the_order_they_were_made_even_across_midnight(course: Any, store: Store) -> None:
    midnight = 1795824000.0  # 2026-11-28 00:00 UTC; the clock steps back over it, as NTP may step it
    times = iter([midnight - 1, midnight + 1, midnight - 0.5])
    ingestor = Ingestor(store, Evaluator(course), clock=lambda: next(times))
    try:
        with store.write():
            futures = [ingestor.submit(HUBSPOT, [deal_event(f"e{k}", "42", str(k))]) for k in (1, 2, 3)]
        numbers = [f.result()[0].evaluation for f in futures]
    finally:
        ingestor.close()
    assert numbers == [1, 2, 3]
    assert [store.get(n).as_of for n in numbers] == ["2026-11-27", "2026-11-28", "2026-11-27"]
    latest = store.get(3)
    assert (
        latest.facts["opportunity"]["amount"]
        == 3
        == int(store.record_state("webhook:hubspot", "7/42").fields["amount"])
    )


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the writer's SystemExit
def test_a_writer_that_stops_answers_every_submission_and_takes_no_more(course: Any, store: Store) -> None:
    feed = Feed("webhook:hubspot", BrokenMapping("13", SystemExit(3)), "deal")  # type: ignore[arg-type]
    ingestor = Ingestor(store, Evaluator(course), clock=lambda: NOW, max_batch=1)
    with store.write():  # one event per transaction: the second waits behind the first
        stopping = ingestor.submit(feed, [deal_event("b", "13")])
        after = ingestor.submit(feed, [deal_event("g", "42")])
    with pytest.raises(SystemExit):
        stopping.result(timeout=10)
    with pytest.raises(RuntimeError, match="stopped"):
        after.result(timeout=10)
    with pytest.raises(RuntimeError, match="closed"):
        ingestor.submit(feed, [deal_event("g", "42")])
    ingestor.close()
    assert store.count() == 0


def test_an_account_id_too_long_to_file_is_a_stored_error_not_a_failed_request(course: Any, store: Store) -> None:
    body = json.dumps(
        {"id": "e1", "event": "opportunity.updated", "data": {"id": "o1", "opportunity": {"account_id": "a" * 600}}}
    ).encode()
    ingestor = Ingestor(store, Evaluator(course), clock=lambda: NOW)
    try:
        [outcome] = ingestor.ingest(Feed("webhook:generic", load_mapping("generic")), parse_generic(body))
    finally:
        ingestor.close()
    assert (outcome.status, outcome.code, outcome.evaluation) == ("error", "id_too_long", 1)
    assert "account id" in str(outcome.reason)
    assert store.get(1).error == {"code": "id_too_long", "message": outcome.reason}
    assert store.record_state("webhook:generic", "o1").version == 1 and store.verify() == []


def test_a_state_not_read_in_the_transaction_is_not_saved(store: Store) -> None:
    with pytest.raises(ValueError, match="not read in this transaction"), store.write() as writer:
        writer.save_records([RecordState("webhook:test", "9", {"a": 1}, {"a": 1}, version=1)])
    assert store.record_state("webhook:test", "9").version == 0


def test_a_version_2_database_gets_the_records_table_in_place(db_url: str, course: Any) -> None:
    store = Store(db_url)
    first = Hubspot(course, store)
    first.ingest([change("a", 1000, amount="1")])
    first.ingestor.close()
    before = [s.to_json() for s in store.search()]
    with store.engine.begin() as conn:
        record_changes.drop(conn)
        records.drop(conn)
        quarantined_events.drop(conn)
        conn.execute(chain_head.delete().where(chain_head.c.chain == "quarantined"))
        conn.exec_driver_sql("DROP TABLE task_events")
        conn.exec_driver_sql("DROP TABLE tasks")
        conn.exec_driver_sql("DELETE FROM chain_head WHERE chain IN ('records', 'tasks')")
        conn.exec_driver_sql("DELETE FROM meta WHERE key = 'log_id'")
        conn.exec_driver_sql("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    store.close()
    upgraded = Store(db_url)
    assert upgraded.schema_version() == SCHEMA_VERSION
    assert inspect(upgraded.engine).has_table("records")
    assert [s.to_json() for s in upgraded.search()] == before
    with upgraded.engine.connect() as conn:
        assert conn.execute(select(records)).all() == []
    again = Hubspot(course, upgraded)
    again.ingest([change("b", 2000, amount="2")])
    again.ingestor.close()
    assert upgraded.count() == 2 and upgraded.verify() == []
    upgraded.close()


def test_a_busy_writer_waits_briefly_to_fill_its_transaction_and_an_idle_one_does_not(
    course: Any, store: Store
) -> None:
    ingestor = Ingestor(store, Evaluator(course), clock=lambda: NOW, linger=1.0)
    try:
        started = time.monotonic()
        ingestor.ingest(HUBSPOT, [deal_event("alone", "1")])  # idle: answered without waiting out the linger
        assert time.monotonic() - started < 0.9
        with store.write():  # three queue up behind the lock: a transaction of three, so the writer is busy
            first = [ingestor.submit(HUBSPOT, [deal_event(f"q{k}", str(10 + k))]) for k in range(3)]
        [f.result() for f in first]
        spread = []
        for k in range(3):  # arriving 50 ms apart: the writer waits for them (up to 1 s) and stores them together
            spread.append(ingestor.submit(HUBSPOT, [deal_event(f"s{k}", str(20 + k))]))
            time.sleep(0.05)
        numbers = [f.result()[0].evaluation for f in spread]
    finally:
        ingestor.close()
    made = {store.get(n or 0).created_at for n in numbers}
    assert len(made) == 1, "one transaction, one time of writing"
    assert len({store.get(n or 0).created_at for n in (2, 3, 4)}) == 1


def test_quarantined_events_are_kept_with_their_reason_once_and_chained(hubspot: Hubspot, store: Store) -> None:
    delivery = [change("a", 1000, amount="5"), change("b", 2000, dealstage="closedwon", note="x\u0000y")]
    first = hubspot.ingest(delivery)
    assert [o.status for o in first] == ["quarantined"] * 2
    again = hubspot.ingest(delivery)  # redelivered: answered the same, kept once
    assert [(o.status, o.code) for o in again] == [("quarantined", "closed_deal")] * 2
    kept = list(store.quarantined())
    assert [(q.seq, q.event_id, q.record_id, q.code) for q in kept] == [
        (1, "a", "42", "closed_deal"),
        (2, "b", "42", "closed_deal"),
    ]
    assert all("closedwon" in q.reason and q.source == "webhook:hubspot" for q in kept)
    assert kept[0].received_at.startswith("2026-11-27T")
    assert kept[1].event["fields"] == {"hs_object_id": "42", "dealstage": "closedwon", "note": "x\\x00y"}
    assert kept[1].event["tenant"] == "7" and kept[1].event["change"] == "update"
    assert store.count() == 0  # nothing evaluated
    assert [q.event_id for q in store.quarantined(since="2026-11-27", until="2026-11-27")] == ["a", "b"]
    assert list(store.quarantined(since="2026-11-28")) == []
    assert store.verify() == []
    with store.engine.begin() as conn:
        conn.execute(quarantined_events.update().where(quarantined_events.c.seq == 1).values(reason="fine"))
    assert [(p.chain, p.seq, p.kind) for p in store.verify()] == [("quarantined", 1, "edited")]


def test_a_version_4_database_gets_the_quarantined_events_table_in_place(db_url: str, course: Any) -> None:
    store = Store(db_url)
    with store.engine.begin() as conn:
        quarantined_events.drop(conn)
        conn.exec_driver_sql("DROP TABLE task_events")
        conn.exec_driver_sql("DROP TABLE tasks")
        conn.execute(chain_head.delete().where(chain_head.c.chain.in_(["quarantined", "tasks"])))
        conn.exec_driver_sql("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    store.close()
    upgraded = Store(db_url)
    assert upgraded.schema_version() == SCHEMA_VERSION and upgraded.head()["quarantined"][0] == 0
    ingest = Hubspot(course, upgraded)
    [held] = ingest.ingest([change("a", 1000, dealstage="closedlost")])
    ingest.ingestor.close()
    assert held.status == "quarantined" and [q.seq for q in upgraded.quarantined()] == [1]
    assert upgraded.verify() == []
    upgraded.close()
