"""Local runs use tensorflow_model_server when it is on PATH, with the same files, else the local server."""

from __future__ import annotations

import sys
from pathlib import Path

from serving.launch import server_command

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "serving" / "models.config"
BATCHING = ROOT / "serving" / "batching_parameters.txt"


def test_local_server_when_no_binary() -> None:
    command = server_command(8500, CONFIG, BATCHING, ROOT / "model_repo", binary="")
    assert command[:3] == [sys.executable, "-m", "serving.local_server"]
    assert f"--model_config_file={CONFIG}" in command
    assert f"--models_mount=/models={ROOT / 'model_repo'}" in command
    assert "--enable_batching" in command
    assert f"--batching_parameters_file={BATCHING}" in command
    assert "--host=127.0.0.1" in command  # loopback unless told otherwise


def test_the_local_server_binds_the_host_it_is_given() -> None:
    command = server_command(8500, CONFIG, BATCHING, ROOT / "model_repo", binary="", host="10.0.0.5")
    assert "--host=10.0.0.5" in command


def test_real_binary_gets_the_same_files_with_absolute_paths() -> None:
    command = server_command(
        8500, CONFIG, BATCHING, ROOT / "model_repo", binary="/opt/tfs/tensorflow_model_server"
    )
    assert command[0] == "/opt/tfs/tensorflow_model_server"
    assert "--enable_batching" in command and f"--batching_parameters_file={BATCHING}" in command
    localized = Path(next(a for a in command if a.startswith("--model_config_file=")).split("=", 1)[1])
    text = localized.read_text()
    assert f'base_path: "{(ROOT / "model_repo").resolve()}/skin_analyzer"' in text
    assert "specific {" in text
