"""The director's review: the whole open book at one date, as data a report is drawn from.

Over each record's latest stored evaluation that is still open (:meth:`engine.store.Store.latest_open`),
or over a CRM export evaluated for the occasion (:func:`review_import`, through the one import run of
adapters/import_run.py into a temporary audit log, so both give the same figures by the same SQL).
Every figure is aggregated in the database; every group names its member opportunities (the first
few, and how many in all); every listed deal keeps the rows that decided it and their course source.

The report is a plain JSON-able dict (``schemas/review.schema.json``); engine/review_render.py draws
it as text, Markdown or HTML.  Each group carries the portfolio's ``aggregates`` (counted in SQL),
``decisions`` and ``recommendations`` for its grouping (engine/portfolio.py), as :func:`_decide_groups` makes them.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import Location
from engine.explain import value_text
from engine.marketing_plan import PLAN_VARIABLES, draft_marketing_plan
from engine.model import Atom, Condition, GroupLevel, Playbook, Text
from engine.portfolio import AggregateValue, Portfolio, aggregate_specs
from engine.store import AggregateSpec, GroupAggregate, OpenBook, Store, StoredEvaluation, aggregate_variables

if TYPE_CHECKING:
    from adapters.import_run import Source

__all__ = [
    "CALL",
    "CLASS",
    "GROUPINGS",
    "LAYER",
    "STALLED",
    "UNDETERMINED",
    "ReviewOptions",
    "review_import",
    "review_store",
]

GROUPINGS = {
    "owner": "opportunity.owner",
    "team": "opportunity.team",
    "region": "opportunity.region",
    "market": "opportunity.market",
}
LAYER, CLASS, CALL, STALLED = "funnel_layer", "amount_class", "director_action", "stalled_project"
UNDETERMINED = "undetermined"  # the value of a decision the case could not settle (its facts missing)
_HERE = Location("<review>")

_WORDS: dict[str, dict[str, str]] = {
    "none": {"zh": "(未填写)", "en": "(not given)"},
    UNDETERMINED: {"zh": "未定", "en": "undetermined"},
    "owner": {"zh": "客户经理", "en": "account manager"},
    "team": {"zh": "团队(经理)", "en": "team (manager)"},
    "region": {"zh": "区域", "en": "region"},
    "market": {"zh": "市场(产品)", "en": "market (product)"},
    "stalled": {"zh": "停滞项目", "en": "stalled deals"},
}


@dataclass(frozen=True)
class ReviewOptions:
    """What the review covers: its date, how deals are grouped, one owner only, the language of its words,
    how many deals each owner's week lists, and how many member ids each figure names."""

    as_of: dt.date
    group_by: str = "owner"
    owner: str | None = None
    lang: str = "zh"
    top: int = 10
    members: int = 20

    def __post_init__(self) -> None:
        if self.group_by not in GROUPINGS:
            raise ValueError(f"group by one of {', '.join(GROUPINGS)}, not '{self.group_by}'")


def word(key: str, lang: str) -> str:
    return _WORDS[key][lang]


def _text(text: Text | None, lang: str) -> str:
    if not text:
        return ""
    return text.get(lang) or next(iter(text.values()))


def _value_label(playbook: Playbook, decision: str, value: Any, lang: str) -> str:
    if value is None or value == UNDETERMINED:
        return word(UNDETERMINED, lang)
    return value_text(playbook, decision, value, lang)  # a label, else yes/no or a number as people read them


def _values_of(playbook: Playbook, decision: str) -> list[Any]:
    found = playbook.decisions.get(decision)
    return list(found.values or ()) if found is not None else []


def _equals(var: str, value: Any) -> Condition:
    return Atom(var, "equals", value, f"= {value}", _HERE)


def _unknown(var: str) -> Condition:
    return Atom(var, "present", False, "missing", _HERE)


def _group_key(value: Any) -> Any:
    return None if value is None else str(value)


