"""The two shortcuts that make ``check`` fast change nothing a user sees.

- engine/load.py reads with libyaml's parser and falls back to PyYAML's (whose words the syntax
  errors are in) whenever the fast one fails or might read the text differently: the document, its
  marks and its problems are the same either way.
- engine/validate.py remembers which ``$ref`` subschemas an instance of a given key passed: the
  schema problems are the same as jsonschema's without that memory, in the same order.

Both are tried on the fuzzer's texts (tests/fuzz/playbooks.py) and its seeds, which include the
course playbook and every broken playbook of tests/cases/check/.
"""

from __future__ import annotations

import os
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings

from engine import load
from engine.errors import PlaybookError
from engine.validate import DocumentChecker, load_schema
from tests.fuzz.playbooks import seeds, texts

EXAMPLES = int(os.environ.get("PLAYBOOK_FUZZ_EXAMPLES", "40"))
SCHEMAS = ("playbook.schema.json", "playbook-test.schema.json", "mapping.schema.json")

# Where libyaml and PyYAML part ways, or might: tabs, a value left out (placed differently), line
# ends, a byte-order mark, characters beyond the BMP, both kinds of error.
EDGES = [
    "a: \t\nb: 1\n",
    "a:\n  b:\n  c: 1\n",
    "---\n",
    "a: !\nb: !!str\nc: ! x\n",
    "- \n- x\n",
    "a: 1\r\nb: [x,\r\n  y]\r\nc: 中文 😀 x\r\n",
    "\ufeffa: 1\n",
    "a: 1\rb: 2\r",
    "a: x\x85b: 2\n",
    "😀: 😀\n😀😀: [😀, 中文, {k: 😀}]\n",
    "a: |\n  x\n  😀\nb: >-\n  y\n\n  z\nc: 1\n",
    "a:\n- x\n- y: 1\n  z: 2\n",
    "a: b: c\n",
    "a: [b\n",
    "? [a]\n: 1\nb: 2\n",
    "a: &x 1\nb: *x\n",
    "- &x a\n- &x b\n",
    "a: 1\n---\nb: 2\n",
    "a: !!str 5\nb: ! 7\nc: !!binary aGk=\n",
    "a: no\nb: 010\nc: 1:30\nd: .inf\ne: " + "9" * 4400 + "\n",
    "a: \x07\n",
    "",
]


def _loaded(text: str, *, fast: bool) -> Any:
    try:
        if fast:
            doc = load.load_text(text, "f.yaml")
        else:
            doc, problems = load._parse_located(text, "f.yaml")
            if problems:
                raise PlaybookError(problems)
    except PlaybookError as error:
        return [str(problem) for problem in error.problems]
    return repr(doc.data), doc.value_marks, doc.key_marks


def _loads_alike(text: str) -> None:
    assert _loaded(text, fast=True) == _loaded(text, fast=False)


def _schema_problems(text: str, schema_name: str, *, remembered: bool) -> Any:
    doc = load.load_text(text, "f.yaml")
    schema = load_schema(schema_name)
    checker = DocumentChecker(doc)
    if remembered:
        checker.schema_pass(doc.data, schema)
    else:
        for error in jsonschema.Draft202012Validator(schema).iter_errors(doc.data):
            checker.schema_problem(error)
    return [str(problem) for problem in checker.problems], checker.broken


def _validates_alike(text: str) -> None:
    try:
        load.load_text(text, "f.yaml")
    except PlaybookError:
        return
    for name in SCHEMAS:
        assert _schema_problems(text, name, remembered=True) == _schema_problems(text, name, remembered=False)


@pytest.mark.parametrize("text", EDGES)
def test_both_parsers_give_one_document_at_the_edges(text: str) -> None:
    _loads_alike(text)


def test_both_parsers_give_one_document_for_every_seed() -> None:
    for text in seeds():
        _loads_alike(text)
        _loads_alike(text.replace("\n", "\r\n"))


def test_remembered_verdicts_change_no_schema_problem_of_a_seed() -> None:
    for text in seeds():
        _validates_alike(text)


@pytest.mark.skipif(load._FAST_LOADER is None, reason="this PyYAML was built without libyaml")
def test_a_clean_document_is_read_once_by_the_fast_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    """The speed is the point: a clean playbook must not be read a second time by PyYAML's parser."""
    monkeypatch.setattr(load, "_parse_located", lambda *_: pytest.fail("fell back to PyYAML's parser"))
    doc = load.load_text("a: {b: [1, 2.5, x, '']}\nc: 中文\n", "f.yaml")
    assert doc.data == {"a": {"b": [1, 2.5, "x", ""]}, "c": "中文"}


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(texts())
def test_both_parsers_give_one_document_for_fuzzed_texts(text: str) -> None:
    _loads_alike(text)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(texts())
def test_remembered_verdicts_change_no_schema_problem_of_fuzzed_texts(text: str) -> None:
    _validates_alike(text)
