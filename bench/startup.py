"""Start-up: `check`, `recommend` on a small file (with and without the audit log), and `why`, as a user
runs them, Python's start-up included.

    python bench/startup.py [--runs 5] [--root CHECKOUT] [--compare OTHER] [--no-bytecode]

Runs the CLI of ``--root`` (this checkout by default) as the installed ``playbook`` command runs it (a
console script that imports ``cli`` and calls its ``main``: the module's bytecode cached, where ``python3
cli.py`` compiles its 2,000 lines from source on every run) ``--runs`` times per row and prints
the median CPU (user + system) and wall clock of the command, beside the anchors measured in the same
run with the same interpreter and site: ``python3 -c pass`` (the floor no command goes under) and
``python3 -c "import sqlalchemy"`` (the floor of a command that opens the audit log).  ``recommend``
with the log appends to a SQLite log holding one earlier evaluation (a fresh copy every run); ``why``
explains the first evaluation of a log of three.  ``--compare``: another checkout (main, say), whose
runs alternate with ``--root``'s, so that a change of load weighs on both alike.

Python's bytecode cache is on, as an installed package has it, under a prefix of its own (nothing is
written in the checkout), even where ``PYTHONDONTWRITEBYTECODE`` is set; ``--no-bytecode``: every module
compiled from source on every run instead.  Three rows per command:

- ``cached``: the built playbook is in the cache (the second and later runs on an unchanged file);
- ``cold``: an empty cache directory every run (the first run on a file; the entry is written);
- ``off``: ``PLAYBOOK_CACHE=off``, the playbook built every run (as before the cache).

The load average is printed with the figures: the machine may be shared.  Writes
bench/results/startup.json.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import add_json_option, write_json  # noqa: E402

AS_OF = "2026-11-27"
# What the ``playbook`` script pip installs does (with --root first on the path)
AS_INSTALLED = "import sys; from cli import main; sys.argv[0] = 'playbook'; sys.exit(main())"


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) of one run; the command must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


@dataclass
class Checkout:
    """One checkout's commands, run in a directory of its own (its playbook cache, its logs)."""

    root: Path
    work: Path
    env: dict[str, str]
    commands: dict[str, list[str]]

    def prepare(self, name: str, mode: str) -> None:
        """Before a timed run of a row: a fresh copy of the log ``recommend`` appends to, the cache emptied."""
        if name.startswith("recommend") and "SQLite" in name:
            shutil.copyfile(self.work / "earlier.db", self.work / "appended.db")  # one earlier evaluation
        if mode == "cold":
            shutil.rmtree(self.work / "cache", ignore_errors=True)

    def env_of(self, mode: str) -> dict[str, str]:
        return {**self.env, "PLAYBOOK_CACHE": "off"} if mode == "off" else self.env