def review_store(store: Store, playbook: Playbook, options: ReviewOptions, source: dict[str, Any]) -> dict[str, Any]:
    """The review of the open deals stored in ``store`` as of ``options.as_of`` (the data; nothing printed).

    ``playbook`` gives the labels, the sources and the week's priority; the stored decisions are those
    each deal was evaluated with.  The open deals are read out of the log once (:meth:`Store.open_book`);
    every figure is then one query over them.
    """
    where = _equals(GROUPINGS["owner"], options.owner) if options.owner is not None else None
    variables = [*GROUPINGS.values(), "opportunity.amount", LAYER, CLASS, CALL]
    variables += [STALLED] if STALLED in playbook.decisions else []
    variables += [name for name, _ in playbook.review_priority]
    variables += [name for name in PLAN_VARIABLES if name in playbook.decisions]
    level = playbook.groups.get(options.group_by)
    variables += [v for spec in _portfolio_specs(level) for v in aggregate_variables(spec)] if level else []
    with store.open_book(options.as_of.isoformat(), variables, where=where) as book:
        return _review(book, playbook, options, source)


def _review(book: OpenBook, playbook: Playbook, options: ReviewOptions, source: dict[str, Any]) -> dict[str, Any]:
    lang, as_of = options.lang, options.as_of.isoformat()
    group_field = GROUPINGS[options.group_by]
    stalled_known = STALLED in playbook.decisions
    decisions = [LAYER, CLASS, CALL] + ([STALLED] if stalled_known else [])
    figures = book.figures(group_field, decisions)

    layers = [*_values_of(playbook, LAYER), UNDETERMINED]
    classes = [*_values_of(playbook, CLASS), UNDETERMINED]
    calls = [*_values_of(playbook, CALL), UNDETERMINED]

    # member lists: the group's deals, each funnel layer's, the stalled ones
    specs = [AggregateSpec(f"layer:{layer}", "count", None, _layer_condition(layer)) for layer in layers]
    if stalled_known:
        specs.append(AggregateSpec("stalled", "count", None, _equals(STALLED, True)))
    members = book.aggregate(group_field, specs, members=options.members)

    groups: dict[Any, dict[str, Any]] = {}
    for key, values, count, amount in figures:
        key = _group_key(key)
        group = groups.setdefault(key, _empty_group(options.group_by, key, layers, classes, calls, stalled_known))
        layer, amount_class, call = (v if v is not None else UNDETERMINED for v in values[:3])
        group["open"] += count
        group["amount"] += amount
        for part, value in (("funnel", layer), ("amount_classes", amount_class), ("director_calls", call)):
            cell = group[part].setdefault(value, {"count": 0, "amount": 0.0})
            cell["count"] += count
            cell["amount"] += amount
    for key, aggregates in members.items():
        named = groups.get(_group_key(key))
        if named is None:
            continue
        _name_members(named, aggregates["open"])
        for layer in layers:
            _name_members(named["funnel"][layer], aggregates[f"layer:{layer}"])
        if stalled_known:
            _name_members(named["stalled"], aggregates["stalled"])
            named["stalled"]["count"] = aggregates["stalled"].value
    _decide_groups(book, playbook, options, groups)
    ordered = sorted(groups.values(), key=lambda g: (-g["open"], g["key"] is None, str(g["key"])))

    matrix_counts = [[0 for _ in layers] for _ in classes]
    matrix_amounts = [[0.0 for _ in layers] for _ in classes]
    call_totals: dict[Any, list[float]] = {call: [0, 0.0] for call in calls}
    for _key, values, count, amount in figures:
        layer, amount_class, call = (v if v is not None else UNDETERMINED for v in values[:3])
        if layer in layers and amount_class in classes:
            matrix_counts[classes.index(amount_class)][layers.index(layer)] += count
            matrix_amounts[classes.index(amount_class)][layers.index(layer)] += amount
        totals = call_totals.setdefault(call, [0, 0.0])
        totals[0] += count
        totals[1] += amount
    call_specs = [AggregateSpec(f"call:{call}", "count", None, _call_condition(call)) for call in calls]
    listed = [spec.name for spec in call_specs]
    call_members = book.aggregate(None, call_specs, members=options.members, listed=listed).get(None, {})
    call_decision = playbook.decisions.get(CALL)
    director_calls = []
    for call, (call_count, call_amount) in call_totals.items():
        row = _row_of(playbook, CALL, call)
        entry: dict[str, Any] = {
            "value": call,
            "label": _value_label(playbook, CALL, call, lang),
            "count": int(call_count),
            "amount": call_amount,
            "members": [],
            "members_total": 0,
            "source": _source(row.source if row is not None else (call_decision.source if call_decision else None)),
        }
        if f"call:{call}" in call_members:
            _name_members(entry, call_members[f"call:{call}"])
        director_calls.append(entry)

    total_open = sum(g["open"] for g in ordered)
    total_amount = sum(g["amount"] for g in ordered)
    week = _this_week(book, playbook, options)
    report: dict[str, Any] = {
        "review": {
            "as_of": as_of,
            "group_by": options.group_by,
            "owner": options.owner,
            "lang": lang,
            "playbook": {"id": playbook.id, "version": playbook.version, "title": _text(playbook.title, lang)},
            "source": source,
        },
        "labels": _labels(playbook, lang, options.group_by),
        "totals": {"open": total_open, "amount": total_amount, "groups": len(ordered)},
        "groups": ordered,
        "matrix": {
            "rows": classes,
            "row_labels": [_value_label(playbook, CLASS, c, lang) for c in classes],
            "columns": layers,
            "column_labels": [_value_label(playbook, LAYER, layer, lang) for layer in layers],
            "counts": matrix_counts,
            "amounts": matrix_amounts,
        },
        "director_calls": director_calls,
        "stalled": _stalled_summary(book, stalled_known, lang, options.members),
        "priority": [{"decision": name, "order": list(order)} for name, order in playbook.review_priority],
        "this_week": week,
    }
    report["funnels"] = {
        grouping: _funnel_of(book, grouping, layers, lang)
        for grouping in dict.fromkeys(["owner", "region", options.group_by])
    }
    report["matrix"]["title"] = _CHART_WORDS["matrix"][lang]
    report["marketing_plan"] = draft_marketing_plan(book, playbook, report)
    return report


