"""What people see of their work: an agenda of what is escalated, overdue and due soon, and the next reviews.

Built from the tasks (:mod:`engine.tasks`) and the playbook's schedules (:mod:`engine.workflow`); the
playbook gives every action and review its label, so the Chinese text names nothing by an identifier.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from engine.model import Playbook
from engine.tasks import Task
from engine.workflow import ACTIVE, reviews_between

__all__ = ["AGENDA_DAYS", "Agenda", "build_agenda", "render_agenda"]

AGENDA_DAYS = 7  # "this week": due within a week of the agenda's day
OWNER_LABELS = {
    "account_manager": {"zh": "客户经理", "en": "account manager"},
    "director": {"zh": "客户主任", "en": "director"},
    "team": {"zh": "团队", "en": "team"},
}
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
_HEADINGS = {
    "escalated": {"zh": "已升级", "en": "Escalated"},
    "overdue": {"zh": "逾期", "en": "Overdue"},
    "due_soon": {"zh": "本周到期", "en": "Due this week"},
    "open": {"zh": "其他待办", "en": "Other open work"},
    "reviews": {"zh": "下次检查", "en": "Next reviews"},
}


@dataclass(frozen=True)
class Agenda:
    as_of: dt.date
    owner: str | None
    sections: dict[str, list[Task]]
    reviews: list[tuple[dt.date, str, int]]  # (day, schedule id, how much open work it brings)

    def rows(self) -> list[dict[str, Any]]:
        """One row per item, tasks then reviews: for JSON and CSV."""
        out: list[dict[str, Any]] = []
        for section, listed in self.sections.items():
            for task in listed:
                out.append(
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
                )
        for day, schedule, open_work in self.reviews:
            out.append({"section": "review", "review": schedule, "day": day.isoformat(), "open_work": open_work})
        return out


def _section(task: Task, as_of: dt.date) -> str:
    if task.status in ("escalated", "overdue"):
        return task.status
    soon = (as_of + dt.timedelta(days=AGENDA_DAYS)).isoformat()
    return "due_soon" if task.due is not None and task.due <= soon else "open"


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
    sections: dict[str, list[Task]] = {name: [] for name in SECTIONS}
    for task in mine:
        sections[_section(task, as_of)].append(task)
    for listed in sections.values():
        listed.sort(key=lambda t: (t.due or "9999-99-99", t.id))
    coming: list[tuple[dt.date, str, int]] = []
    for schedule in playbook.schedules.values() if playbook is not None else ():
        if owner is not None and schedule.owner != owner:
            continue
        days = reviews_between(schedule, as_of, as_of + dt.timedelta(days=366))[:reviews]
        coming += [(day, schedule.id, len([t for t in tasks if t.status in ACTIVE])) for day in days]
    coming.sort()
    return Agenda(as_of, owner, sections, coming)


def _action_label(playbook: Playbook | None, action: str, lang: str) -> str:
    spec = playbook.actions.get(action) if playbook is not None else None
    return spec.label.get(lang, action) if spec is not None else action


def render_agenda(agenda: Agenda, playbook: Playbook | None, lang: str) -> str:
    """The agenda as a person reads it, in ``lang`` (zh or en)."""
    zh = lang == "zh"
    whose = OWNER_LABELS[agenda.owner][lang] if agenda.owner in OWNER_LABELS else ("全部" if zh else "everyone")
    lines = [f"{'工作日程' if zh else 'Agenda'}:{whose},{agenda.as_of.isoformat()}" if zh else
             f"Agenda: {whose}, {agenda.as_of.isoformat()}"]  # fmt: skip
    for section, listed in agenda.sections.items():
        if not listed:
            continue
        lines.append(
            f"{_HEADINGS[section][lang]}({len(listed)})" if zh else f"{_HEADINGS[section][lang]} ({len(listed)})"
        )
        for task in listed:
            label = _action_label(playbook, task.action, lang)
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
                lines.append(f"  任务{task.id}:{label} — 项目 {task.record},{owner},{due}{extra}")
            else:
                lines.append(f"  task {task.id}: {label} — record {task.record}, {owner}, {due}{extra}")
    if agenda.reviews:
        lines.append(_HEADINGS["reviews"][lang])
        for day, schedule_id, open_work in agenda.reviews:
            schedule = playbook.schedules[schedule_id] if playbook is not None else None
            label = schedule.label.get(lang, schedule_id) if schedule is not None else schedule_id
            if zh:
                lines.append(f"  {day.isoformat()}:{label}(带上未完成工作 {open_work} 项)")
            else:
                lines.append(f"  {day.isoformat()}: {label} (brings {open_work} open tasks)")
    if len(lines) == 1:
        lines.append("  没有待办工作" if zh else "  nothing to do")
    return "\n".join(lines)
