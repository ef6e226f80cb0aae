"""One import of CRM records: read a source, evaluate each case, file it in the audit log, account for every record.

A :class:`Source` is what is read — JSON Lines cases, or through a mapping a CSV export, JSON
records or a database table or query — and the one place that tells them apart.  An
:class:`ImportRun` reads it and yields one event per record, in input order: a case
:class:`Evaluated` (a result or a case error), a record :class:`QuarantinedRecord` by its
mapping, or a case :class:`StoredEarlier` by an earlier run of the same import.  It keeps the
counts as it goes (:class:`ImportCounts`); the caller only shows what it is given.

Resuming and reruns.  An import is named by its run key: what was read (a file's bytes, a
database's URL and table or query), the mapping and ``as_of`` — not the playbook, so that a rerun
after a playbook change still finds what was stored.  Each case is filed under ``run:line``.  A run
of an import already stored, whole or in part, evaluates only the records not stored yet and gives
the others as they were stored, evaluating nothing again; so a run stopped at any point (even
``kill -9``) and started again stores every case exactly once.  ``reevaluate=True`` starts a new
generation of the import (``run.2:line``, ``run.3:line``, ...): every case is evaluated again under
the current playbook and filed as a new evaluation.  Later runs show, and resume, the newest one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.mapping import MappedCase, Mapping, Quarantined
from engine.compile import compile_playbook
from engine.errors import CaseError
from engine.evaluate import Evaluator, Result
from engine.limits import BATCH
from engine.loader import PlaybookLoader

if TYPE_CHECKING:  # the audit log is imported when an import is filed in one: --no-store runs without it
    from engine.store import Appended, Store, StoredEvaluation

__all__ = [
    "Evaluated",
    "ImportCounts",
    "ImportEvent",
    "ImportRun",
    "QuarantinedRecord",
    "Source",
    "StoredEarlier",
]

Record = tuple[str, dict[str, Any]] | CaseError | Quarantined


@dataclass(frozen=True)
class Source:
    """Where an import reads: a file (``-`` for stdin) or, with ``table`` or ``query``, a database URL.

    Without a mapping a file is JSON Lines cases; with one it is a CSV export, or JSON records when
    it ends in ``.json`` or ``.jsonl``.  Raises ValueError for a combination that cannot be read.
    """

    path: str
    mapping: Mapping | None = None
    table: str | None = None
    query: str | None = None
    timeout: float | None = None  # seconds a database may take to give the next rows

    def __post_init__(self) -> None:
        if self.mapping is None and self.kind == "csv":
            raise ValueError("a CSV export needs --mapping (a preset name or a mapping file)")
        if self.kind == "sql" and self.mapping is None:
            raise ValueError("a database read needs --mapping")

    @property
    def kind(self) -> str:
        """``sql``, ``json`` (records), ``csv``, or ``jsonl`` (cases, no mapping)."""
        if self.table is not None or self.query is not None:
            return "sql"
        if self.path.lower().endswith((".json", ".jsonl")) and self.mapping is not None:
            return "json"
        if self.path.lower().endswith(".csv") or self.mapping is not None:
            return "csv"
        return "jsonl"

    @property
    def name(self) -> str:
        """What the audit log files its cases under: ``jsonl``, or the kind and the mapping's id."""
        return "jsonl" if self.mapping is None else f"{self.kind}:{self.mapping.id}"

    def run_key(self, as_of: dt.date) -> str | None:
        """Names this import: what is read, the mapping, ``as_of``.  None for stdin, which cannot be read twice.

        A database read is named by its URL and table or query: a rerun resumes by row position,
        so the source should not change in between.
        """
        digest = hashlib.sha256()
        if self.kind == "sql":
            digest.update(f"{self.path}|{self.table}|{self.query}".encode())
        elif self.path == "-" or not Path(self.path).is_file():
            return None
        else:
            with open(self.path, "rb") as raw:
                for block in iter(lambda: raw.read(1 << 20), b""):
                    digest.update(block)
        mapping_text = Path(self.mapping.file).read_bytes() if self.mapping is not None else b""
        digest.update(f"|{as_of.isoformat()}|".encode() + mapping_text)
        return digest.hexdigest()[:24]

    def records(self, progress: Callable[[int], None] | None = None) -> Iterator[tuple[int, Record]]:
        """(line or row number, case | its error | quarantined record) for every record, in order.

        ``progress`` is told the bytes read as a CSV export is read.
        """
        if self.mapping is None:
            from adapters.jsonl import read_numbered_cases

            # bytes: each line's encoding is checked on its own, so one bad line is that line's error
            with ExitStack() as stack:
                handle = sys.stdin.buffer if self.path == "-" else stack.enter_context(open(self.path, "rb"))
                yield from read_numbered_cases(handle)
            return
        if self.kind == "sql":
            from adapters.sql_source import read_sql

            records = read_sql(self.path, self.mapping, table=self.table, query=self.query, timeout=self.timeout)
        elif self.kind == "json":
            from adapters.json_records import read_json_records

            records = read_json_records(self.path, self.mapping)
        else:
            from adapters.csv_export import read_csv

            records = read_csv(self.path, self.mapping, progress=progress)
        for line, item in records:
            yield line, (item.case_id, item.case) if isinstance(item, MappedCase) else item


