"""A task's whole timeline, for ``why`` and ``history``: made, each move with who, when and why, its end.

The log keeps each move's reason in English (:mod:`engine.tasks`).  The Chinese text says it again from
what the move is — made, overdue, escalated, cancelled, an outcome — and the task's row after it, naming
actions and rules by their labels; the words people typed (an outcome's reason) are given as typed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from engine.agenda import OWNER_LABELS, STATUS_LABELS, action_label
from engine.model import Playbook
from engine.store import Store, iter_chunks, task_event_rows, task_events, tasks
from engine.tasks import CLOCK, PLAYBOOK, Task, _task, move_of

__all__ = [
    "Timeline",
    "evaluation_timelines",
    "move_text",
    "record_timelines",
    "timeline_json",
    "timeline_lines",
    "timelines_lines",
]

_NO_LONGER = re.compile(r"^evaluation #(\d+) no longer recommends")
_CLOSED = "the opportunity closed"
_OUTCOME_DEFAULT = re.compile(r"^outcome of evaluation #(\d+)$")
_WHO = {
    PLAYBOOK: {"zh": "剧本", "en": "the playbook"},
    CLOCK: {"zh": "时钟", "en": "the clock"},
}


@dataclass(frozen=True)
class Timeline:
    task: Task  # as it is now
    moves: list[dict[str, Any]]  # each: event, status, who, why, as_of, at, and the task's row after it


def _timelines(store: Store, query: Any) -> list[Timeline]:
    with store._connect() as conn:
        found = [_task(row) for row in conn.execute(query.order_by(tasks.c.id))]
        moves: dict[int, list[dict[str, Any]]] = {task.id: [] for task in found}
        for chunk in iter_chunks(sorted(moves), 500):
            query = task_event_rows().where(task_events.c.task_id.in_(chunk)).order_by(task_events.c.seq)
            for row in conn.execute(query):
                moves[row.task_id].append(move_of(row))
    return [Timeline(task, moves[task.id]) for task in found]


def record_timelines(store: Store, source: str, record: str) -> list[Timeline]:
    """Every task of a record, in the order they were made."""
    return _timelines(store, select(tasks).where(tasks.c.source == source, tasks.c.record == record))


def evaluation_timelines(
    store: Store, seq: int, source: str, record: str, recommended: Sequence[str], action: str | None = None
) -> list[Timeline]:
    """The tasks of an evaluation's advice: those it made, and for an action it recommended that its record
    had a task for already (a re-evaluation makes none again), the tasks of the latest evaluation before it
    that made that action's.  ``action``: only that action's (and its escalations')."""
    held = [t for t in record_timelines(store, source, record) if t.task.evaluation_seq <= seq]
    made = [t for t in held if t.task.evaluation_seq == seq]
    made_for = {t.task.cause for t in made}
    kept: list[Timeline] = []
    for cause in dict.fromkeys(recommended):
        if cause in made_for:
            continue
        earlier = [t for t in held if t.task.cause == cause and t.task.evaluation_seq < seq]
        if earlier:
            latest = max(t.task.evaluation_seq for t in earlier)
            kept += [t for t in earlier if t.task.evaluation_seq == latest]
    chosen = sorted(made + kept, key=lambda t: t.task.id)
    return [t for t in chosen if action is None or t.task.cause == action]


def _rule_label(playbook: Playbook | None, rule_id: str, lang: str) -> str:
    for rule in playbook.rules if playbook is not None else ():
        if rule.id == rule_id or (rule.for_each is not None and rule.for_each[0] == rule_id):
            return rule.label.get(lang, rule_id)
    return rule_id


def _owner(role: str | None, lang: str) -> str:
    return OWNER_LABELS.get(role or "", {}).get(lang, role or "?")


def move_text(move: dict[str, Any], first: bool, playbook: Playbook | None, lang: str) -> str:
    """Why a move was made, in ``lang``: the log's own words in English, said again in Chinese."""
    why = str(move["why"])
    if lang != "zh":
        return why
    task, status = move["task"], move["status"]
    if first:
        if task["action"] != task["cause"]:
            undone = action_label(playbook, task["cause"], lang)
            return f"「{undone}」逾期未完成,升级给{_owner(task['owner'], lang)}"
        if task["occurrence"] > 1:
            return f"按周期重复,规则「{_rule_label(playbook, task['rule'], lang)}」仍成立"
        return f"规则「{_rule_label(playbook, task['rule'], lang)}」建议(评估 #{task['evaluation_seq']})"
    if status == "overdue":
        return f"截止 {task['due']},到 {move['as_of']} 仍未完成"
    if status == "escalated":
        return f"自 {task['due']} 起逾期,升级给{_owner(task['escalate_to'], lang)}"
    if status == "cancelled":
        no_longer = _NO_LONGER.match(why)
        if no_longer:
            rule = _rule_label(playbook, task["rule"], lang)
            return f"评估 #{no_longer.group(1)} 不再建议此项:规则「{rule}」的判断变了"
        if why.startswith(_CLOSED):
            return "商机已关闭(赢单或丢单),无需再做"
        return "已取消"
    default = _OUTCOME_DEFAULT.match(why)
    return f"评估 #{default.group(1)} 的处理结果" if default else why  # a person's own words, as typed


def _who(who: str, lang: str) -> str:
    return _WHO.get(who, {}).get(lang, who)


def timeline_lines(timeline: Timeline, playbook: Playbook | None, lang: str, indent: str = "") -> list[str]:
    """A task and each of its moves, one line each."""
    zh = lang == "zh"
    task = timeline.task
    label = action_label(playbook, task.action, lang)
    status = STATUS_LABELS[task.status][lang] if task.status in STATUS_LABELS else task.status
    due = (f"截止 {task.due}" if zh else f"due {task.due}") if task.due else ("无截止日期" if zh else "no due date")
    if zh:
        head = f"{indent}任务{task.id}:{label} — {_owner(task.owner, lang)},{due},现为{status}"
    else:
        head = f"{indent}task {task.id}: {label} — {_owner(task.owner, lang)}, {due}, now {status}"
    lines = [head]
    for i, move in enumerate(timeline.moves):
        moved = STATUS_LABELS[move["status"]][lang] if move["status"] in STATUS_LABELS else move["status"]
        said = " ".join(move_text(move, i == 0, playbook, lang).split())  # one line, whatever was typed
        if zh:
            lines.append(f"{indent}  {move['as_of']} {moved},{_who(move['who'], lang)}:{said}")
        else:
            lines.append(f"{indent}  {move['as_of']}  {moved:<9}  by {_who(move['who'], lang)}: {said}")
    return lines


def timeline_json(timeline: Timeline, playbook: Playbook | None, lang: str) -> dict[str, Any]:
    """The task as it is now, and each move with the log's own words (``why``) and, in ``lang``, ``says``."""
    return {
        **timeline.task.to_json(),
        "timeline": [
            {**{k: v for k, v in move.items() if k != "task"}, "says": move_text(move, i == 0, playbook, lang)}
            for i, move in enumerate(timeline.moves)
        ],
    }


def timelines_lines(found: Iterable[Timeline], playbook: Playbook | None, lang: str, indent: str = "") -> list[str]:
    """The block of an evaluation's tasks: a heading, then each timeline; nothing when there is none."""
    listed = list(found)
    if not listed:
        return []
    lines = [f"{indent}{'任务' if lang == 'zh' else 'Tasks'}:"]
    for timeline in listed:
        lines += timeline_lines(timeline, playbook, lang, indent + "  ")
    return lines
