"""CRM webhooks -> record events: signatures checked, payloads parsed, partial updates merged; no I/O.

Every function here is pure: bytes, headers and the current time in, record events or one
error out.  The HTTP service (``adapters/service.py``) reads the request and the stored state
of a record; this module decides what the request means.

How each sender is authenticated
--------------------------------

HubSpot (signature v3)
    ``X-HubSpot-Signature-v3`` = base64(HMAC-SHA256(client secret, method + URI + raw body +
    timestamp)), where the timestamp is the ``X-HubSpot-Request-Timestamp`` header (milliseconds
    since the epoch, as sent) and the URI is the full URL HubSpot called, with the characters
    HubSpot lists (``%3A %2F %3F %40 %21 %24 %27 %28 %29 %2A %2C %3B``) decoded.  A timestamp more
    than 5 minutes away from now (either way) is refused.

Generic signed JSON (and a relay of Salesforce Change Data Capture events)
    ``X-Playbook-Signature: t=<unix seconds>,v1=<hex>`` where hex = lower-case hex of
    HMAC-SHA256(shared secret, ``<unix seconds>`` + ``.`` + raw body).  Several ``v1=`` may be
    given (a secret being rotated); one must match.  The same value in ``X-BottleCRM-Signature``
    is accepted: it is what django-crm (BottleCRM) sends.  A sender that cannot put the time in
    the signature header may send ``X-Playbook-Signature: <hex>`` with ``X-Playbook-Timestamp:
    <unix seconds>``; the signed text is the same.  Same 5-minute window.

Pipedrive (webhooks v2)
    Pipedrive does not sign; it can send HTTP Basic credentials, and this service requires them
    (``Authorization: Basic ...``), compared in constant time.

Salesforce Outbound Messages
    Not signed, and they cannot carry a header of your choosing.  They are accepted when the
    message's ``OrganizationId`` is on an allow-list (15- or 18-character ids; the first 15
    characters are compared) and/or when the URL path ends with a shared token
    (``/webhooks/salesforce/outbound/<token>``), whichever are configured.

Every way of failing is its own error type with the HTTP status it answers:
:class:`MalformedPayload` 400, :class:`BadSignature`, :class:`StaleTimestamp`,
:class:`BadCredentials`, :class:`UnknownOrganization` 401, :class:`BodyTooLarge` 413,
:class:`BodyTimeout` 408, :class:`EventInFuture` 400.

Record events
-------------

Each payload becomes a list of :class:`RecordEvent` (one record changed: its id, an event id
that stays the same on redelivery, the CRM fields it sets, create/update/delete, when) or
:class:`IgnoredEvent` (a kind of event this service does not act on, kept so it is reported).
:func:`merge` folds an event into the last known state of its record, field by field, the later
``occurred_at`` winning: a retry of an old event that arrives after a newer one changes nothing.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.limits import ID_LENGTH

__all__ = [
    "DELETED",
    "GENERIC_SIGNATURE_HEADERS",
    "GENERIC_TIMESTAMP_HEADER",
    "SIGNATURE_WINDOW_SECONDS",
    "SOAP_ACK",
    "BadCredentials",
    "BadSignature",
    "BodyTimeout",
    "BodyTooLarge",
    "EventInFuture",
    "IgnoredEvent",
    "MalformedPayload",
    "MergedState",
    "OutboundMessage",
    "RecordEvent",
    "StaleTimestamp",
    "UnknownOrganization",
    "WebhookError",
    "check_event_times",
    "check_organization",
    "check_size",
    "digits",
    "generic_signature",
    "hubspot_uri",
    "hubspot_v3_signature",
    "merge",
    "parse_generic",
    "parse_hubspot",
    "parse_pipedrive",
    "parse_salesforce_cdc",
    "parse_salesforce_outbound",
    "verify_basic_auth",
    "verify_generic",
    "verify_hubspot_v3",
    "verify_token",
]

SIGNATURE_WINDOW_SECONDS = 300
GENERIC_SIGNATURE_HEADERS = ("x-playbook-signature", "x-bottlecrm-signature")
GENERIC_TIMESTAMP_HEADER = "x-playbook-timestamp"
DELETED = "$deleted"  # the stamp of a record's deletion, kept beside the fields' stamps

# The acknowledgement Salesforce waits for; anything else and it sends the message again for 24 hours.
SOAP_ACK = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">\n'
    b"  <soapenv:Body>\n"
    b'    <notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">\n'
    b"      <Ack>true</Ack>\n"
    b"    </notificationsResponse>\n"
    b"  </soapenv:Body>\n"
    b"</soapenv:Envelope>\n"
)


# -- errors --------------------------------------------------------------------------------


class WebhookError(Exception):
    """A request refused: ``status`` is the HTTP answer, ``code`` a stable name, the message says why."""

    status = 400
    code: str  # each kind of refusal below names its own

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_json(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


class MalformedPayload(WebhookError):
    status, code = 400, "malformed_payload"


class BadSignature(WebhookError):
    status, code = 401, "bad_signature"


class StaleTimestamp(WebhookError):
    status, code = 401, "stale_timestamp"


class BadCredentials(WebhookError):
    status, code = 401, "bad_credentials"


class UnknownOrganization(WebhookError):
    status, code = 401, "unknown_organization"


class BodyTooLarge(WebhookError):
    status, code = 413, "body_too_large"


class BodyTimeout(WebhookError):
    status, code = 408, "body_timeout"


class EventInFuture(WebhookError):
    status, code = 400, "event_in_future"


def check_size(size: int, limit: int, *, declared: bool = False) -> None:
    """Refuse a body over the limit (``declared``: the size is the Content-Length, nothing read yet)."""
    if size > limit:
        said = f"declares {size} bytes" if declared else f"is more than {limit} bytes"
        raise BodyTooLarge(f"the body {said}; this service accepts at most {limit} bytes per request")


# -- events --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordEvent:
    """One record changed in a CRM.

    ``fields`` are the CRM's own field names and values as the event carries them (always
    including the record's id field); ``occurred_at`` is milliseconds since the epoch, or None
    when the sender does not say; ``tenant`` names the CRM account (HubSpot portal, Pipedrive
    company) where record ids are only unique within one.
    """

    system: str  # hubspot | salesforce | pipedrive | generic
    object_type: str  # deal, Opportunity, ...
    record_id: str
    event_id: str  # the same on every redelivery of this event
    change: str  # create | update | delete
    fields: dict[str, Any]
    occurred_at: int | None
    tenant: str | None = None

    def __post_init__(self) -> None:
        for what, value in (("event id", self.event_id), ("record id", self.key)):
            if len(value) > ID_LENGTH:
                raise MalformedPayload(f"the {what} '{value[:40]}...' is over {ID_LENGTH} characters long")

    @property
    def key(self) -> str:
        """The record's name in the state table: its id, under its tenant when it has one."""
        return f"{self.tenant}/{self.record_id}" if self.tenant else self.record_id