@dataclass(frozen=True)
class Evaluated:
    """A case evaluated by this run: its result or error, the case as read, its number in the audit log."""

    line: int
    outcome: Result | CaseError
    facts: dict[str, Any]  # {} for a record that did not read as a case
    evaluation: int | None  # None when not stored


@dataclass(frozen=True)
class StoredEarlier:
    """A case an earlier run of this import stored: the stored evaluation, and its result or error.

    The result is the stored case re-derived under the stored playbook (for its labels and trace)
    and checked against what was stored; a case whose re-derivation differs is given as a
    ``stored_mismatch`` error.
    """

    line: int
    outcome: Result | CaseError
    stored: StoredEvaluation


@dataclass(frozen=True)
class QuarantinedRecord:
    """A record its mapping set aside: not a case, not evaluated."""

    line: int
    record: Quarantined


ImportEvent = Evaluated | StoredEarlier | QuarantinedRecord


@dataclass
class ImportCounts:
    """What a run has given so far; ``rows`` = evaluated + stored earlier + quarantined, always."""

    rows: int = 0
    results: int = 0  # evaluated by this run
    errors: int = 0
    earlier_results: int = 0  # stored by an earlier run
    earlier_errors: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)  # by code
    first_evaluation: int | None = None  # stored by this run
    last_evaluation: int | None = None
    earlier_stored: tuple[str, str] | None = None  # (first, last) time the earlier evaluations were stored
    actions: Counter[str] = field(default_factory=Counter)  # cases each action was recommended to
    owners: Counter[str | None] = field(default_factory=Counter)  # cases given, by opportunity.owner
    decision_values: Counter[Any] = field(default_factory=Counter)  # values of the run's tallied decision

    @property
    def evaluated(self) -> int:
        return self.results + self.errors

    @property
    def earlier(self) -> int:
        return self.earlier_results + self.earlier_errors

    def add(self, event: ImportEvent, tallied: str | None) -> None:
        self.rows += 1
        if isinstance(event, QuarantinedRecord):
            self.quarantined[event.record.code] += 1
            return
        failed = isinstance(event.outcome, CaseError)
        if isinstance(event, StoredEarlier):
            self.earlier_results += not failed
            self.earlier_errors += failed
            at = event.stored.created_at
            first, last = self.earlier_stored or (at, at)
            self.earlier_stored = (min(first, at), max(last, at))
            facts = event.stored.facts
        else:
            self.results += not failed
            self.errors += failed
            if event.evaluation is not None:
                self.first_evaluation = self.first_evaluation or event.evaluation
                self.last_evaluation = event.evaluation
            facts = event.facts
        opportunity = facts.get("opportunity")
        owner = opportunity.get("owner") if isinstance(opportunity, dict) else None
        self.owners[str(owner) if owner is not None else None] += 1
        if isinstance(event.outcome, Result):
            self.actions.update({rec["id"] for rec in event.outcome.recommendations})
            if tallied is not None:
                value = event.outcome.decisions.get(tallied)
                self.decision_values[tuple(value) if isinstance(value, list) else value] += 1


