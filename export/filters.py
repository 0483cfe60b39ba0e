"""The fixed filter bank of the served graph: Gaussian kernels and derivatives as constant matrices,
separable and low-rank filtering by matrix products, Hessian eigenvalues, masked per-crop means.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

logger = logging.getLogger(__name__)

# Gaussian kernels are cut at 3 sigma: the tails beyond hold 0.3% of the weight.
_TRUNCATE = 3.0


def gaussian_kernel(sigma: float, order: int) -> np.ndarray:
    """Sampled 1-D Gaussian (order 0), or its first or second derivative, on [-3 sigma, 3 sigma].

    Order 0 sums to 1. The derivatives are corrected to ignore a constant, to answer 1 to a unit ramp
    (order 1) or to x^2 / 2 (order 2), and are then scaled by sigma^order: the gamma-normalised
    derivatives of Lindeberg 1998 ("Feature detection with automatic scale selection", IJCV 30(2)), so
    a second derivative at scale sigma reads in the image's own units (here L*).
    """
    radius = int(np.ceil(_TRUNCATE * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-0.5 * (x / sigma) ** 2)
    g /= g.sum()
    if order == 0:
        return g
    if order == 1:
        # Correlation kernel (see filter_matrix), so +x g, not the convolution kernel -x g.
        d = x * g
        return d / np.sum(x * d) * sigma
    if order == 2:
        d = (x**2 / sigma**4 - 1.0 / sigma**2) * g
        d -= d.mean()
        return d / (0.5 * np.sum(x**2 * d)) * sigma**2
    raise ValueError(f"Gaussian derivative order {order} is not supported")


def filter_matrix(kernel: np.ndarray, size: int) -> np.ndarray:
    """The [size, size] matrix M with (M @ v)[i] = sum_t kernel[t] v[reflect(i + t - radius)].

    Borders are mirrored without repeating the edge pixel (numpy's and TensorFlow's REFLECT), so a
    crop edge is not read as a dark frame; folding the mirror into the matrix saves a pad op.
    """
    radius = len(kernel) // 2
    period = 2 * (size - 1)
    matrix = np.zeros((size, size))
    for i in range(size):
        for t, weight in enumerate(kernel):
            j = abs(i + t - radius) % period
            matrix[i, period - j if j >= size else j] += weight
    return matrix


def separable_filter(
    plane: tf.Tensor, kernels_y: Sequence[np.ndarray], kernels_x: Sequence[np.ndarray]
) -> tf.Tensor:
    """Filter `plane` [B, H, W] by each pair (kernels_y[k] down the columns, kernels_x[k] along the
    rows) -> [K, B, H, W].

    Two large matrix products with constant filter matrices: along the rows for every image at once,
    then down the columns for every image and kernel at once. On CPU this is several times faster than
    depthwise convolution or a batch of small per-image products.
    """
    height, width = plane.shape[-2], plane.shape[-1]
    assert height is not None and width is not None, "filtering needs static plane sizes"
    count = len(kernels_y)
    along_rows = np.concatenate([filter_matrix(k, width).T for k in kernels_x], axis=1)
    down_columns = np.stack([filter_matrix(k, height) for k in kernels_y])
    rows = tf.linalg.matmul(tf.reshape(plane, [-1, width]), along_rows.astype(np.float32))
    # [B, H, K, W] -> [K, H, B * W], so each kernel's column filter is one product over all images.
    rows = tf.transpose(tf.reshape(rows, [-1, height, count, width]), [2, 1, 0, 3])
    rows = tf.reshape(rows, [count, height, -1])
    out = tf.linalg.matmul(down_columns.astype(np.float32), rows)
    return tf.transpose(tf.reshape(out, [count, height, -1, width]), [0, 2, 1, 3])


def wide_filter(planes: tf.Tensor, kernel: np.ndarray, rank: int) -> tf.Tensor:
    """Filter every plane of `planes` [P, B, N, N] by the same wide Gaussian `kernel` in both
    directions, through a rank-`rank` factorisation M ~ A C of its filter matrix (truncated SVD).

    A wide Gaussian passes only low frequencies, so its matrix is nearly low-rank: for sigma 8 on
    80 px, rank 12 is within 0.2% of the full filter at a fraction of the multiplications.
    """
    size = planes.shape[-1]
    assert size is not None and planes.shape[-2] == size, "wide filtering needs static square planes"
    u, s, vt = np.linalg.svd(filter_matrix(kernel, size))
    root = np.sqrt(s[:rank])
    expand = (u[:, :rank] * root).astype(np.float32)  # A [N, r]
    reduce = (root[:, None] * vt[:rank]).astype(np.float32)  # C [r, N]
    # Along the rows: X C^T, one product over all planes and images.
    x = tf.linalg.matmul(tf.reshape(planes, [-1, size]), reduce.T)  # [P*B*N, r]
    x = tf.transpose(tf.reshape(x, [-1, size, rank]), [1, 0, 2])
    x = tf.reshape(x, [size, -1])  # [N, P*B*r]
    # Down the columns: A (C X), both on the small reduced matrix.
    x = tf.linalg.matmul(expand, tf.linalg.matmul(reduce, x))  # [N, P*B*r]
    x = tf.reshape(tf.transpose(tf.reshape(x, [size, -1, rank]), [1, 0, 2]), [-1, rank])
    # Back out along the rows: (.) A^T.
    out = tf.linalg.matmul(x, expand.T)  # [P*B*N, N]
    return tf.reshape(out, tf.shape(planes))


def hessian_eigenvalues(hxx: tf.Tensor, hyy: tf.Tensor, hxy: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Eigenvalues (larger, smaller) of the symmetric 2x2 Hessian at every pixel."""
    mean = 0.5 * (hxx + hyy)
    spread = tf.sqrt(0.25 * (hxx - hyy) ** 2 + hxy * hxy)
    return mean + spread, mean - spread


def masked_mean(values: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Per-crop mean of `values` [B, H, W] weighted by `mask` [B, H, W]; 0 for an empty mask."""
    total = tf.reduce_sum(values * mask, axis=[1, 2])
    count = tf.reduce_sum(mask, axis=[1, 2])
    return tf.math.divide_no_nan(total, count)
