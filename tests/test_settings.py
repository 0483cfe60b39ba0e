"""Settings come from SHINE_* variables only, typed, and a bad value names its variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.settings import Settings, SettingsError


def test_defaults_without_environment() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.max_upload_bytes == 100 * 1024 * 1024


def test_values_are_typed() -> None:
    settings = Settings.from_env(
        {
            "SHINE_PREDICT_TIMEOUT_S": "2.5",
            "SHINE_MIN_FACE_PX": "120",
            "SHINE_CORS_ORIGINS": "https://a.example, https://b.example",
            "SHINE_MODEL_REPO_DIR": "/srv/models",
            "PROMETHEUS_MULTIPROC_DIR": "/tmp/m",
            "SHINE_CANARY_SHARE": "0.1",
            "UNRELATED": "x",
        }
    )
    assert settings.predict_timeout_s == 2.5
    assert settings.min_face_px == 120
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.model_repo_dir == Path("/srv/models")
    assert settings.prometheus_multiproc_dir == "/tmp/m"
    assert settings.canary_share == 0.1


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SHINE_PREDICT_TIMEOUT_S", "soon"),
        ("SHINE_MIN_FACE_PX", "0"),
        ("SHINE_MAX_UPLOAD_BYTES", "-1"),
        ("SHINE_MODEL_SERVER_ADDRESS", "localhost"),
        ("SHINE_PREDICT_RETRIES", "-2"),
        ("SHINE_CANARY_SHARE", "1.5"),
        ("SHINE_CANARY_SHARE", "-0.1"),
        ("SHINE_CANARY_SHARE", "nan"),
        ("SHINE_CANARY_SHARE", "a tenth"),
        ("SHINE_WORKERS", "33"),
    ],
)
def test_bad_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})
