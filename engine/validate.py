"""Loaded YAML -> a checked :class:`~engine.model.Playbook`, or every problem at once.

Two passes: the JSON Schema in ``schemas/playbook.schema.json`` checks shape, then
this module resolves names (inputs, decisions, parameters, actions, values),
checks intervals and operator types, and orders the decision graph.  Each leaf
check says what is wrong; the walker attaches where, from the YAML marks.
Nothing here runs the playbook.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Callable, Hashable, Iterable, Iterator
from contextvars import ContextVar
from functools import cache
from pathlib import Path
from typing import Any, cast

import jsonschema
from jsonschema.exceptions import ValidationError, best_match

from engine.conditions import COMPARE_OPS, COMPARISON_KEYS, OPERATORS, OPPOSITE_KEYS, durable_safe, numbers_of
from engine.errors import Location, PlaybookError, Problem, did_you_mean
from engine.load import Document, collector_paused, load_file, load_text
from engine.model import (
    Action,
    AllOf,
    AnyOf,
    Atom,
    Compare,
    Condition,
    Decision,
    InputField,
    Interval,
    Literal,
    Node,
    Not,
    Output,
    Parameter,
    Playbook,
    Recommend,
    Row,
    Rule,
    Source,
    Text,
    ValueOf,
)

__all__ = [
    "SCHEMAS_DIR",
    "DocumentChecker",
    "build_playbook",
    "load_playbook",
    "load_playbook_text",
    "load_schema",
    "playbook_schema",
]

_ENGINE_DIR = Path(__file__).resolve().parent
# A wheel ships the schemas inside the engine package (pyproject.toml); a checkout keeps them beside it.
SCHEMAS_DIR = next(
    (d for d in (_ENGINE_DIR / "schemas", _ENGINE_DIR.parent / "schemas") if d.is_dir()), _ENGINE_DIR.parent / "schemas"
)

# durable-rules allows 255 properties per message; leave room for node, id and sid.
MAX_NODE_PROPERTIES = 240
# durable-rules allows 4096 rules per ruleset; every question adds one catch-all rule.
MAX_DURABLE_RULES = 4000
QUESTION_CHUNK = 16
"""Members asked about in one fact.  durable-rules fails with error 303 (its match stack, about 64
deep) when more of one fact's partial matches are pending at once: 66 interval rows on one number
did (``bench/scaling.py --shape band``).  A node with more members is asked in chunks of this size."""

Path_ = tuple[str | int, ...]
Subject = tuple[str, str]
"""What a problem is about: ("parameter" | "input" | "decision" | "action", name), or ("key", a missing key)."""

SECTIONS = {"parameters": "parameter", "inputs": "input", "decisions": "decision", "rules": "rule", "actions": "action"}
_TEXT_KEYS = frozenset(("key", k) for k in ("label", "description", "explain", "source", "value_labels", "output"))
_PARAMETER_MISFITS = frozenset({"operand_type", "unknown_value", "number_unreadable"})


@cache
def load_schema(name: str) -> dict[str, Any]:
    """A JSON Schema of ``schemas/`` by file name (``playbook.schema.json``), read once."""
    schema: dict[str, Any] = json.loads((SCHEMAS_DIR / name).read_text(encoding="utf-8"))
    return schema


def playbook_schema() -> dict[str, Any]:
    return load_schema("playbook.schema.json")


def load_playbook(path: str | Path) -> Playbook:
    """Load, check and build a playbook file; raise :class:`PlaybookError` with every problem."""
    return build_playbook(load_file(path))


def load_playbook_text(text: str, file: str = "<string>") -> Playbook:
    return build_playbook(load_text(text, file))


def build_playbook(doc: Document) -> Playbook:
    builder = _Builder(doc)
    with collector_paused():
        playbook = builder.build()
    if builder.problems or playbook is None:
        raise PlaybookError(builder.fold())
    return playbook


def _param_name(raw: Any) -> str | None:
    """The parameter an operand refers to (``{param: name}``), if it does."""
    return str(raw["param"]) if isinstance(raw, dict) and "param" in raw else None


def _path_text(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "the document"


def _mapping(value: Any) -> dict[Any, Any]:
    """``value`` when it is a mapping, else empty: the schema pass reports the wrong shape."""
    return value if isinstance(value, dict) else {}


def _listing(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _subject(var: str) -> Subject:
    return ("input", var) if "." in var else ("decision", var)


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return "nothing" if value is None else type(value).__name__


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# The JSON Schema keywords whose verdict depends only on an instance's shape: its keys, the lengths of
# its lists and the JSON type of each value (an integral float apart), never on a string or a number.
_SHAPE_KEYWORDS = frozenset(
    {
        "$ref", "type", "properties", "additionalProperties", "required", "minProperties", "maxProperties",
        "propertyNames", "items", "prefixItems", "minItems", "maxItems", "anyOf", "oneOf", "allOf", "not",
        "if", "then", "else", "title", "description", "$comment",
    }
)  # fmt: skip
# Where one "#/$defs/name" might mean two things, or one subschema's verdict hang on what its
# neighbours evaluated: no verdict is remembered.
_CONTEXTUAL_KEYWORDS = frozenset(
    {"$id", "$anchor", "$dynamicRef", "$dynamicAnchor", "$recursiveRef", "unevaluatedProperties", "unevaluatedItems"}
)
_DEFS = "#/$defs/"
_RefKey = Callable[[Any], Hashable]
_VERDICTS: ContextVar[tuple[dict[str, _RefKey], set[tuple[str, Hashable]]]] = ContextVar("_VERDICTS")


def _exact(value: Any) -> Hashable:
    """``value`` as a key that tells 1, 1.0 and true apart."""
    if isinstance(value, dict):
        return tuple(((type(k), k), _exact(v)) for k, v in value.items())
    if isinstance(value, list):
        return (list, *map(_exact, value))
    return (type(value), value)


def _shape(value: Any) -> Hashable:
    """``value`` with every string and number reduced to its JSON type (keys kept)."""
    if isinstance(value, dict):
        return tuple(((type(k), k), _shape(v)) for k, v in value.items())
    if isinstance(value, list):
        return (list, *map(_shape, value))
    if isinstance(value, float):
        return (float, value.is_integer())  # JSON Schema counts 1.0 as an integer
    return type(value).__name__


def _keywords_in(schema: Any) -> Iterator[str]:
    if isinstance(schema, dict):
        for keyword, value in schema.items():
            yield keyword
            yield from _keywords_in(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from _keywords_in(value)


def _plan(schema: dict[str, Any]) -> dict[str, _RefKey]:
    defs: dict[str, Any] = schema.get("$defs", {})
    if _CONTEXTUAL_KEYWORDS.intersection(_keywords_in(defs)):
        return {}  # a reference that may lead elsewhere, or a verdict that depends on its neighbours

    def shape_only(subschema: Any, seen: frozenset[str]) -> bool:
        if isinstance(subschema, bool):
            return True
        if not isinstance(subschema, dict) or not _SHAPE_KEYWORDS.issuperset(subschema):
            return False
        parts: list[Any] = []
        for keyword, value in subschema.items():
            if keyword == "$ref":
                name = value[len(_DEFS) :] if isinstance(value, str) and value.startswith(_DEFS) else None
                if name not in defs:
                    return False
                if name not in seen and not shape_only(defs[name], seen | {name}):
                    return False
            elif keyword == "properties":
                parts.extend(value.values())
            elif keyword in ("anyOf", "oneOf", "allOf", "prefixItems"):
                parts.extend(value)
            elif keyword in ("items", "additionalProperties", "not", "if", "then", "else"):
                parts.append(value)
            # propertyNames judges keys, which a shape keeps; the others judge keys, lengths or types
        return all(shape_only(part, seen) for part in parts)

    return {_DEFS + name: _shape if shape_only(sub, frozenset({name})) else _exact for name, sub in defs.items()}


_PLANS: dict[int, tuple[dict[str, Any], dict[str, _RefKey]]] = {}


def _ref_keys(schema: dict[str, Any]) -> dict[str, _RefKey]:
    """For each ``#/$defs/name`` of ``schema``: how to key an instance so that two of one key get one verdict."""
    known = _PLANS.get(id(schema))
    if known is None or known[0] is not schema:
        known = _PLANS[id(schema)] = (schema, _plan(schema))
    return known[1]


