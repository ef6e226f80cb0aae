"""adapters/mapping.py and adapters/csv_export.py: CRM exports in, cases or quarantined rows out, nothing lost."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from adapters.csv_export import detect_encoding, read_csv
from adapters.mapping import MappedCase, Quarantined, load_mapping
from cli import main
from engine.errors import PlaybookError

MAVEN = Path(__file__).resolve().parent.parent.parent / "shared" / "crm-data" / "maven-crm-sales-opportunities"

MAPPING = """mapping:
  id: test
  record_id: 编号
lookups:
  accounts: {file: accounts.csv, key: 名称, match: 客户, normalize: compact}
quarantine:
  - {field: 阶段, one_of: [赢单], code: closed_deal, reason: "阶段 {value}: closed"}
fields:
  opportunity.id: 编号
  opportunity.amount: {from: 金额, type: number, required: true}
  opportunity.close_date: {from: 结束日期, type: date, formats: ["%Y/%m/%d", "epoch_ms"]}
  opportunity.win_rate:
    from: 赢率
    type: number
    scale: 100
    bands:
      - {below: 20, value: 0}
      - {below: 40, value: 20}
      - {below: 60, value: 40}
      - {below: 80, value: 60}
      - {value: 80}
  opportunity.milestones: {from: 阶段, map: {初步接触: [need_clarified], 方案展示: [need_clarified, considering_us]}}
  account.id: 客户
  account.attractiveness: {from: accounts.等级, map: {A: high, B: low}, unmapped: low}
