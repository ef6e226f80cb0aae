"""The web console's routes, sign-in, roles, CSRF, escaping and languages, through Starlette's client.

The real-browser tests are in tests/test_console_browser.py.
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.testclient import TestClient

from adapters.console import Console, console_mount
from cli import main
from engine import load_playbook
from engine.store import Store
from engine.tasks import listing
from tests.console_log import COURSE, FORMULA, OWNERS, PASSWORD, XSS, make_console_log
from tests.log_edits import edit_decisions
from tests.test_text import authored_words, identifiers

SECRET = "a-test-console-secret-of-forty-characters!"  # noqa: S105 - the tests' own signing secret
ASCII_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


def client_of(store: Store) -> TestClient:
    console = Console(store, playbook_path=str(COURSE), secret=SECRET)
    return TestClient(Starlette(routes=[console_mount(console)]))


@pytest.fixture(scope="module")
def read_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """One log the read-only tests share (SQLite)."""
    store = make_console_log(f"sqlite:///{tmp_path_factory.mktemp('console') / 'log.db'}")
    yield store
    store.close()


@pytest.fixture
def client(read_log: Store) -> TestClient:
    return client_of(read_log)


def visible_text(page: str) -> str:
    """What a reader sees: tags and their attributes gone, entities decoded."""
    page = re.sub(r"<(script|style)\b.*?</\1>", " ", page, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "the page has no CSRF token"
    return found.group(1)


def sign_in(client: TestClient, name: str, password: str = PASSWORD) -> None:
    token = csrf_of(client.get("/ui/login").text)
    answer = client.post("/ui/login", data={"name": name, "password": password, "csrf": token}, follow_redirects=False)
    assert answer.status_code == 303, answer.text


def dana_evaluation(store: Store) -> int:
    """An evaluation of a deal owned by the manager's team, with recommendations."""
    for stored in list(store.search(newest_first=True)):
        if stored.facts["opportunity"].get("owner") == OWNERS[0] and stored.recommendations:
            return stored.seq
    raise AssertionError("no evaluation of the team's deals")


PAGES = (
    "/ui/",
    "/ui/evaluations/2",
    "/ui/why",
    "/ui/playbook",
    "/ui/audit",
    "/ui/portfolio",
    "/ui/agenda",
    "/ui/tasks",
    "/ui/login",
)


@pytest.mark.parametrize("path", PAGES)
def test_every_page_renders_in_both_languages_with_a_switch(client: TestClient, path: str) -> None:
    zh = client.get(path, params={"lang": "zh"})
    assert zh.status_code == 200 and '<html lang="zh-CN">' in zh.text
    assert 'hreflang="en"' in zh.text and "lang=en" in zh.text  # the switch to English
    en = client.get(path, params={"lang": "en"})
    assert en.status_code == 200 and '<html lang="en">' in en.text and 'hreflang="zh"' in en.text
    # the choice is kept for the next page
    assert '<html lang="en">' in client.get("/ui/agenda").text
    assert zh.headers["content-security-policy"].startswith("default-src 'none'")


def test_chinese_pages_name_nothing_by_the_playbooks_identifiers(client: TestClient, read_log: Store) -> None:
    playbook = load_playbook(COURSE)
    # the playbook's own Chinese descriptions name some parameters on purpose ("按参数 high_profit_margin"):
    # those are the author's words, shown as written
    described = [d.get("zh", "") for d in _descriptions(playbook)]
    authored = authored_words(playbook, "zh") | {w for text in described for w in ASCII_WORD.findall(text)}
    names = {n for n in identifiers(playbook) if ASCII_WORD.fullmatch(n)} - authored
    seq = dana_evaluation(read_log)
    stored = read_log.get(seq)
    action = stored.recommendations[0]["id"]
    pages = [
        "/ui/",
        f"/ui/evaluations/{seq}",
        f"/ui/evaluations/{seq}?why_not={action}",
        f"/ui/why?record={stored.record_id}&action={action}",
        "/ui/playbook",
        "/ui/audit?verify=1",
        "/ui/portfolio",
        "/ui/portfolio?group_by=region",
        "/ui/agenda",
        "/ui/tasks",
        f"/ui/tasks?record={stored.record_id}",
        "/ui/login",
    ]
    for path in pages:
        answer = client.get(path, params={"lang": "zh"})
        assert answer.status_code == 200, path
        words = set(ASCII_WORD.findall(visible_text(answer.text)))
        assert not words & names, f"{path} shows identifiers: {sorted(words & names)}"


