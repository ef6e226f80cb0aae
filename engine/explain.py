"""A result's trace -> words for a director or an auditor, in Chinese or English.

Works from a result's JSON (``Result.to_json()``) and the playbook that made it,
so a stored result can be explained later the same way.  "Why not" re-reads the
conditions of the rows and rules that could have given the asked-for outcome,
over the values the case had; it reports, it never decides.
"""

from __future__ import annotations

from typing import Any

from engine.conditions import atoms_of, evaluate_condition
from engine.errors import did_you_mean
from engine.evaluate import condition_trace, negated_atoms
from engine.model import Condition, Literal, Playbook, Source, ValueOf

__all__ = ["UnknownTarget", "render_result", "why", "why_not"]

_WORDS: dict[str, dict[str, str]] = {
    "zh": {
        "case": "案例",
        "as_of": "评估日期",
        "playbook": "剧本",
        "decisions": "结论",
        "recommendations": "建议",
        "none": "(无)",
        "no_action": "没有建议的动作",
        "undetermined": "未定",
        "why": "为什么",
        "row": "表行",
        "rule": "规则",
        "because": "依据",
        "always": "默认行,无条件",
        "derived": "推算",
        "from": "来自",
        "recommended_by": "由规则提出",
        "is": "结论是",
        "not_fired": "未触发",
        "failed": "不满足的条件",
        "fired_not_chosen": "条件满足,但按命中策略 {policy} 选了",
        "was_recommended": "已经建议,由规则",
        "nothing_produces": "剧本里没有能得出此结果的行或规则",
        "missing": "缺失",
        "negated": "不应成立",
        "params": "参数",
        "yes": "是",
        "no": "否",
    },
    "en": {
        "case": "case",
        "as_of": "as of",
        "playbook": "playbook",
        "decisions": "Decisions",
        "recommendations": "Recommendations",
        "none": "(none)",
        "no_action": "no action recommended",
        "undetermined": "undetermined",
        "why": "why",
        "row": "row",
        "rule": "rule",
        "because": "because",
        "always": "default row, no conditions",
        "derived": "derived",
        "from": "from",
        "recommended_by": "by rule",
        "is": "it is",
        "not_fired": "did not fire",
        "failed": "conditions not met",
        "fired_not_chosen": "its conditions hold, but hit policy {policy} chose",
        "was_recommended": "it was recommended, by rule",
        "nothing_produces": "no row or rule of the playbook can give this",
        "missing": "missing",
        "negated": "must not hold",
        "params": "params",
        "yes": "yes",
        "no": "no",
    },
}


class UnknownTarget(ValueError):
    """A why-not target that names no action and no decision value of the playbook."""


def _w(lang: str, key: str) -> str:
    return _WORDS.get(lang, _WORDS["en"])[key]


def _cite(source: Source | None, guide: str = "") -> str:
    if source is None or not source.guide:
        return f"[{guide}]" if guide else ""
    return f"[{source.guide} 「{source.quote}」]"


def _var_label(playbook: Playbook, var: str, lang: str) -> str:
    if var in playbook.decisions:
        return playbook.decisions[var].label.get(lang, var)
    if var in playbook.inputs:
        return playbook.inputs[var].label.get(lang, var)
    return var


def _value_text(playbook: Playbook, var: str, value: Any, lang: str) -> str:
    if value is None:
        return _w(lang, "missing")
    decision = playbook.decisions.get(var)
    if isinstance(value, bool) and (decision is None or str(value) not in decision.value_labels):
        return _w(lang, "yes" if value else "no")
    if decision is None:
        return ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    if isinstance(value, list):
        return ", ".join(decision.value_label(v, lang) for v in value)
    return decision.value_label(value, lang)


def _condition_lines(playbook: Playbook, conditions: list[dict[str, Any]], lang: str) -> list[str]:
    lines = []
    for c in conditions:
        mark = "✓" if c["result"] != c.get("negated", False) else "✗"
        neg = f" ({_w(lang, 'negated')})" if c.get("negated") else ""
        value = _value_text(playbook, c["input"], c["value"], lang)
        lines.append(f"{_var_label(playbook, c['input'], lang)} = {value} ({c['test']}){neg} {mark}")
    return lines


def _evaluated_conditions(condition: Condition | None, values: dict[str, Any]) -> list[dict[str, Any]]:
    results: list[bool] = []
    if condition is not None:
        evaluate_condition(condition, values, results)
    return condition_trace(atoms_of(condition), negated_atoms(condition), results, values)


def render_result(playbook: Playbook, result: dict[str, Any], lang: str) -> str:
    """A result as a director reads it: decisions, then what to do."""
    if "error" in result:
        return f"{_w(lang, 'case')} {result['case']}: {result['error']['code']}: {result['error']['message']}"
    lines = [
        f"{_w(lang, 'case')} {result['case']}  ({_w(lang, 'as_of')} {result['as_of']}, "
        f"{_w(lang, 'playbook')} {playbook.id} {playbook.version})",
        f"  {_w(lang, 'decisions')}:",
    ]
    for name, value in result["decisions"].items():
        shown = _value_text(playbook, name, value, lang) if value is not None else _w(lang, "undetermined")
        lines.append(f"    {playbook.decisions[name].label.get(lang, name)}: {shown}")
    lines.append(f"  {_w(lang, 'recommendations')}:")
    if not result["recommendations"]:
        lines.append(f"    {_w(lang, 'no_action')}")
    for i, rec in enumerate(result["recommendations"], 1):
        action = playbook.actions[rec["id"]]
        params = ", ".join(f"{k}={v}" for k, v in rec["params"].items())
        lines.append(f"    {i}. {action.label.get(lang, action.id)}" + (f" ({params})" if params else ""))
        if action.explain:
            lines.append(f"       {action.explain.get(lang, '')}")
        lines.append(f"       {_w(lang, 'recommended_by')} {rec['rule']} {_cite(action.source)}")
    return "\n".join(lines)


