"""What people read, in each language: the Chinese text names nothing by the playbook's identifiers,
and the English text shows Chinese only where it quotes the course on purpose.

Every course test case and every bundled sample case goes through the text of ``recommend``, the
full explanation and a why-not for every action and every decision value.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import Evaluator, Playbook, compile_playbook, load_playbook
from engine.errors import CaseError
from engine.explain import render_result, why, why_not
from engine.report import render_case
from engine.testing import default_test_dir, load_tests

ROOT = Path(__file__).resolve().parent.parent
COURSE = ROOT / "playbooks" / "course.yaml"
SAMPLES = ROOT / "samples" / "cases.jsonl"
ASCII_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


def identifiers(playbook: Playbook) -> set[str]:
    """Every name the playbook gives a thing: rules, rows, decisions and their values, inputs (whole and
    by field) and their values, parameters, actions and the parameters rules pass them."""
    names = set(playbook.parameters) | set(playbook.decisions) | set(playbook.actions)
    names |= {rule.id for rule in playbook.rules}
    names |= {key for rule in playbook.rules for rec in rule.recommends for key in rec.params}
    for decision in playbook.decisions.values():
        names |= {row.id for row in decision.rows} | {str(v) for v in decision.values or ()}
    for name, field in playbook.inputs.items():
        names |= {name, *name.split(".")} | {str(v) for v in field.values or ()}
    return names


def authored_words(playbook: Playbook, lang: str) -> set[str]:
    """ASCII words the playbook's own labels in ``lang`` use on purpose ("A类", "SWOT")."""
    texts = [p.label for p in playbook.parameters.values()] + [f.label for f in playbook.inputs.values()]
    texts += [f for field in playbook.inputs.values() for f in field.value_labels.values()]
    for decision in playbook.decisions.values():
        texts += [decision.label, *decision.value_labels.values(), *(row.label for row in decision.rows)]
    texts += [rule.label for rule in playbook.rules] + [action.label for action in playbook.actions.values()]
    return {word for text in texts for word in ASCII_WORD.findall(text.get(lang, ""))}


def course_cases(playbook: Playbook) -> Iterator[tuple[dict, dt.date]]:
    for test in load_tests(sorted(default_test_dir(COURSE).glob("*.yaml")), playbook):
        yield test.facts, test.as_of
    for line in SAMPLES.read_text(encoding="utf-8").splitlines():
        yield json.loads(line), dt.date(2026, 11, 27)


def every_text(playbook: Playbook, lang: str) -> Iterator[str]:
    """recommend, explain and every why-not, for every course case that gives a result."""
    targets = list(playbook.actions) + [
        f"{name}={value}" for name, decision in playbook.decisions.items() for value in decision.values or ()
    ]
    with compile_playbook(playbook) as compiled:
        evaluator = Evaluator(compiled)
        for n, (facts, as_of) in enumerate(course_cases(playbook)):
            try:
                result = evaluator.evaluate_case(facts, as_of, f"c{n}").to_json(lang)
            except CaseError as error:  # the cases that must fail: what recommend shows for them
                yield render_result(playbook, error.to_json(), lang)
                continue
            yield render_result(playbook, result, lang)
            yield render_case(playbook, result, lang, facts=facts)  # the undetermined counted, what they lack named
            yield why(playbook, result, lang)
            for target in targets:
                yield why_not(playbook, result, target, lang)


@pytest.fixture(scope="module")
def course() -> Playbook:
    return load_playbook(COURSE)


@pytest.fixture(scope="module")
def zh_texts(course: Playbook) -> list[str]:
    return list(every_text(course, "zh"))


def test_the_chinese_text_names_nothing_by_its_identifier(course: Playbook, zh_texts: list[str]) -> None:
    forbidden = identifiers(course) - authored_words(course, "zh")
    leaks: dict[str, str] = {}
    for text in zh_texts:
        for line in text.splitlines():
            for word in ASCII_WORD.findall(line):
                if word in forbidden:
                    leaks.setdefault(word, line.strip())
    assert len(zh_texts) > 55 * 100  # every case, every target: the scan really read the text
    assert leaks == {}