def _portfolio_specs(level: GroupLevel | None) -> list[AggregateSpec]:
    return [AggregateSpec(*spec) for spec in aggregate_specs(level)] if level is not None else []


def _decide_groups(
    book: OpenBook, playbook: Playbook, options: ReviewOptions, groups: dict[Any, dict[str, Any]]
) -> None:
    """Fill each group's portfolio slots: its aggregates, counted in the database over the stored per-case
    decisions and facts, then the playbook's group decisions and rules made from them (Portfolio.decide),
    so a review of a database and of an export decide a group alike.  A group without a key (its
    field not given) is decided too, under that empty key."""
    level = playbook.groups.get(options.group_by)
    if level is None:
        return
    specs = _portfolio_specs(level)
    counted = book.aggregate(level.field, specs, members=options.members, listed=[s.name for s in specs])
    values: dict[Hashable, dict[str, AggregateValue]] = {}
    sizes: dict[Hashable, int] = {}
    for key, aggregates in counted.items():
        values[_group_key(key)] = {
            spec.name: AggregateValue(aggregates[spec.name].value, aggregates[spec.name].members) for spec in specs
        }
        sizes[_group_key(key)] = int(aggregates["open"].value)
    with Portfolio(playbook) as portfolio:
        decided = portfolio.decide(options.group_by, values, options.as_of, sizes)
    for result in decided:
        group = groups.get(result.key)
        if group is None:
            continue
        made = result.to_json(options.lang, trace=False, members=options.members)
        for name, aggregate in made["aggregates"].items():
            aggregate["members_total"] = counted[result.key][name].members_total if result.key in counted else 0
        group["aggregates"] = made["aggregates"]
        group["decisions"] = made.get("decisions", {})
        group["recommendations"] = made.get("recommendations", [])
        if "error" in made:
            group["error"] = made["error"]


_CHART_WORDS = {
    "funnel": {"zh": "各{group}的漏斗(项目数)", "en": "Funnel per {group} (deals)"},
    "axis": {"zh": "在办项目数", "en": "open deals"},
    "matrix": {"zh": "金额类别 × 漏斗位置(项目数)", "en": "Amount class × funnel position (deals)"},
}


