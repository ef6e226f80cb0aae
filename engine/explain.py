"""A result's trace -> words for a director or an auditor, in Chinese or English.

Works from a result's JSON (``Result.to_json()``) and the playbook that made it,
so a stored result can be explained later the same way.  "Why not" re-reads the
conditions of the rows and rules that could have given the asked-for outcome,
over the values the case had; it reports, it never decides.
"""

from __future__ import annotations

from typing import Any

from engine.conditions import COMPARE_OPS, SYMBOLS, atoms_of, evaluate_condition
from engine.errors import did_you_mean
from engine.evaluate import condition_trace, negated_atoms
from engine.model import Atom, Compare, Condition, Interval, Literal, Playbook, Row, Rule, Source, Text, ValueOf

__all__ = [
    "UnknownTarget",
    "fault_said",
    "missing_text",
    "playbook_name",
    "render_result",
    "test_text",
    "why",
    "why_not",
]

_WORDS: dict[str, dict[str, str]] = {
    "zh": {
        "case": "案例",
        "as_of": "评估日期",
        "playbook": "剧本",
        "decisions": "结论",
        "recommendations": "建议",
        "no_action": "没有建议的动作",
        "undetermined": "未定",
        "why": "为什么",
        "row": "表行",
        "rule": "规则",
        "because": "依据",
        "always": "默认行,无条件",
        "otherwise": "否则:其他各行都不成立",
        "derived": "推算",
        "from": "来自",
        "recommended_by": "依据规则",
        "is": "结论就是",
        "fired": "已触发",
        "not_fired": "未触发;不满足的条件:",
        "fired_not_chosen": "条件满足,但按命中策略“{policy}”选了",
        "was_recommended": "已经建议,依据规则",
        "nothing_produces": "剧本里没有能得出此结果的行或规则",
        "missing": "缺失",
        "given": "有值",
        "negated": "不应成立",
        "unknown": "未知",
        "undetermined_rule": "未能判断(缺少:{missing})",
        "undetermined_decision": "缺少:{missing}",
        "yes": "是",
        "no": "否",
        "why_not_action": "为什么没有建议{action}?",
        "why_not_value": "为什么{decision}不是{value}?",
        "one_of": "为 {} 之一",
        "none_of": "不是 {} 中任何一个",
        "contains": "包含 {}",
        "contains_all": "包含全部 {}",
        "contains_any": "包含 {} 中任一",
        "from_to": "{} 至 {}",
        "and": " 且 ",
        "unique": "唯一命中",
        "first": "首条命中",
        "priority": "按优先级",
        "collect": "全部汇集",
        "policy": "公司规定",
    },
    "en": {
        "case": "case",
        "as_of": "as of",
        "playbook": "playbook",
        "decisions": "Decisions",
        "recommendations": "Recommendations",
        "no_action": "no action recommended",
        "undetermined": "undetermined",
        "why": "why",
        "row": "row",
        "rule": "rule",
        "because": "because",
        "always": "default row, no conditions",
        "otherwise": "otherwise: every other row is false",
        "derived": "derived",
        "from": "from",
        "recommended_by": "by rule",
        "is": "it is",
        "fired": "it fired",
        "not_fired": "did not fire; conditions not met:",
        "fired_not_chosen": "its conditions hold, but the '{policy}' hit policy chose",
        "was_recommended": "it was recommended, by rule",
        "nothing_produces": "no row or rule of the playbook can give this",
        "missing": "missing",
        "given": "given",
        "negated": "must not hold",
        "unknown": "unknown",
        "undetermined_rule": "could not be decided (missing: {missing})",
        "undetermined_decision": "missing: {missing}",
        "yes": "yes",
        "no": "no",
        "why_not_action": "Why not {action}?",
        "why_not_value": "Why is {decision} not {value}?",
        "one_of": "one of {}",
        "none_of": "none of {}",
        "contains": "includes {}",
        "contains_all": "includes all of {}",
        "contains_any": "includes any of {}",
        "from_to": "from {} to {}",
        "and": " and ",
        "unique": "unique",
        "first": "first",
        "priority": "priority",
        "collect": "collect",
        "policy": "company policy",
    },
}


class UnknownTarget(ValueError):
    """A why-not target that names no action and no decision value of the playbook."""


def _w(lang: str, key: str) -> str:
    return _WORDS.get(lang, _WORDS["en"])[key]


def _sep(lang: str) -> str:
    # English items often hold commas themselves ("improve the product, customise it")
    return "、" if lang == "zh" else " / "


