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


def _tune_memory() -> None:
    """For long runs: results hold no reference cycles, so reference counting frees them.

    The cycle collector's full passes over everything alive (the playbook, the memory of answers,
    a batch waiting for the audit log) cost more than half an import's time; freeze what was built
    so far and collect less often.  Measured: 71 -> 31 us of evaluation per Maven case.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _load(path: str) -> Any:
    from engine import PlaybookError, load_playbook

    try:
        return load_playbook(path)
    except PlaybookError as error:
        raise Failed(str(error)) from None


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "show_default": True},
)
@click.version_option(package_name="sales-playbook", prog_name="playbook")
def main() -> None:
    """Sales playbooks: check them, and recommend what to do for each case, with the reasons."""


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
    from engine import PlaybookError, load_playbook
    from engine.analyse import analyse
    from engine.sources import quotes_not_in_course

    course = Path(course_path).read_text(encoding="utf-8") if course_path else None
    found = []
    for path in dict.fromkeys(playbooks):  # a file named twice is checked once
        try:
            playbook = load_playbook(path)
        except PlaybookError as error:
            found.extend(error.problems)
            continue
        found.extend(analyse(playbook))
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


def _open_store(url: str, *, write: bool = False, create: bool = True) -> Any:
    """The audit log; with ``write``, one this command can append to (its key given when it has one).

    ``create`` False for commands that read a log: a missing one is refused, not made.
    """
    from adapters.sql_source import without_password
    from engine.store import AuditKeyError, NoAuditLog, SchemaDamaged, Store

    context = click.get_current_context(silent=True)
    key = _read_audit_key(context.meta.get("audit_key_file") if context is not None else None)
    try:
        store = Store(url, key=key, create=create)
    except NoAuditLog as error:
        raise Failed(without_password(f"{error}; check --db (or PLAYBOOK_DB)", url)) from None
    except SchemaDamaged as error:
        raise Failed(without_password(f"the audit log {url} is damaged: {'; '.join(error.damage)}", url)) from None
    except Exception as error:  # noqa: BLE001 - any driver error becomes one clear line
        raise Failed(without_password(f"cannot open the audit log {url}: {error}", url)) from None
    if context is not None:
        context.call_on_close(store.close)  # also when the command fails
    if write:
        try:
            store.check_writable()
        except AuditKeyError as error:
            store.close()
            raise Failed(str(error)) from None
    return store


def _shown(url: str) -> str:
    """A database URL as printed: never with its password."""
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
    from adapters.import_run import ImportRun, QuarantinedRecord, Source, StoredEarlier
    from adapters.mapping import load_mapping
    from engine import CaseError, EngineFault, Evaluator, PlaybookError, compile_playbook
    from engine.evaluate import Result
    from engine.portfolio import evaluate_portfolio
    from engine.report import render_case, render_group, render_tally
    from engine.store import TamperedRecord

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
            groups = evaluate_portfolio(playbook, members, when) if members else []
            for group in groups:
                if fmt == "json":
                    click.echo(json.dumps({"group": group.to_json(lang)}, ensure_ascii=False))
                elif fmt != "summary":
                    click.echo(render_group(playbook, group, lang) + "\n")
        except EngineFault as fault:
            raise Failed(f"engine fault, run stopped: {fault}") from None
        except PlaybookError as error:
            raise Failed(str(error)) from None
        except TamperedRecord as error:  # an earlier run's playbook text, changed in the log: nothing re-derived
            raise Failed(f"run stopped: {error}") from None
        finally:
            if bar is not None:
                bar.render_finish()
    counts = run.counts
    summary = (
        f"{counts.rows} rows: {counts.evaluated} cases evaluated ({counts.results} results, {counts.errors} errors)"
    )
    if counts.quarantined:
        held_counts = ", ".join(f"{code} {n}" for code, n in sorted(counts.quarantined.items()))
        listed = "" if fmt == "json" or verbose else "; --verbose lists them"
        summary += f", {counts.quarantined.total()} quarantined ({held_counts}{listed})"
    if counts.earlier:
        first, last = counts.earlier_stored or ("", "")
        when_stored = first[:10] if first[:10] == last[:10] else f"{first[:10]}–{last[:10]}"
        summary += (
            f", {counts.earlier} already stored by an earlier run of this import on {when_stored} and "
            f"{'counted' if fmt == 'summary' else 'shown'} as stored "
            f"({counts.earlier_results} results, {counts.earlier_errors} errors; --reevaluate evaluates them again)"
        )
    if counts.first_evaluation is not None:
        summary += f"; stored in {_shown(db)} as evaluations {counts.first_evaluation}–{counts.last_evaluation}"
    if groups:
        per = Counter(group.group_by for group in groups)
        summary += f"; {len(groups)} groups decided ({', '.join(f'{name} {n}' for name, n in per.items())})"
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
@_lang_option
@_db_option
def why_command(
    evaluation: int | None,
    record_id: str | None,
    on: str | None,
    action: str | None,
    why_not: str | None,
    lang: str,
    db: str,
) -> None:
    """Explain a stored evaluation under the playbook version that made it, and what became of its advice.

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
        stored, result = reevaluate(store, evaluation)
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
    click.echo(stored_header(stored, lang))
    click.echo(text)
    for line in outcome_lines(stored, lang, action):
        click.echo(line)


