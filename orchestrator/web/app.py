"""The Flask application factory: builds the services once and wires errors, CORS, headers and logs.

Nothing is configured at import time. gunicorn imports `orchestrator.wsgi:app`, which calls
`create_app()` with settings from the environment; tests call it with their own Settings and fakes.
"""

from __future__ import annotations

import json
import logging
import time
import uuid

from flask import Flask, Response, g, jsonify, request
from flask_cors import CORS
from werkzeug.exceptions import HTTPException

from orchestrator.decode.formats import configure_decoders
from orchestrator.errors import HTTP_CODES, ImageFileTooLarge, ShineError
from orchestrator.face.scale import ScaleReader
from orchestrator.face.scene import SceneCheck
from orchestrator.face.stage import FaceGeometry
from orchestrator.pipeline import Pipeline
from orchestrator.predict.client import PredictClient
from orchestrator.predict.routing import VersionRouter
from orchestrator.scoring.recommendations import Recommender
from orchestrator.scoring.scorer import ScorerRegistry
from orchestrator.settings import Settings
from orchestrator.web import metrics
from orchestrator.web.api import api
from orchestrator.web.demo import demo
from orchestrator.web.openapi import build_openapi
from orchestrator.web.ratelimit import RateLimiter
from orchestrator.web.services import Services, init_app
from orchestrator.web.workqueue import WorkQueue, analysis_slots
from serving.admission.state import StateReader, state_path

logger = logging.getLogger(__name__)
request_log = logging.getLogger("shine.requests")

# Multipart framing around the image may add this much to the body beyond the image's own limit.
MULTIPART_SLACK_BYTES = 64 * 1024

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
}


def create_app(
    settings: Settings | None = None,
    *,
    geometry: FaceGeometry | None = None,
    client: PredictClient | None = None,
    scorers: ScorerRegistry | None = None,
    limiter: RateLimiter | None = None,
    workqueue: WorkQueue | None = None,
) -> Flask:
    """Build the orchestrator app; raises SettingsError, OSError, FaceModelError or SceneModelError on
    a bad configuration (the face models and the scene classifier load here, before any fork)."""
    settings = settings or Settings.from_env()
    logging.getLogger().setLevel(settings.log_level)
    configure_decoders(settings.max_image_pixels)
    client = client or PredictClient(settings)
    scorers = scorers or ScorerRegistry(settings.model_repo_dir, settings.model_name)
    router = VersionRouter(
        client,
        scorers.problem,
        label=settings.model_version_label,
        canary_share=settings.canary_share,
        refresh_s=settings.routing_refresh_s,
        observe=metrics.RejectedVersions(),
        admission=StateReader(state_path(settings.model_repo_dir / settings.model_name)).read,
    )
    pipeline = Pipeline(
        settings,
        geometry or FaceGeometry(scene=SceneCheck(settings.scene_model_path), scale=ScaleReader()),
        client,
        router,
        scorers,
        Recommender.from_file(settings.recommendations_file),
    )
    # The demo blueprint serves the only static files, under /demo/static/.
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes + MULTIPART_SLACK_BYTES
    app.json.sort_keys = False  # type: ignore[attr-defined]
    services = Services(
        settings=settings,
        pipeline=pipeline,
        client=client,
        router=router,
        limiter=limiter or RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst),
        openapi=build_openapi(),
        workqueue=workqueue
        or WorkQueue(
            analysis_slots(),
            settings.answer_deadline_s,
            on_refused=lambda outcome: metrics.OVERLOADED.labels(outcome).inc(),
        ),
    )
    init_app(app, services)
    CORS(
        app,
        resources={r"/api/*": {"origins": list(settings.cors_origins)}},
        expose_headers=["X-Request-ID", "Retry-After"],
        methods=["GET", "POST", "OPTIONS"],
        max_age=600,
    )
    app.register_blueprint(api)
    app.register_blueprint(demo)
    _register_errors(app)
    app.before_request(_start_request)
    app.after_request(_finish_request)
    return app


def _start_request() -> None:
    g.request_id = uuid.uuid4().hex
    g.started = time.perf_counter()
    g.error_code = ""
    g.model_version = None
    g.model_label = None
    g.timing_ms = {}


def _finish_request(response: Response) -> Response:
    # setdefault: the demo page sets its own, looser Content-Security-Policy first.
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    request_id = getattr(g, "request_id", "")
    response.headers["X-Request-ID"] = request_id
    elapsed_s = time.perf_counter() - getattr(g, "started", time.perf_counter())
    endpoint = request.url_rule.rule if request.url_rule else "unmatched"
    code = getattr(g, "error_code", "") or ("OK" if response.status_code < 400 else "")
    metrics.REQUESTS.labels(endpoint, str(response.status_code), code).inc()
    metrics.LATENCY.labels(endpoint).observe(elapsed_s)
    if endpoint != "/metrics":
        # Never the image, never EXIF: only what the request did.
        request_log.info(
            json.dumps(
                {
                    "request_id": request_id,
                    "method": request.method,
                    "path": endpoint,
                    "status": response.status_code,
                    "code": code,
                    "model_version": getattr(g, "model_version", None),
                    "model_label": getattr(g, "model_label", None),
                    "ms": round(elapsed_s * 1000.0, 1),
                    "stages_ms": getattr(g, "timing_ms", {}),
                }
            )
        )
    return response


def error_response(error: ShineError) -> Response:
    """The JSON error body, with Retry-After where the error carries one."""
    g.error_code = error.code
    body = {
        "error": {
            "code": error.code,
            "message": error.message,
            "request_id": getattr(g, "request_id", ""),
        }
    }
    response = jsonify(body)
    response.status_code = error.status
    if error.retry_after_s is not None:
        response.headers["Retry-After"] = str(max(1, round(error.retry_after_s + 0.499)))
    return response


def _register_errors(app: Flask) -> None:
    @app.errorhandler(ShineError)
    def shine_error(error: ShineError) -> Response:
        if error.status >= 500:
            logger.warning("request %s failed: %s", getattr(g, "request_id", ""), error.code)
        return error_response(error)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        if status == 413:
            return error_response(ImageFileTooLarge())
        shine = ShineError(error.description or error.name)
        shine.status = status
        shine.code = HTTP_CODES.get(status, "INVALID_REQUEST" if status < 500 else "INTERNAL")
        response = error_response(shine)
        if status == 405 and hasattr(error, "valid_methods") and error.valid_methods:
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Response:
        # The traceback goes to the log only; the client gets a generic message and the request id.
        logger.exception("unhandled error in request %s", getattr(g, "request_id", ""))
        return error_response(ShineError())