def set_up(root: Path, work: Path, no_bytecode: bool) -> Checkout:
    """The checkout's commands over the course playbook, three cases and two SQLite logs made by it."""
    work.mkdir()
    python = sys.executable
    cases = work / "cases.jsonl"
    cases.write_text("".join((ROOT / "samples" / "cases.jsonl").read_text(encoding="utf-8").splitlines(True)[:3]))
    first = work / "first.jsonl"
    first.write_text(cases.read_text(encoding="utf-8").splitlines(True)[0])
    playbook = work / "course.yaml"
    shutil.copyfile(root / "playbooks" / "course.yaml", playbook)
    env = {**os.environ, "PLAYBOOK_CACHE": str(work / "cache"), "PYTHONPATH": str(root)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env |= {"PYTHONDONTWRITEBYTECODE": "1"} if no_bytecode else {"PYTHONPYCACHEPREFIX": str(work / "pyc")}
    cli = [python, "-c", AS_INSTALLED]
    recommend = [*cli, "recommend", "--playbook", str(playbook), "--as-of", AS_OF]
    for target, given in (("audit.db", cases), ("earlier.db", first)):
        filled = [*recommend, "--input", str(given), "--db", f"sqlite:///{work / target}"]
        subprocess.run(filled, cwd=work, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    appended = work / "appended.db"  # a copy of earlier.db before every run (Checkout.prepare)
    commands = {
        "anchor: python3 -c pass": [python, "-c", "pass"],
        'anchor: python3 -c "import sqlalchemy"': [python, "-c", "import sqlalchemy"],
        "check": [*cli, "check", str(playbook)],
        "recommend (3 cases, --no-store)": [*recommend, "--input", str(cases), "--no-store"],
        "recommend (3 cases, SQLite log)": [*recommend, "--input", str(cases), "--db", f"sqlite:///{appended}"],
        "why 1": [*cli, "why", "1", "--db", f"sqlite:///{work / 'audit.db'}"],
    }
    return Checkout(root, work, env, commands)


def measure(checkouts: list[Checkout], runs: int) -> list[dict[str, dict[str, float]]]:
    """Per checkout, per row: median wall and CPU seconds of ``runs`` runs; the checkouts' runs of a row
    alternate, so that a change of load between rows weighs on each alike."""
    figures: list[dict[str, dict[str, float]]] = [{} for _ in checkouts]
    for name in checkouts[0].commands:
        modes = ("",) if name.startswith("anchor") else ("cached", "cold", "off")
        for mode in modes:
            times: list[list[tuple[float, float]]] = [[] for _ in checkouts]
            for checkout in checkouts:  # once untimed: bytecode and the playbook cache written
                checkout.prepare(name, "cached")
                command, cwd = checkout.commands[name], checkout.work
                subprocess.run(command, cwd=cwd, env=checkout.env, check=True, capture_output=True)
            for _ in range(runs):
                for checkout, got in zip(checkouts, times, strict=True):
                    checkout.prepare(name, mode)
                    got.append(timed(checkout.commands[name], checkout.work, checkout.env_of(mode)))
            row = f"{name}, {mode}" if mode else name
            for per_checkout, got in zip(figures, times, strict=True):
                per_checkout[row] = {
                    "wall_s": statistics.median(wall for wall, _ in got),
                    "cpu_s": statistics.median(cpu for _, cpu in got),
                    "load": os.getloadavg()[0],
                }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--root", type=Path, default=ROOT, help="The checkout whose cli.py runs.")
    add_json_option(parser)
    parser.add_argument("--compare", type=Path, help="Another checkout (main, say), its runs alternating.")
    parser.add_argument("--no-bytecode", action="store_true", help="Compile every module on every run.")
    args = parser.parse_args()
    roots = [args.root.resolve(), *([args.compare.resolve()] if args.compare else [])]
    work = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    try:
        checkouts = [set_up(root, work / str(n), args.no_bytecode) for n, root in enumerate(roots)]
        figures = measure(checkouts, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    bytecode = "compiled every run" if args.no_bytecode else "bytecode cached"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{' vs '.join(map(str, roots))} · median of {args.runs} · {bytecode} · load average {load}")
    print(
        f"{'command':<44} {'CPU × anchor':>12} {'CPU s':>7} {'wall s':>8} {'load':>6}"
        + "   compared: CPU s" * len(roots[1:])
    )
    anchor = figures[0]["anchor: python3 -c pass"]["cpu_s"]
    for name, got in figures[0].items():
        line = (
            f"{name:<44} {got['cpu_s'] / anchor:>12.2f} {got['cpu_s']:>7.3f} {got['wall_s']:>8.3f} {got['load']:>6.2f}"
        )
        print(line + "".join(f"   {other[name]['cpu_s']:>17.3f}" for other in figures[1:]))
    report = {
        "root": str(roots[0]),
        "runs": args.runs,
        "bytecode": not args.no_bytecode,
        "figures": figures[0],
        **({"compared": {"root": str(roots[1]), "figures": figures[1]}} if args.compare else {}),
    }
    write_json(report, "startup", args.json)


if __name__ == "__main__":
    main()
