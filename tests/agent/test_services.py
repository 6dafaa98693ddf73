"""The service table (septum.agent.services): Services and EndpointSlices read as kube-proxy
reads them, and the frontend addresses' identities."""

from __future__ import annotations

from typing import Any

import pytest

from septum.agent.services import (
    Backend,
    Frontend,
    FrontendIdentities,
    ServiceIdentitiesExhausted,
    ServiceObjectError,
    ServiceTable,
    parse_endpoint_slice,
    parse_service,
    service_labels,
)
from septum.wellknown.reserved import (
    LOCAL_IDENTITY_MAX,
    SERVICE_IDENTITY_MAX,
    SERVICE_IDENTITY_MIN,
)

TCP, UDP, SCTP = 6, 17, 132


def service(
    ns: str,
    name: str,
    cluster_ips: list[str] | None,
    ports: list[dict[str, Any]],
    external_ips: list[str] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"ports": ports}
    if cluster_ips is not None:
        spec["clusterIP"] = cluster_ips[0]
        spec["clusterIPs"] = cluster_ips
    if external_ips:
        spec["externalIPs"] = external_ips
    return {"kind": "Service", "metadata": {"namespace": ns, "name": name}, "spec": spec}


def endpoint(ip: str, **conditions: bool) -> dict[str, Any]:
    return {"addresses": [ip], "conditions": conditions}


