"""EfficientNet-Lite0 and its weights: the legacy checkpoint reader (strides honoured, foreign classes
refused), the digest pin, ImageNet predictions on real photos, and the lite detector's shape and
batch-norm folding. Photos and weights skip, saying why, when absent; under CI=true they must be there.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
from pathlib import Path
from typing import NoReturn

import cv2
import numpy as np
import pytest

pytest.importorskip("tensorflow")

import keras

from export.acne.efficientnet import (
    IMAGE_SIZE_PX,
    WEIGHTS_SHA256,
    WeightsDigestMismatch,
    WeightsUnavailable,
    build_classifier,
    imagenet_state_dict,
    load_imagenet_weights,
)
from export.acne.lite_detector import build_lite_detector, fold_lite_detector
from export.acne.torch_checkpoint import MAGIC_NUMBER, PROTOCOL_VERSION, InvalidCheckpoint, read_state_dict
from tests.conftest import DATA


def _missing(message: str) -> NoReturn:
    """Skip, or fail under CI, where data the test needs is absent."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _photo_rgb(folder: str, name: str) -> np.ndarray:
    path = DATA / folder / name
    if not path.exists():
        _missing(f"photo not found at {path} (expected ../shared/data beside the repository)")
    return np.ascontiguousarray(cv2.imread(str(path))[:, :, ::-1])


@pytest.fixture(scope="module")
def imagenet() -> dict[str, np.ndarray]:
    try:
        return imagenet_state_dict()
    except WeightsUnavailable as exc:
        _missing(str(exc))


# --- A hand-written legacy file, so the reader's rules are tested on exactly known bytes. ----------


def _pickle_text(value: str) -> bytes:
    data = value.encode()
    return b"X" + struct.pack("<I", len(data)) + data  # BINUNICODE


def _pickle_ints(values: tuple[int, ...]) -> bytes:
    return b"(" + b"".join(b"J" + struct.pack("<i", v) for v in values) + b"t"  # MARK, BININTs, TUPLE


def _legacy_file(
    storage: np.ndarray, offset: int, shape: tuple[int, ...], strides: tuple[int, ...], rebuild: bytes
) -> bytes:
    """One float32 storage and one tensor `w` on it, laid out as torch's _legacy_save writes them."""
    header = b"".join(
        pickle.dumps(v, protocol=2)
        for v in (MAGIC_NUMBER, PROTOCOL_VERSION, {"little_endian": True, "type_sizes": {"long": 8}})
    )
    storage_id = (
        b"(" + _pickle_text("storage") + b"ctorch\nFloatStorage\n" + _pickle_text("k0") + _pickle_text("cpu")
    )
    storage_id += b"J" + struct.pack("<i", storage.size) + b"Nt" + b"Q"  # None view, TUPLE, BINPERSID
    tensor = b"c" + rebuild + b"(" + storage_id + b"J" + struct.pack("<i", offset)
    tensor += _pickle_ints(shape) + _pickle_ints(strides) + b"\x89" + b"}" + b"tR"  # False, {}, REDUCE
    state = b"\x80\x02ccollections\nOrderedDict\n)R" + _pickle_text("w") + tensor + b"s."
    keys = pickle.dumps(["k0"], protocol=2)
    data = struct.pack("<q", storage.size) + storage.astype("<f4").tobytes()
    return header + state + keys + data


REBUILD = b"torch._utils\n_rebuild_tensor_v2\n"


def test_reader_rebuilds_a_tensor_from_its_offset_and_strides() -> None:
    storage = np.arange(7, dtype=np.float32)
    state = read_state_dict(io.BytesIO(_legacy_file(storage, 1, (2, 3), (1, 2), REBUILD)))
    np.testing.assert_array_equal(state["w"], [[1, 3, 5], [2, 4, 6]])
    assert state["w"].flags["C_CONTIGUOUS"]


def test_reader_refuses_classes_outside_the_format() -> None:
    with pytest.raises(InvalidCheckpoint, match=r"refusing to load os\.system"):
        read_state_dict(io.BytesIO(_legacy_file(np.zeros(6, np.float32), 0, (6,), (1,), b"os\nsystem\n")))


def test_reader_refuses_a_tensor_reaching_past_its_storage() -> None:
    with pytest.raises(InvalidCheckpoint, match="reaches past storage"):
        read_state_dict(io.BytesIO(_legacy_file(np.zeros(6, np.float32), 1, (2, 3), (3, 1), REBUILD)))


