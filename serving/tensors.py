"""TensorProto <-> NumPy, for the official message classes and the wire subset alike.

Tensors travel as raw little-endian bytes in tensor_content (the fast path TF Serving itself uses);
the typed repeated fields are read too, because other clients send them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

# tensorflow.DataType enum value -> NumPy dtype, and which repeated field carries it when
# tensor_content is empty (tensorflow/core/framework/tensor.proto).
_DTYPES: dict[int, tuple[np.dtype[Any], str]] = {
    1: (np.dtype(np.float32), "float_val"),
    2: (np.dtype(np.float64), "double_val"),
    3: (np.dtype(np.int32), "int_val"),
    4: (np.dtype(np.uint8), "int_val"),
    5: (np.dtype(np.int16), "int_val"),
    6: (np.dtype(np.int8), "int_val"),
    9: (np.dtype(np.int64), "int64_val"),
    10: (np.dtype(np.bool_), "bool_val"),
    17: (np.dtype(np.uint16), "int_val"),
    22: (np.dtype(np.uint32), "uint32_val"),
    23: (np.dtype(np.uint64), "uint64_val"),
}
_ENUMS: dict[np.dtype[Any], int] = {dtype: enum for enum, (dtype, _) in _DTYPES.items()}


def make_ndarray(proto: Any) -> NDArray[Any]:
    """Read a TensorProto into a NumPy array; raises ValueError for unsupported or inconsistent data."""
    if proto.dtype not in _DTYPES:
        raise ValueError(f"unsupported tensor dtype enum {proto.dtype}")
    dtype, field = _DTYPES[proto.dtype]
    shape = tuple(int(d.size) for d in proto.tensor_shape.dim)
    if any(size < 0 for size in shape):
        raise ValueError(f"tensor shape {shape} has a negative dimension")
    count = int(np.prod(shape, dtype=np.int64))
    if proto.tensor_content:
        flat = np.frombuffer(proto.tensor_content, dtype=dtype.newbyteorder("<"))
        if flat.size != count:
            raise ValueError(f"tensor_content holds {flat.size} values, shape {shape} needs {count}")
        return flat.astype(dtype, copy=False).reshape(shape)
    values = np.asarray(getattr(proto, field), dtype=dtype)
    if values.size == count:
        return values.reshape(shape)
    if values.size == 1:  # TF's convention: one value fills the whole tensor
        return np.full(shape, values[0], dtype=dtype)
    if values.size == 0 and count == 0:
        return values.reshape(shape)
    raise ValueError(f"tensor holds {values.size} values, shape {shape} needs {count}")


def fill_tensor_proto(proto: Any, array: NDArray[Any]) -> Any:
    """Write `array` into an empty TensorProto as dtype, shape and raw content; returns the proto."""
    array = np.ascontiguousarray(array)
    if array.dtype not in _ENUMS:
        raise ValueError(f"unsupported array dtype {array.dtype}")
    proto.dtype = _ENUMS[array.dtype]
    for size in array.shape:
        proto.tensor_shape.dim.add().size = int(size)
    proto.tensor_content = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    return proto