_SCHEMA_REF = jsonschema.Draft202012Validator.VALIDATORS["$ref"]


def _remembered_ref(validator: Any, ref: str, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
    """jsonschema's own ``$ref``, not run again on an instance that an earlier one of the same key passed.

    A table's rows are alike: their conditions differ in numbers only, which no condition's schema
    looks at, so after the first row each is settled by a look-up.  Only a pass is remembered; an
    instance that fails is always validated, so every error is jsonschema's, where and as it was.
    """
    keys, passed = _VERDICTS.get()
    key_of = keys.get(ref)
    if key_of is None:
        yield from _SCHEMA_REF(validator, ref, instance, schema)
        return
    key = (ref, key_of(instance))
    if key in passed:
        return
    errors = list(_SCHEMA_REF(validator, ref, instance, schema))
    if not errors:
        passed.add(key)
    yield from errors


_RememberingValidator = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
    jsonschema.Draft202012Validator, validators={"$ref": _remembered_ref}
)


class DocumentChecker:
    """Located reports and the JSON Schema pass for one loaded document.

    Shared by playbooks, playbook tests and mappings, so they all report alike.
    """

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.problems: list[Problem] = []
        self.subjects: list[Subject | None] = []  # per problem: the name it is about, if any
        self.broken: set[Path_] = set()

    # -- reporting -------------------------------------------------------

    def report(self, path: Path_, code: str, message: str, *, key: bool = False, about: Subject | None = None) -> None:
        self.problems.append(Problem(self.doc.at(path, key=key), code, message))
        self.subjects.append(about)

    def loc(self, path: Path_) -> Location:
        return self.doc.at(path)

    def is_broken(self, path: Path_) -> bool:
        return any(path[: len(b)] == b for b in self.broken)

    # -- schema pass -----------------------------------------------------

    def schema_pass(self, data: Any, schema: dict[str, Any]) -> None:
        validator = _RememberingValidator(schema)
        verdicts = _VERDICTS.set((_ref_keys(schema), set()))
        try:
            for error in validator.iter_errors(data):
                self.schema_problem(error)
        finally:
            _VERDICTS.reset(verdicts)
        self.schema_count = len(self.problems)

    def schema_problem(self, error: ValidationError) -> None:
        if error.validator == "oneOf" and self.alternatives_problem(error):
            return
        if error.validator in ("anyOf", "oneOf") and error.context:
            # The alternative of the right type says most: "unknown key 'frm'" beats "should be text".
            fitting = [e for e in error.context if not (e.validator == "type" and not e.relative_path)]
            deepest = best_match(fitting or error.context)
            if deepest is not None:
                self.schema_problem(deepest)
                return
        path: Path_ = tuple(error.absolute_path)
        if error.validator != "additionalProperties":  # an unknown key spoils only itself
            self.broken.add(path)
        where = _path_text(path)
        validator = error.validator
        schema = error.schema if isinstance(error.schema, dict) else {}
        if validator == "additionalProperties" and isinstance(error.instance, dict):
            known = list(schema.get("properties", {}))
            extra = [k for k in error.instance if k not in known]
            for key in extra:
                self.broken.add((*path, key))
                hint = did_you_mean(key, known)
                close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
                if not known:
                    self.report((*path, key), "unknown_key", f"'{key}' is not allowed at {where}", key=True)
                else:
                    self.report(
                        (*path, key),
                        "unknown_key",
                        f"unknown key '{key}' at {where}{hint}; allowed: {', '.join(known)}",
                        key=True,
                        about=("key", close[0]) if close else None,
                    )
            return
        if validator == "required":
            present = cast(dict[str, Any], error.instance)
            missing = [k for k in cast(list[str], error.validator_value) if k not in present]
            for key in missing:
                self.report(path, "missing_key", f"{where} needs the key '{key}'", about=("key", key))
            return
        if validator == "propertyNames":
            name = str(error.instance)
            self.broken.add((*path, name))
            self.report((*path, name), "bad_name", f"'{name}' is not a valid name here: {error.message}", key=True)
            return
        if validator == "type":
            wanted = error.validator_value
            wanted_text = " or ".join(wanted) if isinstance(wanted, list) else wanted
            self.report(
                path,
                "wrong_type",
                f"{where} should be {wanted_text}, not {_type_name(error.instance)}",
            )
            return
        if validator == "enum":
            choices = [str(c) for c in cast(list[Any], error.validator_value)]
            self.report(
                path,
                "bad_value",
                f"'{_fmt(error.instance)}' is not allowed at {where}{did_you_mean(str(error.instance), choices)}; "
                f"choose one of: {', '.join(choices)}",
            )
            return
        if validator == "pattern":
            said = f"'{error.instance}' at {where} does not fit the pattern {error.validator_value}"
            if "description" in schema:
                said = f"'{error.instance}' at {where} is not {schema['description']}"
            elif "a-z" in str(error.validator_value):
                said += " (lower-case letters, digits and underscores, starting with a letter)"
            self.report(path, "bad_name", said)
            return
        if validator in ("minItems", "minProperties", "minLength"):
            self.report(path, "empty", f"{where} must not be empty")
            return
        if validator == "uniqueItems":
            self.report(path, "duplicate_value", f"{where} lists a value twice")
            return
        self.report(path, "schema_error", f"{where}: {error.message}")

    def alternatives_problem(self, error: ValidationError) -> bool:
        """A ``oneOf`` of mappings told apart by their keys, whose schema names a code for keys of two of
        them (``x-mixed``: a source's guide beside a policy).  Keys of two: that code, at the first key of
        the second kind.  Keys of one (or, failing that, keys close to one's): that alternative's own
        problems, every one of them.  Reported, or False."""
        schema, instance = error.schema, error.instance
        if not isinstance(schema, dict) or "x-mixed" not in schema or not isinstance(instance, dict):
            return False
        alternatives = cast(list[dict[str, Any]], error.validator_value)
        kinds = [tuple(alt.get("required", ())) for alt in alternatives]
        kind_of = {key: n for n, keys in enumerate(kinds) for key in keys}
        order = list(dict.fromkeys(kind_of[key] for key in instance if key in kind_of))
        path: Path_ = tuple(error.absolute_path)
        if len(order) > 1:
            self.broken.add(path)
            second = next(key for key in instance if kind_of.get(key, order[0]) != order[0])
            given = " and ".join("+".join(k for k in kinds[n] if k in instance) for n in order)
            either = " or ".join(" + ".join(keys) for keys in kinds)
            self.report(
                (*path, second),
                str(schema["x-mixed"]),
                f"{_path_text(path)} mixes {given}: it is either {either}, not both",
                key=True,
            )
            return True
        if not order:
            closeness = [
                sum(bool(difflib.get_close_matches(str(k), list(alt.get("properties", {})), n=1)) for k in instance)
                for alt in alternatives
            ]
            if not any(closeness):
                self.broken.add(path)
                either = " or ".join(" + ".join(keys) for keys in kinds)
                self.report(
                    path, "missing_key", f"{_path_text(path)} needs either {either}", about=("key", kinds[0][0])
                )
                return True
            order = [closeness.index(max(closeness))]
        for problem in error.context or ():
            if problem.relative_schema_path and problem.relative_schema_path[0] == order[0]:
                self.schema_problem(problem)
        return True


