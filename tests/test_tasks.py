"""Tasks in the audit log: made from recommendations, moved by outcomes, by time and by closed deals."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from engine.compile import compile_playbook
from engine.evaluate import Evaluator
from engine.store import Appended, QuarantinedEvent, Store
from engine.tasks import advance, history, listing
from engine.validate import load_playbook_text

START = dt.date(2017, 3, 1)

PLAYBOOK = """
playbook: {id: work, version: "1", languages: [en], title: {en: Work}}
parameters:
  follow_up_every: {value: "1 week", label: {en: follow-up interval}}
inputs:
  opportunity.id: {type: string, label: {en: id}}
  opportunity.amount: {type: number, label: {en: amount}}
  opportunity.close_date: {type: date, label: {en: close date}}
decisions:
  big:
    label: {en: big}
    source: {policy: P1, text: big deals}
    type: boolean
    rows:
      - {id: large, label: {en: L}, source: {policy: P1, text: t}, then: true, when: {opportunity.amount: {gte: 100}}}
      - {id: small, label: {en: S}, source: {policy: P1, text: t}, when: {opportunity.amount: {lt: 100}}, then: false}
rules:
  - id: big_deal
    label: {en: big deal}
    source: {policy: P1, text: t}
    when: {big: true}
    then: {recommend: [{action: call}, {action: confirm_date}, {action: follow_up}]}
  - id: small_deal
    label: {en: small deal}
    source: {policy: P1, text: t}
    when: {big: false}
    then: {recommend: [{action: email}]}
actions:
  call:
    label: {en: call the buyer}
    source: {policy: P1, text: t}
    owner: account_manager
    due: 1 week
    escalate_after: {after: 1 week, to: director, action: director_call}
  director_call:
    label: {en: director calls}
    source: {policy: P1, text: t}
    owner: director
  confirm_date:
    label: {en: confirm the date}
    source: {policy: P1, text: t}
    due: {by: 2 weeks, before: opportunity.close_date}
  follow_up:
    label: {en: follow up}
    source: {policy: P1, text: t}
    due: 3 days
    every: {param: follow_up_every}
  email:
    label: {en: send an email}
    source: {policy: P1, text: t}
