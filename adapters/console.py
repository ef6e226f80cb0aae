"""The web console: pages for auditors, sales ops editors and directors over one audit log (``/ui``).

Server-rendered (Starlette and Jinja2 with every value escaped), plain forms and no script, in
Chinese and English (a switch on every page).  Everything is readable without signing in except
the playbook diff and its replay, which are for ``ops`` users; recording an outcome needs a
``manager`` whose team holds the opportunity's owner.  Users live in the log's database
(``console_users``, argon2 hashes); a session is a cookie signed with the console secret
(PLAYBOOK_CONSOLE_SECRET), and every form carries the session's CSRF token.

The pages reuse what the CLI answers with: :mod:`engine.explain` and :mod:`engine.answers` for
the trace, why-not and "why was X advised to Y on Z", :mod:`engine.render` for the playbook's
tables, :mod:`engine.diff` and :mod:`engine.replay` for two versions, and
:func:`engine.audit.record_outcome` for outcomes (the same checks and chain as ``playbook outcome``
and ``POST /outcomes``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hmac
import html
import io
import os
import secrets
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route

from adapters.listing import json_lines, listing_row, write_csv, write_tasks
from engine import load_playbook
from engine.agenda import OWNER_LABELS, STATUS_LABELS, build_agenda
from engine.answers import advice_in_force, split_action, stored_header, why_action
from engine.audit import AmbiguousAction, StoredMismatch, UnknownEvaluation, record_outcome, rederive
from engine.compile import compile_playbook
from engine.diff import Change, diff_playbooks
from engine.errors import PlaybookError
from engine.evaluate import Evaluator, Result
from engine.explain import UnknownTarget, render_result, why, why_not
from engine.model import Playbook
from engine.render import playbook_blocks
from engine.replay import replay
from engine.report import who_and_where
from engine.review import GROUPINGS, ReviewOptions, review_store
from engine.review_charts import review_charts
from engine.review_render import html_sections
from engine.store import OUTCOME_STATUSES, Store, StoredEvaluation, canonical
from engine.store.partitions import head_partition
from engine.tasks import PLAYBOOK as BY_PLAYBOOK
from engine.tasks import Task, listing
from engine.tasks import history as task_history
from engine.validate import load_playbook_text

__all__ = ["ROLES", "SECRET_ENV", "Console", "add_user", "console_mount"]

ROLES = ("auditor", "ops", "manager")
SECRET_ENV = "PLAYBOOK_CONSOLE_SECRET"  # noqa: S105 - the name of the variable, not a secret
_FILES = Path(__file__).with_name("console_files")
_PAGE_SIZE = 50
_AGENDA_ROWS = 100  # tasks listed per agenda section
_TASK_ROWS = 200  # tasks listed by a search
_DIRECTOR_KEPT = 16  # reviews and task lists kept, each for one state of the log
_REDERIVED_KEPT = 256  # evaluations kept evaluated again, for the evaluation and why pages
_READS_KEPT = 64  # pages of rows kept (a search's first page, 200 task rows: up to ~0.3 MB each), by log state
_HASHER = PasswordHasher()
# verified against when the name is unknown, so that a wrong name takes as long as a wrong password
_NO_USER_HASH = _HASHER.hash(secrets.token_urlsafe(16))

_WORDS: dict[str, dict[str, str]] = {
    "zh": {
        "title": "销售剧本控制台",
        "search": "查评估",
        "why_page": "为何建议",
        "playbook": "剧本",
        "diff": "版本对比",
        "portfolio": "组合评审",
        "agenda": "议程",
        "audit": "审计链",
        "sign_in": "登录",
        "sign_out": "退出",
        "signed_in_as": "已登录:{name}({role})",
        "read_only": "只读(未登录)",
        "auditor": "审计员",
        "ops": "销售运营",
        "manager": "经理",
        "record": "记录",
        "account": "客户",
        "owner": "负责人",
        "region": "区域",
        "action": "动作",
        "rule": "规则",
        "version": "剧本版本",
        "since": "自(日期)",
        "until": "至(日期)",
        "find": "查找",
        "export_csv": "导出表格",
        "export_json": "导出数据",
        "evaluation": "评估",
        "as_of": "评估日期",
        "status": "状态",
        "actions": "建议",
        "outcomes": "处理结果",
        "found": "找到 {n} 条评估",
        "found_more": "找到 {n} 条评估(只显示前 {n} 条,缩小条件或导出可看更多)",
        "none_found": "没有符合条件的评估",
        "any": "(不限)",
        "bad_date": "日期要写成 年-月-日(例如 2026-11-27):{value}",
        "no_action": "没有建议",
        "and_more": "等(另有 {n} 条)",
        "failed_case": "出错:{code}",
        "decisions_and_advice": "结论与建议",
        "trace": "完整推理过程(读到的值、每一步的课程出处)",
        "why_not": "为什么没有……",
        "why_not_ask": "看原因",
        "choose": "选一个动作或结论值",
        "chain": "审计链",
        "chain_head": "链 {chain}:第 {seq} 条",
        "verify": "校验整条审计链",
        "verified_ok": "审计链完好:{n} 条评估,每一环都对得上",
        "verified_bad": "审计链有问题:",
        "record_outcome": "记录处理结果",
        "accepted": "接受",
        "dismissed": "驳回",
        "done": "已完成",
        "reason": "理由",
        "save": "保存",
        "outcome_saved": "已记录处理结果 #{seq}",
        "outcome_needs_manager": "记录处理结果要以经理身份登录,且该商机的负责人在其团队中",
        "not_your_team": "负责人 {owner} 不在你的团队中",
        "reason_needed": "请写下理由",
        "no_outcome": "尚未记录处理结果",
        "ask": "提问",
        "why_question": "为什么建议对记录采取某个动作(在某天)",
        "on": "在(日期,可空)",
        "why_needs": "请填写记录和动作",
        "advice": "建议",
        "why_advised": "为何建议",
        "name": "用户名",
        "password": "密码",
        "bad_login": "用户名或密码不对",
        "parameters_of": "参数",
        "check": "检查结果",
        "check_ok": "检查通过:没有问题",
        "check_problems": "{n} 个问题",
        "tests": "测试结果",
        "tests_summary": "通过 {passed} 个,失败 {failed} 个;覆盖 {coverage}% 的行与规则({reached}/{total})",
        "not_reached": "没有测试走到的行与规则:{n} 个",
        "no_playbook_file": "控制台启动时没有指定剧本文件,检查与测试无从运行(用 --playbook 指定)",
        "no_tests": "剧本旁边没有测试文件",
        "no_playbook": "审计日志里还没有任何剧本",
        "old": "旧版本",
        "new": "新版本",
        "compare": "对比",
        "changes": "改动",
        "no_changes": "两个版本没有差别",
        "replay_impact": "回放影响(每条记录最近一次评估)",
        "replay_summary": "回放 {n} 条:会变化 {changed} 条,新剧本下出错 {failed} 条",
        "added": "新增",
        "removed": "删除",
        "changed": "修改",
        "moved": "移动",
        "actions_added": "会多建议的动作",
        "actions_removed": "会少建议的动作",
        "decisions_changed": "会改变的结论",
        "examples": "例如",
        "diff_needs_ops": "版本对比与回放只对销售运营开放:请以销售运营身份登录",
        "one_version": "审计日志里只有一个剧本版本,没有可对比的",
        "no_data": "还没有数据",
        "portfolio_empty": "审计日志中还没有评估记录:没有可评审的商机组合。",
        "agenda_empty": "审计日志中还没有任务:议程为空。",
        "group_by": "分组方式",
        "tasks": "查任务",
        "tasks_of_evaluation": "任务与经过",
        "no_tasks": "这次评估没有产生任务。",
        "task_state": "任务状态",
        "any_state": "任一状态",
        "tasks_found": "找到 {n} 个任务",
        "tasks_more": "这里只列出前 {n} 个任务(导出的文件包含全部)。",
        "no_tasks_found": "没有符合条件的任务。",
        "made_by_rule": "剧本按规则「{rule}」生成(评估 #{seq})",
        "cancelled_by_playbook": "剧本取消了这项任务(商机已关闭或不再被建议)",
        "overdue_by_playbook": "截止 {due} 前未完成",
        "escalated_by_playbook": "逾期未完成,已升级给{to}",
        "the_playbook": "剧本",
        "bad_value": "不认识的选项:{value}",
        "group_owner": "负责人",
        "group_team": "团队",
        "group_region": "区域",
        "group_market": "市场(产品)",
        "review_day": "评审日期",
        "agenda_day": "议程日期",
        "show": "显示",
        "everyone": "全部",
        "agenda_for": "{whose}的议程,{day}",
        "section_escalated": "已升级",
        "section_overdue": "逾期",
        "section_due_soon": "本周到期",
        "section_open": "其他待办",
        "next_reviews": "下次检查",
        "open_work": "待办 {n} 项",
        "task": "任务",
        "due": "截止",
        "no_due": "无截止日期",
        "escalated_to": "升级给",
        "more_tasks": "另有 {n} 项未列出:请按负责人缩小范围。",
        "not_found": "找不到",
        "no_evaluation": "没有第 {seq} 号评估",
        "forbidden": "无权操作",
        "csrf": "表单已过期或缺少校验码,请刷新页面后再提交",
        "error": "出错了",
        "mismatch": "这条评估与按存档剧本重新评估的结果不符,不作解释:请运行审计校验",
        "in_force_for": "记录 {record} 的建议",
        "field": "项目",
        "old_value": "旧值",
        "new_value": "新值",
        "language": "语言",
        "page": "第 {seq} 号评估",
        "who": "人",
        "when": "时间",
        "kind": "类别",
        "location": "位置",
        "problem": "问题",
        "playbook_version_of": "剧本 {version}",
        "kind_playbook": "剧本",
        "kind_parameter": "参数",
        "kind_input": "输入",
        "kind_table": "决策表",
        "kind_row": "表行",
        "kind_rule": "规则",
        "kind_action": "动作",
        "chain_evaluations": "评估",
        "chain_outcomes": "处理结果",
        "chain_records": "记录状态",
        "chain_quarantined": "隔离的事件",
        "chain_tasks": "任务的变动",
    },
    "en": {
        "title": "Sales playbook console",
        "search": "Evaluations",
        "why_page": "Why advised",
        "playbook": "Playbook",
        "diff": "Versions",
        "portfolio": "Portfolio review",
        "agenda": "Agenda",
        "audit": "Audit chain",
        "sign_in": "Sign in",
        "sign_out": "Sign out",
        "signed_in_as": "Signed in as {name} ({role})",
        "read_only": "Read-only (not signed in)",
        "auditor": "auditor",
        "ops": "sales ops",
        "manager": "manager",
        "record": "Record",
        "account": "Account",
        "owner": "Owner",
        "region": "Region",
        "action": "Action",
        "rule": "Rule",
        "version": "Playbook version",
        "since": "From (date)",
        "until": "To (date)",
        "find": "Search",
        "export_csv": "Export CSV",
        "export_json": "Export JSON",
        "evaluation": "Evaluation",
        "as_of": "As of",
        "status": "Status",
        "actions": "Advice",
        "outcomes": "Outcomes",
        "found": "{n} evaluations found",
        "found_more": "The first {n} evaluations found (narrow the search or export for more)",
        "none_found": "No evaluation matches",
        "any": "(any)",
        "bad_date": "A date is written YYYY-MM-DD (e.g. 2026-11-27): {value}",
        "no_action": "no action",
        "and_more": "and {n} more",
        "failed_case": "failed: {code}",
        "decisions_and_advice": "Decisions and advice",
        "trace": "The whole trace (values read, course source of each step)",
        "why_not": "Why not …",
        "why_not_ask": "Explain",
        "choose": "Choose an action or decision value",
        "chain": "Audit chain",
        "chain_head": "chain {chain}: {seq} links",
        "verify": "Verify the whole audit chain",
        "verified_ok": "The audit chain is intact: {n} evaluations, every link matches",
        "verified_bad": "The audit chain has problems:",
        "record_outcome": "Record an outcome",
        "accepted": "accepted",
        "dismissed": "dismissed",
        "done": "done",
        "reason": "Reason",
        "save": "Save",
        "outcome_saved": "Outcome #{seq} recorded",
        "outcome_needs_manager": "Recording an outcome needs a manager signed in whose team holds the deal's owner",
        "not_your_team": "the owner {owner} is not in your team",
        "reason_needed": "Give a reason",
        "no_outcome": "no outcome recorded yet",
        "ask": "Ask",
        "why_question": "Why was an action advised to a record (on a date)",
        "on": "On (date, optional)",
        "why_needs": "Give a record and an action",
        "advice": "Advice",
        "why_advised": "why",
        "name": "User name",
        "password": "Password",
        "bad_login": "Wrong user name or password",
        "parameters_of": "Parameters",
        "check": "Check",
        "check_ok": "Check passed: no problems",
        "check_problems": "{n} problems",
        "tests": "Tests",
        "tests_summary": "{passed} passed, {failed} failed; coverage {coverage}% of rows and rules ({reached}/{total})",
        "not_reached": "Rows and rules no test reaches: {n}",
        "no_playbook_file": "The console was started without a playbook file: no check or tests to run (--playbook)",
        "no_tests": "There are no test files beside the playbook",
        "no_playbook": "The audit log holds no playbook yet",
        "old": "Old version",
        "new": "New version",
        "compare": "Compare",
        "changes": "Changes",
        "no_changes": "The two versions do not differ",
        "replay_impact": "Replay impact (the latest evaluation of every record)",
        "replay_summary": "{n} replayed: {changed} would change, {failed} fail under the new playbook",
        "added": "added",
        "removed": "removed",
        "changed": "changed",
        "moved": "moved",
        "actions_added": "Actions advised more",
        "actions_removed": "Actions advised less",
        "decisions_changed": "Decisions that would change",
        "examples": "e.g.",
        "diff_needs_ops": "The diff and its replay are for sales ops: sign in as an ops user",
        "one_version": "The audit log holds one playbook version: nothing to compare",
        "no_data": "No data yet",
        "portfolio_empty": "The log holds no evaluations yet: there is no portfolio to review.",
        "agenda_empty": "The log holds no tasks yet: the agenda is empty.",
        "group_by": "Group by",
        "tasks": "Tasks",
        "tasks_of_evaluation": "Tasks and their history",
        "no_tasks": "This evaluation made no tasks.",
        "task_state": "Task state",
        "any_state": "any state",
        "tasks_found": "{n} tasks found",
        "tasks_more": "only the first {n} are listed here (the exports hold them all)",
        "no_tasks_found": "No task matches.",
        "made_by_rule": "made by the playbook: rule \u201c{rule}\u201d recommended it (evaluation #{seq})",
        "cancelled_by_playbook": "cancelled by the playbook (the opportunity closed or it is no longer advised)",
        "overdue_by_playbook": "not done by its due day {due}",
        "escalated_by_playbook": "overdue: escalated to the {to}",
        "the_playbook": "the playbook",
        "bad_value": "Not one of the choices: {value}",
        "group_owner": "owner",
        "group_team": "team",
        "group_region": "region",
        "group_market": "market (product)",
        "review_day": "Review day",
        "agenda_day": "Agenda day",
        "show": "Show",
        "everyone": "everyone",
        "agenda_for": "Agenda of {whose}, {day}",
        "section_escalated": "Escalated",
        "section_overdue": "Overdue",
        "section_due_soon": "Due this week",
        "section_open": "Other open work",
        "next_reviews": "Next reviews",
        "open_work": "{n} open",
        "task": "Task",
        "due": "Due",
        "no_due": "no due date",
        "escalated_to": "Escalated to",
        "more_tasks": "{n} more not listed: choose an owner to narrow the list.",
        "not_found": "Not found",
        "no_evaluation": "There is no evaluation {seq}",
        "forbidden": "Not allowed",
        "csrf": "The form has expired or lacks its token: reload the page and send it again",
        "error": "Error",
        "mismatch": "This evaluation does not match its re-evaluation under the stored playbook: "
        "it is not explained; run playbook audit verify",
        "in_force_for": "Advice for record {record}",
        "field": "Field",
        "old_value": "Old",
        "new_value": "New",
        "language": "Language",
        "page": "Evaluation {seq}",
        "who": "Who",
        "when": "When",
        "kind": "Kind",
        "location": "Location",
        "problem": "Problem",
        "playbook_version_of": "playbook {version}",
        "kind_playbook": "playbook",
        "kind_parameter": "parameter",
        "kind_input": "input",
        "kind_table": "table",
        "kind_row": "row",
        "kind_rule": "rule",
        "kind_action": "action",
        "chain_evaluations": "evaluations",
        "chain_outcomes": "outcomes",
        "chain_records": "record states",
        "chain_quarantined": "quarantined events",
        "chain_tasks": "task moves",
    },
}

_FILTERS = ("record", "account", "owner", "region", "action", "rule", "version", "since", "until")


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def add_user(store: Store, name: str, role: str, password: str, team: Sequence[str] = ()) -> None:
    """A console user (or a new password and role for one); ValueError for a bad role or short password."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not '{role}'")
    if not name.strip() or name != name.strip():
        raise ValueError("a user name must not be empty or start or end with a space")
    if len(password) < 10:
        raise ValueError("a password must have at least 10 characters")
    store.save_user(name, role, [t for t in team if t], hash_password(password))


