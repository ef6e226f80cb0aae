"""Results a CI system reads: `check --format json`, `test --format json` and `test --junit FILE`."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

from click.testing import CliRunner

from cli import main
from tests.conftest import FIXTURES

PIPELINE = str(FIXTURES / "pipeline.yaml")


def _failing_tests(tmp_path: Path) -> Path:
    """The pipeline's tests with one expectation wrong and the last test dropped (coverage under 100)."""
    folder = tmp_path / "tests"
    shutil.copytree(FIXTURES / "tests" / "pipeline", folder)
    path = folder / "basics.yaml"
    text = path.read_text(encoding="utf-8").replace("progress: 80,", "progress: 60,")
    path.write_text(text[: text.index("  - name: far away")], encoding="utf-8")
    return folder


def test_test_json_has_each_test_its_differences_and_the_coverage(tmp_path: Path) -> None:
    folder = _failing_tests(tmp_path)
    result = CliRunner().invoke(
        main, ["test", PIPELINE, "--tests", str(folder), "--format", "json", "--min-coverage", "100"]
    )
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert (report["ok"], report["passed"], report["failed"]) == (False, 1, 1)
    failed = next(t for t in report["tests"] if not t["passed"])
    assert failed["name"] == "a hot deal at the bottom of the funnel is pushed"
    assert (failed["file"], failed["line"]) == (str(folder / "basics.yaml"), 2)
    assert failed["differences"] == ["decisions.progress: expected 60, got 80"]
    coverage = report["coverage"]
    assert coverage["under_min"] is True and coverage["min"] == 100 and coverage["total"] == 19
    assert "funnel_layer.surface" in coverage["not_reached"]


def test_test_json_passes_with_exit_0() -> None:
    result = CliRunner().invoke(main, ["test", PIPELINE, "--format", "json", "--min-coverage", "100"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["coverage"]["percent"] == 100.0 and report["passed"] == 5


def test_junit_xml_is_a_report_a_ci_system_reads(tmp_path: Path) -> None:
    folder, junit = _failing_tests(tmp_path), tmp_path / "junit.xml"
    result = CliRunner().invoke(
        main, ["test", PIPELINE, "--tests", str(folder), "--junit", str(junit), "--min-coverage", "100"]
    )
    assert result.exit_code == 1
    assert "1 passed, 1 failed" in result.stdout  # the text report as well
    root = ET.parse(junit).getroot()  # noqa: S314 - the file this test just had written
    assert root.tag == "testsuites" and (root.get("tests"), root.get("failures")) == ("3", "2")
    suite = root.find(f"testsuite[@name='{folder / 'basics.yaml'}']")
    assert suite is not None and (suite.get("tests"), suite.get("failures")) == ("2", "1")
    failure = suite.find("testcase[@name='a hot deal at the bottom of the funnel is pushed']/failure")
    assert failure is not None and failure.get("message") == "decisions.progress: expected 60, got 80"
    coverage = root.find("testsuite[@name='coverage']/testcase/failure")
    assert coverage is not None and "funnel_layer.surface" in (coverage.text or "")


def test_junit_reports_test_files_that_cannot_be_read_as_errors(tmp_path: Path) -> None:
    folder, junit = tmp_path / "tests", tmp_path / "junit.xml"
    folder.mkdir()
    (folder / "bad.yaml").write_text(
        "tests:\n  - name: x\n    facts: {}\n    expect: {decisions: {funnel_layr: surface}}\n"
    )
    result = CliRunner().invoke(main, ["test", PIPELINE, "--tests", str(folder), "--junit", str(junit)])
    assert result.exit_code == 1
    root = ET.parse(junit).getroot()  # noqa: S314 - the file this test just had written
    assert root.get("errors") == "1"
    error = root.find("testsuite/testcase/error")
    assert error is not None and error.get("type") == "unknown_decision"
    assert "did you mean 'funnel_layer'" in (error.get("message") or "")
