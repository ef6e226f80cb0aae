"""adapters/sql_source.py: a live Tryton CRM on SQLite, a small database made here, and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from tryton_crm import OPPORTUNITIES, TrytonCrm, build

from adapters.mapping import PRESETS_DIR, MappedCase, Quarantined, load_mapping
from adapters.sql_source import read_only_engine, read_sql
from engine import CaseError, Evaluator, PlaybookError, compile_playbook, load_playbook

ROOT = Path(__file__).resolve().parent.parent
COURSE = ROOT / "playbooks" / "course.yaml"
PRESET = PRESETS_DIR / "tryton_opportunity.yaml"
AS_OF = dt.date(2026, 11, 27)
OPEN = ("lead", "opportunity", "converted")
QUERY = """
    -- the preset's columns, joined by hand to show a query reads like the table
    SELECT o.id, o.number, o.description, o.party, o.employee, o.amount, o.conversion_probability, o.start_date,
        o.end_date, o.state, p.name AS party_name
    FROM sale_opportunity AS o LEFT JOIN party_party AS p ON p.id = o.party
    ORDER BY o.id
"""


def codes(error: pytest.ExceptionInfo[PlaybookError]) -> list[str]:
    return [p.code for p in error.value.problems]


# -- the live Tryton database ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def tryton(tmp_path_factory: pytest.TempPathFactory) -> TrytonCrm:
    """trytond + sale_opportunity activated on SQLite and filled through Tryton itself (~20 s)."""
    return build(tmp_path_factory.mktemp("tryton"))


@pytest.fixture(scope="session")
def tryton_facts(tryton: TrytonCrm) -> dict[str, dict[str, Any]]:
    """Per description: the number Tryton gave the opportunity and its party's code (read directly)."""
    engine = sa.create_engine(tryton.url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT o.description, o.number, o.state, p.code, p.name FROM sale_opportunity AS o "
                "LEFT JOIN party_party AS p ON p.id = o.party"
            )
        )
        facts = {r.description: {"number": r.number, "state": r.state, "code": r.code, "party": r.name} for r in rows}
    engine.dispose()
    return facts


def read(tryton: TrytonCrm, **source: str) -> list[tuple[int, MappedCase | Quarantined]]:
    return list(read_sql(tryton.url, load_mapping("tryton_opportunity"), **source))


def test_the_setup_made_the_opportunities_in_their_states(
    tryton: TrytonCrm, tryton_facts: dict[str, dict[str, Any]]
) -> None:
    assert tryton.admin_seconds + tryton.fill_seconds < 300
    assert {d: (f["state"], f["party"]) for d, f in tryton_facts.items()} == {
        o.description: (o.state, o.party) for o in OPPORTUNITIES
    }


def test_every_row_is_one_case_or_one_quarantined_record(tryton: TrytonCrm) -> None:
    items = read(tryton, table="sale_opportunity")
    assert [position for position, _ in items] == list(range(1, len(OPPORTUNITIES) + 1))
    mapped = [i for _, i in items if isinstance(i, MappedCase)]
    quarantined = [i for _, i in items if isinstance(i, Quarantined)]
    assert len(mapped) == sum(o.state in OPEN for o in OPPORTUNITIES) == 6
    assert len(quarantined) == sum(o.state not in OPEN for o in OPPORTUNITIES) == 3
    assert len(mapped) + len(quarantined) == len(OPPORTUNITIES)


