"""ACNE04 as training data: VOC box parsing, grades from file names, CenterNet heatmap targets and the
random crops of aligned faces used for training (the faces themselves come from export.acne.aligned).
"""

from __future__ import annotations

import csv
import logging
import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

logger = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "valid", "test")
STRIDE = 4
_GRADE_PATTERN = re.compile(r"^levle(\d)_")


@dataclass(frozen=True)
class Sample:
    """One labelled photo: its file name, ACNE04 grade (0-3) and lesion boxes in pixels."""

    file: str
    grade: int
    boxes: NDArray[np.float32]  # [N, 4] as xmin, ymin, xmax, ymax

    @property
    def count(self) -> int:
        """Number of labelled lesions."""
        return int(self.boxes.shape[0])


def grade_from_name(file_name: str) -> int:
    """Read the ACNE04 severity grade from a `levleG_...` file name; raises ValueError otherwise."""
    match = _GRADE_PATTERN.match(Path(file_name).name)
    if match is None:
        raise ValueError(f"no levleG_ grade prefix in {file_name!r}")
    return int(match.group(1))


def parse_voc_boxes(xml_path: Path) -> NDArray[np.float32]:
    """Return every box of a Pascal-VOC file as [N, 4] (xmin, ymin, xmax, ymax), one class for all.

    Zero-extent boxes (lesions cut by Roboflow's crop augmentation at the border) are kept, as
    index.csv counts them. Raises ValueError for an inverted box.
    """
    root = ET.parse(xml_path).getroot()
    rows: list[list[float]] = []
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        if box is None:
            continue
        values = [float(box.findtext(key, "nan")) for key in ("xmin", "ymin", "xmax", "ymax")]
        if not (values[2] >= values[0] and values[3] >= values[1]):
            raise ValueError(f"inverted box {values} in {xml_path}")
        rows.append(values)
    return np.asarray(rows, dtype=np.float32).reshape(-1, 4)


def load_split(data_dir: Path, split: str) -> list[Sample]:
    """List the samples of one split in index.csv order; raises FileNotFoundError if data is absent."""
    index = data_dir / "index.csv"
    samples: list[Sample] = []
    with index.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["split"] != split:
                continue
            file = row["file"]
            boxes = parse_voc_boxes(data_dir / split / (Path(file).stem + ".xml"))
            samples.append(Sample(file=file, grade=grade_from_name(file), boxes=boxes))
    return samples