@dataclass(frozen=True)
class IgnoredEvent:
    """An event of a kind this service does not act on; reported, never silently dropped."""

    system: str
    event_id: str
    record_id: str | None
    reason: str


@dataclass(frozen=True)
class OutboundMessage:
    organization_id: str
    events: list[RecordEvent]


@dataclass(frozen=True)
class MergedState:
    fields: dict[str, Any]
    stamps: dict[str, int]
    deleted: bool
    changed: bool


def check_event_times(events: Sequence[RecordEvent | IgnoredEvent], now: float, max_skew: float) -> None:
    """Refuse a delivery holding an event that says it happened more than ``max_skew`` seconds from now.

    The later time wins when states merge, so one accepted event stamped in the far future would
    freeze the fields it sets: no real update could ever change them again.
    """
    limit = (now + max_skew) * 1000
    for event in events:
        if isinstance(event, RecordEvent) and event.occurred_at is not None and event.occurred_at > limit:
            ahead = event.occurred_at / 1000 - now
            raise EventInFuture(
                f"event {event.event_id[:80]} says it happened {ahead:.0f} s after this server's clock; at most "
                f"{max_skew:g} s are allowed (a sender's clock that is wrong, or a forged time)"
            )


def merge(
    fields: Mapping[str, Any], stamps: Mapping[str, int], deleted: bool, event: RecordEvent, received_ms: int
) -> MergedState:
    """Fold one event into a record's last known state.

    Each field keeps the value of the latest event that set it (``stamps``: field -> ms); an
    event without a time counts as received now.  A deletion marks the record deleted (its
    fields stay, for the record); a create or update later than the deletion restores it.
    Applying the same event twice gives the same state as applying it once.
    """
    at = event.occurred_at if event.occurred_at is not None else received_ms
    new_fields, new_stamps = dict(fields), dict(stamps)
    now_deleted = deleted
    if event.change == "delete":
        if at >= new_stamps.get(DELETED, at):
            new_stamps[DELETED] = at
            now_deleted = True
    else:
        for name, value in event.fields.items():
            if at >= new_stamps.get(name, at):
                new_fields[name] = value
                new_stamps[name] = at
        if deleted and at > new_stamps.get(DELETED, at - 1):
            now_deleted = False
    changed = new_fields != fields or new_stamps != stamps or now_deleted != deleted
    return MergedState(new_fields, new_stamps, now_deleted, changed)


