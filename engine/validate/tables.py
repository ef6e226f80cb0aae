"""Decision tables: hit policies, rows, outputs and the ``otherwise`` row."""

from __future__ import annotations

from typing import Any

from engine.errors import did_you_mean
from engine.model import (
    AllOf,
    Condition,
    Decision,
    Literal,
    Not,
    Output,
    Row,
    Source,
    ValueOf,
)
from engine.validate.common import (
    Path_,
    _listing,
    _subject,
)
from engine.validate.conditions import (
    Conditions,
)


class Tables(Conditions):
    # -- outputs -----------------------------------------------------------

    def output(self, raw: Any, target: str, path: Path_, *, collect_item: bool = False) -> Output | None:
        """A row's ``then`` or a rule's ``set``/param value, checked against the target decision."""
        if isinstance(raw, dict) and "item_of" in raw:
            self.report((*path, "item_of"), "for_each_misuse", "'item_of' is an action parameter of a for_each rule")
            return None
        if isinstance(raw, dict) and "value_of" in raw:
            var = str(raw["value_of"])
            found = self.var_type(var)
            if found is None:
                code = "unknown_input" if "." in var else "unknown_decision"
                pool = self.inputs if "." in var else self.decision_specs
                self.report(
                    (*path, "value_of"),
                    code,
                    f"unknown {'input' if '.' in var else 'decision'} '{var}'{did_you_mean(var, pool)}",
                    about=_subject(var),
                )
                return None
            return ValueOf(var)
        resolved = self.operand(raw, path)
        if resolved is None:
            return None
        value = resolved[0]
        if not target:
            return Literal(value)
        spec = self.decision_specs.get(target, {})
        kind = self.decision_type(spec)
        values = tuple(spec["values"]) if isinstance(spec.get("values"), list) else None
        if kind == "list" and not collect_item:
            if not isinstance(value, list):
                self.report(
                    path,
                    "operand_type",
                    f"decision '{target}' is a list; give a list of values",
                    about=_subject(target),
                )
                return None
            verdicts = [self.check_value(target, v, "enum", values, path) for v in value]  # report every bad one
            ok = all(verdicts)
            return Literal(list(value)) if ok else None
        if isinstance(value, list):
            self.report(
                path, "operand_type", f"decision '{target}' takes one value, not a list", about=_subject(target)
            )
            return None
        return (
            Literal(value)
            if self.check_value(target, value, kind if kind != "list" else "enum", values, path)
            else None
        )

    # -- decisions, rules, actions --------------------------------------------

    def build_decision(self, name: str, spec: dict[str, Any]) -> Decision | None:
        path: Path_ = ("decisions", name)
        kind = self.decision_type(spec)
        values = spec.get("values") if isinstance(spec.get("values"), list) else None
        hit_policy = str(spec.get("hit_policy", "unique"))
        if kind in ("enum", "list") and not values:
            self.report(path, "missing_values", f"decision '{name}' is of type {kind} and needs its 'values'", key=True)
        if hit_policy == "collect" and kind != "list":
            self.report(
                (*path, "hit_policy"), "hit_policy_type", f"'collect' gathers a list; declare '{name}' type: list"
            )
        if hit_policy == "priority" and not values:
            self.report(
                (*path, "hit_policy"), "hit_policy_type", "'priority' ranks outputs by the order of 'values'; list them"
            )
        value_labels = self.value_labels(name, values, spec, path)
        source = self.source(spec.get("source"), (*path, "source"))
        rows: list[Row] = []
        seen: dict[str, int] = {}
        for index, row in enumerate(_listing(spec.get("rows"))):
            row_path: Path_ = (*path, "rows", index)
            if not isinstance(row, dict) or self.is_broken(row_path):
                continue
            row_id = str(row.get("id"))
            if row_id in seen:
                self.report(
                    (*row_path, "id"),
                    "duplicate_id",
                    f"row id '{row_id}' is used twice in '{name}' (first at row {seen[row_id] + 1})",
                )
            seen.setdefault(row_id, index)
            when = self.condition(row["when"], (*row_path, "when")) if "when" in row else None
            then = self.output(row.get("then"), name, (*row_path, "then"), collect_item=hit_policy == "collect")
            label = self.text(row.get("label"), (*row_path, "label"))
            otherwise = row.get("otherwise") is True
            if otherwise:
                when = self.otherwise(spec, hit_policy, index, rows, row_path)
                if when is None:
                    continue
            if then is None or label is None or ("when" in row and when is None):
                continue
            rows.append(
                Row(
                    id=row_id,
                    index=index,
                    label=label,
                    explain=self.text(row.get("explain"), (*row_path, "explain")),
                    source=self.source(row.get("source"), (*row_path, "source")) or source or Source(),
                    when=when,
                    then=then,
                    location=self.loc(row_path),
                    otherwise=otherwise,
                )
            )
        label = self.text(spec.get("label"), (*path, "label"))
        if source is None or label is None:
            return None
        return Decision(
            name=name,
            label=label,
            description=self.text(spec.get("description"), (*path, "description")),
            source=source,
            type=kind,
            values=tuple(values) if isinstance(values, list) else None,
            value_labels=value_labels,
            hit_policy=hit_policy,
            rows=tuple(rows),
            location=self.doc.at(path, key=True),
            output=bool(spec.get("output", False)),
        )

    def otherwise(
        self, spec: dict[str, Any], hit_policy: str, index: int, before: list[Row], path: Path_
    ) -> Condition | None:
        """The condition of an otherwise row: every earlier row false (not unknown), or None, reported, when
        the row is misplaced."""
        key: Path_ = (*path, "otherwise")
        rows = _listing(spec.get("rows"))
        if hit_policy != "unique":
            self.report(
                key,
                "otherwise_row",
                f"'otherwise' is for unique tables; under '{hit_policy}' put a row without 'when' last",
                key=True,
            )
        elif "when" in rows[index]:
            self.report(
                (*path, "when"),
                "otherwise_row",
                "an otherwise row has no 'when': it fires when every other row is false",
                key=True,
            )
        elif any(isinstance(r, dict) and r.get("otherwise") is True for r in rows[:index]):
            self.report(key, "otherwise_row", "a table has at most one otherwise row", key=True)
        elif any(isinstance(r, dict) and r.get("otherwise") is True for r in rows[index + 1 :]):
            pass  # reported at the second one
        elif index != len(rows) - 1:
            self.report(key, "otherwise_row", "the otherwise row must be the table's last row", key=True)
        elif any(row.when is None for row in before) or len(before) != index:
            unconditional = next((row.id for row in before if row.when is None), None)
            if unconditional is not None:
                self.report(
                    key,
                    "otherwise_row",
                    f"row '{unconditional}' has no 'when' and always matches, so the otherwise row never fires",
                    key=True,
                )
            return None  # an earlier row is in error (reported): its negation cannot be built
        elif not before:
            self.report(key, "otherwise_row", "an otherwise row needs other rows before it", key=True)
        else:
            negations = tuple(Not(row.when) for row in before if row.when is not None)
            return negations[0] if len(negations) == 1 else AllOf(negations)
        return None
