"""The compiler's L7 lookups run on the proxies' threads while the agent's loop changes the
engine: real threads, real engine, no mocks.  A lookup must never see the engine halfway
through a change ("dictionary changed size during iteration" killed the client's
connection in the proxy path)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from septum.operator.engine.rules import DnsRule, HttpRule

from .test_compiler import Cluster, namespace, pod

READERS = 2
ROUNDS = 60
PODS_PER_ROUND = 8


def _landing() -> dict[str, Any]:
    return {
        "apiVersion": "septum.io/v1alpha1", "kind": "SeptumNetworkPolicy",
        "metadata": {"name": "landing", "namespace": "empire"},
        "spec": {
            "endpointSelector": {"matchLabels": {"app": "deathstar"}},
            "ingress": [{"toPorts": [{
                "ports": [{"port": "80", "protocol": "TCP"}],
                "rules": {"http": [{"method": "POST", "path": "/v1/request-landing"}]},
            }]}],
        },
    }  # fmt: skip


def _dns(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "septum.io/v1alpha1", "kind": "SeptumNetworkPolicy",
        "metadata": {"name": name, "namespace": "empire"},
        "spec": {
            "endpointSelector": {"matchLabels": {"app": "tiefighter"}},
            "egress": [{
                "toCIDR": ["192.0.2.53/32"],
                "toPorts": [{"ports": [{"port": "53", "protocol": "UDP"}],
                             "rules": {"dns": [{"matchPattern": "*.example.com"}]}}],
            }],
        },
    }  # fmt: skip


@pytest.fixture
def fine_switching() -> Iterator[None]:
    """Threads switch every 10 us instead of every 5 ms: a race shows within a second."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def _hammer(lookups: list[Callable[[], object]], stop: threading.Event, errors: list[str]) -> None:
    while not stop.is_set():
        for lookup in lookups:
            try:
                lookup()
            except Exception as err:  # noqa: BLE001 - every failure is the test's finding
                errors.append(f"{type(err).__name__}: {err}")
                return


def test_l7_lookups_from_other_threads_while_pods_and_policies_change(
    fine_switching: None,
) -> None:
    cluster = Cluster()
    cluster.load(
        ("Namespace", namespace("empire")),
        ("Pod", pod("empire", "deathstar", "10.0.0.2", {"app": "deathstar"})),
        ("Pod", pod("empire", "tiefighter", "10.0.0.3", {"app": "tiefighter"})),
        *[("Pod", pod("empire", f"crew{i}", f"10.0.1.{i}", {"app": "crew"})) for i in range(60)],
        ("SeptumNetworkPolicy", _landing()),
        ("SeptumNetworkPolicy", _dns("dns")),
    )
    compiler = cluster.compiler
    landing = (HttpRule("POST", "/v1/request-landing"),)
    answers: dict[str, set[object]] = {"http": set(), "dns": set()}
    # an address no pod has: resolving it walks every pod of the engine
    lookups: list[Callable[[], object]] = [
        lambda: answers["http"].add(compiler.l7_http_rules("10.0.0.3", "10.0.0.2", 80, True)),
        lambda: answers["dns"].add(compiler.l7_dns_rules("10.0.0.3", "192.0.2.53", 53, "UDP")),
        lambda: compiler.l7_rule_id("10.0.9.9", "10.0.0.2", 80, "TCP", True),
        lambda: compiler.l7_rule_id("10.0.0.3", "192.0.2.53", 53, "UDP", False),
        lambda: compiler.address_identity("10.0.9.9"),
    ]
    stop = threading.Event()
    errors: list[str] = []
    threads = [
        threading.Thread(target=_hammer, args=(lookups, stop, errors), daemon=True)
        for _ in range(READERS)
    ]
    for thread in threads:
        thread.start()
    try:
        for round_ in range(ROUNDS):
            if errors:
                break
            names = [f"extra{round_}-{i}" for i in range(PODS_PER_ROUND)]
            for i, name in enumerate(names):
                obj = pod("empire", name, f"10.1.{round_}.{i}", {"app": "extra"})
                cluster.identity_for(obj)
                compiler.apply("Pod", "upsert", obj)
            compiler.apply("SeptumNetworkPolicy", "delete", _dns("dns"))
            compiler.apply("SeptumNetworkPolicy", "upsert", _dns(f"dns{round_}"))
            compiler.set_fqdn_addresses({})
            compiler.take()
            for name in names:
                compiler.apply("Pod", "delete", pod("empire", name, "0.0.0.0"))
            compiler.apply("SeptumNetworkPolicy", "delete", _dns(f"dns{round_}"))
            compiler.apply("SeptumNetworkPolicy", "upsert", _dns("dns"))
            compiler.take()
    finally:
        stop.set()
        deadline = time.monotonic() + 10
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads), "a reader is stuck"
    assert errors == [], errors[:3]
    # the readers saw the policies, not an empty answer from a half-changed engine
    assert answers["http"] == {landing}
    assert (DnsRule(match_pattern="*.example.com"),) in answers["dns"]