def endpoint_slice(
    ns: str,
    name: str,
    service_name: str,
    ports: list[dict[str, Any]],
    endpoints: list[dict[str, Any]],
    address_type: str = "IPv4",
) -> dict[str, Any]:
    return {
        "kind": "EndpointSlice",
        "metadata": {
            "namespace": ns,
            "name": name,
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": address_type,
        "ports": ports,
        "endpoints": endpoints,
    }


def table_of(*objects: dict[str, Any]) -> ServiceTable:
    table = ServiceTable()
    for obj in objects:
        if obj["kind"] == "Service":
            table.upsert_service(obj)
        else:
            table.upsert_slice(obj)
    return table


def test_a_named_target_port_resolves_per_backend() -> None:
    """Two slices of one Service carry different numbers for the port named "http" (pods of
    two versions name different container ports "http"): each backend keeps its own."""
    svc = service("ns", "web", ["10.96.0.5"], [{"name": "http", "port": 80, "protocol": "TCP"}])
    old = endpoint_slice(
        "ns", "web-a", "web", [{"name": "http", "port": 8080}], [endpoint("10.0.0.1")]
    )
    new = endpoint_slice(
        "ns", "web-b", "web", [{"name": "http", "port": 9090}], [endpoint("10.0.0.2")]
    )
    assert table_of(svc, old, new).frontends() == {
        Frontend("10.96.0.5", TCP, 80): (Backend("10.0.0.1", 8080), Backend("10.0.0.2", 9090))
    }


def test_slice_ports_match_by_name_and_protocol() -> None:
    svc = service(
        "ns",
        "dns",
        ["10.96.0.10"],
        [
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
            {"name": "metrics", "port": 9153, "protocol": "TCP"},
        ],
    )
    slice_ = endpoint_slice(
        "ns",
        "dns-1",
        "dns",
        [
            {"name": "dns", "port": 5353, "protocol": "UDP"},
            {"name": "dns-tcp", "port": 5354, "protocol": "TCP"},
        ],
        [endpoint("10.0.0.7")],
    )
    assert table_of(svc, slice_).frontends() == {
        Frontend("10.96.0.10", UDP, 53): (Backend("10.0.0.7", 5353),),
        Frontend("10.96.0.10", TCP, 53): (Backend("10.0.0.7", 5354),),
        Frontend("10.96.0.10", TCP, 9153): (),  # no slice port of that name: no backend
    }


def test_readiness_ready_first_then_serving_and_terminating() -> None:
    """kube-proxy's rule: ready endpoints (ready unset counts as ready); only when none is
    ready, those both serving and terminating."""
    svc = service("ns", "web", ["10.96.0.5"], [{"port": 80}])
    ports = [{"port": 8080}]
    mixed = endpoint_slice(
        "ns",
        "web-1",
        "web",
        ports,
        [
            endpoint("10.0.0.1", ready=True),
            endpoint("10.0.0.2"),  # no conditions: ready
            endpoint("10.0.0.3", ready=False, serving=True, terminating=True),
            endpoint("10.0.0.4", ready=False),
        ],
    )
    (backends,) = table_of(svc, mixed).frontends().values()
    assert [b.ip for b in backends] == ["10.0.0.1", "10.0.0.2"]
    draining = endpoint_slice(
        "ns",
        "web-1",
        "web",
        ports,
        [
            endpoint("10.0.0.3", ready=False, serving=True, terminating=True),
            endpoint("10.0.0.4", ready=False, serving=False, terminating=True),
            endpoint("10.0.0.5", ready=False, serving=True, terminating=False),
        ],
    )
    (backends,) = table_of(svc, draining).frontends().values()
    assert [b.ip for b in backends] == ["10.0.0.3"]


def test_the_readiness_fallback_is_over_every_slice_of_the_service() -> None:
    """A ready endpoint in one slice keeps the terminating ones of another out."""
    svc = service("ns", "web", ["10.96.0.5"], [{"port": 80}])
    ready = endpoint_slice("ns", "a", "web", [{"port": 8080}], [endpoint("10.0.0.1")])
    terminating = endpoint_slice(
        "ns",
        "b",
        "web",
        [{"port": 8080}],
        [endpoint("10.0.0.2", ready=False, serving=True, terminating=True)],
    )
    (backends,) = table_of(svc, ready, terminating).frontends().values()
    assert [b.ip for b in backends] == ["10.0.0.1"]


def test_a_headless_service_has_no_frontend() -> None:
    svc = service("ns", "db", ["None"], [{"port": 5432}], external_ips=["192.0.2.1"])
    slice_ = endpoint_slice("ns", "db-1", "db", [{"port": 5432}], [endpoint("10.0.0.9")])
    table = table_of(svc, slice_)
    assert table.frontends() == {} and table.services_by_ip() == {}


def test_dual_stack_frontends_take_backends_of_their_family() -> None:
    svc = service("ns", "web", ["10.96.0.5", "fd00:96::5"], [{"port": 80}])
    v4 = endpoint_slice("ns", "web-4", "web", [{"port": 8080}], [endpoint("10.0.0.1")])
    v6 = endpoint_slice(
        "ns", "web-6", "web", [{"port": 8080}], [endpoint("fd00::1")], address_type="IPv6"
    )
    assert table_of(svc, v4, v6).frontends() == {
        Frontend("10.96.0.5", TCP, 80): (Backend("10.0.0.1", 8080),),
        Frontend("fd00:96::5", TCP, 80): (Backend("fd00::1", 8080),),
    }


def test_external_ips_are_frontends_and_slices_join_by_label_and_namespace() -> None:
    svc = service("ns", "web", ["10.96.0.5"], [{"port": 80}], external_ips=["192.0.2.7"])
    mine = endpoint_slice("ns", "web-1", "web", [{"port": 8080}], [endpoint("10.0.0.1")])
    other_namespace = endpoint_slice("x", "web-1", "web", [{"port": 8080}], [endpoint("10.9.9.9")])
    other_service = endpoint_slice("ns", "api-1", "api", [{"port": 8080}], [endpoint("10.8.8.8")])
    fqdn = endpoint_slice(
        "ns", "web-f", "web", [{"port": 8080}], [{"addresses": ["example.com"]}], "FQDN"
    )
    table = table_of(svc, mine, other_namespace, other_service, fqdn)
    expected = (Backend("10.0.0.1", 8080),)
    assert table.frontends() == {
        Frontend("10.96.0.5", TCP, 80): expected,
        Frontend("192.0.2.7", TCP, 80): expected,
    }
    assert table.services_by_ip() == {"10.96.0.5": (("ns", "web"),), "192.0.2.7": (("ns", "web"),)}
    table.delete_slice(mine)
    assert set(table.frontends().values()) == {()}
    table.delete_service(svc)
    assert table.frontends() == {}


def test_a_protocol_defaults_to_tcp_and_sctp_is_read() -> None:
    svc = service("ns", "s", ["10.96.0.6"], [{"name": "a", "port": 9}, {
        "name": "b", "port": 9, "protocol": "SCTP"}])  # fmt: skip
    assert sorted(f.protocol for f in table_of(svc).frontends()) == [TCP, SCTP]


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (
            service("ns", "s", ["10.96.0.300"], [{"port": 80}]),
            "Service ns/s: spec.clusterIPs[0]: '10.96.0.300' is not an IP address",
        ),
        (
            service("ns", "s", ["10.96.0.3"], [{"port": 80}], external_ips=["x"]),
            "Service ns/s: spec.externalIPs[0]: 'x' is not an IP address",
        ),
        (
            service("ns", "s", ["10.96.0.3"], [{"port": 80}, {"port": 0}]),
            "Service ns/s: spec.ports[1].port: 0 is not a port number (1-65535)",
        ),
        (
            service("ns", "s", ["10.96.0.3"], [{"port": 80, "protocol": "ICMP"}]),
            "Service ns/s: spec.ports[0].protocol: unknown protocol 'ICMP'",
        ),
    ],
)
def test_an_unreadable_service_names_the_field(obj: dict[str, Any], message: str) -> None:
    with pytest.raises(ServiceObjectError) as err:
        parse_service(obj)
    assert str(err.value) == message


