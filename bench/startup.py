"""Start-up: `check`, `recommend` on a small file, and `why`, as a user runs them, Python's start-up included.

    python bench/startup.py [--runs 5] [--root CHECKOUT]

Runs ``python3 cli.py ...`` of ``--root`` (this checkout by default, so two checkouts can be compared)
``--runs`` times per row and prints the median wall clock and the median CPU (user + system) of the
command, beside the anchor measured in the same run: ``python3 -c pass`` with the same interpreter
and site (the floor no command goes under).  Three rows per command:

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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import add_json_option, write_json  # noqa: E402

AS_OF = "2026-11-27"


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) of one run; the command must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def median_of(runs: int, command: list[str], cwd: Path, env: dict[str, str], fresh: Path | None) -> dict[str, float]:
    """Median wall and CPU seconds of ``runs`` runs (``fresh``: a cache directory emptied before each)."""
    walls, cpus = [], []
    for _ in range(runs):
        if fresh is not None:
            shutil.rmtree(fresh, ignore_errors=True)
        wall, cpu = timed(command, cwd, env)
        walls.append(wall)
        cpus.append(cpu)
    return {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus), "load": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--root", type=Path, default=ROOT, help="The checkout whose cli.py runs.")
    add_json_option(parser)
    args = parser.parse_args()
    root = args.root.resolve()
    python = sys.executable
    work = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    try:
        cases = work / "cases.jsonl"
        cases.write_text("".join((ROOT / "samples" / "cases.jsonl").read_text(encoding="utf-8").splitlines(True)[:3]))
        playbook = work / "course.yaml"
        shutil.copyfile(root / "playbooks" / "course.yaml", playbook)
        db = f"sqlite:///{work / 'audit.db'}"
        cache = work / "cache"
        env = {**os.environ, "PLAYBOOK_CACHE": str(cache), "PYTHONPATH": str(root)}
        cli = [python, str(root / "cli.py")]
        filled = [*cli, "recommend", "--playbook", str(playbook), "--input", str(cases), "--as-of", AS_OF, "--db", db]
        subprocess.run(filled, cwd=work, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        commands = {
            "check": [*cli, "check", str(playbook)],
            "recommend (3 cases, --no-store)": [
                *[*cli, "recommend", "--playbook", str(playbook), "--input", str(cases)],
                *["--as-of", AS_OF, "--no-store"],
            ],
            "why 1": [*cli, "why", "1", "--db", db],
        }
        figures: dict[str, dict[str, float]] = {}
        figures["anchor: python3 -c pass"] = median_of(args.runs, [python, "-c", "pass"], work, env, None)
        for name, command in commands.items():
            subprocess.run(command, cwd=work, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            figures[f"{name}, cached"] = median_of(args.runs, command, work, env, None)
            figures[f"{name}, cold"] = median_of(args.runs, command, work, env, cache)
            figures[f"{name}, off"] = median_of(args.runs, command, work, {**env, "PLAYBOOK_CACHE": "off"}, None)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    anchor = figures["anchor: python3 -c pass"]["wall_s"]
    print(f"{root} · median of {args.runs} · load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'command':<44} {'× anchor':>9} {'wall s':>8} {'CPU s':>7} {'load':>6}")
    for name, got in figures.items():
        print(
            f"{name:<44} {got['wall_s'] / anchor:>9.2f} {got['wall_s']:>8.3f} {got['cpu_s']:>7.3f} {got['load']:>6.2f}"
        )
    write_json({"root": str(root), "runs": args.runs, "figures": figures}, "startup", args.json)


if __name__ == "__main__":
    main()
