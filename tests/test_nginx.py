"""configs/nginx.conf under Debian's real nginx, in front of the real stack: a photo passes, nginx's own
refusals (body too large, orchestrator away or silent) answer in Shine's JSON error shape with the codes
of orchestrator/errors.py, and /metrics is not handed to the public.

The config is used as shipped; only its listen address, its upstream and (for the silent orchestrator)
its read timeout are replaced, each line checked to be there exactly once. Without nginx the tests skip
and say why; under CI=true they fail instead, unless .ci/run could not use apt-get there and says so in
SHINE_NGINX_OPTIONAL.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from orchestrator.errors import ERROR_TABLE, HTTP_CODES
from tests.conftest import ROOT, free_port
from tests.proxy import NginxProcess, replace_once, require_nginx

NGINX_CONF = ROOT / "configs" / "nginx.conf"
MIB = 1024 * 1024

require_nginx()


def shipped_site(upstream: str, read_timeout_s: int | None = None) -> str:
    """configs/nginx.conf with its upstream (and read timeout) replaced."""
    site = replace_once(NGINX_CONF.read_text(), "server orchestrator:8000;", f"server {upstream};")
    if read_timeout_s is not None:
        site = replace_once(site, "proxy_read_timeout 300s;", f"proxy_read_timeout {read_timeout_s}s;")
    return site


@pytest.fixture
def nginx_for(tmp_path: Path) -> Iterator[Any]:
    """Starts nginx in front of the given upstream; stops every one it started."""
    started: list[NginxProcess] = []

    def start(upstream: str, read_timeout_s: int | None = None) -> NginxProcess:
        site = shipped_site(upstream, read_timeout_s)
        nginx = NginxProcess(tmp_path / f"nginx{len(started)}", site, "listen 80;")
        started.append(nginx)
        nginx.start()
        return nginx

    yield start
    for nginx in started:
        nginx.stop()


def _shine_error(response: requests.Response, status: int, code: str) -> dict[str, Any]:
    """Check a JSON error answer: status, shape, code, the request id in body and header."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"code", "message", "request_id"}
    assert error["code"] == code
    assert len(error["request_id"]) == 32 and error["request_id"] == response.headers["X-Request-ID"]
    return dict(error)


def _status_of(code: str) -> int:
    """The status orchestrator/errors.py gives `code` (its error table, else its HTTP codes)."""
    for cls in ERROR_TABLE:
        if cls.code == code:
            return cls.status
    return next(status for status, name in HTTP_CODES.items() if name == code)


def test_photo_passes_and_orchestrator_errors_pass_through(
    live_stack: Any, nginx_for: Any, faces_dir: Path
) -> None:
    _, orchestrator = live_stack
    nginx = nginx_for(orchestrator.url.removeprefix("http://"))
    photo = sorted(faces_dir.glob("*.jpg"))[0]
    with photo.open("rb") as image:
        answer = requests.post(nginx.url + "/api/v2/analyze/guest", files={"image": image}, timeout=120)
    assert answer.status_code == 200, answer.text
    assert "concerns" in answer.json()
    # An error the orchestrator makes is its own answer, not rewritten by nginx.
    junk = requests.post(nginx.url + "/api/v2/analyze/guest", files={"image": b"not an image"}, timeout=60)
    error = _shine_error(junk, 400, "INVALID_IMAGE")
    assert error["message"] != "The request could not be read."


def test_metrics_not_routed(live_stack: Any, nginx_for: Any) -> None:
    _, orchestrator = live_stack
    assert requests.get(orchestrator.url + "/metrics", timeout=10).status_code == 200
    nginx = nginx_for(orchestrator.url.removeprefix("http://"))
    for path in ("/metrics", "/metrics?format=text"):
        _shine_error(requests.get(nginx.url + path, timeout=10), 404, "NOT_FOUND")


def test_upload_over_100_mb_is_refused_as_json(live_stack: Any, nginx_for: Any) -> None:
    _, orchestrator = live_stack
    nginx = nginx_for(orchestrator.url.removeprefix("http://"))
    body = b"\xff" * (101 * MIB)
    answer = requests.post(
        nginx.url + "/api/v2/analyze/guest", files={"image": ("big.jpg", body)}, timeout=120
    )
    error = _shine_error(answer, 413, "IMAGE_FILE_TOO_LARGE")
    assert _status_of(error["code"]) == 413
    # nginx never handed it on: the orchestrator's log has no request with this id.
    assert error["request_id"] not in orchestrator.log.read_text(errors="replace")


def test_orchestrator_away_is_model_unavailable_with_retry_after(nginx_for: Any) -> None:
    nginx = nginx_for(f"127.0.0.1:{free_port()}")  # nothing listens there
    for _ in range(3):  # the first try (refused) and the later ones (upstream marked down) alike
        answer = requests.get(nginx.url + "/health", timeout=10)
        error = _shine_error(answer, 503, "MODEL_UNAVAILABLE")
        assert _status_of(error["code"]) == 503
        assert int(answer.headers["Retry-After"]) >= 1


def test_silent_orchestrator_is_model_timeout(nginx_for: Any) -> None:
    # A listener that accepts connections and never answers: an orchestrator stuck past the read timeout.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        nginx = nginx_for(f"127.0.0.1:{silent.getsockname()[1]}", read_timeout_s=1)
        answer = requests.get(nginx.url + "/api/v2/models", timeout=30)
    error = _shine_error(answer, 504, "MODEL_TIMEOUT")
    assert _status_of(error["code"]) == 504


def test_unreadable_request_is_invalid_request(nginx_for: Any) -> None:
    nginx = nginx_for(f"127.0.0.1:{free_port()}")
    with socket.create_connection(("127.0.0.1", nginx.port), timeout=10) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")  # two Host headers: nginx refuses
        reply = raw.recv(65536).decode(errors="replace")
    head, _, body = reply.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 400")
    assert '"code": "INVALID_REQUEST"' in body
