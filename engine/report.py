"""What ``recommend`` shows people, in Chinese or English: each case with who and where, and a run's tallies.

Builds on :func:`engine.explain.render_result` (a result's decisions and what to do): a case
opens with the opportunity's name, account, owner, region and amount as the case holds them, and
says when it was stored by an earlier run; only the decisions that were determined are shown
unless every one is asked for.  :func:`render_tally` is the ``--format summary`` report: how many
cases got each action, each value of the director's call, and each owner.  :func:`render_group` is one
group of the portfolio (an owner, a region, a market ...): its aggregates, decisions and actions, once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from engine.errors import CaseError
from engine.explain import missing_text, render_result, value_text
from engine.model import Playbook

if TYPE_CHECKING:  # the portfolio's code is imported where groups are decided
    from engine.portfolio import GroupResult

__all__ = ["grouping_name", "render_case", "render_group", "render_tally"]

_WORDS: dict[str, dict[str, str]] = {
    "zh": {
        "account": "客户",
        "owner": "客户经理",
        "region": "区域",
        "amount": "金额",
        "stored": "已于 {at} 存入审计日志(评估 #{seq}),本次未重新评估",
        "hidden": "另有 {n} 项结论未定(--all 显示全部)",
        "hidden_missing": "另有 {n} 项结论未定,缺少:{missing}(--all 显示全部)",
        "actions": "建议的动作(案例数)",
        "owners": "客户经理(案例数)",
        "no_owner": "(无客户经理)",
        "undetermined": "未定",
        "none": "(无)",
        "group": "按{grouping}:{key}(在途项目 {open} 个)",
        "no_key": "(未填写)",
        "aggregates": "统计",
        "group_failed": "无法判断:{message}",
        "team": "团队",
        "market": "产品市场",
    },
    "en": {
        "account": "account",
        "owner": "owner",
        "region": "region",
        "amount": "amount",
        "stored": "stored earlier, on {at} (evaluation #{seq}); not evaluated again",
        "hidden": "{n} more undetermined (--all shows every one)",
        "hidden_missing": "{n} more undetermined, missing: {missing} (--all shows every one)",
        "actions": "Actions recommended (cases)",
        "owners": "Owners (cases)",
        "no_owner": "(no owner)",
        "undetermined": "undetermined",
        "none": "(none)",
        "group": "{grouping} {key} ({open} open deals)",
        "no_key": "(none given)",
        "aggregates": "counts",
        "group_failed": "could not be decided: {message}",
        "team": "team",
        "market": "market",
    },
}


def _w(lang: str, key: str) -> str:
    return _WORDS.get(lang, _WORDS["en"])[key]


def _amount(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def who_and_where(facts: Mapping[str, Any], lang: str) -> str:
    """The opportunity's name, account, owner, region and amount, as far as the case holds them."""
    opportunity = facts.get("opportunity")
    account = facts.get("account")
    opportunity = opportunity if isinstance(opportunity, dict) else {}
    account = account if isinstance(account, dict) else {}
    account_name = account.get("name") or account.get("id") or opportunity.get("account_id")
    parts = [str(opportunity["name"])] if opportunity.get("name") is not None else []
    for key, value in (
        ("account", account_name),
        ("owner", opportunity.get("owner")),
        ("region", opportunity.get("region")),
        ("amount", _amount(opportunity["amount"]) if opportunity.get("amount") is not None else None),
    ):
        if value is not None and value != "":
            parts.append(f"{_w(lang, key)} {value}")
    return " · ".join(parts)


