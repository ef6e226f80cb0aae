"""The tamper suite: the audit log edited, deleted from, inserted into, reordered, truncated, recomputed
and wiped by someone who can write to its database, on SQLite and on a real PostgreSQL server.

Each case without the key is detected by ``verify`` and named by a stable kind (docs/audit-threat-model.md);
truncation and wipe-and-rebuild need a checkpoint.  The cases at the end show what someone who holds the key
can do, and what only a checkpoint then finds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import bindparam, insert, select, text, update

from adapters.ingest import Feed, Ingestor
from adapters.mapping import load_mapping
from adapters.readback import Playbooks, evaluation_answer
from adapters.webhook import RecordEvent
from cli import main
from engine import Evaluator, compile_playbook, load_playbook
from engine.audit import import_cases, reevaluate
from engine.store import (
    AuditKeyError,
    SchemaDamaged,
    Store,
    TamperedRecord,
    audit_key,
    evaluation_rows,
    key_id,
    outcomes,
    quarantined_events,
    record_changes,
    records,
    task_events,
)
from engine.store.chain import _link_hash, _Seal, _state_hash, canonical
from engine.store.verify import _chain_rows
from tests.conftest import AS_OF, FIXTURES, ROOT
from tests.test_store import sample_items

COURSE = ROOT / "playbooks" / "course.yaml"
KEY = b"5f0c1d8e2b7a4c6e9d3f1a0b8c7e6d5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d"
OTHER_KEY = b"0d1c2b3a4f5e6d7c8b9a0f1e2d3c4b5a6978f0e1d2c3b4a5968778695a4b3c2d"
HUBSPOT = Feed("webhook:hubspot", load_mapping("hubspot_deal"), "deal")
NOW = 1795767944.0  # 2026-11-27


@pytest.fixture(scope="module")
def course() -> Iterator[Any]:
    with compile_playbook(load_playbook(COURSE)) as compiled:
        yield compiled


def deal(record: str, event_id: str, at: int, **fields: str) -> RecordEvent:
    return RecordEvent("hubspot", "deal", record, event_id, "update", {"hs_object_id": record, **fields}, at, "7")


def fill(store: Store, course: Any) -> Store:
    """41 evaluations imported, 3 outcomes, and two webhook records (three more evaluations)."""
    list(import_cases(store, Evaluator(course), sample_items(), AS_OF, source="test", batch=7))
    store.record_outcome(1, "0", "accepted", "li.wei", "big deal")
    store.record_outcome(1, "0", "done", "li.wei", "signed")
    store.record_outcome(2, "0", "dismissed", "zhang", "not now")
    ingestor = Ingestor(store, Evaluator(course), clock=lambda: NOW)
    try:
        ingestor.ingest(HUBSPOT, [deal("42", "a", 1000, amount="250000")])
        ingestor.ingest(HUBSPOT, [deal("42", "b", 2000, hs_deal_stage_probability="0.6")])
        ingestor.ingest(HUBSPOT, [deal("43", "c", 3000, amount="1000")])
    finally:
        ingestor.close()
    return store


@pytest.fixture
def log(db_url: str, course: Any) -> Iterator[Store]:
    """A log sealed with KEY, as its operator opens it."""
    store = fill(Store(db_url, key=KEY), course)
    assert store.verify() == []
    yield store
    store.close()


def tamper(store: Store, *statements: str, **params: Any) -> None:
    with store.engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement), params)


def found(store: Store, checkpoint: dict[str, Any] | None = None) -> list[tuple[str, int, str]]:
    return [(p.chain, p.seq, p.kind) for p in store.verify(checkpoint)]


def recompute(store: Store, chain: str, seal: _Seal) -> None:
    """What a writer who knows the algorithm does: every link of ``chain`` made again under ``seal``, head too."""
    tables = {"evaluations": evaluation_rows, "outcomes": outcomes, "records": record_changes}
    table = {**tables, "quarantined": quarantined_events, "tasks": task_events}[chain]
    relink = (
        update(table).where(table.c.seq == bindparam("s")).values(prev_hash=bindparam("p"), entry_hash=bindparam("e"))
    )
    with store.engine.begin() as conn:
        prev, seq = "0" * 64, 0
        updates = []
        for row, children in list(_chain_rows(conn, chain)):
            row["prev_hash"] = prev
            prev, seq = _link_hash(seal, chain, row, children), row["seq"]
            updates.append({"p": row["prev_hash"], "e": prev, "s": seq})
        if updates:
            conn.execute(relink, updates)
        conn.execute(
            text("UPDATE chain_head SET seq = :s, hash = :h WHERE chain = :c"), {"s": seq, "h": prev, "c": chain}
        )


# -- the log as made ----------------------------------------------------------------------------------


def test_a_keyed_log_keeps_the_keys_id_and_never_the_key(log: Store) -> None:
    with log.engine.connect() as conn:
        stored = dict(conn.execute(text("SELECT key, value FROM meta")).all())
    assert stored["audit_key_id"] == key_id(KEY) == log.key_id
    assert not any(KEY.decode() in value for value in stored.values())
    assert log.seals_checked() and found(log) == []


def test_a_short_key_is_refused() -> None:
    with pytest.raises(AuditKeyError, match="at least 32 bytes"):
        audit_key("secret\n")
    assert audit_key(KEY.decode() + "\n") == KEY


def test_a_keyed_log_is_not_written_without_its_key_or_with_another(log: Store, course: Any) -> None:
    for key in (None, OTHER_KEY):
        other = Store(log.url, key=key)
        with pytest.raises(AuditKeyError, match=f"sealed with key {key_id(KEY)}"):
            other.record_outcome(3, "0", "accepted", "x", "")
        with pytest.raises(AuditKeyError):
            list(import_cases(other, Evaluator(course), sample_items("again"), AS_OF, source="test"))
        other.close()
    assert log.count() == 44 and found(log) == []


# -- a writer without the key: every change is named --------------------------------------------------


def test_an_edited_evaluation_is_named(log: Store) -> None:
    tamper(log, "UPDATE evaluation_rows SET facts = :f WHERE seq = 5", f='{"opportunity": {"amount": 1}}')
    assert found(log) == [("evaluations", 5, "edited")]


def test_an_edit_recomputed_without_the_key_is_named(log: Store) -> None:
    tamper(log, "UPDATE evaluation_rows SET facts = :f WHERE seq = 5", f='{"opportunity": {"amount": 1}}')
    for seal in (_Seal(None), _Seal(OTHER_KEY)):  # plain SHA-256, as before keys; or a guessed key
        recompute(log, "evaluations", seal)
        problems = found(log)
        assert problems == [("evaluations", seq, "edited") for seq in range(1, 45)]


def test_a_quarantined_event_edited_and_recomputed_without_the_key_is_named(log: Store, course: Any) -> None:
    ingestor = Ingestor(log, Evaluator(course), clock=lambda: NOW)
    try:  # a closed deal: set aside as bad data, kept in its own chain
        [held] = ingestor.ingest(HUBSPOT, [deal("44", "q", 4000, amount="5000", dealstage="closedlost")])
    finally:
        ingestor.close()
    assert held.status == "quarantined" and [q.record_id for q in log.quarantined()] == ["44"]
    assert found(log) == []
    tamper(log, "UPDATE quarantined_events SET reason = 'fine' WHERE seq = 1")
    assert found(log) == [("quarantined", 1, "edited")]
    recompute(log, "quarantined", _Seal(None))  # plain SHA-256 over the edit, head moved too
    assert found(log) == [("quarantined", 1, "edited")]


def test_recommendations_edited_removed_or_added_are_named_at_their_evaluations_only(log: Store) -> None:
    # verify reads evaluations and recommendations as two streams merged by number: a change to one
    # evaluation's recommendations is named there, and every evaluation after it still verifies
    tamper(
        log,
        "UPDATE recommendation_rows SET params = action WHERE evaluation_seq = 4 AND position = 0",
        "DELETE FROM recommendation_rows WHERE evaluation_seq = 7 AND position = "
        "(SELECT max(position) FROM recommendations WHERE evaluation_seq = 7)",
        "INSERT INTO recommendation_rows (evaluation_seq, position, action, rule, params) "
        "SELECT 10, 99, action, rule, params FROM recommendation_rows WHERE evaluation_seq = 4 AND position = 0",
    )
    assert found(log) == [("evaluations", 4, "edited"), ("evaluations", 7, "edited"), ("evaluations", 10, "edited")]


def test_a_deleted_evaluation_is_named(log: Store) -> None:
    tamper(log, "DELETE FROM recommendation_rows WHERE evaluation_seq = 9", "DELETE FROM evaluation_rows WHERE seq = 9")
    assert found(log) == [("evaluations", 9, "deleted")]


def test_a_deletion_renumbered_and_relinked_is_named(log: Store) -> None:
    # outcome 2 removed, outcome 3 moved into its place and linked to outcome 1, the head moved back
    tamper(
        log,
        "DELETE FROM outcomes WHERE seq = 2",
        "UPDATE outcomes SET seq = 2, prev_hash = (SELECT entry_hash FROM outcomes WHERE seq = 1) WHERE seq = 3",
        "UPDATE chain_head SET seq = 2, hash = (SELECT entry_hash FROM outcomes WHERE seq = 2) "
        "WHERE chain = 'outcomes'",
    )
    assert found(log) == [("outcomes", 2, "edited")]


def test_an_inserted_evaluation_is_named(log: Store) -> None:
    with log.engine.begin() as conn:
        row = dict(conn.execute(select(evaluation_rows).where(evaluation_rows.c.seq == 3)).mappings().one())
    row |= {"seq": 45, "case_id": "forged", "import_key": "forged", "prev_hash": row["entry_hash"]}
    with log.engine.begin() as conn:
        conn.execute(insert(evaluation_rows).values(row))
    assert found(log) == [("evaluations", 45, "inserted")]
    # the head moved onto it, and the chain made again under a guessed seal: still named
    tamper(log, "UPDATE chain_head SET seq = 45 WHERE chain = 'evaluations'")
    recompute(log, "evaluations", _Seal(None))
    assert ("evaluations", 45, "edited") in found(log)


def test_reordered_outcomes_are_named(log: Store) -> None:
    with log.engine.begin() as conn:
        first, second = (
            dict(conn.execute(select(outcomes).where(outcomes.c.seq == seq)).mappings().one()) for seq in (1, 2)
        )
        conn.execute(update(outcomes).where(outcomes.c.seq == 1).values({**second, "seq": 1}))
        conn.execute(update(outcomes).where(outcomes.c.seq == 2).values({**first, "seq": 2}))
    # each is named at its place, and the record after them no longer follows
    assert found(log) == [("outcomes", 1, "edited"), ("outcomes", 2, "edited"), ("outcomes", 3, "broken_link")]


def test_an_edited_playbook_text_is_named_and_nothing_is_explained_under_it(log: Store, tmp_path: Path) -> None:
    tamper(log, "UPDATE playbooks SET text = REPLACE(text, 'high_win_rate', 'high_win_rate_')")
    assert found(log) == [("playbooks", 0, "edited")]
    with pytest.raises(TamperedRecord, match="does not match its hash"):
        reevaluate(log, 1)
    # the webhook service's read-back labels nothing from it either (500 audit_log_tampered)
    with pytest.raises(TamperedRecord):
        evaluation_answer(log, Playbooks(log, load_playbook(FIXTURES / "pipeline.yaml")), 1, "en")
    key_file = tmp_path / "audit.key"
    key_file.write_bytes(KEY)
    result = CliRunner().invoke(main, ["why", "1", "--db", log.url, "--audit-key-file", str(key_file)])
    assert result.exit_code == 1 and "does not match its hash" in result.stderr and result.exception is not None
    assert isinstance(result.exception, SystemExit)


def test_a_rerun_refuses_to_rederive_under_a_changed_playbook_text(tmp_path: Path) -> None:
    earlier = tmp_path / "earlier.yaml"
    earlier.write_text(
        COURSE.read_text(encoding="utf-8").replace(
            "  high_win_rate:\n    value: 60\n", "  high_win_rate:\n    value: 80\n"
        ),
        encoding="utf-8",
    )
    db = f"sqlite:///{tmp_path / 'audit.db'}"
    run = ["recommend", "--input", str(ROOT / "samples" / "cases.jsonl"), "--as-of", "2026-11-27", "--db", db]
    assert CliRunner().invoke(main, [*run, "--playbook", str(earlier)]).exit_code == 0
    with Store(db) as store:
        tamper(store, "UPDATE playbooks SET text = REPLACE(text, 'value: 80', 'value: 81')")
    result = CliRunner().invoke(main, run)  # the course playbook: the stored cases are re-derived under earlier's
    assert result.exit_code == 1 and "run stopped: the stored text of playbook" in result.stderr
    assert isinstance(result.exception, SystemExit)


def test_an_edited_record_state_is_named(log: Store) -> None:
    tamper(log, "UPDATE records SET fields = :f WHERE record_id = '7/42'", f='{"amount":"1"}')
    [(chain, seq, kind)] = found(log)
    assert (chain, kind) == ("records", "edited") and seq > 0


def test_a_record_state_edited_with_its_link_is_named(log: Store) -> None:
    tamper(log, "UPDATE records SET fields = :f WHERE record_id = '7/42'", f='{"amount":"1"}')
    with log.engine.begin() as conn:
        state = dict(conn.execute(text("SELECT * FROM records WHERE record_id = '7/42'")).mappings().one())
    tamper(
        log,
        "UPDATE record_changes SET state_hash = :h WHERE seq = (SELECT MAX(seq) FROM record_changes "
        "WHERE record_id = '7/42')",
        h=_state_hash(state),
    )
    assert [kind for _, _, kind in found(log)] == ["edited"]


def test_a_deleted_or_added_record_state_is_named(log: Store) -> None:
    with log.engine.begin() as conn:
        state = dict(conn.execute(text("SELECT * FROM records WHERE record_id = '7/43'")).mappings().one())
    tamper(log, "DELETE FROM records WHERE record_id = '7/43'")
    assert [(chain, kind) for chain, _, kind in found(log)] == [("records", "deleted")]
    state["record_id"] = "7/44"
    with log.engine.begin() as conn:
        conn.execute(insert(records).values(state))
    assert sorted((chain, kind) for chain, _, kind in found(log)) == [("records", "deleted"), ("records", "unchained")]


# -- truncation and wiping: found against a checkpoint ------------------------------------------------


def truncate(store: Store, keep: int) -> None:
    tamper(
        store,
        "DELETE FROM recommendation_rows WHERE evaluation_seq > :k",
        "DELETE FROM evaluation_rows WHERE seq > :k",
        "UPDATE chain_head SET seq = :k, hash = (SELECT entry_hash FROM evaluations WHERE seq = :k) "
        "WHERE chain = 'evaluations'",
        k=keep,
    )


def test_a_truncated_log_is_named_against_a_checkpoint(log: Store) -> None:
    checkpoint = log.checkpoint()
    truncate(log, 36)
    assert found(log) == []  # a shorter chain is a whole chain: only what was seen before can tell
    assert found(log, checkpoint) == [("evaluations", 37, "truncated")]


def test_a_task_moved_behind_the_logs_back_is_named(log: Store) -> None:
    """Undone work marked done in the database, or an event's reason rewritten, is found: the row no longer
    matches the state its last event chained; the event no longer matches its seal, even recomputed
    without the key."""
    with log.engine.connect() as conn:
        undone = conn.execute(text("SELECT min(id) FROM tasks WHERE status = 'open'")).scalar_one()
        moved = conn.execute(text("SELECT max(seq) FROM task_events WHERE task_id = :t"), {"t": undone}).scalar_one()
    tamper(log, "UPDATE tasks SET status = 'done' WHERE id = :t", t=undone)
    assert found(log) == [("tasks", moved, "edited")]
    tamper(log, "UPDATE tasks SET status = 'open' WHERE id = :t", t=undone)
    assert found(log) == []
    tamper(log, "UPDATE task_events SET why = 'all fine' WHERE seq = 2")
    assert found(log) == [("tasks", 2, "edited")]
    recompute(log, "tasks", _Seal(None))
    problems = found(log)
    assert problems and {(chain, kind) for chain, _, kind in problems} == {("tasks", "edited")}


def test_a_task_given_another_due_date_or_owner_breaks_the_seal_of_each_of_its_events(log: Store) -> None:
    """An event stores no copy of its task's row (schema version 12): it seals the row as the task's row
    gives it, so a column changed there no longer matches the seal of any event of that task."""
    with log.engine.connect() as conn:
        task = conn.execute(text("SELECT id FROM tasks WHERE due IS NOT NULL ORDER BY id")).scalars().first()
        moves = list(
            conn.execute(text("SELECT seq FROM task_events WHERE task_id = :t ORDER BY seq"), {"t": task}).scalars()
        )
    tamper(log, "UPDATE tasks SET due = '2099-01-01' WHERE id = :t", t=task)
    assert found(log) == [("tasks", seq, "edited") for seq in moves]
    tamper(log, "UPDATE tasks SET due = NULL, owner = 'someone' WHERE id = :t", t=task)
    assert [kind for _, _, kind in found(log)] == ["edited"] * len(moves)


def test_a_task_removed_or_slipped_in_is_named(log: Store) -> None:
    with log.engine.connect() as conn:
        last = conn.execute(text("SELECT max(id) FROM tasks")).scalar_one()
        moved = conn.execute(text("SELECT max(seq) FROM task_events WHERE task_id = :t"), {"t": last}).scalar_one()
    tamper(log, "DELETE FROM tasks WHERE id = :t", t=last)
    assert found(log) == [("tasks", moved, "deleted")]
    tamper(
        log,
        "INSERT INTO tasks SELECT id + 100000, series + 100000, occurrence, source, record, evaluation_seq, action,"
        " cause, rule, owner, due, escalate_at, escalate_to, escalate_action, every, status, as_of FROM tasks"
        " WHERE id = 1",
    )
    assert ("tasks", 0, "unchained") in found(log)


def test_a_wiped_log_is_named_against_a_checkpoint(log: Store) -> None:
    checkpoint = log.checkpoint()
    tamper(
        log,
        "DELETE FROM outcomes",
        "DELETE FROM recommendation_rows",
        "DELETE FROM evaluation_rows",
        "DELETE FROM record_changes",
        "DELETE FROM records",
        "DELETE FROM task_events",
        "DELETE FROM tasks",
        "UPDATE chain_head SET seq = 0, hash = :g",
        g="0" * 64,
    )
    assert found(log) == []
    assert found(log, checkpoint) == [
        ("evaluations", 1, "truncated"),
        ("outcomes", 1, "truncated"),
        ("records", 1, "truncated"),
        ("tasks", 1, "truncated"),
    ]


def wipe(store: Store) -> None:
    tamper(store, *(f"DROP VIEW {t}" for t in ("recommendations", "evaluations")))
    tamper(
        store, *(f"DROP TABLE {t}" for t in ("outcomes", "recommendation_rows", "evaluation_rows", "record_changes"))
    )
    tamper(store, "DROP TABLE log_texts")
    tamper(
        store,
        *(
            f"DROP TABLE {t}"
            for t in ("quarantined_events", "records", "playbooks", "chain_head", "meta", "console_users")
        ),
    )
    tamper(store, *(f"DROP TABLE {t}" for t in ("task_events", "tasks", "clock_timers")))
    tamper(store, *(f"DROP TABLE {t}" for t in ("dead_letters", "deliveries")))


def test_a_log_wiped_and_rebuilt_without_the_key_is_named(log: Store, course: Any) -> None:
    checkpoint = log.checkpoint()
    wipe(log)
    rebuilt = fill(Store(log.url), course)  # the same story told again, chained with plain SHA-256
    rebuilt.close()
    assert [kind for _, _, kind in found(log)] == ["not_keyed"]
    assert [kind for _, _, kind in found(log, checkpoint)] == [
        "not_keyed",
        "replaced",
        "key_changed",
        "rewritten",
        "rewritten",
        "rewritten",
        "rewritten",
    ]


def test_a_log_downgraded_to_plain_sha_is_named(log: Store) -> None:
    checkpoint = log.checkpoint()
    tamper(log, "DELETE FROM meta WHERE key = 'audit_key_id'")
    for chain in ("evaluations", "outcomes", "records", "tasks"):
        recompute(log, chain, _Seal(None))
    assert found(log) == [("key", 0, "not_keyed")]
    assert [(chain, kind) for chain, _, kind in found(log, checkpoint)] == [
        ("key", "not_keyed"),
        ("checkpoint", "key_changed"),
        ("evaluations", "rewritten"),
        ("outcomes", "rewritten"),
        ("records", "rewritten"),
        ("tasks", "rewritten"),
    ]


def test_a_forged_checkpoint_or_one_of_another_key_is_named(log: Store) -> None:
    checkpoint = log.checkpoint()
    forged = json.loads(json.dumps(checkpoint))
    forged["chains"]["evaluations"]["count"] = 10
    assert found(log, forged) == [("checkpoint", 0, "checkpoint_forged")]
    other = Store(log.url, key=OTHER_KEY)
    assert [kind for _, _, kind in found(other, checkpoint)] == ["wrong_key", "checkpoint_other_key"]
    other.close()


def test_the_cli_exports_a_checkpoint_and_verifies_against_it(log: Store, tmp_path: Path) -> None:
    key_file = tmp_path / "audit.key"
    key_file.write_bytes(KEY + b"\n")
    saved = tmp_path / "checkpoint.json"
    run = CliRunner().invoke
    keyed = ["--db", log.url, "--audit-key-file", str(key_file)]
    result = run(main, ["audit", "checkpoint", "--output", str(saved), *keyed])
    assert result.exit_code == 0, result.stderr
    assert json.loads(saved.read_text(encoding="utf-8"))["chains"]["evaluations"]["count"] == 44
    result = run(main, ["audit", "verify", "--checkpoint", str(saved), *keyed])
    assert result.exit_code == 0 and "ok: the chains verify, and the log still holds" in result.stderr
    truncate(log, 40)
    result = run(main, ["audit", "verify", "--checkpoint", str(saved), *keyed])
    assert result.exit_code == 1 and "evaluations #41: truncated" in result.stdout
    result = run(main, ["audit", "verify", "--db", log.url])
    assert result.exit_code == 0 and "only the structure was checked" in result.stderr
    assert "ok: the chains' structure verifies" in result.stderr


# -- without the key, and with it ---------------------------------------------------------------------


def test_without_the_key_verify_checks_the_structure_only(log: Store) -> None:
    reader = Store(log.url)
    assert not reader.seals_checked()
    tamper(log, "DELETE FROM recommendation_rows WHERE evaluation_seq = 9", "DELETE FROM evaluation_rows WHERE seq = 9")
    tamper(log, "UPDATE records SET deleted = :t WHERE record_id = '7/43'", t=True)
    assert found(reader) == [("evaluations", 9, "deleted"), ("records", 3, "edited")]
    # an edit recomputed with a guessed seal keeps the structure whole: only the key can tell
    tamper(log, "UPDATE outcomes SET status = 'accepted' WHERE seq = 3")
    recompute(log, "outcomes", _Seal(None))
    assert ("outcomes", 3, "edited") not in found(reader)
    assert ("outcomes", 1, "edited") in found(log)
    reader.close()


def test_with_the_key_a_rewrite_is_found_only_against_a_checkpoint(log: Store) -> None:
    """Who holds the key can rewrite history so that it verifies: a checkpoint kept elsewhere still tells."""
    checkpoint = log.checkpoint()
    tamper(log, "UPDATE outcomes SET status = 'accepted' WHERE seq = 3")
    recompute(log, "outcomes", _Seal(KEY))
    assert found(log) == []
    assert found(log, checkpoint) == [("outcomes", 3, "rewritten")]


# -- logs made before keys, and damaged schemas -------------------------------------------------------


def test_a_plain_log_is_migrated_not_silently_broken(db_url: str, course: Any) -> None:
    plain = fill(Store(db_url), course)
    assert plain.stored_key_id() is None and found(plain) == []
    keyed = Store(db_url, key=KEY)
    assert found(keyed) == [("key", 0, "not_keyed")]
    with pytest.raises(AuditKeyError, match="playbook audit migrate"):
        keyed.record_outcome(3, "0", "accepted", "x", "")
    with pytest.raises(AuditKeyError, match="chained before keys"):
        keyed.checkpoint()
    keyed.reseal(KEY)
    assert keyed.stored_key_id() == key_id(KEY) and found(keyed) == []
    keyed.record_outcome(3, "0", "accepted", "x", "")
    assert found(keyed) == [] and found(plain) == []  # plain now reads a keyed log: structure only
    # the key rotated: the log verifies under the new key only
    keyed.reseal(OTHER_KEY)
    rotated = Store(db_url, key=KEY)
    assert [kind for _, _, kind in found(rotated)] == ["wrong_key"]
    assert found(keyed) == []
    for store in (plain, keyed, rotated):
        store.close()


def test_the_cli_refuses_a_plain_log_a_key_then_migrates_and_rotates_it(tmp_path: Path, course: Any) -> None:
    db = f"sqlite:///{tmp_path / 'audit.db'}"
    fill(Store(db), course).close()
    old_key, new_key = tmp_path / "old.key", tmp_path / "new.key"
    old_key.write_bytes(KEY)
    new_key.write_bytes(OTHER_KEY)
    run = CliRunner().invoke
    outcome = ["outcome", "3", "0", "--status", "done", "--who", "x", "--db", db]
    refused = run(main, [*outcome, "--audit-key-file", str(old_key)])
    assert refused.exit_code == 1 and "playbook audit migrate" in refused.stderr
    migrated = run(main, ["audit", "migrate", "--db", db, "--audit-key-file", str(old_key)])
    assert migrated.exit_code == 0 and key_id(KEY) in migrated.stdout
    assert run(main, [*outcome, "--audit-key-file", str(old_key)]).exit_code == 0
    unkeyed = run(main, outcome)
    assert unkeyed.exit_code == 1 and f"sealed with key {key_id(KEY)}" in unkeyed.stderr
    rotated = run(
        main, ["audit", "rotate", "--new-key-file", str(new_key), "--db", db, "--audit-key-file", str(old_key)]
    )
    assert rotated.exit_code == 0 and key_id(OTHER_KEY) in rotated.stdout
    verified = run(main, ["audit", "verify", "--db", db, "--audit-key-file", str(new_key)])
    assert verified.exit_code == 0 and "ok: the chains verify" in verified.stderr
    stale = run(main, ["audit", "verify", "--db", db, "--audit-key-file", str(old_key)])
    assert stale.exit_code == 1 and "key: wrong_key:" in stale.stdout


def test_a_log_that_does_not_verify_is_not_resealed(db_url: str, course: Any) -> None:
    plain = fill(Store(db_url), course)
    tamper(plain, "UPDATE evaluation_rows SET facts = :f WHERE seq = 5", f='{"opportunity": {"amount": 1}}')
    keyed = Store(db_url, key=KEY)
    with pytest.raises(AuditKeyError, match="does not verify"):
        keyed.reseal(KEY)
    assert keyed.stored_key_id() is None
    plain.close()
    keyed.close()


@pytest.mark.parametrize(
    ("statement", "words"),
    [
        ("DROP TABLE outcomes", "the table 'outcomes' is missing"),
        ("DROP TABLE meta", "the table 'meta' is missing"),
        ("ALTER TABLE record_changes DROP COLUMN entry_hash", "the column 'record_changes.entry_hash' is missing"),
        ("DROP VIEW evaluations", "the view 'evaluations' is missing"),
        ("DELETE FROM chain_head WHERE chain = 'records'", "the chain head of 'records' is missing"),
    ],
)
def test_a_damaged_schema_is_reported_in_words(log: Store, statement: str, words: str) -> None:
    tamper(log, statement)
    with pytest.raises(SchemaDamaged, match=words):
        Store(log.url, key=KEY)
    result = CliRunner().invoke(main, ["audit", "verify", "--db", log.url])
    assert result.exit_code == 1 and words in result.stderr and "Traceback" not in result.stderr
    assert isinstance(result.exception, SystemExit)


def test_the_state_hash_covers_every_column_of_a_record() -> None:
    state = {
        "source": "s",
        "record_id": "r",
        "fields": "{}",
        "stamps": "{}",
        "deleted": False,
        "version": 1,
        "updated_at": "t",
        "last_event_id": None,
    }
    digests = {_state_hash(state)}
    for column, other in (("fields", '{"a":1}'), ("deleted", True), ("version", 2), ("last_event_id", "e")):
        digests.add(_state_hash(state | {column: other}))
    assert len(digests) == 5 and all(len(d) == len(hashlib.sha256().hexdigest()) for d in digests)


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_JSON_VALUES)
def test_the_canonical_text_is_the_sorted_compact_json_of_the_standard_encoder(value: Any) -> None:
    """Links written before the encoder was built once still verify: the text sealed is unchanged."""
    expected = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(value)
    assert canonical(value) == expected
