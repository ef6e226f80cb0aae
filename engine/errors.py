"""Error types shared by every stage, and where in a file a problem lies.

Leaves say *what* went wrong (a code and a message); the stage that walks the
document says *where* (a :class:`Location`).  Codes are stable: tests and
integrations match on them, never on the wording.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "AUDIT_CODES",
    "CASE_CODES",
    "CHECK_CODES",
    "ERROR_CODES",
    "MAPPING_CODES",
    "PLAYBOOK_CODES",
    "QUARANTINE_CODES",
    "WEBHOOK_CODES",
    "CaseError",
    "EngineFault",
    "Location",
    "PlaybookError",
    "Problem",
    "did_you_mean",
    "printable",
]

# Every stable code the program emits, one set per table that documents it; tests/test_error_codes.py holds
# the source (no code emitted that is not here) and the docs (each set is exactly its table) to them.

# A playbook, mapping or test file's shape and meaning (docs/playbook-reference.md, Error codes).
PLAYBOOK_CODES = frozenset(
    {
        "yaml_syntax", "yaml_duplicate_key", "yaml_alias", "yaml_too_deep", "yaml_too_large",
        "yaml_ambiguous_bool", "yaml_bad_tag", "yaml_ambiguous_number", "yaml_bad_character",
        "yaml_complex_key", "number_too_long", "number_not_finite", "yaml_empty", "file_unreadable",
        "file_not_utf8", "unknown_key", "missing_key", "wrong_type", "bad_value", "bad_name", "empty",
        "duplicate_value", "schema_error", "missing_translation", "missing_values", "unknown_input",
        "unknown_decision", "unknown_parameter", "unknown_action", "unknown_value", "parameter_value",
        "operator_type", "operand_type", "interval_empty", "interval_bounds", "condition_mixed",
        "duplicate_id", "hit_policy_type", "otherwise_row", "decision_has_table", "decision_never_set",
        "decision_cycle", "wrong_input_type", "number_unreadable", "node_too_wide", "playbook_too_large",
        "for_each_type", "for_each_misuse", "unknown_reason", "source_mixed", "quote_not_in_course",
        "unknown_group_field", "unknown_aggregate", "aggregate_function", "aggregate_type", "aggregate_conflict",
        "wrong_level",
        "priority_repeated", "priority_unordered",
        "bad_duration", "anchor_not_date", "escalation_needs_due",
    }
)  # fmt: skip
# What the table checker finds in a valid playbook (docs/playbook-reference.md, The table checker).
CHECK_CODES = frozenset(
    {
        "table_gap", "table_overlap", "row_unreachable", "rule_unreachable", "decision_unused",
        "action_unreachable", "missing_label",
    }
)  # fmt: skip
# One case that could not be evaluated (docs/playbook-reference.md, Errors while evaluating a case).
CASE_CODES = frozenset(
    {
        "bad_input", "bad_json", "hit_policy_violation", "bad_output", "decision_conflict", "id_too_long",
        "stored_mismatch",
    }
)  # fmt: skip
# A mapping or an input that stops a run (docs/mapping-reference.md, Errors in the mapping or the input; Databases).
MAPPING_CODES = frozenset(
    {
        "mapping_unknown_preset", "mapping_unknown_column", "mapping_lookup_file", "mapping_lookup_order",
        "mapping_open_band", "mapping_band_order", "mapping_wrong_option", "input_encoding",
        "csv_duplicate_column", "csv_syntax", "json_syntax", "sql_url", "sql_connect", "sql_unknown_table",
        "sql_not_a_query", "sql_query", "sql_timeout", "sql_duplicate_column", "mapping_lookup_table",
    }
)  # fmt: skip
# A record set aside, the run going on (docs/mapping-reference.md, Every record is accounted for); a mapping's
# own `quarantine` rules name codes of their own.
QUARANTINE_CODES = frozenset(
    {
        "missing_field", "lookup_not_found", "bad_number", "bad_date", "bad_boolean", "unknown_value",
        "unstorable_text", "bad_row", "bad_json", "bad_encoding", "bad_record", "duplicate_case",
    }
)  # fmt: skip
# The webhook service's refusals (docs/webhooks.md, Error codes).
WEBHOOK_CODES = frozenset(
    {
        "malformed_payload", "event_in_future", "body_timeout", "bad_signature", "stale_timestamp",
        "bad_credentials", "unknown_organization", "body_too_large", "not_found", "route_disabled",
        "method_not_allowed", "http_error", "internal_error", "audit_log_tampered", "no_evaluation",
        "not_recommended", "ambiguous_action", "bad_status",
    }
)  # fmt: skip
# What `playbook audit verify` finds (docs/audit-threat-model.md, Kinds of problem).
AUDIT_CODES = frozenset(
    {
        "edited", "deleted", "inserted", "broken_link", "unchained", "not_keyed", "wrong_key", "truncated",
        "rewritten", "replaced", "key_changed", "checkpoint_forged", "checkpoint_other_key",
        "checkpoint_unreadable",
    }
)  # fmt: skip
ERROR_CODES = PLAYBOOK_CODES | CHECK_CODES | CASE_CODES | MAPPING_CODES | QUARANTINE_CODES | WEBHOOK_CODES | AUDIT_CODES


@dataclass(frozen=True, order=True)
class Location:
    """A place in a source file: 1-based line and column, plus the data path."""

    file: str
    line: int = 0
    col: int = 0
    path: tuple[str | int, ...] = field(default=(), compare=False)

    def __str__(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.col}"
        return self.file

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "col": self.col}


@dataclass(frozen=True)
class Problem:
    """One located problem in a playbook or mapping file.

    ``consequences`` are the problems that follow from this one (the uses of a misspelt section's
    names, say): reported folded under it.  ``rank`` orders problems of one file before their
    place does: the most fundamental first (0: the document's own shape, 1: other shapes,
    2: a root of other problems, 3: the rest).
    """

    location: Location
    code: str
    message: str
    consequences: tuple[Problem, ...] = field(default=(), compare=False)
    rank: int = field(default=3, compare=False)

    def __post_init__(self) -> None:
        # A name in a message may hold anything the file held (escapes included); a terminal must
        # never receive its control characters.
        if not self.message.isprintable():
            object.__setattr__(self, "message", printable(self.message))

    def __str__(self) -> str:
        line = f"{self.location}: {self.code}: {self.message}"
        if not self.consequences:
            return line
        count = len(self.consequences)
        uses = all(c.code.startswith("unknown_") for c in self.consequences)
        if uses:
            return f"{line} … and {count} {'use' if count == 1 else 'uses'} of it"
        return f"{line} … and {count} {'problem follows' if count == 1 else 'problems follow'} from it"

    def to_json(self) -> dict[str, Any]:
        """The problem for a program (``check --format json``): where, code, message, what follows from it."""
        out: dict[str, Any] = {
            **self.location.to_json(),
            "code": self.code,
            "message": self.message,
        }
        if self.consequences:
            out["consequences"] = [c.to_json() for c in self.consequences]
        return out

    def sort_key(self) -> tuple[str, int, int, int, str]:
        return (self.location.file, self.rank, self.location.line, self.location.col, self.code)


class PlaybookError(Exception):
    """A playbook could not be loaded: carries every problem found, the most fundamental first."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: list[Problem] = sorted(dict.fromkeys(problems), key=Problem.sort_key)
        super().__init__("\n".join(str(p) for p in self.problems))


class CaseError(Exception):
    """One input case could not be evaluated; the case id says which."""

    def __init__(
        self,
        case_id: str,
        code: str,
        message: str,
        *,
        input: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.case_id = case_id
        self.code = code
        self.message = message
        self.input = input  # the input field at fault, so the text can name it by its label
        # what the playbook's own names of the fault are (decision, rows, rules, values), so the text can label them
        self.details = details
        super().__init__(f"case {case_id}: {code}: {message}")

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.input is not None:
            error["input"] = self.input
        if self.details is not None:
            error["details"] = self.details
        return {"case": self.case_id, "error": error}


class EngineFault(Exception):
    """durable-rules did something the engine cannot trust (a bug, never bad input)."""


def printable(text: str) -> str:
    """``text`` with every character that is not printable written as its escape (``\\x07``)."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def did_you_mean(word: str, choices: Sequence[str] | Iterable[str]) -> str:
    """A ' (did you mean 'x'?)' suffix, or '' when nothing is close."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
