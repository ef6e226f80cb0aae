"""The ``playbook`` command: options in, library calls, a reporter out.

Exit codes: 0 ok, 1 invalid input or a failed run, 2 usage.  Everything that
decides lives in the library; this module only talks to the terminal.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, NoReturn

import click

DEFAULT_PLAYBOOK = Path(__file__).resolve().parent / "playbooks" / "course.yaml"
SHOWN_PROBLEMS = 50


def _fail(message: str) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(1)


def _as_of(value: str | None) -> dt.date:
    if value is None:
        return dt.date.today()
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"'{value}' is not a date (YYYY-MM-DD)", param_hint="--as-of") from None


def _load(path: str) -> Any:
    from engine import PlaybookError, load_playbook

    try:
        return load_playbook(path)
    except PlaybookError as error:
        _fail("\n".join(str(p) for p in error.problems))


def _results(playbook_path: str, input_file: IO[str], as_of: dt.date) -> Iterator[Any]:
    from adapters.jsonl import read_cases
    from engine import Evaluator, compile_playbook

    playbook = _load(playbook_path)
    with compile_playbook(playbook) as compiled:
        yield playbook
        yield from Evaluator(compiled).evaluate(read_cases(input_file), as_of)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Sales playbooks: check them, and recommend what to do for each case, with the reasons."""


@main.command()
@click.argument("playbooks", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--verbose", "-v", is_flag=True, help=f"Show every problem, not just the first {SHOWN_PROBLEMS}.")
def check(playbooks: tuple[str, ...], verbose: bool) -> None:
    """Check playbooks, their tables included; print every problem as file:line:col: code: message."""
    from engine import PlaybookError, load_playbook
    from engine.analyse import analyse

    problems = []
    for path in playbooks:
        try:
            problems.extend(analyse(load_playbook(path)))
        except PlaybookError as error:
            problems.extend(error.problems)
    shown = problems if verbose else problems[:SHOWN_PROBLEMS]
    for problem in shown:
        click.echo(str(problem))
    if len(problems) > len(shown):
        click.echo(f"... and {len(problems) - len(shown)} more (--verbose shows all)")
    if problems:
        sys.exit(1)
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
def test_command(playbook_path: str, tests_dir: str | None, min_coverage: float) -> None:
    """Run a playbook's tests: expected against actual, and the rows and rules no test reaches."""
    from engine import PlaybookError
    from engine.testing import default_test_dir, load_tests, run_tests

    playbook = _load(playbook_path)
    folder = Path(tests_dir) if tests_dir else default_test_dir(playbook_path)
    files = sorted(folder.glob("*.yaml")) if folder.is_dir() else []
    if not files:
        _fail(f"no test files (*.yaml) in {folder}")
    try:
        tests = load_tests(files, playbook)
    except PlaybookError as error:
        _fail("\n".join(str(p) for p in error.problems))
    report = run_tests(playbook, tests)
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
        sys.exit(1)
    if report.coverage < min_coverage:
        _fail(f"coverage {report.coverage:.1f}% is under --min-coverage {min_coverage:g}")


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
_lang_option = click.option("--lang", type=click.Choice(["zh", "en"]), default="zh", show_default=True)


@main.command()
@_playbook_option
@_input_option
@_as_of_option
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@_lang_option
def recommend(playbook_path: str, input_file: IO[str], as_of: str | None, fmt: str, lang: str) -> None:
    """Evaluate every case and print its decisions and recommendations."""
    from engine import CaseError, EngineFault
    from engine.explain import render_result

    results = _results(playbook_path, input_file, _as_of(as_of))
    playbook = next(results)
    counts = {"results": 0, "errors": 0}
    try:
        for item in results:
            counts["errors" if isinstance(item, CaseError) else "results"] += 1
            payload = item.to_json() if isinstance(item, CaseError) else item.to_json(lang)
            if fmt == "json":
                click.echo(json.dumps(payload, ensure_ascii=False))
            else:
                click.echo(render_result(playbook, payload, lang) + "\n")
    except EngineFault as fault:
        _fail(f"engine fault, run stopped: {fault}")
    total = counts["results"] + counts["errors"]
    click.echo(f"{total} cases: {counts['results']} results, {counts['errors']} errors", err=True)
    if counts["errors"]:
        sys.exit(1)


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
    """Explain one case: every step with the values it read and its course source."""
    from engine import CaseError, EngineFault
    from engine.explain import UnknownTarget, why
    from engine.explain import why_not as why_not_text

    results = _results(playbook_path, input_file, _as_of(as_of))
    playbook = next(results)
    try:
        found = next((r for r in results if (r.case_id if isinstance(r, CaseError) else r.case) == case_id), None)
    except EngineFault as fault:
        _fail(f"engine fault: {fault}")
    if found is None:
        _fail(f"no case '{case_id}' in the input")
    if isinstance(found, CaseError):
        _fail(str(found))
    payload = found.to_json(lang)
    try:
        click.echo(why_not_text(playbook, payload, why_not, lang) if why_not else why(playbook, payload, lang))
    except UnknownTarget as error:
        raise click.BadParameter(str(error), param_hint="--why-not") from None


if __name__ == "__main__":
    main()
