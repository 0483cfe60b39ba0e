"""The API contract as an OpenAPI 3.1 document, served at /api/v2/openapi.json.

The answer's schemas are generated from its typed models (orchestrator/answer.py), error codes come
from errors.ERROR_TABLE, so the document cannot drift from the code; tests validate real answers
against these schemas.
"""

from __future__ import annotations

from typing import Any

from orchestrator.answer import answer_schemas
from orchestrator.errors import ERROR_TABLE, HTTP_CODES
from orchestrator.face.stage import VIEW_REQUESTS
from serving import contract
from serving.concerns import registry

API_VERSION = "2.0.0"

# The overlay option, in the query string or as a form field (form wins when both are sent).
OVERLAY_FLAG: dict[str, Any] = {
    "enum": ["true", "false", "1", "0"],
    "default": "false",
    "description": "true adds overlay.png_base64, the answer drawn on the photo",
}


def _vocabulary() -> dict[str, Any]:
    """GET /api/v2/vocabulary: every code of the answer with its words (orchestrator/notices.py)."""
    words = {"type": "object", "additionalProperties": {"type": "string"}}
    concern = {
        "type": "object",
        "required": ["name", "label", "regions", "severities", "needs_colour", "closeup"],
        "properties": {
            "name": {"enum": [record.name for record in registry()]},
            "label": {"type": "string"},
            "regions": {"type": "array", "items": {"enum": list(contract.LABEL_NAMES)}},
            "severities": {"type": "array", "items": {"type": "string"}},
            "needs_colour": {"type": "boolean"},
            "closeup": {"type": "boolean"},
        },
    }
    return {
        "type": "object",
        "required": ["concerns", "severities", "warnings", "region_reasons", "views"],
        "properties": {
            "concerns": {"type": "array", "items": concern},
            **{key: words for key in ("severities", "warnings", "region_reasons", "views")},
        },
    }


def _error() -> dict[str, Any]:
    codes = sorted({cls.code for cls in ERROR_TABLE} | set(HTTP_CODES.values()))
    return {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "request_id"],
                "properties": {
                    "code": {"enum": codes},
                    "message": {"type": "string"},
                    "request_id": {"type": "string"},
                },
            }
        },
    }


def _errors(*statuses: int) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for cls in ERROR_TABLE:
        if cls.status in statuses:
            error_body = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
            entry = responses.setdefault(str(cls.status), {"description": "", "content": error_body})
            entry["description"] = ", ".join(filter(None, [entry["description"], cls.code]))
    return responses


def build_openapi() -> dict[str, Any]:
    """The OpenAPI document of API v2."""
    health = {
        "type": "object",
        "required": ["status", "model", "version", "state"],
        "properties": {
            "status": {"enum": ["ok", "degraded", "unavailable"]},
            "model": {"type": "string"},
            "version": {"type": ["integer", "null"]},
            "state": {"type": "string"},
            "reason": {"type": "string"},
            "rejected": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    }
    models = {
        "type": "object",
        "required": ["model", "versions", "labels"],
        "properties": {
            "model": {"type": "string"},
            "serving": {"type": "object"},
            "versions": {"type": "array", "items": {"type": "object"}},
            "labels": {"type": "object", "additionalProperties": {"type": "integer"}},
        },
    }
    json_of = lambda ref: {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}  # noqa: E731
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Shine skin analysis API",
            "version": API_VERSION,
            "description": "A selfie in, a calibrated region-by-region skin report out.",
        },
        "paths": {
            "/health": {
                "get": {
                    "summary": "200 only when a version this service can use is AVAILABLE (degraded when "
                    "others were refused); 503 with the reason otherwise",
                    "responses": {
                        "200": {"description": "serving", "content": json_of("Health")},
                        "503": {"description": "not serving", "content": json_of("Health")},
                    },
                }
            },
            "/livez": {
                "get": {
                    "summary": "200 whenever the service process can answer (liveness); never asks the "
                    "model server",
                    "responses": {"200": {"description": "alive", "content": json_of("Liveness")}},
                }
            },
            "/api/v2/analyze/guest": {
                "post": {
                    "summary": "Analyse the skin in one photo (no login; nothing is stored)",
                    "parameters": [
                        {"name": "overlay", "in": "query", "required": False, "schema": OVERLAY_FLAG}
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "required": ["image"],
                                    "properties": {
                                        "image": {"type": "string", "format": "binary"},
                                        "view": {
                                            "enum": list(VIEW_REQUESTS),
                                            "description": "auto (default): any view found; face: only "
                                            "a face (frontal, three-quarter or profile); closeup: read "
                                            "the photo as a skin close-up",
                                        },
                                        "overlay": OVERLAY_FLAG,
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": {"description": "the skin report", "content": json_of("Report")},
                        **_errors(400, 413, 415, 422, 429, 500, 502, 503, 504),
                    },
                }
            },
            "/api/v2/models": {
                "get": {
                    "summary": "Model versions, their states and labels",
                    "responses": {
                        "200": {"description": "models", "content": json_of("Models")},
                        **_errors(503, 504),
                    },
                }
            },
            "/api/v2/vocabulary": {
                "get": {
                    "summary": "The words for every code an answer holds: concerns (label, regions, "
                    "severities), severities, warnings, region reasons and views",
                    "responses": {"200": {"description": "vocabulary", "content": json_of("Vocabulary")}},
                }
            },
            "/api/v2/openapi.json": {
                "get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}}
            },
            "/metrics": {
                "get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text"}}}
            },
            "/demo": {
                "get": {
                    "summary": "The demo page: choose or drop a photo, see the overlay, scores, warnings "
                    "and suggestions (HTML, CSS and JS served from here; nothing from other sites)",
                    "responses": {
                        "200": {
                            "description": "HTML",
                            "content": {"text/html": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/": {
                "get": {
                    "summary": "Redirects to the demo page",
                    "responses": {
                        "302": {
                            "description": "to /demo",
                            "headers": {"Location": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "schemas": {
                **answer_schemas(),
                "Error": _error(),
                "Health": health,
                "Liveness": {
                    "type": "object",
                    "required": ["status"],
                    "properties": {"status": {"const": "alive"}},
                },
                "Models": models,
                "Vocabulary": _vocabulary(),
            }
        },
    }
