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


# -- a team's agenda: per person --------------------------------------------------------------------

PEOPLE = {"East": ("Ana Ruiz", "Ben Cole"), "West": ("Cy Dahl",)}


@pytest.fixture
def team_db(tmp_path: Path, db_url: str) -> tuple[str, dict[str, tuple[str, str]]]:
    """The sample cases, each deal given an owner and a team; the log moved on to 2026-12-18."""
    who: dict[str, tuple[str, str]] = {}
    lines = []
    for i, line in enumerate(SAMPLES.read_text(encoding="utf-8").splitlines()):
        case = json.loads(line)
        team = "East" if i % 3 else "West"
        owner = PEOPLE[team][i % len(PEOPLE[team])]
        case["opportunity"].update(owner=owner, team=team)
        who[case["id"]] = (owner, team)
        lines.append(json.dumps(case))
    cases = tmp_path / "cases.jsonl"
    cases.write_text("\n".join(lines) + "\n", encoding="utf-8")
    url = db_url  # the people are read from the stored facts: on SQLite and PostgreSQL
    code, _, err = invoke(
        "recommend", "--playbook", str(COURSE), "--input", str(cases), "--as-of", "2026-11-27", "--db", url
    )
    assert code == 0, err
    assert invoke("tasks", "advance", "--as-of", "2026-12-18", "--db", url)[0] == 0
    return url, who


def test_a_teams_agenda_gives_each_person_their_work_most_pressed_first(
    team_db: tuple[str, dict[str, tuple[str, str]]],
) -> None:
    db, who = team_db
    code, out, err = invoke(
        "agenda", "--playbook", str(COURSE), "--team", "East", "--as-of", "2026-12-18", "--format", "json", "--db", db
    )
    assert code == 0, err
    items = json.loads(out)["items"]
    listed = [json.loads(line) for line in invoke("tasks", "list", "--format", "json", "--db", db)[1].splitlines()]
    active = {t["task"]: t for t in listed if t["status"] in ("open", "accepted", "overdue", "escalated")}
    east = {i for i, t in active.items() if who[t["record"]][1] == "East"}
    tasks = [item for item in items if item["section"] != "review"]
    assert {item["task"] for item in tasks} == east  # all the team's active work, and no other team's
    expected_desks = set()
    for i in east:
        task = active[i]
        expected_desks.add((i, who[task["record"]][0] if task["owner"] == "account_manager" else "East"))
        if task["status"] == "escalated":  # also on the desk of whom it went to: the team's manager
            expected_desks.add((i, "East"))
    assert {(item["task"], item["person"]) for item in tasks} == expected_desks
    assert {item["person"] for item in tasks} == {"Ana Ruiz", "Ben Cole", "East"}
    order = ["escalated", "overdue", "due_soon", "open"]
    people = list(dict.fromkeys(item["person"] for item in tasks))
    for person in people:  # within a person: the most urgent first
        sections = [item["section"] for item in tasks if item["person"] == person]
        assert sections == sorted(sections, key=order.index)
    pressed = [
        tuple(-sum(1 for item in tasks if item["person"] == p and item["section"] == s) for s in order[:3])
        for p in people
    ]
    assert pressed == sorted(pressed)  # the person with the most escalated (then overdue, due) work first
    reviews = [item for item in items if item["section"] == "review"]
    assert {r["review"] for r in reviews} == set(load_playbook(COURSE).schedules)
    assert all(r["person"] == "East" and r["open_work"] == len(east) for r in reviews)


def test_a_teams_agenda_reads_in_chinese_without_identifiers_and_an_unknown_team_is_refused(
    team_db: tuple[str, dict[str, tuple[str, str]]],
) -> None:
    db, _ = team_db
    course = load_playbook(COURSE)
    forbidden = identifiers(course) - authored_words(course, "zh")
    forbidden |= {"account_manager", "director", "team", "open", "overdue", "escalated", "due", "task", "record"}
    code, out, err = invoke(
        "agenda", "--playbook", str(COURSE), "--team", "West", "--as-of", "2026-12-18", "--lang", "zh", "--db", db
    )
    assert code == 0, err
    assert out.startswith("团队工作日程:West,2026-12-18") and "Cy Dahl(客户经理)" in out and "下次检查" in out
    assert {word for word in ASCII_WORD.findall(out) if word in forbidden} == set()
    code, out, err = invoke("agenda", "--team", "West", "--as-of", "2026-12-18", "--db", db)
    assert code == 0 and "Cy Dahl (account manager): " in out
    code, _, err = invoke("agenda", "--team", "North", "--db", db)
    assert code != 0 and "no task of a deal of team 'North'" in err and "East, West" in err
    code, _, err = invoke("agenda", "--team", "West", "--owner", "director", "--db", db)
    assert code == 2 and "give one" in err