@dataclass(frozen=True)
class _User:
    name: str
    role: str
    team: tuple[str, ...]


class _Rederived:
    """A stored evaluation evaluated again and checked, and what the pages show of it in each language."""

    def __init__(self, result: Result) -> None:
        self.result = result
        self._shown: dict[str, tuple[dict[str, Any], str, str]] = {}

    def explained(self, lang: str) -> tuple[dict[str, Any], str, str]:
        """The result as JSON, its summary and its whole trace, in ``lang`` (made once each)."""
        found = self._shown.get(lang)
        if found is None:
            playbook, payload = self.result.playbook, self.result.to_json(lang)
            found = self._shown[lang] = (payload, render_result(playbook, payload, lang), why(playbook, payload, lang))
        return found


@dataclass(frozen=True)
class _Review:
    """A portfolio review as computed for one state of the log: the report, its charts (SVG) and its
    sections as HTML, by the path the console is mounted under."""

    report: dict[str, Any]
    charts: dict[str, str]
    bodies: dict[str, Markup]


@dataclass(frozen=True)
class _Search:
    """The filters of a search as typed, and what is wrong with them."""

    values: dict[str, str]
    errors: list[str]

    def query(self, **more: str) -> str:
        return urlencode({k: v for k, v in {**self.values, **more}.items() if v})


