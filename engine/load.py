"""YAML text -> plain data plus a map of where every key and value stands.

Only safe loading: PyYAML's composer builds nodes, this module turns them into
dicts, lists and scalars itself.  It refuses what a hand-edited playbook never
needs and an attacker would use (anchors and aliases, very deep nesting, huge
files) and what silently changes meaning (duplicate keys, YAML 1.1 booleans
such as an unquoted ``no``, an octal ``010`` or a sexagesimal ``1:30``), and numbers
nothing downstream can hold (infinities, NaN, integers of thousands of digits).  Nothing
here knows the playbook schema.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine.errors import Location, PlaybookError, Problem

__all__ = ["MAX_BYTES", "MAX_DEPTH", "Document", "load_file", "load_text"]

MAX_BYTES = 2 * 1024 * 1024
MAX_DEPTH = 64

Path_ = tuple[str | int, ...]

# The YAML 1.1 spellings of true/false that are not literally true/false.
_SURPRISING_BOOL = re.compile(r"^(y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF)$")
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
# YAML 1.1 reads these as base 8 and base 60 (010 is 8, 1:30 is 90); YAML 1.2 and people do not.
_SURPRISING_NUMBER = re.compile(r"^[-+]?(0[0-7_]+|[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?)$")
# YAML 1.2's octal, which YAML 1.1 (and so this loader) reads as text: 0o10 is 8 to some readers, "0o10" to others.
_OCTAL_12 = re.compile(r"^[-+]?0o[0-7_]+$")
_TEXT_TAG = "tag:yaml.org,2002:str"


@dataclass
class Document:
    """Loaded data and, for every data path, where its key and its value start."""

    file: str
    data: Any
    text: str
    value_marks: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    key_marks: dict[Path_, tuple[int, int]] = field(default_factory=dict)

    def at(self, path: Path_, *, key: bool = False) -> Location:
        """The location of the value (or its key) at ``path``, else its nearest parent."""
        marks = self.key_marks if key else self.value_marks
        probe = tuple(path)
        while True:
            if probe in marks:
                line, col = marks[probe]
                return Location(self.file, line, col, tuple(path))
            if key and probe in self.value_marks:
                line, col = self.value_marks[probe]
                return Location(self.file, line, col, tuple(path))
            if not probe:
                return Location(self.file, 1, 1, tuple(path))
            probe = probe[:-1]


class _Refused(Exception):
    def __init__(self, mark: yaml.Mark | None, code: str, message: str) -> None:
        self.mark = mark
        self.code = code
        self.message = message


class _GuardedLoader(yaml.SafeLoader):
    """SafeLoader whose composer refuses aliases and nesting deeper than MAX_DEPTH."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise _Refused(
                event.start_mark,
                "yaml_alias",
                "anchors and aliases are not allowed in playbooks; write the value out",
            )
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Refused(
                self.peek_event().start_mark,  # type: ignore[no-untyped-call]
                "yaml_too_deep",
                f"nesting deeper than {MAX_DEPTH} levels",
            )
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _mark(mark: yaml.Mark) -> tuple[int, int]:
    return (mark.line + 1, mark.column + 1)


class _Builder:
    def __init__(self, doc: Document, loader: _GuardedLoader) -> None:
        self.doc = doc
        self.loader = loader
        self.problems: list[Problem] = []

    def problem(self, mark: yaml.Mark, code: str, message: str) -> None:
        line, col = _mark(mark)
        self.problems.append(Problem(Location(self.doc.file, line, col), code, message))

    def build(self, node: yaml.Node, path: Path_) -> Any:
        self.doc.value_marks[path] = _mark(node.start_mark)
        if isinstance(node, yaml.MappingNode):
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    self.problem(key_node.start_mark, "yaml_complex_key", "keys must be plain words")
                    continue
                key = self.scalar(key_node)
                if not isinstance(key, str | int):
                    key = str(key)
                if key in result:
                    self.problem(
                        key_node.start_mark,
                        "yaml_duplicate_key",
                        f"key '{key}' appears twice in this mapping; the first is at line "
                        f"{self.doc.key_marks[(*path, key)][0]}",
                    )
                    continue
                self.doc.key_marks[(*path, key)] = _mark(key_node.start_mark)
                result[key] = self.build(value_node, (*path, key))
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        assert isinstance(node, yaml.ScalarNode)
        return self.scalar(node)

    def scalar(self, node: yaml.ScalarNode) -> Any:
        if node.tag == _TIMESTAMP_TAG:
            return node.value  # dates stay ISO strings; the schema decides what they mean
        if node.tag in _NUMBER_TAGS and node.style is None and _SURPRISING_NUMBER.match(node.value):
            self.problem(
                node.start_mark,
                "yaml_ambiguous_number",
                f"unquoted '{node.value}' is a base-{60 if ':' in node.value else 8} number in YAML 1.1; "
                f"quote it ('{node.value}') for text, or write the number in decimal",
            )
            return node.value
        if node.tag == _TEXT_TAG and node.style is None and _OCTAL_12.match(node.value):
            self.problem(
                node.start_mark,
                "yaml_ambiguous_number",
                f"unquoted '{node.value}' is text in YAML 1.1 and a base-8 number in YAML 1.2; "
                f"quote it ('{node.value}') for text, or write the number in decimal",
            )
            return node.value
        try:
            value = self.loader.construct_object(node, deep=True)
        except ValueError:  # Python refuses to read an integer of more than 4,300 digits
            self.problem(node.start_mark, "number_too_long", f"a number of {len(node.value)} characters")
            return None
        if isinstance(value, float) and not math.isfinite(value):
            self.problem(
                node.start_mark,
                "number_not_finite",
                f"'{node.value}' is not a finite number; leave the bound out for no limit",
            )
            return None
        if isinstance(value, bool) and node.style is None and _SURPRISING_BOOL.match(node.value):
            self.problem(
                node.start_mark,
                "yaml_ambiguous_bool",
                f"unquoted '{node.value}' reads as {str(value).lower()} in YAML 1.1; "
                f"quote it ('{node.value}') for text, or write {str(value).lower()}",
            )
        return value


