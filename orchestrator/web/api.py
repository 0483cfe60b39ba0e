"""HTTP views: parse the request, call the pipeline or the model client, return JSON. Nothing else."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from orchestrator import notices
from orchestrator.errors import ImageFileTooLarge, InvalidRequest, ModelError, Overloaded
from orchestrator.face.stage import VIEW_REQUESTS
from orchestrator.pipeline import Timer
from orchestrator.web import metrics
from orchestrator.web.ratelimit import client_ip
from orchestrator.web.services import get_services

api = Blueprint("api", __name__)

# Labels the models view asks the server about (TF Serving has no call that lists labels).
KNOWN_LABELS = ("stable", "canary")
# Bytes read at a time when an upload is discarded unread.
DISCARD_CHUNK_BYTES = 256 * 1024
# How the `overlay` flag may be spelled, in the query string or as a form field.
FLAG_VALUES = {"true": True, "1": True, "false": False, "0": False}


def _unavailable(body: dict[str, Any]) -> tuple[Response, int]:
    response = jsonify({"status": "unavailable", **body})
    response.headers["Retry-After"] = "1"
    return response, 503


@api.get("/health")
def health() -> tuple[Response, int]:
    """200 only when a version this service can use (AVAILABLE, the contract's signature, a calibration
    bound to its model) is served, "degraded" when other versions were refused (not loaded by the model
    server, or refused here); 503 with the reason otherwise. `version` is where requests go outside
    the canary share."""
    shine = get_services()
    name = shine.settings.model_name
    try:
        versions = shine.router.versions(refresh=True)
        chosen = shine.router.primary()
    except ModelError as exc:
        body: dict[str, Any] = {"model": name, "version": None, "state": exc.code, "reason": exc.message}
        return _unavailable(body)
    rejected = {str(v.version): v.reason for v in versions if v.rejected}
    state = next((v.state for v in versions if v.version == chosen.version), "AVAILABLE")
    body = {
        "status": "degraded" if rejected else "ok",
        "model": name,
        "version": chosen.version,
        "state": state,
    }
    if rejected:
        body["rejected"] = rejected
    return jsonify(body), 200


@api.get("/livez")
def livez() -> Response:
    """200 whenever this worker can answer; asks nothing of the model server, so a model-server outage
    fails readiness (/health) without restarting every orchestrator."""
    return jsonify({"status": "alive"})


@api.post("/api/v2/analyze/guest")
def analyze_guest() -> Response:
    shine = get_services()
    settings = shine.settings
    shine.limiter.check(
        client_ip(request.remote_addr, request.headers.get("X-Forwarded-For"), settings.trusted_proxies)
    )
    if not request.mimetype.startswith("multipart/form-data"):
        raise InvalidRequest()
    try:
        with shine.workqueue.admit():
            return _analyze()
    except Overloaded:
        _discard_upload(settings.max_upload_bytes)
        raise


def _discard_upload(limit_bytes: int) -> None:
    """Read the unread upload away (at most `limit_bytes` and the framing), so a refused client that is
    still sending gets its answer rather than a reset connection."""
    left = limit_bytes + DISCARD_CHUNK_BYTES
    try:
        while left > 0 and request.stream.read(DISCARD_CHUNK_BYTES):
            left -= DISCARD_CHUNK_BYTES
    except HTTPException:
        pass  # too large to read, or the client went away: the server closes the connection instead


def _analyze() -> Response:
    """Read the upload and its options, run the pipeline, answer the report (in an admitted slot)."""
    shine = get_services()
    settings = shine.settings
    uploads = request.files.getlist("image")
    if len(uploads) != 1:
        raise InvalidRequest("Send exactly one photo, in the multipart field 'image'.")
    data = uploads[0].stream.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise ImageFileTooLarge(f"The upload is larger than {settings.max_upload_bytes // (1024 * 1024)} MB.")
    if not data:
        raise InvalidRequest("The field 'image' is empty.")
    view = request.form.get("view", "auto")
    if view not in VIEW_REQUESTS:
        raise InvalidRequest(f"The field 'view' must be one of {', '.join(VIEW_REQUESTS)}.")
    overlay = _flag("overlay")
    timing_ms: dict[str, float] = g.timing_ms
    timer = Timer()
    try:
        analysis = shine.pipeline.analyze(data, timer, view, overlay=overlay)
    finally:
        timing_ms.update(timer.stages)
        for stage, ms in timer.stages.items():
            metrics.STAGES.labels(stage).observe(ms / 1000.0)
        for stage, ms in timer.cpu_ms.items():
            metrics.STAGE_CPU.labels(stage).inc(ms / 1000.0)
    g.model_version = analysis.model.version
    g.model_label = analysis.model.label
    metrics.ANSWERED_BY.labels(str(g.model_version), g.model_label or "none").inc()
    timing = {**timer.stages, "total": round(sum(timer.stages.values()), 2)}
    return jsonify({"request_id": g.request_id, **analysis.dump(), "timing_ms": timing})


def _flag(name: str) -> bool:
    """A true/false option from the form, else the query string; raises InvalidRequest otherwise."""
    raw = request.form.get(name, request.args.get(name, "false"))
    value = FLAG_VALUES.get(raw.strip().lower())
    if value is None:
        raise InvalidRequest(f"The field '{name}' must be true or false.")
    return value


@api.get("/api/v2/models")
def models() -> Response:
    shine = get_services()
    versions = shine.router.versions(refresh=True)
    labels = {}
    for label in KNOWN_LABELS:
        version = shine.client.label_version(label)
        if version is not None:
            labels[label] = version
    return jsonify(
        {
            "model": shine.settings.model_name,
            "serving": {
                "label": shine.settings.model_version_label or None,
                "canary_share": shine.settings.canary_share,
            },
            "versions": [
                {
                    "version": v.version,
                    "state": v.state,
                    "usable": v.usable,
                    "labels": sorted(k for k, n in labels.items() if n == v.version),
                    **({"reason": v.reason} if v.reason else {}),
                }
                for v in versions
            ],
            "labels": labels,
        }
    )


@api.get("/api/v2/vocabulary")
def vocabulary() -> Response:
    """The words for every code an answer holds (concerns, severities, warnings, region reasons, views)."""
    return jsonify(notices.vocabulary())


@api.get("/api/v2/openapi.json")
def openapi() -> Response:
    return jsonify(get_services().openapi)


@api.get("/metrics")
def prometheus() -> Response:
    body, content_type = metrics.render(get_services().settings.prometheus_multiproc_dir)
    return Response(body, content_type=content_type)