def _label(text: Text, lang: str, fallback: str) -> str:
    return text.get(lang) or fallback


def _quoted(text: Text, lang: str, fallback: str) -> str:
    label = _label(text, lang, fallback)
    return f"「{label}」" if lang == "zh" else f"“{label}”"


def _cite(source: Source | None, lang: str) -> str:
    """A course entry as ``[G-07 「quote」]``; the company's own reference named as such, with its text."""
    if source is None or not source.ref:
        return ""
    if source.policy:
        return f"[{_w(lang, 'policy')} {source.policy} {_quoted({lang: source.text}, lang, source.text)}]"
    return f"[{source.guide} 「{source.quote}」]"


def _var_label(playbook: Playbook, var: str, lang: str) -> str:
    if var in playbook.decisions:
        return _label(playbook.decisions[var].label, lang, var)
    if var in playbook.inputs:
        return _label(playbook.inputs[var].label, lang, var)
    if var == "as_of":
        return _w(lang, "as_of")
    return var


def _number(value: float | int) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() and abs(value) < 1e15 else str(value)


def _one_value(playbook: Playbook, var: str, value: Any, lang: str) -> str:
    owner = playbook.decisions.get(var) or playbook.inputs.get(var)
    labels = owner.value_labels.get(str(value)) if owner is not None else None
    if labels:
        return _label(labels, lang, str(value))
    if isinstance(value, bool):
        return _w(lang, "yes" if value else "no")
    if isinstance(value, int | float):
        return _number(value)
    return str(value)


def value_text(playbook: Playbook, var: str, value: Any, lang: str) -> str:
    if value is None:
        return _w(lang, "missing")
    if isinstance(value, list | tuple):
        return _sep(lang).join(_one_value(playbook, var, v, lang) for v in value)
    return _one_value(playbook, var, value, lang)


def _param_note(playbook: Playbook, atom: Atom, index: int, lang: str) -> str:
    """The parameter an operand comes from, by its label: the value is the playbook's setting, not a constant."""
    name = atom.params[index] if index < len(atom.params) else None
    if name is None or name not in playbook.parameters:
        return ""
    return (" " if lang != "zh" else "") + _quoted(playbook.parameters[name].label, lang, name)


def test_text(playbook: Playbook, atom: Atom, lang: str) -> str:
    """How one test reads, in words and labels (never the playbook's identifiers)."""
    if atom.op == "present":
        return _w(lang, "given" if atom.operand else "missing")
    if isinstance(atom.operand, Compare):
        compare: Compare = atom.operand
        shown = COMPARE_OPS[compare.op][3] + _var_label(playbook, compare.other, lang)
        if compare.factor is not None:
            shown += f" × {_number(compare.factor)}{_param_note(playbook, atom, 0, lang)}"
        return shown
    if atom.op == "interval":
        iv: Interval = atom.operand
        low = None if iv.low is None else _number(iv.low) + _param_note(playbook, atom, 0, lang)
        high = None if iv.high is None else _number(iv.high) + _param_note(playbook, atom, 1, lang)
        if low is not None and high is not None and iv.low_closed and iv.high_closed:
            return _w(lang, "from_to").format(low, high)
        parts = []
        if low is not None:
            parts.append(f"{SYMBOLS['gte' if iv.low_closed else 'gt']} {low}")
        if high is not None:
            parts.append(f"{SYMBOLS['lte' if iv.high_closed else 'lt']} {high}")
        return _w(lang, "and").join(parts)
    items = atom.operand if isinstance(atom.operand, tuple) else (atom.operand,)
    shown = _sep(lang).join(_one_value(playbook, atom.var, v, lang) for v in items)
    shown += _param_note(playbook, atom, 0, lang)
    if atom.op in ("equals", "not_equals"):
        return f"{SYMBOLS[atom.op]} {shown}"
    word = {"one_of": "one_of", "not_one_of": "none_of"}.get(atom.op, atom.op)
    return _w(lang, word).format(shown)


