"""The open book in SQL: each record's latest open evaluation, its values read out of the JSON into a
temporary table once per report, and engine.model conditions and aggregates as SQL with bound
parameters (:meth:`Store.open_book`, :meth:`Store.aggregate_open_cases`)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Column,
    Connection,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    case,
    cast,
    distinct,
    func,
    insert,
    literal,
    not_,
    null,
    or_,
    select,
    true,
)

from engine.conditions import variables_of
from engine.limits import ID_LENGTH
from engine.model import AllOf, AnyOf, Compare, Condition, Interval, Not
from engine.store.batch import iter_chunks
from engine.store.entries import StoredEvaluation
from engine.store.schema import evaluations, quarantined_events

if TYPE_CHECKING:
    from engine.store.core import Store


# -- the open book in SQL: each record's latest open evaluation, values read from its JSON -------------

AGGREGATE_FUNCTIONS = ("count", "share", "sum", "min", "max", "distinct", "value")


@dataclass(frozen=True)
class AggregateSpec:
    """One figure per group: ``function`` (count, share, sum, min, max, distinct) of ``field`` (a case field
    ``object.field`` or a decision; None for count and share) over the cases for which ``where`` holds
    (None: every case).  share: the cases where ``where`` holds, over the group's open cases."""

    name: str
    function: str
    field: str | None = None
    where: Condition | None = None


@dataclass(frozen=True)
class GroupAggregate:
    """A figure, and the record ids it was made of: the first few (sorted), and how many in all."""

    value: Any
    members: tuple[str, ...]
    members_total: int


# How a variable is read in SQL: (name, numeric) -> an expression.  Text is JSON's own rendering of the
# value ('true', '5000', 'A'); numeric is its number, NULL when it holds none.
Reader = Callable[[str, bool], Any]


class OpenBook:
    """The open deals of one report in a temporary table: ``seq``, ``record`` and, per variable, its text
    and its number (see :meth:`Store.open_book`).  Every method runs one query (or two) over it."""

    def __init__(
        self, store: Store, conn: Connection, as_of: str | None, variables: Iterable[str], where: Condition | None
    ) -> None:
        self.store, self.conn = store, conn
        dialect = conn.dialect.name
        names = list(dict.fromkeys([*variables, *variables_of(where)]))
        self.columns = {name: (f"t{k}", f"n{k}") for k, name in enumerate(names)}
        self.table = Table(
            f"open_book_{uuid.uuid4().hex[:12]}",
            MetaData(),
            Column("seq", Integer, primary_key=True),
            Column("record", String(ID_LENGTH), nullable=False),
            *[Column(c, Text) for c, _ in self.columns.values()],
            *[Column(n, Float) for _, n in self.columns.values()],
            prefixes=["TEMPORARY"],
        )
        self.table.create(conn)
        cases = _open_cases(as_of)
        read = _json_reader(dialect, cases)
        values = [cases.c.seq, cases.c.record]
        values += [read(name, False) for name in names] + [read(name, True) for name in names]
        query = select(*values)
        if where is not None:
            query = query.where(_condition_sql(where, read))
        conn.execute(insert(self.table).from_select([c.name for c in self.table.c], query))

    @property
    def by_record(self) -> Any:
        """Record ids in code-point order on both databases (PostgreSQL would sort by its locale)."""
        record = self.table.c.record
        return record.collate("C") if self.conn.dialect.name == "postgresql" else record

    def read(self, name: str, numeric: bool) -> Any:
        text, number = self.columns[name]
        return self.table.c[number if numeric else text]

    def figures(
        self, group_field: str | None, decisions: Sequence[str]
    ) -> list[tuple[Any, tuple[Any, ...], int, float]]:
        """(group key, the ``decisions``' values, open cases, their summed ``opportunity.amount``) for every
        combination present: one GROUP BY."""
        t = self.table
        group = self.read(group_field, False) if group_field else literal(None)
        values = [self.read(name, False) for name in decisions]
        amount = func.coalesce(func.sum(self.read("opportunity.amount", True)), 0)
        query = select(group, *values, func.count(), amount).select_from(t).group_by(group, *values)
        return [(row[0], tuple(row[1:-2]), int(row[-2]), float(row[-1])) for row in self.conn.execute(query)]

    def aggregate(
        self,
        group_field: str | None,
        specs: Sequence[AggregateSpec],
        *,
        members: int = 20,
        listed: Iterable[str] | None = None,
    ) -> dict[Any, dict[str, GroupAggregate]]:
        """Per group, each spec's value (and ``open``: the group's open cases), and for the ``listed`` ones (all,
        ``open`` too, when None) up to ``members`` record ids (sorted) of the cases it was made of, with their total.
        ValueError for a spec or condition SQL cannot express (a list test, a value derived when evaluating)."""
        group = self.read(group_field, False) if group_field else literal(None)
        columns: list[Any] = [group.label("group_key"), func.count().label("open")]
        involved: dict[str, Any] = {"open": true()}
        for spec in specs:
            value, made_of = _aggregate_sql(spec, self.read)
            columns.append(value)
            involved[spec.name] = made_of
        out: dict[Any, dict[str, GroupAggregate]] = {}
        for row in self.conn.execute(select(*columns).select_from(self.table).group_by(group)):
            values = {"open": row[1], **{spec.name: _rounded(spec, row[i + 2]) for i, spec in enumerate(specs)}}
            out[row[0]] = {name: GroupAggregate(_plain_number(value), (), 0) for name, value in values.items()}
        wanted = set(involved) if listed is None else set(listed)
        if members > 0:
            for name, holds in involved.items():
                if name in wanted:
                    for key, ids, total in self._members(group, holds, members):
                        out[key][name] = GroupAggregate(out[key][name].value, ids, total)
        return out

    def _members(self, group: Any, holds: Any, limit: int) -> Iterator[tuple[Any, tuple[str, ...], int]]:
        """Per group: the first ``limit`` record ids (sorted) of the cases where ``holds``, and their total."""
        t = self.table
        ranked = (
            select(
                group.label("group_key"),
                t.c.record,
                func.row_number().over(partition_by=group, order_by=self.by_record).label("place"),
                func.count().over(partition_by=group).label("total"),
            )
            .where(holds)
            .subquery()
        )
        found: dict[Any, tuple[list[str], int]] = {}
        query = select(ranked.c.group_key, ranked.c.record, ranked.c.total).where(ranked.c.place <= limit)
        for row in self.conn.execute(query.order_by(ranked.c.place)):
            found.setdefault(row.group_key, ([], int(row.total)))[0].append(row.record)
        for key, (ids, total) in found.items():
            yield key, tuple(ids), total

    def first(
        self, partition_field: str | None, order: Sequence[tuple[str, Sequence[Any]]], *, limit: int = 10
    ) -> list[tuple[Any, int, StoredEvaluation]]:
        """The first ``limit`` deals of each partition (``partition_field``'s value), with the partition's
        total: by each (decision or field, its values in order) — a value not listed, or none, after the
        listed ones — then the larger amount, then the record id.  Ranked in the database."""
        t = self.table
        part = self.read(partition_field, False) if partition_field else literal(None)
        ranks = [
            case(
                *[(self.read(name, False) == _json_text(value), place) for place, value in enumerate(values)],
                else_=len(values),
            )
            for name, values in order
        ]
        ordering = [*ranks, func.coalesce(self.read("opportunity.amount", True), 0).desc(), self.by_record]
        ranked = select(
            t.c.seq,
            part.label("part"),
            func.row_number().over(partition_by=part, order_by=ordering).label("place"),
            func.count().over(partition_by=part).label("total"),
        ).subquery()
        rows = self.conn.execute(
            select(ranked).where(ranked.c.place <= limit).order_by(ranked.c.part, ranked.c.place)
        ).all()
        stored: dict[int, StoredEvaluation] = {}
        for chunk in iter_chunks([row.seq for row in rows], 500):
            found = self.conn.execute(select(evaluations).where(evaluations.c.seq.in_(chunk))).all()
            stored.update((s.seq, s) for s in self.store._stored(self.conn, found))
        return [(row.part, int(row.total), stored[row.seq]) for row in rows]