class Console:
    """The pages over one store; ``playbook`` the one being served (else the log's newest), with its
    file for the check and test pages when known."""

    def __init__(
        self, store: Store, *, playbook: Playbook | None = None, playbook_path: str | None = None, secret: str
    ) -> None:
        if len(secret) < 32:
            raise ValueError(f"the console secret ({SECRET_ENV}) must have at least 32 characters")
        self.store = store
        self.playbook_path = playbook_path
        self._served = playbook
        self._secret = secret
        self._playbooks: dict[str, Playbook] = {}
        self._evaluators: dict[str, Evaluator] = {}
        self._rederived: dict[str, _Rederived] = {}  # the row's content -> its re-evaluation, checked
        self._reads: dict[tuple[Any, ...], tuple[Any, Any]] = {}  # key -> (the log's heads, what was read)
        self._blocks: dict[tuple[str, str], tuple[str, Markup]] = {}  # (content hash, lang): title, tables
        self._director: dict[tuple[Any, ...], tuple[Any, Any]] = {}  # key -> (the log's heads, what was made)
        self._director_lock = threading.Lock()
        self._compile_lock = threading.Lock()
        self._checked: tuple[Any, tuple[list[dict[str, str]] | None, dict[str, Any] | None]] | None = None
        self._lock = threading.Lock()
        self._check_lock = threading.Lock()
        self.templates = Environment(
            loader=FileSystemLoader(_FILES), autoescape=True, undefined=StrictUndefined, trim_blocks=True
        )
        self._css = (_FILES / "console.css").read_bytes()
        self._icon = (_FILES / "favicon.svg").read_bytes()

    # -- the app ---------------------------------------------------------------------

    def app(self, *, https_only: bool = False) -> Starlette:
        """The console as an app to mount under /ui."""
        routes = [
            Route("/", self.search_page, name="search"),
            Route("/console.css", self.css),
            Route("/favicon.svg", self.icon),
            Route("/export.csv", self.export_csv),
            Route("/export.jsonl", self.export_json),
            Route("/evaluations/{seq:int}", self.evaluation_page),
            Route("/evaluations/{seq:int}/outcomes", self.outcome_form, methods=["POST"]),
            Route("/why", self.why_page),
            Route("/playbook", self.playbook_page),
            Route("/diff", self.diff_page),
            Route("/audit", self.audit_page),
            Route("/portfolio", self.portfolio_page),
            Route("/portfolio/chart.svg", self.portfolio_chart),
            Route("/agenda", self.agenda_page),
            Route("/tasks", self.tasks_page),
            Route("/tasks.csv", self.export_tasks),
            Route("/tasks.jsonl", self.export_tasks),
            Route("/login", self.login_page, methods=["GET", "POST"]),
            Route("/logout", self.logout, methods=["POST"]),
        ]
        session = Middleware(
            SessionMiddleware,
            secret_key=self._secret,
            session_cookie="playbook_console",
            max_age=8 * 3600,
            same_site="strict",
            https_only=https_only,
        )
        return Starlette(routes=routes, middleware=[session, Middleware(_SecurityHeaders)])

    # -- shared -------------------------------------------------------------------------

    def playbook_of(self, content_hash: str) -> Playbook:
        with self._lock:
            found = self._playbooks.get(content_hash)
        if found is None:
            found = load_playbook_text(self.store.playbook_text(content_hash), f"<playbook {content_hash[:12]}>")
            with self._lock:
                self._playbooks[content_hash] = found
        return found

    def evaluator_of(self, content_hash: str) -> Evaluator:
        """The evaluator of a stored playbook version, compiled once: its rules depend only on the text
        named by the content hash.  Uncached (``cache_size=0``): every row :meth:`rederived` has not
        seen is asked of durable-rules again, question by question."""
        with self._compile_lock:
            found = self._evaluators.get(content_hash)
            if found is None:
                compiled = compile_playbook(self.playbook_of(content_hash))
                found = self._evaluators[content_hash] = Evaluator(compiled, cache_size=0)
        return found

    def rederived(self, stored: StoredEvaluation) -> _Rederived:
        """The stored evaluation evaluated again under its own playbook version, checked against the log.

        Kept by everything the check reads of the row (a re-evaluation is deterministic), with the texts
        shown of it: a page shown again is not evaluated again, and a row changed in the database has
        another key, so it is evaluated and checked anew.  A mismatch is not kept: it is raised on every
        page."""
        read = (stored.seq, stored.playbook_hash, stored.status, stored.error, stored.as_of, stored.case_id)
        key = canonical([*read, stored.facts, stored.decisions, stored.fired, stored.recommendations])
        with self._lock:
            found = self._rederived.get(key)
        if found is None:
            found = _Rederived(rederive(stored, self.evaluator_of(stored.playbook_hash)))
            with self._lock:
                self._rederived[key] = found
                if len(self._rederived) > _REDERIVED_KEPT:
                    self._rederived.pop(next(iter(self._rederived)))
        return found

    def current_playbook(self) -> Playbook | None:
        if self._served is not None:
            return self._served
        versions = self.store.playbook_versions()
        return self.playbook_of(versions[-1]["hash"]) if versions else None

    def user(self, request: Request) -> _User | None:
        name = request.session.get("user")
        if not isinstance(name, str):
            return None
        found = self.store.user(name)
        if found is None:
            return None
        return _User(found["name"], found["role"], tuple(found["team"]))

    def render(self, request: Request, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        lang = _lang(request)
        user = self.user(request)
        other = "en" if lang == "zh" else "zh"
        switch = request.url.path + "?" + urlencode({**dict(request.query_params), "lang": other})
        page = self.templates.get_template(template).render(
            t=_words_of(lang),
            lang=lang,
            other_lang=other,
            switch=switch,
            base=request.scope.get("root_path", ""),
            user=user,
            csrf=_csrf_token(request),
            **values,
        )
        return HTMLResponse(page, status_code=status)

    def fragment(self, template: str, lang: str, base: str, **values: Any) -> Markup:
        """Part of a page (a table's rows) as HTML, escaped by the template, to be kept and put in pages."""
        body = self.templates.get_template(template).render(t=_words_of(lang), base=base, **values)
        return Markup(body)  # noqa: S704 - rendered with autoescape

    def message(self, request: Request, status: int, title: str, text: str) -> HTMLResponse:
        return self.render(request, "message.html", status=status, title=title, text=text)

    # -- auditor ------------------------------------------------------------------------

    def _search(self, request: Request) -> _Search:
        values = {name: request.query_params.get(name, "").strip() for name in _FILTERS}
        errors = []
        for name in ("since", "until"):
            if values[name]:
                try:
                    dt.date.fromisoformat(values[name])
                except ValueError:
                    errors.append(_WORDS[_lang(request)]["bad_date"].format(value=values[name]))
        return _Search(values, errors)

    def _found(self, search: _Search, limit: int | None = None) -> Generator[StoredEvaluation, None, None]:
        v = search.values
        searched = self.store.search(
            record_id=v["record"] or None,
            account_id=v["account"] or None,
            action=v["action"] or None,
            rule=v["rule"] or None,
            since=v["since"] or None,
            until=v["until"] or None,
            playbook_version=v["version"] or None,
            owner=v["owner"] or None,
            region=v["region"] or None,
            newest_first=True,
            limit=limit,
        )
        with contextlib.closing(searched):
            yield from searched

    def search_page(self, request: Request) -> Response:
        search = self._search(request)
        rows: list[dict[str, Any]] = []
        rows_html = Markup()
        more = False
        if not search.errors:
            lang = _lang(request)
            base = request.scope.get("root_path", "")

            def first_page() -> tuple[list[dict[str, Any]], Markup, bool]:
                with contextlib.closing(self._found(search, _PAGE_SIZE + 1)) as searched:
                    found = list(searched)
                shown = [self._row(stored, lang) for stored in found[:_PAGE_SIZE]]
                return shown, self.fragment("search_rows.html", lang, base, rows=shown), len(found) > _PAGE_SIZE

            key = ("search", lang, base, *sorted(search.values.items()))
            rows, rows_html, more = self._read_kept(key, first_page)
        status = 400 if search.errors else 200
        return self.render(
            request,
            "search.html",
            status=status,
            search=search,
            rows=rows,
            rows_html=rows_html,
            more=more,
            page_size=_PAGE_SIZE,
        )

    def _row(self, stored: StoredEvaluation, lang: str) -> dict[str, Any]:
        row = listing_row(stored)
        playbook = self.playbook_of(stored.playbook_hash)
        opportunity = stored.facts.get("opportunity")
        opportunity = opportunity if isinstance(opportunity, dict) else {}
        row["owner"] = opportunity.get("owner")
        row["region"] = opportunity.get("region")
        row["advice"] = [_action_label(playbook, r["id"], lang) for r in stored.recommendations]
        row["outcome_texts"] = _outcomes_shown(stored, playbook, lang)
        row["error_code"] = stored.error["code"] if stored.error else None
        return row

    def _export_rows(self, request: Request) -> list[StoredEvaluation] | None:
        search = self._search(request)
        if search.errors:
            return None
        with contextlib.closing(self._found(search, _limit(request.query_params.get("limit")))) as searched:
            return list(searched)

    def export_csv(self, request: Request) -> Response:
        rows = self._export_rows(request)
        if rows is None:
            return self.message(request, 400, _WORDS[_lang(request)]["error"], "; ".join(self._search(request).errors))
        out = io.StringIO()
        write_csv(rows, out)
        return Response(
            out.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="evaluations.csv"'},
        )

    def export_json(self, request: Request) -> Response:
        rows = self._export_rows(request)
        if rows is None:
            return self.message(request, 400, _WORDS[_lang(request)]["error"], "; ".join(self._search(request).errors))
        return Response(
            "".join(json_lines(rows)),
            media_type="application/x-ndjson; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="evaluations.jsonl"'},
        )

    def evaluation_page(self, request: Request) -> Response:
        return self._evaluation(request, int(request.path_params["seq"]))

    def _evaluation(self, request: Request, seq: int, *, notice: str = "", status: int = 200) -> Response:
        lang = _lang(request)
        words = _WORDS[lang]
        try:
            stored = self.store.get(seq)
        except LookupError:
            return self.message(request, 404, words["not_found"], words["no_evaluation"].format(seq=seq))
        playbook = self.playbook_of(stored.playbook_hash)
        summary = trace = why_not_text = ""
        problem = ""
        if stored.status == "ok" and not stored.error:
            try:
                payload, summary, trace = self.rederived(stored).explained(lang)
            except StoredMismatch:
                problem = words["mismatch"]
            else:
                target = request.query_params.get("why_not", "")
                if target:
                    try:
                        why_not_text = why_not(playbook, payload, target, lang)
                    except UnknownTarget as error:
                        why_not_text = str(error)
                        status = 400
        user = self.user(request)
        recommendations = [
            {
                "position": r["position"],
                "id": r["id"],
                "rule": r["rule"],
                "label": _action_label(playbook, r["id"], lang),
                "rule_label": _rule_label(playbook, r["rule"], lang),
                "outcomes": _outcomes_shown(stored, playbook, lang, {r["position"]}),
            }
            for r in stored.recommendations
        ]
        return self.render(
            request,
            "evaluation.html",
            status=status,
            tasks=self._read_kept(("tasks of", stored.seq, lang), lambda: self._tasks_of(stored, playbook, lang)),
            stored=stored,
            header=stored_header(stored, lang),
            who=who_and_where(stored.facts, lang),
            summary=summary,
            trace=trace,
            problem=problem,
            why_not_text=why_not_text,
            why_not_target=request.query_params.get("why_not", ""),
            targets=_why_not_targets(playbook, lang),
            recommendations=recommendations,
            can_record=user is not None and _may_answer(user, stored),
            statuses=OUTCOME_STATUSES,
            notice=notice,
        )

    async def outcome_form(self, request: Request) -> Response:
        form = await request.form()
        seq = int(request.path_params["seq"])
        lang = _lang(request)
        words = _WORDS[lang]
        if not _csrf_ok(request, form.get("csrf")):
            return self.message(request, 403, words["forbidden"], words["csrf"])
        user = await run_in_threadpool(self.user, request)
        if user is None or user.role != "manager":
            return self.message(request, 403, words["forbidden"], words["outcome_needs_manager"])
        position, status, reason = (str(form.get(k, "")).strip() for k in ("position", "status", "reason"))

        def record() -> Response:
            try:
                stored = self.store.get(seq)
            except LookupError:
                return self.message(request, 404, words["not_found"], words["no_evaluation"].format(seq=seq))
            if not _may_answer(user, stored):
                owner = _owner(stored) or "?"
                return self.message(request, 403, words["forbidden"], words["not_your_team"].format(owner=owner))
            if not reason:
                return self._evaluation(request, seq, notice=words["reason_needed"], status=400)
            try:
                done = record_outcome(self.store, seq, position, status, user.name, reason)
            except (UnknownEvaluation, AmbiguousAction, LookupError, ValueError) as error:
                return self._evaluation(request, seq, notice=str(error).strip("'\""), status=400)
            return RedirectResponse(f"{request.scope.get('root_path', '')}/evaluations/{seq}?saved={done}", 303)

        return await run_in_threadpool(record)

    def _tasks_of(self, stored: StoredEvaluation, playbook: Playbook, lang: str) -> list[dict[str, Any]]:
        """The tasks this evaluation made, each with its timeline: who moved it, when and why."""
        record = stored.record_id or stored.case_id
        made = [task for task in listing(self.store, record=record) if task.evaluation_seq == stored.seq]
        return [
            {
                **_task_row(task, playbook, lang),
                "events": [_task_event(e, playbook, lang) for e in task_history(self.store, task.id)],
            }
            for task in made
        ]

    def _agenda(
        self, playbook: Playbook | None, owner: str | None, day: dt.date, lang: str, base: str
    ) -> dict[str, Any] | None:
        """The agenda's sections as shown (their rows as HTML too), None when the log holds no tasks (of the owner)."""
        words = _WORDS[lang]
        tasks = listing(self.store, owner=owner)
        if not tasks:
            return None
        built = build_agenda(playbook, tasks, day, owner)
        sections = []
        for name, listed in built.sections.items():
            rows = [
                {
                    "task": task.id,
                    "evaluation": task.evaluation_seq,
                    "record": task.record,
                    "action": _action_label(playbook, task.action, lang) if playbook else task.action,
                    "owner": OWNER_LABELS.get(task.owner, {}).get(lang, task.owner),
                    "due": task.due or words["no_due"],
                    "escalated_to": OWNER_LABELS.get(task.escalate_to or "", {}).get(lang, task.escalate_to or ""),
                }
                for task in listed[:_AGENDA_ROWS]
            ]
            rows_html = self.fragment("agenda_rows.html", lang, base, rows=rows)
            sections.append(
                {"name": name, "count": len(listed), "rows_html": rows_html, "more": len(listed) - len(rows)}
            )
        reviews = [
            {
                "day": day_.isoformat(),
                "label": playbook.schedules[schedule].label.get(lang, schedule) if playbook else schedule,
                "open_work": open_work,
            }
            for day_, schedule, open_work in built.reviews
        ]
        whose = OWNER_LABELS[owner][lang] if owner else words["everyone"]
        return {"title": words["agenda_for"].format(whose=whose, day=day), "sections": sections, "reviews": reviews}

    def _task_search(
        self, request: Request, heads: dict[str, tuple[int, str]] | None = None
    ) -> tuple[dict[str, str], str, list[Task]]:
        """The task filters asked, what is wrong with them, and the tasks found, newest first."""
        words = _WORDS[_lang(request)]
        values = {k: request.query_params.get(k, "").strip() for k in ("record", "owner", "action", "state")}
        if values["owner"] and values["owner"] not in OWNER_LABELS:
            return values, words["bad_value"].format(value=values["owner"]), []
        if values["state"] and values["state"] not in STATUS_LABELS:
            return values, words["bad_value"].format(value=values["state"]), []
        owner, record, state = values["owner"] or None, values["record"] or None, values["state"] or None
        everything: list[Task] = self._by_log_state(
            ("tasks", owner, record, state),
            lambda: listing(self.store, owner=owner, record=record, statuses=[state] if state else None),
            heads,
        )
        return values, "", [t for t in reversed(everything) if not values["action"] or t.action == values["action"]]

    def tasks_page(self, request: Request) -> Response:
        """Tasks by record, owner, action and state, newest first; exported whole as CSV or JSON Lines."""
        lang = _lang(request)
        heads = self.store.head()
        values, error, matching = self._task_search(request, heads)
        playbook = self.current_playbook()
        base = request.scope.get("root_path", "")

        def rows_of() -> tuple[list[dict[str, Any]], Markup]:
            shown = [_task_row(task, playbook, lang) for task in matching[:_TASK_ROWS]]
            return shown, self.fragment("task_rows.html", lang, base, rows=shown)

        key = ("task rows", lang, base, playbook.content_hash if playbook else None, *sorted(values.items()))
        rows, rows_html = self._read_kept(key, rows_of, heads)
        return self.render(
            request,
            "tasks.html",
            status=400 if error else 200,
            values=values,
            query=urlencode({k: v for k, v in values.items() if v}),
            owners=[(key, labels[lang]) for key, labels in OWNER_LABELS.items()],
            states=[(key, labels[lang]) for key, labels in STATUS_LABELS.items()],
            actions=self._actions(lang),
            rows=rows,
            rows_html=rows_html,
            found=len(matching),
            limit=_TASK_ROWS,
            error=error,
        )

    def export_tasks(self, request: Request) -> Response:
        _, error, matching = self._task_search(request)
        if error:
            return self.message(request, 400, _WORDS[_lang(request)]["error"], error)
        fmt = "csv" if request.url.path.endswith(".csv") else "json"
        out = io.StringIO()
        write_tasks(matching, fmt, out)
        kind = "text/csv" if fmt == "csv" else "application/x-ndjson"
        name = "tasks.csv" if fmt == "csv" else "tasks.jsonl"
        return Response(
            out.getvalue(),
            media_type=f"{kind}; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    def why_page(self, request: Request) -> Response:
        lang = _lang(request)
        words = _WORDS[lang]
        record_id, action, on = (request.query_params.get(k, "").strip() for k in ("record", "action", "on"))
        values = {"record": record_id, "action": action, "on": on}
        actions = self._actions(lang)
        if not record_id and not action:
            return self.render(request, "why.html", values=values, actions=actions, answer=None, error="")
        if not record_id or not action:
            return self.render(
                request, "why.html", status=400, values=values, actions=actions, answer=None, error=words["why_needs"]
            )
        if on:
            try:
                dt.date.fromisoformat(on)
            except ValueError:
                error = words["bad_date"].format(value=on)
                return self.render(
                    request, "why.html", status=400, values=values, actions=actions, answer=None, error=error
                )
        try:
            # which evaluation is in force is kept per state of the log; that evaluation is read afresh and checked
            seq, note = self._read_kept(
                ("advice in force", record_id, action, on, lang),
                lambda: advice_in_force(self.store, record_id, action, on or None, lang),
            )
            stored = self.store.get(seq)
            rederived = self.rederived(stored)
            text = why_action(rederived.result.playbook, rederived.explained(lang)[0], action, lang)
        except StoredMismatch:
            return self.render(
                request, "why.html", status=409, values=values, actions=actions, answer=None, error=words["mismatch"]
            )
        except (LookupError, UnknownTarget) as error:
            return self.render(
                request, "why.html", status=404, values=values, actions=actions, answer=None, error=str(error)
            )
        wanted, rule = split_action(action)
        positions = {r["position"] for r in stored.recommendations if r["id"] == wanted and rule in (None, r["rule"])}
        playbook = self.playbook_of(stored.playbook_hash)
        answer = {
            "seq": seq,
            "note": note or "",
            "header": stored_header(stored, lang),
            "text": text,
            "outcomes": _outcomes_shown(stored, playbook, lang, positions) if positions else [],
            "advised": bool(positions),
        }
        return self.render(request, "why.html", values=values, actions=actions, answer=answer, error="")

    def _actions(self, lang: str) -> list[tuple[str, str]]:
        """The actions of the playbook in use, (id, label), offered as the why page's suggestions."""
        playbook = self.current_playbook()
        return [(a.id, a.label.get(lang, a.id)) for a in playbook.actions.values()] if playbook is not None else []

    def audit_page(self, request: Request) -> Response:
        heads = self.store.head()
        problems: list[str] | None = None
        if request.query_params.get("verify"):
            problems = [str(p) for p in self.store.verify()]
        return self.render(request, "audit.html", heads=heads, problems=problems, count=_evaluations_in(heads))

    # -- sales ops ------------------------------------------------------------------------

    def playbook_page(self, request: Request) -> Response:
        lang = _lang(request)
        playbook = self.current_playbook()
        if playbook is None:
            return self.message(request, 200, _WORDS[lang]["playbook"], _WORDS[lang]["no_playbook"])
        check, tests = self._check_and_tests()
        key = (playbook.content_hash, lang)
        shown = self._blocks.get(key)
        if shown is None:
            # the tables depend only on the version and the language: escaped once, not on every request
            blocks = playbook_blocks(playbook, lang)
            body = self.templates.get_template("playbook_blocks.html").render(blocks=blocks)
            shown = self._blocks[key] = (blocks[0].text, Markup(body))  # noqa: S704 - rendered with autoescape
        title, body = shown
        return self.render(request, "playbook.html", title=title, body=body, check=check, tests=tests)

    def _check_and_tests(self) -> tuple[list[dict[str, str]] | None, dict[str, Any] | None]:
        """The check's problems and the test report of the playbook file; None when there is no file.

        Kept while the playbook file and its test files are unchanged: running the tests takes seconds.
        """
        if self.playbook_path is None:
            return None, None
        from engine.testing import default_test_dir

        folder = default_test_dir(self.playbook_path)
        files = [Path(self.playbook_path), *(sorted(folder.glob("*.yaml")) if folder.is_dir() else [])]
        stamp = tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files if f.exists())
        with self._check_lock:  # one run at a time: the pages asked meanwhile wait for it, not run it again
            if self._checked is None or self._checked[0] != stamp:
                self._checked = (stamp, self._run_check_and_tests())
            return self._checked[1]

    def _run_check_and_tests(self) -> tuple[list[dict[str, str]] | None, dict[str, Any] | None]:
        assert self.playbook_path is not None
        from engine.analyse import analyse
        from engine.testing import default_test_dir, load_tests, run_tests

        try:
            playbook = load_playbook(self.playbook_path)
        except PlaybookError as error:
            return [_problem(p) for p in error.problems], None
        problems = [_problem(p) for p in analyse(playbook)]
        folder = default_test_dir(self.playbook_path)
        files = sorted(folder.glob("*.yaml")) if folder.is_dir() else []
        if not files:
            return problems, {"none": True}
        try:
            report = run_tests(playbook, load_tests(files, playbook))
        except PlaybookError as error:
            return problems + [_problem(p) for p in error.problems], None
        return problems, {
            "none": False,
            "passed": len(report.outcomes) - len(report.failed),
            "failed": [
                {"location": str(o.test.location), "name": o.test.name, "differences": o.differences}
                for o in report.failed
            ],
            "coverage": f"{report.coverage:.1f}",
            "reached": len(report.members) - len(report.not_reached),
            "total": len(report.members),
            "not_reached": report.not_reached,
        }

    def diff_page(self, request: Request) -> Response:
        lang = _lang(request)
        words = _WORDS[lang]
        user = self.user(request)
        if user is None or user.role != "ops":
            return self.message(request, 403, words["forbidden"], words["diff_needs_ops"])
        versions = self.store.playbook_versions()
        if len(versions) < 2:
            return self.message(request, 200, words["diff"], words["one_version"])
        hashes = [v["hash"] for v in versions]
        old = request.query_params.get("old", hashes[-2])
        new = request.query_params.get("new", hashes[-1])
        if old not in hashes or new not in hashes:
            return self.message(request, 404, words["not_found"], f"{old[:12]} / {new[:12]}")
        old_playbook, new_playbook = self.playbook_of(old), self.playbook_of(new)
        changes = diff_playbooks(old_playbook, new_playbook)
        impact: dict[str, Any] | None = None
        if changes and request.query_params.get("replay"):
            newest = self.store.count()
            report = replay(self.store, new_playbook, old_playbook, {"evaluation": newest}, examples=5)
            impact = report.to_json(lang)
        return self.render(
            request,
            "diff.html",
            versions=versions,
            old=old,
            new=new,
            changes=[
                {
                    **c.to_json(),
                    "label": _change_label(c, old_playbook, new_playbook, lang),
                    "fields": [{"field": _field_label(name, lang), "old": o, "new": n} for name, o, n in c.fields],
                }
                for c in changes
            ],
            impact=impact,
        )

    # -- director --------------------------------------------------------------------------

    def portfolio_page(self, request: Request) -> Response:
        """The director's review (engine/review.py) of the log's open deals, grouped as asked, its charts
        served beside it; computed once per state of the log (its chain heads) and choice."""
        lang = _lang(request)
        words = _WORDS[lang]
        playbook = self.current_playbook()
        heads = self.store.head()
        if playbook is None or not _evaluations_in(heads):
            return self.message(request, 200, words["portfolio"], words["portfolio_empty"])
        choice, error = self._director_choice(request, lang)
        if error:
            return self.render(request, "portfolio.html", status=400, choice=choice, body="", error=error)
        review = self._review(playbook, choice, lang, heads)
        root = request.scope.get("root_path", "")
        body = review.bodies.get(root)
        if body is None:  # the sections as HTML, made once per review (their chart links name the mount)
            images = {
                name: f'<img src="{html.escape(self._chart_url(request, choice, name))}" alt="">'
                for name in review.charts
            }
            body = review.bodies[root] = Markup(html_sections(review.report, images))  # noqa: S704 - escaped there
        return self.render(request, "portfolio.html", choice=choice, body=body, error="")

    def portfolio_chart(self, request: Request) -> Response:
        lang = _lang(request)
        playbook = self.current_playbook()
        choice, error = self._director_choice(request, lang)
        if playbook is None or error:
            return Response(status_code=404)
        svg = self._review(playbook, choice, lang).charts.get(request.query_params.get("chart", ""))
        if svg is None:
            return Response(status_code=404)
        # matplotlib's SVG styles its shapes inline; nothing else in it may run or load
        return Response(svg, media_type="image/svg+xml", headers={"Content-Security-Policy": _SVG_CSP})

    def _chart_url(self, request: Request, choice: dict[str, str], name: str) -> str:
        query = urlencode({**{k: v for k, v in choice.items() if v}, "lang": _lang(request), "chart": name})
        return f"{request.scope.get('root_path', '')}/portfolio/chart.svg?{query}"

    def _director_choice(self, request: Request, lang: str) -> tuple[dict[str, str], str]:
        words = _WORDS[lang]
        choice = {k: request.query_params.get(k, "").strip() for k in ("group_by", "owner", "as_of")}
        choice["group_by"] = choice["group_by"] or "owner"
        if choice["group_by"] not in GROUPINGS:
            return choice, words["bad_value"].format(value=choice["group_by"])
        day = choice["as_of"] or dt.date.today().isoformat()
        try:
            dt.date.fromisoformat(day)
        except ValueError:
            return choice, words["bad_date"].format(value=choice["as_of"])
        choice["as_of"] = day
        return choice, ""

    def _review(
        self, playbook: Playbook, choice: dict[str, str], lang: str, heads: dict[str, tuple[int, str]] | None = None
    ) -> _Review:
        def review_now() -> _Review:
            day = dt.date.fromisoformat(choice["as_of"])
            options = ReviewOptions(day, choice["group_by"], choice["owner"] or None, lang)
            report = review_store(self.store, playbook, options, {"db": _WORDS[lang]["title"]})
            return _Review(report, review_charts(report), {})

        found: _Review = self._by_log_state(
            ("review", playbook.content_hash, lang, *sorted(choice.items())), review_now, heads
        )
        return found

    def _log_state(self, heads: dict[str, tuple[int, str]] | None = None) -> tuple[Any, ...]:
        """The log's chain heads (``heads`` when the caller has read them): every evaluation, outcome and
        task move is appended to a chain and moves its head, so what was read from the log while they
        stood as they are is still what the log holds."""
        return tuple(sorted((chain, tuple(head)) for chain, head in (heads or self.store.head()).items()))

    def _read_kept(
        self, key: tuple[Any, ...], make: Callable[[], Any], heads: dict[str, tuple[int, str]] | None = None
    ) -> Any:
        """``make()``, a read of the log kept while its chain heads stay as they were (the auditor's lists:
        one query of the heads instead of the search's).  Made outside the lock: reads run side by side.
        Keep only what is small here (a page's rows); whole listings are kept by :meth:`_by_log_state`."""
        state = self._log_state(heads)
        with self._lock:
            found = self._reads.get(key)
        if found is not None and found[0] == state:
            return found[1]
        made = make()
        with self._lock:
            self._reads[key] = (state, made)
            if len(self._reads) > _READS_KEPT:
                self._reads.pop(next(iter(self._reads)))
        return made

    def _by_log_state(
        self, key: tuple[Any, ...], make: Callable[[], Any], heads: dict[str, tuple[int, str]] | None = None
    ) -> Any:
        """``make()``, kept while the log's chain heads stay as they were (:meth:`_log_state`): a new
        evaluation, outcome or task moves a head, and then it is made again.  One at a time (the charts'
        library is not thread-safe, and eight clients asking for the same review should wait for one)."""
        state = self._log_state(heads)
        with self._director_lock:
            found = self._director.get(key)
            if found is not None and found[0] == state:
                return found[1]
            made = make()
            if len(self._director) >= _DIRECTOR_KEPT:
                self._director.pop(next(iter(self._director)))
            self._director[key] = (state, made)
            return made

    def agenda_page(self, request: Request) -> Response:
        """What is escalated, overdue and due this week (engine/agenda.py), for one owner or everyone."""
        lang = _lang(request)
        words = _WORDS[lang]
        choice, error = self._director_choice(request, lang)
        owner = choice["owner"] or None
        if owner is not None and owner not in OWNER_LABELS:
            error = words["bad_value"].format(value=owner)
        owners = [(key, labels[lang]) for key, labels in OWNER_LABELS.items()]
        if error:
            return self.render(
                request, "agenda.html", status=400, choice=choice, owners=owners, agenda=None, error=error
            )
        playbook = self.current_playbook()
        day = dt.date.fromisoformat(choice["as_of"])
        base = request.scope.get("root_path", "")
        key = ("agenda", playbook.content_hash if playbook else None, owner, day, lang, base)
        agenda = self._by_log_state(key, lambda: self._agenda(playbook, owner, day, lang, base))
        return self.render(request, "agenda.html", choice=choice, owners=owners, agenda=agenda, error="")

    # -- sign in ---------------------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        words = _WORDS[_lang(request)]
        if request.method == "GET":
            return self.render(request, "login.html", error="", name="")
        form = await request.form()
        if not _csrf_ok(request, form.get("csrf")):
            return self.message(request, 403, words["forbidden"], words["csrf"])
        name, password = str(form.get("name", "")), str(form.get("password", ""))
        found = await run_in_threadpool(self.store.user, name)
        if not await run_in_threadpool(_password_matches, found, password):
            return self.render(request, "login.html", status=401, error=words["bad_login"], name=name)
        lang = _lang(request)
        request.session.clear()  # a new session (and token) for the signed-in user
        request.session.update({"user": name, "lang": lang, "csrf": secrets.token_urlsafe(32)})
        return RedirectResponse(f"{request.scope.get('root_path', '')}/", 303)

    async def logout(self, request: Request) -> Response:
        form = await request.form()
        if not _csrf_ok(request, form.get("csrf")):
            words = _WORDS[_lang(request)]
            return self.message(request, 403, words["forbidden"], words["csrf"])
        lang = _lang(request)
        request.session.clear()
        request.session["lang"] = lang
        return RedirectResponse(f"{request.scope.get('root_path', '')}/", 303)

    def css(self, request: Request) -> Response:
        return Response(self._css, media_type="text/css", headers={"Cache-Control": "max-age=3600"})

    def icon(self, request: Request) -> Response:
        return Response(self._icon, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})


