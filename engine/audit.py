"""Jobs over the audit log: resumable imports, re-evaluation for explanations, outcomes of recommendations.

Replay under another playbook is engine/replay.py.

These join the evaluator and the store; neither of those knows the other.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from engine.compile import compile_playbook
from engine.errors import CaseError
from engine.evaluate import Evaluator, Result
from engine.limits import BATCH, ID_LENGTH
from engine.loader import PlaybookLoader
from engine.model import Playbook
from engine.store import Appended, Store, StoredEvaluation, iter_chunks, oversized_id

__all__ = [
    "AmbiguousAction",
    "ImportItem",
    "StoredMismatch",
    "UnknownEvaluation",
    "import_cases",
    "outcome_to_file",
    "recommendation_position",
    "record_outcome",
    "rederive",
    "reevaluate",
]


@dataclass(frozen=True)
class ImportItem:
    """One input case on its way to the log: a key that names it for resuming, and the case or its error."""

    key: str | None
    case: tuple[str, dict[str, Any]] | CaseError
    event_id: str | None = None


class StoredMismatch(Exception):
    """Re-evaluating a stored case under its stored playbook does not give what was stored."""


def import_cases(
    store: Store,
    evaluator: Evaluator,
    items: Iterable[ImportItem],
    as_of: dt.date,
    *,
    source: str,
    batch: int = BATCH,
) -> Iterator[tuple[Result | CaseError, int]]:
    """Evaluate and store cases, yielding each outcome with its evaluation number once committed.

    Items already stored under (source, key) are skipped, so a run stopped at any point
    and started again stores every case exactly once; each batch is one transaction.
    """
    playbook = evaluator.playbook
    for chunk in iter_chunks(items, batch):
        appended, outcomes = [], []
        for item in chunk:
            if isinstance(item.case, CaseError):
                outcome: Result | CaseError = item.case
                facts: dict[str, Any] = {}
            else:
                case_id, case = item.case
                outcome, facts = outcome_to_file(evaluator, case_id, case, as_of)
            appended.append(Appended(outcome, facts, import_key=item.key, event_id=item.event_id))
            outcomes.append(outcome)
        seqs = store.append(playbook, appended, source=source, as_of=as_of)
        for outcome, seq in zip(outcomes, seqs, strict=True):
            if seq > 0:
                yield outcome, seq


def outcome_to_file(
    evaluator: Evaluator, case_id: str, facts: dict[str, Any], as_of: dt.date
) -> tuple[Result | CaseError, dict[str, Any]]:
    """A case's result or error, and the facts to file it with, for :meth:`engine.store.Writer.append`.

    A case whose ids are too long to file is not evaluated: it is kept as a failed case
    (``id_too_long``) under its id cut short, without its facts.
    """
    problem = oversized_id(case_id, facts)
    if problem is not None:
        return CaseError(case_id[:ID_LENGTH], "id_too_long", problem), {}
    try:
        return evaluator.evaluate_case(facts, as_of, case_id), facts
    except CaseError as error:
        return error, facts


def reevaluate(
    store: Store, seq: int, *, playbook_of: Callable[[str], Playbook] | None = None
) -> tuple[StoredEvaluation, Result]:
    """The stored evaluation and its full trace, re-derived under the stored playbook text and checked.

    ``playbook_of``: the playbook of a content hash, from the stored text (a server keeps them read: a
    :class:`~engine.loader.PlaybookLoader`'s ``stored``), else built from the text.
    """
    stored = store.get(seq)
    playbook = (
        playbook_of(stored.playbook_hash) if playbook_of else PlaybookLoader().stored(store, stored.playbook_hash)
    )
    with compile_playbook(playbook) as compiled:
        return stored, rederive(stored, Evaluator(compiled, cache_size=0))


def rederive(stored: StoredEvaluation, evaluator: Evaluator) -> Result:
    """The full trace of a stored evaluation, evaluated again by ``evaluator`` (one of its playbook version,
    built with ``cache_size=0`` so every question goes to durable-rules) and checked against what was stored.

    A server keeps one evaluator per stored playbook version (the compiled rules depend only on its text);
    the case itself is evaluated again on every call.
    """
    if stored.status != "ok" or stored.error:
        raise StoredMismatch(f"evaluation {stored.seq} is a failed case: {stored.error}")
    if evaluator.playbook.content_hash != stored.playbook_hash or evaluator.cache_size:
        raise ValueError(f"evaluation {stored.seq} needs an uncached evaluator of playbook {stored.playbook_hash[:12]}")
    seq = stored.seq
    result = evaluator.evaluate_case(stored.facts, dt.date.fromisoformat(stored.as_of), stored.case_id)
    again = [(r["id"], r["rule"], r["params"]) for r in result.recommendations]
    kept = [(r["id"], r["rule"], r["params"]) for r in stored.recommendations]
    if result.decisions != stored.decisions or result.fired() != stored.fired or again != kept:
        differing = [
            f"{name}: stored {stored.decisions.get(name)!r}, now {result.decisions.get(name)!r}"
            for name in sorted(set(stored.decisions) | set(result.decisions))
            if stored.decisions.get(name) != result.decisions.get(name)
        ]
        # Evaluations made before missing values became unknown (program 0.2) may differ so, untouched.
        raise StoredMismatch(
            f"evaluation {seq} does not match its re-evaluation under playbook {stored.playbook_hash[:12]}"
            + (f" ({'; '.join(differing)})" if differing else " (the rules fired or the recommendations differ)")
            + "; run playbook audit verify: if the log verifies, the evaluation was made by an earlier version "
            "of this program that read the playbook differently (before 0.2 a missing value counted as false)"
        )
    return result


class UnknownEvaluation(LookupError):
    """An evaluation number the audit log does not hold."""


class AmbiguousAction(LookupError):
    """An outcome names an action its evaluation recommended more than once, without saying by which rule."""


def recommendation_position(stored: StoredEvaluation, action: str, rule: str | None = None) -> int:
    """The position of the one recommendation named by ``action`` (an action id, ``rule:action`` or a
    position), of ``rule`` when given.  LookupError when there is none, AmbiguousAction when several."""
    if ":" in action and rule is None:
        rule, _, action = action.partition(":")
    matching = [
        rec
        for rec in stored.recommendations
        if (rec["id"] == action or str(rec["position"]) == action) and rule in (None, rec["rule"])
    ]
    if len(matching) > 1:
        qualified = ", ".join(f"{rec['rule']}:{rec['id']}" for rec in matching)
        raise AmbiguousAction(
            f"evaluation {stored.seq} recommended '{action}' {len(matching)} times, by different rules; "
            f"say which: {qualified}"
        )
    if not matching:
        by = f" by rule '{rule}'" if rule is not None else ""
        offered = ", ".join(dict.fromkeys(rec["id"] for rec in stored.recommendations)) or "nothing"
        raise LookupError(f"evaluation {stored.seq} did not recommend '{action}'{by} (it recommended: {offered})")
    return int(matching[0]["position"])


def record_outcome(
    store: Store,
    evaluation: int,
    action: str,
    status: str,
    who: str,
    why: str,
    *,
    rule: str | None = None,
    as_of: str | None = None,
) -> int:
    """Record what became of one recommendation; see :func:`recommendation_position` for naming it.

    UnknownEvaluation when the evaluation does not exist, LookupError when it did not recommend the
    action, AmbiguousAction when it did so more than once; ValueError for an unknown status.  The record's
    task of that action moves with it on ``as_of`` (a date, YYYY-MM-DD; today when None).
    """
    try:
        stored = store.get(evaluation)
    except LookupError:
        raise UnknownEvaluation(f"there is no evaluation {evaluation} in the audit log") from None
    position = recommendation_position(stored, action, rule)
    return store.record_outcome(evaluation, str(position), status, who, why, as_of=as_of)
