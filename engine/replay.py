"""What a playbook change would change: stored cases re-evaluated under it, against the playbook live now.

By default each record's latest evaluation is replayed (a record evaluated ten times is counted
once, as it stands now); its facts and ``as_of`` are evaluated under the baseline (the playbook
of the newest evaluation in the log, or one given) and under the candidate, and the two are
compared: actions advised more or less, decision values that move, rules that start or stop
firing, records left with nothing to do.  Evaluations are streamed: the report holds counts and
a few examples, never every evaluation.  Nothing is written.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from engine.compile import compile_playbook
from engine.errors import CaseError
from engine.evaluate import Evaluator
from engine.explain import fault_said
from engine.loader import PlaybookLoader
from engine.model import Playbook
from engine.store import Store, StoredEvaluation

__all__ = ["Change", "ReplayReport", "changes_of", "live_playbook", "render_replay", "replay", "replay_changes"]


@dataclass(frozen=True)
class _Outcome:
    decisions: dict[str, Any]
    actions: Counter[str]
    rules: Counter[str]


def _stored_outcome(stored: StoredEvaluation) -> _Outcome:
    return _Outcome(
        stored.decisions, Counter(r["id"] for r in stored.recommendations), Counter(stored.fired.get("$rules", []))
    )


@dataclass(frozen=True)
class Change:
    """One record replayed: what it had under the baseline, what it would have under the candidate."""

    record: str
    evaluation: int
    as_of: str
    decisions: dict[str, tuple[Any, Any]]  # decision -> (baseline value, candidate value), only those that differ
    added: Counter[str]
    removed: Counter[str]
    rules_started: Counter[str]
    rules_stopped: Counter[str]
    left_without_action: bool
    failed: dict[str, Any] | None = None  # code, message, under which playbook ("baseline" or "candidate"), error

    @property
    def changed(self) -> bool:
        return bool(self.decisions or self.added or self.removed or self.rules_started or self.rules_stopped)


def live_playbook(store: Store, loader: PlaybookLoader | None = None) -> tuple[Playbook, int]:
    """The playbook live now: the one that made the newest evaluation in the log, and that evaluation's number."""
    newest = store.count()
    if newest == 0:
        raise LookupError("the audit log holds no evaluation: there is nothing to replay")
    return (loader or PlaybookLoader()).stored(store, store.get(newest).playbook_hash), newest


def replay_changes(
    store: Store,
    candidate: Playbook,
    baseline: Playbook,
    *,
    since: str | None = None,
    every: bool = False,
    skipped: Counter[str] | None = None,
) -> Iterator[Change]:
    """One :class:`Change` per record replayed (each record's latest evaluation, or every evaluation).

    Records whose evaluation failed when stored are not replayed; ``skipped`` counts them.
    """
    with ExitStack() as stack:
        evaluators = {
            playbook.content_hash: Evaluator(stack.enter_context(compile_playbook(playbook)))
            for playbook in (baseline, candidate)
        }
        stored = store.search(since=since, latest_per_record=not every)
        yield from changes_of(stored, evaluators, candidate, baseline, skipped)


def changes_of(
    evaluations: Iterable[StoredEvaluation],
    evaluators: dict[str, Evaluator],
    candidate: Playbook,
    baseline: Playbook,
    skipped: Counter[str] | None = None,
) -> Iterator[Change]:
    """One :class:`Change` per stored evaluation, compared under ``baseline`` and ``candidate``.

    ``evaluators``: each playbook's by content hash.  The audit log's (:func:`replay_changes`) or an
    exported history's (adapters/history.py, which runs it on Apache Spark too).
    """
    for stored in evaluations:
        if stored.status != "ok":
            if skipped is not None:
                skipped["failed when stored"] += 1
            continue
        outcomes: list[_Outcome] = []
        failed = None
        for role, playbook in (("baseline", baseline), ("candidate", candidate)):
            if stored.playbook_hash == playbook.content_hash:  # what was stored is what it would give
                outcomes.append(_stored_outcome(stored))
                continue
            try:
                result = evaluators[playbook.content_hash].evaluate_case(
                    stored.facts, dt.date.fromisoformat(stored.as_of), stored.case_id
                )
            except CaseError as error:
                failed = {"under": role, "code": error.code, "message": error.message}
                if error.details is not None or error.input is not None:  # for the text to say it with labels
                    failed["error"] = error.to_json()["error"]
                break
            outcomes.append(
                _Outcome(
                    result.decisions,
                    Counter(r["id"] for r in result.recommendations),
                    Counter(result.fired().get("$rules", [])),
                )
            )
        record = stored.record_id or stored.case_id
        if failed is not None:
            empty: Counter[str] = Counter()
            yield Change(record, stored.seq, stored.as_of, {}, empty, empty, empty, empty, False, failed)
            continue
        before, after = outcomes
        decisions = {
            name: (before.decisions.get(name), after.decisions.get(name))
            for name in dict.fromkeys([*before.decisions, *after.decisions])
            if before.decisions.get(name) != after.decisions.get(name)
        }
        yield Change(
            record,
            stored.seq,
            stored.as_of,
            decisions,
            after.actions - before.actions,
            before.actions - after.actions,
            after.rules - before.rules,
            before.rules - after.rules,
            bool(before.actions) and not after.actions,
        )