class _SecurityHeaders:
    """No script runs, no page is framed, nothing is sniffed: what a page can do is what its HTML says."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"content-security-policy" for name, _ in headers):  # a chart's own
                    headers.append((b"content-security-policy", _CSP))
                message["headers"] = [
                    *headers,
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                ]
            await send(message)

        await self.app(scope, receive, with_headers)


_SVG_CSP = "default-src 'none'; style-src 'unsafe-inline'"
_CSP = b"default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'"


def console_mount(console: Console, *, https_only: bool = False) -> Mount:
    return Mount("/ui", app=console.app(https_only=https_only))


def console_secret(value: str | None) -> str:
    """The console's session secret: the one configured, else a random one for this process only
    (sessions then end when it stops)."""
    return value if value else secrets.token_urlsafe(48)


def secret_from_environment() -> str | None:
    return os.environ.get(SECRET_ENV) or None


def _words_of(lang: str) -> Callable[..., str]:
    """The pages' ``t``: a text by its key in ``lang``, with its ``{parts}`` filled in."""
    words = _WORDS[lang]

    def t(key: str, **parts: Any) -> str:
        return words[key].format(**parts) if parts else words[key]

    return t


def _lang(request: Request) -> str:
    asked = request.query_params.get("lang")
    if asked in _WORDS:
        request.session["lang"] = asked
        return asked
    kept = request.session.get("lang")
    return kept if kept in _WORDS else "zh"


