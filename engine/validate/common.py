"""What the checker's passes share: paths in a document, small readers (the limits are in :mod:`engine.limits`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

Path_ = tuple[str | int, ...]

Subject = tuple[str, str]

"""What a problem is about: ("parameter" | "input" | "decision" | "action", name), or ("key", a missing key)."""

SECTIONS = {"parameters": "parameter", "inputs": "input", "decisions": "decision", "rules": "rule", "actions": "action"}

_TEXT_KEYS = frozenset(("key", k) for k in ("label", "description", "explain", "source", "value_labels", "output"))

_PARAMETER_MISFITS = frozenset({"operand_type", "unknown_value", "number_unreadable"})


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
