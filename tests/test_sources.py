"""Company sources beside course entries, and course quotes checked against the course text."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from cli import main
from engine import load_playbook, load_playbook_text
from engine.sources import cited_sources, quotes_not_in_course
from tests.conftest import FIXTURES, ROOT

POLICY = FIXTURES / "company_policy.yaml"
COURSE = ROOT / "playbooks" / "course.yaml"
COURSE_TEXT = ROOT.parent / "shared" / "course" / "course-zh.txt"
ACTION_POLICY = "SP-2026-03"


@pytest.fixture
def cases(tmp_path: Path) -> Path:
    path = tmp_path / "cases.jsonl"
    path.write_text(json.dumps({"id": "big-1", "opportunity": {"id": "big-1", "amount": 2_000_000}}) + "\n")
    return path


def test_a_policy_source_is_kept_apart_from_course_entries() -> None:
    playbook = load_playbook(POLICY)
    rule = playbook.rules[0]
    assert (rule.source.policy, rule.source.guide, rule.source.ref) == ("BOARD-7", "", "BOARD-7")
    assert rule.source.to_json() == {"policy": "BOARD-7", "text": "董事会决议:大单必须由总监审批"}
    table = playbook.decisions["deal_size"]
    assert table.source.to_json() == {"guide": "G-09", "quote": "大项目"}
    assert table.rows[1].source is table.source  # a row that cites nothing carries its table's source
    assert len(list(cited_sources(playbook))) == 5  # the row's inherited source once


def test_recommend_json_carries_the_policy_in_the_recommendation_and_the_trace(cases: Path) -> None:
    out = CliRunner().invoke(
        main, ["recommend", "--playbook", str(POLICY), "--input", str(cases), "--no-store", "--format", "json"]
    )
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout.splitlines()[0])
    jsonschema.validate(result, json.loads((ROOT / "schemas" / "result.schema.json").read_text(encoding="utf-8")))
    assert result["recommendations"][0]["source"] == {"policy": ACTION_POLICY, "text": "金额一百万以上的单子由总监审批"}
    table, rule = result["trace"]
    assert (table["source"], table["fired"][0]["source"], rule["source"]) == ("G-09", ACTION_POLICY, "BOARD-7")


@pytest.mark.parametrize(("lang", "named"), [("zh", "[公司规定 SP-2026-03 「"), ("en", "[company policy SP-2026-03 “")])
def test_recommend_text_names_a_policy_as_the_company_s_own(cases: Path, lang: str, named: str) -> None:
    out = CliRunner().invoke(
        main, ["recommend", "--playbook", str(POLICY), "--input", str(cases), "--no-store", "--lang", lang]
    )
    assert out.exit_code == 0, out.output
    assert named in out.stdout


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_why_shows_course_and_policy_sources_from_the_audit_log(cases: Path, db_url: str, lang: str) -> None:
    runner = CliRunner()
    stored = runner.invoke(main, ["recommend", "--playbook", str(POLICY), "--input", str(cases), "--db", db_url])
    assert stored.exit_code == 0, stored.output
    # in its own process, as a user runs it: the command leaves its connection to the process's end
    why = [sys.executable, "cli.py", "why", "1", "--db", db_url, "--lang", lang]
    out = subprocess.run(why, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    policy = "公司规定" if lang == "zh" else "company policy"
    assert "[G-09 「大项目」]" in out  # the table's course entry
    assert f"[{policy} SP-2026-03" in out  # the row's and the action's policy
    assert f"[{policy} BOARD-7" in out  # the rule's


def test_every_quote_of_the_course_playbook_is_in_the_course() -> None:
    if not COURSE_TEXT.is_file():
        pytest.skip(f"{COURSE_TEXT} is absent (../shared)")
    out = CliRunner().invoke(main, ["check", "--course", str(COURSE_TEXT), str(COURSE)])
    assert out.exit_code == 0, out.output


def _one_table(source: str) -> str:
    return f"""
playbook: {{id: t, version: "1", languages: [en], title: {{en: t}}}}
inputs:
  opportunity.weeks: {{type: number, label: {{en: weeks}}}}
decisions:
  layer:
    label: {{en: layer}}
    source: {source}
    output: true
    values: [any]
    value_labels: {{any: {{en: any}}}}
    rows:
      - {{id: any, label: {{en: any}}, then: any}}
"""


def test_quotes_are_compared_whitespace_aside_and_policies_not_at_all() -> None:
    course = "第一课\n漏斗的表层：\n  大于10周的单子。\n"
    split = load_playbook_text(_one_table('{guide: G-17, quote: "漏斗的表层：大于 10 周"}'), "t.yaml")
    assert quotes_not_in_course(split, course, "course.txt") == []
    policy = load_playbook_text(_one_table('{policy: SP-1, text: "不在课程里的话"}'), "t.yaml")
    assert quotes_not_in_course(policy, course, "course.txt") == []
    wrong = load_playbook_text(_one_table('{guide: G-17, quote: "漏斗的底层"}'), "t.yaml")
    (problem,) = quotes_not_in_course(wrong, course, "course.txt")
    assert (str(problem.location), problem.code) == ("t.yaml:8:34", "quote_not_in_course")
    assert "漏斗的底层" in problem.message and "course.txt" in problem.message
    assert problem.message.endswith("(closest in the course: 「漏斗的表层」)")  # what the editor likely meant
    dropped = load_playbook_text(_one_table('{guide: G-17, quote: "大于10的单子"}'), "t.yaml")
    assert quotes_not_in_course(dropped, course, "c")[0].message.endswith("「大于10周的单子」)")
    unlike = load_playbook_text(_one_table('{guide: G-17, quote: "完全不同的一句话"}'), "t.yaml")
    assert "closest" not in quotes_not_in_course(unlike, course, "c")[0].message


def test_check_json_lists_each_problem_located_for_ci(tmp_path: Path) -> None:
    playbook = tmp_path / "t.yaml"
    playbook.write_text(_one_table('{guide: G-17, quote: "x", policy: SP-1}'), encoding="utf-8")
    out = CliRunner().invoke(main, ["check", "--format", "json", str(playbook), str(POLICY)])
    assert out.exit_code == 1
    report = json.loads(out.stdout)
    assert report["ok"] is False and report["playbooks"] == [str(playbook), str(POLICY)]
    (problem,) = report["problems"]
    assert problem == {
        "file": str(playbook),
        "line": 8,
        "col": 39,
        "code": "source_mixed",
        "message": "decisions.layer.source mixes guide+quote and policy: it is either guide + quote or policy + text, "
        "not both",
    }
    clean = CliRunner().invoke(main, ["check", "--format", "json", str(POLICY)])
    assert clean.exit_code == 0 and json.loads(clean.stdout) == {"ok": True, "playbooks": [str(POLICY)], "problems": []}
