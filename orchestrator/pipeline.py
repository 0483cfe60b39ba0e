"""The request path as a pipeline: decode -> detect face -> crop regions -> predict -> post-score -> answer.

Each stage is timed; the answer names the model version that produced it and is scored with that
version's calibration. Raises Shine's errors only.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from orchestrator.decode.images import decode_image
from orchestrator.errors import FaceTooSmall, NoFaceFound
from orchestrator.face.detection import FaceDetector
from orchestrator.face.quality import QualityMeter
from orchestrator.face.regions import crop_regions, to_image_point
from orchestrator.predict.client import PredictClient
from orchestrator.scoring.recommendations import Recommender
from orchestrator.scoring.scorer import ScorerRegistry
from orchestrator.settings import Settings
from serving import contract

logger = logging.getLogger(__name__)

# Concerns that need colour; a greyscale photo cannot show them.
COLOUR_CONCERNS = ("redness",)


class Timer:
    """Milliseconds per named stage."""

    def __init__(self) -> None:
        self.stages: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stages[name] = round((time.perf_counter() - start) * 1000.0, 2)


class Pipeline:
    """Turns uploaded bytes into a skin report."""

    def __init__(
        self,
        settings: Settings,
        detector: FaceDetector,
        client: PredictClient,
        scorers: ScorerRegistry,
        recommender: Recommender,
        quality: QualityMeter | None = None,
    ) -> None:
        self.settings = settings
        self.detector = detector
        self.client = client
        self.scorers = scorers
        self.recommender = recommender
        self.quality = quality or QualityMeter()
        self._side_lock = threading.Lock()
        self._side: tuple[int, ThreadPoolExecutor] | None = None

    def _side_pool(self) -> ThreadPoolExecutor:
        """Threads for work that overlaps the Predict wait, made in the process that uses them: the
        pipeline is built in gunicorn's master and threads do not survive the fork into workers."""
        with self._side_lock:
            if self._side is None or self._side[0] != os.getpid():
                self._side = (os.getpid(), ThreadPoolExecutor(4, thread_name_prefix="shine-side"))
            return self._side[1]

    def analyze(self, data: bytes, timer: Timer) -> dict[str, Any]:
        """Analyse one photo. Raises InvalidImage, UnsupportedFormat, ImageTooLargePixels, NoFaceFound,
        FaceTooSmall, ModelUnavailable, ModelTimeout, ModelBadResponse."""
        settings = self.settings
        with timer.stage("decode"):
            image = decode_image(
                data, max_pixels=settings.max_image_pixels, long_side_px=settings.decode_long_side_px
            )
        with timer.stage("detect"):
            faces = self.detector.detect(image.rgb)
        if not faces:
            raise NoFaceFound()
        face = faces[0]
        face_px = round(face.box.width / image.scale)
        if face_px < settings.min_face_px:
            raise FaceTooSmall(
                f"The face is {face_px} px wide; Shine needs at least {settings.min_face_px} px. "
                "Move closer or use a higher-resolution photo."
            )
        with timer.stage("crop"):
            crops = crop_regions(image.rgb, face.box)
        # Photo quality needs only the pixels: measured while the model server works (OpenCV and the
        # gRPC wait both release the GIL).
        quality_future = self._side_pool().submit(self.quality.measure, image.rgb, face.box, face_px, [])
        with timer.stage("predict"):
            prediction = self.client.predict(crops.batch)
        measured = quality_future.result()
        with timer.stage("postscore"):
            scored = self.scorers.for_version(prediction.version).score(prediction, crops.coverage)
            warnings = []
            if len(faces) > 1:
                warnings.append("MULTIPLE_FACES")
            if image.grayscale:
                warnings.append("GRAYSCALE_IMAGE")
            if min(crops.coverage) < 1.0:
                warnings.append("FACE_PARTLY_OUTSIDE")
            if sum(scored["usable_regions"].values()) < len(contract.REGION_NAMES):
                warnings.append("REGIONS_SKIPPED")
            quality = dataclasses.replace(measured, warnings=warnings + measured.warnings)
            concerns = scored["concerns"]
            if image.grayscale:
                for name in COLOUR_CONCERNS:
                    concerns[name].update(score=None, severity=None, raw=None)
                scored["skin_tone"] = {"ita_deg": None, "category": None, "lab": None}
            self._place_lesions(concerns["acne"], crops.boxes, image.scale)
        return {
            "model": {"name": prediction.model_name, "version": prediction.version},
            "faces_detected": len(faces),
            "face": {
                "box": _box_dict(face.box, image.scale),
                "confidence": face.confidence,
            },
            "image": {
                "format": image.format,
                "width_px": image.width_px,
                "height_px": image.height_px,
                "exif_orientation": image.exif_orientation,
            },
            "regions": {
                name: _box_dict(box, image.scale)
                for name, box in zip(contract.REGION_NAMES, crops.boxes, strict=True)
            },
            "quality": quality.as_dict(),
            "skin_tone": scored["skin_tone"],
            "skin_type": scored["skin_type"],
            "concerns": concerns,
            "overall": scored["overall"],
            "recommendations": self.recommender.recommend(concerns, scored["skin_type"]),
        }

    @staticmethod
    def _place_lesions(acne: dict[str, Any], boxes: tuple[Any, ...], scale: float) -> None:
        """Add each lesion's position in original-photo pixels beside its crop-relative position."""
        by_name = dict(zip(contract.REGION_NAMES, boxes, strict=True))
        for lesion in acne.get("lesions", []):
            x, y = to_image_point(by_name[lesion["region"]], lesion["y_rel"], lesion["x_rel"])
            lesion["x"] = round(x / scale)
            lesion["y"] = round(y / scale)


def _box_dict(box: Any, scale: float) -> dict[str, int]:
    """A box in original-photo pixels (decoding may have reduced the photo by `scale`)."""
    return {
        "x": round(box.x / scale),
        "y": round(box.y / scale),
        "width": round(box.width / scale),
        "height": round(box.height / scale),
    }
