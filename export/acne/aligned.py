"""ACNE04 as the service sees it: every photo through the service's decode and face stage, its lesion
boxes carried into the aligned frame, cached per split (build/acne/aligned_<split>.npz) with a summary
of what the geometry refused and which lesions fall outside the frame or the skin the mask vouches for.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from export.acne.dataset import load_split
from orchestrator.decode.images import decode_image
from orchestrator.errors import NoFaceFound
from orchestrator.face.alignment import Alignment
from orchestrator.face.scene import SceneCheck
from orchestrator.face.stage import VIEWS, FaceGeometry
from orchestrator.settings import Settings
from serving import contract

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
SCENE_MODEL = ROOT / "build" / "models" / "scene_classifier.tflite"
# Bump when what the cache holds, or how it is made, changes: an older cache is then rebuilt.
CACHE_FORMAT = 1
OUTSIDE_FRAME = -1  # box_label of a lesion whose centre is outside the aligned frame
# Which labelled lesions are training or scoring targets, by the mask label under their centre.
TARGETS = ("in_frame", "on_skin", "regions")


@dataclass(frozen=True)
class AlignedSplit:
    """One ACNE04 split as the model receives it: the photos the face stage analysed, aligned, with
    their masks and their lesion boxes in frame pixels."""

    split: str
    files: NDArray[np.str_]  # [N] analysed photos, index.csv order
    grades: NDArray[np.int64]  # [N] ACNE04 grade 0-3
    views: NDArray[np.str_]  # [N] orchestrator.face.stage.VIEWS
    faces: NDArray[np.uint8]  # [N, S, S, 3] RGB, S = contract.FACE_SIZE_PX
    labels: NDArray[np.uint8]  # [N, S, S] mask labels (contract.LABEL_NAMES, 0 not skin)
    matrices: NDArray[np.float64]  # [N, 2, 3] photo -> frame
    photo_counts: NDArray[np.int64]  # [N] lesions labelled on the whole photo
    box_image: NDArray[np.int64]  # [M] which photo each box belongs to (ascending)
    boxes: NDArray[np.float32]  # [M, 4] frame pixels (xmin, ymin, xmax, ymax), all boxes of the photos
    box_label: NDArray[np.int64]  # [M] mask label under the box centre; OUTSIDE_FRAME outside the frame
    refused: NDArray[np.str_]  # [R] photos the face stage refused

    def __len__(self) -> int:
        return len(self.files)

    def image_boxes(self, targets: str = "in_frame") -> list[NDArray[np.float32]]:
        """Each photo's target boxes: "in_frame" (centre inside the frame), "on_skin" (centre on mask
        label > 0) or "regions" (centre on a named region, not other skin). Raises ValueError otherwise."""
        if targets == "in_frame":
            keep = self.box_label != OUTSIDE_FRAME
        elif targets == "on_skin":
            keep = self.box_label > contract.NOT_SKIN
        elif targets == "regions":
            keep = (self.box_label > contract.NOT_SKIN) & (self.box_label <= len(contract.REGION_NAMES))
        else:
            raise ValueError(f"targets must be one of {TARGETS}, got {targets!r}")
        ends = np.searchsorted(self.box_image, np.arange(len(self) + 1))
        return [self.boxes[a:b][keep[a:b]] for a, b in pairwise(ends)]


def frame_boxes(boxes: NDArray[np.floating], alignment: Alignment) -> NDArray[np.float32]:
    """Photo boxes [N, 4] (xmin, ymin, xmax, ymax) -> the bounding boxes of their four mapped corners."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    corners = boxes[:, [0, 1, 2, 1, 2, 3, 0, 3]].reshape(-1, 2)
    mapped = alignment.to_frame(corners).reshape(-1, 4, 2)
    return np.concatenate([mapped.min(axis=1), mapped.max(axis=1)], axis=1).astype(np.float32)


