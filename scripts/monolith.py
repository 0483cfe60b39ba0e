"""The naive baseline of the benchmark, not part of the service: the deployment Shine replaces, rebuilt
so the benchmark can measure both on the same machine and the same photos.

The original deployment ran TensorFlow inside every web worker: gunicorn with sync workers (six of
them on a 32 GB machine, 15-minute timeouts), each worker importing TensorFlow and loading the model.
Here each worker does the same with Shine's own code: the Flask app of orchestrator.web.app, the same
decode, face stage and post-scoring, with the model called in the worker's own process instead of over
gRPC. Scaled to 2 cores: gunicorn's 2 x cores + 1 = 5 sync workers, the 15-minute timeout, no preload
(each worker loads TensorFlow itself, as the original's did).

    SHINE_MONOLITH_VERSION_DIR=model_repo/skin_analyzer/5 gunicorn --workers 5 --timeout 900 \\
        'scripts.monolith:create_monolith()'
"""

from __future__ import annotations

import os
from pathlib import Path

from flask import Flask

from export.inprocess import InProcessModel
from orchestrator.settings import Settings
from orchestrator.web.app import create_app

WORKERS = 5
TIMEOUT_S = 900


def create_monolith() -> Flask:
    """The baseline app: Shine's Flask app with the model in-process (SHINE_MONOLITH_VERSION_DIR)."""
    settings = Settings.from_env()
    version_dir = Path(os.environ["SHINE_MONOLITH_VERSION_DIR"])
    return create_app(settings, client=InProcessModel(settings, version_dir))