# -- signatures ----------------------------------------------------------------------------

_HUBSPOT_DECODED = {
    "%3A": ":",
    "%2F": "/",
    "%3F": "?",
    "%40": "@",
    "%21": "!",
    "%24": "$",
    "%27": "'",
    "%28": "(",
    "%29": ")",
    "%2A": "*",
    "%2C": ",",
    "%3B": ";",
}
_HUBSPOT_ESCAPE = re.compile("|".join(_HUBSPOT_DECODED), re.IGNORECASE)


def hubspot_uri(uri: str) -> str:
    """The URI as HubSpot signs it: the characters HubSpot lists decoded, every other escape kept."""
    return _HUBSPOT_ESCAPE.sub(lambda m: _HUBSPOT_DECODED[m.group(0).upper()], uri)


def hubspot_v3_signature(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    message = method.encode() + hubspot_uri(uri).encode() + body + timestamp.encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode("ascii")


def _same(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode())


def _check_window(seconds: float, now: float, window: int, header: str) -> None:
    age = now - seconds
    if abs(age) > window:
        when = f"{age:.0f} s ago" if age > 0 else f"{-age:.0f} s in the future"
        raise StaleTimestamp(
            f"{header} says the request was signed {when}; only requests signed within {window} s of this "
            "server's clock are accepted (a replayed request, or a clock that is wrong)"
        )


def verify_hubspot_v3(
    secret: str,
    *,
    method: str,
    uri: str,
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    now: float,
    window: int = SIGNATURE_WINDOW_SECONDS,
) -> None:
    """Raise unless ``signature`` is HubSpot's v3 signature of this request, made within ``window`` s of ``now``."""
    if not signature:
        raise BadSignature("no X-HubSpot-Signature-v3 header: HubSpot signs every webhook (signature v3)")
    if timestamp is None or not digits(timestamp.strip()):
        raise BadSignature("X-HubSpot-Request-Timestamp is missing or not a time in milliseconds")
    _check_window(
        _header_time(timestamp, "X-HubSpot-Request-Timestamp") / 1000, now, window, "X-HubSpot-Request-Timestamp"
    )
    expected = hubspot_v3_signature(secret, method, uri, body, timestamp.strip())
    if not _same(expected, signature.strip()):
        raise BadSignature(
            "X-HubSpot-Signature-v3 does not match the request: check the app's client secret, and that "
            f"'{hubspot_uri(uri)}' is the URL HubSpot calls"
        )


def generic_signature(secret: str, timestamp: str, body: bytes) -> str:
    """Lower-case hex HMAC-SHA256 of ``<timestamp>.<raw body>``."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify_generic(
    secret: str,
    *,
    body: bytes,
    signature: str | None,
    timestamp: str | None = None,
    now: float,
    window: int = SIGNATURE_WINDOW_SECONDS,
) -> None:
    """Raise unless ``signature`` (``t=...,v1=...``, or bare hex with ``timestamp``) signs this body in time."""
    if not signature:
        raise BadSignature("no X-Playbook-Signature header: sign the body (see the generic scheme)")
    given: list[str] = []
    if "=" in signature:
        for part in signature.split(","):
            name, _, value = part.strip().partition("=")
            if name == "t":
                timestamp = value
            elif name == "v1":
                given.append(value.strip().lower())
    else:
        given.append(signature.strip().lower())
    if timestamp is None or not digits(timestamp.strip()):
        raise BadSignature("the signature has no time: send t=<unix seconds> in it, or X-Playbook-Timestamp")
    if not given:
        raise BadSignature("the signature header has no v1=<hex> part")
    timestamp = timestamp.strip()
    _check_window(_header_time(timestamp, "the signature's timestamp"), now, window, "the signature's timestamp")
    expected = generic_signature(secret, timestamp, body)
    matches = [_same(expected, candidate) for candidate in given]  # every candidate compared, in constant time
    if not any(matches):
        raise BadSignature("the signature does not match the body: check the shared secret")


def verify_basic_auth(authorization: str | None, user: str, password: str) -> None:
    """Raise unless the Authorization header carries exactly these Basic credentials."""
    if not authorization or authorization[:6].lower() != "basic ":
        raise BadCredentials("HTTP Basic credentials are required: set them on the webhook in the CRM")
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise BadCredentials("the Authorization header is not valid Basic credentials") from None
    given_user, colon, given_password = decoded.partition(":")
    user_ok = _same(user, given_user)
    password_ok = _same(password, given_password)
    if not (colon and user_ok and password_ok):
        raise BadCredentials("the Basic credentials do not match")


def verify_token(given: str | None, expected: str) -> None:
    """Raise unless the token in the URL path is the shared one."""
    if not given or not _same(expected, given):
        raise BadCredentials("the URL does not end with this service's token: copy the endpoint URL exactly")


def check_organization(organization_id: str, allowed: Collection[str]) -> None:
    """Raise unless the Salesforce organization is on the allow-list (15-character ids compared)."""
    if organization_id[:15] not in {a.strip()[:15] for a in allowed}:
        raise UnknownOrganization(f"organization '{organization_id}' is not on this service's allow-list")


# -- reading values ------------------------------------------------------------------------


def digits(text: str) -> bool:
    """Only the ASCII digits 0-9 (``str.isdigit`` also passes '²', which ``int`` refuses)."""
    return text.isascii() and text.isdigit()


# Times are milliseconds since 1970 up to the end of year 9999; 16 digits hold every one of them.
# Longer digit strings are refused before ``int`` reads them (past 4,300 digits it raises, and a
# few hundred make a float overflow).
MAX_TIME_MS = 253_402_300_799_999
_TIME_DIGITS = len(str(MAX_TIME_MS))


def _header_time(timestamp: str, header: str) -> int:
    text = timestamp.strip()
    if len(text) > _TIME_DIGITS:
        raise MalformedPayload(f"{header} is {len(text)} digits long: not a time")
    return int(text)


def _finite(text: str) -> float:
    """A JSON number with a fraction or exponent, refused when it is not finite (``1e999`` reads as infinity)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is not a finite number")
    return value


def _json(body: bytes, what: str) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not a JSON number")

    try:
        value = json.loads(body, parse_constant=refuse, parse_float=_finite)
        storable = _UNSTORABLE_HINT.search(body) is None or _storable(value)
    except json.JSONDecodeError as error:
        raise MalformedPayload(
            f"a {what} body is JSON; this one is not: {error.msg} at line {error.lineno} column {error.colno}"
        ) from None
    except (ValueError, RecursionError) as error:
        raise MalformedPayload(f"a {what} body is JSON; this one is not: {error}") from None
    if not storable:
        raise MalformedPayload(
            f"the {what} body holds a NUL character (\\u0000) or half of a surrogate pair: text that cannot be stored"
        )
    return value


# What can make text that cannot be stored: an escaped NUL or surrogate (\u0000, \ud800), or a
# surrogate's raw UTF-8 bytes, which json reads too.  Only a body with one of these is walked.
_UNSTORABLE_HINT = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])|\xed[\xa0-\xbf]")