def test_known_opportunities_map_to_their_facts(tryton: TrytonCrm, tryton_facts: dict[str, dict[str, Any]]) -> None:
    items = [i for _, i in read(tryton, table="sale_opportunity")]
    by_id = {(i.case_id if isinstance(i, MappedCase) else i.record_id): i for i in items}
    for spec in OPPORTUNITIES:
        fact = tryton_facts[spec.description]
        item = by_id[fact["number"]]
        if spec.state not in OPEN:
            assert isinstance(item, Quarantined)
            assert (item.code, item.record_id) == ("closed_deal", fact["number"])
            assert spec.state in item.reason
            continue
        assert isinstance(item, MappedCase), spec
        opportunity = item.case["opportunity"]
        assert opportunity["id"] == fact["number"]
        assert opportunity["amount"] == spec.amount
        assert opportunity["win_rate"] == int(spec.probability * 100 + 1e-9) // 20 * 20
        assert opportunity.get("close_date") == (spec.end_date.isoformat() if spec.end_date else None)
        assert opportunity.get("account_id") == fact["code"]
        assert item.case.get("account", {}).get("id") == fact["code"]


def test_one_known_case_in_full(tryton: TrytonCrm, tryton_facts: dict[str, dict[str, Any]]) -> None:
    fact = tryton_facts["Northwind: plant retrofit"]
    [case] = [i for _, i in read(tryton, table="sale_opportunity") if getattr(i, "case_id", None) == fact["number"]]
    assert isinstance(case, MappedCase)
    assert case.case == {
        "id": fact["number"],
        "opportunity": {
            "id": fact["number"],
            "account_id": fact["code"],
            "amount": 45000.5,
            "period_target": 100000,
            "close_date": "2026-12-04",
            "win_rate": 60,
            "name": "Northwind: plant retrofit",  # the description
            "owner": "Sam Seller",  # the employee's party, through two lookups
            "stage": "opportunity",
            "created_date": "2026-09-01",  # the start date
        },
        "account": {"id": fact["code"], "name": "Northwind Metals"},
    }


def test_a_query_reads_the_same_cases_as_the_table(tryton: TrytonCrm) -> None:
    assert read(tryton, query=QUERY) == read(tryton, table="sale_opportunity")


def test_a_query_without_the_who_and_where_columns_still_reads(tryton: TrytonCrm) -> None:
    narrow = "SELECT id, number, party, amount, conversion_probability, end_date, state FROM sale_opportunity"
    full = read(tryton, table="sale_opportunity")
    assert len(read(tryton, query=narrow)) == len(full)
    for (_, item), (_, whole) in zip(read(tryton, query=narrow), full, strict=True):
        if isinstance(item, MappedCase) and isinstance(whole, MappedCase):
            lacking = {k: v for k, v in whole.case["opportunity"].items() if k not in ("name", "owner", "created_date")}
            assert item.case["opportunity"] == lacking


def test_a_query_can_choose_the_rows(tryton: TrytonCrm) -> None:
    items = read(tryton, query="SELECT * FROM sale_opportunity WHERE state IN ('opportunity', 'converted')")
    assert [p for p, _ in items] == [1, 2, 3, 4]
    assert all(isinstance(i, MappedCase) for _, i in items)


def test_the_adapter_cannot_write(tryton: TrytonCrm) -> None:
    before = hashlib.sha256(tryton.path.read_bytes()).hexdigest()
    engine = read_only_engine(tryton.url)
    with engine.connect() as conn, pytest.raises(sa.exc.OperationalError, match="readonly"):
        conn.execute(sa.text("DELETE FROM sale_opportunity"))
    engine.dispose()
    with pytest.raises(PlaybookError) as error:
        read(tryton, query="DELETE FROM sale_opportunity")
    assert codes(error) == ["sql_not_a_query"]
    # passes the first-word check, so the database itself must refuse it
    with pytest.raises(PlaybookError) as error:
        read(tryton, query="WITH doomed AS (SELECT id FROM sale_opportunity) DELETE FROM sale_opportunity")
    assert codes(error) == ["sql_query"]
    assert "readonly" in str(error.value)
    assert len(read(tryton, table="sale_opportunity")) == len(OPPORTUNITIES)
    assert hashlib.sha256(tryton.path.read_bytes()).hexdigest() == before


