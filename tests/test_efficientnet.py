"""The legacy PyTorch checkpoint reader that EfficientNet-Lite0's weights come through: strides
honoured, foreign classes refused."""

from __future__ import annotations

import io
import pickle
import struct

import numpy as np
import pytest

pytest.importorskip("tensorflow")  # export.acne's package imports it, though the reader does not

from export.acne.torch_checkpoint import MAGIC_NUMBER, PROTOCOL_VERSION, InvalidCheckpoint, read_state_dict

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
