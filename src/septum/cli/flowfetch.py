"""Recent flows from the agents' Observers (Hubble's GetFlows), for `septum policy what-if`.

Which Observers: the `--server` addresses when given; else one per node, its unix socket
(`<run-dir>/<node>/observer.sock`) when this machine has it, else the node's InternalIP on
port 4244. An Observer that does not answer is reported (the others' flows are still used);
none answering is an error. A relay (one address for the whole cluster) is a later issue.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from septum.cli.hubble.client import (
    DEFAULT_TCP_PORT,
    ClientTLS,
    channel,
    client_tls,
    observer_stub,
)
from septum.cli.hubble.errors import ClientError
from septum.cli.hubble.flags import build_request
from septum.cli.policyerrors import InputError, ObserverError
from septum.dataplane.observe.api.flow import flow_pb2

DEFAULT_RUN_DIR = Path("/run/septum")
OBSERVER_SOCKET = "observer.sock"


def node_observers(nodes: Iterable[dict[str, Any]], run_dir: Path = DEFAULT_RUN_DIR) -> list[str]:
    """One Observer address per node: its local unix socket if present, else InternalIP:4244."""
    servers: list[str] = []
    for node in nodes:
        name = str((node.get("metadata") or {}).get("name", ""))
        socket = run_dir / name / OBSERVER_SOCKET
        if name and socket.is_socket():
            servers.append(f"unix://{socket}")
            continue
        for address in (node.get("status") or {}).get("addresses") or []:
            if address.get("type") == "InternalIP" and address.get("address"):
                host = str(address["address"])
                host = f"[{host}]" if ":" in host else host
                servers.append(f"{host}:{DEFAULT_TCP_PORT}")
                break
    return servers


@dataclass(slots=True)
class Fetched:
    flows: list[flow_pb2.Flow] = field(default_factory=list)
    lost: int = 0  # flows the Observers said they dropped (ring overrun)
    answered: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # server -> why


def _fetch_one(
    server: str, since: str, timeout_s: float, into: Fetched, tls: ClientTLS | None
) -> None:
    request = build_request([], since=since)
    try:
        chan = channel(server, tls if tls is not None else client_tls(server))
    except ClientError as err:
        raise InputError(f"--server {server}: {err}") from err
    try:
        grpc.channel_ready_future(chan).result(timeout=timeout_s)
        flows = []
        lost = 0
        for response in observer_stub(chan).GetFlows(request, timeout=timeout_s):
            which = response.WhichOneof("response_types")
            if which == "flow":
                flows.append(response.flow)
            elif which == "lost_events":
                lost += response.lost_events.num_events_lost
        into.flows.extend(flows)
        into.lost += lost
        into.answered.append(server)
    except grpc.FutureTimeoutError:
        into.failed[server] = f"no answer within {timeout_s:g}s"
    except grpc.RpcError as err:
        code = err.code() if hasattr(err, "code") else None
        details = err.details() if hasattr(err, "details") else str(err)
        into.failed[server] = f"GetFlows failed ({code}): {details}"
    finally:
        chan.close()


def fetch_flows(
    servers: Sequence[str], since: str, timeout_s: float = 10.0, tls: ClientTLS | None = None
) -> Fetched:
    """Every flow since `since` (RFC 3339 or a duration ago) from each server, in turn;
    `tls`: the settings to dial them with (None: TLS only for a tls:// server, system CAs)."""
    if not servers:
        raise ObserverError("--server: no Observer to ask (the cluster lists no nodes)")
    try:
        build_request([], since=since)
    except ClientError as err:
        raise InputError(str(err)) from err
    fetched = Fetched()
    for server in servers:
        _fetch_one(server, since, timeout_s, fetched, tls)
    if not fetched.answered:
        detail = "; ".join(f"{server}: {why}" for server, why in fetched.failed.items())
        raise ObserverError(f"--server: no Observer answered ({detail})")
    return fetched
