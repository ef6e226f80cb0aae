"""The webhook service: a plain ASGI app that CRMs post to; uvicorn serves it (``playbook serve``).

Routes (each enabled by its secret; a route without one answers 404 saying what to set):

=====================================  ==========================================================
``POST /webhooks/hubspot``             HubSpot webhooks, signature v3 (PLAYBOOK_HUBSPOT_SECRET)
``POST /webhooks/salesforce/cdc``      Change Data Capture events posted by a relay, signed with
                                       the generic scheme (PLAYBOOK_SALESFORCE_CDC_SECRET)
``POST /webhooks/salesforce/outbound`` Outbound Messages, answered with the SOAP ack; by org id
``[/<token>]``                         allow-list and/or URL token (PLAYBOOK_SALESFORCE_ORG_IDS,
                                       PLAYBOOK_SALESFORCE_OUTBOUND_TOKEN)
``POST /webhooks/pipedrive``           Pipedrive webhooks v2, HTTP Basic auth
                                       (PLAYBOOK_PIPEDRIVE_USER, PLAYBOOK_PIPEDRIVE_PASSWORD)
``POST /webhooks/generic``             generic signed JSON events (PLAYBOOK_WEBHOOK_SECRET)
``POST /outcomes``                     what became of a recommendation: {"evaluation", "action", "status",
                                      "who", "why"}, signed as the generic events (PLAYBOOK_WEBHOOK_SECRET)
``GET /health``                        200 with the playbook version and the log's size
=====================================  ==========================================================

The signature schemes are in ``adapters/webhook.py``.  A request is answered:

- 413 when its body is over the limit (Content-Length checked before reading anything,
  and reading stops at the limit), 401 when it is not authenticated or is signed more than
  5 minutes from now, 400 when its body cannot be read; nothing is stored for any of these,
  and the body of the answer says why (``{"error": {"code", "message"}}``);
- 200 once every event in it is accounted for: ``{"received": N, "evaluations": [...],
  "events": [{"event", "record", "status", ...}]}`` (an Outbound Message gets the SOAP ack).
  A record the mapping sets aside (``quarantined``: a closed deal, a value it cannot read) is
  answered 200 too: the delivery was fine, and a 4xx would make Salesforce resend it for 24
  hours; the event is listed with its code and reason, logged, and the record's state kept;
- 500 when the store or the engine failed: nothing of the request was stored, and the CRM
  delivers it again.

A request is authenticated and parsed on the event loop (a hash and a JSON or XML parse);
its events go to the :class:`adapters.ingest.Ingestor`, whose one writer thread evaluates
and stores the events of every request waiting in one transaction (group commit), and the
answer is sent once they are committed.  Health checks and outcomes run on worker threads.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.ingest import EventOutcome, Feed, Ingestor
from adapters.mapping import Mapping as FieldMapping
from adapters.mapping import load_mapping
from adapters.webhook import (
    GENERIC_SIGNATURE_HEADERS,
    GENERIC_TIMESTAMP_HEADER,
    SOAP_ACK,
    IgnoredEvent,
    MalformedPayload,
    RecordEvent,
    WebhookError,
    check_organization,
    check_size,
    digits,
    parse_generic,
    parse_hubspot,
    parse_pipedrive,
    parse_salesforce_cdc,
    parse_salesforce_outbound,
    verify_basic_auth,
    verify_generic,
    verify_hubspot_v3,
    verify_token,
)
from engine.evaluate import Evaluator
from engine.store import Store

__all__ = [
    "DEFAULT_MAPPINGS",
    "DEFAULT_MAX_BODY",
    "SECRET_NAMES",
    "Request",
    "Response",
    "Secrets",
    "WebhookService",
    "read_secrets_file",
]

DEFAULT_MAX_BODY = 1 << 20
DEFAULT_MAPPINGS = {
    "hubspot": "hubspot_deal",
    "salesforce": "salesforce_opportunity",
    "pipedrive": "pipedrive_deal",
    "generic": "generic",
}
_OBJECT_TYPES: dict[str, str | None] = {
    "hubspot": "deal",
    "salesforce": "Opportunity",
    "pipedrive": "deal",
    "generic": None,
}
_ROUTES = {  # path -> route
    "/webhooks/hubspot": "hubspot",
    "/webhooks/salesforce/cdc": "salesforce_cdc",
    "/webhooks/salesforce/outbound": "salesforce_outbound",
    "/webhooks/pipedrive": "pipedrive",
    "/webhooks/generic": "generic",
    "/outcomes": "outcomes",
}
_OUTBOUND_PREFIX = "/webhooks/salesforce/outbound/"
SECRET_NAMES = {
    "PLAYBOOK_HUBSPOT_SECRET": "the HubSpot app's client secret (signature v3)",
    "PLAYBOOK_WEBHOOK_SECRET": "the shared secret of generic signed JSON events",
    "PLAYBOOK_SALESFORCE_CDC_SECRET": "the shared secret a Change Data Capture relay signs with (generic scheme)",
    "PLAYBOOK_SALESFORCE_ORG_IDS": "Salesforce organizations whose Outbound Messages are accepted, comma-separated",
    "PLAYBOOK_SALESFORCE_OUTBOUND_TOKEN": "the token that ends the Outbound Message URL",
    "PLAYBOOK_PIPEDRIVE_USER": "the HTTP Basic user name set on the Pipedrive webhook",
    "PLAYBOOK_PIPEDRIVE_PASSWORD": "the HTTP Basic password set on the Pipedrive webhook",
}

log = logging.getLogger("playbook.webhook")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


# -- configuration -------------------------------------------------------------------------


@dataclass(frozen=True)
class Secrets:
    """What authenticates each route; a route whose secret is unset is disabled."""

    hubspot: str | None = field(default=None, repr=False)  # secret values stay out of logs and tracebacks
    webhook: str | None = field(default=None, repr=False)
    salesforce_cdc: str | None = field(default=None, repr=False)
    salesforce_org_ids: tuple[str, ...] = ()
    salesforce_token: str | None = field(default=None, repr=False)
    pipedrive_user: str | None = None
    pipedrive_password: str | None = field(default=None, repr=False)

    @classmethod
    def from_mapping(cls, values: Mapping[str, str]) -> Secrets:
        """From environment-style names (SECRET_NAMES); empty values count as unset."""

        def get(name: str) -> str | None:
            value = values.get(name, "").strip()
            return value or None

        org_ids = tuple(part.strip() for part in (get("PLAYBOOK_SALESFORCE_ORG_IDS") or "").split(",") if part.strip())
        return cls(
            hubspot=get("PLAYBOOK_HUBSPOT_SECRET"),
            webhook=get("PLAYBOOK_WEBHOOK_SECRET"),
            salesforce_cdc=get("PLAYBOOK_SALESFORCE_CDC_SECRET"),
            salesforce_org_ids=org_ids,
            salesforce_token=get("PLAYBOOK_SALESFORCE_OUTBOUND_TOKEN"),
            pipedrive_user=get("PLAYBOOK_PIPEDRIVE_USER"),
            pipedrive_password=get("PLAYBOOK_PIPEDRIVE_PASSWORD"),
        )

    def disabled_because(self, route: str) -> str | None:
        """Why a route is off (what to set), or None when it is on."""
        need = {
            "hubspot": (self.hubspot, "PLAYBOOK_HUBSPOT_SECRET"),
            "salesforce_cdc": (self.salesforce_cdc, "PLAYBOOK_SALESFORCE_CDC_SECRET"),
            "salesforce_outbound": (
                self.salesforce_org_ids or self.salesforce_token,
                "PLAYBOOK_SALESFORCE_ORG_IDS and/or PLAYBOOK_SALESFORCE_OUTBOUND_TOKEN",
            ),
            "pipedrive": (
                self.pipedrive_user and self.pipedrive_password,
                "PLAYBOOK_PIPEDRIVE_USER and PLAYBOOK_PIPEDRIVE_PASSWORD",
            ),
            "generic": (self.webhook, "PLAYBOOK_WEBHOOK_SECRET"),
            "outcomes": (self.webhook, "PLAYBOOK_WEBHOOK_SECRET"),
        }
        value, names = need[route]
        return None if value else f"{route} webhooks are not enabled on this service: set {names}"


def read_secrets_file(path: str | Path) -> dict[str, str]:
    """``NAME=value`` lines (names as in SECRET_NAMES; ``#`` comments); raise ValueError naming the line."""
    values: dict[str, str] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        name, equals, value = text.partition("=")
        name, value = name.strip(), value.strip()
        if not equals:
            raise ValueError(f"{path}:{number}: expected NAME=value")
        if name not in SECRET_NAMES:
            raise ValueError(f"{path}:{number}: unknown name '{name}'; known: {', '.join(SECRET_NAMES)}")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name] = value
    return values


