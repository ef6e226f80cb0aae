"""`playbook render`: a playbook as people review it, in Markdown for a pull request or as an HTML page."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import main
from engine import load_playbook, load_playbook_text
from engine.render import render_playbook
from engine.sources import cited_sources
from tests.conftest import FIXTURES, ROOT
from tests.test_text import ASCII_WORD, authored_words, identifiers

PIPELINE = FIXTURES / "pipeline.yaml"
COURSE = ROOT / "playbooks" / "course.yaml"


def _tables(markdown: str) -> list[list[str]]:
    """Each Markdown table: its lines, header and separator included."""
    tables: list[list[str]] = []
    previous = ""
    for line in markdown.splitlines():
        if line.startswith("|"):
            if not previous.startswith("|"):
                tables.append([])
            tables[-1].append(line)
        previous = line
    return tables


def test_each_decision_table_is_one_table_with_a_column_per_input_and_each_row_cited() -> None:
    playbook = load_playbook(PIPELINE)
    markdown = render_playbook(playbook, "md", "en")
    tables = _tables(markdown)
    with_rows = [d for d in playbook.decisions.values() if d.rows]
    assert len(tables) == len(with_rows) + 3  # and the parameters, the inputs and the actions
    funnel = next(t for t in tables if "→ funnel layer" in t[0])
    assert funnel[0] == "| # | row | weeks to close | → funnel layer | source |"
    assert funnel[2] == "| 1 | surface | > 10 | surface | [G-17 「表层:大于10周」] |"
    assert len(funnel) == 2 + len(playbook.decisions["funnel_layer"].rows)
    tags = next(t for t in tables if "→ tags" in t[0])
    assert "other conditions" in tags[0] and "progress ≥ 60 “high win rate” or key account = yes" in tags[2]
    assert "| high win rate (high_win_rate) | 60 |" in markdown  # a parameter with its value
    assert "| share of target (opportunity.share) | number |  | amount ÷ period target |" in markdown  # an input
    assert "- when: attention = high and tags includes hot" in markdown  # a rule in words
    assert (
        "- recommends: follow up hard (follow_up) (funnel layer = the value of funnel layer; high win rate = 60)"
        in (markdown)
    )


def test_the_chinese_page_names_things_by_their_labels_only() -> None:
    playbook = load_playbook(COURSE)
    markdown = render_playbook(playbook, "md", "zh")
    quoted = {w for s in cited_sources(playbook) for w in ASCII_WORD.findall(s.words)}
    allowed = authored_words(playbook, "zh") | quoted
    generated = [line for line in markdown.splitlines() if line.startswith(("|", "- ", "#"))]
    named = {w for line in generated for w in ASCII_WORD.findall(line)} & identifiers(playbook)
    assert named <= allowed, sorted(named - allowed)
    assert "## 决策表" in markdown and "→ 漏斗位置" in markdown


def _hostile(title: str, label: str) -> str:
    return f"""
playbook: {{id: t, version: "1", languages: [en], title: {{en: '{title}'}}}}
inputs:
  opportunity.weeks: {{type: number, label: {{en: weeks}}}}
decisions:
  layer:
    label: {{en: '{label}'}}
    source: {{guide: G-17, quote: "表层"}}
    output: true
    values: [deep]
    value_labels: {{deep: {{en: 'a | b'}}}}
    rows:
      - {{id: deep, label: {{en: '{label}'}}, when: {{opportunity.weeks: {{lt: 2}}}}, then: deep}}
"""


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_is_a_standalone_page_that_escapes_what_the_playbook_says() -> None:
    playbook = load_playbook_text(_hostile("<script>alert(1)</script>", '<img src=x onerror="x()"> & co'), "t.yaml")
    page = render_playbook(playbook, "html", "en")
    assert page.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in page
    parser = _Page()
    parser.feed(page)
    assert "script" not in parser.tags and "img" not in parser.tags and "link" not in parser.tags
    assert "<script>alert(1)</script> (t 1)" in parser.text  # shown as text, in the title and the heading
    assert '<img src=x onerror="x()"> & co (layer)' in parser.text
    assert parser.tags.count("tr") == 4  # the inputs' and the table's: a header and one row each
    assert "http" not in page  # nothing fetched from elsewhere


def test_markdown_keeps_a_pipe_inside_its_cell() -> None:
    playbook = load_playbook_text(_hostile("t", "left | right"), "t.yaml")
    table = _tables(render_playbook(playbook, "md", "en"))[1]  # after the inputs
    assert table[2] == r"| 1 | left \| right (deep) | < 2 | a \| b | [G-17 「表层」] |"


@pytest.mark.parametrize(
    ("fmt", "lang", "seen"), [("md", "zh", "## 参数"), ("html", "en", '<h2 id="rules">Rules</h2>')]
)
def test_the_command_writes_the_page(tmp_path: Path, fmt: str, lang: str, seen: str) -> None:
    out = tmp_path / f"course.{fmt}"
    result = CliRunner().invoke(main, ["render", str(COURSE), "--format", fmt, "--lang", lang, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert seen in out.read_text(encoding="utf-8")


def test_an_invalid_playbook_is_not_rendered(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(COURSE.read_text("utf-8").replace("rules:", "rulez:", 1), "utf-8")
    result = CliRunner().invoke(main, ["render", str(broken)])
    assert result.exit_code == 1 and "unknown key 'rulez'" in result.output


def test_work_and_the_review_calendar_are_shown_in_words_in_both_languages() -> None:
    playbook = load_playbook(COURSE)
    zh = render_playbook(playbook, "md", "zh")
    en = render_playbook(playbook, "md", "en")
    attack = next(line for line in zh.splitlines() if line.startswith("| 客户主任:密集进攻 |"))
    assert "客户经理、评估后3天内、每周一次、到期后1周未完成交客户主任" in attack
    assert "| 密集进攻的跟进间隔 | 1周 |" in zh  # a span parameter in Chinese words, not "1 week"
    assert not re.search(r"\b\d+ (days?|weeks?|months?)\b", zh)
    attack = next(line for line in en.splitlines() if line.startswith("| director: intensive attack"))
    assert "due 3 days (attack_due) after the evaluation / every week (attack_follow_up_every)" in attack
    calendar = _tables(en)[-1]
    assert calendar[0] == "| review | calendar | who | source |"
    assert [row.split(" | ")[1] for row in calendar[2:]] == [
        "weekly, on Monday",
        "every two weeks, on Monday",
        "monthly",
        "quarterly",
        "half-yearly",
    ]
    assert "| 每周检查话费收入进程 | 每周周一 | 客户主任 |" in zh