def _funnel_of(book: OpenBook, grouping: str, layers: list[Any], lang: str) -> dict[str, Any]:
    """The open deals per funnel layer of each group of ``grouping``, largest group first."""
    counts: dict[Any, list[int]] = {}
    for key, (layer,), count, _amount in book.figures(GROUPINGS[grouping], [LAYER]):
        place = layers.index(layer if layer in layers else UNDETERMINED)
        counts.setdefault(_group_key(key), [0] * len(layers))[place] += count
    groups = [{"key": key, "counts": row} for key, row in counts.items()]
    groups.sort(key=lambda g: (-sum(g["counts"]), g["key"] is None, str(g["key"])))
    return {
        "grouping": grouping,
        "title": _CHART_WORDS["funnel"][lang].format(group=word(grouping, lang)),
        "axis": _CHART_WORDS["axis"][lang],
        "layers": layers,
        "groups": groups,
    }


def _layer_condition(layer: Any) -> Condition:
    return _unknown(LAYER) if layer == UNDETERMINED else _equals(LAYER, layer)


def _call_condition(call: Any) -> Condition:
    return _unknown(CALL) if call == UNDETERMINED else _equals(CALL, call)


def _empty_group(
    group_by: str, key: Any, layers: list[Any], classes: list[Any], calls: list[Any], stalled_known: bool
) -> dict[str, Any]:
    def cells(values: list[Any], named: bool) -> dict[str, Any]:
        extra: dict[str, Any] = {"members": [], "members_total": 0} if named else {}
        return {str(v): {"count": 0, "amount": 0.0, **extra} for v in values}

    return {
        "group_by": group_by,
        "key": key,
        "open": 0,
        "amount": 0.0,
        "members": [],
        "members_total": 0,
        "funnel": cells(layers, True),
        "amount_classes": cells(classes, False),
        "director_calls": cells(calls, False),
        "stalled": {"count": 0, "members": [], "members_total": 0} if stalled_known else None,
        # filled by the portfolio decisions (engine/portfolio.py) when they are made
        "aggregates": {},
        "decisions": {},
        "recommendations": [],
    }


def _name_members(target: dict[str, Any], aggregate: GroupAggregate) -> None:
    target["members"] = list(aggregate.members)
    target["members_total"] = aggregate.members_total


def _stalled_summary(book: OpenBook, known: bool, lang: str, members: int) -> dict[str, Any]:
    """The stalled deals of the whole report (G-18's ``stalled_project``), or why there is no such figure."""
    if not known:
        needs = {
            "zh": "无数据:剧本还没有“停滞项目”这一决定(需要阶段进入日期与漏斗位置)",
            "en": "no data: the playbook has no stalled-project decision yet (it needs the stage entry date "
            "and the funnel layer)",
        }
        return {"available": False, "needs": needs[lang], "count": 0, "members": [], "members_total": 0}
    spec = AggregateSpec("stalled", "count", None, _equals(STALLED, True))
    found = book.aggregate(None, [spec], members=members, listed=["stalled"]).get(None)
    stalled = found["stalled"] if found is not None else GroupAggregate(0, (), 0)
    return {
        "available": True,
        "needs": None,
        "count": stalled.value,
        "members": list(stalled.members),
        "members_total": stalled.members_total,
    }


def _row_of(playbook: Playbook, decision: str, value: Any) -> Any:
    """The first row of ``decision`` whose output is ``value`` (for its source), or None."""
    found = playbook.decisions.get(decision)
    if found is None:
        return None
    for row in found.rows:
        output = getattr(row.then, "value", None)
        if output == value:
            return row
    return None


def _source(source: Any) -> dict[str, str] | None:
    if source is None:
        return None
    if source.guide:
        return {"guide": source.guide, "quote": source.quote}
    return {"policy": source.policy, "text": source.text}


def _labels(playbook: Playbook, lang: str, group_by: str) -> dict[str, Any]:
    names = [LAYER, CLASS, CALL, STALLED]
    return {
        "group_by": word(group_by, lang),
        "undetermined": word(UNDETERMINED, lang),
        "none": word("none", lang),
        "decisions": {
            name: {
                "label": _text(playbook.decisions[name].label, lang),
                "values": {
                    str(v): _value_label(playbook, name, v, lang) for v in playbook.decisions[name].values or ()
                },
            }
            for name in names
            if name in playbook.decisions
        },
    }


