"""The shipped presets on the real exports in ../shared/crm-data, as they are: what to recommend, and who and where."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from adapters.csv_export import read_csv
from adapters.json_records import flatten, read_json_records
from adapters.mapping import MappedCase, Quarantined, load_mapping, preset_names
from cli import main
from engine.store import Store
from tests.conftest import ROOT

CRM = ROOT.parent / "shared" / "crm-data"
MAVEN = CRM / "maven-crm-sales-opportunities"

pytestmark = pytest.mark.skipif(not CRM.is_dir(), reason=f"the shared CRM data is not at {CRM}")


def mapped(path: Path, preset: str) -> tuple[dict[str, dict[str, Any]], Counter[str], int]:
    out = list(read_csv(path, load_mapping(preset)))
    cases = {item.case_id: item.case for _, item in out if isinstance(item, MappedCase)}
    held = Counter(item.code for _, item in out if isinstance(item, Quarantined))
    return cases, held, len(out)


@pytest.mark.parametrize("preset", ["salesforce_export", "salesforce_opportunity"])
def test_salesforce_data_cloud_opportunities(preset: str) -> None:
    cases, held, rows = mapped(CRM / "salesforce-data-cloud-workshop" / "Opportunity.csv", preset)
    assert rows == 50 == len(cases) + held["closed_deal"]
    assert held == Counter({"closed_deal": 15})  # 12 Closed Won + 3 Closed Lost, IsClosed = 1
    first = cases["006Ec00000AieKFIAZ"]["opportunity"]
    assert first == {
        "id": "006Ec00000AieKFIAZ",
        "account_id": "001Ec00000GGw3iIAD",
        "amount": 1124741.15,
        "close_date": "2024-11-10",
        "win_rate": 0,  # Qualification, 10%
        "name": "Patterson-Hansen - Merchant Services - November 2024",
        "owner": "005Ec000004oBPNIA2",  # the owning user's id: the export has no User.csv
        "stage": "Qualification",
        "created_date": "2024-01-22",  # 2024-01-22T16:14:25.000+0000
    }  # LeadSource and LastActivityDate are empty on every row: unknown, not guessed
    if preset == "salesforce_export":  # the account's name from Account.csv, by AccountId
        with (CRM / "salesforce-data-cloud-workshop" / "Account.csv").open(encoding="utf-8-sig") as handle:
            accounts = {row["Id"]: row["Name"] for row in csv.DictReader(handle)}
        assert all(c["account"]["name"] == accounts[c["account"]["id"]] for c in cases.values())


def test_salesforce_dev_org_export_with_accounts() -> None:
    cases, held, rows = mapped(CRM / "salesforce-devorg-sample-powerbi" / "Opportunity.csv", "salesforce_export")
    assert rows == 36 == len(cases) + held["closed_deal"]
    assert held == Counter({"closed_deal": 20})
    negotiation = cases["006bm00000LKJNOAA5"]  # Negotiation/Review, 90%, US date 02/03/24
    assert negotiation["opportunity"]["win_rate"] == 80
    assert negotiation["opportunity"]["close_date"] == "2024-02-03"
    assert negotiation["opportunity"]["amount"] == 125000
    rated = [c["account"] for c in cases.values() if "attractiveness" in c.get("account", {})]
    assert rated and {a["attractiveness"] for a in rated} <= {"high", "low"}
    assert Counter(c["opportunity"]["win_rate"] for c in cases.values()) == Counter({0: 2, 20: 2, 40: 3, 60: 7, 80: 2})


def test_salesforce_dev_org_who_and_where() -> None:
    """This export has no OwnerId column: the owner stays unknown instead of the file being refused."""
    source = CRM / "salesforce-devorg-sample-powerbi" / "Opportunity.csv"
    cases, _, _ = mapped(source, "salesforce_export")
    with source.open(encoding="utf-8-sig") as handle:
        rows = {row["Id"]: row for row in csv.DictReader(handle)}
    inbound = ("Web", "Phone Inquiry", "Advertisement", "Public Relations", "Word of mouth")
    origins = {**dict.fromkeys(inbound, "inbound"), "Purchased List": "outbound", "Cold Call": "outbound"}
    for case_id, case in cases.items():
        row, opportunity = rows[case_id], case["opportunity"]
        assert "owner" not in opportunity
        assert opportunity["name"] == row["Name"]
        assert opportunity["stage"] == row["StageName"]
        month, day, year = row["CreatedDate"].split("/")
        assert opportunity["created_date"] == f"20{year}-{month}-{day}"
        if row["LeadSource"] in origins:
            assert opportunity["origin"] == origins[row["LeadSource"]]
        else:
            assert "origin" not in opportunity  # External Referral, Partner, Employee Referral, empty: unknown
    assert {c["opportunity"].get("origin") for c in cases.values()} == {"inbound", "outbound", None}
    assert all(c["account"].get("name") for c in cases.values() if c["account"].get("id"))


def test_maven_preset_copes_with_the_products_mess() -> None:
    cases, held, rows = mapped(MAVEN / "sales_pipeline.csv", "maven")
    assert rows == 8800 and held == Counter({"closed_deal": 6711}) and len(cases) == 2089
    gtx_pro = [c for c in cases.values() if c["opportunity"]["amount"] == 4821]  # "GTXPro" rows priced as "GTX Pro"
    assert gtx_pro and {c["opportunity"]["market"] for c in gtx_pro} == {"GTX Pro"}
    no_account = [c for c in cases.values() if "account_id" not in c["opportunity"]]
    assert no_account and all("attractiveness" not in c.get("account", {}) for c in no_account)


def test_maven_who_and_where_on_every_open_deal() -> None:
    cases, _, _ = mapped(MAVEN / "sales_pipeline.csv", "maven")
    with (MAVEN / "sales_teams.csv").open(encoding="utf-8") as handle:
        teams = {row["sales_agent"]: row for row in csv.DictReader(handle)}
    with (MAVEN / "sales_pipeline.csv").open(encoding="utf-8") as handle:
        rows = {row["opportunity_id"]: row for row in csv.DictReader(handle)}
    products = {"GTXPro": "GTX Pro"}
    for case_id, case in cases.items():
        row, opportunity = rows[case_id], case["opportunity"]
        assert opportunity["owner"] == row["sales_agent"]
        assert opportunity["team"] == teams[row["sales_agent"]]["manager"]
        assert opportunity["region"] == teams[row["sales_agent"]]["regional_office"]
        assert opportunity["market"] == products.get(row["product"], row["product"])
        assert opportunity["stage"] == row["deal_stage"]
        assert opportunity.get("stage_entered_date") == (row["engage_date"] or None)
        assert case.get("account", {}).get("name") == (row["account"] or None)
    by_region = Counter(c["opportunity"]["region"] for c in cases.values())
    assert set(by_region) == {"Central", "East", "West"} and sum(by_region.values()) == 2089
    by_stage = Counter((c["opportunity"]["stage"], "stage_entered_date" in c["opportunity"]) for c in cases.values())
    assert by_stage == Counter({("Engaging", True): 1589, ("Prospecting", False): 500})


def test_who_and_where_is_read_and_stored(tmp_path: Path) -> None:
    """The course reads who and where (its groups are per owner, region, market); the log keeps the case as mapped."""
    db = f"sqlite:///{tmp_path / 'm.db'}"
    args = ["recommend", "--input", str(MAVEN / "sales_pipeline.csv"), "--mapping", "maven"]
    result = CliRunner().invoke(main, [*args, "--as-of", "2017-03-01", "--format", "json", "--db", db])
    assert result.exit_code == 0, result.stderr
    first = next(json.loads(line) for line in result.stdout.splitlines() if "evaluation" in json.loads(line))
    assert first["inputs"]["opportunity.region"] in ("Central", "East", "West") and first["inputs"]["opportunity.owner"]
    store = Store(db)
    try:
        facts = store.get(first["evaluation"]).facts
    finally:
        store.close()
    assert {"owner", "team", "region", "market", "stage"} <= set(facts["opportunity"])
    assert facts["opportunity"]["region"] in ("Central", "East", "West")


def test_hubspot_deal_export_stages_decide_what_is_open() -> None:
    out = list(read_json_records(CRM / "hubspot-airbyte-test-portal" / "deals.json", load_mapping("hubspot_deal")))
    cases = {item.case_id: item.case["opportunity"] for _, item in out if isinstance(item, MappedCase)}
    held = {item.record_id: item.code for _, item in out if isinstance(item, Quarantined)}
    # hs_is_closed is true on all four (a known cast bug in the export); the stage decides instead
    assert held == {"4307833946": "closed_deal"}
    assert cases["4280411910"] == {
        "id": "4280411910",
        "amount": 6,
        "close_date": "2014-08-31",
        "win_rate": 20,
        "name": "Test Deal 332",
        "owner": "52550153",
        "market": "default",  # the pipeline
        "stage": "appointmentscheduled",
        "stage_entered_date": "2021-02-22",  # hs_date_entered_appointmentscheduled
        "created_date": "2021-02-22",
    }
    assert cases["4315375411"]["last_activity_date"] == "2021-02-26"  # notes_last_updated
    assert sorted(cases) == ["11936210032", "4280411910", "4315375411"]


def test_pipedrive_deal_who_and_where() -> None:
    samples = json.loads((CRM / "payload-samples" / "pipedrive_webhook_v2_deal_examples.json").read_text("utf-8"))
    item = load_mapping("pipedrive_deal").to_case(flatten(samples["create"]["data"]))
    assert isinstance(item, MappedCase)
    assert item.case["opportunity"] == {
        "id": "8",
        "account_id": "1",
        "amount": 100,
        "name": "Sample Org deal",
        "owner": "12415231",
        "market": "1",  # the pipeline
        "stage": "2",
        "stage_entered_date": "2022-11-24",  # never moved: its creation (stage_change_time is null)
        "created_date": "2022-11-24",
    }


def test_bottlecrm_deal_who_and_where() -> None:
    body = json.loads((CRM / "bottlecrm-webhook-captures" / "01_deal.created.body.json").read_text("utf-8"))
    item = load_mapping("bottlecrm_deal").to_case(body["data"])
    assert isinstance(item, MappedCase)
    opportunity = item.case["opportunity"]
    assert {k: opportunity[k] for k in ("name", "stage", "created_date", "participants", "market")} == {
        "name": "Weaving Plant Generator",
        "stage": "PROSPECTING",
        "created_date": "2026-11-27",
        "participants": [],  # assigned to nobody: known, and empty
        "market": "deefef71-b120-47e6-8d34-2ec8019214bd",
    }


def test_generic_carries_every_who_and_where_field() -> None:
    record = {
        "id": "g1",
        "opportunity.name": "Plant retrofit",
        "opportunity.owner": "李雷",
        "opportunity.team": "大客户部",
        "opportunity.region": "华东",
        "opportunity.market": "制造业",
        "opportunity.stage": "方案展示",
        "opportunity.stage_entered_date": "2026-10-01",
        "opportunity.created_date": "2026-09-01",
        "opportunity.last_activity_date": "2026-11-20",
        "opportunity.origin": "outbound",
        "opportunity.participants": ["韩梅梅", "王工"],
        "account.name": "华为技术",
    }
    item = load_mapping("generic").to_case(record)
    assert isinstance(item, MappedCase)
    flat = {f"{obj}.{key}": value for obj, values in item.case.items() if obj != "id" for key, value in values.items()}
    assert flat == {**{k: v for k, v in record.items() if k != "id"}, "opportunity.id": "g1"}


def test_every_preset_names_who_and_where_it_can() -> None:
    """Each preset maps the owner or says in its description why its CRM has none to give."""
    for name in preset_names():
        mapping = load_mapping(name)
        targets = {rule.target for rule in mapping.fields}
        assert "opportunity.stage" in targets, name
        assert "opportunity.owner" in targets or name == "bottlecrm_deal", name
