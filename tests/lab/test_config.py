"""Lab names and addresses: kernel limits and the sealed address plan."""

from __future__ import annotations

import ipaddress

from septum.lab import config


def test_interface_names_fit_linux_limit() -> None:
    names = [config.BRIDGE, "slab-svc"] + [n.host_link for n in config.nodes(200)]
    assert all(len(n) <= 15 and n.startswith(config.PREFIX) for n in names)


def test_address_plan_stays_private_and_disjoint() -> None:
    nets = [config.LAB_NETWORK, config.CLUSTER_CIDR, config.SERVICE_CIDR]
    assert all(n.is_private for n in nets)
    for i, a in enumerate(nets):
        for b in nets[i + 1 :]:
            assert not a.overlaps(b)
    for node in config.nodes(3):
        assert node.pod_cidr.subnet_of(config.CLUSTER_CIDR)
        assert ipaddress.ip_address(node.ip) in config.LAB_NETWORK
    assert ipaddress.ip_address(config.DNS_SERVICE_IP) in config.SERVICE_CIDR


def test_host_ports_avoid_upstream_defaults() -> None:
    assert not set(config.HOST_PORTS.values()) & {6443, 2379, 2380, 10257, 10259, 10250}
