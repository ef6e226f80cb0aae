"""What the service's read-back routes read from the audit log: an evaluation as an API answers it.

``GET /evaluations/{n}`` and ``GET /records/{id}/latest`` answer with the stored evaluation,
each recommendation labelled in the reader's language with its course source (from the
playbook version that made it, which the log keeps by content hash), and the outcomes given
since.  The query for a record's latest evaluation is here, on the current
:class:`engine.store.Store` (SQLAlchemy Core, bound parameters), until the store offers one.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, select

from engine.loader import MemoryLoader, PlaybookLoader
from engine.model import Playbook
from engine.store import Store, evaluations

__all__ = ["Playbooks", "evaluation_answer", "latest_evaluation"]

# Served by ix_evaluations_record: the newest evaluation of a record, optionally of one source.
_LATEST = (
    select(evaluations.c.seq)
    .where(evaluations.c.record_id == bindparam("record_id"))
    .order_by(evaluations.c.seq.desc())
    .limit(1)
)
_LATEST_OF_SOURCE = (
    select(evaluations.c.seq)
    .where(evaluations.c.record_id == bindparam("record_id"), evaluations.c.source == bindparam("source"))
    .order_by(evaluations.c.seq.desc())
    .limit(1)
)


def latest_evaluation(store: Store, record_id: str, source: str | None = None) -> int | None:
    """The number of the record's newest evaluation (of ``source`` when given), or None."""
    with store.engine.connect() as conn:
        if source is None:
            seq = conn.execute(_LATEST, {"record_id": record_id}).scalar()
        else:
            seq = conn.execute(_LATEST_OF_SOURCE, {"record_id": record_id, "source": source}).scalar()
    return None if seq is None else int(seq)


class Playbooks:
    """Playbook versions by content hash: the one being served, and older ones read from the log once
    (kept in memory, built by ``loader``)."""

    def __init__(self, store: Store, current: Playbook, loader: PlaybookLoader | None = None) -> None:
        self.store = store
        self.current = current
        self.loader = MemoryLoader(loader)

    def get(self, content_hash: str) -> Playbook:
        if content_hash == self.current.content_hash:
            return self.current
        return self.loader.stored(self.store, content_hash)


def evaluation_answer(store: Store, playbooks: Playbooks, seq: int, lang: str) -> dict[str, Any]:
    """A stored evaluation with labelled recommendations and its outcomes; LookupError when there is none."""
    stored = store.get(seq)
    playbook = playbooks.get(stored.playbook_hash)
    answer = stored.to_json()
    answer["recommendations"] = [
        {
            **rec,
            "label": action.label.get(lang, rec["id"]) if action else rec["id"],
            "source": action.source.to_json() if action else None,
        }
        for rec in answer["recommendations"]
        for action in (playbook.actions.get(rec["id"]),)
    ]
    answer["lang"] = lang
    return answer
