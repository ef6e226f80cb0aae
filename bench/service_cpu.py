"""The service's CPU per webhook, without sockets: the ASGI app driven in this process.

    python bench/service_cpu.py [--requests 4000] [--concurrency 8] [--route generic|hubspot]
                                [--profile FILE]

The app of ``playbook serve`` (adapters/service.py, the course playbook, a temporary SQLite
audit log, the cycle collector tuned as ``serve`` tunes it) is called as uvicorn calls it,
``--concurrency`` requests at a time on one event loop (uvloop, as uvicorn picks it when installed),
each a distinct signed event built as bench/events.py builds them.  Process CPU time (every
thread: the event loop and the ingest writer) is divided by the requests answered.  HTTP parsing
and the socket writes are not in it (bench/events.py measures those with the rest); what is left
is the app's own cost.  CPU time still grows on a busy machine; for a figure that does not,
count instructions: ``valgrind --tool=cachegrind --cache-sim=no python3 bench/service_cpu.py
--requests N`` at two values of N, the difference over the difference in requests.  The bench's
own signing counts in both.  ``--profile`` writes a cProfile of the event loop's thread.

``--writer-only B`` leaves out the app and the event loop: the events, parsed, go to the ingest
writer's transaction code on this one thread, B deliveries per transaction, so the batching is the
same on every run and under valgrind (whose serialised threads change it otherwise): its
instructions per event are the store's, the tasks', the mapping's and the evaluation's cost.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import secrets
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.service import Secrets, WebhookService  # noqa: E402
from bench.events import generic_bodies, generic_signer, hubspot_bodies, hubspot_signer  # noqa: E402
from bench.report import add_json_option, write_json  # noqa: E402
from cli import _tune_memory  # noqa: E402
from engine import Evaluator, compile_playbook, load_playbook  # noqa: E402
from engine.store import Store  # noqa: E402

PATHS = {"generic": "/webhooks/generic", "hubspot": "/webhooks/hubspot"}


async def one_request(app: Any, path: str, body: bytes, headers: dict[str, str]) -> None:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        + [(b"host", b"127.0.0.1:8080"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
    }
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    chunks: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        else:
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    if status != 200:  # the answer is not parsed: only the server's work is measured
        raise RuntimeError(f"{status}: {b''.join(chunks)[:300]!r}")


async def drive(app: Any, path: str, bodies: list[bytes], sign: Any, concurrency: int) -> Counter[str]:
    queue = list(reversed(bodies))
    done: Counter[str] = Counter()

    async def worker() -> None:
        while queue:
            body = queue.pop()
            await one_request(app, path, body, sign(body))
            done["requests"] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


def write_only(service: WebhookService, bodies: list[bytes], per_transaction: int) -> Counter[str]:
    """The ingest writer's work on this thread, ``per_transaction`` deliveries per transaction."""
    from concurrent.futures import Future

    from adapters.ingest import _Submission
    from adapters.webhook import parse_generic

    ingestor, feed = service.ingestor, service.feeds["generic"]
    submissions = [_Submission(feed, parse_generic(body), ingestor.clock(), Future()) for body in bodies]
    for start in range(0, len(submissions), per_transaction):
        ingestor._write(submissions[start : start + per_transaction])
    for submission in submissions:
        submission.future.result()  # raises what failed
    return Counter(requests=len(submissions))


def run(coroutine: Any) -> Any:
    """On uvloop when it is installed, as uvicorn's default loop is."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--route", choices=list(PATHS), default="generic")
    parser.add_argument("--profile", help="write a cProfile of the measured run here")
    add_json_option(parser)
    parser.add_argument(
        "--writer-only", type=int, metavar="B", help="only the ingest writer, B deliveries a transaction"
    )
    args = parser.parse_args()
    if args.writer_only and args.route != "generic":
        parser.error("--writer-only sends generic events")
    secret = secrets.token_hex(16)
    names = {"generic": "PLAYBOOK_WEBHOOK_SECRET", "hubspot": "PLAYBOOK_HUBSPOT_SECRET"}
    make = generic_bodies if args.route == "generic" else hubspot_bodies
    sign = generic_signer(secret) if args.route == "generic" else hubspot_signer(secret, 8080)
    with tempfile.TemporaryDirectory(prefix="bench-service-cpu-") as tmp:
        store = Store(f"sqlite:///{Path(tmp) / 'audit.db'}")
        with compile_playbook(load_playbook(ROOT / "playbooks" / "course.yaml")) as compiled:
            service = WebhookService(store, Evaluator(compiled), secrets=Secrets({names[args.route]: secret}))
            _tune_memory()  # as playbook serve does once its service is built: the collector's scans are its CPU too
            try:
                warm, _ = make(0, 200)
                bodies, _ = make(1, args.requests)
                if args.writer_only:
                    write_only(service, warm, args.writer_only)
                else:
                    run(drive(service, PATHS[args.route], warm, sign, args.concurrency))
                profiler = cProfile.Profile() if args.profile else None
                cpu, wall = time.process_time(), time.perf_counter()
                if profiler:
                    profiler.enable()
                if args.writer_only:
                    done = write_only(service, bodies, args.writer_only)
                else:
                    done = run(drive(service, PATHS[args.route], bodies, sign, args.concurrency))
                if profiler:
                    profiler.disable()
                    profiler.dump_stats(args.profile)
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            finally:
                service.close()
                store.close()
    result = {
        "route": args.route,
        "concurrency": args.concurrency,
        "writer_only": args.writer_only,
        "requests": done["requests"],
        "cpu_ms_per_request": round(cpu * 1000 / done["requests"], 3),
        "wall_seconds": round(wall, 2),
        "loadavg": os.getloadavg(),
    }
    print(json.dumps(result))
    write_json(result, "service_cpu", args.json)


if __name__ == "__main__":
    main()
