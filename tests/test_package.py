"""The public surface: `import engine` stays light, the library never prints."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

from tests.conftest import ROOT


def _loaded_by(statement: str, packages: tuple[str, ...]) -> list[str]:
    """The modules of ``packages`` (packages or modules, with what is inside them) that running
    ``statement`` in a fresh interpreter imports."""
    inside = f"any(m == p or m.startswith(p + '.') for p in {packages!r})"
    code = f"import json, sys; {statement}; print(json.dumps(sorted(m for m in sys.modules if {inside})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return list(json.loads(out.stdout.splitlines()[-1]))  # after what the statement printed


def _loaded_by_command(args: list[str], packages: tuple[str, ...]) -> list[str]:
    """The modules of ``packages`` that a command of this checkout's CLI imports, run in a fresh interpreter."""
    return _loaded_by(f"import cli; cli.main({args!r}, standalone_mode=False)", packages)


def test_import_engine_does_not_import_storage_or_adapters() -> None:
    assert _loaded_by("import engine", ("sqlalchemy", "adapters", "click")) == []


def test_import_engine_imports_no_stage_until_one_is_used() -> None:
    """``import engine`` costs nothing; a name is imported with its stage when first used."""
    heavy = ("jsonschema", "yaml", "durable", "durable_rules_engine", "sqlalchemy")
    assert _loaded_by("import engine", heavy) == []
    loaded = _loaded_by("from engine import Playbook, PlaybookError", heavy)
    assert loaded == []  # the model and the errors need no parser, validator or rules engine
    assert "durable" in _loaded_by("from engine import Evaluator", ("durable",))


def test_the_webhook_parser_does_not_import_the_store_or_the_rules_engine() -> None:
    """The service's parsing of events is light: the store and durable-rules come with what uses them."""
    heavy = ("sqlalchemy", "durable", "durable_rules_engine", "jsonschema")
    assert _loaded_by("import adapters.webhook", heavy) == []


def test_check_and_recommend_without_the_store_import_no_storage() -> None:
    """Start-up: with the playbook cached, ``check`` and ``recommend --no-store`` on JSON Lines read
    no YAML, run no schema check and import no SQLAlchemy; nor, without ``--groups``, the portfolio."""
    course = str(ROOT / "playbooks" / "course.yaml")
    cases = str(ROOT / "samples" / "cases.jsonl")
    heavy = ("sqlalchemy", "psycopg", "yaml", "jsonschema", "engine.validate", "engine.store", "engine.portfolio")
    recommend = ["recommend", "--playbook", course, "--input", cases, "--as-of", "2026-11-27", "--no-store"]
    for command in (["check", course], recommend):
        _loaded_by_command(command, ())  # the playbook built and cached, if it was not already
        assert _loaded_by_command(command, heavy) == [], command


def test_a_sqlite_audit_log_never_imports_postgresql(tmp_path: Path) -> None:
    """``recommend`` and ``why`` on a SQLite log import neither the PostgreSQL dialect nor its driver, nor the
    CRM database reader; ``why`` reads its playbook version from the cache (no YAML, no schema check) and
    imports no adapter."""
    db = f"sqlite:///{tmp_path / 'audit.db'}"
    cases = str(ROOT / "samples" / "cases.jsonl")
    postgresql = ("sqlalchemy.dialects.postgresql", "psycopg", "psycopg2", "asyncpg")
    recommend = ["recommend", "--input", cases, "--as-of", "2026-11-27", "--db", db]
    assert _loaded_by_command(recommend, (*postgresql, "adapters.sql_source")) == []
    why = ["why", "1", "--db", db]
    _loaded_by_command(why, ())  # the stored version built and cached
    assert _loaded_by_command(why, (*postgresql, "yaml", "jsonschema", "engine.validate", "adapters")) == []


def test_a_sqlite_audit_log_imports_sqlalchemy_core_and_the_sqlite_dialect_only(tmp_path: Path) -> None:
    """Start-up: ``recommend`` and ``why`` on a SQLite log import SQLAlchemy's Core (the floor of a command
    that opens the log) and its SQLite dialect, and nothing more of it: no ORM (``import sqlalchemy.orm``
    costs half as much again as the Core), no extension, no other dialect."""
    db = f"sqlite:///{tmp_path / 'audit.db'}"
    cases = str(ROOT / "samples" / "cases.jsonl")
    commands = [["recommend", "--input", cases, "--as-of", "2026-11-27", "--db", db], ["why", "1", "--db", db]]
    for command in commands:
        loaded = _loaded_by_command(command, ("sqlalchemy.orm", "sqlalchemy.ext", "sqlalchemy.dialects"))
        others = [m for m in loaded if m not in ("sqlalchemy.dialects", "sqlalchemy.dialects._typing")]
        assert "sqlalchemy.dialects.sqlite" in others, command
        assert [m for m in others if not m.startswith("sqlalchemy.dialects.sqlite")] == [], command


def test_opening_a_sqlite_log_reads_its_catalog_in_one_statement(tmp_path: Path) -> None:
    """Start-up: the check of the schema on opening a log asks SQLite's catalog for every table's columns
    at once, not once per table as SQLAlchemy's inspector does (16 statements, each column's type parsed)."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from engine.store import Store

    url = f"sqlite:///{tmp_path / 'audit.db'}"
    Store(url).close()
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        statements.append(statement)

    event.listen(Engine, "before_cursor_execute", seen)
    try:
        Store(url, create=False).close()
    finally:
        event.remove(Engine, "before_cursor_execute", seen)
    assert [s for s in statements if "table_xinfo" in s] == [s for s in statements if "pragma_table_xinfo(CASE" in s]
    assert len([s for s in statements if "table_xinfo" in s]) == 1


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


SHIPPED = ("pyproject.toml", "README.md", "cli.py", "engine", "adapters", "schemas", "playbooks")


def test_the_wheel_ships_what_the_code_reads_at_run_time(tmp_path: Path) -> None:
    """Built as a user gets it and run from nowhere near the checkout: the schemas, the course playbook
    (the default --playbook) and the mapping presets come with it."""
    source = tmp_path / "source"
    source.mkdir()
    for name in SHIPPED:  # a copy: building writes build/ and *.egg-info beside the sources
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, source / name)
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)]
    subprocess.run([*build, str(source)], capture_output=True, text=True, check=True)
    (wheel,) = tmp_path.glob("sales_playbook-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    cases = tmp_path / "cases.jsonl"
    cases.write_text((ROOT / "samples" / "cases.jsonl").read_text(encoding="utf-8").splitlines()[0] + "\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    run = [sys.executable, "-c", "import sys, cli; sys.argv[0] = 'playbook'; cli.main()"]
    recommend = [*run, "recommend", "--input", str(cases), "--as-of", "2026-11-27", "--no-store", "--format", "json"]
    out = subprocess.run(recommend, capture_output=True, text=True, cwd=tmp_path, env=env, check=True)
    assert json.loads(out.stdout)["playbook"]["id"] == "course"  # the default playbook, checked by its schema
    code = "import engine, adapters.mapping as m; print(engine.__file__); m.load_mapping('maven')"
    where = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, check=True
    )
    assert where.stdout.strip() == str(site / "engine" / "__init__.py")  # the wheel's code ran, not the checkout's
