"""The ``playbook`` command: options in, library calls, a reporter out.

Exit codes (all of them set by :class:`Failed`, click's usage errors aside): 0 ok, 1 invalid
input or a failed run, 2 usage (and ``diff``'s trouble).  Everything that decides lives in the
library; this module only talks to the terminal.
"""

from __future__ import annotations

import csv
import datetime as dt
import gc
import json
import os
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NoReturn

import click

# A wheel ships the course playbook inside the engine package (pyproject.toml); a checkout keeps it in playbooks/.
DEFAULT_PLAYBOOK = next(
    (
        p
        for p in (Path(__file__).resolve().parent / d / "course.yaml" for d in ("engine/playbooks", "playbooks"))
        if p.is_file()
    ),
    Path(__file__).resolve().parent / "playbooks" / "course.yaml",
)
DEFAULT_DB = "sqlite:///playbook.db"
SHOWN_PROBLEMS = 50
DIRECTOR_CALL = "director_action"  # the decision recommend --format summary counts: the director's call (G-19)
# engine/workflow.py STATUSES, written here so that the CLI starts without importing the engine
TASK_STATUSES = ("open", "accepted", "done", "dismissed", "overdue", "escalated", "cancelled")


EXIT_FAILED = 1  # an invalid playbook or input, a case in error, a failed run, test or check
EXIT_TROUBLE = 2  # diff could not compare (as diff(1)); click's own usage errors exit 2 as well


@dataclass(frozen=True)
class _Member:
    """An evaluated case as the portfolio groups it: its id and values (not its whole result)."""

    case: str
    values: dict[str, Any]


class Failed(click.ClickException):
    """The command did not succeed: its message (if any) goes to stderr as it is, then the exit code.

    The one way a command ends other than by success: click's ``ClickException`` with the
    message unadorned (no "Error: " prefix: the messages are already ``file:line:col: code: ...``
    lines) and empty when the command has already said why on stdout.
    """

    def __init__(self, message: str = "", exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: IO[Any] | None = None) -> None:
        if self.message:
            click.echo(self.message, err=True)


def _as_of(value: str | None, option: str = "--as-of") -> dt.date:
    if value is None:
        return dt.date.today()
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"'{value}' is not a date (YYYY-MM-DD)", param_hint=option) from None


_GC_THRESHOLD = (50_000, 20, 100)  # Python's own: (700, 10, 10)


def _tune_memory() -> None:
    """For long runs: results hold no reference cycles, so reference counting frees them.

    The cycle collector's full passes over everything alive (the playbook, the memory of answers,
    a batch waiting for the audit log) cost more than half an import's time; freeze what was built
    so far and collect less often.  Measured: 71 -> 31 us of evaluation per Maven case.
    """
    gc.freeze()
    gc.set_threshold(*_GC_THRESHOLD)


def _load(path: str) -> Any:
    from engine import PlaybookError
    from engine.loader import default_loader

    try:
        return default_loader().load(path)
    except PlaybookError as error:
        raise Failed(str(error)) from None


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "show_default": True},
)
@click.version_option(package_name="sales-playbook", prog_name="playbook")
def main() -> None:
    """Sales playbooks: check them, and recommend what to do for each case, with the reasons."""
    # Before the command imports what it uses: importing SQLAlchemy and reading a cached playbook make
    # some 100,000 objects, over which Python's default thresholds run ~125 collections, one of them
    # full (0.05 s of `why`'s CPU); collecting every 50,000 new objects runs one.
    gc.set_threshold(*_GC_THRESHOLD)


@main.command()
@click.argument("playbooks", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--course",
    "course_path",
    type=click.Path(dir_okay=False, exists=True),
    help="The course text: every course quote must appear in it (whitespace aside).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one document, every problem with file, line, col, code, message (for CI).",
)
@click.option(
    "--verbose",
    "-v",
    is_flag=True,
    help=f"Show every problem, not just the first {SHOWN_PROBLEMS}, and those that follow from each, indented.",
)
def check(playbooks: tuple[str, ...], course_path: str | None, fmt: str, verbose: bool) -> None:
    """Check playbooks, their tables included; print every problem as file:line:col: code: message.

    The most fundamental problem comes first; problems that follow from another (the uses of a
    misspelt name, say) are folded under it.
    """
    from engine import PlaybookError
    from engine.analyse import analyse
    from engine.loader import default_loader
    from engine.sources import quotes_not_in_course

    course = Path(course_path).read_text(encoding="utf-8") if course_path else None
    found = []
    loader = default_loader()
    for path in dict.fromkeys(playbooks):  # a file named twice is checked once
        try:
            playbook = loader.load(path)
        except PlaybookError as error:
            found.extend(error.problems)
            continue
        found.extend(loader.derived(playbook, "analysis", analyse))
        if course is not None and course_path is not None:
            found.extend(quotes_not_in_course(playbook, course, course_path))
    problems = list(dict.fromkeys(found))  # one problem found by two checks is printed once
    if fmt == "json":
        report = {"ok": not problems, "playbooks": list(dict.fromkeys(playbooks))}
        click.echo(json.dumps(report | {"problems": [p.to_json() for p in problems]}, ensure_ascii=False, indent=2))
        if problems:
            raise Failed()
        return
    shown = problems if verbose else problems[:SHOWN_PROBLEMS]
    for problem in shown:
        click.echo(str(problem))
        for consequence in problem.consequences if verbose else ():
            click.echo(f"    {consequence}")
    if len(problems) > len(shown):
        click.echo(f"... and {len(problems) - len(shown)} more (--verbose shows all)")
    if problems:
        raise Failed()
    click.echo(f"ok: {len(playbooks)} playbook{'s' if len(playbooks) != 1 else ''} valid", err=True)


@main.command(name="test")
@click.argument("playbook_path", type=click.Path(dir_okay=False, exists=True))
@click.option(
    "--tests",
    "tests_dir",
    type=click.Path(file_okay=False, exists=True),
    help="Test folder (default: tests/<name>/ beside the playbook).",
)
@click.option(
    "--min-coverage",
    type=click.FloatRange(0, 100),
    default=0.0,
    help="Fail when fewer rows and rules (percent) are reached.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one document with every test, its differences, and the coverage (for CI).",
)
@click.option(
    "--junit",
    "junit_file",
    type=click.Path(dir_okay=False, writable=True),
    help="Also write the results as JUnit XML here, for a CI system's test report.",
)
def test_command(
    playbook_path: str, tests_dir: str | None, min_coverage: float, fmt: str, junit_file: str | None
) -> None:
    """Run a playbook's tests: expected against actual, and the rows and rules no test reaches."""
    from engine import PlaybookError, load_playbook
    from engine.ci import problems_junit, test_report_json, test_report_junit
    from engine.testing import default_test_dir, load_tests, run_tests

    def fail_loading(error: PlaybookError) -> NoReturn:
        if junit_file is not None:
            Path(junit_file).write_bytes(problems_junit(error.problems, playbook_path))
        if fmt == "json":
            click.echo(json.dumps({"ok": False, "problems": [p.to_json() for p in error.problems]}, ensure_ascii=False))
            raise Failed()
        raise Failed(str(error))

    try:
        playbook = load_playbook(playbook_path)
    except PlaybookError as error:
        fail_loading(error)
    folder = Path(tests_dir) if tests_dir else default_test_dir(playbook_path)
    files = sorted(folder.glob("*.yaml")) if folder.is_dir() else []
    if not files:
        raise Failed(f"no test files (*.yaml) in {folder}")
    try:
        tests = load_tests(files, playbook)
    except PlaybookError as error:
        fail_loading(error)
    report = run_tests(playbook, tests)
    if junit_file is not None:
        Path(junit_file).write_bytes(test_report_junit(report, min_coverage, playbook.id))
    if fmt == "json":
        document = test_report_json(report, min_coverage)
        click.echo(json.dumps(document, ensure_ascii=False, indent=2))
        if not document["ok"]:
            raise Failed()
        return
    for outcome in report.failed:
        click.echo(f"FAIL {outcome.test.location} {outcome.test.name}")
        for line in outcome.differences:
            click.echo(f"  {line}")
    passed = len(report.outcomes) - len(report.failed)
    click.echo(f"{passed} passed, {len(report.failed)} failed")
    click.echo(
        f"coverage: {report.coverage:.1f}% of rows and rules "
        f"({len(report.members) - len(report.not_reached)}/{len(report.members)})"
    )
    if report.not_reached:
        click.echo("not reached by any test: " + ", ".join(report.not_reached))
    if report.failed:
        raise Failed()
    if report.coverage < min_coverage:
        raise Failed(f"coverage {report.coverage:.1f}% is under --min-coverage {min_coverage:g}")


@main.command()
@click.argument("playbook_path", type=click.Path(dir_okay=False, exists=True))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["md", "html"]),
    default="md",
    show_default=True,
    help="md: Markdown, for a pull request; html: a standalone page.",
)
@click.option("--lang", type=click.Choice(["zh", "en"]), default="zh", show_default=True, envvar="PLAYBOOK_LANG")
@click.option("--output", "-o", type=click.File("w", encoding="utf-8"), default="-", help="Write here instead.")
def render(playbook_path: str, fmt: str, lang: str, output: IO[str]) -> None:
    """Show a playbook as people review it: each decision table as a table, each rule in words,
    parameters with their values, everything with its source."""
    from engine.render import render_playbook

    output.write(render_playbook(_load(playbook_path), fmt, lang))