def _emit(rows: Any, fmt: str) -> int:
    from adapters.listing import listing_row, write_csv, write_json_lines
    from engine.answers import outcome_texts

    if fmt == "csv":
        return write_csv(rows, sys.stdout)
    if fmt == "json":
        return write_json_lines(rows, sys.stdout)
    count = 0
    for stored in rows:
        count += 1
        line = listing_row(stored)
        account = f"  account {stored.account_id}" if stored.account_id is not None else ""
        actions = line["actions"].replace(";", ", ") or "no action"
        if stored.status != "ok" and stored.error:
            actions = f"{stored.error['code']}: {stored.error['message']}"
        click.echo(
            f"#{stored.seq}  {stored.as_of}  {stored.case_id}{account}  "
            f"playbook {stored.playbook_id} {stored.playbook_version} ({stored.playbook_hash[:12]})  "
            f"{stored.status}: {actions}"
        )
        for text in outcome_texts(stored):
            click.echo(f"    outcome: {text}")
    return count


def _emit_quarantined(events: Any, fmt: str) -> int:
    from adapters.listing import spreadsheet_safe

    count = 0
    writer = None
    for held in events:
        count += 1
        data = held.to_json()
        if fmt == "json":
            click.echo(json.dumps(data, ensure_ascii=False))
        elif fmt == "csv":
            data["event"] = json.dumps(data["event"], ensure_ascii=False, sort_keys=True)
            if writer is None:
                writer = csv.DictWriter(sys.stdout, fieldnames=list(data))
                writer.writeheader()
            writer.writerow({name: spreadsheet_safe(value) for name, value in data.items()})
        else:
            record = f"  record {held.record_id}" if held.record_id is not None else ""
            click.echo(
                f"#{held.seq}  {held.received_at}  {held.source}  event {held.event_id}{record}  "
                f"{held.code}: {held.reason}"
            )
    return count


_format_option = click.option(
    "--format", "fmt", type=click.Choice(["text", "json", "csv"]), default="text", show_default=True
)