def _open_cases(as_of: str | None) -> Any:
    """Each record's latest evaluation (``as_of`` or before) that evaluated and was not closed after: a CTE
    of seq, record (its record id, else case id), facts and decisions (JSON text).

    Two passes over the log, whatever its size: the newest evaluation per record (GROUP BY), and the
    last ``closed_deal`` event per record (GROUP BY), joined.
    """
    e = evaluations
    record = func.coalesce(e.c.record_id, e.c.case_id)
    newest = select(func.max(e.c.seq)).group_by(record)
    if as_of is not None:
        newest = newest.where(e.c.as_of <= as_of)
    q = quarantined_events
    closed = (
        select(q.c.record_id, func.max(q.c.received_at).label("closed_at"))
        .where(q.c.code == "closed_deal", q.c.record_id.is_not(None))
        .group_by(q.c.record_id)
        .subquery("closed")
    )
    query = (
        select(e.c.seq, record.label("record"), e.c.facts, e.c.decisions)
        .select_from(e.outerjoin(closed, closed.c.record_id == record))
        .where(
            e.c.seq.in_(newest),
            e.c.status == "ok",
            or_(closed.c.closed_at.is_(None), closed.c.closed_at <= e.c.created_at),
        )
    )
    return query.cte("open_cases")


def _json_reader(dialect: str, cases: Any) -> Reader:
    """Variables read from the JSON of :func:`_open_cases`: a case field from its facts, a decision from its
    decisions; the same text on SQLite and PostgreSQL."""

    def read(name: str, numeric: bool) -> Any:
        column, path = (cases.c.facts, name.split(".")) if "." in name else (cases.c.decisions, [name])
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB  # here: loaded only when PostgreSQL is in use

            document = cast(column, JSONB)
            keys = [literal(p) for p in path]
            text = func.jsonb_extract_path_text(document, *keys)
            if not numeric:
                return text
            return case((func.jsonb_typeof(func.jsonb_extract_path(document, *keys)) == "number", cast(text, Float)))
        where = "$" + "".join(f'."{p}"' for p in path)
        kind = func.json_type(column, where)
        if numeric:
            return case((kind.in_(("integer", "real")), cast(func.json_extract(column, where), Float)))
        # JSON's own text, as PostgreSQL gives it: true and false as words, numbers as written
        return case(
            (kind == "true", literal("true")),
            (kind == "false", literal("false")),
            else_=cast(func.json_extract(column, where), Text),
        )

    return read


