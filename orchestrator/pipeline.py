"""The request path as a pipeline: decode -> face (detect, landmarks, pose, align, regions) -> predict ->
post-score -> answer (-> overlay picture, when asked).

Each stage is timed; the answer names the model version that produced it (and the label it was routed
by) and is scored with that version's calibration. Raises Shine's errors only.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

from orchestrator.answer import (
    AcneScore,
    Analysis,
    FaceInfo,
    ImageInfo,
    Lesion,
    ModelInfo,
    Overlay,
    Quality,
    Recommendation,
    Region,
)
from orchestrator.answer import Box as BoxInfo
from orchestrator.decode.images import decode_image
from orchestrator.errors import FaceTooSmall, VersionGone
from orchestrator.face.detection import Box
from orchestrator.face.patches import PatchCutter, Slots, cut_slots
from orchestrator.face.quality import measure_quality
from orchestrator.face.stage import FaceGeometry, Geometry
from orchestrator.notices import region_reason, warning
from orchestrator.predict.client import PredictClient
from orchestrator.predict.prediction import Prediction
from orchestrator.predict.routing import Route, VersionRouter
from orchestrator.scoring.concerns import lesion_labels, usable_labels
from orchestrator.scoring.overlay import draw_overlay
from orchestrator.scoring.recommendations import Recommender
from orchestrator.scoring.scorer import PatchOutcome, ScorerRegistry
from orchestrator.settings import Settings
from serving import contract

logger = logging.getLogger(__name__)


class Timer:
    """Milliseconds per named stage: wall-clock time, and the CPU time of the thread that ran it (the
    request's own work; helper threads a library starts are not in it)."""

    def __init__(self) -> None:
        self.stages: dict[str, float] = {}
        self.cpu_ms: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start, start_cpu = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            self.stages[name] = round((time.perf_counter() - start) * 1000.0, 2)
            self.cpu_ms[name] = round((time.thread_time() - start_cpu) * 1000.0, 2)


class Pipeline:
    """Turns uploaded bytes into a skin report."""

    def __init__(
        self,
        settings: Settings,
        geometry: FaceGeometry,
        client: PredictClient,
        router: VersionRouter,
        scorers: ScorerRegistry,
        recommender: Recommender,
    ) -> None:
        self.settings = settings
        self.geometry = geometry
        self.client = client
        self.router = router
        self.scorers = scorers
        self.recommender = recommender
        self.cutter = PatchCutter()

    def analyze(self, data: bytes, timer: Timer, view: str = "auto", overlay: bool = False) -> Analysis:
        """Analyse one photo; `view` is one of face.stage.VIEW_REQUESTS; `overlay` adds the answer drawn
        on the photo (`overlay.png_base64`). Raises InvalidImage,
        UnsupportedFormat, ImageTooLargePixels, NoFaceFound, FaceTooSmall, ModelUnavailable,
        ModelTimeout, ModelBadResponse."""
        settings = self.settings
        with timer.stage("decode"):
            image = decode_image(
                data, max_pixels=settings.max_image_pixels, long_side_px=settings.decode_long_side_px
            )
        with timer.stage("face"):
            geometry = self.geometry.analyse(image.rgb, view)
        face_px = round(geometry.face_width_px / image.scale)
        if geometry.view != "closeup" and face_px < settings.min_face_px:
            raise FaceTooSmall(
                f"The face is {face_px} px wide; Shine needs at least {settings.min_face_px} px. "
                "Move closer or use a higher-resolution photo."
            )
        with timer.stage("quality"):
            quality = measure_quality(geometry, face_px)
        slots: Slots | None = None

        def patches(layout: contract.Layout | None) -> Slots | None:
            # Cut once, and only for a version that reads them (contract 4).
            nonlocal slots
            if slots is None and layout is not None and layout.patches:
                slots = cut_slots(self.cutter, image.rgb, geometry.points, geometry.scale)
            return slots if layout is not None and layout.patches else None

        route = self.router.choose()
        with timer.stage("patches"):
            patches(self.router.layout(route.version))
        with timer.stage("predict"):
            prediction, route = self._predict(geometry, route, patches)
        with timer.stage("postscore"):
            mask = geometry.mask
            usable = usable_labels(prediction.signals, mask.pixels, mask.visible)
            peak_labels = lesion_labels(prediction.acne_peaks, mask.labels)
            px_per_mm = geometry.scale.px_per_mm if geometry.scale is not None else None
            outcome = None if slots is None else PatchOutcome(px_per_mm, slots.unavailable)
            scored = self.scorers.for_version(prediction.version).score(
                prediction, peak_labels, usable, colour=not image.grayscale, patches=outcome
            )
            for entry in scored.concerns.values():
                if isinstance(entry, AcneScore):
                    self._place_lesions(entry.lesions, geometry, image.scale)
            warnings = []
            if geometry.faces_detected > 1:
                warnings.append(warning("MULTIPLE_FACES"))
            if image.grayscale:
                warnings.append(warning("GRAYSCALE_IMAGE"))
            if "outside_photo" in mask.reasons.values():
                warnings.append(warning("FACE_PARTLY_OUTSIDE"))
            if geometry.view != "closeup" and not all(usable[r] for r in contract.REGION_NAMES):
                warnings.append(warning("REGIONS_NOT_VISIBLE"))
            if any(
                getattr(entry, "reason_code", None) == "photo_too_small" for entry in scored.concerns.values()
            ):
                warnings.append(warning("PHOTO_TOO_SMALL"))
            quality_dict = quality.as_dict()
            quality_dict["warnings"] = warnings + quality.warnings
            if geometry.scale is not None:
                quality_dict["px_per_mm"] = round(geometry.scale.px_per_mm, 3)
                quality_dict["scale_source"] = geometry.scale.source
        concerns = {name: entry.dump() for name, entry in scored.concerns.items()}
        answer = Analysis(
            model=ModelInfo(
                name=prediction.model_name,
                version=prediction.version,
                label=route.label if route.version == prediction.version else None,
            ),
            view=geometry.view,
            faces_detected=geometry.faces_detected,
            face=FaceInfo(box=_box(geometry.box, image.scale), confidence=geometry.confidence),
            image=ImageInfo(
                format=image.format,
                width_px=image.width_px,
                height_px=image.height_px,
                exif_orientation=image.exif_orientation,
            ),
            regions=_regions(geometry, usable, image.scale),
            quality=Quality.model_validate(quality_dict),
            skin_tone=scored.skin_tone,
            skin_type=scored.skin_type,
            concerns=scored.concerns,
            overall=scored.overall,
            recommendations=[
                Recommendation.model_validate(r)
                for r in self.recommender.recommend(concerns, scored.skin_type.dump())
            ],
        )
        if overlay:
            with timer.stage("overlay"):
                png = draw_overlay(image.rgb, answer.dump())
                answer.overlay = Overlay(png_base64=base64.b64encode(png).decode("ascii"))
        return answer

    def _predict(
        self, geometry: Geometry, route: Route, patches: Callable[[contract.Layout | None], Slots | None]
    ) -> tuple[Prediction, Route]:
        """Send the face (and, to a version that reads them, its patch slots from `patches`) where the
        router says; a version unloaded under the request is forgotten and the request goes to the next
        choice, once. Returns the prediction and the route it took."""
        try:
            return self._send(geometry, route, patches), route
        except VersionGone:
            logger.warning("model version %d went away during a request; choosing again", route.version)
            self.router.forget(route.version)
            route = self.router.choose()
            return self._send(geometry, route, patches), route

    def _send(
        self, geometry: Geometry, route: Route, patches: Callable[[contract.Layout | None], Slots | None]
    ) -> Prediction:
        layout = self.router.layout(route.version)
        slots = patches(layout)
        inputs = None if slots is None else (slots.rgb, slots.skin)
        return self.client.predict(geometry.face, geometry.mask.labels, route.version, layout, inputs)

    @staticmethod
    def _place_lesions(lesions: list[Lesion], geometry: Geometry, scale: float) -> None:
        """Add each lesion's position in original-photo pixels beside its face-image position."""
        if not lesions:
            return
        size = geometry.alignment.size
        frame = np.array([[lesion.x_rel * size, lesion.y_rel * size] for lesion in lesions])
        photo = geometry.alignment.to_photo(frame) / scale
        for lesion, (x, y) in zip(lesions, photo, strict=True):
            lesion.x = round(float(x))
            lesion.y = round(float(y))


def _regions(geometry: Geometry, usable: dict[str, bool], scale: float) -> dict[str, Region]:
    """Each named region: whether it was read, why not, and its outline in original-photo pixels."""
    regions: dict[str, Region] = {}
    mask = geometry.mask
    for name in contract.REGION_NAMES:
        outline = mask.polygons.get(name)
        polygon = None
        if outline is not None and mask.visible.get(name, False):
            points = geometry.alignment.to_photo(outline) / scale
            polygon = [[round(float(x)), round(float(y))] for x, y in points]
        reason = mask.reasons.get(name)
        if reason is None and not usable[name]:
            reason = region_reason("too_little_skin")
        regions[name] = Region(visible=bool(usable[name]), reason=reason, polygon=polygon)
    return regions


def _box(box: Box, scale: float) -> BoxInfo:
    """A box in original-photo pixels (decoding may have reduced the photo by `scale`)."""
    return BoxInfo(
        x=round(box.x / scale),
        y=round(box.y / scale),
        width=round(box.width / scale),
        height=round(box.height / scale),
    )
