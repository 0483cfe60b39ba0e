"""The spatial skin measures of the served graph, each a mean over one region's skin pixels [B, LABELS]:
wrinkles, dark spots, pigment unevenness, pores and fine texture.
"""

from __future__ import annotations

import logging

import tensorflow as tf

from export.labels import label_means

logger = logging.getLogger(__name__)

# Frangi et al. 1998 ("Multiscale vessel enhancement filtering", MICCAI) blobness weight: a pixel whose
# smaller/larger eigenvalue ratio R_b is 0.5 keeps exp(-0.5) of its line response, a round blob
# (R_b = 1) only exp(-2).
RIDGE_BETA = 0.5
# A dark-spot pixel is at least this much darker than the skin around it: normal skin in the
# portraits varies by 1-3 L* at this scale, solar lentigines are 5-15 darker...
SPOT_MIN_DARKER_L = 5.0
# ...and L* curves up in every direction there, as in a dark blob: the smaller Hessian eigenvalue is
# at least this share of the larger. Lines (wrinkles, folds, hairs) and the dark side of a shading
# edge curve across only (ratio near 0) and drop out.
SPOT_MIN_EIGEN_RATIO = 0.3


def wrinkle_strength(
    ridge_max: tf.Tensor, ridge_min: tf.Tensor, skin: tf.Tensor, labels: tf.Tensor
) -> tf.Tensor:
    """Mean dark-line response over each region's skin [B, LABELS], L* units.

    Hessian ridge filter after Frangi et al. 1998, dark-line polarity: with l1 >= l2 the eigenvalues of
    the scale-normalised Hessian of L* (maps [B, H, W]), a dark line has l1 > 0 (L* curves up across
    it) and l2 ~ 0 (flat along it). Response = l1 exp(-R_b^2 / (2 beta^2)), R_b = |l2| / l1, beta = 0.5,
    and 0 where l1 <= 0. Frangi's second-order "structureness" factor is left out so the value stays
    in L* units.
    """
    across = tf.nn.relu(ridge_max)
    ratio = tf.math.divide_no_nan(tf.abs(ridge_min), across)
    response = across * tf.exp(-(ratio * ratio) * (1.0 / (2.0 * RIDGE_BETA**2)))
    return label_means(response, skin, labels)


def dark_spot_share(
    darker: tf.Tensor, ridge_max: tf.Tensor, ridge_min: tf.Tensor, skin: tf.Tensor, labels: tf.Tensor
) -> tf.Tensor:
    """Share of each region's skin pixels [B, LABELS] that belong to dark spots, 0..1.

    `darker` = skin-weighted local mean L* minus smoothed L* (how much darker a pixel is than the skin
    around it). A spot pixel has darker >= 5 L* and a blob-shaped neighbourhood: both Hessian
    eigenvalues positive with l2 >= 0.3 l1 (the determinant-of-Hessian blob test of Lindeberg 1998,
    with an anisotropy bound so lines do not count).
    """
    blob = (ridge_min > 0.0) & (ridge_min >= SPOT_MIN_EIGEN_RATIO * ridge_max)
    spot = tf.cast((darker >= SPOT_MIN_DARKER_L) & blob, tf.float32)
    return label_means(spot, skin, labels)


def pigment_unevenness(darker: tf.Tensor, skin: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Standard deviation over each region's skin [B, LABELS] of L* after removing slow shading.

    The residual is smoothed L* minus its skin-weighted local mean (a band-pass between the smoothing
    and the surround scale), so uneven pigmentation counts and lighting gradients across the crop
    do not.
    """
    mean = label_means(darker, skin, labels)
    return tf.sqrt(tf.nn.relu(label_means(darker * darker, skin, labels) - mean * mean))


def pore_darkness(smooth_l: tf.Tensor, lab_l: tf.Tensor, skin: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Mean dark-blob energy at pore scale over each region's skin [B, LABELS], L* units.

    The negative part of a difference of Gaussians: max(0, G_1 * L* - L*) on the half-resolution copy,
    i.e. how much darker a pixel (a 2x2 cell of the face image) is than its sigma-1 neighbourhood. It
    peaks on dark dots 2-4 px across in the face image (1-2.5 mm on a face at the aligned scale);
    bright dots do not count.
    """
    return label_means(tf.nn.relu(smooth_l - lab_l), skin, labels)


def fine_roughness(cell_variance: tf.Tensor, skin: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Root-mean-square over each region's skin [B, LABELS] of L* variation within each 2x2 cell of
    the full-resolution face image.

    The finest-scale 2x2 Haar detail energy of lightness: sqrt(mean over skin of the cell variance).
    Blur removes it first.
    """
    return tf.sqrt(label_means(cell_variance, skin, labels))


def cell_variance_in_lightness(luma_variance: tf.Tensor, lab_l: tf.Tensor) -> tf.Tensor:
    """Convert within-cell variance of encoded luma (0..255) to L* units, per half-resolution pixel.

    For grey, L* = 116 ((v/255 + 0.055) / 1.055)^0.8 - 16 (sRGB decoding of IEC 61966-2-1, then
    CIE 15:2004), so dL*/dv = 116 * 0.8 / (1.055 * 255) * u^-0.25 with u = (L* + 16) / 116. Scaling by
    that local slope makes the same skin texture read about the same on light and dark skin.
    """
    u = tf.maximum(lab_l + 16.0, 1.0) * (1.0 / 116.0)
    slope_sq = (116.0 * 0.8 / (1.055 * 255.0)) ** 2 * tf.exp(-0.5 * tf.math.log(u))
    return luma_variance * slope_sq
