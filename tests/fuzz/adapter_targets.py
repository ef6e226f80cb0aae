"""Fuzz targets for the adapters (#13): the CSV reader, the JSON Lines reader, the JSON record reader, the mapping.

Each target takes one input (a file's bytes, or a record) and asserts what must hold for every
input whatever it holds: the adapter gives cases, quarantined records or lines in error, or a
located error (a PlaybookError whose every problem names the file) -- never another exception,
and never its catch-all boundary (an exception nobody foresaw: the boundary keeps it from
stopping a run, but it is still a bug); every record keeps its physical line; and nothing it
hands on holds a number that is not finite or text that cannot be stored.

Inputs come three ways: built by Hypothesis from the format's grammar (they shrink well), made
from a random generator (fast), and seeds of the corpus in ``tests/fuzz/corpus/<target>/``
mutated (bytes inserted, deleted, replaced, lines doubled, cut short).  All three draw on the
values that broke readers before: quotes, NUL, surrogates, 9999-12-31, 1e999, NaN, 5,000-digit
numbers, GBK and Latin-1 bytes, deep nesting.

``tests/test_fuzz_adapters.py`` replays the corpus and runs each target for a short budget in
every test run.  A longer run counts executions and keeps one input per kind of failure in the
corpus as ``crash-<hash>`` (replayed by every later test run)::

    python -m tests.fuzz.adapter_targets csv_reader --seconds 600
    python -m tests.fuzz.adapter_targets all --seconds 600     # each target in turn
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import decimal
import hashlib
import io
import json
import random
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.csv_export import read_csv
from adapters.json_records import read_json_records
from adapters.jsonl import read_numbered_cases
from adapters.mapping import MappedCase, Mapping, Quarantined, load_mapping, preset_names, unstorable
from engine.errors import CaseError, PlaybookError

CORPUS = Path(__file__).resolve().parent / "corpus"
TARGETS = ("csv_reader", "jsonl_reader", "json_records", "mapping")

# A mapping that uses every part of the language: lookups (one chained, one optional), quarantine
# rules, alternatives, constants and defaults, every type, formats, add_days, scale, bands, maps
# to values, lists and null, a source named by another value, optional columns.
MAPPING = """\
mapping: {id: fuzz, record_id: [id, alt_id]}
lookups:
  teams: {file: teams.csv, key: agent, match: agent, normalize: compact}
  managers: {file: managers.csv, key: name, match: teams.manager, optional: true}
quarantine:
  - {field: stage, one_of: [Won, Lost], code: closed_deal, reason: "stage {value} in {field}"}
  - {field: agent, missing: true, code: no_agent, reason: "no agent"}
fields:
  opportunity.id: {first_of: [id, alt_id]}
  opportunity.name: {from: name, optional: true}
  opportunity.amount: {from: amount, type: number, required: true}
  opportunity.period_target: {from: target, type: number, scale: 1000, default: 30000}
  opportunity.close_date: {from: close, type: date, formats: ["%d/%m/%Y", iso, epoch_ms], add_days: 30}
  opportunity.stage_entered_date: {from: "entered_{stage}", type: date, optional: true}
  opportunity.win_rate:
    from: probability
    type: number
    bands: [{below: 20, value: 0}, {below: 40, value: 20}, {value: 40}]
  opportunity.milestones: {from: stage, map: {A: [need_clarified], B: [need_clarified, considering_us], C: null}}
  opportunity.participants: {from: people, type: list, split: "|", optional: true}
  opportunity.transitional: {from: flag, type: boolean, optional: true}
  opportunity.origin: {from: source, map: {Web: inbound, List: outbound}, unmapped: null, optional: true}
  opportunity.owner: agent
  opportunity.team: teams.manager
  opportunity.region: {from: managers.region, optional: true}
  opportunity.market: {value: 制造业}
  account.name: {from: account, default: unknown}
  account.attractiveness:
    {from: revenue, type: number, decimal: ",", bands: [{below: 1000, value: low}, {value: high}], optional: true}
