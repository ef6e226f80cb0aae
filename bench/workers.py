"""Several ``playbook serve`` processes on one PostgreSQL audit log: throughput, p99, CPU per event, time in the lock.

    python bench/workers.py [--events 20000] [--processes 1,2,4] [--partitions 16] [--clients 16]

Starts a PostgreSQL server of its own (initdb in a temporary directory, as the tests do), then for
each process count N: a fresh database, its audit log created with ``--partitions``, and
``playbook serve --workers N`` (real processes sharing one port), to which ``--clients`` threads
send the workload of :func:`workload` concurrently: opportunities created and then updated, with
redeliveries (duplicates) and updates sent in another order than they happened.  Per run: events/s,
latency p50/p99 (per request, one event each), the service's CPU time per event (every service
process, from /proc), and from the processes' own count (adapters/ingest.py logs it when it
stops) the write transactions, the time each held its partitions' chain heads locked, and how
many found a record changed since it was evaluated (and evaluated again under the lock).  Then
every run is checked as tests/test_workers.py checks it: nothing lost, nothing doubled, states
equal the sequential merge, ``audit verify`` clean.  Prints a table with the load average;
writes bench/results/workers.json.

The ceiling: a transaction on one record's partitions holds them for L seconds, so one partition
takes at most 1/L transactions a second, and P partitions P/L; the CPU spent per event, C, bounds
a machine of K cores at K/C events a second; the smaller is the design's ceiling (printed for
K = 16 and 64).
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import hashlib
import hmac
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.webhook import RecordEvent, merge, parse_generic  # noqa: E402
from bench.events import realistic_cases  # noqa: E402
from bench.report import add_json_option, write_json  # noqa: E402

MILESTONES = ["need_clarified", "decision_weights_known", "decision_makers_contacted", "considering_us"]
SECRET_NAME = "PLAYBOOK_WEBHOOK_SECRET"  # noqa: S105 - the variable's name, not a secret


# -- the workload ---------------------------------------------------------------------------------


def workload(events: int, seed: int = 18) -> list[tuple[str, bytes]]:
    """``events`` deliveries (event id, body) of generic webhooks, in the order they are to be sent.

    A tenth are redeliveries of an event already in the list; the rest are distinct: each record is
    created (a whole case) and then updated several times (its amount, its milestones), each event
    an hour after the one before.  Every record's creation goes first; the updates follow shuffled,
    so that a record's updates arrive in any order and at any service process.
    """
    rng = random.Random(seed)
    distinct = events - events // 10
    per_record = 5  # its creation and four updates
    cases = realistic_cases(f"w{seed}", max(1, distinct // per_record), seed)
    start_ms = int((dt.datetime.now(dt.UTC) - dt.timedelta(days=2)).timestamp() * 1000)
    created: list[tuple[str, bytes]] = []
    updates: list[tuple[str, bytes]] = []
    for case in cases:
        record = case["id"]
        bodies = [_body(f"{record}-0", "opportunity.created", case, start_ms)]
        for step in range(1, per_record):
            change: dict[str, Any] = {"id": record}
            if step % 2:
                change["opportunity"] = {"amount": round(rng.uniform(1_000, 500_000), 2)}
            else:
                change["opportunity"] = {"milestones": MILESTONES[: rng.randint(0, len(MILESTONES))]}
            bodies.append(_body(f"{record}-{step}", "opportunity.updated", change, start_ms + step * 3_600_000))
        created.append(bodies[0])
        updates += bodies[1:]
        if len(created) + len(updates) >= distinct:
            break
    rng.shuffle(updates)
    sent = created + updates
    for _ in range(events - len(sent)):  # redeliveries, each somewhere after its first delivery
        at = rng.randrange(len(sent))
        sent.insert(rng.randrange(at, len(sent)) + 1, sent[at])
    return sent


def _body(event_id: str, kind: str, data: dict[str, Any], at_ms: int) -> tuple[str, bytes]:
    return event_id, json.dumps({"id": event_id, "event": kind, "data": data, "occurred_at": at_ms}).encode()


def expected_states(deliveries: list[tuple[str, bytes]]) -> dict[str, tuple[dict[str, Any], dict[str, int], bool]]:
    """Each record's state, computed sequentially: its distinct events merged one by one, oldest first."""
    events: dict[str, RecordEvent] = {}
    for event_id, body in deliveries:
        (event,) = parse_generic(body)
        assert isinstance(event, RecordEvent)
        events[event_id] = event
    states: dict[str, tuple[dict[str, Any], dict[str, int], bool]] = defaultdict(lambda: ({}, {}, False))
    for event in sorted(events.values(), key=lambda e: (e.occurred_at or 0, e.event_id)):
        fields, stamps, deleted = states[event.key]
        merged = merge(fields, stamps, deleted, event, 0)
        states[event.key] = (merged.fields, merged.stamps, merged.deleted)
    return dict(states)


