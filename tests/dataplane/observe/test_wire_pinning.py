"""Pins Septum's implemented subset of Hubble's wire format.

Every package, service, method (with its request/response types and streaming),
message field number and enum value below was checked against Hubble's
published .proto specification when it was written. Any accidental change to
Septum's .proto files (a renumbered field, a renamed enum value, a moved
package) fails here, because Hubble clients would silently misread the wire.
Adding a field means adding it here too, after checking it against Hubble.
"""

from __future__ import annotations

import pytest

from septum.dataplane.observe.api.flow import flow_pb2
from septum.dataplane.observe.api.observer import observer_pb2
from septum.dataplane.observe.api.peer import peer_pb2
from septum.dataplane.observe.api.relay import relay_pb2

MODULES = (flow_pb2, relay_pb2, peer_pb2, observer_pb2)
PACKAGES = {
    "flow_pb2": "flow",
    "relay_pb2": "relay",
    "peer_pb2": "peer",
    "observer_pb2": "observer",
}

SERVICES: dict[str, dict[str, tuple[str, str, bool]]] = {
    "observer.Observer": {
        "GetAgentEvents": (
            "observer.GetAgentEventsRequest",
            "observer.GetAgentEventsResponse",
            True,
        ),
        "GetDebugEvents": (
            "observer.GetDebugEventsRequest",
            "observer.GetDebugEventsResponse",
            True,
        ),
        "GetFlows": ("observer.GetFlowsRequest", "observer.GetFlowsResponse", True),
        "GetNamespaces": ("observer.GetNamespacesRequest", "observer.GetNamespacesResponse", False),
        "GetNodes": ("observer.GetNodesRequest", "observer.GetNodesResponse", False),
        "ServerStatus": ("observer.ServerStatusRequest", "observer.ServerStatusResponse", False),
    },
    "peer.Peer": {"Notify": ("peer.NotifyRequest", "peer.ChangeNotification", True)},
}

