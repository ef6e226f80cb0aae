"""The corpus of broken playbooks: each is reported by `playbook check` at its place, with its code."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cli import main
from tests.conftest import FIXTURES, ROOT

CASES = sorted((Path(__file__).parent / "cases" / "check").glob("*.yaml"))


def test_the_corpus_covers_at_least_fifteen_kinds() -> None:
    kinds = {yaml.safe_load(p.read_text(encoding="utf-8"))["want_error_code"] for p in CASES}
    assert len(kinds) >= 15


@pytest.mark.parametrize("case_file", CASES, ids=[p.stem for p in CASES])
def test_broken_playbook_is_located(case_file: Path, tmp_path: Path) -> None:
    case = yaml.safe_load(case_file.read_text(encoding="utf-8"))
    playbook = tmp_path / "playbook.yaml"
    playbook.write_text(case["playbook"], encoding="utf-8")
    result = CliRunner().invoke(main, ["check", str(playbook)])
    assert result.exit_code == 1, case["note"]
    wanted = f"{playbook}:{case['want_location']}: {case['want_error_code']}: "
    assert any(line.startswith(wanted) for line in result.output.splitlines()), (case["note"], result.output)


@pytest.mark.parametrize("path", [FIXTURES / "pipeline.yaml", ROOT / "playbooks" / "course.yaml"])
def test_valid_playbooks_pass(path: Path) -> None:
    result = CliRunner().invoke(main, ["check", str(path)])
    assert result.exit_code == 0, result.output
