"""The command line against the real stack: `python -m orchestrator analyze` as a user runs it, its
table, its JSON, the overlay files, the progress bar and its exit statuses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest
import requests

from scripts.stack import ModelServerProcess, OrchestratorProcess
from serving.concerns import concern_names
from tests.conftest import ROOT, data_dir

pytestmark = pytest.mark.e2e

Stack = tuple[ModelServerProcess, OrchestratorProcess]
FACE = "congress_B001270.jpg"
NONFACE = "skimage_coffee.png"
CONCERNS = tuple(name.replace("_", " ") for name in concern_names())


def _run(*args: str, timeout_s: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "analyze", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def test_one_face_prints_a_table_and_exits_0(live_stack: Stack) -> None:
    result = _run(str(data_dir("faces") / FACE), "--url", live_stack[1].url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(str(data_dir("faces") / FACE) + ": frontal view, overall ")
    assert lines[1].split() == ["concern", "score", "severity", "regions"]
    rows = {line[2:16].strip(): line[16:].split() for line in lines[2 : 2 + len(CONCERNS)]}
    assert tuple(rows) == CONCERNS
    for concern, (score, *rest) in rows.items():
        if score == "n/a":  # not scored: the answer's reason in its place
            assert rest[:2] == ["n/a", concern.capitalize()] or rest[0] == "n/a", (concern, rest)
            continue
        assert 0 <= float(score) <= 100, concern
        assert rest[0] in ("none", "mild", "moderate", "severe", "very"), (concern, rest)
    assert "lesion" in " ".join(rows["acne"])
    assert "worst:" in " ".join(rows["wrinkles"])
    assert any(line.startswith("  skin tone: ") for line in lines)
    assert "  warnings: none" in lines
    # One photo: no progress bar.
    assert result.stderr == ""


def test_json_matches_the_service_and_failures_exit_1(live_stack: Stack, tmp_path: Path) -> None:
    """A face, a non-face and a missing file: the face's report as the API gives it, the others'
    errors, a progress bar on stderr, exit status 1."""
    url = live_stack[1].url
    face, nonface, missing = data_dir("faces") / FACE, data_dir("nonfaces") / NONFACE, tmp_path / "nope.jpg"
    result = _run(str(face), str(nonface), str(missing), "--url", url, "--json")
    assert result.returncode == 1
    entries = json.loads(result.stdout)
    assert [e["photo"] for e in entries] == [str(face), str(nonface), str(missing)]
    document = requests.get(url + "/api/v2/openapi.json", timeout=10).json()
    schemas = document["components"]["schemas"]
    resolved = json.loads(json.dumps(schemas).replace("#/components/schemas/", "#/$defs/"))
    jsonschema.validate(entries[0]["report"], {"$defs": resolved, **resolved["Report"]})
    assert entries[0]["status"] == 200 and "overlay" not in entries[0]["report"]
    assert entries[1]["status"] == 422 and entries[1]["error"]["code"] == "NO_FACE_FOUND"
    assert entries[2]["status"] is None and entries[2]["error"]["code"] == "UNREADABLE_FILE"
    progress = result.stderr.splitlines()
    assert [line.split()[1] for line in progress[:3]] == ["1/3", "2/3,", "3/3,"]
    assert progress[0].startswith("[") and "1 failed" in progress[1]
    assert progress[-1] == "2 of 3 photos failed"


def test_failures_are_reported_in_the_table(live_stack: Stack, tmp_path: Path) -> None:
    result = _run(str(data_dir("nonfaces") / NONFACE), str(tmp_path / "nope.jpg"), "--url", live_stack[1].url)
    assert result.returncode == 1
    assert f"{data_dir('nonfaces') / NONFACE}: FAILED NO_FACE_FOUND (HTTP 422)" in result.stdout
    assert "No face" in result.stdout
    assert "FAILED UNREADABLE_FILE" in result.stdout


def test_overlay_files_are_written(live_stack: Stack, tmp_path: Path) -> None:
    faces = data_dir("faces")
    photos = [faces / FACE, faces / "fr_two_people.jpg"]
    out = tmp_path / "overlays"
    result = _run(*map(str, photos), "--url", live_stack[1].url, "--overlay", str(out), "--json")
    assert result.returncode == 0, result.stderr
    for photo, entry in zip(photos, json.loads(result.stdout), strict=True):
        written = out / f"{photo.stem}.overlay.png"
        assert entry["report"]["overlay"] == {"file": str(written)}
        picture = cv2.imdecode(np.frombuffer(written.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
        assert picture is not None and max(picture.shape[:2]) <= 1024
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{p.stem}.overlay.png" for p in photos)


def test_no_service_exits_1_and_says_so(tmp_path: Path) -> None:
    photo = str(data_dir("faces") / FACE)
    result = _run(photo, photo, "--url", "http://127.0.0.1:9", timeout_s=60)
    assert result.returncode == 1
    assert "SERVICE_UNREACHABLE" in result.stdout and "is the service running?" in result.stdout
    # The second photo is not tried once the service is known to be down.
    assert result.stdout.count("FAILED") == 1
    assert result.stderr.splitlines()[-1] == "1 of 2 photos failed (1 not sent)"


def test_a_rate_limit_is_waited_out(live_stack: Stack, tmp_path: Path) -> None:
    """With a burst of one, the second photo is refused with Retry-After; the command waits and
    sends it again, so both succeed."""
    limited = OrchestratorProcess(
        live_stack[0].address,
        tmp_path / "gunicorn.log",
        workers=1,
        SHINE_RATE_LIMIT_BURST="1",
        # A token every 5 s: the command starts well within that of the first request (at one a second
        # it could start after the token came back, on a busy machine, and never be refused).
        SHINE_RATE_LIMIT_PER_MINUTE="12",
    )
    limited.start()
    try:
        photo = data_dir("faces") / FACE
        first = requests.post(
            limited.url + "/api/v2/analyze/guest", files={"image": photo.read_bytes()}, timeout=60
        )
        assert first.status_code == 200
        result = _run(str(photo), "--url", limited.url, "--json")
        metrics = requests.get(limited.url + "/metrics", timeout=10).text
    finally:
        limited.stop()
    refused = [
        line
        for line in metrics.splitlines()
        if line.startswith("shine_requests_total") and "RATE_LIMITED" in line
    ]
    assert refused and float(refused[0].split()[-1]) >= 1, "the command was never refused"
    assert result.returncode == 0, result.stdout
    assert json.loads(result.stdout)[0]["status"] == 200


def test_usage_errors_exit_2() -> None:
    assert _run().returncode == 2
    assert (
        subprocess.run([sys.executable, "-m", "orchestrator"], cwd=ROOT, capture_output=True).returncode == 2
    )