def test_reader_refuses_truncated_files() -> None:
    whole = _legacy_file(np.zeros(6, np.float32), 0, (6,), (1,), REBUILD)
    with pytest.raises(InvalidCheckpoint, match="ends inside storage"):
        read_state_dict(io.BytesIO(whole[:-4]))


# --- The packaged ImageNet weights. ---------------------------------------------------------------


def test_packaged_weights_have_the_known_tensors(imagenet: dict[str, np.ndarray]) -> None:
    assert len(imagenet) == 296
    assert imagenet["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert imagenet["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert imagenet["_blocks.3._depthwise_conv.weight"].shape == (144, 1, 5, 5)
    assert imagenet["_fc.weight"].shape == (1000, 1280)
    assert imagenet["_bn0.num_batches_tracked"].dtype == np.int64


def test_stem_kernel_differs_from_a_naive_reshape_of_its_storage(imagenet: dict[str, np.ndarray]) -> None:
    # The file stores it with strides (1, 32, 288, 96): memory order (kh, kw, in, out), TF's layout.
    kernel = imagenet["_conv_stem.weight"]
    storage_order = kernel.transpose(2, 3, 1, 0).ravel()
    assert not np.allclose(storage_order.reshape(kernel.shape), kernel)


def test_weights_with_another_digest_are_refused(tmp_path: Path) -> None:
    impostor = tmp_path / "efficientnet-lite0.pth"
    impostor.write_bytes(b"not the pinned weights")
    with pytest.raises(WeightsDigestMismatch, match=f"expected {WEIGHTS_SHA256}"):
        imagenet_state_dict(impostor)


@pytest.mark.parametrize(
    ("photo", "classes"),
    [
        ("skimage_chelsea.png", {281, 282, 283, 284, 285}),  # tabby, tiger cat, Persian, Siamese, Egyptian
        ("skimage_coffee.png", {504, 967, 968}),  # coffee mug, espresso, cup
    ],
)
def test_imagenet_classifier_recognises_the_photo(
    imagenet: dict[str, np.ndarray], photo: str, classes: set[int]
) -> None:
    model = build_classifier()
    assert load_imagenet_weights(model, imagenet) == len([layer for layer in model.layers if layer.weights])
    rgb = cv2.resize(
        _photo_rgb("nonfaces", photo), (IMAGE_SIZE_PX, IMAGE_SIZE_PX), interpolation=cv2.INTER_AREA
    )
    logits = model(rgb[None].astype(np.float32), training=False).numpy()[0]
    top5 = set(np.argsort(-logits)[:5].tolist())
    assert top5 & classes, f"top 5 {sorted(top5)} has none of {sorted(classes)}"


# --- The lite detector. -----------------------------------------------------------------------------


def _face_crop(side: int, height: int) -> np.ndarray:
    rgb = _photo_rgb("faces", "congress_B001270.jpg")
    return np.ascontiguousarray(rgb[:height, :side])[None].astype(np.float32)


def test_lite_detector_gives_stride_4_logits_from_imagenet_features(imagenet: dict[str, np.ndarray]) -> None:
    trained = build_lite_detector(batch_norm=True)
    backbone = [
        layer for layer in trained.layers if layer.weights and layer.name.startswith(("stem", "block"))
    ]
    assert load_imagenet_weights(trained, imagenet) == len(backbone)
    crop = _face_crop(192, 128)
    logits = trained(crop, training=False).numpy()
    assert logits.shape == (1, 32, 48, 1)
    assert logits.dtype == np.float32


def _randomise_batch_norms(model: keras.Model, seed: int) -> None:
    """Give every batch norm statistics unlike the identity, as training would."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, n))
            layer.beta.assign(rng.uniform(-0.2, 0.2, n))
            layer.moving_mean.assign(rng.uniform(-0.1, 0.1, n))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n))


def test_folding_batch_norms_keeps_the_lite_detectors_output() -> None:
    trained = build_lite_detector(batch_norm=True)
    _randomise_batch_norms(trained, seed=0)
    crop = _face_crop(160, 160)
    expected = trained(crop, training=False).numpy()
    served = fold_lite_detector(trained)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in served.layers)
    assert expected.std() > 1e-3
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(served(crop).numpy(), expected, atol=1e-4 * scale + 1e-4)


def test_imagenet_weights_do_not_load_into_the_served_form(imagenet: dict[str, np.ndarray]) -> None:
    with pytest.raises(ValueError, match="batch-norm form only"):
        load_imagenet_weights(build_lite_detector(batch_norm=False), imagenet)
