"""septum.cli.flowconvert: Hubble flows placed in the engine's cluster, as what-if Flows."""

from __future__ import annotations

from septum.cli.flowconvert import HostLocal, Placer, Unplaced, convert, distinct
from septum.cli.policyinput import ClusterObjects, load_engine
from septum.dataplane.observe.api.flow import flow_pb2
from septum.operator.engine import Engine, Flow

from .clusterdata import CLUSTER, objects


def _engine() -> Engine:
    cluster = ClusterObjects()
    for obj in objects(CLUSTER):
        cluster.add(obj)
    return load_engine(cluster).engine


def _flow(
    src_ip: str,
    dst_ip: str,
    port: int = 5432,
    *,
    src: dict[str, object] | None = None,
    dst: dict[str, object] | None = None,
    reply: bool | None = None,
    l4: str = "TCP",
    verdict: int = flow_pb2.FORWARDED,
) -> flow_pb2.Flow:
    flow = flow_pb2.Flow(verdict=verdict)
    flow.IP.source, flow.IP.destination = src_ip, dst_ip
    flow.source.CopyFrom(flow_pb2.Endpoint(**(src or {})))  # type: ignore[arg-type]
    flow.destination.CopyFrom(flow_pb2.Endpoint(**(dst or {})))  # type: ignore[arg-type]
    if l4 == "TCP":
        flow.l4.TCP.source_port, flow.l4.TCP.destination_port = 40000, port
    elif l4 == "ICMPv4":
        flow.l4.ICMPv4.type = port
    if reply is not None:
        flow.is_reply.value = reply
    return flow


WEB = {"namespace": "shop", "pod_name": "web", "identity": 300}
DB = {"namespace": "shop", "pod_name": "db", "identity": 301}


def test_pods_by_name_and_by_ip() -> None:
    placer = Placer(_engine())
    assert convert(_flow("10.0.0.1", "10.0.0.2", src=WEB, dst=DB), placer) == Flow(
        "shop/web", "shop/db", 5432, "TCP"
    )
    # Without names (a flow from a node that has not learnt the pod): the IP places it.
    assert convert(_flow("10.0.0.1", "10.0.0.2"), placer) == Flow(
        "shop/web", "shop/db", 5432, "TCP"
    )


def test_a_reply_is_its_connection() -> None:
    placer = Placer(_engine())
    reply = _flow("10.0.0.2", "10.0.0.1", 40000, src=DB, dst=WEB, reply=True)
    reply.l4.TCP.source_port, reply.l4.TCP.destination_port = 5432, 40000
    assert convert(reply, placer) == Flow("shop/web", "shop/db", 5432, "TCP")


def test_nodes_world_and_icmp() -> None:
    placer = Placer(_engine())
    assert convert(_flow("192.168.0.1", "10.0.0.2"), placer) == Flow(
        "host:n1", "shop/db", 5432, "TCP"
    )
    assert convert(_flow("203.0.113.7", "10.0.0.2", 8, l4="ICMPv4"), placer) == Flow(
        "203.0.113.7", "shop/db", 8, "ICMP"
    )


def test_a_node_to_its_own_pod_is_skipped_unless_policy_decides_it() -> None:
    placer = Placer(_engine())
    probe = _flow("192.168.0.2", "10.0.0.2")  # n2 -> db, which runs on n2
    assert isinstance(convert(probe, placer), HostLocal)
    assert convert(probe, placer, allow_localhost=False) == Flow("host:n2", "shop/db", 5432, "TCP")


def test_a_gone_pod_by_its_labels_or_not_at_all() -> None:
    placer = Placer(_engine())
    gone = {
        "namespace": "shop",
        "pod_name": "web-old",
        "identity": 300,
        "labels": ["k8s:app=web", "k8s:io.kubernetes.pod.namespace=shop"],
    }
    flow = convert(_flow("10.0.0.9", "10.0.0.2", src=gone, dst=DB), placer)
    assert isinstance(flow, Flow)
    assert flow.source == {
        "namespace": "shop",
        "labels": {"app": "web", "io.kubernetes.pod.namespace": "shop"},
        "serviceAccount": "default",
    }
    bare = convert(_flow("10.0.0.9", "10.0.0.2", src={"identity": 300}, dst=DB), placer)
    assert isinstance(bare, Unplaced)
    assert bare.reason == ("10.0.0.9 (pod identity 300) has no pod and the flow carries no labels")
    assert bare.text == "10.0.0.9:40000 -> 10.0.0.2:5432 TCP"
    no_l4 = convert(_flow("10.0.0.1", "10.0.0.2", l4=""), placer)
    assert no_l4 == Unplaced("no layer-4 header", "10.0.0.1 -> 10.0.0.2")


def test_distinct_counts_and_keeps_the_unplaced() -> None:
    flows = [
        _flow("10.0.0.1", "10.0.0.2", src=WEB, dst=DB),
        _flow("10.0.0.1", "10.0.0.2"),
        _flow("10.0.0.1", "10.0.0.2", src=WEB, dst=DB, verdict=flow_pb2.DROPPED),
        _flow("10.0.0.9", "10.0.0.2", src={"identity": 300}),
        _flow("192.168.0.2", "10.0.0.2"),
    ]
    seen = distinct(flows, _engine())
    assert seen.total == 5
    assert list(seen.counts.values()) == [3]
    assert dict(next(iter(seen.observed.values()))) == {"FORWARDED": 2, "DROPPED": 1}
    assert sum(seen.unplaced.values()) == 1
    assert seen.host_local == 1
