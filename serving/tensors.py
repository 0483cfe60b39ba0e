"""TensorProto <-> NumPy, for the official message classes and the wire subset alike.

Tensors travel as raw little-endian bytes in tensor_content (the fast path TF Serving itself uses);
the typed repeated fields are read too, because other clients send them.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    # Read once: each read of a bytes field copies it out of the message.
    content = proto.tensor_content
    if content:
        flat = np.frombuffer(content, dtype=dtype.newbyteorder("<"))
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
    array = _fill_tensor_head(proto, array)
    proto.tensor_content = array.tobytes()
    return proto


def _fill_tensor_head(proto: Any, array: NDArray[Any]) -> NDArray[Any]:
    """Write `array`'s dtype and shape into an empty TensorProto; returns the array as its content
    travels (C-contiguous, little-endian). Raises ValueError for a dtype the wire does not carry."""
    array = np.ascontiguousarray(array)
    if array.dtype not in _ENUMS:
        raise ValueError(f"unsupported array dtype {array.dtype}")
    proto.dtype = _ENUMS[array.dtype]
    for size in array.shape:
        proto.tensor_shape.dim.add().size = int(size)
    return array.astype(array.dtype.newbyteorder("<"), copy=False)


def _varint(value: int) -> bytes:
    """Protocol Buffers' base-128 varint of a non-negative integer."""
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _length_delimited(field_number: int, length: int) -> bytes:
    """The key and length of a length-delimited field (wire type 2) whose payload follows."""
    return _varint(field_number << 3 | 2) + _varint(length)


def encode_predict_request(head: Any, inputs: Mapping[str, NDArray[Any]]) -> bytes:
    """A PredictRequest's wire bytes: `head` (a PredictRequest with no inputs: model spec, output
    filter) followed by one entry of its `inputs` map (field 2; key 1, value 2) per array, each array's
    bytes copied once (tensorflow_serving/apis/predict.proto, tensorflow/core/framework/tensor.proto).

    Serialized messages concatenate as a merge and a map is a repeated entry message, so this parses
    as `head` with each input filled by fill_tensor_proto. Filling the message and serializing it
    would copy every tensor twice more, which for a request of a few megabytes is most of what the
    call costs the orchestrator (and the copies hold Python's lock, which the other requests wait on).
    """
    if head.inputs:
        raise ValueError("the head request must carry no inputs")
    parts: list[bytes | memoryview] = [head.SerializeToString()]
    scratch = type(head)()
    for name, given in inputs.items():
        # The tensor's dtype and shape as fill_tensor_proto writes them; its content (field 4) follows.
        array = _fill_tensor_head(scratch.inputs[name], given)
        content = array.reshape(-1).view(np.uint8).data
        key = name.encode("utf-8")
        tensor_head = scratch.inputs[name].SerializeToString() + _length_delimited(4, content.nbytes)
        entry_head = (
            _length_delimited(1, len(key))
            + key
            + _length_delimited(2, len(tensor_head) + content.nbytes)
            + tensor_head
        )
        parts += [_length_delimited(2, len(entry_head) + content.nbytes) + entry_head, content]
    return b"".join(parts)
