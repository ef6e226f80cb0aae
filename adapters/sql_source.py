"""A CRM's database -> cases, read-only and streamed, through a field mapping.

Any SQLAlchemy URL; the records are a ``table`` (reflected, selected through SQLAlchemy, in
primary-key order) or a ``query`` (the user's own SELECT text, run as is).  Every result row
yields exactly one mapped case or one quarantined record, with its 1-based position in the
result.  Lookups with a ``table`` are read whole through SQLAlchemy and attached: they are
small reference tables.

Read-only for real, not by promise: SQLite is opened with ``mode=ro`` (a missing file is an
error, never a new empty database) and ``PRAGMA query_only``; PostgreSQL sessions start with
``default_transaction_read_only`` (psycopg, psycopg2) and every transaction with ``SET
TRANSACTION READ ONLY``; MySQL and MariaDB sessions with ``SET SESSION TRANSACTION READ ONLY``;
Oracle transactions with ``SET TRANSACTION READ ONLY``.  On every database a query must start
with SELECT, WITH, VALUES or TABLE, nothing is ever committed, and the transaction is rolled back.

Values arrive as the driver gives them (no SQLAlchemy type conversion: SQLite stores Tryton's
amounts as text blobs that SQLAlchemy's Numeric cannot read), except that bytes are decoded as
UTF-8; the mapping parses numbers and dates, so a table and a query reading the same rows give
the same cases.  Text that is not UTF-8 (SQLite stores whatever it is given) is kept with its
bad bytes escaped, so that the record holding it is quarantined (``unstorable_text``) instead of
stopping the read or being changed silently.

A statement timeout bounds how long the database may take to give the next rows (``timeout``
seconds, :data:`DEFAULT_TIMEOUT` unless given; ``None`` for none): on PostgreSQL it is the
transaction's ``statement_timeout`` (each fetch of a streamed result is a statement), on SQLite a
progress handler that interrupts a step running longer.  Other databases are not bounded.
"""

from __future__ import annotations

import os
import re
import time
import warnings
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine

from adapters.mapping import Lookup, MappedCase, Mapping, Quarantined, location_of_column, quarantine_failure
from engine.errors import Location, PlaybookError, Problem, did_you_mean

__all__ = ["DEFAULT_TIMEOUT", "read_only_engine", "read_sql"]

BATCH = 1000
"""Rows fetched at a time (a server-side cursor where the driver has one): memory stays constant."""

DEFAULT_TIMEOUT = 300.0
"""Seconds the database may take to give the next rows: long enough for a sort over millions of
rows before the first one, short enough that a runaway query does not hold a CRM's database."""

_QUERY_STARTS = ("select", "with", "values", "table")
_LEADING = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/|\()*", re.S)