def test_the_chinese_text_names_what_an_undetermined_decision_lacks_by_its_label(zh_texts: list[str]) -> None:
    # the course's case of a bottom-layer consolidate deal without a period target (G-19)
    lines = [line.strip() for text in zh_texts for line in text.splitlines() if "期间任务目标" in line]
    assert "项目金额的分类: 未定(缺少:期间任务目标)" in lines  # recommend --all
    assert "客户主任的结论: 未定(缺少:期间任务目标)" in lines
    assert "缺少:期间任务目标" in lines  # why, under the decision
    assert any(line.startswith("另有 ") and line.endswith("(--all 显示全部)") for line in lines)  # recommend


def test_the_chinese_text_has_no_english_operator_words_or_python_syntax(zh_texts: list[str]) -> None:
    english = re.compile(r"\b(?:and|or|not|in|contains|missing|present|None|True|False|why)\b|\[['\"]|\{'")
    found = {m.group(0): line for text in zh_texts for line in text.splitlines() if (m := english.search(line))}
    assert found == {}


def test_the_english_text_shows_chinese_only_where_it_quotes_the_course(course: Playbook) -> None:
    # a course quote 「…」, or a course term in brackets beside the English words: "top of the funnel (表层)"
    quoted = re.compile(r"「[^」]*」|\([^()]*[\u4e00-\u9fff][^()]*\)")
    chinese = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")
    found = {}
    for text in every_text(course, "en"):
        for line in text.splitlines():
            if chinese.search(quoted.sub("", line)):
                found.setdefault(line.strip(), None)
    assert list(found) == []


def test_tests_and_parameters_read_as_words_in_each_language(evaluator: Evaluator, pipeline: Playbook) -> None:
    facts = {"opportunity": {"weeks_to_close": 5, "win_rate": 60, "milestones": ["a"]}, "account": {"vip": True}}
    result = evaluator.evaluate_case(facts, dt.date(2026, 11, 27), "x").to_json("zh")
    zh, en = why(pipeline, result, "zh"), why(pipeline, result, "en")
    assert "距决策周数 = 5 (> 2 且 ≤ 10) ✓" in zh and "weeks to close = 5 (> 2 and ≤ 10) ✓" in en
    assert "进展 = 60 (≥ 60「高赢率」) ✓" in zh and "progress = 60 (≥ 60 “high win rate”) ✓" in en
    assert "规则「观察」" in zh and "rule watch “watch”" in en
    assert "关注度 = 低 (≠ 高) ✓" in zh and "标记 = 缺失 (缺失) ✓" in zh
    assert "标记 = 缺失 (= 是) (不应成立) ? (未知)" in zh and "= missing (= yes) (must not hold) ? (unknown)" in en
    not_bottom = why_not(pipeline, result, "funnel_layer=bottom", "zh")
    assert not_bottom.startswith("为什么漏斗位置不是底层?") and "距决策周数 = 5 (≤ 2) ✗" in not_bottom
    not_followed = why_not(pipeline, result, "follow_up", "zh")
    assert (
        not_followed.startswith("为什么没有建议「积极跟进」?")
        and "未触发;不满足的条件:\n      关注度 = 低 (= 高) ✗" in not_followed
    )