def centre_labels(boxes: NDArray[np.float32], labels: NDArray[np.uint8]) -> NDArray[np.int64]:
    """The mask label under each box centre, OUTSIDE_FRAME where the centre is outside the frame."""
    height, width = labels.shape
    cx = (boxes[:, 0] + boxes[:, 2]) / 2.0
    cy = (boxes[:, 1] + boxes[:, 3]) / 2.0
    inside = (cx >= 0) & (cx < width) & (cy >= 0) & (cy < height)
    result = np.full(len(boxes), OUTSIDE_FRAME, dtype=np.int64)
    # Continuous coordinates: pixel (i, j) covers [i, i + 1) x [j, j + 1).
    result[inside] = labels[cy[inside].astype(np.int64), cx[inside].astype(np.int64)]
    return result


def service_geometry(scene_model: Path = SCENE_MODEL) -> FaceGeometry:
    """The face stage as the service builds it, scene check included (built here when missing)."""
    if not scene_model.is_file():
        from export.scene import write_scene_model

        write_scene_model(scene_model)
    return FaceGeometry(scene=SceneCheck(scene_model))


def align_split(data_dir: Path, split: str, geometry: FaceGeometry) -> AlignedSplit:
    """Run every photo of a split through the service's decode and face stage.

    Raises FileNotFoundError when the data is absent, ValueError for a photo with an EXIF rotation (its
    boxes would need rotating; ACNE04's Roboflow export has none).
    """
    settings = Settings()
    started = time.monotonic()
    samples = load_split(data_dir, split)
    kept: list[int] = []
    views: list[str] = []
    faces: list[NDArray[np.uint8]] = []
    labels: list[NDArray[np.uint8]] = []
    matrices: list[NDArray[np.float64]] = []
    box_parts: list[NDArray[np.float32]] = []
    label_parts: list[NDArray[np.int64]] = []
    refused: list[str] = []
    for index, sample in enumerate(samples):
        image = decode_image(
            (data_dir / split / sample.file).read_bytes(),
            max_pixels=settings.max_image_pixels,
            long_side_px=settings.decode_long_side_px,
        )
        if image.exif_orientation != 1:
            raise ValueError(f"{sample.file} declares EXIF orientation {image.exif_orientation}")
        try:
            geometry_ = geometry.analyse(image.rgb)
        except NoFaceFound:
            refused.append(sample.file)
            continue
        if geometry_.view != "closeup" and geometry_.face_width_px / image.scale < settings.min_face_px:
            refused.append(sample.file)  # the service answers FACE_TOO_SMALL
            continue
        boxes = frame_boxes(sample.boxes * image.scale, geometry_.alignment)
        kept.append(index)
        views.append(geometry_.view)
        faces.append(geometry_.face)
        labels.append(geometry_.mask.labels)
        matrices.append(geometry_.alignment.matrix)
        box_parts.append(boxes)
        label_parts.append(centre_labels(boxes, geometry_.mask.labels))
    size = contract.FACE_SIZE_PX
    aligned = AlignedSplit(
        split=split,
        files=np.array([samples[i].file for i in kept], dtype=np.str_),
        grades=np.array([samples[i].grade for i in kept], dtype=np.int64),
        views=np.array(views, dtype=np.str_),
        faces=np.stack(faces) if faces else np.zeros((0, size, size, 3), np.uint8),
        labels=np.stack(labels) if labels else np.zeros((0, size, size), np.uint8),
        matrices=np.stack(matrices) if matrices else np.zeros((0, 2, 3)),
        photo_counts=np.array([samples[i].count for i in kept], dtype=np.int64),
        box_image=np.repeat(np.arange(len(kept)), [len(b) for b in box_parts]).astype(np.int64),
        boxes=np.concatenate(box_parts) if box_parts else np.zeros((0, 4), np.float32),
        box_label=np.concatenate(label_parts) if label_parts else np.zeros(0, np.int64),
        refused=np.array(refused, dtype=np.str_),
    )
    logger.info(
        "%s: %d photos analysed, %d refused, in %.0f s",
        split,
        len(kept),
        len(refused),
        time.monotonic() - started,
    )
    return aligned