def test_a_column_the_mapping_reads_but_the_table_lacks_is_located(tryton: TrytonCrm, tmp_path: Path) -> None:
    text = PRESET.read_text(encoding="utf-8").replace("{from: end_date,", "{from: end_dat,")
    mapping_file = tmp_path / "typo.yaml"
    mapping_file.write_text(text, encoding="utf-8")
    line = text[: text.index("end_dat,")].count("\n") + 1
    for source in ({"table": "sale_opportunity"}, {"query": "SELECT * FROM sale_opportunity"}):
        with pytest.raises(PlaybookError) as error:
            list(read_sql(tryton.url, load_mapping(mapping_file), **source))
        [problem] = error.value.problems
        assert (problem.code, problem.location.file, problem.location.line) == (
            "mapping_unknown_column",
            str(mapping_file),
            line,
        )
        assert "'end_dat'" in problem.message
        assert "did you mean 'end_date'" in problem.message


def test_an_unknown_table_suggests_the_right_one(tryton: TrytonCrm) -> None:
    with pytest.raises(PlaybookError) as error:
        read(tryton, table="sale_oportunity")
    assert codes(error) == ["sql_unknown_table"]
    assert "did you mean 'sale_opportunity'" in str(error.value)


def test_the_course_playbook_evaluates_the_tryton_cases(
    tryton: TrytonCrm, tryton_facts: dict[str, dict[str, Any]]
) -> None:
    cases = [(i.case_id, i.case) for _, i in read(tryton, table="sale_opportunity") if isinstance(i, MappedCase)]
    with compile_playbook(load_playbook(COURSE)) as compiled:
        results = list(Evaluator(compiled).evaluate(cases, AS_OF))
    assert not [r for r in results if isinstance(r, CaseError)]
    decisions = {r.case: r.decisions for r in results if not isinstance(r, CaseError)}
    want = {
        # description: win_rate, funnel_layer (weeks to the end date from AS_OF), amount_class (of 100,000)
        "Website enquiry": (0, None, "C"),
        "Harbour: warehouse scanners": (20, "surface", "B"),
        "Northwind: plant retrofit": (60, "bottom", "A"),
        "Harbour: fleet tracking": (40, "middle", "C"),
        "Blue Peak: clinic network": (80, "surface", "A"),
        "Northwind: service contract": (80, "bottom", "A"),
    }
    got = {
        description: tuple(decisions[fact["number"]][d] for d in ("win_rate", "funnel_layer", "amount_class"))
        for description, fact in tryton_facts.items()
        if fact["number"] in decisions
    }
    assert got == want


# -- a small database made here (fast, no Tryton) -------------------------------------------------

MAPPING = """\
mapping:
  id: small
  record_id: deal_id
lookups:
  accounts: {table: accounts, key: account_no, match: account, required: true}
quarantine:
  - {field: stage, one_of: [Closed], code: closed_deal, reason: "stage {value}: closed"}
fields:
  opportunity.id: deal_id
  opportunity.account_id: account
  opportunity.amount: {from: amount, type: number}
  opportunity.close_date: {from: closing, type: date}
  account.id: account
  account.attractiveness: {from: accounts.revenue, type: number, bands: [{below: 1000, value: low}, {value: high}]}
"""


