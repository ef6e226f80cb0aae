"""CRM CSV exports -> cases, streamed in constant memory, through a field mapping.

Reads UTF-8 with or without a BOM, and GBK/GB18030 (Chinese exports).  The encoding is
checked over the whole file before the first row is read (``encoding: auto`` takes UTF-8 if
the whole file is UTF-8, else GB18030), so a file that does not read is a located error before
anything is stored, never a failure after thousands of rows.

Every row yields exactly one mapped case or one quarantined row, numbered by its first
physical line (the header is line 1; blank lines and the lines of a multi-line quoted cell
count): a row with the wrong number of cells is quarantined (``bad_row``), and so is a row
whose quote is never closed, without swallowing the rows after it: those are read again as
rows of their own.  A header naming a column twice is a located error (``csv_duplicate_column``).
Lookup tables (``lookups`` with a ``file``) are read whole, from the input file's folder: they
are small reference tables.
"""

from __future__ import annotations

import csv
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from adapters.mapping import MappedCase, Mapping, Quarantined, quarantine_failure, shown
from engine.errors import Location, PlaybookError, Problem

__all__ = ["attach_lookups", "detect_encoding", "read_csv"]

_BLOCK = 1 << 20


def detect_encoding(path: Path, declared: str = "auto") -> str:
    """The codec the whole file reads with, checked over every byte; else a located ``input_encoding`` error.

    ``auto``: UTF-8 (a BOM skipped) when the whole file is UTF-8, else GB18030 (a superset of GBK).
    """
    if declared in ("auto", "utf-8", "utf-8-sig"):
        utf8 = _first_error(path, "utf-8")
        if utf8 is None:
            return "utf-8-sig"
        if declared != "auto":
            raise _encoding_error(path, "UTF-8", utf8)
        gb = _first_error(path, "gb18030")
        if gb is None:
            return "gb18030"
        raise _encoding_error(path, "UTF-8 nor GB18030", gb, utf8)
    problem = _first_error(path, declared)
    if problem is not None:
        raise _encoding_error(path, declared.upper(), problem)
    return declared


def _first_error(path: Path, codec: str) -> tuple[int, int, int] | None:
    """(line, column, byte) of the first byte that does not read in ``codec``, else None.

    The file is read in blocks cut at line ends: no character of UTF-8 or GB18030 holds the
    byte of a line feed, so each block decodes on its own.
    """
    line = 1
    rest = b""
    with path.open("rb") as raw:
        while True:
            block = raw.read(_BLOCK)
            data = rest + block
            cut = data.rfind(b"\n") + 1 if block else len(data)
            chunk, rest = data[:cut], data[cut:]
            try:
                chunk.decode(codec)
            except UnicodeDecodeError as exc:
                start = chunk.rfind(b"\n", 0, exc.start) + 1
                prefix = chunk[start : exc.start].decode(codec, "replace")
                return line + chunk.count(b"\n", 0, exc.start), len(prefix) + 1, chunk[exc.start]
            line += chunk.count(b"\n")
            if not block:
                return None


def _encoding_error(
    path: Path, what: str, first: tuple[int, int, int], other: tuple[int, int, int] | None = None
) -> PlaybookError:
    line, col, byte = first
    message = f"not {what} text: byte 0x{byte:02x} at line {line}, column {col} does not read"
    if other is not None:
        message = (
            f"neither UTF-8 (byte 0x{other[2]:02x} at line {other[0]}, column {other[1]}) nor GB18030 "
            f"(byte 0x{byte:02x} at line {line}, column {col}) text; set the mapping's encoding"
        )
    return PlaybookError([Problem(Location(str(path), line, col), "input_encoding", message)])


class _Lines:
    """A file's physical lines, decoded and numbered from 1, as a ``csv.reader`` pulls them.

    Lines taken for the row being read are kept (``taken``), and can be given back to be read
    again (``give_back``): that is how a row whose quote never closes is set aside alone.
    """

    def __init__(self, handle: IO[bytes], encoding: str, progress: Callable[[int], None] | None) -> None:
        self.handle = handle
        self.codec = "utf-8" if encoding == "utf-8-sig" else encoding
        self.progress = progress
        self.number = 0
        self.pending: deque[tuple[int, str]] = deque()
        self.taken: list[tuple[int, str]] = []
        self.ran_out = False  # the reader asked for a line past the end in the middle of a row

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if self.pending:
            item = self.pending.popleft()
        else:
            raw = self.handle.readline()
            if not raw:
                self.ran_out = bool(self.taken)
                raise StopIteration
            if self.progress is not None:
                self.progress(len(raw))
            self.number += 1
            # checked over the whole file already; a file changed since reads with U+FFFD, not a crash
            text = raw.decode(self.codec, "replace")
            if self.number == 1:
                text = text.removeprefix("\ufeff")
            item = (self.number, text)
        self.taken.append(item)
        return item[1]

    def start_row(self) -> None:
        self.taken = []
        self.ran_out = False

    def give_back(self, items: list[tuple[int, str]]) -> None:
        self.pending.extendleft(reversed(items))


