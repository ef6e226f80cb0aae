"""playbook batch: the local engine and Spark's local mode on this machine, against recommend.

    python bench/batch.py [--cases 100000] [--master local[2]] [--skip-spark]

Writes ``--cases`` generated cases (bench/cases.py) as JSON Lines in a temporary folder and runs,
each as a subprocess through the real CLI (``--lang en``, results with their trace):

- ``recommend --no-store --format json`` (stdout to /dev/null): the single-process reference;
- ``batch --engine local``: the same evaluation, written as Parquet;
- ``batch --engine spark --master local[2]``: Spark's local mode (PYSPARK_PYTHON set to this
  interpreter, SPARK_LOCAL_IP=127.0.0.1).

Each runs once on a one-case input first: that wall time is its start-up (imports, compile, and for
Spark the JVM and its Python workers), and cases/s are also given net of it.  CPU time is the
children's user + system time (getrusage RUSAGE_CHILDREN: the process and every descendant it
waited for; Spark's JVM and its Python workers are not among them, so for Spark it is the driver's
alone); the cost per case is that CPU time divided by the cases.  Prints a table and the load
average; writes bench/results/batch.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.cases import AS_OF, generate  # noqa: E402


def _write_cases(path: Path, count: int) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for _, case in generate(count):
            handle.write(json.dumps(case) + "\n")


def _run(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process tree) of one CLI run; fails loudly if it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
        check=False,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {done.stderr.decode()[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--skip-spark", action="store_true")
    options = parser.parse_args()
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    folder = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    try:
        one, many = folder / "one.jsonl", folder / "cases.jsonl"
        _write_cases(one, 1)
        _write_cases(many, options.cases)
        common = ["--as-of", AS_OF.isoformat(), "--lang", "en"]
        runs: dict[str, list[str]] = {
            "recommend --no-store --format json": ["recommend", "--no-store", "--format", "json", *common],
            "batch --engine local": ["batch", "--engine", "local", *common],
        }
        if not options.skip_spark:
            runs[f"batch --engine spark --master {options.master}"] = [
                "batch",
                "--engine",
                "spark",
                "--master",
                options.master,
                *common,
            ]
        figures: list[dict[str, Any]] = []
        for name, args in runs.items():
            out = ["--output", str(folder / "out")] if args[0] == "batch" else []
            start_wall, start_cpu = _run([*args, "--input", str(one), *out], env)
            shutil.rmtree(folder / "out", ignore_errors=True)
            wall, cpu = _run([*args, "--input", str(many), *out], env)
            shutil.rmtree(folder / "out", ignore_errors=True)
            figures.append(
                {
                    "run": name,
                    "cases": options.cases,
                    "wall_s": round(wall, 2),
                    "cases_per_s": round(options.cases / wall),
                    "startup_s": round(start_wall, 2),
                    "cases_per_s_net": round(options.cases / max(wall - start_wall, 1e-9)),
                    "cpu_s": round(cpu, 2),
                    "cpu_ms_per_case": round(1000 * (cpu - start_cpu) / options.cases, 3),
                }
            )
            print(json.dumps(figures[-1]), flush=True)
        load = os.getloadavg()
        print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average {load}")
        print("| run | cases/s | net of start-up | start-up | CPU ms/case |")
        print("|---|---|---|---|---|")
        for f in figures:
            print(
                f"| {f['run']} | {f['cases_per_s']:,} | {f['cases_per_s_net']:,} | {f['startup_s']} s "
                f"| {f['cpu_ms_per_case']} |"
            )
        results = ROOT / "bench" / "results"
        results.mkdir(exist_ok=True)
        (results / "batch.json").write_text(json.dumps({"load": load, "runs": figures}, indent=2), encoding="utf-8")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
