"""Lists as text, CSV and JSON Lines: stored evaluations (outcomes included), quarantined events and
tasks; what ``playbook history``, ``list`` and ``tasks list`` print and what the web console exports,
written once for both.

A CSV cell that a spreadsheet would run as a formula (it starts with ``=``, ``+``, ``-``, ``@``, a tab
or a carriage return) is written with a leading quote, OWASP's rule against CSV injection: a CRM
field can hold anything.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from engine.answers import outcome_texts
from engine.store import QuarantinedEvent, StoredEvaluation
from engine.tasks import Task

__all__ = [
    "FORMATS",
    "listing_row",
    "spreadsheet_safe",
    "write_csv",
    "write_evaluations",
    "write_json_lines",
    "write_quarantined",
    "write_tasks",
]

FORMATS = ("text", "json", "csv")

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """A cell a spreadsheet will not run as a formula (a leading quote)."""
    return f"'{value}" if isinstance(value, str) and value.startswith(_FORMULA_STARTS) else value


def listing_row(stored: StoredEvaluation) -> dict[str, Any]:
    """One evaluation as a flat row: ids, dates, playbook, actions, rules fired and the outcomes."""
    return {
        "evaluation": stored.seq,
        "created_at": stored.created_at,
        "as_of": stored.as_of,
        "playbook_id": stored.playbook_id,
        "playbook_version": stored.playbook_version,
        "playbook_hash": stored.playbook_hash,
        "case": stored.case_id,
        "record_id": stored.record_id,
        "account_id": stored.account_id,
        "status": stored.status,
        "actions": ";".join(r["id"] for r in stored.recommendations),
        "rules": ";".join(dict.fromkeys([*stored.fired.get("$rules", [])])),
        "outcomes": "; ".join(outcome_texts(stored)),
    }


def write_csv(rows: Iterable[StoredEvaluation], out: IO[str]) -> int:
    """The rows as CSV with a header (none when there are no rows); how many were written."""
    return _write_dicts(map(listing_row, rows), out)


def _write_dicts(rows: Iterable[dict[str, Any]], out: IO[str]) -> int:
    """Flat rows as CSV, the header from the first (none when there are none), each cell spreadsheet-safe."""
    count = 0
    writer: csv.DictWriter[str] | None = None
    for row in rows:
        if writer is None:
            writer = csv.DictWriter(out, fieldnames=list(row))
            writer.writeheader()
        writer.writerow({name: spreadsheet_safe(value) for name, value in row.items()})
        count += 1
    return count


def json_lines(rows: Iterable[StoredEvaluation]) -> Iterator[str]:
    """Each evaluation whole (facts, decisions, rules fired, recommendations, outcomes) as one JSON line.

    With its facts and the rules fired, a line is enough to replay the evaluation (``playbook replay --history``).
    """
    for stored in rows:
        whole = {**stored.to_json(), "import_key": stored.import_key, "fired": stored.fired, "facts": stored.facts}
        yield json.dumps(whole, ensure_ascii=False) + "\n"


def write_json_lines(rows: Iterable[StoredEvaluation], out: IO[str]) -> int:
    count = 0
    for line in json_lines(rows):
        out.write(line)
        count += 1
    return count


def write_evaluations(
    rows: Iterable[StoredEvaluation],
    fmt: str,
    out: IO[str],
    tasks_of: Callable[[StoredEvaluation], tuple[list[str], list[Any]]] | None = None,
) -> int:
    """The evaluations as ``fmt`` (text: a line each, its outcomes indented below); how many.  ``tasks_of``:
    an evaluation -> the text lines and JSON of its tasks' timelines (JSON lines and text carry them, CSV not)."""
    if fmt == "csv":
        return write_csv(rows, out)
    if fmt == "json" and tasks_of is None:
        return write_json_lines(rows, out)
    count = 0
    for stored in rows:
        count += 1
        if fmt == "json":
            assert tasks_of is not None
            out.write(json.dumps({**stored.to_json(), "tasks": tasks_of(stored)[1]}, ensure_ascii=False) + "\n")
            continue
        line = listing_row(stored)
        account = f"  account {stored.account_id}" if stored.account_id is not None else ""
        actions = line["actions"].replace(";", ", ") or "no action"
        if stored.status != "ok" and stored.error:
            actions = f"{stored.error['code']}: {stored.error['message']}"
        out.write(
            f"#{stored.seq}  {stored.as_of}  {stored.case_id}{account}  "
            f"playbook {stored.playbook_id} {stored.playbook_version} ({stored.playbook_hash[:12]})  "
            f"{stored.status}: {actions}\n"
        )
        for text in outcome_texts(stored):
            out.write(f"    outcome: {text}\n")
        for task_line in tasks_of(stored)[0] if tasks_of is not None else ():
            out.write(task_line + "\n")
    return count


def write_quarantined(events: Iterable[QuarantinedEvent], fmt: str, out: IO[str]) -> int:
    """Quarantined webhook events as ``fmt`` (CSV: the event itself as one JSON cell); how many."""
    if fmt == "csv":
        return _write_dicts(map(_quarantined_cells, events), out)
    count = 0
    for held in events:
        count += 1
        if fmt == "json":
            out.write(json.dumps(held.to_json(), ensure_ascii=False) + "\n")
        else:
            record = f"  record {held.record_id}" if held.record_id is not None else ""
            out.write(
                f"#{held.seq}  {held.received_at}  {held.source}  event {held.event_id}{record}  "
                f"{held.code}: {held.reason}\n"
            )
    return count


def _quarantined_cells(held: QuarantinedEvent) -> dict[str, Any]:
    data = held.to_json()
    data["event"] = json.dumps(data["event"], ensure_ascii=False, sort_keys=True)
    return data


def write_tasks(listed: Iterable[Task], fmt: str, out: IO[str]) -> int:
    """Tasks as ``fmt`` (CSV: a header only when there are tasks); how many."""
    if fmt == "csv":
        return _write_dicts((task.to_json() for task in listed), out)
    count = 0
    for task in listed:
        count += 1
        if fmt == "json":
            out.write(json.dumps(task.to_json(), ensure_ascii=False) + "\n")
        else:
            due = f"due {task.due}" if task.due else "no due date"
            out.write(f"task {task.id}  {task.status:<9}  {task.action}  record {task.record}  {task.owner}  {due}\n")
    return count