def _descriptions(playbook: Any) -> list[dict[str, str]]:
    things = [playbook, *playbook.parameters.values(), *playbook.inputs.values(), *playbook.decisions.values()]
    things += [*playbook.rules, *playbook.actions.values()]
    texts = [getattr(t, name, None) for t in things for name in ("description", "explain")]
    return [t for t in texts if isinstance(t, dict)]


def test_a_search_finds_by_record_owner_region_action_version_and_dates(client: TestClient, read_log: Store) -> None:
    def found(**params: str) -> set[int]:
        answer = client.get("/ui/", params={**params, "lang": "en"})
        assert answer.status_code == 200
        return {int(n) for n in re.findall(r'href="/ui/evaluations/(\d+)"', answer.text)}

    assert found(record="opp-001") == {1, 13}
    assert found(owner=OWNERS[0], since="2026-12-01") == set(range(13, 25, 2))
    assert found(region="West", until="2026-11-30") == {3, 4, 7, 8, 11, 12}
    assert found(version="1.1.0") == set(range(13, 25))
    action = read_log.get(1).recommendations[0]["id"]
    with_action = {s.seq for s in read_log.search(action=action)}
    assert found(action=action) == with_action and with_action
    assert found(record="no-such-record") == set()
    bad = client.get("/ui/", params={"since": "27/11/2026", "lang": "en"})
    assert bad.status_code == 400 and "YYYY-MM-DD" in bad.text


def test_the_evaluation_page_holds_the_trace_with_sources_and_answers_why_not(
    client: TestClient, read_log: Store
) -> None:
    stored = read_log.get(2)
    page = client.get("/ui/evaluations/2", params={"lang": "en"}).text
    text = visible_text(page)
    assert "evaluation #2" in text and stored.playbook_hash in text
    assert "The whole trace" in text and "G-03" in text  # a course citation in the trace
    missing = next(a for a in load_playbook(COURSE).actions if a not in {r["id"] for r in stored.recommendations})
    answer = client.get("/ui/evaluations/2", params={"lang": "en", "why_not": missing})
    assert answer.status_code == 200 and 'class="answer"' in answer.text
    unknown = client.get("/ui/evaluations/2", params={"lang": "en", "why_not": "no_such_thing"})
    assert unknown.status_code == 400 and "no action of the playbook" in unknown.text
    assert client.get("/ui/evaluations/999").status_code == 404


def test_markup_in_a_case_is_shown_as_text(client: TestClient) -> None:
    for lang in ("zh", "en"):
        page = client.get("/ui/evaluations/2", params={"lang": lang}).text
        assert XSS not in page and html.escape(XSS, quote=False) in page.replace("&#39;", "'")
        assert XSS in visible_text(page)
    query = client.get("/ui/", params={"record": XSS, "lang": "en"}).text
    assert XSS not in query  # a query echoed into the form is escaped too


def test_the_why_page_answers_why_an_action_was_advised_on_a_date(client: TestClient, read_log: Store) -> None:
    stored = read_log.get(1)
    action = stored.recommendations[0]["id"]
    answer = client.get("/ui/why", params={"record": "opp-001", "action": action, "on": "2026-11-30", "lang": "en"})
    assert answer.status_code == 200
    text = visible_text(answer.text)
    assert "evaluation #1" in text and stored.playbook_hash in text and "no outcome recorded yet" in text
    latest = client.get("/ui/why", params={"record": "opp-001", "action": action, "lang": "en"})
    assert "evaluation #13" in visible_text(latest.text)
    nothing = client.get("/ui/why", params={"record": "opp-001", "action": action, "on": "2026-01-01", "lang": "en"})
    assert nothing.status_code == 404 and "no evaluation of record" in nothing.text