def summarise(aligned: AlignedSplit, refused_lesions: int, refused_grades: list[int]) -> dict[str, object]:
    """Counts for the split's summary: photos analysed per view and refused, and where the labelled
    lesions of the analysed photos land (outside the frame, off the mask, on each label)."""
    label = aligned.box_label
    in_frame = label != OUTSIDE_FRAME
    names = ("not_skin", *contract.LABEL_NAMES)
    per_view: dict[str, dict[str, int]] = {}
    for view in VIEWS:
        photos = np.flatnonzero(aligned.views == view)
        boxes = np.isin(aligned.box_image, photos)
        per_view[view] = {
            "photos": len(photos),
            "lesions": int(boxes.sum()),
            "outside_frame": int((boxes & ~in_frame).sum()),
            "off_mask": int((boxes & (label == contract.NOT_SKIN)).sum()),
        }
    return {
        "split": aligned.split,
        "photos": len(aligned) + len(aligned.refused),
        "analysed": len(aligned),
        "refused": len(aligned.refused),
        "refused_by_grade": {str(g): refused_grades.count(g) for g in sorted(set(refused_grades))},
        "views": per_view,
        "lesions": {
            "labelled_on_analysed_photos": len(label),
            "labelled_on_refused_photos": refused_lesions,
            "outside_frame": int((~in_frame).sum()),
            "in_frame_off_mask": int((label == contract.NOT_SKIN).sum()),
            "in_frame_on_skin": int((label > contract.NOT_SKIN).sum()),
            "by_label": {names[k]: int((label == k).sum()) for k in range(len(names))},
        },
        "targets": {
            "in_frame": "every lesion whose centre is inside the frame (the training default)",
            "on_skin": "only lesions whose centre is on mask label > 0",
            "regions": "only lesions whose centre is on a named region (labels 1-7)",
        },
    }


def _save(path: Path, aligned: AlignedSplit) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.stem + ".partial.npz")
    np.savez_compressed(
        staging,
        format=np.int64(CACHE_FORMAT),
        **{name: getattr(aligned, name) for name in _ARRAYS},
    )
    staging.replace(path)  # a run killed mid-write leaves no cache that looks complete


_ARRAYS = (
    "files",
    "grades",
    "views",
    "faces",
    "labels",
    "matrices",
    "photo_counts",
    "box_image",
    "boxes",
    "box_label",
    "refused",
)


def _load(path: Path, split: str) -> AlignedSplit | None:
    with np.load(path, allow_pickle=False) as data:
        if "format" not in data.files or int(data["format"]) != CACHE_FORMAT:
            return None
        return AlignedSplit(split=split, **{name: data[name] for name in _ARRAYS})


def load_aligned_split(
    data_dir: Path,
    split: str,
    cache_dir: Path,
    geometry: Callable[[], FaceGeometry] = service_geometry,
) -> AlignedSplit:
    """The aligned split from cache_dir/aligned_<split>.npz, built (with its _summary.json) when missing
    or stale. Raises FileNotFoundError when the data is absent."""
    path = cache_dir / f"aligned_{split}.npz"
    if path.is_file():
        cached = _load(path, split)
        if cached is not None:
            return cached
        logger.info("%s is from an older format: rebuilding it", path)
    aligned = align_split(data_dir, split, geometry())
    samples = {s.file: s for s in load_split(data_dir, split)}
    refused = [samples[str(f)] for f in aligned.refused]
    summary = summarise(aligned, sum(s.count for s in refused), [s.grade for s in refused])
    _save(path, aligned)
    (cache_dir / f"aligned_{split}_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    lesions = summary["lesions"]
    assert isinstance(lesions, dict)
    logger.info(
        "%s: %d of %d photos analysed (%s); lesions on them %d, outside the frame %d, in the frame off "
        "the mask %d; %d lesions on refused photos",
        split,
        summary["analysed"],
        summary["photos"],
        ", ".join(f"{v} {Counter(aligned.views.tolist())[v]}" for v in VIEWS),
        lesions["labelled_on_analysed_photos"],
        lesions["outside_frame"],
        lesions["in_frame_off_mask"],
        lesions["labelled_on_refused_photos"],
    )
    return aligned