PIPELINE = ROOT / "tests" / "fixtures" / "pipeline.yaml"
BROKEN = {  # a playbook fault the checker lets through, found when a case reaches it
    "hit_policy_violation": (
        "when: {opportunity.weeks_to_close: {gt: 2, lte: 10}}",
        "when: {opportunity.weeks_to_close: {gte: 2, lte: 10}}",
        {"opportunity": {"weeks_to_close": 2}},
        "「漏斗位置」的表行「中层」、「底层」同时满足条件,而这张表只能命中一行",
        ("funnel_layer", ["middle", "bottom"]),
    ),
    "decision_conflict": (
        "  - id: push\n",
        "  - id: unflag\n    label: {zh: 取消标记, en: unflag}\n    source: {guide: G-10, quote: q}\n"
        "    when: {account.segment: retail}\n    then:\n      set: {flagged: false}\n  - id: push\n",
        {"account": {"segment": "retail"}},
        "规则「零售标记」定「标记」为是,规则「取消标记」却定为否,两者冲突",
        (None, ["flag_retail", "unflag"]),
    ),
    "bad_output": (
        "decisions:\n",
        "decisions:\n  sector:\n    label: {zh: 主攻行业, en: sector}\n    source: {guide: G-10, quote: q}\n"
        "    values: [gov, bank]\n    value_labels: {gov: {zh: 政府, en: government}, bank: {zh: 银行, en: banking}}\n"
        "    rows:\n      - id: as_given\n        label: {zh: 照录, en: as given}\n"
        "        then: {value_of: account.segment}\n",
        {"account": {"segment": "retail"}},
        "「行业」的值 零售 不是「主攻行业」可取的值",
        ("sector", ["as_given"]),
    ),
}


@pytest.mark.parametrize("code", sorted(BROKEN))
def test_a_playbook_fault_found_while_evaluating_reads_in_labels_in_chinese(code: str) -> None:
    from engine import load_playbook_text

    old, new, facts, said, (table, at_fault) = BROKEN[code]
    text = PIPELINE.read_text(encoding="utf-8")
    assert old in text
    playbook = load_playbook_text(text.replace(old, new, 1), "broken.yaml")
    with compile_playbook(playbook) as compiled, pytest.raises(CaseError) as fault:
        Evaluator(compiled).evaluate_case(facts, dt.date(2026, 11, 27), "c1")
    assert fault.value.code == code
    # where the rows or rules at fault are, as OPA's runtime errors say it: in the JSON, and in both texts
    members = {r.id: r for r in playbook.decisions[table].rows} if table else playbook.rules_by_id
    where = [members[name].location for name in at_fault]
    assert [w.line for w in where] == sorted(w.line for w in where) and all(w.line > 0 for w in where)
    assert fault.value.to_json()["error"]["details"]["locations"] == [
        {"file": "broken.yaml", "line": w.line, "col": w.col} for w in where
    ]
    zh = render_result(playbook, fault.value.to_json(), "zh")
    assert zh == f"案例 c1:无法评估 — {said}(剧本需要修改,位置:{'、'.join(map(str, where))})"
    leaks = set(ASCII_WORD.findall(zh)) & (identifiers(playbook) | {code})
    assert leaks == set()
    en = render_result(playbook, fault.value.to_json(), "en")
    assert en.startswith(f"case c1: {code}: ")  # the English keeps the code and ids, for whoever fixes the playbook
    assert en.endswith(f" (at {', '.join(map(str, where))})")


def test_replay_says_a_playbook_fault_in_labels_in_chinese(tmp_path: Path) -> None:
    from engine import load_playbook_text
    from engine.audit import ImportItem, import_cases
    from engine.replay import render_replay, replay
    from engine.store import Store

    live = load_playbook(PIPELINE)
    old, new, facts, said, _ = BROKEN["hit_policy_violation"]
    broken = load_playbook_text(PIPELINE.read_text(encoding="utf-8").replace(old, new, 1), "broken.yaml")
    store = Store(f"sqlite:///{tmp_path / 'log.db'}")
    with compile_playbook(live) as compiled:
        items = [ImportItem("k:1", ("c1", facts))]
        list(import_cases(store, Evaluator(compiled), items, dt.date(2026, 11, 27), source="test"))
    report = replay(store, broken, live, {"evaluation": 1})
    zh = render_replay(report.to_json("zh"))
    rows = [row.location for row in broken.decisions["funnel_layer"].rows if row.id in ("middle", "bottom")]
    assert f"  c1 (#1): 无法评估 — {said}(剧本需要修改,位置:{'、'.join(map(str, rows))})" in zh.splitlines()
    assert "hit_policy_violation" not in zh
    en = render_replay(report.to_json("en"))
    assert "  c1 (#1): hit_policy_violation: rows 'middle', 'bottom' of 'funnel_layer' all match" in en
    store.close()