def _csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def _csrf_ok(request: Request, sent: Any) -> bool:
    token = request.session.get("csrf")
    return isinstance(token, str) and isinstance(sent, str) and hmac.compare_digest(token, sent)


def _password_matches(found: dict[str, Any] | None, password: str) -> bool:
    try:
        return _HASHER.verify(found["password_hash"] if found else _NO_USER_HASH, password) and found is not None
    except (VerificationError, InvalidHashError):
        return False


def _evaluations_in(heads: dict[str, tuple[int, str]]) -> int:
    """How many evaluations the log holds: the sum of the evaluations chain's partition heads."""
    return sum(seq for chain, (seq, _) in heads.items() if head_partition(chain)[0] == "evaluations")


def _owner(stored: StoredEvaluation) -> str | None:
    opportunity = stored.facts.get("opportunity")
    owner = opportunity.get("owner") if isinstance(opportunity, dict) else None
    return None if owner is None else str(owner)


def _may_answer(user: _User, stored: StoredEvaluation) -> bool:
    """A manager answers for the deals whose owner is in the team."""
    return user.role == "manager" and _owner(stored) in user.team and bool(stored.recommendations)


def _action_label(playbook: Playbook, action_id: str, lang: str) -> str:
    action = playbook.actions.get(action_id)
    return action.label.get(lang, action_id) if action is not None else action_id


