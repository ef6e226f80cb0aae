"""adapters/import_run.py: one import run — the source dispatch, events in input order, counts, resume, reruns."""

from __future__ import annotations

import csv
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner

from adapters.import_run import Evaluated, ImportRun, QuarantinedRecord, Source, StoredEarlier
from adapters.mapping import load_mapping
from cli import main
from engine import CaseError, Evaluator, Result, compile_playbook, load_playbook, load_playbook_text
from engine.store import Store
from tests.conftest import AS_OF, ROOT
from tests.log_edits import edit_decisions

COURSE = ROOT / "playbooks" / "course.yaml"
SAMPLES = ROOT / "samples" / "cases.jsonl"


@pytest.fixture(scope="module")
def course() -> Iterator[Any]:
    with compile_playbook(load_playbook(COURSE)) as compiled:
        yield compiled


@pytest.fixture
def cases(tmp_path: Path) -> Path:
    """The 41 samples, a line that is not JSON after the third, and a case the course cannot read."""
    lines = SAMPLES.read_text(encoding="utf-8").splitlines()
    bad = ['{"id": "oops', '{"id": "odd", "opportunity": {"amount": "lots"}}']
    path = tmp_path / "cases.jsonl"
    path.write_text("\n".join([*lines[:3], bad[0], *lines[3:], bad[1]]) + "\n", encoding="utf-8")
    return path


def outcomes(events: list[Any]) -> list[tuple[str, Any, list[str]]]:
    """What a reader is shown of each case: its id, its decisions and its actions (or its error code)."""
    shown = []
    for event in events:
        outcome = event.outcome
        if isinstance(outcome, CaseError):
            shown.append((outcome.case_id, outcome.code, []))
        else:
            shown.append((outcome.case, outcome.decisions, [r["id"] for r in outcome.recommendations]))
    return shown


def test_the_source_is_chosen_once_from_the_options() -> None:
    maven = load_mapping("maven")
    assert Source("cases.jsonl").kind == "jsonl" and Source("-").name == "jsonl"
    assert Source("deals.json", maven).kind == "json" and Source("deals.jsonl", maven).name == "json:maven"
    assert Source("export.CSV", maven).name == "csv:maven"
    assert Source("sqlite:///crm.db", maven, table="deals").name == "sql:maven"
    with pytest.raises(ValueError, match="needs --mapping"):
        Source("export.csv")
    with pytest.raises(ValueError, match="needs --mapping"):
        Source("sqlite:///crm.db", table="deals")


def test_every_record_is_one_event_in_input_order_and_counted(course: Any, cases: Path, tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'log.db'}")
    run = ImportRun(Source(str(cases)), Evaluator(course), AS_OF, store, batch=7)
    events = list(run)
    assert [e.line for e in events] == list(range(1, 44))
    assert all(isinstance(e, Evaluated) for e in events)
    assert [e.evaluation for e in events] == list(range(1, 44))  # every case filed, in order
    errors = [e.outcome.code for e in events if isinstance(e.outcome, CaseError)]
    assert errors == ["bad_json", "bad_input"]
    counts = run.counts
    assert (counts.rows, counts.results, counts.errors, counts.earlier) == (43, 41, 2, 0)
    assert (counts.first_evaluation, counts.last_evaluation) == (1, 43)
    assert store.count() == 43
    store.close()


def test_without_a_store_every_case_is_evaluated_and_nothing_kept(course: Any, cases: Path) -> None:
    run = ImportRun(Source(str(cases)), Evaluator(course), AS_OF)
    events = list(run)
    assert len(events) == 43 and all(isinstance(e, Evaluated) and e.evaluation is None for e in events)
    assert (run.counts.results, run.counts.errors, run.counts.first_evaluation) == (41, 2, None)


def test_a_rerun_gives_what_was_stored_and_evaluates_nothing(course: Any, cases: Path, db_url: str) -> None:
    store = Store(db_url)
    first = list(ImportRun(Source(str(cases)), Evaluator(course), AS_OF, store, batch=7))
    run = ImportRun(Source(str(cases)), Evaluator(course), AS_OF, store, batch=7)
    again = list(run)
    assert store.count() == 43  # nothing evaluated again, nothing stored again
    assert all(isinstance(e, StoredEarlier) for e in again)
    assert [e.stored.seq for e in again] == [e.evaluation for e in first]
    assert outcomes(again) == outcomes(first)
    counts = run.counts
    assert (counts.rows, counts.evaluated, counts.earlier_results, counts.earlier_errors) == (43, 0, 41, 2)
    assert counts.first_evaluation is None and counts.earlier_stored is not None
    # a result shown from the log carries its trace, as when it was made
    shown = next(e.outcome for e in again if isinstance(e.outcome, Result))
    assert shown.to_json("en")["trace"] == first[0].outcome.to_json("en")["trace"]
    store.close()