def _key(value: Any) -> str:
    """A decision value as a JSON object key and as shown: lists joined, missing as ''."""
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) else str(value)


@dataclass
class _Tally:
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, record: str, n: int, keep: int) -> None:
        self.count += n
        if len(self.examples) < keep and record not in self.examples:
            self.examples.append(record)


@dataclass
class ReplayReport:
    """Counts and a few examples of what a playbook change would change; memory bounded by the playbooks."""

    candidate: Playbook
    baseline: Playbook
    baseline_from: dict[str, Any]  # how the baseline was chosen: {"evaluation": newest seq} or {"file": path}
    every: bool = False
    examples: int = 10
    replayed: int = 0
    changed: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    as_of_range: list[str] = field(default_factory=list)
    added: dict[str, _Tally] = field(default_factory=dict)
    removed: dict[str, _Tally] = field(default_factory=dict)
    rules_started: dict[str, _Tally] = field(default_factory=dict)
    rules_stopped: dict[str, _Tally] = field(default_factory=dict)
    moves: dict[tuple[str, str, str], _Tally] = field(default_factory=dict)  # (decision, from, to)
    left_without_action: _Tally = field(default_factory=_Tally)
    failed: _Tally = field(default_factory=_Tally)
    failures: list[dict[str, Any]] = field(default_factory=list)
    change_examples: list[dict[str, Any]] = field(default_factory=list)

    def add(self, change: Change) -> None:
        keep = self.examples
        self.replayed += 1
        self.as_of_range = [min([change.as_of, *self.as_of_range[:1]]), max([change.as_of, *self.as_of_range[1:]])]
        if change.failed is not None:
            self.failed.add(change.record, 1, keep)
            if len(self.failures) < keep:
                self.failures.append({"record": change.record, "evaluation": change.evaluation, **change.failed})
            return
        if not change.changed:
            return
        self.changed += 1
        for table, counts in (
            (self.added, change.added),
            (self.removed, change.removed),
            (self.rules_started, change.rules_started),
            (self.rules_stopped, change.rules_stopped),
        ):
            for name, n in counts.items():
                table.setdefault(name, _Tally()).add(change.record, n, keep)
        for name, (before, after) in change.decisions.items():
            self.moves.setdefault((name, _key(before), _key(after)), _Tally()).add(change.record, 1, keep)
        if change.left_without_action:
            self.left_without_action.add(change.record, 1, keep)
        if len(self.change_examples) < keep:
            self.change_examples.append(
                {
                    "record": change.record,
                    "evaluation": change.evaluation,
                    "as_of": change.as_of,
                    "decisions": [
                        {"decision": name, "from": before, "to": after}
                        for name, (before, after) in change.decisions.items()
                    ],
                    "added": sorted(change.added.elements()),
                    "removed": sorted(change.removed.elements()),
                }
            )

    # -- labels, from the candidate and else the baseline (a removed action may exist only there) --

    def _label(self, kind: str, name: str, lang: str) -> str:
        for playbook in (self.candidate, self.baseline):
            things: Any = {
                "action": playbook.actions,
                "rule": playbook.rules_by_id,
                "decision": playbook.decisions,
            }[kind]
            if name in things:
                return str(things[name].label.get(lang, name))
        return name

    def _value_label(self, decision: str, value: str, lang: str) -> str:
        if value == "":
            return _WORDS[lang]["missing"]
        for playbook in (self.candidate, self.baseline):
            if decision in playbook.decisions:
                found = playbook.decisions[decision]
                return ", ".join(found.value_label(v, lang) for v in value.split(", "))
        return value

    def to_json(self, lang: str = "en") -> dict[str, Any]:
        def tallied(kind: str, table: dict[str, _Tally], what: str) -> list[dict[str, Any]]:
            return [
                {kind: name, "label": self._label(kind, name, lang), what: t.count, "examples": t.examples}
                for name, t in sorted(table.items(), key=lambda item: (-item[1].count, item[0]))
            ]

        def described(playbook: Playbook) -> dict[str, str]:
            return {"id": playbook.id, "version": playbook.version, "hash": playbook.content_hash}

        return {
            "scope": "every evaluation" if self.every else "the latest evaluation of each record",
            "playbook": described(self.candidate),
            "baseline": {**described(self.baseline), "from": self.baseline_from},
            "lang": lang,
            "replayed": self.replayed,
            "as_of": {"from": self.as_of_range[0], "to": self.as_of_range[1]} if self.as_of_range else None,
            "changed": self.changed,
            "unchanged": self.replayed - self.changed - self.failed.count,
            "not_replayed": dict(self.skipped),
            "actions_added": tallied("action", self.added, "records"),
            "actions_removed": tallied("action", self.removed, "records"),
            "rules_started": tallied("rule", self.rules_started, "records"),
            "rules_stopped": tallied("rule", self.rules_stopped, "records"),
            "decisions_changed": [
                {
                    "decision": name,
                    "label": self._label("decision", name, lang),
                    "from": before,
                    "from_label": self._value_label(name, before, lang),
                    "to": after,
                    "to_label": self._value_label(name, after, lang),
                    "records": t.count,
                    "examples": t.examples,
                }
                for (name, before, after), t in sorted(self.moves.items(), key=lambda item: (-item[1].count, item[0]))
            ],
            "left_without_action": {
                "records": self.left_without_action.count,
                "examples": self.left_without_action.examples,
            },
            "failed": {
                "records": self.failed.count,
                "examples": [
                    {
                        **{k: v for k, v in failure.items() if k != "error"},
                        "text": fault_said(
                            self.candidate if failure["under"] == "candidate" else self.baseline,
                            failure.get("error") or failure,
                            lang,
                        )
                        or f"{failure['code']}: {failure['message']}",
                    }
                    for failure in self.failures
                ],
            },
            "examples": [
                {
                    **example,
                    "decisions": [
                        {
                            **move,
                            "label": self._label("decision", move["decision"], lang),
                            "from_label": self._value_label(move["decision"], _key(move["from"]), lang),
                            "to_label": self._value_label(move["decision"], _key(move["to"]), lang),
                        }
                        for move in example["decisions"]
                    ],
                    "added": [{"action": a, "label": self._label("action", a, lang)} for a in example["added"]],
                    "removed": [{"action": a, "label": self._label("action", a, lang)} for a in example["removed"]],
                }
                for example in self.change_examples
            ],
        }


