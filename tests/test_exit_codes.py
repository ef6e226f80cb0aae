"""Every command's exit code on failure, as the README documents them, with the one line that says why.

0 ok; 1 an invalid playbook, a case in error, a failed run, test or check; 2 usage; ``diff`` 0/1/2
as diff(1).  A CI job or a shell script branches on these, and a person reads the stderr line.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import Failed, main
from tests.conftest import FIXTURES, ROOT

PIPELINE = FIXTURES / "pipeline.yaml"
BROKEN = "playbook:\n  id: x\n  version: [1\n"


def invoke(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exit_code:  # every failure ends through click's exit, never an uncaught exception
        assert isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN, encoding="utf-8")
    return path


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'none.db'}"


def one_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1, text
    return lines[0]


def test_check_exits_1_with_the_problems_on_stdout_and_0_when_valid(broken: Path) -> None:
    code, out, err = invoke("check", broken)
    assert code == 1 and err == ""
    assert one_line(out).startswith(f"{broken}:4:1: yaml_syntax: the '[' opened on line 3 is not closed")
    code, out, err = invoke("check", PIPELINE)
    assert (code, out, one_line(err)) == (0, "", "ok: 1 playbook valid")


def test_a_usage_error_exits_2() -> None:
    code, _, err = invoke("check", "--no-such-option", PIPELINE)
    assert code == 2 and "No such option '--no-such-option'" in err
    code, _, err = invoke("render", ROOT / "no-such-playbook.yaml")
    assert code == 2 and "does not exist" in err


@pytest.mark.parametrize("command", ["render", "recommend", "test"])
def test_an_invalid_playbook_exits_1_with_its_problem_on_stderr(command: str, broken: Path, tmp_path: Path) -> None:
    cases = tmp_path / "cases.jsonl"
    cases.write_text('{"id": "a"}\n', encoding="utf-8")
    args: list[str | Path] = {
        "render": [broken],
        "recommend": ["--playbook", broken, "--input", cases, "--no-store"],
        "test": [broken],
    }[command]
    code, out, err = invoke(command, *args)
    assert code == 1 and out == ""
    assert one_line(err).startswith(f"{broken}:4:1: yaml_syntax: ")


def test_test_without_tests_and_under_its_coverage_exits_1(tmp_path: Path) -> None:
    playbook = tmp_path / "pipeline.yaml"
    shutil.copy(PIPELINE, playbook)
    code, _, err = invoke("test", playbook)
    assert code == 1 and one_line(err) == f"no test files (*.yaml) in {tmp_path / 'tests' / 'pipeline'}"
    folder = tmp_path / "one"
    folder.mkdir()
    heading, first, *_ = (FIXTURES / "tests" / "pipeline" / "basics.yaml").read_text(encoding="utf-8").split("\n  - ")
    (folder / "first.yaml").write_text(f"{heading}\n  - {first}\n", encoding="utf-8")
    code, out, err = invoke("test", PIPELINE, "--tests", folder, "--min-coverage", "100")
    assert code == 1 and "1 passed, 0 failed" in out
    assert one_line(err).startswith("coverage ") and one_line(err).endswith("is under --min-coverage 100")


def test_diff_exits_0_when_equal_1_when_different_2_when_it_cannot_compare(tmp_path: Path, broken: Path) -> None:
    assert invoke("diff", PIPELINE, PIPELINE)[0] == 0
    changed = tmp_path / "changed.yaml"
    changed.write_text(PIPELINE.read_text(encoding="utf-8").replace("value: 60", "value: 70"), encoding="utf-8")
    code, out, err = invoke("diff", PIPELINE, changed)
    assert code == 1 and "high_win_rate" in out and err == ""
    code, out, err = invoke("diff", PIPELINE, broken)
    assert code == 2 and out == "" and one_line(err).startswith(f"{broken}:4:1: yaml_syntax: ")


def test_a_run_with_a_case_in_error_exits_1_after_every_case(tmp_path: Path) -> None:
    cases = tmp_path / "cases.jsonl"
    cases.write_text('{"id": "a", "opportunity": {"win_rate": 80}}\n{oops\n', encoding="utf-8")
    code, out, err = invoke(
        "recommend", "--playbook", PIPELINE, "--input", cases, "--no-store", "--format", "json", "--lang", "en"
    )
    assert code == 1 and len(out.splitlines()) == 2
    assert one_line(err) == "2 rows: 2 cases evaluated (1 results, 1 errors)"


def test_explain_of_a_case_not_in_the_input_exits_1(tmp_path: Path) -> None:
    cases = tmp_path / "cases.jsonl"
    cases.write_text('{"id": "a"}\n', encoding="utf-8")
    code, out, err = invoke("explain", "--playbook", PIPELINE, "--input", cases, "--case", "zzz")
    assert (code, out, one_line(err)) == (1, "", "no case 'zzz' in the input")


@pytest.mark.parametrize(
    "args",
    [
        ["why", "1"],
        ["history", "opp-1"],
        ["list"],
        ["outcome", "1", "call_director", "--status", "done", "--who", "ann"],
        ["audit", "verify"],
        ["replay", "--playbook", str(PIPELINE)],
    ],
    ids=lambda args: args[0] if args[0] != "audit" else "audit verify",
)
def test_a_command_reading_a_missing_audit_log_exits_1(args: list[str], db: str, tmp_path: Path) -> None:
    code, out, err = invoke(*args, "--db", db)
    assert code == 1 and out == "", (out, err)
    assert "there is no audit log" in one_line(err) or "holds no audit log" in one_line(err)
    assert not (tmp_path / "none.db").exists()  # refused, not made


def test_backup_of_a_postgresql_log_exits_1_pointing_at_pg_dump(tmp_path: Path) -> None:
    code, _, err = invoke("backup", tmp_path / "copy.db", "--db", "postgresql://u@localhost/p")
    assert code == 1 and "pg_dump --format=custom" in one_line(err)


def test_serve_with_no_route_enabled_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from adapters.service import SECRET_NAMES

    for name in SECRET_NAMES:
        monkeypatch.delenv(name, raising=False)
    code, _, err = invoke("serve", "--playbook", PIPELINE, "--db", f"sqlite:///{tmp_path / 'audit.db'}")
    assert code == 1 and one_line(err).startswith("no webhook route is enabled: set at least one of ")


def test_failed_prints_its_message_as_it_is_and_nothing_when_it_has_none(capsys: pytest.CaptureFixture[str]) -> None:
    Failed("a.yaml:1:1: yaml_syntax: x").show()
    Failed().show()
    assert capsys.readouterr() == ("", "a.yaml:1:1: yaml_syntax: x\n")
    assert Failed().exit_code == 1 and Failed("", 2).exit_code == 2
