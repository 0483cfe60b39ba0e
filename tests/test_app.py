"""The HTTP layer through Flask's test client: every error code of the table, CORS, headers, health.

The model server is the scriptable fake on real gRPC; photos are real; post-scoring uses the committed
calibration of the version the fake claims to be, from a copy of model_repo/ with each calibration bound
to its own model (tests/repos.py).
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import jsonschema
import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.errors import ERROR_TABLE, HTTP_CODES
from orchestrator.face.stage import FaceGeometry, Geometry
from orchestrator.notices import REGION_REASON_TABLE, VIEW_TABLE, WARNING_TABLE
from orchestrator.settings import Settings
from orchestrator.web.app import create_app
from orchestrator.web.ratelimit import RateLimiter
from serving import contract
from serving.concerns import concern_names
from serving.repository import versions_on_disk
from tests.conftest import MODEL_REPO, StallingClock, data_dir, free_port, hold_lock_in_a_process
from tests.fakes import Script, fake_model_server
from tests.repos import bind_calibration, other_fingerprint

ROOT = Path(__file__).resolve().parent.parent
PORTRAIT = "congress_B001270.jpg"
PUBLISHED = versions_on_disk(MODEL_REPO / contract.MODEL_NAME)


def _settings(address: str, **overrides: Any) -> Settings:
    """Settings for tests; those whose requests reach post-scoring pass model_repo_dir=model_repo."""
    values: dict[str, Any] = {
        "model_server_address": address,
        "model_repo_dir": MODEL_REPO,
        "recommendations_file": ROOT / "configs" / "recommendations.json",
        "predict_timeout_s": 1.0,
        "retry_backoff_s": 0.01,
        "rate_limit_burst": 1000,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def script() -> Script:
    return Script(version=PUBLISHED[-1] if PUBLISHED else 1)


@pytest.fixture
def address(script: Script) -> Iterator[str]:
    with fake_model_server(script) as running:
        yield running


@pytest.fixture
def app(address: str, model_repo: Path) -> Flask:
    return create_app(_settings(address, model_repo_dir=model_repo))


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def _photo(name: str = PORTRAIT) -> bytes:
    return (data_dir("faces") / name).read_bytes()


def _post(client: FlaskClient, data: bytes, field: str = "image", name: str = "photo.jpg") -> Any:
    return client.post(
        "/api/v2/analyze/guest", data={field: (io.BytesIO(data), name)}, content_type="multipart/form-data"
    )


def _error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["error"]["code"] == code
    assert body["error"]["request_id"] == response.headers["X-Request-ID"]
    assert "Traceback" not in body["error"]["message"] and "/work/" not in body["error"]["message"]
    return body["error"]


def test_portrait_gets_a_report_from_the_version_that_answered(client: FlaskClient, script: Script) -> None:
    response = _post(client, _photo())
    assert response.status_code == 200, response.get_data(as_text=True)
    report = response.get_json()
    assert report["model"] == {"name": contract.MODEL_NAME, "version": script.version, "label": None}
    assert list(report["concerns"]) == list(concern_names())
    assert report["timing_ms"]["total"] > 0


@pytest.mark.parametrize(
    ("build", "code"),
    [
        (lambda c: c.post("/api/v2/analyze/guest", json={"image": "x"}), "INVALID_REQUEST"),
        (lambda c: _post(c, b"bytes", field="photo"), "INVALID_REQUEST"),
        (lambda c: _post(c, b""), "INVALID_REQUEST"),
        (
            lambda c: c.post(
                "/api/v2/analyze/guest",
                content_type="multipart/form-data",
                data={"image": [(io.BytesIO(b"a"), "a.jpg"), (io.BytesIO(b"b"), "b.jpg")]},
            ),
            "INVALID_REQUEST",
        ),
    ],
)
def test_malformed_requests(client: FlaskClient, build: Any, code: str) -> None:
    _error(build(client), 400, code)


def test_corrupt_image_is_invalid(client: FlaskClient) -> None:
    _error(
        _post(client, (data_dir("awkward", "corrupt") / "derived_face_truncated_half.jpg").read_bytes()),
        400,
        "INVALID_IMAGE",
    )


def test_other_file_kinds_are_unsupported(client: FlaskClient) -> None:
    _error(_post(client, b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n", name="photo.jpg"), 415, "UNSUPPORTED_FORMAT")


def test_decompression_bomb_is_refused_by_pixels(client: FlaskClient) -> None:
    bomb = data_dir("awkward", "very_large") / "pillow_decompression_bomb.gif"
    error = _error(_post(client, bomb.read_bytes()), 413, "IMAGE_TOO_LARGE_PIXELS")
    assert "64" in error["message"] or "megapixel" in error["message"].lower()


def test_upload_over_the_limit_is_refused(address: str) -> None:
    client = create_app(_settings(address, max_upload_bytes=100_000)).test_client()
    _error(_post(client, _photo()), 413, "IMAGE_FILE_TOO_LARGE")
    huge = b"\xff\xd8" + b"\0" * 300_000
    _error(_post(client, huge), 413, "IMAGE_FILE_TOO_LARGE")


def test_no_face(client: FlaskClient) -> None:
    _error(_post(client, (data_dir("nonfaces") / "skimage_coffee.png").read_bytes()), 422, "NO_FACE_FOUND")


def test_small_face_names_the_minimum(address: str) -> None:
    client = create_app(_settings(address, min_face_px=500)).test_client()
    error = _error(_post(client, _photo()), 422, "FACE_TOO_SMALL")
    assert "500 px" in error["message"]


def test_rate_limited_with_retry_after(address: str) -> None:
    client = create_app(_settings(address, rate_limit_burst=2, rate_limit_per_minute=6)).test_client()
    photo = (data_dir("nonfaces") / "skimage_page.png").read_bytes()
    for _ in range(2):
        assert _post(client, photo).status_code == 422
    response = _post(client, photo)
    _error(response, 429, "RATE_LIMITED")
    assert int(response.headers["Retry-After"]) >= 1


def _lock_timeouts(client: FlaskClient, outcome: str) -> float:
    """shine_rate_limit_lock_timeouts_total{outcome=...} as /metrics shows it."""
    text = client.get("/metrics").get_data(as_text=True)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "shine_rate_limit_lock_timeouts_total" and sample.labels["outcome"] == outcome:
                return sample.value
    return 0.0


def test_a_worker_killed_holding_the_rate_limit_lock_does_not_wedge_the_service() -> None:
    clock = StallingClock()
    limiter = RateLimiter(per_minute=60, burst=2, clock=clock)
    # A worker killed (out of memory, gunicorn's timeout) while it holds the lock.
    worker = hold_lock_in_a_process(limiter, clock)
    os.kill(worker, signal.SIGKILL)
    os.waitpid(worker, 0)
    # No model server is needed: a photo without a face is answered before Predict.
    client = create_app(_settings(f"127.0.0.1:{free_port()}"), limiter=limiter).test_client()
    released_before = _lock_timeouts(client, "released")
    photo = (data_dir("nonfaces") / "skimage_page.png").read_bytes()
    statuses: list[int] = []

    def ask() -> None:
        statuses.append(_post(client, photo).status_code)

    asking = threading.Thread(target=ask, daemon=True)
    asking.start()
    asking.join(timeout=30)
    assert statuses == [422], "a guest request blocked on the dead worker's lock"
    # The lock is usable again, so limiting resumes: the burst of 2 is spent by the second request.
    assert [_post(client, photo).status_code for _ in range(2)] == [422, 429]
    assert _lock_timeouts(client, "released") == released_before + 1


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"fail_code": grpc.StatusCode.UNAVAILABLE, "fail_first": 100}, 503, "MODEL_UNAVAILABLE"),
        ({"delay_s": 3.0}, 504, "MODEL_TIMEOUT"),
        ({"signals_shape": (1, 7, 2)}, 502, "MODEL_BAD_RESPONSE"),
    ],
)
def test_model_faults(
    client: FlaskClient, script: Script, change: dict[str, Any], status: int, code: str
) -> None:
    for key, value in change.items():
        setattr(script, key, value)
    response = _post(client, _photo())
    _error(response, status, code)
    if status == 503:
        assert "Retry-After" in response.headers


def test_a_version_without_calibration_is_never_asked(client: FlaskClient, script: Script) -> None:
    script.version = 999
    error = _error(_post(client, _photo()), 503, "MODEL_UNAVAILABLE")
    assert "version 999" in error["message"]
    assert script.calls == 0
    health = client.get("/health")
    assert health.status_code == 503
    assert "version 999" in health.get_json()["reason"]


def test_a_version_breaking_the_contract_is_passed_over(client: FlaskClient, script: Script) -> None:
    good = script.version
    script.versions = (good, good + 1)
    script.broken_signature = frozenset({good + 1})
    response = _post(client, _photo())
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["model"]["version"] == good
    assert set(script.asked_versions) == {good}
    health = client.get("/health").get_json()
    assert health["status"] == "degraded"
    assert "signature" in health["rejected"][str(good + 1)]


def _metric(client: FlaskClient, name: str, **labels: str) -> float | None:
    """The value of one sample in /metrics, None when absent."""
    for family in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True)):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


@pytest.fixture
def versions_repo(tmp_path: Path, model_repo: Path, script: Script) -> Path:
    """A model_repo with the served version, a copy of it under the next number (nothing edited), one
    whose calibration was fitted on another model, and one without a calibration."""
    source = model_repo / contract.MODEL_NAME / str(script.version)
    base = tmp_path / contract.MODEL_NAME
    for offset in range(4):
        shutil.copytree(source, base / str(script.version + offset))
    bind_calibration(base / str(script.version + 2), other_fingerprint())
    (base / str(script.version + 3) / "assets.extra" / contract.CALIBRATION_FILE).unlink()
    return tmp_path


def test_refused_versions_never_answer_and_are_named_in_models_health_and_metrics(
    address: str, script: Script, versions_repo: Path
) -> None:
    good, copy, other_model, uncalibrated = (script.version + i for i in range(4))
    failed = script.version + 4
    script.versions = (good, copy, other_model, uncalibrated)
    script.failed = {failed: f"load failed: {versions_repo}/{failed}/saved_model.pb: truncated"}
    client = create_app(_settings(address, model_repo_dir=versions_repo)).test_client()
    for _ in range(3):
        response = _post(client, _photo())
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.get_json()["model"] == {"name": contract.MODEL_NAME, "version": copy, "label": None}
    assert set(script.asked_versions) == {copy}
    models = {v["version"]: v for v in client.get("/api/v2/models").get_json()["versions"]}
    assert [v for v, item in models.items() if item["usable"]] == [good, copy]
    assert "another model" in models[other_model]["reason"]
    assert "missing" in models[uncalibrated]["reason"]
    assert models[failed]["state"] == "END" and "could not load" in models[failed]["reason"]
    assert not any("/" in item.get("reason", "") for item in models.values())
    health = client.get("/health")
    assert health.status_code == 200
    body = health.get_json()
    assert (body["status"], body["version"]) == ("degraded", copy)
    assert set(body["rejected"]) == {str(other_model), str(uncalibrated), str(failed)}
    rejected = "shine_model_version_rejected"
    assert _metric(client, rejected, version=str(other_model), reason="calibration_mismatch") == 1.0
    assert _metric(client, rejected, version=str(uncalibrated), reason="calibration_missing") == 1.0
    assert _metric(client, rejected, version=str(failed), reason="load_failed") == 1.0
    # The version is removed: it is no longer refused, and the metric says so.
    script.failed = {}
    client.get("/health")
    assert _metric(client, rejected, version=str(failed), reason="load_failed") == 0.0


def test_the_canary_share_answers_from_the_canary_and_says_so(
    address: str, script: Script, versions_repo: Path
) -> None:
    good, copy = script.version, script.version + 1
    script.versions = (good, copy)
    script.labels = {"canary": copy}
    settings = _settings(address, model_repo_dir=versions_repo, canary_share=1.0)
    client = create_app(settings).test_client()
    report = _post(client, _photo()).get_json()
    assert report["model"] == {"name": contract.MODEL_NAME, "version": copy, "label": "canary"}
    answers = "shine_model_version_answers_total"
    assert _metric(client, answers, version=str(copy), label="canary") == 1.0
    serving = client.get("/api/v2/models").get_json()
    assert serving["serving"]["canary_share"] == 1.0 and serving["labels"] == {"canary": copy}
    # With no share the canary label changes nothing: the newest usable version answers.
    client = create_app(_settings(address, model_repo_dir=versions_repo)).test_client()
    assert _post(client, _photo()).get_json()["model"]["label"] is None


@pytest.mark.parametrize(
    ("query", "form", "drawn"),
    [
        ("", {}, False),
        ("?overlay=true", {}, True),
        ("", {"overlay": "1"}, True),
        ("?overlay=true", {"overlay": "false"}, False),  # the form field wins
    ],
)
def test_overlay_is_drawn_when_asked(
    client: FlaskClient, query: str, form: dict[str, str], drawn: bool
) -> None:
    response = client.post(
        "/api/v2/analyze/guest" + query,
        data={"image": (io.BytesIO(_photo()), "p.jpg"), **form},
        content_type="multipart/form-data",
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    report = response.get_json()
    assert ("overlay" in report) == drawn
    assert ("overlay" in report["timing_ms"]) == drawn
    if drawn:
        png = base64.b64decode(report["overlay"]["png_base64"], validate=True)
        assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_an_unknown_overlay_value_is_refused(client: FlaskClient) -> None:
    response = client.post(
        "/api/v2/analyze/guest?overlay=please",
        data={"image": (io.BytesIO(_photo()), "p.jpg")},
        content_type="multipart/form-data",
    )
    assert "overlay" in _error(response, 400, "INVALID_REQUEST")["message"]


def test_an_unknown_view_request_is_refused(client: FlaskClient) -> None:
    response = client.post(
        "/api/v2/analyze/guest",
        data={"image": (io.BytesIO(_photo()), "p.jpg"), "view": "sideways"},
        content_type="multipart/form-data",
    )
    assert "view" in _error(response, 400, "INVALID_REQUEST")["message"]


class ExplodingGeometry(FaceGeometry):
    def analyse(self, rgb: np.ndarray, request: str = "auto") -> Geometry:
        raise RuntimeError("secret internal detail at /srv/app/faces.py")


def test_unexpected_failure_is_a_generic_500(address: str, caplog: pytest.LogCaptureFixture) -> None:
    client = create_app(_settings(address), geometry=ExplodingGeometry()).test_client()
    error = _error(_post(client, _photo()), 500, "INTERNAL")
    assert "secret" not in error["message"]
    assert "secret internal detail" in caplog.text  # the traceback goes to the log only


def test_unknown_route_and_method_are_json(client: FlaskClient) -> None:
    _error(client.get("/nope"), 404, "NOT_FOUND")
    response = client.get("/api/v2/analyze/guest")
    _error(response, 405, "METHOD_NOT_ALLOWED")
    assert "POST" in response.headers["Allow"]


def test_security_headers_and_no_caching(client: FlaskClient) -> None:
    response = client.get("/api/v2/openapi.json")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


def test_demo_page_has_its_own_policy_and_the_api_keeps_its_own(client: FlaskClient) -> None:
    """The page may load only its own scripts, styles and images (data: for the overlay) and talk
    only to this origin; every other answer keeps default-src 'none'."""
    assert client.get("/").status_code == 302
    assert client.get("/").headers["Location"].endswith("/demo")
    page = client.get("/demo")
    assert page.status_code == 200 and page.mimetype == "text/html"
    policy = dict(
        (part.split()[0], part.split()[1:]) for part in page.headers["Content-Security-Policy"].split("; ")
    )
    assert policy["default-src"] == ["'none'"]
    assert policy["script-src"] == ["'self'"] and policy["style-src"] == ["'self'"]
    assert policy["img-src"] == ["'self'", "data:"] and policy["connect-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    html = page.get_data(as_text=True)
    assert "<script>" not in html and " style=" not in html  # nothing inline the policy would block
    for asset, mimetype in (("demo.js", "text/javascript"), ("demo.css", "text/css")):
        assert f'"demo/static/{asset}"' in html
        served = client.get(f"/demo/static/{asset}")
        assert served.status_code == 200 and served.mimetype == mimetype
    for path in ("/api/v2/openapi.json", "/health", "/demo/static/demo.js"):
        assert client.get(path).headers["Content-Security-Policy"].startswith("default-src 'none'; frame-")


def test_cors_default_allows_any_origin(client: FlaskClient) -> None:
    response = client.options(
        "/api/v2/analyze/guest",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert response.headers["Access-Control-Allow-Origin"] in ("*", "https://app.example")


def test_cors_allow_list(address: str) -> None:
    client = create_app(_settings(address, cors_origins=("https://app.example",))).test_client()
    allowed = client.get("/api/v2/openapi.json", headers={"Origin": "https://app.example"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example"
    other = client.get("/api/v2/openapi.json", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_health_is_503_when_the_model_server_is_down() -> None:
    client = create_app(_settings(f"127.0.0.1:{free_port()}", status_timeout_s=0.3)).test_client()
    response = client.get("/health")
    assert response.status_code == 503
    assert response.get_json()["status"] == "unavailable"


def test_livez_is_200_while_the_model_server_is_down() -> None:
    # Liveness never asks the model server: the same app answers 503 on /health and 200 on /livez.
    client = create_app(_settings(f"127.0.0.1:{free_port()}", status_timeout_s=0.3)).test_client()
    assert client.get("/health").status_code == 503
    response = client.get("/livez")
    assert response.status_code == 200
    assert response.get_json() == {"status": "alive"}
    document = client.get("/api/v2/openapi.json").get_json()
    assert "200" in document["paths"]["/livez"]["get"]["responses"]


def test_health_is_200_with_an_available_version(client: FlaskClient, script: Script) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.get_json() == {
        "status": "ok",
        "model": contract.MODEL_NAME,
        "version": script.version,
        "state": "AVAILABLE",
    }


def test_openapi_lists_every_error_code(client: FlaskClient) -> None:
    document = client.get("/api/v2/openapi.json").get_json()
    error = document["components"]["schemas"]["Error"]["properties"]["error"]
    codes = set(error["properties"]["code"]["enum"])
    assert {cls.code for cls in ERROR_TABLE} | set(HTTP_CODES.values()) <= codes
    responses = document["paths"]["/api/v2/analyze/guest"]["post"]["responses"]
    for cls in ERROR_TABLE:
        assert cls.code in responses[str(cls.status)]["description"]


def test_the_vocabulary_is_the_registry_and_the_tables(client: FlaskClient) -> None:
    """The demo page's words come from here: every concern of the registry, every warning, reason and
    view of the tables, in the shape the OpenAPI document gives."""
    body = client.get("/api/v2/vocabulary").get_json()
    document = client.get("/api/v2/openapi.json").get_json()
    jsonschema.validate(body, document["components"]["schemas"]["Vocabulary"])
    assert [c["name"] for c in body["concerns"]] == list(concern_names())
    assert body["warnings"] == WARNING_TABLE and body["region_reasons"] == REGION_REASON_TABLE
    assert body["views"] == VIEW_TABLE
    schemas = document["components"]["schemas"]
    assert schemas["Quality"]["properties"]["warnings"]["items"]["enum"] == list(WARNING_TABLE)
    assert schemas["Region"]["properties"]["reason"]["enum"] == [*REGION_REASON_TABLE, None]
    assert schemas["Report"]["properties"]["concerns"]["required"] == list(concern_names())
    demo = (ROOT / "orchestrator" / "web" / "static" / "demo.js").read_text()
    for code in (*WARNING_TABLE, *REGION_REASON_TABLE, *concern_names()):
        assert f"{code}:" not in demo, f"demo.js keeps its own words for {code}"
