"""The one registry of stable error codes (engine/errors.py) against the source and the docs.

Integrations match on codes, never on wording: every code the program can emit is in the registry,
and every set of the registry is exactly the table that documents it, so a new code cannot ship
undocumented and a documented code cannot silently disappear.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator

import pytest

from engine import errors
from tests.conftest import ROOT

SOURCES = [ROOT / "cli.py", *sorted((ROOT / "engine").rglob("*.py")), *sorted((ROOT / "adapters").rglob("*.py"))]
CODE = re.compile(r"[a-z][a-z0-9_]*\Z")
# The calls that take a code, and where: Problem(location, code, message), CaseError(case, code, message),
# the checkers' report(path, code, message), Quarantined(line, record, code, reason), ...
CODE_ARGUMENT = {
    "Problem": (1,),
    "CaseError": (1,),
    "report": (1,),
    "problem": (0, 1),  # load.py's problem(mark, code, message); store.py's problem(kind, message)
    "_problem": (1,),
    "_error": (1,),
    "_Refused": (1,),
    "JsonRefused": (0,),
    "_Reject": (0,),
    "Quarantined": (2,),
    "ChainProblem": (2,),
}
DOCUMENTED_IN = {  # each set of the registry: the file, and the sections whose tables list it
    "PLAYBOOK_CODES": ("playbook-reference.md", ["## Error codes"]),
    "CHECK_CODES": ("playbook-reference.md", ["## The table checker"]),
    "CASE_CODES": ("playbook-reference.md", ["### Errors while evaluating a case"]),
    "MAPPING_CODES": ("mapping-reference.md", ["## Errors in the mapping or the input", "## Databases"]),
    "QUARANTINE_CODES": ("mapping-reference.md", ["## Every record is accounted for"]),
    "WEBHOOK_CODES": ("webhooks.md", ["## Answers"]),
    "AUDIT_CODES": ("audit-threat-model.md", ["## Kinds of problem"]),
}


def literal_codes(node: ast.expr) -> Iterator[str]:
    """The code-shaped texts an expression can give: a literal, or either branch of ``a if c else b``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and CODE.match(node.value):
        yield node.value
    elif isinstance(node, ast.IfExp):
        yield from literal_codes(node.body)
        yield from literal_codes(node.orelse)


def schema_codes(value: object) -> Iterator[str]:
    """The codes the file schemas name for the validator to report (``"x-mixed": "source_mixed"``)."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "x-mixed":
                yield str(inner)
            yield from schema_codes(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from schema_codes(inner)


def emitted_codes() -> dict[str, str]:
    """Every code the source emits, with one place that emits it: the arguments of the calls above,
    ``code=`` keywords, ``code = ...`` assignments (the webhook refusals' class attributes), ``{"code": ...}``,
    and the schemas' own."""
    found: dict[str, str] = {}
    for schema in sorted((ROOT / "schemas").glob("*.schema.json")):
        for code in schema_codes(json.loads(schema.read_text(encoding="utf-8"))):
            found.setdefault(code, str(schema.relative_to(ROOT)))
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            given: list[ast.expr] = []
            if isinstance(node, ast.Call):
                name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                given += [node.args[i] for i in CODE_ARGUMENT.get(name, ()) if i < len(node.args)]
                given += [k.value for k in node.keywords if k.arg == "code"]
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name) and target.id == "code":
                        given.append(node.value)
                    elif isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                        pairs = zip(target.elts, node.value.elts, strict=True)
                        given += [v for t, v in pairs if getattr(t, "id", "") == "code"]
            elif isinstance(node, ast.Dict):
                entries = zip(node.keys, node.values, strict=True)
                given += [v for k, v in entries if isinstance(k, ast.Constant) and k.value == "code"]
            for expr in given:
                for code in literal_codes(expr):
                    found.setdefault(code, f"{path.relative_to(ROOT)}:{expr.lineno}")
    return found


def documented_codes(file: str, headings: list[str]) -> set[str]:
    """The codes in the first column of the tables of these sections (each up to the next heading)."""
    lines = (ROOT / "docs" / file).read_text(encoding="utf-8").splitlines()
    codes: set[str] = set()
    for heading in headings:
        start = next(i for i, line in enumerate(lines) if line.startswith(heading))
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("#")), len(lines))
        for line in lines[start + 1 : end]:
            first = line.split("|")[1] if line.startswith("|") else ""
            if first.strip().startswith("the playbook codes"):  # the mapping table's pointer to the playbook's
                continue
            codes |= {c for c in re.findall(r"`([^`]+)`", first) if CODE.match(c)}
    return codes


def test_every_code_the_source_emits_is_in_the_registry() -> None:
    emitted = emitted_codes()
    assert len(emitted) > 100  # the scan itself still finds the codes
    missing = {code: where for code, where in emitted.items() if code not in errors.ERROR_CODES}
    assert not missing, f"emitted but not in engine/errors.py: {missing}"


def test_every_code_in_the_registry_is_emitted_somewhere() -> None:
    assert not errors.ERROR_CODES - emitted_codes().keys()


@pytest.mark.parametrize("group", sorted(DOCUMENTED_IN))
def test_each_set_of_the_registry_is_exactly_its_documented_table(group: str) -> None:
    file, headings = DOCUMENTED_IN[group]
    documented, registered = documented_codes(file, headings), getattr(errors, group)
    assert not registered - documented, f"in {group}, not in the tables of docs/{file}"
    assert not documented - registered, f"in the tables of docs/{file}, not in {group}"
