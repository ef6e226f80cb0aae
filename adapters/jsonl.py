"""JSON Lines -> cases: one JSON object per line, named as in the vocabulary.

A line that is not a JSON object becomes a ``bad_json`` error for that line; it
is never skipped.  Blank lines are not cases.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from engine.errors import CaseError

__all__ = ["case_id_of", "read_cases", "read_numbered_cases"]


def case_id_of(case: dict[str, Any], line_number: int) -> str:
    """The case's ``id``, else its opportunity's id, else ``line N``."""
    for candidate in (
        case.get("id"),
        (case.get("opportunity") or {}).get("id") if isinstance(case.get("opportunity"), dict) else None,
    ):
        if isinstance(candidate, str | int) and not isinstance(candidate, bool) and str(candidate):
            return str(candidate)
    return f"line {line_number}"


def read_numbered_cases(lines: Iterable[str]) -> Iterator[tuple[int, tuple[str, dict[str, Any]] | CaseError]]:
    """Each case with its line number (1-based); blank lines are skipped."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            case = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, CaseError(f"line {number}", "bad_json", f"not JSON: {exc.msg} at column {exc.colno}")
            continue
        if not isinstance(case, dict):
            yield number, CaseError(f"line {number}", "bad_json", "a case is a JSON object")
            continue
        yield number, (case_id_of(case, number), case)


def read_cases(lines: Iterable[str]) -> Iterator[tuple[str, dict[str, Any]] | CaseError]:
    for _, item in read_numbered_cases(lines):
        yield item
