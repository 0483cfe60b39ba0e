"""Concern measures on one fixed-scale skin patch (orchestrator/face/patches.py), as fixed TensorFlow ops
so they can join the served graph: every filter is a Gaussian or Gaussian derivative whose width is set
in millimetres and turned into pixels by the concern's fixed pixels per millimetre.

Inputs are one patch's sRGB [H, W, 3] (0-255, float32) and its skin mask [H, W] (0/1, float32). A
statistic is read only where the filter's neighbourhood is skin ("sure skin"), so an eye, a brow or a
glasses frame cut out beside the zone never reads as a line or a spot at its edge.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from export.colour import srgb_to_lab
from export.filters import gaussian_kernel

# Wrinkle responses are read at these Gaussian scales (mm): a line's width is about 2.5 sigma at the
# Hessian's best response (Lindeberg 1998), so 0.8-2.5 mm covers lines and folds about 2-6 mm wide.
WRINKLE_SIGMAS_MM: tuple[float, ...] = (0.8, 1.2, 1.8, 2.5)
# The responses each scale gives (see wrinkle_responses); the design run picks one on the training part.
WRINKLE_KINDS: tuple[str, ...] = ("line", "across", "hxx", "hyy")
# Responses over all scales at once: "acrossmax" takes each pixel's strongest scale (Frangi-style
# scale selection), "acrossdeep" the mean of the strongest quarter of the pixels' acrossmax (the deepest
# lines of the zone, not diluted by its smooth skin).
WRINKLE_MULTISCALE: tuple[str, ...] = ("acrossmax", "acrossdeep")
DEEP_SHARE = 0.25
# Statistics are read where the neighbourhood at this scale (mm) is skin.
WRINKLE_SURE_SKIN_MM = 1.2
# A pixel is sure skin when this share of its Gaussian neighbourhood (at the filter's scale) is skin.
SURE_SKIN_SHARE = 0.9
# Dark spots: L* at SPOT_SIGMA_MM against the skin-weighted surround at SURROUND_SIGMA_MM; a pixel is
# in a spot by how far it is darker than its surround (0 at SPOT_MIN_DARKER_L, fully at
# SPOT_FULL_DARKER_L) when it is not redder by more than SPOT_MAX_REDDER_A (a red papule is not a
# pigment spot). SPOT_SIGMA_MM is one pixel at the 1 px/mm dark spots are read at: a sub-pixel smoothing
# follows JPEG blocks and resampling, and kept fewer severities on the training part's re-sends.
SPOT_SIGMA_MM, SURROUND_SIGMA_MM = 1.0, 5.0
SPOT_MIN_DARKER_L, SPOT_FULL_DARKER_L, SPOT_MAX_REDDER_A = 2.0, 8.0, 3.0
# Shine: brighter than the patch's median skin L* by this much and less saturated (a specular
# reflection is whiter than skin).
SHINE_MIN_BRIGHTER_L = 10.0
# Texture: the band between these scales (mm) of L*, i.e. microrelief, not shading.
TEXTURE_SIGMAS_MM = (0.25, 1.0)
# Pores: dark blobs at this scale (a Gaussian of sigma s answers best to a disc of diameter 2.8 s,
# so 0.1 mm picks pores about 0.3 mm across), deeper than PORE_MIN_DEPTH_L.
PORE_SIGMA_MM, PORE_MIN_DEPTH_L = 0.1, 2.0


def to_lab(rgb: tf.Tensor) -> tf.Tensor:
    """sRGB [H, W, 3] -> CIELAB [H, W, 3]."""
    shape = tf.shape(rgb)
    planes = tf.transpose(tf.reshape(rgb, [-1, 3]))
    return tf.reshape(tf.transpose(srgb_to_lab(planes)), shape)


def _conv(plane: tf.Tensor, kernel_y: np.ndarray, kernel_x: np.ndarray) -> tf.Tensor:
    """Separable correlation of [H, W] with mirrored borders (the patch edge is not a dark frame)."""
    ry, rx = len(kernel_y) // 2, len(kernel_x) // 2
    x = tf.pad(plane[None, :, :, None], [[0, 0], [ry, ry], [rx, rx], [0, 0]], mode="SYMMETRIC")
    x = tf.nn.conv2d(x, kernel_y.astype(np.float32).reshape(-1, 1, 1, 1), 1, "VALID")
    x = tf.nn.conv2d(x, kernel_x.astype(np.float32).reshape(1, -1, 1, 1), 1, "VALID")
    return x[0, :, :, 0]


def gaussian(plane: tf.Tensor, sigma_px: float) -> tf.Tensor:
    g = gaussian_kernel(sigma_px, 0)
    return _conv(plane, g, g)


def sure_skin(skin: tf.Tensor, sigma_px: float) -> tf.Tensor:
    """1 where at least SURE_SKIN_SHARE of the Gaussian neighbourhood is skin, else 0."""
    return tf.cast((gaussian(skin, sigma_px) >= SURE_SKIN_SHARE) & (skin > 0.5), tf.float32)


def hessian(lightness: tf.Tensor, sigma_px: float) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Scale-normalised second derivatives (xx, yy, xy) of a plane at sigma_px, in its own units."""
    g0, g1, g2 = (gaussian_kernel(sigma_px, order) for order in (0, 1, 2))
    return _conv(lightness, g0, g2), _conv(lightness, g2, g0), _conv(lightness, g1, g1)