@pytest.fixture
def small(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """deals (one closed, one for an unknown account, one with a bad amount) and accounts, plus the mapping."""
    url = f"sqlite:///{tmp_path / 'small.db'}"
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    deals = sa.Table(
        "deals",
        meta,
        sa.Column("deal_id", sa.String, primary_key=True),
        sa.Column("account", sa.String),
        sa.Column("amount", sa.String),
        sa.Column("closing", sa.Date),
        sa.Column("stage", sa.String),
        sa.Column("notes", sa.Text),
    )
    accounts = sa.Table("accounts", meta, sa.Column("account_no", sa.String), sa.Column("revenue", sa.Integer))
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(accounts.insert(), [{"account_no": "A1", "revenue": 5000}, {"account_no": "A2", "revenue": 10}])
        conn.execute(
            deals.insert(),
            [
                {"deal_id": "d1", "account": "A1", "amount": "1200", "closing": dt.date(2027, 1, 5), "stage": "Open"},
                {"deal_id": "d2", "account": "A2", "amount": "3,500.5", "closing": None, "stage": "Open"},
                {"deal_id": "d3", "account": "A1", "amount": "9", "closing": None, "stage": "Closed"},
                {"deal_id": "d4", "account": "ZZ", "amount": "10", "closing": None, "stage": "Open"},
                {"deal_id": "d5", "account": "A2", "amount": "lots", "closing": None, "stage": "Open"},
            ],
        )
    engine.dispose()
    mapping_file = tmp_path / "small.yaml"
    mapping_file.write_text(MAPPING, encoding="utf-8")
    yield url, load_mapping(mapping_file)


def test_small_database_every_row_accounted_for(small: tuple[str, Any]) -> None:
    url, mapping = small
    items = list(read_sql(url, mapping, table="deals"))
    assert [p for p, _ in items] == [1, 2, 3, 4, 5]
    d1, d2, d3, d4, d5 = (i for _, i in items)
    assert d1 == MappedCase(
        "d1",
        {
            "id": "d1",
            "opportunity": {"id": "d1", "account_id": "A1", "amount": 1200, "close_date": "2027-01-05"},
            "account": {"id": "A1", "attractiveness": "high"},
        },
    )
    assert isinstance(d2, MappedCase)
    assert (d2.case["opportunity"]["amount"], d2.case["account"]["attractiveness"]) == (3500.5, "low")
    assert (getattr(d3, "code", None), getattr(d4, "code", None), getattr(d5, "code", None)) == (
        "closed_deal",
        "lookup_not_found",
        "bad_number",
    )
    assert isinstance(d5, Quarantined)
    assert d5.line == 5


def test_small_database_query_and_its_positions(small: tuple[str, Any]) -> None:
    url, mapping = small
    items = list(read_sql(url, mapping, query="SELECT * FROM deals WHERE stage = 'Open' ORDER BY deal_id DESC"))
    assert [(p, getattr(i, "case_id", None) or getattr(i, "record_id", None)) for p, i in items] == [
        (1, "d5"),
        (2, "d4"),
        (3, "d2"),
        (4, "d1"),
    ]


def test_small_database_missing_column_in_a_query_and_in_a_lookup_table(small: tuple[str, Any], tmp_path: Path) -> None:
    url, mapping = small
    with pytest.raises(PlaybookError) as error:
        list(read_sql(url, mapping, query="SELECT deal_id, account, amount, stage FROM deals"))
    [problem] = error.value.problems
    assert problem.code == "mapping_unknown_column"
    assert problem.location.line == MAPPING[: MAPPING.index("opportunity.close_date")].count("\n") + 1
    assert "'closing' is not in the query's result" in problem.message
    other = tmp_path / "other.yaml"
    other.write_text(MAPPING.replace("accounts.revenue", "accounts.revenu"), encoding="utf-8")
    with pytest.raises(PlaybookError) as error:
        list(read_sql(url, load_mapping(other), table="deals"))
    assert codes(error) == ["mapping_unknown_column"]
    assert "did you mean 'revenue'" in str(error.value)


def test_a_lookup_from_a_file_is_refused(small: tuple[str, Any], tmp_path: Path) -> None:
    url, _ = small
    other = tmp_path / "file.yaml"
    other.write_text(MAPPING.replace("{table: accounts,", "{file: accounts.csv,"), encoding="utf-8")
    with pytest.raises(PlaybookError) as error:
        list(read_sql(url, load_mapping(other), table="deals"))
    assert codes(error) == ["mapping_lookup_table"]
    assert error.value.problems[0].location.line == 5


def test_a_missing_sqlite_file_is_an_error_and_is_not_created(small: tuple[str, Any], tmp_path: Path) -> None:
    _, mapping = small
    missing = tmp_path / "nowhere.db"
    with pytest.raises(PlaybookError) as error:
        list(read_sql(f"sqlite:///{missing}", mapping, table="deals"))
    assert codes(error) == ["sql_connect"]
    assert not missing.exists()


def test_table_or_query_exactly_one(small: tuple[str, Any]) -> None:
    url, mapping = small
    with pytest.raises(ValueError, match="exactly one"):
        list(read_sql(url, mapping))
    with pytest.raises(ValueError, match="exactly one"):
        list(read_sql(url, mapping, table="deals", query="SELECT * FROM deals"))


def test_not_a_url_and_a_hidden_password(small: tuple[str, Any]) -> None:
    _, mapping = small
    with pytest.raises(PlaybookError) as error:
        list(read_sql("nonsense://", mapping, table="deals"))
    assert codes(error) == ["sql_url"]
    with pytest.raises(PlaybookError) as error:
        list(read_sql("postgresql+psycopg://user:s3cret@127.0.0.1:1/crm", mapping, table="deals"))
    assert codes(error) == ["sql_connect"]
    assert "s3cret" not in str(error.value)


def test_rows_are_streamed(small: tuple[str, Any]) -> None:
    url, mapping = small
    rows = read_sql(url, mapping, table="deals")
    assert next(rows)[0] == 1
    rows.close()  # the connection is released without reading the rest


# -- PostgreSQL: read-only sessions ---------------------------------------------------------------


@pytest.fixture
def pg_url(postgres_server: str) -> str:
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    server = postgres_server.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(f"{server}/postgres", autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')  # a generated name, not user input
    url = f"{postgres_server}/{name}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE deals (deal_id text PRIMARY KEY, amount numeric(12, 2), closing date)"))
        conn.execute(sa.text("INSERT INTO deals VALUES ('p1', 1500.25, '2027-01-05'), ('p2', 70, NULL)"))
        conn.execute(sa.text("CREATE SEQUENCE deal_numbers"))
    engine.dispose()
    return url


