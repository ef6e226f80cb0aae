"""The workflow clock: ``tick`` re-checks time-based rules and moves tasks, once per day, on any number of processes."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select, text

from engine.clock import ServiceClock, tick
from engine.compile import compile_playbook
from engine.evaluate import Evaluator
from engine.store import Appended, Store, evaluations, partition_of
from engine.tasks import listing
from engine.validate import load_playbook_text

START = dt.date(2026, 9, 1)

PLAYBOOK = """
playbook: {id: clocked, version: "1", languages: [en], title: {en: Clocked}}
inputs:
  opportunity.id: {type: string, label: {en: id}}
  opportunity.close_date: {type: date, label: {en: close date}}
  opportunity.weeks_to_close:
    type: number
    label: {en: weeks to close}
    derive: {weeks_until: opportunity.close_date}
  opportunity.amount: {type: number, label: {en: amount}}
decisions:
  date_passed:
    label: {en: date passed}
    source: {policy: P1, text: t}
    type: boolean
    rows:
      - {id: passed, label: {en: P}, source: {policy: P1, text: t}, then: true,
         when: {opportunity.weeks_to_close: {lt: 0}}}
      - {id: ahead, label: {en: A}, source: {policy: P1, text: t}, then: false,
         when: {opportunity.weeks_to_close: {gte: 0}}}
  big:
    label: {en: big}
    source: {policy: P1, text: t}
    type: boolean
    rows:
      - {id: large, label: {en: L}, source: {policy: P1, text: t}, then: true, when: {opportunity.amount: {gte: 100}}}
      - {id: small, label: {en: S}, source: {policy: P1, text: t}, then: false, when: {opportunity.amount: {lt: 100}}}
rules:
  - id: reconfirm
    label: {en: reconfirm}
    source: {policy: P1, text: t}
    when: {date_passed: true}
    then: {recommend: [{action: reconfirm_date, params: {weeks: {value_of: opportunity.weeks_to_close}}}]}
  - id: keep_in_touch
    label: {en: keep in touch}
    source: {policy: P1, text: t}
    when: {date_passed: false}
    then: {recommend: [{action: follow_up}]}
  - id: big_deal
    label: {en: big deal}
    source: {policy: P1, text: t}
    when: {big: true}
    then: {recommend: [{action: call}]}
actions:
  reconfirm_date:
    label: {en: reconfirm the date}
    source: {policy: P1, text: t}
    due: 1 week
    escalate_after: {after: 1 week, to: director, action: director_call}
  director_call:
    label: {en: director calls}
    source: {policy: P1, text: t}
    owner: director
  follow_up:
    label: {en: follow up}
    source: {policy: P1, text: t}
    due: 3 days
    every: 1 week
  call:
    label: {en: call}
    source: {policy: P1, text: t}
    due: 1 week