def _condition_lines(playbook: Playbook, atoms: list[Atom], conditions: list[dict[str, Any]], lang: str) -> list[str]:
    lines = []
    for atom, c in zip(atoms, conditions, strict=True):
        if c["result"] is None:  # a test on a missing value: neither holds nor fails
            mark = f"? ({_w(lang, 'unknown')})"
        else:
            mark = "✓" if c["result"] != c.get("negated", False) else "✗"
        neg = f" ({_w(lang, 'negated')})" if c.get("negated") else ""
        value = value_text(playbook, c["input"], c["value"], lang)
        test = test_text(playbook, atom, lang)
        if "compared_with" in c:  # the other side's value, as read
            other = c["compared_with"]
            test += f"{';' if lang == 'zh' else '; '}{_var_label(playbook, other['input'], lang)} = "
            test += value_text(playbook, other["input"], other["value"], lang)
        lines.append(f"{_var_label(playbook, c['input'], lang)} = {value} ({test}){neg} {mark}")
    return lines


def missing_text(playbook: Playbook, names: list[str], lang: str) -> str:
    """Variables named by their labels, in a list as the language writes one."""
    return _sep(lang).join(_var_label(playbook, name, lang) for name in names)


def _undetermined(playbook: Playbook, result: dict[str, Any], name: str, lang: str) -> str:
    """ "undetermined", with the fields the case lacks for it when a missing value is the reason."""
    missing = result.get("undetermined", {}).get(name)
    if not missing:
        return _w(lang, "undetermined")
    said = _w(lang, "undetermined_decision").format(missing=missing_text(playbook, missing, lang))
    return f"{_w(lang, 'undetermined')}({said})" if lang == "zh" else f"{_w(lang, 'undetermined')} ({said})"


def _evaluated_conditions(condition: Condition | None, values: dict[str, Any]) -> list[dict[str, Any]]:
    results: list[bool | None] = []
    if condition is not None:
        evaluate_condition(condition, values, results)
    return condition_trace(atoms_of(condition), negated_atoms(condition), results, values)


def _param_var(playbook: Playbook, rule_id: str, action_id: str, key: str) -> str:
    """The variable an action's parameter carries: the one the rule reads it from (``value_of``), else the
    variable it is named after (a decision, an input, or the field part of exactly one input)."""
    rule = playbook.rules_by_id.get(rule_id)
    for rec in rule.recommends if rule is not None else ():
        output = rec.params.get(key) if rec.action == action_id else None
        if isinstance(output, ValueOf):
            return output.var
    return playbook.param_variable(key) or key


def _params_text(playbook: Playbook, rec: dict[str, Any], lang: str) -> str:
    parts = []
    action = playbook.actions.get(rec["id"])
    for key, value in rec["params"].items():
        var = _param_var(playbook, rec["rule"], rec["id"], key)
        named = playbook.param_variable(key)
        if action is not None and key in action.param_labels:
            label = _label(action.param_labels[key], lang, key)
        elif named is None and key in playbook.parameters:
            label = _label(playbook.parameters[key].label, lang, key)
        else:
            label = _var_label(playbook, named or var, lang)
        if isinstance(value, float):  # a parameter is read, not audited: -2.43 weeks, not -2.4286
            value = round(value, 2)
        parts.append(f"{label}{':' if lang == 'zh' else ': '}{value_text(playbook, var, value, lang)}")
    return ("; " if lang != "zh" else ";").join(parts)


def _rule_name(rule: Rule, lang: str) -> str:
    """A rule as people read it: its label; English adds the id an auditor looks up."""
    quoted = _quoted(rule.label, lang, rule.id)
    return f"{_w(lang, 'rule')}{quoted}" if lang == "zh" else f"{_w(lang, 'rule')} {rule.id} {quoted}"


def _row_name(row: Row, lang: str) -> str:
    quoted = _quoted(row.label, lang, row.id)
    return f"{_w(lang, 'row')}{quoted}" if lang == "zh" else f"{_w(lang, 'row')} {row.id} {quoted}"


def _rules_named(playbook: Playbook, rule_ids: list[str], lang: str) -> str:
    rules = [playbook.rules_by_id[r] for r in rule_ids]
    if lang == "zh":
        return _sep(lang).join(_quoted(rule.label, lang, rule.id) for rule in rules)
    return ", ".join(rule.id for rule in rules)


def playbook_name(playbook: Playbook, lang: str) -> str:
    """The playbook and version as a reader knows them: its title in ``lang`` up to any parenthesis (else its id)."""
    title = playbook.title.get(lang, "")
    for bracket in ("(", "("):
        title = title.split(bracket, 1)[0]
    title = title.strip()
    if lang == "zh":
        return f"剧本《{title or playbook.id}》{playbook.version} 版"
    return f"playbook “{title}” {playbook.version}" if title else f"playbook {playbook.id} {playbook.version}"


