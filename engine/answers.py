"""What an auditor reads about stored evaluations, in Chinese or English.

Which evaluation and playbook (id, version, content hash) made a piece of advice, why one
action was advised (the trace narrowed to the steps that led to it), and what became of it
(the outcomes recorded).  Works from stored evaluations and results' JSON; reads no database.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from engine.errors import did_you_mean
from engine.explain import UnknownTarget, why, why_not
from engine.model import Playbook, ValueOf
from engine.store import Store, StoredEvaluation

__all__ = [
    "advice_in_force",
    "advice_note",
    "outcome_lines",
    "outcome_texts",
    "split_action",
    "stored_header",
    "why_action",
]

_WORDS: dict[str, dict[str, str]] = {
    "zh": {
        "evaluation": "评估 #{seq}",
        "as_of": "评估日期 {as_of}",
        "stored": "记录于 {at}",
        "source": "来源 {source}",
        "playbook": "剧本 {id} 版本 {version}",
        "hash": "内容哈希 {hash}",
        "record": "记录 {record}",
        "account": "客户 {account}",
        "outcomes": "处理结果",
        "no_outcome": "(尚未记录处理结果)",
        "by": "{action}:{status},{who},{at}",
        "because": ",理由:{why}",
        "accepted": "已接受",
        "dismissed": "已驳回",
        "done": "已完成",
        "in_force": "记录 {record} {when}有效的建议是评估 #{seq}(评估日期 {as_of})",
        "on_or_before": "在 {on} ",
        "now": "现在",
        "never": ",此前没有任何评估建议过 {action}:下面说明为什么没有",
        "earlier": ",它没有建议 {action}(下面说明为什么没有);评估 #{last}(评估日期 {last_as_of})建议过:{command}",
    },
    "en": {
        "evaluation": "evaluation #{seq}",
        "as_of": "as of {as_of}",
        "stored": "stored {at}",
        "source": "from {source}",
        "playbook": "playbook {id} version {version}",
        "hash": "content hash {hash}",
        "record": "record {record}",
        "account": "account {account}",
        "outcomes": "Outcomes",
        "no_outcome": "(no outcome recorded yet)",
        "by": "{action} {status} by {who} at {at}",
        "because": ": {why}",
        "accepted": "accepted",
        "dismissed": "dismissed",
        "done": "done",
        "in_force": "the advice in force for '{record}'{when} is evaluation #{seq} (as of {as_of})",
        "on_or_before": " on or before {on}",
        "now": "",
        "never": ", and no evaluation of it advised {action}: why not, below",
        "earlier": (
            ", which did not advise {action} (why not, below); evaluation #{last} (as of {last_as_of}) did: {command}"
        ),
    },
}

_SEPARATOR = {"zh": ",", "en": ", "}


def _w(lang: str, key: str, **values: Any) -> str:
    return _WORDS.get(lang, _WORDS["en"])[key].format(**values)


def _when(stamp: str) -> str:
    """A stored UTC time stamp, to the second."""
    return stamp[:19].replace("T", " ") + " UTC"


def stored_header(stored: StoredEvaluation, lang: str) -> str:
    """Two lines naming a stored evaluation: its number, dates, origin and ids; the playbook that made it."""
    first = [
        _w(lang, "evaluation", seq=stored.seq),
        _w(lang, "as_of", as_of=stored.as_of),
        _w(lang, "stored", at=_when(stored.created_at)),
        _w(lang, "source", source=stored.source),
    ]
    if stored.record_id is not None:
        first.append(_w(lang, "record", record=stored.record_id))
    if stored.account_id is not None:
        first.append(_w(lang, "account", account=stored.account_id))
    playbook = _w(lang, "playbook", id=stored.playbook_id, version=stored.playbook_version)
    return (
        _SEPARATOR[lang].join(first) + "\n" + playbook + _SEPARATOR[lang] + _w(lang, "hash", hash=stored.playbook_hash)
    )


def outcome_texts(stored: StoredEvaluation, lang: str = "en", positions: set[int] | None = None) -> list[str]:
    """Each outcome (of the recommendations at ``positions``, or all) as one line: what, status, who, when, why.

    An action the evaluation recommended more than once is named with its rule, ``rule:action``.
    """
    rules = {rec["position"]: rec["rule"] for rec in stored.recommendations}
    repeated = {a for a, n in Counter(rec["id"] for rec in stored.recommendations).items() if n > 1}
    texts = []
    for done in stored.outcomes:
        if positions is not None and done["position"] not in positions:
            continue
        action = f"{rules.get(done['position'])}:{done['action']}" if done["action"] in repeated else done["action"]
        status = _w(lang, done["status"]) if done["status"] in _WORDS["en"] else done["status"]
        # one line each: a newline typed into who or why cannot pass for another outcome
        who, why = " ".join(done["who"].split()), " ".join(done["why"].split())
        text = _w(lang, "by", action=action, status=status, who=who, at=_when(done["at"]))
        texts.append(text + (_w(lang, "because", why=why) if why else ""))
    return texts


def outcome_lines(stored: StoredEvaluation, lang: str, action: str | None = None) -> list[str]:
    """The outcomes block: of one action (``action`` or ``rule:action``; "none yet" when it has none), or
    of every recommendation (nothing when there is none).  Nothing for an action not recommended."""
    if action is None:
        texts = outcome_texts(stored, lang)
        return [f"{_w(lang, 'outcomes')}:", *(f"  {t}" for t in texts)] if texts else []
    wanted, rule = split_action(action)
    positions = {r["position"] for r in stored.recommendations if r["id"] == wanted and rule in (None, r["rule"])}
    if not positions:
        return []
    texts = outcome_texts(stored, lang, positions) or [_w(lang, "no_outcome")]
    return [f"{_w(lang, 'outcomes')}:", *(f"  {t}" for t in texts)]


def advice_note(
    lang: str, record: str, on: str | None, in_force: StoredEvaluation, last: StoredEvaluation | None, action: str
) -> str:
    """Says that the evaluation in force for a record did not advise ``action``, and which did last, if any."""
    when = _w(lang, "on_or_before", on=on) if on else _w(lang, "now")
    note = _w(lang, "in_force", record=record, when=when, seq=in_force.seq, as_of=in_force.as_of)
    if last is None:
        return note + _w(lang, "never", action=action)
    command = f"playbook why {last.seq} --action {action}"
    return note + _w(lang, "earlier", action=action, last=last.seq, last_as_of=last.as_of, command=command)


def advice_in_force(store: Store, record_id: str, action: str, on: str | None, lang: str) -> tuple[int, str | None]:
    """The record's evaluation in force on ``on`` (its latest with as_of on or before it; the latest of
    all without ``on``), and a note when that one did not advise ``action`` naming the last one that did.

    LookupError when the log holds no evaluation of the record by then.
    """
    wanted, rule = split_action(action)
    latest: StoredEvaluation | None = None
    last_advised: StoredEvaluation | None = None
    for stored in store.search(record_id=record_id, until=on):
        latest = stored
        if any(r["id"] == wanted and rule in (None, r["rule"]) for r in stored.recommendations):
            last_advised = stored
    if latest is None:
        when = f" on or before {on}" if on else ""
        raise LookupError(f"no evaluation of record '{record_id}'{when} in the audit log")
    if last_advised is not latest:
        return latest.seq, advice_note(lang, record_id, on, latest, last_advised, action)
    return latest.seq, None


def split_action(spec: str, rule: str | None = None) -> tuple[str, str | None]:
    """(action, rule) from 'action' or 'rule:action'; a rule given apart wins only if the spec names none."""
    if ":" in spec:
        named_rule, _, action = spec.partition(":")
        if rule is not None and rule != named_rule:
            raise UnknownTarget(f"'{spec}' names rule '{named_rule}', but the rule given is '{rule}'")
        return action, named_rule
    return spec, rule


def _inputs_read(conditions: list[dict[str, Any]]) -> set[str]:
    return {c["input"] for c in conditions} | {c["compared_with"]["input"] for c in conditions if "compared_with" in c}


def _narrowed_trace(playbook: Playbook, trace: list[dict[str, Any]], action: str, rule: str | None) -> list[Any]:
    """The steps that led to ``action``: the rules that recommended it, and, going back, every step that
    gave a value they read (decisions, rules that set them, derivations)."""
    kept: list[dict[str, Any]] = []
    needed: set[str] = set()
    for step in reversed(trace):
        if "rule" in step:
            recommends = action in step.get("recommend", []) and rule in (None, step["rule"])
            sets = needed.intersection(step.get("set", {}))
            if not recommends and not sets:
                continue
            narrowed = dict(step)
            if recommends:
                narrowed["recommend"] = [action]
                rec = next(r for r in playbook.rules_by_id[step["rule"]].recommends if r.action == action)
                needed.update(p.var for p in rec.params.values() if isinstance(p, ValueOf))
            else:
                narrowed.pop("recommend", None)
            narrowed["set"] = {name: value for name, value in step.get("set", {}).items() if name in sets}
            if not narrowed["set"]:
                del narrowed["set"]
            needed |= _inputs_read(step["conditions"])
            kept.append(narrowed)
        elif "decision" in step:
            if step["decision"] not in needed:
                continue
            rows = {row.id: row for row in playbook.decisions[step["decision"]].rows}
            for fired in step["fired"]:
                if fired["chosen"]:
                    needed |= _inputs_read(fired["conditions"])
                    then = rows[fired["row"]].then
                    if isinstance(then, ValueOf):
                        needed.add(then.var)
            kept.append(step)
        elif "derived" in step and step["derived"]["input"] in needed:
            kept.append(step)
    return kept[::-1]


def why_action(playbook: Playbook, result: dict[str, Any], spec: str, lang: str, rule: str | None = None) -> str:
    """Why a result holds an action (``action`` or ``rule:action``): only the steps that led to it.

    When the result does not hold it, why not.  UnknownTarget for an action or rule the playbook lacks.
    """
    action, rule = split_action(spec, rule)
    if action not in playbook.actions:
        raise UnknownTarget(f"'{action}' is no action of the playbook{did_you_mean(action, playbook.actions)}")
    if rule is not None and rule not in playbook.rules_by_id:
        raise UnknownTarget(f"'{rule}' is no rule of the playbook{did_you_mean(rule, playbook.rules_by_id)}")
    recs = [r for r in result["recommendations"] if r["id"] == action and rule in (None, r["rule"])]
    if not recs:
        return why_not(playbook, result, action, lang)
    narrowed = {**result, "recommendations": recs, "trace": _narrowed_trace(playbook, result["trace"], action, rule)}
    return why(playbook, narrowed, lang)