def _this_week(book: OpenBook, playbook: Playbook, options: ReviewOptions) -> list[dict[str, Any]]:
    """Per owner, the first ``top`` open deals in the playbook's declared priority (review.priority)."""
    ranked = book.first(GROUPINGS["owner"], playbook.review_priority, limit=options.top)
    owners: dict[Any, dict[str, Any]] = {}
    for owner, total, stored in ranked:
        owner = _group_key(owner)
        entry = owners.setdefault(owner, {"owner": owner, "open": total, "items": []})
        entry["items"].append(_week_item(playbook, stored, options.lang))
    return sorted(owners.values(), key=lambda o: (o["owner"] is None, str(o["owner"])))


def _week_item(playbook: Playbook, stored: StoredEvaluation, lang: str) -> dict[str, Any]:
    opportunity = stored.facts.get("opportunity") if isinstance(stored.facts.get("opportunity"), dict) else {}
    account = stored.facts.get("account") if isinstance(stored.facts.get("account"), dict) else {}
    assert isinstance(opportunity, dict) and isinstance(account, dict)
    why = []
    for name in [n for n, _ in playbook.review_priority] or [CALL]:
        value = stored.decisions.get(name)
        rows = stored.fired.get(name, [])
        decision = playbook.decisions.get(name)
        row = next((r for r in decision.rows if r.id in rows), None) if decision is not None else None
        why.append(
            {
                "decision": name,
                "label": _text(decision.label, lang) if decision is not None else name,
                "value": value,
                "value_label": _value_label(playbook, name, value, lang),
                "rows": rows,
                "row_label": _text(row.label, lang) if row is not None else None,
                "source": _source(row.source) if row is not None else None,
            }
        )
    actions: dict[str, dict[str, Any]] = {}
    for rec in stored.recommendations:
        action = playbook.actions.get(rec["id"])
        actions.setdefault(
            rec["id"],
            {
                "action": rec["id"],
                "label": _text(action.label, lang) if action is not None else rec["id"],
                "rule": rec["rule"],
                "source": _source(action.source) if action is not None else None,
            },
        )
    amount = opportunity.get("amount")
    return {
        "record": stored.record_id or stored.case_id,
        "evaluation": stored.seq,
        "name": opportunity.get("name") or stored.record_id or stored.case_id,
        "account": account.get("name") or opportunity.get("account_id"),
        "amount": amount if isinstance(amount, int | float) and not isinstance(amount, bool) else None,
        "region": opportunity.get("region"),
        "why": why,
        "recommendations": list(actions.values()),
    }


def review_import(source: Source, playbook: Playbook, options: ReviewOptions) -> dict[str, Any]:
    """The review of a CRM export read now: its cases evaluated into a temporary audit log (nothing kept),
    then reviewed as :func:`review_store` reviews a stored one.  Quarantined records and case errors are
    counted in ``review.source``."""
    from adapters.import_run import ImportRun, QuarantinedRecord
    from engine.compile import compile_playbook
    from engine.evaluate import Evaluator

    with (
        tempfile.TemporaryDirectory(prefix="playbook-review-") as folder,
        Store(f"sqlite:///{Path(folder) / 'review.db'}") as store,
        compile_playbook(playbook) as compiled,
    ):
        run = ImportRun(source, Evaluator(compiled), options.as_of, store)
        quarantined: defaultdict[str, int] = defaultdict(int)
        for event in run:
            if isinstance(event, QuarantinedRecord):
                quarantined[event.record.code] += 1
        counts = run.counts
        described = {
            "input": source.path,
            "mapping": source.mapping.id if source.mapping is not None else None,
            "rows": counts.rows,
            "cases": counts.results,
            "errors": counts.errors,
            "quarantined": dict(sorted(quarantined.items())),
        }
        return review_store(store, playbook, options, described)


def group_label(key: Any, lang: str) -> str:
    return word("none", lang) if key is None else str(key)


def counts_of(cells: dict[str, Any], order: Sequence[Any]) -> list[int]:
    return [int(cells.get(str(v), {}).get("count", 0)) for v in order]