def _masked_mean(values: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    return tf.math.divide_no_nan(tf.reduce_sum(values * weights), tf.reduce_sum(weights))


def wrinkle_responses(rgb: tf.Tensor, skin: tf.Tensor, px_per_mm: float) -> dict[str, tf.Tensor]:
    """Mean dark-valley responses of L* over a patch's sure skin, per kind and scale ("hxx1.2"...),
    and "pixels", the sure-skin count. Kinds, from the Hessian's eigenvalues (across >= along):
    line: across - |along|, floored at 0 (a valley curves one way, a pit both);
    across: the larger eigenvalue, floored at 0 (valleys of any shape);
    hxx: the second derivative along the face's horizontal axis, floored at 0 (valleys running within
    45 degrees of the face's vertical, and pits); hyy: the same along its vertical axis.
    The face frame is levelled on the eyes, so the axes are the face's own."""
    lightness = to_lab(rgb)[..., 0]
    weights = sure_skin(skin, WRINKLE_SURE_SKIN_MM * px_per_mm)
    out = {"pixels": tf.reduce_sum(weights)}
    strongest = tf.zeros_like(lightness)
    for sigma in WRINKLE_SIGMAS_MM:
        hxx, hyy, hxy = hessian(lightness, sigma * px_per_mm)
        mean = 0.5 * (hxx + hyy)
        spread = tf.sqrt(0.25 * (hxx - hyy) ** 2 + hxy * hxy)
        across, along = mean + spread, mean - spread
        kinds = {
            "line": tf.nn.relu(across - tf.abs(along)),
            "across": tf.nn.relu(across),
            "hxx": tf.nn.relu(hxx),
            "hyy": tf.nn.relu(hyy),
        }
        for kind in WRINKLE_KINDS:
            out[f"{kind}{sigma:g}"] = _masked_mean(kinds[kind], weights)
        strongest = tf.maximum(strongest, kinds["across"])
    out["acrossmax"] = _masked_mean(strongest, weights)
    out["acrossdeep"] = _top_mean(strongest, weights, DEEP_SHARE)
    return out


def _top_mean(values: tf.Tensor, weights: tf.Tensor, share: float) -> tf.Tensor:
    """Mean of the largest `share` of `values` where `weights` > 0.5 (0 when there are none)."""
    chosen = tf.sort(tf.boolean_mask(values, weights > 0.5), direction="DESCENDING")
    count = tf.maximum(tf.cast(tf.math.ceil(share * tf.cast(tf.size(chosen), tf.float32)), tf.int32), 1)
    top = chosen[:count]
    return tf.cond(tf.size(chosen) > 0, lambda: tf.reduce_mean(top), lambda: tf.constant(0.0))


def mean_lab(rgb: tf.Tensor, skin: tf.Tensor) -> tf.Tensor:
    """Mean L*, a*, b* [3] over the skin, and the median L* is in median_lightness."""
    lab = to_lab(rgb)
    return tf.stack([_masked_mean(lab[..., i], skin) for i in range(3)])


def median_lightness(rgb: tf.Tensor, skin: tf.Tensor) -> tf.Tensor:
    """Median L* over the skin pixels (0 for an empty mask)."""
    values = tf.boolean_mask(to_lab(rgb)[..., 0], skin > 0.5)
    count = tf.size(values)
    ordered = tf.sort(values)
    return tf.cond(count > 0, lambda: ordered[count // 2], lambda: tf.constant(0.0))


def dark_spot_pixels(rgb: tf.Tensor, skin: tf.Tensor, px_per_mm: float) -> tuple[tf.Tensor, tf.Tensor]:
    """(spot weight, sure-skin pixels) of a patch: each sure-skin pixel weighs how far (in L*, past
    SPOT_MIN_DARKER_L, up to SPOT_FULL_DARKER_L) it is darker than the skin around it, unless it is
    redder than that skin by more than SPOT_MAX_REDDER_A. A ramp, not a step, so re-encoding noise
    near the threshold moves the measure a little, not by whole pixels."""
    lab = to_lab(rgb)
    light = gaussian(lab[..., 0], SPOT_SIGMA_MM * px_per_mm)
    red = gaussian(lab[..., 1], SPOT_SIGMA_MM * px_per_mm)
    surround_w = gaussian(skin, SURROUND_SIGMA_MM * px_per_mm)
    surround_l = tf.math.divide_no_nan(
        gaussian(lab[..., 0] * skin, SURROUND_SIGMA_MM * px_per_mm), surround_w
    )
    surround_a = tf.math.divide_no_nan(
        gaussian(lab[..., 1] * skin, SURROUND_SIGMA_MM * px_per_mm), surround_w
    )
    weights = sure_skin(skin, SPOT_SIGMA_MM * px_per_mm * 2.0)
    depth = (surround_l - light - SPOT_MIN_DARKER_L) / (SPOT_FULL_DARKER_L - SPOT_MIN_DARKER_L)
    spot = tf.clip_by_value(depth, 0.0, 1.0) * tf.cast(red - surround_a <= SPOT_MAX_REDDER_A, tf.float32)
    return tf.reduce_sum(spot * weights), tf.reduce_sum(weights)


def shine_pixels(rgb: tf.Tensor, skin: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(highlight pixels, skin pixels): brighter than the median skin by SHINE_MIN_BRIGHTER_L and of
    lower chroma."""
    lab = to_lab(rgb)
    median_l = median_lightness(rgb, skin)
    chroma = tf.sqrt(lab[..., 1] ** 2 + lab[..., 2] ** 2)
    median_chroma = _masked_mean(chroma, skin)
    shine = tf.cast((lab[..., 0] >= median_l + SHINE_MIN_BRIGHTER_L) & (chroma < median_chroma), tf.float32)
    return tf.reduce_sum(shine * skin), tf.reduce_sum(skin)


def texture_roughness(rgb: tf.Tensor, skin: tf.Tensor, px_per_mm: float) -> tf.Tensor:
    """Standard deviation of L* between TEXTURE_SIGMAS_MM over sure skin."""
    lightness = to_lab(rgb)[..., 0]
    fine, coarse = (gaussian(lightness, s * px_per_mm) for s in TEXTURE_SIGMAS_MM)
    band = fine - coarse
    weights = sure_skin(skin, TEXTURE_SIGMAS_MM[1] * px_per_mm)
    return tf.sqrt(_masked_mean(band * band, weights))


def pore_share(rgb: tf.Tensor, skin: tf.Tensor, px_per_mm: float) -> tf.Tensor:
    """Share of sure skin on a dark blob of PORE_SIGMA_MM deeper than PORE_MIN_DEPTH_L (the scale-
    normalised Laplacian of L*, positive in a dark pit)."""
    lightness = to_lab(rgb)[..., 0]
    sigma = PORE_SIGMA_MM * px_per_mm
    g0, g2 = gaussian_kernel(sigma, 0), gaussian_kernel(sigma, 2)
    laplacian = _conv(lightness, g0, g2) + _conv(lightness, g2, g0)
    weights = sure_skin(skin, sigma * 3.0)
    return _masked_mean(tf.cast(laplacian >= PORE_MIN_DEPTH_L, tf.float32), weights)
