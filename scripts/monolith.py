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
import threading
from pathlib import Path
from typing import Any

import numpy as np
from flask import Flask
from numpy.typing import NDArray

from orchestrator.predict.client import PredictClient, VersionState
from orchestrator.predict.prediction import Prediction, batch_signals
from orchestrator.settings import Settings
from orchestrator.web.app import create_app
from serving import contract

WORKERS = 5
TIMEOUT_S = 900


class InProcessModel(PredictClient):
    """The model run inside the web worker, behind the interface the pipeline calls over gRPC."""

    def __init__(self, settings: Settings, version_dir: Path) -> None:
        super().__init__(settings)
        self.version_dir = version_dir
        self.version = int(version_dir.name)
        self._load_lock = threading.Lock()
        self._loaded: tuple[int, Any] | None = None

    def _signature(self) -> Any:
        """The SavedModel's serving signature, loaded once per process (after gunicorn's fork)."""
        with self._load_lock:
            if self._loaded is None or self._loaded[0] != os.getpid():
                import tensorflow as tf

                loaded = tf.saved_model.load(str(self.version_dir))
                self._loaded = (os.getpid(), loaded.signatures[contract.SIGNATURE_NAME])
            return self._loaded[1]

    def predict(
        self,
        face: NDArray[np.uint8],
        mask: NDArray[np.uint8],
        version: int | None = None,
        layout: contract.Layout | None = None,
    ) -> Prediction:
        import tensorflow as tf

        tensors = self._signature()(face=tf.constant(face[None]), mask=tf.constant(mask[None]))
        outputs = {name: tensor.numpy() for name, tensor in tensors.items()}
        signals = {name: value[0] for name, value in batch_signals(outputs).items()}
        return Prediction(contract.MODEL_NAME, self.version, signals, outputs[contract.ACNE_PEAKS.name][0])

    def model_status(self) -> list[VersionState]:
        return [VersionState(self.version, "AVAILABLE")]

    def label_version(self, label: str) -> int | None:
        return None

    def signature(self, version: int) -> dict[str, dict[str, tuple[str, tuple[int | None, ...]]]]:
        signature = self._signature()
        inputs = signature.structured_input_signature[1]
        outputs = signature.structured_outputs
        return {
            "inputs": {name: (spec.dtype.name, tuple(spec.shape.as_list())) for name, spec in inputs.items()},
            "outputs": {
                name: (tensor.dtype.name, tuple(tensor.shape.as_list())) for name, tensor in outputs.items()
            },
        }


def create_monolith() -> Flask:
    """The baseline app: Shine's Flask app with the model in-process (SHINE_MONOLITH_VERSION_DIR)."""
    settings = Settings.from_env()
    version_dir = Path(os.environ["SHINE_MONOLITH_VERSION_DIR"])
    return create_app(settings, client=InProcessModel(settings, version_dir))
