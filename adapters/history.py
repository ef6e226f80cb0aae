"""``playbook replay --history``: a playbook change replayed over an exported history, locally or on Apache Spark.

The history is the audit log exported as JSON Lines by ``playbook list --format json`` (or a query
writing the same lines): one line per stored evaluation, whole — its number (``evaluation``), the
case's facts, ``as_of``, the playbook that made it, its decisions, the rules fired and its
recommendations.  A file, a folder of files or a glob: the exports of several months, together.

As ``playbook replay`` does over the audit log itself (engine/replay.py), each record's newest
evaluation is replayed (a record is its record id, else its case id), or with ``every`` every one,
those as of ``since`` or later; in sequence order, so the report, its examples too, is the one
``playbook replay`` gives over the same log.  The unit of work is a partition of history lines in
sequence order: :func:`replay_partition` compares each under the baseline and the candidate
(:func:`engine.replay.changes_of`) and gives back the changes and a tally of what did not change;
:func:`gather` adds them up into the report.  The same code runs on one machine
(:func:`replay_local`, which holds the lines replayed in memory) and on Spark
(adapters/spark_history.py).  A line that does not read as an evaluation is counted, not replayed.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from engine.compile import compile_playbook
from engine.evaluate import Evaluator
from engine.model import Playbook
from engine.replay import ReplayReport, changes_of
from engine.store import StoredEvaluation
from engine.validate import load_playbook_text

__all__ = ["UNREADABLE", "ReplayJob", "gather", "replay_local", "replay_partition", "selection_key", "stored_of"]

UNREADABLE = "unreadable in the history"
"""The key under which a report's ``not_replayed`` counts the lines that do not read as an evaluation."""

_EVALUATORS: dict[str, Evaluator] = {}  # content hash -> this process's evaluator of that playbook


@dataclass(frozen=True)
class ReplayJob:
    """What a worker needs, picklable: the two playbooks as text, and the files they were read from."""

    candidate_text: str
    candidate_file: str
    baseline_text: str
    baseline_file: str

    def playbooks(self) -> tuple[Playbook, Playbook]:
        """(candidate, baseline)."""
        return (
            load_playbook_text(self.candidate_text, self.candidate_file),
            load_playbook_text(self.baseline_text, self.baseline_file),
        )


def stored_of(text: str) -> StoredEvaluation:
    """One history line as the evaluation it exports; ValueError when it is not one."""
    try:
        data = json.loads(text)
        playbook = data["playbook"]
        return StoredEvaluation(
            seq=int(data["evaluation"]),
            created_at=data["created_at"],
            as_of=data["as_of"],
            playbook_hash=playbook["hash"],
            playbook_id=playbook["id"],
            playbook_version=playbook["version"],
            source=data["source"],
            case_id=data["case"],
            record_id=data["record_id"],
            account_id=data["account_id"],
            event_id=data["event_id"],
            import_key=data.get("import_key"),
            status=data["status"],
            facts=data["facts"],
            decisions=data["decisions"],
            fired=data["fired"],
            no_action=bool(data["no_action"]),
            error=data["error"],
            recommendations=[{k: v for k, v in rec.items() if k != "state"} for rec in data["recommendations"]],
            outcomes=data.get("outcomes") or [],
        )
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"not an exported evaluation: {error}") from None


def selection_key(text: str) -> tuple[int, str, str] | None:
    """(evaluation number, record, as_of) of a history line: what the lines replayed are chosen by; else None."""
    try:
        data = json.loads(text)
        record = data["record_id"] if data.get("record_id") is not None else data.get("case")
        if isinstance(data["evaluation"], int) and isinstance(record, str) and isinstance(data["as_of"], str):
            return data["evaluation"], record, data["as_of"]
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


def _evaluators(candidate: Playbook, baseline: Playbook) -> dict[str, Evaluator]:
    for playbook in (candidate, baseline):
        if playbook.content_hash not in _EVALUATORS:
            # kept for the life of the process: a worker replays partition after partition
            _EVALUATORS[playbook.content_hash] = Evaluator(compile_playbook(playbook))
    return {p.content_hash: _EVALUATORS[p.content_hash] for p in (candidate, baseline)}


def replay_partition(job: ReplayJob, lines: Iterable[str]) -> Iterator[tuple[Any, ...]]:
    """Replay history lines given in sequence order: ``("change", Change)`` for each that changes or fails,
    then ``("tally", unchanged, first as_of, last as_of, not replayed)`` for the rest."""
    candidate, baseline = job.playbooks()
    skipped: Counter[str] = Counter()
    unchanged = 0
    dates: list[str] = []

    def evaluations() -> Iterator[StoredEvaluation]:
        for text in lines:
            try:
                yield stored_of(text)
            except ValueError:
                skipped[UNREADABLE] += 1

    for change in changes_of(evaluations(), _evaluators(candidate, baseline), candidate, baseline, skipped):
        if change.changed or change.failed is not None:
            yield "change", change
        else:
            unchanged += 1
            dates = [min([change.as_of, *dates[:1]]), max([change.as_of, *dates[1:]])]
    first, last = dates or (None, None)
    yield "tally", unchanged, first, last, skipped


def gather(report: ReplayReport, items: Iterable[tuple[Any, ...]]) -> ReplayReport:
    """Add the partitions' changes, in sequence order, and tallies to ``report``."""
    for item in items:
        if item[0] == "change":
            report.add(item[1])
            continue
        _, unchanged, first, last, skipped = item
        report.replayed += unchanged
        report.skipped.update(skipped)
        if first is not None:
            dates = report.as_of_range
            report.as_of_range = [min([first, *dates[:1]]), max([last, *dates[1:]])]
    return report


def replay_local(
    job: ReplayJob, files: list[str], report: ReplayReport, *, since: str | None = None, every: bool = False
) -> ReplayReport:
    """Replay the history in ``files`` in this process (the lines replayed held in memory)."""
    chosen: list[tuple[int, str, str, str]] = []  # (evaluation, record, as_of, line)
    unreadable = 0
    for file in files:
        with open(file, encoding="utf-8") as handle:
            for text in handle:
                if not text.strip():
                    continue
                key = selection_key(text)
                if key is None:
                    unreadable += 1
                else:
                    chosen.append((*key, text))
    if not every:
        newest: dict[str, int] = {}
        for seq, record, _, _ in chosen:
            newest[record] = max(seq, newest.get(record, seq))
        chosen = [line for line in chosen if newest[line[1]] == line[0]]
    if since is not None:
        chosen = [line for line in chosen if line[2] >= since]
    chosen.sort(key=lambda line: line[0])
    if unreadable:
        report.skipped[UNREADABLE] += unreadable
    return gather(report, replay_partition(job, (line[3] for line in chosen)))