def test_exports_hold_the_list_with_outcomes_and_no_formulas(client: TestClient, read_log: Store) -> None:
    exported = client.get("/ui/export.csv", params={"until": "2026-11-30"})
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert sorted(int(r["evaluation"]) for r in rows) == list(range(1, 13))
    assert "outcomes" in rows[0]
    assert any(r["account_id"] == "'" + FORMULA for r in rows)  # written so no spreadsheet runs it
    lines = client.get("/ui/export.jsonl", params={"owner": OWNERS[1], "limit": "3"}).text.splitlines()
    documents = [json.loads(line) for line in lines]
    assert len(documents) == 3
    assert all(read_log.get(d["evaluation"]).facts["opportunity"]["owner"] == OWNERS[1] for d in documents)
    assert all("outcomes" in d for d in documents)


def test_signing_in_needs_the_right_password_and_the_forms_token(client: TestClient) -> None:
    token = csrf_of(client.get("/ui/login").text)
    wrong = client.post("/ui/login?lang=en", data={"name": "ann", "password": "not it at all", "csrf": token})
    assert wrong.status_code == 401 and "Wrong user name or password" in wrong.text
    nobody = client.post("/ui/login", data={"name": "nobody", "password": PASSWORD, "csrf": token})
    assert nobody.status_code == 401
    no_token = client.post("/ui/login", data={"name": "ann", "password": PASSWORD}, follow_redirects=False)
    assert no_token.status_code == 403
    forged = client.post("/ui/login", data={"name": "ann", "password": PASSWORD, "csrf": "x" * 43})
    assert forged.status_code == 403
    sign_in(client, "ann")
    assert "ann" in visible_text(client.get("/ui/", params={"lang": "en"}).text)


def test_no_secret_or_key_is_in_a_page_or_the_cookie_in_clear(client: TestClient) -> None:
    sign_in(client, "ann")
    for path in PAGES:
        page = client.get(path).text
        assert SECRET not in page and "argon2" not in page
    cookie = client.cookies.get("playbook_console")
    assert cookie and SECRET not in cookie and "ann" not in cookie.split(".")[-1]


def test_the_diff_and_its_replay_are_for_sales_ops(client: TestClient, read_log: Store) -> None:
    assert client.get("/ui/diff").status_code == 403
    sign_in(client, "ann")
    assert client.get("/ui/diff").status_code == 403
    ops = client_of(read_log)
    sign_in(ops, "otto")
    page = ops.get("/ui/diff", params={"lang": "en", "replay": "1"})
    assert page.status_code == 200
    text = visible_text(page.text)
    assert "high_profit_margin" in text and "0.3" in text and "0.9" in text
    assert "Replay impact" in text and re.search(r"\d+ replayed: \d+ would change", text)
    # in Chinese the changed keys of the file are named too, not written as the file's keys
    zh = visible_text(ops.get("/ui/diff", params={"lang": "zh"}).text)
    assert "参数 “高盈利”的最低利润率" in zh and "取值" in zh and "版本" in zh
    assert not set(ASCII_WORD.findall(zh)) & {"value", "version", "high_profit_margin", "label"}