def why(playbook: Playbook, result: dict[str, Any], lang: str) -> str:
    """Every step of a result: what fired, the values it read, its course source."""
    lines = [f"{_w(lang, 'why')}: {_w(lang, 'case')} {result['case']} ({_w(lang, 'as_of')} {result['as_of']})"]
    for step in result["trace"]:
        if "derived" in step:
            d = step["derived"]
            basis = ", ".join(f"{k}={v}" for k, v in d["from"].items())
            lines.append(
                f"  {_w(lang, 'derived')}: {_var_label(playbook, d['input'], lang)} = {d['value']} "
                f"({_w(lang, 'from')} {basis})"
            )
        elif "decision" in step:
            decision = playbook.decisions[step["decision"]]
            value = step["value"]
            shown = _value_text(playbook, decision.name, value, lang) if value is not None else _w(lang, "undetermined")
            lines.append(f"  {decision.label.get(lang, decision.name)} = {shown}  {_cite(decision.source)}")
            rows = {row.id: row for row in decision.rows}
            for fired in step["fired"]:
                if not fired["chosen"]:
                    continue
                row = rows[fired["row"]]
                lines.append(f"    ← {_w(lang, 'row')} {row.id} 「{row.label.get(lang, row.id)}」 {_cite(row.source)}")
                if row.explain:
                    lines.append(f"      {row.explain.get(lang, '')}")
                conds = _condition_lines(playbook, fired["conditions"], lang) or [_w(lang, "always")]
                lines.extend(f"      {_w(lang, 'because')}: {c}" for c in conds)
        else:
            rule = playbook.rules_by_id[step["rule"]]
            lines.append(f"  {_w(lang, 'rule')} {rule.id} 「{rule.label.get(lang, rule.id)}」 {_cite(rule.source)}")
            conds = _condition_lines(playbook, step["conditions"], lang) or [_w(lang, "always")]
            lines.extend(f"      {_w(lang, 'because')}: {c}" for c in conds)
            for name, value in step.get("set", {}).items():
                lines.append(f"      → {_var_label(playbook, name, lang)} = {_value_text(playbook, name, value, lang)}")
            for action_id in step.get("recommend", []):
                action = playbook.actions[action_id]
                lines.append(
                    f"      → {_w(lang, 'recommendations')}: {action.label.get(lang, action_id)} {_cite(action.source)}"
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
        header = f"{_w(lang, 'why')} not {action.label.get(lang, name)} ({name})?"
        recs = [r for r in result["recommendations"] if r["id"] == name]
        if recs:
            rules = ", ".join(r["rule"] for r in recs)
            return f"{header}\n  {_w(lang, 'was_recommended')} {rules}"
        candidates = [rule for rule in playbook.rules if any(r.action == name for r in rule.recommends)]
        fired = {step["rule"] for step in result["trace"] if "rule" in step}
        lines.append(header)
        for rule in candidates:
            lines.append(f"  {_w(lang, 'rule')} {rule.id} 「{rule.label.get(lang, rule.id)}」 {_cite(rule.source)}")
            if rule.id in fired:
                lines.append(f"    {_w(lang, 'is')}: fired")
                continue
            lines.append(f"    {_w(lang, 'not_fired')}; {_w(lang, 'failed')}:")
            lines.extend(f"      {c}" for c in _failed(playbook, rule.when, values, lang))
    else:
        decision = playbook.decisions[name]
        shown = _value_text(playbook, name, wanted, lang)
        lines.append(f"{_w(lang, 'why')} not {decision.label.get(lang, name)} = {shown}?")
        actual = result["decisions"].get(name)
        if actual == wanted or (isinstance(actual, list) and wanted in actual):
            return f"{lines[0]}\n  {_w(lang, 'is')} {_value_text(playbook, name, actual, lang)}"
        step: dict[str, Any] = next((s for s in result["trace"] if s.get("decision") == name), {"fired": []})
        fired_rows = {f["row"] for f in step["fired"]}
        chosen = [f["row"] for f in step["fired"] if f["chosen"]]
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
            lines.append(f"  {_w(lang, 'row')} {row.id} 「{row.label.get(lang, row.id)}」 {_cite(row.source)}")
            if row.id in fired_rows:
                lines.append(
                    f"    {_w(lang, 'fired_not_chosen').format(policy=decision.hit_policy)} {', '.join(chosen)}"
                )
                continue
            lines.append(f"    {_w(lang, 'not_fired')}; {_w(lang, 'failed')}:")
            lines.extend(f"      {c}" for c in _failed(playbook, row.when, values, lang))
        for rule in playbook.rules:
            if name in rule.sets:
                lines.append(f"  {_w(lang, 'rule')} {rule.id} 「{rule.label.get(lang, rule.id)}」 {_cite(rule.source)}")
                lines.extend(f"      {c}" for c in _failed(playbook, rule.when, values, lang))
    if len(lines) == 1:
        lines.append(f"  {_w(lang, 'nothing_produces')}")
    return "\n".join(lines)


def _failed(playbook: Playbook, condition: Condition | None, values: dict[str, Any], lang: str) -> list[str]:
    conditions = _evaluated_conditions(condition, values)
    failing = [c for c in conditions if c["result"] == c.get("negated", False)]
    return _condition_lines(playbook, failing or conditions, lang)
