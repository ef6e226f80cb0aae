"""Lists of stored evaluations as CSV and JSON Lines, outcomes included: what ``playbook history`` and
``playbook list`` print and what the web console exports, written once for both.

A CSV cell that a spreadsheet would run as a formula (it starts with ``=``, ``+``, ``-``, ``@``, a tab
or a carriage return) is written with a leading quote, OWASP's rule against CSV injection: a CRM
field can hold anything.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from typing import IO, Any

from engine.answers import outcome_texts
from engine.store import StoredEvaluation

__all__ = ["listing_row", "spreadsheet_safe", "write_csv", "write_json_lines"]

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
    count = 0
    writer: csv.DictWriter[str] | None = None
    for stored in rows:
        line = listing_row(stored)
        if writer is None:
            writer = csv.DictWriter(out, fieldnames=list(line))
            writer.writeheader()
        writer.writerow({name: spreadsheet_safe(value) for name, value in line.items()})
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
