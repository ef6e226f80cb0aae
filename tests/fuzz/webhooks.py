"""Fuzzing the webhook parsers: what every body must come to, and how hostile bodies are made.

A body given to a parser must end as one of two things: refused with a :class:`WebhookError`
(the service answers 400 and stores nothing), or events the audit log can store as they are
(ids that fit, JSON without NaN or infinity, no NUL or lone surrogate, times that are times),
which merge into a record's state and which the CRM's preset maps to a case or sets aside.
Anything else (any other exception, an event that cannot be stored) is a crash.

Bodies are made from the seeds in ``corpus/<target>/`` in two ways: byte mutations (flips,
inserted tokens that broke parsers before, deleted, repeated and spliced runs) and, for JSON
targets, structured mutations (a value anywhere in the seed replaced by a hostile one: huge
integers, non-finite numbers, deep nesting, control characters, wrong types).  The normal test
run tries a few of each (tests/test_webhook_fuzz.py); ``python -m tests.fuzz.run`` runs longer.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from adapters.mapping import MappedCase, Quarantined, load_mapping
from adapters.webhook import (
    MAX_TIME_MS,
    IgnoredEvent,
    RecordEvent,
    WebhookError,
    merge,
    parse_generic,
    parse_hubspot,
    parse_pipedrive,
    parse_salesforce_cdc,
    parse_salesforce_outbound,
)
from engine.limits import ID_LENGTH

CORPUS = Path(__file__).resolve().parent / "corpus"
NOW_MS = 1_795_767_944_000  # 2026-11-27, the seeds' day


def _outbound(body: bytes) -> list[RecordEvent | IgnoredEvent]:
    return list(parse_salesforce_outbound(body).events)


@dataclass(frozen=True)
class Target:
    name: str
    parse: Callable[[bytes], list[RecordEvent | IgnoredEvent]]
    preset: str
    json: bool = True

    def seeds(self) -> list[bytes]:
        return [p.read_bytes() for p in sorted((CORPUS / self.name).iterdir()) if p.is_file()]


TARGETS = {
    t.name: t
    for t in (
        Target("hubspot", parse_hubspot, "hubspot_deal"),
        Target("salesforce_cdc", parse_salesforce_cdc, "salesforce_opportunity"),
        Target("salesforce_outbound", _outbound, "salesforce_opportunity", json=False),
        Target("pipedrive", parse_pipedrive, "pipedrive_deal"),
        Target("generic", parse_generic, "generic"),
        Target("bottlecrm", parse_generic, "bottlecrm_deal"),
    )
}

_MAPPINGS: dict[str, Any] = {}


def check(target: Target, body: bytes) -> str:
    """'refused' or 'accepted'; raises (AssertionError or the parser's own exception) on a crash."""
    try:
        events = target.parse(body)
    except WebhookError as error:
        assert error.status == 400, f"a parser refuses with 400, not {error.status}"
        assert isinstance(error.message, str) and len(error.message) < 1000, "an error message is short text"
        return "refused"
    mapping = _MAPPINGS.get(target.preset) or _MAPPINGS.setdefault(target.preset, load_mapping(target.preset))
    for event in events:
        if isinstance(event, IgnoredEvent):
            assert isinstance(event.reason, str) and event.reason
            continue
        assert isinstance(event, RecordEvent)
        assert 0 < len(event.event_id) <= ID_LENGTH and 0 < len(event.key) <= ID_LENGTH
        assert event.change in ("create", "update", "delete")
        assert event.occurred_at is None or 0 <= event.occurred_at <= MAX_TIME_MS
        _storable(event.fields)
        _storable([event.event_id, event.key, event.object_type])
        state = merge({}, {}, False, event, NOW_MS)
        again = merge(state.fields, state.stamps, state.deleted, event, NOW_MS)
        assert not again.changed, "applying an event twice changes nothing"
        mapped = mapping.to_case(state.fields)
        assert isinstance(mapped, MappedCase | Quarantined)
        if isinstance(mapped, MappedCase):
            _storable(mapped.case)
    return "accepted"


def _storable(value: Any) -> None:
    """What the audit log writes: strict JSON (no NaN or infinity), UTF-8 without NUL."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, sort_keys=True)
    assert "\x00" not in text, "a NUL would be refused by PostgreSQL"
    text.encode("utf-8")  # a lone surrogate raises here


# -- bodies ---------------------------------------------------------------------------------

# Tokens that broke (or could break) a parser: non-finite and huge numbers, NUL and surrogates
# escaped and raw, nesting, DTDs, wrong types, long digit runs, ISO times out of range.
TOKENS = [
    b"1e999",
    b"-1e999",
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"1E400",
    b"9" * 40,
    b"9" * 5000,
    b'"' + b"9" * 20 + b'"',
    b"-1",
    b"0",
    b"null",
    b"true",
    b"[]",
    b"{}",
    b"[" * 200,
    b'"\\u0000"',
    b'"\\ud800"',
    b"\xed\xa0\x80",
    b"\x00",
    b"\xff\xfe",
    b'"9999-12-31T23:59:59-23:59"',
    b'"0001-01-01T00:00:00+23:59"',
    b'"2026-13-45"',
    b'"' + b"a" * 600 + b'"',
    b"<!DOCTYPE x [<!ENTITY a 'b'>]>",
    b"&a;",
    b'xsi:nil="true"',
    b"<sf:Id></sf:Id>",
    b"]]>",
    b"\\",
    b'"',
    b",",
    b":",
]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A seed with a few byte-level mutations."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.integers(0, 5))
        at = draw(st.integers(0, len(data)))
        if op == 0 and data:
            data[min(at, len(data) - 1)] = draw(st.integers(0, 255))
        elif op == 1:
            data[at:at] = draw(st.sampled_from(TOKENS))
        elif op == 2:
            del data[at : at + draw(st.integers(1, 64))]
        elif op == 3:
            data[at:at] = data[at : at + draw(st.integers(1, 64))] * draw(st.integers(1, 4))
        elif op == 4:
            other = draw(st.sampled_from(seeds))
            start = draw(st.integers(0, len(other)))
            data[at:at] = other[start : start + draw(st.integers(1, 200))]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


_NASTY_TEXT = st.sampled_from(
    ["", " ", "1e999", "NaN", "Infinity", "-1", "9" * 30, "\x00", "\ud800", "a" * 600, "2026-11-27", "0x1F", "²"]
)
_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | _NASTY_TEXT
)
_VALUES = st.recursive(
    _LEAVES,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)


@st.composite
def restructured(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A JSON seed with values anywhere in it replaced, removed or added, written out again."""
    document = json.loads(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        document = _edit(draw, document, depth=0)
    text = json.dumps(document, ensure_ascii=draw(st.booleans()), allow_nan=True)
    return text.encode("utf-8", "surrogatepass")


def _edit(draw: st.DrawFn, node: Any, depth: int) -> Any:
    if isinstance(node, dict) and node and depth < 6 and draw(st.integers(0, 3)) > 0:
        key = draw(st.sampled_from(sorted(node)))
        action = draw(st.integers(0, 5))
        copy = dict(node)
        if action == 0:
            del copy[key]
        elif action == 1:
            copy[draw(st.text(max_size=8) | st.sampled_from(sorted(node)))] = draw(_VALUES)
        else:
            copy[key] = _edit(draw, node[key], depth + 1)
        return copy
    if isinstance(node, list) and node and depth < 6 and draw(st.integers(0, 3)) > 0:
        at = draw(st.integers(0, len(node) - 1))
        copy_list = list(node)
        if draw(st.booleans()):
            copy_list[at] = _edit(draw, node[at], depth + 1)
        else:
            copy_list.insert(at, copy_list[at] if draw(st.booleans()) else draw(_VALUES))
        return copy_list
    replacement = draw(_VALUES)
    if isinstance(replacement, float) and not math.isfinite(replacement) and draw(st.booleans()):
        return node  # sometimes keep the seed's value: not every edit should be a non-finite number
    return replacement


def bodies(target: Target) -> st.SearchStrategy[bytes]:
    seeds = target.seeds()
    strategy: st.SearchStrategy[bytes] = mutated(seeds) | st.sampled_from(seeds)
    if target.json:
        strategy = strategy | restructured(seeds)
    return strategy
