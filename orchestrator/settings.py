"""The orchestrator's settings: one frozen dataclass, read from the environment once at start-up.

`Settings.from_env` is the only reader of the environment; a bad value fails start-up and names the
variable. Every variable is `SHINE_` + the field name in upper case, except the few a library names.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving import contract

ENV_PREFIX = "SHINE_"
# Worker processes one orchestrator may run: they share one line of analyses (orchestrator/web/workqueue.py).
MAX_WORKERS = 32
MIB = 1024 * 1024


# Variables whose names are fixed by a library rather than by Shine.
_ENV_NAMES = {"prometheus_multiproc_dir": "PROMETHEUS_MULTIPROC_DIR"}


class SettingsError(ValueError):
    """A setting from the environment is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """Everything the orchestrator can be told; defaults suit a single machine."""

    # The model server (TF Serving or the local model server), gRPC host:port.
    model_server_address: str = "127.0.0.1:8500"
    model_name: str = contract.MODEL_NAME
    # Ask for a labelled version ("stable", "canary"); empty means the newest usable version.
    model_version_label: str = ""
    # Share of requests (0-1) sent to the version the server's `canary` label names, when it is usable.
    canary_share: float = 0.0
    # Where each version's assets.extra/ (calibration, model card) is read from.
    model_repo_dir: Path = Path("model_repo")
    predict_timeout_s: float = 5.0
    status_timeout_s: float = 1.0
    # Retries of UNAVAILABLE, all inside predict_timeout_s.
    predict_retries: int = 2
    retry_backoff_s: float = 0.05
    # Consecutive model-server failures that open the circuit, and how long it stays open.
    breaker_failures: int = 5
    breaker_open_s: float = 5.0
    # Uploads.
    max_upload_bytes: int = 100 * MIB
    max_image_pixels: int = 64_000_000
    # Large photos are decoded at reduced size down to this long side when the format allows it;
    # below 2016 so a 4032x3024 phone JPEG decodes at half size.
    decode_long_side_px: int = 2000
    min_face_px: int = 80
    # The scene classifier asked about photos without a confirmed face (built by `make`).
    scene_model_path: Path = Path("build/models/scene_classifier.tflite")
    # How long the chosen model version is trusted before the model server is asked again.
    routing_refresh_s: float = 2.0
    # CORS: origins allowed to call the API from a browser; "*" allows any (the guest endpoint is public).
    cors_origins: tuple[str, ...] = ("*",)
    # Guest rate limit per client IP: sustained rate and burst.
    rate_limit_per_minute: int = 60
    rate_limit_burst: int = 20
    # Addresses of reverse proxies whose X-Forwarded-For is believed; empty trusts none.
    trusted_proxies: tuple[str, ...] = ()
    # Routine suggestions table.
    recommendations_file: Path = Path("configs/recommendations.json")
    log_level: str = "INFO"
    # gunicorn (configs/gunicorn.conf.py): where to listen, worker processes (0: one per CPU core, at most
    # four) and request threads per worker.
    bind: str = "0.0.0.0:8000"
    workers: int = 0
    threads: int = 4
    # The longest a client should wait for an analysis: a request whose turn in the line cannot come in
    # time for an answer by then is refused at once (503 OVERLOADED with Retry-After).
    answer_deadline_s: float = 10.0
    # Threads OpenCV may use inside one call; 0 leaves OpenCV's own choice (every core). One: the
    # analyses running side by side already fill the cores (see configs/gunicorn.conf.py).
    opencv_threads: int = 1
    # Keep the metrics directory when gunicorn exits (tests read it afterwards).
    keep_metrics_dir: bool = False
    # Set by gunicorn's config (PROMETHEUS_MULTIPROC_DIR, prometheus_client's own name for it) so /metrics
    # sums all workers; empty outside gunicorn.
    prometheus_multiproc_dir: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `SHINE_*` variables; raises SettingsError naming a bad variable."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = _ENV_NAMES.get(f.name, ENV_PREFIX + f.name.upper())
            if name not in env:
                continue
            values[f.name] = _parse(name, env[name], f.default)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise SettingsError if values are out of range."""
        positive = {
            "predict_timeout_s": self.predict_timeout_s,
            "status_timeout_s": self.status_timeout_s,
            "max_upload_bytes": self.max_upload_bytes,
            "max_image_pixels": self.max_image_pixels,
            "decode_long_side_px": self.decode_long_side_px,
            "routing_refresh_s": self.routing_refresh_s,
            "min_face_px": self.min_face_px,
            "rate_limit_per_minute": self.rate_limit_per_minute,
            "rate_limit_burst": self.rate_limit_burst,
            "breaker_failures": self.breaker_failures,
        }
        for key, value in positive.items():
            if value <= 0:
                raise SettingsError(f"{ENV_PREFIX}{key.upper()} must be positive, got {value!r}")
        if self.workers > MAX_WORKERS:
            raise SettingsError(f"{ENV_PREFIX}WORKERS must be at most {MAX_WORKERS}, got {self.workers}")
        if self.workers < 0 or self.threads <= 0 or self.opencv_threads < 0:
            raise SettingsError(
                f"{ENV_PREFIX}WORKERS and {ENV_PREFIX}OPENCV_THREADS must not be negative, "
                f"{ENV_PREFIX}THREADS must be positive"
            )
        if self.predict_retries < 0 or self.retry_backoff_s < 0 or self.breaker_open_s < 0:
            raise SettingsError(
                f"{ENV_PREFIX}PREDICT_RETRIES, RETRY_BACKOFF_S and BREAKER_OPEN_S must not be negative"
            )
        if not 0.0 <= self.canary_share <= 1.0:  # also refuses NaN
            raise SettingsError(
                f"{ENV_PREFIX}CANARY_SHARE must be between 0 and 1, got {self.canary_share!r}"
            )
        if ":" not in self.model_server_address:
            raise SettingsError(
                f"{ENV_PREFIX}MODEL_SERVER_ADDRESS must be host:port, got {self.model_server_address!r}"
            )


def _parse(name: str, raw: str, default: Any) -> Any:
    """Parse one variable to the type of its default; raises SettingsError naming the variable."""
    try:
        if isinstance(default, bool):
            lowered = raw.strip().lower()
            if lowered not in {"1", "0", "true", "false", "yes", "no"}:
                raise ValueError(raw)
            return lowered in {"1", "true", "yes"}
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, Path):
            return Path(raw)
        if isinstance(default, tuple):
            return tuple(item.strip() for item in raw.split(",") if item.strip())
        return raw
    except ValueError as exc:
        raise SettingsError(f"{name}: cannot read {raw!r} as {type(default).__name__}") from exc
