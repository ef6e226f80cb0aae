"""Rows in batches: chunks of an iterable, and many rows inserted with one prepared statement."""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from sqlalchemy import Connection, Table, insert


@functools.lru_cache(maxsize=16)
def _insert_statement(table: Table, dialect: Any) -> tuple[str, Callable[[dict[str, Any]], tuple[Any, ...]] | None]:
    """The table's insert as SQL for the driver, and for positional parameters the row's values in order."""
    compiled = insert(table).compile(dialect=dialect)
    if not (compiled.positional and compiled.positiontup):
        return str(compiled), None
    order = tuple(compiled.positiontup)
    getter = operator.itemgetter(*order)
    return str(compiled), (getter if len(order) > 1 else lambda row: (getter(row),))


def _insert_many(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert rows with one prepared statement through the driver, parameters still bound.

    The statement is SQLAlchemy's own for the table; passing the rows straight to the driver skips
    SQLAlchemy's per-row parameter processing, a tenth of an import's time.  Values are plain
    text, integers and booleans, which every driver binds as they are.
    """
    statement, values = _insert_statement(table, conn.dialect)
    if values is None:
        conn.exec_driver_sql(statement, rows)  # named parameters: the dicts as they are
    else:
        conn.exec_driver_sql(statement, list(map(values, rows)))


def iter_chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
