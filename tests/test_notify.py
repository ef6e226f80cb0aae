"""Tell the CRM: task events delivered, signed, to a real local HTTP receiver that fails on purpose.

The receiver acts once per delivery id (as a CRM should) and verifies every signature with the
inbound webhook's own verifier; the tests check that each event reaches it exactly once by that
measure whatever it does meanwhile: 500s, timeouts, being down and coming back."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from adapters.notify import Deliverer, NotifyConfig, NotifyConfigError, load_config, start_background_delivery
from adapters.webhook import BadSignature, verify_generic
from cli import main
from engine.compile import compile_playbook
from engine.evaluate import Evaluator
from engine.store import Appended, Store, meta, task_events, utc_now
from engine.store.outbox import DeliveryPolicy, listing, retry, settle
from engine.tasks import advance
from engine.validate import load_playbook_text

SECRET = "s" * 32
START = dt.date(2017, 3, 1)
KINDS = {"open": "task.created", "overdue": "task.overdue", "escalated": "task.escalated"}

PLAYBOOK = """
playbook: {id: tell, version: "1", languages: [en], title: {en: Tell}}
inputs:
  opportunity.id: {type: string, label: {en: id}}
  opportunity.amount: {type: number, label: {en: amount}}
decisions:
  big:
    label: {en: big}
    source: {policy: P1, text: big deals}
    type: boolean
    rows:
      - {id: large, label: {en: L}, source: {policy: P1, text: t}, then: true, when: {opportunity.amount: {gte: 100}}}
      - {id: small, label: {en: S}, source: {policy: P1, text: t}, when: {opportunity.amount: {lt: 100}}, then: false}
rules:
  - id: big_deal
    label: {en: big deal}
    source: {policy: P1, text: t}
    when: {big: true}
    then: {recommend: [{action: call}, {action: email}]}
actions:
  call:
    label: {en: call the buyer}
    source: {policy: P1, text: t}
    owner: account_manager
    due: 1 week
    escalate_after: {after: 1 week, to: director, action: director_call}
  director_call:
    label: {en: director calls}
    source: {policy: P1, text: t}
    owner: director
  email:
    label: {en: send an email}
    source: {policy: P1, text: t}
