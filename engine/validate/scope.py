"""Names and scope: the parameters and inputs, every name a playbook may use, and the root-cause
folding of the problems that follow from a misspelt or misfit one."""

from __future__ import annotations

import difflib
from typing import Any

from engine.errors import Problem, did_you_mean
from engine.load import Document
from engine.model import (
    InputField,
    Parameter,
    Source,
    Text,
)
from engine.validate.common import (
    _PARAMETER_MISFITS,
    _TEXT_KEYS,
    SECTIONS,
    Path_,
    Subject,
    _fmt,
    _mapping,
    _path_text,
    _type_name,
)
from engine.validate.document import (
    DocumentChecker,
)

_WEEKS_DERIVATIONS = ("weeks_until", "weeks_since")  # derived from one date input, against as_of


class Scope(DocumentChecker):
    def __init__(self, doc: Document) -> None:
        super().__init__(doc)
        self.languages: tuple[str, ...] = ("zh", "en")
        self.parameters: dict[str, Parameter] = {}
        self.inputs: dict[str, InputField] = {}
        self.decision_specs: dict[str, dict[str, Any]] = {}
        self.param_operands: dict[Path_, str] = {}  # where a {param: name} was read, and the name
        self.param_roots: dict[str, int] = {}  # a parameter whose value misfits: its problem's index
        self.folded: dict[int, list[Problem]] = {}  # a root problem's index: the problems that follow from it

    def report(self, path: Path_, code: str, message: str, *, key: bool = False, about: Subject | None = None) -> None:
        name = self.param_operands.get(path)
        if name is None or code not in _PARAMETER_MISFITS:
            super().report(path, code, message, key=key, about=about)
            return
        # A parameter's value that does not fit where it is used: one problem, at the parameter.
        use = Problem(self.doc.at(path, key=key), code, message)
        root = self.param_roots.get(name)
        if root is None:
            value = self.parameters[name].value
            root = self.param_roots[name] = len(self.problems)
            super().report(
                ("parameters", name, "value"),
                "parameter_value",
                f"parameter '{name}' is {_fmt(value)} ({_type_name(value)}), which does not fit where it is used: "
                f"line {use.location.line}: {message}",
                about=("parameter", name),
            )
        self.folded.setdefault(root, []).append(use)

    def fold(self) -> list[Problem]:
        """The problems, each that follows from another folded under that root, ranked: the most fundamental first.

        What follows from what: a missing key from the misspelt key beside it; the uses of the names a
        misspelt section defines (``aactions:``: every ``unknown_action``); whatever concerns an entry
        (a parameter, input, decision, rule, action) or a row whose own keys are wrong, or uses its name;
        the uses of a parameter whose value misfits (folded as they are reported); the later uses of
        one unknown name.
        """
        schema_count = getattr(self, "schema_count", 0)
        data = self.doc.data if isinstance(self.doc.data, dict) else {}
        root_of: dict[int, int] = {}
        missing = {
            (p.location.path, about[1]): i
            for i, (p, about) in enumerate(zip(self.problems[:schema_count], self.subjects, strict=False))
            if p.code == "missing_key" and about is not None
        }
        scopes: list[tuple[int, Path_ | None, set[Subject]]] = []  # a schema problem: what follows from it
        rules_misspelt = False
        for i, problem in enumerate(self.problems[:schema_count]):
            path = problem.location.path
            if problem.code == "unknown_key" and path:
                wanted = [key for (parent, key) in missing if parent == path[:-1]]
                for key in difflib.get_close_matches(str(path[-1]), wanted, n=1, cutoff=0.6):
                    root_of[missing[(path[:-1], key)]] = i
            if problem.code == "unknown_key" and len(path) == 1:
                section = difflib.get_close_matches(str(path[0]), list(SECTIONS), n=1, cutoff=0.6)
                if section:
                    kind = SECTIONS[section[0]]
                    names = data.get(path[0])
                    scopes.append((i, None, {(kind, str(n)) for n in names} if isinstance(names, dict) else set()))
                    rules_misspelt = rules_misspelt or kind == "rule"
            elif problem.code == "unknown_key" and (self.subjects[i] is None or self.subjects[i] in _TEXT_KEYS):
                continue  # a key that means nothing here, or only text: nothing else follows from it
            elif len(path) >= 2 and path[0] in SECTIONS:
                depth = len(path) - 1 if problem.code == "unknown_key" else len(path)  # the mapping at fault
                if depth <= 2:  # an entry's own keys
                    scopes.append((i, path[:2], {(SECTIONS[str(path[0])], str(path[1]))}))
                else:  # a row's or a rule's part: only what lies under it
                    scopes.append((i, path[: min(depth, 4)], set()))
        for i in range(schema_count, len(self.problems)):
            about, path = self.subjects[i], self.problems[i].location.path
            for root, prefix, subjects in scopes:
                if (
                    about in subjects
                    or (prefix is not None and path[: len(prefix)] == prefix)
                    or (rules_misspelt and prefix is None and self.problems[i].code == "decision_never_set")
                ):
                    root_of[i] = root
                    break
        first_use: dict[tuple[str, Subject], int] = {}
        for i in sorted(range(schema_count, len(self.problems)), key=lambda i: self.problems[i].sort_key()):
            about = self.subjects[i]
            if i in root_of or about is None or not self.problems[i].code.startswith("unknown_"):
                continue
            # one unknown name, written the same way at several places: reported once, at the first
            root_of.setdefault(i, first_use.setdefault((self.problems[i].code, about), i))
            if root_of[i] == i:
                del root_of[i]
        for root, uses in self.folded.items():
            for use in uses:
                self.problems.append(use)
                root_of[len(self.problems) - 1] = root
        consequences: dict[int, list[Problem]] = {}
        for i, root in root_of.items():
            while root in root_of:  # a root that is itself a consequence hands its own on
                root = root_of[root]
            consequences.setdefault(root, []).append(self.problems[i])
        out = []
        for i, problem in enumerate(self.problems):
            if i in root_of:
                continue
            rank = (0 if len(problem.location.path) <= 1 else 1) if i < schema_count else 2 if i in consequences else 3
            followers = tuple(sorted(consequences.get(i, ()), key=Problem.sort_key))
            out.append(Problem(problem.location, problem.code, problem.message, followers, rank))
        return out

    def items(self, data: dict[str, Any], section: str) -> list[tuple[str, dict[str, Any]]]:
        value = data.get(section)
        if not isinstance(value, dict):
            return []
        return [
            (str(name), spec)
            for name, spec in value.items()
            if isinstance(spec, dict) and not self.is_broken((section, name))
        ]

    def text(self, value: Any, path: Path_) -> Text | None:
        if not isinstance(value, dict):
            return None
        for lang in self.languages:
            if lang not in value:
                self.report(path, "missing_translation", f"{_path_text(path)} has no '{lang}' text")
        return {str(k): str(v) for k, v in value.items()}

    def source(self, value: Any, path: Path_) -> Source | None:
        if not isinstance(value, dict):
            return None
        note = self.text(value.get("note"), (*path, "note")) if "note" in value else None
        if "policy" in value and "text" in value:
            where = self.doc.at((*path, "text"))
            return Source(policy=str(value["policy"]), text=str(value["text"]), note=note, location=where)
        if "guide" in value and "quote" in value:
            where = self.doc.at((*path, "quote"))
            return Source(guide=str(value["guide"]), quote=str(value["quote"]), note=note, location=where)
        return None

    # -- parameters and inputs ------------------------------------------------

    def build_parameter(self, name: str, spec: dict[str, Any]) -> None:
        path: Path_ = ("parameters", name)
        self.parameters[name] = Parameter(
            name=name,
            value=spec.get("value"),
            label=self.text(spec.get("label"), (*path, "label")) or {},
            description=self.text(spec.get("description"), (*path, "description")),
            source=self.source(spec.get("source"), (*path, "source")),
            location=self.doc.at(path, key=True),
        )

    def build_input(self, name: str, spec: dict[str, Any]) -> None:
        path: Path_ = ("inputs", name)
        kind = str(spec.get("type"))
        values = spec.get("values") if isinstance(spec.get("values"), list) else None
        if kind in ("enum", "list") and not values:
            self.report(path, "missing_values", f"input '{name}' is of type {kind} and needs its 'values'", key=True)
        derive = spec.get("derive") if isinstance(spec.get("derive"), dict) else None
        how: tuple[str, tuple[str, ...]] | None = None
        weeks = [key for key in _WEEKS_DERIVATIONS if derive and key in derive]
        if derive and weeks:
            how = (weeks[0], (str(derive[weeks[0]]),))
        elif derive and isinstance(derive.get("ratio"), list):
            how = ("ratio", tuple(str(x) for x in derive["ratio"]))
        self.inputs[name] = InputField(
            name=name,
            type=kind,
            values=tuple(values) if isinstance(values, list) else None,
            label=self.text(spec.get("label"), (*path, "label")) or {},
            derive=how,
            location=self.doc.at(path, key=True),
            value_labels=self.value_labels(name, values, spec, path),
        )

    def value_labels(self, name: str, values: Any, spec: dict[str, Any], path: Path_) -> dict[str, Text]:
        """An input's or a decision's ``value_labels``, each naming one of its values."""
        value_labels: dict[str, Text] = {}
        for value, labels in _mapping(spec.get("value_labels")).items():
            label_path: Path_ = (*path, "value_labels", value)
            if values and str(value) not in [str(v) for v in values]:
                self.report(
                    label_path,
                    "unknown_value",
                    f"'{value}' is not a value of '{name}'{did_you_mean(str(value), [str(v) for v in values])}",
                    key=True,
                )
            text = self.text(labels, label_path)
            if text:
                value_labels[str(value)] = text
        return value_labels

    def check_derive(self, name: str, spec: dict[str, Any]) -> None:
        field = self.inputs[name]
        if field.derive is None:
            return
        how, sources = field.derive
        path: Path_ = ("inputs", name, "derive", how)
        if field.type != "number":
            self.report(path, "wrong_input_type", f"'{name}' is derived as a number; declare it type: number")
        wanted = "date" if how in _WEEKS_DERIVATIONS else "number"
        for i, source_name in enumerate(sources):
            where: Path_ = path if how in _WEEKS_DERIVATIONS else (*path, i)
            source = self.inputs.get(source_name)
            if source is None:
                self.report(
                    where,
                    "unknown_input",
                    f"unknown input '{source_name}'{did_you_mean(source_name, self.inputs)}",
                    about=("input", source_name),
                )
            elif source.type != wanted or source.derive is not None:
                self.report(
                    where,
                    "wrong_input_type",
                    f"'{source_name}' must be a given (not derived) input of type {wanted} for {how}",
                )

    # -- variables -----------------------------------------------------------

    def var_type(self, var: str) -> tuple[str, tuple[Any, ...] | None] | None:
        """(type, values) of an input or decision, or None when the name is unknown."""
        if "." in var:
            field = self.inputs.get(var)
            return (field.type, field.values) if field else None
        spec = self.decision_specs.get(var)
        if spec is None:
            return None
        return self.decision_type(spec), tuple(spec["values"]) if isinstance(spec.get("values"), list) else None

    @staticmethod
    def decision_type(spec: dict[str, Any]) -> str:
        if "type" in spec:
            return str(spec["type"])
        if spec.get("hit_policy") == "collect":
            return "list"
        return "enum" if "values" in spec else "string"

    def resolve_var(self, var: str, path: Path_) -> tuple[str, tuple[Any, ...] | None] | None:
        found = self.var_type(var)
        if found is None:
            if "." in var:
                self.report(
                    path,
                    "unknown_input",
                    f"unknown input '{var}'{did_you_mean(var, self.inputs)}",
                    key=True,
                    about=("input", var),
                )
            else:
                self.report(
                    path,
                    "unknown_decision",
                    f"unknown decision '{var}'{did_you_mean(var, self.decision_specs)}",
                    key=True,
                    about=("decision", var),
                )
        return found
