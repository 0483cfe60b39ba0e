"""The API contract as an OpenAPI 3.1 document, served at /api/v2/openapi.json.

Error codes come from errors.ERROR_TABLE and region/concern names from the model contract, so the
document cannot drift from the code; tests validate real answers against these schemas.
"""

from __future__ import annotations

from typing import Any

from orchestrator.errors import ERROR_TABLE, HTTP_CODES
from orchestrator.face.views import VIEW_REQUESTS, VIEWS
from orchestrator.scoring.concerns import CONCERN_REGIONS, CONCERNS
from orchestrator.scoring.overlay import MAX_SIDE_PX
from orchestrator.scoring.scorer import ACNE_GRADES, ITA_CATEGORIES, SEVERITY_BANDS, SKIN_TYPES
from serving import contract

API_VERSION = "2.0.0"

NUMBER_OR_NULL: dict[str, Any] = {"type": ["number", "null"]}
# The overlay option, in the query string or as a form field (form wins when both are sent).
OVERLAY_FLAG: dict[str, Any] = {
    "enum": ["true", "false", "1", "0"],
    "default": "false",
    "description": "true adds overlay.png_base64, the answer drawn on the photo",
}
SEVERITIES = sorted({label for _, label in SEVERITY_BANDS} | set(ACNE_GRADES))


def _box() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["x", "y", "width", "height"],
        "properties": {k: {"type": "integer"} for k in ("x", "y", "width", "height")},
    }


def _region() -> dict[str, Any]:
    """A named region: read or not (and why not), and its outline in photo pixels when visible."""
    return {
        "type": "object",
        "required": ["visible", "reason", "polygon"],
        "properties": {
            "visible": {"type": "boolean"},
            "reason": {"enum": ["outside_photo", "turned_away", "not_placed", "too_little_skin", None]},
            "polygon": {
                "type": ["array", "null"],
                "items": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2},
            },
        },
    }


def _concern(name: str) -> dict[str, Any]:
    regions = {r: {"type": ["number", "null"]} for r in CONCERN_REGIONS[name]}
    schema: dict[str, Any] = {
        "type": "object",
        "required": ["score", "severity", "regions"],
        "properties": {
            "score": {**NUMBER_OR_NULL, "minimum": 0, "maximum": 100},
            "severity": {"enum": [*SEVERITIES, None]},
            "regions": {"type": "object", "properties": regions, "additionalProperties": False},
        },
    }
    if name == "acne":
        schema["required"] += ["count", "lesions"]
        schema["properties"]["count"] = {"type": ["integer", "null"]}
        schema["properties"]["grade_probabilities"] = {"type": "object"}
        schema["properties"]["regions"]["properties"] = {
            r: {"type": ["integer", "null"]} for r in CONCERN_REGIONS[name]
        }
        schema["properties"]["lesions"] = {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["region", "x", "y", "confidence"],
                "properties": {
                    "region": {"enum": list(contract.LABEL_NAMES)},
                    "x": {"type": "integer"},
                    "y": {"type": "integer"},
                    "x_rel": {"type": "number"},
                    "y_rel": {"type": "number"},
                    "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                },
            },
        }
    else:
        schema["properties"]["raw"] = NUMBER_OR_NULL
    return schema


def _report() -> dict[str, Any]:
    return {
        "type": "object",
        "required": [
            "request_id",
            "model",
            "view",
            "faces_detected",
            "regions",
            "face",
            "quality",
            "skin_tone",
            "skin_type",
            "concerns",
            "overall",
            "recommendations",
            "timing_ms",
        ],
        "properties": {
            "request_id": {"type": "string"},
            "model": {
                "type": "object",
                "description": "The model version that produced this answer; its calibration scored it.",
                "required": ["name", "version", "label"],
                "properties": {
                    "name": {"type": "string"},
                    "version": {"type": "integer"},
                    "label": {
                        "type": ["string", "null"],
                        "description": "The version label the request was routed by: `canary` for the "
                        "canary share (SHINE_CANARY_SHARE), the configured SHINE_MODEL_VERSION_LABEL, "
                        "or null when it went to the newest usable version.",
                    },
                },
            },
            "view": {"enum": list(VIEWS)},
            "faces_detected": {"type": "integer", "minimum": 0},
            "face": {
                "type": "object",
                "required": ["box", "confidence"],
                "properties": {"box": _box(), "confidence": {"type": "number", "minimum": 0, "maximum": 1}},
            },
            "image": {"type": "object"},
            "regions": {
                "type": "object",
                "required": list(contract.REGION_NAMES),
                "properties": {r: _region() for r in contract.REGION_NAMES},
                "additionalProperties": False,
            },
            "quality": {
                "type": "object",
                "required": ["face_size_px", "blur", "exposure", "pose", "warnings"],
                "properties": {
                    "face_size_px": {"type": "integer"},
                    "blur": {"type": "object"},
                    "exposure": {"type": "object"},
                    "tilt_deg": NUMBER_OR_NULL,
                    "pose": {
                        "type": ["object", "null"],
                        "description": "head pose from the landmarks, degrees: yaw > 0 turned towards "
                        "the image's right, pitch > 0 chin raised, roll > 0 leaning clockwise; null "
                        "without a mesh",
                        "required": ["yaw_deg", "pitch_deg", "roll_deg"],
                        "properties": {k: {"type": "number"} for k in ("yaw_deg", "pitch_deg", "roll_deg")},
                    },
                    "warnings": {"type": "array", "items": {"type": "string"}},
                },
            },
            "skin_tone": {
                "type": "object",
                "required": ["ita_deg", "category", "lab"],
                "properties": {
                    "ita_deg": NUMBER_OR_NULL,
                    "category": {"enum": [label for _, label in ITA_CATEGORIES] + [None]},
                    "lab": {"type": ["object", "null"]},
                },
            },
            "skin_type": {
                "type": "object",
                "required": ["label", "probabilities"],
                "properties": {
                    "label": {"enum": [*SKIN_TYPES, None]},
                    "probabilities": {"type": ["object", "null"]},
                },
            },
            "concerns": {
                "type": "object",
                "required": list(CONCERNS),
                "properties": {name: _concern(name) for name in CONCERNS},
            },
            "overall": {
                "type": "object",
                "required": ["score"],
                "properties": {"score": {**NUMBER_OR_NULL, "minimum": 0, "maximum": 100}},
            },
            "recommendations": {"type": "array", "items": {"type": "object"}},
            "timing_ms": {"type": "object", "additionalProperties": {"type": "number"}},
            "overlay": {
                "type": "object",
                "description": "only when asked for with overlay=true: the photo (at most "
                f"{MAX_SIDE_PX} px on its long side) with each visible region outlined in the colour of "
                "its worst concern's severity, acne lesions ringed and a legend below",
                "required": ["png_base64"],
                "properties": {
                    "png_base64": {
                        "type": "string",
                        "contentEncoding": "base64",
                        "contentMediaType": "image/png",
                        "minLength": 1,
                    }
                },
            },
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
                "Report": _report(),
                "Error": _error(),
                "Health": health,
                "Liveness": {
                    "type": "object",
                    "required": ["status"],
                    "properties": {"status": {"const": "alive"}},
                },
                "Models": models,
            }
        },
    }