"""


class Clock:
    """The store's clock, moved by the test: retries fall due when it says so."""

    def __init__(self) -> None:
        self.now = dt.datetime(2017, 3, 1, 9, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def forward(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


class Receiver:
    """A CRM's endpoint on loopback.  ``script``: how it answers the next requests, in turn ("ok",
    "500", "slow": answers after the sender's timeout); then "ok" for ever."""

    def __init__(self, clock: Callable[[], dt.datetime]) -> None:
        self.clock = clock  # the sender's: signatures are checked against its time
        self.script: list[str] = []
        self.acted: dict[str, dict[str, Any]] = {}  # delivery id -> the body first acted on
        self.requests: list[tuple[str, str, bytes]] = []  # (delivery id, kind, body), every one received
        self.bad_signatures = 0
        self.in_flight: set[str] = set()
        self.overlaps = 0  # a delivery received while another copy of it was still being received
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.server: ThreadingHTTPServer | None = None
        self.port = 0
        self.up()

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                delivery = self.headers["X-Playbook-Delivery"]
                with receiver.lock:
                    receiver.requests.append((delivery, self.headers["X-Playbook-Event"], body))
                    answer = receiver.script.pop(0) if receiver.script else "ok"
                    receiver.overlaps += delivery in receiver.in_flight
                    receiver.in_flight.add(delivery)
                try:
                    verify_generic(
                        SECRET,
                        body=body,
                        signature=self.headers["X-Playbook-Signature"],
                        now=receiver.clock().timestamp(),
                    )
                except BadSignature:
                    with receiver.lock:
                        receiver.bad_signatures += 1
                    answer = "401"
                if answer == "slow":
                    receiver.release.wait(2)  # past the sender's timeout; it was received all the same
                if answer in ("ok", "slow"):  # a slow answer too: the sender gave up, not the receiver
                    with receiver.lock:
                        receiver.acted.setdefault(delivery, json.loads(body))  # idempotent on the delivery id
                with receiver.lock:
                    receiver.in_flight.discard(delivery)
                self.send_response({"ok": 204, "slow": 204, "500": 500, "401": 401}[answer])
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()
        self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/playbook"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def receiver(clock: Clock) -> Iterator[Receiver]:
    made = Receiver(clock)
    yield made
    made.release.set()
    if made.server is not None:
        made.down()


@pytest.fixture
def store(db_url: str, clock: Clock) -> Iterator[Store]:
    with Store(db_url, clock=clock) as opened:
        yield opened


@pytest.fixture(scope="module")
def work() -> Iterator[tuple[Any, Evaluator]]:
    playbook = load_playbook_text(PLAYBOOK, "tell.yaml")
    with compile_playbook(playbook) as compiled:
        yield playbook, Evaluator(compiled, cache_size=0)


def make_work(store: Store, work: tuple[Any, Evaluator], deals: int) -> dict[str, str]:
    """Deals evaluated (two tasks each), then time moved until the calls escalate: delivery id -> kind
    of every event the CRM must hear of."""
    playbook, evaluator = work
    items = []
    for n in range(deals):
        facts = {"opportunity": {"id": f"d{n}", "amount": 500}}
        items.append(Appended(evaluator.evaluate_case(facts, START, f"d{n}"), facts))
    store.append(playbook, items, source="crm", as_of=START)
    advance(store, dt.date(2017, 3, 10))  # the calls overdue
    advance(store, dt.date(2017, 3, 16))  # and escalated, with a director's call each
    with store._connect() as conn:
        rows = conn.execute(select(task_events.c.seq, task_events.c.status)).all()
        log_id = conn.execute(select(meta.c.value).where(meta.c.key == "log_id")).scalar()
    return {f"{log_id}-{row.seq}": KINDS[row.status] for row in rows if row.status in KINDS}


def config(receiver: Receiver, *, attempts: int = 10, timeout: float = 0.3) -> NotifyConfig:
    targets = dict.fromkeys(KINDS.values(), receiver.url)
    return NotifyConfig(targets, SECRET, timeout, DeliveryPolicy(max_attempts=attempts, backoff=30, max_backoff=600))


def drain(deliverer: Deliverer, clock: Clock, rounds: int = 40) -> None:
    """Run the deliverer as cron would, the clock moving a minute... then ten between runs."""
    for _ in range(rounds):
        deliverer.run_once()
        clock.forward(600)


def test_every_event_reaches_a_failing_receiver_exactly_once_signed(
    store: Store, work: Any, receiver: Receiver, clock: Clock
) -> None:
    expected = make_work(store, work, 4)
    assert sorted(set(expected.values())) == ["task.created", "task.escalated", "task.overdue"]
    receiver.script = ["500", "slow", "500", "ok", "slow", "500"]
    deliverer = Deliverer(store, config(receiver))
    first = deliverer.run_once()
    assert first.failed == 5 and first.delivered == len(expected) - 5
    receiver.release.set()
    receiver.down()  # down for an hour: every retry in it is refused
    for _ in range(6):
        clock.forward(600)
        report = deliverer.run_once()
        assert report.delivered == 0 and report.dead == 0
    receiver.release.clear()
    receiver.up()
    drain(deliverer, clock)
    assert receiver.bad_signatures == 0
    assert {d: body["kind"] for d, body in receiver.acted.items()} == expected  # each once, as the CRM acts
    sent = {}
    for delivery, kind, body in receiver.requests:  # a copy again only under its own id, byte for byte
        assert sent.setdefault(delivery, body) == body and kind == expected[delivery]
    assert len(receiver.requests) > len(expected)  # the timeouts' deliveries came twice
    with store._connect() as conn:
        assert {row["status"] for row in listing(conn)} == {"delivered"}
    assert store.verify() == []


def test_the_body_says_what_happened_to_which_task(store: Store, work: Any, receiver: Receiver) -> None:
    make_work(store, work, 1)
    Deliverer(store, config(receiver)).run_once()
    escalated = [body for body in receiver.acted.values() if body["kind"] == "task.escalated"]
    assert len(escalated) == 1
    task = escalated[0]["task"]
    assert (task["action"], task["status"], task["escalate_to"]) == ("call", "escalated", "director")
    assert "escalated to director" in escalated[0]["why"] and escalated[0]["as_of"] == "2017-03-16"


def test_failures_past_the_budget_are_dead_letters_listed_and_retried(
    store: Store, work: Any, receiver: Receiver, clock: Clock
) -> None:
    expected = make_work(store, work, 2)
    receiver.script = ["500"] * (2 * len(expected))
    deliverer = Deliverer(store, config(receiver, attempts=2))
    drain(deliverer, clock, rounds=3)
    with store._connect() as conn:
        dead = listing(conn, dead=True)
    assert {row["delivery_id"] for row in dead} == set(expected)
    assert all(row["attempts"] == 2 and row["last_error"] == "HTTP 500" for row in dead)
    assert receiver.acted == {}
    with store._begin() as conn:
        put_back = retry(conn, store.now(), [str(dead[0]["event_seq"])])
    assert put_back == [dead[0]["event_seq"]]
    deliverer.run_once()
    assert set(receiver.acted) == {dead[0]["delivery_id"]}
    with store._begin() as conn:
        retry(conn, store.now())
        assert listing(conn, dead=True) == []
        with pytest.raises(LookupError, match="no dead delivery 999"):
            retry(conn, store.now(), ["999"])
    deliverer.run_once()
    assert set(receiver.acted) == set(expected)


def test_two_deliverers_at_once_never_send_one_delivery_twice(
    store: Store, work: Any, receiver: Receiver, clock: Clock
) -> None:
    expected = make_work(store, work, 6)
    deliverers = [Deliverer(store, config(receiver), batch=3) for _ in range(3)]
    threads = [threading.Thread(target=d.run_once) for d in deliverers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(delivery for delivery, _, _ in receiver.requests) == sorted(expected)  # each sent once
    assert receiver.overlaps == 0


def test_a_kind_without_a_url_is_skipped_and_the_others_sent(store: Store, work: Any, receiver: Receiver) -> None:
    expected = make_work(store, work, 1)
    only_escalations = NotifyConfig({"task.escalated": receiver.url}, SECRET, 0.3)
    report = Deliverer(store, only_escalations).run_once()
    assert report.delivered == 1 and report.skipped == len(expected) - 1
    assert [body["kind"] for body in receiver.acted.values()] == ["task.escalated"]


def test_the_configuration_is_checked_and_keeps_its_secret_out_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "notify.yaml"
    path.write_text("targets:\n  task.created: https://crm.example.com/hook\nmax_attempts: 3\n")
    loaded = load_config(path, {"PLAYBOOK_NOTIFY_SECRET": SECRET})
    assert loaded.policy.max_attempts == 3 and SECRET not in repr(loaded)
    with pytest.raises(NotifyConfigError, match="PLAYBOOK_NOTIFY_SECRET"):
        load_config(path, {})
    path.write_text("targets:\n  task.created: https://crm.example.com/hook\nsecret: hunter2\n")
    with pytest.raises(NotifyConfigError, match="never the file"):
        load_config(path, {"PLAYBOOK_NOTIFY_SECRET": SECRET})
    path.write_text("targets:\n  task.done: https://crm.example.com/hook\n")
    with pytest.raises(NotifyConfigError, match=r"unknown kind 'task\.done'"):
        load_config(path, {"PLAYBOOK_NOTIFY_SECRET": SECRET})
    path.write_text("targets:\n  task.created: file:///etc/passwd\n")
    with pytest.raises(NotifyConfigError, match="http:// or https://"):
        load_config(path, {"PLAYBOOK_NOTIFY_SECRET": SECRET})


def test_deliver_and_deliveries_on_the_command_line(tmp_path: Path, work: Any) -> None:
    receiver = Receiver(utc_now)  # the command's store reads the real clock
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    with Store(url, key=b"k" * 40) as opened:  # a keyed log: draining its outbox needs no key (it is not chained)
        expected = make_work(opened, work, 1)
    notify = tmp_path / "notify.yaml"
    notify.write_text(f"targets:\n  task.created: {receiver.url}\n  task.overdue: {receiver.url}\nmax_attempts: 1\n")
    runner = CliRunner(env={"PLAYBOOK_NOTIFY_SECRET": SECRET, "PLAYBOOK_DB": url})
    receiver.script = ["500"]
    result = runner.invoke(main, ["deliver", "--notify-config", str(notify)])
    assert result.exit_code == 0, result.output
    assert f"{len(expected) - 2} delivered, 0 failed (to retry), 1 dead, 1 skipped" in result.output
    result = runner.invoke(main, ["deliveries", "--dead", "--format", "json"])
    dead = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(dead) == 1 and dead[0]["last_error"] == "HTTP 500" and SECRET not in result.output
    result = runner.invoke(main, ["deliveries", "--format", "csv"])
    assert result.stdout.splitlines()[0].startswith("event_seq,delivery_id,kind")
    assert runner.invoke(main, ["deliveries", "retry"]).exit_code == 2  # neither ids nor --all
    result = runner.invoke(main, ["deliveries", "retry", "--all"])
    assert "1 dead deliveries back in the outbox" in result.output
    result = runner.invoke(main, ["deliver", "--notify-config", str(notify)])
    assert "1 delivered" in result.output
    assert runner.invoke(main, ["deliveries", "--dead"]).stdout == ""
    assert len(receiver.acted) == len(expected) - 1  # all but the escalation, which has no URL
    receiver.down()


def test_a_killed_deliverers_lease_expires_and_another_takes_its_deliveries(
    store: Store, work: Any, receiver: Receiver, clock: Clock
) -> None:
    expected = make_work(store, work, 1)
    killed, other = Deliverer(store, config(receiver)), Deliverer(store, config(receiver))
    taken = killed._claim()  # claimed, then killed before sending
    assert len(taken) == len(expected)
    assert other.run_once().delivered == 0  # leased: not sent by a second deliverer meanwhile
    clock.forward(killed.lease + 1)
    assert other.run_once().delivered == len(expected)
    with store._begin() as conn:  # the killed one's late word changes nothing
        assert (
            settle(
                conn, taken[0], killed.owner, store.now(), url=receiver.url, error="HTTP 500", policy=DeliveryPolicy()
            )
            == "lost"
        )
    assert set(receiver.acted) == set(expected) and len(receiver.requests) == len(expected)


def test_serve_drains_the_outbox_on_a_thread_until_stopped(store: Store, work: Any, receiver: Receiver) -> None:
    expected = make_work(store, work, 2)
    stop = start_background_delivery(store, config(receiver), every=0.05)
    try:
        for _ in range(400):  # a bound on waiting, not a speed goal
            if len(receiver.acted) == len(expected):
                break
            threading.Event().wait(0.05)
    finally:
        stop()
    assert set(receiver.acted) == set(expected)
