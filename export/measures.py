"""The measured (not learned) skin signals of the served model, as fixed TensorFlow ops: `compute_signals`
gives each of the contract's signals per face and region (one output each), `redness_peaks` is the
fixed-filter acne head. SIGNAL_MEASURES holds one measure per signal of contract.SIGNALS.
Inputs are the contract's aligned face and its region mask; every statistic is per face and region.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from export.colour import SkinColour, erythema, ita_degrees, shine_and_skin_share, skin_colour, srgb_to_lab
from export.filters import gaussian_kernel, hessian_eigenvalues, separable_filter
from export.labels import LABELS
from export.texture import (
    cell_variance_in_lightness,
    dark_spot_share,
    fine_roughness,
    pigment_unevenness,
    pore_darkness,
    wrinkle_strength,
)
from serving import contract

logger = logging.getLogger(__name__)

# The aligned face is read at two resolutions: full (384 px) only for the finest roughness (texture), a
# half-resolution copy (2x2 means, 192 px) for everything else. At the aligned scale the forehead-to-chin
# distance is 288 px of the full image, about 0.6 mm of skin per pixel, so 1 px of the copy is ~1.2 mm.
FINE_SIZE = contract.FACE_SIZE_PX
WORK_SIZE = FINE_SIZE // 2
# Rec. 709 luma weights on the encoded values: the grey level whose fine variance is the texture.
_LUMA = np.array([0.2126, 0.7152, 0.0722])
# Filter scales on the half-resolution copy. SMOOTH: 1 px, enough to keep single-pixel JPEG noise from
# reading as a spot or as redness. RIDGE: Hessian scale; a forehead line 2-4 mm wide is 2-3 px wide
# here. SURROUND: the skin-weighted local mean that spots and papules are compared with, 4 px (~5 mm):
# wider than a papule or a lentigo, narrow enough to follow slow shading across a cheek.
SMOOTH_SIGMA = 1.0
RIDGE_SIGMA = 1.5
SURROUND_SIGMA = 4.0
# Redness peaks: a candidate's smoothed a* must exceed the skin around it by this floor; its score
# saturates as 1 - exp(-(excess - floor) / scale).
PEAK_MIN_EXCESS_A = 4.0
PEAK_SCORE_SCALE_A = 4.0


class Maps(NamedTuple):
    """Per-pixel maps [B, 192, 192] and per-region colour, shared by the signals and the redness peaks."""

    colour: SkinColour
    smooth_l: tf.Tensor  # L* at sigma 1
    smooth_a: tf.Tensor  # a* at sigma 1
    ridge_max: tf.Tensor  # larger scale-normalised Hessian eigenvalue of L*
    ridge_min: tf.Tensor  # smaller one
    local_l: tf.Tensor  # skin-weighted local mean L*
    local_a: tf.Tensor  # skin-weighted local mean a*
    local_skin: tf.Tensor  # local share of skin pixels
    cell_variance: tf.Tensor  # L* variance within each 2x2 cell of the full-resolution face


def _cell_weights() -> tuple[np.ndarray, np.ndarray]:
    """Weights from a 2x2 cell's column sums (and differences) to channel means and luma details.

    A cell [[p, q], [r, s]] arrives as column sums (p + r, q + s) and differences (p - r, q - s), 3
    channels each. From the sums: mean R, G, B and, in luma, H = p - q + r - s; from the differences:
    V = p + q - r - s and D = p - q - r + s. The cell's variance is (H^2 + V^2 + D^2) / 16: the
    orthonormal 2x2 Haar transform keeps the energy.
    """
    from_sums = np.zeros((4, 6))
    from_sums[:3] = np.concatenate([np.eye(3), np.eye(3)], axis=1) / 4.0
    from_sums[3] = np.concatenate([_LUMA, -_LUMA])
    from_differences = np.stack([np.concatenate([_LUMA, _LUMA]), np.concatenate([_LUMA, -_LUMA])])
    return from_sums.astype(np.float32), from_differences.astype(np.float32)


def _pool_cells(pixels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """sRGB [B, 384, 384, 3] -> 2x2 mean sRGB planes [3, B*192*192] and within-cell luma variance
    [B, 192, 192], by reshapes and two small matrix products (CPU avg_pool costs several times more).

    The means are of encoded values, not of linear light: across 2 px of skin the two differ by a small
    fraction of an L* unit.
    """
    rows = tf.reshape(pixels, [-1, 2, FINE_SIZE * 3])  # the two pixel rows of each cell row
    top, bottom = rows[:, 0], rows[:, 1]
    from_sums, from_differences = _cell_weights()
    planes = tf.linalg.matmul(from_sums, tf.reshape(top + bottom, [-1, 6]), transpose_b=True)
    details = tf.linalg.matmul(from_differences, tf.reshape(top - bottom, [-1, 6]), transpose_b=True)
    energy = planes[3] * planes[3] + details[0] * details[0] + details[1] * details[1]
    return planes[:3], tf.reshape(energy, [-1, WORK_SIZE, WORK_SIZE]) * (1.0 / 16.0)


def _checked(face: tf.Tensor, mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The inputs as tensors of the contract's dtypes and shapes; raises TypeError or ValueError."""
    face, mask = tf.convert_to_tensor(face), tf.convert_to_tensor(mask)
    if face.dtype != tf.uint8 or mask.dtype != tf.uint8:
        raise TypeError(f"face and mask must be uint8, got {face.dtype.name} and {mask.dtype.name}")
    if not face.shape.is_compatible_with([None, FINE_SIZE, FINE_SIZE, 3]):
        raise ValueError(f"face must be [B, {FINE_SIZE}, {FINE_SIZE}, 3], got {face.shape}")
    if not mask.shape.is_compatible_with([None, FINE_SIZE, FINE_SIZE]):
        raise ValueError(f"mask must be [B, {FINE_SIZE}, {FINE_SIZE}], got {mask.shape}")
    face = tf.ensure_shape(face, [None, FINE_SIZE, FINE_SIZE, 3])
    return face, tf.ensure_shape(mask, [None, FINE_SIZE, FINE_SIZE])


