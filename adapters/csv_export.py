"""CRM CSV exports -> cases, streamed in constant memory, through a field mapping.

Reads UTF-8 with or without a BOM, and GBK/GB18030 (Chinese exports); ``encoding:
auto`` sniffs the start of the file.  Every row yields exactly one mapped case or
one quarantined row (with its line and reason): a row with the wrong number of
cells is quarantined too.  Lookup tables (``lookups`` with a ``file``) are read
whole, from the input file's folder: they are small reference tables.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from adapters.mapping import MappedCase, Mapping, Quarantined
from engine.errors import Location, PlaybookError, Problem

__all__ = ["detect_encoding", "read_csv"]

_SNIFF = 64 * 1024


def detect_encoding(path: Path, declared: str = "auto") -> str:
    """The codec to read a file with: UTF-8 (BOM skipped) unless the start of the file is not UTF-8."""
    if declared not in ("auto", "utf-8"):
        return declared
    with path.open("rb") as raw:
        head = raw.read(_SNIFF)
    if declared == "utf-8":
        return "utf-8-sig"
    for cut in range(4):  # a multi-byte character may straddle the end of the sniffed block
        try:
            head[: len(head) - cut].decode("utf-8")
            return "utf-8-sig"
        except UnicodeDecodeError:
            continue
    return "gb18030"


class _CountingReader(io.RawIOBase):
    """A binary file that reports how many bytes have been read (for a progress bar)."""

    def __init__(self, raw: io.BufferedReader, report: Callable[[int], None] | None) -> None:
        self.raw = raw
        self.report = report

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.raw.readinto(buffer)
        if self.report is not None and n:
            self.report(n)
        return n or 0

    def close(self) -> None:
        self.raw.close()
        super().close()


def _read_table(path: Path, encoding: str) -> list[dict[str, Any]]:
    with path.open(encoding=detect_encoding(path, encoding), newline="") as handle:
        return list(csv.DictReader(handle))


def read_csv(
    path: str | Path, mapping: Mapping, *, progress: Callable[[int], None] | None = None
) -> Iterator[tuple[int, MappedCase | Quarantined]]:
    """Each data row, by its first physical line (1-based, the header is line 1), mapped or quarantined."""
    path = Path(path)
    encoding = detect_encoding(path, mapping.encoding)
    for name, lookup in mapping.lookups.items():
        if lookup.file is not None:
            table_path = path.parent / lookup.file
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
    raw = _CountingReader(path.open("rb"), progress)
    text = io.TextIOWrapper(io.BufferedReader(raw), encoding=encoding, newline="")
    with text:
        reader = csv.DictReader(text)
        try:
            header = reader.fieldnames or []
        except UnicodeDecodeError as exc:
            raise _decode_error(path, 1, encoding, exc) from None
        mapping.check_columns(header, path.name)
        previous_end = reader.line_num
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError as exc:
                raise _decode_error(path, previous_end + 1, encoding, exc) from None
            except csv.Error as exc:
                raise PlaybookError(
                    [Problem(Location(str(path), previous_end + 1, 1), "csv_syntax", str(exc))]
                ) from None
            line, previous_end = previous_end + 1, reader.line_num
            extra = row.pop(None, None)
            if extra is not None or any(v is None for v in row.values()):
                cells = len(header) + len(extra or []) - sum(v is None for v in row.values())
                yield (
                    line,
                    Quarantined(
                        line,
                        mapping.id_of(row),
                        "bad_row",
                        f"{cells} cells where the header has {len(header)}",
                    ),
                )
                continue
            yield line, mapping.to_case(row, line=line)


def _decode_error(path: Path, line: int, encoding: str, exc: UnicodeDecodeError) -> PlaybookError:
    return PlaybookError(
        [
            Problem(
                Location(str(path), line, 1),
                "input_encoding",
                f"not valid {encoding} text near line {line}: {exc.reason}",
            )
        ]
    )
