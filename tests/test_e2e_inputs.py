"""End to end against gunicorn: every awkward file, rotated copies, floods, fuzzed uploads, huge bodies.

Each file answers 200 or the 4xx its content calls for, never a 5xx; no worker dies; memory stays
bounded; uploads leave nothing on disk; one flooding client is limited while another is served.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import random
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from scripts.stack import ModelServerProcess, OrchestratorProcess, pss_kb, wait_http
from tests.conftest import data_dir

pytestmark = pytest.mark.e2e

FACE_TOO_SMALL = "FACE_TOO_SMALL"
NO_FACE = "NO_FACE_FOUND"
INVALID = "INVALID_IMAGE"
# What each awkward file must answer: 200 or an error code. Faces under 80 px are too small.
EXPECTED: dict[str, int | str] = {
    "alpha/derived_face_transparent_background.png": 200,
    "alpha/fr_32bit_rgba_obama.png": 200,
    "alpha/pillow_transparent.webp": NO_FACE,
    "alpha/pillowheif_heif_RGBA_8__128x128.heif": NO_FACE,
    "alpha/sn_benedict_cumberbatch_2014_rgba.png": 200,
    "cmyk/derived_face_cmyk.jpg": 200,
    "cmyk/pillow_pil_sample_cmyk.jpg": NO_FACE,
    "corrupt/derived_empty.jpg": "INVALID_REQUEST",
    "corrupt/derived_face_truncated_half.jpg": INVALID,
    "corrupt/derived_not_an_image.jpg": INVALID,
    "corrupt/pillow_broken.png": INVALID,
    "corrupt/pillow_junk_jpeg_header.jpg": NO_FACE,
    "corrupt/pillow_truncated_jpeg.jpg": INVALID,
    "corrupt/pillow_ultrahdr.jpg": INVALID,
    "corrupt/pillowheif_heif_corrupted_corrupted.heic": INVALID,
    "corrupt/pillowheif_heif_truncated_truncated.heic": NO_FACE,
    "exif_orientation/derived_face_exif_orient3.jpg": 200,
    "exif_orientation/derived_face_exif_orient6.jpg": 200,
    "exif_orientation/derived_face_exif_orient8.jpg": 200,
    "exif_orientation/exiforient_Landscape_6.jpg": NO_FACE,
    "exif_orientation/exiforient_Landscape_8.jpg": NO_FACE,
    "exif_orientation/exiforient_Portrait_1.jpg": NO_FACE,
    "exif_orientation/exiforient_Portrait_3.jpg": NO_FACE,
    "exif_orientation/exiforient_Portrait_6.jpg": NO_FACE,
    "exif_orientation/exiforient_Portrait_8.jpg": NO_FACE,
    "exif_orientation/pillow_hopper_orientation_2.jpg": FACE_TOO_SMALL,
    "exif_orientation/pillow_hopper_orientation_3.jpg": FACE_TOO_SMALL,
    "exif_orientation/pillow_hopper_orientation_5.jpg": FACE_TOO_SMALL,
    "exif_orientation/pillow_hopper_orientation_6.jpg": FACE_TOO_SMALL,
    "exif_orientation/pillow_hopper_orientation_6.webp": FACE_TOO_SMALL,
    "exif_orientation/pillow_hopper_orientation_8.jpg": FACE_TOO_SMALL,
    "grayscale/derived_face_gray_L.jpg": 200,
    "grayscale/pillow_hopper_gray.jpg": FACE_TOO_SMALL,
    "grayscale/skimage_camera_gray_person.png": FACE_TOO_SMALL,  # a three-quarter face 68 px wide
    "heic/derived_face.heic": 200,
    "heic/pillow_avif_hopper.heif": FACE_TOO_SMALL,
    "heic/pillowheif_heif_other_cat.hif": NO_FACE,
    "heic/pillowheif_heif_other_pug.heic": NO_FACE,
    "heic/pillowheif_heif_special_xiaomi.heic": NO_FACE,
    "misc_jpeg/derived_face_palette.png": 200,
    "misc_jpeg/pillow_hopper_16bit_qtables.jpg": FACE_TOO_SMALL,
    "mpo/pillow_sugarshack.mpo": NO_FACE,
    "progressive/derived_face_progressive.jpg": 200,
    "progressive/pillow_icc_profile_big.jpg": NO_FACE,
    "tiny/derived_face_48px.jpg": FACE_TOO_SMALL,
    "tiny/pillow_hopper.jpg": FACE_TOO_SMALL,
    "very_large/derived_face_upscaled_6000x9000.jpg": 200,
    "very_large/pillow_decompression_bomb.gif": "IMAGE_TOO_LARGE_PIXELS",
    "very_large/pillow_xmp_test.jpg": NO_FACE,
    "very_large/pillowheif_heif_special_200MP.heic": "IMAGE_TOO_LARGE_PIXELS",
    "webp_avif/derived_face.webp": 200,
    "webp_avif/pillow_avif_exif.avif": NO_FACE,
    "webp_avif/pillow_avif_hopper.avif": FACE_TOO_SMALL,
    "webp_avif/pillow_hopper.webp": FACE_TOO_SMALL,
    "webp_avif/pillow_iss634.webp": NO_FACE,
}
_addresses = (f"198.18.{i // 250}.{i % 250 + 1}" for i in itertools.count())


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    logs = tmp_path_factory.mktemp("logs")
    uploads_tmp = tmp_path_factory.mktemp("tmp")
    model = ModelServerProcess(logs / "model_server.log")
    model.start()
    orchestrator = OrchestratorProcess(
        model.address,
        logs / "gunicorn.log",
        # Every request below comes from loopback; the tests name their client in X-Forwarded-For.
        SHINE_TRUSTED_PROXIES="127.0.0.1/32",
        SHINE_RATE_LIMIT_BURST="5",
        SHINE_RATE_LIMIT_PER_MINUTE="30",
        TMPDIR=str(uploads_tmp),
    )
    try:
        orchestrator.start()
        wait_http(orchestrator.url + "/health", 200, 60)
        yield {"url": orchestrator.url, "orchestrator": orchestrator, "tmp": uploads_tmp}
    finally:
        orchestrator.stop()
        model.stop()


def _post(url: str, data: bytes, client: str | None = None, name: str = "upload") -> requests.Response:
    headers = {"X-Forwarded-For": client or next(_addresses)}
    return requests.post(
        url + "/api/v2/analyze/guest", files={"image": (name, data)}, headers=headers, timeout=120
    )


def _memory_mb(pids: list[int]) -> tuple[float, float]:
    """(RSS summed, PSS summed) of the processes; PSS counts shared pages once across them."""
    rss = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss += int(line.split()[1])
    return rss / 1024, sum(pss_kb(pid) for pid in pids) / 1024


def test_every_awkward_file_answers_as_its_content_calls_for(stack: dict[str, Any]) -> None:
    root = data_dir("awkward")
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert set(files) == set(EXPECTED), "the awkward folder changed: update EXPECTED"
    orchestrator: OrchestratorProcess = stack["orchestrator"]
    workers = orchestrator.pids()
    peaks: list[tuple[float, float]] = []
    for _ in range(2):  # twice: the second pass shows whether memory keeps growing per request
        peak = (0.0, 0.0)
        for name in files:
            response = _post(stack["url"], (root / name).read_bytes(), name=Path(name).name)
            expected = EXPECTED[name]
            if expected == 200:
                assert response.status_code == 200, (name, response.text[:300])
            else:
                assert 400 <= response.status_code < 500, (name, response.status_code, response.text[:300])
                assert response.json()["error"]["code"] == expected, name
            rss, pss = _memory_mb(orchestrator.pids())
            peak = (max(peak[0], rss), max(peak[1], pss))
        peaks.append(peak)
    assert orchestrator.pids() == workers, "a worker died or was replaced"
    print(
        "\norchestrator (master + workers) peak memory per pass: "
        + "; ".join(f"RSS {rss:.0f} MB, PSS {pss:.0f} MB" for rss, pss in peaks)
    )
    assert max(pss for _, pss in peaks) < 1000
    assert peaks[1][1] - peaks[0][1] < 50, "memory grew on the second pass over the same files"


def test_grey_photo_reports_no_colour_measures(stack: dict[str, Any]) -> None:
    response = _post(
        stack["url"], (data_dir("awkward", "grayscale") / "derived_face_gray_L.jpg").read_bytes()
    )
    report = response.json()
    assert "GRAYSCALE_IMAGE" in report["quality"]["warnings"]
    assert report["skin_tone"]["ita_deg"] is None
    assert report["concerns"]["redness"]["score"] is None


def test_rotated_copies_report_like_the_upright_photo(stack: dict[str, Any]) -> None:
    upright = _post(stack["url"], (data_dir("faces") / "sn_city_portrait.jpg").read_bytes()).json()
    for orientation in (3, 6, 8):
        path = data_dir("awkward", "exif_orientation") / f"derived_face_exif_orient{orientation}.jpg"
        rotated = _post(stack["url"], path.read_bytes()).json()
        assert rotated["image"]["exif_orientation"] == orientation
        assert (
            abs(rotated["face"]["box"]["width"] - upright["face"]["box"]["width"])
            < 0.05 * upright["face"]["box"]["width"]
        )
        assert abs(rotated["skin_tone"]["ita_deg"] - upright["skin_tone"]["ita_deg"]) < 3.0
        for concern, entry in upright["concerns"].items():
            turned = rotated["concerns"][concern]
            if entry["score"] is None:  # not scored upright (pores below their scale): nor rotated
                assert turned["score"] is None and turned["reason_code"] == entry["reason_code"], concern
                continue
            assert abs(turned["score"] - entry["score"]) <= 15, concern


def test_flood_from_one_client_is_limited_while_another_is_served(stack: dict[str, Any]) -> None:
    photo = (data_dir("nonfaces") / "skimage_page.png").read_bytes()
    flood = [_post(stack["url"], photo, client="203.0.113.66") for _ in range(15)]
    limited = [r for r in flood if r.status_code == 429]
    assert len(limited) >= 8
    assert all(
        r.json()["error"]["code"] == "RATE_LIMITED" and int(r.headers["Retry-After"]) >= 1 for r in limited
    )
    other = _post(stack["url"], photo, client="198.51.100.23")
    assert other.status_code == 422


def test_spoofed_forwarded_for_cannot_escape_the_limit(stack: dict[str, Any]) -> None:
    photo = (data_dir("nonfaces") / "skimage_page.png").read_bytes()
    statuses = []
    for i in range(12):
        # The client prepends a fresh address each time; the proxy appends the real one.
        chain = f"10.9.9.{i}, 203.0.113.77"
        statuses.append(_post(stack["url"], photo, client=chain).status_code)
    assert statuses.count(429) >= 5


def test_fuzzed_uploads_never_crash_a_worker(stack: dict[str, Any]) -> None:
    orchestrator: OrchestratorProcess = stack["orchestrator"]
    workers = orchestrator.pids()
    rng = random.Random(7)
    seeds = [(data_dir("faces") / n).read_bytes() for n in ("congress_B001270.jpg", "skimage_astronaut.png")]
    seeds.append((data_dir("awkward", "heic") / "derived_face.heic").read_bytes())
    statuses = []
    for _ in range(150):
        data = bytearray(rng.choice(seeds))
        data = data[: rng.randint(1, len(data))]
        for _ in range(rng.randint(0, 6)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        statuses.append(_post(stack["url"], bytes(data)).status_code)
    statuses += [_post(stack["url"], rng.randbytes(rng.randint(1, 5000))).status_code for _ in range(100)]
    assert all(s < 500 for s in statuses), sorted(set(statuses))
    assert orchestrator.pids() == workers


def test_huge_body_is_refused_without_being_read(stack: dict[str, Any]) -> None:
    host, port = stack["url"].removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    boundary = "xyz"
    connection.putrequest("POST", "/api/v2/analyze/guest")
    connection.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
    connection.putheader("Content-Length", str(200 * 1024 * 1024))
    connection.putheader("X-Forwarded-For", next(_addresses))
    connection.endheaders()
    connection.send(
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n'.encode()
        + b"\0" * 65536
    )
    response = connection.getresponse()  # answered after 64 KB of a declared 200 MB
    assert response.status == 413
    assert json.loads(response.read())["error"]["code"] == "IMAGE_FILE_TOO_LARGE"
    connection.close()


def _held_files(pids: list[int], folder: Path) -> set[str]:
    """Files under `folder` that the processes hold open, named or not: a spooled upload is an unnamed
    temporary file, which no directory listing shows but /proc does, as "<folder>/#123 (deleted)"."""
    held = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue  # closed meanwhile
            # gunicorn's worker heartbeat files are unnamed temporary files in the same folder.
            if target.startswith(f"{folder}/") and "/wgunicorn-" not in target:
                held.add(f"{pid}: {target}")
    return {entry for entry in held if "/shine-metrics-" not in entry}


def _leftovers(folder: Path, pids: list[int]) -> set[str]:
    """What is left of uploads under `folder`: files on disk, and files the processes still hold open."""
    named = {str(p) for p in folder.rglob("*") if p.is_file() and "/shine-metrics-" not in str(p)}
    return named | _held_files(pids, folder)


def test_the_leftover_check_sees_an_unnamed_temporary_file(tmp_path: Path) -> None:
    with tempfile.TemporaryFile(dir=tmp_path) as spooled:
        spooled.write(b"an upload")
        assert list(tmp_path.iterdir()) == []  # invisible to a directory listing
        assert _leftovers(tmp_path, [os.getpid()]) != set()
    assert _leftovers(tmp_path, [os.getpid()]) == set()


def test_uploads_leave_nothing_on_disk(stack: dict[str, Any]) -> None:
    big = (data_dir("awkward", "very_large") / "derived_face_upscaled_6000x9000.jpg").read_bytes()
    orchestrator: OrchestratorProcess = stack["orchestrator"]
    folder = Path(stack["tmp"])
    boundary = "shine-upload-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="big.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    half = len(big) // 2  # 1 MB: past the 500 KB werkzeug keeps in memory
    resume = threading.Event()

    def body() -> Iterator[bytes]:
        yield head + big[:half]
        resume.wait(60)
        yield big[half:] + tail

    answers: list[requests.Response] = []

    def send() -> None:
        answers.append(
            requests.post(
                stack["url"] + "/api/v2/analyze/guest",
                data=body(),
                headers={
                    "Content-Type": f"multipart/form-data; boundary={boundary}",
                    "X-Forwarded-For": next(_addresses),
                },
                timeout=120,
            )
        )

    sending = threading.Thread(target=send)
    sending.start()
    try:
        # Half sent, the upload is spooled to a file in TMPDIR, and that file has no name.
        deadline = time.monotonic() + 30
        spooled = _held_files(orchestrator.pids(), folder)
        while not spooled and time.monotonic() < deadline:
            time.sleep(0.05)
            spooled = _held_files(orchestrator.pids(), folder)
        assert spooled, "the half-sent upload was not spooled under TMPDIR: this check would see nothing"
        assert all(entry.endswith("(deleted)") for entry in spooled), spooled
    finally:
        resume.set()
        sending.join(timeout=120)
    assert [answer.status_code for answer in answers] == [200]
    assert _leftovers(folder, orchestrator.pids()) == set()
