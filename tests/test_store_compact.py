"""The compact log of schema version 11: a log written by the code of version 10 (tests/fixtures/v10-log*.sqlite.gz,
made by tests/story_log.py), migrated, answers why, history, list, replay and audit verify as a log that
the same story was told to now; and every link it held still verifies."""

from __future__ import annotations

import gzip
import shutil
import sqlite3
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Boolean, create_engine, delete, insert, update

from cli import main
from engine.store import Store
from engine.store.schema import _TABLES_BY_VERSION, MIGRATIONS, SCHEMA_VERSION, chain_head, meta
from tests.conftest import FIXTURES
from tests.story_log import COURSE, KEY, tell

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def _database(db_url: str, tmp_path: Path, name: str) -> str:
    """Another empty database of the kind of ``db_url``."""
    if db_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / name}"
    import psycopg

    base, database = db_url.rsplit("/", 1)[0], f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base.replace("postgresql+psycopg", "postgresql") + "/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')  # a generated name, not user input
    return f"{base}/{database}"


def v10_log(fixture: str, url: str, tmp_path: Path) -> None:
    """The fixture's version 10 log at ``url``: the file itself on SQLite; on PostgreSQL the schema of
    version 10 made by its migrations, and every row copied."""
    unpacked = tmp_path / fixture.removesuffix(".gz")
    with gzip.open(FIXTURES / fixture, "rb") as packed, unpacked.open("wb") as raw:
        shutil.copyfileobj(packed, raw)
    if url.startswith("sqlite"):
        shutil.copyfile(unpacked, url.removeprefix("sqlite:///"))
        return
    source = sqlite3.connect(unpacked)
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for version in range(1, 11):
                MIGRATIONS[version](conn)
            conn.execute(delete(chain_head))
            conn.execute(delete(meta))
            for version in range(1, 11):
                for table in _TABLES_BY_VERSION[version]:
                    if table.name == "clock_timers":
                        conn.execute(delete(table))
                    names = [c.name for c in table.columns]
                    flags = [isinstance(c.type, Boolean) for c in table.columns]
                    rows = [
                        {
                            n: (bool(v) if flag and v is not None else v)
                            for n, v, flag in zip(names, row, flags, strict=True)
                        }
                        for row in source.execute(f"SELECT {', '.join(names)} FROM {table.name}")  # noqa: S608 (our names)
                    ]
                    if rows:
                        conn.execute(insert(table), rows)
            conn.execute(update(meta).where(meta.c.key == "schema_version").values(value="10"))
    finally:
        engine.dispose()
        source.close()


def _run(*args: str, key: bytes | None = None) -> str:
    env = {"PLAYBOOK_AUDIT_KEY": key.decode()} if key else {}
    result = CliRunner().invoke(main, list(args), env=env)
    assert result.exit_code in (0, 1) and "Traceback" not in result.output, (args, result.output)
    return f"exit {result.exit_code}\n{result.output}"


def _answers(url: str, key: bytes | None, tmp_path: Path) -> dict[str, str]:
    """What the commands say of the log at ``url``."""
    changed = tmp_path / "changed.yaml"
    changed.write_text(
        COURSE.read_text(encoding="utf-8").replace(
            "  high_win_rate:\n    value: 60\n", "  high_win_rate:\n    value: 80\n"
        ),
        encoding="utf-8",
    )
    answers = {f"why {seq}": _run("why", str(seq), "--db", url) for seq in (1, 2, 7, 42, 43, 44, 45, 46, 60, 89)}
    for record in ("opp-001", "opp-007", "42"):
        answers[f"history {record}"] = _run("history", record, "--format", "json", "--db", url)
    filters = [[], ["--action", "wait_and_watch"], ["--rule", "battle_positional"], ["--rule", "verify_win_rate"]]
    filters += [["--account", "acc-103"], ["--since", "2026-12-01"], ["--until", "2026-11-30", "--limit", "5"]]
    for wanted in filters:
        answers[f"list {wanted}"] = _run("list", *wanted, "--format", "json", "--db", url)
    for how in ([], ["--all"]):
        answers[f"replay {how}"] = _run("replay", "--playbook", str(changed), *how, "--format", "json", "--db", url)
    answers["verify"] = _run("audit", "verify", "--db", url)
    answers["verify with the key"] = _run("audit", "verify", "--db", url, key=key) if key else ""
    return answers


@pytest.mark.parametrize("fixture", ["v10-log.sqlite.gz", "v10-log-keyed.sqlite.gz"])
def test_a_log_of_version_10_migrated_answers_as_one_written_now(fixture: str, db_url: str, tmp_path: Path) -> None:
    key = KEY if "keyed" in fixture else None
    v10_log(fixture, db_url, tmp_path)
    with Store(db_url, key=key) as migrated:  # opened: migrated to the version of this code
        assert migrated.schema_version() == SCHEMA_VERSION
        assert migrated.verify() == []
        heads = migrated.head()
    fresh = _database(db_url, tmp_path, "fresh.db")
    tell(fresh, key)
    with Store(fresh, key=key) as told:
        assert told.head() == heads  # the same links: every entry's hash as version 10 made it
    old, new = _answers(db_url, key, tmp_path), _answers(fresh, key, tmp_path)
    for question, answer in old.items():
        assert answer == new[question], question
    assert '"evaluation": 43' in old["list []"] and "ok: the chains" in old["verify"]
    assert "ok: the chains verify" in (old["verify with the key"] if key else old["verify"])
    assert old["why 43"].startswith("exit 1\nevaluation 43 is a failed case") and old["why 1"].startswith("exit 0")


def test_a_migrated_log_goes_on_being_written_and_verified(db_url: str, tmp_path: Path) -> None:
    v10_log("v10-log-keyed.sqlite.gz", db_url, tmp_path)
    with Store(db_url, key=KEY) as store:
        store.record_outcome(43 + 3 + 1, "0", "accepted", "li.wei", "after the migration")
        assert store.verify() == []
        assert store.get(89).to_json()["decisions"] == store.get(89).decisions


def test_each_repeated_text_is_stored_once(db_url: str) -> None:
    tell(db_url)
    distinct_texts = (
        "SELECT COUNT(*) FROM (SELECT playbook_hash AS t FROM evaluations UNION SELECT decisions FROM evaluations "
        "UNION SELECT fired FROM evaluations UNION SELECT error FROM evaluations "
        "UNION SELECT action FROM recommendations UNION SELECT rule FROM recommendations "
        "UNION SELECT params FROM recommendations) AS shown"
    )
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            texts = conn.exec_driver_sql("SELECT COUNT(*) FROM log_texts").scalar_one()
            distinct = conn.exec_driver_sql(distinct_texts).scalar_one()
            rows = conn.exec_driver_sql("SELECT COUNT(*) FROM evaluation_rows").scalar_one()
            advised = conn.exec_driver_sql("SELECT COUNT(*) FROM recommendation_rows").scalar_one()
    finally:
        engine.dispose()
    assert rows == 89 and texts == distinct < (4 * rows + 3 * advised) / 4