def replay(
    store: Store,
    candidate: Playbook,
    baseline: Playbook,
    baseline_from: dict[str, Any],
    *,
    since: str | None = None,
    every: bool = False,
    examples: int = 10,
) -> ReplayReport:
    """Replay and count; see :func:`replay_changes`."""
    report = ReplayReport(candidate, baseline, baseline_from, every=every, examples=examples)
    for change in replay_changes(store, candidate, baseline, since=since, every=every, skipped=report.skipped):
        report.add(change)
    return report


_WORDS: dict[str, dict[str, str]] = {
    "zh": {
        "head": "回放:{n} 次评估({scope},评估日期 {start} 至 {end})",
        "latest": "每条记录最近一次",
        "every": "全部已存评估",
        "candidate": "新剧本 {id} 版本 {version}({hash})",
        "baseline": "对照:{id} 版本 {version}({hash}),{origin}",
        "newest": "即日志中最近一次评估(#{seq})所用的剧本",
        "file": "取自 {file}",
        "summary": "会变化 {changed} 条,不变 {unchanged} 条,新剧本下出错 {failed} 条",
        "skipped": "未回放:{n} 条(存入时即出错)",
        "actions_added": "会多建议的动作",
        "actions_removed": "会少建议的动作",
        "decisions_changed": "会改变的结论",
        "rules_started": "会开始触发的规则",
        "rules_stopped": "会停止触发的规则",
        "left_without_action": "会变得没有任何建议:{n} 条",
        "failed": "新剧本下出错的记录",
        "examples": "例子",
        "records": "{n} 条",
        "record": "1 条",
        "e.g.": "(例如 {records})",
        "missing": "缺失",
        "no_change": "没有任何变化",
        "same": "新剧本就是现在在用的剧本:用 --baseline 指定要对照的剧本",
        "evaluation": "评估 #{seq},评估日期 {as_of}",
    },
    "en": {
        "head": "replay: {n} evaluations ({scope}, as of {start} to {end})",
        "latest": "the latest of each record",
        "every": "every one stored",
        "candidate": "new playbook {id} version {version} ({hash})",
        "baseline": "against {id} version {version} ({hash}), {origin}",
        "newest": "the playbook of the newest evaluation in the log (#{seq})",
        "file": "from {file}",
        "summary": "{changed} would change, {unchanged} unchanged, {failed} fail under the new playbook",
        "skipped": "not replayed: {n} (failed when stored)",
        "actions_added": "actions advised more",
        "actions_removed": "actions advised less",
        "decisions_changed": "decisions that would change",
        "rules_started": "rules that would start firing",
        "rules_stopped": "rules that would stop firing",
        "left_without_action": "left with no action: {n}",
        "failed": "records that fail under the new playbook",
        "examples": "examples",
        "records": "{n} records",
        "record": "1 record",
        "e.g.": " (e.g. {records})",
        "missing": "missing",
        "no_change": "nothing would change",
        "same": "the new playbook is the one live now: name another to compare against with --baseline",
        "evaluation": "evaluation #{seq}, as of {as_of}",
    },
}


