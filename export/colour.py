"""Skin colour in the served graph: sRGB to CIELAB, which labelled pixels are skin and which are
specular highlights, each region's trimmed median colour, and the colour measures (ITA, erythema,
shine). Every statistic is over one face's pixels of one region (export/labels.py).
"""

from __future__ import annotations

import logging
import math
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from export.labels import label_means, label_medians, label_quantiles, label_sums, segment_ids, to_pixels

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

# The mask already says where the face's skin is (landmark regions, hair and features cut out by
# colour in the orchestrator), so the graph keeps only a relative rule: within each region, pixels far
# below the region's median L* (stray hair, nostril shadow, deep folds) are not skin; dark spots and
# wrinkles (5-20 L* below their surroundings) stay in.
SKIN_MAX_DARKER_L = 25.0
# Colour statistics (L*, a*, b*, ITA) use the region's well-lit skin only: highlights out, then the
# pixels between the median and the 90th percentile of L*. A face lit from one side keeps its shaded
# half out of its tone, and the brightest tenth (glare, specular edges) is trimmed too. On the
# congress portraits this orders skin tones as they look (light 42-58 deg, medium-brown 26, brown 7,
# dark -40), where the plain median read a light face at 27 deg through its shaded cheek.
LIT_FROM_QUANTILE = 0.5
LIT_TO_QUANTILE = 0.9
# Specular highlight (shine). By the dichromatic reflection model (Shafer 1985, "Using color to
# separate reflection components", Color Res. Appl. 10(4)) specular light has the illuminant's
# colour, so a highlight is brighter AND paler than the skin it sits on; the luminance/saturation
# thresholds of shine detectors are taken here relative to the region's skin median, so they hold
# from very light to very dark skin. A highlight must be neutral or warm (a*, b* above -3, the JPEG
# noise around grey).
SPECULAR_MIN_L_ABOVE = 10.0
SPECULAR_MAX_CHROMA_RATIO = 0.75
SPECULAR_MIN_AB = -3.0


class SkinColour(NamedTuple):
    """CIELAB planes [B, H, W] of a batch of faces and what is known about their skin, per region."""

    lab_l: tf.Tensor
    lab_a: tf.Tensor
    lab_b: tf.Tensor
    labels: tf.Tensor  # int32 [B, H, W], the mask's labels
    skin: tf.Tensor  # float32 0/1 [B, H, W]: labelled pixels that are skin, highlights included
    highlight: tf.Tensor  # float32 0/1 [B, H, W]: specular highlights on skin
    median_lab: tf.Tensor  # [B, LABELS, 3] median L*, a*, b* of well-lit skin; 0 if none
    labelled_count: tf.Tensor  # [B, LABELS] pixels carrying each label
    skin_count: tf.Tensor  # [B, LABELS] of them skin


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


def skin_colour(lab: tf.Tensor, labels: tf.Tensor) -> SkinColour:
    """Skin, highlights and the trimmed median colour of each region, from CIELAB planes [3, B, H, W]
    and the mask's labels [B, H, W] (int32).

    Skin = labelled and L* no more than 25 below the region's median L*. Highlight = skin with L* at
    least 10 above the region's median, chroma at most 0.75 of the median's, a* and b* >= -3. The
    colour median is over well-lit skin: no highlight, L* between the 50th and 90th percentile of the
    region's other skin.
    """
    lab_l, lab_a, lab_b = lab[0], lab[1], lab[2]
    labelled = labels > 0
    first_l = to_pixels(label_medians(lab[:1], labels, labelled)[:, :, 0], labels)
    skin = labelled & (lab_l >= first_l - SKIN_MAX_DARKER_L)
    chroma_sq = lab_a * lab_a + lab_b * lab_b
    first = label_medians(lab, labels, skin)
    median_chroma_sq = to_pixels(tf.reduce_sum(first[:, :, 1:] ** 2, axis=-1), labels)
    bright = lab_l >= to_pixels(first[:, :, 0], labels) + SPECULAR_MIN_L_ABOVE
    pale = chroma_sq <= SPECULAR_MAX_CHROMA_RATIO**2 * median_chroma_sq
    warm = (lab_a >= SPECULAR_MIN_AB) & (lab_b >= SPECULAR_MIN_AB)
    highlight = skin & bright & pale & warm
    matte = skin & ~highlight
    lit_from = to_pixels(label_quantiles(lab[:1], labels, matte, LIT_FROM_QUANTILE)[:, :, 0], labels)
    lit_to = to_pixels(label_quantiles(lab[:1], labels, matte, LIT_TO_QUANTILE)[:, :, 0], labels)
    median_lab = label_medians(lab, labels, matte & (lab_l >= lit_from) & (lab_l <= lit_to))
    labelled_count = _label_counts(labelled, labels)
    skin_count = _label_counts(skin, labels)
    return SkinColour(
        lab_l,
        lab_a,
        lab_b,
        labels,
        tf.cast(skin, tf.float32),
        tf.cast(highlight, tf.float32),
        median_lab,
        labelled_count,
        skin_count,
    )


def _label_counts(where: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Pixels [B, LABELS] of each label where `where` holds."""
    return label_sums(tf.cast(where, tf.float32), segment_ids(labels, where))


def shine_and_skin_share(colour: SkinColour) -> tuple[tf.Tensor, tf.Tensor]:
    """(specular, skin_fraction) per face and label [B, LABELS]: the share of skin area that is
    specular highlight, and the share of the label's pixels that are skin, both 0..1."""
    specular = label_means(colour.highlight, colour.skin, colour.labels)
    return specular, tf.math.divide_no_nan(colour.skin_count, colour.labelled_count)


def erythema(smooth_a: tf.Tensor, colour: SkinColour) -> tf.Tensor:
    """Redness of skin against its own median [B, LABELS], a* units: mean over a region's skin of
    max(a*, median a*).

    Equivalently the skin median a* plus the mean positive excess of (sigma-1 smoothed) a* over it:
    CIELAB a* is the standard colorimetric redness axis for erythema (e.g. Takiwaki 1998, "Measurement
    of skin color: practical application and theoretical considerations", J Med Invest 44). The form
    never falls when any pixel reddens; the excess alone would, since red lesions also raise the
    median. erythema - lab_a is the local, blotchy part.
    """
    median_a = to_pixels(colour.median_lab[:, :, 1], colour.labels)
    return label_means(tf.maximum(smooth_a, median_a), colour.skin, colour.labels)


def ita_degrees(median_lab: tf.Tensor) -> tf.Tensor:
    """Individual typology angle ITA = atan((L* - 50) / b*) x 180 / pi (Chardon et al. 1991) [...].

    Computed as atan2(L* - 50, max(b*, 1e-3)), equal to the formula for b* > 0, so b* at or below 0
    gives +-90 deg instead of a division by zero. Categories (del Bino & Bernerd 2013): very light > 55,
    light 41-55, intermediate 28-41, tan 10-28, brown -30-10, dark < -30.
    """
    lab_l, lab_b = median_lab[..., 0], median_lab[..., 2]
    return tf.atan2(lab_l - 50.0, tf.maximum(lab_b, 1e-3)) * (180.0 / math.pi)
