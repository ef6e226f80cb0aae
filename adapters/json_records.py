"""CRM JSON exports -> cases: a JSON array of records, or JSON Lines, through a field mapping.

Nested objects are flattened to dotted keys (``owner.email``), lists of plain values
to ``companies.0``, ``companies.1``; API-shaped records that keep their fields under
``properties`` (HubSpot's CRM API, Airbyte's exports) have those lifted to the top,
so one mapping serves webhooks and exports alike.  Every record yields one mapped
case or one quarantined record, by its position (1-based).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from adapters.mapping import MappedCase, Mapping, Quarantined
from engine.errors import Location, PlaybookError, Problem

__all__ = ["flatten", "read_json_records"]


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
    text_start = path.read_bytes()[:1].decode("utf-8", "replace") if path.stat().st_size else ""
    if text_start == "[":
        try:
            records = json.loads(path.read_text(encoding="utf-8-sig"))
        except json.JSONDecodeError as exc:
            raise PlaybookError([Problem(Location(str(path), exc.lineno, exc.colno), "json_syntax", exc.msg)]) from None
        numbered: Any = enumerate(records, 1)
    else:
        numbered = _lines(path)
    for number, record in numbered:
        if isinstance(record, Quarantined):
            yield number, record
        elif not isinstance(record, dict):
            yield number, Quarantined(number, None, "bad_row", "a record is a JSON object")
        else:
            yield number, mapping.to_case(flatten(record), line=number)


def _lines(path: Path) -> Iterator[tuple[int, Any]]:
    with path.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, Quarantined(number, None, "bad_json", f"not JSON: {exc.msg} at column {exc.colno}")
