"""The measured (not learned) skin signals of the served model, as fixed TensorFlow ops and Keras layers.

`compute_signals` fills the contract's "signals" output; `redness_peaks` is model version 1's acne head.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from export.colour import SkinColour, ita_degrees, skin_colour, specular_mask, srgb_to_lab
from export.texture import (
    gaussian_kernel,
    hessian_eigenvalues,
    masked_mean,
    separable_filter,
    wide_filter,
)
from serving import contract

logger = logging.getLogger(__name__)

# Crops are read at two resolutions: the contract's 160 px only for the finest roughness (texture), and
# an 80 px copy (2x2 means) for everything else. A cheek crop spans ~60 px of a ~300 px face box, so
# 1 px at 80 is ~0.75 px of the face box, ~0.4 mm of skin.
FINE_SIZE = contract.REGION_SIZE_PX
WORK_SIZE = FINE_SIZE // 2
# Rec. 709 luma weights on the encoded values: the grey level whose fine variance is the texture.
_LUMA = np.array([[0.2126], [0.7152], [0.0722]], np.float32)

# Work-scale (80 px) filters. SMOOTH: sigma 1 px, enough to keep single-pixel JPEG noise from reading
# as a spot or redness. RIDGE: Hessian scale for lines; a fine forehead line 1-2 mm wide is 2-4 px
# wide here. SURROUND: the skin-weighted local mean that spots and papules are compared with; sigma
# 8 px (~3 mm) is wider than a lentigo or papule and narrower than the crop, so slow shading is followed.
SMOOTH_SIGMA = 1.0
RIDGE_SIGMA = 2.0
SURROUND_SIGMA = 8.0
SURROUND_RANK = 12
# Frangi et al. 1998 ("Multiscale vessel enhancement filtering", MICCAI) blobness weight: a pixel whose
# smaller/larger eigenvalue ratio R_b is 0.5 keeps exp(-0.5) of its line response, a round blob
# (R_b = 1) only exp(-2).
RIDGE_BETA = 0.5
# A skin pixel is a dark-spot pixel when its smoothed L* is this far below the skin around it: normal
# skin in the portraits varies by 1-3 L* at this scale, solar lentigines are 5-15 darker...
SPOT_MIN_DARKER_L = 5.0
# ...and when it is not on a line: lines (wrinkles, folds, stray hairs) curve strongly across
# (scale-normalised, L* units) and hardly along.
LINE_MIN_STRENGTH = 2.0
LINE_MAX_EIGEN_RATIO = 0.3
# Redness peaks: a candidate's smoothed a* must exceed the skin around it by this floor (normal skin
# stays within about 1.5 a* of its surround at this scale in the portraits); its score saturates as
# 1 - exp(-(excess - floor) / scale).
PEAK_MIN_EXCESS_A = 2.0
PEAK_SCORE_SCALE_A = 4.0


class _Maps(NamedTuple):
    """Per-pixel maps [B, 80, 80] and per-crop colour shared by the signals and the redness peaks."""

    colour: SkinColour
    smooth_l: tf.Tensor  # L* at sigma 1
    smooth_a: tf.Tensor  # a* at sigma 1
    ridge_max: tf.Tensor  # larger scale-normalised Hessian eigenvalue of L*: curvature across a dark line
    ridge_min: tf.Tensor  # smaller eigenvalue
    local_l: tf.Tensor  # skin-weighted local mean L*
    local_a: tf.Tensor  # skin-weighted local mean a*
    local_skin: tf.Tensor  # local share of skin pixels
    fine_variance: tf.Tensor  # variance of L* within each 2x2 cell of the 160 px crop


def _cell_weights() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weights turning a 2x2 cell's column sums or differences into channel means and luma details.

    A cell [[p, q], [r, s]] arrives as its column sums (p + r, q + s) and differences (p - r, q - s),
    3 channels each. Out: the mean R, G, B, and in luma H = p - q + r - s from the sums, V = p + q - r - s
    and D = p - q - r + s from the differences. The cell's variance is (H^2 + V^2 + D^2) / 16, because
    the orthonormal 2x2 Haar transform keeps the energy.
    """
    luma = _LUMA[:, 0]
    means = np.concatenate([np.eye(3), np.eye(3)]).astype(np.float32) / 4.0
    horizontal = np.concatenate([luma, -luma])[:, None]
    vertical_diagonal = np.stack([np.concatenate([luma, luma]), np.concatenate([luma, -luma])], 1)
    return means, horizontal, vertical_diagonal


