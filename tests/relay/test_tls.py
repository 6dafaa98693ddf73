"""Mutual TLS between the relay and the agents (the default), and TLS to the relay's clients."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from relay_helpers import (  # type: ignore[import-not-found]
    Agents,
    Certificates,
    RunningRelay,
    boot_ns,
    flow_event,
    poll,
    relay_config,
)

from septum.dataplane.observe.api.observer import observer_pb2
from septum.dataplane.observe.api.relay import relay_pb2
from septum.dataplane.observe.server import TLSFiles
from septum.relay.errors import RelayConfigError
from septum.relay.server import RelayConfig, ServerTLS
from septum.relay.tls import AgentTLS

StartRelay = Callable[[RelayConfig], RunningRelay]


def mtls_agents(agents: Agents, certs: Certificates) -> list[str]:
    addresses = []
    for name in ("node-a", "node-b"):
        agent = agents.start(
            name, tls=TLSFiles(certs.agent_cert, certs.agent_key, client_ca_file=certs.ca)
        )
        agent.push(flow_event(boot_ns(), 7000 if name == "node-a" else 7001))
        addresses.append(agent.address)
    return addresses


def tls_relay_config(addresses: list[str], certs: Certificates, ca: object = None) -> RelayConfig:
    return relay_config(
        addresses,
        insecure_agents=False,
        agent_tls=AgentTLS((ca or certs.ca,), certs.relay_cert, certs.relay_key),  # type: ignore[arg-type]
        insecure=False,
        server_tls=ServerTLS(certs.agent_cert, certs.agent_key),
    )


def client_credentials(certs: Certificates) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(root_certificates=certs.ca.read_bytes())


def test_mutual_tls_to_the_agents_and_tls_to_the_client(
    agents: Agents, start_relay: StartRelay, certificates: Certificates
) -> None:
    addresses = mtls_agents(agents, certificates)
    relay = start_relay(tls_relay_config(addresses, certificates))
    stub = relay.stub(client_credentials(certificates))
    nodes = stub.GetNodes(observer_pb2.GetNodesRequest(), timeout=10).nodes
    assert {n.name: (n.state, n.tls.enabled, n.tls.server_name) for n in nodes} == {
        "node-a": (relay_pb2.NODE_CONNECTED, True, "localhost"),
        "node-b": (relay_pb2.NODE_CONNECTED, True, "localhost"),
    }
    flows = [r for r in stub.GetFlows(observer_pb2.GetFlowsRequest(), timeout=10) if r.flow.uuid]
    assert sorted(r.flow.l4.TCP.source_port for r in flows) == [7000, 7001]
    # A plaintext client is not served on the TLS listener.
    with pytest.raises(grpc.RpcError):
        relay.stub().GetNodes(observer_pb2.GetNodesRequest(), timeout=3)


def test_agents_whose_certificate_does_not_chain_to_the_ca_are_unavailable(
    agents: Agents, start_relay: StartRelay, certificates: Certificates
) -> None:
    addresses = mtls_agents(agents, certificates)
    relay = start_relay(tls_relay_config(addresses, certificates, ca=certificates.other_ca))
    # The seeds themselves cannot be followed: no node is known, nothing is served from them.
    stub = relay.stub(client_credentials(certificates))
    poll(
        "no node learnt over an unverified connection",
        lambda: list(stub.GetNodes(observer_pb2.GetNodesRequest(), timeout=10).nodes) == [],
        timeout_s=2,
    )
    assert relay.thread.relay is not None
    assert relay.thread.relay.peers.nodes == {}


def test_tls_settings_that_cannot_work_name_their_flag(
    agents: Agents, certificates: Certificates
) -> None:
    addresses = mtls_agents(agents, certificates)
    # A certificate with another certificate's key; no CA at all; neither TLS nor plaintext.
    with pytest.raises(RelayConfigError, match="--agent-client-cert"):
        AgentTLS((certificates.ca,), certificates.relay_cert, certificates.agent_key).ssl_context()
    with pytest.raises(RelayConfigError, match="--agent-ca"):
        AgentTLS((), certificates.relay_cert, certificates.relay_key).ssl_context()
    config = relay_config(addresses, insecure_agents=False)
    with pytest.raises(RelayConfigError, match="--insecure-agents"):
        config.validate()