"""

ROWS = """编号,客户,金额,结束日期,赢率,阶段
o1,华为 技术,"1,200.50",2027/01/08,0.45,方案展示
o2,中兴,300,1798761600000,0.1,初步接触
o3,华为技术,abc,2027/01/08,0.2,初步接触
o4,中兴,100,2027/01/08,0.2,赢单
o5,中兴,100,2027/01/08
o6,中兴,100,not a date,0.2,初步接触
o7,中兴,100,2027/01/08,0.2,谈判中
o8,,,2027/01/08,0.2,初步接触
"""


@pytest.fixture
def export(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "mapping.yaml").write_text(MAPPING, encoding="utf-8")
    (tmp_path / "accounts.csv").write_text("名称,等级\n华为技术,A\n中兴,C\n", encoding="gbk")
    return tmp_path / "mapping.yaml", tmp_path / "export.csv"


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gbk"])
def test_every_row_is_a_case_or_a_quarantined_row_with_its_line(export: tuple[Path, Path], encoding: str) -> None:
    mapping_path, csv_path = export
    csv_path.write_text(ROWS, encoding=encoding)
    assert detect_encoding(csv_path) == ("gb18030" if encoding == "gbk" else "utf-8-sig")
    out = list(read_csv(csv_path, load_mapping(mapping_path)))
    assert [line for line, _ in out] == [2, 3, 4, 5, 6, 7, 8, 9]
    cases = {item.case_id: item.case for _, item in out if isinstance(item, MappedCase)}
    held = {line: (item.code, item.reason) for line, item in out if isinstance(item, Quarantined)}
    assert cases["o1"] == {
        "id": "o1",
        "opportunity": {
            "id": "o1",
            "amount": 1200.5,
            "close_date": "2027-01-08",
            "win_rate": 40,
            "milestones": ["need_clarified", "considering_us"],
        },
        "account": {"id": "华为 技术", "attractiveness": "high"},
    }
    assert cases["o2"]["opportunity"]["close_date"] == "2027-01-01"  # epoch milliseconds
    assert cases["o2"]["account"]["attractiveness"] == "low"  # unmapped C
    assert held == {
        4: ("bad_number", "金额 'abc' is not a number"),
        5: ("closed_deal", "阶段 赢单: closed"),
        6: ("bad_row", "4 cells where the header has 6"),
        7: ("bad_date", "结束日期 'not a date' is not a date in %Y/%m/%d, epoch_ms"),
        8: ("unknown_value", "阶段 '谈判中' has no mapping to opportunity.milestones"),
        9: ("missing_field", "金额 is empty; opportunity.amount is required"),
    }


def test_a_missing_column_is_located_in_the_mapping(export: tuple[Path, Path]) -> None:
    mapping_path, csv_path = export
    csv_path.write_text(ROWS.replace("金额", "金 额", 1), encoding="utf-8")
    with pytest.raises(PlaybookError) as info:
        list(read_csv(csv_path, load_mapping(mapping_path)))
    [problem] = info.value.problems
    assert (problem.code, problem.location.line, problem.location.col) == ("mapping_unknown_column", 10, 3)
    assert "column '金额' is not in export.csv (did you mean '金 额'?)" in problem.message


def test_mapping_file_errors_are_located(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        MAPPING.replace("opportunity.amount: {from:", "opportunity.amount: {frm:").replace(
            "      - {value: 80}\n", "      - {below: 90, value: 80}\n"
        ),
        encoding="utf-8",
    )
    with pytest.raises(PlaybookError) as info:
        load_mapping(path)
    found = [(p.code, p.location.line) for p in info.value.problems]
    assert ("unknown_key", 10) in found
    assert "did you mean 'from'" in info.value.problems[0].message


def test_unknown_preset_suggests_one() -> None:
    with pytest.raises(PlaybookError) as info:
        load_mapping("mavn")
    assert info.value.problems[0].code == "mapping_unknown_preset"
    assert "did you mean 'maven'" in info.value.problems[0].message


@pytest.mark.skipif(not MAVEN.is_dir(), reason=f"the Maven sample set is not at {MAVEN}")
def test_all_maven_deals_are_accounted_for_through_the_cli(tmp_path: Path) -> None:
    source = MAVEN / "sales_pipeline.csv"
    result = CliRunner().invoke(
        main,
        [
            "recommend",
            "--lang",
            "en",
            "--input",
            str(source),
            "--mapping",
            "maven",
            "--as-of",
            "2017-03-01",
            "--format",
            "json",
            "--db",
            f"sqlite:///{tmp_path / 'm.db'}",
        ],
    )
    assert result.exit_code == 0, result.stderr
    import json

    lines = [json.loads(line) for line in result.stdout.splitlines()]
    held = [line for line in lines if "quarantined" in line]
    evaluated = [line for line in lines if "evaluation" in line]
    assert len(lines) == 8800 == len(held) + len(evaluated)
    assert len(evaluated) == 1589 + 500  # the open deals
    assert all(line["quarantined"]["code"] == "closed_deal" and line["line"] > 1 for line in held)
    assert (
        "8800 rows: 2089 cases evaluated (2089 results, 0 errors), 6711 quarantined (closed_deal 6711)" in result.stderr
    )
    gtx_pro = next(line for line in evaluated if line["case"] == "HAXMC4IX")
    assert gtx_pro["inputs"]["opportunity.amount"] == 3393  # MG Advanced's list price: no close value yet


def test_json_records_are_flattened_and_every_record_accounted_for(tmp_path: Path) -> None:
    from adapters.json_records import flatten, read_json_records

    assert flatten(
        {"id": "7", "properties": {"amount": "6"}, "companies": ["c1", "c2"], "owner": {"email": "a@b"}}
    ) == {
        "id": "7",
        "companies": ["c1", "c2"],
        "companies.0": "c1",
        "companies.1": "c2",
        "owner.email": "a@b",
        "amount": "6",
    }
    mapping_path = tmp_path / "deals.yaml"
    mapping_path.write_text(
        "mapping: {id: deals, record_id: id}\n"
        "fields:\n"
        "  opportunity.id: id\n"
        "  opportunity.amount: {from: amount, type: number}\n"
        "  opportunity.account_id: companies.0\n",
        encoding="utf-8",
    )
    lines = tmp_path / "deals.jsonl"
    lines.write_text(
        '{"id": "1", "properties": {"amount": "6"}, "companies": ["c9"]}\n\n[1]\n{oops\n'
        '{"id": "2", "properties": {"amount": "x"}}\n',
        encoding="utf-8",
    )
    out = list(read_json_records(lines, load_mapping(mapping_path)))
    assert [(n, type(item).__name__, getattr(item, "code", None)) for n, item in out] == [
        (1, "MappedCase", None),
        (3, "Quarantined", "bad_row"),
        (4, "Quarantined", "bad_json"),
        (5, "Quarantined", "bad_number"),
    ]
    assert out[0][1].case == {"id": "1", "opportunity": {"id": "1", "amount": 6, "account_id": "c9"}}  # type: ignore[union-attr]
    array = tmp_path / "deals.json"
    array.write_text('[{"id": "1", "properties": {"amount": 3}}, {"id": "2"}]', encoding="utf-8")
    assert [type(item).__name__ for _, item in read_json_records(array, load_mapping(mapping_path))] == [
        "MappedCase",
        "MappedCase",
    ]


# -- the record's boundary, and the mapping language's joins and names -----------------------------


def test_any_failure_of_one_record_is_its_quarantine(tmp_path: Path) -> None:
    """Structural: whatever a record holds, mapping it gives a case or a quarantined record, never an exception."""

    class Hostile:
        def __str__(self) -> str:
            raise RuntimeError("no text for you")

    path = tmp_path / "m.yaml"
    path.write_text("mapping: {id: m, record_id: id}\nfields:\n  opportunity.name: name\n", encoding="utf-8")
    item = load_mapping(path).to_case({"id": "r1", "name": Hostile()}, line=7)
    assert item == Quarantined(7, "r1", "bad_record", "could not be read: RuntimeError: no text for you")
    deep: dict[str, object] = {}
    inner = deep
    for _ in range(5000):
        inner["x"] = inner = {}
    item = load_mapping(path).to_case({"id": "r2", "name": deep}, line=8)
    assert isinstance(item, Quarantined) and (item.code, item.reason) == ("bad_record", "nested too deeply to read")


def test_text_that_cannot_be_stored_is_quarantined_and_never_quoted_raw(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        "mapping: {id: m, record_id: id}\nfields:\n  opportunity.name: name\n"
        "  opportunity.amount: {from: n, type: number}\n",
        encoding="utf-8",
    )
    mapping = load_mapping(path)
    nul = mapping.to_case({"id": "r1", "name": "a\x00b"})
    assert isinstance(nul, Quarantined) and nul.code == "unstorable_text" and "NUL" in nul.reason
    half = mapping.to_case({"id": "r\ud800", "name": "ok"})
    assert isinstance(half, Quarantined) and half.code == "unstorable_text"
    assert half.record_id == "r\\ud800"  # escaped: the record id is shown, and can be printed and stored
    long = mapping.to_case({"id": "r3", "n": "x\x00" * 3000})
    assert isinstance(long, Quarantined) and long.code == "bad_number"
    assert len(long.reason) < 200 and "\x00" not in long.reason and "(6000 characters)" in long.reason
    for number in ("1e999", "-inf", "NaN", "9" * 400):
        item = mapping.to_case({"id": "r4", "n": number})
        assert isinstance(item, Quarantined) and item.code == "bad_number", number
    for number in (float("inf"), float("nan"), 10**400):
        item = mapping.to_case({"id": "r5", "n": number})
        assert isinstance(item, Quarantined) and item.code == "bad_number", number


def test_lookups_chain_sources_name_other_fields_and_null_means_unknown(tmp_path: Path) -> None:
    (tmp_path / "employees.csv").write_text("id,party\ne1,p7\n", encoding="utf-8")
    (tmp_path / "parties.csv").write_text("id,name\np7,Sam Seller\n", encoding="utf-8")
    path = tmp_path / "m.yaml"
    path.write_text(
        "mapping: {id: m, record_id: id}\n"
        "lookups:\n"
        "  employees: {file: employees.csv, key: id, match: employee}\n"
        "  people: {file: parties.csv, key: id, match: employees.party}\n"
        "fields:\n"
        "  opportunity.owner: people.name\n"
        '  opportunity.stage_entered_date: {from: "entered_{stage}", type: date}\n'
        "  opportunity.origin: {from: source, map: {Web: inbound, Referral: null}, unmapped: null}\n",
        encoding="utf-8",
    )
    export = tmp_path / "export.csv"
    export.write_text(
        "id,employee,stage,entered_a,entered_b,source\n"
        "r1,e1,b,2026-01-01,2026-02-02,Web\n"
        "r2,e9,a,2026-03-03,,Referral\n"
        "r3,,c,,,Fair\n",
        encoding="utf-8",
    )
    cases = [item.case for _, item in read_csv(export, load_mapping(path))]  # type: ignore[union-attr]
    assert cases == [
        {"id": "r1", "opportunity": {"owner": "Sam Seller", "stage_entered_date": "2026-02-02", "origin": "inbound"}},
        {"id": "r2", "opportunity": {"stage_entered_date": "2026-03-03"}},  # e9 unknown; Referral means nothing
        {"id": "r3"},  # no column entered_c: a name made of values that names nothing is empty
    ]


def test_optional_columns_may_be_absent_and_other_columns_may_not(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        "mapping: {id: m, record_id: id}\n"
        "lookups:\n  teams: {file: teams.csv, key: agent, match: agent, optional: true}\n"
        "fields:\n"
        "  opportunity.owner: {from: agent, optional: true}\n"
        "  opportunity.team: {from: teams.manager, optional: true}\n"
        "  opportunity.name: name\n",
        encoding="utf-8",
    )
    (tmp_path / "teams.csv").write_text("agent,manager\nann,bo\n", encoding="utf-8")
    export = tmp_path / "export.csv"
    export.write_text("id,name\nr1,Plant\n", encoding="utf-8")
    [(_, item)] = list(read_csv(export, load_mapping(path)))
    assert isinstance(item, MappedCase) and item.case == {"id": "r1", "opportunity": {"name": "Plant"}}
    export.write_text("id,agent\nr1,ann\n", encoding="utf-8")
    with pytest.raises(PlaybookError) as info:
        list(read_csv(export, load_mapping(path)))
    assert [(p.code, p.location.line) for p in info.value.problems] == [("mapping_unknown_column", 7)]


def test_lookup_order_and_contradictory_options_are_located(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        "mapping: {id: m, record_id: id}\n"
        "lookups:\n"
        "  people: {file: p.csv, key: id, match: employees.party}\n"
        "  employees: {file: e.csv, key: id, match: employee}\n"
        "fields:\n"
        "  opportunity.owner: {from: people.name, required: true, optional: true}\n",
        encoding="utf-8",
    )
    with pytest.raises(PlaybookError) as info:
        load_mapping(path)
    assert [(p.code, p.location.line) for p in info.value.problems] == [
        ("mapping_lookup_order", 3),
        ("mapping_wrong_option", 6),
    ]