def _maps(face: tf.Tensor, mask: tf.Tensor) -> Maps:
    """Every per-pixel map the measures need, from uint8 faces [B, 384, 384, 3] and masks [B, 384, 384]."""
    face, mask = _checked(face, mask)
    srgb, luma_variance = _pool_cells(tf.cast(face, tf.float32))
    # Each 2x2 cell takes the label of its lower-right pixel: labels are categories, not averageable.
    labels = tf.cast(mask[:, 1::2, 1::2], tf.int32)
    labels = tf.where(labels <= LABELS, labels, 0)
    colour = skin_colour(tf.reshape(srgb_to_lab(srgb), [3, -1, WORK_SIZE, WORK_SIZE]), labels)
    lab_l, lab_a, skin = colour.lab_l, colour.lab_a, colour.skin
    smooth = gaussian_kernel(SMOOTH_SIGMA, 0)
    ridge = [gaussian_kernel(RIDGE_SIGMA, order) for order in range(3)]
    # L* smoothed, L*_xx, L*_yy, L*_xy (kernels_y runs down the columns, i.e. along y).
    of_l = separable_filter(
        lab_l,
        kernels_y=[smooth, ridge[0], ridge[2], ridge[1]],
        kernels_x=[smooth, ridge[2], ridge[0], ridge[1]],
    )
    surround = gaussian_kernel(SURROUND_SIGMA, 0)
    planes = tf.concat([lab_l * skin, lab_a * skin, skin], axis=0)
    sums = tf.reshape(separable_filter(planes, [surround], [surround])[0], [3, -1, WORK_SIZE, WORK_SIZE])
    ridge_max, ridge_min = hessian_eigenvalues(of_l[1], of_l[2], of_l[3])
    local_skin = sums[2]
    return Maps(
        colour=colour,
        smooth_l=of_l[0],
        smooth_a=separable_filter(lab_a, [smooth], [smooth])[0],
        ridge_max=ridge_max,
        ridge_min=ridge_min,
        local_l=tf.math.divide_no_nan(sums[0], local_skin),
        local_a=tf.math.divide_no_nan(sums[1], local_skin),
        local_skin=local_skin,
        cell_variance=cell_variance_in_lightness(luma_variance, lab_l),
    )


def _darker(maps: Maps) -> tf.Tensor:
    return maps.local_l - maps.smooth_l


# One measure per signal of contract.SIGNALS: the shared maps -> [B, LABELS]. Each formula and its source
# is in the docstring of the function it calls (export.colour, export.texture).
SIGNAL_MEASURES: dict[str, Callable[[Maps], tf.Tensor]] = {
    "lab_l": lambda m: m.colour.median_lab[:, :, 0],
    "lab_a": lambda m: m.colour.median_lab[:, :, 1],
    "lab_b": lambda m: m.colour.median_lab[:, :, 2],
    "ita_deg": lambda m: ita_degrees(m.colour.median_lab),
    "erythema": lambda m: erythema(m.smooth_a, m.colour),
    "pigment_spots": lambda m: dark_spot_share(
        _darker(m), m.ridge_max, m.ridge_min, m.colour.skin, m.colour.labels
    ),
    "pigment_unevenness": lambda m: pigment_unevenness(_darker(m), m.colour.skin, m.colour.labels),
    "wrinkles": lambda m: wrinkle_strength(m.ridge_max, m.ridge_min, m.colour.skin, m.colour.labels),
    "pores": lambda m: pore_darkness(m.smooth_l, m.colour.lab_l, m.colour.skin, m.colour.labels),
    "texture": lambda m: fine_roughness(m.cell_variance, m.colour.skin, m.colour.labels),
    "specular": lambda m: shine_and_skin_share(m.colour)[0],
    "skin_fraction": lambda m: shine_and_skin_share(m.colour)[1],
}


