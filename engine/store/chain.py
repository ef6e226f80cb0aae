"""The hash chains: canonical JSON, the audit key and its seal, and the text each link seals.

Each link covers its content and the previous link (``GENESIS`` before the first).  A log made with
a key seals its links with HMAC-SHA256 under a key kept outside the database (only the key's id is
stored, ``meta.audit_key_id``); a log without one is chained with plain SHA-256, which anyone who
can write to the database can recompute.  docs/audit-threat-model.md says what each proves.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from typing import Any

GENESIS = "0" * 64


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _c_encoder(sort_keys: bool) -> Any:
    """The C encoder ``JSONEncoder.encode`` builds at each call, built once (2 µs of each link a verify checks,
    of each case an import stores), with the same settings (keys sorted or as they are, no spaces, UTF-8
    kept) but the circular-reference check (rows read back and facts read from JSON hold no cycles); None
    where the C encoder is missing or does not give the same text."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return None
    reference = json.JSONEncoder(sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False)
    try:
        chunks = make(None, reference.default, json.encoder.encode_basestring, None, ":", ",", sort_keys, False, True)
        sample = [{"b": [1, 2.5, None, True], "a": 'é\n"x\u2028'}, -3, "", {}]
        return chunks if "".join(chunks(sample, 0)) == reference.encode(sample) else None
    except (TypeError, ValueError):  # another Python's private signature: the documented way below
        return None


_chunks = _c_encoder(sort_keys=True)


def canonical(value: Any) -> str:
    """The one JSON text of a value: sorted keys, no spaces, UTF-8 kept."""
    if _chunks is None or type(value) is str:  # a bare string: encode() gives it without the encoder
        return _CANONICAL.encode(value)
    return "".join(_chunks(value, 0))


# The big per-case columns keep their keys' order (the mapping's and the playbook's, both fixed):
# they are hashed as stored, so they need no sorting, which costs a third of their encoding.
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_compact_chunks = _c_encoder(sort_keys=False)


def _compact(value: Any) -> str:
    if _compact_chunks is None or type(value) is str:
        return _COMPACT.encode(value)
    return "".join(_compact_chunks(value, 0))


_EVALUATION_FIELDS = (
    "seq",
    "created_at",
    "as_of",
    "playbook_hash",
    "playbook_id",
    "playbook_version",
    "source",
    "case_id",
    "record_id",
    "account_id",
    "event_id",
    "import_key",
    "status",
    "facts",
    "decisions",
    "fired",
    "no_action",
    "error",
)
_OUTCOME_FIELDS = ("seq", "evaluation_seq", "position", "action", "status", "who", "why", "at")
_QUARANTINED_FIELDS = ("seq", "received_at", "source", "event_id", "record_id", "code", "reason", "event")
_TASK_EVENT_FIELDS = ("seq", "task_id", "status", "who", "why", "as_of", "at", "state")


MIN_KEY_BYTES = 32
CHECKPOINT_FORMAT = "playbook-audit-checkpoint/1"


class AuditKeyError(Exception):
    """The log's key is needed and missing, or another key was given, or a key is too weak."""


def audit_key(raw: bytes | str) -> bytes:
    """A key as given (a key file's bytes or an environment variable), surrounding whitespace dropped."""
    key = (raw.encode() if isinstance(raw, str) else raw).strip()
    if len(key) < MIN_KEY_BYTES:
        raise AuditKeyError(
            f"an audit key must be at least {MIN_KEY_BYTES} bytes (e.g. the output of `openssl rand -hex 32`); "
            f"this one has {len(key)}"
        )
    return key


def key_id(key: bytes) -> str:
    """The key's public name: the start of its HMAC of a fixed text (the key cannot be found from it)."""
    return hmac.new(key, b"playbook audit key id", hashlib.sha256).hexdigest()[:16]