def render_result(playbook: Playbook, result: dict[str, Any], lang: str) -> str:
    """A result as a director reads it: decisions, then what to do."""
    if "error" in result:
        return _error_text(playbook, result, lang)
    lines = [
        f"{_w(lang, 'case')} {result['case']}  ({_w(lang, 'as_of')} {result['as_of']}, "
        f"{playbook_name(playbook, lang)})",
        f"  {_w(lang, 'decisions')}:",
    ]
    for name, value in result["decisions"].items():
        shown = (
            value_text(playbook, name, value, lang)
            if value is not None
            else _undetermined(playbook, result, name, lang)
        )
        lines.append(f"    {_var_label(playbook, name, lang)}: {shown}")
    lines.append(f"  {_w(lang, 'recommendations')}:")
    if not result["recommendations"]:
        lines.append(f"    {_w(lang, 'no_action')}")
    for i, rec in enumerate(result["recommendations"], 1):
        action = playbook.actions[rec["id"]]
        params = _params_text(playbook, rec, lang)
        shown = f"({params})" if lang == "zh" else f" ({params})"
        lines.append(f"    {i}. {_label(action.label, lang, action.id)}" + (shown if params else ""))
        if action.explain:
            lines.append(f"       {action.explain.get(lang, '')}")
        rule = playbook.rules_by_id[rec["rule"]]
        by = _quoted(rule.label, lang, rule.id) if lang == "zh" else rule.id
        gap = "" if lang == "zh" else " "
        lines.append(f"       {_w(lang, 'recommended_by')}{gap}{by} {_cite(action.source, lang)}")
    return "\n".join(lines)


_EXPECTED_ZH = {"number": "数字", "string": "文字", "boolean": "是或否", "date": "日期(年-月-日)"}


def _error_text(playbook: Playbook, result: dict[str, Any], lang: str) -> str:
    """A case that could not be evaluated.  In Chinese a bad input or a playbook fault is said with labels
    (:func:`fault_said`); the engine's message (English, with identifiers) is for the English text and the JSON."""
    error = result["error"]
    said = fault_said(playbook, error, lang)
    if said is not None:
        return f"案例 {result['case']}:{said}"
    return f"{_w(lang, 'case')} {result['case']}: {error['code']}: {error['message']}"


def fault_said(playbook: Playbook, error: dict[str, Any], lang: str) -> str | None:
    """Why a case could not be evaluated, in Chinese words and labels with no identifier: for a bad input and
    the playbook faults evaluation finds; None otherwise (in English, and for other errors)."""
    if lang != "zh":
        return None
    fault = _fault_zh(playbook, error)
    if fault is not None:
        return f"无法评估 — {fault}"
    field = playbook.inputs.get(error.get("input", ""))
    if error["code"] != "bad_input" or field is None:
        return None
    if field.type in ("enum", "list"):
        choices = value_text(playbook, field.name, list(field.values or ()), lang)
        expected = ("以下之一:" if field.type == "enum" else "由以下各项组成的列表:") + choices
    elif field.name in playbook.share_sources:
        expected = "不小于零的数字"
    else:
        expected = _EXPECTED_ZH.get(field.type, field.type)
    return f"输入有误,无法评估 — {_label(field.label, lang, field.name)}应为{expected}"


def _fault_zh(playbook: Playbook, error: dict[str, Any]) -> str | None:
    """A playbook's fault found while evaluating (the case's values reach a row or rule the checker could
    not rule out), said with labels; None for other errors."""
    details = error.get("details") or {}
    decision = playbook.decisions.get(details.get("decision", ""))
    if decision is None:
        return None
    named = _quoted(decision.label, "zh", decision.name)
    # where the rows or rules at fault are (file:line:col, no identifier), for whoever fixes the playbook
    at = "、".join(f"{where['file']}:{where['line']}:{where['col']}" for where in details.get("locations", []))
    fix = f"(剧本需要修改,位置:{at})" if at else "(剧本需要修改)"
    if error["code"] == "hit_policy_violation":
        rows = {row.id: row for row in decision.rows}
        listed = "、".join(_quoted(rows[r].label, "zh", r) if r in rows else r for r in details.get("rows", []))
        return f"{named}的表行{listed}同时满足条件,而这张表只能命中一行{fix}"
    if error["code"] == "bad_output":
        source = details.get("from", "")
        shown = value_text(playbook, source, details.get("value"), "zh")
        return f"「{_var_label(playbook, source, 'zh')}」的值 {shown} 不是{named}可取的值{fix}"
    if error["code"] == "decision_conflict":
        first, second = (
            (_quoted(rule.label, "zh", r) if (rule := playbook.rules_by_id.get(r)) else r, value)
            for r, value in zip(details.get("rules", []), details.get("values", []), strict=True)
        )
        return (
            f"规则{first[0]}定{named}为{value_text(playbook, decision.name, first[1], 'zh')},"
            f"规则{second[0]}却定为{value_text(playbook, decision.name, second[1], 'zh')},两者冲突{fix}"
        )
    return None


