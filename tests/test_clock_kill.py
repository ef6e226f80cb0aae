"""``kill -9`` of ``playbook tick`` and of ``playbook serve`` with its clock at random moments, 25 times each,
then a run to the end: the log holds exactly what one uninterrupted run makes (no task lost or doubled, no
evaluation either) and ``audit verify`` is clean.  On SQLite and PostgreSQL.

The deals are the benchmark's generated ones (bench/cases.py, seeded), their dates moved so that they are
imported 40 days before today (the service's clock ticks today) and many decision dates pass meanwhile.
The uninterrupted run, made in this process on a SQLite file, is the reference for both databases.  The
course playbook is run as the half-year simulation runs it (tests/test_tasks_simulation.py): undone battle
work escalates to the director too, so that escalations happen among these deals.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from engine.clock import tick
from engine.compile import compile_playbook
from engine.evaluate import Evaluator
from engine.store import Appended, Store
from engine.validate import load_playbook
from tests.conftest import ROOT

COURSE = ROOT / "playbooks" / "course.yaml"
DEALS = 120  # about 400 tasks, with their occurrences and escalations
SPAN = 40  # days from the import to today
KILLS = 25
TODAY = dt.date.today()
START = TODAY - dt.timedelta(days=SPAN)


def deals() -> Iterator[tuple[str, dict[str, Any]]]:
    """The generated deals, their dates as if generated on START; some entered their stage weeks before."""
    from bench.cases import AS_OF, generate

    shift = START - AS_OF
    rng = random.Random(7)
    for case_id, facts in generate(DEALS, seed=3):
        opportunity = facts["opportunity"]
        if "close_date" in opportunity:
            opportunity["close_date"] = (dt.date.fromisoformat(opportunity["close_date"]) + shift).isoformat()
        if rng.random() < 0.5:
            opportunity["stage_entered_date"] = (START - dt.timedelta(days=rng.randint(0, 80))).isoformat()
        yield case_id, facts


@pytest.fixture(scope="module")
def escalating(tmp_path_factory: pytest.TempPathFactory) -> Path:
    battle = "    every: {param: battle_follow_up_every}\n"
    escalates = battle + "    escalate_after: {after: 1 week, to: director, action: director_steps_in}\n"
    path = tmp_path_factory.mktemp("playbook") / "course.yaml"
    path.write_text(COURSE.read_text(encoding="utf-8").replace(battle, escalates), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def course(escalating: Path) -> Iterator[tuple[Any, Evaluator]]:
    playbook = load_playbook(escalating)
    work = playbook.actions["fight_siege"].work
    assert work is not None and work.escalate is not None
    with compile_playbook(playbook) as compiled:
        yield playbook, Evaluator(compiled)


def imported(url: str, course: tuple[Any, Evaluator]) -> Store:
    """The deals filed on START and the clock started there."""
    playbook, evaluator = course
    store = Store(url)
    items = [Appended(evaluator.evaluate_case(facts, START, case_id), facts) for case_id, facts in deals()]
    store.append(playbook, items, source="crm", as_of=START)
    tick(store, evaluator, START)
    return store


def contents(store: Store) -> dict[str, list[Any]]:
    """What the log holds, but the wall-clock times (and the hashes, which seal them)."""
    queries = {
        "evaluations": "SELECT seq, as_of, source, case_id, record_id, decisions, fired FROM evaluations ORDER BY seq",
        "recommendations": "SELECT * FROM recommendations ORDER BY evaluation_seq, position",
        "tasks": "SELECT * FROM tasks ORDER BY id",
        "task_events": "SELECT seq, task_id, status, who, why, as_of, state FROM task_events ORDER BY seq",
        "heads": "SELECT chain, seq FROM chain_head ORDER BY chain",
        "clock": "SELECT timer, fired_as_of FROM clock_timers",
    }
    with store.engine.connect() as conn:
        return {name: [tuple(row) for row in conn.execute(text(query))] for name, query in queries.items()}


@pytest.fixture(scope="module")
def reference(course: tuple[Any, Evaluator], tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Any]]:
    """One uninterrupted run from START to today."""
    store = imported(f"sqlite:///{tmp_path_factory.mktemp('reference') / 'audit.db'}", course)
    report = tick(store, course[1], TODAY)
    assert len(report.days) == SPAN and report.reevaluated and report.overdue and report.escalated and report.repeated
    held = contents(store)
    store.close()
    return held


def killed_at_random(command: list[str], rng: random.Random, env: dict[str, str]) -> bool:
    """Run ``command`` and SIGKILL it at a random moment: half the time a random delay after its start
    (while it starts or mid-way through its first day), else just after it says a day was committed (mid-way
    through the next); whether it was killed before it ended by itself.  Moments taken from the run's own
    progress, not a fixed window: a fast machine would finish before a fixed one."""
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    watchdog = threading.Timer(120, process.kill)  # a run that never says a day is done is not waited for
    watchdog.start()
    assert process.stderr is not None
    try:
        if rng.random() < 0.5:
            process.wait(timeout=rng.uniform(0.2, 1.5))
        else:
            for line in process.stderr:
                if b": ticked" in line:
                    time.sleep(rng.uniform(0, 0.15))
                    break
    except subprocess.TimeoutExpired:
        pass
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    process.stderr.close()
    watchdog.cancel()
    return process.returncode == -signal.SIGKILL


def fired(url: str) -> str | None:
    with Store(url, create=False) as store, store.engine.connect() as conn:
        return conn.execute(text("SELECT fired_as_of FROM clock_timers WHERE timer = 'tick'")).scalar()


def test_kill_9_of_tick_at_random_moments_loses_and_doubles_nothing(
    db_url: str, course: Any, reference: dict[str, list[Any]], escalating: Path
) -> None:
    imported(db_url, course).close()
    rng = random.Random(15)
    killed = 0
    command = [sys.executable, "cli.py", "tick", "--db", db_url, "--playbook", str(escalating), "--as-of", str(TODAY)]
    for _ in range(KILLS):
        killed += killed_at_random(command, rng, dict(os.environ))
    assert killed >= KILLS // 2, f"only {killed} of {KILLS} runs were killed: the kills came too late to test much"
    rerun = subprocess.run(
        [sys.executable, "cli.py", "tick", "--db", db_url, "--playbook", str(escalating), "--as-of", str(TODAY)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr
    with Store(db_url) as store:
        assert contents(store) == reference
        assert store.verify() == []
    verify = subprocess.run(
        [sys.executable, "cli.py", "audit", "verify", "--db", db_url], cwd=ROOT, capture_output=True, timeout=300
    )
    assert verify.returncode == 0, verify.stdout


def test_kill_9_of_serve_and_its_clock_at_random_moments_loses_and_doubles_nothing(
    db_url: str, course: Any, reference: dict[str, list[Any]], escalating: Path
) -> None:
    imported(db_url, course).close()
    env = {**os.environ, "PLAYBOOK_WEBHOOK_SECRET": "kill-test-secret"}
    command = [sys.executable, "cli.py", "serve", "--db", db_url, "--playbook", str(escalating), "--port", "0"]
    command += ["--clock-every", "0.2"]
    rng = random.Random(16)
    days_done = []
    for _ in range(KILLS):
        # killed a moment after its clock logs a day ticked (mid-way through the days) or it serves (caught up)
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        watchdog = threading.Timer(120, process.kill)  # a service that never says either is not waited for
        watchdog.start()
        assert process.stderr is not None
        for line in process.stderr:
            if b"clock: ticked" in line or b"Uvicorn running" in line:
                time.sleep(rng.uniform(0, 0.5))
                break
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        process.stderr.close()
        watchdog.cancel()
        days_done.append(fired(db_url))
    assert days_done[0] != TODAY.isoformat(), "the first service caught up before it was killed: nothing was tested"
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while fired(db_url) != TODAY.isoformat():
            assert process.poll() is None, process.communicate()[1].decode()
            assert time.monotonic() < deadline, "the service's clock did not reach today"
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGKILL)  # the day is done: a kill now changes nothing either
        process.communicate(timeout=30)
    with Store(db_url) as store:
        assert contents(store) == reference
        assert store.verify() == []
