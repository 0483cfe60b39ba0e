"""Fuzzing the guest endpoint: random bytes, damaged real photos, odd multipart shapes, and a
schema-driven run of the whole API from its OpenAPI document. Never a 5xx, always the JSON contract."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance

from orchestrator.errors import ERROR_TABLE
from orchestrator.settings import Settings
from orchestrator.web.app import create_app
from serving import contract
from serving.repository import versions_on_disk
from tests.conftest import MODEL_REPO, data_dir
from tests.fakes import Script, fake_model_server

ROOT = Path(__file__).resolve().parent.parent
CODES = {cls.code for cls in ERROR_TABLE}
CLIENT_STATUSES = {200, 400, 413, 415, 422}
SEEDS = [
    "faces/congress_B001270.jpg",
    "faces/skimage_astronaut.png",
    "awkward/heic/derived_face.heic",
    "awkward/webp_avif/derived_face.webp",
    "awkward/webp_avif/pillow_avif_hopper.avif",
]


@pytest.fixture(scope="module")
def app() -> Iterator[Flask]:
    version = versions_on_disk(MODEL_REPO / contract.MODEL_NAME)[-1]
    with fake_model_server(Script(version=version)) as address:
        yield create_app(
            Settings(
                model_server_address=address,
                model_repo_dir=MODEL_REPO,
                recommendations_file=ROOT / "configs" / "recommendations.json",
                rate_limit_burst=10**9,
            )
        )


@pytest.fixture(scope="module")
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture(scope="module")
def seeds() -> list[bytes]:
    return [(data_dir(*Path(name).parent.parts) / Path(name).name).read_bytes() for name in SEEDS]


def _check(response: Any) -> None:
    assert response.status_code in CLIENT_STATUSES, (response.status_code, response.get_data()[:300])
    body = response.get_json()
    assert body is not None, "every answer is JSON"
    if response.status_code != 200:
        assert body["error"]["code"] in CODES
        assert body["error"]["request_id"] == response.headers["X-Request-ID"]


def _send(client: FlaskClient, data: bytes, name: str = "upload.jpg") -> Any:
    return client.post(
        "/api/v2/analyze/guest", data={"image": (io.BytesIO(data), name)}, content_type="multipart/form-data"
    )


FUZZ = settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@FUZZ
@given(data=st.binary(max_size=4096), name=st.sampled_from(["a.jpg", "a.png", "a.heic", "a", "../../x"]))
def test_random_bytes(client: FlaskClient, data: bytes, name: str) -> None:
    _check(_send(client, data, name))


@FUZZ
@given(
    choice=st.integers(0, len(SEEDS) - 1),
    cut=st.floats(0.0, 1.0),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 7)), max_size=8),
)
def test_truncated_and_bit_flipped_photos(
    client: FlaskClient, seeds: list[bytes], choice: int, cut: float, flips: list[tuple[float, int]]
) -> None:
    data = bytearray(seeds[choice][: max(1, int(len(seeds[choice]) * cut))])
    for position, bit in flips:
        index = min(len(data) - 1, int(position * len(data)))
        data[index] ^= 1 << bit
    _check(_send(client, bytes(data)))


FIELDS = st.sampled_from(["image", "Image", "file", "photo", "", "image[]"])


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(
    parts=st.lists(st.tuples(FIELDS, st.binary(max_size=64), st.booleans()), max_size=3),
    content_type=st.sampled_from(
        [
            "multipart/form-data",
            "application/json",
            "text/plain",
            "application/octet-stream",
            "multipart/form-data; boundary=x",
        ]
    ),
)
def test_odd_request_shapes(
    client: FlaskClient, parts: list[tuple[str, bytes, bool]], content_type: str
) -> None:
    if content_type == "multipart/form-data":
        data = {}
        for field, payload, as_file in parts:
            data.setdefault(field, []).append((io.BytesIO(payload), "f.jpg") if as_file else payload.hex())
        response = client.post("/api/v2/analyze/guest", data=data, content_type=content_type)
    else:
        body = b"".join(payload for _, payload, _ in parts)
        response = client.post("/api/v2/analyze/guest", data=body, content_type=content_type)
    _check(response)
    assert response.status_code != 200


def test_api_follows_its_openapi_document(app: Flask) -> None:
    """Schemathesis generates requests for every operation from the served document and checks each
    answer against it: no server errors, documented statuses, content types and bodies."""
    schema = schemathesis.openapi.from_wsgi("/api/v2/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 4  # schemathesis leaves out the document itself
    for operation in operations:

        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        @given(case=operation.as_strategy())
        def check(case: Any) -> None:
            # Any bytes are schema-valid for the image field, yet most are not photos: a 4xx for
            # those is the contract, so "valid data must be accepted" does not apply here.
            case.call_and_validate(excluded_checks=[positive_data_acceptance])

        check()
