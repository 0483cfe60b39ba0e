"""A safe reader for PyTorch's legacy (pre-1.6, non-zip) `torch.save` files holding a state dict:
the tensors come back as NumPy arrays, without PyTorch and without running arbitrary pickled code.

The format, as `_legacy_save` in PyTorch's torch/serialization.py writes it, is five things in a row:

1. a pickle of the magic number 0x1950a86a20f9469cfc6c;
2. a pickle of the protocol version, 1001;
3. a pickle of system information, e.g. {"little_endian": True, "type_sizes": {...}};
4. the object itself (here an OrderedDict of name -> tensor), pickled with persistent ids for the
   storages: each tensor is `torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride,
   requires_grad, backward_hooks)`, where `storage` is the persistent id ("storage", storage type,
   key, location, element count, view metadata);
5. a pickle of the list of storage keys, then for each key in that order an int64 element count and
   the storage's raw bytes (little-endian here, per the system information).

A tensor is a strided view of its storage, not necessarily a contiguous one: weights converted from
TensorFlow keep TensorFlow's memory order, so a conv kernel of shape (out, in, kh, kw) can have strides
(1, out, kw * in * out, in * out). Reading the storage in shape order would scramble every kernel,
so each array is rebuilt from its offset and strides (bounds-checked), then copied contiguous.
"""

from __future__ import annotations

import collections
import logging
import pickle
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
from numpy.typing import NDArray

logger = logging.getLogger(__name__)

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

# The storage classes a state dict of numbers can name, with the element type each holds on disk
# (PyTorch's LongStorage is int64 whatever the writer's C `long` was).
STORAGE_DTYPES: dict[str, np.dtype[Any]] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class InvalidCheckpoint(ValueError):
    """The file is not a legacy PyTorch state dict this reader accepts (malformed, or names a class
    outside the format)."""


@dataclass(frozen=True, slots=True)
class _StorageType:
    """What `find_class("torch", "FloatStorage")` returns: a name and its element type, nothing callable."""

    name: str
    dtype: np.dtype[Any]


@dataclass(frozen=True, slots=True)
class _StorageRef:
    """A persistent id, before the storage's bytes (which follow the pickle) have been read."""

    key: str
    dtype: np.dtype[Any]
    count: int


@dataclass(frozen=True, slots=True)
class _TensorRef:
    """A tensor as the pickle describes it: a strided view of a storage still to be read.

    Slotted and frozen so that a BUILD opcode cannot rewrite the shape or strides after they were checked.
    """

    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]