MESSAGES: dict[str, dict[str, int]] = {
    "flow.AgentEvent": {"agent_start": 101, "type": 1},
    "flow.CiliumEventType": {"sub_type": 2, "type": 1},
    "flow.DebugEvent": {"cpu": 8, "message": 7, "source": 2, "type": 1},
    "flow.Emitter": {"name": 1, "version": 2},
    "flow.Endpoint": {
        "ID": 1,
        "cluster_name": 7,
        "identity": 2,
        "labels": 4,
        "namespace": 3,
        "pod_name": 5,
        "workloads": 6,
    },
    "flow.DNS": {
        "cnames": 4,
        "ips": 2,
        "observation_source": 5,
        "qtypes": 7,
        "query": 1,
        "rcode": 6,
        "rrtypes": 8,
        "ttl": 3,
    },
    "flow.Ethernet": {"destination": 2, "source": 1},
    "flow.EventTypeFilter": {"match_sub_type": 2, "sub_type": 3, "type": 1},
    "flow.Flow": {
        "IP": 5,
        "Summary": 100000,
        "Type": 10,
        "destination": 9,
        "destination_names": 14,
        "destination_service": 21,
        "drop_reason": 3,
        "drop_reason_desc": 25,
        "egress_allowed_by": 21001,
        "egress_denied_by": 21004,
        "emitter": 41,
        "ethernet": 4,
        "event_type": 19,
        "ingress_allowed_by": 21002,
        "ingress_denied_by": 21005,
        "interface": 28,
        "ip_trace_id": 40,
        "is_reply": 26,
        "l4": 6,
        "l7": 15,
        "node_labels": 37,
        "node_name": 11,
        "policy_match_type": 23,
        "proxy_port": 29,
        "reply": 16,
        "source": 8,
        "source_names": 13,
        "source_service": 20,
        "time": 1,
        "trace_context": 30,
        "trace_observation_point": 24,
        "trace_reason": 36,
        "traffic_direction": 22,
        "uuid": 34,
        "verdict": 2,
    },
    "flow.FlowFilter": {
        "destination_cluster_name": 38,
        "destination_fqdn": 8,
        "destination_identity": 20,
        "destination_ip": 3,
        "destination_label": 11,
        "destination_pod": 4,
        "destination_port": 14,
        "destination_service": 17,
        "destination_workload": 27,
        "dns_query": 18,
        "drop_reason_desc": 33,
        "encrypted": 40,
        "event_type": 6,
        "experimental": 999,
        "http_header": 32,
        "http_method": 21,
        "http_path": 22,
        "http_status_code": 9,
        "http_url": 31,
        "interface": 35,
        "ip_trace_id": 39,
        "ip_version": 25,
        "node_labels": 36,
        "node_name": 24,
        "protocol": 12,
        "reply": 15,
        "source_cluster_name": 37,
        "source_fqdn": 7,
        "source_identity": 19,
        "source_ip": 1,
        "source_ip_xlated": 34,
        "source_label": 10,
        "source_pod": 2,
        "source_port": 13,
        "source_service": 16,
        "source_workload": 26,
        "tcp_flags": 23,
        "trace_id": 28,
        "traffic_direction": 30,
        "uuid": 29,
        "verdict": 5,
    },
    "flow.FlowFilter.Experimental": {"cel_expression": 1},
    "flow.HTTP": {"code": 1, "headers": 5, "method": 2, "protocol": 4, "url": 3},
    "flow.HTTPHeader": {"key": 1, "value": 2},
    "flow.ICMPv4": {"code": 2, "type": 1},
    "flow.ICMPv6": {"code": 2, "type": 1},
    "flow.IP": {
        "destination": 2,
        "encrypted": 4,
        "ipVersion": 3,
        "source": 1,
        "source_xlated": 5,
    },
    "flow.IPTraceID": {"ip_option_type": 2, "trace_id": 1},
    "flow.Layer4": {"ICMPv4": 3, "ICMPv6": 4, "SCTP": 5, "TCP": 1, "UDP": 2},
    "flow.Layer7": {"dns": 100, "http": 101, "latency_ns": 2, "type": 1},
    "flow.LostEvent": {"cpu": 3, "first": 4, "last": 5, "num_events_lost": 2, "source": 1},
    "flow.NetworkInterface": {"index": 1, "name": 2},
    "flow.Policy": {"kind": 5, "labels": 3, "name": 1, "namespace": 2, "revision": 4},
    "flow.SCTP": {"destination_port": 2, "source_port": 1},
    "flow.Service": {"name": 1, "namespace": 2},
    "flow.TCP": {"destination_port": 2, "flags": 3, "source_port": 1},
    "flow.TCPFlags": {
        "ACK": 5,
        "CWR": 8,
        "ECE": 7,
        "FIN": 1,
        "NS": 9,
        "PSH": 4,
        "RST": 3,
        "SYN": 2,
        "URG": 6,
    },
    "flow.TimeNotification": {"time": 1},
    "flow.TraceContext": {"parent": 1},
    "flow.TraceParent": {"trace_id": 1},
    "flow.UDP": {"destination_port": 2, "source_port": 1},
    "flow.Workload": {"kind": 2, "name": 1},
    "observer.GetAgentEventsRequest": {
        "first": 9,
        "follow": 2,
        "number": 1,
        "since": 7,
        "until": 8,
    },
    "observer.GetAgentEventsResponse": {"agent_event": 1, "node_name": 1000, "time": 1001},
    "observer.GetDebugEventsRequest": {
        "first": 9,
        "follow": 2,
        "number": 1,
        "since": 7,
        "until": 8,
    },
    "observer.GetDebugEventsResponse": {"debug_event": 1, "node_name": 1000, "time": 1001},
    "observer.GetFlowsRequest": {
        "blacklist": 5,
        "field_mask": 10,
        "first": 9,
        "follow": 3,
        "number": 1,
        "since": 7,
        "until": 8,
        "whitelist": 6,
    },
    "observer.GetFlowsResponse": {
        "flow": 1,
        "lost_events": 3,
        "node_name": 1000,
        "node_status": 2,
        "time": 1001,
    },
    "observer.GetNamespacesRequest": {},
    "observer.GetNamespacesResponse": {"namespaces": 1},
    "observer.GetNodesRequest": {},
    "observer.GetNodesResponse": {"nodes": 1},
    "observer.Namespace": {"cluster": 1, "namespace": 2},
    "observer.Node": {
        "address": 3,
        "max_flows": 8,
        "name": 1,
        "num_flows": 7,
        "seen_flows": 9,
        "state": 4,
        "tls": 5,
        "uptime_ns": 6,
        "version": 2,
    },
    "observer.ServerStatusRequest": {},
    "observer.ServerStatusResponse": {
        "flows_rate": 9,
        "max_flows": 2,
        "num_connected_nodes": 5,
        "num_flows": 1,
        "num_unavailable_nodes": 6,
        "seen_flows": 3,
        "unavailable_nodes": 7,
        "uptime_ns": 4,
        "version": 8,
        # Septum's one extension (documented in docs/hubble-compat.md), far from
        # every number Hubble uses.
        "septum_lost_events": 100001,
    },
    "observer.TLS": {"enabled": 1, "server_name": 2},
    "peer.ChangeNotification": {"address": 2, "name": 1, "tls": 4, "type": 3},
    "peer.NotifyRequest": {},
    "peer.TLS": {"server_name": 1},
    "relay.NodeStatusEvent": {"message": 3, "node_names": 2, "state_change": 1},
}