"""
COLUMNS = ["id", "alt_id", "name", "amount", "target", "close", "stage", "entered_A", "entered_B", "probability"]
COLUMNS += ["people", "flag", "source", "agent", "account", "revenue"]
TEAMS = "agent,manager\nAnn Lee,Bo Chen\n李雷,韩梅梅\n"
MANAGERS = "name,region\nBo Chen,East\n韩梅梅,华东\n"

# values that broke readers before, or sit on an edge of one
EDGES = [
    "",
    " ",
    "N/A",
    "null",
    "0",
    "1",
    "-1",
    "45%",
    "1,234.5",
    "1.234,5",
    "¥1,000",
    "$ 12",
    "1e999",
    "-1e999",
    "NaN",
    "inf",
    "-Infinity",
    "9" * 400,
    "9" * 5000,
    "0x1F",
    "9999-12-31",
    "0001-01-01",
    "31/12/9999",
    "29/02/2023",
    "2026-11-27T10:00:00Z",
    "2024-01-22T16:14:25.000+0000",
    "1556105815815",
    "99999999999999999999",
    "-1556105815815",
    "A",
    "B",
    "C",
    "Won",
    "Lost",
    "Web",
    "是",
    "否",
    "true",
    "华为技术",
    "Ann Lee",
    "annlee",
    "李雷",
    '"',
    '""',
    '"quoted, with comma"',
    "a|b||c",
    "line\nbreak",
    "cr\rhere",
    "tab\there",
    "nul\x00inside",
    "\ufeff",
    "\u2028",
    "{stage}",
    "{}",
]
# characters that matter to the readers, drawn fast; any other character now and then (no surrogates:
# those come in as bytes, through the mutations)
CHARACTERS = list("aZ09 ,;|\"'\n\r\t\x00.-+%$¥€eE{}[]\\/:TZ华为技术是é\u2028\ufeff")
TEXT = st.one_of(
    st.text(alphabet=st.sampled_from(CHARACTERS), max_size=12),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=12),
)
CELL = st.one_of(st.sampled_from(EDGES), st.sampled_from(EDGES), TEXT, st.integers().map(str))


MUTATIONS = [b'"', b",", b"\n", b"\r\n", b"\x00", b"\xff", b"\xed\xa0\x80", b"\\u0000", b"\\ud800", b"1e999", b"NaN"]
MUTATIONS += [b"[" * 3000, b"9" * 5000, "华".encode("gbk"), "é".encode("latin-1"), b"\xef\xbb\xbf"]


def mutate(rng: random.Random, seed: bytes) -> bytes:
    """A seed with a few edits: bytes inserted, deleted or replaced, a line doubled, a cut."""
    data = bytearray(seed)
    for _ in range(rng.randint(0, 6)):
        where = rng.randint(0, len(data))
        edit = rng.choice(["insert", "delete", "replace", "double_line", "cut"])
        payload = rng.choice(MUTATIONS) if rng.random() < 0.6 else rng.randbytes(rng.randint(1, 8))
        if edit == "insert":
            data[where:where] = payload
        elif edit == "delete":
            del data[where : where + rng.randint(1, 16)]
        elif edit == "replace":
            data[where : where + len(payload)] = payload
        elif edit == "double_line":
            start = data.rfind(b"\n", 0, where) + 1
            end = data.find(b"\n", where)
            end = len(data) if end < 0 else end + 1
            data[end:end] = data[start:end]
        elif rng.random() < 0.3:
            del data[where:]
    return bytes(data)


def fast(make: Callable[[random.Random], Any]) -> st.SearchStrategy[Any]:
    """Inputs made by ``make`` from one drawn seed: thousands a second, where drawing each part is tens."""
    return st.integers(0, 2**64).map(lambda seed: make(random.Random(seed)))


def seeds(target: str) -> list[bytes]:
    """The corpus of a target: its seeds and the inputs that once failed (a record's only as text, ``.repr``)."""
    return [p.read_bytes() for p in sorted((CORPUS / target).iterdir()) if p.is_file() and p.suffix != ".repr"]


# -- checks shared by the targets -----------------------------------------------------------------

_CODE = re.compile(r"[a-z][a-z0-9_]*")
# What a record's boundary says of an exception nobody foresaw. The record is safe (quarantined), but
# for the fuzzer it is a finding: the input deserves its own code and reason.
UNFORESEEN = "could not be read:"


def check_case(case_id: str, case: dict[str, Any]) -> None:
    """A case that may be stored: its text encodes, it holds no NUL and no number that is not finite."""
    assert isinstance(case, dict) and isinstance(case_id, str)
    assert unstorable(case) is None and unstorable(case_id) is None, (case_id, case)
    json.dumps(case, allow_nan=False, ensure_ascii=False).encode("utf-8")


def check_reason(text: str) -> None:
    assert isinstance(text, str) and text and "\x00" not in text
    text.encode("utf-8")


def check_item(item: Any, line: int | None) -> None:
    if isinstance(item, MappedCase):
        check_case(item.case_id, item.case)
        assert item.case["id"] == item.case_id
    else:
        assert isinstance(item, Quarantined), item
        assert item.line == line and _CODE.fullmatch(item.code), item
        check_reason(item.reason)
        assert not item.reason.startswith(UNFORESEEN), item
        assert item.record_id is None or unstorable(item.record_id) is None, item


def check_located(error: PlaybookError, files: tuple[str, ...], codes: set[str]) -> None:
    assert error.problems
    for problem in error.problems:
        assert problem.code in codes, problem
        assert problem.location.file in files, problem
        check_reason(problem.message)


def physical_lines(data: bytes) -> int:
    return data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)


