"""The director's review (engine/review.py's data) as people read it: text, Markdown or one HTML file.

Words come from the report's own labels (the playbook's, in the report's language) and the small
table below; the Chinese text names nothing by an identifier.  Charts are drawn by
engine/review_charts.py: inline SVG in HTML, SVG files beside a Markdown report.
"""

from __future__ import annotations

import html
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["render_html", "render_markdown", "render_text"]

_T: dict[str, dict[str, str]] = {
    "title": {"zh": "客户主任周检视报告", "en": "Director's weekly review"},
    "as_of": {"zh": "截至", "en": "as of"},
    "by": {"zh": "分组", "en": "grouped by"},
    "playbook": {"zh": "剧本", "en": "playbook"},
    "open": {"zh": "在办项目", "en": "open deals"},
    "amount": {"zh": "金额", "en": "amount"},
    "groups": {"zh": "组", "en": "groups"},
    "deals": {"zh": "个项目", "en": "deals"},
    "funnel": {"zh": "漏斗", "en": "funnel"},
    "members": {"zh": "项目", "en": "deals"},
    "first_of": {"zh": "前 {shown} 个,共 {total} 个", "en": "first {shown} of {total}"},
    "matrix": {"zh": "金额类别 × 漏斗位置", "en": "amount class × funnel position"},
    "calls": {"zh": "客户主任的结论(各多少项目)", "en": "Director's calls (deals each)"},
    "stalled": {"zh": "停滞项目", "en": "Stalled deals"},
    "no_data": {"zh": "无数据", "en": "no data"},
    "week": {"zh": "本周要做的事(按客户经理)", "en": "This week, per account manager"},
    "week_order": {"zh": "排序依据(剧本的规定)", "en": "order (declared in the playbook)"},
    "week_default": {"zh": "剧本未规定排序,按金额从大到小", "en": "no order declared in the playbook: largest first"},
    "week_owner": {"zh": "{open} 个在办项目,列出前 {shown} 个", "en": "{open} open deals, first {shown} listed"},
    "why": {"zh": "依据", "en": "why"},
    "do": {"zh": "建议", "en": "do"},
    "portfolio": {"zh": "组合判断", "en": "portfolio decisions"},
    "plan": {"zh": "区域营销计划草稿", "en": "Regional marketing plan (draft)"},
    "needs": {"zh": "尚缺数据", "en": "needs data"},
    "source": {"zh": "数据来源", "en": "source"},
    "quarantined": {"zh": "已隔离的记录", "en": "records set aside"},
    "errors": {"zh": "无法评估的项目", "en": "deals that could not be evaluated"},
    "none_listed": {"zh": "(无)", "en": "(none)"},
    "undetermined": {"zh": "未定", "en": "undetermined"},
}


def _w(key: str, lang: str, **values: Any) -> str:
    return _T[key][lang].format(**values)