def _closed_cleanly(texts: list[str]) -> bool:
    """Whether lines read as one row also read so when a quote must be closed before a comma or line end."""
    try:
        return len(list(csv.reader(texts, strict=True))) == 1
    except csv.Error:
        return False


def _cell_columns(text: str) -> list[int]:
    """The 1-based column at which each cell of a (header) line starts."""
    columns, quoted = [1], False
    for i, char in enumerate(text):
        if char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            columns.append(i + 2)
    return columns


def _check_header(path: Path, line: int, text: str, header: list[str]) -> None:
    """Refuse a header that names a column twice: a mapping could read only one of them."""
    columns = _cell_columns(text)
    seen: dict[str, int] = {}
    problems = []
    for i, name in enumerate(header):
        if name in seen and name.strip():
            col = columns[i] if i < len(columns) else 1
            problems.append(
                Problem(
                    Location(str(path), line, col),
                    "csv_duplicate_column",
                    f"column '{shown(name)}' is named twice in the header (cells {seen[name] + 1} and {i + 1}): "
                    "rename one, or a mapping could read only one of them",
                )
            )
        seen.setdefault(name, i)
    if problems:
        raise PlaybookError(problems)


def _read_table(path: Path, encoding: str) -> list[dict[str, Any]]:
    with path.open(encoding=detect_encoding(path, encoding), newline="") as handle:
        lines = handle.readlines()
    reader = csv.DictReader(lines)
    if reader.fieldnames:
        _check_header(path, 1, lines[0], list(reader.fieldnames))
    return list(reader)


def read_csv(
    path: str | Path, mapping: Mapping, *, progress: Callable[[int], None] | None = None
) -> Iterator[tuple[int, MappedCase | Quarantined]]:
    """Each data row, by its first physical line (1-based, the header is line 1), mapped or quarantined."""
    path = Path(path)
    encoding = detect_encoding(path, mapping.encoding)
    attach_lookups(mapping, path.parent)
    with path.open("rb") as handle:
        lines = _Lines(handle, encoding, progress)
        reader = csv.reader(lines)
        header: list[str] = []
        try:
            for row in reader:
                if row:
                    header = row
                    _check_header(path, lines.taken[0][0], lines.taken[0][1], header)
                    break
                lines.start_row()
        except csv.Error as exc:
            raise PlaybookError(
                [Problem(Location(str(path), lines.number, 1), "csv_syntax", f"the header is not CSV: {exc}")]
            ) from None
        mapping.check_columns(header, path.name)
        yield from _rows(reader, lines, header, mapping)


def attach_lookups(mapping: Mapping, folder: Path) -> None:
    """Read the mapping's lookup tables that have a ``file`` from ``folder`` and attach them."""
    for name, lookup in mapping.lookups.items():
        if lookup.file is not None:
            table_path = folder / lookup.file
            if not table_path.exists():
                raise PlaybookError(
                    [
                        Problem(
                            lookup.location,
                            "mapping_lookup_file",
                            f"lookup '{name}' reads {table_path}, which does not exist",
                        )
                    ]
                )
            mapping.attach(name, _read_table(table_path, mapping.encoding))


def _rows(
    reader: Iterator[list[str]], lines: _Lines, header: list[str], mapping: Mapping
) -> Iterator[tuple[int, MappedCase | Quarantined]]:
    width = len(header)
    while True:
        lines.start_row()
        try:
            row: list[str] | None = next(reader)
            error = None
        except StopIteration:
            return
        except csv.Error as exc:
            row, error = None, str(exc)
        if row == [] and error is None:
            continue  # a blank line is no row
        line = lines.taken[0][0] if lines.taken else lines.number
        try:
            yield line, _row(row, error, lines, header, width, mapping, line)
        except Exception as exc:  # noqa: BLE001 - the row's boundary: no row may stop a run
            yield line, quarantine_failure(line, None, exc)


def _row(
    row: list[str] | None,
    error: str | None,
    lines: _Lines,
    header: list[str],
    width: int,
    mapping: Mapping,
    line: int,
) -> MappedCase | Quarantined:
    taken = lines.taken
    if lines.ran_out or (
        len(taken) > 1
        and (error is not None or len(row or ()) != width or not _closed_cleanly([text for _, text in taken]))
    ):
        # read the line alone for the record's id, and the lines after it again as rows of their own
        lines.give_back(taken[1:])
        alone = next(csv.reader([taken[0][1]]), [])
        end = "the end of the file" if lines.ran_out else f"line {taken[-1][0]}"
        return Quarantined(
            line,
            mapping.id_of(dict(zip(header, alone, strict=False))),
            "bad_row",
            f"a quote opened on this line is not closed (it runs to {end}); "
            "the lines after it are read as rows of their own",
        )
    if row is None:
        return Quarantined(line, None, "bad_row", f"not CSV: {error}")
    record = dict(zip(header, row, strict=False))
    if len(row) != width:
        return Quarantined(line, mapping.id_of(record), "bad_row", f"{len(row)} cells where the header has {width}")
    return mapping.to_case(record, line=line)
