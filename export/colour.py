"""Skin colour in the served graph: sRGB to CIELAB, the skin and highlight masks, per-crop medians,
and the colour measures (ITA, erythema, specular shine). Every statistic is over one crop's own pixels.
"""

from __future__ import annotations

import logging
import math
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from export.filters import masked_mean

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
# white collars and backdrops out, and be neutral or warm (a*, b* above -3, the JPEG noise around
# grey), which keeps out the pale blue studio backdrop at the edge of a cheek.
SPECULAR_MIN_L_ABOVE = 10.0
SPECULAR_MAX_CHROMA_RATIO = 0.75
SPECULAR_MIN_LOCAL_SKIN = 0.25
SPECULAR_MIN_AB = -3.0
# Histogram medians: 512 bins of 0.25 units cover 0..128.
_BIN_WIDTH = 0.25
_BIN_COUNT = 512


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
    """sRGB planes [3, N] in 0..255 (float) -> CIELAB planes [3, N] (L*, a*, b*) under D65.

    Decoding per IEC 61966-2-1 (linear segment below 0.04045, else ((c + 0.055) / 1.055)^2.4), XYZ by
    its D65 matrix, then CIE 15:2004: L* = 116 f(Y/Yn) - 16, a* = 500 (f(X/Xn) - f(Y/Yn)),
    b* = 200 (f(Y/Yn) - f(Z/Zn)), f(t) = t^(1/3) above (6/29)^3, else t / (3 (6/29)^2) + 4/29.
    Planes (channel first) because TensorFlow's CPU matmul and elementwise ops are several times
    faster on them than on interleaved [N, 3] pixels.
    """
    # Both piecewise curves are written as curve(max(t, knee)) + (min(t, knee) - knee) * slope: equal
    # to the standard cases because each piece meets the next at the knee, and several times faster
    # than tf.where on CPU.
    c = srgb * (1.0 / 255.0)
    knee = 0.04045
    curve = tf.exp(2.4 * tf.math.log((tf.maximum(c, knee) + 0.055) / 1.055))
    linear = curve + (tf.minimum(c, knee) - knee) * (1.0 / 12.92)
    # The white-point normalisation is folded into the matrix.
    xyz = tf.linalg.matmul((_RGB_TO_XYZ / _D65_WHITE[:, None]).astype(np.float32), linear)
    knee = _LAB_DELTA**3
    f = _cube_root(tf.maximum(xyz, knee)) + (tf.minimum(xyz, knee) - knee) / (3.0 * _LAB_DELTA**2)
    fx, fy, fz = f[0], f[1], f[2]
    return tf.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)])


