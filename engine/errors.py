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
    "CaseError",
    "EngineFault",
    "Location",
    "PlaybookError",
    "Problem",
    "did_you_mean",
    "printable",
]


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
