"""`playbook test`: expected against actual, coverage, and located errors in test files."""

from __future__ import annotations

import shutil
from pathlib import Path

from click.testing import CliRunner

from cli import main
from tests.conftest import FIXTURES

PIPELINE = str(FIXTURES / "pipeline.yaml")


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def copy_tests(tmp_path: Path) -> Path:
    folder = tmp_path / "tests"
    shutil.copytree(FIXTURES / "tests" / "pipeline", folder)
    return folder


def test_passing_tests_with_full_coverage() -> None:
    code, out, _ = invoke("test", PIPELINE, "--min-coverage", "100")
    assert code == 0, out
    assert "5 passed, 0 failed" in out
    assert "coverage: 100.0% of rows and rules (19/19)" in out


def test_a_failure_shows_expected_against_actual(tmp_path: Path) -> None:
    folder = copy_tests(tmp_path)
    path = folder / "basics.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("progress: 80,", "progress: 60,"), encoding="utf-8")
    code, out, _ = invoke("test", PIPELINE, "--tests", str(folder))
    assert code == 1
    assert f"FAIL {path}:2:5 a hot deal at the bottom of the funnel is pushed" in out
    assert "decisions.progress: expected 60, got 80" in out
    assert "4 passed, 1 failed" in out


def test_missing_and_unexpected_recommendations_and_reasons(tmp_path: Path) -> None:
    folder = copy_tests(tmp_path)
    path = folder / "basics.yaml"
    text = path.read_text(encoding="utf-8").replace("recommendations: [wait]", "recommendations: [follow_up]")
    path.write_text(text.replace("reasons: [funnel_layer.surface,", "reasons: [funnel_layer.middle,"), encoding="utf-8")
    code, out, _ = invoke("test", PIPELINE, "--tests", str(folder))
    assert code == 1
    assert "recommendations: expected but missing ['follow_up']" in out
    assert "recommendations: not expected ['wait']" in out
    assert "reasons: did not fire ['funnel_layer.middle']" in out


def test_coverage_under_the_minimum_fails_and_names_what_is_not_reached(tmp_path: Path) -> None:
    folder = copy_tests(tmp_path)
    path = folder / "basics.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text[: text.index("  - name: far away")], encoding="utf-8")
    code, out, err = invoke("test", PIPELINE, "--tests", str(folder), "--min-coverage", "100")
    assert code == 1
    assert "2 passed, 0 failed" in out
    assert "not reached by any test: funnel_layer.surface" in out
    assert "is under --min-coverage 100" in err


def test_errors_in_test_files_are_located(tmp_path: Path) -> None:
    folder = copy_tests(tmp_path)
    path = folder / "basics.yaml"
    text = path.read_text(encoding="utf-8").replace(
        "decisions: {funnel_layer: bottom,", "decisions: {funnel_layr: bottom,"
    )
    path.write_text(text.replace("    guide: G-22\n", "    guide: G-22\n    gide: x\n"), encoding="utf-8")
    code, _, err = invoke("test", PIPELINE, "--tests", str(folder))
    assert code == 1
    assert f"{path}:4:5: unknown_key: unknown key 'gide'" in err
    assert f"{path}:10:19: unknown_decision: unknown decision 'funnel_layr' (did you mean 'funnel_layer'?)" in err


def test_a_test_file_whose_tests_are_not_a_list_is_a_located_error(tmp_path: Path) -> None:
    folder = copy_tests(tmp_path)
    for body, said in (("tests:\n", "not nothing"), ("tests: 5\n", "not a number")):
        (folder / "basics.yaml").write_text(body, encoding="utf-8")
        code, _, err = invoke("test", PIPELINE, "--tests", str(folder))
        assert code == 1 and "Traceback" not in err
        assert f"{folder / 'basics.yaml'}:1:" in err and "wrong_type: tests should be array" in err and said in err
