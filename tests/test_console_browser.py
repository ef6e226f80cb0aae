"""The web console in a real browser: Debian's Chromium driven by Playwright, against ``playbook serve``.

Skipped when Chromium or Playwright is missing, unless PLAYBOOK_REQUIRE_BROWSER=1 (CI sets it: there a
missing browser fails the run).  Every page is photographed at a laptop's and a phone's size under the
test's temporary folder (the path is printed) so that a person can look.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cli import main
from engine.store import Store
from tests.console_log import OWNERS, PASSWORD, XSS, make_console_log

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
SECRET = "a-browser-test-console-secret-of-forty-chars"  # noqa: S105 - the test's own signing secret
VIEWPORTS = {"laptop": {"width": 1366, "height": 860}, "phone": {"width": 390, "height": 844}}

try:
    from playwright.sync_api import Page, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None


def _browser_missing() -> str | None:
    if sync_playwright is None:
        return "playwright is not installed"
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        return "chromium is not installed (apt-get install chromium)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = _browser_missing()
    if missing is not None:
        if os.environ.get("PLAYBOOK_REQUIRE_BROWSER") == "1":
            pytest.fail(f"PLAYBOOK_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)
    assert sync_playwright is not None
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """``playbook serve`` on a log of the sample cases: (its base URL, the log's URL)."""
    folder = tmp_path_factory.mktemp("console-browser")
    db = f"sqlite:///{folder / 'log.db'}"
    make_console_log(db).close()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PLAYBOOK_WEBHOOK_SECRET": "browser-test-webhooks", "PLAYBOOK_CONSOLE_SECRET": SECRET}
    command = [sys.executable, "-m", "cli", "serve", "--db", db, "--port", str(port), "--no-clock"]  # the log as made
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.communicate()[1].decode()
            try:
                with urllib.request.urlopen(base + "/health", timeout=5):  # noqa: S310 - our own local server
                    break
            except OSError:
                assert time.monotonic() < deadline, "playbook serve did not answer"
                time.sleep(0.1)
        yield base, db
    finally:
        process.terminate()
        process.communicate(timeout=30)


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh browser context; fails the test on any console error or uncaught page error."""
    context = browser.new_context(viewport=VIEWPORTS["laptop"])
    opened = context.new_page()
    errors: list[str] = []
    opened.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    opened.on("pageerror", lambda error: errors.append(str(error)))
    dialogs: list[str] = []
    opened.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    yield opened
    context.close()
    assert not errors, f"console errors: {errors}"
    assert not dialogs, f"a script ran and opened a dialog: {dialogs}"


def shoot(page: Page, folder: Path, name: str) -> None:
    """The page at a laptop's and a phone's size."""
    for size, viewport in VIEWPORTS.items():
        page.set_viewport_size(viewport)
        page.screenshot(path=str(folder / f"{name}-{size}.png"), full_page=True)
    page.set_viewport_size(VIEWPORTS["laptop"])


def sign_in(page: Page, base: str, name: str) -> None:
    page.goto(f"{base}/ui/login?lang=en")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("form.login button[type=submit]")
    page.wait_for_url(f"{base}/ui/")
    assert f"Signed in as {name}" in page.inner_text("header")


def test_a_manager_signs_in_searches_opens_an_evaluation_and_records_an_outcome(
    page: Page, served: tuple[str, str], tmp_path: Path
) -> None:
    base, db = served
    print(f"screenshots in {tmp_path}")
    sign_in(page, base, "mia")
    page.fill("input[name=owner]", OWNERS[0])
    page.fill("input[name=since]", "2026-12-01")
    page.click("form.filters button[type=submit]")
    page.wait_for_selector("table.results")
    links = page.locator("table.results a").all_inner_texts()
    assert links and all(re.fullmatch(r"#\d+", link) for link in links)
    shoot(page, tmp_path, "search")
    first = links[0]
    page.click(f"table.results a:text-is('{first}')")
    page.wait_for_selector("form.outcome-form")
    seq = int(first[1:])
    assert f"Evaluation {seq}" in page.inner_text("h1")
    shoot(page, tmp_path, "evaluation")
    form = page.locator("form.outcome-form").first
    form.locator("select[name=status]").select_option("done")
    form.locator("input[name=reason]").fill("called the customer's buyer")
    form.locator("button").click()
    page.wait_for_url(re.compile(rf".*/ui/evaluations/{seq}\?saved=\d+"))
    assert "done · mia" in page.inner_text("main") and "called the customer's buyer" in page.inner_text("main")
    with Store(db) as store:
        action = store.get(seq).recommendations[0]["id"]
    why = CliRunner().invoke(main, ["why", str(seq), "--action", action, "--lang", "en", "--db", db])
    assert why.exit_code == 0 and "done by mia" in why.output and "called the customer's buyer" in why.output


def test_every_page_renders_in_both_languages(page: Page, served: tuple[str, str], tmp_path: Path) -> None:
    base, db = served
    with Store(db) as store:
        first, second = store.get(1), store.get(2)
    advised = first.recommendations[0]["id"]
    not_advised = next(
        r["id"] for r in first.recommendations if r["id"] not in {s["id"] for s in second.recommendations}
    )
    sign_in(page, base, "otto")  # ops: the diff page too
    for name, path in (
        ("search", "/ui/"),
        ("evaluation", f"/ui/evaluations/2?why_not={not_advised}"),
        ("why", f"/ui/why?record=opp-001&action={advised}"),
        ("playbook", "/ui/playbook"),
        ("diff", "/ui/diff?replay=1"),
        ("audit", "/ui/audit?verify=1"),
        ("portfolio", "/ui/portfolio"),
        ("agenda", "/ui/agenda"),
        ("tasks", "/ui/tasks?record=opp-001"),
    ):
        page.goto(f"{base}{path}{'&' if '?' in path else '?'}lang=zh")
        assert page.locator("html").get_attribute("lang") == "zh-CN", name
        assert page.locator("h1").first.inner_text(), name
        shoot(page, tmp_path, f"{name}-zh")
        page.click("a.lang")  # the switch on the page
        assert page.locator("html").get_attribute("lang") == "en", name
        shoot(page, tmp_path, f"{name}-en")


def test_the_director_sees_the_review_with_its_charts_and_the_agenda(
    page: Page, served: tuple[str, str], tmp_path: Path
) -> None:
    base, _ = served
    page.goto(f"{base}/ui/portfolio?lang=zh")
    page.select_option("select[name=group_by]", "region")
    page.click("form.filters button[type=submit]")
    page.wait_for_selector("figure.chart img")
    assert "客户主任周检视报告" in page.inner_text("main")
    charts = page.locator("figure.chart img")
    assert charts.count() >= 2
    for n in range(charts.count()):  # each chart drawn: its styles were not refused
        assert charts.nth(n).evaluate("image => image.complete && image.naturalWidth > 0")
    shoot(page, tmp_path, "portfolio-region-zh")
    page.click("a.lang")
    assert "Director's weekly review" in page.inner_text("main")
    page.goto(f"{base}/ui/agenda?lang=en")
    page.select_option("select[name=owner]", "account_manager")
    page.click("form.filters button[type=submit]")
    assert "Agenda of account manager" in page.inner_text("h1")
    assert page.locator("table.results a").count() > 0
    shoot(page, tmp_path, "agenda-account-manager-en")
    page.locator("table.results a").first.click()
    page.wait_for_selector("#tasks")
    assert "made by the playbook" in page.inner_text("main")


def test_markup_in_a_case_shows_as_text(page: Page, served: tuple[str, str]) -> None:
    base, _ = served
    page.goto(f"{base}/ui/evaluations/2?lang=en")
    assert XSS in page.inner_text("main")  # shown as text; the page fixture fails on any dialog


def test_a_form_without_its_token_is_refused(browser: Any, served: tuple[str, str]) -> None:
    base, _ = served
    context = browser.new_context(viewport=VIEWPORTS["laptop"])
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.goto(f"{base}/ui/login?lang=en")
    page.locator("input[name=csrf]").evaluate("input => input.remove()")
    page.fill("input[name=name]", "mia")
    page.fill("input[name=password]", PASSWORD)
    with page.expect_response(f"{base}/ui/login") as answer:
        page.click("form.login button[type=submit]")
    assert answer.value.status == 403
    assert "reload the page" in page.inner_text("main") and "Signed in" not in page.inner_text("header")
    assert [e for e in errors if "403" not in e] == []  # the refusal itself is the only error the browser logs
    context.close()
