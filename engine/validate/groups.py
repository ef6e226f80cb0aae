"""Group decisions and rules: ``group_by`` and ``aggregates``, the portfolio in the playbook language.

A decision or rule with ``group_by`` is made once per group of cases.  It is built in a scope of its own
(its grouping's aggregates as the inputs ``group.NAME``, the decisions of its grouping, the parameters),
so the rest of the checker — conditions, tables, rules, the order — works on it unchanged.  An aggregate's
``where`` and field are read per case: they are built in the case scope.
"""

from __future__ import annotations

from typing import Any

from engine.errors import Location, did_you_mean
from engine.load import Document
from engine.model import AGGREGATE_FUNCTIONS, GROUPINGS, Aggregate, Condition, Decision, InputField
from engine.validate.common import Path_, _listing, _mapping
from engine.validate.rules import Rules

GROUP_PREFIX = "group."


def group_names(spec: Any) -> list[str]:
    """The groupings a decision's or rule's ``group_by`` names, in order (none: it is decided per case)."""
    if not isinstance(spec, dict) or "group_by" not in spec:
        return []
    raw = spec["group_by"]
    names = [raw] if isinstance(raw, str) else [x for x in _listing(raw) if isinstance(x, str)]
    return list(dict.fromkeys(names))


class Groups(Rules):
    level: str | None = None  # the grouping whose decisions and rules are being built; None: the case scope
    case_decisions: frozenset[str] = frozenset()
    case_inputs: frozenset[str] = frozenset()

    def __init__(self, doc: Document) -> None:
        super().__init__(doc)
        self.group_decisions: dict[str, list[str]] = {}  # a group decision -> its groupings
        self.case_models: dict[str, Decision] = {}  # the per-case decisions, once built

    def resolve_var(self, var: str, path: Path_) -> tuple[str, tuple[Any, ...] | None] | None:
        found = self.var_type(var)
        if found is not None:
            return found
        if self.level is not None and var.startswith(GROUP_PREFIX):
            names = [name[len(GROUP_PREFIX) :] for name in self.inputs]
            wanted = var[len(GROUP_PREFIX) :]
            self.report(
                path,
                "unknown_aggregate",
                f"no aggregate '{wanted}' is declared for group_by {self.level}{did_you_mean(wanted, names)}",
                key=True,
                about=("input", var),
            )
            return None
        if self.level is not None and (var in self.case_decisions or var in self.case_inputs):
            self.report(
                path,
                "wrong_level",
                f"'{var}' is decided per case; a decision made per {self.level} reads it through an aggregate, "
                f"e.g. aggregates: {{n: {{count: {{where: {{{var}: ...}}}}}}}} and then group.n",
                key=True,
            )
            return None
        if var in self.group_decisions:
            where = ", ".join(self.group_decisions[var])
            here = f"per {self.level}" if self.level is not None else "per case"
            self.report(
                path,
                "wrong_level",
                f"'{var}' is decided once per group ({where}); it cannot be read {here}",
                key=True,
            )
            return None
        return super().resolve_var(var, path)

    # -- aggregates -------------------------------------------------------

    def aggregate(self, name: str, spec: dict[str, Any], path: Path_) -> Aggregate | None:
        """One aggregate, built in the case scope (its field and ``where`` are read per case)."""
        functions = [f for f in AGGREGATE_FUNCTIONS if f in spec]
        if len(functions) != 1:
            said = "none" if not functions else " and ".join(functions)
            self.report(
                path,
                "aggregate_function",
                f"aggregate '{name}' needs exactly one of {', '.join(AGGREGATE_FUNCTIONS)}; it has {said}",
                key=True,
            )
            return None
        function = functions[0]
        field: str | None = None
        raw_where = spec.get("where")
        if function in ("count", "share"):
            inner = _mapping(spec[function])
            if "where" in inner:
                if raw_where is not None:
                    self.report(
                        (*path, "where"),
                        "aggregate_function",
                        f"aggregate '{name}' has a where inside {function} and another beside it; keep one",
                        key=True,
                    )
                    return None
                raw_where, where_path = inner["where"], (*path, function, "where")
            else:
                where_path = (*path, "where")
        else:
            field = str(spec[function])
            where_path = (*path, "where")
            found = self.resolve_var(field, (*path, function))
            if found is None:
                return None
            if function not in ("distinct", "value") and found[0] != "number":
                self.report(
                    (*path, function),
                    "aggregate_type",
                    f"{function} needs a number; '{field}' is of type {found[0]}",
                )
                return None
            if function == "value" and found[0] == "list":
                self.report((*path, function), "aggregate_type", f"value needs one value per case; '{field}' is a list")
                return None
        where: Condition | None = None
        if raw_where is not None:
            where = self.condition(raw_where, where_path)
            if where is None:
                return None
        label = self.text(spec.get("label"), (*path, "label")) or dict.fromkeys(self.languages, name)
        return Aggregate(name, function, field, where, label, self.doc.at(path, key=True))

    def group_field(self, name: str, path: Path_) -> str | None:
        """The case variable a grouping groups by: a named grouping, a case input, or a per-case decision."""
        field = GROUPINGS.get(name, name)
        if field in self.inputs or field in self.case_decisions:
            return field
        known = [*GROUPINGS, *self.inputs, *self.case_decisions]
        if name in GROUPINGS:
            said = f"group_by {name} groups by the case field '{field}', which the playbook does not declare"
        else:
            said = (
                f"group_by '{name}' is no grouping ({', '.join(GROUPINGS)}) nor case field{did_you_mean(name, known)}"
            )
        self.report(path, "unknown_group_field", said)
        return None

    def level_aggregates(
        self, level: str, entries: list[tuple[Path_, dict[str, Any]]]
    ) -> tuple[dict[str, Aggregate], dict[str, InputField]]:
        """The aggregates one grouping declares (across its decisions and rules), and the inputs they are."""
        aggregates: dict[str, Aggregate] = {}
        inputs: dict[
            str, InputField
        ] = {}  # every name declared, built or not: a use of a broken one is no second problem
        raw_seen: dict[str, tuple[Any, Path_]] = {}
        for path, spec in entries:
            for name, raw in _mapping(spec.get("aggregates")).items():
                agg_path: Path_ = (*path, "aggregates", name)
                if not isinstance(raw, dict) or self.is_broken(agg_path):
                    continue
                first = raw_seen.get(str(name))
                if first is not None:
                    if first[0] != raw:
                        where = self.doc.at(first[1], key=True)
                        self.report(
                            agg_path,
                            "aggregate_conflict",
                            f"aggregate '{name}' of group_by {level} is defined differently at line {where.line}",
                            key=True,
                        )
                    continue
                raw_seen[str(name)] = (raw, agg_path)
                built = self.aggregate(str(name), raw, agg_path)
                if built is not None:
                    aggregates[built.name] = built
                where = self.doc.at(agg_path, key=True)
                inputs[GROUP_PREFIX + str(name)] = self.aggregate_input(GROUP_PREFIX + str(name), built, where)
        return aggregates, inputs

    def aggregate_input(self, name: str, agg: Aggregate | None, where: Location) -> InputField:
        """An aggregate as its grouping's input: a number, or (``value``) of its field's type and values."""
        if agg is not None and agg.function == "value" and agg.field is not None:
            kind, values = self.var_type(agg.field) or ("string", None)
            owner = self.inputs.get(agg.field) or self.case_models.get(agg.field)
            labels = owner.value_labels if owner is not None else {}
            return InputField(name, kind, values, agg.label, None, where, labels)
        least = 0 if agg is not None and agg.function in ("count", "share", "distinct") else None
        return InputField(name, "number", None, agg.label if agg else {}, None, where, minimum=least)
