"""The descriptor pool of the wire subset: private, so it never collides with TensorFlow's own protos.

TensorFlow registers tensorflow.TensorProto and friends in protobuf's default pool; the subset's
messages keep those full names (the wire needs them), so they live in this pool instead, and one
process can hold both (the local model server, the export tools, the byte-compatibility test).
"""

from google.protobuf import any_pb2, descriptor_pool, wrappers_pb2

POOL = descriptor_pool.DescriptorPool()
for _dependency in (any_pb2, wrappers_pb2):
    POOL.AddSerializedFile(_dependency.DESCRIPTOR.serialized_pb)
