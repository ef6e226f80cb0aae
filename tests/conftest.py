from __future__ import annotations

import datetime as dt
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import CompiledPlaybook, Evaluator, Playbook, compile_playbook, load_playbook

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
AS_OF = dt.date(2026, 11, 27)


@pytest.fixture(scope="session", autouse=True)
def playbook_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The commands' cache of built playbooks in a directory of this session's own, never the user's."""
    directory = tmp_path_factory.mktemp("playbook-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PLAYBOOK_CACHE", str(directory))
        yield directory


@pytest.fixture(scope="session")
def pipeline() -> Playbook:
    return load_playbook(FIXTURES / "pipeline.yaml")


@pytest.fixture(scope="session")
def compiled(pipeline: Playbook) -> Iterator[CompiledPlaybook]:
    with compile_playbook(pipeline) as compiled:
        yield compiled


@pytest.fixture
def evaluator(compiled: CompiledPlaybook) -> Evaluator:
    return Evaluator(compiled)


# -- databases: SQLite files, and a real PostgreSQL server started for the session ----------------


def _pg_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server on loopback for this test session; its base URL (without a database)."""
    initdb, pg_ctl = _pg_binary("initdb"), _pg_binary("pg_ctl")
    if not (initdb and pg_ctl):
        if os.environ.get("PLAYBOOK_REQUIRE_POSTGRES"):
            pytest.fail("PostgreSQL is required (PLAYBOOK_REQUIRE_POSTGRES) but initdb/pg_ctl are not installed")
        pytest.skip("PostgreSQL is not installed here (no initdb/pg_ctl); .ci/run installs it")
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    data = tempfile.mkdtemp(prefix="playbook-pg-")
    if as_postgres:
        shutil.chown(data, "postgres")
    port = _free_port()
    subprocess.run(
        [*as_postgres, initdb, "-D", data, "-A", "trust", "-U", "postgres", "--no-sync"],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        [*as_postgres, pg_ctl, "-D", data, "-o", options, "-w", "-l", f"{data}/log", "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run([*as_postgres, pg_ctl, "-D", data, "-m", "immediate", "stop"], check=False, capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.db'}"
    base = request.getfixturevalue("postgres_server")
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base.replace("postgresql+psycopg", "postgresql") + "/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # a generated name, not user input
    return f"{base}/{name}"
