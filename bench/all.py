"""Every benchmark of BENCHMARKS.md's table in one go, each beside its anchor from the same run, as JSON.

    python bench/all.py [--quick] [--only NAME,...] [--skip NAME,...] [--json PATH] [--list]

Each bench runs in a process of its own (``python bench/NAME.py ... --json FILE``), one after the
other, with the 1, 5 and 15-minute load averages read before and after it.  What a figure means
depends on the machine and on what else runs there, so every bench is reported as

- its **ratio to an anchor measured in the same run** where it has one (ZEN, the hand-written
  function, durable-rules asked every question, the raw ``sqlite3``/``COPY`` writer, the import
  without the store, ``python3 -c pass``, Python's start-up), first;
- its **absolute figures**, second;
- the load average before and after, and the date.

The machine anchor, the hand-written Python of the course playbook (bench/handwritten.py, cases/s),
is measured at the start and at the end of the run: how fast this machine ran Python then.

Expected duration of the default run: under 10 minutes on 2 quiet cores.  Not yet timed on a quiet
machine: the one run so far (2026-12-03, load average 10-15 from other sessions) took 37.5 minutes
of wall time for 471 s of the benches' own CPU time, with store_ceiling at twice today's size.
``--quick`` runs every bench on tiny sizes (about 1 minute): to check that they all run and report,
not to measure.  Sizes are small where the table's own are hours (the
review over a million deals, 1,000,000 cases): see BENCHMARKS.md for those runs.

Writes one JSON file per run, bench/results/all-<UTC time>.json (or ``--json PATH``): the machine
(CPU model, cores, memory), then per bench its command, exit code, seconds, load averages, headline
figures, anchor, ratios and its whole JSON result.  Prints a table, one line per bench.  Exits 1
when a bench failed (the others still run).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.end_to_end import DEFAULT_DATA  # noqa: E402
from bench.report import RESULTS, load_average, machine  # noqa: E402

Figures = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass
class Bench:
    """One bench: its arguments for a full and a quick run, and what to read out of its JSON."""

    name: str
    full: list[str]
    quick: list[str]
    figures: Figures  # the headline figures: the ratios to the anchor first (keys "ratio_…"), then absolute ones
    needs: list[str] = field(default_factory=list)  # "maven" (the CRM sample set), "zen" (zen-engine)
    anchor: str = ""  # what the ratios compare with, measured in the same run
    script: str = ""  # bench/SCRIPT.py, when not bench/NAME.py


def _zen(r: dict[str, Any]) -> dict[str, Any]:
    ours, zen_single = r["runs"][0], r["runs"][1]
    return {
        "ratio_ours_to_zen": r["ratio_ours_to_zen"],
        "ratios": r["ratios"],
        "ours_cases_per_s": ours["cases_per_second"],
        "zen_cases_per_s": zen_single["cases_per_second"],
        "cases": ours["cases"],
        "mismatches": r["check"]["mismatches"],
    }


def _zen_scaling(r: dict[str, Any]) -> dict[str, Any]:
    by_rules: dict[str, Any] = {}
    for run in r["runs"]:
        size = by_rules.setdefault(str(run["rules"]), {"ratio_wall": [], "ratio_cpu": [], "ours": [], "zen": []})
        size["ratio_wall"].append(run["ratio_wall"])
        size["ratio_cpu"].append(run["ratio_cpu"])
        size["ours"].append(run["ours"]["cases_per_second"])
        size["zen"].append(run["zen"]["cases_per_second"])
    return {
        "ratio_ours_to_zen_by_rules": {n: s["ratio_wall"] for n, s in by_rules.items()},
        "ratio_cpu_by_rules": {n: s["ratio_cpu"] for n, s in by_rules.items()},
        "ours_cases_per_s_by_rules": {n: s["ours"] for n, s in by_rules.items()},
        "zen_cases_per_s_by_rules": {n: s["zen"] for n, s in by_rules.items()},
        "cases_each": r["cases_each"],
    }


def _handwritten(r: dict[str, Any]) -> dict[str, Any]:
    timing = r["timing"]
    return {
        "ratio_ours_to_handwritten": timing["ratio_ours_over_handwritten"],
        "handwritten_cases_per_s": timing["handwritten"]["cases_per_second"],
        "ours_cases_per_s": timing["engine"]["cases_per_second"],
        "mismatches": sum(c["mismatches"] for c in r["checks"]),
    }


def _raw_durable(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "ratio_ours_to_raw_durable": r["ratio_ours_to_raw"],
        "raw_durable_cases_per_s": r["raw_durable_cases_per_second"],
        "ours_cases_per_s": r["ours_cases_per_second"],
    }


def _engine_throughput(r: dict[str, Any]) -> dict[str, Any]:
    runs = r["runs"]
    return {
        "ratio_peak_rss_largest_to_smallest": r.get("peak_rss_ratio_largest_to_smallest"),
        "cases_per_s": {str(run["cases"]): run["cases_per_second"] for run in runs},
        "peak_rss_mb": {str(run["cases"]): run["peak_rss_mb"] for run in runs},
    }


def _end_to_end(r: dict[str, Any]) -> dict[str, Any]:
    runs = {run["run"]: run for run in r["runs"]}
    stored, bare = runs["open, audit log"], runs["open, --no-store"]
    return {
        "ratio_with_store_to_without": round(stored["cases_per_second"] / bare["cases_per_second"], 3),
        "open_cases_per_s": stored["cases_per_second"],
        "open_cases_per_s_no_store": bare["cases_per_second"],
        "open_cases_per_s_net_of_startup": stored["cases_per_second_after_startup"],
        "peak_rss_mb": stored["peak_rss_mb"],
        "db_mb": stored["db_mb"],
        "kb_per_case": round(stored["db_mb"] * 1024 / max(stored["stored"], 1), 2),
        "rows": r["rows"],
        "stored_matches": all(run.get("stored_matches_evaluated", True) for run in r["runs"]),
    }


def _store_ceiling(r: dict[str, Any]) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for db in r["databases"]:
        kind = db["database"].lower()
        n = db["cases"]
        figures[f"ratio_import_{kind}"] = db["ratio_import"]
        figures[f"ratio_store_{kind}"] = db["ratio_store_wall"]
        figures[f"ours_append_us_per_case_{kind}"] = round(db["best"]["append"]["wall"] / n * 1e6, 1)
        figures[f"raw_us_per_case_{kind}"] = round(db["best"]["raw_append"]["wall"] / n * 1e6, 1)
    return {**dict(sorted(figures.items(), key=lambda kv: not kv[0].startswith("ratio"))), "cases": r["cases"]}


def _events(r: dict[str, Any]) -> dict[str, Any]:
    levels = {str(level["concurrency"]): level for level in r["levels"]}
    return {
        "p99_ms": {c: level["latency_ms"]["p99"] for c, level in levels.items()},
        "p50_ms": {c: level["latency_ms"]["p50"] for c, level in levels.items()},
        "requests_per_s": {c: level["requests_per_second"] for c, level in levels.items()},
        "server_cpu_ms_per_request": {c: level["server_cpu_ms_per_request"] for c, level in levels.items()},
        "stored_matches": r["stored_matches_accepted"],
    }


def _service_cpu(r: dict[str, Any]) -> dict[str, Any]:
    return {"cpu_ms_per_request": r["cpu_ms_per_request"], "requests": r["requests"], "concurrency": r["concurrency"]}


def _console(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "p95_ms_all_pages": r["all_pages_ms"]["p95"],
        "p95_ms_slowest_page": max(page["p95"] for page in r["pages_ms"].values()),
        "server_cpu_ms_per_request": r["server_cpu_ms_per_request"],
        "requests": r["requests"],
        "errors": r["errors"],
    }


def _check_scaling(r: dict[str, Any]) -> dict[str, Any]:
    sizes = r["sizes"]
    first = sizes[0]
    return {
        # the anchor is linear growth from the smallest table: 1.0 = the time grows as the rows do
        "ratio_time_growth_to_rows_growth": {
            str(s["rows"]): round((s["check_s"] / first["check_s"]) / (s["rows"] / first["rows"]), 2) for s in sizes[1:]
        },
        "check_s": {str(s["rows"]): s["check_s"] for s in sizes},
        "command_cpu_s": {str(s["rows"]): s["command_cpu_s"] for s in sizes},
        "startup_cpu_s": r["startup_cpu_s"],
    }


def _startup(r: dict[str, Any]) -> dict[str, Any]:
    figures = r["figures"]
    anchor = figures["anchor: python3 -c pass"]
    cached = {name.removesuffix(", cached"): got for name, got in figures.items() if name.endswith(", cached")}
    return {
        "ratio_cpu_to_python": {name: round(got["cpu_s"] / anchor["cpu_s"], 1) for name, got in cached.items()},
        "cpu_s_cached": {name: round(got["cpu_s"], 3) for name, got in cached.items()},
        "wall_s_cached": {name: round(got["wall_s"], 3) for name, got in cached.items()},
        "python_c_pass_cpu_s": round(anchor["cpu_s"], 3),
    }


def _review(r: dict[str, Any]) -> dict[str, Any]:
    reviews = {review["format"]: review for review in r["reviews"]}
    return {
        "cpu_s": {fmt: review["cpu_s"] for fmt, review in reviews.items()},
        "wall_s": {fmt: review["wall_s"] for fmt, review in reviews.items()},
        "peak_rss_mib": {fmt: review["peak_rss_mib"] for fmt, review in reviews.items()},
        "deals": r["deals"],
        "fill_s": r.get("fill", {}).get("seconds"),
    }


BENCHES = [
    Bench(
        "zen_anchor",
        ["--cases", "20000", "--check", "1000"],
        ["--cases", "200", "--check", "50"],
        _zen,
        ["zen"],
        "GoRules ZEN on the same cases, case by case",
    ),
    Bench(
        "zen_scaling",
        ["--rules", "10,100,1000", "--rule-cases", "5000", "--runs", "3"],
        ["--rules", "10,100", "--rule-cases", "100", "--rule-check", "50"],
        _zen_scaling,
        ["zen"],
        "GoRules ZEN on the same generated playbook and cases",
        "zen_anchor",
    ),
    Bench(
        "handwritten",
        ["--check", "2000", "--cases", "20000", "--repeat", "3"],
        ["--check", "50", "--cases", "300", "--repeat", "1"],
        _handwritten,
        anchor="the course playbook written by hand in Python",
    ),
    Bench(
        "raw_durable",
        ["--cases", "2000"],
        ["--cases", "50"],
        _raw_durable,
        anchor="durable-rules asked every question (no answers reused)",
    ),
    Bench(
        "end_to_end",
        ["--rows", "30000"],
        ["--rows", "200"],
        _end_to_end,
        ["maven"],
        "the same import with --no-store",
    ),
    Bench(
        "store_ceiling",
        ["--cases", "10000", "--repeats", "3"],
        ["--cases", "100", "--repeats", "1", "--pg", "none"],
        _store_ceiling,
        ["maven"],
        "the same rows written raw (sqlite3 executemany, PostgreSQL COPY)",
    ),
    Bench(
        "events",
        ["--levels", "1,8,32", "--events", "2000", "--seconds", "30"],
        ["--levels", "1,8", "--events", "30", "--warmup", "5"],
        _events,
    ),
    Bench("service_cpu", ["--requests", "4000"], ["--requests", "40"], _service_cpu),
    Bench(
        "console_pages",
        ["--rounds", "5"],
        ["--rounds", "1", "--clients", "2", "--rows", "200"],
        _console,
        ["maven"],
    ),
    Bench(
        "engine_throughput",
        ["--sizes", "10000,100000"],
        ["--sizes", "100,500"],
        _engine_throughput,
        anchor="peak RSS at the smallest size",
    ),
    Bench(
        "check_scaling",
        ["--rows", "300,1000,3000,10000", "--repeat", "3"],
        ["--rows", "50,100", "--repeat", "1"],
        _check_scaling,
        anchor="the smallest table's time, grown as the rows grow (linear growth)",
    ),
    Bench("startup", ["--runs", "5"], ["--runs", "1"], _startup, anchor="python3 -c pass"),
    Bench(
        "review_scale",
        ["--deals", "20000", "--templates", "500", "--formats", "json,html"],
        ["--deals", "100", "--templates", "10", "--owners", "5", "--formats", "json"],
        _review,
    ),
]
MACHINE_ANCHOR = {
    "full": ["--check", "0", "--cases", "20000", "--repeat", "3"],
    "quick": ["--check", "0", "--cases", "300", "--repeat", "1"],
}


def missing(needs: list[str], data: Path) -> str | None:
    """Why a bench cannot run here, or None."""
    if "maven" in needs and not (data / "sales_pipeline.csv").exists():
        return f"the Maven CRM sample set is not at {data}"
    if "zen" in needs and find_spec("zen") is None:
        return "zen-engine is not installed (pip install -e '.[bench]')"
    return None


def anchor_rate(record: dict[str, Any]) -> int | None:
    """The hand-written function's cases/s in a run of bench/handwritten.py, None when it failed."""
    timing = record.get("result", {}).get("timing") or {}
    rate: int | None = timing.get("handwritten", {}).get("cases_per_second")
    return rate