def test_an_unreadable_slice_names_the_field() -> None:
    bad = endpoint_slice("ns", "web-1", "web", [{"port": 8080}], [endpoint("10.0.0.1"), {
        "addresses": ["10.0.0.999"]}])  # fmt: skip
    with pytest.raises(ServiceObjectError, match=r"EndpointSlice ns/web-1: endpoints\[1\]"):
        parse_endpoint_slice(bad)


def test_frontend_identities_are_stable_and_not_reused_at_once() -> None:
    assert SERVICE_IDENTITY_MIN > LOCAL_IDENTITY_MAX and SERVICE_IDENTITY_MAX < 1 << 32
    ids = FrontendIdentities()
    given, released = ids.update(["10.96.0.2", "10.96.0.1"])
    assert given == {"10.96.0.1": SERVICE_IDENTITY_MIN, "10.96.0.2": SERVICE_IDENTITY_MIN + 1}
    assert not released
    given, released = ids.update(["10.96.0.2", "10.96.0.3"])
    assert released == {"10.96.0.1"}
    assert given == {"10.96.0.3": SERVICE_IDENTITY_MIN + 2}  # the freed number waits its turn
    assert ids.by_ip["10.96.0.2"] == SERVICE_IDENTITY_MIN + 1  # unchanged while a frontend


def test_frontend_identities_wrap_around_past_numbers_in_use() -> None:
    ids = FrontendIdentities(first=10, last=12)
    ids.update(["a", "b", "c"])  # 10, 11, 12
    ids.update(["b"])  # 10 and 12 free
    assert ids.update(["b", "d", "e"])[0] == {"d": 10, "e": 12}


def test_frontend_identities_run_out_loudly() -> None:
    ids = FrontendIdentities(first=10, last=11)
    ids.update(["10.96.0.1", "10.96.0.2"])
    with pytest.raises(ServiceIdentitiesExhausted, match="all 2 service identities"):
        ids.update(["10.96.0.1", "10.96.0.2", "10.96.0.3"])


def test_service_labels_name_each_service_on_the_address() -> None:
    assert service_labels([("ns", "web"), ("x", "alt")]) == (
        "k8s:io.kubernetes.service.namespace=ns",
        "k8s:io.kubernetes.service.name=web",
        "k8s:io.kubernetes.service.namespace=x",
        "k8s:io.kubernetes.service.name=alt",
    )