def _int_tuple(value: object, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(type(v) is int and v >= 0 for v in value):
        raise InvalidCheckpoint(f"{what} must be a tuple of non-negative ints, got {value!r}")
    return value


def _rebuild_tensor(
    storage: object, offset: object, size: object, stride: object, *_rest: object
) -> _TensorRef:
    """Stands in for torch._utils._rebuild_tensor_v2; the trailing arguments (requires_grad, hooks,
    metadata) do not change the numbers."""
    if not isinstance(storage, _StorageRef):
        raise InvalidCheckpoint(f"tensor built on {type(storage).__name__}, not on a storage")
    if type(offset) is not int or offset < 0:
        raise InvalidCheckpoint(f"storage offset must be a non-negative int, got {offset!r}")
    shape, strides = _int_tuple(size, "tensor size"), _int_tuple(stride, "tensor stride")
    if len(shape) != len(strides):
        raise InvalidCheckpoint(f"size {shape} and stride {strides} differ in length")
    return _TensorRef(storage, offset, shape, strides)


class _StateDictUnpickler(pickle.Unpickler):
    """Resolves only the globals the format needs; any other class or function is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name, STORAGE_DTYPES[name])
        raise InvalidCheckpoint(f"refusing to load {module}.{name}: not part of a state dict of tensors")

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise InvalidCheckpoint(f"unexpected persistent id {pid!r}")
        _, storage_type, key, _location, count, view = pid
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str):
            raise InvalidCheckpoint(f"malformed storage id {pid!r}")
        if type(count) is not int or count < 0:
            raise InvalidCheckpoint(f"storage {key} has a bad element count {count!r}")
        if view is not None:
            # Storage views were dropped from PyTorch long before this file; nothing here needs them.
            raise InvalidCheckpoint(f"storage {key} is a view of another storage; not supported")
        return _StorageRef(key, storage_type.dtype, count)


def _load(stream: BinaryIO) -> Any:
    try:
        return _StateDictUnpickler(stream).load()
    except InvalidCheckpoint:
        raise
    except Exception as exc:  # pickle raises a zoo of types on bad bytes; callers see one
        raise InvalidCheckpoint(f"unreadable pickle: {exc}") from exc


def _read_storage(stream: BinaryIO, ref: _StorageRef) -> NDArray[Any]:
    header = stream.read(8)
    if len(header) != 8:
        raise InvalidCheckpoint(f"file ends before storage {ref.key}")
    (count,) = struct.unpack("<q", header)
    if count != ref.count:
        raise InvalidCheckpoint(f"storage {ref.key} holds {count} elements, the pickle said {ref.count}")
    data = stream.read(count * ref.dtype.itemsize)
    if len(data) != count * ref.dtype.itemsize:
        raise InvalidCheckpoint(f"file ends inside storage {ref.key}")
    return np.frombuffer(data, dtype=ref.dtype)


def _materialise(tensor: _TensorRef, storage: NDArray[Any]) -> NDArray[Any]:
    """Rebuild the strided view, after checking it stays inside the storage, as a contiguous copy."""
    if 0 not in tensor.shape:
        last = tensor.offset + sum((n - 1) * s for n, s in zip(tensor.shape, tensor.strides, strict=True))
        if last >= storage.size:
            raise InvalidCheckpoint(
                f"tensor {tensor.shape} with strides {tensor.strides} at offset {tensor.offset} "
                f"reaches past storage {tensor.storage.key} of {storage.size} elements"
            )
    elif tensor.offset > storage.size:
        raise InvalidCheckpoint(f"empty tensor's offset lies past storage {tensor.storage.key}")
    base = storage[tensor.offset :]
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        base, shape=tensor.shape, strides=tuple(s * itemsize for s in tensor.strides), writeable=False
    )
    return np.array(view, order="C", copy=True)


def read_state_dict(stream: BinaryIO) -> dict[str, NDArray[Any]]:
    """Read a legacy `torch.save` state dict from a binary stream into name -> NumPy array.

    Raises InvalidCheckpoint if the stream is not that format, names any class outside it, has a
    tensor reaching outside its storage, or has bytes missing or left over.
    """
    if _load(stream) != MAGIC_NUMBER:
        raise InvalidCheckpoint("not a legacy torch.save file (wrong magic number)")
    if (protocol := _load(stream)) != PROTOCOL_VERSION:
        raise InvalidCheckpoint(f"unsupported protocol version {protocol!r}")
    system = _load(stream)
    if not isinstance(system, dict) or system.get("little_endian") is not True:
        raise InvalidCheckpoint(f"only little-endian files are read, system information says {system!r}")
    state = _load(stream)
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, _TensorRef) for k, v in state.items()
    ):
        raise InvalidCheckpoint("the saved object is not a dict of name -> tensor")
    keys = _load(stream)
    storages = {t.storage.key: t.storage for t in state.values()}
    if not isinstance(keys, list) or sorted(keys) != sorted(storages):
        raise InvalidCheckpoint("storage key list does not match the storages the tensors use")
    data = {key: _read_storage(stream, storages[key]) for key in keys}
    if stream.read(1):
        raise InvalidCheckpoint("unexpected bytes after the last storage")
    arrays = {name: _materialise(tensor, data[tensor.storage.key]) for name, tensor in state.items()}
    logger.debug("read %d tensors from %d storages", len(arrays), len(data))
    return arrays