def run_bench(name: str, args: list[str], folder: Path, timeout: float, script: str = "") -> dict[str, Any]:
    """One bench in a process of its own; its JSON result, exit code, time and the load around it."""
    out = folder / f"{name}.json"
    script = script or name
    command = [sys.executable, str(ROOT / "bench" / f"{script}.py"), *args, "--json", str(out)]
    before = load_average()
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
        code, stdout, stderr = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as exc:
        code, stdout, stderr = None, str(exc.stdout or ""), f"timed out after {timeout:.0f} s"
    record: dict[str, Any] = {
        "command": ["python", f"bench/{script}.py", *args],
        "exit_code": code,
        "seconds": round(time.perf_counter() - started, 1),
        "load_average_before": before,
        "load_average_after": load_average(),
        "output": stdout[-4000:],
    }
    if code != 0:
        record["error"] = stderr[-4000:] or stdout[-2000:]
    if out.exists():
        record["result"] = json.loads(out.read_text(encoding="utf-8"))
    return record


def save(report: dict[str, Any], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: every bench runs and reports (~1 min)")
    parser.add_argument("--only", help="these benches only (comma-separated names; see --list)")
    parser.add_argument("--skip", default="", help="not these benches (comma-separated names)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the Maven CRM sample set's folder")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds one bench may take (default 1800)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="where to write (default bench/results/all-…json)")
    parser.add_argument("--list", action="store_true", help="name each bench and its arguments, and stop")
    args = parser.parse_args()
    size = "quick" if args.quick else "full"
    chosen = [b for b in BENCHES if (not args.only or b.name in args.only.split(",")) and b.name not in args.skip]
    unknown = set(filter(None, (args.only or "").split(",") + args.skip.split(","))) - {b.name for b in BENCHES}
    if unknown:
        parser.error(f"no bench named {', '.join(sorted(unknown))}; --list names them")
    if args.list:
        for bench in BENCHES:
            arguments = " ".join(bench.quick if args.quick else bench.full)
            print(f"{bench.name:<18} bench/{bench.script or bench.name}.py {arguments}")
        return
    started = dt.datetime.now(dt.UTC)
    report: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "size": size,
        "machine": machine(),
        "load_average_at_start": load_average(),
        "benches": {},
    }
    failed = []
    target = args.json or RESULTS / f"all-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    with tempfile.TemporaryDirectory(prefix="bench-all-") as tmp:
        folder = Path(tmp)
        anchors = [run_bench("handwritten", MACHINE_ANCHOR[size], folder, args.timeout)]
        for bench in chosen:
            reason = missing(bench.needs, args.data)
            if reason is not None:
                report["benches"][bench.name] = {"skipped": reason}
                print(f"{bench.name}: skipped ({reason})", file=sys.stderr, flush=True)
                continue
            given = args.data.resolve() != DEFAULT_DATA.resolve() and bench.name != "console_pages"
            extra = ["--data", str(args.data)] if "maven" in bench.needs and given else []
            print(f"{bench.name}: running", file=sys.stderr, flush=True)
            arguments = [*(bench.quick if args.quick else bench.full), *extra]
            record = run_bench(bench.name, arguments, folder, args.timeout, bench.script)
            record["anchor"] = bench.anchor or None
            if "result" in record:
                try:
                    record["figures"] = bench.figures(record["result"])
                except (KeyError, IndexError, TypeError, ZeroDivisionError) as exc:
                    record["figures_error"] = f"{type(exc).__name__}: {exc}"
            if record["exit_code"] != 0 or "figures" not in record:
                failed.append(bench.name)
            report["benches"][bench.name] = record
            save(report, target)  # what has run so far survives an interrupted run
            print(f"{bench.name}: {record['seconds']} s, exit code {record['exit_code']}", file=sys.stderr, flush=True)
        anchors.append(run_bench("handwritten", MACHINE_ANCHOR[size], folder, args.timeout))
    report["machine_anchor"] = {
        "what": "the course playbook written by hand in Python (bench/handwritten.py), cases/s, at the start and end",
        "cases_per_s": [anchor_rate(a) for a in anchors],
        "load_average": [a["load_average_before"] for a in anchors],
    }
    report["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    report["seconds"] = round((dt.datetime.now(dt.UTC) - started).total_seconds(), 1)
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    # the benches' own CPU time: what the run costs whatever else the machine runs (servers included)
    report["cpu_seconds_of_benches"] = round(used.ru_utime + used.ru_stime, 1)
    report["load_average_at_end"] = load_average()
    report["failed"] = failed
    save(report, target)
    print_summary(report)
    print(f"written to {target}")
    if failed:
        sys.exit(1)


def _n(value: float | None) -> str:
    """A figure as the table prints it: thousands separated, two decimals under 10."""
    if value is None:
        return "–"
    return f"{value:,.2f}" if abs(value) < 10 and value != int(value) else f"{round(value):,}"


def _joined(values: list[float]) -> str:
    return ", ".join(_n(v) for v in values)


def _ratio(value: float) -> str:
    return f"**{value:.3f}×**" if value < 0.1 else f"**{value:.2f}×**"


# BENCHMARKS.md's rows: title, target, then (ratio to the anchor, absolute figures) from a bench's figures
ROWS: dict[str, tuple[str, str, Callable[[dict[str, Any]], tuple[str, str]]]] = {
    "zen_anchor": (
        "engine only, vs ZEN",
        "≥ 1.0× ZEN, traces recorded",
        lambda f: (
            f"ours/ZEN case by case {_ratio(f['ratio_ours_to_zen'])}"
            + "".join(f", ours/ZEN `evaluate_batch` {v:.2f}×" for k, v in f["ratios"].items() if "batch" in k),
            f"ours {_n(f['ours_cases_per_s'])} cases/s, ZEN {_n(f['zen_cases_per_s'])} ({_n(f['cases'])} cases, "
            f"{f['mismatches']} mismatches)",
        ),
    ),
    "zen_scaling": (
        "big playbooks vs ZEN, 10 / 100 / 1,000 rules",
        "≥ 1.0× ZEN at 1,000 rules",
        lambda f: (
            "ours/ZEN per run: "
            + "; ".join(f"{_n(int(n))} rules {_joined(r)}" for n, r in f["ratio_ours_to_zen_by_rules"].items()),
            "cases/s, ours vs ZEN: "
            + "; ".join(
                f"{_n(int(n))} rules {_joined(f['ours_cases_per_s_by_rules'][n])} vs "
                f"{_joined(f['zen_cases_per_s_by_rules'][n])}"
                for n in f["ours_cases_per_s_by_rules"]
            )
            + f" ({_n(f['cases_each'])} cases each)",
        ),
    ),
    "handwritten": (
        "engine only, vs hand-written Python",
        "(the ceiling)",
        lambda f: (
            f"ours/hand-written {_ratio(f['ratio_ours_to_handwritten'])}",
            f"hand-written {_n(f['handwritten_cases_per_s'])} cases/s, ours {_n(f['ours_cases_per_s'])}",
        ),
    ),
    "raw_durable": (
        "engine only, vs raw durable-rules",
        "—",
        lambda f: (
            f"ours/durable-rules asked every question {_ratio(f['ratio_ours_to_raw_durable'])}",
            f"durable-rules {_n(f['raw_durable_cases_per_s'])} cases/s, ours {_n(f['ours_cases_per_s'])}",
        ),
    ),
    "engine_throughput": (
        "memory as cases grow",
        "peak RSS at 1M ≤ 1.5× at 10k",
        lambda f: (
            f"peak RSS, largest/smallest size {_ratio(f['ratio_peak_rss_largest_to_smallest'])}",
            "; ".join(
                f"{_n(int(n))} cases {_n(rate)} cases/s, {_n(f['peak_rss_mb'][n])} MB"
                for n, rate in f["cases_per_s"].items()
            ),
        ),
    ),
    "end_to_end": (
        "end to end, CSV → audit log (SQLite)",
        "≥ 10,000 cases/s",
        lambda f: (
            f"with the audit log / `--no-store` {_ratio(f['ratio_with_store_to_without'])}",
            f"open deals {_n(f['open_cases_per_s'])} cases/s ({_n(f['open_cases_per_s_net_of_startup'])} net of "
            f"start-up), `--no-store` {_n(f['open_cases_per_s_no_store'])}; {_n(f['kb_per_case'])} KB per case; "
            f"peak RSS {_n(f['peak_rss_mb'])} MB; {_n(f['rows'])} rows",
        ),
    ),
    "store_ceiling": (
        "the store vs the raw ceiling (SQLite, PostgreSQL COPY)",
        "≥ 0.6× the raw ceiling",
        lambda f: (
            "ours/raw, import end to end: "
            + ", ".join(f"{k.removeprefix('ratio_import_')} {_ratio(v)}" for k, v in f.items() if "ratio_import" in k)
            + "; the store alone: "
            + ", ".join(f"{k.removeprefix('ratio_store_')} {v:.2f}×" for k, v in f.items() if "ratio_store" in k),
            "; ".join(
                f"{k.removeprefix('ours_append_us_per_case_')}: ours {_n(v)} µs per case, raw "
                f"{_n(f['raw_us_per_case_' + k.removeprefix('ours_append_us_per_case_')])}"
                for k, v in f.items()
                if k.startswith("ours_append")
            )
            + f" ({_n(f['cases'])} cases)",
        ),
    ),
    "events": (
        "events, `playbook serve`, signed generic webhooks",
        "p99 ≤ 20 ms at c=8",
        lambda f: (
            "— (server CPU per request is the figure the load changes least)",
            "; ".join(
                f"c={c}: p50 {_n(f['p50_ms'][c])}, p99 {_n(p99)} ms, {_n(f['requests_per_s'][c])} req/s, "
                f"CPU {_n(f['server_cpu_ms_per_request'][c])} ms/req"
                for c, p99 in f["p99_ms"].items()
            ),
        ),
    ),
    "service_cpu": (
        "webhook CPU per request, in process (8 concurrent, no sockets)",
        "≤ 0.8 ms",
        lambda f: ("—", f"**{f['cpu_ms_per_request']:.2f} ms** CPU per request ({_n(f['requests'])} requests)"),
    ),
    "console_pages": (
        "web console pages, 8 clients, Maven import",
        "p95 < 300 ms per page",
        lambda f: (
            "—",
            f"p95 all pages {_n(f['p95_ms_all_pages'])} ms, slowest page {_n(f['p95_ms_slowest_page'])} ms; server CPU "
            f"{_n(f['server_cpu_ms_per_request'])} ms/request; {f['errors']} errors in {_n(f['requests'])}",
        ),
    ),
    "check_scaling": (
        "`playbook check`, a 3,000-row table",
        "well under 1 s, near-linear",
        lambda f: (
            "time's growth / the rows' growth from the smallest: "
            + ", ".join(f"{_n(int(n))} rows {v:.2f}×" for n, v in f["ratio_time_growth_to_rows_growth"].items()),
            "check in process, CPU s: " + ", ".join(f"{_n(int(n))} rows {v:.2f}" for n, v in f["check_s"].items()),
        ),
    ),
    "startup": (
        "start-up: `check`, `recommend` of 3 cases (`--no-store`), `why`",
        "≤ 0.3 s each",
        lambda f: (
            "CPU / `python3 -c pass`: " + ", ".join(f"{k} {v:.1f}×" for k, v in f["ratio_cpu_to_python"].items()),
            "median CPU s, playbook cached: "
            + ", ".join(f"{k} {v:.2f}" for k, v in f["cpu_s_cached"].items())
            + f"; `python3 -c pass` {f['python_c_pass_cpu_s']:.3f}",
        ),
    ),
    "review_scale": (
        "`playbook review` over stored open deals",
        "finishes; aggregated in the database",
        lambda f: (
            "—",
            f"{_n(f['deals'])} deals: "
            + ", ".join(
                f"{fmt} {_n(cpu)} s CPU ({_n(f['wall_s'][fmt])} wall), peak RSS {_n(f['peak_rss_mib'][fmt])} MiB"
                for fmt, cpu in f["cpu_s"].items()
            ),
        ),
    ),
}


def print_summary(report: dict[str, Any]) -> None:
    """The run as BENCHMARKS.md's table: per bench its ratio to its anchor, the figures, the load, the date."""
    m, cpu = report["machine"], report.get("cpu_seconds_of_benches", "?")
    print(
        f"{report['started']}, {report['size']} run, {report['seconds']} s ({cpu} s CPU); "
        f"{m['cpu_model']}, {m['cores']} cores, "
        f"{m['memory_gib']} GiB; load average {report['load_average_at_start']} at the start, "
        f"{report['load_average_at_end']} at the end; machine anchor (hand-written Python) "
        f"{report['machine_anchor']['cases_per_s']} cases/s at the start and end"
    )
    date = report["started"][:10]
    print("| what | command | ratio to its anchor (same run) | figures | load (1 min) | date | target | met? |")
    print("|---|---|---|---|---|---|---|---|")
    for name, record in report["benches"].items():
        title, target, cells = ROWS[name]
        if "skipped" in record:
            print(f"| {title} | | skipped: {record['skipped']} | | | {date} | {target} | |")
            continue
        command = f"`{' '.join(record['command'])}`"
        try:
            ratio, figures = cells(record["figures"])
        except (KeyError, TypeError, ValueError) as exc:
            reason = record.get("figures_error") or f"{type(exc).__name__}: {exc}"
            ratio, figures = "FAILED", reason + " " + (record.get("error") or "")[-200:].replace("\n", " ")
        load = f"{record['load_average_before'][0]:.1f}–{record['load_average_after'][0]:.1f}"
        print(f"| {title} | {command} | {ratio} | {figures} | {load} | {date} | {target} | |")


if __name__ == "__main__":
    main()