def _rule_label(playbook: Playbook, rule_id: str, lang: str) -> str:
    rule = playbook.rules_by_id.get(rule_id)
    return rule.label.get(lang, rule_id) if rule is not None else rule_id


def _outcomes_shown(
    stored: StoredEvaluation, playbook: Playbook, lang: str, positions: set[int] | None = None
) -> list[dict[str, str]]:
    """The outcomes as a timeline: what (its label), status, who, when, why."""
    words = _WORDS[lang]
    return [
        {
            "action": _action_label(playbook, done["action"], lang),
            "status": words.get(done["status"], done["status"]),
            "who": done["who"],
            "at": done["at"][:19].replace("T", " ") + " UTC",
            "why": done["why"],
        }
        for done in stored.outcomes
        if positions is None or done["position"] in positions
    ]


def _task_row(task: Task, playbook: Playbook | None, lang: str) -> dict[str, Any]:
    def owner(key: str | None) -> str:
        return OWNER_LABELS.get(key or "", {}).get(lang, key or "")

    return {
        "task": task.id,
        "evaluation": task.evaluation_seq,
        "record": task.record,
        "action": _action_label(playbook, task.action, lang) if playbook else task.action,
        "owner": owner(task.owner),
        "state": STATUS_LABELS.get(task.status, {}).get(lang, task.status),
        "due": task.due or _WORDS[lang]["no_due"],
        "escalated_to": owner(task.escalate_to),
    }


