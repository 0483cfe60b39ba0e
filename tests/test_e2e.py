"""End to end: the model server and the orchestrator under gunicorn as real processes, real photos in.

Checks the BRIEF's floor: every photo in data/faces answers 200 with the whole report (a second face
with the multi-face warning), every non-face photo answers 422 NO_FACE_FOUND, a corrupt file 400 with a
JSON error; no orchestrator process has TensorFlow mapped, they stay under 500 MB PSS together; /health
follows the model server down and up.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest
import requests

from orchestrator.scoring.overlay import LESION_RGB, MAX_SIDE_PX, SEVERITY_RGB, UNSCORED_RGB, lesion_radius_px
from scripts.stack import (
    ModelServerProcess,
    OrchestratorProcess,
    mapped_files,
    pss_kb,
    wait_http,
)
from tests.conftest import DATA, data_dir, wait_for_newest

pytestmark = pytest.mark.e2e

FACES = sorted(p.name for p in (DATA / "faces").iterdir()) if (DATA / "faces").is_dir() else []
# Portraits of one face, frontal, in studio light: every concern can be read on them.
STUDIO = [name for name in FACES if name.startswith("congress_")]
MULTIPLE = ("fr_two_people.jpg", "sn_laos.jpg", "sn_classroom_in_tanzania.jpg")


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ModelServerProcess, OrchestratorProcess]]:
    logs = tmp_path_factory.mktemp("logs")
    model = ModelServerProcess(logs / "model_server.log")
    model.start()
    # The suite sends far more than a guest's budget from one address.
    orchestrator = OrchestratorProcess(model.address, logs / "gunicorn.log", SHINE_RATE_LIMIT_BURST="100000")
    try:
        orchestrator.start()
        wait_http(orchestrator.url + "/health", 200, 60)
        wait_for_newest(orchestrator.url)
        yield model, orchestrator
    finally:
        orchestrator.stop()
        model.stop()


@pytest.fixture(scope="module")
def report_schema(stack: tuple[ModelServerProcess, OrchestratorProcess]) -> dict[str, object]:
    document = requests.get(stack[1].url + "/api/v2/openapi.json", timeout=10).json()
    # The document's references point into components/schemas; here they point into $defs.
    schemas = json.loads(
        json.dumps(document["components"]["schemas"]).replace("#/components/schemas/", "#/$defs/")
    )
    return {"$defs": schemas, **schemas["Report"]}


def _post(url: str, path: Path) -> requests.Response:
    with path.open("rb") as photo:
        return requests.post(url + "/api/v2/analyze/guest", files={"image": (path.name, photo)}, timeout=60)


@pytest.mark.parametrize("name", FACES)
def test_every_face_photo_answers_the_full_report(
    stack: tuple[ModelServerProcess, OrchestratorProcess], report_schema: dict[str, object], name: str
) -> None:
    response = _post(stack[1].url, data_dir("faces") / name)
    assert response.status_code == 200, response.text
    report = response.json()
    jsonschema.validate(report, report_schema)
    assert report["model"]["name"] == "skin_analyzer"
    assert report["view"] in ("frontal", "three_quarter")
    assert report["quality"]["pose"] is not None
    assert ("MULTIPLE_FACES" in report["quality"]["warnings"]) == (name in MULTIPLE)
    assert report["faces_detected"] == (2 if name in MULTIPLE else 1)
    acne = report["concerns"]["acne"]
    assert isinstance(acne["count"], int) and acne["severity"] is not None
    assert len(acne["lesions"]) == acne["count"]
    assert report["overall"]["score"] is not None
    # Suggestions name the answer's own worst concerns (at their reported severity) and skin type.
    for suggestion in report["recommendations"]:
        if "concern" in suggestion:
            assert report["concerns"][suggestion["concern"]]["severity"] == suggestion["severity"]
        if "skin_type" in suggestion:
            assert report["skin_type"]["label"] == suggestion["skin_type"]
    assert set(report["timing_ms"]) >= {"decode", "face", "quality", "predict", "postscore", "total"}
    assert response.headers["X-Request-ID"] == report["request_id"]
    for region, entry in report["regions"].items():
        if entry["visible"]:
            assert entry["polygon"] and len(entry["polygon"]) >= 4, region
            continue
        # A region is left out only for a reason the answer names, and a frontal face turns none away.
        assert entry["reason"] in ("outside_photo", "turned_away", "too_little_skin"), (region, entry)
        assert not (report["view"] == "frontal" and entry["reason"] == "turned_away"), region
        assert "REGIONS_NOT_VISIBLE" in report["quality"]["warnings"]
        if entry["reason"] == "outside_photo":
            assert "FACE_PARTLY_OUTSIDE" in report["quality"]["warnings"]
    assert report["regions"]["nose"]["visible"]
    if name in STUDIO:
        for concern, entry in report["concerns"].items():
            if concern == "pores":
                # Read at 8 px/mm, which no studio portrait reaches (1.2-1.9 px/mm): not scored, with why.
                assert entry["score"] is None
                assert entry["reason_code"] in ("photo_too_small", "not_calibrated")
                continue
            assert entry["score"] is not None and 0 <= entry["score"] <= 100, (concern, entry)
            assert entry["severity"] is not None
        assert report["quality"]["px_per_mm"] is not None and report["quality"]["scale_source"] == "iris"
        assert report["skin_tone"]["category"] is not None
        assert report["skin_type"]["label"] in ("oily", "dry", "normal", "combination")


def test_lesions_are_placed_in_the_photo(stack: tuple[ModelServerProcess, OrchestratorProcess]) -> None:
    photo = data_dir("acne04", "train") / "levle2_100_jpg.rf.5d9e903f3b3dd44433fc89cd5e5f4fe6.jpg"
    report = _post(stack[1].url, photo).json()
    lesions = report["concerns"]["acne"]["lesions"]
    assert lesions, "a photo graded severe shows lesions"
    for lesion in lesions:
        assert (
            0 <= lesion["x"] < report["image"]["width_px"] and 0 <= lesion["y"] < report["image"]["height_px"]
        )


def test_overlay_answer_follows_the_document_and_shows_the_answer(
    stack: tuple[ModelServerProcess, OrchestratorProcess], report_schema: dict[str, object]
) -> None:
    """overlay=true on a real acne photo: the answer (with overlay.png_base64) validates against the
    served document; the picture's pixels show the answer's own region outlines and lesion rings."""
    photo = data_dir("acne04", "train") / "levle2_100_jpg.rf.5d9e903f3b3dd44433fc89cd5e5f4fe6.jpg"
    with photo.open("rb") as image:
        response = requests.post(
            stack[1].url + "/api/v2/analyze/guest?overlay=true", files={"image": image}, timeout=60
        )
    assert response.status_code == 200, response.text
    report = response.json()
    jsonschema.validate(report, report_schema)
    assert report_schema["properties"]["overlay"]["$ref"] == "#/$defs/Overlay"  # type: ignore[index]
    assert "png_base64" in report_schema["$defs"]["Overlay"]["properties"]  # type: ignore[index]
    assert report["timing_ms"]["overlay"] > 0
    png = base64.b64decode(report["overlay"]["png_base64"], validate=True)
    picture = cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert max(picture.shape[:2]) <= MAX_SIDE_PX
    width, height = report["image"]["width_px"], report["image"]["height_px"]
    scale = picture.shape[1] / width
    colours = np.array([*SEVERITY_RGB.values(), UNSCORED_RGB], np.float64)

    def near(x: float, y: float, rgb: np.ndarray) -> bool:
        x, y = round(x * scale), round(y * scale)
        patch = picture[max(0, y - 1) : y + 2, max(0, x - 1) : x + 2].reshape(-1, 1, 3).astype(np.float64)
        return bool(np.min(np.linalg.norm(patch - rgb.reshape(1, -1, 3), axis=2)) < 40)

    visible = [r for r in report["regions"].values() if r["visible"]]
    assert visible
    for region in visible:
        corners = np.array(region["polygon"], np.float64)
        midpoints = (corners + np.roll(corners, -1, axis=0)) / 2
        inside = [
            (x, y) for x, y in midpoints if 0 <= x < width and 0 <= y < height
        ]  # polygons may leave the photo
        outlined = [near(x, y, colours) for x, y in inside]
        assert sum(outlined) >= 0.8 * len(outlined), region
    lesions = report["concerns"]["acne"]["lesions"]
    assert lesions
    radius = lesion_radius_px(report, scale) / scale
    ringed = [
        near(lesion["x"] + radius * np.cos(a), lesion["y"] + radius * np.sin(a), np.array(LESION_RGB, float))
        for lesion in lesions
        for a in np.linspace(0, 2 * np.pi, 8, endpoint=False)
    ]
    assert sum(ringed) >= 0.9 * len(ringed)


def test_nonfaces_answer_no_face_found(stack: tuple[ModelServerProcess, OrchestratorProcess]) -> None:
    folder = data_dir("nonfaces")
    photos = sorted(p for p in folder.iterdir() if p.is_file())
    assert photos
    for photo in photos:
        response = _post(stack[1].url, photo)
        assert response.status_code == 422, (photo.name, response.text)
        assert response.json()["error"]["code"] == "NO_FACE_FOUND"


def test_corrupt_file_answers_a_json_400(stack: tuple[ModelServerProcess, OrchestratorProcess]) -> None:
    response = _post(stack[1].url, data_dir("awkward", "corrupt") / "derived_not_an_image.jpg")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "INVALID_IMAGE"
    assert error["request_id"] == response.headers["X-Request-ID"]


def test_same_photo_same_report_and_different_faces_differ(
    stack: tuple[ModelServerProcess, OrchestratorProcess],
) -> None:
    faces = data_dir("faces")

    def concerns(name: str) -> dict[str, object]:
        return _post(stack[1].url, faces / name).json()["concerns"]

    first = concerns("congress_L000174.jpg")
    assert concerns("congress_L000174.jpg") == first
    assert concerns("congress_C000984.jpg") != first


def test_models_health_metrics_and_openapi(stack: tuple[ModelServerProcess, OrchestratorProcess]) -> None:
    url = stack[1].url
    health = requests.get(url + "/health", timeout=10)
    assert health.status_code == 200
    serving = health.json()["version"]
    models = requests.get(url + "/api/v2/models", timeout=10).json()
    (entry,) = [v for v in models["versions"] if v["version"] == serving]
    assert entry["usable"] is True and entry["state"] == "AVAILABLE"
    metrics = requests.get(url + "/metrics", timeout=10).text
    assert "shine_requests_total" in metrics
    assert requests.get(url + "/api/v2/openapi.json", timeout=10).json()["openapi"].startswith("3.1")


def test_no_tensorflow_in_the_orchestrator_and_memory_bounded(
    stack: tuple[ModelServerProcess, OrchestratorProcess],
) -> None:
    pids = stack[1].pids()
    for pid in pids:
        tensorflow = [f for f in mapped_files(pid) if "tensorflow" in f.lower()]
        assert tensorflow == [], f"process {pid} maps {tensorflow[:3]}"
    total_mb = sum(pss_kb(pid) for pid in pids) / 1024
    assert total_mb < 500, f"orchestrator PSS {total_mb:.0f} MB"


def test_health_follows_the_model_server_down_and_up(
    stack: tuple[ModelServerProcess, OrchestratorProcess],
) -> None:
    model, orchestrator = stack
    model.stop()
    down = wait_http(orchestrator.url + "/health", 503, 30)
    assert down.json()["status"] == "unavailable"
    response = _post(orchestrator.url, data_dir("faces") / "congress_B001270.jpg")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "MODEL_UNAVAILABLE"
    assert "Retry-After" in response.headers
    model.start()
    wait_http(orchestrator.url + "/health", 200, 60)
