"""A model version run inside the calling process, behind the interface the pipeline calls over gRPC: the
benchmark's monolith (scripts/monolith.py) and the concern reports (export/concerns/served.py) run
Shine's own request path with it, only without the model server between.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from orchestrator.predict.client import PredictClient, VersionState
from orchestrator.predict.prediction import Prediction, batch_signals
from orchestrator.settings import Settings
from serving import contract


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
        patches: tuple[NDArray[np.uint8], NDArray[np.uint8]] | None = None,
    ) -> Prediction:
        import tensorflow as tf

        inputs = {"face": face, "mask": mask}
        if patches is not None:
            inputs |= dict(zip((spec.name for spec in contract.PATCH_INPUTS), patches, strict=True))
        tensors = self._signature()(**{name: tf.constant(array[None]) for name, array in inputs.items()})
        outputs = {name: tensor.numpy() for name, tensor in tensors.items()}
        signals = {name: value[0] for name, value in batch_signals(outputs).items()}
        prefix = contract.ZONE_PREFIX
        zones = {k[len(prefix) :]: v[0] for k, v in outputs.items() if k.startswith(prefix)} or None
        peaks = outputs[contract.ACNE_PEAKS.name][0]
        return Prediction(contract.MODEL_NAME, self.version, signals, peaks, zones)

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
