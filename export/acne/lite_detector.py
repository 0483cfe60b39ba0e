"""The acne lesion detector on an ImageNet-pretrained EfficientNet-Lite0 backbone: the same stride-4
centre-heatmap output as export.acne.network's build_detector, so decode_peaks and focal_loss apply
unchanged.

Measured (served form, width 64): 751,633 parameters (692,688 backbone, 58,945 decoder and head);
forward pass at 384 x 384, batch 1, 11.7-12.0 ms median of 20 runs after 5 warm-up runs, through a
tf.function, TensorFlow 2.21 CPU with 2 intra-op threads on a shared 2-core AMD EPYC (build_detector(24),
272,521 parameters, took 4.0 ms the same way).
"""

from __future__ import annotations

import math

import keras
from keras import layers

from export.acne.efficientnet import backbone_features, fold_batch_norms
from export.acne.network import PRIOR_PROBABILITY, Upsample2x

INPUT_MULTIPLE_PX = 16  # the backbone is cut at stride 16
DECODER_WIDTH = 64  # channels at stride 8; half that at stride 4


def _conv(
    x: keras.KerasTensor, filters: int, kernel: int, name: str, batch_norm: bool, relu: bool = True
) -> keras.KerasTensor:
    """Stride-1 conv, then batch norm (training form) or a bias (served form), then ReLU if asked."""
    x = layers.Conv2D(filters, kernel, padding="same", use_bias=not batch_norm, name=f"{name}_conv")(x)
    if batch_norm:
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def build_lite_detector(batch_norm: bool = False, width: int = DECODER_WIDTH) -> keras.Model:
    """Build the detector: float32 RGB in 0..255, [B, H, W, 3] with H, W divisible by 16.

    Returns heatmap LOGITS [B, H/4, W/4, 1], as build_detector does. EfficientNet-Lite0 is cut after
    its last stride-16 block (blocks 0-10); its stride 4, 8 and 16 maps (24, 40, 112 channels) feed a
    small FPN decoder (Lin et al. 2017, "Feature Pyramid Networks"): linear 1x1 laterals, top-down
    bilinear upsampling and addition, a 3x3 conv after each merge; then CenterNet's 1x1 heatmap conv
    (Zhou et al. 2019) with its bias set to the prior. `batch_norm=True` is the training form (load
    ImageNet weights with efficientnet.load_imagenet_weights); the default is the served form, whose
    weights come from `fold_lite_detector`.
    """
    bn = batch_norm
    images = keras.Input((None, None, 3), dtype="float32", name="images")
    features = backbone_features(images, batch_norm, max_stride=16)
    x = _conv(features[16], width, 1, "lat16", bn)
    x = Upsample2x(name="up8")(x)
    x = layers.Add(name="up8_add")([x, _conv(features[8], width, 1, "lat8", bn, relu=False)])
    x = _conv(x, width, 3, "up8_mix", bn)
    x = _conv(x, width // 2, 1, "up4_reduce", bn)
    x = Upsample2x(name="up4")(x)
    x = layers.Add(name="up4_add")([x, _conv(features[4], width // 2, 1, "lat4", bn, relu=False)])
    x = _conv(x, width // 2, 3, "up4_mix", bn)
    bias = -math.log((1.0 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY)
    logits = layers.Conv2D(
        1, 1, bias_initializer=keras.initializers.Constant(bias), dtype="float32", name="heatmap_logits"
    )(x)
    return keras.Model(images, logits, name="acne_lite_detector")


def fold_lite_detector(trained: keras.Model, width: int = DECODER_WIDTH) -> keras.Model:
    """Return the served form of a `batch_norm=True` lite detector, each batch norm folded into its
    conv (backbone and decoder alike)."""
    return fold_batch_norms(trained, build_lite_detector(batch_norm=False, width=width))