"""


@pytest.fixture(scope="module")
def clocked() -> Iterator[tuple[Any, Evaluator]]:
    playbook = load_playbook_text(PLAYBOOK, "clocked.yaml")
    with compile_playbook(playbook) as compiled:
        yield playbook, Evaluator(compiled, cache_size=0)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    with Store(db_url) as opened:
        yield opened


def file(store: Store, clocked: tuple[Any, Evaluator], cases: dict[str, dict[str, Any]], as_of: dt.date) -> None:
    playbook, evaluator = clocked
    items = []
    for record, opportunity in cases.items():
        facts = {"opportunity": {"id": record, **opportunity}}
        items.append(Appended(evaluator.evaluate_case(facts, as_of, record), facts))
    store.append(playbook, items, source="crm", as_of=as_of)


def evaluations_of(store: Store, record: str) -> list[tuple[str, list[str]]]:
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(evaluations.c.seq, evaluations.c.as_of).where(evaluations.c.record_id == record).order_by("seq")
        ).all()
    return [(row.as_of, [r["id"] for r in store.get(row.seq).recommendations]) for row in rows]


def snapshot(store: Store) -> dict[str, Any]:
    """Everything a tick can change, but the wall-clock times."""
    with store.engine.connect() as conn:
        return {
            "evaluations": conn.execute(select(func.count()).select_from(evaluations)).scalar(),
            "tasks": conn.execute(text("SELECT * FROM tasks ORDER BY id")).all(),
            "events": conn.execute(text("SELECT seq, task_id, status, who, why, as_of FROM task_events")).all(),
            "heads": conn.execute(text("SELECT chain, seq FROM chain_head ORDER BY chain")).all(),
        }


def test_a_passed_decision_date_is_rechecked_and_its_tasks_follow(store: Store, clocked: Any) -> None:
    file(store, clocked, {"d1": {"close_date": "2026-09-10"}, "d2": {"amount": 500}}, START)
    assert evaluations_of(store, "d1") == [("2026-09-01", ["follow_up"])]
    report = tick(store, clocked[1], dt.date(2026, 9, 5))
    assert report.days == ["2026-09-05"] and report.checked == 1 and report.reevaluated == 0  # still ahead
    report = tick(store, clocked[1], dt.date(2026, 9, 11))
    assert report.days == [f"2026-09-{n:02d}" for n in range(6, 12)]  # the days between, one by one
    assert report.reevaluated == 1  # on the 11th: the date passed
    assert evaluations_of(store, "d1") == [("2026-09-01", ["follow_up"]), ("2026-09-11", ["reconfirm_date"])]
    assert evaluations_of(store, "d2") == [("2026-09-01", ["call"])]  # no date: never re-checked
    d1 = {(t.action, t.occurrence): t.status for t in listing(store, record="d1")}
    assert [d1[("follow_up", n)] for n in (1, 2)] == ["cancelled", "cancelled"]  # its rule stopped holding
    assert d1[("reconfirm_date", 1)] == "open"
    reconfirm = next(t for t in listing(store, record="d1") if t.action == "reconfirm_date")
    assert (reconfirm.due, reconfirm.escalate_at) == ("2026-09-18", "2026-09-25")
    stored = store.get(store.count())
    assert stored.decisions["date_passed"] is True and stored.recommendations[0]["rule"] == "reconfirm"
    tick(store, clocked[1], dt.date(2026, 9, 25))
    assert {t.action: t.status for t in listing(store, record="d1")}["director_call"] == "open"
    assert store.verify() == []


def test_twice_at_the_same_day_changes_nothing_and_an_earlier_day_nothing_either(store: Store, clocked: Any) -> None:
    file(
        store, clocked, {f"d{n}": {"close_date": f"2026-09-{n + 2:02d}", "amount": 50 * n} for n in range(1, 9)}, START
    )
    tick(store, clocked[1], dt.date(2026, 9, 20))
    before = snapshot(store)
    again = tick(store, clocked[1], dt.date(2026, 9, 20))
    assert again.days == ["2026-09-20"] and (again.reevaluated, again.overdue, again.escalated, again.repeated) == (
        0,
        0,
        0,
        0,
    )
    assert tick(store, clocked[1], dt.date(2026, 9, 2)).days == []  # time never moves back
    assert snapshot(store) == before
    assert store.verify() == []


def test_on_a_partitioned_log_each_records_new_links_go_to_its_own_partition(db_url: str, clocked: Any) -> None:
    with Store(db_url, partitions=4) as store:
        file(store, clocked, {f"d{n}": {"close_date": f"2026-09-{n + 2:02d}"} for n in range(1, 13)}, START)
        report = tick(store, clocked[1], dt.date(2026, 9, 20))
        assert report.reevaluated == 12
        with store.engine.connect() as conn:
            links = conn.execute(text("SELECT seq, source, record_id FROM evaluations")).all()
            tasks = conn.execute(
                text("SELECT e.seq, t.source, t.record FROM task_events e JOIN tasks t ON t.id = e.task_id")
            ).all()
        # the k-th link of partition p is numbered (k - 1) * 4 + p + 1: a record's links are all in its partition
        assert {(seq - 1) % 4 == partition_of(4, source, record) for seq, source, record in [*links, *tasks]} == {True}
        assert store.verify() == []


def test_a_weekly_value_quoted_in_params_alone_files_no_new_evaluation(store: Store, clocked: Any) -> None:
    file(store, clocked, {"d1": {"close_date": "2026-08-01"}}, START)  # passed already: weeks grow each day
    tick(store, clocked[1], START)  # checked nothing: evaluated that day
    report = tick(store, clocked[1], dt.date(2026, 9, 30))
    assert report.checked == 29 and report.reevaluated == 0
    assert len(evaluations_of(store, "d1")) == 1


def test_the_service_clock_fires_each_day_once_however_many_processes_run_it(store: Store, clocked: Any) -> None:
    file(store, clocked, {f"d{n}": {"close_date": "2026-09-10", "amount": 500} for n in range(30)}, START)
    tick(store, clocked[1], START)  # the clock starts on the import day
    today = dt.date(2026, 9, 30)
    # each its own store (connections) and evaluator, as separate service processes would have
    playbook = clocked[0]
    clocks, reports = [], []
    with compile_playbook(playbook) as compiled_a, compile_playbook(playbook) as compiled_b:
        for compiled in (compiled_a, compiled_b):
            other = Store(store.url)
            clocks.append(ServiceClock(other, Evaluator(compiled), today=lambda: today))
        threads = [threading.Thread(target=lambda c=c: reports.append(c.fire())) for c in clocks]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for clock in clocks:
            reports.append(clock.fire())  # the day is done: nothing
            clock.store.close()
    days = [day for report in reports for day in report.days]
    assert sorted(days) == [(START + dt.timedelta(days=n)).isoformat() for n in range(1, 30)]  # each day once
    assert sum(r.reevaluated for r in reports) == 30  # each record once, when its date passed
    with store.engine.connect() as conn:
        fired = conn.execute(text("SELECT fired_as_of FROM clock_timers WHERE timer = 'tick'")).scalar()
    assert fired == "2026-09-30"
    assert store.verify() == []


def test_playbook_tick_runs_under_the_logs_live_playbook_and_says_what_it_did(
    db_url: str, clocked: Any, tmp_path: Any
) -> None:
    from click.testing import CliRunner

    from cli import main

    with Store(db_url) as store:
        file(store, clocked, {"d1": {"close_date": "2026-09-10"}}, START)
    runner = CliRunner()
    first = runner.invoke(main, ["tick", "--db", db_url, "--as-of", "2026-09-01"])
    assert first.exit_code == 0, first.output
    assert first.stdout.startswith("2026-09-01: 0 records re-checked, 0 re-evaluated")  # evaluated that day
    later = runner.invoke(main, ["tick", "--db", db_url, "--as-of", "2026-09-12", "--format", "json"])
    assert later.exit_code == 0, later.output
    report = json.loads(later.stdout)
    assert len(report["days"]) == 11 and report["reevaluated"] == 1  # under the stored playbook: no --playbook
    back = runner.invoke(main, ["tick", "--db", db_url, "--as-of", "2026-09-02"])
    assert back.exit_code == 0 and "moved past this day already" in back.output
    empty = runner.invoke(main, ["tick", "--db", f"sqlite:///{tmp_path / 'none.db'}"])
    assert empty.exit_code != 0 and "no audit log" in empty.output