def why(playbook: Playbook, result: dict[str, Any], lang: str) -> str:
    """Every step of a result: what fired, the values it read, its course source."""
    lines = [f"{_w(lang, 'why')}: {_w(lang, 'case')} {result['case']} ({_w(lang, 'as_of')} {result['as_of']})"]
    for step in result["trace"]:
        if "derived" in step:
            d = step["derived"]
            basis = ("、" if lang == "zh" else ", ").join(
                f"{_var_label(playbook, k, lang)} = {value_text(playbook, k, v, lang)}" for k, v in d["from"].items()
            )
            lines.append(
                f"  {_w(lang, 'derived')}: {_var_label(playbook, d['input'], lang)} = "
                f"{value_text(playbook, d['input'], d['value'], lang)} ({_w(lang, 'from')} {basis})"
            )
        elif "decision" in step:
            decision = playbook.decisions[step["decision"]]
            value = step["value"]
            shown = value_text(playbook, decision.name, value, lang) if value is not None else _w(lang, "undetermined")
            lines.append(f"  {_label(decision.label, lang, decision.name)} = {shown}  {_cite(decision.source, lang)}")
            if step.get("missing"):
                missing = missing_text(
                    playbook, result.get("undetermined", {}).get(decision.name, step["missing"]), lang
                )
                lines.append(f"    {_w(lang, 'undetermined_decision').format(missing=missing)}")
            rows = {row.id: row for row in decision.rows}
            for fired in step["fired"]:
                if not fired["chosen"]:
                    continue
                row = rows[fired["row"]]
                lines.append(f"    ← {_row_name(row, lang)} {_cite(row.source, lang)}")
                if row.explain:
                    lines.append(f"      {row.explain.get(lang, '')}")
                if row.otherwise:  # its conditions are the other rows', each failing: say so once
                    conds = [_w(lang, "otherwise")]
                else:
                    conds = _condition_lines(playbook, atoms_of(row.when), fired["conditions"], lang) or [
                        _w(lang, "always")
                    ]
                lines.extend(f"      {_w(lang, 'because')}: {c}" for c in conds)
        elif "undetermined" in step:
            undetermined = step["undetermined"]
            rule = playbook.rules_by_id[undetermined["rule"]]
            missing = missing_text(playbook, undetermined["missing"], lang)
            lines.append(f"  {_rule_name(rule, lang)} {_cite(rule.source, lang)}")
            lines.append(f"      {_w(lang, 'undetermined_rule').format(missing=missing)}")
        else:
            rule = playbook.rules_by_id[step["rule"]]
            lines.append(f"  {_rule_name(rule, lang)} {_cite(rule.source, lang)}")
            conds = _condition_lines(playbook, atoms_of(rule.when), step["conditions"], lang) or [_w(lang, "always")]
            lines.extend(f"      {_w(lang, 'because')}: {c}" for c in conds)
            for name, value in step.get("set", {}).items():
                lines.append(f"      → {_var_label(playbook, name, lang)} = {value_text(playbook, name, value, lang)}")
            for action_id in step.get("recommend", []):
                action = playbook.actions[action_id]
                lines.append(
                    f"      → {_w(lang, 'recommendations')}: {_label(action.label, lang, action_id)} "
                    f"{_cite(action.source, lang)}"
                )
    if not result["recommendations"]:
        lines.append(f"  {_w(lang, 'no_action')}")
    return "\n".join(lines)


def _parse_target(playbook: Playbook, target: str) -> tuple[str, str, Any]:
    """('action', id, None) or ('decision', name, value) from 'action_id' or 'decision=value'."""
    if "=" in target:
        name, _, raw = target.partition("=")
        decision = playbook.decisions.get(name)
        if decision is None:
            raise UnknownTarget(f"unknown decision '{name}'{did_you_mean(name, playbook.decisions)}")
        for value in decision.values or ():
            if str(value) == raw:
                return "decision", name, value
        if decision.values is None:
            return "decision", name, raw
        raise UnknownTarget(f"'{raw}' is not a value of '{name}'{did_you_mean(raw, [str(v) for v in decision.values])}")
    if target in playbook.actions:
        return "action", target, None
    choices = list(playbook.actions) + [
        f"{d}={v}" for d in playbook.decisions for v in playbook.decisions[d].values or ()
    ]
    raise UnknownTarget(
        f"'{target}' is no action of the playbook{did_you_mean(target, choices)}; "
        "name an action id, or a decision value as decision=value"
    )


