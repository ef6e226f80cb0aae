"""What telling the CRM costs: the outbox drained by one deliverer to a local receiver that answers 204.

    python bench/notify_delivery.py [--tasks 5000]

Generated cases (bench/cases.py, seeded) are filed under the course playbook until their
recommendations have made ``--tasks`` tasks (each one a ``task.created`` delivery in the outbox),
then one :class:`adapters.notify.Deliverer` sends them all, signed, over loopback HTTP to a threaded
``http.server`` that verifies each signature.  Reports deliveries per second and the load average
beside it (the machine may be shared).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.notify import Deliverer, NotifyConfig  # noqa: E402
from adapters.webhook import verify_generic  # noqa: E402
from bench.cases import AS_OF, generate  # noqa: E402
from bench.report import add_json_option, load_average, write_json  # noqa: E402
from engine import Evaluator, compile_playbook, load_playbook  # noqa: E402
from engine.audit import outcome_to_file  # noqa: E402
from engine.store import Appended, Store  # noqa: E402

SECRET = "bench-secret-" + "x" * 20


def receiver() -> tuple[ThreadingHTTPServer, list[int]]:
    received = [0]

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            verify_generic(SECRET, body=body, signature=self.headers["X-Playbook-Signature"], now=time.time())
            received[0] += 1
            self.send_response(204)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, received


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5000)
    add_json_option(parser)
    args = parser.parse_args()
    course = load_playbook(ROOT / "playbooks" / "course.yaml")
    with tempfile.TemporaryDirectory() as folder, compile_playbook(course) as compiled:
        store = Store(f"sqlite:///{Path(folder) / 'notify.db'}")
        evaluator = Evaluator(compiled)
        made = 0
        batch: list[Appended] = []
        for case_id, facts in generate(10 * args.tasks):
            outcome, filed = outcome_to_file(evaluator, case_id, facts, AS_OF)
            made += len(getattr(outcome, "recommendations", []))
            batch.append(Appended(outcome, filed))
            if len(batch) == 2000 or made >= args.tasks:
                store.append(course, batch, source="bench", as_of=AS_OF)
                batch = []
            if made >= args.tasks:
                break
        server, received = receiver()
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        config = NotifyConfig({"task.created": url}, SECRET, 10.0)
        started = time.perf_counter()
        report = Deliverer(store, config).run_once()
        took = time.perf_counter() - started
        server.shutdown()
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(
            f"{report.delivered:,} deliveries ({received[0]:,} verified by the receiver) in {took:.1f} s: "
            f"{report.delivered / took:,.0f}/s, one deliverer, SQLite; load average {load}"
        )
        store.close()
    result = {"tasks": made, "delivered": report.delivered, "verified": received[0], "seconds": round(took, 2)}
    result |= {"deliveries_per_s": round(report.delivered / took, 1), "load_average": load_average()}
    write_json(result, "notify_delivery", args.json)


if __name__ == "__main__":
    main()
