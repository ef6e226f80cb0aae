"""Work over time: when a recommended action is due, when it falls overdue and escalates, when it
repeats, and when the playbook's reviews fall.  Pure functions of dates: the store keeps the tasks
(:mod:`engine.store`), ``playbook test`` advances them in memory; both move them by these rules.

A task's life (VOCABULARY.md, Work): ``open`` → ``accepted`` → ``done`` | ``dismissed``;
``open``/``accepted`` → ``overdue`` (its due date passed) → ``escalated`` (its escalation's delay
passed too); any state still active → ``cancelled`` (its rule no longer holds, its opportunity closed).
Time moves only when told (an ``as_of`` date): nothing here reads a clock.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.errors import Location
    from engine.model import Source

__all__ = [
    "ACTIVE",
    "CALENDARS",
    "CALENDAR_LABELS",
    "OWNERS",
    "OWNER_LABELS",
    "STATUSES",
    "WEEKDAYS",
    "WEEKDAY_LABELS",
    "Due",
    "Duration",
    "Escalation",
    "Schedule",
    "Work",
    "due_date",
    "duration_words",
    "moves",
    "parse_duration",
    "reviews_between",
    "task_fields",
    "tasks_at",
]

OWNERS = ("account_manager", "director", "team")
STATUSES = ("open", "accepted", "done", "dismissed", "overdue", "escalated", "cancelled")
ACTIVE = ("open", "accepted", "overdue", "escalated")  # the states work can still leave by being done
CALENDARS = ("weekly", "every_two_weeks", "monthly", "quarterly", "half_yearly")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_UNITS = {"day": "day", "days": "day", "week": "week", "weeks": "week", "month": "month", "months": "month"}
_DURATION = re.compile(r"^(\d{1,4}) ([a-z]+)$")
# Two-week reviews fall on the weeks an even number of weeks after this Monday: the same weeks every year.
_FORTNIGHT_EPOCH = dt.date(2001, 1, 1)


@dataclass(frozen=True)
class Duration:
    """A span of calendar time; ``parameter`` names the playbook parameter it was read from, if any."""

    amount: int
    unit: str  # day | week | month
    parameter: str | None = None

    def after(self, day: dt.date) -> dt.date:
        return _shift(day, self.amount, self.unit)

    def before(self, day: dt.date) -> dt.date:
        return _shift(day, -self.amount, self.unit)

    @property
    def text(self) -> str:
        return duration_words(self.amount, self.unit, "en")

    def words(self, lang: str) -> str:
        return duration_words(self.amount, self.unit, lang)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"amount": self.amount, "unit": self.unit}
        if self.parameter:
            out["parameter"] = self.parameter
        return out


@dataclass(frozen=True)
class Due:
    """When an action is due: ``offset`` after the evaluation, or before/after a date of the case."""

    offset: Duration
    anchor: str | None = None  # an input date field (opportunity.close_date); None: the evaluation's as_of
    before: bool = False


@dataclass(frozen=True)
class Escalation:
    """An undone task, ``after`` past its due date, goes to ``to``; ``action`` is what they are asked to do."""

    after: Duration
    to: str
    action: str | None = None


@dataclass(frozen=True)
class Work:
    """What an action asks of people: who does it, by when, how often, and whom it goes to when undone."""

    owner: str
    due: Due | None = None
    every: Duration | None = None  # a new occurrence each span while the rule still recommends it
    escalate: Escalation | None = None


@dataclass(frozen=True)
class Schedule:
    """A recurring review of the playbook (G-26), on a calendar rule, bringing its open work."""

    id: str
    calendar: str  # one of CALENDARS
    weekday: int | None  # 0 Monday .. 6 Sunday; None: the period's first day
    owner: str
    brings: tuple[str, ...]
    label: dict[str, str] = field(default_factory=dict)
    source: Source | None = None
    location: Location | None = None


OWNER_LABELS = {
    "account_manager": {"zh": "客户经理", "en": "account manager"},
    "director": {"zh": "客户主任", "en": "director"},
    "team": {"zh": "团队", "en": "team"},
}
CALENDAR_LABELS = {
    "weekly": {"zh": "每周", "en": "weekly"},
    "every_two_weeks": {"zh": "每两周", "en": "every two weeks"},
    "monthly": {"zh": "每月", "en": "monthly"},
    "quarterly": {"zh": "每季", "en": "quarterly"},
    "half_yearly": {"zh": "每半年", "en": "half-yearly"},
}
WEEKDAY_LABELS = {"zh": "一二三四五六日", "en": [day.capitalize() for day in WEEKDAYS]}
_UNIT_ZH = {"day": "天", "week": "周", "month": "个月"}


def duration_words(amount: int, unit: str, lang: str) -> str:
    """A span as people write it: 3天, 2周, 1个月; 3 days, 1 week."""
    if lang == "zh":
        return f"{amount}{_UNIT_ZH[unit]}"
    return f"{amount} {unit}{'' if amount == 1 else 's'}"


def parse_duration(text: str) -> tuple[int, str] | None:
    """``"2 weeks"`` -> (2, "week"); None when the text is not a whole number and a unit."""
    found = _DURATION.match(text.strip())
    if found is None or found.group(2) not in _UNITS:
        return None
    return int(found.group(1)), _UNITS[found.group(2)]


def _shift(day: dt.date, amount: int, unit: str) -> dt.date:
    if unit == "day":
        return day + dt.timedelta(days=amount)
    if unit == "week":
        return day + dt.timedelta(weeks=amount)
    months = day.year * 12 + day.month - 1 + amount
    year, month = divmod(months, 12)
    return dt.date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


def _date_of(value: Any) -> dt.date | None:
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value[:10])
        except ValueError:
            return None
    return None


def due_date(due: Due | None, as_of: dt.date, facts: dict[str, Any]) -> dt.date | None:
    """The date an action recommended at ``as_of`` is due; None when it has no due date or its case
    lacks the date it is due relative to (a task without a due date never falls overdue)."""
    if due is None:
        return None
    base: dt.date | None = as_of
    if due.anchor is not None:
        kind, _, name = due.anchor.partition(".")
        holder = facts.get(kind)
        base = _date_of(holder.get(name)) if isinstance(holder, dict) else None
    if base is None:
        return None
    return due.offset.before(base) if due.before else due.offset.after(base)


def moves(status: str, due: str | None, escalate_at: str | None, as_of: dt.date) -> list[str]:
    """The states a task passes through when time reaches ``as_of``, in order ([] when none).

    Overdue the day after its due date; escalated from its escalation date on (only once overdue).
    Running it again at the same date gives [] for the state it left: moving time is idempotent.
    """
    passed: list[str] = []
    day = as_of.isoformat()
    if status in ("open", "accepted") and due is not None and day > due:
        passed.append(status := "overdue")
    if status == "overdue" and escalate_at is not None and day >= escalate_at:
        passed.append("escalated")
    return passed


def _first_weekday(day: dt.date, weekday: int) -> dt.date:
    return day + dt.timedelta(days=(weekday - day.weekday()) % 7)


def reviews_between(schedule: Schedule, start: dt.date, end: dt.date) -> list[dt.date]:
    """The days a schedule's review falls on from ``start`` to ``end``, both included."""
    days: list[dt.date] = []
    if schedule.calendar in ("weekly", "every_two_weeks"):
        day = _first_weekday(start, schedule.weekday or 0)
        if schedule.calendar == "every_two_weeks" and ((day - _FORTNIGHT_EPOCH).days // 7) % 2:
            day += dt.timedelta(weeks=1)
        step = dt.timedelta(weeks=1 if schedule.calendar == "weekly" else 2)
        while day <= end:
            days.append(day)
            day += step
        return days
    months = {"monthly": 1, "quarterly": 3, "half_yearly": 6}[schedule.calendar]
    month = dt.date(start.year, start.month - (start.month - 1) % months, 1)  # the period holding start
    while month <= end:
        day = month if schedule.weekday is None else _first_weekday(month, schedule.weekday)
        if start <= day <= end:
            days.append(day)
        month = _shift(month, months, "month")
    return days


def task_fields(work: Work | None, as_of: dt.date, facts: dict[str, Any]) -> dict[str, Any]:
    """What a task of an action with ``work`` recommended at ``as_of`` holds: owner, due and escalation
    dates, who it escalates to with which action, how often it repeats (no work: the account manager's,
    no date)."""
    if work is None:
        return {"owner": "account_manager", "due": None, "escalate_at": None, "escalate_to": None,
                "escalate_action": None, "every": None}  # fmt: skip
    due = due_date(work.due, as_of, facts)
    escalate = work.escalate
    return {
        "owner": work.owner,
        "due": None if due is None else due.isoformat(),
        "escalate_at": None if escalate is None or due is None else escalate.after.after(due).isoformat(),
        "escalate_to": None if escalate is None else escalate.to,
        "escalate_action": None if escalate is None else escalate.action,
        "every": None if work.every is None else work.every.text,
    }


def tasks_at(works: dict[str, Work | None], as_of: dt.date, facts: dict[str, Any], day: dt.date) -> dict[str, str]:
    """The state of each recommended action's (first) task when time reaches ``day``, nobody having done
    anything; an escalation's action appears as ``open``.  What ``playbook test`` checks, without a store."""
    states: dict[str, str] = {}
    for action, work in works.items():
        fields = task_fields(work, as_of, facts)
        status = ([*moves("open", fields["due"], fields["escalate_at"], day)] or ["open"])[-1]
        states[action] = status
        if status == "escalated" and fields["escalate_action"]:
            states.setdefault(fields["escalate_action"], "open")
    return states