def masked_median(planes: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Per-crop medians [B, C] of `planes` [C, B, N] (L*, a*, b* over skin: all in [0, 128)) over the
    pixels where `mask` [B, N] is 1. Zeros for a crop without such a pixel.

    Read off per-crop histograms of 0.25-unit bins, interpolating within the median bin (the
    grouped-data median): within one bin (typically 0.1 units) of the sample median, and no sort,
    which costs far more on CPU. Skin pixels have a*, b* > 0 by the hue rule, and the sRGB gamut
    keeps L*, a*, b* below 100.
    """
    channels = planes.shape[0]
    assert channels is not None, "the number of planes must be static"
    batch = tf.shape(mask)[0]
    # Masked-out pixels go to one extra bin per row, past the end, which is dropped.
    hide = (1.0 - mask) * (2.0 * _BIN_COUNT * _BIN_WIDTH)
    hidden = tf.stack([planes[c] * mask + hide for c in range(channels)])
    bins = tf.clip_by_value(tf.cast(hidden * (1.0 / _BIN_WIDTH), tf.int32), 0, _BIN_COUNT)
    rows = channels * batch
    offsets = tf.reshape(tf.range(rows) * (_BIN_COUNT + 1), [channels, -1, 1])
    size = rows * (_BIN_COUNT + 1)
    counts = tf.math.bincount(tf.reshape(bins + offsets, [-1]), minlength=size, maxlength=size)
    counts = tf.reshape(counts, [rows, _BIN_COUNT + 1])[:, :_BIN_COUNT]
    cdf = tf.cumsum(counts, axis=-1)
    total = cdf[:, -1]
    half = tf.cast(total, tf.float32) * 0.5
    index = tf.reduce_sum(tf.cast(tf.cast(cdf, tf.float32) < half[:, None], tf.int32), axis=-1)
    index = tf.minimum(index, _BIN_COUNT - 1)
    # Count below the median bin: the cdf one bin earlier (a leading zero column stands for "none").
    cdf_before = tf.pad(cdf, [[0, 0], [1, 0]])
    below = tf.gather(cdf_before, index, batch_dims=1)
    inside = tf.gather(counts, index, batch_dims=1)
    fraction = tf.math.divide_no_nan(half - tf.cast(below, tf.float32), tf.cast(inside, tf.float32))
    median = _BIN_WIDTH * (tf.cast(index, tf.float32) + fraction) * tf.cast(total > 0, tf.float32)
    return tf.transpose(tf.reshape(median, [channels, -1]))


def _absolute_skin(lab_l: tf.Tensor, lab_a: tf.Tensor, lab_b: tf.Tensor) -> tf.Tensor:
    """The tone-independent part of the skin rule: hue window, chroma floor, not black."""
    low, high = (math.tan(math.radians(deg)) for deg in SKIN_HUE_DEG)
    # Hue window without atan2: with a* > 0, h_ab in [10, 80] deg <=> tan(10) a* <= b* <= tan(80) a*.
    in_hue = (lab_a > 0.0) & (lab_b >= low * lab_a) & (lab_b <= high * lab_a)
    chromatic = lab_a * lab_a + lab_b * lab_b >= SKIN_MIN_CHROMA**2
    return in_hue & chromatic & (lab_l >= SKIN_MIN_L)


def skin_colour(lab: tf.Tensor) -> SkinColour:
    """The skin mask and median skin colour of each crop, from CIELAB planes [3, B, H, W].

    Skin = hue angle h_ab in [10, 80] deg, chroma C*ab >= 6, L* >= 8 and L* no more than 25 below the
    median L* of the pixels that pass the first three tests (two passes, each within one crop).
    """
    lab_l, lab_a, lab_b = lab[0], lab[1], lab[2]
    batch = tf.shape(lab_l)[0]
    flat = tf.reshape(lab, [3, batch, -1])
    first = tf.reshape(tf.cast(_absolute_skin(lab_l, lab_a, lab_b), tf.float32), [batch, -1])
    first_l = masked_median(flat[:1], first)  # [B, 1]
    skin_flat = first * tf.cast(flat[0] >= first_l - SKIN_MAX_DARKER_L, tf.float32)
    median_lab = masked_median(flat, skin_flat)
    skin = tf.reshape(skin_flat, tf.shape(lab_l))
    count = tf.reduce_sum(skin_flat, axis=1)
    return SkinColour(lab_l, lab_a, lab_b, skin, median_lab, count)


def specular_mask(colour: SkinColour, local_skin: tf.Tensor) -> tf.Tensor:
    """Highlight pixels [B, H, W] (float 0/1): L* >= skin median + 10, C*ab <= 0.75 x the chroma of the
    skin median, a* and b* >= -3, where the local skin share `local_skin` [B, H, W] is at least 0.25.
    """
    median_l = colour.median_lab[:, 0, None, None]
    median_chroma_sq = tf.reduce_sum(colour.median_lab[:, 1:] ** 2, axis=-1)[:, None, None]
    chroma_sq = colour.lab_a * colour.lab_a + colour.lab_b * colour.lab_b
    bright = colour.lab_l >= median_l + SPECULAR_MIN_L_ABOVE
    pale = chroma_sq <= SPECULAR_MAX_CHROMA_RATIO**2 * median_chroma_sq
    warm = (colour.lab_a >= SPECULAR_MIN_AB) & (colour.lab_b >= SPECULAR_MIN_AB)
    within = local_skin >= SPECULAR_MIN_LOCAL_SKIN
    return tf.cast(bright & pale & warm & within, tf.float32)


def shine_and_skin_share(colour: SkinColour, local_skin: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(specular, skin_fraction) per crop [B]: the share of skin area that is specular highlight, and
    the share of the crop that is skin (highlights on skin included), both 0..1.
    """
    highlight = specular_mask(colour, local_skin)
    skin_area = tf.maximum(colour.skin, highlight)
    return masked_mean(highlight, skin_area), tf.reduce_mean(skin_area, axis=[1, 2])


def erythema(smooth_a: tf.Tensor, median_a: tf.Tensor, skin: tf.Tensor) -> tf.Tensor:
    """Redness of skin against its own median [B], a* units: mean over skin of max(a*, median a*).

    Equivalently the skin median a* plus the mean positive excess of (sigma-1 smoothed) a* over it:
    CIELAB a* is the standard colorimetric redness axis for erythema (e.g. Takiwaki 1998, "Measurement
    of skin color: practical application and theoretical considerations", J Med Invest 44). The form
    never falls when any pixel reddens; the excess alone would, since red lesions also raise the
    median. erythema - lab_a is the local, blotchy part.
    """
    return masked_mean(tf.maximum(smooth_a, median_a[:, None, None]), skin)


def ita_degrees(median_lab: tf.Tensor) -> tf.Tensor:
    """Individual typology angle ITA = atan((L* - 50) / b*) x 180 / pi (Chardon et al. 1991) [B].

    Computed as atan2(L* - 50, max(b*, 1e-3)), equal to the formula for b* > 0, so b* at or below 0
    gives +-90 deg instead of a division by zero. Categories (del Bino & Bernerd 2013): very light > 55,
    light 41-55, intermediate 28-41, tan 10-28, brown -30-10, dark < -30.
    """
    lab_l, lab_b = median_lab[:, 0], median_lab[:, 2]
    return tf.atan2(lab_l - 50.0, tf.maximum(lab_b, 1e-3)) * (180.0 / math.pi)