def _money(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def _key(report: dict[str, Any], key: Any) -> str:
    return str(report["labels"]["none"]) if key is None else str(key)


def _members(lang: str, members: list[str], total: int, shown: int = 8) -> str:
    if not total:
        return _w("none_listed", lang)
    listed = ", ".join(members[:shown])
    if total > min(shown, len(members)):
        listed += f" … ({_w('first_of', lang, shown=min(shown, len(members)), total=total)})"
    return listed


def _cells(report: dict[str, Any], decision: str, cells: dict[str, Any]) -> str:
    labels = report["labels"]["decisions"].get(decision, {}).get("values", {})
    parts = []
    for value, cell in cells.items():
        label = report["labels"]["undetermined"] if value == "undetermined" else labels.get(value, value)
        parts.append(f"{label} {cell['count']}")
    return " · ".join(parts)


def _decision_label(report: dict[str, Any], decision: str) -> str:
    return str(report["labels"]["decisions"].get(decision, {}).get("label", decision))


def _source_text(source: dict[str, Any] | None) -> str:
    if not source:
        return ""
    return source.get("guide") or source.get("policy") or ""


def _portfolio_lines(group: dict[str, Any], lang: str) -> list[str]:
    """The portfolio decisions and recommendations engine/review.py put in the group."""
    lines = []
    for name, decision in group.get("decisions", {}).items():
        label = decision.get("label") or name
        # an undetermined decision, or an empty list (no problem found), in words, never None or []
        value = (_w("undetermined", lang) if decision.get("value") is None else decision.get("value_label")) or _w(
            "none_listed", lang
        )
        source = _source_text(decision.get("source"))
        lines.append(f"{label}: {value}" + (f" ({source})" if source else ""))
    for rec in group.get("recommendations", []):
        source = _source_text(rec.get("source"))
        lines.append(f"→ {rec.get('label') or rec.get('id')}" + (f" ({source})" if source else ""))
    return lines


def _sections(report: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """The report as (heading, lines): what text and Markdown both show."""
    lang = report["review"]["lang"]
    head = report["review"]
    totals = report["totals"]
    group_word = report["labels"]["group_by"]
    sections: list[tuple[str, list[str]]] = []
    intro = [
        f"{_w('as_of', lang)} {head['as_of']} · {_w('by', lang)} {group_word} · "
        f"{_w('playbook', lang)} {_playbook_name(head['playbook'], lang)}",
        f"{_w('open', lang)}: {totals['open']} · {_w('amount', lang)} {_money(totals['amount'])} · "
        f"{totals['groups']} {_w('groups', lang)}",
    ]
    source = head["source"]
    if source.get("quarantined"):
        held = ", ".join(f"{n}" for n in source["quarantined"].values())
        intro.append(f"{_w('quarantined', lang)}: {held} · {_w('errors', lang)}: {source.get('errors', 0)}")
    sections.append((_w("title", lang), intro))

    lines: list[str] = []
    for group in report["groups"]:
        lines.append(
            f"{_key(report, group['key'])}: {group['open']} {_w('deals', lang)}, "
            f"{_w('amount', lang)} {_money(group['amount'])}"
        )
        lines.append(f"  {_decision_label(report, 'funnel_layer')}: {_cells(report, 'funnel_layer', group['funnel'])}")
        lines.append(
            f"  {_decision_label(report, 'amount_class')}: {_cells(report, 'amount_class', group['amount_classes'])}"
        )
        lines.append(
            f"  {_decision_label(report, 'director_action')}: "
            f"{_cells(report, 'director_action', group['director_calls'])}"
        )
        if group["stalled"] is not None:
            lines.append(f"  {_w('stalled', lang)}: {group['stalled']['count']}")
        lines += [f"  {line}" for line in _portfolio_lines(group, lang)]
        lines.append(f"  {_w('members', lang)}: {_members(lang, group['members'], group['members_total'])}")
    sections.append((f"{_w('by', lang)} {group_word}", lines))

    matrix = report["matrix"]
    first = max(_width(label) for label in matrix["row_labels"]) + 2
    widths = [max(_width(label), 6) + 2 for label in matrix["column_labels"]]
    lines = [
        _pad("", first) + "".join(_pad(label, w) for label, w in zip(matrix["column_labels"], widths, strict=True))
    ]
    for label, counts in zip(matrix["row_labels"], matrix["counts"], strict=True):
        cells = "".join(_pad(str(c), w) for c, w in zip(counts, widths, strict=True))
        lines.append((_pad(label, first) + cells).rstrip())
    sections.append((_w("matrix", lang), lines))

    lines = []
    for call in report["director_calls"]:
        source = _source_text(call["source"])
        lines.append(
            f"{call['label']}: {call['count']} ({_w('amount', lang)} {_money(call['amount'])})"
            + (f" [{source}]" if source else "")
        )
        if call["count"]:
            lines.append(f"  {_members(lang, call['members'], call['members_total'])}")
    sections.append((_w("calls", lang), lines))

    stalled = report["stalled"]
    if not stalled["available"]:
        lines = [str(stalled["needs"])]
    else:
        lines = [f"{stalled['count']}: {_members(lang, stalled['members'], stalled['members_total'])}"]
    sections.append((_w("stalled", lang), lines))

    lines = []
    if report["priority"]:
        order = ", ".join(_decision_label(report, p["decision"]) for p in report["priority"])
        lines.append(f"{_w('week_order', lang)}: {order}")
    else:
        lines.append(_w("week_default", lang))
    for owner in report["this_week"]:
        lines.append("")
        shown = len(owner["items"])
        lines.append(f"{_key(report, owner['owner'])} — {_w('week_owner', lang, open=owner['open'], shown=shown)}")
        for n, item in enumerate(owner["items"], 1):
            account = f" {item['account']}" if item["account"] else ""
            values = "; ".join(f"{why['value_label']}" for why in item["why"])
            lines.append(f"  {n}. {item['name']}{account} {_money(item['amount'])} — {values}")
            reasons = [
                f"{why['label']}: {why['row_label']} ({_source_text(why['source'])})"
                for why in item["why"]
                if why["row_label"]
            ]
            if reasons:
                lines.append(f"     {_w('why', lang)}: " + "; ".join(reasons))
            if item["recommendations"]:
                lines.append(f"     {_w('do', lang)}: " + "; ".join(rec["label"] for rec in item["recommendations"]))
    sections.append((_w("week", lang), lines))

    plan = report.get("marketing_plan")
    if plan:
        lines = []
        for section in plan["sections"]:
            lines.append(f"{section['number']}. {section['title']}")
            lines += [f"   {line}" for line in section["lines"]]
            if section["needs"]:
                lines.append(f"   {_w('needs', lang)}: " + "; ".join(section["needs"]))
        sections.append((f"{_w('plan', lang)} (G-25)", lines))
    return sections


def _width(text: str) -> int:
    """Columns a text takes in a terminal: Chinese characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * max(width - _width(text), 1)


def _playbook_name(playbook: dict[str, Any], lang: str) -> str:
    """The playbook by its title (the id is an identifier: English only), then its version."""
    title = playbook.get("title") or playbook["id"]
    if lang == "zh":
        return f"《{title}》{playbook['version']}"
    return f"“{title}” ({playbook['id']} {playbook['version']})"


def render_text(report: dict[str, Any]) -> str:
    out: list[str] = []
    for heading, lines in _sections(report):
        out += [heading, "=" * min(60, max(8, len(heading) * 2)), *lines, ""]
    return "\n".join(out).rstrip() + "\n"


def render_markdown(report: dict[str, Any], chart_files: dict[str, str] | None = None) -> str:
    """Markdown; ``chart_files`` (chart name -> file name beside the report) are linked as images."""
    lang = report["review"]["lang"]
    out: list[str] = []
    for n, (heading, lines) in enumerate(_sections(report)):
        out += [f"{'#' if n == 0 else '##'} {heading}", ""]
        out += ["    " + line if line.startswith(" ") else line for line in lines]
        out.append("")
        if n == 1 and chart_files:
            for name, file in chart_files.items():
                out += [f"![{_chart_title(report, name, lang)}]({file})", ""]
    return "\n".join(out).rstrip() + "\n"


def _chart_title(report: dict[str, Any], name: str, lang: str) -> str:
    if name == "matrix":
        return str(report["matrix"]["title"])
    return str(report["funnels"][name.partition(":")[2]]["title"])


def render_html(report: dict[str, Any], charts: dict[str, str]) -> str:
    """One self-contained HTML file: the charts (name -> SVG text) inline, no external fetches."""
    lang = report["review"]["lang"]
    esc: Callable[[Any], str] = lambda value: html.escape(str(value))  # noqa: E731
    parts = [
        "<!doctype html>",
        f'<html lang="{esc(lang)}"><head><meta charset="utf-8">',
        f"<title>{esc(_w('title', lang))} {esc(report['review']['as_of'])}</title>",
        f"<style>{_CSS}</style></head><body>",
        html_sections(report, charts),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def html_sections(report: dict[str, Any], charts: dict[str, str]) -> str:
    """The report's sections as HTML, each chart (name -> its markup: SVG text, or an ``<img>`` naming it)
    in a figure; for a page of one's own (the web console's)."""
    lang = report["review"]["lang"]
    esc: Callable[[Any], str] = lambda value: html.escape(str(value))  # noqa: E731
    parts = []
    for n, (heading, lines) in enumerate(_sections(report)):
        parts.append(f"<section><h{1 if n == 0 else 2}>{esc(heading)}</h{1 if n == 0 else 2}>")
        if n == 1:
            for name, markup in charts.items():
                title = esc(_chart_title(report, name, lang))
                parts.append(f'<figure class="chart" data-chart="{esc(name)}" aria-label="{title}">{markup}</figure>')
        if n == 2:  # the class × funnel matrix: a table, whose columns line up in any font
            parts.append(_matrix_table(report["matrix"], esc))
        else:
            parts.append("<pre>" + "\n".join(esc(line) for line in lines) + "</pre>")
        parts.append("</section>")
    return "\n".join(parts)


def _matrix_table(matrix: dict[str, Any], esc: Callable[[Any], str]) -> str:
    head = "".join(f"<th>{esc(label)}</th>" for label in matrix["column_labels"])
    rows = "".join(
        f"<tr><th>{esc(label)}</th>" + "".join(f"<td>{count:,}</td>" for count in counts) + "</tr>"
        for label, counts in zip(matrix["row_labels"], matrix["counts"], strict=True)
    )
    return f'<table class="matrix"><tr><th></th>{head}</tr>{rows}</table>'


_CSS = (
    "body{font-family:system-ui,'Noto Sans CJK SC','Microsoft YaHei',sans-serif;margin:2em auto;max-width:1100px;"
    "padding:0 1em;color:#222}pre{white-space:pre-wrap;font-family:inherit;line-height:1.5}"
    "figure.chart{display:inline-block;margin:0 1em 1em 0;vertical-align:top}"
    "figure.chart svg{max-width:100%;height:auto}"
    "h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ddd}"
    "table.matrix{border-collapse:collapse}table.matrix th,table.matrix td{padding:.3em .8em;border:1px solid #ddd}"
    "table.matrix td{text-align:right}"
)


def write_markdown(report: dict[str, Any], output: Path, charts: dict[str, str]) -> list[Path]:
    """The Markdown report at ``output`` and its charts as SVG files beside it; the files written."""
    stem = output.stem
    written: list[Path] = []
    files: dict[str, str] = {}
    for name, svg in charts.items():
        file = output.with_name(f"{stem}-{name.replace(':', '-')}.svg")
        file.write_text(svg, encoding="utf-8")
        files[name] = file.name
        written.append(file)
    output.write_text(render_markdown(report, files), encoding="utf-8")
    return [output, *written]
