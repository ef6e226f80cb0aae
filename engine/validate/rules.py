"""Rules and actions: what rules set and recommend, and ``for_each`` rules made one per item."""

from __future__ import annotations

from typing import Any

from engine.errors import did_you_mean
from engine.model import (
    Action,
    AllOf,
    Atom,
    Condition,
    Decision,
    InputField,
    Literal,
    Output,
    Recommend,
    Rule,
    Source,
    Text,
    ValueOf,
)
from engine.validate.common import (
    Path_,
    _fmt,
    _listing,
    _mapping,
    _subject,
)
from engine.validate.tables import (
    Tables,
)


class Rules(Tables):
    def build_action(self, name: str, spec: dict[str, Any]) -> Action | None:
        path: Path_ = ("actions", name)
        label = self.text(spec.get("label"), (*path, "label"))
        source = self.source(spec.get("source"), (*path, "source"))
        if label is None or source is None:
            return None
        labels = spec.get("param_labels")
        param_labels = {
            str(param): text
            for param, raw in (labels.items() if isinstance(labels, dict) else ())
            if (text := self.text(raw, (*path, "param_labels", str(param)))) is not None
        }
        return Action(
            id=name,
            label=label,
            explain=self.text(spec.get("explain"), (*path, "explain")),
            source=source,
            location=self.doc.at(path, key=True),
            param_labels=param_labels,
        )

    def build_rules(self, raw: Any, decisions: dict[str, Decision], actions: dict[str, Action]) -> list[Rule]:
        rules: list[Rule] = []
        seen: dict[str, int] = {}
        expanded: dict[str, list[str]] = {}  # the id of an item of a for_each rule -> that rule
        for spec in raw if isinstance(raw, list) else []:
            listed = self.var_type(str(spec.get("for_each"))) if isinstance(spec, dict) and "for_each" in spec else None
            for item in listed[1] or () if listed is not None and listed[0] == "list" else ():
                expanded.setdefault(_item_rule_id(str(spec.get("id")), item), []).append(str(spec.get("id")))
        for index, spec in enumerate(raw if isinstance(raw, list) else []):
            path: Path_ = ("rules", index)
            if not isinstance(spec, dict) or self.is_broken(path):
                continue
            rule_id = str(spec.get("id"))
            if rule_id in seen:
                self.report(
                    (*path, "id"),
                    "duplicate_id",
                    f"rule id '{rule_id}' is used twice (first at rule {seen[rule_id] + 1})",
                )
            for other in expanded.get(rule_id, ()) if rule_id not in seen else ():
                self.report(
                    (*path, "id"),
                    "duplicate_id",
                    f"rule id '{rule_id}' is also the id of an item of for_each rule '{other}'",
                )
            seen.setdefault(rule_id, index)
            then = _mapping(spec.get("then"))
            sets: dict[str, Output] = {}
            ok = True
            for_each = self.for_each(spec, path)
            if for_each is None and "for_each" in spec:
                ok = False
            if for_each is not None and then.get("set"):
                self.report(
                    (*path, "then", "set"),
                    "for_each_misuse",
                    "a for_each rule recommends, once per item; it cannot set a decision",
                    key=True,
                )
                ok = False
            for target, raw_value in _mapping(then.get("set")).items():
                set_path: Path_ = (*path, "then", "set", target)
                if target not in self.decision_specs:
                    self.report(
                        set_path,
                        "unknown_decision",
                        f"unknown decision '{target}'{did_you_mean(str(target), self.decision_specs)}",
                        key=True,
                        about=("decision", str(target)),
                    )
                    ok = False
                    continue
                if self.decision_specs[target].get("rows"):
                    self.report(
                        set_path,
                        "decision_has_table",
                        f"decision '{target}' is made by its table; a rule cannot also set it",
                        key=True,
                        about=("decision", str(target)),
                    )
                    ok = False
                    continue
                out = self.output(raw_value, str(target), set_path)
                if out is None:
                    ok = False
                else:
                    sets[str(target)] = out
            recommends: list[Recommend] = []
            for i, rec in enumerate(_listing(then.get("recommend"))):
                rec_path: Path_ = (*path, "then", "recommend", i)
                if not isinstance(rec, dict):
                    ok = False
                    continue
                action = str(rec.get("action"))
                templated = for_each is not None and "{item}" in action
                missing = [
                    item
                    for item in (for_each[1] if templated and for_each else ())
                    if _each(action, item) not in actions
                ]
                if templated and missing:
                    first = _each(action, missing[0])
                    self.report(
                        (*rec_path, "action"),
                        "unknown_action",
                        f"unknown action '{first}' (for the item {_fmt(missing[0])} of '{spec.get('for_each')}')"
                        f"{did_you_mean(first, actions)}",
                        about=("action", first),
                    )
                    ok = False
                elif not templated and action not in actions:
                    self.report(
                        (*rec_path, "action"),
                        "unknown_action",
                        f"unknown action '{action}'{did_you_mean(action, actions)}",
                        about=("action", action),
                    )
                    ok = False
                params: dict[str, Output] = {}
                for pname, pvalue in _mapping(rec.get("params")).items():
                    if isinstance(pvalue, dict) and "item_of" in pvalue:
                        if for_each is None or str(pvalue["item_of"]) != spec.get("for_each"):
                            self.report(
                                (*rec_path, "params", pname, "item_of"),
                                "for_each_misuse",
                                "'item_of' stands for the item of a rule with 'for_each'; this rule has none"
                                if for_each is None
                                else f"'item_of' names this rule's 'for_each' list, '{spec.get('for_each')}'",
                            )
                            ok = False
                        else:
                            params[str(pname)] = _ITEM
                        continue
                    out = self.output(pvalue, "", (*rec_path, "params", pname))
                    if out is None:
                        ok = False
                    else:
                        params[str(pname)] = out
                recommends.append(Recommend(action, params, self.loc(rec_path)))
            when = self.condition(spec["when"], (*path, "when")) if "when" in spec else None
            label = self.text(spec.get("label"), (*path, "label"))
            source = self.source(spec.get("source"), (*path, "source"))
            if not ok or label is None or source is None or ("when" in spec and when is None):
                continue
            if for_each is not None:
                rules.extend(self.each_item(spec, path, for_each, when, label, source, recommends, decisions))
                continue
            rules.append(
                Rule(
                    id=rule_id,
                    index=index,
                    label=label,
                    explain=self.text(spec.get("explain"), (*path, "explain")),
                    source=source,
                    when=when,
                    sets=sets,
                    recommends=tuple(recommends),
                    location=self.loc(path),
                )
            )
        for name, spec in self.decision_specs.items():
            if not spec.get("rows") and not any(name in rule.sets for rule in rules) and name in decisions:
                self.report(
                    ("decisions", name),
                    "decision_never_set",
                    f"decision '{name}' has no rows and no rule sets it",
                    key=True,
                    about=("decision", name),
                )
        return rules

    def for_each(self, spec: dict[str, Any], path: Path_) -> tuple[str, tuple[Any, ...]] | None:
        """The list a for_each rule goes through, and its items; None, reported, when it names no list."""
        if "for_each" not in spec:
            return None
        var = str(spec["for_each"])
        found = self.resolve_var(var, (*path, "for_each"))
        if found is None:
            return None
        kind, values = found
        if kind != "list" or not values:
            self.report(
                (*path, "for_each"),
                "for_each_type",
                f"'for_each' goes through the items of a list; '{var}' is of type {kind}",
                about=_subject(var),
            )
            return None
        return var, values

    def each_item(
        self,
        spec: dict[str, Any],
        path: Path_,
        for_each: tuple[str, tuple[Any, ...]],
        when: Condition | None,
        label: Text,
        source: Source,
        recommends: list[Recommend],
        decisions: dict[str, Decision],
    ) -> list[Rule]:
        """A for_each rule as one rule per item: its condition and "the list includes the item", its actions
        with the item put in; each is decided by durable-rules and traced on its own."""
        var, items = for_each
        owner: Decision | InputField | None = decisions.get(var) or self.inputs.get(var)
        where = self.loc((*path, "for_each"))
        explain = self.text(spec.get("explain"), (*path, "explain"))
        out = []
        for item in items:
            labels = owner.value_labels.get(str(item)) if owner is not None else None
            includes = Atom(var, "contains", item, f"contains {_fmt(item)}", where, (None,))
            out.append(
                Rule(
                    id=_item_rule_id(str(spec["id"]), item),
                    index=path[1] if isinstance(path[1], int) else 0,
                    label={
                        lang: f"{text}{':' if lang == 'zh' else ': '}{labels.get(lang, item) if labels else item}"
                        for lang, text in label.items()
                    },
                    explain=explain,
                    source=source,
                    when=includes if when is None else AllOf((includes, when)),
                    sets={},
                    recommends=tuple(
                        Recommend(
                            _each(rec.action, item),
                            {k: Literal(item) if v is _ITEM else v for k, v in rec.params.items()},
                            rec.location,
                        )
                        for rec in recommends
                    ),
                    location=self.loc(path),
                    for_each=(str(spec["id"]), var, item),
                )
            )
        return out


_ITEM = ValueOf("$item")


"""In a for_each rule's action parameters, until each item is put in: the item."""


def _item_rule_id(rule_id: str, item: Any) -> str:
    """The id of a for_each rule's rule for one item: ``market_action`` and 4 give ``market_action_4``."""
    return f"{rule_id}_{item}"


def _each(action: str, item: Any) -> str:
    """A for_each rule's action id for one item (``market_action_{item}`` → ``market_action_4``)."""
    return action.replace("{item}", str(item))