class _Seal:
    """How links are made: HMAC-SHA256 under a key, or plain SHA-256 for a log without one."""

    def __init__(self, key: bytes | None) -> None:
        self.key_id = None if key is None else key_id(key)
        self._mac = None if key is None else hmac.new(key, digestmod=hashlib.sha256)

    def link(self, prev_hash: str, body: str) -> str:
        data = f"{prev_hash}{body}".encode()
        if self._mac is None:
            return hashlib.sha256(data).hexdigest()
        mac = self._mac.copy()  # the key's padding is hashed once, not per link
        mac.update(data)
        return mac.hexdigest()


_PLAIN = _Seal(None)


_JSON_FIELDS = ("facts", "decisions", "fired", "error")
_PLAIN_FIELDS = tuple(f for f in _EVALUATION_FIELDS if f not in _JSON_FIELDS)
_RECORD_CHANGE_FIELDS = ("seq", "source", "record_id", "version", "state_hash")
_RECORD_STATE_FIELDS = ("source", "record_id", "fields", "stamps", "deleted", "version", "updated_at", "last_event_id")


def _evaluation_body(
    plain: Sequence[Any], children: Sequence[Sequence[Any]], json_texts: Sequence[str], params: Sequence[str]
) -> str:
    # The JSON columns are hashed as the text they are stored as, joined by a separator no JSON text
    # holds raw (U+001E); encoding them again inside one JSON document was the import's largest cost.
    return "\x1e".join([canonical([plain, children]), *json_texts, *params])


def _evaluation_hash(seal: _Seal, prev_hash: str, row: dict[str, Any], recs: Sequence[dict[str, Any]]) -> str:
    # Values are normalised as the database gives them back (SQLite has no booleans).
    plain = [bool(row[f]) if f == "no_action" else row[f] for f in _PLAIN_FIELDS]
    children = [[rec["position"], rec["action"], rec["rule"]] for rec in recs]
    body = _evaluation_body(plain, children, [row[f] for f in _JSON_FIELDS], [rec["params"] for rec in recs])
    return seal.link(prev_hash, body)


def _outcome_hash(seal: _Seal, prev_hash: str, row: dict[str, Any]) -> str:
    return seal.link(prev_hash, _link_body("outcomes", row))


def _record_change_hash(seal: _Seal, prev_hash: str, row: dict[str, Any]) -> str:
    return seal.link(prev_hash, _link_body("records", row))


def _quarantined_hash(seal: _Seal, prev_hash: str, row: dict[str, Any]) -> str:
    return seal.link(prev_hash, _link_body("quarantined", row))


def _link_body(chain: str, row: dict[str, Any]) -> str:
    """The text a link seals, but for an evaluation's (:func:`_evaluation_body`)."""
    if chain == "outcomes":
        return canonical([[row[f] for f in _OUTCOME_FIELDS], []])
    if chain == "quarantined":
        return canonical([[row[f] for f in _QUARANTINED_FIELDS], []])
    if chain == "tasks":
        return canonical([row[f] for f in _TASK_EVENT_FIELDS])
    return canonical([row[f] for f in _RECORD_CHANGE_FIELDS])


def _task_event_hash(seal: _Seal, prev_hash: str, row: dict[str, Any]) -> str:
    return seal.link(prev_hash, _link_body("tasks", row))


def _state_hash(row: dict[str, Any]) -> str:
    """A record's stored state, hashed as the database gives it back (SQLite has no booleans)."""
    values = [bool(row[f]) if f == "deleted" else row[f] for f in _RECORD_STATE_FIELDS]
    return hashlib.sha256(canonical(values).encode()).hexdigest()


def _link_hash(seal: _Seal, chain: str, row: dict[str, Any], children: Sequence[dict[str, Any]]) -> str:
    if chain == "evaluations":
        return _evaluation_hash(seal, row["prev_hash"], row, children)
    if chain == "outcomes":
        return _outcome_hash(seal, row["prev_hash"], row)
    if chain == "quarantined":
        return _quarantined_hash(seal, row["prev_hash"], row)
    if chain == "tasks":
        return _task_event_hash(seal, row["prev_hash"], row)
    return _record_change_hash(seal, row["prev_hash"], row)
