"""engine/store/ and engine/audit.py on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, insert, select, text

from adapters.jsonl import read_cases
from engine import CaseError, Evaluator, compile_playbook, load_playbook, tasks
from engine.audit import ImportItem, StoredMismatch, import_cases, rederive, reevaluate
from engine.explain import why
from engine.replay import live_playbook, replay, replay_changes
from engine.store import (
    CHAINS,
    SCHEMA_VERSION,
    Store,
    console_users,
    evaluation_rows,
    evaluations,
    outcomes,
    playbooks,
    task_events,
)
from engine.store.writer import _decisions_text
from engine.validate import load_playbook_text
from tests.conftest import AS_OF, ROOT
from tests.log_edits import edit_decisions

COURSE = ROOT / "playbooks" / "course.yaml"
SAMPLES = ROOT / "samples" / "cases.jsonl"


@pytest.fixture(scope="module")
def course() -> Any:
    with compile_playbook(load_playbook(COURSE)) as compiled:
        yield compiled


def sample_items(prefix: str = "run") -> list[ImportItem]:
    with SAMPLES.open(encoding="utf-8") as lines:
        return [ImportItem(f"{prefix}:{i}", item) for i, item in enumerate(read_cases(lines), 1)]


def fill(url: str, course: Any, items: list[ImportItem] | None = None) -> Store:
    store = Store(url)
    list(import_cases(store, Evaluator(course), items or sample_items(), AS_OF, source="test", batch=7))
    return store


def test_evaluations_round_trip_with_recommendations_and_no_action(db_url: str, course: Any) -> None:
    items = [
        *sample_items(),
        ImportItem("run:empty", ("empty", {})),
        ImportItem("run:bad", CaseError("line 99", "bad_json", "not JSON")),
    ]
    store = fill(db_url, course, items)
    assert store.count() == len(items)
    first = store.get(1)
    assert first.case_id == "opp-001" and first.status == "ok" and first.record_id == "opp-001"
    assert first.recommendations[0]["id"] == "look_after_fat_sheep"
    assert first.fired["funnel_layer"] == ["bottom"]
    empty = store.get(len(items) - 1)
    assert empty.case_id == "empty" and empty.status == "ok" and empty.facts == {}
    bad = store.get(len(items))
    assert bad.status == "error" and bad.error == {"code": "bad_json", "message": "not JSON"}
    assert store.verify() == []
    store.close()


def test_a_store_given_a_clock_stamps_what_it_writes_with_that_clock_s_time(db_url: str, course: Any) -> None:
    imported_at = dt.datetime(2017, 3, 1, 9, 30, tzinfo=dt.UTC)
    answered_at = dt.datetime(2017, 4, 3, 17, 5, 1, 250, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    clock = [imported_at]
    store = Store(db_url, clock=lambda: clock[0])
    list(import_cases(store, Evaluator(course), sample_items(), AS_OF, source="test", batch=7))
    clock[0] = answered_at
    store.record_outcome(1, store.get(1).recommendations[0]["id"], "accepted", "ann", "on it")
    store.save_user("ann", "manager", ["ann"], "not a real hash")
    moved = tasks.advance(store, AS_OF + dt.timedelta(days=60))
    first, then = "2017-03-01T09:30:00.000000+00:00", "2017-04-03T09:05:01.000250+00:00"  # kept in UTC
    assert store.now() == then
    with store.engine.connect() as conn:
        assert set(conn.execute(select(evaluations.c.created_at)).scalars()) == {first}
        assert set(conn.execute(select(playbooks.c.first_used)).scalars()) == {first}
        assert list(conn.execute(select(outcomes.c.at)).scalars()) == [then]
        assert set(conn.execute(select(console_users.c.created_at)).scalars()) == {then}
        stamps = list(conn.execute(select(task_events.c.at).order_by(task_events.c.seq)).scalars())
    made = len(stamps) - stamps.count(then)
    assert made > 0 and stamps == [first] * made + [then] * (len(stamps) - made)
    assert stamps.count(then) >= 1 + sum(moved.values()) > 1  # the outcome's move, then the clock's
    assert store.verify() == []
    store.close()
    with Store(db_url, clock=lambda: dt.datetime(2017, 3, 1, 9, 30)) as naive, pytest.raises(ValueError, match="zone"):
        naive.record_outcome(1, "0", "done", "ann", "")


def test_decisions_and_fired_rows_are_stored_as_their_own_json_whatever_the_cases_stored_before(
    db_url: str, course: Any
) -> None:
    # the texts are remembered by value: 1, 1.0 and True (and lists of them) are equal in Python, not in JSON
    for values in ({"d": 1}, {"d": True}, {"d": 1.0}, {"d": [1]}, {"d": [True]}, {"d": [[1]]}, {"d": None}):
        assert _decisions_text(values) == json.dumps(values, separators=(",", ":"), ensure_ascii=False)
    store = fill(db_url, course, [*sample_items(), *sample_items("again")])
    evaluator = Evaluator(course)
    for stored in store.search():
        again = evaluator.evaluate_case(stored.facts, AS_OF, stored.case_id)
        assert (stored.decisions, stored.fired) == (again.decisions, again.fired())
    store.close()


def test_a_case_with_nothing_to_do_is_kept_as_no_action(db_url: str, compiled: Any) -> None:
    store = Store(db_url)
    items = [
        ImportItem("k:1", ("quiet", {"account": {"segment": "retail"}})),
        ImportItem("k:2", ("busy", {"opportunity": {"weeks_to_close": 9}})),
    ]
    list(import_cases(store, Evaluator(compiled), items, AS_OF, source="test"))
    quiet, busy = store.get(1), store.get(2)
    assert (quiet.no_action, quiet.recommendations) == (True, [])
    assert busy.no_action is False and [r["id"] for r in busy.recommendations] == ["wait"]
    store.close()


def test_a_replayed_import_or_redelivered_event_stores_nothing_twice(db_url: str, course: Any) -> None:
    store = fill(db_url, course)
    again = list(import_cases(store, Evaluator(course), sample_items(), AS_OF, source="test"))
    assert again == []
    event = [ImportItem(None, ("e", {"opportunity": {"id": "x"}}), event_id="evt-1")] * 3
    assert len(list(import_cases(store, Evaluator(course), event, AS_OF, source="hook"))) == 1
    assert len(list(import_cases(store, Evaluator(course), event, AS_OF, source="hook"))) == 0
    assert store.count() == 42
    assert store.verify() == []
    store.close()


def test_a_batch_with_more_keys_than_one_look_up_list_finds_each_one_stored(db_url: str, course: Any) -> None:
    # 1,200 keys: SQLite looks them up 500 at a time, PostgreSQL as one array; either finds every one
    cases = [(f"r{i}", {"opportunity": {"id": f"r{i}", "weeks_to_close": 9}}) for i in range(1200)]
    first = [ImportItem(f"run:{i}", case) for i, case in enumerate(cases[:700])]
    store = Store(db_url)
    assert len(list(import_cases(store, Evaluator(course), first, AS_OF, source="test", batch=2000))) == 700
    made = len(tasks.listing(store))
    assert made >= 700  # a task at least for each record
    items = [ImportItem(f"run:{i}", case) for i, case in enumerate(cases)]
    stored = list(import_cases(store, Evaluator(course), items, AS_OF, source="test", batch=2000))
    assert [seq for _, seq in stored] == list(range(701, 1201))  # the 700 stored before are skipped
    assert len(tasks.listing(store)) == made * 12 // 7  # a task per recommendation of each record, once
    # evaluated again under new keys: every record's tasks are found, none made twice
    again = [ImportItem(f"again:{i}", case) for i, case in enumerate(cases)]
    assert len(list(import_cases(store, Evaluator(course), again, AS_OF, source="test", batch=2000))) == 1200
    assert len(tasks.listing(store)) == made * 12 // 7
    assert store.count() == 2400 and store.verify() == []
    store.close()


def test_a_case_whose_id_is_too_long_to_file_is_kept_as_a_failed_case_and_the_import_goes_on(
    db_url: str, course: Any
) -> None:
    long = "x" * 600  # PostgreSQL refuses it in a 500-character column; the whole batch would fail
    items = [
        ImportItem("k:1", ("a", {"opportunity": {"id": "a", "win_rate": 40}})),
        ImportItem("k:2", (long, {"opportunity": {"id": long}})),
        ImportItem("k:3", ("c", {"opportunity": {"id": "c", "account_id": long}})),
        ImportItem("k:4", ("d", {"opportunity": {"id": "d"}})),
    ]
    store = Store(db_url)
    outcomes = list(import_cases(store, Evaluator(course), items, AS_OF, source="test"))
    assert [seq for _, seq in outcomes] == [1, 2, 3, 4]
    failed = [o for o, _ in outcomes if isinstance(o, CaseError)]
    assert [(e.code, e.case_id) for e in failed] == [("id_too_long", "x" * 500), ("id_too_long", "c")]
    assert "account id" in failed[1].message and "over 500 characters" in failed[1].message
    assert store.get(2).status == "error" and store.get(2).error == {
        "code": "id_too_long",
        "message": failed[0].message,
    }
    assert store.count() == 4 and store.verify() == []
    store.close()


def test_why_re_derives_the_stored_trace_in_both_languages(db_url: str, course: Any) -> None:
    store = fill(db_url, course)
    stored, result = reevaluate(store, 1)
    zh, en = why(result.playbook, result.to_json("zh"), "zh"), why(result.playbook, result.to_json("en"), "en")
    assert stored.decisions == result.decisions
    for text_ in (zh, en):
        steps = [line for line in text_.splitlines() if line.startswith("  ") and not line.startswith("    ")]
        cited = [line for line in steps if "[G-" in line]
        assert cited == [line for line in steps if not line.lstrip().startswith(("derived", "推算"))]
    assert "漏斗位置 = 底层" in zh and "funnel position = bottom of the funnel (底层)" in en
    assert [line.count("[G-") for line in zh.splitlines()] == [line.count("[G-") for line in en.splitlines()]
    store.close()


def test_why_refuses_a_record_that_no_longer_matches(db_url: str, course: Any) -> None:
    store = fill(db_url, course)
    with store.engine.begin() as conn:
        edit_decisions(conn, 2, json.dumps({"funnel_layer": "surface"}))
    with pytest.raises(StoredMismatch):
        reevaluate(store, 2)
    store.close()


def test_a_kept_evaluator_re_derives_only_uncached_and_under_the_stored_version(db_url: str, course: Any) -> None:
    store = fill(db_url, course)
    stored = store.get(1)
    assert rederive(stored, Evaluator(course, cache_size=0)).decisions == reevaluate(store, 1)[1].decisions
    with pytest.raises(ValueError, match="uncached evaluator"):
        rederive(stored, Evaluator(course))  # answers reused by cell would not ask durable-rules again
    changed = COURSE.read_text(encoding="utf-8").replace(
        "  high_win_rate:\n    value: 60\n", "  high_win_rate:\n    value: 80\n"
    )
    other = compile_playbook(load_playbook_text(changed))
    with other, pytest.raises(ValueError, match="uncached evaluator of playbook"):
        rederive(stored, Evaluator(other, cache_size=0))
    store.close()


def tamper(store: Store, statement: str, **params: Any) -> None:
    with store.engine.begin() as conn:
        conn.execute(text(statement), params)


def test_verify_catches_an_edited_row(db_url: str, course: Any) -> None:
    store = fill(db_url, course)
    tamper(store, "UPDATE evaluation_rows SET facts = :f WHERE seq = 5", f='{"opportunity": {"amount": 1}}')
    assert [(p.seq, p.kind) for p in store.verify()] == [(5, "edited")]
    store.close()


def test_verify_catches_an_edited_recommendation(db_url: str, course: Any) -> None:
    store = fill(db_url, course)
    tamper(store, "UPDATE recommendation_rows SET action = params WHERE evaluation_seq = 7 AND position = 0")
    assert [(p.seq, p.kind) for p in store.verify()] == [(7, "edited")]
    store.close()


def test_verify_catches_a_deleted_row(db_url: str, course: Any) -> None:
    store = fill(db_url, course)
    tamper(store, "DELETE FROM recommendation_rows WHERE evaluation_seq = 9")
    tamper(store, "DELETE FROM evaluation_rows WHERE seq = 9")
    assert [(p.seq, p.kind) for p in store.verify()] == [(9, "deleted")]
    tamper(store, "DELETE FROM recommendation_rows WHERE evaluation_seq = 41")
    tamper(store, "DELETE FROM evaluation_rows WHERE seq = 41")
    assert [(p.seq, p.kind) for p in store.verify()] == [(9, "deleted"), (41, "deleted")]
    store.close()


def test_verify_catches_an_inserted_row(db_url: str, course: Any) -> None:
    store = fill(db_url, course)
    with store.engine.begin() as conn:
        row = dict(conn.execute(select(evaluation_rows).where(evaluation_rows.c.seq == 3)).mappings().one())
    row |= {"seq": 42, "case_id": "forged", "import_key": "forged", "prev_hash": row["entry_hash"]}
    with store.engine.begin() as conn:
        conn.execute(insert(evaluation_rows).values(row))
    assert [(p.seq, p.kind) for p in store.verify()] == [(42, "inserted")]
    store.close()


def test_outcomes_are_kept_as_history(db_url: str, course: Any) -> None:
    store = fill(db_url, course)
    store.record_outcome(1, "intensive_attack", "accepted", "li.wei", "big deal")
    store.record_outcome(1, "intensive_attack", "done", "li.wei", "signed")
    store.record_outcome(1, "0", "dismissed", "zhang", "already a fat sheep")
    assert [(o["action"], o["status"]) for o in store.outcomes_of(1)] == [
        ("intensive_attack", "accepted"),
        ("intensive_attack", "done"),
        ("look_after_fat_sheep", "dismissed"),
    ]
    with pytest.raises(LookupError, match="did not recommend 'market_action_1'"):
        store.record_outcome(1, "market_action_1", "done", "x", "")
    tamper(store, "UPDATE outcomes SET status = 'accepted' WHERE seq = 2")
    assert [(p.chain, p.seq, p.kind) for p in store.verify()] == [("outcomes", 2, "edited")]
    store.close()


def test_an_older_database_is_upgraded_in_place(db_url: str, tmp_path: Path) -> None:
    from tests.test_store_compact import v10_log  # it reads this module's samples

    v10_log("v10-log.sqlite.gz", db_url, tmp_path)  # written by the code of version 10, made version 1 here
    engine = create_engine(db_url)
    with engine.begin() as conn:
        before = [tuple(r) for r in conn.execute(text("SELECT * FROM evaluations ORDER BY seq"))]
        advised = [tuple(r) for r in conn.execute(text("SELECT * FROM recommendations ORDER BY 1, 2"))]
        for table in ("record_changes", "records", "outcomes", "quarantined_events", "task_events", "tasks"):
            conn.execute(text(f"DROP TABLE {table}"))
        conn.execute(text("DELETE FROM chain_head WHERE chain IN ('outcomes', 'records', 'quarantined', 'tasks')"))
        conn.execute(text("DELETE FROM meta WHERE key = 'log_id'"))
        conn.execute(text("UPDATE meta SET value = '1' WHERE key = 'schema_version'"))
    engine.dispose()
    upgraded = Store(db_url)
    assert upgraded.schema_version() == SCHEMA_VERSION
    with upgraded.engine.connect() as conn:
        assert [tuple(r) for r in conn.execute(text("SELECT * FROM evaluations ORDER BY seq"))] == before
        assert [tuple(r) for r in conn.execute(text("SELECT * FROM recommendations ORDER BY 1, 2"))] == advised
    upgraded.record_outcome(2, "0", "accepted", "a", "b")
    assert upgraded.verify() == []
    upgraded.close()


def test_replay_with_one_threshold_changed_lists_exactly_the_changed_records(
    db_url: str, course: Any, tmp_path: Path
) -> None:
    store = fill(db_url, course)
    changed_text = COURSE.read_text(encoding="utf-8").replace(
        "  high_win_rate:\n    value: 60\n", "  high_win_rate:\n    value: 80\n"
    )
    assert changed_text != COURSE.read_text(encoding="utf-8")
    changed_path = tmp_path / "changed.yaml"
    changed_path.write_text(changed_text, encoding="utf-8")
    candidate, baseline = load_playbook(changed_path), load_playbook(COURSE)
    changes = list(replay_changes(store, candidate, baseline))
    # what must change, found without the store: both playbooks over the raw sample cases
    with compile_playbook(candidate) as other, SAMPLES.open(encoding="utf-8") as lines:
        cases = list(read_cases(lines))
        old = list(Evaluator(course).evaluate(cases, AS_OF))
        new = list(Evaluator(other).evaluate(cases, AS_OF))
    expected = [
        i + 1
        for i, (a, b) in enumerate(zip(old, new, strict=True))
        if a.decisions != b.decisions or [r["id"] for r in a.recommendations] != [r["id"] for r in b.recommendations]  # type: ignore[union-attr]
    ]
    assert expected  # the threshold matters for the samples
    assert [c.evaluation for c in changes if c.changed] == expected
    assert len(changes) == 41
    report = replay(store, candidate, baseline, {"file": str(COURSE)}, examples=2)
    data = report.to_json("en")
    assert (data["replayed"], data["changed"]) == (41, len(expected))
    assert {move["decision"] for move in data["decisions_changed"]} <= {"battle_type", "director_action", "win_level"}
    assert all(len(entry["examples"]) <= 2 for entry in data["actions_added"] + data["decisions_changed"])
    assert len(data["examples"]) == 2  # memory: counts and a few examples, never every evaluation
    store.close()


def test_replay_takes_each_records_latest_evaluation_and_compares_with_the_live_playbook(
    db_url: str, course: Any
) -> None:
    store = fill(db_url, course)
    later = dt.date(2026, 12, 20)
    list(import_cases(store, Evaluator(course), sample_items("again"), later, source="test"))
    live, newest = live_playbook(store)
    assert (live.content_hash, newest) == (course.playbook.content_hash, 82)
    latest = list(replay_changes(store, course.playbook, live))
    assert [c.evaluation for c in latest] == list(range(42, 83))  # one per record: its latest
    assert not any(c.changed for c in latest)  # the same playbook changes nothing
    assert len(list(replay_changes(store, course.playbook, live, every=True))) == 82
    assert [c.as_of for c in replay_changes(store, course.playbook, live, since="2026-12-01")] == ["2026-12-20"] * 41
    store.close()


def run_import(db: str, source: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "cli.py"),
            "recommend",
            "--lang",
            "en",
            "--playbook",
            str(COURSE),
            "--input",
            str(source),
            "--as-of",
            "2026-11-27",
            "--format",
            "json",
            "--db",
            db,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def generated_file(path: Path, count: int, seed: int) -> Path:
    sys.path.insert(0, str(ROOT))
    from bench.cases import generate

    with path.open("w", encoding="utf-8") as out:
        for case_id, case in generate(count, seed=seed):
            out.write(json.dumps({**case, "id": f"{seed}-{case_id}"}) + "\n")
    return path


def test_kill_9_during_an_import_then_rerun_loses_and_doubles_nothing(db_url: str, tmp_path: Path) -> None:
    source = generated_file(tmp_path / "cases.jsonl", 10_000, seed=3)
    Store(db_url).close()  # schema in place before the race
    process = run_import(db_url, source)
    store = Store(db_url)
    deadline = time.monotonic() + 120
    while store.count() < 1_000 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.communicate()
    interrupted = store.count()
    assert 0 < interrupted < 10_000, "the import must be cut off midway for this test to mean anything"
    rerun = run_import(db_url, source)
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err
    assert f"{interrupted} already stored" in err
    assert store.count() == 10_000
    with store.engine.connect() as conn:
        keys = conn.execute(text("SELECT COUNT(DISTINCT import_key), COUNT(DISTINCT case_id) FROM evaluations")).one()
    assert tuple(keys) == (10_000, 10_000)
    assert store.verify() == []
    store.close()


def test_two_writers_at_once_lose_and_double_nothing(db_url: str, tmp_path: Path) -> None:
    first = generated_file(tmp_path / "a.jsonl", 3_000, seed=1)
    second = generated_file(tmp_path / "b.jsonl", 3_000, seed=2)
    Store(db_url).close()
    writers = [run_import(db_url, first), run_import(db_url, second)]
    for writer in writers:
        _, err = writer.communicate(timeout=600)
        assert writer.returncode == 0, err
    store = Store(db_url)
    assert store.count() == 6_000
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(DISTINCT case_id) FROM evaluations")).scalar() == 6_000
        # the two imports really interleaved
        sources = [r[0][:1] for r in conn.execute(text("SELECT case_id FROM evaluations ORDER BY seq"))]
    assert store.verify() == []
    switches = sum(1 for a, b in itertools.pairwise(sources) if a != b)
    assert switches >= 1
    store.close()


def test_concurrent_first_runs_on_a_fresh_database_make_one_schema(db_url: str) -> None:
    """Several programs started at once on an empty database each create the schema: one does, the rest use it."""
    opened = threading.Barrier(6)

    def first_run() -> int:
        opened.wait()
        store = Store(db_url)
        try:
            return store.count()
        finally:
            store.close()

    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(lambda _: first_run(), range(6))) == [0] * 6
    store = Store(db_url)
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT value FROM meta WHERE key = 'schema_version'")).scalar() == str(SCHEMA_VERSION)
        keys = [key for (key,) in conn.execute(text("SELECT key FROM meta"))]
        heads = conn.execute(text("SELECT chain, seq FROM chain_head")).all()
    assert sorted(keys) == ["log_id", "partitions", "schema_version"]  # each once: one log, made once
    chains = [chain for chain, _ in heads]
    assert set(CHAINS) == set(chains) and len(chains) == len(set(chains))  # each chain's head once
    assert all(seq == 0 for _, seq in heads)
    assert store.verify() == []
    store.close()


def test_sqlite_is_in_wal_mode(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    Store(url).close()
    with create_engine(url).connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_a_backup_taken_while_evaluations_are_written_is_consistent_and_complete(tmp_path: Path, course: Any) -> None:
    import threading

    from engine.store import backup_sqlite

    url = f"sqlite:///{tmp_path / 'live.db'}"
    store = fill(url, course, [item for run in range(40) for item in sample_items(f"run{run}")])
    stop = threading.Event()
    written: list[int] = []

    def write() -> None:  # another connection committing batch after batch all through the backup
        writer = Store(url)
        for run in itertools.count():
            if stop.is_set():
                break
            list(import_cases(writer, Evaluator(course), sample_items(f"live{run}"), AS_OF, source="test", batch=7))
            written.append(writer.count())
        writer.close()

    thread = threading.Thread(target=write)
    thread.start()
    while not written:
        time.sleep(0.01)
    committed = store.count()  # everything committed before the backup begins
    backup_sqlite(url, tmp_path / "copy.db")
    stop.set()
    thread.join()
    assert not (tmp_path / "copy.db-wal").exists()
    copy = Store(f"sqlite:///{tmp_path / 'copy.db'}", create=False)
    assert copy.verify() == []
    held = copy.count()
    assert committed <= held <= store.count()
    assert [s.to_json() for s in copy.search()] == [s.to_json() for s in store.search(limit=held)]
    copy.close()
    store.close()


def test_a_backup_refuses_a_missing_log_and_an_existing_target(tmp_path: Path, course: Any) -> None:
    from engine.store import NoAuditLog, backup_sqlite

    with pytest.raises(NoAuditLog, match="does not exist"):
        backup_sqlite(f"sqlite:///{tmp_path / 'typo.db'}", tmp_path / "copy.db")
    assert list(tmp_path.iterdir()) == []
    fill(f"sqlite:///{tmp_path / 'live.db'}", course).close()
    (tmp_path / "copy.db").write_text("keep me", encoding="utf-8")
    with pytest.raises(FileExistsError):
        backup_sqlite(f"sqlite:///{tmp_path / 'live.db'}", tmp_path / "copy.db")
    assert (tmp_path / "copy.db").read_text(encoding="utf-8") == "keep me"
