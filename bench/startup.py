"""Start-up: `check`, `recommend` on a small file (with and without the audit log), and `why`, as a user
runs them, Python's start-up included.

    python bench/startup.py [--runs 5] [--root CHECKOUT] [--no-bytecode]

Runs ``python3 cli.py ...`` of ``--root`` (this checkout by default, so two checkouts can be compared)
``--runs`` times per row and prints the median wall clock and the median CPU (user + system) of the
command, beside the anchors measured in the same run with the same interpreter and site:
``python3 -c pass`` (the floor no command goes under) and ``python3 -c "import sqlalchemy"`` (the floor
of a command that opens the audit log).  ``recommend`` with the log appends to a SQLite log holding one
earlier evaluation (a fresh copy every run); ``why`` explains one of its three evaluations.

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
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AS_OF = "2026-11-27"


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) of one run; the command must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def median_of(
    runs: int, command: list[str], cwd: Path, env: dict[str, str], prepare: Callable[[], None]
) -> dict[str, float]:
    """Median wall and CPU seconds of ``runs`` runs, each after ``prepare()`` (not timed)."""
    walls, cpus = [], []
    for _ in range(runs):
        prepare()
        wall, cpu = timed(command, cwd, env)
        walls.append(wall)
        cpus.append(cpu)
    return {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus), "load": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--root", type=Path, default=ROOT, help="The checkout whose cli.py runs.")
    parser.add_argument("--no-bytecode", action="store_true", help="Compile every module on every run.")
    args = parser.parse_args()
    root = args.root.resolve()
    python = sys.executable
    work = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    try:
        cases = work / "cases.jsonl"
        cases.write_text("".join((ROOT / "samples" / "cases.jsonl").read_text(encoding="utf-8").splitlines(True)[:3]))
        playbook = work / "course.yaml"
        shutil.copyfile(root / "playbooks" / "course.yaml", playbook)
        first = work / "first.jsonl"
        first.write_text(cases.read_text(encoding="utf-8").splitlines(True)[0])
        db, earlier, appended = (work / name for name in ("audit.db", "earlier.db", "appended.db"))
        cache = work / "cache"
        env = {**os.environ, "PLAYBOOK_CACHE": str(cache), "PYTHONPATH": str(root)}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env |= {"PYTHONDONTWRITEBYTECODE": "1"} if args.no_bytecode else {"PYTHONPYCACHEPREFIX": str(work / "pyc")}
        cli = [python, str(root / "cli.py")]
        recommend = [*cli, "recommend", "--playbook", str(playbook), "--as-of", AS_OF]
        for target, given in ((db, cases), (earlier, first)):
            filled = [*recommend, "--input", str(given), "--db", f"sqlite:///{target}"]
            subprocess.run(filled, cwd=work, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        commands = {
            "check": [*cli, "check", str(playbook)],
            "recommend (3 cases, --no-store)": [*recommend, "--input", str(cases), "--no-store"],
            "recommend (3 cases, SQLite log)": [*recommend, "--input", str(cases), "--db", f"sqlite:///{appended}"],
            "why 1": [*cli, "why", "1", "--db", f"sqlite:///{db}"],
        }

        def nothing() -> None:
            pass

        def empty_cache() -> None:
            shutil.rmtree(cache, ignore_errors=True)

        def fresh_log() -> None:  # the log as before the command: one earlier evaluation
            shutil.copyfile(earlier, appended)

        def cold(prepare: Callable[[], None]) -> Callable[[], None]:
            def both() -> None:
                prepare()
                empty_cache()

            return both

        figures: dict[str, dict[str, float]] = {}
        for name, anchor_code in (("pass", "pass"), ('"import sqlalchemy"', "import sqlalchemy")):
            warm = [python, "-c", anchor_code]
            subprocess.run(warm, cwd=work, env=env, check=True)  # its bytecode written
            figures[f"anchor: python3 -c {name}"] = median_of(args.runs, warm, work, env, nothing)
        for name, command in commands.items():
            prepare = fresh_log if name.startswith("recommend") and "SQLite" in name else nothing
            prepare()
            subprocess.run(command, cwd=work, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            figures[f"{name}, cached"] = median_of(args.runs, command, work, env, prepare)
            figures[f"{name}, cold"] = median_of(args.runs, command, work, env, cold(prepare))
            off = {**env, "PLAYBOOK_CACHE": "off"}
            figures[f"{name}, off"] = median_of(args.runs, command, work, off, prepare)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    anchor = figures["anchor: python3 -c pass"]
    bytecode = "compiled every run" if args.no_bytecode else "bytecode cached"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{root} · median of {args.runs} · {bytecode} · load average {load}")
    print(f"{'command':<44} {'CPU × anchor':>12} {'CPU s':>7} {'wall s':>8} {'load':>6}")
    for name, got in figures.items():
        ratio = got["cpu_s"] / anchor["cpu_s"]
        print(f"{name:<44} {ratio:>12.2f} {got['cpu_s']:>7.3f} {got['wall_s']:>8.3f} {got['load']:>6.2f}")
    target = ROOT / "bench" / "results"
    target.mkdir(parents=True, exist_ok=True)
    report = {
        "root": str(root),
        "runs": args.runs,
        "bytecode": not args.no_bytecode,
        "load_average": os.getloadavg(),
        "figures": figures,
    }
    (target / "startup.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