"""


@pytest.fixture(scope="module")
def work() -> Iterator[tuple[Any, Evaluator]]:
    playbook = load_playbook_text(PLAYBOOK, "work.yaml")
    with compile_playbook(playbook) as compiled:
        yield playbook, Evaluator(compiled, cache_size=0)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    with Store(db_url) as opened:
        yield opened


def evaluate(store: Store, work: tuple[Any, Evaluator], amount: int, as_of: dt.date, record: str = "d1") -> int:
    playbook, evaluator = work
    facts = {"opportunity": {"id": record, "amount": amount, "close_date": "2017-04-01"}}
    result = evaluator.evaluate_case(facts, as_of, record)
    return store.append(playbook, [Appended(result, facts)], source="crm", as_of=as_of)[0]


def states(store: Store) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for task in listing(store):
        out.setdefault(task.action, []).append(task.status)
    return out


def test_each_recommendation_becomes_a_task_owned_and_due_as_its_action_says(store: Store, work: Any) -> None:
    evaluate(store, work, 500, START)
    made = {t.action: t for t in listing(store)}
    assert set(made) == {"call", "confirm_date", "follow_up"}
    call = made["call"]
    assert (call.owner, call.due, call.escalate_at) == ("account_manager", "2017-03-08", "2017-03-15")
    assert made["confirm_date"].due == "2017-03-18"  # two weeks before the close date
    assert made["follow_up"].due == "2017-03-04" and made["follow_up"].every == "1 week"
    assert all(t.status == "open" for t in made.values())
    assert store.verify() == []


def test_a_record_evaluated_again_keeps_its_tasks_and_a_changed_decision_cancels_them(store: Store, work: Any) -> None:
    evaluate(store, work, 500, START)
    evaluate(store, work, 600, START + dt.timedelta(days=1))
    assert states(store) == {"call": ["open"], "confirm_date": ["open"], "follow_up": ["open"]}
    evaluate(store, work, 50, START + dt.timedelta(days=2))
    assert states(store) == {
        "call": ["cancelled"],
        "confirm_date": ["cancelled"],
        "follow_up": ["cancelled"],
        "email": ["open"],
    }
    call = next(t for t in listing(store) if t.action == "call")
    why = history(store, call.id)[-1]["why"]
    assert "no longer recommends call" in why and "big_deal" in why
    assert store.verify() == []


def test_time_makes_undone_work_overdue_then_escalated_with_its_escalation_action(store: Store, work: Any) -> None:
    evaluate(store, work, 500, START)
    assert advance(store, dt.date(2017, 3, 8))["overdue"] == 1  # follow_up (due 3/4); call is due that day
    counts = advance(store, dt.date(2017, 3, 15))
    assert counts["escalated"] == 1
    call = next(t for t in listing(store) if t.action == "call")
    assert [e["status"] for e in history(store, call.id)] == ["open", "overdue", "escalated"]
    director = listing(store, owner="director")
    assert {t.action for t in director} == {"call", "director_call"}  # escalated to them, and their own task
    before = states(store)
    assert advance(store, dt.date(2017, 3, 15)) == {"repeated": 0, "overdue": 0, "escalated": 0}
    assert advance(store, dt.date(2017, 3, 10)) == {"repeated": 0, "overdue": 0, "escalated": 0}
    assert states(store) == before
    assert store.verify() == []


def test_a_repeating_action_comes_again_each_interval_while_its_rule_holds(store: Store, work: Any) -> None:
    evaluate(store, work, 500, START)
    advance(store, dt.date(2017, 3, 20))  # due 3/4: occurrences due 3/11, 3/18 and the next, 3/25
    follow = [t for t in listing(store) if t.action == "follow_up"]
    assert [(t.occurrence, t.due, t.status) for t in follow] == [
        (1, "2017-03-04", "overdue"),
        (2, "2017-03-11", "overdue"),
        (3, "2017-03-18", "overdue"),
        (4, "2017-03-25", "open"),
    ]
    evaluate(store, work, 50, dt.date(2017, 3, 21))  # the rule no longer holds: the series ends
    advance(store, dt.date(2017, 4, 30))
    assert [t.status for t in listing(store) if t.action == "follow_up"] == ["cancelled"] * 4
    assert store.verify() == []


def test_outcomes_move_the_task_and_a_closed_deal_cancels_the_rest(store: Store, work: Any) -> None:
    seq = evaluate(store, work, 500, START)
    store.record_outcome(seq, "call", "accepted", "li.wei", "calling Monday", as_of="2017-03-02")
    store.record_outcome(seq, "call", "done", "li.wei", "called", as_of="2017-03-06")
    advance(store, dt.date(2017, 3, 30))
    assert states(store)["call"] == ["done"]  # done in time: never overdue
    with store.write() as writer:
        writer.quarantine(
            [QuarantinedEvent("crm", "e1", "d1", "2017-03-31T00:00:00+00:00", "closed_deal", "stage closedwon", {})]
        )
    assert all(s in ("done", "cancelled") for ss in states(store).values() for s in ss)
    confirm = next(t for t in listing(store) if t.action == "confirm_date")
    assert history(store, confirm.id)[-1]["why"] == "the opportunity closed: stage closedwon"
    assert store.verify() == []


ODD_RECORDS = ['q"uote', "back\\slash", "é-ü-中", "line\u2028sep", "mark\ue000", "tab\there", "d1"]


@pytest.mark.parametrize("partitions", [1, 3])
def test_tasks_made_in_one_batch_chain_what_verify_recomputes_whatever_their_record_ids(
    db_url: str, work: Any, partitions: int
) -> None:
    """A batch's tasks are built from texts shared by their action and rule (engine/tasks.py): the states and
    links must be exactly those ``audit verify`` recomputes from the rows, for record ids JSON escapes, a due
    date taken from the case (or missing with its date), and a record evaluated twice in the batch."""
    playbook, evaluator = work
    items = []
    for i, record in enumerate([*ODD_RECORDS, "d1"]):
        close = None if i == 2 else "2017-04-01"
        facts = {"opportunity": {"id": record, "amount": 500 if i < 7 else 50, "close_date": close}}
        items.append(Appended(evaluator.evaluate_case(facts, START, record), facts, import_key=f"k{i}"))
    with Store(db_url, partitions=partitions) as store:
        store.append(playbook, items, source='crm "one"', as_of=START)
        made = listing(store)
        assert store.verify() == []
        first = made[0]
        assert (
            history(store, first.id)[0]["why"] == f"rule big_deal recommended it (evaluation #{first.evaluation_seq})"
        )
    by_record: dict[str, dict[str, Any]] = {}
    for task in made:
        by_record.setdefault(task.record, {})[task.action] = task
    assert set(by_record) == set(ODD_RECORDS)
    assert {a: t.status for a, t in by_record["d1"].items()} == {
        "call": "cancelled", "confirm_date": "cancelled", "follow_up": "cancelled", "email": "open"
    }  # fmt: skip
    assert by_record["é-ü-中"]["confirm_date"].due is None  # its close date missing
    assert by_record['q"uote']["confirm_date"].due == "2017-03-18"