def _task_event(event: dict[str, Any], playbook: Playbook | None, lang: str) -> dict[str, str]:
    """One move of a task as a person reads it.  The playbook's own reasons are stored in English with
    identifiers; they are said again in ``lang`` from the task's state.  A person's reason is theirs."""
    words = _WORDS[lang]
    state = event["task"]
    why = event["why"]
    if event["who"] == BY_PLAYBOOK:
        status = event["status"]
        if status == "cancelled":
            why = words["cancelled_by_playbook"]
        elif status == "overdue":
            why = words["overdue_by_playbook"].format(due=state.get("due") or "")
        elif status == "escalated":
            to = state.get("escalate_to") or ""
            why = words["escalated_by_playbook"].format(to=OWNER_LABELS.get(to, {}).get(lang, to))
        elif lang == "zh" or status == "open":
            rule = state.get("rule", "")
            label = _rule_label(playbook, rule, lang) if playbook is not None else rule
            why = words["made_by_rule"].format(rule=label, seq=state.get("evaluation_seq", ""))
    return {
        "when": f"{event['as_of']} · {event['at'][:19].replace('T', ' ')} UTC",
        "state": STATUS_LABELS.get(event["status"], {}).get(lang, event["status"]),
        "who": words["the_playbook"] if event["who"] == BY_PLAYBOOK else event["who"],
        "why": why,
    }


