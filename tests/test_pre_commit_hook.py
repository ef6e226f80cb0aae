"""The pre-commit hook a company adds to check its playbooks on every commit (.pre-commit-hooks.yaml)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT

HOOKS = ROOT / ".pre-commit-hooks.yaml"


def _hook() -> dict[str, Any]:
    hooks = yaml.safe_load(HOOKS.read_text(encoding="utf-8"))
    (hook,) = [h for h in hooks if h["id"] == "playbook-check"]
    return dict(hook)


def _run_as_pre_commit(hook: dict[str, Any], files: list[str]) -> subprocess.CompletedProcess[str]:
    """As pre-commit runs a hook: its entry, its args, then the files; ``playbook`` is this checkout's cli.py."""
    command, *words = shlex.split(hook["entry"])
    assert command == "playbook"
    return subprocess.run(
        [sys.executable, "cli.py", *words, *hook.get("args", []), *files],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )


def test_the_hook_is_a_valid_pre_commit_manifest_entry() -> None:
    hook = _hook()
    assert {"id", "name", "entry", "language"} <= set(hook)
    assert hook["language"] == "python"  # pre-commit installs this repository with pip, which gives `playbook`
    assert "yaml" in hook["types"]


def test_the_hook_takes_the_playbooks_and_not_their_tests() -> None:
    files = re.compile(_hook()["files"])
    assert files.search("playbooks/course.yaml")
    assert not files.search("playbooks/tests/course/g17_funnel.yaml")
    assert not files.search("adapters/presets/maven.yaml")


def test_the_hook_passes_a_valid_playbook_and_stops_a_broken_one(tmp_path: Path) -> None:
    hook = _hook()
    assert _run_as_pre_commit(hook, ["playbooks/course.yaml"]).returncode == 0
    broken = tmp_path / "broken.yaml"
    broken.write_text((ROOT / "playbooks" / "course.yaml").read_text("utf-8").replace("rules:", "rulez:", 1), "utf-8")
    stopped = _run_as_pre_commit(hook, ["playbooks/course.yaml", str(broken)])
    assert stopped.returncode == 1
    assert stopped.stdout.startswith(f"{broken}:") and "unknown key 'rulez'" in stopped.stdout.splitlines()[0]
