"""The corpus of broken playbooks: `playbook check` reports each at its place, with its code, as its first line.

A case names ``want_location`` and ``want_error_code``; ``want_message``, a part of that first line;
``want_at_most_lines``, how many lines the whole output may take (the consequences folded);
``replace: [OLD, NEW]``, put into the playbook what its YAML file cannot hold (a control character);
``with_course: true``, check it against the course text (``--course``; skipped without ../shared).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cli import main
from tests.conftest import FIXTURES, ROOT

CASES = sorted((Path(__file__).parent / "cases" / "check").glob("*.yaml"))
COURSE_TEXT = ROOT.parent / "shared" / "course" / "course-zh.txt"


def test_the_corpus_covers_at_least_fifteen_kinds() -> None:
    kinds = {yaml.safe_load(p.read_text(encoding="utf-8"))["want_error_code"] for p in CASES}
    assert len(kinds) >= 15


@pytest.mark.parametrize("case_file", CASES, ids=[p.stem for p in CASES])
def test_broken_playbook_is_located(case_file: Path, tmp_path: Path) -> None:
    case = yaml.safe_load(case_file.read_text(encoding="utf-8"))
    playbook = tmp_path / "playbook.yaml"
    old, new = case.get("replace", ("", ""))  # a character the case file itself cannot hold
    playbook.write_text(case["playbook"].replace(old, new) if old else case["playbook"], encoding="utf-8")
    course = ["--course", str(COURSE_TEXT)] if case.get("with_course") else []
    if course and not COURSE_TEXT.is_file():
        pytest.skip(f"{COURSE_TEXT} is absent (../shared)")
    result = CliRunner().invoke(main, ["check", *course, str(playbook)])
    assert result.exit_code == 1, case["note"]
    wanted = f"{playbook}:{case['want_location']}: {case['want_error_code']}: "
    first = result.output.splitlines()[0]
    assert first.startswith(wanted), (case["note"], result.output)  # the most fundamental problem comes first
    assert case.get("want_message", "") in first, (case["note"], first)
    assert len(result.output.splitlines()) <= case.get("want_at_most_lines", 50), (case["note"], result.output)


@pytest.mark.parametrize("path", [FIXTURES / "pipeline.yaml", ROOT / "playbooks" / "course.yaml"])
def test_valid_playbooks_pass(path: Path) -> None:
    result = CliRunner().invoke(main, ["check", str(path)])
    assert result.exit_code == 0, result.output


COURSE = ROOT / "playbooks" / "course.yaml"
SECTION_KEYS = ["playbook", "parameters", "inputs", "decisions", "rules", "actions"]
TABLE_KEYS = ["label", "description", "source", "values", "value_labels", "hit_policy", "rows", "type", "output"]


def _misspelt_course(key: str, table: bool, style: str) -> tuple[str, str]:
    """The course playbook with one key misspelt: a section key, or the first table's that has ``key``."""
    text = COURSE.read_text(encoding="utf-8")
    wrong = key[0] + key if style == "doubled" else key[:2] + key[3:]
    if not table:
        return re.sub(rf"^{key}:", f"{wrong}:", text, count=1, flags=re.M), wrong
    start = text.index("\ndecisions:")
    found = re.search(rf"^    {key}:", text[start:], flags=re.M)
    assert found, key
    at = start + found.start()
    return text[:at] + f"    {wrong}:" + text[at + 5 + len(key) :], wrong


@pytest.mark.parametrize(
    ("key", "table", "style"),
    [(k, False, s) for k in SECTION_KEYS for s in ("doubled", "dropped")] + [(k, True, "doubled") for k in TABLE_KEYS],
    ids=[f"{k}-{s}" for k in SECTION_KEYS for s in ("doubled", "dropped")] + [f"table.{k}" for k in TABLE_KEYS],
)
def test_one_misspelt_key_in_the_course_playbook_is_the_first_line(
    key: str, table: bool, style: str, tmp_path: Path
) -> None:
    if not COURSE.is_file():
        pytest.skip("playbooks/course.yaml is absent")
    text, wrong = _misspelt_course(key, table, style)
    playbook = tmp_path / "course.yaml"
    playbook.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(main, ["check", str(playbook)])
    lines = result.output.splitlines()
    assert result.exit_code == 1
    assert f"unknown key '{wrong}'" in lines[0] and f"(did you mean '{key}'?)" in lines[0], result.output
    assert len(lines) <= 3, result.output  # the consequences are folded under it


def test_verbose_shows_what_follows_from_each_problem_indented(tmp_path: Path) -> None:
    case = yaml.safe_load((Path(__file__).parent / "cases" / "check" / "misspelt_section.yaml").read_text("utf-8"))
    playbook = tmp_path / "playbook.yaml"
    playbook.write_text(case["playbook"], encoding="utf-8")
    lines = CliRunner().invoke(main, ["check", "--verbose", str(playbook)]).output.splitlines()
    assert "unknown_key" in lines[0] and lines[0].endswith("… and 1 use of it")
    assert lines[1].startswith(f"    {playbook}:") and "unknown_action: unknown action 'follow_up'" in lines[1]
