"""engine/ics.py: an agenda as an iCalendar file — read back by the ``icalendar`` package as a calendar
application would, the same UIDs run after run, text escaped and lines folded as RFC 5545 says."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import icalendar
import pytest
from click.testing import CliRunner
from dateutil.rrule import rrulestr

from cli import main
from engine.agenda import Agenda
from engine.ics import agenda_calendar
from engine.tasks import Task
from engine.validate import load_playbook
from engine.workflow import reviews_between
from tests.conftest import ROOT
from tests.test_text import ASCII_WORD, authored_words, identifiers

COURSE = ROOT / "playbooks" / "course.yaml"
SAMPLES = ROOT / "samples" / "cases.jsonl"


def invoke(*args: str) -> tuple[int, bytes, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout_bytes, result.stderr


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'work.db'}"
    code, _, err = invoke(
        "recommend", "--playbook", str(COURSE), "--input", str(SAMPLES), "--as-of", "2026-11-27", "--db", url
    )
    assert code == 0, err
    return url


def calendar(db: str, *more: str) -> bytes:
    code, out, err = invoke("agenda", "--playbook", str(COURSE), "--format", "ics", "--db", db, *more)
    assert code == 0, err
    return out


def test_the_calendar_holds_each_active_task_as_a_to_do_and_each_review_as_a_recurring_event(db: str) -> None:
    invoke("tasks", "advance", "--as-of", "2026-12-18", "--db", db)
    code, agenda_json, err = invoke(
        "agenda", "--playbook", str(COURSE), "--owner", "director", "--as-of", "2026-12-18", "--format", "json",
        "--db", db,
    )  # fmt: skip
    assert code == 0, err
    items = json.loads(agenda_json)["items"]
    parsed = icalendar.Calendar.from_ical(calendar(db, "--owner", "director", "--as-of", "2026-12-18"))
    todos = parsed.walk("VTODO")
    tasks = {item["task"]: item for item in items if item["section"] != "review"}
    assert len(todos) == len(tasks) > 0
    priority = {"escalated": 1, "overdue": 3, "due_soon": 5, "open": 9}
    for todo in todos:
        task = tasks[int(str(todo["UID"]).split("-")[1])]
        due = todo.get("DUE")
        assert (due.dt.isoformat() if due is not None else None) == task["due"]
        assert int(todo["PRIORITY"]) == priority[task["section"]] and str(todo["STATUS"]) == "NEEDS-ACTION"
        assert task["record"] in str(todo["SUMMARY"])
    playbook = load_playbook(COURSE)
    events = {str(event["SUMMARY"]): event for event in parsed.walk("VEVENT")}
    assert set(events) == {schedule.label["en"] for schedule in playbook.schedules.values()}
    for schedule in playbook.schedules.values():
        event = events[schedule.label["en"]]
        start = event["DTSTART"].dt
        rule = rrulestr(event["RRULE"].to_ical().decode(), dtstart=dt.datetime.combine(start, dt.time()))
        end = dt.datetime(2028, 12, 31)
        # the calendar application's days are the playbook's, for two years
        assert [d.date() for d in rule.between(dt.datetime(2026, 12, 18), end, inc=True)] == reviews_between(
            schedule, dt.date(2026, 12, 18), end.date()
        )


def test_the_same_agenda_gives_the_same_file_and_a_later_one_the_same_uids_for_the_same_work(db: str) -> None:
    first = calendar(db, "--as-of", "2026-11-30")
    assert calendar(db, "--as-of", "2026-11-30") == first  # nothing in it depends on when it is run

    def uids(data: bytes) -> dict[str, str]:
        parsed = icalendar.Calendar.from_ical(data)
        found = [(str(c["UID"]), str(c["SUMMARY"])) for c in parsed.walk() if c.name in ("VTODO", "VEVENT")]
        assert len({uid for uid, _ in found}) == len(found)  # no item twice in one file
        return dict(found)

    before = uids(first)
    assert invoke("tasks", "advance", "--as-of", "2026-12-18", "--db", db)[0] == 0
    after = uids(calendar(db, "--as-of", "2026-12-18"))
    kept = before.keys() & after.keys()
    # every review, and every task still active, keeps its UID: a re-import updates it
    assert {uid for uid in before if uid.startswith("review-")} <= kept
    assert len(kept) > len([uid for uid in before if uid.startswith("review-")])
    assert all(before[uid] == after[uid] for uid in kept)
    new_tasks = [uid for uid in after.keys() - before.keys() if uid.startswith("task-")]
    assert new_tasks  # the occurrences and escalations time made are new to-dos


def test_text_is_escaped_and_lines_are_folded_at_75_octets_in_crlf(db: str) -> None:
    task = Task(
        id=7, series=7, occurrence=1, source="jsonl", record="a,b;c\\d\nsecond line " + "长" * 40, evaluation_seq=1,
        action="not_in_the_playbook", cause="x", rule="r", owner="director", due="2026-12-01", escalate_at=None,
        escalate_to=None, escalate_action=None, every=None, status="overdue", as_of="2026-12-02",
    )  # fmt: skip
    data = agenda_calendar(Agenda(dt.date(2026, 12, 3), None, {"overdue": [task]}, []), None, "en")
    assert data.endswith(b"\r\n") and b"\n" not in data.replace(b"\r\n", b"")
    for line in data.split(b"\r\n")[:-1]:
        assert len(line) <= 75
        line.decode("utf-8")  # no character cut in two
    assert b"a\\,b\\;c\\\\d\\nsecond" in data.replace(b"\r\n ", b"")
    (todo,) = icalendar.Calendar.from_ical(data).walk("VTODO")
    assert str(todo["SUMMARY"]) == f"not_in_the_playbook: {task.record}"


def test_the_chinese_calendar_says_nothing_by_an_identifier(db: str) -> None:
    invoke("tasks", "advance", "--as-of", "2026-12-18", "--db", db)
    course = load_playbook(COURSE)
    forbidden = identifiers(course) - authored_words(course, "zh")
    forbidden |= {"account_manager", "director", "team", "open", "overdue", "escalated", "due", "task", "record"}
    parsed = icalendar.Calendar.from_ical(calendar(db, "--as-of", "2026-12-18", "--lang", "zh"))
    shown = [str(parsed["X-WR-CALNAME"])]
    for item in parsed.walk():
        shown += [str(item[name]) for name in ("SUMMARY", "DESCRIPTION") if name in item]
        if "CATEGORIES" in item:
            shown += [str(c) for c in item["CATEGORIES"].cats]
    text = "\n".join(shown)
    assert re.search("[\u4e00-\u9fff]", text) and "已升级" in text
    assert {word for word in ASCII_WORD.findall(text) if word in forbidden} == set()
