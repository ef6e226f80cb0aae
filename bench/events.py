"""Webhook events: latency and throughput of ``playbook serve`` under signed events, at rising concurrency.

    python bench/events.py [--route generic|hubspot] [--levels 1,8,32] [--events 2000] [--seconds 60] [--audit-key]
                           [--warmup 50]

Starts ``playbook serve`` as a subprocess on 127.0.0.1 (a free port, a temporary SQLite audit
log, a secret generated for this run in its environment), waits for GET /health, then sends
signed webhooks from threads in this process, each with its own keep-alive connection
(http.client).  Every event is distinct, with a record id of its own, and carries realistic
facts (bench/cases.py, close dates moved to today):

- ``generic`` (default): one event per request, ``opportunity.created`` whose data is a whole
  case, signed ``X-Playbook-Signature: t=...,v1=...``;
- ``hubspot``: one deal per request, as HubSpot batches them: its creation and three property
  changes (amount, closedate, hs_deal_stage_probability), signature v3; each of the four
  events is merged into the deal's state, evaluated and stored.

Each concurrency level sends at most ``--events`` requests or runs ``--seconds``, whichever
ends first; ``--warmup`` requests at concurrency 1 go first and are reported apart.  Per level:
latency p50, p90, p99 and max; requests/s and events stored/s; non-2xx answers and
connection failures counted as errors; the server's CPU time per request.  Then the server
is stopped, and the evaluations in the database (read with sqlite3) must equal the events
accepted (answered ``evaluated`` or ``error``: both are stored).  Prints a table; writes
bench/results/events.json; exits 1 when the counts differ.
With ``--audit-key`` the server is given a key made for the run, so every link of the audit
log is sealed with HMAC-SHA256 (docs/audit-threat-model.md); without it, plain SHA-256.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import hmac
import http.client
import json
import os
import resource
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.cases import AS_OF, generate  # noqa: E402 - after the path is set, as a script
from bench.report import add_json_option, load_average, write_json  # noqa: E402

HOST = "127.0.0.1"
ROUTES = {"generic": "/webhooks/generic", "hubspot": "/webhooks/hubspot"}
SECRET_ENV = {"generic": "PLAYBOOK_WEBHOOK_SECRET", "hubspot": "PLAYBOOK_HUBSPOT_SECRET"}
STORED_STATUSES = ("evaluated", "error")  # the event statuses that store an evaluation
PORTAL = 4_242_424
MAX_EVENTS = 1_000_000  # requests per level at most: record ids are numbered within a batch under this
STARTUP_SECONDS = 60
REQUEST_TIMEOUT = 30
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

Signer = Callable[[bytes], dict[str, str]]


# -- the server ------------------------------------------------------------------------------


def free_port() -> int:
    """A port free on loopback now (the server binds it a moment later; nothing else here races for it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(
    work: Path, route: str, secret: str, audit_key: str | None = None
) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLAYBOOK_")}  # only this run's route and db
    env[SECRET_ENV[route]] = secret
    if audit_key is not None:
        env["PLAYBOOK_AUDIT_KEY"] = audit_key
    env["PYTHONPATH"] = str(ROOT)  # this checkout's code, whatever an installed ``playbook`` points at
    log = work / "server.log"
    command = [sys.executable, "-m", "cli", "serve", "--host", HOST, "--port", str(port)]
    command += ["--db", f"sqlite:///{work / 'events.db'}"]
    with log.open("wb") as out:
        server = subprocess.Popen(command, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    return server, port, log


def get_json(port: int, path: str) -> tuple[int, Any]:
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def wait_healthy(server: subprocess.Popen[bytes], port: int, log: Path) -> dict[str, Any]:
    """Poll /health until it answers 200; give up after STARTUP_SECONDS or when the server exits."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"playbook serve exited with {server.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            status, body = get_json(port, "/health")
        except OSError:  # not listening yet
            status, body = 0, None
        if status == 200:
            health: dict[str, Any] = body
            return health
        time.sleep(0.1)
    stop_server(server)
    sys.exit(f"playbook serve did not answer /health within {STARTUP_SECONDS} s")


def server_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime: fields 14 and 15 of stat


def server_peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def stop_server(server: subprocess.Popen[bytes]) -> int:
    """SIGINT, as Ctrl-C: uvicorn finishes the requests in flight and shuts the app down; kill after 30 s."""
    if server.poll() is None:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
    return server.returncode


def scan_log(log: Path) -> dict[str, int]:
    """What the server logged that a benchmark should notice: warnings, errors, tracebacks, non-200 answers."""
    counts: Counter[str] = Counter()
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        for word in (" WARNING ", " ERROR ", "Traceback"):
            if word in line:
                counts[word.strip()] += 1
        if '" 200' not in line and "HTTP/1.1" in line:  # uvicorn's access log line of a non-200 answer
            counts["non-200 access lines"] += 1
    return dict(counts)


# -- the events ------------------------------------------------------------------------------


def realistic_cases(prefix: str, count: int, seed: int) -> list[dict[str, Any]]:
    """Cases from bench/cases.py with ids of their own and close dates moved so they lie around today."""
    shift = dt.datetime.now(dt.UTC).date() - AS_OF
    cases = []
    for i, (_, case) in enumerate(generate(count, seed=seed)):
        opportunity = case["opportunity"]
        opportunity["id"] = case["id"] = f"{prefix}-{i:06d}"
        if "close_date" in opportunity:
            opportunity["close_date"] = (dt.date.fromisoformat(opportunity["close_date"]) + shift).isoformat()
        cases.append(case)
    return cases


def generic_bodies(batch: int, count: int) -> tuple[list[bytes], int]:
    """Batch ``batch`` of ``count`` requests: one ``opportunity.created`` event each, its data a whole case."""
    now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
    bodies = [
        json.dumps(
            {"id": f"evt-{case['id']}", "event": "opportunity.created", "data": case, "created_at": now},
            ensure_ascii=False,
        ).encode()
        for case in realistic_cases(f"opp-b{batch}", count, seed=batch)
    ]
    return bodies, 1


def hubspot_bodies(batch: int, count: int) -> tuple[list[bytes], int]:
    """Batch ``batch``: one deal per request, its creation and three property changes, as HubSpot batches them.

    Values are text, as HubSpot sends them; deal ids are ``batch * 1,000,000 + i``, so batches never share one.
    """
    base_ms = int(time.time() * 1000)
    bodies = []
    for i, case in enumerate(realistic_cases(f"deal-b{batch}", count, seed=batch)):
        opportunity = case["opportunity"]
        deal = batch * MAX_EVENTS + i
        close = opportunity.get("close_date") or AS_OF.isoformat()
        close_ms = int(dt.datetime.fromisoformat(close).replace(tzinfo=dt.UTC).timestamp() * 1000)
        probability = opportunity.get("win_rate", 20) / 100
        changes = [
            ("deal.creation", None, None),
            ("deal.propertyChange", "amount", str(opportunity["amount"])),
            ("deal.propertyChange", "closedate", str(close_ms)),
            ("deal.propertyChange", "hs_deal_stage_probability", str(probability)),
        ]
        events = []
        for k, (kind, name, value) in enumerate(changes):
            event: dict[str, Any] = {
                "eventId": deal * 10 + k,
                "subscriptionId": 100 + k,
                "portalId": PORTAL,
                "occurredAt": base_ms + k,
                "subscriptionType": kind,
                "attemptNumber": 0,
                "objectId": deal,
                "changeSource": "CRM",
            }
            if name is not None:
                event |= {"propertyName": name, "propertyValue": value}
            events.append(event)
        bodies.append(json.dumps(events).encode())
    return bodies, len(changes)


def generic_signer(secret: str) -> Signer:
    """The generic scheme, written here from docs/webhooks.md rather than imported, as a sender would."""

    def sign(body: bytes) -> dict[str, str]:
        stamp = str(int(time.time()))
        digest = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        return {"Content-Type": "application/json", "X-Playbook-Signature": f"t={stamp},v1={digest}"}

    return sign


def hubspot_signer(secret: str, port: int) -> Signer:
    """HubSpot signature v3 (method + URI + body + timestamp in ms), as HubSpot computes it."""
    uri = f"http://{HOST}:{port}{ROUTES['hubspot']}"  # what the server rebuilds from the Host header

    def sign(body: bytes) -> dict[str, str]:
        stamp = str(int(time.time() * 1000))
        message = b"POST" + uri.encode() + body + stamp.encode()
        digest = base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()
        return {
            "Content-Type": "application/json",
            "X-HubSpot-Signature-v3": digest,
            "X-HubSpot-Request-Timestamp": stamp,
        }

    return sign


# -- the load --------------------------------------------------------------------------------


class Load:
    """Requests shared out to threads, each on its own keep-alive connection, until done or out of time."""

    def __init__(self, port: int, path: str, bodies: list[bytes], sign: Signer, seconds: float) -> None:
        self.port, self.path, self.bodies, self.sign = port, path, bodies, sign
        self.deadline = 0.0
        self.seconds = seconds
        self.next = 0
        self.lock = threading.Lock()
        self.latencies: list[float] = []  # list.append is atomic: threads share these
        self.answers: list[int] = []  # HTTP status, or 0 when the connection failed
        self.statuses: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()

    def take(self) -> bytes | None:
        with self.lock:
            if self.next >= len(self.bodies) or time.monotonic() >= self.deadline:
                return None
            self.next += 1
            return self.bodies[self.next - 1]

    def worker(self) -> None:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=REQUEST_TIMEOUT)
        try:
            while (body := self.take()) is not None:
                headers = self.sign(body)  # signed as it is sent, as a CRM does
                started = time.perf_counter()
                try:
                    conn.request("POST", self.path, body, headers)
                    response = conn.getresponse()
                    data = response.read()
                except (OSError, http.client.HTTPException) as error:
                    self.answers.append(0)
                    with self.lock:
                        self.failures[type(error).__name__] += 1
                    conn.close()  # http.client reconnects on the next request
                    continue
                self.latencies.append(time.perf_counter() - started)
                self.answers.append(response.status)
                if 200 <= response.status < 300:
                    found = Counter(event["status"] for event in json.loads(data)["events"])
                    with self.lock:
                        self.statuses.update(found)
        finally:
            conn.close()

    def run(self, concurrency: int) -> float:
        """Send with ``concurrency`` threads; the wall time in seconds.  Stops itself: count and deadline."""
        threads = [threading.Thread(target=self.worker, daemon=True) for _ in range(concurrency)]
        started = time.perf_counter()
        self.deadline = time.monotonic() + self.seconds
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(self.seconds + REQUEST_TIMEOUT + 5)  # a worker cannot outlive its last request
        return time.perf_counter() - started


def latency_ms(latencies: list[float]) -> dict[str, float | None]:
    """p50, p90, p99 (nearest rank), max and mean in milliseconds; None when nothing was answered."""
    ordered = sorted(latencies)
    if not ordered:
        return dict.fromkeys(("p50", "p90", "p99", "max", "mean"))

    def nearest_rank(q: int) -> float:
        return ordered[max(0, -(-len(ordered) * q // 100) - 1)]  # the ceil(n * q / 100)-th value

    found = {f"p{q}": nearest_rank(q) for q in (50, 90, 99)} | {"max": ordered[-1], "mean": sum(ordered) / len(ordered)}
    return {name: round(seconds * 1000, 1) for name, seconds in found.items()}


def one_level(
    port: int, server_pid: int, path: str, bodies: list[bytes], sign: Signer, concurrency: int, seconds: float
) -> dict[str, Any]:
    before_count = get_json(port, "/health")[1]["evaluations"]
    cpu_before = server_cpu_seconds(server_pid)
    client_before = resource.getrusage(resource.RUSAGE_SELF)
    load = Load(port, path, bodies, sign, seconds)
    wall = load.run(concurrency)
    client_after = resource.getrusage(resource.RUSAGE_SELF)
    server_cpu = server_cpu_seconds(server_pid) - cpu_before
    after_count = get_json(port, "/health")[1]["evaluations"]
    sent = len(load.answers)
    ok = sum(1 for a in load.answers if 200 <= a < 300)
    accepted = sum(load.statuses[s] for s in STORED_STATUSES)
    errors = Counter(str(a) for a in load.answers if not 200 <= a < 300)
    client_cpu = (client_after.ru_utime - client_before.ru_utime) + (client_after.ru_stime - client_before.ru_stime)
    return {
        "concurrency": concurrency,
        "requests": sent,
        "ok": ok,
        "errors": sent - ok,
        "errors_by_status": dict(errors),  # "0": the connection failed
        "connection_failures": dict(load.failures),
        "event_statuses": dict(load.statuses),
        "events_accepted": accepted,
        "stored_during_level": after_count - before_count,
        "stopped_by": "count" if sent >= len(bodies) else "time",
        "seconds": round(wall, 3),
        "requests_per_second": round(sent / wall, 1),
        "events_stored_per_second": round(accepted / wall, 1),
        "latency_ms": latency_ms(load.latencies),
        "server_cpu_ms_per_request": round(server_cpu * 1000 / max(sent, 1), 2),
        "client_cpu_seconds": round(client_cpu, 2),
    }


def stored_evaluations(db: Path) -> dict[str, Any]:
    """Read the audit log with sqlite3 once the server has stopped."""
    with sqlite3.connect(db) as conn:
        by_source = dict(conn.execute("SELECT source, count(*) FROM evaluations GROUP BY source").fetchall())
        by_status = dict(conn.execute("SELECT status, count(*) FROM evaluations GROUP BY status").fetchall())
        (record_count,) = conn.execute("SELECT count(*) FROM records").fetchone()
    return {"stored": sum(by_source.values()), "by_source": by_source, "by_status": by_status, "records": record_count}


def print_table(levels: list[dict[str, Any]]) -> None:
    print(
        f"{'conc.':>5} {'requests':>8} {'errors':>6} {'stored':>7} {'seconds':>8} {'req/s':>7} {'stored/s':>8} "
        f"{'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'max ms':>7} {'srv CPU ms/req':>14} {'stop':>5}"
    )
    for r in levels:
        lat = r["latency_ms"]
        print(
            f"{r['concurrency']:>5} {r['requests']:>8} {r['errors']:>6} {r['events_accepted']:>7} "
            f"{r['seconds']:>8.2f} {r['requests_per_second']:>7} {r['events_stored_per_second']:>8} "
            f"{lat['p50']:>7} {lat['p90']:>7} {lat['p99']:>7} {lat['max']:>7} "
            f"{r['server_cpu_ms_per_request']:>14} {r['stopped_by']:>5}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--route", choices=list(ROUTES), default="generic")
    parser.add_argument("--levels", default="1,8,32", help="concurrency levels (client threads)")
    parser.add_argument("--events", type=int, default=2000, help="requests per level at most")
    parser.add_argument("--seconds", type=float, default=60, help="time per level at most")
    parser.add_argument("--warmup", type=int, default=50, help="requests before the first level, reported apart")
    parser.add_argument(
        "--audit-key", action="store_true", help="seal the audit log with a key made for this run (HMAC links)"
    )
    add_json_option(parser)
    args = parser.parse_args()
    load_before = load_average()
    levels = [int(s) for s in args.levels.split(",") if s]
    if not 0 < args.events < MAX_EVENTS or not 0 <= args.warmup < MAX_EVENTS:
        parser.error(f"--events and --warmup are counts under {MAX_EVENTS:,}")

    secret = secrets.token_hex(32)
    make_bodies = generic_bodies if args.route == "generic" else hubspot_bodies
    with tempfile.TemporaryDirectory(prefix="bench-events-") as tmp:
        work = Path(tmp)
        server, port, log = start_server(work, args.route, secret, secrets.token_hex(32) if args.audit_key else None)
        try:
            health = wait_healthy(server, port, log)
            sign = generic_signer(secret) if args.route == "generic" else hubspot_signer(secret, port)
            path = ROUTES[args.route]
            warm_bodies, events_per_request = make_bodies(0, args.warmup)
            warmup = one_level(port, server.pid, path, warm_bodies, sign, 1, args.seconds)
            results = []
            for n, concurrency in enumerate(levels, 1):
                bodies, _ = make_bodies(n, args.events)  # built before the clock starts; signed when sent
                results.append(one_level(port, server.pid, path, bodies, sign, concurrency, args.seconds))
                print(f"  concurrency {concurrency}: {results[-1]['seconds']:.1f} s", file=sys.stderr)
            final_health = get_json(port, "/health")[1]
            server_rss = server_peak_rss_mb(server.pid)
        finally:
            exit_code = stop_server(server)
        stored = stored_evaluations(work / "events.db")
        log_counts = scan_log(log)
        log_tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-5:]

    accepted = warmup["events_accepted"] + sum(r["events_accepted"] for r in results)
    print_table(results)
    print(
        f"warm-up: {warmup['requests']} requests; events accepted in all: {accepted}; stored evaluations: "
        f"{stored['stored']}; records: {stored['records']}; server peak RSS {server_rss} MB; "
        f"server exit code {exit_code}"
    )
    if log_counts:
        print(f"server log: {log_counts}")
    for r in results:
        if r["stored_during_level"] != r["events_accepted"]:
            print(f"concurrency {r['concurrency']}: {r['stored_during_level']} stored, {r['events_accepted']} accepted")
    matches = stored["stored"] == accepted
    if not matches:
        print(f"MISMATCH: {stored['stored']} evaluations stored, {accepted} events accepted")

    result = {
        "load_average_before": load_before,
        "route": args.route,
        "events_per_request": events_per_request,
        "limits": {"requests_per_level": args.events, "seconds_per_level": args.seconds},
        "playbook": health["playbook"],
        "warmup": warmup,
        "levels": results,
        "events_accepted": accepted,
        "stored": stored,
        "health_at_end": final_health["evaluations"],
        "stored_matches_accepted": matches,
        "server": {"peak_rss_mb": server_rss, "exit_code": exit_code, "log": log_counts, "log_tail": log_tail},
    }
    write_json(result, "events", args.json)
    if not matches:
        sys.exit(1)


if __name__ == "__main__":
    main()