@main.command()
@click.argument("old_path", metavar="OLD", type=click.Path(dir_okay=False, exists=True))
@click.argument("new_path", metavar="NEW", type=click.Path(dir_okay=False, exists=True))
@click.option("--format", "fmt", type=click.Choice(["text", "md", "json"]), default="text", show_default=True)
def diff(old_path: str, new_path: str, fmt: str) -> None:
    """What changed from OLD to NEW, by id: tables, rows, rules, actions, parameters, inputs, labels, sources.

    Exit code as diff(1): 0 no differences, 1 differences, 2 trouble (an invalid playbook).
    """
    from engine import PlaybookError, load_playbook
    from engine.diff import diff_playbooks, render_diff

    try:
        old, new = load_playbook(old_path), load_playbook(new_path)
    except PlaybookError as error:
        raise Failed(str(error), EXIT_TROUBLE) from None
    changes = diff_playbooks(old, new)
    click.echo(render_diff(changes, fmt, old_path, new_path), nl=False)
    if changes:
        raise Failed()  # as diff(1): differences are exit 1, said on stdout


_playbook_option = click.option(
    "--playbook",
    "playbook_path",
    default=str(DEFAULT_PLAYBOOK),
    show_default="playbooks/course.yaml",
    type=click.Path(dir_okay=False),
    help="The playbook file.",
)
_input_option = click.option(
    "--input",
    "input_file",
    required=True,
    type=click.File("r", encoding="utf-8-sig"),
    help="JSON Lines cases ('-' for stdin).",
)
_as_of_option = click.option("--as-of", "as_of", help="Evaluation date, YYYY-MM-DD (default: today).")
_lang_option = click.option(
    "--lang", type=click.Choice(["zh", "en"]), default="zh", show_default=True, envvar="PLAYBOOK_LANG", show_envvar=True
)


def _remember_key_file(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    ctx.meta["audit_key_file"] = value


def _db_option(command: Any) -> Any:
    """--db and --audit-key-file: where the audit log is, and the key its links are sealed with."""
    command = click.option(
        "--audit-key-file",
        type=click.Path(dir_okay=False),
        envvar="PLAYBOOK_AUDIT_KEY_FILE",
        show_envvar=True,
        expose_value=False,
        callback=_remember_key_file,
        help="The audit log's key (else PLAYBOOK_AUDIT_KEY); kept outside the database. "
        "See docs/audit-threat-model.md.",
    )(command)
    return click.option(
        "--db",
        default=DEFAULT_DB,
        show_default=True,
        envvar="PLAYBOOK_DB",
        show_envvar=True,
        help="Audit log database URL (SQLite file or postgresql://...).",
    )(command)


def _read_audit_key(path: str | None) -> bytes | None:
    """The audit key from a file (--audit-key-file), else PLAYBOOK_AUDIT_KEY, else None."""
    from engine.store import AuditKeyError, audit_key

    try:
        if path is not None:
            return audit_key(Path(path).read_bytes())
        value = os.environ.get("PLAYBOOK_AUDIT_KEY")
        return None if not value else audit_key(value)
    except OSError as error:
        raise Failed(f"cannot read the audit key file {path}: {error.strerror}") from None
    except AuditKeyError as error:
        raise Failed(str(error)) from None


def _open_store(url: str, *, write: bool = False, create: bool = True, partitions: int | None = None) -> Any:
    """The audit log; with ``write``, one this command can append to (its key given when it has one).

    ``create`` False for commands that read a log: a missing one is refused, not made.  ``partitions``:
    of a log this command creates (see engine.store.Store).
    """
    from engine.store import AuditKeyError, NoAuditLog, SchemaDamaged, Store

    context = click.get_current_context(silent=True)
    key = _read_audit_key(context.meta.get("audit_key_file") if context is not None else None)
    try:
        store = Store(url, key=key, create=create, partitions=partitions)
    except NoAuditLog as error:
        raise Failed(_without_password(f"{error}; check --db (or PLAYBOOK_DB)", url)) from None
    except SchemaDamaged as error:
        raise Failed(_without_password(f"the audit log {url} is damaged: {'; '.join(error.damage)}", url)) from None
    except Exception as error:  # noqa: BLE001 - any driver error becomes one clear line
        raise Failed(_without_password(f"cannot open the audit log {url}: {error}", url)) from None
    if context is not None:
        context.call_on_close(store.close)  # also when the command fails
    if write:
        try:
            store.check_writable()
        except AuditKeyError as error:
            store.close()
            raise Failed(str(error)) from None
    return store


def _without_password(text: str, url: str) -> str:
    """``text`` with ``url``'s password hidden (the CRM reader's module, imported only when needed)."""
    from adapters.sql_source import without_password

    return without_password(text, url)


def _shown(url: str) -> str:
    """A database URL as printed: never with its password."""
    if "@" not in url:  # no user, so no password: the CRM reader's module not imported for it
        return url
    from adapters.sql_source import shown_url

    return shown_url(url)


@main.command()
@_playbook_option
@click.option(
    "--input",
    "input_path",
    help="JSON Lines cases ('-' for stdin); with --mapping, a CRM export: CSV, or JSON records (.json, .jsonl).",
)
@click.option("--mapping", "mapping_name", help="A mapping preset (maven, salesforce_opportunity, ...) or file.")
@click.option(
    "--sql", "sql_url", help="Read records from a database instead (SQLAlchemy URL; read-only), with --mapping."
)
@click.option("--table", help="With --sql: the table to read.")
@click.option("--query", help="With --sql: a SELECT to run.")
@click.option(
    "--sql-timeout",
    type=click.FloatRange(0),
    default=300.0,
    show_default=True,
    help="With --sql: seconds the database may take to give the next rows (PostgreSQL, SQLite); 0 for no limit.",
)
@_as_of_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "summary"]),
    default="text",
    show_default=True,
    help="summary: counts per action, per director's call and per owner (the results go to the audit log).",
)
@_lang_option
@_db_option
@click.option("--no-store", is_flag=True, help="Do not keep the evaluations in the audit log.")
@click.option(
    "--reevaluate",
    is_flag=True,
    help="Evaluate an import stored earlier again, under the current playbook, as new evaluations.",
)
@click.option("--all", "every_decision", is_flag=True, help="Show every decision, the undetermined ones too.")
@click.option("--verbose", "-v", is_flag=True, help="List the quarantined records on stderr (JSON lists them anyway).")
@click.option(
    "--progress/--no-progress", default=None, help="A progress bar on stderr (default: when stderr is a terminal)."
)
@click.option(
    "--groups",
    "show_groups",
    is_flag=True,
    help="After the cases, the playbook's groups (per owner, region, market ...), each decided once "
    '(JSON: one {"group": ...} line each).',
)
def recommend(
    playbook_path: str,
    input_path: str | None,
    mapping_name: str | None,
    sql_url: str | None,
    table: str | None,
    query: str | None,
    sql_timeout: float,
    as_of: str | None,
    fmt: str,
    lang: str,
    db: str,
    no_store: bool,
    reevaluate: bool,
    every_decision: bool,
    verbose: bool,
    progress: bool | None,
    show_groups: bool,
) -> None:
    """Evaluate every case, print its decisions and recommendations, and keep them in the audit log.

    Every input record is accounted for: rows read = cases evaluated + stored earlier + rows quarantined.
    A file import run again shows what its earlier run stored, evaluating nothing again (a run stopped
    at any point resumes: only the cases not stored yet are evaluated); --reevaluate evaluates every
    case again under the current playbook, as new evaluations.
    """
    from adapters.import_run import ImportRun, QuarantinedRecord, Source, StoredEarlier, import_summary
    from adapters.mapping import load_mapping
    from engine import CaseError, EngineFault, Evaluator, PlaybookError, compile_playbook
    from engine.evaluate import Result
    from engine.report import grouping_name, render_case, render_group, render_tally

    when = _as_of(as_of)
    if sql_url is not None:
        if input_path is not None or mapping_name is None or (table is None) == (query is None):
            raise click.UsageError("--sql needs --mapping and exactly one of --table or --query, and no --input")
        input_path = sql_url
    elif input_path is None:
        raise click.UsageError("give --input (or --sql)")
    elif table is not None or query is not None:
        raise click.UsageError("--table and --query go with --sql")
    elif input_path != "-" and not Path(input_path).is_file():
        raise click.BadParameter(f"'{input_path}' is not a file", param_hint="--input")
    playbook = _load(playbook_path)
    try:
        mapping = load_mapping(mapping_name) if mapping_name else None
    except PlaybookError as error:
        raise Failed(str(error)) from None
    try:
        source = Source(input_path, mapping, table=table, query=query, timeout=sql_timeout or None)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--mapping") from None
    show_bar = source.kind != "sql" and (
        progress if progress is not None else input_path != "-" and sys.stderr.isatty()
    )
    bar = (
        click.progressbar(length=Path(input_path).stat().st_size, file=sys.stderr, label="reading")
        if show_bar
        else None
    )
    store = None if no_store else _open_store(db, write=True)
    tampered: tuple[type[Exception], ...] = ()  # an earlier run's playbook text, changed in the log
    if store is not None:  # (--no-store runs without the store's code)
        from engine.store import TamperedRecord

        tampered = (TamperedRecord,)
    where = _shown(input_path) if source.kind == "sql" else input_path
    with compile_playbook(playbook) as compiled:
        _tune_memory()
        tallied = DIRECTOR_CALL if DIRECTOR_CALL in playbook.decisions else None
        run = ImportRun(
            source,
            Evaluator(compiled),
            when,
            store,
            reevaluate=reevaluate,
            progress=bar.update if bar else None,
            tallied=tallied,
        )
        # the portfolio (per owner, region, market ...) reads each case's id and values, kept for after the cases
        members: list[_Member] | None = [] if show_groups and playbook.groups else None
        try:
            for event in run:
                if isinstance(event, QuarantinedRecord):
                    held = event.record
                    if fmt == "json":
                        click.echo(
                            json.dumps(
                                {
                                    "case": held.record_id or f"line {event.line}",
                                    "line": event.line,
                                    "quarantined": {"code": held.code, "reason": held.reason},
                                },
                                ensure_ascii=False,
                            )
                        )
                    elif verbose:
                        click.echo(f"{where}:{event.line}: quarantined: {held.code}: {held.reason}", err=True)
                    continue
                outcome = event.outcome
                if members is not None and isinstance(outcome, Result):
                    members.append(_Member(outcome.case, outcome.values))
                if fmt == "summary":
                    continue
                # the text report reads no trace: do not build one for it
                payload = (
                    outcome.to_json() if isinstance(outcome, CaseError) else outcome.to_json(lang, trace=fmt == "json")
                )
                if isinstance(event, StoredEarlier):
                    payload = {"evaluation": event.stored.seq, "stored_earlier": True, **payload}
                elif event.evaluation is not None:
                    payload = {"evaluation": event.evaluation, **payload}
                if fmt == "json":
                    click.echo(json.dumps(payload, ensure_ascii=False))
                    continue
                facts, stored = (
                    (event.stored.facts, (event.stored.seq, event.stored.created_at))
                    if isinstance(event, StoredEarlier)
                    else (event.facts, None)
                )
                shown_by = playbook if isinstance(outcome, CaseError) else outcome.playbook
                text = render_case(shown_by, payload, lang, facts=facts, every_decision=every_decision, stored=stored)
                click.echo(text + "\n")
            groups: list[Any] = []
            if members:  # the portfolio's code only where there are groups to decide
                from engine.portfolio import evaluate_portfolio

                groups = evaluate_portfolio(playbook, members, when)
            for group in groups:
                if fmt == "json":
                    click.echo(json.dumps({"group": group.to_json(lang)}, ensure_ascii=False))
                elif fmt != "summary":
                    click.echo(render_group(playbook, group, lang) + "\n")
        except EngineFault as fault:
            raise Failed(f"engine fault, run stopped: {fault}") from None
        except PlaybookError as error:
            raise Failed(str(error)) from None
        except tampered as error:  # nothing re-derived
            raise Failed(f"run stopped: {error}") from None
        finally:
            if bar is not None:
                bar.render_finish()
    counts = run.counts
    summary = import_summary(
        counts,
        lang,
        listed=fmt == "json" or verbose,
        counted_only=fmt == "summary",
        stored_in=_shown(db),
        groups=Counter(grouping_name(playbook, group, lang) for group in groups),
    )
    if fmt == "summary":
        click.echo(
            render_tally(
                playbook,
                lang,
                actions=counts.actions,
                owners=counts.owners,
                decision=tallied,
                values=counts.decision_values,
            )
        )
    click.echo(summary, err=True)
    if counts.errors or counts.earlier_errors:
        raise Failed()


