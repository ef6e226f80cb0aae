"""YAML text -> plain data plus a map of where every key and value stands.

Only safe loading: this module composes the parser's events into dicts, lists
and scalars itself, with PyYAML's safe constructors for the scalars.  It refuses
what a hand-edited playbook never needs and an attacker would use (anchors and
aliases, very deep nesting, huge files) and what silently changes meaning
(duplicate keys, YAML 1.1 booleans such as an unquoted ``no``, an octal ``010``
or a sexagesimal ``1:30``), and numbers nothing downstream can hold (infinities,
NaN, integers of thousands of digits).  Nothing here knows the playbook schema.

libyaml's parser reads first (about ten times faster); PyYAML's reads again
whenever the two might differ, so messages and marks are PyYAML's.
"""

from __future__ import annotations

import gc
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine.errors import Location, PlaybookError, Problem

__all__ = ["MAX_BYTES", "MAX_DEPTH", "Document", "collector_paused", "load_file", "load_text"]

MAX_BYTES = 2 * 1024 * 1024
MAX_DEPTH = 64

Path_ = tuple[str | int, ...]

# The YAML 1.1 spellings of true/false that are not literally true/false.
_SURPRISING_BOOL = re.compile(r"^(y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF)$")
_STR_TAG = "tag:yaml.org,2002:str"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
# YAML 1.1 reads these as base 8, base 60 and base 2 (010 is 8, 1:30 is 90, 0b10 is 2); YAML 1.2 and people do not.
_SURPRISING_NUMBER = re.compile(r"^[-+]?(0[0-7_]+|[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?|0b[01_]+)$")
# YAML 1.2's octal, which YAML 1.1 (and so this loader) reads as text: 0o10 is 8 to some readers, "0o10" to others.
_OCTAL_12 = re.compile(r"^[-+]?0o[0-7_]+$")


def _base_of(number: str) -> int:
    return 60 if ":" in number else 2 if "b" in number else 8


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
    def __init__(self, mark: Any, code: str, message: str) -> None:
        self.mark = mark
        self.code = code
        self.message = message


class _Unsure(Exception):
    """The fast parser may not read this text as PyYAML's does."""


def _mark(mark: Any) -> tuple[int, int]:
    """(line, column) from 1, of either parser's mark."""
    return (mark.line + 1, mark.column + 1)


_Loader = Any  # PyYAML's SafeLoader or its CSafeLoader: alike but for the parser
# libyaml's parser, when PyYAML was built with it (its wheels are).
_FAST_LOADER: type[_Loader] | None = getattr(yaml, "CSafeLoader", None)