# -- requests and responses ----------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # as sent, still percent-encoded
    query: str
    headers: dict[str, str]  # lower-case names; the first of repeated headers
    body: bytes
    scheme: str = "http"
    client: str = ""

    def url(self, public_url: str | None) -> str:
        """The full URL the sender called: under ``public_url`` when given, else from the Host header."""
        base = public_url.rstrip("/") if public_url else f"{self.scheme}://{self.headers.get('host', '')}"
        return base + self.path + (f"?{self.query}" if self.query else "")


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = field(default=())

    @classmethod
    def json(cls, status: int, data: Any, headers: tuple[tuple[str, str], ...] = ()) -> Response:
        return cls(status, json.dumps(data, ensure_ascii=False).encode(), headers=headers)

    @classmethod
    def error(cls, status: int, code: str, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
        return cls.json(status, {"error": {"code": code, "message": message}}, headers)


# -- the app -------------------------------------------------------------------------------


class WebhookService:
    """The ASGI app.  ``store`` and ``evaluator`` are the caller's to close; call :meth:`close` first."""

    def __init__(
        self,
        store: Store,
        evaluator: Evaluator,
        *,
        secrets: Secrets,
        mappings: Mapping[str, FieldMapping] | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        public_url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``mappings``: per CRM (hubspot, salesforce, pipedrive, generic), replacing DEFAULT_MAPPINGS."""
        self.store = store
        self.evaluator = evaluator
        self.secrets = secrets
        self.max_body = max_body
        self.public_url = public_url
        self.clock = clock
        chosen = dict(mappings or {})
        unknown = set(chosen) - set(DEFAULT_MAPPINGS)
        if unknown:
            raise ValueError(
                f"no CRM named {', '.join(sorted(unknown))}; mappings are for {', '.join(DEFAULT_MAPPINGS)}"
            )
        self.feeds = {
            system: Feed(f"webhook:{system}", chosen.get(system) or load_mapping(preset), _OBJECT_TYPES[system])
            for system, preset in DEFAULT_MAPPINGS.items()
        }
        self.ingestor = Ingestor(store, evaluator, clock=clock)

    def routes(self) -> list[str]:
        """The enabled routes' paths."""
        return [path for path, route in _ROUTES.items() if self.secrets.disabled_because(route) is None]

    def close(self) -> None:
        """Store the events already received, then stop."""
        self.ingestor.close()

    # -- ASGI ----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        response = await self._respond(scope, receive)
        if response is not None:
            await _send(send, response)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.get_running_loop().run_in_executor(None, self.close)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _respond(self, scope: Scope, receive: Receive) -> Response | None:
        path: str = scope["path"]
        method: str = scope["method"]
        if path == "/health":
            if method not in ("GET", "HEAD"):
                return Response.error(405, "method_not_allowed", "use GET", (("allow", "GET, HEAD"),))
            return await self._in_worker(self._health)
        route, token = _ROUTES.get(path), None
        if route is None and path.startswith(_OUTBOUND_PREFIX) and self.secrets.salesforce_token:
            route, token = "salesforce_outbound", path[len(_OUTBOUND_PREFIX) :]
        if route is None:
            return Response.error(404, "not_found", f"no route {path}; webhooks are posted to /webhooks/<crm>")
        if method != "POST":
            return Response.error(405, "method_not_allowed", "webhooks are POSTed", (("allow", "POST"),))
        disabled = self.secrets.disabled_because(route)
        if disabled is not None:
            return Response.error(404, "route_disabled", disabled)
        headers = _headers(scope.get("headers") or [])
        try:
            body = await self._body(headers, receive)
        except WebhookError as error:
            log.warning("%s %s refused: %s", method, path, error.message)
            return Response.json(error.status, error.to_json(), (("connection", "close"),))
        if body is None:
            return None  # the client went away
        raw_path = scope.get("raw_path")
        client = scope.get("client")
        request = Request(
            method=method,
            path=raw_path.decode("latin-1") if isinstance(raw_path, bytes) and raw_path else path,
            query=bytes(scope.get("query_string") or b"").decode("latin-1"),
            headers=headers,
            body=body,
            scheme=str(scope.get("scheme") or "http"),
            client=f"{client[0]}:{client[1]}" if client else "",
        )
        if route == "outcomes":
            return await self._in_worker(functools.partial(self._outcome, request))
        return await self._events_answer(route, token, request)

    @staticmethod
    async def _in_worker(work: Callable[[], Response]) -> Response:
        return await asyncio.get_running_loop().run_in_executor(None, work)

    async def _body(self, headers: Mapping[str, str], receive: Receive) -> bytes | None:
        declared = headers.get("content-length")
        if declared is not None and digits(declared.strip()):
            check_size(int(declared), self.max_body, declared=True)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = bytes(message.get("body") or b"")
            size += len(chunk)
            check_size(size, self.max_body)
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    # -- one request ---------------------------------------------------------------------

    def _health(self) -> Response:
        playbook = self.evaluator.playbook
        about = {"id": playbook.id, "version": playbook.version, "hash": playbook.content_hash}
        try:
            count = self.store.count()
        except Exception as error:  # noqa: BLE001 - any driver error means the log cannot be reached
            log.error("health: the audit log cannot be read: %s", error)
            return Response.json(503, {"status": "unavailable", "playbook": about, "error": "audit log unreachable"})
        return Response.json(200, {"status": "ok", "playbook": about, "routes": self.routes(), "evaluations": count})

    async def _events_answer(self, route: str, token: str | None, request: Request) -> Response:
        """Authenticate, read, evaluate and store one request's events; every failure becomes its answer."""
        try:
            events = self._events(route, token, request)
            feed = self.feeds["salesforce" if route.startswith("salesforce") else route]
            outcomes = await asyncio.wrap_future(self.ingestor.submit(feed, events))
        except WebhookError as error:
            log.warning(
                "%s from %s refused (%d %s): %s", route, request.client, error.status, error.code, error.message
            )
            return Response.json(error.status, error.to_json())
        except Exception:
            log.exception("%s: the event could not be evaluated or stored", route)
            return Response.error(500, "internal_error", "the event could not be evaluated or stored; deliver it again")
        _log_outcomes(route, outcomes)
        if route == "salesforce_outbound":
            return Response(200, SOAP_ACK, "text/xml; charset=utf-8")
        evaluations = [o.evaluation for o in outcomes if o.evaluation is not None and o.status != "duplicate"]
        return Response.json(
            200,
            {"received": len(outcomes), "evaluations": evaluations, "events": [o.to_json() for o in outcomes]},
        )

    def _outcome(self, request: Request) -> Response:
        """Record what became of a recommendation (accepted, dismissed, done), with who and why; kept as history."""
        secret = self.secrets.webhook
        assert secret is not None  # the route is enabled
        try:
            _verify_generic(secret, request, self.clock())
            try:
                data = json.loads(request.body)
            except ValueError as exc:
                raise MalformedPayload(f"the body is not JSON: {exc}") from None
            fields = ("evaluation", "action", "status", "who")
            if not isinstance(data, dict) or any(data.get(f) in (None, "") for f in fields):
                raise MalformedPayload(f"an outcome is a JSON object with {', '.join(fields)} and optionally why")
            if not isinstance(data["evaluation"], int) or isinstance(data["evaluation"], bool):
                raise MalformedPayload("'evaluation' is the evaluation's number")
        except WebhookError as error:
            log.warning("outcome from %s refused (%d %s): %s", request.client, error.status, error.code, error.message)
            return Response.json(error.status, error.to_json())
        try:
            seq = self.store.record_outcome(
                data["evaluation"], str(data["action"]), str(data["status"]), str(data["who"]), str(data.get("why", ""))
            )
        except LookupError as error:
            return Response.error(404, "not_recommended", str(error).strip("'\""))
        except ValueError as error:
            return Response.error(400, "bad_status", str(error))
        return Response.json(200, {"outcome": seq, "evaluation": data["evaluation"], "status": data["status"]})

    def _events(self, route: str, token: str | None, request: Request) -> list[RecordEvent | IgnoredEvent]:
        secrets, headers, now = self.secrets, request.headers, self.clock()
        if route == "hubspot":
            assert secrets.hubspot is not None  # the route is enabled
            verify_hubspot_v3(
                secrets.hubspot,
                method=request.method,
                uri=request.url(self.public_url),
                body=request.body,
                signature=headers.get("x-hubspot-signature-v3"),
                timestamp=headers.get("x-hubspot-request-timestamp"),
                now=now,
            )
            return parse_hubspot(request.body)
        if route in ("generic", "salesforce_cdc"):
            secret = secrets.webhook if route == "generic" else secrets.salesforce_cdc
            assert secret is not None
            _verify_generic(secret, request, now)
            return parse_generic(request.body) if route == "generic" else parse_salesforce_cdc(request.body)
        if route == "pipedrive":
            assert secrets.pipedrive_user is not None and secrets.pipedrive_password is not None
            verify_basic_auth(headers.get("authorization"), secrets.pipedrive_user, secrets.pipedrive_password)
            return parse_pipedrive(request.body)
        # salesforce_outbound
        if secrets.salesforce_token:
            verify_token(token, secrets.salesforce_token)
        message = parse_salesforce_outbound(request.body)
        if secrets.salesforce_org_ids:
            check_organization(message.organization_id, secrets.salesforce_org_ids)
        return list(message.events)


def _verify_generic(secret: str, request: Request, now: float) -> None:
    """The generic scheme, for events and outcomes: the signature from whichever header carries it."""
    headers = request.headers
    signature = next((headers[h] for h in GENERIC_SIGNATURE_HEADERS if h in headers), None)
    verify_generic(
        secret, body=request.body, signature=signature, timestamp=headers.get(GENERIC_TIMESTAMP_HEADER), now=now
    )


def _headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in raw:
        headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return headers


def _log_outcomes(route: str, outcomes: list[EventOutcome]) -> None:
    for outcome in outcomes:
        if outcome.status == "quarantined":
            log.warning("%s: record %s set aside (%s): %s", route, outcome.record_id, outcome.code, outcome.reason)
        elif outcome.status in ("evaluated", "error"):
            log.info("%s: record %s -> evaluation %s", route, outcome.record_id, outcome.evaluation)
        else:
            log.info("%s: event %s %s: %s", route, outcome.event_id, outcome.status, outcome.reason or "")


async def _send(send: Send, response: Response) -> None:
    headers = [
        (b"content-type", response.content_type.encode()),
        (b"content-length", str(len(response.body)).encode()),
        *((name.encode(), value.encode()) for name, value in response.headers),
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})
