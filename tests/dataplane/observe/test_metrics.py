"""Prometheus metrics over HTTP, checked against the events fed in; lost-event sources."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import observe_helpers as h
import pytest
from prometheus_client.parser import text_string_to_metric_families

from septum.dataplane.observe.api.flow import flow_pb2
from septum.dataplane.observe.api.observer import observer_pb2
from septum.dataplane.observe.metrics import FlowMetrics, MetricsConfigError, parse_enabled

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def metered(short_tmp: Path) -> Iterator[h.RunningObserver]:
    running = h.start_observer(short_tmp, metrics=True)
    try:
        yield running
    finally:
        running.close()
        running.node.stop()


def scrape(observer: h.RunningObserver) -> Samples:
    url = f"http://127.0.0.1:{observer.node.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_hubble_metrics_match_the_events(metered: h.RunningObserver) -> None:
    metered.push(
        *(h.event(src_port=40000 + i) for i in range(3)),  # 3 allowed SYNs to :80
        h.reply_event(40000),
        *(h.event(dst_port=8080, event_type=1, verdict=2, drop_reason=133) for _ in range(2)),
        h.event(dst_port=22, event_type=1, verdict=2, drop_reason=221),  # Septum-only reason
        h.event(h.XWING, h.DEATHSTAR, protocol=1, icmp_type=8, src_port=0, dst_port=0, tcp_flags=0),
        h.event(h.TIEFIGHTER, h.DEATHSTAR, v6=True, protocol=17, dst_port=53, tcp_flags=0),
    )
    samples = scrape(metered)
    assert (
        value(
            samples,
            "hubble_flows_processed_total",
            protocol="TCP",
            type="PolicyVerdict",
            subtype="",
            verdict="FORWARDED",
        )
        == 3
    )
    assert (
        value(
            samples,
            "hubble_flows_processed_total",
            protocol="TCP",
            type="Trace",
            subtype="from-endpoint",
            verdict="FORWARDED",
        )
        == 1
    )
    assert (
        value(
            samples,
            "hubble_flows_processed_total",
            protocol="TCP",
            type="Drop",
            subtype="",
            verdict="DROPPED",
        )
        == 3
    )
    assert value(samples, "hubble_drop_total", reason="POLICY_DENIED", protocol="TCP") == 2
    assert value(samples, "hubble_drop_total", reason="INVALID_PACKET_DROPPED", protocol="TCP") == 1
    assert (
        value(
            samples,
            "hubble_policy_verdicts_total",
            direction="ingress",
            match="l3-l4",
            action="forwarded",
        )
        == 5
    )  # 3 TCP + ICMP + UDP
    assert value(samples, "hubble_tcp_flags_total", flag="SYN", family="IPv4") == 3
    assert value(samples, "hubble_tcp_flags_total", flag="SYN-ACK", family="IPv4") == 1
    assert value(samples, "hubble_port_distribution_total", protocol="TCP", port="80") == 3
    assert value(samples, "hubble_port_distribution_total", protocol="UDP", port="53") == 1
    assert value(samples, "hubble_port_distribution_total", protocol="ICMPv4", port="0") == 1
    assert value(samples, "hubble_icmp_total", family="IPv4", type="EchoRequest") == 1
    assert value(samples, "septum_flow_buffer_flows") == 9
    assert value(samples, "septum_flow_buffer_capacity") == 4095


def test_lost_events_by_source_reach_stream_and_metrics(metered: h.RunningObserver) -> None:
    metered.push(h.event(src_port=1))
    metered.feed.lost = 7  # the kernel's counter moved: 7 reservations failed
    metered.push(h.event(src_port=2))
    responses = list(metered.stub().GetFlows(observer_pb2.GetFlowsRequest(), timeout=10))
    kinds = [r.WhichOneof("response_types") for r in responses]
    assert kinds == ["flow", "flow", "lost_events"]  # reported when the counter was read
    lost = responses[2].lost_events
    assert lost.source == flow_pb2.PERF_EVENT_RING_BUFFER and lost.num_events_lost == 7
    deadline = time.monotonic() + 5
    while value(scrape(metered), "hubble_lost_events_total", source="perf_event_ring_buffer") != 7:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    samples = scrape(metered)
    assert value(samples, "hubble_lost_events_total", source="hubble_ring_buffer") == 0
    status = metered.stub().ServerStatus(observer_pb2.ServerStatusRequest(), timeout=10)
    by_source = {e.source: e.num_events_lost for e in status.septum_lost_events}
    assert by_source == {
        flow_pb2.PERF_EVENT_RING_BUFFER: 7,
        flow_pb2.OBSERVER_EVENTS_QUEUE: 0,
        flow_pb2.HUBBLE_RING_BUFFER: 0,
    }


def test_enabled_metrics_are_configurable() -> None:
    assert parse_enabled("flow;drop:sourceContext=pod;tcp") == {"flow", "drop", "tcp"}
    with pytest.raises(MetricsConfigError, match="unknown metric"):
        parse_enabled("flow;dns")
    metrics = FlowMetrics(enabled=parse_enabled("drop"))
    names = {family.name for family in metrics.collect()}
    assert names == {"hubble_drop"}


def test_port_label_cardinality_is_bounded() -> None:
    from septum.dataplane.observe import record as r

    metrics = FlowMetrics(enabled=frozenset({"port-distribution"}), max_ports=10)
    metrics.observe([r.EVENT.unpack(h.event(dst_port=1000 + i)) for i in range(50)])
    (family,) = list(metrics.collect())
    ports = {s.labels["port"]: s.value for s in family.samples if s.name.endswith("_total")}
    assert len(ports) == 11 and ports["other"] == 40


def test_icmp_types_are_labelled_by_name_from_septum_wellknown() -> None:
    from septum.dataplane.observe import record as r

    def icmp(*, v6: bool, icmp_type: int, icmp_code: int = 0) -> r.Record:
        protocol = 58 if v6 else 1
        raw = h.event(v6=v6, protocol=protocol, icmp_type=icmp_type, icmp_code=icmp_code,
                      src_port=0, dst_port=0, tcp_flags=0)  # fmt: skip
        return r.EVENT.unpack(raw)

    metrics = FlowMetrics(enabled=frozenset({"icmp"}))
    metrics.observe(
        [
            icmp(v6=False, icmp_type=8),  # named before, and by septum.wellknown
            icmp(v6=False, icmp_type=12),  # ParameterProblem: a number before the wider table
            icmp(v6=True, icmp_type=2),  # PacketTooBig: likewise
            icmp(v6=False, icmp_type=99, icmp_code=1),  # no name anywhere: type(code)
        ]
    )
    (family,) = list(metrics.collect())
    types = {
        (s.labels["family"], s.labels["type"]) for s in family.samples if s.name.endswith("_total")
    }
    assert types == {
        ("IPv4", "EchoRequest"),
        ("IPv4", "ParameterProblem"),
        ("IPv6", "PacketTooBig"),
        ("IPv4", "99(1)"),
    }
