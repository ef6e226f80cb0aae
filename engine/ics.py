"""An agenda as an iCalendar file (RFC 5545) a person imports into their calendar.

Each active task is a ``VTODO`` (its ``DUE`` the task's due date, when it has one); each review of the
playbook one recurring ``VEVENT`` (its ``RRULE`` the schedule's calendar rule, from its next day on).
Their ``UID`` s are made of what the item is — the task's number and its record, the playbook and
schedule and whose agenda it is — so importing a later agenda updates the items already imported
instead of adding them again, and ``DTSTAMP`` is the agenda's day, so one agenda gives the same file
every time.  Text is escaped (§3.3.11), lines end in CRLF and are folded at 75 octets without
splitting a UTF-8 character (§3.1).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence

from engine.agenda import AGENDA_HEADINGS, OWNER_LABELS, WHOLE_TEAM, Agenda, TeamAgenda, action_label
from engine.model import Playbook
from engine.tasks import Task
from engine.workflow import WEEKDAYS, Schedule

__all__ = ["agenda_calendar", "escape_text", "fold"]

PRODID = "-//sales-playbook//agenda//EN"
LINE_OCTETS = 75
_PRIORITY = {"escalated": 1, "overdue": 3, "due_soon": 5, "open": 9}  # 1 highest (§3.8.1.9)
_MONTHS = {"monthly": 1, "quarterly": 3, "half_yearly": 6}


def escape_text(text: str) -> str:
    """A TEXT value: backslash, semicolon, comma and line breaks escaped."""
    text = text.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")
    return text.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n")


def fold(line: str) -> bytes:
    """One content line as UTF-8, folded: no physical line over 75 octets, continuations begin with a space."""
    data = line.encode("utf-8")
    parts: list[bytes] = []
    limit = LINE_OCTETS
    while len(data) > limit:
        cut = limit
        while data[cut] & 0xC0 == 0x80:  # never inside a character: back to its first byte
            cut -= 1
        parts.append(data[:cut])
        data = data[cut:]
        limit = LINE_OCTETS - 1  # the leading space takes one
    parts.append(data)
    return b"\r\n ".join(parts) + b"\r\n"


def _date(day: str | dt.date) -> str:
    return (day if isinstance(day, str) else day.isoformat()).replace("-", "")


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:16]


def _rrule(schedule: Schedule) -> str:
    day = WEEKDAYS[schedule.weekday or 0][:2].upper()
    if schedule.calendar == "weekly":
        return f"FREQ=WEEKLY;BYDAY={day}"
    if schedule.calendar == "every_two_weeks":
        return f"FREQ=WEEKLY;INTERVAL=2;BYDAY={day}"
    # a month's review falls on its first day, or on the first of its weekday in the month (workflow.reviews_between)
    on = "BYMONTHDAY=1" if schedule.weekday is None else f"BYDAY=1{day}"
    return f"FREQ=MONTHLY;INTERVAL={_MONTHS[schedule.calendar]};{on}"


def _todo(
    task: Task, section: str, people: Sequence[str], playbook: Playbook | None, lang: str, stamp: str
) -> list[str]:
    zh = lang == "zh"
    label = action_label(playbook, task.action, lang)
    owner = OWNER_LABELS.get(task.owner, {}).get(lang, task.owner)
    said = [f"项目 {task.record}" if zh else f"record {task.record}", f"负责:{owner}" if zh else f"owner: {owner}"]
    said += [f"执行人:{'、'.join(people)}" if zh else f"who: {', '.join(people)}"] if people else []
    if task.due:
        said.append(f"截止 {task.due}" if zh else f"due {task.due}")
    if task.escalate_to:
        to = OWNER_LABELS.get(task.escalate_to, {}).get(lang, task.escalate_to)
        if task.status == "escalated":
            said.append(f"已升级给{to}" if zh else f"escalated to the {to}")
        elif task.escalate_at:
            said.append(f"{task.escalate_at} 起升级给{to}" if zh else f"escalates to the {to} on {task.escalate_at}")
    lines = [
        "BEGIN:VTODO",
        f"UID:task-{task.id}-{_digest(task.source, task.record, task.action, str(task.series), str(task.occurrence))}"
        "@sales-playbook",
        f"DTSTAMP:{stamp}",
        f"LAST-MODIFIED:{_date(task.as_of)}T000000Z",
        f"SUMMARY:{escape_text(f'{label}:项目 {task.record}' if zh else f'{label}: {task.record}')}",
        f"DESCRIPTION:{escape_text(('，' if zh else '; ').join(said))}",
        f"CATEGORIES:{escape_text(AGENDA_HEADINGS[section][lang])}",
        f"PRIORITY:{_PRIORITY[section]}",
        f"STATUS:{'IN-PROCESS' if task.status == 'accepted' else 'NEEDS-ACTION'}",
    ]
    if task.due:
        lines.append(f"DUE;VALUE=DATE:{_date(task.due)}")
    return [*lines, "END:VTODO"]


def _event(
    schedule_id: str, day: dt.date, open_work: int, scope: str, playbook: Playbook | None, lang: str, stamp: str
) -> list[str]:
    schedule = playbook.schedules.get(schedule_id) if playbook is not None else None
    label = schedule.label.get(lang, schedule_id) if schedule is not None else schedule_id
    brings = f"带上未完成工作 {open_work} 项" if lang == "zh" else f"brings {open_work} open tasks"
    playbook_id = playbook.id if playbook is not None else ""
    lines = [
        "BEGIN:VEVENT",
        f"UID:review-{schedule_id}-{_digest(playbook_id, schedule_id, scope)}@sales-playbook",
        f"DTSTAMP:{stamp}",
        f"DTSTART;VALUE=DATE:{_date(day)}",
        f"DTEND;VALUE=DATE:{_date(day + dt.timedelta(days=1))}",
        f"SUMMARY:{escape_text(label)}",
        f"DESCRIPTION:{escape_text(brings)}",
        "TRANSP:TRANSPARENT",
    ]
    if schedule is not None:
        lines.append(f"RRULE:{_rrule(schedule)}")
    return [*lines, "END:VEVENT"]


def agenda_calendar(agenda: Agenda | TeamAgenda, playbook: Playbook | None, lang: str) -> bytes:
    """The agenda's active tasks as to-dos and its reviews as recurring all-day events, as the file's bytes."""
    zh = lang == "zh"
    stamp = f"{_date(agenda.as_of)}T000000Z"
    desks: dict[int, tuple[Task, str, list[str]]] = {}  # task -> (it, its section, who holds it)
    if isinstance(agenda, TeamAgenda):
        scope = f"team:{agenda.team}"
        name = f"团队工作日程:{agenda.team}" if zh else f"Agenda of the team {agenda.team}"
        for person, role, sections in agenda.people:
            who = WHOLE_TEAM[lang] if role == "team" else person
            for section, listed in sections.items():
                for task in listed:
                    desks.setdefault(task.id, (task, section, []))[2].append(who)
    else:
        scope = f"owner:{agenda.owner or ''}"
        whose = OWNER_LABELS.get(agenda.owner or "", {}).get(lang) or ("全部" if zh else "everyone")
        name = f"工作日程:{whose}" if zh else f"Agenda: {whose}"
        for section, listed in agenda.sections.items():
            for task in listed:
                desks[task.id] = (task, section, [])
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", f"PRODID:{PRODID}", "CALSCALE:GREGORIAN", "METHOD:PUBLISH",
             f"X-WR-CALNAME:{escape_text(name)}"]  # fmt: skip
    for task, section, people in desks.values():
        lines += _todo(task, section, people, playbook, lang, stamp)
    seen: set[str] = set()
    for day, schedule_id, open_work in agenda.reviews:
        if schedule_id not in seen:  # one recurring event per review, from its next day on
            seen.add(schedule_id)
            lines += _event(schedule_id, day, open_work, scope, playbook, lang, stamp)
    lines.append("END:VCALENDAR")
    return b"".join(fold(line) for line in lines)