_SUMMARY_WORDS: dict[str, dict[str, str]] = {
    "en": {
        "rows": "{rows} rows: {evaluated} cases evaluated ({results} results, {errors} errors)",
        "quarantined": ", {total} quarantined ({codes}{listed})",
        "listed": "; --verbose lists them",
        "code": "{code} {n}",
        "join": ", ",
        "earlier": (
            ", {earlier} already stored by an earlier run of this import on {when} and {how} as stored "
            "({results} results, {errors} errors; --reevaluate evaluates them again)"
        ),
        "counted": "counted",
        "shown": "shown",
        "stored_in": "; stored in {db} as evaluations {first}–{last}",
        "groups": "; {n} groups decided ({per})",
    },
    "zh": {
        "rows": "共 {rows} 行:评估 {evaluated} 个案例(成功 {results} 个,出错 {errors} 个)",
        "quarantined": ",隔离 {total} 行({codes}{listed})",
        "listed": ";加 --verbose 逐行列出",
        "code": "{code} {n} 行",
        "join": "、",
        "earlier": (
            ",{earlier} 个已由本次导入的上一轮于 {when} 存入,按已存结果{how}"
            "(成功 {results} 个,出错 {errors} 个;加 --reevaluate 重新评估)"
        ),
        "counted": "计数",
        "shown": "显示",
        "stored_in": ";已存入 {db},评估编号 {first}–{last}",
        "groups": ";判断了 {n} 个组({per})",
    },
}
# the standard quarantine codes, named in Chinese; a mapping's own codes are shown as its author wrote them
_QUARANTINE_ZH = {
    "missing_field": "缺少字段",
    "lookup_not_found": "查找不到",
    "bad_number": "数字无效",
    "bad_date": "日期无效",
    "bad_boolean": "是否值无效",
    "unknown_value": "未知取值",
    "unstorable_text": "无法存储的文字",
    "bad_row": "行格式错误",
    "bad_json": "JSON 无效",
    "bad_encoding": "编码无效",
    "bad_record": "记录无法处理",
    "duplicate_case": "案例编号重复",
}


def import_summary(
    counts: ImportCounts,
    lang: str,
    *,
    listed: bool,
    counted_only: bool,
    stored_in: str,
    groups: Counter[str],
) -> str:
    """The one line ``recommend`` ends with, in ``lang``: rows, cases, quarantined records by code, the
    cases an earlier run stored, where this run stored its evaluations, the groups decided.

    ``listed``: the quarantined records were printed one by one (no hint to ask for them);
    ``counted_only``: the earlier cases were counted, not shown; ``stored_in``: the log as printed;
    ``groups``: how many groups were decided, by what their cases share (as people call it, in ``lang``).
    """
    words = _SUMMARY_WORDS["zh" if lang == "zh" else "en"]
    zh = lang == "zh"
    text = words["rows"].format(
        rows=counts.rows, evaluated=counts.evaluated, results=counts.results, errors=counts.errors
    )
    if counts.quarantined:
        codes = words["join"].join(
            words["code"].format(code=_QUARANTINE_ZH.get(code, code) if zh else code, n=n)
            for code, n in sorted(counts.quarantined.items())
        )
        text += words["quarantined"].format(
            total=counts.quarantined.total(), codes=codes, listed="" if listed else words["listed"]
        )
    if counts.earlier:
        first, last = counts.earlier_stored or ("", "")
        when = first[:10] if first[:10] == last[:10] else f"{first[:10]}–{last[:10]}"
        text += words["earlier"].format(
            earlier=counts.earlier,
            when=when,
            how=words["counted" if counted_only else "shown"],
            results=counts.earlier_results,
            errors=counts.earlier_errors,
        )
    if counts.first_evaluation is not None:
        text += words["stored_in"].format(db=stored_in, first=counts.first_evaluation, last=counts.last_evaluation)
    if groups:
        per = words["join"].join(f"{name} {n}" for name, n in groups.items())
        text += words["groups"].format(n=groups.total(), per=per)
    return text


