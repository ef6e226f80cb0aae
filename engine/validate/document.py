"""The schema pass, shared by playbooks, mappings and playbook tests: :class:`DocumentChecker`
checks a loaded document against a JSON Schema and reports each problem at its place."""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Hashable, Iterator
from contextvars import ContextVar
from functools import cache
from pathlib import Path
from typing import Any, cast

import jsonschema
from jsonschema.exceptions import ValidationError, best_match

from engine.errors import Location, Problem, did_you_mean
from engine.load import Document
from engine.validate.common import (
    Path_,
    Subject,
    _fmt,
    _path_text,
    _type_name,
)

_ENGINE_DIR = Path(__file__).resolve().parent.parent


# A wheel ships the schemas inside the engine package (pyproject.toml); a checkout keeps them beside it.
SCHEMAS_DIR = next(
    (d for d in (_ENGINE_DIR / "schemas", _ENGINE_DIR.parent / "schemas") if d.is_dir()), _ENGINE_DIR.parent / "schemas"
)


@cache
def load_schema(name: str) -> dict[str, Any]:
    """A JSON Schema of ``schemas/`` by file name (``playbook.schema.json``), read once."""
    schema: dict[str, Any] = json.loads((SCHEMAS_DIR / name).read_text(encoding="utf-8"))
    return schema


def playbook_schema() -> dict[str, Any]:
    return load_schema("playbook.schema.json")


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
