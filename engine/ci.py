"""Playbook test results in the forms CI systems read: a JSON document, and JUnit XML.

JUnit XML is what GitLab, Jenkins, GitHub Actions' test reporters and Azure Pipelines show as a test
report: one ``<testsuite>`` per test file, one ``<testcase>`` per playbook test, a ``<failure>`` with
the differences (expected against actual).  Coverage under ``--min-coverage`` is one more failing
test case, so the report fails exactly when ``playbook test`` does.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from engine.errors import Problem
from engine.testing import TestReport

__all__ = ["problems_junit", "test_report_json", "test_report_junit"]

COVERAGE_CASE = "coverage"


def _coverage(report: TestReport) -> dict[str, Any]:
    return {
        "percent": round(report.coverage, 1),
        "reached": len(report.members) - len(report.not_reached),
        "total": len(report.members),
        "not_reached": list(report.not_reached),
    }


def test_report_json(report: TestReport, min_coverage: float) -> dict[str, Any]:
    """Every test with where it is and what differed, the counts, and the coverage."""
    under = report.coverage < min_coverage
    return {
        "ok": not report.failed and not under,
        "passed": len(report.outcomes) - len(report.failed),
        "failed": len(report.failed),
        "tests": [
            {
                "name": o.test.name,
                "file": o.test.location.file,
                "line": o.test.location.line,
                "passed": o.passed,
                "differences": list(o.differences),
            }
            for o in report.outcomes
        ],
        "coverage": _coverage(report) | {"min": min_coverage, "under_min": under},
    }


def test_report_junit(report: TestReport, min_coverage: float, suite_name: str) -> bytes:
    """The report as a JUnit XML document (UTF-8, with its declaration)."""
    root = ET.Element("testsuites", name=suite_name)
    by_file: dict[str, list[Any]] = {}
    for outcome in report.outcomes:
        by_file.setdefault(outcome.test.location.file, []).append(outcome)
    total = failures = 0
    for file, outcomes in by_file.items():
        failed = sum(not o.passed for o in outcomes)
        suite = ET.SubElement(root, "testsuite", name=file, tests=str(len(outcomes)), failures=str(failed), errors="0")
        for o in outcomes:
            case = ET.SubElement(
                suite, "testcase", name=o.test.name, classname=suite_name, file=file, line=str(o.test.location.line)
            )
            if not o.passed:
                failure = ET.SubElement(case, "failure", message=o.differences[0], type="expectation")
                failure.text = "\n".join(o.differences)
        total, failures = total + len(outcomes), failures + failed
    under = report.coverage < min_coverage
    suite = ET.SubElement(root, "testsuite", name=COVERAGE_CASE, tests="1", failures=str(int(under)), errors="0")
    case = ET.SubElement(suite, "testcase", name=f"coverage ≥ {min_coverage:g}%", classname=suite_name)
    summary = f"{report.coverage:.1f}% of rows and rules reached"
    if under:
        failure = ET.SubElement(case, "failure", message=f"{summary}, under {min_coverage:g}%", type="coverage")
        failure.text = "not reached by any test: " + ", ".join(report.not_reached)
    else:
        ET.SubElement(case, "system-out").text = summary
    root.set("tests", str(total + 1))
    root.set("failures", str(failures + int(under)))
    root.set("errors", "0")
    ET.indent(root)
    written: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return written + b"\n"


def problems_junit(problems: list[Problem], suite_name: str) -> bytes:
    """Tests that could not run (an invalid playbook or test file): one erroring case per problem."""
    root = ET.Element("testsuites", name=suite_name, tests=str(len(problems)), failures="0", errors=str(len(problems)))
    suite = ET.SubElement(root, "testsuite", name=suite_name, tests=str(len(problems)), failures="0")
    suite.set("errors", str(len(problems)))
    for problem in problems:
        case = ET.SubElement(suite, "testcase", name=str(problem.location), classname=suite_name)
        ET.SubElement(case, "error", message=f"{problem.code}: {problem.message}", type=problem.code).text = str(
            problem
        )
    ET.indent(root)
    written: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return written + b"\n"
