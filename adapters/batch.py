"""Bulk evaluation: every record of a set of files in, one Parquet row per record out.

The unit of work is a partition: an iterable of ``(source, line, item)``.  :func:`evaluate_partition`
maps, evaluates and shapes each one, and it is the same code on one machine (``engine="local"``,
:func:`run_local`: each input file is one partition, read by the adapters ``recommend`` reads with)
and on Apache Spark (adapters/spark_batch.py: Spark reads the files and hands each partition's
rows here).  An item is what the reader gives: a JSON Lines line (text) decoded here, a CSV or
Parquet record (a dict) mapped here, or a case, case error or quarantined record a local reader
made already.

Every input record yields exactly one output row: ``status`` ``result``, ``error`` or
``quarantined``, with ``source`` (the file) and ``line`` (its physical line; a Parquet file's row,
1-based), ``case``, ``code`` and ``reason`` for the last two, and ``result``: the JSON text that
``recommend --no-store --format json`` prints for that record, so the two can be compared line by line.

The playbook travels as its text and is compiled at most once per process (cached by content
hash): durable-rules registers a ruleset per compiled playbook, and a Spark executor's Python
worker evaluates many partitions.
"""

from __future__ import annotations

import datetime as dt
import glob
import json
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.mapping import MappedCase, Mapping, Quarantined
from engine.errors import CaseError
from engine.evaluate import Evaluator, Result

if TYPE_CHECKING:
    from engine.store import Prepared

__all__ = [
    "COLUMNS",
    "BatchCounts",
    "BatchJob",
    "check_inputs",
    "evaluate_partition",
    "filed_of",
    "input_files",
    "kind_of",
    "prepare_output",
    "run_local",
]

COLUMNS = ("source", "line", "case", "status", "code", "reason", "result")
"""The output's columns, in order (``line`` an integer, every other one text; ``code`` and ``reason`` only
for errors and quarantined records)."""

DONE_MARKER = "_SUCCESS"  # what Spark leaves in a finished output; the local engine leaves it too
_ROWS_PER_FILE = 50_000
_EVALUATORS: dict[str, Evaluator] = {}  # content hash -> this process's evaluator of that playbook


@dataclass(frozen=True)
class BatchJob:
    """Everything a worker needs, picklable: the playbook as text, the mapping with its lookups attached."""

    playbook_text: str
    playbook_file: str
    kind: str  # jsonl (cases), json (records), csv, parquet
    mapping: Mapping | None
    as_of: dt.date
    lang: str
    filing: bool = False  # each result and error also prepared for the audit log (``batch --db``)


@dataclass
class BatchCounts:
    rows: int = 0
    results: int = 0
    errors: int = 0
    quarantined: Counter[str] | None = None

    def add(self, status: str, code: str | None, rows: int = 1) -> None:
        self.rows += rows
        if status == "result":
            self.results += rows
        elif status == "error":
            self.errors += rows
        else:
            if self.quarantined is None:
                self.quarantined = Counter()
            self.quarantined[code or ""] += rows


def kind_of(path: str, mapping: Mapping | None) -> str:
    """``csv``, ``parquet``, ``json`` (records, with a mapping) or ``jsonl`` (cases, without one)."""
    lower = path.lower()
    if lower.endswith(".parquet"):
        return "parquet"
    if lower.endswith((".json", ".jsonl")):
        return "json" if mapping is not None else "jsonl"
    if lower.endswith(".csv"):
        return "csv"
    raise ValueError(f"'{path}': give .csv, .json, .jsonl or .parquet files")