def test_a_manager_records_outcomes_for_the_team_only(db_url: str) -> None:
    store = make_console_log(db_url)
    try:
        client = client_of(store)
        seq = dana_evaluation(store)
        other = next(
            s.seq for s in store.search() if s.facts["opportunity"]["owner"] == OWNERS[1] and s.recommendations
        )
        position = store.get(seq).recommendations[0]["position"]
        form = {"position": str(position), "status": "accepted", "reason": "agreed with the customer"}

        def post(evaluation: int, **more: str) -> int:
            token = csrf_of(client.get("/ui/login").text)
            data = {**form, "csrf": token, **more}
            return client.post(f"/ui/evaluations/{evaluation}/outcomes", data=data, follow_redirects=False).status_code

        assert post(seq) == 403  # not signed in
        sign_in(client, "ann")
        assert post(seq) == 403  # an auditor reads only
        sign_in(client, "mia")
        assert 'class="outcome-form"' in client.get(f"/ui/evaluations/{seq}").text
        assert post(other) == 403  # not her team's deal
        # the search's first page is kept while the log stands still: the outcome moves it, and shows
        assert "accepted · mia" not in visible_text(client.get("/ui/", params={"lang": "en"}).text)
        assert post(seq, reason="") == 400
        without_token = client.post(f"/ui/evaluations/{seq}/outcomes", data=form, follow_redirects=False)
        assert without_token.status_code == 403
        assert store.get(seq).outcomes == []
        assert post(seq) == 303
        [done] = store.get(seq).outcomes
        assert (done["who"], done["status"], done["why"]) == ("mia", "accepted", "agreed with the customer")
        assert store.verify() == []
        page = visible_text(client.get(f"/ui/evaluations/{seq}", params={"lang": "en"}).text)
        assert "accepted · mia" in page and "agreed with the customer" in page
        assert "accepted · mia" in visible_text(client.get("/ui/", params={"lang": "en"}).text)
        action = store.get(seq).recommendations[0]["id"]
        why = CliRunner().invoke(main, ["why", str(seq), "--action", action, "--lang", "en", "--db", db_url])
        assert why.exit_code == 0 and "by mia" in why.output and "agreed with the customer" in why.output
    finally:
        store.close()


def test_user_add_takes_the_password_from_the_environment_and_stores_a_hash(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'users.db'}"
    runner = CliRunner()
    added = runner.invoke(
        main,
        ["user", "add", "lee", "--role", "manager", "--team", "Dana Lee", "--db", db],
        env={"PLAYBOOK_USER_PASSWORD": PASSWORD},
    )
    assert added.exit_code == 0, added.output
    with Store(db) as store:
        found = store.user("lee")
    assert found is not None and found["role"] == "manager" and found["team"] == ["Dana Lee"]
    assert found["password_hash"].startswith("$argon2") and PASSWORD not in found["password_hash"]
    short = runner.invoke(
        main, ["user", "add", "kim", "--role", "ops", "--db", db], env={"PLAYBOOK_USER_PASSWORD": "short"}
    )
    assert short.exit_code == 1 and "at least 10 characters" in short.output
    bad_role = runner.invoke(
        main, ["user", "add", "kim", "--role", "admin", "--db", db], env={"PLAYBOOK_USER_PASSWORD": PASSWORD}
    )
    assert bad_role.exit_code == 2
    prompted = runner.invoke(
        main, ["user", "add", "kim", "--role", "auditor", "--db", db], input=f"{PASSWORD}\n{PASSWORD}\n"
    )
    assert prompted.exit_code == 0 and PASSWORD not in prompted.stdout


def test_the_portfolio_review_is_the_directors_report_with_its_charts(client: TestClient, read_log: Store) -> None:
    page = client.get("/ui/portfolio", params={"lang": "en", "group_by": "region", "as_of": "2026-11-27"})
    text = visible_text(page.text)
    assert page.status_code == 200 and "Director's weekly review" in text and "2026-11-27" in text
    assert all(region in text for region in ("East", "West"))
    charts = [html.unescape(src) for src in re.findall(r'<img src="([^"]+)"', page.text)]
    assert len(charts) >= 2 and all("/ui/portfolio/chart.svg?" in src for src in charts)
    chart = client.get(charts[0])
    # the chart's shapes are styled inline: its own policy allows that, and nothing else
    assert chart.status_code == 200 and chart.text.startswith("<svg") and "<script" not in chart.text
    assert chart.headers["content-security-policy"] == "default-src 'none'; style-src 'unsafe-inline'"
    assert client.get("/ui/portfolio/chart.svg", params={"chart": "no_such_chart"}).status_code == 404
    assert client.get("/ui/portfolio", params={"group_by": "planet", "lang": "en"}).status_code == 400