def test_a_run_stopped_midway_resumes_and_shows_the_rest(course: Any, cases: Path, tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'log.db'}")
    stopped = iter(ImportRun(Source(str(cases)), Evaluator(course), AS_OF, store, batch=10))
    for _ in range(15):  # the second batch is committed before its first event is given
        next(stopped)
    del stopped
    assert store.count() == 20
    run = ImportRun(Source(str(cases)), Evaluator(course), AS_OF, store, batch=10)
    events = list(run)
    assert [type(e).__name__ for e in events] == ["StoredEarlier"] * 20 + ["Evaluated"] * 23
    assert (run.counts.earlier, run.counts.evaluated) == (20, 23)
    assert store.count() == 43
    store.close()


def test_reevaluate_files_a_new_generation_under_the_current_playbook(course: Any, cases: Path, tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'log.db'}")
    first = list(ImportRun(Source(str(cases)), Evaluator(course), AS_OF, store))
    text = COURSE.read_text(encoding="utf-8").replace(
        "  high_win_rate:\n    value: 60\n", "  high_win_rate:\n    value: 80\n"
    )
    changed = load_playbook_text(text, "changed.yaml")
    with compile_playbook(changed) as compiled:
        # a changed playbook alone does not evaluate a stored import again: it is shown as it was stored
        shown = list(ImportRun(Source(str(cases)), Evaluator(compiled), AS_OF, store))
        assert store.count() == 43 and all(isinstance(e, StoredEarlier) for e in shown)
        assert {e.outcome.playbook.content_hash for e in shown if isinstance(e.outcome, Result)} == {
            first[0].outcome.playbook.content_hash
        }
        again = list(ImportRun(Source(str(cases)), Evaluator(compiled), AS_OF, store, reevaluate=True))
        assert [e.evaluation for e in again] == list(range(44, 87))
        assert outcomes(again) != outcomes(first)  # the threshold matters for the samples
        assert {e.outcome.playbook.content_hash for e in again if isinstance(e.outcome, Result)} == {
            changed.content_hash
        }
        # later runs show the newest generation
        latest = list(ImportRun(Source(str(cases)), Evaluator(compiled), AS_OF, store))
    assert [e.stored.seq for e in latest] == list(range(44, 87))
    assert outcomes(latest) == outcomes(again)
    assert store.count() == 86 and store.verify() == []
    store.close()


