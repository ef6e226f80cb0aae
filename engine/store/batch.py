"""Rows in batches: chunks of an iterable, and many rows inserted with one prepared statement (PostgreSQL: COPY)."""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from sqlalchemy import Connection, Table, TypeDecorator, Update, insert


@functools.lru_cache(maxsize=16)
def _insert_statement(table: Table, dialect: Any) -> tuple[str, Callable[[dict[str, Any]], tuple[Any, ...]] | None]:
    """The table's insert as SQL for the driver, and for positional parameters the row's values in order."""
    compiled = insert(table).compile(dialect=dialect)
    if not (compiled.positional and compiled.positiontup):
        return str(compiled), None
    order = tuple(compiled.positiontup)
    getter = operator.itemgetter(*order)
    return str(compiled), (getter if len(order) > 1 else lambda row: (getter(row),))


@functools.lru_cache(maxsize=32)
def _driver_statement(
    statement: Update, dialect: Any
) -> tuple[str, Callable[[dict[str, Any]], tuple[Any, ...]] | None]:
    """A statement built once as SQL for the driver, and for positional parameters the row's values in order."""
    compiled = statement.compile(dialect=dialect)
    if not (compiled.positional and compiled.positiontup):
        return str(compiled), None
    getter = operator.itemgetter(*compiled.positiontup)
    return str(compiled), (getter if len(compiled.positiontup) > 1 else lambda row: (getter(row),))


def execute_many(conn: Connection, statement: Update, rows: list[dict[str, Any]]) -> None:
    """Run an UPDATE built once (a module's constant: plain bound parameters) for each
    row, through the driver, skipping SQLAlchemy's per-call compiled-cache look-up and parameter processing.

    Values are plain text, integers and booleans, which every driver binds as they are."""
    sql, values = _driver_statement(statement, conn.dialect)
    conn.exec_driver_sql(sql, rows if values is None else list(map(values, rows)))


@functools.lru_cache(maxsize=16)
def _stored_values(table: Table, dialect: Any) -> Callable[[dict[str, Any]], dict[str, Any]] | None:
    """A row's values as its table's own column types store them (hashes as bytes, times as numbers:
    engine/store/schema.py), for the driver; None for a table whose values are stored as they are."""
    processors = {
        column.name: processor
        for column in table.columns
        if isinstance(column.type, TypeDecorator) and (processor := column.type.bind_processor(dialect))
    }
    if not processors:
        return None
    converted = tuple(processors.items())

    def stored(row: dict[str, Any]) -> dict[str, Any]:
        row = row.copy()  # the caller's row is left as it is
        for name, process in converted:
            if name in row:
                row[name] = process(row[name])
        return row

    return stored


def _insert_many(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert rows with one prepared statement through the driver, parameters still bound.

    The statement is SQLAlchemy's own for the table; passing the rows straight to the driver skips
    SQLAlchemy's per-row parameter processing, a tenth of an import's time.  Values are plain
    text, integers and booleans, which every driver binds as they are, but for the columns of a type
    of the store's own, converted here.
    """
    stored = _stored_values(table, conn.dialect)
    if stored is not None:
        rows = list(map(stored, rows))
    if conn.dialect.name == "postgresql" and len(rows) >= COPY_FROM:
        _copy_many(conn, table, rows)
        return
    statement, values = _insert_statement(table, conn.dialect)
    if values is None:
        conn.exec_driver_sql(statement, rows)  # named parameters: the dicts as they are
    else:
        conn.exec_driver_sql(statement, list(map(values, rows)))


COPY_FROM = 100  # rows: from so many, PostgreSQL is given them by COPY, a single stream, not statement by statement


def _copy_many(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Rows into a PostgreSQL table by ``COPY ... FROM STDIN``, in this transaction.

    The values travel as COPY's data, never as SQL; the names quoted are the table's own columns.
    """
    quote = conn.dialect.identifier_preparer.quote
    columns = [column.name for column in table.columns if column.name in rows[0]]
    values = operator.itemgetter(*columns)
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    statement = f"COPY {quote(table.name)} ({', '.join(map(quote, columns))}) FROM STDIN"
    with cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(values(row))


def iter_chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