def render_heatmap(boxes: NDArray[np.float32], size_px: int, stride: int = STRIDE) -> NDArray[np.float32]:
    """Render the lesion-centre target of a square patch: [size/stride, size/stride] with peaks of 1.

    Each box contributes an unnormalised Gaussian around its centre (Zhou et al. 2019, "Objects as
    Points", eq. 1, overlaps merged by element-wise max); the cell holding the centre is exactly 1, the
    positive of the CornerNet focal loss. The deviation follows CenterNet's sigma = (2r + 1) / 6 with a
    radius r of 0.3 x the box's geometric-mean side, in output cells. Boxes whose centre lies outside
    the patch are dropped.
    """
    cells = size_px // stride
    heatmap = np.zeros((cells, cells), dtype=np.float32)
    if boxes.shape[0] == 0:
        return heatmap
    cx = (boxes[:, 0] + boxes[:, 2]) / 2.0
    cy = (boxes[:, 1] + boxes[:, 3]) / 2.0
    inside = (cx >= 0) & (cx < size_px) & (cy >= 0) & (cy < size_px)
    if not inside.any():
        return heatmap
    boxes, cx, cy = boxes[inside], cx[inside], cy[inside]
    side = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])) / stride
    sigma = np.maximum((2.0 * 0.3 * side + 1.0) / 6.0, 0.5)
    grid = (np.arange(cells, dtype=np.float32) + 0.5) * stride
    dx = (grid[None, :] - cx[:, None]) / stride  # [K, cells]
    dy = (grid[None, :] - cy[:, None]) / stride
    two_s2 = (2.0 * sigma**2)[:, None, None]
    gauss = np.exp(-(dy[:, :, None] ** 2 + dx[:, None, :] ** 2) / two_s2)
    heatmap = gauss.max(axis=0).astype(np.float32)
    iy = np.clip((cy // stride).astype(np.int64), 0, cells - 1)
    ix = np.clip((cx // stride).astype(np.int64), 0, cells - 1)
    heatmap[iy, ix] = 1.0
    return heatmap


@dataclass(frozen=True)
class CropSampler:
    """Random training crops of aligned faces: a crop anywhere in the frame, a modest scale and rotation
    jitter around the aligned scale (the service's scale is fixed), a mirror half the time and a blur
    one time in five. One warp per crop, so the face is resampled once."""

    faces: NDArray[np.uint8]  # [N, S, S, 3] aligned frames
    boxes: list[NDArray[np.float32]]  # per face, [K, 4] target boxes in frame pixels
    crop_px: int = 256
    scale_jitter: float = 0.1  # scales drawn log-uniformly in [1 / (1 + j), 1 + j]
    max_rotation_deg: float = 8.0
    edge_px: float = 16.0  # how far past the frame's edge a crop may reach
    blur_share: float = 0.2

    def sample(self, rng: np.random.Generator) -> tuple[NDArray[np.uint8], NDArray[np.float32]]:
        """Draw one augmented (crop [P, P, 3] uint8, heatmap [P/4, P/4, 1]) pair."""
        index = int(rng.integers(len(self.faces)))
        face = self.faces[index]
        frame_px = face.shape[0]
        spread = math.log1p(self.scale_jitter)
        scale = math.exp(rng.uniform(-spread, spread))
        half = self.crop_px / 2.0 / scale  # half the crop's side in frame pixels
        low, high = half - self.edge_px, frame_px - half + self.edge_px
        if low > high:
            low = high = frame_px / 2.0
        centre = rng.uniform(low, high, size=2)
        angle = math.radians(rng.uniform(-self.max_rotation_deg, self.max_rotation_deg))
        mirror = -1.0 if rng.random() < 0.5 else 1.0
        cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
        linear = np.array([[mirror * cos, -mirror * sin], [sin, cos]])
        # Continuous coordinates (pixel i covers [i, i + 1)): crop = linear @ (frame - centre) + P / 2.
        offset = self.crop_px / 2.0 - linear @ centre
        matrix = np.concatenate([linear, offset[:, None]], axis=1)
        sampling = matrix.copy()
        sampling[:, 2] += linear @ np.array([0.5, 0.5]) - 0.5  # OpenCV samples at integer centres
        crop = cv2.warpAffine(
            face,
            sampling,
            (self.crop_px, self.crop_px),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,  # the served frame is black outside the photo, too
            borderValue=0,
        )
        heatmap = render_heatmap(warp_boxes(self.boxes[index], matrix), self.crop_px)
        return blur_sometimes(np.asarray(crop, dtype=np.uint8), rng, self.blur_share), heatmap[:, :, None]


def warp_boxes(boxes: NDArray[np.float32], matrix: NDArray[np.float64]) -> NDArray[np.float32]:
    """Boxes [N, 4] through a 2x3 affine map: the bounding boxes of their four mapped corners."""
    corners = np.asarray(boxes, dtype=np.float64)[:, [0, 1, 2, 1, 2, 3, 0, 3]].reshape(-1, 2)
    mapped = (corners @ matrix[:, :2].T + matrix[:, 2]).reshape(-1, 4, 2)
    return np.concatenate([mapped.min(axis=1), mapped.max(axis=1)], axis=1).astype(np.float32)


def blur_sometimes(
    patch: NDArray[np.uint8], rng: np.random.Generator, share: float = 0.2
) -> NDArray[np.uint8]:
    """Blur a share of patches (one in five by default), as soft focus and JPEG-smoothed phone photos
    do; colour jitter is applied per batch in the training graph (`export.acne.augmentation`)."""
    if rng.random() < share:
        return np.asarray(cv2.GaussianBlur(patch, (0, 0), rng.uniform(0.5, 1.2)), dtype=np.uint8)
    return patch
