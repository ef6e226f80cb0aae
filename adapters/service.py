"""The webhook service: CRMs post to it, integrators read evaluations back; uvicorn serves it (``playbook serve``).

Every route is described once, in :data:`ROUTES`: its path, methods, the secrets that enable it,
and (for a CRM's webhooks) the CRM whose events it carries and how a delivery is authenticated
and parsed.  The app, the answers of disabled routes, ``/health``, the OpenAPI document and the
CLI's list of secrets are all made from that registry.

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
``POST /outcomes``                     what became of a recommendation, signed as generic events
``GET /evaluations/{evaluation}``      an evaluation read back; ``GET /records/{record}/latest``
                                       a record's newest one (signed reads or PLAYBOOK_API_TOKEN)
``GET /quarantined``                   the webhook events set aside as bad data, with the reason
``GET /health``, ``/metrics``,         the state, Prometheus metrics, the OpenAPI document
``/openapi.json``
=====================================  ==========================================================

The signature schemes are in ``adapters/webhook.py``.  A webhook is answered 413 when its body is
over the limit (Content-Length checked before reading anything), 408 when the body does not
arrive in time, 401 when it is not authenticated, 400 when its body cannot be read or an event
says it happened further in the future than the clock skew allowed; nothing is stored for any of
these.  200 once every event is accounted for, each recommendation with its label (in the
language of ``?lang=`` or Accept-Language), parameters and course source; 500 when the store or
the engine failed (nothing of the request stored; the CRM delivers again).

A request is authenticated and parsed on the event loop (a hash and a JSON or XML parse); its
events go to the :class:`adapters.ingest.Ingestor`, whose writer thread evaluates and stores the
events of every request waiting in one transaction (group commit), and the answer is sent once
they are committed.  Outcomes and reads run on worker threads.

:func:`create_app` builds the Starlette app; more routes and mounts (the web console under
``/ui``) are passed to it and share its lifespan, metrics and error answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from adapters.ingest import STORED, EventOutcome, Feed, Ingestor
from adapters.mapping import Mapping as FieldMapping
from adapters.mapping import load_mapping
from adapters.metrics import CONTENT_TYPE, MetricsMiddleware, ServiceMetrics
from adapters.readback import Playbooks, evaluation_answer, latest_evaluation
from adapters.webhook import (
    GENERIC_SIGNATURE_HEADERS,
    GENERIC_TIMESTAMP_HEADER,
    SOAP_ACK,
    BadCredentials,
    BodyTimeout,
    IgnoredEvent,
    MalformedPayload,
    RecordEvent,
    WebhookError,
    check_event_times,
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
from engine.audit import AmbiguousAction, UnknownEvaluation, record_outcome
from engine.evaluate import Evaluator
from engine.store import Store, TamperedRecord

__all__ = [
    "CRMS",
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_MAX_BODY",
    "DEFAULT_MAX_CLOCK_SKEW",
    "DEFAULT_MAX_CONNECTIONS",
    "ROUTES",
    "SECRET_NAMES",
    "Crm",
    "Delivery",
    "Secrets",
    "ServiceRoute",
    "WebhookService",
    "create_app",
    "read_secrets_file",
    "server_config",
]

DEFAULT_MAX_BODY = 1 << 20
DEFAULT_MAX_CLOCK_SKEW = 300  # seconds an event may say it happened after this server's clock
DEFAULT_BODY_TIMEOUT = 10.0  # seconds for a request's body to arrive once its headers have
DEFAULT_MAX_CONNECTIONS = 200  # open connections; past it uvicorn answers 503

log = logging.getLogger("playbook.webhook")


# -- secrets -------------------------------------------------------------------------------

SECRET_NAMES = {
    "PLAYBOOK_HUBSPOT_SECRET": "the HubSpot app's client secret (signature v3)",
    "PLAYBOOK_WEBHOOK_SECRET": "the shared secret of generic signed JSON events, outcomes and signed reads",
    "PLAYBOOK_SALESFORCE_CDC_SECRET": "the shared secret a Change Data Capture relay signs with (generic scheme)",
    "PLAYBOOK_SALESFORCE_ORG_IDS": "Salesforce organizations whose Outbound Messages are accepted, comma-separated",
    "PLAYBOOK_SALESFORCE_OUTBOUND_TOKEN": "the token that ends the Outbound Message URL",
    "PLAYBOOK_PIPEDRIVE_USER": "the HTTP Basic user name set on the Pipedrive webhook",
    "PLAYBOOK_PIPEDRIVE_PASSWORD": "the HTTP Basic password set on the Pipedrive webhook",
    "PLAYBOOK_API_TOKEN": "a bearer token for reading evaluations back and for /metrics",
}


class Secrets:
    """The values of SECRET_NAMES that are set; a route whose secrets are unset is disabled.

    Values stay out of ``repr`` (and so out of logs and tracebacks).
    """

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        given = dict(values or {})
        unknown = set(given) - set(SECRET_NAMES)
        if unknown:
            raise ValueError(f"unknown secret names {', '.join(sorted(unknown))}; known: {', '.join(SECRET_NAMES)}")
        self._values = {name: value.strip() for name, value in given.items() if value.strip()}  # empty is unset

    @classmethod
    def from_mapping(cls, values: Mapping[str, str]) -> Secrets:
        """From environment-style names: those of SECRET_NAMES are taken, others left."""
        return cls({name: values[name] for name in SECRET_NAMES if name in values})

    def get(self, name: str) -> str | None:
        return self._values.get(name)

    def need(self, name: str) -> str:
        """A secret a route enabled by it relies on."""
        value = self._values.get(name)
        assert value is not None, f"{name} is checked before the route is used"
        return value

    def org_ids(self) -> tuple[str, ...]:
        text = self._values.get("PLAYBOOK_SALESFORCE_ORG_IDS", "")
        return tuple(part.strip() for part in text.split(",") if part.strip())

    def __repr__(self) -> str:
        return f"Secrets(set={sorted(self._values)})"


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


# -- the route registry --------------------------------------------------------------------


@dataclass(frozen=True)
class Crm:
    """A CRM whose events the service evaluates: the preset that maps its records, the type evaluated."""

    name: str
    preset: str
    object_type: str | None  # None: records of every type

    @property
    def source(self) -> str:
        return f"webhook:{self.name}"


CRMS = {
    crm.name: crm
    for crm in (
        Crm("hubspot", "hubspot_deal", "deal"),
        Crm("salesforce", "salesforce_opportunity", "Opportunity"),
        Crm("pipedrive", "pipedrive_deal", "deal"),
        Crm("generic", "generic", None),
    )
}


@dataclass(frozen=True)
class Delivery:
    """One webhook request as the readers need it."""

    method: str
    url: str  # the full URL the sender called (HubSpot signs it)
    headers: Mapping[str, str]  # lower-case names; the first of repeated headers
    body: bytes
    now: float
    token: str | None = None  # the path's last segment, where the route takes one


Events = list[RecordEvent | IgnoredEvent]
Reader = Callable[[Secrets, Delivery], Events]


@dataclass(frozen=True)
class ServiceRoute:
    """One route of the service.

    ``enabled_by``: groups of secret names; the route is on when every name of some group is set
    (no groups: always on).  Webhook routes name their ``crm`` and ``read`` a delivery into events
    (authenticating it first); ``token_path`` adds ``<path>/{token}``.
    """

    name: str
    path: str
    methods: tuple[str, ...]
    kind: str  # webhook | outcomes | evaluation | latest | quarantined | health | metrics | openapi
    summary: str
    enabled_by: tuple[tuple[str, ...], ...] = ()
    crm: str | None = None
    read: Reader | None = field(default=None, compare=False)
    token_path: bool = False
    soap_ack: bool = False

    def disabled_because(self, secrets: Secrets) -> str | None:
        """Why the route is off (what to set), or None when it is on."""
        if not self.enabled_by or any(all(secrets.get(n) for n in group) for group in self.enabled_by):
            return None
        names = " and/or ".join(" and ".join(group) for group in self.enabled_by)
        what = f"{self.name} webhooks are" if self.kind == "webhook" else f"{self.path} is"
        return f"{what} not enabled on this service: set {names}"

    @property
    def paths(self) -> tuple[str, ...]:
        return (self.path, f"{self.path}/{{token}}") if self.token_path else (self.path,)


def _verify_generic(secret: str, headers: Mapping[str, str], signed: bytes, now: float) -> None:
    """The generic scheme, for events, outcomes and reads: the signature from whichever header carries it."""
    signature = next((headers[h] for h in GENERIC_SIGNATURE_HEADERS if h in headers), None)
    verify_generic(secret, body=signed, signature=signature, timestamp=headers.get(GENERIC_TIMESTAMP_HEADER), now=now)


def _read_hubspot(secrets: Secrets, d: Delivery) -> Events:
    verify_hubspot_v3(
        secrets.need("PLAYBOOK_HUBSPOT_SECRET"),
        method=d.method,
        uri=d.url,
        body=d.body,
        signature=d.headers.get("x-hubspot-signature-v3"),
        timestamp=d.headers.get("x-hubspot-request-timestamp"),
        now=d.now,
    )
    return parse_hubspot(d.body)


def _read_signed(secret_name: str, parse: Callable[[bytes], Events]) -> Reader:
    def read(secrets: Secrets, d: Delivery) -> Events:
        _verify_generic(secrets.need(secret_name), d.headers, d.body, d.now)
        return parse(d.body)

    return read


def _read_pipedrive(secrets: Secrets, d: Delivery) -> Events:
    verify_basic_auth(
        d.headers.get("authorization"),
        secrets.need("PLAYBOOK_PIPEDRIVE_USER"),
        secrets.need("PLAYBOOK_PIPEDRIVE_PASSWORD"),
    )
    return parse_pipedrive(d.body)


def _read_salesforce_outbound(secrets: Secrets, d: Delivery) -> Events:
    token = secrets.get("PLAYBOOK_SALESFORCE_OUTBOUND_TOKEN")
    if token:
        verify_token(d.token, token)
    message = parse_salesforce_outbound(d.body)
    if secrets.org_ids():
        check_organization(message.organization_id, secrets.org_ids())
    return list(message.events)


_GENERIC_SECRET = (("PLAYBOOK_WEBHOOK_SECRET",),)
_READERS = (("PLAYBOOK_WEBHOOK_SECRET",), ("PLAYBOOK_API_TOKEN",))

ROUTES: tuple[ServiceRoute, ...] = (
    ServiceRoute(
        "hubspot",
        "/webhooks/hubspot",
        ("POST",),
        "webhook",
        "HubSpot app webhooks (a JSON array of events), signature v3",
        (("PLAYBOOK_HUBSPOT_SECRET",),),
        crm="hubspot",
        read=_read_hubspot,
    ),
    ServiceRoute(
        "salesforce_cdc",
        "/webhooks/salesforce/cdc",
        ("POST",),
        "webhook",
        "Salesforce Change Data Capture events posted by a relay, signed with the generic scheme",
        (("PLAYBOOK_SALESFORCE_CDC_SECRET",),),
        crm="salesforce",
        read=_read_signed("PLAYBOOK_SALESFORCE_CDC_SECRET", parse_salesforce_cdc),
    ),
    ServiceRoute(
        "salesforce_outbound",
        "/webhooks/salesforce/outbound",
        ("POST",),
        "webhook",
        "Salesforce Outbound Messages (SOAP), answered with the SOAP acknowledgement",
        (("PLAYBOOK_SALESFORCE_ORG_IDS",), ("PLAYBOOK_SALESFORCE_OUTBOUND_TOKEN",)),
        crm="salesforce",
        read=_read_salesforce_outbound,
        token_path=True,
        soap_ack=True,
    ),
    ServiceRoute(
        "pipedrive",
        "/webhooks/pipedrive",
        ("POST",),
        "webhook",
        "Pipedrive webhooks v2, with HTTP Basic credentials",
        (("PLAYBOOK_PIPEDRIVE_USER", "PLAYBOOK_PIPEDRIVE_PASSWORD"),),
        crm="pipedrive",
        read=_read_pipedrive,
    ),
    ServiceRoute(
        "generic",
        "/webhooks/generic",
        ("POST",),
        "webhook",
        "Generic signed JSON events (django-crm/BottleCRM sends this shape)",
        _GENERIC_SECRET,
        crm="generic",
        read=_read_signed("PLAYBOOK_WEBHOOK_SECRET", parse_generic),
    ),
    ServiceRoute(
        "outcomes",
        "/outcomes",
        ("POST",),
        "outcomes",
        "What became of a recommendation (accepted, dismissed, done), with who and why",
        _GENERIC_SECRET,
    ),
    ServiceRoute(
        "evaluation",
        "/evaluations/{evaluation:int}",
        ("GET",),
        "evaluation",
        "One stored evaluation, its recommendations labelled, with its outcomes",
        _READERS,
    ),
    ServiceRoute(
        "latest",
        "/records/{record:path}/latest",
        ("GET",),
        "latest",
        "A record's newest evaluation (optionally ?source=webhook:hubspot, ...)",
        _READERS,
    ),
    ServiceRoute(
        "quarantined",
        "/quarantined",
        ("GET",),
        "quarantined",
        "Webhook events set aside as bad data, oldest first, with code, reason and the event as received",
        _READERS,
    ),
    ServiceRoute("health", "/health", ("GET",), "health", "The service's state: playbook, routes, log size"),
    ServiceRoute("metrics", "/metrics", ("GET",), "metrics", "Prometheus metrics (the bearer token when one is set)"),
    ServiceRoute("openapi", "/openapi.json", ("GET",), "openapi", "This API's OpenAPI 3.1 description"),
)


# -- the service ---------------------------------------------------------------------------


class WebhookService:
    """What the routes share: store, evaluator, ingestor, secrets, metrics.

    Also an ASGI app itself (the app :func:`create_app` makes with no more routes).  ``store``
    and ``evaluator`` are the caller's to close; call :meth:`close` first.
    """

    def __init__(
        self,
        store: Store,
        evaluator: Evaluator,
        *,
        secrets: Secrets,
        mappings: Mapping[str, FieldMapping] | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        public_url: str | None = None,
        max_clock_skew: float = DEFAULT_MAX_CLOCK_SKEW,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``mappings``: per CRM (hubspot, salesforce, pipedrive, generic), replacing each CRM's preset."""
        self.store = store
        self.evaluator = evaluator
        self.secrets = secrets
        self.max_body = max_body
        self.public_url = public_url
        self.max_clock_skew = max_clock_skew
        self.body_timeout = body_timeout
        self.clock = clock
        chosen = dict(mappings or {})
        unknown = set(chosen) - set(CRMS)
        if unknown:
            raise ValueError(f"no CRM named {', '.join(sorted(unknown))}; mappings are for {', '.join(CRMS)}")
        self.feeds = {
            crm.name: Feed(crm.source, chosen.get(crm.name) or load_mapping(crm.preset), crm.object_type)
            for crm in CRMS.values()
        }
        self.playbooks = Playbooks(store, evaluator.playbook)
        self.ingestor = Ingestor(store, evaluator, clock=clock)
        self.metrics = ServiceMetrics(queue_depth=self.ingestor.pending)
        self.ingestor.on_evaluated = self.metrics.evaluation_seconds.observe
        self._app: Starlette | None = None
        self._recommendation_texts: dict[tuple[Any, ...], str] = {}  # see _recommendation_text

    def enabled(self, kinds: Sequence[str] = ("webhook", "outcomes")) -> list[str]:
        """The paths of the enabled routes of these kinds (by default: what CRMs post to)."""
        return [r.path for r in ROUTES if r.kind in kinds and r.disabled_because(self.secrets) is None]

    def close(self) -> None:
        """Store the events already received, then stop."""
        self.ingestor.close()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            self._app = create_app(self)
        await self._app(scope, receive, send)

    # -- reading a request -----------------------------------------------------------------

    def language(self, request: Request, headers: Mapping[str, str]) -> str:
        """``?lang=`` (refused when the playbook has no such language), else Accept-Language, else the first."""
        languages = self.evaluator.playbook.languages
        asked = request.query_params.get("lang") if request.scope.get("query_string") else None
        if asked is not None:
            if asked not in languages:
                raise MalformedPayload(f"lang '{asked[:20]}' is not one of this playbook's: {', '.join(languages)}")
            return asked
        header = headers.get("accept-language")
        if header:
            ranked = []
            for part in header.split(",")[:20]:
                tag, _, params = part.strip().partition(";")
                quality = 1.0
                if params.strip().startswith("q="):
                    try:
                        quality = float(params.strip()[2:])
                    except ValueError:
                        quality = 0.0
                ranked.append((-quality, tag.strip().lower().split("-")[0]))
            for negative_quality, tag in sorted(ranked):
                if tag in languages and negative_quality < 0:
                    return tag
        return languages[0]

    async def body(self, request: Request, headers: Mapping[str, str]) -> bytes | None:
        """The body, refused past ``max_body`` bytes or ``body_timeout`` seconds; None when the client left."""
        declared = headers.get("content-length", "").strip()
        if declared and digits(declared):
            check_size(int(declared) if len(declared) < 19 else self.max_body + 1, self.max_body, declared=True)
        chunks: list[bytes] = []
        size = 0
        receive = request.receive  # read here, not through request.stream(): one async generator less per request
        try:
            async with asyncio.timeout(self.body_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    check_size(size, self.max_body)
                    chunks.append(chunk)
                    if not message.get("more_body"):
                        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        except TimeoutError:
            raise BodyTimeout(
                f"the body did not arrive within {self.body_timeout:g} s ({size} bytes received)"
            ) from None

    def url(self, request: Request) -> str:
        """The full URL the sender called: under ``public_url`` when given, else from the Host header."""
        scope = request.scope
        raw_path = scope.get("raw_path")
        path = raw_path.decode("latin-1") if isinstance(raw_path, bytes) and raw_path else scope["path"]
        query = bytes(scope.get("query_string") or b"").decode("latin-1")
        if self.public_url:
            base = self.public_url.rstrip("/")
        else:
            base = f"{scope.get('scheme') or 'http'}://{request.headers.get('host', '')}"
        return base + path + (f"?{query}" if query else "")

    def authorize_read(self, request: Request, headers: Mapping[str, str], *, optional: bool = False) -> None:
        """Reads are made with PLAYBOOK_API_TOKEN as a bearer token, or signed (generic scheme) over the request line.

        ``optional``: when neither is configured, anyone may read (``/metrics``).
        """
        token = self.secrets.get("PLAYBOOK_API_TOKEN")
        secret = self.secrets.get("PLAYBOOK_WEBHOOK_SECRET")
        authorization = headers.get("authorization", "")
        if token and authorization[:7].lower() == "bearer ":
            if not hmac.compare_digest(authorization[7:].strip().encode(), token.encode()):
                raise BadCredentials("the bearer token does not match")
            return
        if secret and any(h in headers for h in GENERIC_SIGNATURE_HEADERS):
            _verify_generic(secret, headers, _request_line(request), self.clock())
            return
        if optional and not token:
            return
        ways = [w for w, on in (("a bearer token (PLAYBOOK_API_TOKEN)", token), ("a signature", secret)) if on]
        raise BadCredentials(f"reading needs {' or '.join(ways)}")

    # -- answers ---------------------------------------------------------------------------

    async def webhook(self, route: ServiceRoute, request: Request) -> Response:
        """Authenticate, read, evaluate and store one delivery's events; every failure becomes its answer."""
        disabled = route.disabled_because(self.secrets)
        token = request.path_params.get("token")
        if disabled is None and token is not None and not self.secrets.get("PLAYBOOK_SALESFORCE_OUTBOUND_TOKEN"):
            return _error(404, "not_found", f"no route {request.url.path}; set PLAYBOOK_SALESFORCE_OUTBOUND_TOKEN")
        if disabled is not None:
            return _error(404, "route_disabled", disabled)
        headers = _headers(request)
        try:
            lang = self.language(request, headers)
            body = await self.body(request, headers)
            if body is None:
                return Response(status_code=499)  # the client went away; nobody reads this
            assert route.read is not None and route.crm is not None
            delivery = Delivery(request.method, self.url(request), headers, body, self.clock(), token)
            events = route.read(self.secrets, delivery)
            check_event_times(events, delivery.now, self.max_clock_skew)
            outcomes = await self.ingestor.ingest_async(self.feeds[route.crm], events)
        except WebhookError as error:
            client = f"{request.client.host}:{request.client.port}" if request.client else ""
            log.warning("%s from %s refused (%d %s): %s", route.name, client, error.status, error.code, error.message)
            closing = {"connection": "close"} if error.status in (408, 413) else None
            return _json(error.status, error.to_json(), closing)
        except Exception:
            log.exception("%s: the event could not be evaluated or stored", route.name)
            return _error(500, "internal_error", "the event could not be evaluated or stored; deliver it again")
        self.metrics.count_events(route.name, (o.status for o in outcomes))
        _log_outcomes(route.name, outcomes)
        if route.soap_ack:
            return Response(SOAP_ACK, media_type="text/xml; charset=utf-8")
        evaluations = [o.evaluation for o in outcomes if o.evaluation is not None and o.status in STORED]
        answered = ", ".join([self._event_text(o, lang) for o in outcomes])
        text = f'{{"received": {len(outcomes)}, "evaluations": {_dumps(evaluations)}, "lang": {_dumps(lang)}, '
        return Response(
            f'{text}"events": [{answered}]}}'.encode(),
            media_type="application/json",
            headers={"content-language": lang},
        )

    def _label(self, action: str, lang: str) -> str:
        found = self.evaluator.playbook.actions.get(action)
        return found.label.get(lang, action) if found else action

    def _event_text(self, outcome: EventOutcome, lang: str) -> str:
        """An event's part of a webhook's answer, as JSON: :meth:`EventOutcome.to_json` with each action labelled.

        Its recommendations' texts are remembered (:meth:`_recommendation_text`) and put in the
        place of the empty list the outcome without them is written with: a string holding that
        list is written escaped, so only the key itself reads ``"recommendations": []``.
        """
        if outcome.status != "evaluated" or not outcome.recommendations:
            return _dumps(outcome.to_json(lambda action: self._label(action, lang)))
        before, empty, after = _dumps(replace(outcome, recommendations=()).to_json()).rpartition(_NO_RECOMMENDATIONS)
        assert empty, "an evaluated outcome's JSON names its recommendations"
        recommendations = ", ".join([self._recommendation_text(rec, lang) for rec in outcome.recommendations])
        return f'{before}"recommendations": [{recommendations}]{after}'

    def _recommendation_text(self, rec: dict[str, Any], lang: str) -> str:
        """``{**rec, "label": ...}`` as JSON, remembered by action, rule, language and parameters: answers
        repeat a few hundred of them, and encoding them was a tenth of the event loop's work per request.

        The source is the action's own (engine/evaluate.py), so it needs no place in the key; each
        parameter's type does (``1``, ``1.0`` and ``True`` are equal keys), and a float's text too
        (``0.0`` and ``-0.0`` are).  Parameters that are not hashable (a list) are written each time.
        """
        try:
            key = (rec["id"], rec["rule"], lang, *[_param_key(name, value) for name, value in rec["params"].items()])
            known = self._recommendation_texts.get(key)
        except TypeError:
            return _dumps({**rec, "label": self._label(rec["id"], lang)})
        if known is None:
            if len(self._recommendation_texts) >= _RECOMMENDATION_TEXTS_KEPT:
                self._recommendation_texts.clear()
            known = self._recommendation_texts[key] = _dumps({**rec, "label": self._label(rec["id"], lang)})
        return known

    async def outcome(self, route: ServiceRoute, request: Request) -> Response:
        """Record what became of a recommendation (accepted, dismissed, done), with who and why; kept as history."""
        disabled = route.disabled_because(self.secrets)
        if disabled is not None:
            return _error(404, "route_disabled", disabled)
        headers = _headers(request)
        try:
            body = await self.body(request, headers)
            if body is None:
                return Response(status_code=499)
            _verify_generic(self.secrets.need("PLAYBOOK_WEBHOOK_SECRET"), headers, body, self.clock())
            data = _outcome_request(body)
        except WebhookError as error:
            log.warning("outcome refused (%d %s): %s", error.status, error.code, error.message)
            return _json(error.status, error.to_json())
        return await run_in_threadpool(self._record_outcome, data)

    def _record_outcome(self, data: dict[str, Any]) -> Response:
        rule = data.get("rule")
        try:
            seq = record_outcome(
                self.store,
                data["evaluation"],
                str(data["action"]),
                str(data["status"]),
                str(data["who"]),
                str(data.get("why", "")),
                rule=None if rule in (None, "") else str(rule),
                as_of=data.get("as_of"),
            )
        except UnknownEvaluation as error:
            return _error(404, "no_evaluation", str(error))
        except AmbiguousAction as error:
            return _error(409, "ambiguous_action", str(error))
        except LookupError as error:
            return _error(404, "not_recommended", str(error).strip("'\""))
        except ValueError as error:
            return _error(400, "bad_status", str(error))
        return _json(200, {"outcome": seq, "evaluation": data["evaluation"], "status": data["status"]})

    async def read(self, route: ServiceRoute, request: Request) -> Response:
        """``GET /evaluations/{n}`` and ``GET /records/{id}/latest``."""
        disabled = route.disabled_because(self.secrets)
        if disabled is not None:
            return _error(404, "route_disabled", disabled)
        try:
            headers = _headers(request)
            self.authorize_read(request, headers)
            lang = self.language(request, headers)
        except WebhookError as error:
            log.warning("read of %s refused (%d %s): %s", request.url.path, error.status, error.code, error.message)
            return _json(error.status, error.to_json())
        params = request.path_params
        source = request.query_params.get("source")

        def answer() -> Response:
            if route.kind == "evaluation":
                seq: int | None = params["evaluation"]
            else:
                seq = latest_evaluation(self.store, params["record"], source)
                if seq is None:
                    where = f" from {source}" if source else ""
                    return _error(404, "no_evaluation", f"record {params['record']!r} has no evaluation{where}")
            assert seq is not None
            try:
                found = evaluation_answer(self.store, self.playbooks, seq, lang)
            except TamperedRecord as error:  # nothing is labelled from a changed playbook text
                log.error("read of evaluation %s refused: %s", seq, error)
                return _error(500, "audit_log_tampered", str(error))
            except LookupError:
                return _error(404, "no_evaluation", f"there is no evaluation {seq}")
            return _json(200, found, {"content-language": lang})

        return await run_in_threadpool(answer)

    async def quarantined(self, route: ServiceRoute, request: Request) -> Response:
        """``GET /quarantined[?since=D&until=D&source=S&after=N&limit=N]``: events set aside, oldest first."""
        disabled = route.disabled_because(self.secrets)
        if disabled is not None:
            return _error(404, "route_disabled", disabled)
        try:
            self.authorize_read(request, _headers(request))
            query = _quarantined_query(request.query_params)
        except WebhookError as error:
            log.warning("read of %s refused (%d %s): %s", request.url.path, error.status, error.code, error.message)
            return _json(error.status, error.to_json())

        def answer() -> Response:
            limit = query.pop("limit")
            after = query.pop("after")
            found = [held.to_json() for held in self.store.quarantined(**query, after=after, limit=limit + 1)]
            more = len(found) > limit
            found = found[:limit]
            page: dict[str, Any] = {"quarantined": found}
            if more:
                page["next_after"] = found[-1]["quarantined"]
            return _json(200, page)

        return await run_in_threadpool(answer)

    async def health(self, route: ServiceRoute, request: Request) -> Response:
        return await run_in_threadpool(self._health)

    def _health(self) -> Response:
        playbook = self.evaluator.playbook
        about = {"id": playbook.id, "version": playbook.version, "hash": playbook.content_hash}
        try:
            count = self.store.count()
        except Exception as error:  # noqa: BLE001 - any driver error means the log cannot be reached
            log.error("health: the audit log cannot be read: %s", error)
            return _json(503, {"status": "unavailable", "playbook": about, "error": "audit log unreachable"})
        reads = self.enabled(("evaluation", "latest"))
        return _json(
            200, {"status": "ok", "playbook": about, "routes": self.enabled(), "reads": reads, "evaluations": count}
        )

    async def metrics_answer(self, route: ServiceRoute, request: Request) -> Response:
        try:
            self.authorize_read(request, _headers(request), optional=True)
        except WebhookError as error:
            return _json(error.status, error.to_json())
        return Response(self.metrics.exposition(), media_type=CONTENT_TYPE)

    async def openapi(self, route: ServiceRoute, request: Request) -> Response:
        from adapters.openapi import document  # built on demand: only integrators ask

        return _json(200, document(ROUTES, self.evaluator.playbook))


# -- the app -------------------------------------------------------------------------------

Handler = Callable[[WebhookService, ServiceRoute, Request], Awaitable[Response]]
_HANDLERS: dict[str, Handler] = {
    "webhook": WebhookService.webhook,
    "outcomes": WebhookService.outcome,
    "evaluation": WebhookService.read,
    "latest": WebhookService.read,
    "quarantined": WebhookService.quarantined,
    "health": WebhookService.health,
    "metrics": WebhookService.metrics_answer,
    "openapi": WebhookService.openapi,
}


def create_app(
    service: WebhookService, *, routes: Sequence[BaseRoute] = (), middleware: Sequence[Middleware] = ()
) -> Starlette:
    """The Starlette app of the service's routes, then ``routes`` (more routes, ``Mount('/ui', ...)``).

    Every request is counted in the service's metrics; 404 and 405 answer in the service's JSON
    error shape; shutting down stores what was received (the ingestor is closed).
    """
    own: list[BaseRoute] = []
    labels: dict[Any, str] = {}
    for entry in ROUTES:
        handler = _HANDLERS[entry.kind]
        for path in entry.paths:
            endpoint = _endpoint(service, handler, entry)
            own.append(Route(path, endpoint, methods=list(entry.methods), name=f"{entry.name}:{path}"))
            labels[endpoint] = path
    mounts = [extra.path for extra in routes if isinstance(extra, Mount)]
    for extra in routes:
        if isinstance(extra, Route):
            labels.setdefault(extra.endpoint, extra.path)

    def route_of(scope: Any) -> str:
        """The route template that answered (never the path as sent: ids and tokens stay out of metrics)."""
        path = scope.get("path", "")
        for mount in mounts:  # a mount's own routes are counted under the mount
            if path == mount or path.startswith(mount + "/"):
                return f"{mount}/*"
        return labels.get(scope.get("endpoint"), "unmatched")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(service.close)  # store what was received before stopping

    return Starlette(
        routes=[*own, *routes],
        middleware=[Middleware(MetricsMiddleware, metrics=service.metrics, route_of=route_of), *middleware],
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )


def _endpoint(
    service: WebhookService, handler: Handler, entry: ServiceRoute
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        return await handler(service, entry, request)

    endpoint.__name__ = entry.name
    return endpoint


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's 404 and 405 in the service's shape."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return _error(404, "not_found", f"no route {request.url.path}; webhooks are posted to /webhooks/<crm>")
    if exc.status_code == 405:
        allow = (exc.headers or {}).get("Allow", "")
        return _error(405, "method_not_allowed", f"use {allow}", {"allow": allow})
    return _error(exc.status_code, "http_error", str(exc.detail))


def server_config(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    keep_alive: float = 5.0,
    log_level: str = "info",
) -> Any:
    """uvicorn's configuration for the service: at most ``max_connections`` open (503 past it), no access log."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        log_level=log_level,
        access_log=False,  # the service logs each event with its record and evaluation instead
        # uvicorn counts the connection asking too, so N+1 lets N be open and refuses the next one
        limit_concurrency=max_connections + 1,
        timeout_keep_alive=int(keep_alive) if keep_alive >= 1 else 1,
    )


# -- helpers -------------------------------------------------------------------------------


def _request_line(request: Request) -> bytes:
    """What a signed read signs: ``GET /path?query`` as sent."""
    scope = request.scope
    raw_path = scope.get("raw_path")
    path = raw_path.decode("latin-1") if isinstance(raw_path, bytes) and raw_path else scope["path"]
    query = bytes(scope.get("query_string") or b"").decode("latin-1")
    return f"{request.method} {path}{'?' + query if query else ''}".encode("latin-1")


def _headers(request: Request) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in request.scope.get("headers") or []:
        headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return headers


def _outcome_request(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise MalformedPayload(f"the body is not JSON: {exc}") from None
    fields = ("evaluation", "action", "status", "who")
    if not isinstance(data, dict) or any(data.get(f) in (None, "") for f in fields):
        raise MalformedPayload(f"an outcome is a JSON object with {', '.join(fields)} and optionally rule and why")
    if not isinstance(data["evaluation"], int) or isinstance(data["evaluation"], bool):
        raise MalformedPayload("'evaluation' is the evaluation's number")
    if "as_of" in data:
        try:
            data["as_of"] = dt.date.fromisoformat(str(data["as_of"])).isoformat()
        except ValueError:
            raise MalformedPayload(
                f"'as_of' is the day the outcome moves its task, YYYY-MM-DD, not {data['as_of']!r}"
            ) from None
    return data


QUARANTINED_PAGE = 100  # events per page of GET /quarantined, unless ?limit= asks for fewer or more (up to 1000)


def _quarantined_query(params: Mapping[str, str]) -> dict[str, Any]:
    """The filters of ``GET /quarantined``; MalformedPayload (400) for a bad date or number."""
    query: dict[str, Any] = {"source": params.get("source"), "since": None, "until": None}
    for name in ("since", "until"):
        value = params.get(name)
        if value is not None:
            try:
                query[name] = dt.date.fromisoformat(value).isoformat()
            except ValueError:
                raise MalformedPayload(f"'{name}' is a date, YYYY-MM-DD, not {value!r}") from None
    for name, default, top in (("after", 0, None), ("limit", QUARANTINED_PAGE, 1000)):
        value = params.get(name)
        if value is None:
            query[name] = default
            continue
        if not value.isdigit() or (top is not None and not 1 <= int(value) <= top):
            bound = f"1 to {top}" if top else "0 or more"
            raise MalformedPayload(f"'{name}' is a whole number, {bound}, not {value!r}")
        query[name] = int(value)
    return query


_dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode  # the service's JSON, one encoder for all

_NO_RECOMMENDATIONS = '"recommendations": []'
_RECOMMENDATION_TEXTS_KEPT = 4096


def _param_key(name: str, value: Any) -> tuple[Any, ...]:
    kind = type(value)
    return (name, kind, repr(value)) if kind is float else (name, kind, value)


def _json(status: int, data: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(_dumps(data).encode(), status_code=status, media_type="application/json", headers=headers)


def _error(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return _json(status, {"error": {"code": code, "message": message}}, headers)


def _log_outcomes(route: str, outcomes: list[EventOutcome]) -> None:
    """A warning per record set aside; one line per delivery for the rest (a line costs tens of microseconds)."""
    for outcome in outcomes:
        if outcome.status == "quarantined":
            log.warning("%s: record %s set aside (%s): %s", route, outcome.record_id, outcome.code, outcome.reason)
    if log.isEnabledFor(logging.INFO):
        said = [
            f"record {o.record_id} -> evaluation {o.evaluation}"
            if o.status in STORED
            else f"event {o.event_id} {o.status}" + (f" (evaluation {o.evaluation})" if o.evaluation else "")
            for o in outcomes
            if o.status != "quarantined"
        ]
        if said:
            log.info("%s: %s", route, "; ".join(said))