def test_the_agenda_lists_the_logs_tasks_for_an_owner(client: TestClient, read_log: Store) -> None:
    everyone = visible_text(client.get("/ui/agenda", params={"lang": "en", "as_of": "2026-11-27"}).text)
    tasks = [t for t in listing(read_log) if t.status in ("open", "accepted", "overdue", "escalated")]
    assert tasks and "Agenda of everyone, 2026-11-27" in everyone
    assert all(f"#{t.id} " in everyone + " " for t in tasks[:5])
    director = visible_text(client.get("/ui/agenda", params={"lang": "en", "owner": "director"}).text)
    assert "Agenda of director" in director
    assert client.get("/ui/agenda", params={"owner": "nobody"}).status_code == 400


def test_director_pages_say_when_the_log_is_empty(tmp_path: Path) -> None:
    with Store(f"sqlite:///{tmp_path / 'empty.db'}") as store:
        client = client_of(store)
        for path, words in (("/ui/portfolio", "no portfolio to review"), ("/ui/agenda", "the agenda is empty")):
            assert words in visible_text(client.get(path, params={"lang": "en"}).text)


def test_tasks_are_found_and_each_evaluation_shows_its_tasks_timeline(client: TestClient, read_log: Store) -> None:
    task = listing(read_log)[0]
    found = visible_text(client.get("/ui/tasks", params={"lang": "en", "record": task.record}).text)
    assert f"#{task.id}" in found and "tasks found" in found
    by_action = client.get("/ui/tasks", params={"lang": "en", "action": task.action, "state": task.status}).text
    assert f"#{task.id}<" in by_action
    assert "No task matches" in client.get("/ui/tasks", params={"lang": "en", "record": "no-such-record"}).text
    assert client.get("/ui/tasks", params={"state": "asleep"}).status_code == 400
    exported = client.get("/ui/tasks.csv", params={"record": task.record})
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert exported.headers["content-type"].startswith("text/csv") and task.id in [int(r["task"]) for r in rows]
    lines = client.get("/ui/tasks.jsonl", params={"record": task.record}).text.splitlines()
    assert [json.loads(line) for line in lines] == [
        t.to_json() for t in reversed(listing(read_log, record=task.record))
    ]
    page = visible_text(client.get(f"/ui/evaluations/{task.evaluation_seq}", params={"lang": "en"}).text)
    assert f"Task #{task.id}" in page and "made by the playbook: rule" in page
    zh = visible_text(client.get(f"/ui/evaluations/{task.evaluation_seq}", params={"lang": "zh"}).text)
    assert f"任务 #{task.id}" in zh and "剧本按规则" in zh and "recommended it" not in zh


def test_owner_and_region_are_searched_by_the_database(db_url: str) -> None:
    with make_console_log(db_url) as store:
        dana_west = [s.seq for s in store.search(owner=OWNERS[0], region="West")]
        assert dana_west == [3, 7, 11, 15, 19, 23]
        assert [s.seq for s in store.search(owner="Dana", region="West")] == []  # whole values, not parts
        assert [s.seq for s in store.search(region="East", until="2026-11-30", newest_first=True)] == [
            10,
            9,
            6,
            5,
            2,
            1,
        ]


def test_every_evaluation_page_is_checked_against_the_log_though_the_rules_stay_compiled(db_url: str) -> None:
    with make_console_log(db_url) as store:
        client = client_of(store)
        seq = next(s.seq for s in store.search() if s.recommendations)
        assert "The whole trace" in visible_text(client.get(f"/ui/evaluations/{seq}", params={"lang": "en"}).text)
        with store.engine.begin() as conn:  # the stored decisions changed behind the console's back
            edit_decisions(conn, seq, '{"funnel_layer": "x"}')
        text = visible_text(client.get(f"/ui/evaluations/{seq}", params={"lang": "en"}).text)
        assert "does not match its re-evaluation" in text and "The whole trace" not in text
