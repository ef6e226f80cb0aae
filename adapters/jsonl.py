"""JSON Lines -> cases: one JSON object per line, named as in the vocabulary.

A line that cannot be a case becomes an error for that line (``bad_json``, or ``bad_input`` for
text that cannot be stored); it is never skipped, and it never stops the run.  JSON is UTF-8
(RFC 8259): a line in another encoding is such an error, as is a number that is not finite
(``NaN``, ``Infinity``, ``1e999``, an integer too large for a float), an object nested too deeply
to read, and text holding a NUL or half of a surrogate pair.  Blank lines are not cases.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from typing import Any

from adapters.mapping import shown, unstorable
from engine.errors import CaseError

__all__ = ["JsonRefused", "case_id_of", "decode_line", "finite_number", "read_cases", "read_numbered_cases"]


class JsonRefused(ValueError):
    """JSON this reader does not accept: ``code`` (``bad_json``, ``bad_number``, ``bad_encoding``) and why."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _refuse_constant(name: str) -> Any:
    raise JsonRefused("bad_number", f"{name} is not a finite number")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise JsonRefused("bad_number", f"{shown(text)} is not a finite number")
    return number


def _finite_int(text: str) -> int:
    if len(text) <= 300:  # every integer of up to 300 digits is a finite float
        return int(text)
    try:
        number = int(text)
        float(number)
    except (ValueError, OverflowError):  # over 4,300 digits int() refuses; over 308 a float cannot hold it
        raise JsonRefused(
            "bad_number", f"an integer of {len(text.lstrip('-'))} digits is not a finite number"
        ) from None
    return number


def finite_number(text: str) -> int | float:
    """A JSON number's text as a number, or :class:`JsonRefused` when it is not finite."""
    return _finite_int(text) if text.lstrip("-").isdigit() else _finite_float(text)


_DECODER = json.JSONDecoder(parse_float=_finite_float, parse_int=_finite_int, parse_constant=_refuse_constant)


def decode_line(line: str | bytes) -> Any:
    """One line's JSON value, or :class:`JsonRefused` saying why it is none (located by column where it can be)."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonRefused(
                "bad_encoding", f"not UTF-8 text (byte 0x{line[exc.start]:02x} at byte {exc.start + 1}); JSON is UTF-8"
            ) from None
    try:
        return _DECODER.decode(line)
    except json.JSONDecodeError as exc:
        raise JsonRefused("bad_json", f"not JSON: {exc.msg} at column {exc.colno}") from None
    except RecursionError:
        raise JsonRefused("bad_json", "nested too deeply to read") from None


def case_id_of(case: dict[str, Any], line_number: int) -> str:
    """The case's ``id``, else its opportunity's id, else ``line N``."""
    for candidate in (
        case.get("id"),
        (case.get("opportunity") or {}).get("id") if isinstance(case.get("opportunity"), dict) else None,
    ):
        if isinstance(candidate, str | int) and not isinstance(candidate, bool) and str(candidate):
            return str(candidate)
    return f"line {line_number}"


def read_numbered_cases(
    lines: Iterable[str | bytes],
) -> Iterator[tuple[int, tuple[str, dict[str, Any]] | CaseError]]:
    """Each case with its line number (1-based, physical lines); blank lines are skipped.

    Give bytes (a file opened in binary) to have each line's encoding checked on its own.
    """
    for number, line in enumerate(lines, 1):
        if number == 1:
            line = line.removeprefix(b"\xef\xbb\xbf") if isinstance(line, bytes) else line.removeprefix("\ufeff")
        if line.strip():
            yield number, numbered_case(number, line)


def numbered_case(number: int, line: str | bytes) -> tuple[str, dict[str, Any]] | CaseError:
    """The case on physical line ``number`` (not blank), or its error: the boundary of one line."""
    where = f"line {number}"
    try:
        case = decode_line(line)
        if not isinstance(case, dict):
            return CaseError(where, "bad_json", "a case is a JSON object")
        problem = unstorable(case)
        if problem is not None:
            return CaseError(where, "bad_input", problem)
        return case_id_of(case, number), case
    except JsonRefused as refused:
        return CaseError(where, "bad_json", refused.reason)
    except Exception as exc:  # the line's boundary: no line may stop a run
        if isinstance(exc, MemoryError):
            raise
        return CaseError(where, "bad_input", f"could not be read: {type(exc).__name__}: {shown(str(exc))}")


def read_cases(lines: Iterable[str | bytes]) -> Iterator[tuple[str, dict[str, Any]] | CaseError]:
    for _, item in read_numbered_cases(lines):
        yield item