def why_not(playbook: Playbook, result: dict[str, Any], target: str, lang: str) -> str:
    """Why a result does not hold an action or a decision value: each candidate and what failed."""
    kind, name, wanted = _parse_target(playbook, target)
    values = {**result["inputs"], **result["decisions"]}
    lines: list[str] = []
    if kind == "action":
        action = playbook.actions[name]
        shown_action = (
            _quoted(action.label, lang, name) if lang == "zh" else f"{_label(action.label, lang, name)} ({name})"
        )
        header = _w(lang, "why_not_action").format(action=shown_action)
        recs = [r["rule"] for r in result["recommendations"] if r["id"] == name]
        if recs:
            gap = "" if lang == "zh" else " "
            return f"{header}\n  {_w(lang, 'was_recommended')}{gap}{_rules_named(playbook, recs, lang)}"
        candidates = [rule for rule in playbook.rules if any(r.action == name for r in rule.recommends)]
        fired = {step["rule"] for step in result["trace"] if "rule" in step}
        lines.append(header)
        for rule in candidates:
            lines.append(f"  {_rule_name(rule, lang)} {_cite(rule.source, lang)}")
            if rule.id in fired:
                lines.append(f"    {_w(lang, 'fired')}")
                continue
            lines.append(f"    {_w(lang, 'not_fired')}")
            lines.extend(f"      {c}" for c in _failed(playbook, rule.when, values, lang))
    else:
        decision = playbook.decisions[name]
        shown = value_text(playbook, name, wanted, lang)
        lines.append(_w(lang, "why_not_value").format(decision=_label(decision.label, lang, name), value=shown))
        actual = result["decisions"].get(name)
        if actual == wanted or (isinstance(actual, list) and wanted in actual):
            return f"{lines[0]}\n  {_w(lang, 'is')} {value_text(playbook, name, actual, lang)}"
        step: dict[str, Any] = next((s for s in result["trace"] if s.get("decision") == name), {"fired": []})
        fired_rows = {f["row"] for f in step["fired"]}
        rows = {row.id: row for row in decision.rows}
        chosen = [rows[f["row"]] for f in step["fired"] if f["chosen"]]
        chosen_text = ("、" if lang == "zh" else ", ").join(
            _quoted(row.label, lang, row.id) if lang == "zh" else row.id for row in chosen
        )
        row_candidates = [
            row
            for row in decision.rows
            if (
                isinstance(row.then, Literal)
                and (row.then.value == wanted or (isinstance(row.then.value, list) and wanted in row.then.value))
            )
            or isinstance(row.then, ValueOf)
        ]
        for row in row_candidates:
            lines.append(f"  {_row_name(row, lang)} {_cite(row.source, lang)}")
            if row.id in fired_rows:
                policy = _w(lang, decision.hit_policy)
                gap = "" if lang == "zh" else " "
                lines.append(f"    {_w(lang, 'fired_not_chosen').format(policy=policy)}{gap}{chosen_text}")
                continue
            lines.append(f"    {_w(lang, 'not_fired')}")
            lines.extend(f"      {c}" for c in _failed(playbook, row.when, values, lang))
        for rule in playbook.rules:
            if name in rule.sets:
                lines.append(f"  {_rule_name(rule, lang)} {_cite(rule.source, lang)}")
                lines.extend(f"      {c}" for c in _failed(playbook, rule.when, values, lang))
    if len(lines) == 1:
        lines.append(f"  {_w(lang, 'nothing_produces')}")
    return "\n".join(lines)


def _failed(playbook: Playbook, condition: Condition | None, values: dict[str, Any], lang: str) -> list[str]:
    atoms = atoms_of(condition)
    conditions = _evaluated_conditions(condition, values)
    failing = [
        (a, c)
        for a, c in zip(atoms, conditions, strict=True)
        if c["result"] is None or c["result"] == c.get("negated", False)
    ]
    chosen = failing or list(zip(atoms, conditions, strict=True))
    return _condition_lines(playbook, [a for a, _ in chosen], [c for _, c in chosen], lang)