# -- sending ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivered:
    event_id: str
    status: int  # the HTTP status; 0 when the connection failed
    answer: dict[str, Any] | None  # the event's outcome as answered
    seconds: float


def send(
    ports: list[int], deliveries: list[tuple[str, bytes]], secret: str, clients: int
) -> tuple[list[Delivered], float]:
    """Post every delivery, ``clients`` at a time over keep-alive connections spread over ``ports``; the
    answers in the order sent, and the seconds it all took."""
    answers: list[Delivered | None] = [None] * len(deliveries)
    cursor = iter(range(len(deliveries)))
    taking = threading.Lock()

    def client(number: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", ports[number % len(ports)], timeout=120)
        while True:
            with taking:
                index = next(cursor, None)
            if index is None:
                break
            event_id, body = deliveries[index]
            stamp = str(int(time.time()))
            digest = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
            headers = {"Content-Type": "application/json", "X-Playbook-Signature": f"t={stamp},v1={digest}"}
            started = time.perf_counter()
            try:
                connection.request("POST", "/webhooks/generic", body, headers)
                response = connection.getresponse()
                data = response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", ports[number % len(ports)], timeout=120)
                answers[index] = Delivered(event_id, 0, None, time.perf_counter() - started)
                continue
            outcome = json.loads(data)["events"][0] if status == 200 else None
            answers[index] = Delivered(event_id, status, outcome, time.perf_counter() - started)
        connection.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return [a for a in answers if a is not None], elapsed


# -- checking ------------------------------------------------------------------------------------


def check(url: str, delivered: list[Delivered], expected: dict[str, Any]) -> dict[str, Any]:
    """Lost, doubled and wrongly merged events, and the audit log's problems; all 0 / [] when right.

    Lost: a delivery not answered 200, or a distinct event whose answers name no evaluation stored
    under it or covering it (nor its quarantine).  Doubled: an event evaluated (answered
    ``evaluated``) more than once, or stored in more than one evaluation.  States: records whose
    stored state differs from the sequential merge.
    """
    from sqlalchemy import func, select

    from engine.store import Store, evaluations, quarantined_events, records

    answered: dict[str, list[dict[str, Any]]] = defaultdict(list)
    refused = 0
    for d in delivered:
        if d.status != 200 or d.answer is None:
            refused += 1
        else:
            answered[d.event_id].append(d.answer)
    with Store(url, create=False) as store, store.engine.connect() as conn:
        filed = {row.event_id: int(row.seq) for row in conn.execute(select(evaluations.c.event_id, evaluations.c.seq))}
        stored_count = conn.execute(select(func.count()).select_from(evaluations)).scalar_one()
        kept = {row.event_id for row in conn.execute(select(quarantined_events.c.event_id))}
        seqs = set(filed.values())
        states = {
            row.record_id: (json.loads(row.fields), json.loads(row.stamps), bool(row.deleted))
            for row in conn.execute(select(records))
        }
        problems = [str(p) for p in store.verify()]
    lost, doubled, statuses = [], [], defaultdict(int)
    for event_id, outcomes in answered.items():
        for outcome in outcomes:
            statuses[outcome["status"]] += 1
        evaluated = [o for o in outcomes if o["status"] in ("evaluated", "error")]
        if len(evaluated) > 1:
            doubled.append(event_id)
        if evaluated and evaluated[0].get("evaluation") != filed.get(event_id):
            lost.append(event_id)  # answered evaluated, but not what is filed under it
        for outcome in outcomes:
            if (outcome["status"] == "quarantined" and event_id not in kept) or (
                outcome["status"] in ("duplicate", "coalesced") and outcome.get("evaluation") not in seqs | {None}
            ):
                lost.append(event_id)
    distinct = {d.event_id for d in delivered}
    lost += sorted(distinct - answered.keys())
    doubled += [
        e for e in filed if e not in answered or not any(o["status"] in ("evaluated", "error") for o in answered[e])
    ]
    differ = sorted(r for r in expected.keys() | states.keys() if expected.get(r) != states.get(r))
    return {
        "deliveries": len(delivered),
        "distinct_events": len(distinct),
        "refused": refused,
        "statuses": dict(statuses),
        "evaluations_stored": stored_count,
        "lost": sorted(set(lost)),
        "doubled": sorted(set(doubled)) + ([] if stored_count == len(filed) else ["(evaluations without an event)"]),
        "states_differ": differ,
        "verify_problems": problems,
    }


# -- the service and the database ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve(url: str, port: int, workers: int, secret: str, log: Path) -> subprocess.Popen[bytes]:
    """``playbook serve --workers N`` on ``port``, started as a user would (its log in ``log``); once healthy."""
    env = {**os.environ, SECRET_NAME: secret}
    command = [sys.executable, "-m", "cli", "serve", "--db", url, "--port", str(port), "--workers", str(workers)]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"playbook serve ended at start: {log.read_text()[-2000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                connection.close()
                if _healthy_processes(process.pid) >= workers:
                    return process
        except OSError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"playbook serve did not answer: {log.read_text()[-2000:]}")
        time.sleep(0.2)