def _pool_cells(pixels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """sRGB [B, 160, 160, 3] -> 2x2 mean sRGB [B, 80, 80, 3] and within-cell luma variance [B, 80, 80].

    Reshapes and small matrix products: TensorFlow's CPU avg_pool and reductions over strided axes
    cost several times more here.
    """
    rows = tf.reshape(pixels, [-1, 2, FINE_SIZE * 3])  # the two pixel rows of each cell row
    top, bottom = rows[:, 0], rows[:, 1]
    sums = tf.reshape(top + bottom, [-1, 6])
    differences = tf.reshape(top - bottom, [-1, 6])
    means, horizontal, vertical_diagonal = _cell_weights()
    srgb = tf.reshape(tf.linalg.matmul(sums, means), [-1, WORK_SIZE, WORK_SIZE, 3])
    h = tf.linalg.matmul(sums, horizontal)
    vd = tf.linalg.matmul(differences, vertical_diagonal)
    energy = tf.reshape(h * h, [-1]) + tf.reduce_sum(vd * vd, axis=-1)
    return srgb, tf.reshape(energy, [-1, WORK_SIZE, WORK_SIZE]) * (1.0 / 16.0)


def _maps(regions: tf.Tensor) -> _Maps:
    """Every per-pixel map the measures need, from uint8 crops [B, 160, 160, 3]."""
    regions = tf.convert_to_tensor(regions)
    if regions.dtype != tf.uint8:
        raise TypeError(f"regions must be uint8, got {regions.dtype.name}")
    regions = tf.ensure_shape(regions, [None, FINE_SIZE, FINE_SIZE, 3])
    pixels = tf.cast(regions, tf.float32)
    srgb, fine_luma_variance = _pool_cells(pixels)
    colour = skin_colour(srgb_to_lab(srgb))
    # Encoded-luma variance to L* units: for grey, L* = 116 ((v/255 + 0.055) / 1.055)^0.8 - 16 (sRGB
    # decoding then CIELAB), so dL*/dv = (116 * 0.8 / (1.055 * 255)) u^-0.25 with u = (L* + 16) / 116.
    u = tf.maximum(colour.lab_l + 16.0, 1.0) / 116.0
    slope = (116.0 * 0.8 / (1.055 * 255.0)) * tf.exp(-0.25 * tf.math.log(u))
    fine_variance = fine_luma_variance * slope * slope

    lab_l, lab_a, skin = colour.lab_l, colour.lab_a, colour.skin
    smooth = gaussian_kernel(SMOOTH_SIGMA, 0)
    ridge = [gaussian_kernel(RIDGE_SIGMA, order) for order in range(3)]
    # Planes out: L* smoothed, L*_xx, L*_yy, L*_xy, a* smoothed.
    out = separable_filter(
        tf.stack([lab_l, lab_l, lab_l, lab_l, lab_a], axis=1),
        kernels_y=[smooth, ridge[0], ridge[2], ridge[1], smooth],
        kernels_x=[smooth, ridge[2], ridge[0], ridge[1], smooth],
    )
    sums = wide_filter(
        tf.stack([lab_l * skin, lab_a * skin, skin], axis=1),
        gaussian_kernel(SURROUND_SIGMA, 0),
        SURROUND_RANK,
    )
    ridge_max, ridge_min = hessian_eigenvalues(out[:, 1], out[:, 2], out[:, 3])
    local_skin = sums[:, 2]
    return _Maps(
        colour=colour,
        smooth_l=out[:, 0],
        smooth_a=out[:, 4],
        ridge_max=ridge_max,
        ridge_min=ridge_min,
        local_l=tf.math.divide_no_nan(sums[:, 0], local_skin),
        local_a=tf.math.divide_no_nan(sums[:, 1], local_skin),
        local_skin=local_skin,
        fine_variance=fine_variance,
    )


def _signals(maps: _Maps) -> tf.Tensor:
    """The contract's signal columns, [B, len(SIGNAL_NAMES)], from the shared maps."""
    colour = maps.colour
    skin = colour.skin
    median_l, median_a, median_b = tf.unstack(colour.median_lab, axis=-1)
    columns: dict[str, tf.Tensor] = {
        "lab_l": median_l,
        "lab_a": median_a,
        "lab_b": median_b,
        "ita_deg": ita_degrees(colour.median_lab),
    }
    # Erythema: mean positive excess of smoothed a* over the crop's own skin median (a* units). The
    # median itself is lab_a (diffuse redness); this is the blotchy, local part.
    columns["erythema"] = masked_mean(tf.nn.relu(maps.smooth_a - median_a[:, None, None]), skin)
    # Dark lines: a valley in L* curves up across the line (larger eigenvalue > 0) and not along it.
    across = tf.nn.relu(maps.ridge_max)
    ratio = tf.math.divide_no_nan(tf.abs(maps.ridge_min), across)
    line_response = across * tf.exp(-(ratio * ratio) / (2.0 * RIDGE_BETA**2))
    columns["wrinkles"] = masked_mean(line_response, skin)
    on_line = (across >= LINE_MIN_STRENGTH) & (ratio <= LINE_MAX_EIGEN_RATIO)
    darker = maps.local_l - maps.smooth_l
    spot = tf.cast((darker >= SPOT_MIN_DARKER_L) & ~on_line, tf.float32)
    columns["pigment_spots"] = masked_mean(spot, skin)
    mean_darker = masked_mean(darker, skin)
    columns["pigment_unevenness"] = tf.sqrt(
        tf.nn.relu(masked_mean(darker * darker, skin) - mean_darker * mean_darker)
    )
    columns["pores"] = masked_mean(tf.nn.relu(maps.smooth_l - colour.lab_l), skin)
    columns["texture"] = tf.sqrt(masked_mean(maps.fine_variance, skin))
    highlight = specular_mask(colour, maps.local_skin)
    skin_or_shine = tf.maximum(skin, highlight)
    columns["specular"] = masked_mean(highlight, skin_or_shine)
    columns["skin_fraction"] = tf.reduce_mean(skin_or_shine, axis=[1, 2])
    signals = tf.stack([columns[name] for name in contract.SIGNAL_NAMES], axis=-1)
    # A crop without skin (e.g. the black fill of a region outside the photo) reports zeros, never NaN
    # or the -90 deg ITA of an empty median; post-scoring skips it on skin_fraction.
    return tf.where(colour.skin_count[:, None] > 0, signals, 0.0)


def _neighbourhood_max(values: tf.Tensor) -> tf.Tensor:
    """3x3 maximum of [B, H, W] by shifted slices (CPU max_pool2d is slow on one channel)."""
    padded = tf.pad(values, [[0, 0], [1, 1], [1, 1]], constant_values=-1.0e9)
    rows = tf.maximum(tf.maximum(padded[:, :, :-2], padded[:, :, 1:-1]), padded[:, :, 2:])
    return tf.maximum(tf.maximum(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:])


def _peaks(maps: _Maps, max_peaks: int) -> tf.Tensor:
    """The strongest papule-scale a* maxima on skin as (y, x, score) rows [B, max_peaks, 3]."""
    excess = maps.smooth_a - maps.local_a
    is_peak = (
        (excess >= _neighbourhood_max(excess))
        & (maps.colour.skin > 0.5)
        & (excess > PEAK_MIN_EXCESS_A)
    )
    candidate = tf.reshape(tf.where(is_peak, excess, 0.0), [-1, WORK_SIZE * WORK_SIZE])
    k = min(max_peaks, WORK_SIZE * WORK_SIZE)
    top, index = tf.math.top_k(candidate, k=k, sorted=True)
    found = tf.cast(top > 0.0, tf.float32)
    score = (1.0 - tf.exp(-tf.nn.relu(top - PEAK_MIN_EXCESS_A) / PEAK_SCORE_SCALE_A)) * found
    # Pixel centres of the 80 px grid, relative to the crop.
    y = (tf.cast(index // WORK_SIZE, tf.float32) + 0.5) / WORK_SIZE * found
    x = (tf.cast(index % WORK_SIZE, tf.float32) + 0.5) / WORK_SIZE * found
    rows = tf.stack([y, x, score], axis=-1)
    if k < max_peaks:
        rows = tf.pad(rows, [[0, 0], [0, max_peaks - k], [0, 0]])
    return rows


def compute_signals(regions: tf.Tensor) -> tf.Tensor:
    """uint8 region crops [B, 160, 160, 3] -> float32 [B, len(SIGNAL_NAMES)] in the contract's order.

    Each row depends on its own crop alone. Raises TypeError for a non-uint8 input and ValueError for
    a shape other than [B, 160, 160, 3].
    """
    return _signals(_maps(regions))


def redness_peaks(regions: tf.Tensor, max_peaks: int) -> tf.Tensor:
    """Fixed-filter papule detector: uint8 crops [B, 160, 160, 3] -> float32 [B, max_peaks, 3].

    Rows are (y, x, score), y and x relative to the crop, best first, zero rows past the last
    candidate. A candidate is a 3x3 local maximum, on skin, of the papule response: CIELAB a* smoothed
    at sigma 1 px minus its skin-weighted Gaussian surround at sigma 8 px (both on the 80 px copy), a
    difference-of-Gaussians band of red blobs ~1-6 mm across on a cheek crop, kept when above 2 a*
    units; score = 1 - exp(-(response - 2) / 4). Raises as `compute_signals`.
    """
    return _peaks(_maps(regions), max_peaks)


def measure_regions(regions: tf.Tensor, max_peaks: int) -> tuple[tf.Tensor, tf.Tensor]:
    """`compute_signals` and `redness_peaks` from one shared pass over the crops."""
    maps = _maps(regions)
    return _signals(maps), _peaks(maps, max_peaks)


class SkinSignals(keras.layers.Layer):
    """`compute_signals` as a weightless Keras layer."""

    def call(self, regions: tf.Tensor) -> tf.Tensor:
        return compute_signals(regions)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (input_shape[0], len(contract.SIGNAL_NAMES))


class RednessPeaks(keras.layers.Layer):
    """`redness_peaks` as a weightless Keras layer: the acne head of model version 1."""

    def __init__(self, max_peaks: int = contract.MAX_LESIONS, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.max_peaks = max_peaks

    def call(self, regions: tf.Tensor) -> tf.Tensor:
        return redness_peaks(regions, self.max_peaks)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (input_shape[0], self.max_peaks, 3)

    def get_config(self) -> dict[str, object]:
        return {**super().get_config(), "max_peaks": self.max_peaks}
