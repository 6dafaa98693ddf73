"""Twin identities: equal on every label key a selector reads."""

from __future__ import annotations

from septum.operator.engine.identities import IdentityTable
from septum.operator.engine.labels import SOURCE_K8S, LabelSet
from septum.operator.engine.selectorcache import SelectorCache
from septum.operator.engine.selectors import Selector, parse_label_selector, pod_key
from septum.operator.engine.twins import TwinIndex
from septum.operator.identity import InMemoryAllocator
from tests.operator.engine.conftest import NoNodes


def test_twins_differ_only_in_keys_no_selector_reads() -> None:
    identities = IdentityTable(InMemoryAllocator(256, 1000), InMemoryAllocator(2000, 3000))
    cache = SelectorCache(identities, NoNodes())
    twins = TwinIndex(cache, identities)
    cache.acquire(Selector(parse_label_selector({"matchLabels": {"app": "web"}}, "s", pod_key)))
    first_labels = LabelSet.of(SOURCE_K8S, {"app": "web", "pod-template-hash": "1"})
    first, _ = identities.acquire_pod(first_labels)
    twins.add(first, first_labels)
    second_labels = LabelSet.of(SOURCE_K8S, {"app": "web", "pod-template-hash": "2"})
    second, _ = identities.acquire_pod(second_labels)
    assert first in twins.candidates(second, second_labels)
    other = LabelSet.of(SOURCE_K8S, {"app": "db"})
    assert first not in twins.candidates(999, other)
    # A selector reading the differing key ends the twinship.
    cache.acquire(
        Selector(parse_label_selector({"matchLabels": {"pod-template-hash": "1"}}, "s", pod_key))
    )
    assert first not in twins.candidates(second, second_labels)
