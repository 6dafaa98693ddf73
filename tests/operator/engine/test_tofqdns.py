"""toFQDNs: addresses learned from DNS answers get CIDR identities and the selecting
egress rules allow them; nothing is selected before an answer names the address."""

from __future__ import annotations

import ipaddress
from typing import Any

from septum.operator.engine.cluster import PodKey
from septum.operator.engine.explain import explain
from septum.operator.engine.state import Engine
from septum.wellknown.reserved import LOCAL_IDENTITY_MIN

from .test_semantics import WEB, cluster, snp

API = ipaddress.ip_address("203.0.113.10")
DEEP = ipaddress.ip_address("203.0.113.11")
EVIL = ipaddress.ip_address("203.0.113.66")
API_NET = ipaddress.ip_network("203.0.113.10/32")
WEB_POD = PodKey("a", "web")


def fqdn_policy(*selectors: dict[str, str], name: str = "fq") -> dict[str, Any]:
    egress = [{"toFQDNs": list(selectors), "toPorts": [{"ports": [{"port": "443"}]}]}]
    return snp({"endpointSelector": WEB, "egress": egress}, name)


def allowed(engine: Engine, address: str) -> bool:
    return explain(engine, "a/web", address, 443).allowed


def consistent(engine: Engine) -> None:
    """The incremental state equals a recompute from scratch."""
    scratch = engine.recompute_all()
    assert {n: engine.compiled[n] for n in scratch} == scratch


def test_learned_address_is_allowed_only_after_the_answer() -> None:
    engine = cluster(fqdn_policy({"matchName": "API.example.com"}))
    assert not allowed(engine, "203.0.113.10")
    changes = engine.set_fqdn_addresses({API: ["api.example.com."], EVIL: ["evil.example.org"]})
    # One identity for the selected address; the unselected one gets none.
    assert set(changes.ipcache_upserts) == {API_NET}
    number = changes.ipcache_upserts[API_NET]
    assert number >= LOCAL_IDENTITY_MIN
    added = changes.endpoints[WEB_POD].added
    assert {(e.peer_identity, e.port_lo) for e in added} >= {(number, 443)}
    assert engine.ipcache()[API_NET] == number
    assert allowed(engine, "203.0.113.10")
    assert not allowed(engine, "203.0.113.66")
    assert engine.fqdn_names(API_NET) == {"api.example.com."}
    consistent(engine)


def test_patterns_and_expiry() -> None:
    engine = cluster(fqdn_policy({"matchPattern": "**.example.com"}))
    engine.set_fqdn_addresses({API: ["api.example.com"], DEEP: ["a.b.example.com"]})
    assert allowed(engine, "203.0.113.10") and allowed(engine, "203.0.113.11")
    # The cache expired the deep name: its address loses its identity and its allow.
    changes = engine.set_fqdn_addresses({API: ["api.example.com"]})
    assert changes.ipcache_deletes == {ipaddress.ip_network("203.0.113.11/32")}
    assert not allowed(engine, "203.0.113.11")
    assert allowed(engine, "203.0.113.10")
    consistent(engine)


def test_policy_after_learning_and_policy_removal() -> None:
    engine = cluster()
    assert not engine.set_fqdn_addresses({API: ["api.example.com"]}).ipcache_upserts
    changes = engine.upsert_policy(fqdn_policy({"matchPattern": "*.example.com"}))
    assert API_NET in changes.ipcache_upserts
    assert allowed(engine, "203.0.113.10")
    consistent(engine)
    changes = engine.delete_policy(next(iter(engine.policies)))
    assert changes.ipcache_deletes == {API_NET}
    assert API_NET not in engine.ipcache()


def test_shared_with_a_cidr_rule() -> None:
    cidr = snp({"endpointSelector": WEB, "egress": [{"toCIDR": ["203.0.113.10/32"]}]}, "cidr")
    engine = cluster(cidr, fqdn_policy({"matchName": "api.example.com"}))
    before = engine.ipcache()[API_NET]
    engine.set_fqdn_addresses({API: ["api.example.com"]})
    assert engine.ipcache()[API_NET] == before  # one identity, two references
    changes = engine.set_fqdn_addresses({})
    assert not changes.ipcache_deletes  # the CIDR rule still needs it
    assert allowed(engine, "203.0.113.10")
    consistent(engine)


def test_addresses_learned_before_the_full_load() -> None:
    """An agent restores its learned state before its first sync loads the cluster."""
    engine = Engine()
    engine.set_fqdn_addresses({API: ["api.example.com"]})
    reference = cluster(fqdn_policy({"matchName": "api.example.com"}))
    engine.load(
        namespaces=[{"metadata": {"name": "a", "labels": {"team": "blue"}}}],
        pods=[
            {
                "metadata": {"name": "web", "namespace": "a", "labels": {"app": "web"}},
                "spec": {"containers": [{"ports": [{"name": "http", "containerPort": 8080}]}]},
                "status": {"podIP": "10.0.0.1"},
            }
        ],
        policies=[fqdn_policy({"matchName": "api.example.com"})],
    )
    assert API_NET in engine.ipcache()
    assert allowed(engine, "203.0.113.10")
    assert not allowed(reference, "203.0.113.10")
    consistent(engine)
