"""cli.py: exit codes, the JSON output's schema, text in both languages, and no case lost through the CLI."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from cli import main
from tests.conftest import FIXTURES, ROOT

PIPELINE = str(FIXTURES / "pipeline.yaml")
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
        "recommend", "--playbook", PIPELINE, "--input", str(cases_file), "--as-of", "2026-11-27", "--format", "json"
    )
    assert code == 0, err
    schema = json.loads((ROOT / "schemas" / "result.schema.json").read_text(encoding="utf-8"))
    lines = [json.loads(line) for line in out.splitlines()]
    for line in lines:
        jsonschema.validate(line, schema)
    assert [line["case"] for line in lines] == ["a", "b"]
    assert lines[0]["recommendations"][0]["label"] == "积极跟进"  # --lang defaults to zh
    assert "2 rows: 2 cases evaluated (2 results, 0 errors)" in err


def test_bad_lines_are_reported_and_the_run_fails(tmp_path: Path) -> None:
    path = tmp_path / "cases.jsonl"
    path.write_text(CASES[0] + "\n{oops\n\n" + '{"opportunity": {"win_rate": 65}}\n', encoding="utf-8")
    code, out, err = invoke("recommend", "--playbook", PIPELINE, "--input", str(path), "--format", "json")
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
    code, out, err = invoke("recommend", "--input", samples, "--as-of", "2026-11-27", "--format", "json", "--db", db)
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
    assert code == 0 and report["evaluated"] == 41 and report["changed"] > 0
    assert "fight_blitz" in report["actions_removed"]


def test_summary_format_prints_only_the_counts_and_stores_everything(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'log.db'}"
    samples = str(ROOT / "samples" / "cases.jsonl")
    code, out, err = invoke("recommend", "--input", samples, "--as-of", "2026-11-27", "--format", "summary", "--db", db)
    assert code == 0 and out == ""
    assert "41 rows: 41 cases evaluated (41 results, 0 errors); stored in" in err
    code, out, _ = invoke("list", "--db", db, "--format", "json")
    assert code == 0 and len(out.splitlines()) == 41


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