class ImportRun:
    """Reads ``source``, evaluates its cases with ``evaluator`` as of ``as_of``, files them in ``store``.

    Iterate it for the events, in input order (a batch's events come once the batch is committed);
    ``counts`` holds the totals so far.  Without a store every case is evaluated and nothing is
    kept; a source with no run key (stdin) is evaluated whole each time.  ``tallied`` names a
    decision whose values are counted (``counts.decision_values``).  Reading errors
    (``PlaybookError``) and engine faults propagate.
    """

    def __init__(
        self,
        source: Source,
        evaluator: Evaluator,
        as_of: dt.date,
        store: Store | None = None,
        *,
        reevaluate: bool = False,
        progress: Callable[[int], None] | None = None,
        tallied: str | None = None,
        batch: int = BATCH,
    ) -> None:
        self.source, self.evaluator, self.as_of, self.store = source, evaluator, as_of, store
        self.reevaluate, self.progress, self.tallied, self.batch = reevaluate, progress, tallied, batch
        self.counts = ImportCounts()

    def __iter__(self) -> Iterator[ImportEvent]:
        for event in self._events():
            self.counts.add(event, self.tallied)
            yield event

    def _events(self) -> Iterator[ImportEvent]:
        records = _each_id_once(self.source.records(self.progress))
        run = self.source.run_key(self.as_of) if self.store is not None else None
        if self.store is None or run is None:
            for line, item in records:
                yield self._unstored(line, item)
            return
        from engine.store import iter_chunks

        generation, stored = self._generation(self.store, run)
        prefix = run if generation == 1 else f"{run}.{generation}"
        with ExitStack() as playbooks:
            rederive = _Rederiver(self.store, self.evaluator, playbooks)
            for chunk in iter_chunks(records, self.batch):
                yield from self._chunk(self.store, chunk, prefix, stored, rederive)

    def _unstored(self, line: int, item: Record) -> ImportEvent:
        if isinstance(item, Quarantined):
            return QuarantinedRecord(line, item)
        if isinstance(item, CaseError):
            return Evaluated(line, item, {}, None)
        case_id, case = item
        try:
            return Evaluated(line, self.evaluator.evaluate_case(case, self.as_of, case_id), case, None)
        except CaseError as error:
            return Evaluated(line, error, case, None)

    def _generation(self, store: Store, run: str) -> tuple[int, dict[int, int]]:
        """The generation of the import this run files into, and the lines already stored in it -> evaluation."""
        by_generation: dict[int, dict[int, int]] = {}
        for key, seq in store.stored_imports(self.source.name, run).items():
            head, _, line = key.rpartition(":")
            generation = int(head.partition(".")[2] or 1)
            by_generation.setdefault(generation, {})[int(line)] = seq
        latest = max(by_generation, default=1)
        if self.reevaluate and by_generation:
            return latest + 1, {}
        return latest, by_generation.get(latest, {})

    def _chunk(
        self,
        store: Store,
        chunk: list[tuple[int, Record]],
        prefix: str,
        stored: dict[int, int],
        rederive: _Rederiver,
    ) -> Iterator[ImportEvent]:
        """One batch: its new cases evaluated and filed in one transaction, its stored ones read back."""
        from engine.audit import outcome_to_file
        from engine.store import Appended, Prepared
        from engine.tasks import CLOSING_CODES, close_records

        events: list[ImportEvent | None] = []
        filed: list[tuple[int, int, Appended]] = []  # (place in events, line, what is filed)
        earlier: list[tuple[int, int, int]] = []  # (place in events, line, evaluation)
        closed: dict[str, str] = {}  # record -> why it is closed: its open tasks are cancelled
        for line, item in chunk:
            if isinstance(item, Quarantined):
                events.append(QuarantinedRecord(line, item))
                if item.code in CLOSING_CODES and item.record_id is not None:
                    closed[item.record_id] = item.reason
                continue
            if line in stored:
                earlier.append((len(events), line, stored[line]))
            else:
                if isinstance(item, CaseError):
                    outcome: Result | CaseError = item
                    facts: dict[str, Any] = {}
                else:
                    outcome, facts = outcome_to_file(self.evaluator, item[0], item[1], self.as_of)
                filed.append((len(events), line, Appended(outcome, facts, import_key=f"{prefix}:{line}")))
            events.append(None)
        seqs: list[int] = []
        if filed or closed:  # one transaction: a closed deal's open work is cancelled as it is read
            with store.write() as writer:
                if filed:
                    seqs = writer.append(
                        self.evaluator.playbook, [a for _, _, a in filed], source=self.source.name, as_of=self.as_of
                    )
                if closed:
                    close_records(writer.tasks, self.source.name, closed, self.as_of.isoformat())
        if filed:
            for (place, line, appended), seq in zip(filed, seqs, strict=True):
                if seq > 0:
                    assert not isinstance(appended.outcome, Prepared)  # made here, from a Result or a CaseError
                    events[place] = Evaluated(line, appended.outcome, appended.facts, seq)
                else:  # filed meanwhile by another run of this import
                    key = f"{prefix}:{line}"
                    earlier.append((place, line, store.stored_imports(self.source.name, key)[key]))
        if earlier:
            for (place, line, _), kept in zip(earlier, store.get_many([seq for *_, seq in earlier]), strict=True):
                events[place] = StoredEarlier(line, rederive(kept), kept)
        for event in events:
            assert event is not None  # every place is filled above
            yield event


