"""Writing a version folder: the SavedModel with the contract's signature, and TF Serving warmup records.

Warmup records hold synthetic faces and masks, not photos: their job is to make the server build its
kernels for the batch sizes it will see before the version goes AVAILABLE, and no photo from the data
folder may be copied into the repository.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import tensorflow as tf
from numpy.typing import NDArray
from tensorflow_serving.apis import prediction_log_pb2

from export.model import SkinModel
from serving import contract
from serving.tensors import fill_tensor_proto

logger = logging.getLogger(__name__)

# Batch sizes to warm: one face and a merged pair. The batch dimension is free in the signature, so
# these build every kernel; more would only grow the version folder (each face is 0.6 MB).
WARMUP_FACES = (1, 2)


def write_saved_model(model: SkinModel, path: Path) -> None:
    """Save `model` at `path` with the contract's signature as serving_default."""
    tf.saved_model.save(model, str(path), signatures={contract.SIGNATURE_NAME: model.serve})
    logger.info("wrote SavedModel %s", path)


def synthetic_faces(faces: int, seed: int = 0) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """Deterministic skin-coloured faces with shading and fine texture, and masks that give every
    label a band of the oval, for warmup and validation only."""
    rng = np.random.default_rng(seed)
    size = contract.FACE_SIZE_PX
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    images = np.empty((faces, size, size, 3), dtype=np.uint8)
    masks = np.zeros((faces, size, size), dtype=np.uint8)
    oval = ((xx - 0.5) / 0.33) ** 2 + ((yy - 0.5) / 0.42) ** 2 <= 1.0
    band = np.minimum((yy * len(contract.LABEL_NAMES)).astype(np.uint8), len(contract.LABEL_NAMES) - 1) + 1
    for i in range(faces):
        base = rng.uniform([90, 60, 45], [235, 190, 165])
        shade = 0.85 + 0.15 * np.sin(np.pi * (xx + yy * rng.uniform(0.3, 1.0)))
        noise = rng.normal(0.0, 4.0, size=(size, size, 3))
        images[i] = np.clip(base * shade[..., None] + noise, 0, 255).astype(np.uint8)
        masks[i] = np.where(oval, band, contract.NOT_SKIN)
    return images, masks


def synthetic_slots(faces: NDArray[np.uint8]) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """Patch slots for synthetic faces (contract 4): each slot a square of its face, shifted per slot,
    with an elliptic skin mask, for warmup and validation only."""
    size, count = contract.PATCH_SIZE_PX, len(contract.PATCH_SLOTS)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    skin = (((xx - 0.5) / 0.45) ** 2 + ((yy - 0.5) / 0.35) ** 2 <= 1.0).astype(np.uint8)
    patches = np.empty((len(faces), count, size, size, 3), dtype=np.uint8)
    for slot in range(count):
        offset = (slot * 7) % (contract.FACE_SIZE_PX - size)
        patches[:, slot] = faces[:, offset : offset + size, offset : offset + size]
    return patches, np.broadcast_to(skin, (len(faces), count, size, size)).copy()


def write_warmup(path: Path, patches: bool = True) -> int:
    """Write assets.extra/tf_serving_warmup_requests at version folder `path` (with patch slots for a
    contract-4 model); returns the record count."""
    target = path / "assets.extra" / contract.WARMUP_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(target)) as writer:
        for faces in WARMUP_FACES:
            log = prediction_log_pb2.PredictionLog()
            request = log.predict_log.request
            request.model_spec.name = contract.MODEL_NAME
            request.model_spec.signature_name = contract.SIGNATURE_NAME
            images, masks = synthetic_faces(faces, seed=faces)
            fill_tensor_proto(request.inputs["face"], images)
            fill_tensor_proto(request.inputs["mask"], masks)
            if patches:
                slots, skin = synthetic_slots(images)
                fill_tensor_proto(request.inputs["patches"], slots)
                fill_tensor_proto(request.inputs["patch_skin"], skin)
            writer.write(log.SerializeToString())
    return len(WARMUP_FACES)
