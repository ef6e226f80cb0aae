"""The public surface: `import engine` stays light, the library never prints."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_import_engine_does_not_import_storage_or_adapters() -> None:
    code = (
        "import sys, engine; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'adapters', 'click')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_library_code_never_prints_or_exits() -> None:
    for folder in ("engine", "adapters"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            assert "print(" not in text, path
            assert "sys.exit" not in text, path


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    command = next(line for line in readme.splitlines() if line.startswith("python3 -m pip install -e '.[test]'"))
    assert command in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
