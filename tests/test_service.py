"""adapters/service.py behind a real uvicorn server on loopback, spoken to over HTTP; and ``playbook serve``."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import uvicorn
from sqlalchemy import func, select

from adapters.mapping import load_mapping
from adapters.service import Secrets, WebhookService, create_app, server_config
from engine import Evaluator, compile_playbook, load_playbook
from engine.store import Store, records
from engine.tasks import history, listing
from tests.conftest import ROOT

CRM = ROOT.parent / "shared" / "crm-data"
SAMPLES = CRM / "payload-samples"
CAPTURES = CRM / "bottlecrm-webhook-captures"
pytestmark = pytest.mark.skipif(not CRM.is_dir(), reason=f"the shared CRM data is not at {CRM}")

HUBSPOT_SECRET, CDC_SECRET, TOKEN, PIPEDRIVE_PASSWORD = (secrets.token_urlsafe(24) for _ in range(4))  # made here
SECRETS = Secrets(
    {
        "PLAYBOOK_HUBSPOT_SECRET": HUBSPOT_SECRET,
        "PLAYBOOK_SALESFORCE_CDC_SECRET": CDC_SECRET,
        "PLAYBOOK_SALESFORCE_ORG_IDS": "00D5w000004qGTO",
        "PLAYBOOK_SALESFORCE_OUTBOUND_TOKEN": TOKEN,
        "PLAYBOOK_PIPEDRIVE_USER": "pipedrive",
        "PLAYBOOK_PIPEDRIVE_PASSWORD": PIPEDRIVE_PASSWORD,
    }
)


@pytest.fixture(scope="module")
def course() -> Iterator[Any]:
    with compile_playbook(load_playbook(ROOT / "playbooks" / "course.yaml")) as compiled:
        yield compiled


@dataclass
class Served:
    base: str
    store: Store

    def stored(self) -> tuple[int, int]:
        """Evaluations and record states in the log."""
        with self.store.engine.connect() as conn:
            states = conn.execute(select(func.count()).select_from(records)).scalar_one()
        return self.store.count(), int(states)


@contextmanager
def serving(
    url: str, compiled: Any, *, routes: tuple[Any, ...] = (), max_connections: int = 100, **options: Any
) -> Iterator[Served]:
    """The service on a free port of loopback, configured as ``playbook serve`` configures uvicorn."""
    store = Store(url)
    service = WebhookService(store, Evaluator(compiled), **{"secrets": SECRETS, **options})
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    app = create_app(service, routes=routes)
    server = uvicorn.Server(server_config(app, max_connections=max_connections, log_level="critical"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield Served(f"http://127.0.0.1:{sock.getsockname()[1]}", store)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        store.close()


@pytest.fixture
def served(tmp_path: Path, course: Any) -> Iterator[Served]:
    with serving(f"sqlite:///{tmp_path / 'audit.db'}", course) as s:
        yield s


def call(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None, **options: Any) -> Any:
    """(status, headers with lower-case names, body) of one HTTP request."""
    where = urlsplit(url)
    conn = http.client.HTTPConnection(where.hostname or "", where.port, timeout=30)
    try:
        target = where.path + (f"?{where.query}" if where.query else "")
        conn.request(method, target, body=body, headers=headers or {}, **options)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def post(
    url: str, body: Any, headers: dict[str, str] | None = None, **options: Any
) -> tuple[int, dict[str, str], bytes]:
    status, answer_headers, answer = call("POST", url, body, headers, **options)
    return status, answer_headers, answer


def get(url: str) -> tuple[int, Any]:
    status, _, answer = call("GET", url)
    return status, json.loads(answer)


def hubspot_headers(url: str, body: bytes, *, at_ms: int | None = None, secret: str = HUBSPOT_SECRET) -> dict[str, str]:
    """Signed as HubSpot signs (v3), computed here from the published scheme."""
    timestamp = str(at_ms if at_ms is not None else int(time.time() * 1000))
    message = b"POST" + url.encode() + body + timestamp.encode()
    signature = base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()
    return {
        "Content-Type": "application/json",
        "X-HubSpot-Signature-v3": signature,
        "X-HubSpot-Request-Timestamp": timestamp,
    }


def hubspot_post(served: Served, body: bytes, **signing: Any) -> tuple[int, dict[str, Any]]:
    url = served.base + "/webhooks/hubspot"
    status, _, answer = post(url, body, hubspot_headers(url, body, **signing))
    return status, json.loads(answer)


def captured(key: str) -> bytes:
    entry = json.loads((SAMPLES / "hubspot_webhook_deal_batch_captured.json").read_text(encoding="utf-8"))[key]
    return json.dumps(entry if isinstance(entry, list) else [entry]).encode()


def relay_headers(body: bytes, secret: str) -> dict[str, str]:
    now = str(int(time.time()))
    signature = hmac.new(secret.encode(), now.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-Playbook-Signature": f"t={now},v1={signature}"}


# -- refused requests store nothing ------------------------------------------------------------


def test_a_bad_signature_is_401_and_nothing_is_stored(served: Served) -> None:
    body = captured("deal_propertyChange_amount")
    wrong = secrets.token_urlsafe(24)
    status, answer = hubspot_post(served, body, secret=wrong)
    assert status == 401 and answer["error"]["code"] == "bad_signature"
    status, _, _ = post(served.base + "/webhooks/hubspot", body, {"Content-Type": "application/json"})
    assert status == 401
    assert served.stored() == (0, 0)


def test_a_stale_timestamp_is_401_and_nothing_is_stored(served: Served) -> None:
    body = captured("deal_propertyChange_amount")
    six_minutes_ago = int((time.time() - 360) * 1000)
    status, answer = hubspot_post(served, body, at_ms=six_minutes_ago)
    assert status == 401 and answer["error"]["code"] == "stale_timestamp"
    four_minutes_ago = int((time.time() - 240) * 1000)
    assert hubspot_post(served, body, at_ms=four_minutes_ago)[0] == 200
    assert served.stored() == (1, 1)


def test_an_oversized_body_is_413_whether_declared_or_streamed(tmp_path: Path, course: Any) -> None:
    with serving(f"sqlite:///{tmp_path / 'audit.db'}", course, max_body=1024) as served:
        url = served.base + "/webhooks/hubspot"
        where = urlsplit(url)
        body = json.dumps([json.loads(captured("deal_propertyChange_amount"))[0]] * 20).encode()
        assert len(body) > 1024
        # the declared size is enough: answered without the body ever being sent
        conn = http.client.HTTPConnection(where.hostname or "", where.port, timeout=10)
        conn.putrequest("POST", where.path)
        for name, value in {**hubspot_headers(url, body), "Content-Length": str(10 << 20)}.items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 413 and json.loads(response.read())["error"]["code"] == "body_too_large"
        conn.close()
        status, _, answer = post(url, body, hubspot_headers(url, body))
        assert status == 413 and json.loads(answer)["error"]["code"] == "body_too_large"
        # no Content-Length: chunked (sent in one write), read only up to the limit
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (body[i : i + 256] for i in range(0, len(body), 256)))
        headers = {**hubspot_headers(url, body), "Transfer-Encoding": "chunked"}
        status, _, answer = post(url, chunked + b"0\r\n\r\n", headers)
        assert status == 413 and json.loads(answer)["error"]["code"] == "body_too_large"
        assert served.stored() == (0, 0)
        small = captured("deal_propertyChange_amount")
        assert post(url, small, hubspot_headers(url, small))[0] == 200  # the limit is the only reason


def test_a_malformed_body_is_400_and_nothing_is_stored(served: Served) -> None:
    for body in (b"{not json", b'{"objectId": 1}', b'[{"eventId": 1, "subscriptionType": "deal.creation"}]'):
        status, answer = hubspot_post(served, body)
        assert status == 400 and answer["error"]["code"] == "malformed_payload", answer
    # a batch with one bad event stores none of the good ones
    good = json.loads(captured("deal_propertyChange_amount"))
    status, answer = hubspot_post(served, json.dumps([*good, {"eventId": 2}]).encode())
    assert status == 400 and "event 2" in answer["error"]["message"]
    v1 = b'{"v": 1, "current": {"id": 8}, "previous": null, "event": "added.deal"}'
    status, _, answer_bytes = post(served.base + "/webhooks/pipedrive", v1, pipedrive_auth())
    assert status == 400 and b"version to 2.0" in answer_bytes
    assert served.stored() == (0, 0)


def test_a_request_the_audit_log_cannot_store_is_500_stores_nothing_and_can_be_delivered_again(
    served: Served,
) -> None:
    with served.store.engine.begin() as conn:  # the log refuses record states, after the evaluation is written
        conn.exec_driver_sql("CREATE TRIGGER refuse BEFORE INSERT ON records BEGIN SELECT RAISE(ABORT, 'full'); END")
    body = captured("deal_propertyChange_amount")
    status, answer = hubspot_post(served, body)
    assert status == 500 and answer["error"]["code"] == "internal_error"
    assert served.stored() == (0, 0) and served.store.verify() == []
    with served.store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER refuse")
    status, answer = hubspot_post(served, body)  # the CRM's retry
    assert status == 200 and answer["events"][0]["status"] == "evaluated"
    assert served.stored() == (1, 1)


# -- dedup and merging -------------------------------------------------------------------------


def test_the_same_webhook_delivered_100_times_is_evaluated_once(db_url: str, course: Any) -> None:
    with serving(db_url, course) as served:
        body = captured("deal_propertyChange_amount")

        def deliver(_: int) -> dict[str, Any]:
            status, answer = hubspot_post(served, body)  # HubSpot signs each delivery afresh
            assert status == 200
            return answer

        with ThreadPoolExecutor(10) as pool:  # concurrent deliveries, as retries and parallel senders give
            answers = list(pool.map(deliver, range(100)))
        statuses = sorted(a["events"][0]["status"] for a in answers)
        assert statuses == ["duplicate"] * 99 + ["evaluated"]
        assert {a["events"][0]["evaluation"] for a in answers} == {1}
        assert served.stored() == (1, 1)
        stored = served.store.get(1)
        assert (stored.source, stored.record_id, stored.facts["opportunity"]) == (
            "webhook:hubspot",
            "332507367156",
            {"id": "332507367156", "amount": 2000},
        )
        assert served.store.verify() == []


def test_a_hubspot_property_change_is_merged_with_the_deal_s_earlier_state(served: Served) -> None:
    for key in ("deal_creation", "deal_propertyChange_amount", "deal_propertyChange_dealstage"):
        assert hubspot_post(served, captured(key))[0] == 200
    later = json.loads(captured("deal_propertyChange_amount"))[0] | {
        "eventId": 2995724999,
        "occurredAt": 1782371980000,
        "propertyName": "hs_deal_stage_probability",
        "propertyValue": "0.4",
    }
    status, answer = hubspot_post(served, json.dumps([later]).encode())
    assert status == 200 and answer["evaluations"] == [4]
    facts = served.store.get(4).facts
    assert facts == {
        "id": "332507367156",
        "opportunity": {"id": "332507367156", "amount": 2000, "stage": "qualifiedtobuy", "win_rate": 40},
    }
    state = served.store.record_state("webhook:hubspot", "48975575/332507367156")
    assert state.fields["dealstage"] == "qualifiedtobuy" and state.version == 4
    status, answer = hubspot_post(served, captured("deal_deletion"))
    assert answer["events"][0]["status"] == "deleted" and served.stored() == (4, 1)


# -- each CRM ---------------------------------------------------------------------------------


def test_a_salesforce_outbound_message_is_answered_with_the_soap_ack(served: Served) -> None:
    body = (SAMPLES / "salesforce_outbound_message_opportunity_sandbox.xml").read_bytes()
    url = f"{served.base}/webhooks/salesforce/outbound/{TOKEN}"
    ack = ET.canonicalize(
        (SAMPLES / "salesforce_outbound_message_ack.xml").read_text(encoding="utf-8"), strip_text=True
    )
    for _ in range(2):  # Salesforce may send a message twice
        status, headers, answer = post(url, body, {"Content-Type": "text/xml; charset=utf-8"})
        assert status == 200 and headers["content-type"].startswith("text/xml")
        assert ET.canonicalize(answer.decode(), strip_text=True) == ack
    assert served.stored() == (1, 1)
    assert served.store.get(1).facts["opportunity"] == {
        "id": "0065w000023STAmAAO",
        "account_id": "0015w00002BFDeLAAX",
        "amount": 45000.0,
        "close_date": "2020-07-11",
        "win_rate": 80,
        "name": "Backpackers, Inc. (Sample)",
        "owner": "0055w00000BhqR0AAJ",
        "stage": "Negotiation/Review",
        "created_date": "2020-05-08",
    }
    assert post(f"{served.base}/webhooks/salesforce/outbound/wrong", body)[0] == 401
    assert post(f"{served.base}/webhooks/salesforce/outbound", body)[0] == 401  # the token is required
    other_org = (SAMPLES / "salesforce_outbound_message_opportunity_devorg.xml").read_bytes()
    status, _, answer = post(url, other_org)
    assert status == 401 and json.loads(answer)["error"]["code"] == "unknown_organization"
    assert served.stored() == (1, 1)


def test_salesforce_change_events_from_a_signed_relay(served: Served) -> None:
    url = served.base + "/webhooks/salesforce/cdc"
    create = (SAMPLES / "salesforce_cdc_opportunity_create_pubsub_decoded.json").read_bytes()
    status, _, answer = post(url, create, relay_headers(create, CDC_SECRET))
    assert status == 200 and json.loads(answer)["evaluations"] == [1]
    account = (SAMPLES / "salesforce_cdc_update_header_pubsub_bitmap.json").read_bytes()
    status, _, answer = post(url, account, relay_headers(account, CDC_SECRET))
    assert status == 200 and json.loads(answer)["events"][0]["status"] == "ignored"
    assert post(url, create, relay_headers(create, "wrong"))[0] == 401
    assert served.stored() == (1, 1)


def pipedrive_auth(user: str = "pipedrive", password: str | None = None) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password or PIPEDRIVE_PASSWORD}".encode()).decode()
    return {"Content-Type": "application/json", "Authorization": f"Basic {token}"}


def test_pipedrive_v2_events_with_basic_auth(served: Served) -> None:
    examples = json.loads((SAMPLES / "pipedrive_webhook_v2_deal_examples.json").read_text(encoding="utf-8"))
    url = served.base + "/webhooks/pipedrive"
    wrong = secrets.token_urlsafe(12)
    assert post(url, json.dumps(examples["create"]).encode(), pipedrive_auth(password=wrong))[0] == 401
    assert post(url, json.dumps(examples["create"]).encode())[0] == 401
    statuses = []
    for action in ("create", "change", "delete"):
        status, _, answer = post(url, json.dumps(examples[action]).encode(), pipedrive_auth())
        assert status == 200
        statuses.append(json.loads(answer)["events"][0]["status"])
    assert statuses == ["evaluated", "evaluated", "deleted"]
    assert served.store.record_state("webhook:pipedrive", "8087566/8").deleted


def test_bottlecrm_captures_as_they_are_through_the_generic_route(tmp_path: Path, course: Any) -> None:
    secret = json.loads((CAPTURES / "INDEX.json").read_text(encoding="utf-8"))["secret"]
    signed_at = 1795767944  # the captures' t=; the service's clock is set just after it
    options = {
        "secrets": Secrets({"PLAYBOOK_WEBHOOK_SECRET": secret}),
        "mappings": {"generic": load_mapping("bottlecrm_deal")},
        "clock": lambda: signed_at + 30.0,
    }
    with serving(f"sqlite:///{tmp_path / 'audit.db'}", course, **options) as served:
        outcomes = []
        for name in ("01_deal.created", "02_deal.updated", "03_deal.won", "01_deal.created"):
            body = (CAPTURES / f"{name}.body.json").read_bytes()
            headers = json.loads((CAPTURES / f"{name}.headers.json").read_text(encoding="utf-8"))
            status, _, answer = post(served.base + "/webhooks/generic", body, headers)
            assert status == 200, answer
            outcomes.append(json.loads(answer)["events"][0])
        assert [o["status"] for o in outcomes] == ["evaluated", "quarantined", "quarantined", "duplicate"]
        assert outcomes[1]["code"] == "closed_deal" and "CLOSED_WON" in outcomes[1]["reason"]
        assert served.stored() == (1, 1)
        assert served.store.get(1).as_of == "2026-11-27"


def test_health_unknown_and_disabled_routes(tmp_path: Path, course: Any) -> None:
    with serving(
        f"sqlite:///{tmp_path / 'audit.db'}", course, secrets=Secrets({"PLAYBOOK_HUBSPOT_SECRET": "x"})
    ) as served:
        status, health = get(served.base + "/health")
        assert status == 200 and health["status"] == "ok" and health["routes"] == ["/webhooks/hubspot"]
        assert health["playbook"]["id"] == "course" and health["evaluations"] == 0
        status, _, answer = post(served.base + "/webhooks/generic", b"{}")
        assert status == 404 and b"PLAYBOOK_WEBHOOK_SECRET" in answer
        assert post(served.base + "/nowhere", b"{}")[0] == 404
        assert get(served.base + "/webhooks/hubspot")[0] == 405


# -- the command ------------------------------------------------------------------------------


def test_playbook_serve_runs_the_service_with_secrets_from_the_environment(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PLAYBOOK_WEBHOOK_SECRET": "from-env"}
    command = [sys.executable, "-m", "cli", "serve", "--db", f"sqlite:///{tmp_path / 'audit.db'}", "--port", str(port)]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.communicate()[1].decode()
            try:
                status, health = get(f"http://127.0.0.1:{port}/health")
                assert status == 200 and health["routes"] == ["/webhooks/generic", "/outcomes"]
                break
            except ConnectionError:
                assert time.monotonic() < deadline, "playbook serve did not answer"
                time.sleep(0.1)
        body = b'{"id": "e1", "event": "opportunity.updated", "data": {"id": "opp-1", "opportunity": {"amount": 5}}}'
        status, _, answer = post(f"http://127.0.0.1:{port}/webhooks/generic", body, relay_headers(body, "from-env"))
        assert status == 200 and json.loads(answer)["evaluations"] == [1]
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    # uvicorn shuts down gracefully, then re-raises the signal it caught
    assert process.returncode in (0, -signal.SIGTERM) and "Application shutdown complete" in err.decode(), err.decode()
    nothing = subprocess.run(
        [sys.executable, "-m", "cli", "serve", "--db", f"sqlite:///{tmp_path / 'other.db'}"],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("PLAYBOOK_")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert nothing.returncode == 1 and "no webhook route is enabled" in nothing.stderr


def test_outcomes_are_recorded_over_http_signed_and_kept_as_history(tmp_path: Path, course: Any) -> None:
    secret = secrets.token_urlsafe(24)
    with serving(
        f"sqlite:///{tmp_path / 'audit.db'}", course, secrets=Secrets({"PLAYBOOK_WEBHOOK_SECRET": secret})
    ) as served:
        event = json.dumps(
            {
                "id": "evt-1",
                "event": "deal.created",
                "created_at": "2026-11-27T09:00:00Z",
                "data": {"opportunity": {"id": "opp-9", "weeks_to_close": 1}},
            }
        ).encode()
        status, _, answer = post(served.base + "/webhooks/generic", event, relay_headers(event, secret))
        assert status == 200, answer
        [evaluation] = json.loads(answer)["evaluations"]
        action = served.store.get(evaluation).recommendations[0]["id"]
        url = served.base + "/outcomes"
        for status_word in ("accepted", "done"):
            body = json.dumps(
                {"evaluation": evaluation, "action": action, "status": status_word, "who": "li.wei", "why": "ok"}
            ).encode()
            status, _, answer = post(url, body, relay_headers(body, secret))
            assert status == 200, answer
        unsigned = json.dumps({"evaluation": evaluation, "action": action, "status": "dismissed", "who": "x"}).encode()
        assert post(url, unsigned, relay_headers(unsigned, "wrong"))[0] == 401
        wrong_action = json.dumps({"evaluation": evaluation, "action": "nope", "status": "done", "who": "x"}).encode()
        assert post(url, wrong_action, relay_headers(wrong_action, secret))[0] == 404
        bad_status = json.dumps({"evaluation": evaluation, "action": action, "status": "won", "who": "x"}).encode()
        assert post(url, bad_status, relay_headers(bad_status, secret))[0] == 400
        assert post(url, b"{oops", relay_headers(b"{oops", secret))[0] == 400
        missing = json.dumps({"evaluation": 999, "action": action, "status": "done", "who": "x"}).encode()
        status, _, answer = post(url, missing, relay_headers(missing, secret))
        assert status == 404 and json.loads(answer)["error"]["code"] == "no_evaluation"
        assert [(o["action"], o["status"], o["who"]) for o in served.store.outcomes_of(evaluation)] == [
            (action, "accepted", "li.wei"),
            (action, "done", "li.wei"),
        ]
        # the outcomes moved the record's task of that action, on the day given (today without one)
        [task] = [t for t in listing(served.store, record="opp-9") if t.action == action]
        assert [(e["status"], e["who"]) for e in history(served.store, task.id)] == [
            ("open", "playbook"),
            ("accepted", "li.wei"),
            ("done", "li.wei"),
        ]
        dated = json.dumps({"evaluation": evaluation, "action": action, "status": "done", "who": "x", "as_of": "soon"})
        status, _, answer = post(url, dated.encode(), relay_headers(dated.encode(), secret))
        assert status == 400 and json.loads(answer)["error"]["code"] == "malformed_payload"
        # a key account whose decision roles are unknown: one action recommended by four rules
        case = json.loads((ROOT / "samples" / "cases.jsonl").read_text(encoding="utf-8").splitlines()[1])
        event = json.dumps(
            {"id": "evt-2", "event": "deal.created", "created_at": "2026-11-27T09:00:00Z", "data": case}
        ).encode()
        status, _, answer = post(served.base + "/webhooks/generic", event, relay_headers(event, secret))
        [second] = json.loads(answer)["evaluations"]
        rules = [r["rule"] for r in served.store.get(second).recommendations if r["id"] == "identify_decision_role"]
        assert len(rules) > 1
        vague = json.dumps({"evaluation": second, "action": "identify_decision_role", "status": "done", "who": "x"})
        status, _, answer = post(url, vague.encode(), relay_headers(vague.encode(), secret))
        assert status == 409 and json.loads(answer)["error"]["code"] == "ambiguous_action"
        for named in (
            {"action": f"{rules[1]}:identify_decision_role"},
            {"action": "identify_decision_role", "rule": rules[0]},
        ):
            body = json.dumps({"evaluation": second, "status": "done", "who": "x", **named}).encode()
            assert post(url, body, relay_headers(body, secret))[0] == 200
        assert [o["position"] for o in served.store.outcomes_of(second)] == [
            next(r["position"] for r in served.store.get(second).recommendations if r["rule"] == rule)
            for rule in rules[1::-1]
        ]
        assert served.store.verify() == []


# -- hardening (issue 13) -------------------------------------------------------------------------


def generic_event(event_id: str, record: str, created_at: str, **opportunity: Any) -> bytes:
    data = {"opportunity": {"id": record, **opportunity}}
    return json.dumps({"id": event_id, "event": "deal.updated", "created_at": created_at, "data": data}).encode()


def iso(seconds_from_now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + seconds_from_now))


def test_an_event_stamped_in_the_future_is_refused_and_cannot_freeze_a_record(tmp_path: Path, course: Any) -> None:
    # Before: a signed event stamped a year ahead was accepted, and its stamp won every later merge,
    # so the real update below was answered "evaluated" on the stale amount.
    secret = secrets.token_urlsafe(24)
    options = {"secrets": Secrets({"PLAYBOOK_WEBHOOK_SECRET": secret}), "max_clock_skew": 120}
    with serving(f"sqlite:///{tmp_path / 'audit.db'}", course, **options) as served:
        url = served.base + "/webhooks/generic"
        poison = generic_event("e-future", "opp-1", iso(365 * 86400), amount=1)
        status, _, answer = post(url, poison, relay_headers(poison, secret))
        assert status == 400 and json.loads(answer)["error"]["code"] == "event_in_future", answer
        assert "at most 120 s" in json.loads(answer)["error"]["message"]
        assert served.stored() == (0, 0)
        real = generic_event("e-real", "opp-1", iso(0), amount=5000)
        status, _, answer = post(url, real, relay_headers(real, secret))
        assert status == 200 and json.loads(answer)["events"][0]["status"] == "evaluated"
        assert served.store.get(1).facts["opportunity"]["amount"] == 5000
        within = generic_event("e-skewed", "opp-1", iso(60), amount=6000)  # a sender's clock a minute fast
        assert post(url, within, relay_headers(within, secret))[0] == 200
    body = captured("deal_propertyChange_amount")
    event = json.loads(body)[0] | {"occurredAt": int((time.time() + 86400) * 1000)}
    with serving(f"sqlite:///{tmp_path / 'other.db'}", course) as served:
        status, answer = hubspot_post(served, json.dumps([event]).encode())
        assert status == 400 and answer["error"]["code"] == "event_in_future"
        assert served.stored() == (0, 0)


def test_a_timestamp_of_five_thousand_digits_is_400_not_500(served: Served) -> None:
    body = captured("deal_propertyChange_amount")
    url = served.base + "/webhooks/hubspot"
    headers = hubspot_headers(url, body) | {"X-HubSpot-Request-Timestamp": "9" * 5000}
    status, _, answer = post(url, body, headers)
    assert status == 400 and b"5000 digits" in answer
    cdc = (SAMPLES / "salesforce_cdc_opportunity_create_pubsub_decoded.json").read_bytes()
    signed = {"Content-Type": "application/json", "X-Playbook-Signature": f"t={'1' * 5000},v1=00"}
    status, _, answer = post(served.base + "/webhooks/salesforce/cdc", cdc, signed)
    assert status == 400 and json.loads(answer)["error"]["code"] == "malformed_payload"
    event = json.loads(body)[0] | {"occurredAt": "9" * 5000}
    status, answer_json = hubspot_post(served, json.dumps([event]).encode())
    assert status == 400 and "not a time" in answer_json["error"]["message"]
    assert served.stored() == (0, 0)


@pytest.mark.parametrize("number", [b"1e999", b"-1e999", b"Infinity", b"NaN"])
def test_non_finite_numbers_are_refused_and_never_stored(served: Served, number: bytes) -> None:
    cdc = (SAMPLES / "salesforce_cdc_opportunity_create_pubsub_decoded.json").read_bytes()
    poisoned = cdc.replace(b'"Amount": 40000', b'"Amount": ' + number)
    assert poisoned != cdc
    url = served.base + "/webhooks/salesforce/cdc"
    status, _, answer = post(url, poisoned, relay_headers(poisoned, CDC_SECRET))
    assert status == 400 and json.loads(answer)["error"]["code"] == "malformed_payload", answer
    examples = json.loads((SAMPLES / "pipedrive_webhook_v2_deal_examples.json").read_text(encoding="utf-8"))
    pipedrive = json.dumps(examples["create"]).encode().replace(b'"value": 100', b'"value": ' + number)
    assert b'"value": ' + number in pipedrive
    assert post(served.base + "/webhooks/pipedrive", pipedrive, pipedrive_auth())[0] == 400
    assert served.stored() == (0, 0)


def test_a_body_that_does_not_arrive_in_time_is_408_and_stores_nothing(tmp_path: Path, course: Any) -> None:
    with serving(f"sqlite:///{tmp_path / 'audit.db'}", course, body_timeout=0.5) as served:
        where = urlsplit(served.base)
        with socket.create_connection((where.hostname or "", where.port or 0), timeout=10) as sock:
            started = time.monotonic()
            sock.sendall(b"POST /webhooks/hubspot HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"[" * 10)
            answer = sock.recv(65536)
            waited = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408") and b"body_timeout" in answer, answer
        assert 0.4 < waited < 5
        assert served.stored() == (0, 0)


def test_open_connections_are_capped(tmp_path: Path, course: Any) -> None:
    with serving(f"sqlite:///{tmp_path / 'audit.db'}", course, max_connections=2, body_timeout=30) as served:
        where = urlsplit(served.base)
        address = (where.hostname or "", where.port or 0)
        holding = [socket.create_connection(address, timeout=10) for _ in range(2)]
        try:
            for sock in holding:  # two slow senders: headers sent, the body never comes
                sock.sendall(b"POST /webhooks/hubspot HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
            deadline = time.monotonic() + 10  # a loaded machine may accept the two a little late
            while (answer := call("GET", served.base + "/health"))[0] != 503:
                assert time.monotonic() < deadline, answer
                time.sleep(0.1)
        finally:
            for sock in holding:
                sock.close()
        deadline = time.monotonic() + 10
        while call("GET", served.base + "/health")[0] != 200:  # the slots are given back
            assert time.monotonic() < deadline
            time.sleep(0.1)


# -- the service answers like an API (issue 16) ---------------------------------------------------

API_TOKEN = secrets.token_urlsafe(24)


@pytest.fixture
def api(tmp_path: Path, course: Any) -> Iterator[tuple[Served, str]]:
    secret = secrets.token_urlsafe(24)
    chosen = Secrets({"PLAYBOOK_WEBHOOK_SECRET": secret, "PLAYBOOK_API_TOKEN": API_TOKEN})
    with serving(f"sqlite:///{tmp_path / 'audit.db'}", course, secrets=chosen) as served:
        yield served, secret


def openapi_validator(served: Served, schema: str) -> Any:
    from openapi_schema_validator import OAS31Validator

    document = json.loads(call("GET", served.base + "/openapi.json")[2])
    return OAS31Validator({"$ref": f"#/components/schemas/{schema}", "components": document["components"]})


def test_a_webhook_answer_labels_each_recommendation_in_the_language_asked(
    api: tuple[Served, str], course: Any
) -> None:
    served, secret = api
    playbook = course.playbook
    answers = {}
    for lang, extra in (("en", "?lang=en"), ("zh", "")):
        body = generic_event(f"e-{lang}", f"opp-{lang}", iso(0), weeks_to_close=1, amount=250000)
        headers = relay_headers(body, secret) | (
            {} if extra else {"Accept-Language": "fr;q=0.9, zh-CN;q=0.8, en;q=0.1"}
        )
        status, answer_headers, answer = post(served.base + "/webhooks/generic" + extra, body, headers)
        assert status == 200, answer
        answers[lang] = json.loads(answer)
        assert answers[lang]["lang"] == lang and answer_headers["content-language"] == lang
        openapi_validator(served, "WebhookAnswer").validate(answers[lang])
    for lang, answer in answers.items():
        recommendations = answer["events"][0]["recommendations"]
        assert recommendations
        for rec in recommendations:
            action = playbook.actions[rec["id"]]
            assert rec["label"] == action.label[lang]
            assert rec["source"]["guide"] == action.source.guide and isinstance(rec["params"], dict)
            assert rec["rule"] in playbook.rules_by_id
    assert (
        answers["en"]["events"][0]["recommendations"][0]["label"]
        != answers["zh"]["events"][0]["recommendations"][0]["label"]
    )
    body = generic_event("e-x", "opp-x", iso(0))
    status, _, answer = post(served.base + "/webhooks/generic?lang=fr", body, relay_headers(body, secret))
    assert status == 400 and b"zh, en" in answer and served.stored()[0] == 2


def signed_read(url: str, secret: str) -> dict[str, str]:
    """The generic scheme over the request line, as docs/webhooks.md describes signed reads."""
    where = urlsplit(url)
    line = f"GET {where.path}{'?' + where.query if where.query else ''}"
    now = str(int(time.time()))
    signature = hmac.new(secret.encode(), now.encode() + b"." + line.encode(), hashlib.sha256).hexdigest()
    return {"X-Playbook-Signature": f"t={now},v1={signature}"}


def test_evaluations_are_read_back_with_a_token_or_a_signature(api: tuple[Served, str], course: Any) -> None:
    served, secret = api
    for k, amount in enumerate((1000, 250000)):
        body = generic_event(f"e{k}", "opp-7", iso(0), weeks_to_close=1, amount=amount)
        assert post(served.base + "/webhooks/generic", body, relay_headers(body, secret))[0] == 200
    first = served.store.get(1)
    action = first.recommendations[0]["id"]
    outcome = json.dumps({"evaluation": 1, "action": action, "status": "accepted", "who": "li.wei"}).encode()
    assert post(served.base + "/outcomes", outcome, relay_headers(outcome, secret))[0] == 200
    bearer = {"Authorization": f"Bearer {API_TOKEN}"}
    url = served.base + "/evaluations/1?lang=en"
    status, headers, answer = call("GET", url, headers=bearer)
    assert status == 200 and headers["content-language"] == "en", answer
    read = json.loads(answer)
    openapi_validator(served, "Evaluation").validate(read)
    assert read["evaluation"] == 1 and read["record_id"] == "opp-7" and read["event_id"] == "e0"
    assert read["playbook"]["hash"] == course.playbook.content_hash
    assert [(o["action"], o["status"], o["who"]) for o in read["outcomes"]] == [(action, "accepted", "li.wei")]
    assert next(r["state"] for r in read["recommendations"] if r["id"] == action) == "accepted"
    assert read["recommendations"][0]["label"] == course.playbook.actions[action].label["en"]
    assert read["recommendations"][0]["source"]["guide"] == course.playbook.actions[action].source.guide
    signed = call("GET", url, headers=signed_read(url, secret))
    assert signed[0] == 200 and json.loads(signed[2]) == read
    latest_url = served.base + "/records/opp-7/latest"
    status, _, answer = call("GET", latest_url, headers=signed_read(latest_url, secret))
    assert status == 200 and json.loads(answer)["evaluation"] == 2 and json.loads(answer)["lang"] == "zh"
    of_source = served.base + "/records/opp-7/latest?source=webhook:hubspot"
    status, _, answer = call("GET", of_source, headers=bearer)
    assert status == 404 and json.loads(answer)["error"]["code"] == "no_evaluation"
    # refused: nothing, a wrong token, a signature of another path, a replayed old signature
    assert call("GET", url)[0] == 401
    wrong = API_TOKEN[:-1] + ("x" if API_TOKEN[-1] != "x" else "y")  # a random token may end in x itself
    assert call("GET", url, headers={"Authorization": "Bearer " + wrong})[0] == 401
    assert call("GET", url, headers=signed_read(served.base + "/evaluations/2?lang=en", secret))[0] == 401
    assert call("GET", served.base + "/evaluations/99", headers=bearer)[0] == 404
    assert call("GET", served.base + "/records/nobody/latest", headers=bearer)[0] == 404


def test_quarantined_events_are_kept_and_read_back_page_by_page(api: tuple[Served, str]) -> None:
    served, secret = api
    for k in range(3):
        body = generic_event(f"bad{k}", f"opp-{k}", iso(0), amount="lots")
        status, _, answer = post(served.base + "/webhooks/generic", body, relay_headers(body, secret))
        assert status == 200 and json.loads(answer)["events"][0]["status"] == "quarantined", answer
    body = generic_event("bad0", "opp-0", iso(0), amount="lots")  # redelivered: answered again, kept once
    assert (
        json.loads(post(served.base + "/webhooks/generic", body, relay_headers(body, secret))[2])["events"][0]["status"]
        == "quarantined"
    )
    bearer = {"Authorization": f"Bearer {API_TOKEN}"}
    status, _, answer = call("GET", served.base + "/quarantined?limit=2", headers=bearer)
    assert status == 200, answer
    page = json.loads(answer)
    openapi_validator(served, "QuarantinedEvents").validate(page)
    assert [q["event_id"] for q in page["quarantined"]] == ["bad0", "bad1"] and page["next_after"] == 2
    first = page["quarantined"][0]
    assert first["source"] == "webhook:generic" and first["record_id"] == "opp-0" and "lots" in first["reason"]
    assert first["event"]["fields"]["opportunity.amount"] == "lots" and first["code"] == "bad_number"
    url = served.base + "/quarantined?after=2&since=" + iso(0)[:10]
    status, _, answer = call("GET", url, headers=signed_read(url, secret))
    assert status == 200 and [q["event_id"] for q in json.loads(answer)["quarantined"]] == ["bad2"]
    assert "next_after" not in json.loads(answer)
    assert call("GET", served.base + "/quarantined")[0] == 401
    status, _, answer = call("GET", served.base + "/quarantined?since=yesterday", headers=bearer)
    assert status == 400 and b"'since' is a date" in answer
    assert call("GET", served.base + "/quarantined?limit=0", headers=bearer)[0] == 400
    assert served.store.verify() == [] and served.stored()[0] == 0


def test_reads_are_disabled_without_a_secret_or_token(served: Served) -> None:
    status, _, answer = call("GET", served.base + "/evaluations/1")
    assert status == 404 and b"PLAYBOOK_API_TOKEN" in answer
    status, health = get(served.base + "/health")
    assert health["reads"] == [] and "/webhooks/hubspot" in health["routes"]


def test_the_openapi_document_is_valid_and_describes_every_route(served: Served) -> None:
    from openapi_spec_validator import validate

    from adapters.service import ROUTES

    status, document = get(served.base + "/openapi.json")
    assert status == 200
    validate(document)
    described = {(path, method) for path, item in document["paths"].items() for method in item}
    for route in ROUTES:
        for path in route.paths:
            template = path.replace(":int", "").replace(":path", "")
            assert {(template, m.lower()) for m in route.methods} <= described, path
    assert "/webhooks/salesforce/outbound/{token}" in document["paths"]


def test_metrics_count_requests_events_and_evaluations(served: Served) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    batch = json.loads(captured("deal_creation")) + json.loads(captured("deal_propertyChange_amount"))
    body = json.dumps(batch).encode()
    assert hubspot_post(served, body)[0] == 200
    assert hubspot_post(served, body)[0] == 200  # delivered again: duplicates
    assert hubspot_post(served, body, secret=secrets.token_urlsafe(8))[0] == 401
    closed = captured("deal_propertyChange_dealstage_closedwon_retry3")
    assert hubspot_post(served, closed)[0] == 200  # a closed deal: quarantined
    status, headers, text = call("GET", served.base + "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    hubspot = "/webhooks/hubspot"
    assert samples[("playbook_http_requests_total", (("method", "POST"), ("route", hubspot), ("status", "200")))] == 3
    assert samples[("playbook_http_requests_total", (("method", "POST"), ("route", hubspot), ("status", "401")))] == 1
    events = {"coalesced": 1, "evaluated": 1, "duplicate": 2, "quarantined": 1}
    for status_word, count in events.items():
        assert samples[("playbook_webhook_events_total", (("route", "hubspot"), ("status", status_word)))] == count
    assert samples[("playbook_evaluation_duration_seconds_count", ())] == 1
    assert samples[("playbook_http_request_duration_seconds_count", (("route", hubspot),))] == 4
    assert samples[("playbook_ingest_queue_depth", ())] == 0
    assert not any(TOKEN in str(key) for key in samples)


def test_metrics_need_the_token_when_one_is_set(api: tuple[Served, str]) -> None:
    served, _ = api
    assert call("GET", served.base + "/metrics")[0] == 401
    status, _, text = call("GET", served.base + "/metrics", headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert status == 200 and b"playbook_http_requests_total" in text


def test_a_hubspot_batch_is_one_evaluation_of_the_deal_s_final_state(served: Served) -> None:
    keys = ("deal_creation", "deal_propertyChange_amount", "deal_propertyChange_dealstage")
    batch = [event for key in keys for event in json.loads(captured(key))]
    status, answer = hubspot_post(served, json.dumps(batch).encode())
    assert status == 200 and answer["evaluations"] == [1]
    assert [e["status"] for e in answer["events"]] == ["coalesced", "coalesced", "evaluated"]
    assert {e["evaluation"] for e in answer["events"]} == {1}
    assert served.stored() == (1, 1)
    assert served.store.get(1).facts["opportunity"] == {"id": "332507367156", "amount": 2000, "stage": "qualifiedtobuy"}
    status, again = hubspot_post(served, json.dumps(batch).encode())  # HubSpot retries the batch
    assert [e["status"] for e in again["events"]] == ["duplicate"] * 3 and served.stored() == (1, 1)


def test_the_app_takes_more_routes_and_mounts(tmp_path: Path, course: Any) -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    async def page(request: Any) -> PlainTextResponse:
        return PlainTextResponse("console")

    console = Starlette(routes=[Route("/", page)])
    routes = (Mount("/ui", app=console), Route("/extra", page))
    with serving(f"sqlite:///{tmp_path / 'audit.db'}", course, routes=routes) as served:
        assert call("GET", served.base + "/ui/")[2] == b"console"
        assert call("GET", served.base + "/extra")[2] == b"console"
        assert get(served.base + "/health")[0] == 200
        metrics = call("GET", served.base + "/metrics")[2].decode()
        assert 'route="/ui/*"' in metrics and 'route="/extra"' in metrics


def test_secrets_are_known_names_and_stay_out_of_repr() -> None:
    with pytest.raises(ValueError, match="PLAYBOOK_TYPO"):
        Secrets({"PLAYBOOK_TYPO": "x"})
    chosen = Secrets({"PLAYBOOK_WEBHOOK_SECRET": "s3cr3t-value", "PLAYBOOK_HUBSPOT_SECRET": "  "})
    assert "s3cr3t" not in repr(chosen) and chosen.get("PLAYBOOK_HUBSPOT_SECRET") is None


def test_recommendations_answered_from_remembered_texts_are_each_event_s_own(
    api: tuple[Served, str], course: Any
) -> None:
    """A webhook's answer writes its recommendations from texts remembered across requests: each must
    still be the one evaluated, in the language asked, its parameters as they were (20 and 20.0 are
    two texts), as the evaluation read back says."""
    served, secret = api
    bearer = {"Authorization": f"Bearer {API_TOKEN}"}
    quoted = set()
    for n, (lang, win_rate) in enumerate([("en", 20), ("zh", 20), ("en", 20.0), ("en", 20), ("zh", 40)]):
        body = generic_event(f"e-{n}", f"opp-{n}", iso(0), weeks_to_close=1, amount=250000, win_rate=win_rate)
        status, _, answer = post(served.base + f"/webhooks/generic?lang={lang}", body, relay_headers(body, secret))
        assert status == 200, answer
        event = json.loads(answer)["events"][0]
        assert event["status"] == "evaluated", event
        status, _, read = call("GET", served.base + f"/evaluations/{event['evaluation']}?lang={lang}", None, bearer)
        assert status == 200, read
        fields = ("id", "params", "rule", "source", "label")
        answered = [{k: rec[k] for k in fields} for rec in event["recommendations"]]
        stored = [{k: rec[k] for k in fields} for rec in json.loads(read)["recommendations"]]
        assert answered and json.dumps(answered, sort_keys=True) == json.dumps(stored, sort_keys=True)
        quoted |= {json.dumps(rec["params"].get("win_rate")) for rec in answered}
    assert {"20", "40"} <= quoted  # the parameter quoted as each event gave it (20.0 is the playbook's 20)


def test_a_remembered_recommendation_text_is_written_as_its_outcome_says(tmp_path: Path, course: Any) -> None:
    """Parameters equal as Python keys but not as JSON (1, 1.0, True; 0.0 and -0.0), lists, and texts
    that hold the key the answer is spliced at: each event's part of the answer is its outcome's JSON."""
    from adapters.ingest import EventOutcome

    store = Store(f"sqlite:///{tmp_path / 'audit.db'}")
    service = WebhookService(store, Evaluator(course), secrets=SECRETS)
    try:
        action = next(iter(course.playbook.actions))
        source = {"guide": "G-01", "quote": "q"}
        params: list[dict[str, Any]] = [{"x": 1}, {"x": 1.0}, {"x": True}, {"x": 0.0}, {"x": -0.0}, {"x": [1, 2]}]
        params += [{"x": 1}, {"x": '"recommendations": []'}, {}]
        for lang in ("en", "zh", "en"):
            for n, given in enumerate(params):
                rec = {"id": action, "params": given, "rule": "r", "source": source}
                outcome = EventOutcome(f'"recommendations": []{n}', "r-1", "evaluated", 7, (rec, rec))
                expected = outcome.to_json(functools.partial(service._label, lang=lang))
                assert service._event_text(outcome, lang) == json.dumps(expected, ensure_ascii=False)
    finally:
        service.close()
        store.close()