@main.command()
@click.argument("record_id")
@_format_option
@_db_option
def history(record_id: str, fmt: str, db: str) -> None:
    """Every evaluation of one opportunity (or, failing that, account) over time."""
    store = _open_store(db, create=False)
    found = _emit(store.search(record_id=record_id), fmt)
    if not found:
        found = _emit(store.search(account_id=record_id), fmt)
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
    from adapters.listing import spreadsheet_safe

    rows = [task.to_json() for task in listed]
    if fmt == "json":
        for row in rows:
            click.echo(json.dumps(row, ensure_ascii=False))
    elif fmt == "csv" and rows:
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({name: spreadsheet_safe(value) for name, value in row.items()} for row in rows)
    elif fmt == "text":
        for task in listed:
            due = f"due {task.due}" if task.due else "no due date"
            click.echo(f"task {task.id}  {task.status:<9}  {task.action}  record {task.record}  {task.owner}  {due}")


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
@click.option("--as-of", help="The agenda's day (YYYY-MM-DD); today by default.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "csv"]), default="text", show_default=True)
@click.option("--lang", type=click.Choice(["zh", "en"]), default="en", show_default=True)
@_db_option
def agenda(playbook_path: str | None, owner: str | None, as_of: str | None, fmt: str, lang: str, db: str) -> None:
    """What is escalated, overdue and due this week, most urgent first, and the next reviews."""
    from engine.agenda import build_agenda, render_agenda
    from engine.tasks import listing

    day = _as_of(as_of)
    playbook = _load(playbook_path) if playbook_path is not None else None
    built = build_agenda(playbook, listing(_open_store(db, create=False)), day, owner)
    if fmt == "text":
        click.echo(render_agenda(built, playbook, lang))
        return
    from adapters.listing import spreadsheet_safe

    rows = built.rows()
    if fmt == "json":
        click.echo(json.dumps({"as_of": day.isoformat(), "owner": owner, "items": rows}, ensure_ascii=False))
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
@_lang_option
def batch(
    playbook_path: str,
    input_path: str,
    mapping_name: str | None,
    as_of: str | None,
    output: str,
    engine: str,
    master: str | None,
    lang: str,
) -> None:
    """Evaluate every record of a set of files in bulk and write the results as Parquet.

    One row per input record (source file, line, case, status: result, error or quarantined, code,
    reason, and as result the JSON that recommend --format json prints), so rows read = results +
    errors + quarantined.  Nothing is stored in the audit log.
    """
    from adapters.batch import BatchJob, input_files, kind_of, run_local
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
    job = BatchJob(Path(playbook_path).read_text(encoding="utf-8"), playbook_path, kind, mapping, when, lang)
    try:
        if engine == "local":
            _tune_memory()
            counts = run_local(job, files, output)
        else:
            counts = _run_on_spark(job, files, output, master)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--output") from None
    except PlaybookError as error:
        raise Failed(str(error)) from None
    summary = f"{counts.rows} rows: {counts.results} results, {counts.errors} errors"
    if counts.quarantined:
        held = ", ".join(f"{code} {n}" for code, n in sorted(counts.quarantined.items()))
        summary += f", {counts.quarantined.total()} quarantined ({held})"
    click.echo(f"{summary}; written to {output}", err=True)
    if counts.errors:
        raise Failed()


def _run_on_spark(job: Any, files: list[str], output: str, master: str | None) -> Any:
    try:
        from adapters.spark_batch import run_spark, spark_session
    except ImportError as error:
        raise Failed(f"--engine spark needs PySpark: pip install 'sales-playbook[spark]' ({error})") from None
    return run_spark(spark_session(master), job, files, output)


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
@_lang_option
@_db_option
def replay(
    playbook_path: str,
    baseline_path: str | None,
    since: str | None,
    every: bool,
    fmt: str,
    examples: int,
    lang: str,
    db: str,
) -> None:
    """What a playbook change would change: each record's latest evaluation re-evaluated under the new
    playbook and under the one live now, compared (nothing is written)."""
    from engine import EngineFault, PlaybookError
    from engine.replay import live_playbook, render_replay
    from engine.replay import replay as run_replay

    if since is not None:
        _as_of(since, "--since")
    candidate = _load(playbook_path)
    store = _open_store(db, create=False)
    chosen: dict[str, Any]
    try:
        if baseline_path is not None:
            baseline, chosen = _load(baseline_path), {"file": baseline_path}
        else:
            baseline, newest = live_playbook(store)
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


# -- playbook serve: the webhook service ----------------------------------------------------------


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
) -> None:
    """Run the webhook service: CRM events in, evaluated, stored in the audit log.

    Routes are enabled by their secrets, from the environment or --secrets-file:
    PLAYBOOK_HUBSPOT_SECRET (/webhooks/hubspot), PLAYBOOK_SALESFORCE_CDC_SECRET
    (/webhooks/salesforce/cdc), PLAYBOOK_SALESFORCE_ORG_IDS and/or PLAYBOOK_SALESFORCE_OUTBOUND_TOKEN
    (/webhooks/salesforce/outbound[/TOKEN]), PLAYBOOK_PIPEDRIVE_USER and PLAYBOOK_PIPEDRIVE_PASSWORD
    (/webhooks/pipedrive), PLAYBOOK_WEBHOOK_SECRET (/webhooks/generic, /outcomes, signed reads);
    PLAYBOOK_API_TOKEN lets a bearer token read GET /evaluations/N and /records/ID/latest (and guards
    /metrics).  GET /health reports the state; /openapi.json describes every route.
    """
    import logging

    import uvicorn

    from adapters.mapping import load_mapping
    from adapters.service import (
        CRMS,
        SECRET_NAMES,
        Secrets,
        WebhookService,
        create_app,
        read_secrets_file,
        server_config,
    )
    from engine import Evaluator, PlaybookError, compile_playbook

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
    store = _open_store(db, write=True)
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
        routes = service.enabled()
        if not routes:
            service.close()
            raise Failed("no webhook route is enabled: set at least one of " + ", ".join(SECRET_NAMES))
        click.echo(
            f"playbook {playbook.id} {playbook.version} ({playbook.content_hash[:12]}), audit log {_shown(db)}; "
            f"routes: {', '.join(routes)}",
            err=True,
        )
        _tune_memory()
        console = _console(store, playbook, playbook_path, https=bool(public_url and public_url.startswith("https:")))
        config = server_config(
            create_app(service, routes=[console]), host=host, port=port, max_connections=max_connections
        )
        try:
            uvicorn.Server(config).run()
        finally:
            service.close()
            store.close()


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
