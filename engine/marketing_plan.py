"""A draft of the regional marketing plan (G-25) from the open book: its nine sections, each filled from
the data where the data allows, each saying what it still needs where it does not.

The course's outline: plan summary, customer contribution and performance, SWOT and problems, goals
and their split, three strategies, market action plan, projected P&L, marketing organisation,
milestone controls.  What a CRM export cannot know (targets, margins, competitors, the director's own
words) is named as needed, by the playbook's labels of the inputs it would come from.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from engine.model import Playbook
from engine.store import AggregateSpec, OpenBook

__all__ = ["PLAN_VARIABLES", "draft_marketing_plan"]

# decisions the plan reads beyond the review's own
PLAN_VARIABLES = ("contribution_type", "swot_posture", "competitor_strategy", "customer_class")

_TITLES = {
    "zh": [
        "计划摘要", "客户贡献及绩效分析", "SWOT及问题分析", "营销目标及分解", "三项策略",
        "市场行动计划", "预计损益", "营销组织", "过程“里程碑”控制手段",
    ],
    "en": [
        "Plan summary", "Customer contribution and performance", "SWOT and problems", "Goals and their split",
        "Three strategies", "Market action plan", "Projected P&L", "Marketing organisation", "Milestone controls",
    ],
}  # fmt: skip

_W: dict[str, dict[str, str]] = {
    "open": {"zh": "在办项目 {n} 个,金额 {amount}", "en": "{n} open deals, amount {amount}"},
    "group": {"zh": "{key}:{n} 个项目,金额 {amount}", "en": "{key}: {n} deals, amount {amount}"},
    "target": {
        "zh": "本区域本期的总指标与上期收入(算增长幅度)",
        "en": "the region's total target for the period and last period's revenue (for the growth)",
    },
    "words": {
        "zh": "重大营销策略调整:由客户主任寥寥数语写出",
        "en": "the major strategy changes, in the director's own few words",
    },
    "by_market": {"zh": "按产品:", "en": "by product:"},
    "counted": {"zh": "{label}:{values}", "en": "{label}: {values}"},
    "undetermined": {"zh": "未定 {n} 个", "en": "{n} undetermined"},
    "inputs": {"zh": "“{label}”所需:{inputs}", "en": "for '{label}': {inputs}"},
    "performance": {
        "zh": "各产品的欠缺/完成/超越:需要本期指标与已成交收入",
        "en": "shortfall / met / exceeded per product: the period's targets and the revenue won",
    },
    "swot_items": {
        "zh": "高阶SWOT的两条优势、两条劣势、两条机会、两条威胁:与区域主要竞争对手的比较",
        "en": "two strengths, two weaknesses, two opportunities, two threats: a comparison with the region's "
        "main competitors",
    },
    "problems_call": {
        "zh": "{n} 个项目的客户主任结论未定(缺少所需事实)",
        "en": "{n} deals have no director's call (a fact it needs is missing)",
    },
    "problems_layer": {
        "zh": "{n} 个项目没有漏斗位置(缺少预计决策日期)",
        "en": "{n} deals have no funnel position (no expected decision date)",
    },
    "problems_stalled": {"zh": "{n} 个停滞项目", "en": "{n} stalled deals"},
    "split": {"zh": "{region} 按产品:{parts}", "en": "{region} by product: {parts}"},
    "split_needs": {
        "zh": "每个“市场 × 产品”的指标(本报告只有在办金额)",
        "en": "a target per market × product (this report has the open amounts only)",
    },
    "funnel": {"zh": "客户策略(区域大漏斗):{parts}", "en": "customer strategy (the regional funnel): {parts}"},
    "competition_needs": {
        "zh": "竞争策略:区域前三位竞争对手的资料",
        "en": "competitive strategy: the data on the region's three main competitors",
    },
    "push_pull_needs": {
        "zh": "市场推拉:特别的市场动作(展会、活动、宣传、促销),由客户主任决定",
        "en": "market push-pull: the special actions (fairs, events, promotion), the director's to decide",
    },
    "calls": {"zh": "客户主任的结论:{parts}", "en": "director's calls: {parts}"},
    "week": {
        "zh": "每位客户经理本周要做的事见上文(按剧本的优先次序)",
        "en": "each account manager's list for this week is above (in the playbook's priority)",
    },
    "in_sight": {
        "zh": "漏斗底层(两周内决策或已过预计决策日期)的金额 {bottom},中层的金额 {middle}",
        "en": "amount at the bottom of the funnel (deciding within 2 weeks, or overdue) {bottom}; "
        "in the middle {middle}",
    },
    "pnl_needs": {
        "zh": "毛利率、费用与回款计划(客户利润率等),才能算出预计损益",
        "en": "margins, costs and the collection plan (the accounts' profit margins...), for a P&L",
    },
    "organisation": {
        "zh": "{region}:{owners} 位客户经理,{teams} 个团队",
        "en": "{region}: {owners} account managers in {teams} teams",
    },
    "organisation_needs": {
        "zh": "岗位设置与职责、人员规模计划",
        "en": "the roles, their duties and the planned headcount",
    },
    "cadence": {
        "zh": "每周检查收入进程;双周检查项目推进;月度核查财务指标;每季全面审核;半年扫描对手、客户趋势与自身平台",
        "en": "weekly: revenue progress; every two weeks: project progress; monthly: financial indicators; "
        "quarterly: a full audit; half-yearly: competitors, customer trends and our own platform",
    },
    "milestones_needs": {
        "zh": "每个项目的里程碑日期与负责人",
        "en": "each project's milestone dates and who owns them",
    },
}


def _w(which: str, lang: str, **values: Any) -> str:
    return _W[which][lang].format(**values)


def _money(value: float) -> str:
    return f"{value:,.0f}"


def _text(text: dict[str, str] | None, lang: str) -> str:
    return "" if not text else text.get(lang) or next(iter(text.values()))


def _inputs_needed(playbook: Playbook, decision: str) -> list[str]:
    """The input fields a decision reads, through the decisions it reads (its node's reads, expanded)."""
    reads = {node.name: node.reads for node in playbook.order if node.kind == "table"}
    found: list[str] = []
    seen: set[str] = set()
    waiting = [decision]
    while waiting:
        name = waiting.pop()
        if name in seen:
            continue
        seen.add(name)
        for var in reads.get(name, ()):
            if var in playbook.inputs:
                found.append(var)
            else:
                waiting.append(var)
    return list(dict.fromkeys(found))


def _needs_of(playbook: Playbook, decision: str, lang: str) -> str | None:
    if decision not in playbook.decisions:
        return None
    labels = [_text(playbook.inputs[name].label, lang) for name in _inputs_needed(playbook, decision)]
    label = _text(playbook.decisions[decision].label, lang)
    return _w("inputs", lang, label=label, inputs="、".join(labels) if lang == "zh" else ", ".join(labels))


def _counts(book: OpenBook, playbook: Playbook, decision: str, lang: str) -> tuple[str | None, int]:
    """The decision's values counted over the open deals (None when none is determined), and the undetermined."""
    if decision not in playbook.decisions:
        return None, 0
    counted: dict[Any, int] = defaultdict(int)
    for _key, (value,), count, _amount in book.figures(None, [decision]):
        counted[value] += count
    undetermined = counted.pop(None, 0)
    if not counted:
        return None, undetermined
    labels = playbook.decisions[decision].value_labels
    parts = [f"{_text(labels.get(str(v)), lang) or v} {n}" for v, n in sorted(counted.items(), key=lambda i: -i[1])]
    if undetermined:
        parts.append(_w("undetermined", lang, n=undetermined))
    label = _text(playbook.decisions[decision].label, lang)
    return _w("counted", lang, label=label, values=", ".join(parts)), undetermined


def _section(n: int, lang: str, lines: list[str], needs: list[str]) -> dict[str, Any]:
    status = "needs_data" if not lines else "partial" if needs else "filled"
    return {"number": n, "title": _TITLES[lang][n - 1], "status": status, "lines": lines, "needs": needs}


def draft_marketing_plan(book: OpenBook, playbook: Playbook, report: dict[str, Any]) -> dict[str, Any]:
    """The nine sections of G-25's plan over the report's open deals (``report``: the review's data so far)."""
    lang = report["review"]["lang"]
    none = report["labels"]["none"]
    totals = report["totals"]
    sections: list[dict[str, Any]] = []

    regions = report["funnels"]["region"]["groups"]
    region_amounts: dict[Any, list[float]] = defaultdict(lambda: [0, 0.0])
    for key, _values, count, amount in book.figures("opportunity.region", []):
        region_amounts[key][0] += count
        region_amounts[key][1] += amount
    lines = [_w("open", lang, n=totals["open"], amount=_money(totals["amount"]))]
    lines += [
        _w("group", lang, key=none if key is None else key, n=int(n), amount=_money(amount))
        for key, (n, amount) in sorted(region_amounts.items(), key=lambda i: -i[1][1])
    ]
    sections.append(_section(1, lang, lines, [_w("target", lang), _w("words", lang)]))

    markets: dict[Any, list[float]] = defaultdict(lambda: [0, 0.0])
    for key, _values, count, amount in book.figures("opportunity.market", []):
        markets[key][0] += count
        markets[key][1] += amount
    lines = [_w("by_market", lang)] + [
        "  " + _w("group", lang, key=none if key is None else key, n=int(n), amount=_money(amount))
        for key, (n, amount) in sorted(markets.items(), key=lambda i: -i[1][1])
    ]
    needs = [_w("performance", lang)]
    contribution, _ = _counts(book, playbook, "contribution_type", lang)
    if contribution:
        lines.append(contribution)
    elif (need := _needs_of(playbook, "contribution_type", lang)) is not None:
        needs.append(need)
    sections.append(_section(2, lang, lines, needs))

    lines, needs = [], [_w("swot_items", lang)]
    swot, _ = _counts(book, playbook, "swot_posture", lang)
    if swot:
        lines.append(swot)
    elif (need := _needs_of(playbook, "swot_posture", lang)) is not None:
        needs.append(need)
    calls = {call["value"]: call["count"] for call in report["director_calls"]}
    if calls.get("undetermined"):
        lines.append(_w("problems_call", lang, n=calls["undetermined"]))
    undetermined_layer = sum(row["counts"][-1] for row in regions)
    if undetermined_layer:
        lines.append(_w("problems_layer", lang, n=undetermined_layer))
    if report["stalled"]["available"] and report["stalled"]["count"]:
        lines.append(_w("problems_stalled", lang, n=report["stalled"]["count"]))
    sections.append(_section(3, lang, lines, needs))

    split: dict[Any, list[tuple[Any, float]]] = defaultdict(list)
    for key, (market,), _count, amount in book.figures("opportunity.region", ["opportunity.market"]):
        split[key].append((market, amount))
    lines = []
    for key, amounts_by_market in sorted(split.items(), key=lambda i: str(i[0])):
        ordered = sorted(amounts_by_market, key=lambda p: -p[1])
        shown = ", ".join(f"{none if m is None else m} {_money(a)}" for m, a in ordered)
        lines.append(_w("split", lang, region=none if key is None else key, parts=shown))
    sections.append(_section(4, lang, lines, [_w("split_needs", lang)]))

    matrix = report["matrix"]
    layer_totals = [sum(row[k] for row in matrix["counts"]) for k in range(len(matrix["columns"]))]
    funnel = ", ".join(f"{label} {n}" for label, n in zip(matrix["column_labels"], layer_totals, strict=True))
    lines, needs = [_w("funnel", lang, parts=funnel)], []
    competition, _ = _counts(book, playbook, "competitor_strategy", lang)
    if competition:
        lines.append(competition)
    else:
        needs.append(_w("competition_needs", lang))
    needs.append(_w("push_pull_needs", lang))
    sections.append(_section(5, lang, lines, needs))

    parts = ", ".join(f"{call['label']} {call['count']}" for call in report["director_calls"])
    sections.append(_section(6, lang, [_w("calls", lang, parts=parts), _w("week", lang)], []))

    amounts = [sum(row[k] for row in matrix["amounts"]) for k in range(len(matrix["columns"]))]
    by_layer = dict(zip(matrix["columns"], amounts, strict=True))
    in_sight = _w(
        "in_sight", lang, bottom=_money(by_layer.get("bottom", 0.0)), middle=_money(by_layer.get("middle", 0.0))
    )
    sections.append(_section(7, lang, [in_sight], [_w("pnl_needs", lang)]))

    staff = book.aggregate(
        "opportunity.region",
        [
            AggregateSpec("owners", "distinct", "opportunity.owner"),
            AggregateSpec("teams", "distinct", "opportunity.team"),
        ],
        members=0,
    )
    lines = [
        _w("organisation", lang, region=none if key is None else key, owners=a["owners"].value, teams=a["teams"].value)
        for key, a in sorted(staff.items(), key=lambda i: str(i[0]))
    ]
    sections.append(_section(8, lang, lines, [_w("organisation_needs", lang)]))

    sections.append(_section(9, lang, [_w("cadence", lang)], [_w("milestones_needs", lang)]))
    return {"guide": "G-25", "sections": sections}
