"""Rows in batches: chunks of an iterable, and many rows inserted with one prepared statement (PostgreSQL: COPY)."""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from sqlalchemy import ARRAY, ColumnElement, Connection, Table, Update, any_, bindparam, insert


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


def _insert_many(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert rows with one prepared statement through the driver, parameters still bound.

    The statement is SQLAlchemy's own for the table; passing the rows straight to the driver skips
    SQLAlchemy's per-row parameter processing, a tenth of an import's time.  Values are plain
    text, integers and booleans, which every driver binds as they are.
    """
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


KEYS_PER_LIST = 500  # keys per IN list on SQLite, whose bound parameters are limited


def key_among(column: Any, dialect: str, name: str = "keys") -> ColumnElement[bool]:
    """``column`` among the keys bound as ``name``: on PostgreSQL one array, whatever its length (one
    statement per batch, which the index on the column answers key by key); elsewhere an IN list."""
    if dialect == "postgresql":
        return column == any_(bindparam(name, type_=ARRAY(column.type)))  # type: ignore[no-any-return]
    return column.in_(bindparam(name, expanding=True))  # type: ignore[no-any-return]


def key_lists(dialect: str, keys: Iterable[Any]) -> Iterator[list[Any]]:
    """The keys as :func:`key_among` takes them: all at once on PostgreSQL, :data:`KEYS_PER_LIST` at a time
    elsewhere; nothing for no keys."""
    if dialect == "postgresql":
        if every := list(keys):
            yield every
        return
    yield from iter_chunks(keys, KEYS_PER_LIST)


def iter_chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
