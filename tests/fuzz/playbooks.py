"""Fuzzing the playbook loader, validator and table checker: what every text must come to, and how texts are made.

A text given to ``playbook check`` must end as one of two things: refused with a
:class:`PlaybookError` whose every problem names the file, a line and column, a known kind of
code and a printable message; or a checked playbook whose table checker returns such problems
(or none).  Anything else -- any other exception -- is a crash.

Texts are made three ways, all drawing on the values that broke the loader before (control
characters and NUL, 4,300-digit integers, ``.inf`` and ``.nan``, YAML 1.1 ``010`` and ``1:30``, ``0o10``,
aliases, tabs, deep nesting, wrong shapes):

- *mutated*: a seed (``corpus/playbook/``, the course playbook, the broken playbooks of
  ``tests/cases/check/``) with a few line or character edits: tokens inserted or put in place of
  a value, lines deleted, doubled, swapped, indented or dedented, characters deleted;
- *restructured*: a seed's data with a value anywhere replaced by a hostile one, a key removed
  or misspelt, written out again with ``yaml.safe_dump``;
- *random*: YAML written from random data, or random text.

The normal test run tries a few (tests/test_fuzz_playbooks.py);
``python -m tests.fuzz.run --target playbook --minutes 10`` runs longer.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

from engine.analyse import analyse
from engine.errors import PlaybookError, Problem
from engine.validate import load_playbook_text

ROOT = Path(__file__).resolve().parent.parent.parent
CORPUS = Path(__file__).resolve().parent / "corpus" / "playbook"
FILE = "fuzzed.yaml"
_CODE = re.compile(r"^[a-z][a-z0-9_]*$")


@functools.cache
def seeds() -> tuple[str, ...]:
    """The corpus (crash files first made into tests there), the course playbook, the check cases."""
    texts = [p.read_bytes().decode("utf-8", "surrogatepass") for p in sorted(CORPUS.iterdir()) if p.is_file()]
    texts.append(course())
    for case in sorted((ROOT / "tests" / "cases" / "check").glob("*.yaml")):
        texts.append(yaml.safe_load(case.read_text(encoding="utf-8"))["playbook"])
    return tuple(texts)


@functools.cache
def _small_seeds() -> tuple[str, ...]:
    return tuple(t for t in seeds() if len(t) < 20_000)


@functools.cache
def _seed_data() -> tuple[Any, ...]:
    out = []
    for text in seeds():
        try:
            out.append(yaml.safe_load(text))
        except (yaml.YAMLError, ValueError, LookupError):  # an integer of over 4,300 digits; !!bool maybe
            continue  # a broken seed: only its text is mutated
    return tuple(d for d in out if isinstance(d, dict))


def _problems_are_located(problems: list[Problem]) -> None:
    for problem in problems:
        assert isinstance(problem, Problem)
        assert _CODE.match(problem.code), f"a code is a lower-case word: {problem.code!r}"
        assert problem.location.file == FILE, f"a problem names the file: {problem}"
        assert problem.location.line >= 1 and problem.location.col >= 1, f"a problem names its line: {problem}"
        assert problem.message and problem.message.isprintable(), f"a message is printable text: {problem.message!r}"
        assert len(problem.message) < 2000, "a message is short"


def check(text: str) -> str:
    """'refused' or 'accepted'; raises (AssertionError, or the checker's own exception) on a crash."""
    try:
        playbook = load_playbook_text(text, FILE)
    except PlaybookError as error:
        assert error.problems, "a refusal says why"
        _problems_are_located(error.problems)
        return "refused"
    problems = analyse(playbook)
    _problems_are_located(problems)
    return "accepted"


# -- texts ----------------------------------------------------------------------------------

# Scalars and fragments that broke (or could break) the loader or the validator.
TOKENS = [
    ".inf",
    "-.inf",
    ".nan",
    "1.0e+999",
    "010",
    "-017",
    "1:30",
    "0o10",
    "9" * 4400,
    "9" * 40,
    "-0",
    "0",
    "~",
    "null",
    "no",
    "yes",
    "on",
    "'no'",
    "true",
    "[]",
    "{}",
    "[1, 2]",
    "{a: 1}",
    "[" * 80,
    "{" * 80,
    "&a x",
    "*a",
    "!!python/object/apply:os.system ['true']",
    "!!binary aGVsbG8=",
    "!!set {a}",
    "? [a, b]",
    "- x",
    '"\\x00"',
    '"\\u0007"',
    '"\\ud800"',
    "\x00",
    "\x07",
    "\x1b",
    "\t",
    "\ufeff",
    "\u2028",
    "2026-13-45",
    "2026-11-27",
    "2026-11-27T10:00:00",
    "G-99",
    "{param: nope}",
    "{param: high}",
    "{value_of: opportunity.amount}",
    "{value_of: nope}",
    "{gt: 5, lt: 1}",
    "{present: maybe}",
    "{all: 5}",
    "{any: []}",
    "{not: [1]}",
    "{one_of: 5}",
    "{contains: [a]}",
    "{then: [x]}",
    "rows: 5",
    "then: []",
    "id: x",
    "'" + "a" * 600 + "'",
    "中文",
    ":",
    "#",
    "|",
    ">-",
    "'",
    '"',
    "%YAML 1.1",
    "---",
    "...",
]


@functools.cache
def course() -> str:
    return (ROOT / "playbooks" / "course.yaml").read_text(encoding="utf-8")


@st.composite
def mutated(draw: st.DrawFn, *, course_only: bool = False) -> str:
    """A seed with a few line and character edits: the course playbook a quarter of the time, else
    any seed, small ones more often (they run faster)."""
    pools = [(course(),)] if course_only else [(course(),), seeds(), _small_seeds(), _small_seeds()]
    lines = draw(st.sampled_from(draw(st.sampled_from(pools)))).split("\n")
    for _ in range(draw(st.integers(1, 5))):
        op = draw(st.integers(0, 7))
        at = draw(st.integers(0, len(lines) - 1))
        line = lines[at]
        if op == 0:  # a value replaced
            key, colon, _ = line.partition(": ")
            lines[at] = (key + colon if colon else line + ": ") + draw(st.sampled_from(TOKENS))
        elif op == 1:  # a token inserted anywhere in the line
            col = draw(st.integers(0, len(line)))
            lines[at] = line[:col] + draw(st.sampled_from(TOKENS)) + line[col:]
        elif op == 2:
            del lines[at : at + draw(st.integers(1, 4))]
        elif op == 3:
            lines[at:at] = lines[at : at + draw(st.integers(1, 6))]
        elif op == 4:
            other = draw(st.integers(0, len(lines) - 1))
            lines[at], lines[other] = lines[other], lines[at]
        elif op == 5:
            lines[at] = " " * draw(st.integers(1, 4)) + line
        elif op == 6:
            lines[at] = line[draw(st.integers(1, 4)) :]
        else:
            col = draw(st.integers(0, len(line)))
            lines[at] = line[:col] + line[col + draw(st.integers(1, 6)) :]
        if not lines:
            lines = [""]
    return "\n".join(lines)


_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["", "no", "010", "1:30", "\x00", "\x07", "G-01", "a" * 600, "opportunity.amount"])
)
VALUES = st.recursive(
    _LEAVES,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)


def _paths(data: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(data, dict):
        for key, value in data.items():
            found += _paths(value, (*path, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            found += _paths(value, (*path, i))
    return found


def _copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_copy(v) for v in data]
    return data


@st.composite
def restructured(draw: st.DrawFn) -> str:
    """A seed's data with values replaced, keys removed or misspelt; written out again."""
    data = _copy(draw(st.sampled_from(_seed_data())))
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(data)[1:]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        last = path[-1]
        op = draw(st.integers(0, 2))
        if op == 0:
            parent[last] = draw(VALUES)
        elif op == 1:
            del parent[last]
        elif isinstance(parent, dict):
            misspelt = str(last)[:-1] or "x"
            parent[misspelt] = parent.pop(last)
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=10_000)


def texts() -> st.SearchStrategy[str]:
    """Mostly mutations of the seeds; some restructured seeds; a few random documents and random text."""
    random_yaml = VALUES.map(lambda data: yaml.safe_dump(data, allow_unicode=True))
    some_text = st.text(max_size=200)
    return st.one_of(mutated(), mutated(), mutated(), restructured(), restructured(), random_yaml, some_text)