def test_postgresql_reads_and_cannot_write(pg_url: str, tmp_path: Path) -> None:
    mapping_file = tmp_path / "pg.yaml"
    mapping_file.write_text(
        "mapping: {id: pg, record_id: deal_id}\n"
        "fields:\n  opportunity.amount: {from: amount, type: number}\n"
        "  opportunity.close_date: {from: closing, type: date}\n",
        encoding="utf-8",
    )
    mapping = load_mapping(mapping_file)
    assert list(read_sql(pg_url, mapping, table="deals")) == [
        (1, MappedCase("p1", {"id": "p1", "opportunity": {"amount": 1500.25, "close_date": "2027-01-05"}})),
        (2, MappedCase("p2", {"id": "p2", "opportunity": {"amount": 70.0}})),
    ]
    assert list(read_sql(pg_url, mapping, query="SELECT * FROM deals ORDER BY deal_id")) == list(
        read_sql(pg_url, mapping, table="deals")
    )
    for url, timeout in ((pg_url, "0"), (f"{pg_url}?options=-cstatement_timeout%3D12345", "12345ms")):
        engine = read_only_engine(url)
        with engine.connect() as conn, pytest.raises(sa.exc.InternalError, match="read-only transaction"):
            assert conn.execute(sa.text("SHOW statement_timeout")).scalar() == timeout  # the URL's options kept
            conn.execute(sa.text("DELETE FROM deals"))
        engine.dispose()
    with pytest.raises(PlaybookError) as error:
        list(read_sql(pg_url, mapping, query="WITH gone AS (DELETE FROM deals RETURNING *) SELECT * FROM gone"))
    assert codes(error) == ["sql_query"]
    # a SELECT that writes (a sequence advances) is refused by the read-only transaction itself
    writes = "SELECT nextval('deal_numbers')::text AS deal_id, amount, closing FROM deals"
    with pytest.raises(PlaybookError) as error:
        list(read_sql(pg_url, mapping, query=writes))
    assert codes(error) == ["sql_query"]
    assert "read-only transaction" in str(error.value)
    assert len(list(read_sql(pg_url, mapping, table="deals"))) == 2


