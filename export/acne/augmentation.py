"""Colour augmentation of training batches inside the training graph, per image."""

from __future__ import annotations

import logging

import tensorflow as tf

logger = logging.getLogger(__name__)


def jitter_colour(images: tf.Tensor, generator: tf.random.Generator) -> tf.Tensor:
    """Per-image random brightness, contrast, channel gains, saturation and sensor noise, 0..255."""
    batch = tf.shape(images)[0]

    def draw(low: float, high: float, channels: int = 1) -> tf.Tensor:
        return generator.uniform([batch, 1, 1, channels], low, high)

    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    images = (images - mean) * draw(0.7, 1.3) + mean * draw(0.7, 1.3)
    images = images * draw(0.9, 1.1, 3)
    grey = tf.reduce_mean(images, axis=3, keepdims=True)
    images = grey + (images - grey) * draw(0.6, 1.4)
    noisy = tf.cast(draw(0.0, 1.0) < 0.2, tf.float32) * draw(2.0, 6.0)
    images = images + generator.normal(tf.shape(images)) * noisy
    return tf.clip_by_value(images, 0.0, 255.0)
