"""The deployable bundle and the compose stack: POSIX entry names, nothing secret, a valid compose file."""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from scripts.bundle import build_bundle

ROOT = Path(__file__).resolve().parent.parent


def test_bundle_entries_are_posix_and_clean(tmp_path: Path) -> None:
    out = tmp_path / "bundle.zip"
    build_bundle(out)
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
        assert archive.testzip() is None
    assert names, "empty bundle"
    assert all("\\" not in name and not name.startswith("/") and ".." not in name for name in names)
    for needed in (
        "docker-compose.yml",
        "Dockerfile",
        "Procfile",
        "configs/nginx.conf",
        "configs/gunicorn.conf.py",
        "deploy/k8s/base/kustomization.yaml",
        "serving/models.config",
        "serving/batching_parameters.txt",
        "orchestrator/wsgi.py",
        "orchestrator/web/static/demo.html",
        "orchestrator/web/static/demo.js",
        "orchestrator/web/static/demo.css",
    ):
        assert needed in names
    assert any(n.startswith("model_repo/skin_analyzer/") and n.endswith("/saved_model.pb") for n in names)
    stray = [
        n
        for n in names
        if "__pycache__" in n
        or n.endswith((".pyc", ".pem", ".key", ".env"))
        or "/_staging-" in n
        or n.startswith((".git/", ".venv/", "build/", "tests/"))
    ]
    assert stray == []


def test_bundle_leaves_out_secrets_planted_in_the_tree(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "nginx.conf").write_text("server {}\n")
    (root / "configs" / ".env").write_text("SECRET=1\n")
    (root / "configs" / "server.key").write_text("-----BEGIN PRIVATE KEY-----\n")
    (root / "configs" / "__pycache__").mkdir()
    (root / "configs" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    names = build_bundle(tmp_path / "b.zip", root=root)
    assert names == ["configs/nginx.conf"]


def _compose_command() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_compose_file_is_valid() -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    result = subprocess.run(
        [*command, "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "tensorflow/serving" in result.stdout
    for flag in (
        "--model_config_file=",
        "--enable_batching",
        "--batching_parameters_file=",
        "--monitoring_config_file=",
    ):
        assert flag in result.stdout


def test_compose_runs_admission_and_keeps_the_model_server_internal() -> None:
    command = _compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    result = subprocess.run(
        [*command, "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    services = _service_blocks(result.stdout)
    assert "- serving.admission" in services["admission"]
    assert "--address=model-server:8500" in services["admission"]
    # The model server publishes no port on the host: only the compose network reaches it.
    assert "ports:" not in services["model-server"]
    # Config by folder mount, so admission's atomic renames of models.config are seen.
    assert "/serving:/config:ro" in services["model-server"]
    assert "--model_config_file_poll" not in services["model-server"]


def _service_blocks(text: str) -> dict[str, str]:
    """Each service's part of `compose config` output (two-space-indented names under `services:`),
    read as text: no YAML parser is among the pinned packages."""
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    inside = False
    for line in text.splitlines():
        if not line.startswith(" "):
            inside = line.startswith("services:")
            current = None
        elif inside and line.startswith("  ") and not line.startswith("   ") and line.rstrip().endswith(":"):
            current = blocks.setdefault(line.strip().rstrip(":"), [])
        elif inside and current is not None:
            current.append(line)
    return {name: "\n".join(lines) for name, lines in blocks.items()}
