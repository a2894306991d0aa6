"""Generated protobuf and gRPC stubs (`make protos`); do not edit the *_pb2* files by hand."""
