"""A small audit log with the workflow's whole life in it, built the same way by any version of the code.

A few dozen Maven deals are recommended (tasks made), their notifications fail until they are dead,
one is put back, outcomes move two tasks, time moves on (overdue, repeated), a deliverer sends
the overdue tasks to a receiver and fails the creations again (pending, due later), and time
moves once more (pending, never tried).  Every step runs through the CLI under a clock fixed per
step, so two logs built from the same inputs differ only in their log id.

``python3 -m tests.workflow_log OUT.db [KEY]`` wrote tests/fixtures/workflow_log/ with the code of
schema version 10 (main at 1baa9bc): the migration test reads those logs as that code left them.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from click.testing import CliRunner

import engine.store
from cli import main

ROOT = Path(__file__).resolve().parent.parent
MAVEN = ROOT.parent / "shared" / "crm-data" / "maven-crm-sales-opportunities"
SECRET = "n" * 32  # the notifications' secret of this test log, not a real one
OPEN_DEALS, CLOSED_DEALS = 12, 3


def maven_rows(folder: Path) -> Path:
    """The first open and closed deals of sales_pipeline.csv, with the tables the preset joins beside them."""
    for name in ("accounts.csv", "products.csv", "sales_teams.csv"):
        (folder / name).write_bytes((MAVEN / name).read_bytes())
    with (MAVEN / "sales_pipeline.csv").open(encoding="utf-8", newline="") as source:
        reader = csv.DictReader(source)
        open_rows = [r for r in reader if r["deal_stage"] not in ("Won", "Lost")][:OPEN_DEALS]
    with (MAVEN / "sales_pipeline.csv").open(encoding="utf-8", newline="") as source:
        closed_rows = [r for r in csv.DictReader(source) if r["deal_stage"] in ("Won", "Lost")][:CLOSED_DEALS]
    pipeline = folder / "sales_pipeline.csv"
    with pipeline.open("w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(open_rows[0]))
        writer.writeheader()
        writer.writerows(open_rows + closed_rows)
    return pipeline


class Receiver:
    """A CRM's endpoint on loopback: /ok answers 200, anything else 500; ``received``: (delivery id,
    kind, signature, body) of every request."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str, str, bytes]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                said = self.headers
                received.append(
                    (said["X-Playbook-Delivery"], said["X-Playbook-Event"], said["X-Playbook-Signature"], body)
                )
                self.send_response(200 if self.path == "/ok" else 500)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@contextmanager
def clock_at(moment: list[dt.datetime]) -> Iterator[None]:
    """Every store the CLI opens reads the time from ``moment[0]``."""
    original = engine.store.Store

    class FixedClockStore(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **{**kwargs, "clock": lambda: moment[0]})

    engine.store.Store = FixedClockStore  # type: ignore[misc]
    try:
        yield
    finally:
        engine.store.Store = original  # type: ignore[misc]


def build(db: str, folder: Path, key: str | None = None) -> None:
    """The log at ``db`` (a URL), its inputs and configurations written in ``folder``; ``key``: its audit key."""
    pipeline = maven_rows(folder)
    receiver = Receiver()
    env = {"PLAYBOOK_NOTIFY_SECRET": SECRET, **({"PLAYBOOK_AUDIT_KEY": key} if key else {})}
    runner = CliRunner()
    moment = [dt.datetime(2017, 3, 1, 9, tzinfo=dt.UTC)]

    def run(at: str, *args: str) -> str:
        moment[0] = dt.datetime.fromisoformat(at).replace(tzinfo=dt.UTC)
        result = runner.invoke(main, [*args, "--db", db], env=env, catch_exceptions=False)
        assert result.exit_code == 0, (args, result.output)
        return str(result.stdout)

    def notify_config(name: str, targets: dict[str, str], attempts: int) -> str:
        path = folder / f"{name}.yaml"
        path.write_text(json.dumps({"targets": targets, "max_attempts": attempts, "backoff": 600}), encoding="utf-8")
        return str(path)

    failing = notify_config("failing", {"task.created": f"{receiver.url}/fail"}, 1)
    mixed = notify_config("mixed", {"task.created": f"{receiver.url}/fail", "task.overdue": f"{receiver.url}/ok"}, 5)
    try:
        with clock_at(moment):
            made = run("2017-03-01T09:00:00", "recommend", "--input", str(pipeline), "--mapping", "maven",
                       "--as-of", "2017-03-01", "--format", "json")  # fmt: skip
            run("2017-03-01T09:10:00", "deliver", "--notify-config", failing)
            dead = _lines(run("2017-03-01T09:20:00", "deliveries", "--dead", "--format", "json"))
            run("2017-03-01T09:30:00", "deliveries", "retry", str(dead[0]["event_seq"]))
            tasks = _lines(run("2017-03-01T09:40:00", "tasks", "list", "--format", "json"))
            for task, status in zip(tasks[:2], ("accepted", "done"), strict=True):
                said = ["--status", status, "--who", "ana", "--why", f"{status} on the call", "--as-of", "2017-03-02"]
                run("2017-03-02T10:00:00", "outcome", str(task["evaluation_seq"]), task["action"], *said)
            run("2017-03-20T06:00:00", "tick", "--as-of", "2017-03-20")
            run("2017-03-20T07:00:00", "deliver", "--notify-config", mixed)
            run("2017-04-15T06:00:00", "tick", "--as-of", "2017-04-15")
    finally:
        receiver.close()
    assert made


if __name__ == "__main__":
    import sqlite3
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        build(f"sqlite:///{Path(sys.argv[1]).resolve()}", Path(scratch), sys.argv[2] if len(sys.argv) > 2 else None)
    with sqlite3.connect(sys.argv[1]) as written:
        written.execute("VACUUM")