def _storable(value: Any) -> bool:
    """No NUL and no lone surrogate in any text, key or value: what PostgreSQL and UTF-8 refuse."""
    if isinstance(value, str):
        return "\x00" not in value and (value.isascii() or _encodes(value))
    if isinstance(value, dict):
        return all(_storable(k) and _storable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_storable(v) for v in value)
    return True


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedPayload(f"{where} should be a JSON object, not {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "text", bool: "true/false"}.get(type(value), "a number")


def _text(data: Mapping[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise MalformedPayload(f"{where} has no '{key}' (text)" if value is None else f"{where}: '{key}' is not text")
    return value.strip()


def _ident(data: Mapping[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise MalformedPayload(f"{where} has no '{key}'" if value is None else f"{where}: '{key}' is not an id")


def _millis(value: Any, where: str) -> int | None:
    """Milliseconds since the epoch from a number of ms or an ISO 8601 time; None stays None."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TIME_MS:
        return value
    if isinstance(value, str):
        text = value.strip()
        if digits(text) and len(text) <= _TIME_DIGITS and int(text) <= MAX_TIME_MS:
            return int(text)
        try:
            moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=dt.UTC)
            ms = int(moment.timestamp() * 1000)
            if 0 <= ms <= MAX_TIME_MS:
                return ms
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:60] + "..."
    raise MalformedPayload(f"{where} is not a time (milliseconds since 1970, or ISO 8601): {shown}")


# -- HubSpot -------------------------------------------------------------------------------

_HUBSPOT_CHANGES = {
    "creation": "create",
    "propertyChange": "update",
    "restore": "update",
    "deletion": "delete",
    "privacyDeletion": "delete",
}


def parse_hubspot(body: bytes) -> list[RecordEvent | IgnoredEvent]:
    """A HubSpot webhook body (a JSON array of events) -> one record event per event.

    A property change carries one property; a creation none (the record's properties follow as
    property changes); every value is text, as HubSpot sends it.  HubSpot says ``eventId`` alone
    is not guaranteed unique, so the event id also names the portal, subscription, object,
    property and time, all of which a retry keeps.
    """
    data = _json(body, "HubSpot webhook")
    if not isinstance(data, list):
        raise MalformedPayload(f"a HubSpot webhook body is a JSON array of events, not {_kind(data)}")
    events: list[RecordEvent | IgnoredEvent] = []
    for i, raw in enumerate(data, 1):
        where = f"event {i}"
        item = _object(raw, where)
        kind = _text(item, "subscriptionType", where)
        portal = _ident(item, "portalId", where)
        number = _ident(item, "eventId", where)
        occurred = _millis(item.get("occurredAt"), f"{where}: occurredAt")
        if occurred is None:
            raise MalformedPayload(f"{where} has no 'occurredAt'")
        object_type, _, action = kind.partition(".")
        change = _HUBSPOT_CHANGES.get(action)
        if change is None:
            reason = f"{kind} events are not acted on (only creation, propertyChange, deletion and restore)"
            events.append(IgnoredEvent("hubspot", f"{portal}:{number}:{kind}", None, reason))
            continue
        object_id = _ident(item, "objectId", where)
        fields: dict[str, Any] = {"hs_object_id": object_id}
        property_name = ""
        if action == "propertyChange":
            property_name = _text(item, "propertyName", where)
            fields[property_name] = item.get("propertyValue")
        event_id = f"{portal}:{number}:{kind}:{object_id}:{property_name}:{occurred}"
        events.append(RecordEvent("hubspot", object_type, object_id, event_id, change, fields, occurred, portal))
    return events


# -- Salesforce ----------------------------------------------------------------------------

_CDC_CHANGES = {"CREATE": "create", "UNDELETE": "create", "UPDATE": "update", "DELETE": "delete"}
_BITMAP = re.compile(r"^(\d+-)?0x[0-9A-Fa-f]+$")
_FIELD_NAME = re.compile(r"^[A-Za-z]\w*$")  # what a Salesforce field's API name can be


def _compact(value: Any) -> Any:
    """A changed value without the nulls Pub/Sub puts in for what did not change (compound fields)."""
    if isinstance(value, dict):
        kept = {k: _compact(v) for k, v in value.items() if v is not None}
        return kept or None
    return value


def parse_salesforce_cdc(body: bytes) -> list[RecordEvent | IgnoredEvent]:
    """Change Data Capture events, as a relay posts them -> one record event per record id.

    Accepted: one event or a JSON array of them, each either the decoded payload (with its
    ``ChangeEventHeader``, as the Pub/Sub API gives it) or the CometD message (``data.payload``).
    A CREATE or UNDELETE carries the record; an UPDATE only what changed: values that are null
    are taken as unchanged (Pub/Sub sends null for them), and fields listed by name in
    ``nulledFields`` as set to null (bitmap entries cannot be decoded without the event schema
    and are left out).  Keys that cannot be a field's API name (annotations like ``_note``) are
    not fields.  GAP events carry no values: they are reported as ignored.  The event id
    is ``transactionKey:sequenceNumber:recordId``.
    """
    data = _json(body, "Change Data Capture")
    batch = data if isinstance(data, list) else [data]
    events: list[RecordEvent | IgnoredEvent] = []
    for i, raw in enumerate(batch, 1):
        where = f"event {i}" if isinstance(data, list) else "the event"
        item = _object(raw, where)
        if "ChangeEventHeader" not in item and isinstance(item.get("data"), dict):  # CometD
            item = _object(item["data"].get("payload"), f"{where}: data.payload")
        if not isinstance(item.get("ChangeEventHeader"), dict):
            raise MalformedPayload(
                f"{where} is not a Change Data Capture event: no ChangeEventHeader (platform events are not read)"
            )
        header: dict[str, Any] = item["ChangeEventHeader"]
        where_header = f"{where}: ChangeEventHeader"
        entity = _text(header, "entityName", where_header)
        change_type = _text(header, "changeType", where_header)
        transaction = _text(header, "transactionKey", where_header)
        sequence = _ident(header, "sequenceNumber", where_header)
        occurred = _millis(header.get("commitTimestamp"), f"{where_header}: commitTimestamp")
        ids = header.get("recordIds")
        if not isinstance(ids, list) or not ids or not all(isinstance(r, str) and r for r in ids):
            raise MalformedPayload(f"{where_header}: recordIds should be a list of record ids")
        change = _CDC_CHANGES.get(change_type)
        values = {k: v for k, v in item.items() if k != "ChangeEventHeader" and _FIELD_NAME.match(k)}
        fields: dict[str, Any] = {}
        if change == "create":
            fields = values
        elif change == "update":
            fields = {k: _compact(v) for k, v in values.items() if _compact(v) is not None}
            nulled = header.get("nulledFields") or []
            fields |= {name: None for name in nulled if isinstance(name, str) and not _BITMAP.match(name)}
        for record_id in ids:
            event_id = f"{transaction}:{sequence}:{record_id}"
            if change is None:
                reason = (
                    f"{change_type} carries no field values: read the record from Salesforce"
                    if change_type.startswith("GAP_")
                    else f"change type {change_type} is not acted on"
                )
                events.append(IgnoredEvent("salesforce", event_id, record_id, reason))
                continue
            record_fields = {**fields, "Id": record_id} if change != "delete" else {"Id": record_id}
            events.append(RecordEvent("salesforce", entity, record_id, event_id, change, record_fields, occurred))
    return events


_SOAP = "{http://schemas.xmlsoap.org/soap/envelope/}"
_OUTBOUND = "{http://soap.sforce.com/2005/09/outbound}"
_XSI = "{http://www.w3.org/2001/XMLSchema-instance}"


def _soap(body: bytes) -> ET.Element:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise MalformedPayload(f"an Outbound Message is UTF-8 XML; byte {error.start} is not UTF-8") from None
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise MalformedPayload("a SOAP message may not carry a document type (DTD)")
    try:
        return ET.fromstring(text)  # noqa: S314 - no DTD (refused above), so no entities to expand
    except ET.ParseError as error:
        raise MalformedPayload(f"an Outbound Message is SOAP XML; this body is not: {error}") from None


def parse_salesforce_outbound(body: bytes) -> OutboundMessage:
    """A Salesforce Outbound Message (SOAP) -> its organization and one record event per notification.

    The values are the texts of the sObject's fields (``xsi:nil`` is null); the event id is the
    notification's ``Id``, which Salesforce keeps when it sends a message again; the time is the
    record's ``SystemModstamp`` or ``LastModifiedDate`` when the message includes one.
    """
    root = _soap(body)
    notifications = root.find(f"{_SOAP}Body/{_OUTBOUND}notifications")
    if root.tag != f"{_SOAP}Envelope" or notifications is None:
        raise MalformedPayload("not an Outbound Message: no soapenv:Envelope/soapenv:Body/notifications")
    organization = (notifications.findtext(f"{_OUTBOUND}OrganizationId") or "").strip()
    if not organization:
        raise MalformedPayload("the Outbound Message has no OrganizationId")
    events: list[RecordEvent] = []
    for i, notification in enumerate(notifications.iterfind(f"{_OUTBOUND}Notification"), 1):
        where = f"notification {i}"
        notification_id = (notification.findtext(f"{_OUTBOUND}Id") or "").strip()
        sobject = notification.find(f"{_OUTBOUND}sObject")
        if not notification_id or sobject is None:
            raise MalformedPayload(f"{where} has no Id or no sObject")
        object_type = (sobject.get(f"{_XSI}type") or "").rpartition(":")[2] or "sObject"
        fields: dict[str, Any] = {}
        for element in sobject:
            name = element.tag.rpartition("}")[2]
            fields[name] = None if element.get(f"{_XSI}nil") == "true" else (element.text or "").strip()
        record_id = fields.get("Id")
        if not record_id:
            raise MalformedPayload(f"{where}: the sObject has no Id")
        when = fields.get("SystemModstamp") or fields.get("LastModifiedDate")
        occurred = _millis(when, f"{where}: SystemModstamp")
        events.append(RecordEvent("salesforce", object_type, record_id, notification_id, "update", fields, occurred))
    if not events:
        raise MalformedPayload("the Outbound Message has no Notification")
    return OutboundMessage(organization, events)


# -- Pipedrive -----------------------------------------------------------------------------

_PIPEDRIVE_CHANGES = {"create": "create", "change": "update", "delete": "delete"}


def parse_pipedrive(body: bytes) -> list[RecordEvent | IgnoredEvent]:
    """A Pipedrive webhook v2 body (``meta``, ``data``, ``previous``) -> one record event.

    ``data`` is the whole object after the change (``previous`` holds only the old values of
    what changed), so the event sets every field of ``data``; a deletion has no ``data``.  The
    event id is ``meta.id``; the record lives under ``meta.company_id``.
    """
    data = _object(_json(body, "Pipedrive webhook"), "the body")
    if data.get("meta") is None and ("current" in data or "v" in data):
        raise MalformedPayload("this is a Pipedrive webhook v1; set the webhook's version to 2.0 in Pipedrive")
    meta = _object(data.get("meta"), "meta")
    version = str(meta.get("version", ""))
    if not version.startswith("2"):
        raise MalformedPayload(
            f"meta.version is '{version}'; only Pipedrive webhooks v2 are read (set the webhook's version to 2.0)"
        )
    action = _text(meta, "action", "meta")
    entity = _text(meta, "entity", "meta")
    entity_id = _ident(meta, "entity_id", "meta")
    event_id = _text(meta, "id", "meta")
    company = str(meta["company_id"]) if meta.get("company_id") is not None else None
    change = _PIPEDRIVE_CHANGES.get(action)
    if change is None:
        return [IgnoredEvent("pipedrive", event_id, entity_id, f"action '{action}' is not acted on")]
    occurred = _millis(meta.get("timestamp"), "meta.timestamp")
    fields = {} if change == "delete" else dict(_object(data.get("data"), "data"))
    fields.setdefault("id", int(entity_id) if digits(entity_id) and len(entity_id) <= 18 else entity_id)
    return [RecordEvent("pipedrive", entity, entity_id, event_id, change, fields, occurred, company)]


# -- generic -------------------------------------------------------------------------------

_GENERIC_CHANGES = {"created": "create", "create": "create", "deleted": "delete", "delete": "delete"}


def parse_generic(body: bytes) -> list[RecordEvent | IgnoredEvent]:
    """A generic JSON event -> one record event.

    The event is ``{"id": <event id>, "event": "<object>.<action>", "data": {...record...},
    "created_at" or "occurred_at": <ISO time or ms>, "org_id": <optional tenant>}`` (the shape
    django-crm sends).  The action ``created`` creates, ``deleted`` deletes, anything else
    (``updated``, ``won``) updates.  ``data`` holds the record's fields; an object inside it is
    read field by field (``{"opportunity": {"amount": 1}}`` -> field ``opportunity.amount``), so
    ``data`` may be a case as in JSON Lines input.  The record id is ``data.id``, else
    ``data.opportunity.id`` (which then becomes ``id`` too).
    """
    data = _object(_json(body, "webhook"), "the body")
    event_id = _ident(data, "id", "the event")
    kind = _text(data, "event", "the event")
    object_type, dot, action = kind.rpartition(".")
    if not dot or not object_type or not action:
        raise MalformedPayload(f"'event' should be '<object>.<action>', like 'deal.updated', not '{kind}'")
    record = _object(data.get("data"), "data")
    fields: dict[str, Any] = {}
    for name, value in record.items():
        if isinstance(value, dict):
            fields |= {f"{name}.{inner}": v for inner, v in value.items()}
        else:
            fields[name] = value
    if fields.get("id") is None and fields.get("opportunity.id") is not None:
        fields["id"] = fields["opportunity.id"]
    record_id = _ident(fields, "id", "data")
    occurred = _millis(data.get("occurred_at", data.get("created_at")), "the event's time")
    tenant = str(data["org_id"]) if data.get("org_id") is not None else None
    change = _GENERIC_CHANGES.get(action, "update")
    return [RecordEvent("generic", object_type, record_id, event_id, change, fields, occurred, tenant)]