def _why_not_targets(playbook: Playbook, lang: str) -> list[tuple[str, str]]:
    """(value, label) of every action and every decision value, for the why-not question."""
    targets = [(a.id, a.label.get(lang, a.id)) for a in playbook.actions.values()]
    for decision in playbook.decisions.values():
        name = decision.label.get(lang, decision.name)
        for value in decision.values or ():
            shown = decision.value_labels.get(str(value))
            label = shown.get(lang, str(value)) if shown is not None else str(value)
            targets.append((f"{decision.name}={value}", f"{name} = {label}"))
    return targets


def _change_label(change: Change, old: Playbook, new: Playbook, lang: str) -> str:
    """What a change is to, by its label in the newer playbook that has it (an English page adds the id)."""
    kind = _WORDS[lang][f"kind_{change.kind}"]
    for playbook in (new, old):
        things: Any = {
            "parameter": playbook.parameters,
            "input": playbook.inputs,
            "table": playbook.decisions,
            "rule": playbook.rules_by_id,
            "action": playbook.actions,
        }.get(change.kind, {})
        found = things.get(change.id)
        label = getattr(found, "label", None)
        if isinstance(label, dict) and label.get(lang):
            shown = str(label[lang])
            return f"{kind} {shown}" if lang == "zh" else f"{kind} {shown} ({change.id})"
    return kind if lang == "zh" and change.kind == "playbook" else f"{kind} {change.id}"


def _field_label(path: str, lang: str) -> str:
    """A changed key of the playbook file (``label.zh``, ``rows``) as a zh reader names it; English pages
    show the key path as written.  Keys that are ids (of values, rows) are left out of the zh name."""
    if lang != "zh":
        return path
    named = [_ZH_KEYS[part] for part in path.split(".") if part in _ZH_KEYS]
    return "·".join(named) if named else "其他设置"


_ZH_KEYS = {
    "label": "名称", "description": "说明", "explain": "解释", "source": "出处", "guide": "课程条目",
    "quote": "原文", "note": "注", "policy": "政策", "when": "条件", "then": "结果", "otherwise": "否则",
    "value": "取值", "values": "可选值", "value_labels": "取值名称", "type": "类型", "rows": "行",
    "hit_policy": "命中规则", "output": "输出", "recommend": "建议", "owner": "负责人", "due": "期限",
    "every": "周期", "calendar": "日历", "weekday": "星期", "brings": "带上", "group_by": "分组",
    "aggregates": "汇总", "derive": "推算", "low": "下限", "high": "上限", "version": "版本",
    "id": "编号", "title": "标题", "zh": "中文", "en": "英文", "unit": "单位", "default": "默认值",
    "escalate": "升级", "params": "参数", "priority": "优先级", "all": "全部满足", "any": "任一满足",
}  # fmt: skip


def _problem(problem: Any) -> dict[str, str]:
    return {"location": str(problem.location), "code": problem.code, "message": problem.message}


def _limit(value: str | None) -> int | None:
    try:
        return max(1, int(value)) if value else None
    except ValueError:
        return None