def test_a_stored_case_that_no_longer_re_derives_is_an_error_not_a_silent_result(
    course: Any, cases: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    store = Store(url)
    list(ImportRun(Source(str(cases)), Evaluator(course), AS_OF, store))
    with store.engine.begin() as conn:  # what a bug or an edit would leave
        edit_decisions(conn, 1, json.dumps({"funnel_layer": "x"}))
    events = list(ImportRun(Source(str(cases)), Evaluator(course), AS_OF, store))
    assert isinstance(events[0].outcome, CaseError) and events[0].outcome.code == "stored_mismatch"
    assert "--reevaluate" in events[0].outcome.message
    store.close()


def test_quarantined_records_are_events_in_their_place(course: Any, tmp_path: Path) -> None:
    maven = ROOT.parent / "shared" / "crm-data" / "maven-crm-sales-opportunities"
    if not maven.is_dir():
        pytest.skip(f"the Maven sample set is not at {maven}")
    events = list(ImportRun(Source(str(maven / "sales_pipeline.csv"), load_mapping("maven")), Evaluator(course), AS_OF))
    assert [e.line for e in events] == list(range(2, 8802))  # the header is line 1
    held = [e for e in events if isinstance(e, QuarantinedRecord)]
    assert len(held) == 6711 and {e.record.code for e in held} == {"closed_deal"}


# -- through the CLI: the Maven import run twice ----------------------------------------------------

MAVEN = ROOT.parent / "shared" / "crm-data" / "maven-crm-sales-opportunities"
needs_maven = pytest.mark.skipif(not MAVEN.is_dir(), reason=f"the Maven sample set is not at {MAVEN}")


def open_deals(pipeline: Path) -> list[str]:
    with pipeline.open(encoding="utf-8") as rows:
        return [row["opportunity_id"] for row in csv.DictReader(rows) if row["deal_stage"] not in ("Won", "Lost")]


def maven_slice(folder: Path, rows: int) -> Path:
    """The first ``rows`` deals of sales_pipeline.csv, with the tables the preset joins beside them."""
    for name in ("accounts.csv", "products.csv", "sales_teams.csv"):
        shutil.copy(MAVEN / name, folder / name)
    lines = (MAVEN / "sales_pipeline.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    (folder / "sales_pipeline.csv").write_text("".join(lines[: rows + 1]), encoding="utf-8")
    return folder / "sales_pipeline.csv"


def recommend(pipeline: Path, db: str, *more: str) -> Any:
    args = ["recommend", "--input", str(pipeline), "--mapping", "maven", "--as-of", "2017-06-30", "--db", db]
    return CliRunner().invoke(main, [*args, *more])


def english_cases(text: str) -> list[str]:
    return [line.split()[1] for line in text.splitlines() if line.startswith("case ")]


@needs_maven
def test_a_rerun_in_english_shows_every_stored_result_in_english(tmp_path: Path) -> None:
    pipeline = maven_slice(tmp_path, 400)
    db = f"sqlite:///{tmp_path / 'log.db'}"
    first = recommend(pipeline, db, "--format", "json")
    assert first.exit_code == 0, first.stderr
    made = {line["case"]: line for line in map(json.loads, first.stdout.splitlines()) if "evaluation" in line}
    again = recommend(pipeline, db, "--lang", "en")
    assert again.exit_code == 0, again.stderr
    deals = open_deals(pipeline)
    assert 0 < len(deals) < 400
    assert english_cases(again.stdout) == deals
    assert all(block[2].startswith("  stored earlier, on ") for block in case_blocks(again.stdout))
    # Chinese only where English text keeps the course's own words: a bracketed term or a 「quote」
    outside_course_terms = re.sub(r"\([^()]*\)|「[^」]*」", "", again.stdout)
    assert not re.search(r"[\u4e00-\u9fff]", outside_course_terms)
    assert f"{len(deals)} already stored by an earlier run of this import" in again.stderr
    assert "0 cases evaluated" in again.stderr and "stored in" not in again.stderr
    # as JSON, the same stored evaluations, said to be stored earlier, in the result schema
    schema = json.loads((ROOT / "schemas" / "result.schema.json").read_text(encoding="utf-8"))
    shown = [json.loads(line) for line in recommend(pipeline, db, "--format", "json").stdout.splitlines()]
    validator = jsonschema.Draft202012Validator(schema)
    for line in shown:
        validator.validate(line)
    results = [line for line in shown if "evaluation" in line]
    assert [r["case"] for r in results] == deals and all(r["stored_earlier"] for r in results)
    assert {r["case"]: (r["evaluation"], r["decisions"]) for r in results} == {
        c: (r["evaluation"], r["decisions"]) for c, r in made.items()
    }
    store = Store(db)
    assert store.count() == len(deals)
    # --reevaluate: evaluated again, as new evaluations
    renewed = recommend(pipeline, db, "--reevaluate", "--format", "json", "--lang", "en")
    assert renewed.exit_code == 0, renewed.stderr
    numbers = [line["evaluation"] for line in map(json.loads, renewed.stdout.splitlines()) if "evaluation" in line]
    assert numbers == list(range(len(deals) + 1, 2 * len(deals) + 1))
    assert f"{len(deals)} cases evaluated" in renewed.stderr
    assert store.count() == 2 * len(deals) and store.verify() == []
    store.close()


@needs_maven
def test_the_whole_maven_import_run_twice_shows_every_open_deal_the_second_time(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'log.db'}"
    pipeline = MAVEN / "sales_pipeline.csv"
    assert recommend(pipeline, db, "--format", "summary").exit_code == 0
    again = recommend(pipeline, db, "--lang", "en")
    assert again.exit_code == 0, again.stderr
    deals = open_deals(pipeline)
    assert len(deals) == 2089
    assert english_cases(again.stdout) == deals
    assert "2089 already stored by an earlier run of this import" in again.stderr


def case_blocks(text: str) -> list[list[str]]:
    return [block.splitlines() for block in text.strip().split("\n\n")]


@needs_maven
def test_text_for_people_who_and_where_first_determined_decisions_and_quarantine_counted(tmp_path: Path) -> None:
    pipeline = maven_slice(tmp_path, 300)
    with pipeline.open(encoding="utf-8") as rows:
        deals = {row["opportunity_id"]: row for row in csv.DictReader(rows)}
    with (MAVEN / "sales_teams.csv").open(encoding="utf-8") as rows:
        region = {row["sales_agent"]: row["regional_office"] for row in csv.DictReader(rows)}
    closed = sum(row["deal_stage"] in ("Won", "Lost") for row in deals.values())
    shown = recommend(pipeline, "sqlite://", "--no-store")
    assert shown.exit_code == 0, shown.stderr
    blocks = case_blocks(shown.stdout)
    assert blocks[0][0].startswith("案例 ")  # a case first: no notice of a closed deal before it
    assert len(blocks) == len(deals) - closed and all(block[0].startswith("案例 ") for block in blocks)
    for block in blocks:
        deal = deals[block[0].split()[1]]
        who = f"客户经理 {deal['sales_agent']} · 区域 {region[deal['sales_agent']]} · 金额 "
        assert who in block[1] and (not deal["account"] or block[1].startswith(f"  客户 {deal['account']} · "))
        assert not any(": 未定" in line for line in block)  # only what was determined
        assert any(line.startswith("    另有 ") and "项结论未定" in line for line in block)
    assert "quarantined" not in shown.stdout and "quarantined: closed_deal" not in shown.stderr
    assert f"隔离 {closed} 行(closed_deal {closed} 行;加 --verbose 逐行列出)" in shown.stderr
    every = recommend(pipeline, "sqlite://", "--no-store", "--all", "--verbose")
    # each undetermined decision names what the CRM record lacks for it
    assert sum(": 未定(缺少:" in line for line in every.stdout.splitlines()) > 0 and "另有 " not in every.stdout
    listed = [line for line in every.stderr.splitlines() if ": quarantined: closed_deal: " in line]
    assert len(listed) == closed and listed[0].startswith(f"{pipeline}:")
    assert f"隔离 {closed} 行(closed_deal {closed} 行)" in every.stderr


def test_a_case_id_read_twice_in_one_input_is_evaluated_once_and_the_other_reported(
    course: Any, tmp_path: Path
) -> None:
    path = tmp_path / "twice.jsonl"
    lines = [
        '{"id": "d1", "opportunity": {"amount": 10, "period_target": 100}}',
        '{"id": "d2", "opportunity": {"amount": 50, "period_target": 100}}',
        '{"id": "d1", "opportunity": {"amount": 90, "period_target": 100}}',
        '{"opportunity": {"id": "d2"}}',
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    store = Store(f"sqlite:///{tmp_path / 'log.db'}")
    for rerun in (False, True):
        run = ImportRun(Source(str(path)), Evaluator(course), AS_OF, store)
        events = list(run)
        assert [type(e).__name__ for e in events] == [
            "StoredEarlier" if rerun else "Evaluated",
            "StoredEarlier" if rerun else "Evaluated",
            "QuarantinedRecord",
            "QuarantinedRecord",
        ]
        held = [e.record for e in events if isinstance(e, QuarantinedRecord)]
        assert [(q.line, q.record_id, q.code) for q in held] == [
            (3, "d1", "duplicate_case"),
            (4, "d2", "duplicate_case"),
        ]
        assert held[0].reason == "the same id as the record at line 1, which is the one evaluated"
        assert (run.counts.rows, run.counts.quarantined["duplicate_case"]) == (4, 2)
        assert store.count() == 2  # the first of each id, once
    store.close()
    result = CliRunner().invoke(
        main,
        [
            "recommend",
            "--playbook",
            str(COURSE),
            "--input",
            str(path),
            "--as-of",
            "2026-11-27",
            "--no-store",
            "-v",
            "--lang",
            "en",
        ],
    )
    assert result.exit_code == 0, result.stderr
    assert f"{path}:3: quarantined: duplicate_case: the same id as the record at line 1" in result.stderr
    assert "4 rows: 2 cases evaluated (2 results, 0 errors), 2 quarantined (duplicate_case 2)" in result.stderr
    # in Chinese, the same counts, the standard quarantine code named in Chinese, only option names in Latin letters
    zh = CliRunner().invoke(
        main, ["recommend", "--playbook", str(COURSE), "--input", str(path), "--as-of", "2026-11-27", "--no-store"]
    )
    summary = zh.stderr.strip().splitlines()[-1]
    assert summary == "共 4 行:评估 2 个案例(成功 2 个,出错 0 个),隔离 2 行(案例编号重复 2 行;加 --verbose 逐行列出)"
    assert not re.search(r"[A-Za-z]", re.sub(r"--[a-z]+", "", summary))


def test_two_runs_of_one_import_at_once_each_account_for_every_record(course: Any, cases: Path, db_url: str) -> None:
    """A run that finds its cases filed meanwhile by another run of the same import gives them as stored
    earlier: no record dropped from its output or its counts, none stored twice."""
    store = Store(db_url)
    first = ImportRun(Source(str(cases)), Evaluator(course), AS_OF, store, batch=10)
    started = iter(first)
    next(started)  # the first run has read what was stored (nothing) and filed its first batch
    second = ImportRun(Source(str(cases)), Evaluator(course), AS_OF, store, batch=10)
    assert [type(e).__name__ for e in second] == ["StoredEarlier"] * 10 + ["Evaluated"] * 33
    rest = list(started)  # every later batch of the first run was filed by the second meanwhile
    assert [type(e).__name__ for e in rest] == ["Evaluated"] * 9 + ["StoredEarlier"] * 33
    assert [e.line for e in rest] == list(range(2, 44))
    counts = first.counts
    assert (counts.rows, counts.evaluated, counts.earlier, counts.errors + counts.earlier_errors) == (43, 10, 33, 2)
    assert store.count() == 43
    assert store.verify() == []
    store.close()


@needs_maven
def test_a_deal_a_later_export_shows_closed_has_its_open_work_cancelled_saying_why(tmp_path: Path, db_url: str) -> None:
    """A file import sets a Won or Lost deal aside (closed_deal) and cancels that record's open tasks, as the
    webhook path does: a deal the CRM closed asks nobody for anything any more."""
    from engine.tasks import history, listing

    pipeline = maven_slice(tmp_path, 400)
    assert recommend(pipeline, db_url).exit_code == 0
    store = Store(db_url)
    before = listing(store)
    won, lost = sorted({t.record for t in before})[:2]
    others = {t.id for t in before if t.record not in (won, lost)}
    assert others and all(t.status == "open" for t in before)
    with pipeline.open(encoding="utf-8") as read:
        rows = list(csv.DictReader(read))
    for row in rows:
        if row["opportunity_id"] in (won, lost):
            row.update(deal_stage="Won" if row["opportunity_id"] == won else "Lost", close_date="2017-07-10")
            row["close_value"] = "1000" if row["opportunity_id"] == won else "0"
    later = tmp_path / "later"
    later.mkdir()
    for name in ("accounts.csv", "products.csv", "sales_teams.csv"):
        shutil.copy(tmp_path / name, later / name)
    with (later / "sales_pipeline.csv").open("w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    args = ["recommend", "--input", str(later / "sales_pipeline.csv"), "--mapping", "maven", "--as-of", "2017-07-15"]
    result = CliRunner().invoke(main, [*args, "--db", db_url])
    assert result.exit_code == 0, result.stderr
    after = {t.id: t for t in listing(store)}
    closed = [t for t in after.values() if t.record in (won, lost)]
    assert closed and {t.status for t in closed} == {"cancelled"}
    assert all(after[i].status == "open" for i in others)  # the deals still open keep their work
    for task in closed:
        last = history(store, task.id)[-1]
        stage = "Won" if task.record == won else "Lost"
        assert (last["as_of"], last["status"]) == ("2017-07-15", "cancelled")
        assert last["why"].startswith("the opportunity closed: ") and f"deal_stage {stage}" in last["why"]
    again = CliRunner().invoke(main, [*args, "--db", db_url])  # the same export again cancels nothing twice
    assert again.exit_code == 0, again.stderr
    assert [(t.id, t.status) for t in listing(store)] == [(t.id, t.status) for t in after.values()]
    assert store.verify() == []
    store.close()