def test_a_parameter_reads_as_a_number_a_person_would_write(course: Playbook) -> None:
    overdue = {"opportunity": {"close_date": "2026-11-10", "amount": 5000}}  # 17 days ago: -2.4286 weeks
    with compile_playbook(course) as compiled:
        result = Evaluator(compiled).evaluate_case(overdue, dt.date(2026, 11, 27), "c1")
    [params] = [rec["params"] for rec in result.recommendations if rec["id"] == "reconfirm_close_date"]
    assert params == {"weeks_to_close": -2.4286}  # the JSON and the log keep the value as computed
    assert "(距决策周数:-2.43)" in render_result(course, result.to_json("zh"), "zh")
    assert "(weeks to decision: -2.43)" in render_result(course, result.to_json("en"), "en")


def test_a_parameter_reads_as_what_it_means_not_as_what_it_is_named(course: Playbook) -> None:
    # The role rules pass the role still to find under the name of the input it comes from; read by that
    # input's label the line said "roles already identified: who uses", the opposite of what it means.
    cases = map(json.loads, SAMPLES.read_text(encoding="utf-8").splitlines())
    [key_account] = [case for case in cases if case["id"] == "opp-006"]
    with compile_playbook(course) as compiled:
        result = Evaluator(compiled).evaluate_case(key_account, dt.date(2026, 11, 27), "opp-006")
    assert {rec["rule"] for rec in result.recommendations} >= {"find_roles_none_known"}  # no role on record
    zh = render_result(course, result.to_json("zh"), "zh")
    en = render_result(course, result.to_json("en"), "en")
    assert "(待厘清的角色:谁来使用)" in zh and "已厘清的决策角色:" not in zh
    assert "(role to find out: who uses)" in en


def test_the_directors_review_in_chinese_names_nothing_by_its_identifier(course: Playbook, tmp_path: Path) -> None:
    """Every course case stored, then reviewed by each grouping: the text and Markdown reports (charts' titles
    and legends included) say everything in labels."""
    from engine.review import GROUPINGS, ReviewOptions, review_store
    from engine.review_charts import review_charts
    from engine.review_render import render_markdown, render_text
    from engine.store import Appended, Store

    forbidden = identifiers(course) - authored_words(course, "zh")
    texts: list[str] = []
    with compile_playbook(course) as compiled, Store(f"sqlite:///{tmp_path / 'log.db'}") as store:
        evaluator = Evaluator(compiled)
        for n, (facts, as_of) in enumerate(course_cases(course)):
            facts = json.loads(json.dumps(facts))
            opportunity = facts.setdefault("opportunity", {})
            opportunity.update(id=f"c{n}", owner=f"经理{n % 3}", region=f"区域{n % 2}", team="一组", market="产品")
            try:
                outcome = evaluator.evaluate_case(facts, as_of, f"c{n}")
            except CaseError:
                continue
            store.append(course, [Appended(outcome, facts)], source="test", as_of=as_of)
        for group_by in GROUPINGS:
            report = review_store(store, course, ReviewOptions(dt.date(2026, 12, 31), group_by, lang="zh"), {})
            charts = review_charts(report)
            texts += [render_text(report), render_markdown(report, dict.fromkeys(charts, "x.svg"))]
            texts += [re.sub(r"<[^>]+>", "\n", svg) for svg in charts.values()]  # the charts' words
    assert sum(len(text.splitlines()) for text in texts) > 400
    leaks = {
        word: line.strip()
        for text in texts
        for line in text.splitlines()
        for word in ASCII_WORD.findall(line)
        if word in forbidden
    }
    assert leaks == {}