def read_sql(
    url: str,
    mapping: Mapping,
    *,
    table: str | None = None,
    query: str | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> Iterator[tuple[int, MappedCase | Quarantined]]:
    """Each row of ``table`` or of ``query`` (give exactly one), by its 1-based position, mapped or quarantined.

    Raises :class:`PlaybookError` with located problems: a column the mapping reads that the
    result lacks (``mapping_unknown_column``, at the mapping's line), a result naming a column
    twice (``sql_duplicate_column``), an unknown table (``sql_unknown_table``), a lookup without
    a table (``mapping_lookup_table``), a query that is not a SELECT (``sql_not_a_query``), a bad
    URL (``sql_url``), a database that cannot be opened (``sql_connect``), that rejects the query
    (``sql_query``) or that takes longer than ``timeout`` seconds to give the next rows
    (``sql_timeout``).  ValueError when given both a table and a query, or neither: that is the
    caller's mistake, not the user's.
    """
    if (table is None) == (query is None):
        raise ValueError("read_sql reads a table or a query: give exactly one")
    where = _where(url)
    if query is not None:
        _check_query(query, where)
    lookup_tables = _lookup_tables(mapping)
    engine = read_only_engine(url)
    position = 0
    try:
        try:
            conn = engine.connect()
        except sa.exc.SQLAlchemyError as exc:
            raise _problem(where, "sql_connect", f"cannot open the database: {_reason(exc)}") from None
        with conn:
            clock = _Clock(conn, timeout)
            try:
                _begin_read_only(conn, timeout)
                clock.restart()
                for name, table_name in lookup_tables.items():
                    mapping.attach(name, _read_lookup(conn, mapping, mapping.lookups[name], table_name))
                clock.restart()
                if table is not None:
                    statement, columns = _select_table(conn, table, mapping, where)
                    result = conn.execute(statement.execution_options(yield_per=BATCH))
                else:
                    result = conn.execute(sa.text(str(query)).execution_options(yield_per=BATCH))
                    columns = list(result.keys())
                    _check_unique(columns, where)
                    mapping.check_columns(columns, "the query's result")
                rows = iter(result)
                while True:
                    clock.restart()  # the time a consumer takes between rows is not the database's
                    row = next(rows, None)
                    if row is None:
                        break
                    position += 1
                    try:
                        record = {column: _plain(value) for column, value in zip(columns, row, strict=True)}
                        item = mapping.to_case(record, line=position)
                    except Exception as exc:  # noqa: BLE001 - the row's boundary: no row may stop a read
                        item = quarantine_failure(position, None, exc)
                    yield position, item
            except sa.exc.SQLAlchemyError as exc:
                if clock.expired(exc):
                    raise _problem(
                        where,
                        "sql_timeout",
                        f"the database took longer than {timeout:g} s to give the rows after row {position} "
                        "(--sql-timeout); those rows were not read",
                    ) from None
                raise _problem(where, "sql_query", f"the database refused the read: {_reason(exc)}") from None
            finally:
                if conn.in_transaction():
                    conn.rollback()
    finally:
        engine.dispose()


class _Clock:
    """The statement timeout on SQLite: a progress handler interrupts a step that runs past the deadline.

    PostgreSQL keeps its own (``statement_timeout``); this only tells its cancellation apart.
    """

    def __init__(self, conn: Connection, timeout: float | None) -> None:
        self.timeout = timeout if timeout else None
        self.deadline = float("inf")
        self.interrupted = False
        if self.timeout is not None and conn.dialect.name == "sqlite":
            raw = conn.connection.dbapi_connection
            if raw is not None:
                raw.set_progress_handler(self._check, 10_000)

    def restart(self) -> None:
        if self.timeout is not None:
            self.deadline = time.monotonic() + self.timeout

    def _check(self) -> int:
        if time.monotonic() > self.deadline:
            self.interrupted = True
            return 1  # SQLite stops the step: OperationalError "interrupted"
        return 0

    def expired(self, exc: sa.exc.SQLAlchemyError) -> bool:
        original = getattr(exc, "orig", None)
        code = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)  # psycopg, psycopg2
        return self.interrupted or code == "57014"  # query_canceled


def _check_unique(columns: list[str], where: Location) -> None:
    """Refuse a result naming a column twice: a record could keep only one of the two values."""
    twice = sorted({c for c in columns if columns.count(c) > 1})
    if twice:
        raise _problem(
            where,
            "sql_duplicate_column",
            f"the query's result names {', '.join(repr(c) for c in twice)} more than once: give each column "
            "its own name (AS)",
        )


