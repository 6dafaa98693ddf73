"""grpc.health.v1.Health/Check for the names Hubble clients ask about (`hubble status`)."""

from __future__ import annotations

from typing import Any

import grpclib.const
import grpclib.server
from grpc_health.v1 import health_pb2
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from septum.dataplane.observe.service import HUBBLE_HEALTH_SERVICE, OBSERVER_SERVICE

CHECK_PATH = "/grpc.health.v1.Health/Check"
SERVED = frozenset({"", OBSERVER_SERVICE, HUBBLE_HEALTH_SERVICE})


class RelayHealth:
    """SERVING while the relay runs (as Hubble Relay, whatever its nodes say: GetNodes and
    ServerStatus tell which answer)."""

    def __init__(self) -> None:
        self.serving = True

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return {
            CHECK_PATH: grpclib.const.Handler(
                self.check,
                grpclib.const.Cardinality.UNARY_UNARY,
                health_pb2.HealthCheckRequest,
                health_pb2.HealthCheckResponse,
            )
        }

    async def check(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        assert request is not None  # a unary call always carries its request
        if request.service not in SERVED:
            raise GRPCError(Status.NOT_FOUND, f"unknown service {request.service!r}")
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if self.serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await stream.send_message(health_pb2.HealthCheckResponse(status=status))