ENUMS: dict[str, dict[str, int]] = {
    "flow.AgentEventType": {
        "AGENT_EVENT_UNKNOWN": 0,
        "AGENT_STARTED": 2,
        "ENDPOINT_CREATED": 7,
        "ENDPOINT_DELETED": 8,
        "ENDPOINT_REGENERATE_FAILURE": 6,
        "ENDPOINT_REGENERATE_SUCCESS": 5,
        "IPCACHE_DELETED": 10,
        "IPCACHE_UPSERTED": 9,
        "POLICY_DELETED": 4,
        "POLICY_UPDATED": 3,
    },
    "flow.DebugEventType": {"DBG_EVENT_UNKNOWN": 0, "DBG_GENERIC": 1},
    "flow.DropReason": {
        "AUTH_REQUIRED": 189,
        "CT_CANNOT_CREATE_ENTRY_FROM_PACKET": 138,
        "CT_MAP_INSERTION_FAILED": 155,
        "CT_MISSING_TCP_ACK_FLAG": 136,
        "CT_NO_MAP_FOUND": 190,
        "CT_TRUNCATED_OR_INVALID_HEADER": 135,
        "CT_UNKNOWN_L4_PROTOCOL": 137,
        "DENIED_BY_LB_SRC_RANGE_CHECK": 177,
        "DROP_EP_NOT_READY": 203,
        "DROP_FRAG_NOT_FOUND_WORLD": 207,
        "DROP_HOST_NOT_READY": 202,
        "DROP_NO_EGRESS_IP": 204,
        "DROP_PUNT_PROXY": 205,
        "DROP_RATE_LIMITED": 198,
        "DROP_REASON_UNKNOWN": 0,
        "ENCAPSULATION_TRAFFIC_IS_PROHIBITED": 170,
        "ERROR_RETRIEVING_TUNNEL_KEY": 147,
        "ERROR_RETRIEVING_TUNNEL_OPTIONS": 148,
        "ERROR_WHILE_CORRECTING_L3_CHECKSUM": 153,
        "ERROR_WHILE_CORRECTING_L4_CHECKSUM": 154,
        "ERROR_WRITING_TO_PACKET": 141,
        "FAILED_TO_INSERT_INTO_PROXYMAP": 161,
        "FIB_LOOKUP_FAILED": 169,
        "FIRST_LOGICAL_DATAGRAM_FRAGMENT_NOT_FOUND": 175,
        "FORBIDDEN_ICMPV6_MESSAGE": 176,
        "IGMP_HANDLED": 199,
        "IGMP_SUBSCRIBED": 200,
        "INVALID_CLUSTER_ID": 192,
        "INVALID_DESTINATION_MAC": 131,
        "INVALID_GENEVE_OPTION": 149,
        "INVALID_IDENTITY": 171,
        "INVALID_IPV6_EXTENSION_HEADER": 156,
        "INVALID_PACKET_DROPPED": 134,
        "INVALID_SOURCE_IP": 132,
        "INVALID_SOURCE_MAC": 130,
        "INVALID_TC_BUFFER": 184,
        "INVALID_VNI": 183,
        "IP_FRAGMENTATION_NOT_SUPPORTED": 157,
        "IS_A_CLUSTERIP": 174,
        "LOCAL_HOST_IS_UNREACHABLE": 164,
        "MISSED_TAIL_CALL": 140,
        "MISSING_SRV6_STATE": 186,
        "MULTICAST_HANDLED": 201,
        "NAT46": 187,
        "NAT64": 188,
        "NAT_NOT_NEEDED": 173,
        "NO_CONFIGURATION_AVAILABLE_TO_PERFORM_POLICY_DECISION": 165,
        "NO_EGRESS_GATEWAY": 194,
        "NO_MAPPING_FOR_NAT_MASQUERADE": 167,
        "NO_MATCHING_LOCAL_CONTAINER_FOUND": 152,
        "NO_NODE_ID": 197,
        "NO_SID": 185,
        "NO_TUNNEL_OR_ENCAPSULATION_ENDPOINT": 160,
        "POLICY_DENIED": 133,
        "POLICY_DENY": 181,
        "PROXY_REDIRECTION_NOT_SUPPORTED_FOR_PROTOCOL": 180,
        "REACHED_EDT_RATE_LIMITING_DROP_HORIZON": 162,
        "SERVICE_BACKEND_NOT_FOUND": 158,
        "SNAT_NO_MAP_FOUND": 191,
        "SOCKET_ASSIGN_FAILED": 179,
        "SOCKET_LOOKUP_FAILED": 178,
        "STALE_OR_UNROUTABLE_IP": 151,
        "TTL_EXCEEDED": 196,
        "UNENCRYPTED_TRAFFIC": 195,
        "UNKNOWN_CONNECTION_TRACKING_STATE": 163,
        "UNKNOWN_ICMPV4_CODE": 143,
        "UNKNOWN_ICMPV4_TYPE": 144,
        "UNKNOWN_ICMPV6_CODE": 145,
        "UNKNOWN_ICMPV6_TYPE": 146,
        "UNKNOWN_L3_TARGET_ADDRESS": 150,
        "UNKNOWN_L4_PROTOCOL": 142,
        "UNKNOWN_SENDER": 172,
        "UNSUPPORTED_L2_PROTOCOL": 166,
        "UNSUPPORTED_L3_PROTOCOL": 139,
        "UNSUPPORTED_PROTOCOL_FOR_DSR_ENCAP": 193,
        "UNSUPPORTED_PROTOCOL_FOR_NAT_MASQUERADE": 168,
        "VLAN_FILTERED": 182,
    },
    "flow.FlowType": {"L3_L4": 1, "L7": 2, "SOCK": 3, "UNKNOWN_TYPE": 0},
    "flow.IPVersion": {"IP_NOT_USED": 0, "IPv4": 1, "IPv6": 2},
    "flow.L7FlowType": {"REQUEST": 1, "RESPONSE": 2, "SAMPLE": 3, "UNKNOWN_L7_TYPE": 0},
    "flow.LostEventSource": {
        "HUBBLE_RING_BUFFER": 3,
        "OBSERVER_EVENTS_QUEUE": 2,
        "PERF_EVENT_RING_BUFFER": 1,
        "UNKNOWN_LOST_EVENT_SOURCE": 0,
    },
    "flow.TraceObservationPoint": {
        "FROM_CRYPTO": 12,
        "FROM_ENDPOINT": 5,
        "FROM_HOST": 7,
        "FROM_NETWORK": 10,
        "FROM_OVERLAY": 9,
        "FROM_PROXY": 6,
        "FROM_STACK": 8,
        "TO_CRYPTO": 13,
        "TO_ENDPOINT": 101,
        "TO_HOST": 2,
        "TO_NETWORK": 11,
        "TO_OVERLAY": 4,
        "TO_PROXY": 1,
        "TO_STACK": 3,
        "UNKNOWN_POINT": 0,
    },
    "flow.TraceReason": {
        "ESTABLISHED": 2,
        "NEW": 1,
        "RELATED": 4,
        "REPLY": 3,
        "TRACE_REASON_UNKNOWN": 0,
    },
    "flow.TrafficDirection": {"EGRESS": 2, "INGRESS": 1, "TRAFFIC_DIRECTION_UNKNOWN": 0},
    "flow.Verdict": {
        "AUDIT": 4,
        "DROPPED": 2,
        "ERROR": 3,
        "FORWARDED": 1,
        "REDIRECTED": 5,
        "TRACED": 6,
        "TRANSLATED": 7,
        "VERDICT_UNKNOWN": 0,
    },
    "peer.ChangeNotificationType": {
        "PEER_ADDED": 1,
        "PEER_DELETED": 2,
        "PEER_UPDATED": 3,
        "UNKNOWN": 0,
    },
    "relay.NodeState": {
        "NODE_CONNECTED": 1,
        "NODE_ERROR": 4,
        "NODE_GONE": 3,
        "NODE_UNAVAILABLE": 2,
        "UNKNOWN_NODE_STATE": 0,
    },
}


