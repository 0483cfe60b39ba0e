"""Face detection: OpenCV Haar cascades, verified so that coins, pets and rocks are not taken for faces.

The frontal-face cascade proposes boxes; a box is kept only when two independently trained frontal
cascades (alt, alt2) also find a face there and, in colour photos, the middle of the box is mostly
skin-coloured. Search runs coarse to fine on reduced grey copies (160, 320, then 640 px on the long
side) and stops at the first size that finds a face, so a selfie costs one small search; boxes come
back in full-image pixels.
"""

from __future__ import annotations

import logging
import math
import queue
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

import cv2
import numpy as np
from numpy.typing import NDArray

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Skin chroma box in YCrCb (Chai & Ngan, "Face segmentation using skin-color map in videophone
# applications", IEEE TCSVT 9(4), 1999): Cr in [133, 173], Cb in [77, 127].
SKIN_CR = (133, 173)
SKIN_CB = (77, 127)
# A photo whose mean chroma distance from neutral is below this carries no colour to test.
GREY_CHROMA = 2.0
# Share of skin-coloured pixels the middle of a colour face box must reach. Real faces in the test
# photos score 0.67-1.0 (dark skin with makeup 0.91); the false boxes on rocks and coins 0.0-0.3.
MIN_SKIN_SHARE = 0.5
# Long sides of the reduced copies searched, coarse to fine. The cascade's window is 24 px, so the
# coarsest copy finds faces of at least 15% of the photo's long side: most selfies.
SEARCH_SIDES_PX = (160, 320, 640)
WINDOW_PX = 24
# Neighbouring hits a proposal needs: 3 let a dog and a coin through verification, 5 lost a portrait.
MIN_NEIGHBORS = 4
# Verification runs on the candidate's surroundings scaled so the face is about this wide: enough
# detail for the verifying cascades to reject coins and pets, small enough to be cheap.
VERIFY_FACE_PX = 64
# Level weights of the default cascade's last stage: real faces give about 3-12, spurious boxes
# 0.5-3.5. Squashed around this centre into a 0..1 confidence (a margin, not a probability).
WEIGHT_CENTRE = 2.5


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in image pixels."""

    x: int
    y: int
    width: int
    height: int

    @property
    def area(self) -> int:
        return self.width * self.height

    def scaled(self, factor: float) -> Box:
        return Box(
            round(self.x * factor),
            round(self.y * factor),
            round(self.width * factor),
            round(self.height * factor),
        )


@dataclass(frozen=True)
class Face:
    """One verified face: its box in the image it was found in and the detector's confidence."""

    box: Box
    confidence: float


class CascadePool(Generic[T]):
    """Cascade classifiers lent out one caller at a time: a CascadeClassifier keeps per-call buffers,
    so two threads must never share one. Prefilled at start-up, in gunicorn's master before the fork,
    so workers start with loaded classifiers; grows when more threads ask at once."""

    def __init__(self, factory: Callable[[], T], prefill: int = 2) -> None:
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


class _Cascades:
    """The three frontal cascades, loaded together."""

    def __init__(self) -> None:
        root = cv2.data.haarcascades  # type: ignore[attr-defined]
        self.default = _load(root + "haarcascade_frontalface_default.xml")
        self.alt = _load(root + "haarcascade_frontalface_alt.xml")
        self.alt2 = _load(root + "haarcascade_frontalface_alt2.xml")


def _load(path: str) -> cv2.CascadeClassifier:
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise RuntimeError(f"cannot load the Haar cascade {path}")
    return cascade


class FaceDetector:
    """Finds verified frontal faces, largest first."""

    def __init__(self, detect_long_side_px: int = 640) -> None:
        self.search_sides = tuple(side for side in SEARCH_SIDES_PX if side < detect_long_side_px)
        self.search_sides += (detect_long_side_px,)
        # Loading fails here, at start-up, if the cascade files are missing.
        self._pool = CascadePool(_Cascades)

    def detect(self, rgb: NDArray[np.uint8]) -> list[Face]:
        """Return the verified faces in an RGB image, largest first, boxes in its pixels."""
        height, width = rgb.shape[:2]
        previous: float | None = None
        for side in self.search_sides:
            factor = min(1.0, side / max(height, width))
            # Faces big enough for the previous, coarser copy were searched there already.
            largest = None if previous is None else round(WINDOW_PX * factor / previous * 1.5)
            faces = self._search(rgb, factor, largest)
            if faces or factor == 1.0:
                return faces
            previous = factor
        return []

    def _search(self, rgb: NDArray[np.uint8], factor: float, largest: int | None) -> list[Face]:
        height, width = rgb.shape[:2]
        small = rgb
        if factor < 1.0:
            size = (max(1, round(width * factor)), max(1, round(height * factor)))
            small = np.asarray(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)
        grey = np.asarray(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY), dtype=np.uint8)
        ycrcb = np.asarray(cv2.cvtColor(small, cv2.COLOR_RGB2YCrCb), dtype=np.uint8)
        has_colour = _chroma(ycrcb) >= GREY_CHROMA
        # (0, 0) means no upper bound to OpenCV.
        biggest = (0, 0) if largest is None else (largest, largest)
        faces = []
        with self._pool.borrow() as cascades:
            rects, _levels, weights = cascades.default.detectMultiScale3(
                grey,
                scaleFactor=1.1,
                minNeighbors=MIN_NEIGHBORS,
                minSize=(WINDOW_PX, WINDOW_PX),
                maxSize=biggest,
                outputRejectLevels=True,
            )
            for rect, weight in zip(rects, np.ravel(weights), strict=True):
                box = Box(*(int(v) for v in rect))
                if not _confirmed(cascades, grey, box):
                    continue
                if has_colour and _skin_share(ycrcb, box) < MIN_SKIN_SHARE:
                    continue
                confidence = 1.0 / (1.0 + math.exp(-(float(weight) - WEIGHT_CENTRE)))
                faces.append(Face(box.scaled(1.0 / factor), round(confidence, 3)))
        faces.sort(key=lambda face: face.box.area, reverse=True)
        return faces