def _healthy_processes(pid: int) -> int:
    """How many service processes run under ``pid`` (itself when it has no children)."""
    return max(1, len(_children(pid)))


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its live children, from /proc."""
    total = 0.0
    for each in [pid, *_children(pid)]:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


_INGEST_LINE = re.compile(
    r"ingest: (\d+) transactions, ([0-9.]+) s with partitions locked, (\d+) evaluated again, (\d+) partitions locked, "
    r"([0-9.]+) s of CPU with them locked"
)


def lock_figures(log: Path) -> dict[str, float]:
    """The transactions, seconds locked and re-evaluations the service processes logged as they stopped."""
    transactions, seconds, again, partitions, cpu = 0, 0.0, 0, 0, 0.0
    for match in _INGEST_LINE.finditer(log.read_text(errors="replace")):
        transactions += int(match[1])
        seconds += float(match[2])
        again += int(match[3])
        partitions += int(match[4])
        cpu += float(match[5])
    return {
        "transactions": transactions,
        "locked_seconds": seconds,
        "evaluated_again": again,
        "partitions": partitions,
        "locked_cpu_seconds": cpu,
    }


def create_database(base: str) -> str:
    """A new, empty database on the server at ``base`` (a SQLAlchemy URL without a database); its URL."""
    import psycopg

    name = f"w_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base.replace("postgresql+psycopg", "postgresql") + "/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # a generated name, not user input
    return f"{base}/{name}"


def postgres() -> Iterator[str]:
    """A PostgreSQL server of this run's own on loopback (as tests/conftest.py starts one); its base URL."""

    def binary(name: str) -> str:
        found = shutil.which(name) or (sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [None])[-1]
        if not found:
            raise SystemExit(f"PostgreSQL's {name} is not installed (.ci/run installs it)")
        return found

    initdb, pg_ctl = binary("initdb"), binary("pg_ctl")
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    data = tempfile.mkdtemp(prefix="playbook-bench-pg-")
    if as_postgres:
        shutil.chown(data, "postgres")
    port = free_port()
    subprocess.run([*as_postgres, initdb, "-D", data, "-A", "trust", "-U", "postgres"], check=True, capture_output=True)
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c max_connections=200"
    subprocess.run([*as_postgres, pg_ctl, "-D", data, "-o", options, "-w", "-l", f"{data}/log", "start"], check=True)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run([*as_postgres, pg_ctl, "-D", data, "-m", "fast", "stop"], check=False, capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


# -- a run ----------------------------------------------------------------------------------------


def one_run(base: str, processes: int, partitions: int, events: int, clients: int, work: Path) -> dict[str, Any]:
    from engine.store import Store

    url = create_database(base)
    Store(url, partitions=partitions).close()  # the log, with its partitions, before any process opens it
    deliveries = workload(events)
    secret = uuid.uuid4().hex
    port, log = free_port(), work / f"serve-{processes}.log"
    service = serve(url, port, processes, secret, log)
    try:
        cpu_before = cpu_seconds(service.pid)
        load_before = os.getloadavg()
        delivered, elapsed = send([port], deliveries, secret, clients)
        cpu = cpu_seconds(service.pid) - cpu_before
        load = os.getloadavg()
    finally:
        stop(service)
    latencies = sorted(d.seconds for d in delivered)
    figures = check(url, delivered, expected_states(deliveries))
    locks = lock_figures(log)
    return {
        "processes": processes,
        "partitions": partitions,
        "events": len(deliveries),
        "clients": clients,
        "seconds": round(elapsed, 2),
        "events_per_s": round(len(deliveries) / elapsed, 1),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 1),
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 1),
        "cpu_ms_per_event": round(cpu / len(deliveries) * 1000, 3),
        "transactions": locks["transactions"],
        "locked_ms_per_transaction": round(locks["locked_seconds"] / max(1, locks["transactions"]) * 1000, 3),
        "locked_cpu_ms_per_transaction": round(locks["locked_cpu_seconds"] / max(1, locks["transactions"]) * 1000, 3),
        "evaluated_again": locks["evaluated_again"],
        "partitions_per_transaction": round(locks["partitions"] / max(1, locks["transactions"]), 2),
        "load_average": [round(x, 2) for x in (*load_before, *load)],
        "check": {k: v if isinstance(v, int | dict) else len(v) for k, v in figures.items()},
        "correct": not (figures["lost"] or figures["doubled"] or figures["states_differ"] or figures["verify_problems"])
        and figures["refused"] == 0,
    }