# -- the targets ----------------------------------------------------------------------------------


class _Folder:
    """A temporary folder with the fuzz mapping and its lookup files, made once per process."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="playbook-fuzz-"))
        (self.path / "fuzz.yaml").write_text(MAPPING, encoding="utf-8")
        (self.path / "teams.csv").write_text(TEAMS, encoding="utf-8")
        (self.path / "managers.csv").write_text(MANAGERS, encoding="utf-8")

        self._mapping = load_mapping(self.path / "fuzz.yaml")

    def mapping(self) -> Mapping:
        return self._mapping  # read once: a reader only attaches its lookup tables to it


_FOLDER: _Folder | None = None


def folder() -> _Folder:
    global _FOLDER  # one folder for a whole run: the mapping file is read for every input
    if _FOLDER is None:
        _FOLDER = _Folder()
    return _FOLDER


def csv_reader(data: bytes) -> None:
    place = folder()
    path = place.path / "export.csv"
    path.write_bytes(data)
    try:
        items = list(read_csv(path, place.mapping()))
    except PlaybookError as error:
        codes = {"input_encoding", "csv_duplicate_column", "csv_syntax", "mapping_unknown_column"}
        check_located(error, (str(path), str(place.path / "fuzz.yaml")), codes)
        return
    last, previous = physical_lines(data), 1
    for line, item in items:
        assert previous < line <= last, (previous, line, last)  # physical lines, each record after the one before
        previous = line
        check_item(item, line)


def jsonl_reader(data: bytes) -> None:
    items = list(read_numbered_cases(io.BytesIO(data)))
    lines = data.split(b"\n")
    if data.endswith(b"\n"):
        lines.pop()
    if lines:
        lines[0] = lines[0].removeprefix(b"\xef\xbb\xbf")
    assert [n for n, _ in items] == [n for n, line in enumerate(lines, 1) if line.strip()]  # each line, once
    for number, item in items:
        if isinstance(item, CaseError):
            assert item.code in ("bad_json", "bad_input") and item.case_id == f"line {number}", item
            check_reason(item.message)
            assert not item.message.startswith(UNFORESEEN), item
        else:
            check_case(*item)


def json_records(data: bytes) -> None:
    place = folder()
    path = place.path / ("export.json" if data[:1] == b"[" else "export.jsonl")
    path.write_bytes(data)
    try:
        items = list(read_json_records(path, place.mapping()))
    except PlaybookError as error:  # an array that cannot be read, before any of its records
        check_located(error, (str(path),), {"json_syntax", "input_encoding"})
        return
    if data.removeprefix(b"\xef\xbb\xbf").lstrip()[:1] == b"[":
        assert [n for n, _ in items] == list(range(1, len(items) + 1))  # an array's records by position
    else:
        lines = data.split(b"\n")
        if lines:
            lines[0] = lines[0].removeprefix(b"\xef\xbb\xbf")
        assert [n for n, _ in items] == [n for n, line in enumerate(lines, 1) if line.strip()]  # each line, once
    for number, item in items:
        check_item(item, number)


_MAPPINGS: list[Mapping] = []


def mappings() -> list[Mapping]:
    """The fuzz mapping (its lookup tables attached) and every preset."""
    if not _MAPPINGS:
        mine = folder().mapping()
        mine.attach("teams", [{"agent": "Ann Lee", "manager": "Bo Chen"}, {"agent": "李雷", "manager": "韩梅梅"}])
        mine.attach("managers", [{"name": "Bo Chen", "region": "East"}, {"name": "韩梅梅", "region": "华东"}])
        _MAPPINGS.extend([mine, *(load_mapping(name) for name in preset_names())])
    return _MAPPINGS


def mapping(record: dict[str, Any]) -> None:
    for each in mappings():
        check_item(each.to_case(record, line=1), 1)


# -- what each target is fed ----------------------------------------------------------------------


def _csv_text(rows: list[list[str]], quoted: bool, ending: str) -> str:
    if quoted:
        out = io.StringIO()
        csv.writer(out, lineterminator=ending).writerows(rows)
        return out.getvalue()
    return "".join(",".join(row) + ending for row in rows)


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    header = draw(st.permutations(COLUMNS).map(list))
    if draw(st.booleans()):
        header.insert(draw(st.integers(0, len(header))), draw(st.sampled_from([*COLUMNS, "", "extra"])))
    rows = [header]
    for _ in range(draw(st.integers(0, 12))):
        width = len(header) + draw(st.sampled_from([0, 0, 0, 0, -1, 1]))
        rows.append([draw(CELL) for _ in range(max(width, 0))])
        if draw(st.integers(0, 9)) == 0:
            rows.append([])  # a blank line
    text = _csv_text(rows, draw(st.booleans()), draw(st.sampled_from(["\n", "\r\n"])))
    codec = draw(st.sampled_from(["utf-8", "utf-8-sig", "gb18030", "gbk", "latin-1"]))
    return text.encode(codec, errors="replace")


JSON_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([10**400, -(10**4000), 2**1024, 2**1023]),
    st.floats(),
    st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=16),  # surrogates too
    st.sampled_from(EDGES),
)
JSON_VALUE = st.recursive(
    JSON_SCALAR,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(COLUMNS) | TEXT, inner)),
    max_leaves=12,
)


def _deep(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


@st.composite
def json_line(draw: st.DrawFn) -> bytes:
    """One line of JSON Lines: a record or a case, made by a writer that allows NaN and escapes or not."""
    value = draw(
        st.one_of(
            st.fixed_dictionaries(
                {},
                optional={
                    "id": JSON_SCALAR,
                    "opportunity": st.dictionaries(st.sampled_from(["id", "amount", "win_rate", "name"]), JSON_VALUE),
                    **dict.fromkeys(COLUMNS, JSON_SCALAR),
                },
            ),
            JSON_VALUE,
        )
    )
    text = json.dumps(value, allow_nan=True, ensure_ascii=draw(st.booleans()))
    kind = draw(st.integers(0, 19))
    if kind == 0:
        text = _deep(draw(st.sampled_from([50, 900, 1000, 5000, 100_000])))
    elif kind == 1:
        text = text[: draw(st.integers(0, len(text)))]
    codec = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "latin-1", "gb18030"]))
    return text.encode(codec, errors="surrogatepass" if codec == "utf-8" else "replace")


@st.composite
def jsonl_files(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(st.one_of(json_line(), st.just(b""), st.just(b"  \r")), max_size=8))
    return b"\n".join(lines) + draw(st.sampled_from([b"", b"\n"]))


@st.composite
def json_files(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return draw(jsonl_files())
    records = draw(st.lists(json_line(), max_size=6))
    return b"[" + b",\n".join(records) + b"]"


RECORD_VALUE = st.one_of(
    JSON_VALUE,
    st.decimals(allow_nan=True, allow_infinity=True),
    st.dates(),
    st.datetimes(),
    st.sampled_from([dt.date.max, dt.datetime.max, decimal.Decimal("sNaN"), decimal.Decimal("1E+999999")]),
)


@st.composite
def records(draw: st.DrawFn, seed_records: list[dict[str, Any]]) -> dict[str, Any]:
    record = dict(draw(st.sampled_from(seed_records))) if seed_records and draw(st.booleans()) else {}
    names = st.one_of(st.sampled_from(COLUMNS), st.sampled_from(_PRESET_SOURCES), TEXT)
    record.update(draw(st.dictionaries(names, RECORD_VALUE, max_size=10)))
    return record


_PRESET_SOURCES: list[str] = sorted(
    {s for name in preset_names() for rule in load_mapping(name).fields for s in rule.sources if "{" not in s}
)


def seed_records() -> list[dict[str, Any]]:
    out = []
    for raw in seeds("mapping"):  # JSON Lines of records
        out.extend(json.loads(line) for line in raw.decode("utf-8").splitlines() if line.strip())
    return out


def random_text(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.5:
        return rng.choice(EDGES)
    if roll < 0.8:
        return "".join(rng.choice(CHARACTERS) for _ in range(rng.randint(0, 12)))
    if roll < 0.9:
        return str(rng.randint(-(10**20), 10**20))
    return "".join(chr(rng.choice([rng.randint(32, 0xD7FF), rng.randint(0xE000, 0x10FFFF)])) for _ in range(8))


def random_csv(rng: random.Random) -> bytes:
    header = rng.sample(COLUMNS, len(COLUMNS))
    if rng.random() < 0.1:
        header.insert(rng.randint(0, len(header)), rng.choice([*COLUMNS, "", "extra"]))
    rows = [header]
    for _ in range(rng.randint(0, 20)):
        width = len(header) + rng.choice([0, 0, 0, 0, -1, 1])
        rows.append([random_text(rng) for _ in range(max(width, 0))])
        if rng.random() < 0.1:
            rows.append([])
    text = _csv_text(rows, rng.random() < 0.7, rng.choice(["\n", "\r\n"]))
    return text.encode(rng.choice(["utf-8", "utf-8-sig", "gb18030", "gbk", "latin-1"]), errors="replace")


def random_json_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth < 4 and roll < 0.15:
        return [random_json_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if depth < 4 and roll < 0.35:
        keys = [*COLUMNS, "id", "opportunity", "properties", "amount", "dealstage"]
        return {
            rng.choice(keys) if rng.random() < 0.8 else random_text(rng): random_json_value(rng, depth + 1)
            for _ in range(rng.randint(0, 6))
        }
    scalars: list[Callable[[], Any]] = [
        lambda: None,
        lambda: rng.random() < 0.5,
        lambda: rng.randint(-(10**12), 10**12),
        lambda: rng.choice([10**400, -(10**4000), 2**1024, 2**1023, 0, -1]),
        lambda: rng.choice([float("nan"), float("inf"), -float("inf"), 1e308, 5e-324, -0.0, rng.random()]),
        lambda: random_text(rng),
        lambda: chr(rng.randint(0xD800, 0xDFFF)) + random_text(rng),  # half a surrogate pair
    ]
    return rng.choice(scalars)()


def random_json_line(rng: random.Random) -> bytes:
    if rng.random() < 0.3:
        value = random_json_value(rng)
    else:  # mostly records: an id, fields of the fuzz mapping and of the presets, an opportunity
        value = {"id": random_text(rng), "opportunity": {"amount": random_json_value(rng, 3)}}
        value.update((rng.choice([*COLUMNS, *_PRESET_SOURCES]), random_json_value(rng, 2)) for _ in range(6))
    text = json.dumps(value, allow_nan=True, ensure_ascii=rng.random() < 0.5)
    roll = rng.random()
    if roll < 0.03:
        text = _deep(rng.choice([50, 900, 1000, 5000, 100_000]))
    elif roll < 0.08:
        text = text[: rng.randint(0, len(text))]
    codec = rng.choice(["utf-8", "utf-8", "utf-8", "latin-1", "gb18030"])
    return text.encode(codec, errors="surrogatepass" if codec == "utf-8" else "replace")


def random_jsonl(rng: random.Random) -> bytes:
    lines = [random_json_line(rng) if rng.random() < 0.85 else rng.choice([b"", b"  \r"]) for _ in range(8)]
    return b"\n".join(lines[: rng.randint(0, 8)]) + rng.choice([b"", b"\n"])


def random_json_file(rng: random.Random) -> bytes:
    if rng.random() < 0.5:
        return random_jsonl(rng)
    return b"[" + b",\n".join(random_json_line(rng) for _ in range(rng.randint(0, 6))) + b"]"


RECORD_EDGES = [dt.date.max, dt.date.min, dt.datetime.max, decimal.Decimal("NaN"), decimal.Decimal("-Infinity")]
RECORD_EDGES += [decimal.Decimal("sNaN"), decimal.Decimal("1E+999999"), decimal.Decimal("0.1"), dt.date(2026, 11, 27)]


def random_record(rng: random.Random, seed_records: list[dict[str, Any]]) -> dict[str, Any]:
    record = dict(rng.choice(seed_records)) if seed_records and rng.random() < 0.5 else {}
    for _ in range(rng.randint(0, 10)):
        name = rng.choice([*COLUMNS, *_PRESET_SOURCES]) if rng.random() < 0.9 else random_text(rng)
        record[name] = rng.choice(RECORD_EDGES) if rng.random() < 0.1 else random_json_value(rng, 2)
    return record


def structured(target: str) -> st.SearchStrategy[Any]:
    """Inputs Hypothesis builds from the grammar: slower to draw, and they shrink to a small failing input."""
    known = seed_records() if target == "mapping" else []
    return {
        "csv_reader": csv_files(),
        "jsonl_reader": jsonl_files(),
        "json_records": json_files(),
        "mapping": records(known),
    }[target]


def makers(target: str) -> list[Callable[[random.Random], Any]]:
    """Inputs made from a random generator: random files of the format, and corpus seeds mutated."""
    if target == "mapping":
        known = seed_records()
        return [lambda rng: random_record(rng, known)]
    corpus = seeds(target)
    made = {"csv_reader": random_csv, "jsonl_reader": random_jsonl, "json_records": random_json_file}[target]
    return [made, lambda rng: mutate(rng, rng.choice(corpus))]


def strategy(target: str) -> st.SearchStrategy[Any]:
    """Every kind of input, for Hypothesis: built from the grammar, made from a drawn seed, mutated from the corpus."""
    return st.one_of(structured(target), *(fast(make) for make in makers(target)))


CHECKS: dict[str, Callable[[Any], None]] = {
    "csv_reader": csv_reader,
    "jsonl_reader": jsonl_reader,
    "json_records": json_records,
    "mapping": mapping,
}


# -- a longer run ---------------------------------------------------------------------------------


def run(target: str, seconds: float, seed: int) -> dict[str, Any]:
    """Run one target until ``seconds`` have passed; count executions; keep each failing input in the corpus.

    Nine inputs in ten are made from the random generator (fast); one in ten is built by Hypothesis
    from random bytes (``fuzz_one_input``), so the grammar's inputs are in the run too.
    """
    counts = {"executions": 0, "crashes": 0}
    check, make, rng = CHECKS[target], makers(target), random.Random(seed)
    failing: list[Any] = []
    kept: set[tuple[str, str, str]] = set()  # one input kept per kind of failure, not thousands

    @settings(database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(structured(target))
    def built(value: Any) -> None:
        try:
            check(value)
        except BaseException:
            failing.append(value)
            raise

    start = time.monotonic()
    while time.monotonic() - start < seconds:
        counts["executions"] += 1
        value: Any = None
        try:
            if rng.random() < 0.1:
                built.hypothesis.fuzz_one_input(rng.randbytes(4096))  # type: ignore[attr-defined]
            else:
                value = rng.choice(make)(rng)
                check(value)
        except Exception as error:  # noqa: BLE001 - a finding: kept, counted, and the run goes on
            counts["crashes"] += 1
            value = failing.pop() if failing else value
            where = traceback.extract_tb(error.__traceback__)[-1]
            kind = (type(error).__name__, f"{where.filename}:{where.lineno}", re.sub(r"\d+", "N", str(error))[:60])
            if kind in kept:
                continue
            kept.add(kind)
            data = value if isinstance(value, bytes) else repr(value).encode("utf-8", "backslashreplace")
            # a record (dates, decimals, surrogates) is kept as Python's repr, to be made a test by hand
            name = f"crash-{hashlib.sha256(data).hexdigest()[:12]}" + ("" if isinstance(value, bytes) else ".repr")
            (CORPUS / target / name).write_bytes(data)
            print(f"{target}: {type(error).__name__}: {error!s:.300} -> corpus/{target}/{name}", file=sys.stderr)
    elapsed = time.monotonic() - start
    return {
        "target": target,
        "seed": seed,
        "seconds": round(elapsed),
        **counts,
        "per_second": round(counts["executions"] / elapsed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", choices=[*TARGETS, "all"])
    parser.add_argument("--seconds", type=float, default=600.0, help="per target (default 600)")
    parser.add_argument("--seed", type=int, default=None, help="the random generator's seed (default: from the clock)")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else time.time_ns() % 2**32
    for target in TARGETS if args.target == "all" else (args.target,):
        print(json.dumps(run(target, args.seconds, seed)), flush=True)


if __name__ == "__main__":
    main()
