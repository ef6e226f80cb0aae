"""engine/timeline.py through `playbook why` and `playbook history`: each task of an evaluation with its whole
timeline — made, accepted by a person, overdue, cancelled because its advice changed or its deal closed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cli import main
from engine.store import Store
from engine.tasks import close_records
from engine.validate import load_playbook
from tests.conftest import ROOT
from tests.test_text import ASCII_WORD, authored_words, identifiers

COURSE = ROOT / "playbooks" / "course.yaml"
SAMPLES = ROOT / "samples" / "cases.jsonl"


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def ok(*args: str) -> str:
    code, out, err = invoke(*args)
    assert code == 0, err
    return out


@pytest.fixture
def lived(tmp_path: Path, db_url: str) -> tuple[str, int]:
    """The samples at 2026-11-27; opp-001's intensive attack accepted, time moved on, opp-001 evaluated again
    with its deal gone cold (its old advice no longer holds), opp-002 closed.  Returns the log and the
    number of opp-001's second evaluation."""
    ok("recommend", "--playbook", str(COURSE), "--input", str(SAMPLES), "--as-of", "2026-11-27", "--db", db_url)
    ok("outcome", "1", "intensive_attack", "--status", "accepted", "--who", "li.wei", "--why", "meeting booked",
       "--as-of", "2026-11-28", "--db", db_url)  # fmt: skip
    ok("tasks", "advance", "--as-of", "2026-12-18", "--db", db_url)
    case = json.loads(SAMPLES.read_text(encoding="utf-8").splitlines()[0])
    case["opportunity"]["milestones"] = case["opportunity"]["milestones"][:3]
    case["account"]["attractiveness"] = "low"
    cold = tmp_path / "cold.jsonl"
    cold.write_text(json.dumps(case) + "\n", encoding="utf-8")
    ok("recommend", "--playbook", str(COURSE), "--input", str(cold), "--as-of", "2026-12-20", "--db", db_url)
    store = Store(db_url)
    with store.write() as writer:  # what a file import or a webhook does when the CRM closes the deal
        close_records(writer.tasks, "jsonl", {"opp-002": "deal_stage Won: closed"}, "2026-12-21")
    later = list(store.search(record_id="opp-001"))[-1].seq
    store.close()
    return db_url, later


def tasks_of(db: str, record: str) -> dict[int, dict[str, Any]]:
    out = ok("tasks", "list", "--record", record, "--format", "json", "--db", db)
    return {task["task"]: task for task in map(json.loads, out.splitlines())}


def test_history_gives_every_task_of_a_record_under_the_evaluation_that_made_it_with_its_whole_timeline(
    lived: tuple[str, int],
) -> None:
    db, later = lived
    lines = [json.loads(line) for line in ok("history", "opp-001", "--format", "json", "--db", db).splitlines()]
    assert [line["evaluation"] for line in lines] == [1, later]
    shown = [(line["evaluation"], task) for line in lines for task in line["tasks"]]
    held = tasks_of(db, "opp-001")
    assert sorted(task["task"] for _, task in shown) == sorted(held)  # each task once, none left out
    for evaluation, task in shown:
        assert task["evaluation_seq"] == evaluation
        moves = task["timeline"]
        assert moves[0]["status"] == "open" and moves[-1]["status"] == held[task["task"]]["status"]
        assert [m["event"] for m in moves] == sorted(m["event"] for m in moves)
    (attack,) = [t for e, t in shown if e == 1 and t["action"] == "intensive_attack" and t["occurrence"] == 1]
    steps = [(m["as_of"], m["status"], m["who"]) for m in attack["timeline"]]
    assert steps[:2] == [("2026-11-27", "open", "playbook"), ("2026-11-28", "accepted", "li.wei")]
    assert attack["timeline"][1]["why"] == "meeting booked"
    assert steps[-1] == ("2026-12-20", "cancelled", "playbook")
    assert attack["timeline"][-1]["why"].startswith(f"evaluation #{later} no longer recommends intensive_attack")
    closed = [task for line in map(json.loads, ok("history", "opp-002", "--format", "json", "--db", db).splitlines())
              for task in line["tasks"]]  # fmt: skip
    assert closed and all(t["timeline"][-1]["why"] == "the opportunity closed: deal_stage Won: closed" for t in closed)
    text = ok("history", "opp-001", "--db", db)
    assert "    Tasks:" in text
    assert "2026-11-28  accepted   by li.wei: meeting booked" in text
    assert f"2026-12-20  cancelled  by the playbook: evaluation #{later} no longer recommends intensive_attack" in text


def test_why_follows_the_advice_into_its_tasks_including_one_an_earlier_evaluation_made(
    lived: tuple[str, int],
) -> None:
    db, later = lived
    text = ok("why", "1", "--action", "intensive_attack", "--lang", "en", "--db", db)
    tasks_block = text[text.index("\nTasks:\n") :]
    assert "accepted   by li.wei: meeting booked" in tasks_block and "cancelled  by the playbook" in tasks_block
    assert "look after" not in tasks_block.lower()  # --action: only that action's tasks
    # the second evaluation still advises looking after the deal: the task the first made is its task
    kept = json.loads(ok("why", str(later), "--format", "json", "--lang", "en", "--db", db))
    first_made = {t for t, task in tasks_of(db, "opp-001").items() if task["evaluation_seq"] == 1}
    carried = [task for task in kept["tasks"] if task["task"] in first_made]
    assert [task["action"] for task in carried] == ["look_after_fat_sheep", "learn_purchasing_procedure",
                                                    "learn_key_needs"]  # fmt: skip
    assert {task["action"] for task in kept["tasks"] if task["evaluation_seq"] == later} >= {"fight_guerrilla"}
    assert kept["evaluation"] == later and kept["explanation"] and kept["header"]


def test_the_chinese_timelines_say_each_move_again_without_identifiers(lived: tuple[str, int]) -> None:
    db, later = lived
    course = load_playbook(COURSE)
    forbidden = identifiers(course) - authored_words(course, "zh")
    forbidden |= {"playbook", "clock", "account_manager", "director", "open", "overdue", "cancelled", "task"}
    said = []
    for record in ("opp-001", "opp-002"):
        out = ok("history", record, "--lang", "zh", "--db", db)
        said += [line for line in out.splitlines() if line.startswith("    ")][:]
    why = ok("why", "1", "--action", "intensive_attack", "--lang", "zh", "--db", db)
    said += why[why.index("\n任务:\n") :].splitlines()
    text = "\n".join(line for line in said if not line.lstrip().startswith("outcome:"))
    assert "剧本:规则「" in text and ",li.wei:meeting booked" in text
    assert f"评估 #{later} 不再建议此项" in text and "商机已关闭" in text and "逾期" in text
    leaks = {word for word in ASCII_WORD.findall(text) if word in forbidden}
    assert leaks == set()
    payload = json.loads(ok("why", "1", "--format", "json", "--lang", "zh", "--db", db))
    says = [move["says"] for task in payload["tasks"] for move in task["timeline"]]
    assert says and all(not (set(ASCII_WORD.findall(s)) & forbidden) for s in says)
