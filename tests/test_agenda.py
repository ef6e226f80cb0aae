"""`playbook tasks` and `playbook agenda` over the course playbook's sample cases, as people read them."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import main
from engine.validate import load_playbook
from tests.conftest import ROOT
from tests.test_text import ASCII_WORD, authored_words, identifiers

COURSE = ROOT / "playbooks" / "course.yaml"
SAMPLES = ROOT / "samples" / "cases.jsonl"


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'work.db'}"
    code, _, err = invoke(
        "recommend", "--playbook", str(COURSE), "--input", str(SAMPLES), "--as-of", "2026-11-27", "--db", url
    )
    assert code == 0, err
    return url


def test_time_moved_on_twice_to_one_day_changes_nothing_the_second_time(db: str) -> None:
    code, out, err = invoke("tasks", "advance", "--as-of", "2026-12-18", "--db", db)
    assert code == 0, err
    overdue, escalated = (int(out.split(", ")[k].split()[-2]) for k in (0, 1))
    assert overdue > 0 and escalated > 0
    assert invoke("tasks", "advance", "--as-of", "2026-12-18", "--db", db)[1].startswith(
        "2026-12-18: 0 overdue, 0 escalated, 0 repeated"
    )
    code, out, err = invoke("audit", "verify", "--db", db)
    assert code == 0 and "ok: the chains verify" in out + err


def test_the_agenda_puts_escalated_work_first_then_overdue_then_this_weeks(db: str) -> None:
    invoke("tasks", "advance", "--as-of", "2026-12-18", "--db", db)
    code, out, err = invoke(
        "agenda", "--playbook", str(COURSE), "--as-of", "2026-12-18", "--format", "json", "--db", db
    )
    assert code == 0, err
    items = json.loads(out)["items"]
    order = ["escalated", "overdue", "due_soon", "open", "review"]
    sections = [item["section"] for item in items]
    assert sections == sorted(sections, key=order.index) and "escalated" in sections
    reviews = {item["review"]: item["day"] for item in items if item["section"] == "review"}
    assert reviews == {
        "weekly_revenue": "2026-12-21",  # the next Monday
        "biweekly_projects": reviews["biweekly_projects"],
        "monthly_finance": "2027-01-01",
        "quarterly_audit": "2027-01-01",
        "half_year_scan": "2027-01-01",
    }
    assert reviews["biweekly_projects"] in ("2026-12-21", "2026-12-28")
    code, out, _ = invoke("agenda", "--owner", "director", "--as-of", "2026-12-18", "--format", "csv", "--db", db)
    rows = list(csv.DictReader(io.StringIO(out)))
    escalated = [r for r in rows if r["section"] == "escalated"]
    assert escalated and all(r["escalate_to"] == "director" for r in escalated)
    assert {r["action"] for r in rows if r["section"] == "open"} >= {"director_steps_in"}


def test_an_outcome_moves_its_task(db: str) -> None:
    code, out, _ = invoke("tasks", "list", "--format", "json", "--db", db)
    first = json.loads(out.splitlines()[0])
    code, _, err = invoke(
        "outcome", str(first["evaluation_seq"]), first["action"], "--status", "done", "--who", "li.wei",
        "--as-of", "2026-11-30", "--db", db,
    )  # fmt: skip
    assert code == 0, err
    code, out, _ = invoke("tasks", "history", str(first["task"]), "--db", db)
    assert out.splitlines()[-1].split()[1:4] == ["2026-11-30", "done", "li.wei:"]


def test_the_chinese_agenda_names_nothing_by_its_identifier(db: str) -> None:
    invoke("tasks", "advance", "--as-of", "2026-12-18", "--db", db)
    course = load_playbook(COURSE)
    forbidden = identifiers(course) - authored_words(course, "zh")
    forbidden |= {"account_manager", "director", "team", "open", "overdue", "escalated", "due", "task", "record"}
    for owner in ("account_manager", "director"):
        code, out, err = invoke(
            "agenda", "--playbook", str(COURSE), "--owner", owner, "--as-of", "2026-12-18", "--lang", "zh", "--db", db
        )
        assert code == 0, err
        assert "已升级" in out and ("下次检查" in out) == (owner == "director")  # the reviews are the director's
        leaks = {word for word in ASCII_WORD.findall(out) if word in forbidden}
        assert leaks == set()
