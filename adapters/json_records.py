"""CRM JSON exports -> cases: a JSON array of records, or JSON Lines, through a field mapping.

Nested objects are flattened to dotted keys (``owner.email``), lists of plain values
to ``companies.0``, ``companies.1``; API-shaped records that keep their fields under
``properties`` (HubSpot's CRM API, Airbyte's exports) have those lifted to the top,
so one mapping serves webhooks and exports alike.

Every record yields one mapped case or one quarantined record: JSON Lines by their physical
line, an array's records by their position (1-based).  JSON is UTF-8 (RFC 8259).  A JSON Lines
line that cannot be read (not UTF-8, not JSON, nested too deeply, a number that is not finite)
is quarantined on its own; an array is read whole before anything is yielded, so an array that
cannot be read is a located error before any of its records is stored, and a record of it
holding a number that is not finite is quarantined (``bad_number``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from adapters.jsonl import JsonRefused, decode_line, finite_number
from adapters.mapping import MappedCase, Mapping, Quarantined, quarantine_failure, shown
from engine.errors import Location, PlaybookError, Problem

__all__ = ["flatten", "line_record", "read_json_records"]


def flatten(record: dict[str, Any]) -> dict[str, Any]:
    """One level of keys: nested objects as dotted keys; ``properties`` lifted to the top."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        elif isinstance(value, list) and all(not isinstance(v, dict | list) for v in value):
            out[prefix] = value
            for i, item in enumerate(value):
                out[f"{prefix}.{i}"] = item
        else:
            out[prefix] = value

    walk("", {k: v for k, v in record.items() if k != "properties"})
    if isinstance(record.get("properties"), dict):
        for key, value in record["properties"].items():
            out.setdefault(str(key), value)
    return out


def read_json_records(path: str | Path, mapping: Mapping) -> Iterator[tuple[int, MappedCase | Quarantined]]:
    path = Path(path)
    with path.open("rb") as handle:
        head = handle.read(4096).removeprefix(b"\xef\xbb\xbf").lstrip()
    check = False  # whether a record may hold a number that is not finite (only an array's can)
    if head.startswith(b"["):
        records, check = _array(path)
        numbered: Iterator[tuple[int, Any]] = enumerate(records, 1)
    else:
        numbered = _lines(path)
    for number, record in numbered:
        yield number, _mapped(number, record, mapping, check)


def line_record(number: int, line: str | bytes, mapping: Mapping) -> MappedCase | Quarantined:
    """The record on JSON Lines line ``number`` (not blank), mapped or quarantined."""
    try:
        record = decode_line(line)
    except JsonRefused as refused:
        return Quarantined(number, None, refused.code, refused.reason)
    return _mapped(number, record, mapping, False)


def _mapped(number: int, record: Any, mapping: Mapping, check: bool) -> MappedCase | Quarantined:
    try:
        if isinstance(record, Quarantined):
            return record
        if not isinstance(record, dict):
            return Quarantined(number, None, "bad_row", "a record is a JSON object")
        non_finite = _non_finite(record) if check else None
        if non_finite is not None:
            return Quarantined(number, None, "bad_number", f"{shown(non_finite)} is not a finite number")
        return mapping.to_case(flatten(record), line=number)
    except Exception as exc:  # noqa: BLE001 - the record's boundary: no record may stop a run
        return quarantine_failure(number, None, exc)


# -- an array, read whole -------------------------------------------------------------------------


class _NotFinite(str):
    """A number an array holds that is not finite, kept as its text until its record is quarantined."""


def _array(path: Path) -> tuple[list[Any], bool]:
    """The array's records, and whether any number in it is not finite."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise PlaybookError(
            [
                Problem(
                    Location(str(path), line, col),
                    "input_encoding",
                    f"not UTF-8 text (byte 0x{data[exc.start]:02x}); JSON is UTF-8",
                )
            ]
        ) from None
    seen: list[int] = []

    def not_finite(text: str) -> Any:
        seen.append(1)
        return _NotFinite(text)

    def number(text: str) -> Any:
        try:
            return finite_number(text)
        except JsonRefused:
            return not_finite(text)

    decoder = json.JSONDecoder(parse_float=number, parse_int=number, parse_constant=not_finite)
    try:
        records = decoder.decode(text)
    except json.JSONDecodeError as exc:
        raise PlaybookError([Problem(Location(str(path), exc.lineno, exc.colno), "json_syntax", exc.msg)]) from None
    except RecursionError:
        raise PlaybookError([Problem(Location(str(path)), "json_syntax", "nested too deeply to read")]) from None
    if not isinstance(records, list):
        raise PlaybookError([Problem(Location(str(path), 1, 1), "json_syntax", "an export is an array of records")])
    return records, bool(seen)


def _non_finite(value: Any) -> str | None:
    """The text of the first number in ``value`` that is not finite, if any (only arrays hold such)."""
    if isinstance(value, _NotFinite):
        return str(value)
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        for inner in value:
            found = _non_finite(inner)
            if found is not None:
                return found
    return None


# -- JSON Lines, line by line ---------------------------------------------------------------------


def _lines(path: Path) -> Iterator[tuple[int, Any]]:
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            if number == 1:
                line = line.removeprefix(b"\xef\xbb\xbf")
            if not line.strip():
                continue
            try:
                yield number, decode_line(line)
            except JsonRefused as refused:
                yield number, Quarantined(number, None, refused.code, refused.reason)