@main.command()
@_playbook_option
@_db_option
@_as_of_option
@click.option(
    "--group-by",
    "group_by",
    type=click.Choice(["owner", "team", "region", "market"]),
    default="owner",
    show_default=True,
    help="Who or where each group of deals is.",
)
@click.option("--owner", help="Only this account manager's deals.")
@click.option("--format", "fmt", type=click.Choice(["text", "md", "html", "json"]), default="text", show_default=True)
@_lang_option
@click.option(
    "--output",
    type=click.Path(dir_okay=False),
    help="Write the report here (md: its chart SVG files beside it); else standard output (md and html need it "
    "for their charts: html inlines them, so it may go to standard output too).",
)
@click.option("--input", "input_path", help="Review a CRM export read now instead of the audit log (with --mapping).")
@click.option("--mapping", "mapping_name", help="With --input: a mapping preset (maven, ...) or file.")
@click.option("--top", type=click.IntRange(1, 1000), default=10, show_default=True, help="Deals listed per owner.")
def review(
    playbook_path: str,
    db: str,
    as_of: str | None,
    group_by: str,
    owner: str | None,
    fmt: str,
    lang: str,
    output: str | None,
    input_path: str | None,
    mapping_name: str | None,
    top: int,
) -> None:
    """The director's review: the open deals' funnel, amount classes and director's calls per group, stalled
    deals, each owner's deals for this week in the playbook's priority, and a draft regional marketing plan.

    Over each record's latest stored evaluation that is still open (--db), or a CRM export evaluated now
    (--input with --mapping; nothing is stored).  Figures are aggregated in the database.
    """
    from adapters.import_run import Source
    from adapters.mapping import load_mapping
    from engine import PlaybookError
    from engine.review import ReviewOptions, review_import, review_store
    from engine.review_charts import review_charts
    from engine.review_render import render_html, render_text, write_markdown

    if (input_path is None) != (mapping_name is None):
        raise click.UsageError("--input and --mapping go together")
    if fmt == "md" and output is None:
        raise click.UsageError("--format md writes its charts beside the report: give --output FILE.md")
    if output is not None and not Path(output).absolute().parent.is_dir():
        # before the work, not after it: the report would be computed and then lost
        raise click.BadParameter(f"folder '{Path(output).parent}' does not exist", param_hint="--output")
    playbook = _load(playbook_path)
    options = ReviewOptions(_as_of(as_of), group_by, owner, lang, top)
    try:
        if input_path is not None and mapping_name is not None:
            if not Path(input_path).is_file():
                raise click.BadParameter(f"'{input_path}' is not a file", param_hint="--input")
            source = Source(input_path, load_mapping(mapping_name))
            report = review_import(source, playbook, options)
        else:
            store = _open_store(db, create=False)
            report = review_store(store, playbook, options, {"db": _shown(db)})
    except PlaybookError as error:
        raise Failed(str(error)) from None
    except ValueError as error:
        raise Failed(str(error)) from None
    if fmt == "md":
        assert output is not None
        write_markdown(report, Path(output), review_charts(report))
        return
    if fmt == "json":
        text = json.dumps(report, ensure_ascii=False, indent=1) + "\n"
    elif fmt == "html":
        text = render_html(report, review_charts(report))
    else:
        text = render_text(report)
    if output is None:
        click.echo(text, nl=False)
    else:
        Path(output).write_text(text, encoding="utf-8")


@main.command()
@_playbook_option
@_input_option
@click.option("--case", "case_id", required=True, help="The case id (or 'line N').")
@click.option("--why-not", "why_not", help="An action id, or decision=value: say which condition failed.")
@_as_of_option
@_lang_option
def explain(
    playbook_path: str, input_file: IO[str], case_id: str, why_not: str | None, as_of: str | None, lang: str
) -> None:
    """Explain one case of an input file: every step with the values it read and its course source."""
    from adapters.jsonl import read_cases
    from engine import CaseError, EngineFault, Evaluator, compile_playbook

    playbook = _load(playbook_path)
    with compile_playbook(playbook) as compiled:
        try:
            outcomes = Evaluator(compiled).evaluate(read_cases(input_file), _as_of(as_of))
            found = next((r for r in outcomes if (r.case_id if isinstance(r, CaseError) else r.case) == case_id), None)
        except EngineFault as fault:
            raise Failed(f"engine fault: {fault}") from None
    if found is None:
        raise Failed(f"no case '{case_id}' in the input")
    if isinstance(found, CaseError):
        raise Failed(str(found))
    _print_explanation(playbook, found.to_json(lang), why_not, lang)


def _print_explanation(playbook: Any, payload: dict[str, Any], why_not: str | None, lang: str) -> None:
    from engine.explain import UnknownTarget, why
    from engine.explain import why_not as why_not_text

    try:
        click.echo(why_not_text(playbook, payload, why_not, lang) if why_not else why(playbook, payload, lang))
    except UnknownTarget as error:
        raise click.BadParameter(str(error), param_hint="--why-not") from None


