"""Identity allocation: sharing, stability, release, reserved numbers, label filters."""

from __future__ import annotations

import pytest

from septum.operator.engine.cluster import PodKey
from septum.operator.engine.labels import LabelFilter
from septum.operator.engine.state import Engine
from septum.operator.identity import InMemoryAllocator
from septum.wellknown.reserved import CLUSTER_IDENTITY_MIN, RESERVED, ReservedIdentity


def _pod(name: str, app: str, extra: dict[str, str] | None = None) -> dict[str, object]:
    return {
        "metadata": {"name": name, "namespace": "x", "labels": {"app": app, **(extra or {})}},
        "status": {"podIP": f"10.0.0.{len(name)}{ord(name[-1]) % 10}"},
    }


def test_reserved_numbers_match_cilium() -> None:
    expected = {
        "host": 1,
        "world": 2,
        "unmanaged": 3,
        "health": 4,
        "init": 5,
        "remote-node": 6,
        "kube-apiserver": 7,
        "ingress": 8,
        "world-ipv4": 9,
        "world-ipv6": 10,
    }
    assert {name: int(number) for name, number in RESERVED.items()} == expected
    assert ReservedIdentity.WORLD_IPV6.label == "world-ipv6"


def test_pods_with_the_same_labels_share_an_identity_and_hashes_are_filtered() -> None:
    engine = Engine()
    engine.load(
        namespaces=[{"metadata": {"name": "x"}}],
        pods=[
            _pod("a1", "a", {"pod-template-hash": "1"}),
            _pod("a2", "a", {"pod-template-hash": "2"}),
            _pod("b1", "b"),
        ],
    )
    ids = engine.pod_identity
    assert ids[PodKey("x", "a1")] == ids[PodKey("x", "a2")] != ids[PodKey("x", "b1")]
    assert min(ids.values()) >= CLUSTER_IDENTITY_MIN


def test_custom_label_filter() -> None:
    engine = Engine(label_filter=LabelFilter(included_keys=frozenset({"app"})))
    engine.load(
        namespaces=[{"metadata": {"name": "x"}}],
        pods=[_pod("a1", "a", {"version": "1"}), _pod("a2", "a", {"version": "2"})],
    )
    assert len(set(engine.pod_identity.values())) == 1


def test_numbers_are_stable_while_in_use_and_released_when_unused() -> None:
    engine = Engine()
    engine.load(namespaces=[{"metadata": {"name": "x"}}], pods=[_pod("a1", "a"), _pod("a2", "a")])
    number = engine.pod_identity[PodKey("x", "a1")]
    engine.delete_pod("x", "a1")
    assert engine.pod_identity[PodKey("x", "a2")] == number
    engine.delete_pod("x", "a2")
    assert number not in engine.identities.labels
    engine.upsert_pod(_pod("c1", "c"))
    assert (
        engine.pod_identity[PodKey("x", "c1")] != number
    )  # released numbers are not reused at once


def test_allocator_reference_counting() -> None:
    allocator = InMemoryAllocator(256, 258)
    assert allocator.acquire("a") == 256
    assert allocator.acquire("a") == 256
    assert allocator.release("a") is None
    assert allocator.release("a") == 256
    assert allocator.acquire("b") == 257


def test_exhausted_identity_space_is_an_engine_error() -> None:
    from septum.operator.engine import EngineError, IdentitiesExhausted
    from septum.operator.engine.identities import IdentityTable
    from septum.operator.engine.labels import LabelSet
    from septum.operator.identity import IdentitySpaceExhausted, InMemoryAllocator

    table = IdentityTable(InMemoryAllocator(256, 256), InMemoryAllocator(1 << 24, 1 << 24))
    table.acquire_pod(LabelSet.of("k8s", {"app": "a"}))
    with pytest.raises(IdentitiesExhausted) as caught:
        table.acquire_pod(LabelSet.of("k8s", {"app": "b"}))
    assert isinstance(caught.value, EngineError)
    assert isinstance(caught.value.__cause__, IdentitySpaceExhausted)
    assert "pod identities: identity space 256-256 exhausted" in str(caught.value)
