"""Half a year of work on real deals: the Maven open deals imported on 2017-03-01, time moved on every day
for 26 weeks, a seeded share of tasks done on seeded days.  What the store ends with is checked against
what the playbook's cadences imply, computed here from each task's dates without the store's logic.

No Maven deal is an intensive attack (the export has no period targets, so no class A amount), the one
action of the course that escalates: the course playbook is run as a team would configure it that
also escalates undone battle work (G-22: guerrilla, positional, defensive, siege) to the director.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from engine.compile import compile_playbook
from engine.evaluate import Evaluator
from engine.store import Store
from engine.tasks import advance, history, listing
from engine.validate import load_playbook
from engine.workflow import Duration, parse_duration, reviews_between
from tests.conftest import ROOT
from tests.test_import_run import MAVEN, maven_slice, needs_maven

START = dt.date(2017, 3, 1)
DAYS = 26 * 7
END = START + dt.timedelta(days=DAYS)  # the last day time is moved to
COURSE = ROOT / "playbooks" / "course.yaml"


def day(n: int) -> str:
    return (START + dt.timedelta(days=n)).isoformat()


@needs_maven
@pytest.mark.parametrize("rows", [400])
def test_half_a_year_of_daily_ticks_ends_every_task_where_the_cadences_say(
    db_url: str, tmp_path: Path, rows: int
) -> None:
    from adapters.import_run import ImportRun, Source
    from adapters.mapping import load_mapping

    assert MAVEN.is_dir()
    text = COURSE.read_text(encoding="utf-8")
    battle = "    every: {param: battle_follow_up_every}\n"
    escalating = battle + "    escalate_after: {after: 1 week, to: director, action: director_steps_in}\n"
    (tmp_path / "course.yaml").write_text(text.replace(battle, escalating), encoding="utf-8")
    course = load_playbook(tmp_path / "course.yaml")
    assert course.actions["fight_siege"].work.escalate is not None  # type: ignore[union-attr]
    store = Store(db_url)
    with compile_playbook(course) as compiled:
        list(
            ImportRun(
                Source(str(maven_slice(tmp_path, rows)), load_mapping("maven")), Evaluator(compiled), START, store
            )
        )
    made = listing(store)
    assert made and all(t.status == "open" for t in made)
    # a seeded third of the tasks with a due date is done on a seeded day up to its due date (a repeating
    # action's first occurrence: its next is made on that day, after the day's outcomes)
    seeded = random.Random(26)
    dated = [t for t in made if t.due is not None]
    done_on = {
        t.id: seeded.randrange(0, (dt.date.fromisoformat(t.due) - START).days + 1)  # type: ignore[arg-type]
        for t in dated
        if seeded.random() < 1 / 3
    }
    by_day: dict[int, list[Any]] = {}
    for task in dated:
        if task.id in done_on:
            by_day.setdefault(done_on[task.id], []).append(task)
    for n in range(DAYS + 1):
        for task in by_day.get(n, []):
            store.record_outcome(task.evaluation_seq, task.action, "done", "am", "done on the day", as_of=day(n))
        advance(store, START + dt.timedelta(days=n))

    final = listing(store)
    # none doubled: one task per record, action and occurrence
    keys = Counter((t.source, t.record, t.action, t.cause, t.occurrence) for t in final)
    assert max(keys.values()) == 1
    end = END.isoformat()

    # what each task made at the import implies, computed from its own dates
    def ends_as(task: Any, done: int | None) -> tuple[str, bool, bool]:
        """(final state, ever overdue, ever escalated): the outcome comes before the day's tick."""
        if task.due is None:
            return ("done" if done is not None else "open", False, False)
        overdue_day = dt.date.fromisoformat(task.due) + dt.timedelta(days=1)
        escalate_day = dt.date.fromisoformat(task.escalate_at) if task.escalate_at else None
        stop = END + dt.timedelta(days=1) if done is None else START + dt.timedelta(days=done)  # first day not ticked
        overdue = overdue_day < stop
        escalated = overdue and escalate_day is not None and max(escalate_day, overdue_day) < stop
        if done is not None:
            return ("done", overdue, escalated)
        return ("escalated" if escalated else "overdue" if overdue else "open", overdue, escalated)

    expected_overdue = expected_escalated = 0
    expected_states: Counter[str] = Counter()
    for task in made:
        if task.every is not None:
            parsed = parse_duration(task.every)
            assert parsed is not None and task.due is not None
            every, due, gap = Duration(*parsed), dt.date.fromisoformat(task.due), None
            if task.escalate_at is not None:
                gap = dt.date.fromisoformat(task.escalate_at) - due
            occurrences = [due]
            while occurrences[-1] <= END:  # each occurrence's due day makes the next
                occurrences.append(every.after(occurrences[-1]))
            for k, due_k in enumerate(occurrences):
                fake = type(
                    "T",
                    (),
                    {"due": due_k.isoformat(), "escalate_at": None if gap is None else (due_k + gap).isoformat()},
                )
                state, overdue, escalated = ends_as(fake, done_on.get(task.id) if k == 0 else None)
                expected_states[state] += 1
                expected_overdue += overdue
                expected_escalated += escalated
        else:
            state, overdue, escalated = ends_as(task, done_on.get(task.id))
            expected_states[state] += 1
            expected_overdue += overdue
            expected_escalated += escalated
    escalation_tasks = [t for t in final if t.action != t.cause]
    escalated_work = {
        (t.record, t.cause)
        for t in final
        if t.escalate_action and t.action == t.cause and "escalated" in {e["status"] for e in history(store, t.id)}
    }
    # the director is asked once per deal and undone work, however many of its occurrences escalate
    assert sorted((t.record, t.cause) for t in escalation_tasks) == sorted(escalated_work)
    assert all(t.status == "open" and t.owner == "director" for t in escalation_tasks)
    got_states = Counter(t.status for t in final if t.action == t.cause)
    assert got_states == expected_states
    moved = Counter(e["status"] for t in final for e in history(store, t.id))
    assert moved["overdue"] == expected_overdue and moved["escalated"] == expected_escalated
    assert expected_overdue > 0 and expected_escalated > 0 and expected_states["done"] > 0
    assert all(
        t.due is None or t.status in ("done", "overdue", "escalated") or t.due >= end
        for t in final
        if t.action == t.cause
    )
    # every review of G-26 on its calendar in the span
    counts = {s.id: len(reviews_between(s, START, END - dt.timedelta(days=1))) for s in course.schedules.values()}
    assert counts == {
        "weekly_revenue": 26,
        "biweekly_projects": 13,
        "monthly_finance": 6,
        "quarterly_audit": 2,
        "half_year_scan": 1,
    }
    assert store.verify() == []
    store.close()
