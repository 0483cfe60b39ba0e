from serving.wire import model_status_pb2 as _model_status_pb2
from serving.wire import predict_pb2 as _predict_pb2
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor
