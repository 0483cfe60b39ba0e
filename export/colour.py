"""Skin colour in the served graph: sRGB to CIELAB, the skin and highlight masks, per-crop medians, ITA.

Every statistic is taken over one crop's own pixels, never across the batch (TF Serving merges faces).
"""

from __future__ import annotations

import logging
import math
from typing import NamedTuple

import numpy as np
import tensorflow as tf

logger = logging.getLogger(__name__)

# sRGB (IEC 61966-2-1) linear RGB -> CIE XYZ under D65, and the D65 white point (CIE 15:2004).
_RGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
_D65_WHITE = np.array([0.95047, 1.0, 1.08883])
# CIELAB's f(t) is a cube root above (6/29)^3 and a line below (CIE 15:2004).
_LAB_DELTA = 6.0 / 29.0

# Absolute skin rule, in CIELAB. Skin of every tone has a hue angle h_ab of about 30-70 deg in these
# photos (5th-95th percentile over the 24 congress portraits' cheeks); 10-80 keeps shaded and reddened
# skin and drops blue and grey backdrops, green and purple. Black, grey and white hair, eye whites,
# teeth, glasses frames and grey backdrops are nearly achromatic (C*ab < 5 after JPEG) while the
# darkest skin there still has C*ab >= 10: hence the chroma floor.
SKIN_HUE_DEG = (10.0, 80.0)
SKIN_MIN_CHROMA = 6.0
SKIN_MIN_L = 8.0
# Relative rule: hair, eyebrows, nostrils, pupils and deep shadow sit far below the crop's typical
# skin L*; dark spots and wrinkles (5-20 L* below their surroundings) stay in.
SKIN_MAX_DARKER_L = 25.0
# Specular highlight (shine). By the dichromatic reflection model (Shafer 1985, "Using color to
# separate reflection components", Color Res. Appl. 10(4)) specular light has the illuminant's
# colour, so a highlight is brighter AND paler than the skin it sits on; the luminance/saturation
# thresholds of shine detectors are taken here relative to the crop's skin median, so they hold from
# very light to very dark skin. A highlight must lie within skin (local skin share), which keeps
# white collars and backdrops out.
SPECULAR_MIN_L_ABOVE = 10.0
SPECULAR_MAX_CHROMA_RATIO = 0.75
SPECULAR_MIN_LOCAL_SKIN = 0.25
# Histogram medians: 512 bins of 0.25 units from these origins cover L* 0..128, a*, b* -40..88.
_BIN_WIDTH = 0.25
_BIN_COUNT = 512
_BIN_ORIGIN = (0.0, -40.0, -40.0)


class SkinColour(NamedTuple):
    """CIELAB planes [B, H, W] of a batch of crops and what is known about their skin."""

    lab_l: tf.Tensor
    lab_a: tf.Tensor
    lab_b: tf.Tensor
    skin: tf.Tensor  # float32 0/1 [B, H, W]: skin pixels, pale highlights excluded
    median_lab: tf.Tensor  # [B, 3] median L*, a*, b* over skin pixels; zeros where there is no skin
    skin_count: tf.Tensor  # [B] number of skin pixels


def _cube_root(t: tf.Tensor) -> tf.Tensor:
    """t^(1/3) for t > 0 as exp(log(t) / 3): several times faster than tf.pow on CPU."""
    return tf.exp(tf.math.log(t) * (1.0 / 3.0))


def srgb_to_lab(srgb: tf.Tensor) -> tf.Tensor:
    """sRGB [..., 3] in 0..255 (float) -> CIELAB [..., 3] (L*, a*, b*) under D65.

    Decoding per IEC 61966-2-1 (linear segment below 0.04045, else ((c + 0.055) / 1.055)^2.4), XYZ by
    its D65 matrix, then CIE 15:2004: L* = 116 f(Y/Yn) - 16, a* = 500 (f(X/Xn) - f(Y/Yn)),
    b* = 200 (f(Y/Yn) - f(Z/Zn)), f(t) = t^(1/3) above (6/29)^3, else t / (3 (6/29)^2) + 4/29.
    """
    # Both piecewise curves are written as curve(max(t, knee)) + (min(t, knee) - knee) * slope: equal
    # to the standard cases because each piece meets the next at the knee, and several times faster
    # than tf.where on CPU.
    c = srgb * (1.0 / 255.0)
    knee = 0.04045
    curve = tf.exp(2.4 * tf.math.log((tf.maximum(c, knee) + 0.055) / 1.055))
    linear = curve + (tf.minimum(c, knee) - knee) / 12.92
    # The white-point normalisation is folded into the matrix: one matmul, no divide.
    matrix = (_RGB_TO_XYZ / _D65_WHITE[:, None]).T.astype(np.float32)
    shape = tf.shape(linear)
    xyz = tf.reshape(tf.linalg.matmul(tf.reshape(linear, [-1, 3]), matrix), shape)
    knee = _LAB_DELTA**3
    f = _cube_root(tf.maximum(xyz, knee)) + (tf.minimum(xyz, knee) - knee) / (3.0 * _LAB_DELTA**2)
    weights = np.array([[0.0, 500.0, 0.0], [116.0, -500.0, 200.0], [0.0, 0.0, -200.0]], np.float32)
    lab = tf.reshape(tf.linalg.matmul(tf.reshape(f, [-1, 3]), weights), shape)
    return lab - tf.constant([16.0, 0.0, 0.0])