def read_only_engine(url: str) -> Engine:
    """An engine whose connections cannot write, where the database can say so (see the module doc)."""
    where = _where(url)
    try:
        parsed = sa.engine.make_url(url)
        backend = parsed.get_backend_name()
        connect_args: dict[str, Any] = {}
        if backend == "sqlite":
            parsed = _sqlite_read_only(parsed)
        elif backend == "postgresql" and parsed.get_driver_name() in ("psycopg", "psycopg2"):
            given = parsed.query.get("options") or ()  # the URL's own options are kept, ours added
            connect_args["options"] = " ".join(
                [*([given] if isinstance(given, str) else given), "-c default_transaction_read_only=on"]
            )
        engine = sa.create_engine(parsed, connect_args=connect_args, poolclass=sa.pool.NullPool)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
        raise _problem(where, "sql_url", f"not a database URL SQLAlchemy can open: {exc}") from None

    @sa.event.listens_for(engine, "connect")
    def _session_read_only(dbapi_connection: Any, _record: Any) -> None:
        if backend == "sqlite":
            dbapi_connection.text_factory = _sqlite_text
        cursor = dbapi_connection.cursor()
        try:
            if backend == "sqlite":
                cursor.execute("PRAGMA query_only = ON")
            elif backend in ("mysql", "mariadb"):
                cursor.execute("SET SESSION TRANSACTION READ ONLY")
        finally:
            cursor.close()

    return engine


# -- read-only ------------------------------------------------------------------------------------


def _sqlite_read_only(url: URL) -> URL:
    """The same SQLite database as a ``mode=ro`` URI (an in-memory database stays as it is)."""
    database = url.database or ""
    query = dict(url.query)
    uri = str(query.get("uri", "")).lower() in ("true", "1")
    if not database or database == ":memory:" or (uri and "memory" in (database, str(query.get("mode")))):
        return url
    if not uri:
        database = "file:" + quote(os.path.abspath(database))
    query.update(mode="ro", uri="true")
    return url.set(database=database, query=query)


def _begin_read_only(conn: Connection, timeout: float | None) -> None:
    """Make the transaction about to start read-only (the statement must come first in it), and bounded."""
    if conn.dialect.name in ("postgresql", "oracle"):
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")
    if conn.dialect.name == "postgresql" and timeout:
        conn.exec_driver_sql(f"SET LOCAL statement_timeout = {max(1, round(timeout * 1000))}")  # an int, not input


def _check_query(query: str, where: Location) -> None:
    leading = _LEADING.match(query)
    rest = query[leading.end() :] if leading else query
    word = re.match(r"[A-Za-z]*", rest)
    first = word.group(0).lower() if word else ""
    if first not in _QUERY_STARTS:
        raise _problem(
            where,
            "sql_not_a_query",
            f"the query starts with '{first or rest[:20]}'; the SQL adapter only reads: "
            "give a SELECT (or WITH, VALUES, TABLE)",
        )


# -- tables ---------------------------------------------------------------------------------------


def _split(name: str) -> tuple[str | None, str]:
    schema, _, table = name.rpartition(".")
    return schema or None, table


def _columns_of(conn: Connection, name: str, where: Location) -> tuple[sa.TableClause, list[str]]:
    """The table (untyped columns: values come raw) and its primary-key columns, or sql_unknown_table."""
    schema, table = _split(name)
    inspector = sa.inspect(conn)
    with warnings.catch_warnings():
        # an unrecognised column type only warns; the types are not used (values are read raw)
        warnings.simplefilter("ignore", sa.exc.SAWarning)
        try:
            columns = [str(c["name"]) for c in inspector.get_columns(table, schema=schema)]
            key = [str(c) for c in inspector.get_pk_constraint(table, schema=schema).get("constrained_columns") or []]
        except sa.exc.NoSuchTableError:
            known = [*inspector.get_table_names(schema=schema), *inspector.get_view_names(schema=schema)]
            raise _problem(
                where, "sql_unknown_table", f"no table '{name}' in the database{did_you_mean(table, known)}"
            ) from None
    return sa.table(table, *(sa.column(c) for c in columns), schema=schema), key


def _select_table(conn: Connection, name: str, mapping: Mapping, where: Location) -> tuple[sa.Select[Any], list[str]]:
    """SELECT the columns the mapping reads, in the table's order, by primary key."""
    table, key = _columns_of(conn, name, where)
    present = [c.name for c in table.columns]
    mapping.check_columns(present, f"table {name}")
    used = mapping.columns_used()
    columns = [c for c in present if c in used]
    statement = sa.select(*(table.c[c] for c in columns)).order_by(*(table.c[c] for c in key))
    return statement, columns