def input_files(pattern: str) -> list[str]:
    """The files an ``--input`` names: a file, a folder's files (not hidden ones), or a glob; sorted."""
    path = Path(pattern)
    if path.is_dir():
        found = [str(p) for p in sorted(path.iterdir()) if p.is_file() and not p.name.startswith((".", "_"))]
    elif path.is_file():
        found = [pattern]
    else:
        found = sorted(p for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
    if not found:
        raise ValueError(f"'{pattern}' names no file")
    return found


def check_inputs(job: BatchJob, files: list[str]) -> None:
    """Refuse, before any record is evaluated or any cluster started, input the mapping cannot read.

    Each CSV file's header (its encoding, a column named twice, every column the mapping needs) and
    each Parquet file's columns are checked; a ``PlaybookError`` located in the file or the mapping.
    JSON records have no header: a record lacking a field is quarantined, as in ``recommend``.
    """
    if job.mapping is None:
        return
    if job.kind == "csv":
        from adapters.csv_export import read_csv

        for file in files:
            next(read_csv(file, job.mapping), None)  # the header is checked before the first row is given
    elif job.kind == "parquet":
        import pyarrow.parquet as pq

        for file in files:
            job.mapping.check_columns(pq.read_schema(file).names, Path(file).name)


def _evaluator(job: BatchJob) -> Evaluator:
    from engine.compile import compile_playbook
    from engine.validate import load_playbook_text

    playbook = load_playbook_text(job.playbook_text, job.playbook_file)
    known = _EVALUATORS.get(playbook.content_hash)
    if known is None:
        # kept for the life of the process: a worker evaluates partition after partition
        known = _EVALUATORS[playbook.content_hash] = Evaluator(compile_playbook(playbook))
    return known


def _item_case(job: BatchJob, line: int, item: Any) -> tuple[str, dict[str, Any]] | CaseError | Quarantined:
    if isinstance(item, str | bytes):  # a JSON Lines line
        if job.mapping is None:
            from adapters.jsonl import numbered_case

            return numbered_case(line, item)
        from adapters.json_records import line_record

        mapped = line_record(line, item, job.mapping)
    elif isinstance(item, dict):
        assert job.mapping is not None
        if job.kind == "csv":  # as Python's csv module reads it: an empty cell is empty text
            record = {key: "" if value is None else value for key, value in item.items()}
        else:
            from adapters.json_records import flatten

            record = flatten(item)
        mapped = job.mapping.to_case(record, line=line)
    else:
        return item  # type: ignore[no-any-return]
    return (mapped.case_id, mapped.case) if isinstance(mapped, MappedCase) else mapped


def evaluate_partition(job: BatchJob, items: Iterable[tuple[str, int, Any]]) -> Iterator[tuple[Any, ...]]:
    """One output row (the :data:`COLUMNS`) per item, in order.  A blank JSON Lines line is no record.

    With ``job.filing`` each row has one more column, ``filed``: for a result or an error, the JSON of
    what the audit log stores for it (engine.store.Prepared, as ``recommend --db`` would file it;
    :func:`filed_of` reads it back); None for a quarantined record, which is not stored.
    """
    evaluator = _evaluator(job)
    for source, line, item in items:
        if isinstance(item, str | bytes) and not item.strip():
            continue
        case = _item_case(job, line, item)
        if isinstance(case, Quarantined):
            payload = {
                "case": case.record_id or f"line {line}",
                "line": line,
                "quarantined": {"code": case.code, "reason": case.reason},
            }
            row: tuple[Any, ...] = (source, line, payload["case"], "quarantined", case.code, case.reason)
            yield (*row, _json(payload), None) if job.filing else (*row, _json(payload))
            continue
        facts: dict[str, Any] = {}
        if not isinstance(case, CaseError):
            facts = case[1]
            try:
                outcome = evaluator.evaluate_case(case[1], job.as_of, case[0])
            except CaseError as error:
                case = error
            else:
                row = (source, line, outcome.case, "result", None, None, _json(outcome.to_json(job.lang)))
                yield (*row, _filed(outcome, facts)) if job.filing else row
                continue
        row = (source, line, case.case_id, "error", case.code, case.message, _json(case.to_json()))
        yield (*row, _filed(case, facts)) if job.filing else row


def _filed(outcome: Result | CaseError, facts: dict[str, Any]) -> str:
    """What the audit log stores for this case: a case whose ids are too long to file, kept as ``id_too_long``."""
    from engine.limits import ID_LENGTH
    from engine.store import Appended, oversized_id, prepare

    problem = oversized_id(outcome.case if isinstance(outcome, Result) else outcome.case_id, facts)
    if problem is not None:
        case_id = outcome.case if isinstance(outcome, Result) else outcome.case_id
        outcome, facts = CaseError(case_id[:ID_LENGTH], "id_too_long", problem), {}
    return json.dumps(astuple(prepare(Appended(outcome, facts))), ensure_ascii=False)


def filed_of(text: str) -> Prepared:
    """A ``filed`` column's value read back."""
    from engine.store import Prepared

    case_id, status, record_id, account_id, facts, decisions, fired, error, recs = json.loads(text)
    advised = tuple((action, rule, params) for action, rule, params in recs)
    return Prepared(case_id, status, record_id, account_id, facts, decisions, fired, error, advised)


def _json(payload: dict[str, Any]) -> str:
    return json.dumps(payload, ensure_ascii=False)


def prepare_output(output: str) -> None:
    """Make room for the output: refuse a path that holds something other than an earlier batch's output.

    A rerun replaces its earlier output whole, so running a job again never doubles its rows.
    """
    path = Path(output)
    if not path.exists():
        return
    if not (path.is_dir() and (path / DONE_MARKER).exists()):
        raise ValueError(f"'{output}' exists and is not the output of an earlier batch run; not replacing it")
    shutil.rmtree(path)


def run_local(job: BatchJob, files: list[str], output: str, filing: Any = None) -> BatchCounts:
    """Evaluate every record of ``files`` in this process; write Parquet under ``output/status=.../``.

    ``filing`` (an adapters.batch_filing.Filing, with ``job.filing``): where the results are filed as they come.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    prepare_output(output)
    schema = pa.schema([(name, pa.int64() if name == "line" else pa.string()) for name in COLUMNS])
    counts = BatchCounts()
    pending: dict[str, list[tuple[Any, ...]]] = {}
    written: Counter[str] = Counter()

    def flush(status: str) -> None:
        rows = pending.pop(status)
        folder = Path(output) / f"status={status}"
        folder.mkdir(parents=True, exist_ok=True)
        columns = list(zip(*rows, strict=True))
        table = pa.table([pa.array(c, type=f.type) for c, f in zip(columns, schema, strict=True)], schema=schema)
        # status lives in the folder name, as Spark's partitionBy writes it
        pq.write_table(table.drop_columns(["status"]), folder / f"part-{written[status]:05d}.parquet")
        written[status] += 1

    for file in files:
        for row in evaluate_partition(job, ((file, line, item) for line, item in _local_records(job, file))):
            counts.add(row[3], row[4])
            if filing is not None and row[7] is not None:
                filing.add(row[0], row[1], row[7])
            held = pending.setdefault(row[3], [])
            held.append(row[:7])
            if len(held) >= _ROWS_PER_FILE:
                flush(row[3])
    for status in list(pending):
        flush(status)
    if filing is not None:
        filing.flush()
    Path(output).mkdir(parents=True, exist_ok=True)
    (Path(output) / DONE_MARKER).touch()
    return counts


def _local_records(job: BatchJob, file: str) -> Iterator[tuple[int, Any]]:
    if job.kind == "parquet":
        import pyarrow.parquet as pq

        number = 0
        for batch in pq.ParquetFile(file).iter_batches():
            for record in batch.to_pylist():
                number += 1
                yield number, record
        return
    from adapters.import_run import Source

    yield from Source(file, job.mapping).records()
