"""What people see of their work: an agenda of what is escalated, overdue and due soon, and the next reviews.

Built from the tasks (:mod:`engine.tasks`) and the playbook's schedules (:mod:`engine.workflow`); the
playbook gives every action and review its label, so the Chinese text names nothing by an identifier.

An owner's agenda is a role's (account manager, director); a team's (:func:`build_team_agenda`) is per
person, as the CRM names them in each deal's latest evaluation: the deal's ``opportunity.owner`` holds
its account manager's work, the team's manager (``opportunity.team``, the name of the team) the
director's, and the whole team what is the team's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from engine.model import Playbook
from engine.tasks import Task
from engine.workflow import ACTIVE, OWNER_LABELS, reviews_between

__all__ = [
    "AGENDA_DAYS",
    "AGENDA_HEADINGS",
    "OWNER_LABELS",
    "STATUS_LABELS",
    "WHOLE_TEAM",
    "Agenda",
    "TeamAgenda",
    "action_label",
    "build_agenda",
    "build_team_agenda",
    "render_agenda",
    "render_team_agenda",
]

AGENDA_DAYS = 7  # "this week": due within a week of the agenda's day
STATUS_LABELS = {
    "open": {"zh": "待办", "en": "open"},
    "accepted": {"zh": "已接受", "en": "accepted"},
    "done": {"zh": "已完成", "en": "done"},
    "dismissed": {"zh": "已放弃", "en": "dismissed"},
    "overdue": {"zh": "逾期", "en": "overdue"},
    "escalated": {"zh": "已升级", "en": "escalated"},
    "cancelled": {"zh": "已取消", "en": "cancelled"},
}
SECTIONS = ("escalated", "overdue", "due_soon", "open")  # in order of priority
AGENDA_HEADINGS = {
    "escalated": {"zh": "已升级", "en": "Escalated"},
    "overdue": {"zh": "逾期", "en": "Overdue"},
    "due_soon": {"zh": "本周到期", "en": "Due this week"},
    "open": {"zh": "其他待办", "en": "Other open work"},
    "reviews": {"zh": "下次检查", "en": "Next reviews"},
}


WHOLE_TEAM = {"zh": "全团队", "en": "the whole team"}


@dataclass(frozen=True)
class Agenda:
    as_of: dt.date
    owner: str | None
    sections: dict[str, list[Task]]
    reviews: list[tuple[dt.date, str, int]]  # (day, schedule id, how much open work it brings)

    def rows(self) -> list[dict[str, Any]]:
        """One row per item, tasks then reviews: for JSON and CSV."""
        out = _task_rows(self.sections)
        for day, schedule, open_work in self.reviews:
            out.append({"section": "review", "review": schedule, "day": day.isoformat(), "open_work": open_work})
        return out


@dataclass(frozen=True)
class TeamAgenda:
    """A team's work per person, the most pressed person first, and the team's next reviews."""

    as_of: dt.date
    team: str
    people: list[tuple[str, str, dict[str, list[Task]]]]  # (person, their role, their sections)
    reviews: list[tuple[dt.date, str, int]]  # (day, schedule id, the team's open work it brings)

    def rows(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for person, role, sections in self.people:
            out += [{"person": person, "role": role, **row} for row in _task_rows(sections)]
        for day, schedule, open_work in self.reviews:
            out.append(
                {"person": self.team, "role": "director", "section": "review", "review": schedule,
                 "day": day.isoformat(), "open_work": open_work}
            )  # fmt: skip
        return out


def _task_rows(sections: dict[str, list[Task]]) -> list[dict[str, Any]]:
    return [
        {
            "section": section,
            "task": task.id,
            "action": task.action,
            "record": task.record,
            "owner": task.owner,
            "status": task.status,
            "due": task.due,
            "escalate_to": task.escalate_to,
            "rule": task.rule,
        }
        for section, listed in sections.items()
        for task in listed
    ]


def _section(task: Task, as_of: dt.date) -> str:
    if task.status in ("escalated", "overdue"):
        return task.status
    soon = (as_of + dt.timedelta(days=AGENDA_DAYS)).isoformat()
    return "due_soon" if task.due is not None and task.due <= soon else "open"


def _sections(tasks: Iterable[Task], as_of: dt.date) -> dict[str, list[Task]]:
    """Active tasks by section, most urgent section first, the earliest due first within one."""
    sections: dict[str, list[Task]] = {name: [] for name in SECTIONS}
    for task in tasks:
        sections[_section(task, as_of)].append(task)
    for listed in sections.values():
        listed.sort(key=lambda t: (t.due or "9999-99-99", t.id))
    return sections


def _next_reviews(
    playbook: Playbook | None, owners: Sequence[str] | None, as_of: dt.date, open_work: int, reviews: int
) -> list[tuple[dt.date, str, int]]:
    coming: list[tuple[dt.date, str, int]] = []
    for schedule in playbook.schedules.values() if playbook is not None else ():
        if owners is not None and schedule.owner not in owners:
            continue
        days = reviews_between(schedule, as_of, as_of + dt.timedelta(days=366))[:reviews]
        coming += [(day, schedule.id, open_work) for day in days]
    return sorted(coming)


def build_agenda(
    playbook: Playbook | None, tasks: list[Task], as_of: dt.date, owner: str | None = None, reviews: int = 1
) -> Agenda:
    """The active ``tasks`` (of ``owner``, or escalated to them) by section, most urgent first, and the next
    ``reviews`` days of each schedule the owner holds (all schedules without an owner)."""
    mine = [
        t
        for t in tasks
        if t.status in ACTIVE
        and (owner is None or t.owner == owner or (t.status == "escalated" and t.escalate_to == owner))
    ]
    open_work = len([t for t in tasks if t.status in ACTIVE])
    owners = None if owner is None else [owner]
    return Agenda(as_of, owner, _sections(mine, as_of), _next_reviews(playbook, owners, as_of, open_work, reviews))


def build_team_agenda(
    playbook: Playbook | None,
    tasks: list[Task],
    as_of: dt.date,
    team: str,
    people: dict[tuple[str, str], tuple[str | None, str | None]],
    reviews: int = 1,
) -> TeamAgenda:
    """The active tasks of the deals of ``team`` (``people``: :func:`engine.tasks.deal_people`) per person: the deal's
    owner does the account manager's work, the team's manager (named as the team is) the director's and
    the team's; an escalated task is also on the desk of whom it escalated to.  People in order of their
    most urgent work (escalated, then overdue, then due this week), then by name; the next reviews of
    the schedules the manager or the team holds."""
    held: dict[tuple[str, str], list[Task]] = {}
    for task in tasks:
        owner, of_team = people.get((task.source, task.record), (None, None))
        if task.status not in ACTIVE or of_team != team:
            continue
        desks = {_desk(task.owner, owner, team)}
        if task.status == "escalated" and task.escalate_to is not None:
            desks.add(_desk(task.escalate_to, owner, team))
        for desk in desks:
            held.setdefault(desk, []).append(task)
    listed = [(person, role, _sections(work, as_of)) for (person, role), work in held.items()]

    def pressed(entry: tuple[str, str, dict[str, list[Task]]]) -> tuple[int, ...]:
        sections = entry[2]
        return tuple(-len(sections[name]) for name in SECTIONS[:3])

    listed.sort(key=lambda entry: (*pressed(entry), entry[0]))
    open_work = len({t.id for work in held.values() for t in work})
    return TeamAgenda(as_of, team, listed, _next_reviews(playbook, ["director", "team"], as_of, open_work, reviews))


def _desk(role: str, deal_owner: str | None, team: str) -> tuple[str, str]:
    """Who, in a team, does a task of ``role``: (their name, the role)."""
    if role == "account_manager":
        return (deal_owner or "?", role)
    return (team, role)


def action_label(playbook: Playbook | None, action: str, lang: str) -> str:
    spec = playbook.actions.get(action) if playbook is not None else None
    return spec.label.get(lang, action) if spec is not None else action


def _section_lines(sections: dict[str, list[Task]], playbook: Playbook | None, lang: str, indent: str) -> list[str]:
    zh = lang == "zh"
    lines: list[str] = []
    for section, listed in sections.items():
        if not listed:
            continue
        heading = AGENDA_HEADINGS[section][lang]
        lines.append(f"{indent}{heading}({len(listed)})" if zh else f"{indent}{heading} ({len(listed)})")
        for task in listed:
            label = action_label(playbook, task.action, lang)
            owner = OWNER_LABELS.get(task.owner, {}).get(lang, task.owner)
            due = (
                (f"截止 {task.due}" if zh else f"due {task.due}")
                if task.due
                else ("无截止日期" if zh else "no due date")
            )
            extra = ""
            if task.status == "escalated" and task.escalate_to:
                to = OWNER_LABELS.get(task.escalate_to, {}).get(lang, task.escalate_to)
                extra = f",已升级给{to}" if zh else f", escalated to the {to}"
            if zh:
                lines.append(f"{indent}  任务{task.id}:{label} — 项目 {task.record},{owner},{due}{extra}")
            else:
                lines.append(f"{indent}  task {task.id}: {label} — record {task.record}, {owner}, {due}{extra}")
    return lines


def _review_lines(reviews: list[tuple[dt.date, str, int]], playbook: Playbook | None, lang: str) -> list[str]:
    if not reviews:
        return []
    lines = [AGENDA_HEADINGS["reviews"][lang]]
    for day, schedule_id, open_work in reviews:
        schedule = playbook.schedules[schedule_id] if playbook is not None else None
        label = schedule.label.get(lang, schedule_id) if schedule is not None else schedule_id
        if lang == "zh":
            lines.append(f"  {day.isoformat()}:{label}(带上未完成工作 {open_work} 项)")
        else:
            lines.append(f"  {day.isoformat()}: {label} (brings {open_work} open tasks)")
    return lines


def render_agenda(agenda: Agenda, playbook: Playbook | None, lang: str) -> str:
    """The agenda as a person reads it, in ``lang`` (zh or en)."""
    zh = lang == "zh"
    whose = OWNER_LABELS[agenda.owner][lang] if agenda.owner in OWNER_LABELS else ("全部" if zh else "everyone")
    lines = [f"工作日程:{whose},{agenda.as_of.isoformat()}" if zh else f"Agenda: {whose}, {agenda.as_of.isoformat()}"]
    lines += _section_lines(agenda.sections, playbook, lang, "")
    lines += _review_lines(agenda.reviews, playbook, lang)
    if len(lines) == 1:
        lines.append("  没有待办工作" if zh else "  nothing to do")
    return "\n".join(lines)


def render_team_agenda(agenda: TeamAgenda, playbook: Playbook | None, lang: str) -> str:
    """A team's agenda as its manager reads it: each person's work, most pressed first, then the reviews."""
    zh = lang == "zh"
    day = agenda.as_of.isoformat()
    lines = [f"团队工作日程:{agenda.team},{day}" if zh else f"Agenda of the team {agenda.team}, {day}"]
    for person, role, sections in agenda.people:
        counts = {name: len(sections[name]) for name in SECTIONS}
        said = [f"{AGENDA_HEADINGS[name][lang]} {n}" if zh else f"{n} {AGENDA_HEADINGS[name][lang].lower()}"
                for name, n in counts.items() if n]  # fmt: skip
        who = WHOLE_TEAM[lang] if role == "team" else person
        as_role = OWNER_LABELS[role][lang] if role in OWNER_LABELS else role
        if zh:
            lines.append(f"{who}({as_role}):{','.join(said)}")
        else:
            lines.append(f"{who} ({as_role}): {', '.join(said)}")
        lines += _section_lines(sections, playbook, lang, "  ")
    if not agenda.people:
        lines.append("  没有待办工作" if zh else "  nothing to do")
    lines += _review_lines(agenda.reviews, playbook, lang)
    return "\n".join(lines)