def _lookup_tables(mapping: Mapping) -> dict[str, str]:
    """Each lookup's table; a lookup that names only a file cannot be read from a database."""
    tables: dict[str, str] = {}
    problems = []
    for name, lookup in mapping.lookups.items():
        if lookup.table:
            tables[name] = lookup.table
        elif lookup.file is not None:
            problems.append(
                Problem(
                    lookup.location,
                    "mapping_lookup_table",
                    f"lookup '{name}' reads the file {lookup.file}; the SQL adapter reads lookups from tables: "
                    "give it a 'table'",
                )
            )
    if problems:
        raise PlaybookError(problems)
    return tables


def _read_lookup(conn: Connection, mapping: Mapping, lookup: Lookup, name: str) -> list[dict[str, Any]]:
    """The key column and the columns the mapping reads through the lookup, every row."""
    table, _ = _columns_of(conn, name, lookup.location)
    present = [c.name for c in table.columns]
    prefix = f"{lookup.name}."
    wanted = mapping.lookup_columns(lookup.name)
    problems = [
        Problem(
            location_of_column(mapping, prefix + column),
            "mapping_unknown_column",
            f"column '{column}' is not in table {name} (lookup '{lookup.name}'){did_you_mean(column, present)}",
        )
        for column in sorted(mapping.lookup_columns(lookup.name, needed=True) - set(present) - {lookup.key})
    ]
    if lookup.key not in present:
        problems.append(
            Problem(
                lookup.location,
                "mapping_unknown_column",
                f"key column '{lookup.key}' is not in table {name} (lookup '{lookup.name}')"
                f"{did_you_mean(lookup.key, present)}",
            )
        )
    if problems:
        raise PlaybookError(problems)
    columns = [c for c in present if c in wanted]
    rows = conn.execute(sa.select(*(table.c[c] for c in columns)))
    return [{c: _plain(v) for c, v in zip(columns, row, strict=True)} for row in rows]


# -- values and errors ----------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, memoryview):
        value = value.tobytes()
    if isinstance(value, bytes | bytearray):
        return _sqlite_text(bytes(value))
    return value


def _sqlite_text(data: bytes) -> str:
    """UTF-8 text; a byte that is not UTF-8 kept escaped (a lone surrogate) so its record is quarantined."""
    return data.decode("utf-8", errors="surrogateescape")


def _where(url: str) -> Location:
    """The database as a place for messages, its password hidden."""
    try:
        return Location(sa.engine.make_url(url).render_as_string(hide_password=True))
    except sa.exc.ArgumentError:
        return Location("database URL")


# user:password@ after the scheme, in text SQLAlchemy cannot read as a URL (postgresql//u:pw@h/db)
_PASSWORD = re.compile(r"(//[^/:@\s]*:)\S*@")


def shown_url(url: str) -> str:
    """A database URL to print: its password, if it has one, as ``***``."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        return _PASSWORD.sub(r"\1***@", url)
    return parsed.render_as_string(hide_password=True) if parsed.password else url


def without_password(text: str, url: str) -> str:
    """``text`` (a driver's message, say) with ``url`` and its password, wherever they appear, hidden."""
    text = text.replace(url, shown_url(url))
    try:
        password = sa.engine.make_url(url).password
    except sa.exc.ArgumentError:
        return _PASSWORD.sub(r"\1***@", text)
    return text.replace(str(password), "***") if password else text


def _reason(exc: sa.exc.SQLAlchemyError) -> str:
    original = getattr(exc, "orig", None)
    return str(original if original is not None else exc).strip().splitlines()[0]


def _problem(where: Location, code: str, message: str) -> PlaybookError:
    return PlaybookError([Problem(where, code, message)])
