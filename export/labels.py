"""Per-region reductions in the served graph: every statistic is taken over the pixels of one face
carrying one mask label (contract.LABEL_NAMES), never across faces or labels, so batching cannot mix
faces and no region is resized to be measured.
"""

from __future__ import annotations

import logging

import tensorflow as tf

from serving import contract

logger = logging.getLogger(__name__)

LABELS = len(contract.LABEL_NAMES)
# Histogram medians: 512 bins of 0.25 units cover 0..128 (L* and skin's a*, b* all lie there; values
# below 0 count in the first bin, which a median of skin never reaches).
BIN_WIDTH = 0.25
BIN_COUNT = 512


def segment_ids(labels: tf.Tensor, keep: tf.Tensor) -> tf.Tensor:
    """Flat segment ids [B * N] for (face, label) pairs: b * LABELS + label - 1 where the pixel has a
    label and `keep` holds, the spare segment B * LABELS elsewhere. labels int32 [B, ...], keep bool."""
    batch = tf.shape(labels)[0]
    flat = tf.reshape(labels, [batch, -1])
    keep = tf.reshape(keep, [batch, -1]) & (flat > 0)
    ids = tf.range(batch)[:, None] * LABELS + flat - 1
    return tf.reshape(tf.where(keep, ids, batch * LABELS), [-1])


def label_sums(values: tf.Tensor, segments: tf.Tensor) -> tf.Tensor:
    """Sums [B, LABELS] of `values` [B, ...] over each face's labelled pixels (`segment_ids`)."""
    batch = tf.shape(values)[0]
    sums = tf.math.unsorted_segment_sum(tf.reshape(values, [-1]), segments, batch * LABELS + 1)
    return tf.reshape(sums[:-1], [batch, LABELS])


def label_means(values: tf.Tensor, weights: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Weighted means [B, LABELS] of `values` [B, H, W] per face and label; 0 for an empty label."""
    segments = segment_ids(labels, weights > 0.0)
    return tf.math.divide_no_nan(label_sums(values * weights, segments), label_sums(weights, segments))


def to_pixels(per_label: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Spread per-label values [B, LABELS] back over the pixels [B, H, W] (0 where unlabelled)."""
    padded = tf.pad(per_label, [[0, 0], [1, 0]])  # label 0 reads the zero column
    return tf.gather(padded, labels, batch_dims=1)


def label_medians(planes: tf.Tensor, labels: tf.Tensor, keep: tf.Tensor) -> tf.Tensor:
    """Medians [B, LABELS, C] of `planes` [C, B, H, W] over each face's pixels of each label where
    `keep` [B, H, W] holds; zeros for an empty label."""
    return label_quantiles(planes, labels, keep, 0.5)


def label_quantiles(planes: tf.Tensor, labels: tf.Tensor, keep: tf.Tensor, quantile: float) -> tf.Tensor:
    """Quantiles [B, LABELS, C] of `planes` [C, B, H, W] over each face's pixels of each label where
    `keep` [B, H, W] holds; zeros for an empty label.

    Read off per-label histograms of 0.25-unit bins, interpolating within the quantile's bin (the
    grouped-data quantile): within one bin of the sample quantile, and no sort, which costs far more
    on CPU.
    """
    channels = planes.shape[0]
    assert channels is not None, "the number of planes must be static"
    batch = tf.shape(labels)[0]
    flat_labels = tf.reshape(labels, [batch, -1])
    flat_keep = tf.reshape(keep, [batch, -1]) & (flat_labels > 0)
    # Rows: (channel, face, label); excluded pixels go to a spare bin past the end of label 0's row.
    row = (tf.range(channels)[:, None, None] * batch + tf.range(batch)[None, :, None]) * (LABELS + 1)
    row = row + tf.where(flat_keep, flat_labels, 0)[None]
    values = tf.reshape(planes, [channels, batch, -1])
    bins = tf.clip_by_value(tf.cast(values * (1.0 / BIN_WIDTH), tf.int32), 0, BIN_COUNT - 1)
    bins = tf.where(flat_keep[None], bins, BIN_COUNT)
    rows = channels * batch * (LABELS + 1)
    size = rows * (BIN_COUNT + 1)
    counts = tf.math.bincount(
        tf.reshape(row * (BIN_COUNT + 1) + bins, [-1]), minlength=size, maxlength=size, dtype=tf.int32
    )
    counts = tf.reshape(counts, [rows, BIN_COUNT + 1])[:, :BIN_COUNT]
    cdf = tf.cumsum(counts, axis=-1)
    total = cdf[:, -1]
    half = tf.cast(total, tf.float32) * quantile
    index = tf.reduce_sum(tf.cast(tf.cast(cdf, tf.float32) < half[:, None], tf.int32), axis=-1)
    index = tf.minimum(index, BIN_COUNT - 1)
    below = tf.gather(tf.pad(cdf, [[0, 0], [1, 0]]), index, batch_dims=1)
    inside = tf.gather(counts, index, batch_dims=1)
    fraction = tf.math.divide_no_nan(half - tf.cast(below, tf.float32), tf.cast(inside, tf.float32))
    median = BIN_WIDTH * (tf.cast(index, tf.float32) + fraction) * tf.cast(total > 0, tf.float32)
    median = tf.reshape(median, [channels, batch, LABELS + 1])[:, :, 1:]
    return tf.transpose(median, [1, 2, 0])