class _Builder(DocumentChecker):
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

    # -- the walk --------------------------------------------------------

    def build(self) -> Playbook | None:
        data = self.doc.data
        if not isinstance(data, dict):
            self.report((), "wrong_type", "a playbook is a mapping with the keys playbook, decisions, ...")
            return None
        self.schema_pass(data, playbook_schema())
        meta: dict[str, Any] = data["playbook"] if isinstance(data.get("playbook"), dict) else {}
        langs = meta.get("languages") if isinstance(meta, dict) else None
        if isinstance(langs, list) and langs and all(isinstance(x, str) for x in langs):
            self.languages = tuple(langs)
        for name, spec in self.items(data, "parameters"):
            self.build_parameter(name, spec)
        for name, spec in self.items(data, "inputs"):
            self.build_input(name, spec)
        for name, spec in self.items(data, "inputs"):
            self.check_derive(name, spec)
        for name, spec in self.items(data, "decisions"):
            self.decision_specs[name] = spec
        decisions = {name: d for name, spec in self.items(data, "decisions") if (d := self.build_decision(name, spec))}
        actions = {name: a for name, spec in self.items(data, "actions") if (a := self.build_action(name, spec))}
        rules = self.build_rules(data.get("rules"), decisions, actions)
        if self.problems:
            return None
        title = self.text(meta.get("title"), ("playbook", "title")) or {}
        text = self.doc.text
        playbook = Playbook(
            id=str(meta.get("id")),
            version=str(meta.get("version")),
            languages=self.languages,
            title=title,
            description=self.text(meta.get("description"), ("playbook", "description")),
            parameters=self.parameters,
            inputs=self.inputs,
            decisions=decisions,
            rules=tuple(rules),
            actions=actions,
            file=self.doc.file,
            content_hash=hashlib.sha256(text.encode("utf-8")).hexdigest(),
            text=text,
        )
        order = self.order(playbook)
        if self.problems:
            return None
        playbook.order = order
        self.check_limits(playbook)
        return None if self.problems else playbook

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
        if derive and "weeks_until" in derive:
            how = ("weeks_until", (str(derive["weeks_until"]),))
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
        wanted = "date" if how == "weeks_until" else "number"
        for i, source_name in enumerate(sources):
            where: Path_ = path if how == "weeks_until" else (*path, i)
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

    def operand(self, raw: Any, path: Path_) -> tuple[Any, str] | None:
        """Resolve a literal or ``{param: name}``; return (value, how it reads)."""
        if isinstance(raw, dict) and "param" in raw:
            name = str(raw["param"])
            param = self.parameters.get(name)
            if param is None:
                self.report(
                    (*path, "param"),
                    "unknown_parameter",
                    f"unknown parameter '{name}'{did_you_mean(name, self.parameters)}",
                    about=("parameter", name),
                )
                return None
            self.param_operands[path] = name
            value = param.value
            shown = ", ".join(_fmt(v) for v in value) if isinstance(value, list) else _fmt(value)
            return value, f"{name} ({shown})"
        if isinstance(raw, list):
            return raw, "{" + ", ".join(_fmt(v) for v in raw) + "}"
        return raw, _fmt(raw)

    def check_value(self, var: str, value: Any, kind: str, values: tuple[Any, ...] | None, path: Path_) -> bool:
        """Is ``value`` a possible value of ``var``?  Report when not."""
        if values is not None:
            if any(value == v and isinstance(value, bool) == isinstance(v, bool) for v in values):
                return True
            hint = did_you_mean(str(value), [str(v) for v in values])
            self.report(
                path,
                "unknown_value",
                f"'{_fmt(value)}' is not a value of '{var}'{hint}; "
                f"its values are: {', '.join(_fmt(v) for v in values)}",
                about=_subject(var),
            )
            return False
        expected = {"number": (int, float), "string": (str,), "date": (str,), "boolean": (bool,)}.get(kind)
        ok = expected is None or (isinstance(value, expected) and not (kind == "number" and isinstance(value, bool)))
        if not ok:
            self.report(
                path,
                "operand_type",
                f"'{var}' is of type {kind}; '{_fmt(value)}' is {_type_name(value)}",
                about=_subject(var),
            )
        return ok

    # -- conditions --------------------------------------------------------

    def condition(self, raw: Any, path: Path_) -> Condition | None:
        if not isinstance(raw, dict) or self.is_broken(path):
            return None
        combinators = [k for k in ("all", "any", "not") if k in raw]
        if combinators:
            if len(raw) > 1:
                self.report(
                    path,
                    "condition_mixed",
                    f"'{combinators[0]}' must stand alone in its mapping; put the other tests inside it",
                )
                return None
            key = combinators[0]
            if key == "not":
                inner = self.condition(raw["not"], (*path, "not"))
                return Not(inner) if inner is not None else None
            items = [self.condition(item, (*path, key, i)) for i, item in enumerate(_listing(raw[key]))]
            if not items:
                return None  # the schema pass has said what is wrong
            if any(item is None for item in items):
                return None
            kept = tuple(item for item in items if item is not None)
            return AllOf(kept) if key == "all" else AnyOf(kept)
        atoms: list[Condition] = []
        ok = True
        for var, test in raw.items():
            built = self.tests(str(var), test, (*path, var))
            if built is None:
                ok = False
            else:
                atoms.extend(built)
        if not ok or not atoms:
            return None
        return atoms[0] if len(atoms) == 1 else AllOf(tuple(atoms))

    def tests(self, var: str, test: Any, path: Path_) -> list[Atom] | None:
        found = self.resolve_var(var, path)
        if found is None:
            return None
        kind, values = found
        numeric = kind == "number" or (
            kind == "enum"
            and values is not None
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        )
        item_values = values if kind == "list" else None
        shorthand = not isinstance(test, dict) or set(test) == {"param"} or "var" in test
        ops: dict[str, Any] = {"equals": test} if shorthand else test
        atoms: list[Atom] = []
        ok = True
        where = self.loc(path)
        against = {k: raw for k, raw in ops.items() if k in COMPARE_OPS and isinstance(raw, dict) and "var" in raw}
        for key, raw in against.items():
            atom = self.compare(var, kind, key, raw, path if shorthand else (*path, key), where)
            ok = atom is not None and ok
            atoms.extend([atom] if atom is not None else [])
        for key, raw in ops.items():
            if key in COMPARISON_KEYS or key in against:
                continue
            op = OPPOSITE_KEYS.get(key, key)
            if op not in OPERATORS:  # the schema pass has reported it, with a suggestion
                ok = False
                continue
            op_path: Path_ = path if shorthand else (*path, key)
            if kind not in OPERATORS[op].types:
                self.report(
                    op_path,
                    "operator_type",
                    f"'{op}' does not apply to '{var}', which is of type {kind}",
                    key=not shorthand,
                    about=_subject(var),
                )
                ok = False
                continue
            if op == "present":
                wanted = bool(raw) != (key in OPPOSITE_KEYS)
                atoms.append(Atom(var, "present", wanted, "present" if wanted else "missing", where))
                continue
            resolved = self.operand(raw, op_path)
            if resolved is None:
                ok = False
                continue
            value, shown = resolved
            many = op in ("one_of", "not_one_of", "contains_all", "contains_any")
            if many and not isinstance(value, list):
                self.report(op_path, "operand_type", f"'{op}' needs a list of values")
                ok = False
                continue
            if not many and isinstance(value, list):
                self.report(op_path, "operand_type", f"'{op}' takes one value, not a list")
                ok = False
                continue
            check_kind, check_values = ("enum", item_values) if kind == "list" else (kind, values)
            for item in value if many else [value]:
                ok = self.check_value(var, item, check_kind, check_values, op_path) and ok
            operand = tuple(value) if many else value
            symbol = {
                "equals": "= ",
                "not_equals": "≠ ",
                "one_of": "∈ ",
                "not_one_of": "∉ ",
                "contains": "contains ",
                "contains_all": "contains all of ",
                "contains_any": "contains any of ",
            }[op]
            atoms.append(Atom(var, op, operand, symbol + shown, where, (_param_name(raw),)))
        comparisons = [k for k in COMPARISON_KEYS if k in ops and k not in against]
        if comparisons:
            interval = self.interval(var, ops, comparisons, numeric, path)
            if interval is None:
                ok = False
            else:
                bounds = (("gt", "gte"), ("lt", "lte"))
                params = tuple(_param_name(ops.get(a, ops.get(b))) for a, b in bounds)
                atoms.append(Atom(var, "interval", interval[0], interval[1], where, params))
        for atom in atoms:
            for number in numbers_of(atom):
                if not durable_safe(number):
                    self.report(
                        path,
                        "number_unreadable",
                        f"{number!r} cannot be given to durable-rules (it reads no exponent without a point); "
                        "scale the unit so the number is written plainly",
                        key=True,
                    )
                    ok = False
        return atoms if ok else None

    def compare(self, var: str, kind: str, op: str, raw: dict[str, Any], path: Path_, where: Location) -> Atom | None:
        """A test of ``var`` against another variable (``{gte: {var: other, times: factor}}``), type-checked."""
        other = str(raw.get("var"))
        found = self.resolve_var(other, (*path, "var"))
        if found is None:
            return None
        other_kind = found[0]
        if kind not in ("number", "date") or other_kind != kind:
            self.report(
                (*path, "var"),
                "operand_type",
                f"'{var}' is of type {kind} and '{other}' of type {other_kind}; "
                "compare a number with a number, or a date with a date",
                about=_subject(var),
            )
            return None
        if "times" not in raw:
            return Atom(var, "compare", Compare(op, other), COMPARE_OPS[op][3] + other, where, (None,))
        if kind != "number":
            self.report((*path, "times"), "operand_type", f"'times' scales a number; '{other}' is a date", key=True)
            return None
        resolved = self.operand(raw["times"], (*path, "times"))
        if resolved is None:
            return None
        factor, shown = resolved
        if not isinstance(factor, int | float) or isinstance(factor, bool):
            self.report((*path, "times"), "operand_type", f"'times' needs a number, not {_type_name(factor)}")
            return None
        if not durable_safe(factor):
            self.report(
                (*path, "times"),
                "number_unreadable",
                f"{factor!r} cannot be given to durable-rules (it reads no exponent without a point); "
                "scale the unit so the number is written plainly",
                key=True,
            )
            return None
        text = f"{COMPARE_OPS[op][3]}{other} × {shown}"
        return Atom(var, "compare", Compare(op, other, factor), text, where, (_param_name(raw["times"]),))

    def interval(
        self, var: str, ops: dict[str, Any], keys: list[str], numeric: bool, path: Path_
    ) -> tuple[Interval, str] | None:
        if not numeric:
            self.report(
                (*path, keys[0]),
                "operator_type",
                f"'{keys[0]}' compares numbers; '{var}' is not a number",
                key=True,
                about=_subject(var),
            )
            return None
        bounds: dict[str, tuple[float, str]] = {}
        for key in keys:
            resolved = self.operand(ops[key], (*path, key))
            if resolved is None:
                return None
            value, shown = resolved
            if not isinstance(value, int | float) or isinstance(value, bool):
                self.report(
                    (*path, key),
                    "operand_type",
                    f"'{key}' needs a number, not {_type_name(value)}",
                    about=_subject(var),
                )
                return None
            bounds[key] = (value, shown)
        for a, b in (("gt", "gte"), ("lt", "lte")):
            if a in bounds and b in bounds:
                self.report((*path, b), "interval_bounds", f"give either '{a}' or '{b}', not both", key=True)
                return None
        low_key = "gt" if "gt" in bounds else ("gte" if "gte" in bounds else None)
        high_key = "lt" if "lt" in bounds else ("lte" if "lte" in bounds else None)
        low = bounds[low_key][0] if low_key else None
        high = bounds[high_key][0] if high_key else None
        interval = Interval(low, low_key == "gte", high, high_key == "lte")
        if (
            low is not None
            and high is not None
            and (low > high or (low == high and not (interval.low_closed and interval.high_closed)))
        ):
            self.report(
                (*path, low_key or "gt"),
                "interval_empty",
                f"no number is {low_key} {_fmt(low)} and {high_key} {_fmt(high)}: the interval is "
                + ("reversed" if low > high else "empty"),
                key=True,
            )
            return None
        symbols = {"gt": "> ", "gte": "≥ ", "lt": "< ", "lte": "≤ "}
        text = " and ".join(symbols[k] + bounds[k][1] for k in (low_key, high_key) if k)
        return interval, text

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

    # -- the decision graph ---------------------------------------------------

    def order(self, playbook: Playbook) -> tuple[Node, ...]:
        """Nodes in an order where every decision is made before it is read."""
        from engine.conditions import atoms_of

        def reads_of(when: Condition | None, outputs: Iterable[Output]) -> tuple[str, ...]:
            names = [v for atom in atoms_of(when) for v in (atom.var, *_compared_with(atom))]
            names += [out.var for out in outputs if isinstance(out, ValueOf)]
            return tuple(dict.fromkeys(names))

        nodes: list[Node] = []
        producers: dict[str, list[int]] = {}
        for decision in playbook.decisions.values():
            if decision.rows:
                reads = tuple(dict.fromkeys(v for row in decision.rows for v in reads_of(row.when, [row.then])))
                producers.setdefault(decision.name, []).append(len(nodes))
                nodes.append(Node("table", decision.name, reads, tuple(row.id for row in decision.rows)))
        for rule in playbook.rules:
            outputs = [*rule.sets.values(), *(p for rec in rule.recommends for p in rec.params.values())]
            for target in rule.sets:
                producers.setdefault(target, []).append(len(nodes))
            nodes.append(Node("rules", rule.id, reads_of(rule.when, outputs), (rule.id,)))
        deps = [sorted({p for var in node.reads if "." not in var for p in producers.get(var, [])}) for node in nodes]

        state = [0] * len(nodes)  # 0 new, 1 on the stack, 2 done
        done: list[int] = []

        def visit(i: int, stack: list[int]) -> bool:
            if state[i] == 2:
                return True
            if state[i] == 1:
                cycle = [*stack[stack.index(i) :], i]
                names = [nodes[j].name for j in cycle]
                first = nodes[i]
                where: Path_ = (
                    ("decisions", first.name)
                    if first.kind == "table"
                    else ("rules", playbook.rules_by_id[first.name].index)
                )
                self.report(
                    where,
                    "decision_cycle",
                    "decisions depend on each other in a cycle: " + " → ".join(names),
                    key=first.kind == "table",
                )
                return False
            state[i] = 1
            for j in deps[i]:
                if not visit(j, [*stack, i]):
                    return False
            state[i] = 2
            done.append(i)
            return True

        for i in range(len(nodes)):
            if not visit(i, []):
                break
        return _group_rules([nodes[i] for i in done])

    def check_limits(self, playbook: Playbook) -> None:
        durable_rules = sum(len(n.members) + -(-len(n.members) // QUESTION_CHUNK) for n in playbook.order)
        if durable_rules > MAX_DURABLE_RULES:
            self.report(
                (),
                "playbook_too_large",
                f"{durable_rules} rows and rules; the engine holds at most {MAX_DURABLE_RULES}",
            )
        for node in playbook.order:
            width = 3
            for var in node.reads:
                found = self.var_type(var)
                width += 1 + len(found[1] or ()) if found and found[0] == "list" else 1
            if width > MAX_NODE_PROPERTIES:
                where: Path_ = ("decisions", node.name) if node.kind == "table" else ("rules",)
                self.report(
                    where,
                    "node_too_wide",
                    f"'{node.name}' reads {width} values; at most {MAX_NODE_PROPERTIES}",
                    key=True,
                )


_ITEM = ValueOf("$item")
"""In a for_each rule's action parameters, until each item is put in: the item."""


def _item_rule_id(rule_id: str, item: Any) -> str:
    """The id of a for_each rule's rule for one item: ``market_action`` and 4 give ``market_action_4``."""
    return f"{rule_id}_{item}"


def _each(action: str, item: Any) -> str:
    """A for_each rule's action id for one item (``market_action_{item}`` → ``market_action_4``)."""
    return action.replace("{item}", str(item))


def _compared_with(atom: Atom) -> tuple[str, ...]:
    """The other variable a test reads, if it compares two."""
    return (atom.operand.other,) if isinstance(atom.operand, Compare) else ()


def _group_rules(ordered: list[Node]) -> tuple[Node, ...]:
    """Rules that read exactly the same variables become one node (one question), at the first one's place.

    That place is valid for all of them: their inputs are the same, so all are ready there, and
    whatever reads what one of them sets comes after it, hence after the first.
    """
    groups: dict[tuple[str, ...], list[Node]] = {}
    for node in ordered:
        if node.kind == "rules":
            groups.setdefault(tuple(sorted(node.reads)), []).append(node)
    out: list[Node] = []
    for node in ordered:
        if node.kind != "rules":
            out.append(node)
            continue
        group = groups[tuple(sorted(node.reads))]
        if group[0] is node:
            members = tuple(m for n in group for m in n.members)  # rules in file order, as ordered
            reads = tuple(dict.fromkeys(v for n in group for v in n.reads))
            out.append(Node("rules", ",".join(members), reads, members))
    return tuple(out)