def render_replay(data: dict[str, Any]) -> str:
    """The report of :meth:`ReplayReport.to_json` as text, in its language."""
    lang = data["lang"]
    w = _WORDS[lang]
    chosen = data["baseline"]["from"]
    origin = w["newest"].format(seq=chosen["evaluation"]) if "evaluation" in chosen else w["file"].format(**chosen)
    sep = "," if lang == "zh" else ", "
    span = data["as_of"] or {"from": "-", "to": "-"}
    scope = w["every"] if data["scope"] == "every evaluation" else w["latest"]
    lines = [
        w["head"].format(n=data["replayed"], scope=scope, start=span["from"], end=span["to"]),
        "  " + w["candidate"].format(**{**data["playbook"], "hash": data["playbook"]["hash"][:12]}),
        "  " + w["baseline"].format(**{**data["baseline"], "hash": data["baseline"]["hash"][:12], "origin": origin}),
        "  "
        + w["summary"].format(changed=data["changed"], unchanged=data["unchanged"], failed=data["failed"]["records"]),
    ]
    if data["not_replayed"]:
        lines.append("  " + w["skipped"].format(n=sum(data["not_replayed"].values())))
    if data["playbook"]["hash"] == data["baseline"]["hash"]:
        lines.append(w["same"])
    elif not data["changed"] and not data["failed"]["records"]:
        lines.append(w["no_change"])

    def counted(n: int) -> str:
        return w["record"] if n == 1 else w["records"].format(n=n)

    def examples(records: list[str]) -> str:
        return w["e.g."].format(records=sep.join(records)) if records else ""

    for key in ("actions_added", "actions_removed"):  # rules: in the JSON
        if data[key]:
            lines.append(f"{w[key]}:")
            for entry in data[key]:
                count = counted(entry["records"])
                lines.append(f"  {entry['label']}: {count}{examples(entry['examples'])}")
    if data["decisions_changed"]:
        lines.append(f"{w['decisions_changed']}:")
        for move in data["decisions_changed"]:
            count = counted(move["records"])
            lines.append(
                f"  {move['label']}: {move['from_label']} → {move['to_label']}: {count}{examples(move['examples'])}"
            )
    gone = data["left_without_action"]
    if gone["records"]:
        lines.append(w["left_without_action"].format(n=gone["records"]) + examples(gone["examples"]))
    if data["failed"]["records"]:
        lines.append(f"{w['failed']}: {data['failed']['records']}")
        lines.extend(f"  {f['record']} (#{f['evaluation']}): {f['text']}" for f in data["failed"]["examples"])
    if data["examples"]:
        lines.append(f"{w['examples']}:")
    for example in data["examples"]:
        where = w["evaluation"].format(seq=example["evaluation"], as_of=example["as_of"])
        lines.append(f"  {example['record']} ({where})")
        lines.extend(f"    {move['label']}: {move['from_label']} → {move['to_label']}" for move in example["decisions"])
        lines.extend(f"    + {action['label']}" for action in example["added"])
        lines.extend(f"    − {action['label']}" for action in example["removed"])
    return "\n".join(lines)