def _each_id_once(records: Iterator[tuple[int, Record]]) -> Iterator[tuple[int, Record]]:
    """The records, but a case with the id of an earlier case of the input set aside (``duplicate_case``):
    an import evaluates and files each case once, and a rerun sets aside the same records.

    The ids seen are kept in a private temporary SQLite file, not in memory: a dict of a million ids
    held 120 MB, the whole of an import's growth (peak RSS 101 MB at 100,000 open deals, 211 MB at
    1,000,000); SQLite holds a few pages in memory and costs about 4 µs a case.
    """
    seen = sqlite3.connect("")  # "": a temporary file of this connection's own, removed when it closes
    try:
        seen.execute("CREATE TABLE seen (id TEXT PRIMARY KEY, line INTEGER NOT NULL) WITHOUT ROWID")
        for line, item in records:
            if (
                isinstance(item, tuple)
                and seen.execute("INSERT OR IGNORE INTO seen VALUES (?, ?)", (item[0], line)).rowcount == 0
            ):
                (first,) = seen.execute("SELECT line FROM seen WHERE id = ?", (item[0],)).fetchone()
                reason = f"the same id as the record at line {first}, which is the one evaluated"
                yield line, Quarantined(line, item[0], "duplicate_case", reason)
                continue
            yield line, item
    finally:
        seen.close()


class _Rederiver:
    """Stored cases -> their results again, under the playbook that made each, checked against what was stored."""

    def __init__(self, store: Store, current: Evaluator, playbooks: ExitStack) -> None:
        self.store, self.playbooks = store, playbooks
        self.evaluators = {current.playbook.content_hash: current}

    def __call__(self, stored: StoredEvaluation) -> Result | CaseError:
        if stored.status != "ok" or stored.error:
            error = stored.error or {}
            return CaseError(stored.case_id, error.get("code", "error"), error.get("message", ""))
        evaluator = self.evaluators.get(stored.playbook_hash)
        if evaluator is None:
            playbook = PlaybookLoader().stored(self.store, stored.playbook_hash)
            evaluator = Evaluator(self.playbooks.enter_context(compile_playbook(playbook)))
            self.evaluators[stored.playbook_hash] = evaluator
        result: Result | CaseError
        try:
            result = evaluator.evaluate_case(stored.facts, dt.date.fromisoformat(stored.as_of), stored.case_id)
        except CaseError as error:
            result = error
        if isinstance(result, Result) and (
            result.decisions == stored.decisions
            and result.fired() == stored.fired
            and [(r["id"], r["rule"], r["params"]) for r in result.recommendations]
            == [(r["id"], r["rule"], r["params"]) for r in stored.recommendations]
        ):
            return result
        return CaseError(
            stored.case_id,
            "stored_mismatch",
            f"evaluation {stored.seq} does not match its re-evaluation under playbook {stored.playbook_hash[:12]}; "
            "--reevaluate evaluates it again",
        )
