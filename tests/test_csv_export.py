"""adapters/csv_export.py against hostile and careless exports: every row a case, a located error or a
quarantined row with its physical line; nothing swallowed, nothing stored before a file is known to read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from adapters.csv_export import read_csv
from adapters.mapping import MappedCase, Mapping, Quarantined, load_mapping
from cli import main
from engine.errors import PlaybookError
from tests.conftest import FIXTURES

MAPPING = """mapping: {id: hostile, record_id: id}
fields:
  opportunity.id: id
  opportunity.name: name
  opportunity.amount: {from: amount, type: number}
  opportunity.close_date: {from: signed, type: date, add_days: 30}
"""
HEADER = "id,name,amount,signed\n"


@pytest.fixture
def mapping(tmp_path: Path) -> Mapping:
    path = tmp_path / "hostile.yaml"
    path.write_text(MAPPING, encoding="utf-8")
    return load_mapping(path)


def rows(tmp_path: Path, mapping: Mapping, text: str | bytes) -> list[tuple[int, MappedCase | Quarantined]]:
    path = tmp_path / "export.csv"
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8", newline="")
    else:
        path.write_bytes(text)
    return list(read_csv(path, mapping))


def recommend(folder: Path, *more: str) -> Result:
    """playbook recommend on folder/export.csv through folder/hostile.yaml."""
    args = ["recommend", "--playbook", str(FIXTURES / "pipeline.yaml"), "--input", str(folder / "export.csv")]
    args += ["--mapping", str(folder / "hostile.yaml"), "--as-of", "2026-11-27", *more]
    return CliRunner().invoke(main, args)


def outline(items: list[tuple[int, MappedCase | Quarantined]]) -> list[tuple[int, str]]:
    """(line, case id) for cases, (line, quarantine code) for quarantined rows."""
    return [(line, item.case_id if isinstance(item, MappedCase) else item.code) for line, item in items]


def test_the_last_date_of_the_calendar_plus_days_is_a_quarantined_row(tmp_path: Path, mapping: Mapping) -> None:
    items = rows(tmp_path, mapping, HEADER + "1,a,10,9999-12-31\n2,b,20,2026-01-01\n")
    assert outline(items) == [(2, "bad_date"), (3, "2")]
    held = items[0][1]
    assert isinstance(held, Quarantined) and held.record_id == "1"
    assert "9999-12-31' plus 30 days is not a date" in held.reason


def test_an_unterminated_quote_swallows_no_row(tmp_path: Path, mapping: Mapping) -> None:
    body = '1,a,10,2026-01-01\n2,"Acme,20,2026-01-01\n3,c,30,2026-01-01\n4,d,40,2026-01-01\n5,e,50,2026-01-01\n'
    body += "6,f,60,2026-01-01\n"
    items = rows(tmp_path, mapping, HEADER + body)
    assert outline(items) == [(2, "1"), (3, "bad_row"), (4, "3"), (5, "4"), (6, "5"), (7, "6")]
    held = items[1][1]
    assert isinstance(held, Quarantined) and held.record_id == "2"
    assert "a quote opened on this line is not closed (it runs to the end of the file)" in held.reason


def test_an_unterminated_quote_closed_by_a_later_row_swallows_no_row(tmp_path: Path, mapping: Mapping) -> None:
    # the stray quote pairs with the first quote of line 6: a reader that trusts it makes one row of lines 3-6
    body = '1,a,10,2026-01-01\n2,"Acme,20,2026-01-01\n3,c,30,2026-01-01\n4,d,40,2026-01-01\n'
    body += '5,"Smith, J",50,2026-01-01\n6,f,60,2026-01-01\n'
    items = rows(tmp_path, mapping, HEADER + body)
    assert outline(items) == [(2, "1"), (3, "bad_row"), (4, "3"), (5, "4"), (6, "5"), (7, "6")]
    assert "runs to line 6" in items[1][1].reason  # type: ignore[union-attr]
    assert items[4][1].case["opportunity"]["name"] == "Smith, J"  # type: ignore[union-attr]


def test_line_numbers_are_physical_lines(tmp_path: Path, mapping: Mapping) -> None:
    body = (
        "\n"  # line 2: blank
        '1,"two\nline name",10,2026-01-01\n'  # lines 3-4: a quoted cell over two lines
        "\r\n"  # line 5: blank
        "2,b,x,2026-01-01\n"  # line 6: a bad number
        '3,"three\n\nlines",30,2026-01-01\n'  # lines 7-9: a cell holding a blank line
        "4,d,40\n"  # line 10: a cell short
        "5,e,50,2026-01-01"  # line 11: no line end
    )
    items = rows(tmp_path, mapping, HEADER + body)
    assert outline(items) == [(3, "1"), (6, "bad_number"), (7, "3"), (10, "bad_row"), (11, "5")]
    assert items[0][1].case["opportunity"]["name"] == "two\nline name"  # type: ignore[union-attr]


def test_a_column_named_twice_is_a_located_error(tmp_path: Path, mapping: Mapping) -> None:
    with pytest.raises(PlaybookError) as info:
        rows(tmp_path, mapping, "id,name,amount,signed,amount\n1,a,10,2026-01-01,99\n")
    [problem] = info.value.problems
    assert (problem.code, problem.location.line, problem.location.col) == ("csv_duplicate_column", 1, 23)
    assert "column 'amount' is named twice in the header (cells 3 and 5)" in problem.message


def _gbk_after_ascii(rows_ascii: int) -> tuple[bytes, int]:
    """An export whose first rows (well over 64 KiB) are ASCII and whose later rows are GBK; the first GBK line."""
    lines = [HEADER.encode()]
    lines += [f"a{i},plain ascii name {i:06d},{i},2026-01-01\n".encode() for i in range(rows_ascii)]
    first_gbk = len(lines) + 1
    lines += [f"g{i},华为技术 {i},{i},2026-01-01\n".encode("gbk") for i in range(50)]
    return b"".join(lines), first_gbk


def test_the_encoding_is_known_from_the_whole_file(tmp_path: Path, mapping: Mapping) -> None:
    data, first_gbk = _gbk_after_ascii(3000)
    assert data.index("华".encode("gbk")) > 64 * 1024
    items = rows(tmp_path, mapping, data)
    assert len(items) == 3050 and all(isinstance(item, MappedCase) for _, item in items)
    assert items[-1][1].case["opportunity"]["name"] == "华为技术 49"  # type: ignore[union-attr]
    # declared UTF-8: an error at the first line that is not, before any row is read
    mapping.encoding = "utf-8"
    stream = read_csv(tmp_path / "export.csv", mapping)
    with pytest.raises(PlaybookError) as info:
        next(stream)
    [problem] = info.value.problems
    assert (problem.code, problem.location.line, problem.location.col) == ("input_encoding", first_gbk, 4)


def test_a_file_that_reads_in_no_encoding_stores_nothing(tmp_path: Path) -> None:
    data, first_gbk = _gbk_after_ascii(3000)
    data += b"x1,\xff\xfe broken,1,2026-01-01\n"  # neither UTF-8 nor GB18030
    (tmp_path / "export.csv").write_bytes(data)
    (tmp_path / "hostile.yaml").write_text(MAPPING, encoding="utf-8")
    db = tmp_path / "log.db"
    result = recommend(tmp_path, "--db", f"sqlite:///{db}")
    assert result.exit_code == 1
    # located where it stops reading as GB18030 (the encoding the file is closest to), naming both
    assert (
        f"export.csv:{first_gbk + 50}:4: input_encoding: neither UTF-8 (byte 0xbb at line {first_gbk}" in result.stderr
    )
    assert f"GB18030 (byte 0xff at line {first_gbk + 50}, column 4)" in result.stderr
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        tables = sa.inspect(conn).get_table_names()
        stored = conn.execute(sa.text("SELECT count(*) FROM evaluations")).scalar() if "evaluations" in tables else 0
    engine.dispose()
    assert stored == 0


def test_hostile_cells_are_quarantined_and_the_import_completes(tmp_path: Path, db_url: str) -> None:
    """Through the CLI into the audit log (SQLite and PostgreSQL): a NUL, a 5,000-digit number, a date
    overflowing, an unterminated quote; every row accounted for in the summary, every case stored."""
    body = (
        HEADER
        + "1,fine,10,2026-01-01\n"
        + "2,nul\x00inside,20,2026-01-01\n"
        + f"3,huge,{'9' * 5000},2026-01-01\n"
        + "4,late,40,9999-12-31\n"
        + '5,"open,50,2026-01-01\n'
        + "6,fine,60,2026-01-01\n"
    )
    (tmp_path / "export.csv").write_text(body, encoding="utf-8")
    (tmp_path / "hostile.yaml").write_text(MAPPING, encoding="utf-8")
    result = recommend(tmp_path, "--format", "json", "--db", db_url, "--lang", "en")
    assert result.exit_code == 0, result.stderr
    out = [json.loads(line) for line in result.stdout.splitlines()]
    held = {line["line"]: line["quarantined"]["code"] for line in out if "quarantined" in line}
    assert held == {3: "unstorable_text", 4: "bad_number", 5: "bad_date", 6: "bad_row"}
    assert [line["case"] for line in out if "evaluation" in line] == ["1", "6"]
    assert (
        "6 rows: 2 cases evaluated (2 results, 0 errors), 4 quarantined "
        "(bad_date 1, bad_number 1, bad_row 1, unstorable_text 1)" in result.stderr
    )
    assert "stored in" in result.stderr