def _chroma(ycrcb: NDArray[np.uint8]) -> float:
    """Mean distance of the chroma channels from neutral grey (128)."""
    chroma = np.abs(ycrcb[..., 1:].astype(np.int16) - 128)
    return float(chroma.mean()) * 2.0


def _confirmed(cascades: _Cascades, grey: NDArray[np.uint8], box: Box) -> bool:
    """True when both the alt and alt2 cascades find a face of similar size around the box."""
    margin = box.width // 4
    x0, y0 = max(0, box.x - margin), max(0, box.y - margin)
    roi = grey[y0 : box.y + box.height + margin, x0 : box.x + box.width + margin]
    scale = min(1.0, VERIFY_FACE_PX / box.width)
    if scale < 1.0:
        roi = np.asarray(cv2.resize(roi, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA), np.uint8)
    face_px = box.width * scale
    low, high = max(WINDOW_PX - 4, int(face_px * 0.6)), int(face_px * 1.5) + 1
    for cascade in (cascades.alt, cascades.alt2):
        found = cascade.detectMultiScale(
            roi, scaleFactor=1.05, minNeighbors=3, minSize=(low, low), maxSize=(high, high)
        )
        if len(found) == 0:
            return False
    return True


def _skin_share(ycrcb: NDArray[np.uint8], box: Box) -> float:
    """Share of skin-chroma pixels in the middle half of the box."""
    inner = ycrcb[
        box.y + box.height // 4 : box.y + 3 * box.height // 4,
        box.x + box.width // 4 : box.x + 3 * box.width // 4,
    ]
    if inner.size == 0:
        return 0.0
    cr, cb = inner[..., 1], inner[..., 2]
    skin = (cr >= SKIN_CR[0]) & (cr <= SKIN_CR[1]) & (cb >= SKIN_CB[0]) & (cb <= SKIN_CB[1])
    return float(skin.mean())