def _declared() -> tuple[
    dict[str, dict[str, int]],
    dict[str, dict[str, int]],
    dict[str, dict[str, tuple[str, str, bool]]],
]:
    messages: dict[str, dict[str, int]] = {}
    enums: dict[str, dict[str, int]] = {}
    services: dict[str, dict[str, tuple[str, str, bool]]] = {}

    def walk(message: object) -> None:
        messages[message.full_name] = {f.name: f.number for f in message.fields}  # type: ignore[attr-defined]
        for nested in message.nested_types:  # type: ignore[attr-defined]
            walk(nested)
        for enum in message.enum_types:  # type: ignore[attr-defined]
            enums[enum.full_name] = {v.name: v.number for v in enum.values}

    for module in MODULES:
        file = module.DESCRIPTOR
        for message in file.message_types_by_name.values():
            walk(message)
        for enum in file.enum_types_by_name.values():
            enums[enum.full_name] = {v.name: v.number for v in enum.values}
        for service in file.services_by_name.values():
            services[service.full_name] = {
                m.name: (m.input_type.full_name, m.output_type.full_name, m.server_streaming)
                for m in service.methods
            }
    return messages, enums, services


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_proto_packages_are_hubbles(module: object) -> None:
    name = module.__name__.rsplit(".", 1)[-1]  # type: ignore[attr-defined]
    assert module.DESCRIPTOR.package == PACKAGES[name]  # type: ignore[attr-defined]