def ceiling(run: dict[str, Any], partitions: int, cores: int, hold: str = "locked_ms_per_transaction") -> float:
    """Events/s a machine of ``cores`` cores could take: the smaller of its CPU bound and the partitions' lock bound.

    Each transaction holds ``partitions_per_transaction`` of the partitions for ``hold`` ms, so the
    partitions take at most partitions / (that many x the hold) transactions a second.  ``hold``:
    the wall-clock time measured (on a loaded machine, mostly waiting for a core), or the writer
    thread's CPU time in it (a lower bound: the database's own work is not in it)."""
    per_transaction = run["events"] / max(1, run["transactions"])
    cpu_bound = cores / (run["cpu_ms_per_event"] / 1000)
    held = max(1.0, run["partitions_per_transaction"]) * max(run[hold], 0.001) / 1000
    lock_bound = partitions / held * per_transaction
    return min(cpu_bound, lock_bound)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--clients", type=int, default=16)
    add_json_option(parser)
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory(prefix="playbook-workers-") as work:
        server = postgres()
        base = next(server)
        try:
            for processes in [int(p) for p in args.processes.split(",")]:
                run = one_run(base, processes, args.partitions, args.events, args.clients, Path(work))
                runs.append(run)
                print(json.dumps(run), flush=True)
        finally:
            server.close()
    print(f"\ncores here: {os.cpu_count()}; load average (1, 5, 15 min) at the end: {os.getloadavg()}")
    header = ("procs", "events/s", "p50 ms", "p99 ms", "CPU ms/ev", "lock ms/tx", "lock CPU ms", "parts/tx", "again")
    row = "{:>5} {:>9} {:>8} {:>8} {:>10} {:>11} {:>11} {:>8} {:>6} {}"
    print(row.format(*header, "ok"))
    for run in runs:
        keys = ("processes", "events_per_s", "p50_ms", "p99_ms", "cpu_ms_per_event", "locked_ms_per_transaction")
        keys += ("locked_cpu_ms_per_transaction", "partitions_per_transaction", "evaluated_again", "correct")
        print(row.format(*(run[k] for k in keys)))
    last = runs[-1]
    for cores in (16, 64):
        measured = ceiling(last, args.partitions, cores)
        cpu_only = ceiling(last, args.partitions, cores, "locked_cpu_ms_per_transaction")
        print(
            f"ceiling on {cores} cores ({args.partitions} partitions): {measured:,.0f} events/s with the lock "
            f"time measured here, {cpu_only:,.0f} with the writer's CPU time in the lock"
        )
    write_json({"runs": runs}, "workers", args.json)
    if not all(run["correct"] for run in runs):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
