"""playbook batch: the local engine and Spark's local mode on this machine, against recommend; and batch --db.

    python bench/batch.py [--cases 100000] [--master local[2]] [--skip-spark] [--pg URL]

Writes ``--cases`` generated cases (bench/cases.py) as JSON Lines in a temporary folder and runs,
each as a subprocess through the real CLI (``--lang en``, results with their trace):

- ``recommend --no-store --format json`` (stdout to /dev/null): the single-process reference;
- ``batch --engine local``: the same evaluation, written as Parquet;
- ``batch --engine spark --master local[2]``: Spark's local mode (PYSPARK_PYTHON set to this
  interpreter, SPARK_LOCAL_IP=127.0.0.1);
- ``batch --engine local --db`` into a fresh SQLite log, and with ``--pg`` (a server URL; a database
  is made in it) into PostgreSQL, each then run again over the same input (which files nothing).

Each runs once on a one-case input first: that wall time is its start-up (imports, compile, and for
Spark the JVM and its Python workers), and cases/s are also given net of it.  CPU time is that of
the whole process tree: every descendant's user + system time, read from /proc every 0.1 s while it
runs (the JVM and Spark's Python workers included; a process living under 0.1 s may be missed); the
cost per case is the CPU time net of the one-case run's, divided by the cases.  Prints a table and
the load average; writes bench/results/batch.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
from bench.report import add_json_option, write_json  # noqa: E402


def _write_cases(path: Path, count: int) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for _, case in generate(count):
            handle.write(json.dumps(case) + "\n")


def _tree_cpu(root: int, seen: dict[int, float]) -> None:
    """Note the CPU seconds so far of ``root`` and each of its descendants (from /proc) in ``seen``."""
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry)
        children.setdefault(int(fields[1]), []).append(pid)  # fields after the name: state, ppid, ...
        times[pid] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    stack = [root]
    while stack:
        pid = stack.pop()
        if pid in times:
            seen[pid] = max(seen.get(pid, 0.0), times[pid])
        stack.extend(children.get(pid, []))


def _run(args: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the process tree, stderr) of one CLI run; fails loudly if it fails."""
    seen: dict[int, float] = {}
    start = time.perf_counter()
    with subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    ) as run:
        while run.poll() is None:
            _tree_cpu(run.pid, seen)
            time.sleep(0.1)
        assert run.stderr is not None
        stderr = run.stderr.read().decode()
    wall = time.perf_counter() - start
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {stderr[-2000:]}")
    return wall, sum(seen.values()), stderr


def _postgres_database(server: str) -> str:
    import uuid

    import psycopg

    name = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.replace("postgresql+psycopg", "postgresql") + "/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # a generated name
    return f"{server}/{name}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--skip-spark", action="store_true")
    parser.add_argument("--pg", help="A PostgreSQL server URL (postgresql+psycopg://user@host:port) for batch --db.")
    add_json_option(parser)
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
        logs = {"sqlite": lambda: f"sqlite:///{folder / f'log-{time.monotonic_ns()}.db'}"}
        if options.pg:
            logs["postgresql"] = lambda: _postgres_database(options.pg)
        one_case_logs: dict[str, str] = {}
        for kind, fresh in logs.items():
            db, one_case_logs[kind] = fresh(), fresh()
            for name in (f"batch --engine local --db ({kind})", f"batch --engine local --db ({kind}), run again"):
                runs[name] = ["batch", "--engine", "local", *common, "--db", db]
        figures: list[dict[str, Any]] = []
        for name, args in runs.items():
            out = ["--output", str(folder / "out")] if args[0] == "batch" else []
            if "run again" not in name:  # a rerun's start-up is its first run's
                kind = name.partition("(")[2].partition(")")[0]
                one_case = [*args[:-1], one_case_logs[kind]] if kind else args  # into a log of its own
                start_wall, start_cpu, _ = _run([*one_case, "--input", str(one), *out], env)
            shutil.rmtree(folder / "out", ignore_errors=True)
            wall, cpu, said = _run([*args, "--input", str(many), *out], env)
            shutil.rmtree(folder / "out", ignore_errors=True)
            figures.append(
                {
                    "run": name,
                    "audit_log": next((line for line in said.splitlines() if line.startswith("audit log:")), None),
                    "cases": options.cases,
                    "wall_s": round(wall, 2),
                    "cases_per_s": round(options.cases / wall),
                    "startup_s": round(start_wall, 2),
                    "cases_per_s_net": round(options.cases / max(wall - start_wall, 1e-9)),
                    "cpu_s": round(cpu, 2),
                    "cpu_ms_per_case": round(1000 * (cpu - start_cpu) / options.cases, 3),
                    "load_average": [round(x, 2) for x in os.getloadavg()],
                }
            )
            print(json.dumps(figures[-1]), flush=True)
        load = os.getloadavg()
        print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average {load}")
        print("| run | cases/s | net of start-up | start-up | CPU ms/case | load average (1, 5, 15 min) after |")
        print("|---|---|---|---|---|---|")
        for f in figures:
            print(
                f"| {f['run']} | {f['cases_per_s']:,} | {f['cases_per_s_net']:,} | {f['startup_s']} s "
                f"| {f['cpu_ms_per_case']} | {', '.join(map(str, f['load_average']))} |"
            )
        write_json({"load": load, "runs": figures}, "batch", options.json)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