def test_generated_code_lives_under_septum() -> None:
    for module in MODULES:
        assert module.__name__.startswith("septum.dataplane.observe.api.")


def test_services_and_methods_are_pinned() -> None:
    assert _declared()[2] == SERVICES


def test_no_request_streaming_methods() -> None:
    for module in (observer_pb2, peer_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                assert not method.client_streaming, method.full_name


def test_message_field_numbers_are_pinned() -> None:
    assert _declared()[0] == MESSAGES


def test_enum_values_are_pinned() -> None:
    assert _declared()[1] == ENUMS


def test_hubble_numbers_that_clients_depend_on() -> None:
    # A handful spelled out, so a reader sees what "pinned" protects.
    assert observer_pb2.GetFlowsResponse.DESCRIPTOR.fields_by_name["flow"].number == 1
    assert observer_pb2.GetFlowsResponse.DESCRIPTOR.fields_by_name["lost_events"].number == 3
    assert observer_pb2.GetFlowsResponse.DESCRIPTOR.fields_by_name["node_name"].number == 1000
    assert flow_pb2.Flow.DESCRIPTOR.fields_by_name["egress_allowed_by"].number == 21001
    assert flow_pb2.Flow.DESCRIPTOR.fields_by_name["drop_reason_desc"].number == 25
    assert flow_pb2.POLICY_DENIED == 133 and flow_pb2.AUDIT == 4
    assert flow_pb2.HUBBLE_RING_BUFFER == 3