def _plain_words(exc: yaml.MarkedYAMLError, text: str) -> tuple[str, tuple[int, int] | None]:
    """What a parser error usually means, in the words of someone editing the file ('' when it is not
    one of the usual ones), and the line and column of the cause when that is not where the parser stopped."""
    problem, context = exc.problem or "", exc.context or ""
    opened = f"line {exc.context_mark.line + 1}" if exc.context_mark else "above"
    if "'\\t'" in problem or "\t" in problem:
        return "a tab: YAML indents with spaces only; replace the tab with spaces", None
    if "could not find expected ':'" in problem:
        return "a missing ':' after this key (write 'key: value')", _mark(
            exc.context_mark
        ) if exc.context_mark else None
    if "mapping values are not allowed" in problem and exc.problem_mark is not None:
        lines = text.split("\n")
        above = [
            (i, t) for i, t in enumerate(lines[: exc.problem_mark.line]) if t.strip() and not t.lstrip().startswith("#")
        ]
        if above and ":" not in above[-1][1] and not above[-1][1].lstrip().startswith("- "):
            number, line = above[-1]
            key = line.strip()
            if len(key) > 80:  # the line may be anything, thousands of characters long: quote its start
                key = f"{key[:80]}…' ({len(key)} characters)"
            else:
                key += "'"
            return f"a missing ':' after the key '{key}", (number + 1, len(line) - len(line.lstrip()) + 1)
        return (
            "a ':' where none can be: this line is indented deeper than the key above it allows, "
            "or a value holds ': ' and needs quotes"
        ), None
    if "expected <block end>" in problem:
        if "'?'" in problem or "<scalar>" in problem or "block collection" in context:
            return "a key among list items, or a list item indented differently from the others above it", None
        return "this line's indentation does not match the lines above: line it up with the keys beside it", None
    if problem.startswith("expected ',' or '}'") or problem.startswith("expected ',' or ']'"):
        bracket = "{" if "}" in problem else "["
        return f"the '{bracket}' opened on {opened} is not closed before this point", None
    if "quoted scalar" in context and "end of stream" in problem:
        return f"the quote opened on {opened} is never closed", None
    return "", None


def _line_col(text: str, position: int) -> tuple[int, int]:
    before = text[:position]
    return before.count("\n") + 1, position - (before.rfind("\n") + 1) + 1


def load_text(text: str, file: str = "<string>") -> Document:
    """Parse YAML text; raise :class:`PlaybookError` with every problem found."""
    doc = Document(file=file, data=None, text=text)
    size = len(text.encode("utf-8"))
    if size > MAX_BYTES:
        raise PlaybookError(
            [Problem(Location(file, 1, 1), "yaml_too_large", f"{size} bytes; the limit is {MAX_BYTES}")]
        )
    loader: _GuardedLoader | None = None
    try:
        loader = _GuardedLoader(text)  # the reader refuses control characters here, before parsing
        node = loader.get_single_node()
        if node is None:
            raise PlaybookError([Problem(Location(file, 1, 1), "yaml_empty", "the file is empty")])
        builder = _Builder(doc, loader)
        doc.data = builder.build(node, ())
    except _Refused as refused:
        line, col = _mark(refused.mark) if refused.mark else (1, 1)
        raise PlaybookError([Problem(Location(file, line, col), refused.code, refused.message)]) from None
    except yaml.reader.ReaderError as exc:
        line, col = _line_col(text, exc.position)
        raise PlaybookError(
            [
                Problem(
                    Location(file, line, col),
                    "yaml_bad_character",
                    f"the character U+{exc.character if isinstance(exc.character, int) else 0:04X} "
                    "(a control character) is not allowed in YAML; remove it",
                )
            ]
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = _mark(mark) if mark else (1, 1)
        reason = exc.problem or exc.context or "not valid YAML"
        plain, cause = _plain_words(exc, text)
        message = f"{plain} (the parser says: {reason})" if plain else reason
        line, col = cause or (line, col)
        raise PlaybookError([Problem(Location(file, line, col), "yaml_syntax", message)]) from None
    except yaml.YAMLError as exc:
        raise PlaybookError([Problem(Location(file, 1, 1), "yaml_syntax", str(exc))]) from None
    finally:
        if loader is not None:
            loader.dispose()
    if builder.problems:
        raise PlaybookError(builder.problems)
    return doc


def load_file(path: str | Path) -> Document:
    """Read and parse a YAML file (UTF-8, optional BOM)."""
    file = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise PlaybookError([Problem(Location(file), "file_unreadable", exc.strerror or str(exc))]) from None
    if len(raw) > MAX_BYTES:
        raise PlaybookError(
            [Problem(Location(file, 1, 1), "yaml_too_large", f"{len(raw)} bytes; the limit is {MAX_BYTES}")]
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PlaybookError(
            [Problem(Location(file, 1, 1), "file_not_utf8", f"not UTF-8 text (byte {exc.start})")]
        ) from None
    return load_text(text, file)
