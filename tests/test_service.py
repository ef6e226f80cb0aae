"""adapters/service.py behind a real uvicorn server on loopback, spoken to over HTTP; and ``playbook serve``."""

from __future__ import annotations

import base64
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
from adapters.service import Secrets, WebhookService
from engine import Evaluator, compile_playbook, load_playbook
from engine.store import Store, records
from tests.conftest import ROOT

CRM = ROOT.parent / "shared" / "crm-data"
SAMPLES = CRM / "payload-samples"
CAPTURES = CRM / "bottlecrm-webhook-captures"
pytestmark = pytest.mark.skipif(not CRM.is_dir(), reason=f"the shared CRM data is not at {CRM}")

HUBSPOT_SECRET, CDC_SECRET, TOKEN, PIPEDRIVE_PASSWORD = (secrets.token_urlsafe(24) for _ in range(4))  # made here
SECRETS = Secrets(
    hubspot=HUBSPOT_SECRET,
    salesforce_cdc=CDC_SECRET,
    salesforce_org_ids=("00D5w000004qGTO",),
    salesforce_token=TOKEN,
    pipedrive_user="pipedrive",
    pipedrive_password=PIPEDRIVE_PASSWORD,
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
def serving(url: str, compiled: Any, **options: Any) -> Iterator[Served]:
    store = Store(url)
    app = WebhookService(store, Evaluator(compiled), **{"secrets": SECRETS, **options})
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical", lifespan="on"))
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
        conn.request(method, where.path, body=body, headers=headers or {}, **options)
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
        "secrets": Secrets(webhook=secret),
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
    with serving(f"sqlite:///{tmp_path / 'audit.db'}", course, secrets=Secrets(hubspot="x")) as served:
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
    with serving(f"sqlite:///{tmp_path / 'audit.db'}", course, secrets=Secrets(webhook=secret)) as served:
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
        assert [(o["action"], o["status"], o["who"]) for o in served.store.outcomes_of(evaluation)] == [
            (action, "accepted", "li.wei"),
            (action, "done", "li.wei"),
        ]
        assert served.store.verify() == []
