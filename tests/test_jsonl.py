"""adapters/jsonl.py and adapters/json_records.py against hostile lines: each one a case, or that line's
error or quarantine with its reason; never a traceback, never a lost batch, never a number that is not finite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from adapters.json_records import read_json_records
from adapters.jsonl import read_numbered_cases
from adapters.mapping import MappedCase, Mapping, Quarantined, load_mapping
from cli import main
from engine.errors import CaseError, PlaybookError
from tests.conftest import FIXTURES

GOOD = '{"id": "ok-%d", "opportunity": {"win_rate": 80, "weeks_to_close": 1}}'
# each hostile line, and the error code and words its line must get
HOSTILE: list[tuple[bytes, str, str]] = [
    (b"[" * 100_000 + b"]" * 100_000, "bad_json", "nested too deeply"),
    (b'{"id": "deep", "x": ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_001, "bad_json", "nested too deeply"),
    (b'{"id": "big", "opportunity": {"amount": ' + b"9" * 5000 + b"}}", "bad_json", "5000 digits is not a finite"),
    (b'{"id": "big2", "opportunity": {"amount": ' + b"9" * 400 + b"}}", "bad_json", "400 digits is not a finite"),
    ('{"id": "latin", "opportunity": {"name": "Café"}}'.encode("latin-1"), "bad_json", "not UTF-8 text (byte 0xe9"),
    ('{"id": "gbk", "opportunity": {"name": "华为"}}'.encode("gbk"), "bad_json", "not UTF-8 text (byte 0xbb"),
    (
        b'{"id": "half", "opportunity": {"name": "\\ud800"}}',
        "bad_input",
        "lone surrogate (U+D800: half of a UTF-16 pair)",
    ),
    (b'{"id": "nul", "opportunity": {"name": "a\\u0000b"}}', "bad_input", "NUL character"),
    (b'{"id": "key", "opportunity": {"na\\u0000me": "x"}}', "bad_input", "NUL character"),
    (b'{"id": "e999", "opportunity": {"amount": 1e999}}', "bad_json", "1e999 is not a finite number"),
    (b'{"id": "inf", "opportunity": {"amount": -Infinity}}', "bad_json", "-Infinity is not a finite number"),
    (b'{"id": "nan", "opportunity": {"amount": NaN}}', "bad_json", "NaN is not a finite number"),
]


def hostile_file(tmp_path: Path) -> Path:
    lines = [(GOOD % 0).encode()]
    for i, (line, _, _) in enumerate(HOSTILE, 1):
        lines += [line, (GOOD % i).encode()]
    path = tmp_path / "cases.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_every_hostile_line_is_that_lines_error(tmp_path: Path) -> None:
    with hostile_file(tmp_path).open("rb") as handle:
        items = list(read_numbered_cases(handle))
    assert [n for n, _ in items] == list(range(1, 2 * len(HOSTILE) + 2))
    errors = [(n, item) for n, item in items if isinstance(item, CaseError)]
    assert [n for n, _ in errors] == list(range(2, 2 * len(HOSTILE) + 1, 2))
    for (n, error), (_, code, words) in zip(errors, HOSTILE, strict=True):
        assert (error.case_id, error.code) == (f"line {n}", code), error
        assert words in error.message, error.message
    assert [item[0] for _, item in items if not isinstance(item, CaseError)] == [
        f"ok-{i}" for i in range(len(HOSTILE) + 1)
    ]


def test_hostile_jsonl_through_the_cli_is_counted_and_stored(tmp_path: Path, db_url: str) -> None:
    args = ["recommend", "--playbook", str(FIXTURES / "pipeline.yaml"), "--input", str(hostile_file(tmp_path))]
    result = CliRunner().invoke(
        main, [*args, "--as-of", "2026-11-27", "--format", "json", "--db", db_url, "--lang", "en"]
    )
    assert result.exit_code == 1  # cases in error fail the run, after it has run to the end
    out = [json.loads(line) for line in result.stdout.splitlines()]
    n = len(HOSTILE)
    assert len(out) == 2 * n + 1
    assert f"{2 * n + 1} rows: {2 * n + 1} cases evaluated ({n + 1} results, {n} errors)" in result.stderr
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT count(*) FROM evaluations")).scalar()
    engine.dispose()
    assert stored == 2 * n + 1


# -- JSON records through a mapping ---------------------------------------------------------------

RECORDS = """mapping: {id: records, record_id: id}
fields:
  opportunity.id: id
  opportunity.name: {first_of: [name, opportunity.name]}
  opportunity.amount: {first_of: [amount, opportunity.amount], type: number}
"""


@pytest.fixture
def records(tmp_path: Path) -> Mapping:
    path = tmp_path / "records.yaml"
    path.write_text(RECORDS, encoding="utf-8")
    return load_mapping(path)


def test_hostile_json_lines_records_are_quarantined_on_their_own(tmp_path: Path, records: Mapping) -> None:
    items = list(read_json_records(hostile_file(tmp_path), records))
    assert [n for n, _ in items] == list(range(1, 2 * len(HOSTILE) + 2))
    got = {n: item.case_id if isinstance(item, MappedCase) else item.code for n, item in items if n % 2 == 0}
    assert list(got.values()) == [
        "bad_json",
        "bad_json",
        "bad_number",
        "bad_number",
        "bad_encoding",
        "bad_encoding",
        "unstorable_text",
        "unstorable_text",
        "key",  # its NUL is in a field the mapping does not read: nothing of it is stored
        "bad_number",
        "bad_number",
        "bad_number",
    ]
    for (_, item), (_, _, words) in zip(sorted(items)[1::2], HOSTILE, strict=True):
        if isinstance(item, Quarantined):
            assert words in item.reason, item
    assert all(isinstance(item, MappedCase) for n, item in items if n % 2)


def test_an_array_export_refuses_what_cannot_be_stored_record_by_record(tmp_path: Path, records: Mapping) -> None:
    path = tmp_path / "deals.json"
    path.write_text(
        '[{"id": "1", "amount": 5},\n {"id": "2", "amount": 1e999},\n {"id": "3", "amount": NaN},\n'
        ' {"id": "4", "amount": ' + "7" * 5000 + '},\n {"id": "5", "name": "\\u0000"},\n {"id": "6", "amount": 6}]',
        encoding="utf-8",
    )
    items = list(read_json_records(path, records))
    got = [(n, item.case_id if isinstance(item, MappedCase) else item.code) for n, item in items]
    assert got == [(1, "1"), (2, "bad_number"), (3, "bad_number"), (4, "bad_number"), (5, "unstorable_text"), (6, "6")]
    assert "1e999 is not a finite number" in items[1][1].reason  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("content", "code", "line"),
    [
        ("[" * 100_000 + "]" * 100_000, "json_syntax", 0),
        ('[{"id": "1"},\n {"id": "2",}]', "json_syntax", 2),
        ('[{"id": "1"},\n {"id": "Café"}]'.encode("latin-1"), "input_encoding", 2),
    ],
    ids=["nested_too_deeply", "syntax", "latin_1"],
)
def test_an_array_that_cannot_be_read_is_a_located_error_before_any_record(
    tmp_path: Path, records: Mapping, content: str | bytes, code: str, line: int
) -> None:
    path = tmp_path / "deals.json"
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    stream = read_json_records(path, records)
    with pytest.raises(PlaybookError) as info:
        next(stream)
    [problem] = info.value.problems
    assert (problem.code, problem.location.line) == (code, line)
