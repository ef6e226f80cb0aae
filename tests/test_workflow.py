"""Dates of work: due dates, the moves time makes, and the days reviews fall on."""

from __future__ import annotations

import datetime as dt

import pytest

from engine.validate import load_playbook
from engine.workflow import Due, Duration, Schedule, due_date, moves, parse_duration, reviews_between
from tests.conftest import ROOT

START = dt.date(2017, 3, 1)  # a Wednesday: the Maven open deals' import day
SPAN_END = START + dt.timedelta(weeks=26) - dt.timedelta(days=1)


def test_durations_read_as_a_whole_number_and_a_unit() -> None:
    assert parse_duration("2 weeks") == (2, "week")
    assert parse_duration("1 month") == (1, "month")
    assert parse_duration("3 day") == (3, "day")
    for bad in ("two weeks", "2weeks", "2 fortnights", "-1 day", "1.5 weeks", ""):
        assert parse_duration(bad) is None


def test_a_month_later_keeps_the_day_or_the_months_last() -> None:
    assert Duration(1, "month").after(dt.date(2017, 1, 31)) == dt.date(2017, 2, 28)
    assert Duration(2, "week").before(dt.date(2017, 4, 1)) == dt.date(2017, 3, 18)


def test_a_due_date_counts_from_the_evaluation_or_from_a_date_of_the_case() -> None:
    facts = {"opportunity": {"close_date": "2017-04-01"}}
    assert due_date(Due(Duration(3, "day")), START, facts) == dt.date(2017, 3, 4)
    before_close = Due(Duration(2, "week"), "opportunity.close_date", before=True)
    assert due_date(before_close, START, facts) == dt.date(2017, 3, 18)
    assert due_date(before_close, START, {"opportunity": {}}) is None  # no close date: no due date


def test_time_moves_work_overdue_the_day_after_it_is_due_then_escalates_once() -> None:
    assert moves("open", "2017-03-08", "2017-03-15", dt.date(2017, 3, 8)) == []
    assert moves("open", "2017-03-08", "2017-03-15", dt.date(2017, 3, 9)) == ["overdue"]
    assert moves("accepted", "2017-03-08", "2017-03-15", dt.date(2017, 3, 15)) == ["overdue", "escalated"]
    assert moves("escalated", "2017-03-08", "2017-03-15", dt.date(2017, 4, 1)) == []
    for closed in ("done", "dismissed", "cancelled"):
        assert moves(closed, "2017-03-08", "2017-03-15", dt.date(2017, 4, 1)) == []


@pytest.mark.parametrize(
    ("calendar", "weekday", "count"),
    [
        ("weekly", 0, 26),
        ("every_two_weeks", 0, 13),
        ("monthly", None, 6),
        ("quarterly", None, 2),
        ("half_yearly", None, 1),
    ],
)
def test_each_review_of_g26_falls_as_often_as_its_calendar_says_over_26_weeks(
    calendar: str, weekday: int | None, count: int
) -> None:
    days = reviews_between(Schedule("r", calendar, weekday, "director", ("open_work",)), START, SPAN_END)
    assert len(days) == count
    assert all(START <= day <= SPAN_END for day in days)
    if weekday is not None:
        assert {day.weekday() for day in days} == {weekday}
    else:
        assert {day.day for day in days} == {1}


def test_two_weekly_reviews_fall_on_the_same_weeks_whenever_they_are_asked_for() -> None:
    schedule = Schedule("r", "every_two_weeks", 0, "director", ())
    whole = reviews_between(schedule, START, SPAN_END)
    later = reviews_between(schedule, START + dt.timedelta(days=9), SPAN_END)
    assert later == [day for day in whole if day >= START + dt.timedelta(days=9)]


def test_the_course_playbook_holds_g26s_five_reviews() -> None:
    course = load_playbook(ROOT / "playbooks" / "course.yaml")
    assert {s.id: s.calendar for s in course.schedules.values()} == {
        "weekly_revenue": "weekly",
        "biweekly_projects": "every_two_weeks",
        "monthly_finance": "monthly",
        "quarterly_audit": "quarterly",
        "half_year_scan": "half_yearly",
    }
    attack = course.actions["intensive_attack"].work
    assert attack is not None and attack.escalate is not None
    assert (attack.escalate.to, attack.escalate.action) == ("director", "director_steps_in")
    assert attack.every is not None and attack.every.parameter == "attack_follow_up_every"
