"""The service's OpenAPI 3.1 description (``GET /openapi.json``), made from the route registry.

Every path of :data:`adapters.service.ROUTES` is described with what authenticates it, what it
takes and each answer it can give; the answers' schemas are the shapes the service sends (a test
validates real answers against them).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from engine import Playbook

if TYPE_CHECKING:
    from adapters.service import ServiceRoute

__all__ = ["document"]

_ERROR_REF = {"$ref": "#/components/schemas/Error"}
_ID = {"type": ["string", "null"]}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            }
        },
    },
    "Source": {
        "description": "Where in the course the guidance comes from.",
        "type": "object",
        "required": ["guide", "quote"],
        "properties": {
            "guide": {"type": "string"},
            "quote": {"type": "string"},
            "note": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
    "Recommendation": {
        "type": "object",
        "required": ["id", "label", "params", "rule", "source"],
        "properties": {
            "id": {"type": "string", "description": "the action's id"},
            "label": {"type": "string", "description": "the action's label in the answer's language"},
            "params": {"type": "object", "description": "the parameters the rule gave the action"},
            "rule": {"type": "string", "description": "the rule that recommended it"},
            "source": {"$ref": "#/components/schemas/Source"},
        },
    },
    "EventOutcome": {
        "type": "object",
        "required": ["event", "record", "status"],
        "properties": {
            "event": {"type": "string"},
            "record": _ID,
            "status": {
                "enum": ["evaluated", "error", "coalesced", "duplicate", "quarantined", "deleted", "ignored"],
                "description": "coalesced: merged with later events of the same record in this delivery, "
                "whose final state was evaluated (the evaluation given)",
            },
            "evaluation": {"type": "integer"},
            "recommendations": {"type": "array", "items": {"$ref": "#/components/schemas/Recommendation"}},
            "code": {"type": "string"},
            "reason": {"type": "string"},
        },
    },
    "WebhookAnswer": {
        "type": "object",
        "required": ["received", "evaluations", "lang", "events"],
        "properties": {
            "received": {"type": "integer", "description": "events in the delivery"},
            "evaluations": {"type": "array", "items": {"type": "integer"}, "description": "evaluations stored"},
            "lang": {"type": "string"},
            "events": {"type": "array", "items": {"$ref": "#/components/schemas/EventOutcome"}},
        },
    },
    "StoredRecommendation": {
        "type": "object",
        "required": ["position", "id", "label", "params", "rule", "source"],
        "properties": {
            "position": {"type": "integer"},
            "id": {"type": "string"},
            "label": {"type": "string"},
            "params": {"type": "object"},
            "rule": {"type": "string"},
            "source": {"oneOf": [{"$ref": "#/components/schemas/Source"}, {"type": "null"}]},
            "state": {"enum": ["open", "accepted", "dismissed", "done"], "description": "its latest outcome"},
        },
    },
    "Outcome": {
        "type": "object",
        "required": ["outcome", "action", "position", "status", "who", "why", "at"],
        "properties": {
            "outcome": {"type": "integer"},
            "action": {"type": "string"},
            "position": {"type": "integer"},
            "status": {"enum": ["accepted", "dismissed", "done"]},
            "who": {"type": "string"},
            "why": {"type": "string"},
            "at": {"type": "string"},
        },
    },
    "Evaluation": {
        "type": "object",
        "required": [
            "evaluation",
            "created_at",
            "as_of",
            "playbook",
            "source",
            "case",
            "status",
            "decisions",
            "recommendations",
            "outcomes",
            "lang",
        ],
        "properties": {
            "evaluation": {"type": "integer"},
            "created_at": {"type": "string"},
            "as_of": {"type": "string", "format": "date"},
            "playbook": {
                "type": "object",
                "required": ["id", "version", "hash"],
                "properties": {"id": {"type": "string"}, "version": {"type": "string"}, "hash": {"type": "string"}},
            },
            "source": {"type": "string"},
            "case": {"type": "string"},
            "record_id": _ID,
            "account_id": _ID,
            "event_id": _ID,
            "status": {"enum": ["ok", "error"]},
            "decisions": {"type": "object"},
            "recommendations": {"type": "array", "items": {"$ref": "#/components/schemas/StoredRecommendation"}},
            "no_action": {"type": "boolean"},
            "error": {"type": ["object", "null"]},
            "outcomes": {"type": "array", "items": {"$ref": "#/components/schemas/Outcome"}},
            "lang": {"type": "string"},
        },
    },
    "OutcomeRequest": {
        "type": "object",
        "required": ["evaluation", "action", "status", "who"],
        "properties": {
            "evaluation": {"type": "integer"},
            "action": {
                "type": "string",
                "description": "the action's id, rule:action when several rules recommended it, or its position",
            },
            "rule": {"type": "string", "description": "the rule that recommended the action, when it was several"},
            "status": {"enum": ["accepted", "dismissed", "done"]},
            "who": {"type": "string"},
            "why": {"type": "string"},
        },
    },
    "OutcomeAnswer": {
        "type": "object",
        "required": ["outcome", "evaluation", "status"],
        "properties": {"outcome": {"type": "integer"}, "evaluation": {"type": "integer"}, "status": {"type": "string"}},
    },
    "QuarantinedEvents": {
        "type": "object",
        "required": ["quarantined"],
        "properties": {
            "quarantined": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["quarantined", "received_at", "source", "event_id", "code", "reason", "event"],
                    "properties": {
                        "quarantined": {"type": "integer", "description": "its number in the quarantined chain"},
                        "received_at": {"type": "string", "format": "date-time"},
                        "source": {"type": "string"},
                        "event_id": {"type": "string"},
                        "record_id": {"type": ["string", "null"]},
                        "code": {"type": "string"},
                        "reason": {"type": "string"},
                        "event": {"type": "object", "description": "the event as received: change, time, fields"},
                    },
                },
            },
            "next_after": {"type": "integer", "description": "more follow: ask again with ?after= this"},
        },
    },
    "Health": {
        "type": "object",
        "required": ["status", "playbook"],
        "properties": {
            "status": {"enum": ["ok", "unavailable"]},
            "playbook": {"type": "object"},
            "routes": {"type": "array", "items": {"type": "string"}},
            "reads": {"type": "array", "items": {"type": "string"}},
            "evaluations": {"type": "integer"},
            "error": {"type": "string"},
        },
    },
}

SECURITY_SCHEMES = {
    "hubspotSignatureV3": {
        "type": "apiKey",
        "in": "header",
        "name": "X-HubSpot-Signature-v3",
        "description": "base64 HMAC-SHA256(client secret, method + URI + body + X-HubSpot-Request-Timestamp)",
    },
    "playbookSignature": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Playbook-Signature",
        "description": "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t + '.' + body)>; for a read the signed "
        "text is the request line, e.g. 'GET /evaluations/12?lang=en'",
    },
    "basicAuth": {"type": "http", "scheme": "basic", "description": "Pipedrive's webhook credentials"},
    "apiToken": {"type": "http", "scheme": "bearer", "description": "PLAYBOOK_API_TOKEN"},
}

_WEBHOOK_SECURITY = {
    "hubspot": [{"hubspotSignatureV3": []}],
    "salesforce_cdc": [{"playbookSignature": []}],
    "salesforce_outbound": [{}],  # an org allow-list and/or a token in the path: nothing OpenAPI can name
    "pipedrive": [{"basicAuth": []}],
    "generic": [{"playbookSignature": []}],
}


def _errors(*statuses: int) -> dict[str, Any]:
    why = {
        400: "the body cannot be read, a parameter is wrong, or an event is stamped in the future",
        401: "not authenticated",
        404: "no such thing, or the route is not enabled (the message says what to set)",
        408: "the body did not arrive in time",
        409: "the evaluation recommended that action more than once: name the rule (rule:action, or rule)",
        413: "the body is over the limit",
        500: "the store or the engine failed; nothing was stored",
    }
    return {str(s): {"description": why[s], "content": {"application/json": {"schema": _ERROR_REF}}} for s in statuses}


def _json_answer(description: str, schema: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def _operation(route: ServiceRoute, path: str, languages: list[str]) -> dict[str, Any]:
    lang = [
        {
            "name": "lang",
            "in": "query",
            "required": False,
            "schema": {"enum": languages},
            "description": "the language of labels; else Accept-Language, else the playbook's first",
        },
        {"name": "Accept-Language", "in": "header", "required": False, "schema": {"type": "string"}},
    ]
    operation: dict[str, Any] = {"operationId": re.sub(r"\W+", "_", f"{route.name}_{path}").strip("_")}
    operation["summary"] = route.summary
    if route.enabled_by:
        names = " and/or ".join(" and ".join(group) for group in route.enabled_by)
        operation["description"] = f"Enabled by {names}."
    if route.kind == "webhook":
        xml = route.soap_ack
        operation["security"] = _WEBHOOK_SECURITY[route.name]
        operation["parameters"] = [] if xml else lang
        operation["requestBody"] = {
            "required": True,
            "content": {("text/xml" if xml else "application/json"): {"schema": {}}},
        }
        ok: dict[str, Any] = (
            {"description": "the SOAP acknowledgement", "content": {"text/xml": {"schema": {"type": "string"}}}}
            if xml
            else _json_answer("every event accounted for", "WebhookAnswer")
        )
        operation["responses"] = {"200": ok, **_errors(400, 401, 404, 408, 413, 500)}
        if "{token}" in path:
            operation["parameters"] = [
                {"name": "token", "in": "path", "required": True, "schema": {"type": "string"}},
                *operation["parameters"],
            ]
    elif route.kind == "outcomes":
        operation["security"] = [{"playbookSignature": []}]
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/OutcomeRequest"}}},
        }
        operation["responses"] = {
            "200": _json_answer("recorded", "OutcomeAnswer"),
            **_errors(400, 401, 404, 408, 409, 413),
        }
    elif route.kind in ("evaluation", "latest"):
        operation["security"] = [{"apiToken": []}, {"playbookSignature": []}]
        name = "evaluation" if route.kind == "evaluation" else "record"
        schema = {"type": "integer"} if route.kind == "evaluation" else {"type": "string"}
        parameters = [{"name": name, "in": "path", "required": True, "schema": schema}, *lang]
        if route.kind == "latest":
            parameters.append(
                {
                    "name": "source",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "only evaluations of this source (webhook:hubspot, an import, ...)",
                }
            )
        operation["parameters"] = parameters
        operation["responses"] = {"200": _json_answer("the evaluation", "Evaluation"), **_errors(400, 401, 404)}
    elif route.kind == "quarantined":
        operation["security"] = [{"apiToken": []}, {"playbookSignature": []}]

        def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
            return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}

        operation["parameters"] = [
            query("since", {"type": "string", "format": "date"}, "received on or after this day (UTC)"),
            query("until", {"type": "string", "format": "date"}, "received on or before this day (UTC)"),
            query("source", {"type": "string"}, "only this source (webhook:hubspot, ...)"),
            query("after", {"type": "integer", "minimum": 0}, "only those numbered above this (the next page)"),
            query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "at most this many (100)"),
        ]
        operation["responses"] = {
            "200": _json_answer("the events, oldest first", "QuarantinedEvents"),
            **_errors(400, 401, 404),
        }
    elif route.kind == "health":
        operation["responses"] = {
            "200": _json_answer("the service and its audit log are up", "Health"),
            "503": _json_answer("the audit log cannot be reached", "Health"),
        }
    elif route.kind == "metrics":
        operation["security"] = [{"apiToken": []}, {}]
        operation["responses"] = {
            "200": {
                "description": "Prometheus text format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
            **_errors(401),
        }
    else:  # openapi
        operation["responses"] = {
            "200": {"description": "this document", "content": {"application/json": {"schema": {"type": "object"}}}}
        }
    return operation


def document(routes: Sequence[ServiceRoute], playbook: Playbook) -> dict[str, Any]:
    """The OpenAPI 3.1 document of these routes, for a service running this playbook."""
    languages = list(playbook.languages)
    paths: dict[str, Any] = {}
    for route in routes:
        for path in route.paths:
            template = re.sub(r"\{(\w+):\w+\}", r"{\1}", path)  # Starlette's convertors are not OpenAPI
            item = paths.setdefault(template, {})
            for method in route.methods:
                item[method.lower()] = _operation(route, template, languages)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Sales playbook service",
            "version": "0.1.0",
            "description": f"Webhooks in, evaluations out, under playbook {playbook.id} {playbook.version} "
            f"({playbook.content_hash[:12]}). Languages: {', '.join(languages)}.",
        },
        "paths": paths,
        "components": {"schemas": SCHEMAS, "securitySchemes": SECURITY_SCHEMES},
    }