def _signals(maps: Maps) -> dict[str, tf.Tensor]:
    """The contract's signals, each [B, LABELS], from the shared maps."""
    # A region without skin (not visible, outside the photo) reports zeros, never NaN or the -90 deg ITA
    # of an empty median; post-scoring skips it on skin_fraction.
    present = tf.cast(maps.colour.skin_count > 0, tf.float32)
    return {name: SIGNAL_MEASURES[name](maps) * present for name in contract.signal_names()}


def _neighbourhood_max(values: tf.Tensor) -> tf.Tensor:
    """3x3 maximum of [B, H, W] by shifted slices (CPU max_pool2d is slow on one channel)."""
    padded = tf.pad(values, [[0, 0], [1, 1], [1, 1]], constant_values=-1.0e9)
    rows = tf.maximum(tf.maximum(padded[:, :, :-2], padded[:, :, 1:-1]), padded[:, :, 2:])
    return tf.maximum(tf.maximum(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:])


def _peaks(maps: Maps, max_peaks: int) -> tf.Tensor:
    """The strongest papule-scale a* maxima on skin as (y, x, score) rows [B, max_peaks, 3]."""
    excess = maps.smooth_a - maps.local_a
    is_peak = (excess >= _neighbourhood_max(excess)) & (maps.colour.skin > 0.5) & (excess > PEAK_MIN_EXCESS_A)
    candidate = tf.reshape(excess * tf.cast(is_peak, tf.float32), [-1, WORK_SIZE * WORK_SIZE])
    k = min(max_peaks, WORK_SIZE * WORK_SIZE)
    top, index = tf.math.top_k(candidate, k=k, sorted=True)
    found = tf.cast(top > 0.0, tf.float32)
    score = (1.0 - tf.exp(-tf.nn.relu(top - PEAK_MIN_EXCESS_A) / PEAK_SCORE_SCALE_A)) * found
    # Pixel centres of the half-resolution grid, relative to the face image.
    y = (tf.cast(index // WORK_SIZE, tf.float32) + 0.5) * (found / WORK_SIZE)
    x = (tf.cast(index % WORK_SIZE, tf.float32) + 0.5) * (found / WORK_SIZE)
    rows = tf.stack([y, x, score], axis=-1)
    if k < max_peaks:
        rows = tf.pad(rows, [[0, 0], [0, max_peaks - k], [0, 0]])
    return rows


# Plain graph construction with no tensor-dependent Python control flow: AutoGraph would only spend
# seconds rewriting it at every trace.


# Plain graph construction with no tensor-dependent Python control flow: AutoGraph would only spend
# seconds rewriting it at every trace.
@tf.autograph.experimental.do_not_convert
def compute_signals(face: tf.Tensor, mask: tf.Tensor) -> dict[str, tf.Tensor]:
    """uint8 faces [B, 384, 384, 3] and masks [B, 384, 384] -> each signal's float32 [B, LABELS].

    Each row depends on its own face alone (no batch statistics); a label without skin gives a row of
    zeros. Each signal's formula and source is in the docstring of the function computing it
    (export.colour, export.texture). Raises TypeError for non-uint8 inputs and ValueError for shapes
    other than the contract's.
    """
    return _signals(_maps(face, mask))


@tf.autograph.experimental.do_not_convert
def redness_peaks(face: tf.Tensor, mask: tf.Tensor, max_peaks: int) -> tf.Tensor:
    """Fixed-filter papule detector: uint8 faces and masks -> float32 [B, max_peaks, 3].

    Rows are (y, x, score), y and x relative to the face image, best first, zero rows past the last
    candidate. A candidate is a 3x3 local maximum, on skin, of the papule response: CIELAB a* smoothed
    at sigma 1 px minus its skin-weighted Gaussian surround at sigma 4 px (both on the half-resolution
    copy), a difference-of-Gaussians band that answers red blobs ~2-8 mm across, kept when above 4 a*
    units; score = 1 - exp(-(response - 4) / 4). Raises as `compute_signals`.
    """
    return _peaks(_maps(face, mask), max_peaks)


@tf.autograph.experimental.do_not_convert
def measure_faces(face: tf.Tensor, mask: tf.Tensor, max_peaks: int) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
    """(`compute_signals`, `redness_peaks`) from one shared pass over the faces."""
    maps = _maps(face, mask)
    return _signals(maps), _peaks(maps, max_peaks)
