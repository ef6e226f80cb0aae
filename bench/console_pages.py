"""The web console's pages under load: each page's latency with 8 clients, on the Maven import.

    python bench/console_pages.py [--clients 8] [--rounds 20] [--db URL] [--rows N] [--json PATH]

Imports the Maven CRM sample (../shared/crm-data/maven-crm-sales-opportunities, the ``maven``
mapping, as of 2017-03-01) into a temporary SQLite log unless ``--db`` names one, starts
``playbook ui`` on it with the course playbook, and has ``--clients`` threads, each on its own
keep-alive connection, fetch every page ``--rounds`` times in turn, after one first request per
page (reading the playbook versions, compiling each once, running the playbook's tests, drawing the
review's charts: printed apart).
One page is a search the console has not kept: its first pages are kept while the log stands still,
so the same URL again costs little; this one names another end date on each request and reads the
log each time.
Prints p50/p95/max per page and overall, with the load average and the server's CPU time per request;
the goal (issue 17) is p95 under 300 ms for every page at 8 clients.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import itertools
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import add_json_option, write_json  # noqa: E402

MAVEN = ROOT.parent / "shared" / "crm-data" / "maven-crm-sales-opportunities" / "sales_pipeline.csv"


NEW_SEARCH = "search, a new one each time"


def new_until(number: int) -> str:
    """The end date of the ``number``-th new search: each a day earlier, all after the Maven deals."""
    return (dt.date(2030, 12, 31) - dt.timedelta(days=number)).isoformat()


def import_maven(db: str, rows: int | None, folder: Path) -> None:
    """The Maven sample into ``db``; its first ``rows`` rows only when given (a quick run)."""
    source = MAVEN
    if rows is not None:
        source = folder / MAVEN.name
        for lookup in ("accounts.csv", "products.csv", "sales_teams.csv"):
            shutil.copy(MAVEN.parent / lookup, folder / lookup)
        with MAVEN.open(encoding="utf-8-sig") as whole:
            source.write_text("".join(line for _, line in zip(range(rows + 1), whole, strict=False)), encoding="utf-8")
    command = [sys.executable, "-m", "cli", "recommend", "--input", str(source), "--mapping", "maven"]
    command += ["--as-of", "2017-03-01", "--format", "summary", "--db", db]
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def cpu_seconds(pid: int) -> float | None:
    """The process's CPU time so far (user + system; Linux's /proc), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pages(db: str) -> dict[str, str]:
    """One URL per page kind, naming records the log holds."""
    sys.path.insert(0, str(ROOT))
    from engine.store import Store

    with Store(db, create=False) as store:
        newest = store.count()
        stored = store.get(newest)
        while not stored.recommendations:
            newest -= 1
            stored = store.get(newest)
    owner = quote(str(stored.facts.get("opportunity", {}).get("owner", "")))
    action = stored.recommendations[0]["id"]
    return {
        "search (newest 50)": "/ui/?lang=en",
        "search by owner": f"/ui/?owner={owner}&lang=en",
        "search by action and dates": f"/ui/?action={action}&since=2017-01-01&until=2017-12-31&lang=zh",
        # another end date on every request: a search the console has not kept (it keeps each search's
        # first page while the log stands still), so this one reads the log every time
        NEW_SEARCH: f"/ui/?owner={owner}&since=2016-01-01&until={{until}}&lang=en",
        "evaluation": f"/ui/evaluations/{stored.seq}?lang=zh",
        "evaluation, why-not": f"/ui/evaluations/{stored.seq}?why_not={action}&lang=en",
        "why advised": f"/ui/why?record={quote(str(stored.record_id))}&action={action}&lang=en",
        "playbook": "/ui/playbook?lang=zh",
        "audit chain heads": "/ui/audit?lang=en",
        "portfolio review": "/ui/portfolio?as_of=2017-03-01&lang=en",
        "agenda": "/ui/agenda?as_of=2017-03-01&lang=zh",
        "tasks by owner and state": "/ui/tasks?owner=account_manager&state=open&lang=en",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--db")
    parser.add_argument("--rows", type=int, help="import only the sample's first ROWS rows (a quick run)")
    add_json_option(parser)
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="console-bench-")
    db = args.db or f"sqlite:///{folder}/maven.db"
    if args.db is None:
        started = time.perf_counter()
        import_maven(db, args.rows, Path(folder))
        print(f"Maven import stored in {time.perf_counter() - started:.1f} s")
    urls = pages(db)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PLAYBOOK_CONSOLE_SECRET": "bench-" + "x" * 40}
    command = [sys.executable, "-m", "cli", "ui", "--db", db, "--port", str(port)]
    command += ["--playbook", "playbooks/course.yaml"]
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("playbook ui did not start") from None
                time.sleep(0.1)
        # one request per page first: the playbook versions are read and the tests run once per server
        warm = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        new_searches = itertools.count()
        for name, url in urls.items():
            started = time.perf_counter()
            warm.request("GET", url.replace("{until}", new_until(next(new_searches))))
            warm.getresponse().read()
            print(f"first {name}: {(time.perf_counter() - started) * 1000:.0f} ms")
        warm.close()
        timings: dict[str, list[float]] = {name: [] for name in urls}
        errors: list[str] = []
        lock = threading.Lock()

        def client() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            for _ in range(args.rounds):
                for name, url in urls.items():
                    started = time.perf_counter()
                    conn.request("GET", url.replace("{until}", new_until(next(new_searches))))
                    answer = conn.getresponse()
                    answer.read()
                    elapsed = time.perf_counter() - started
                    with lock:
                        timings[name].append(elapsed)
                        if answer.status != 200:
                            errors.append(f"{name}: {answer.status}")
            conn.close()

        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        load_before = os.getloadavg()[0]
        cpu_before = cpu_seconds(server.pid)
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
        load_after = os.getloadavg()[0]
        cpu_after = cpu_seconds(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"{args.clients} clients x {args.rounds} rounds x {len(urls)} pages in {wall:.1f} s; errors: {len(errors)}")
    # the machine may be shared: the 1-minute load average before and after says how much
    print(f"load average {load_before:.1f} before, {load_after:.1f} after, on {os.cpu_count()} CPUs")
    if cpu_before is not None and cpu_after is not None:
        # what the load average does not change much: the server's own CPU time per request
        requests = args.clients * args.rounds * len(urls)
        print(f"server CPU {(cpu_after - cpu_before) * 1000 / requests:.1f} ms per request ({requests} requests)")
    print(f"{'page':30} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    every: list[float] = []
    for name, values in timings.items():
        every += values
        p95 = statistics.quantiles(values, n=20, method="inclusive")[-1]
        print(f"{name:30} {statistics.median(values) * 1000:8.1f} {p95 * 1000:8.1f} {max(values) * 1000:8.1f}")
    p95_all = statistics.quantiles(every, n=20, method="inclusive")[-1]
    print(f"{'all pages':30} {statistics.median(every) * 1000:8.1f} {p95_all * 1000:8.1f} {max(every) * 1000:8.1f}")
    if errors:
        print("errors:", errors[:5])
    requests = args.clients * args.rounds * len(urls)
    write_json(
        {
            "clients": args.clients,
            "rounds": args.rounds,
            "requests": requests,
            "errors": len(errors),
            "wall_s": round(wall, 2),
            "load_average_before_after": [round(load_before, 2), round(load_after, 2)],
            "server_cpu_ms_per_request": (
                round((cpu_after - cpu_before) * 1000 / requests, 2) if cpu_before is not None and cpu_after else None
            ),
            "pages_ms": {
                name: {
                    "p50": round(statistics.median(values) * 1000, 1),
                    "p95": round(statistics.quantiles(values, n=20, method="inclusive")[-1] * 1000, 1),
                    "max": round(max(values) * 1000, 1),
                }
                for name, values in timings.items()
            },
            "all_pages_ms": {
                "p50": round(statistics.median(every) * 1000, 1),
                "p95": round(p95_all * 1000, 1),
                "max": round(max(every) * 1000, 1),
            },
        },
        "console_pages",
        args.json,
    )


if __name__ == "__main__":
    main()
