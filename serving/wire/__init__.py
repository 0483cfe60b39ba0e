"""Wire-compatible subset of the TF Serving protos, importable without TensorFlow.

The *.proto files here keep the official field numbers and full names; `make protos` regenerates the
*_pb2 modules from them, and tests/test_wire.py proves byte compatibility with tensorflow-serving-api.
"""
