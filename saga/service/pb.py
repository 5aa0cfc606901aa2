"""The generated ``saga.v1`` messages and gRPC stubs, built on first import when missing.

Import ``pb2`` and ``pb2_grpc`` from here, never from ``proto_gen`` directly: this module
makes sure the generated code exists and matches ``protos/`` (see :mod:`saga.service.protogen`).
"""

from __future__ import annotations

from saga.service.protogen import ensure_generated

ensure_generated()

from saga.service.proto_gen.saga.v1 import saga_pb2 as pb2  # noqa: E402
from saga.service.proto_gen.saga.v1 import saga_pb2_grpc as pb2_grpc  # noqa: E402

__all__ = ["pb2", "pb2_grpc"]
