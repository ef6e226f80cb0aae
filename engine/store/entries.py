"""What the store takes and gives: cases to append, stored evaluations, records' states,
quarantined events."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from engine.errors import CaseError
from engine.evaluate import Result
from engine.store.schema import ID_LENGTH

OUTCOME_STATUSES = ("accepted", "dismissed", "done")


@dataclass(frozen=True)
class StoredEvaluation:
    seq: int
    created_at: str
    as_of: str
    playbook_hash: str
    playbook_id: str
    playbook_version: str
    source: str
    case_id: str
    record_id: str | None
    account_id: str | None
    event_id: str | None
    import_key: str | None
    status: str
    facts: dict[str, Any]
    decisions: dict[str, Any]
    fired: dict[str, list[str]]
    no_action: bool
    error: dict[str, str] | None
    recommendations: list[dict[str, Any]]
    outcomes: list[dict[str, Any]] = field(default_factory=list)  # what became of the recommendations, in order

    def to_json(self) -> dict[str, Any]:
        """The evaluation as stored, each recommendation with its state: its latest outcome's status, else open."""
        states = {done["position"]: done["status"] for done in self.outcomes}  # in order: the latest wins
        return {
            "evaluation": self.seq,
            "created_at": self.created_at,
            "as_of": self.as_of,
            "playbook": {"id": self.playbook_id, "version": self.playbook_version, "hash": self.playbook_hash},
            "source": self.source,
            "case": self.case_id,
            "record_id": self.record_id,
            "account_id": self.account_id,
            "event_id": self.event_id,
            "status": self.status,
            "decisions": self.decisions,
            "recommendations": [{**rec, "state": states.get(rec["position"], "open")} for rec in self.recommendations],
            "no_action": self.no_action,
            "error": self.error,
            "outcomes": self.outcomes,
        }


@dataclass(frozen=True)
class QuarantinedEvent:
    """An event set aside as bad data: given to :meth:`Writer.quarantine`, read back by :meth:`Store.quarantined`."""

    source: str
    event_id: str
    record_id: str | None
    received_at: str  # ISO 8601, UTC
    code: str
    reason: str
    event: dict[str, Any]  # the event as received
    seq: int | None = None  # its place in the chain, once stored

    def to_json(self) -> dict[str, Any]:
        return {
            "quarantined": self.seq,
            "received_at": self.received_at,
            "source": self.source,
            "event_id": self.event_id,
            "record_id": self.record_id,
            "code": self.code,
            "reason": self.reason,
            "event": self.event,
        }


@dataclass(frozen=True)
class RecordState:
    """The last known state of one record that events change piece by piece.

    ``version`` counts the changes saved (0: never stored); ``last_event_id`` is the event that
    made the last one.  States are read and saved through a :class:`Writer`.
    """

    source: str
    record_id: str
    fields: dict[str, Any]
    stamps: dict[str, int]
    deleted: bool = False
    version: int = 0
    updated_at: str | None = None
    last_event_id: str | None = None


@dataclass(frozen=True)
class Appended:
    """One case given to :meth:`Writer.append`: its result or error, and where it came from."""

    outcome: Result | CaseError
    facts: dict[str, Any]
    import_key: str | None = None
    event_id: str | None = None


def _ids(facts: dict[str, Any]) -> tuple[str | None, str | None]:
    opportunity: dict[str, Any] = facts["opportunity"] if isinstance(facts.get("opportunity"), dict) else {}
    account: dict[str, Any] = facts["account"] if isinstance(facts.get("account"), dict) else {}
    record = opportunity.get("id") or account.get("id")
    account_id = opportunity.get("account_id") or account.get("id")
    return (str(record) if record is not None else None, str(account_id) if account_id is not None else None)


def oversized_id(case_id: str, facts: dict[str, Any]) -> str | None:
    """Why a case cannot be filed under its ids (one is over ID_LENGTH characters), or None when all fit."""
    record_id, account_id = _ids(facts)
    for what, value in (("case id", case_id), ("record id", record_id), ("account id", account_id)):
        if value is not None and len(value) > ID_LENGTH:
            return f"the {what} '{value[:40]}...' is over {ID_LENGTH} characters, more than the audit log files"
    return None


def _outcome_of(row: Any) -> dict[str, Any]:
    return {
        "outcome": row.seq,
        "action": row.action,
        "position": row.position,
        "status": row.status,
        "who": row.who,
        "why": row.why,
        "at": row.at,
    }


def _state_of(row: Any) -> RecordState:
    return RecordState(
        source=row.source,
        record_id=row.record_id,
        fields=json.loads(row.fields),
        stamps=json.loads(row.stamps),
        deleted=bool(row.deleted),
        version=int(row.version),
        updated_at=row.updated_at,
        last_event_id=row.last_event_id,
    )