def masked_median(values: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Per-crop median of L* (and a*, b*) `values` [B, N, C<=3] over pixels where `mask` [B, N] > 0.5.

    Read off a per-crop histogram (0.25-unit bins, interpolated within the median bin: the grouped-data
    median), which is exact to well under 0.1 units and avoids a sort. Zeros for a crop with no pixel.
    """
    batch = tf.shape(values)[0]
    channels = values.shape[-1]
    assert channels is not None and channels <= 3, "medians are of L*, a*, b* planes"
    origin = tf.constant(_BIN_ORIGIN[:channels], tf.float32)
    # Truncation is flooring here: the clip sends everything below the origin to bin 0 anyway.
    bins = tf.clip_by_value(
        tf.cast(values * (1.0 / _BIN_WIDTH) - origin * (1.0 / _BIN_WIDTH), tf.int32), 0, _BIN_COUNT - 1
    )
    rows = tf.range(batch)[:, None, None] * channels + tf.range(channels)[None, None, :]
    total_slots = batch * channels * _BIN_COUNT
    # Pixels outside the mask all go to one extra slot past the end, which is dropped (arithmetic,
    # because tf.where is slow on CPU at this size).
    outside = tf.cast(mask[..., None] <= 0.5, tf.int32) * (total_slots + 1)
    slots = tf.minimum(rows * _BIN_COUNT + bins + outside, total_slots)
    counts = tf.math.bincount(
        tf.reshape(slots, [-1]), minlength=total_slots + 1, maxlength=total_slots + 1
    )
    counts = tf.reshape(counts[:-1], [batch, channels, _BIN_COUNT])
    cdf = tf.cumsum(counts, axis=-1)
    total = cdf[..., -1]
    half = tf.cast(total, tf.float32) * 0.5
    index = tf.reduce_sum(tf.cast(tf.cast(cdf, tf.float32) < half[..., None], tf.int32), axis=-1)
    index = tf.minimum(index, _BIN_COUNT - 1)
    below = tf.gather(cdf, tf.maximum(index - 1, 0), batch_dims=2)
    below = tf.where(index > 0, below, 0)
    inside = tf.gather(counts, index, batch_dims=2)
    fraction = tf.math.divide_no_nan(half - tf.cast(below, tf.float32), tf.cast(inside, tf.float32))
    median = origin + _BIN_WIDTH * (tf.cast(index, tf.float32) + fraction)
    return tf.where(total > 0, median, 0.0)


def _absolute_skin(lab_l: tf.Tensor, lab_a: tf.Tensor, lab_b: tf.Tensor) -> tf.Tensor:
    """The tone-independent part of the skin rule: hue window, chroma floor, not black."""
    low, high = (math.tan(math.radians(deg)) for deg in SKIN_HUE_DEG)
    # Hue window without atan2: with a* > 0, h_ab in [10, 80] deg <=> tan(10) a* <= b* <= tan(80) a*.
    in_hue = (lab_a > 0.0) & (lab_b >= low * lab_a) & (lab_b <= high * lab_a)
    chromatic = lab_a * lab_a + lab_b * lab_b >= SKIN_MIN_CHROMA**2
    return in_hue & chromatic & (lab_l >= SKIN_MIN_L)


def skin_colour(lab: tf.Tensor) -> SkinColour:
    """The skin mask and median skin colour of each crop, from CIELAB [B, H, W, 3].

    Skin = hue angle h_ab in [10, 80] deg, chroma C*ab >= 6, L* >= 8 and L* no more than 25 below the
    median L* of the pixels that pass the first three tests (two passes, each within one crop).
    """
    lab_l, lab_a, lab_b = tf.unstack(lab, axis=-1)
    batch = tf.shape(lab)[0]
    flat = tf.reshape(lab, [batch, -1, 3])
    first = tf.reshape(tf.cast(_absolute_skin(lab_l, lab_a, lab_b), tf.float32), [batch, -1])
    first_l = masked_median(flat[..., :1], first)  # [B, 1]
    skin_flat = first * tf.cast(flat[..., 0] >= first_l - SKIN_MAX_DARKER_L, tf.float32)
    median_lab = masked_median(flat, skin_flat)
    skin = tf.reshape(skin_flat, tf.shape(lab_l))
    count = tf.reduce_sum(skin_flat, axis=1)
    return SkinColour(lab_l, lab_a, lab_b, skin, median_lab, count)


def specular_mask(colour: SkinColour, local_skin: tf.Tensor) -> tf.Tensor:
    """Highlight pixels [B, H, W]: L* >= skin median + 10 and C*ab <= 0.75 x the median's chroma,
    where the local skin share `local_skin` [B, H, W] is at least 0.25.
    """
    median_l = colour.median_lab[:, 0, None, None]
    median_chroma_sq = tf.reduce_sum(colour.median_lab[:, 1:] ** 2, axis=-1)[:, None, None]
    chroma_sq = colour.lab_a * colour.lab_a + colour.lab_b * colour.lab_b
    bright = colour.lab_l >= median_l + SPECULAR_MIN_L_ABOVE
    pale = chroma_sq <= SPECULAR_MAX_CHROMA_RATIO**2 * median_chroma_sq
    within = local_skin >= SPECULAR_MIN_LOCAL_SKIN
    return tf.cast(bright & pale & within, tf.float32)


def ita_degrees(median_lab: tf.Tensor) -> tf.Tensor:
    """Individual typology angle ITA = atan((L* - 50) / b*) x 180 / pi (Chardon et al. 1991).

    Computed as atan2(L* - 50, max(b*, 1e-3)), equal to the formula for b* > 0, so b* at or below 0
    gives +-90 deg instead of a division by zero. Categories (del Bino & Bernerd 2013): very light > 55,
    light 41-55, intermediate 28-41, tan 10-28, brown -30-10, dark < -30.
    """
    lab_l, lab_b = median_lab[:, 0], median_lab[:, 2]
    return tf.atan2(lab_l - 50.0, tf.maximum(lab_b, 1e-3)) * (180.0 / math.pi)