@main.command(name="why")
@click.argument("evaluation", type=int, required=False)
@click.option(
    "--record", "record_id", help="Instead of EVALUATION: the record whose advice to explain (with --action)."
)
@click.option(
    "--on", "on", help="With --record: the advice in force on this date (as_of, YYYY-MM-DD; default: the latest)."
)
@click.option("--action", help="Only why this action was advised (an action id, or RULE:ACTION).")
@click.option("--why-not", "why_not", help="An action id, or decision=value: say which condition failed.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="json: one object: the explanation, the outcomes, and each task with its timeline.")  # fmt: skip
@_lang_option
@_db_option
def why_command(
    evaluation: int | None,
    record_id: str | None,
    on: str | None,
    action: str | None,
    why_not: str | None,
    fmt: str,
    lang: str,
    db: str,
) -> None:
    """Explain a stored evaluation under the playbook version that made it, and what became of its advice:
    its outcomes, and the timeline of each task its advice is tracked by (made, moved, by whom, why).

    \b
    playbook why 12                      every step of evaluation 12
    playbook why 12 --action A           only the steps that led to action A, and A's outcomes
    playbook why --record ID --action A [--on DATE]
                                         why A was advised to record ID (on DATE), under which playbook,
                                         and what became of it
    """
    from engine.answers import advice_in_force, outcome_lines, stored_header, why_action
    from engine.audit import StoredMismatch, reevaluate
    from engine.explain import UnknownTarget, why
    from engine.explain import why_not as why_not_text
    from engine.loader import default_loader

    if (evaluation is None) == (record_id is None):
        raise click.UsageError("give an EVALUATION number or --record ID (with --action)")
    if record_id is not None and action is None:
        raise click.UsageError("--record needs --action: the action whose advice to explain")
    if on is not None and record_id is None:
        raise click.UsageError("--on goes with --record")
    if action is not None and why_not is not None:
        raise click.UsageError("--action and --why-not ask different questions: give one")
    store = _open_store(db, create=False)
    note = None
    if record_id is not None:
        assert action is not None
        when = None if on is None else _as_of(on, "--on").isoformat()
        try:
            evaluation, note = advice_in_force(store, record_id, action, when, lang)
        except LookupError as error:
            raise Failed(str(error).strip("'\"")) from None
    assert evaluation is not None
    try:
        stored, result = reevaluate(store, evaluation, playbook_of=lambda known: default_loader().stored(store, known))
    except (LookupError, StoredMismatch) as error:
        raise Failed(str(error).strip("'\"")) from None
    payload = result.to_json(lang)
    try:
        if action is not None:
            text = why_action(result.playbook, payload, action, lang)
        elif why_not is not None:
            text = why_not_text(result.playbook, payload, why_not, lang)
        else:
            text = why(result.playbook, payload, lang)
    except UnknownTarget as error:
        raise click.BadParameter(str(error), param_hint="--action" if action else "--why-not") from None
    if note is not None:
        click.echo(note, err=True)
    from engine.timeline import evaluation_timelines, timeline_json, timelines_lines

    found = []
    if why_not is None:
        recommended = [rec["id"] for rec in stored.recommendations]
        record = stored.record_id if stored.record_id is not None else stored.case_id
        wanted = None if action is None else action.rpartition(":")[2]
        found = evaluation_timelines(store, stored.seq, stored.source, record, recommended, wanted)
    if fmt == "json":
        payload_out = {
            "evaluation": stored.seq,
            "header": stored_header(stored, lang).splitlines(),
            "explanation": text.splitlines(),
            "outcomes": outcome_lines(stored, lang, action)[1:],
            "tasks": [timeline_json(t, result.playbook, lang) for t in found],
        }
        click.echo(json.dumps(payload_out, ensure_ascii=False))
        return
    click.echo(stored_header(stored, lang))
    click.echo(text)
    for line in outcome_lines(stored, lang, action):
        click.echo(line)
    for line in timelines_lines(found, result.playbook, lang):
        click.echo(line)


def _emit(rows: Any, fmt: str, tasks_of: Callable[[Any], tuple[list[str], list[Any]]] | None = None) -> int:
    from adapters.listing import write_evaluations

    return write_evaluations(rows, fmt, sys.stdout, tasks_of)


def _emit_quarantined(events: Any, fmt: str) -> int:
    from adapters.listing import write_quarantined

    return write_quarantined(events, fmt, sys.stdout)


_format_option = click.option(
    "--format", "fmt", type=click.Choice(["text", "json", "csv"]), default="text", show_default=True
)


@main.command()
@click.argument("record_id")
@_format_option
@click.option("--lang", type=click.Choice(["zh", "en"]), default="en", show_default=True,
              help="The language of the tasks' timelines.")  # fmt: skip
@_db_option
def history(record_id: str, fmt: str, lang: str, db: str) -> None:
    """Every evaluation of one opportunity (or, failing that, account) over time, and under each the
    timeline of every task it made: made, each move with who, when and why, how it ended (not in CSV)."""
    from engine.timeline import record_timelines, timeline_json, timelines_lines
    from engine.validate import load_playbook_text

    store = _open_store(db, create=False)
    playbooks: dict[str, Any] = {}
    timelines: dict[tuple[str, str], list[Any]] = {}

    def tasks_of(stored: Any) -> tuple[list[str], list[Any]]:
        record = stored.record_id if stored.record_id is not None else stored.case_id
        if (stored.source, record) not in timelines:
            timelines[(stored.source, record)] = record_timelines(store, stored.source, record)
        made = [t for t in timelines[(stored.source, record)] if t.task.evaluation_seq == stored.seq]
        if not made:
            return [], []
        if stored.playbook_hash not in playbooks:  # its labels: the playbook that made the evaluation
            text = store.playbook_text(stored.playbook_hash)
            playbooks[stored.playbook_hash] = load_playbook_text(text, f"<playbook {stored.playbook_hash[:12]}>")
        playbook = playbooks[stored.playbook_hash]
        return timelines_lines(made, playbook, lang, "    "), [timeline_json(t, playbook, lang) for t in made]

    found = _emit(store.search(record_id=record_id), fmt, tasks_of)
    if not found:
        found = _emit(store.search(account_id=record_id), fmt, tasks_of)
    if not found:
        raise Failed(f"no evaluation of '{record_id}' in {_shown(db)}")


@main.command(name="list")
@click.option("--action", help="Only evaluations that recommended this action.")
@click.option("--rule", help="Only evaluations in which this rule fired.")
@click.option("--account", help="Only this account's evaluations.")
@click.option("--since", help="as_of on or after this date.")
@click.option("--until", help="as_of on or before this date.")
@click.option("--limit", type=click.IntRange(1), help="At most this many.")
@click.option(
    "--quarantined",
    is_flag=True,
    help="List the webhook events set aside as bad data instead (--since/--until: the day received).",
)
@_format_option
@_db_option
def list_command(
    action: str | None,
    rule: str | None,
    account: str | None,
    since: str | None,
    until: str | None,
    limit: int | None,
    quarantined: bool,
    fmt: str,
    db: str,
) -> None:
    """List stored evaluations, filtered; export them as CSV or JSON Lines."""
    for value, option in ((since, "--since"), (until, "--until")):
        if value is not None:
            _as_of(value, option)  # a bad date is a usage error
    if quarantined:
        for value, option in ((action, "--action"), (rule, "--rule"), (account, "--account")):
            if value is not None:
                raise click.UsageError(f"{option} filters evaluations; quarantined events have none")
    store = _open_store(db, create=False)
    if quarantined:
        count = _emit_quarantined(store.quarantined(since=since, until=until, limit=limit), fmt)
        click.echo(f"{count} quarantined events", err=True)
        return
    count = _emit(
        store.search(action=action, rule=rule, account_id=account, since=since, until=until, limit=limit), fmt
    )
    click.echo(f"{count} evaluations", err=True)


@main.command()
@click.argument("evaluation", type=int)
@click.argument("action")
@click.option("--status", type=click.Choice(["accepted", "dismissed", "done"]), required=True)
@click.option("--who", required=True, help="Who decided.")
@click.option("--why", "reason", default="", help="Why.")
@click.option(
    "--rule", help="The rule whose recommendation this is, when the evaluation recommended ACTION more than once."
)
@click.option("--as-of", help="The day its task moves (YYYY-MM-DD); today by default.")
@_db_option
def outcome(
    evaluation: int, action: str, status: str, who: str, reason: str, rule: str | None, as_of: str | None, db: str
) -> None:
    """Record what became of a recommendation; history is kept, never overwritten.

    ACTION is the action id, RULE:ACTION when several rules recommended it, or its position.
    The record's task of that action moves with it.
    """
    from engine.audit import record_outcome

    day = _as_of(as_of).isoformat()
    store = _open_store(db, write=True, create=False)
    try:
        seq = record_outcome(store, evaluation, action, status, who, reason, rule=rule, as_of=day)
    except LookupError as error:
        raise Failed(str(error).strip("'\"")) from None
    click.echo(f"outcome #{seq}: evaluation {evaluation} {action} {status}")


@main.group()
def tasks() -> None:
    """Recommendations as tracked work: list them, move time on, see one's history."""


_owner_option = click.option(
    "--owner", type=click.Choice(["account_manager", "director", "team"]), help="Only this owner's work."
)


def _emit_tasks(listed: Any, fmt: str) -> None:
    from adapters.listing import write_tasks

    write_tasks(listed, fmt, sys.stdout)


@tasks.command(name="list")
@_owner_option
@click.option("--status", "statuses", multiple=True, type=click.Choice(list(TASK_STATUSES)), help="Only these states.")
@click.option("--record", help="Only this record's tasks.")
@_format_option
@_db_option
def tasks_list(owner: str | None, statuses: tuple[str, ...], record: str | None, fmt: str, db: str) -> None:
    """List tasks in the order they were made (an owner's: also those escalated to them)."""
    from engine.tasks import listing

    listed = listing(_open_store(db, create=False), owner=owner, statuses=statuses, record=record)
    _emit_tasks(listed, fmt)
    click.echo(f"{len(listed)} tasks", err=True)


@tasks.command(name="advance")
@click.option("--as-of", help="The day time moves to (YYYY-MM-DD); today by default.")
@_db_option
def tasks_advance(as_of: str | None, db: str) -> None:
    """Move time on: undone work past its due date overdue, then escalated; repeating work's next occurrence.

    Idempotent: run twice at one date, the second changes nothing; safe from cron.
    """
    from engine.tasks import advance

    day = _as_of(as_of)
    counts = advance(_open_store(db, write=True, create=False), day)
    click.echo(
        f"{day.isoformat()}: {counts['overdue']} overdue, {counts['escalated']} escalated, "
        f"{counts['repeated']} repeated"
    )


@main.command()
@click.option("--as-of", help="The day time moves to (YYYY-MM-DD); today by default.")
@click.option(
    "--playbook",
    "playbook_path",
    type=click.Path(dir_okay=False, exists=True),
    help="The playbook time-based rules are checked under (default: the one of the log's newest evaluation).",
)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@_db_option
def tick(as_of: str | None, playbook_path: str | None, fmt: str, db: str) -> None:
    """Move time on: re-check time-based rules, then what tasks advance does; days missed one by one.

    Each open record whose result can change with time (a decision date passed, weeks in a stage) is
    evaluated again at the day from its stored facts; a changed result is stored as an evaluation and its
    tasks follow.  Idempotent and safe from cron: concurrent ticks wait for each other.
    """
    from engine import Evaluator, compile_playbook
    from engine.clock import tick as run_tick
    from engine.replay import live_playbook

    day = _as_of(as_of)
    store = _open_store(db, write=True, create=False)
    if playbook_path is not None:
        playbook = _load(playbook_path)
    else:
        try:
            playbook, _ = live_playbook(store)
        except LookupError:
            playbook = None  # no evaluation yet: nothing to re-check, tasks only

    def ticked(done: str) -> None:  # each day is committed on its own: a cron log shows how far a run got
        click.echo(f"{done}: ticked", err=True)

    if playbook is None:
        report = run_tick(store, None, day, on_day=ticked)
    else:
        with compile_playbook(playbook) as compiled:
            report = run_tick(store, Evaluator(compiled), day, on_day=ticked)
    if fmt == "json":
        click.echo(json.dumps(report.to_json()))
        return
    if not report.days:
        click.echo(f"{day.isoformat()}: the clock has moved past this day already; nothing done")
        return
    days = report.days[0] if len(report.days) == 1 else f"{report.days[0]}..{report.days[-1]}"
    click.echo(
        f"{days}: {report.checked} records re-checked, {report.reevaluated} re-evaluated, "
        f"{report.overdue} overdue, {report.escalated} escalated, {report.repeated} repeated"
    )


@tasks.command(name="history")
@click.argument("task_id", type=int)
@_format_option
@_db_option
def tasks_history(task_id: int, fmt: str, db: str) -> None:
    """Every move of one task: its state after, who moved it, when and why."""
    from engine.tasks import history as task_history

    try:
        events = task_history(_open_store(db, create=False), task_id)
    except LookupError as error:
        raise Failed(str(error).strip("'\"")) from None
    for event_ in events:
        if fmt == "json":
            click.echo(json.dumps(event_, ensure_ascii=False))
        else:
            click.echo(
                f"#{event_['event']}  {event_['as_of']}  {event_['status']:<9}  {event_['who']}: {event_['why']}"
            )


@main.command()
@click.option("--playbook", "playbook_path", type=click.Path(dir_okay=False, exists=True),
              help="The playbook: its labels, and its schedules for the next reviews.")  # fmt: skip
@_owner_option
@click.option("--team", help="A team's work per person (the team as the CRM names it: opportunity.team).")
@click.option("--as-of", help="The agenda's day (YYYY-MM-DD); today by default.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "csv", "ics"]), default="text", show_default=True,
              help="ics: an iCalendar file to import: tasks as to-dos, reviews as recurring events.")  # fmt: skip
@click.option("--lang", type=click.Choice(["zh", "en"]), default="en", show_default=True)
@_db_option
def agenda(
    playbook_path: str | None, owner: str | None, team: str | None, as_of: str | None, fmt: str, lang: str, db: str
) -> None:
    """What is escalated, overdue and due this week, most urgent first, and the next reviews.

    --owner: a role's work; --team: a team's, per person, the most pressed first.
    """
    from engine.agenda import build_agenda, build_team_agenda, render_agenda, render_team_agenda
    from engine.tasks import deal_people, listing

    if owner is not None and team is not None:
        raise click.UsageError("--owner and --team ask for different agendas: give one")
    day = _as_of(as_of)
    playbook = _load(playbook_path) if playbook_path is not None else None
    store = _open_store(db, create=False)
    listed = listing(store)
    built: Any
    if team is None:
        built = build_agenda(playbook, listed, day, owner)
    else:
        people = deal_people(store, listed)
        teams = {of_team for _, of_team in people.values() if of_team is not None}
        if team not in teams:
            known = ", ".join(sorted(teams)[:20]) or "none (the deals' evaluations name no opportunity.team)"
            raise Failed(f"no task of a deal of team '{team}' in {_shown(db)}; the teams with tasks: {known}")
        built = build_team_agenda(playbook, listed, day, team, people)
    if fmt == "ics":
        from engine.ics import agenda_calendar

        click.echo(agenda_calendar(built, playbook, lang), nl=False)
        return
    if fmt == "text":
        click.echo(render_agenda(built, playbook, lang) if team is None else render_team_agenda(built, playbook, lang))
        return
    from adapters.listing import spreadsheet_safe

    rows = built.rows()
    if fmt == "json":
        click.echo(
            json.dumps({"as_of": day.isoformat(), "owner": owner, "team": team, "items": rows}, ensure_ascii=False)
        )
        return
    fields = list(dict.fromkeys(name for row in rows for name in row))
    writer = csv.DictWriter(sys.stdout, fieldnames=fields)
    writer.writeheader()
    writer.writerows({name: spreadsheet_safe(value) for name, value in row.items()} for row in rows)


@main.group()
def audit() -> None:
    """Tamper evidence for the audit log."""


@audit.command()
@click.option(
    "--checkpoint",
    "checkpoint_path",
    type=click.Path(dir_okay=False, exists=True),
    help="A checkpoint from 'audit checkpoint': also find what was removed or rewritten since.",
)
@_db_option
def verify(checkpoint_path: str | None, db: str) -> None:
    """Check every link's seal, the records' states and the playbook texts; report what was changed.

    Without the log's key only the structure is checked: that is said, and is no proof against
    anyone who can write to the database.  Truncation and wipe-and-rebuild are found only
    against a checkpoint (--checkpoint).  Exit 1 when anything is wrong.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from adapters.sql_source import without_password

    checkpoint = None if checkpoint_path is None else _read_checkpoint(checkpoint_path)
    try:
        with _open_store(db, create=False) as store:
            problems = store.verify(checkpoint)
            heads = store.head()
            stored_key, checked, given = store.stored_key_id(), store.seals_checked(), store.key_id
    except SQLAlchemyError as error:
        reason = getattr(error, "orig", None) or error
        raise Failed(without_password(f"the audit log {db} cannot be read as an audit log: {reason}", db)) from None
    for problem in problems:
        click.echo(str(problem))
    for chain, (seq, digest) in sorted(heads.items()):
        click.echo(f"{chain}: {seq} records, head {digest}", err=True)
    if stored_key is None:
        click.echo(
            "note: this log is chained with plain SHA-256, not sealed with a key: it proves nothing against "
            "anyone who can write to the database (playbook audit migrate seals it)",
            err=True,
        )
    elif not checked and given is None:
        click.echo(
            f"note: no key given: only the structure was checked, not the seals (the log is sealed with key "
            f"{stored_key}; give it with PLAYBOOK_AUDIT_KEY or --audit-key-file)",
            err=True,
        )
    if problems:
        raise Failed()
    what = "the chains verify" if checked else "the chains' structure verifies"
    against = f", and the log still holds what the checkpoint of {checkpoint['made_at']} saw" if checkpoint else ""
    click.echo(f"ok: {what}{against}", err=True)


def _read_checkpoint(path: str) -> dict[str, Any]:
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise Failed(f"cannot read the checkpoint {path}: {error}") from None
    if not isinstance(value, dict) or not isinstance(value.get("made_at"), str):
        raise Failed(f"{path} is not a checkpoint made by 'playbook audit checkpoint'")
    return value


@audit.command()
@click.option("--output", "output", default="-", show_default=True, help="Where to write it: a file, or '-' (stdout).")
@_db_option
def checkpoint(output: str, db: str) -> None:
    """Export every chain's head (count, hash, time), signed with the log's key, after verifying the log.

    Keep it outside the database (another machine, a write-once store): 'audit verify --checkpoint'
    then finds any record removed or rewritten since.
    """
    from engine.store import AuditKeyError

    try:
        with _open_store(db, create=False) as store:
            made = store.checkpoint()
    except AuditKeyError as error:
        raise Failed(str(error)) from None
    text = json.dumps(made, indent=2, sort_keys=True) + "\n"
    if output == "-":
        click.echo(text, nl=False)
    else:
        try:
            Path(output).write_text(text, encoding="utf-8")
        except OSError as error:
            raise Failed(f"cannot write {output}: {error.strerror}") from None
    counts = ", ".join(f"{chain} {head['count']}" for chain, head in sorted(made["chains"].items()))
    click.echo(f"checkpoint of {made['made_at']}: {counts}; key {made['key_id']}", err=True)


@audit.command()
@_db_option
def migrate(db: str) -> None:
    """Seal a log chained with plain SHA-256 (made before keys) with the key given.

    The log is verified first and resealed in one transaction; take a checkpoint afterwards.
    """
    from engine.store import AuditKeyError

    new_key = _read_audit_key(click.get_current_context().meta.get("audit_key_file"))
    if new_key is None:
        raise Failed("give the key to seal the log with: PLAYBOOK_AUDIT_KEY or --audit-key-file")
    with _open_store(db, create=False) as store:
        if store.stored_key_id() is not None:
            raise Failed(f"this log is already sealed with key {store.stored_key_id()} (to change keys: audit rotate)")
        try:
            store.reseal(new_key)
        except AuditKeyError as error:
            raise Failed(str(error)) from None
    click.echo(f"ok: the log is sealed with key {store.key_id}; take a checkpoint now (playbook audit checkpoint)")


@audit.command()
@click.option(
    "--new-key-file", required=True, type=click.Path(dir_okay=False, exists=True), help="The key to seal with from now."
)
@_db_option
def rotate(new_key_file: str, db: str) -> None:
    """Seal the log again under a new key, after verifying it under the current one (given as usual).

    Every link is rewritten, so checkpoints taken before no longer match: verify the log against
    the latest one first (audit verify --checkpoint), then rotate, then take a new checkpoint.
    """
    from engine.store import AuditKeyError

    new_key = _read_audit_key(new_key_file)
    assert new_key is not None
    with _open_store(db, create=False) as store:
        try:
            store.reseal(new_key)
        except AuditKeyError as error:
            raise Failed(str(error)) from None
    click.echo(f"ok: the log is sealed with key {store.key_id}; take a checkpoint now (playbook audit checkpoint)")


@main.command()
@click.argument("target", type=click.Path(dir_okay=False, path_type=Path))
@_db_option
def backup(target: Path, db: str) -> None:
    """Copy a live SQLite audit log to TARGET, consistently, while it is being written.

    Uses SQLite's backup API (a plain file copy misses the -wal file).  The copy's chains are
    verified.  A PostgreSQL log is backed up with pg_dump (see the README).
    """
    from engine.store import NoAuditLog, backup_sqlite, sqlite_path

    if sqlite_path(db) is None:
        raise Failed(
            f"{_shown(db)} is not a SQLite file: back up a PostgreSQL audit log with pg_dump, "
            "e.g. pg_dump --format=custom --file playbook.dump 'postgresql://user@host/playbook' "
            "(restore with pg_restore --dbname ... playbook.dump)"
        )
    try:
        backup_sqlite(db, target)
    except (NoAuditLog, FileExistsError) as error:
        raise Failed(f"{error}; nothing was copied") from None
    except Exception as error:  # noqa: BLE001 - any driver or disk error becomes one clear line
        raise Failed(f"the backup of {db} to {target} failed, nothing was kept: {error}") from None
    copy = _open_store(f"sqlite:///{target.resolve()}", create=False)
    problems = copy.verify()
    heads = ", ".join(f"{chain} {seq}" for chain, (seq, _) in sorted(copy.head().items()))
    copy.close()
    if problems:
        for problem in problems:
            click.echo(str(problem))
        raise Failed(f"copied {db} to {target}, but the copy's chains do not verify: the log itself is damaged")
    click.echo(f"copied {db} to {target} ({heads}); the copy's chains verify", err=True)


@main.command()
@_playbook_option
@click.option(
    "--input",
    "input_path",
    required=True,
    help="A file, a folder of files or a glob: CSV, JSON Lines (.json, .jsonl) or Parquet; without --mapping, "
    "JSON Lines cases.",
)
@click.option("--mapping", "mapping_name", help="A mapping preset (maven, salesforce_opportunity, ...) or file.")
@_as_of_option
@click.option(
    "--output",
    required=True,
    help="The folder to write Parquet into (partitioned by status); an earlier batch's output there is replaced.",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "spark"]),
    default="local",
    show_default=True,
    help="local: this process; spark: Apache Spark (pip install 'sales-playbook[spark]').",
)
@click.option("--master", help="With --engine spark: the Spark master URL (default: spark-submit's, else local[*]).")
@click.option(
    "--db",
    help="Also file the results in this audit log (SQLite file or postgresql://...), as recommend --db does; "
    "a rerun files nothing twice.  The key, if the log is sealed: PLAYBOOK_AUDIT_KEY.",
)
@_lang_option
def batch(
    playbook_path: str,
    input_path: str,
    mapping_name: str | None,
    as_of: str | None,
    output: str,
    engine: str,
    master: str | None,
    db: str | None,
    lang: str,
) -> None:
    """Evaluate every record of a set of files in bulk and write the results as Parquet.

    One row per input record (source file, line, case, status: result, error or quarantined, code,
    reason, and as result the JSON that recommend --format json prints), so rows read = results +
    errors + quarantined.  With --db the results and errors are also filed in the audit log, each
    under its file and line as recommend --db files it: a rerun, or recommend --db over the same
    file, stores nothing twice.
    """
    from adapters.batch import BatchJob, check_inputs, input_files, kind_of, run_local
    from adapters.mapping import load_mapping
    from engine import PlaybookError

    when = _as_of(as_of)
    _load(playbook_path)  # a bad playbook fails here, before anything is read
    try:
        mapping = load_mapping(mapping_name) if mapping_name else None
    except PlaybookError as error:
        raise Failed(str(error)) from None
    try:
        files = input_files(input_path)
        kinds = {kind_of(file, mapping) for file in files}
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--input") from None
    if len(kinds) != 1:
        raise click.BadParameter(f"give files of one kind, not {', '.join(sorted(kinds))}", param_hint="--input")
    kind = kinds.pop()
    if kind in ("csv", "parquet") and mapping is None:
        raise click.UsageError(f"{kind} records need --mapping (a preset name or a mapping file)")
    if mapping is not None and (engine == "spark" or kind == "parquet"):
        from adapters.csv_export import attach_lookups

        try:  # the local CSV and JSON readers read them themselves, from each file's folder
            attach_lookups(mapping, Path(files[0]).parent)
        except PlaybookError as error:
            raise Failed(str(error)) from None
    text = Path(playbook_path).read_text(encoding="utf-8")
    job = BatchJob(text, playbook_path, kind, mapping, when, lang, filing=db is not None)
    try:
        check_inputs(job, files)  # a mapping that cannot read the input fails here, before any cluster starts
    except PlaybookError as error:
        raise Failed(str(error)) from None
    filing = None
    if db is not None:  # opened before any record is evaluated: a log that cannot be written fails first
        from adapters.batch_filing import Filing

        filing = Filing(_open_store(db, write=True), _load(playbook_path), job, files)
    try:
        if engine == "local":
            _tune_memory()
            counts = run_local(job, files, output, filing)
        else:
            counts = _run_on_spark(job, files, output, master, filing)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--output") from None
    except PlaybookError as error:
        raise Failed(str(error)) from None
    summary = f"{counts.rows} rows: {counts.results} results, {counts.errors} errors"
    if counts.quarantined:
        held = ", ".join(f"{code} {n}" for code, n in sorted(counts.quarantined.items()))
        summary += f", {counts.quarantined.total()} quarantined ({held})"
    click.echo(f"{summary}; written to {output}", err=True)
    if filing is not None:
        earlier = f"{filing.earlier} filed by an earlier run, not again"
        if filing.stored:
            click.echo(f"audit log: {filing.stored} filed (#{filing.first}-#{filing.last}), {earlier}", err=True)
        else:
            click.echo(f"audit log: nothing new filed; {earlier}", err=True)
    if counts.errors:
        raise Failed()


def _run_on_spark(job: Any, files: list[str], output: str, master: str | None, filing: Any) -> Any:
    try:
        from adapters.spark_batch import run_spark, spark_session
    except ImportError as error:
        raise Failed(f"--engine spark needs PySpark: pip install 'sales-playbook[spark]' ({error})") from None
    return run_spark(spark_session(master), job, files, output, filing)


@main.command()
@click.option(
    "--playbook",
    "playbook_path",
    required=True,
    type=click.Path(dir_okay=False, exists=True),
    help="The playbook to try.",
)
@click.option(
    "--baseline",
    "baseline_path",
    type=click.Path(dir_okay=False, exists=True),
    help="Compare against this playbook (default: the one live now, which made the newest evaluation in the log).",
)
@click.option("--since", help="Only records whose evaluation is as of this date or later.")
@click.option("--all", "every", is_flag=True, help="Replay every stored evaluation, not only each record's latest.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--examples", type=click.IntRange(0), default=10, show_default=True, help="Examples kept per count.")
@click.option(
    "--history",
    "history_path",
    help="Replay an exported history instead of the audit log: the JSON Lines of playbook list --format json "
    "(a file, a folder of files or a glob); needs --baseline.",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "spark"]),
    default="local",
    show_default=True,
    help="With --history: local, this process; spark, Apache Spark (pip install 'sales-playbook[spark]').",
)
@click.option("--master", help="With --engine spark: the Spark master URL (default: spark-submit's, else local[*]).")
@_lang_option
@_db_option
def replay(
    playbook_path: str,
    baseline_path: str | None,
    since: str | None,
    every: bool,
    fmt: str,
    examples: int,
    history_path: str | None,
    engine: str,
    master: str | None,
    lang: str,
    db: str,
) -> None:
    """What a playbook change would change: each record's latest evaluation re-evaluated under the new
    playbook and under the one live now, compared (nothing is written)."""
    from engine import EngineFault, PlaybookError
    from engine.loader import default_loader
    from engine.replay import ReplayReport, live_playbook, render_replay
    from engine.replay import replay as run_replay

    if since is not None:
        _as_of(since, "--since")
    candidate = _load(playbook_path)
    chosen: dict[str, Any]
    if history_path is not None or engine != "local":
        if history_path is None or baseline_path is None:
            raise click.UsageError("--engine spark replays an exported history: give --history and --baseline")
        baseline, chosen = _load(baseline_path), {"file": baseline_path}
        report = ReplayReport(candidate, baseline, chosen, every=every, examples=examples)
        try:
            _replay_history(history_path, engine, master, playbook_path, baseline_path, report, since, every)
        except EngineFault as fault:
            raise Failed(f"engine fault, replay stopped: {fault}") from None
        data = report.to_json(lang)
        click.echo(json.dumps(data, ensure_ascii=False, indent=2) if fmt == "json" else render_replay(data))
        return
    store = _open_store(db, create=False)
    try:
        if baseline_path is not None:
            baseline, chosen = _load(baseline_path), {"file": baseline_path}
        else:
            baseline, newest = live_playbook(store, default_loader())
            chosen = {"evaluation": newest}
        report = run_replay(store, candidate, baseline, chosen, since=since, every=every, examples=examples)
    except LookupError as error:
        raise Failed(str(error).strip("'\"")) from None
    except PlaybookError as error:
        raise Failed(str(error)) from None
    except EngineFault as fault:
        raise Failed(f"engine fault, replay stopped: {fault}") from None
    data = report.to_json(lang)
    click.echo(json.dumps(data, ensure_ascii=False, indent=2) if fmt == "json" else render_replay(data))


def _replay_history(
    history_path: str,
    engine: str,
    master: str | None,
    playbook_path: str,
    baseline_path: str,
    report: Any,
    since: str | None,
    every: bool,
) -> None:
    from adapters.batch import input_files
    from adapters.history import ReplayJob, replay_local

    try:
        files = input_files(history_path)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--history") from None
    texts = [Path(p).read_text(encoding="utf-8") for p in (playbook_path, baseline_path)]
    job = ReplayJob(texts[0], playbook_path, texts[1], baseline_path)
    if engine == "local":
        replay_local(job, files, report, since=since, every=every)
        return
    try:
        from adapters.spark_batch import spark_session
        from adapters.spark_history import replay_spark
    except ImportError as error:
        raise Failed(f"--engine spark needs PySpark: pip install 'sales-playbook[spark]' ({error})") from None
    replay_spark(spark_session(master), job, files, report, since=since, every=every)


# -- playbook serve: the webhook service ----------------------------------------------------------


# -- playbook deliver / deliveries: the CRM told of tasks (adapters/notify.py) ----------------------

_notify_config_option = click.option(
    "--notify-config",
    type=click.Path(dir_okay=False, exists=True),
    envvar="PLAYBOOK_NOTIFY_CONFIG",
    show_envvar=True,
    help="The notifications' YAML: a URL per event kind, timeout, retries (the secret: PLAYBOOK_NOTIFY_SECRET).",
)


def _notify_config(path: str) -> Any:
    from adapters.notify import NotifyConfigError, load_config

    try:
        return load_config(path, os.environ)
    except NotifyConfigError as error:
        raise Failed(str(error)) from None


@main.command()
@click.option(
    "--notify-config",
    required=True,
    type=click.Path(dir_okay=False, exists=True),
    envvar="PLAYBOOK_NOTIFY_CONFIG",
    show_envvar=True,
    help="The notifications' YAML: a URL per event kind, timeout, retries (the secret: PLAYBOOK_NOTIFY_SECRET).",
)
@_db_option
def deliver(notify_config: str, db: str) -> None:
    """Send the notifications due now (task created, overdue, escalated), signed, to their URLs; then stop.

    Safe from cron and run several at once: each delivery is leased to one deliverer while it is sent.
    Failures are retried by later runs after an exponential backoff; past the retry budget they are
    dead letters (`playbook deliveries --dead`, `playbook deliveries retry`).
    """
    from adapters.notify import Deliverer

    config = _notify_config(notify_config)
    # the outbox is not chained: no audit key is needed to drain it
    report = Deliverer(_open_store(db, create=False), config).run_once()
    click.echo(
        f"{report.delivered} delivered, {report.failed} failed (to retry), {report.dead} dead, "
        f"{report.skipped} skipped (no URL for their kind)"
    )


@main.group(invoke_without_command=True)
@click.option("--dead", is_flag=True, help="Only the dead letters: deliveries that failed every attempt.")
@_format_option
@_db_option
@click.pass_context
def deliveries(ctx: click.Context, dead: bool, fmt: str, db: str) -> None:
    """List the outbox's deliveries (or its dead letters); `deliveries retry` sends dead ones again."""
    if ctx.invoked_subcommand is not None:
        return
    from adapters.listing import spreadsheet_safe
    from engine.store.outbox import listing

    store = _open_store(db, create=False)
    with store._connect() as conn:
        rows = listing(conn, dead=dead)
    if fmt == "json":
        for row in rows:
            click.echo(json.dumps(row, ensure_ascii=False))
    elif fmt == "csv" and rows:
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({name: spreadsheet_safe(value) for name, value in row.items()} for row in rows)
    elif fmt == "text":
        for row in rows:
            error = f"  {row['last_error']}" if row["last_error"] else ""
            click.echo(
                f"#{row['event_seq']}  {row['status']:<9}  {row['kind']:<14}  task {row['task_id']}  "
                f"attempts {row['attempts']}  {row['delivery_id']}{error}"
            )
    click.echo(f"{len(rows)} {'dead letters' if dead else 'deliveries'}", err=True)


@deliveries.command(name="retry")
@click.argument("ids", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Every dead letter.")
@_db_option
def deliveries_retry(ids: tuple[str, ...], every: bool, db: str) -> None:
    """Put dead deliveries (by event number or delivery id) back in the outbox, due now, with a fresh budget."""
    from engine.store.outbox import retry

    if bool(ids) == every:
        raise click.UsageError("give the dead deliveries' ids, or --all")
    store = _open_store(db, create=False)
    try:
        with store._begin() as conn:
            put_back = retry(conn, store.now(), None if every else list(ids))
    except LookupError as error:
        raise Failed(str(error).strip("'\"")) from None
    click.echo(f"{len(put_back)} dead deliveries back in the outbox; `playbook deliver` sends them")


@main.command()
@_playbook_option
@_db_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="Port to listen on.")
@click.option(
    "--max-body",
    type=click.IntRange(1),
    default=1 << 20,
    show_default=True,
    help="Largest request body accepted, in bytes; a larger one is answered 413 unread.",
)
@click.option(
    "--public-url",
    help="The URL the CRMs call, e.g. https://hooks.example.com (HubSpot signs it); default: from the Host header.",
)
@click.option(
    "--secrets-file",
    type=click.Path(dir_okay=False, exists=True),
    help="NAME=value lines (PLAYBOOK_HUBSPOT_SECRET, ...); they take precedence over the environment.",
)
@click.option(
    "--mapping",
    "mapping_specs",
    multiple=True,
    metavar="CRM=MAPPING",
    help="Another mapping for a CRM (hubspot, salesforce, pipedrive, generic): a preset or file. Repeatable.",
)
@click.option(
    "--max-clock-skew",
    type=click.FloatRange(0),
    default=300,
    show_default=True,
    help="Seconds an event may say it happened after this server's clock; a later one is refused (400).",
)
@click.option(
    "--body-timeout",
    type=click.FloatRange(0.1),
    default=10,
    show_default=True,
    help="Seconds a request's body may take to arrive once its headers have; then 408.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(1),
    default=200,
    show_default=True,
    help="Open connections at most; past it a request is answered 503.",
)
@click.option(
    "--clock/--no-clock",
    default=True,
    help="Run the workflow clock: each day's tick (as playbook tick does) once the day turns; any number of "
    "service processes on one database fire it once.",
)
@click.option(
    "--clock-every",
    type=click.FloatRange(0.1),
    default=60,
    show_default=True,
    help="Seconds between the clock's checks whether the day turned.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Service processes sharing the port and the audit log (PostgreSQL: several; SQLite writes one at a time).",
)
@click.option(
    "--partitions",
    type=click.IntRange(1, 256),
    help="When this command creates the audit log: how many partitions its record chains have (fixed then; "
    "default 1). Processes writing different records' partitions never wait for each other.",
)
@_notify_config_option
def serve(
    playbook_path: str,
    db: str,
    host: str,
    port: int,
    max_body: int,
    public_url: str | None,
    secrets_file: str | None,
    mapping_specs: tuple[str, ...],
    max_clock_skew: float,
    body_timeout: float,
    max_connections: int,
    clock: bool,
    clock_every: float,
    workers: int,
    partitions: int | None,
    notify_config: str | None,
) -> None:
    """Run the webhook service: CRM events in, evaluated, stored in the audit log; and the workflow clock.

    Routes are enabled by their secrets, from the environment or --secrets-file:
    PLAYBOOK_HUBSPOT_SECRET (/webhooks/hubspot), PLAYBOOK_SALESFORCE_CDC_SECRET
    (/webhooks/salesforce/cdc), PLAYBOOK_SALESFORCE_ORG_IDS and/or PLAYBOOK_SALESFORCE_OUTBOUND_TOKEN
    (/webhooks/salesforce/outbound[/TOKEN]), PLAYBOOK_PIPEDRIVE_USER and PLAYBOOK_PIPEDRIVE_PASSWORD
    (/webhooks/pipedrive), PLAYBOOK_WEBHOOK_SECRET (/webhooks/generic, /outcomes, signed reads);
    PLAYBOOK_API_TOKEN lets a bearer token read GET /evaluations/N and /records/ID/latest (and guards
    /metrics).  GET /health reports the state; /openapi.json describes every route.

    With --workers N, N processes (each its own event loop and ingest writer) answer on the one
    port; the audit log is the one they share: on PostgreSQL each transaction locks only the
    partitions of the records it writes (docs/architecture.md, "Several service processes").
    With --notify-config it also drains the outbox of notifications (as `playbook deliver` does).
    """
    from adapters.mapping import load_mapping
    from adapters.service import CRMS, ROUTES, SECRET_NAMES, Secrets, read_secrets_file
    from engine import PlaybookError

    values = {name: os.environ[name] for name in SECRET_NAMES if name in os.environ}
    if secrets_file is not None:
        try:
            values |= read_secrets_file(secrets_file)
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise Failed(str(error)) from None
    secrets = Secrets.from_mapping(values)
    mappings = {}
    for spec in mapping_specs:
        crm, equals, name = spec.partition("=")
        if not equals or crm not in CRMS or not name:
            raise click.BadParameter(
                f"'{spec}' should be CRM=MAPPING with CRM one of {', '.join(CRMS)}", param_hint="--mapping"
            )
        try:
            mappings[crm] = load_mapping(name)
        except PlaybookError as error:
            raise Failed(str(error)) from None
    playbook = _load(playbook_path)
    store = _open_store(db, write=True, partitions=partitions)
    routes = [r.path for r in ROUTES if r.kind in ("webhook", "outcomes") and r.disabled_because(secrets) is None]
    if not routes:
        raise Failed("no webhook route is enabled: set at least one of " + ", ".join(SECRET_NAMES))
    click.echo(
        f"playbook {playbook.id} {playbook.version} ({playbook.content_hash[:12]}), audit log {_shown(db)}; "
        f"routes: {', '.join(routes)}",
        err=True,
    )

    def run(store: Any, sock: Any = None) -> None:
        """One service process: the playbook compiled, its ingest writer and uvicorn on ``sock`` (else host:port)."""
        import logging

        import uvicorn

        from adapters.service import WebhookService, create_app, server_config
        from engine import Evaluator, compile_playbook
        from engine.clock import ServiceClock

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        with compile_playbook(playbook) as compiled:
            service = WebhookService(
                store,
                Evaluator(compiled),
                secrets=secrets,
                mappings=mappings,
                max_body=max_body,
                public_url=public_url,
                max_clock_skew=max_clock_skew,
                body_timeout=body_timeout,
            )
            _tune_memory()
            https = bool(public_url and public_url.startswith("https:"))
            console = _console(store, playbook, playbook_path, https=https)
            config = server_config(
                create_app(service, routes=[console]), host=host, port=port, max_connections=max_connections
            )
            # every process runs the clock: the database lets one of them fire each day (engine/clock.py)
            ticking = ServiceClock(store, service.evaluator, every=clock_every).start() if clock else None
            stop_delivery = _start_delivery(store, notify_config)  # leases: processes never send one twice at once
            try:
                uvicorn.Server(config).run(sockets=None if sock is None else [sock])
            finally:
                stop_delivery()
                if ticking is not None:
                    ticking.stop()
                service.close()
                store.close()

    if workers == 1:
        run(store)
        return
    if store.partitions == 1 and store.engine.dialect.name == "postgresql":
        click.echo(
            f"this audit log has one partition: the {workers} processes take turns at its chain heads "
            "(a log created with --partitions lets them write different records at once)",
            err=True,
        )
    store.close()  # each process opens its own connections: none is shared across the fork
    _serve_processes(workers, host, port, lambda sock: run(_open_store(db, write=True), sock))


def _serve_processes(workers: int, host: str, port: int, run: Any) -> None:
    """``workers`` processes forked from this one, each running ``run`` on the one listening socket.

    A process that dies (killed, out of memory) is started again; what it had received but not
    committed was rolled back by the database and never answered 200, so the CRM delivers it again.
    SIGTERM or SIGINT stops them all, each storing what it received first.
    """
    import multiprocessing
    import secrets
    import signal
    import socket
    import time

    from adapters.console import SECRET_ENV

    if not os.environ.get(SECRET_ENV):  # one session secret for all: a browser's next request may go to another
        click.echo(f"{SECRET_ENV} is not set: console sessions end when the service stops", err=True)
        os.environ[SECRET_ENV] = secrets.token_urlsafe(48)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        raise Failed(f"cannot listen on {host}:{port}: {error.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    forking = multiprocessing.get_context("fork")  # the children inherit the socket and the parsed options
    stopping = False

    def stop(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    started: dict[int, float] = {}

    def start(number: int) -> Any:
        process = forking.Process(target=run, args=(sock,), name=f"playbook-serve-{number}", daemon=False)
        process.start()
        started[number] = time.monotonic()
        return process

    processes = [start(n) for n in range(workers)]
    click.echo(f"{workers} service processes on {host}:{port}: {' '.join(str(p.pid) for p in processes)}", err=True)
    try:
        while not stopping:
            for number, process in enumerate(processes):
                process.join(timeout=0.2 / workers)
                if process.exitcode is None or stopping:
                    continue
                if time.monotonic() - started[number] < 10:  # it could not start (the database is unreachable)
                    raise Failed(f"service process {process.pid} ended at start ({process.exitcode}); stopping")
                click.echo(f"service process {process.pid} ended ({process.exitcode}); starting another", err=True)
                processes[number] = start(number)
    finally:
        for process in processes:
            if process.exitcode is None:
                os.kill(process.pid, signal.SIGTERM)  # uvicorn stops gracefully: what was received is stored
        for process in processes:
            process.join()
        sock.close()


def _start_delivery(store: Any, notify_config: str | None) -> Any:
    """``playbook serve``'s deliverer on a thread, when notifications are configured; returns its stop."""
    if notify_config is None:
        return lambda: None
    import logging

    from adapters.notify import start_background_delivery

    log = logging.getLogger("playbook.notify")
    return start_background_delivery(
        store, _notify_config(notify_config), on_error=lambda error: log.warning("delivery round failed: %s", error)
    )


def _console(store: Any, playbook: Any, playbook_path: str | None, *, https: bool) -> Any:
    """The web console's mount (/ui) over the store, its session secret from PLAYBOOK_CONSOLE_SECRET."""
    from adapters.console import SECRET_ENV, Console, console_mount, console_secret, secret_from_environment

    configured = secret_from_environment()
    if configured is None:
        click.echo(f"{SECRET_ENV} is not set: console sessions end when this process stops", err=True)
    try:
        console = Console(store, playbook=playbook, playbook_path=playbook_path, secret=console_secret(configured))
    except ValueError as error:
        raise Failed(str(error)) from None
    return console_mount(console, https_only=https)


@main.command(name="ui")
@_db_option
@click.option(
    "--playbook",
    "playbook_path",
    type=click.Path(dir_okay=False, exists=True),
    help="The playbook file whose check and tests the console shows (default: the log's newest playbook).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8081, show_default=True, help="Port to listen on.")
@click.option("--https", is_flag=True, help="Served over HTTPS (behind a proxy): session cookies are marked Secure.")
def ui(db: str, playbook_path: str | None, host: str, port: int, https: bool) -> None:
    """Run the web console alone on an audit log, under /ui (``playbook serve`` mounts it too).

    Sessions are signed with PLAYBOOK_CONSOLE_SECRET (32 characters or more); users come from
    ``playbook user add``.
    """
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import RedirectResponse
    from starlette.routing import Route

    store = _open_store(db, create=False)
    playbook = _load(playbook_path) if playbook_path else None
    console = _console(store, playbook, playbook_path, https=https)

    async def to_console(_request: Any) -> Any:
        return RedirectResponse("/ui/", 307)

    app = Starlette(routes=[Route("/", to_console), console])
    click.echo(f"console on http://{host}:{port}/ui/ over {_shown(db)}", err=True)
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info")).run()


@main.group()
def user() -> None:
    """The web console's users."""


@user.command(name="add")
@click.argument("name")
@click.option("--role", type=click.Choice(["auditor", "ops", "manager"]), required=True, help="What the user may do.")
@click.option(
    "--team",
    "team",
    multiple=True,
    metavar="OWNER",
    help="With --role manager: an owner whose deals the manager answers for. Repeatable.",
)
@_db_option
def user_add(name: str, role: str, team: tuple[str, ...], db: str) -> None:
    """Add a console user, or give one a new password and role.

    The password comes from PLAYBOOK_USER_PASSWORD, else from a prompt: never from the command line.
    """
    from adapters.console import add_user

    if team and role != "manager":
        raise click.UsageError("--team goes with --role manager")
    password = os.environ.get("PLAYBOOK_USER_PASSWORD") or click.prompt(
        "password", hide_input=True, confirmation_prompt=True, err=True
    )
    store = _open_store(db)
    try:
        add_user(store, name, role, password, team)
    except ValueError as error:
        raise Failed(str(error)) from None
    click.echo(f"user {name}: {role}" + (f", team {', '.join(team)}" if team else ""), err=True)


def _name_environment_variables(group: click.Group, prefix: str) -> None:
    """Every option can also come from the environment: PLAYBOOK_<COMMAND>_<OPTION>, named after the
    option as typed (PLAYBOOK_RECOMMEND_FORMAT for ``recommend --format``); click's own automatic names
    follow the Python parameter instead (``fmt``).  Options shared by every command keep their short
    names (PLAYBOOK_LANG, PLAYBOOK_DB)."""
    for name, command in group.commands.items():
        here = f"{prefix}_{name.upper().replace('-', '_')}"
        if isinstance(command, click.Group):
            _name_environment_variables(command, here)
            continue
        for param in command.params:
            long_flags = [flag for flag in param.opts if flag.startswith("--")]
            if isinstance(param, click.Option) and param.envvar is None and long_flags:
                param.envvar = f"{here}_{long_flags[0][2:].upper().replace('-', '_')}"
                param.show_envvar = True


_name_environment_variables(main, "PLAYBOOK")

if __name__ == "__main__":
    main()
