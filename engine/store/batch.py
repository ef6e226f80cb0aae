"""Rows in batches: chunks of an iterable, and many rows inserted with one prepared statement (PostgreSQL: COPY)."""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, Table, TypeDecorator, Update, bindparam, insert


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
def _driver_statement(statement: Any, dialect: Any) -> tuple[str, Callable[[dict[str, Any]], tuple[Any, ...]] | None]:
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


@functools.lru_cache(maxsize=32)
def _rows_statement(table: Table, columns: tuple[str, ...], dialect: Any) -> tuple[str, bool]:
    """The insert of these columns of the table as SQL for the driver; True when it takes positional parameters."""
    compiled = insert(table).compile(dialect=dialect, column_keys=list(columns))
    positional = bool(compiled.positional and compiled.positiontup)
    if positional and tuple(compiled.positiontup or ()) != columns:
        raise ValueError(f"the columns of {table.name} are not in the table's order: {columns}")
    return str(compiled), positional


@functools.lru_cache(maxsize=32)
def _stored_tuple(
    table: Table, columns: tuple[str, ...], dialect: Any
) -> Callable[[tuple[Any, ...]], tuple[Any, ...]] | None:
    """:func:`_stored_values` for rows given as tuples of ``columns``."""
    processors = [
        (position, processor)
        for position, name in enumerate(columns)
        if isinstance(kind := table.c[name].type, TypeDecorator) and (processor := kind.bind_processor(dialect))
    ]
    if not processors:
        return None

    def stored(row: tuple[Any, ...]) -> tuple[Any, ...]:
        values = list(row)
        for position, process in processors:
            values[position] = process(values[position])
        return tuple(values)

    return stored


def insert_rows(conn: Connection, table: Table, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
    """Insert rows given as tuples of ``columns`` (in the table's order) through the driver's executemany.

    The hot tables of an import (evaluations, recommendations, tasks, their events and deliveries) are
    built as tuples: no dict per row, no mapping of names to positions (SQLite's parameters are
    positional).  Values are plain text, integers and booleans, as for :func:`_insert_many`, but for the
    columns of a type of the store's own (hashes, times), converted here."""
    if not rows:
        return
    names = tuple(columns)
    stored = _stored_tuple(table, names, conn.dialect)
    if stored is not None:
        rows = list(map(stored, rows))
    if conn.dialect.name == "postgresql" and len(rows) >= COPY_FROM:
        copy_rows(conn, table, names, rows)
        return
    statement, positional = _rows_statement(table, names, conn.dialect)
    conn.exec_driver_sql(statement, rows if positional else [dict(zip(names, row, strict=True)) for row in rows])


COPY_FROM = 100  # rows: from so many, PostgreSQL is given them by COPY, a single stream, not statement by statement


def _copy_many(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Rows given as dicts (of the same keys) into a PostgreSQL table by COPY: :func:`copy_rows`."""
    columns = tuple(column.name for column in table.columns if column.name in rows[0])
    copy_rows(conn, table, columns, map(operator.itemgetter(*columns), rows))


def copy_rows(conn: Connection, table: Table, columns: tuple[str, ...], rows: Iterable[tuple[Any, ...]]) -> None:
    """Rows given as tuples of ``columns`` into a PostgreSQL table by ``COPY ... FROM STDIN``, in this
    transaction; binary when each column's type has a binary form psycopg writes from the values as they
    are (integers, booleans, text): half of the text form's cost to write, and nothing for the server to parse.

    The values travel as COPY's data, never as SQL; the names quoted are the table's own columns.
    """
    statement, types = _copy_statement(table, columns, conn.dialect)
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(statement) as copy:
        if types is not None:
            copy.set_types(types)
        for row in rows:
            copy.write_row(row)


# The binary form of each column type: COPY's binary rows must hold each value exactly as its column's
# type reads it (an INTEGER four bytes); a column of another type makes the table's COPY text.
_BINARY_TYPES = {
    "SMALLINT": "int2",
    "INTEGER": "int4",
    "BIGINT": "int8",
    "BOOLEAN": "bool",
    "VARCHAR": "text",
    "TEXT": "text",
    "BYTEA": "bytea",
}


@functools.lru_cache(maxsize=32)
def _copy_statement(table: Table, columns: tuple[str, ...], dialect: Any) -> tuple[str, list[str] | None]:
    quote = dialect.identifier_preparer.quote
    statement = f"COPY {quote(table.name)} ({', '.join(map(quote, columns))}) FROM STDIN"
    declared = [table.c[name].type.compile(dialect=dialect).partition("(")[0] for name in columns]
    types = [_BINARY_TYPES.get(name) for name in declared]
    if None in types:
        return statement, None
    return f"{statement} (FORMAT BINARY)", [t for t in types if t is not None]


AMONG = 500  # keys per look-up of rows by key (:func:`among`)
_AMONG_NAMES = tuple(f"among_{i}" for i in range(AMONG))


def among(column: Any) -> Any:
    """``column IN (...)`` of :data:`AMONG` bound parameters, for a statement :func:`rows_among` runs."""
    return column.in_([bindparam(name) for name in _AMONG_NAMES])


def rows_among(conn: Connection, statement: Any, params: dict[str, Any], keys: Iterable[Any]) -> Iterator[Any]:
    """The rows of ``statement`` (built once, with :func:`among`) for ``keys``, :data:`AMONG` at a time.

    Through the driver, one statement for every look-up: an expanding IN list is processed key by key
    and compiled again for each new number of keys.  A last chunk is filled up with its last key
    (IN holds a key once however often it is listed)."""
    sql, values = _driver_statement(statement, conn.dialect)
    for chunk in iter_chunks(keys, AMONG):
        bound = dict(params)
        bound.update(zip(_AMONG_NAMES, chunk + [chunk[-1]] * (AMONG - len(chunk)), strict=True))
        yield from conn.exec_driver_sql(sql, bound if values is None else values(bound))


def iter_chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