class _Builder:
    """Data and marks straight from the parser's events, with no node tree in between (a tree of
    3,000 table rows cost more to build than to parse).

    Composes as PyYAML's composer does, and refuses aliases and nesting deeper than MAX_DEPTH
    before they are followed; both parsers (libyaml's and PyYAML's own) feed it alike.
    """

    def __init__(self, doc: Document, loader: _Loader) -> None:
        self.doc = doc
        self.loader = loader
        self.problems: list[Problem] = []
        self.anchors: dict[str, Any] = {}  # an anchor's name: where it was first set
        self.fast = not isinstance(loader, yaml.SafeLoader)

    def problem(self, mark: Any, code: str, message: str) -> None:
        line, col = _mark(mark)
        self.problems.append(Problem(Location(self.doc.file, line, col), code, message))

    def document(self) -> Any:
        """The one document's data; raise PlaybookError(yaml_empty) when there is none."""
        loader = self.loader
        loader.get_event()  # the stream's start
        if loader.check_event(yaml.StreamEndEvent):
            raise PlaybookError([Problem(Location(self.doc.file, 1, 1), "yaml_empty", "the file is empty")])
        loader.get_event()  # the document's start
        root: Any = loader.peek_event()
        data = self.build((), 1)
        loader.get_event()  # the document's end
        if not loader.check_event(yaml.StreamEndEvent):
            second: Any = loader.get_event()
            raise yaml.composer.ComposerError(
                "expected a single document in the stream",
                root.start_mark,
                "but found another document",
                second.start_mark,
            )
        return data

    def start(self, depth: int) -> Any:
        """The next node's first event, once the guards and the composer's anchor rule let it pass."""
        loader = self.loader
        event: Any = loader.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise _Refused(
                event.start_mark,
                "yaml_alias",
                "anchors and aliases are not allowed in playbooks; write the value out",
            )
        if depth > MAX_DEPTH:
            raise _Refused(event.start_mark, "yaml_too_deep", f"nesting deeper than {MAX_DEPTH} levels")
        anchor = event.anchor
        if anchor is not None:
            if anchor in self.anchors:
                raise yaml.composer.ComposerError(
                    f"found duplicate anchor {anchor!r}; first occurrence",
                    self.anchors[anchor],
                    "second occurrence",
                    event.start_mark,
                )
            self.anchors[anchor] = event.start_mark
        return loader.get_event()

    def build(self, path: Path_, depth: int) -> Any:
        event = self.start(depth)
        self.doc.value_marks[path] = _mark(event.start_mark)
        if isinstance(event, yaml.ScalarEvent):
            return self.scalar(event)
        if isinstance(event, yaml.SequenceStartEvent):
            items: list[Any] = []
            while not self.loader.check_event(yaml.SequenceEndEvent):
                items.append(self.build((*path, len(items)), depth + 1))
            self.loader.get_event()
            return items
        result: dict[Any, Any] = {}
        while not self.loader.check_event(yaml.MappingEndEvent):
            key_event = self.start(depth + 1)
            if not isinstance(key_event, yaml.ScalarEvent):
                self.skip_rest(key_event, depth + 1)
                self.problem(key_event.start_mark, "yaml_complex_key", "keys must be plain words")
                self.skip(depth + 1)
                continue
            key = self.scalar(key_event)
            if not isinstance(key, str | int):
                key = str(key)
            if key in result:
                self.problem(
                    key_event.start_mark,
                    "yaml_duplicate_key",
                    f"key '{key}' appears twice in this mapping; the first is at line "
                    f"{self.doc.key_marks[(*path, key)][0]}",
                )
                self.skip(depth + 1)
                continue
            self.doc.key_marks[(*path, key)] = _mark(key_event.start_mark)
            result[key] = self.build((*path, key), depth + 1)
        self.loader.get_event()
        return result

    def skip(self, depth: int) -> None:
        """Pass over a node that is not used (the value of a refused key), guarded all the same."""
        self.skip_rest(self.start(depth), depth)

    def skip_rest(self, event: Any, depth: int) -> None:
        if isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
            while not self.loader.check_event(yaml.SequenceEndEvent, yaml.MappingEndEvent):
                self.skip(depth + 1)
            self.loader.get_event()

    def scalar(self, event: Any) -> Any:
        plain = not event.style  # libyaml's parser says '' where PyYAML's says None
        if plain and not event.value and self.fast:
            # A value left out: libyaml places it at the next token, PyYAML after the last, and an
            # empty one tagged '!' libyaml reads as text, PyYAML as nothing.
            raise _Unsure
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.loader.resolve(yaml.ScalarNode, event.value, event.implicit)
        if tag == _STR_TAG:
            if plain and event.tag is None and _OCTAL_12.match(event.value):
                self.problem(
                    event.start_mark,
                    "yaml_ambiguous_number",
                    f"unquoted '{event.value}' is text in YAML 1.1 and a base-8 number in YAML 1.2; "
                    f"quote it ('{event.value}') for text, or write the number in decimal",
                )
            return event.value  # what the constructor would return, without making a node for it
        if tag == _TIMESTAMP_TAG:
            return event.value  # dates stay ISO strings; the schema decides what they mean
        if tag in _NUMBER_TAGS and plain and _SURPRISING_NUMBER.match(event.value):
            self.problem(
                event.start_mark,
                "yaml_ambiguous_number",
                f"unquoted '{event.value}' is a base-{_base_of(event.value)} number in YAML 1.1; "
                f"quote it ('{event.value}') for text, or write the number in decimal",
            )
            return event.value
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, style=event.style or None)
        try:
            value = self.loader.construct_object(node, deep=True)
        except (ValueError, KeyError, IndexError) as error:
            if tag == event.tag:  # an explicit tag on a value it cannot read: '!!int x', '!!bool maybe', '!!float'
                short = tag.rsplit(":", 1)[-1]
                self.problem(event.start_mark, "yaml_bad_tag", f"'{event.value}' cannot be read as !!{short}")
            elif isinstance(error, ValueError):  # Python refuses to read an integer of more than 4,300 digits
                self.problem(event.start_mark, "number_too_long", f"a number of {len(event.value)} characters")
            else:
                raise
            return None
        if isinstance(value, float) and not math.isfinite(value):
            self.problem(
                event.start_mark,
                "number_not_finite",
                f"'{event.value}' is not a finite number; leave the bound out for no limit",
            )
            return None
        if isinstance(value, bool) and plain and _SURPRISING_BOOL.match(event.value):
            self.problem(
                event.start_mark,
                "yaml_ambiguous_bool",
                f"unquoted '{event.value}' reads as {str(value).lower()} in YAML 1.1; "
                f"quote it ('{event.value}') for text, or write {str(value).lower()}",
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


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cycle collector held off while a document is read or checked.

    Its passes over the growing document found nothing to free (a document holds no reference
    cycles) and cost a third of the reading and a sixth of the checking of a 3,000-row table;
    whatever else it would have found it frees once it resumes.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def load_text(text: str, file: str = "<string>") -> Document:
    """Parse YAML text; raise :class:`PlaybookError` with every problem found."""
    size = len(text.encode("utf-8"))
    if size > MAX_BYTES:
        raise PlaybookError(
            [Problem(Location(file, 1, 1), "yaml_too_large", f"{size} bytes; the limit is {MAX_BYTES}")]
        )
    with collector_paused():
        # libyaml's parser is about ten times faster than PyYAML's, but it words syntax errors its own way and
        # takes a tab where PyYAML refuses one: PyYAML's parser decides whenever it might disagree.
        try:
            if _FAST_LOADER is None or "\t" in text:
                raise _Unsure
            doc, problems = _parse(text, file, _FAST_LOADER)
        except (_Unsure, yaml.YAMLError, _Refused, PlaybookError, UnicodeError):
            doc, problems = _parse_located(text, file)
    if problems:
        raise PlaybookError(problems)
    return doc


def _parse(text: str, file: str, loader_class: type[_Loader]) -> tuple[Document, list[Problem]]:
    """The document and what its builder refused; a parser's, composer's or guard's error is raised."""
    doc = Document(file=file, data=None, text=text)
    loader = loader_class(text)  # PyYAML's reader refuses control characters here, before parsing
    try:
        builder = _Builder(doc, loader)
        doc.data = builder.document()
    finally:
        loader.dispose()
    return doc, builder.problems


def _parse_located(text: str, file: str) -> tuple[Document, list[Problem]]:
    """:func:`_parse` with PyYAML's parser, its errors turned into located problems."""
    try:
        return _parse(text, file, yaml.SafeLoader)
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
