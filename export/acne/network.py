"""The acne lesion detector: a small CenterNet-style fully convolutional network, its focal loss,
and graph-only peak decoding of its stride-4 centre heatmap.
"""

from __future__ import annotations

import logging
import math

import keras
import tensorflow as tf
from keras import layers

logger = logging.getLogger(__name__)

OUTPUT_STRIDE = 4
PRIOR_PROBABILITY = 0.05


class Upsample2x(layers.Layer):
    """Bilinear 2x upsampling that also works when height and width are unknown at trace time."""

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        size = tf.shape(inputs)[1:3] * 2
        return tf.image.resize(inputs, size, method="bilinear")

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        batch, height, width, channels = input_shape
        return (batch, None if height is None else 2 * height, None if width is None else 2 * width, channels)


def _conv(
    x: keras.KerasTensor, filters: int, kernel: int, stride: int, name: str, batch_norm: bool
) -> keras.KerasTensor:
    """Conv, batch norm (training form) or bias (served form, batch norm folded in), ReLU."""
    x = layers.Conv2D(
        filters, kernel, strides=stride, padding="same", use_bias=not batch_norm, name=f"{name}_conv"
    )(x)
    if batch_norm:
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def build_detector(width: int = 32, batch_norm: bool = False, context: bool = False) -> keras.Model:
    """Build the detector: float32 RGB in 0..255, [B, H, W, 3] with H, W divisible by 16 (by 32 with
    `context`).

    Returns heatmap LOGITS [B, H/4, W/4, 1]; apply a sigmoid for lesion-centre probabilities. The
    design is CenterNet's (Zhou et al. 2019, "Objects as Points") centre heatmap at stride 4, on a
    plain convolutional encoder to stride 16 and a light U-Net/FPN decoder back to stride 4. Dense
    3x3 convolutions, because TensorFlow's CPU depthwise kernels ran 5-10x slower per multiply here.
    `context=True` adds a stride-32 level whose features are added back at stride 16, doubling the
    receptive field for little compute (its maps are 1/64 of the input's area).
    `batch_norm=True` is the training form; the default is the served form, whose weights come from
    `fold_batch_norm`.
    """
    w, bn = width, batch_norm
    inputs = keras.Input((None, None, 3), dtype="float32", name="images")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale")(inputs)
    x = _conv(x, 16, 3, 2, "stem", bn)  # stride 2
    x = _conv(x, w, 3, 2, "s4_down", bn)  # stride 4
    c4 = _conv(x, w, 3, 1, "s4_conv", bn)
    x = _conv(c4, 2 * w, 3, 2, "s8_down", bn)  # stride 8
    c8 = _conv(x, 2 * w, 3, 1, "s8_conv", bn)
    x = _conv(c8, 4 * w, 3, 2, "s16_down", bn)  # stride 16
    x = _conv(x, 4 * w, 3, 1, "s16_conv1", bn)
    x = _conv(x, 4 * w, 3, 1, "s16_conv2", bn)
    if context:
        c16 = x
        x = _conv(c16, 6 * w, 3, 2, "s32_down", bn)  # stride 32
        x = _conv(x, 6 * w, 3, 1, "s32_conv", bn)
        x = _conv(x, 4 * w, 1, 1, "up16_reduce", bn)
        x = Upsample2x(name="up16")(x)
        x = layers.Add(name="up16_add")([x, c16])
    x = _conv(x, 2 * w, 1, 1, "up8_reduce", bn)
    x = Upsample2x(name="up8")(x)
    x = layers.Add(name="up8_add")([x, c8])
    x = _conv(x, 4 * w // 3, 3, 1, "up8_mix", bn)
    x = _conv(x, w, 1, 1, "up4_reduce", bn)
    x = Upsample2x(name="up4")(x)
    x = layers.Add(name="up4_add")([x, c4])
    x = _conv(x, w, 3, 1, "up4_mix", bn)
    bias = -math.log((1.0 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY)
    logits = layers.Conv2D(
        1, 1, bias_initializer=keras.initializers.Constant(bias), dtype="float32", name="heatmap_logits"
    )(x)
    return keras.Model(inputs, logits, name="acne_detector")


def fold_batch_norm(trained: keras.Model, width: int, context: bool = False) -> keras.Model:
    """Return the served form of a `batch_norm=True` detector, each batch norm folded into its conv.

    y = gamma * (conv(x) - mean) / sqrt(var + eps) + beta is conv with kernel * s and bias
    beta - mean * s, s = gamma / sqrt(var + eps) (Ioffe & Szegedy 2015, inference form).
    """
    served = build_detector(width, batch_norm=False, context=context)
    for layer in served.layers:
        if not layer.weights:
            continue
        source = trained.get_layer(layer.name)
        if isinstance(layer, layers.Conv2D) and layer.name.endswith("_conv"):
            norm = trained.get_layer(layer.name[: -len("_conv")] + "_bn")
            gamma, beta, mean, var = (
                v.numpy() for v in (norm.gamma, norm.beta, norm.moving_mean, norm.moving_variance)
            )
            scale = gamma / (var + norm.epsilon) ** 0.5
            kernel = source.kernel.numpy() * scale
            layer.set_weights([kernel, beta - mean * scale])
        else:
            layer.set_weights(source.get_weights())
    return served


def focal_loss(target: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Penalty-reduced pixel-wise focal loss on heatmap logits, averaged over the positives.

    CornerNet (Law & Deng 2018, eq. 1) as used by CenterNet (Zhou et al. 2019, eq. 1), alpha=2, beta=4:
    positives are cells where the target is exactly 1; negatives near a centre are down-weighted by
    (1 - target)^4.
    """
    target = tf.cast(target, tf.float32)
    logits = tf.cast(logits, tf.float32)
    prob = tf.sigmoid(logits)
    log_p = tf.math.log_sigmoid(logits)
    log_not_p = tf.math.log_sigmoid(-logits)
    positive = tf.cast(tf.equal(target, 1.0), tf.float32)
    pos_loss = -positive * tf.square(1.0 - prob) * log_p
    neg_loss = -(1.0 - positive) * tf.pow(1.0 - target, 4.0) * tf.square(prob) * log_not_p
    num_pos = tf.maximum(tf.reduce_sum(positive), 1.0)
    return (tf.reduce_sum(pos_loss) + tf.reduce_sum(neg_loss)) / num_pos


def heatmap_probabilities(model: keras.Model, images: tf.Tensor, flip_tta: bool = False) -> tf.Tensor:
    """Run the detector and return sigmoid probabilities, optionally averaged with a mirrored pass."""
    prob = tf.sigmoid(model(images, training=False))
    if flip_tta:
        mirrored = tf.sigmoid(model(tf.reverse(images, axis=[2]), training=False))
        prob = 0.5 * (prob + tf.reverse(mirrored, axis=[2]))
    return prob


def decode_peaks(heatmap: tf.Tensor, max_peaks: int) -> tf.Tensor:
    """Decode the strongest local maxima of probability heatmaps [B, h, w, 1] into [B, max_peaks, 3].

    Pure TF ops: a 3x3 max-pool keeps local maxima (CenterNet's NMS substitute), then top-k per row.
    Each row is (y, x, score): the centre of the peak's cell relative to the input, in [0, 1], and its
    probability, sorted by score descending. Rows past the available peaks are all zero. Every batch
    row depends on its own heatmap only.
    """
    heatmap = tf.convert_to_tensor(heatmap, tf.float32)
    shape = tf.shape(heatmap)
    batch, height, width = shape[0], shape[1], shape[2]
    pooled = tf.nn.max_pool2d(heatmap, ksize=3, strides=1, padding="SAME")
    peaks = tf.where(tf.equal(heatmap, pooled), heatmap, tf.zeros_like(heatmap))
    flat = tf.reshape(peaks, [batch, height * width])
    k = tf.minimum(max_peaks, height * width)
    scores, indices = tf.math.top_k(flat, k=k, sorted=True)
    y = (tf.cast(indices // width, tf.float32) + 0.5) / tf.cast(height, tf.float32)
    x = (tf.cast(indices % width, tf.float32) + 0.5) / tf.cast(width, tf.float32)
    present = tf.cast(scores > 0.0, tf.float32)
    rows = tf.stack([y * present, x * present, scores], axis=-1)
    padded = tf.pad(rows, [[0, 0], [0, max_peaks - k], [0, 0]])
    return tf.reshape(padded, [batch, max_peaks, 3])
