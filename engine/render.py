"""A playbook as a person reviews it: decision tables, rules, parameters and actions, in words.

``playbook render`` prints it as Markdown (for a pull request or a wiki) or as a standalone HTML
page.  Both come from one list of blocks, so they say the same.  A decision table keeps its shape:
one column per variable its rows test, the value each row gives, and each row's source.  Chinese
names everything by its label only; English adds the identifiers a reviewer looks up.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from typing import Any

from engine.conditions import conjuncts
from engine.explain import _cite, _label, _one_value, _sep, _var_label, _w, test_text
from engine.model import (
    Action,
    AllOf,
    AnyOf,
    Atom,
    Condition,
    Decision,
    InputField,
    Literal,
    Not,
    Output,
    Playbook,
    Text,
)
from engine.workflow import CALENDAR_LABELS, OWNER_LABELS, WEEKDAY_LABELS, Duration, Schedule, parse_duration

__all__ = ["FORMATS", "playbook_blocks", "render_playbook"]

FORMATS = ("md", "html")

_WORDS: dict[str, dict[str, str]] = {
    "zh": {
        "parameters": "参数",
        "parameter": "参数",
        "value": "值",
        "source": "出处",
        "tables": "决策表",
        "rules": "规则",
        "actions": "动作",
        "action": "动作",
        "explain": "说明",
        "row": "表行",
        "other": "其他条件",
        "always": "无条件",
        "otherwise": "其余情况",
        "hit_policy": "命中策略",
        "values": "可能的值",
        "when": "条件",
        "sets": "设定",
        "recommends": "建议",
        "or": " 或 ",
        "not": "并非",
        "value_of": "取{}的值",
        "output": "结论",
        "number": "数字",
        "list": "列表",
        "string": "文字",
        "boolean": "是或否",
        "enum": "选项",
        "none": "(无)",
        "inputs": "输入",
        "input": "输入项",
        "type": "类型",
        "date": "日期",
        "derived": "未给出时",
        "weeks_until": "距{}的周数",
        "weeks_since": "自{}起的周数",
        "ratio": "{} ÷ {}",
        "work": "工作安排",
        "due_after": "评估后{}内",
        "due_before": "{1}前{0}",
        "due_after_date": "{1}后{0}",
        "every": "每{}一次",
        "escalate": "到期后{}未完成交{}",
        "schedules": "检查日程",
        "schedule": "检查",
        "calendar": "日程",
        "owner": "负责人",
        "weekday": "周{}",
    },
    "en": {
        "parameters": "Parameters",
        "parameter": "parameter",
        "value": "value",
        "source": "source",
        "tables": "Decision tables",
        "rules": "Rules",
        "actions": "Actions",
        "action": "action",
        "explain": "explanation",
        "row": "row",
        "other": "other conditions",
        "always": "always",
        "otherwise": "otherwise",
        "hit_policy": "hit policy",
        "values": "values",
        "when": "when",
        "sets": "sets",
        "recommends": "recommends",
        "or": " or ",
        "not": "not",
        "value_of": "the value of {}",
        "output": "result",
        "number": "number",
        "list": "list",
        "string": "text",
        "boolean": "yes or no",
        "enum": "choice",
        "none": "(none)",
        "inputs": "Inputs",
        "input": "input",
        "type": "type",
        "date": "date",
        "derived": "when not given",
        "weeks_until": "weeks until {}",
        "weeks_since": "weeks since {}",
        "ratio": "{} ÷ {}",
        "work": "work",
        "due_after": "due {} after the evaluation",
        "due_before": "due {} before {}",
        "due_after_date": "due {} after {}",
        "every": "every {}",
        "escalate": "undone {} after it is due: to the {}",
        "schedules": "Review calendar",
        "schedule": "review",
        "calendar": "calendar",
        "owner": "who",
        "weekday": "on {}",
    },
}


def _r(lang: str, key: str) -> str:
    return _WORDS.get(lang, _WORDS["en"])[key]


@dataclass(frozen=True)
class _Block:
    kind: str  # h1 | h2 | h3 | p | table | list
    text: str = ""
    header: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()
    items: tuple[str, ...] = ()
    anchor: str = ""  # a heading's id in the HTML page (#table-funnel_layer), for links


def _named(label: Text, ident: str, lang: str) -> str:
    """A name as a reviewer reads it: the label; English adds the identifier."""
    shown = _label(label, lang, ident)
    return shown if lang == "zh" or shown == ident else f"{shown} ({ident})"


def _atom_words(playbook: Playbook, atom: Atom, lang: str) -> str:
    return f"{_var_label(playbook, atom.var, lang)} {test_text(playbook, atom, lang)}"


def condition_words(playbook: Playbook, condition: Condition | None, lang: str) -> str:
    """A condition in words and labels: ``赢率 ≥ 60「高赢率门槛」 且 (行业 = 政府 或 …)``."""
    if condition is None:
        return _r(lang, "always")
    if isinstance(condition, Atom):
        return _atom_words(playbook, condition, lang)
    if isinstance(condition, Not):
        return f"{_r(lang, 'not')} ({condition_words(playbook, condition.item, lang)})"
    joiner = _w(lang, "and") if isinstance(condition, AllOf) else _r(lang, "or")
    parts = [condition_words(playbook, item, lang) for item in condition.items]
    return joiner.join(
        f"({p})" if isinstance(i, AllOf | AnyOf) else p for p, i in zip(parts, condition.items, strict=True)
    )


def _output_words(playbook: Playbook, var: str, output: Output, lang: str) -> str:
    if isinstance(output, Literal):
        value = output.value
        if isinstance(value, list | tuple):
            return _sep(lang).join(_one_value(playbook, var, v, lang) for v in value) if value else _r(lang, "none")
        return _one_value(playbook, var, value, lang)
    return _r(lang, "value_of").format(_var_label(playbook, output.var, lang))


def _table_blocks(playbook: Playbook, decision: Decision, lang: str) -> list[_Block]:
    """One decision table: a column per variable its rows test alone, one for the rest."""
    columns: list[str] = []
    other = False
    for row in decision.rows:
        for part in conjuncts(None if row.otherwise else row.when):
            if isinstance(part, Atom):
                columns.append(part.var)
            else:
                other = True
    columns = list(dict.fromkeys(columns))
    rows = []
    for n, row in enumerate(decision.rows, 1):
        cells: dict[str, list[str]] = {var: [] for var in columns}
        rest = []
        for part in conjuncts(None if row.otherwise else row.when):  # shown as written: otherwise
            if isinstance(part, Atom):
                cells[part.var].append(test_text(playbook, part, lang))
            else:
                rest.append(condition_words(playbook, part, lang))
        shown = [_w(lang, "and").join(cells[var]) or "-" for var in columns]
        if other:
            shown.append(_w(lang, "and").join(rest) or "-")
        if row.otherwise and shown:
            shown[0] = _r(lang, "otherwise")
        elif row.when is None and shown:
            shown[0] = _r(lang, "always")
        output = _output_words(playbook, decision.name, row.then, lang)
        name = _named(row.label, row.id, lang)
        rows.append((str(n), name, *shown, output, _cite(row.source, lang)))
    header = (
        "#",
        _r(lang, "row"),
        *(_var_label(playbook, var, lang) for var in columns),
        *((_r(lang, "other"),) if other else ()),
        f"→ {_label(decision.label, lang, decision.name)}",
        _r(lang, "source"),
    )
    about = [f"{_r(lang, 'hit_policy')}: {_w(lang, decision.hit_policy)}"]
    if decision.values:
        values = _sep(lang).join(_one_value(playbook, decision.name, v, lang) for v in decision.values)
        about.append(f"{_r(lang, 'values')}: {values}")
    else:
        about.append(f"{_r(lang, 'values')}: {_r(lang, decision.type)}")
    about.append(f"{_r(lang, 'source')}: {_cite(decision.source, lang)}")
    blocks = [_Block("h3", _named(decision.label, decision.name, lang), anchor=f"table-{decision.name}")]
    if decision.description:
        blocks.append(_Block("p", _label(decision.description, lang, "")))
    blocks.append(_Block("p", "; ".join(about) if lang != "zh" else ";".join(about)))
    if rows:
        blocks.append(_Block("table", header=header, rows=tuple(rows)))
    return blocks


def _rule_blocks(playbook: Playbook, lang: str) -> list[_Block]:
    blocks = []
    for rule in playbook.rules:
        items = [f"{_r(lang, 'when')}: {condition_words(playbook, rule.when, lang)}"]
        for var, output in rule.sets.items():
            items.append(
                f"{_r(lang, 'sets')}: {_var_label(playbook, var, lang)} = {_output_words(playbook, var, output, lang)}"
            )
        for rec in rule.recommends:
            action = playbook.actions[rec.action]
            params = [
                f"{_param_label(playbook, key, lang)} = "
                f"{_output_words(playbook, playbook.param_variable(key) or key, output, lang)}"
                for key, output in rec.params.items()
            ]
            shown = f" ({'; '.join(params)})" if params else ""
            items.append(f"{_r(lang, 'recommends')}: {_named(action.label, action.id, lang)}{shown}")
        if rule.explain:
            items.append(f"{_r(lang, 'explain')}: {_label(rule.explain, lang, '')}")
        items.append(f"{_r(lang, 'source')}: {_cite(rule.source, lang)}")
        heading = _Block("h3", _named(rule.label, rule.id, lang), anchor=f"rule-{rule.id}")
        blocks += [heading, _Block("list", items=tuple(items))]
    return blocks


def _param_label(playbook: Playbook, key: str, lang: str) -> str:
    if key in playbook.parameters:
        return _label(playbook.parameters[key].label, lang, key)
    named = playbook.param_variable(key)
    return _var_label(playbook, named, lang) if named else key


def _blocks(playbook: Playbook, lang: str) -> list[_Block]:
    title = _label(playbook.title, lang, playbook.id)
    blocks = [
        _Block("h1", f"{title} ({playbook.version})" if lang == "zh" else f"{title} ({playbook.id} {playbook.version})")
    ]
    if playbook.description:
        blocks.append(_Block("p", _label(playbook.description, lang, "")))
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    if playbook.parameters:
        rows = tuple(
            (
                _named(p.label, p.name, lang),
                _parameter_value(playbook, p.value, lang),
                _cite(p.source, lang),
            )
            for p in playbook.parameters.values()
        )
        header = (_r(lang, "parameter"), _r(lang, "value"), _r(lang, "source"))
        blocks += [_Block("h2", _r(lang, "parameters"), anchor="parameters"), _Block("table", header=header, rows=rows)]
    if playbook.inputs:
        header = (_r(lang, "input"), _r(lang, "type"), _r(lang, "values"), _r(lang, "derived"))
        rows = tuple(_input_row(playbook, field, lang) for field in playbook.inputs.values())
        blocks += [_Block("h2", _r(lang, "inputs"), anchor="inputs"), _Block("table", header=header, rows=rows)]
    if playbook.decisions:
        blocks.append(_Block("h2", _r(lang, "tables"), anchor="tables"))
        for decision in playbook.decisions.values():
            if decision.rows:
                blocks += _table_blocks(playbook, decision, lang)
    if playbook.rules:
        blocks += [_Block("h2", _r(lang, "rules"), anchor="rules"), *_rule_blocks(playbook, lang)]
    if playbook.actions:
        rows = tuple(
            (
                _named(a.label, a.id, lang),
                _label(a.explain, lang, "") if a.explain else "",
                _work_words(playbook, a, lang),
                _cite(a.source, lang),
            )
            for a in playbook.actions.values()
        )
        header = (_r(lang, "action"), _r(lang, "explain"), _r(lang, "work"), _r(lang, "source"))
        blocks += [_Block("h2", _r(lang, "actions"), anchor="actions"), _Block("table", header=header, rows=rows)]
    if playbook.schedules:
        header = (_r(lang, "schedule"), _r(lang, "calendar"), _r(lang, "owner"), _r(lang, "source"))
        rows = tuple(_schedule_row(s, lang) for s in playbook.schedules.values())
        blocks += [_Block("h2", _r(lang, "schedules"), anchor="schedules"), _Block("table", header=header, rows=rows)]
    return blocks


def _span(span: Duration, lang: str) -> str:
    """A span in words; English adds the parameter it comes from, which a reviewer changes."""
    words = span.words(lang)
    return f"{words} ({span.parameter})" if span.parameter and lang != "zh" else words


def _work_words(playbook: Playbook, action: Action, lang: str) -> str:
    """Who does an action, by when, how often, and whom it goes to when undone."""
    work = action.work
    if work is None:
        return ""
    parts = [OWNER_LABELS[work.owner][lang] if work.owner in OWNER_LABELS else work.owner]
    if work.due is not None:
        due = work.due
        if due.anchor is None:
            parts.append(_r(lang, "due_after").format(_span(due.offset, lang)))
        else:
            key = "due_before" if due.before else "due_after_date"
            parts.append(_r(lang, key).format(_span(due.offset, lang), _var_label(playbook, due.anchor, lang)))
    if work.every is not None:
        every = work.every
        if every.amount == 1:  # 每周一次, every week: not 每1周, every 1 week
            once = Duration(1, every.unit, every.parameter)
            words = (once.words(lang)[1:] if lang == "zh" else every.unit) + (
                f" ({every.parameter})" if every.parameter and lang != "zh" else ""
            )
        else:
            words = _span(every, lang)
        parts.append(_r(lang, "every").format(words))
    if work.escalate is not None:
        to = OWNER_LABELS.get(work.escalate.to, {}).get(lang, work.escalate.to)
        said = _r(lang, "escalate").format(_span(work.escalate.after, lang), to)
        target = playbook.actions.get(work.escalate.action or "")
        parts.append(f"{said} ({_named(target.label, target.id, lang)})" if target else said)
    return _sep(lang).join(parts)


def _schedule_row(schedule: Schedule, lang: str) -> tuple[str, ...]:
    calendar = CALENDAR_LABELS[schedule.calendar][lang] if schedule.calendar in CALENDAR_LABELS else schedule.calendar
    if schedule.weekday is not None:
        day = _r(lang, "weekday").format(WEEKDAY_LABELS[lang][schedule.weekday])
        calendar = f"{calendar}{day}" if lang == "zh" else f"{calendar}, {day}"
    name = schedule.label.get(lang) or schedule.id
    shown = name if lang == "zh" else f"{name} ({schedule.id})"
    owner = OWNER_LABELS[schedule.owner][lang] if schedule.owner in OWNER_LABELS else schedule.owner
    return (shown, calendar, owner, _cite(schedule.source, lang) if schedule.source else "")


def _input_row(playbook: Playbook, field: InputField, lang: str) -> tuple[str, ...]:
    """An input as its reviewer reads it: label, type, the values it may take, how it is derived."""
    values = _sep(lang).join(_one_value(playbook, field.name, v, lang) for v in field.values or ())
    derived = ""
    if field.derive is not None:
        how, sources = field.derive
        derived = _r(lang, how).format(*(_var_label(playbook, name, lang) for name in sources))
    return (_named(field.label, field.name, lang), _r(lang, field.type), values, derived)


def _parameter_value(playbook: Playbook, value: Any, lang: str) -> str:
    """A parameter's value; a word that is a value of the playbook's variables, by its label (when they agree)."""
    if isinstance(value, str) and (span := parse_duration(value)) is not None:
        return Duration(*span).words(lang)
    if isinstance(value, str):
        owners = [d.value_labels for d in playbook.decisions.values()] + [
            i.value_labels for i in playbook.inputs.values()
        ]
        labels = {_label(o[value], lang, value) for o in owners if value in o}
        return labels.pop() if len(labels) == 1 else value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return json.dumps(value, ensure_ascii=False)


def _md_cell(text: str) -> str:
    # a cell is one line; a pipe would end it
    return " ".join(text.split()).replace("\\", "\\\\").replace("|", "\\|")


def _markdown(blocks: list[_Block]) -> str:
    out: list[str] = []
    for block in blocks:
        if block.kind in ("h1", "h2", "h3"):
            out += [f"{'#' * int(block.kind[1])} {_md_cell(block.text)}", ""]
        elif block.kind == "p":
            out += [block.text, ""]
        elif block.kind == "list":
            out += [f"- {_md_cell(item)}" for item in block.items] + [""]
        else:
            out.append("| " + " | ".join(_md_cell(h) for h in block.header) + " |")
            out.append("|" + "---|" * len(block.header))
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            out.append("")
    return "\n".join(out).rstrip() + "\n"


_STYLE = """
body { font-family: system-ui, "Noto Sans CJK SC", sans-serif; color: #222; }
body { margin: 2em auto; padding: 0 1.5em; max-width: 75em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #bbb; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #eef2f6; }
tr:nth-child(even) td { background: #fafafa; }
h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
"""


def _html(blocks: list[_Block], lang: str, title: str) -> str:
    e = html.escape
    out = [
        "<!DOCTYPE html>",
        f'<html lang="{e(lang)}">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
    ]
    for block in blocks:
        if block.kind in ("h1", "h2", "h3", "p"):
            anchor = f' id="{e(block.anchor)}"' if block.anchor else ""
            out.append(f"<{block.kind}{anchor}>{e(block.text)}</{block.kind}>")
        elif block.kind == "list":
            out.append("<ul>" + "".join(f"<li>{e(item)}</li>" for item in block.items) + "</ul>")
        else:
            out.append("<table>")
            out.append("<thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in block.header) + "</tr></thead>")
            out.append("<tbody>")
            out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in block.rows]
            out.append("</tbody></table>")
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


def playbook_blocks(playbook: Playbook, lang: str) -> list[_Block]:
    """The playbook as headings, paragraphs, tables and lists (for pages that lay them out themselves)."""
    return _blocks(playbook, lang)


def render_playbook(playbook: Playbook, fmt: str = "md", lang: str = "zh") -> str:
    """The playbook as Markdown (``md``) or a standalone, escaped HTML page (``html``)."""
    blocks = _blocks(playbook, lang)
    if fmt == "html":
        return _html(blocks, lang, blocks[0].text)
    return _markdown(blocks)