def test_recommend_reads_the_live_tryton_database_and_resumes(tryton: TrytonCrm, tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from cli import main

    db = f"sqlite:///{tmp_path / 'log.db'}"
    args = ["recommend", "--sql", tryton.url, "--table", "sale_opportunity", "--mapping", "tryton_opportunity"]
    args += ["--as-of", "2026-11-27", "--format", "json", "--db", db, "--lang", "en"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.stderr
    lines = [json.loads(line) for line in first.stdout.splitlines()]
    assert len(lines) == len(OPPORTUNITIES)
    assert sum("evaluation" in line for line in lines) == 6
    assert (
        f"{len(OPPORTUNITIES)} rows: 6 cases evaluated (6 results, 0 errors), 3 quarantined (closed_deal 3)"
        in first.stderr
    )
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.stderr
    assert "6 already stored by an earlier run of this import" in again.stderr
    usage = CliRunner().invoke(main, ["recommend", "--sql", tryton.url, "--mapping", "tryton_opportunity"])
    assert usage.exit_code == 2


# -- hostile rows and runaway queries -------------------------------------------------------------

SLOW_SQLITE = (
    "SELECT d.* FROM deals AS d, (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20000000) "
    "SELECT max(x) AS m FROM c) AS slow"
)  # about 7 s here without a timeout: a broken timeout fails the test instead of hanging it


def test_a_runaway_query_on_sqlite_is_stopped_by_the_statement_timeout(small: tuple[str, Any]) -> None:
    url, mapping = small
    with pytest.raises(PlaybookError) as error:
        list(read_sql(url, mapping, query=SLOW_SQLITE, timeout=0.3))
    assert codes(error) == ["sql_timeout"]
    assert "longer than 0.3 s to give the rows after row 0" in str(error.value)


def _many_deals(url: str, count: int) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM deals"))
        conn.execute(
            sa.text("INSERT INTO deals (deal_id, account, amount, stage) VALUES (:d, 'A1', '5', 'Open')"),
            [{"d": f"m{i:05d}"} for i in range(count)],
        )
    engine.dispose()


def test_the_timeout_counts_the_databases_time_not_the_readers(small: tuple[str, Any]) -> None:
    """Rows come in batches; a consumer slower than the timeout between two batches is not cut off."""
    import time

    url, mapping = small
    _many_deals(url, 2500)
    seen = 0
    for position, _ in read_sql(url, mapping, table="deals", timeout=0.2):
        seen += 1
        if position in (999, 1000, 1999, 2000):  # around each batch of 1,000 rows
            time.sleep(0.25)
    assert seen == 2500


def test_text_sqlite_cannot_store_elsewhere_quarantines_its_row_only(small: tuple[str, Any]) -> None:
    url, _ = small
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE deals SET account = 'A1' || char(0) || 'x' WHERE deal_id = 'd1'"))
        conn.execute(sa.text("UPDATE deals SET stage = CAST(X'4f70656e' AS TEXT) WHERE deal_id = 'd2'"))  # 'Open'
        conn.execute(sa.text("UPDATE deals SET deal_id = CAST(X'64ff32' AS TEXT) WHERE deal_id = 'd2'"))  # not UTF-8
    engine.dispose()
    other = MAPPING.replace("required: true", "required: false")
    path = Path(url.removeprefix("sqlite:///")).with_name("loose.yaml")
    path.write_text(other, encoding="utf-8")
    items = list(read_sql(url, load_mapping(path), table="deals"))
    got = [(p, i.code if isinstance(i, Quarantined) else i.case_id) for p, i in items]
    assert got == [
        (1, "unstorable_text"),  # d1: a NUL in its account
        (2, "closed_deal"),
        (3, "d4"),
        (4, "bad_number"),
        (5, "unstorable_text"),  # d\xff2: an id that is not UTF-8 (last by primary key)
    ]
    assert "NUL character" in items[0][1].reason  # type: ignore[union-attr]
    assert "not UTF-8" in items[4][1].reason  # type: ignore[union-attr]


def test_a_query_naming_a_column_twice_is_refused(small: tuple[str, Any]) -> None:
    url, mapping = small
    with pytest.raises(PlaybookError) as error:
        list(read_sql(url, mapping, query="SELECT deal_id, account, amount, closing, stage, amount FROM deals"))
    assert codes(error) == ["sql_duplicate_column"]
    assert "'amount' more than once" in str(error.value)


def test_postgresql_statement_timeout_default_and_configured(pg_url: str, tmp_path: Path) -> None:
    mapping_file = tmp_path / "pg.yaml"
    mapping_file.write_text(
        "mapping: {id: pg, record_id: deal_id}\nfields:\n  opportunity.amount: {from: amount, type: number}\n",
        encoding="utf-8",
    )
    mapping = load_mapping(mapping_file)
    setting = "SELECT current_setting('statement_timeout') AS deal_id, 1 AS amount"
    assert [i.case_id for _, i in read_sql(pg_url, mapping, query=setting)] == ["5min"]  # type: ignore[union-attr]
    assert [i.case_id for _, i in read_sql(pg_url, mapping, query=setting, timeout=2.5)] == ["2500ms"]  # type: ignore[union-attr]
    assert [i.case_id for _, i in read_sql(pg_url, mapping, query=setting, timeout=None)] == ["0"]  # type: ignore[union-attr]
    slow = "SELECT deal_id, amount FROM deals, pg_sleep(3)"
    with pytest.raises(PlaybookError) as error:
        list(read_sql(pg_url, mapping, query=slow, timeout=0.3))
    assert codes(error) == ["sql_timeout"]
    with pytest.raises(PlaybookError) as error:
        list(read_sql(pg_url, mapping, query="SELECT deal_id, 1 / 0 AS amount FROM deals"))
    assert codes(error) == ["sql_query"]  # a refusal is not a timeout


def test_postgresql_timeout_counts_each_fetch(pg_url: str, tmp_path: Path) -> None:
    import time

    mapping_file = tmp_path / "pg.yaml"
    mapping_file.write_text(
        "mapping: {id: pg, record_id: deal_id}\nfields:\n  opportunity.id: deal_id\n", encoding="utf-8"
    )
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO deals SELECT 'g' || n, n, NULL FROM generate_series(1, 2500) AS n"))
    engine.dispose()
    seen = 0
    for position, _ in read_sql(pg_url, load_mapping(mapping_file), table="deals", timeout=0.2):
        seen += 1
        if position in (999, 1000, 1999, 2000):
            time.sleep(0.25)
    assert seen == 2502


def test_recommend_takes_a_statement_timeout(pg_url: str, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from cli import main

    mapping_file = tmp_path / "pg.yaml"
    mapping_file.write_text(
        "mapping: {id: pg, record_id: deal_id}\nfields:\n  opportunity.amount: {from: amount, type: number}\n",
        encoding="utf-8",
    )
    args = ["recommend", "--sql", pg_url, "--query", "SELECT deal_id, amount FROM deals, pg_sleep(3)"]
    args += ["--mapping", str(mapping_file), "--as-of", "2026-11-27", "--no-store", "--sql-timeout", "0.3"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert "sql_timeout: the database took longer than 0.3 s" in result.stderr
    assert "Traceback" not in result.stderr