def render_case(
    playbook: Playbook,
    result: dict[str, Any],
    lang: str,
    *,
    facts: Mapping[str, Any] | None = None,
    every_decision: bool = False,
    stored: tuple[int, str] | None = None,
) -> str:
    """One case for people: who and where, whether it was stored earlier (evaluation, when), decisions, actions.

    ``every_decision`` False leaves out the decisions that are undetermined, counting them instead.
    """
    hidden = 0
    if "decisions" in result and not every_decision:
        determined = {name: value for name, value in result["decisions"].items() if value is not None}
        hidden = len(result["decisions"]) - len(determined)
        # the fields the case lacks for them, each once: what to fill in to decide more
        lacking = list(dict.fromkeys(f for fields in result.get("undetermined", {}).values() for f in fields))
        result = {**result, "decisions": determined}
    lines = render_result(playbook, result, lang).split("\n")
    shown = who_and_where(facts or {}, lang)
    header = [f"  {shown}"] if shown else []
    if stored is not None:
        header.append("  " + _w(lang, "stored").format(seq=stored[0], at=stored[1][:16].replace("T", " ")))
    lines[1:1] = header
    if hidden and "error" not in result:
        # after the case line, the header, the decisions' title and one line per decision shown
        said = (
            _w(lang, "hidden_missing").format(n=hidden, missing=missing_text(playbook, lacking, lang))
            if lacking
            else _w(lang, "hidden").format(n=hidden)
        )
        lines.insert(1 + len(header) + 1 + len(result["decisions"]), f"    {said}")
    return "\n".join(lines)


def render_tally(
    playbook: Playbook,
    lang: str,
    *,
    actions: Mapping[str, int],
    owners: Mapping[str | None, int],
    decision: str | None = None,
    values: Mapping[Any, int] | None = None,
) -> str:
    """Counts for a run's summary: cases per action, per value of ``decision`` (the director's call), per owner."""

    def ranked(counts: Mapping[Any, int]) -> list[tuple[Any, int]]:
        return sorted(counts.items(), key=lambda item: (-item[1], str(item[0])))

    def action_label(action: str) -> str:
        known = playbook.actions.get(action)
        return known.label.get(lang, action) if known is not None else action

    lines = [f"{_w(lang, 'actions')}:"]
    lines += [f"  {n:>7}  {action_label(a)}" for a, n in ranked(actions)] or [f"  {_w(lang, 'none')}"]
    if decision is not None and decision in playbook.decisions:
        known = playbook.decisions[decision]
        lines.append(f"{known.label.get(lang, decision)}:")
        for value, n in ranked(values or {}):
            shown = (
                _w(lang, "undetermined")
                if value is None
                else "、".join(known.value_label(v, lang) for v in value)
                if isinstance(value, tuple)
                else known.value_label(value, lang)
            )
            lines.append(f"  {n:>7}  {shown}")
    lines.append(f"{_w(lang, 'owners')}:")
    lines += [f"  {n:>7}  {owner if owner is not None else _w(lang, 'no_owner')}" for owner, n in ranked(owners)]
    return "\n".join(lines)


def grouping_name(playbook: Playbook, group: GroupResult, lang: str) -> str:
    """What the group's cases share, as people call it: owner, region ... or a case field's label."""
    named = _WORDS.get(lang, _WORDS["en"]).get(group.group_by)
    return missing_text(playbook, [group.level.field], lang) if named is None else named


def render_group(playbook: Playbook, group: GroupResult, lang: str) -> str:
    """One group of the portfolio for people: which group, its counts, its decisions (an undetermined one
    naming the case data it waits for) and what to do, each action once for the whole group."""
    named = grouping_name(playbook, group, lang)
    key = _w(lang, "no_key") if group.key is None else str(group.key)
    header = _w(lang, "group").format(grouping=named, key=key, open=group.open)
    pb = group.level.playbook
    counts = (" · " if lang != "zh" else "、").join(
        f"{group.level.aggregates[name].label.get(lang, name)} {value_text(pb, 'group.' + name, value.value, lang)}"
        for name, value in group.aggregates.items()
    )
    lines = [header, f"  {_w(lang, 'aggregates')}{':' if lang == 'zh' else ': '}{counts}"]
    if isinstance(group.outcome, CaseError):
        lines.append("  " + _w(lang, "group_failed").format(message=group.outcome.message))
        return "\n".join(lines)
    # the group's decisions and actions as a case's are shown, the case data an undetermined one needs named
    labels = dataclasses.replace(
        pb, inputs={**playbook.inputs, **pb.inputs}, decisions={**playbook.decisions, **pb.decisions}
    )
    shown = group.outcome.to_json(lang, trace=False)
    shown["undetermined"] = {name: group.needs(name) or fields for name, fields in shown["undetermined"].items()}
    shown["decisions"] = {name: shown["decisions"][name] for name in pb.decisions}
    lines += render_result(labels, shown, lang).split("\n")[1:]
    return "\n".join(lines)