def _json_text(value: Any) -> Any:
    """A test's operand as a bound parameter in the text a reader gives (see :data:`Reader`)."""
    if isinstance(value, bool):
        return literal("true" if value else "false")
    if isinstance(value, dt.date):
        return literal(value.isoformat())
    return literal(value if isinstance(value, str) else json.dumps(value))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def aggregate_variables(spec: AggregateSpec) -> list[str]:
    """The case values an aggregate reads: its field and its condition's."""
    return ([spec.field] if spec.field else []) + variables_of(spec.where)


def _condition_sql(condition: Condition, read: Reader) -> Any:
    """An engine.model condition as SQL, with SQL's three-valued logic, which is the engine's (a test on a
    missing value is unknown; only a true condition holds).  Operands are bound parameters.
    ValueError for a test SQL cannot read (on lists)."""
    if isinstance(condition, AllOf):
        return and_(*[_condition_sql(item, read) for item in condition.items])
    if isinstance(condition, AnyOf):
        return or_(*[_condition_sql(item, read) for item in condition.items])
    if isinstance(condition, Not):
        return not_(_condition_sql(condition.item, read))
    atom = condition
    if atom.op == "present":
        value = read(atom.var, False)
        return value.is_not(None) if atom.operand else value.is_(None)
    if atom.op == "interval":
        value = read(atom.var, True)
        interval: Interval = atom.operand
        parts = [value.is_not(None)]
        if interval.low is not None:
            parts.append(value >= interval.low if interval.low_closed else value > interval.low)
        if interval.high is not None:
            parts.append(value <= interval.high if interval.high_closed else value < interval.high)
        return and_(*parts)
    if atom.op == "compare":
        compare: Compare = atom.operand
        value, other = read(atom.var, True), read(compare.other, True)
        if compare.factor is not None:
            other = other * compare.factor
        return {
            "gt": value > other, "gte": value >= other, "lt": value < other, "lte": value <= other,
            "equals": value == other, "not_equals": value != other,
        }[compare.op]  # fmt: skip
    operands = atom.operand if isinstance(atom.operand, tuple) else (atom.operand,)
    if atom.op not in ("equals", "not_equals", "one_of", "not_one_of"):
        raise ValueError(f"the test '{atom.var} {atom.op}' cannot be read in the database")
    numeric = all(_is_number(v) for v in operands)
    value = read(atom.var, numeric)
    bound = [literal(v) if numeric else _json_text(v) for v in operands]
    if atom.op == "equals":
        return value == bound[0]
    if atom.op == "not_equals":
        return value != bound[0]
    if atom.op == "one_of":
        return value.in_(bound)
    return value.not_in(bound)


def _aggregate_sql(spec: AggregateSpec, read: Reader) -> tuple[Any, Any]:
    """(the spec's value as an SQL aggregate, the condition of the cases it is made of)."""
    if spec.function not in AGGREGATE_FUNCTIONS:
        raise ValueError(f"unknown aggregate function '{spec.function}'; one of {', '.join(AGGREGATE_FUNCTIONS)}")
    holds = _condition_sql(spec.where, read) if spec.where is not None else true()
    if spec.function in ("count", "share"):
        # as engine/portfolio.py counts in memory: a case whose condition is unknown (its facts missing)
        # is neither counted nor in the share's base, and a group where every case is unknown has no figure
        counted = func.count(case((holds, 1)))
        known = func.count(case((holds, 1), (not_(holds), 0)))
        if spec.function == "count":
            return case((known == 0, null()), else_=counted), holds
        return cast(counted, Float) / func.nullif(known, 0), holds
    if spec.field is None:
        raise ValueError(f"the aggregate '{spec.name}' ({spec.function}) needs a field")
    value = read(spec.field, spec.function not in ("distinct", "value"))
    chosen = case((holds, value))
    aggregate = {
        "sum": func.sum(chosen), "min": func.min(chosen), "max": func.max(chosen),
        "distinct": func.count(distinct(chosen)),
        # the one value the cases agree on; none when they disagree or give none
        "value": case((func.count(distinct(chosen)) == 1, func.min(chosen)), else_=null()),
    }[spec.function]  # fmt: skip
    return aggregate, and_(holds, value.is_not(None))


def _rounded(spec: AggregateSpec, value: Any) -> Any:
    """A share to six places, as engine/portfolio.py gives it (the last bits differ between databases)."""
    return round(value, 6) if spec.function == "share" and value is not None else value


def _plain_number(value: Any) -> Any:
    """A figure as JSON would give it: a decimal as a float, a whole float as an int."""
    if isinstance(value, Decimal):
        value = float(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
