"""The selector cache: selections per selector, users told of added and removed identities."""

from __future__ import annotations

from septum.operator.engine.identities import IdentityTable
from septum.operator.engine.labels import SOURCE_K8S, LabelSet
from septum.operator.engine.rules import Peers
from septum.operator.engine.selectorcache import SelectorCache
from septum.operator.engine.selectors import Selector, parse_label_selector, pod_key
from septum.operator.identity import InMemoryAllocator
from tests.operator.engine.conftest import NoNodes


def _selector(labels: dict[str, str]) -> Selector:
    return Selector(parse_label_selector({"matchLabels": labels}, "s", pod_key))


def _setup() -> tuple[IdentityTable, SelectorCache]:
    identities = IdentityTable(InMemoryAllocator(256, 1000), InMemoryAllocator(2000, 3000))
    return identities, SelectorCache(identities, NoNodes())


def _pod(identities: IdentityTable, labels: dict[str, str]) -> int:
    number, _ = identities.acquire_pod(LabelSet.of(SOURCE_K8S, labels))
    return number


def test_selection_is_computed_on_acquire_and_shared_by_references() -> None:
    identities, cache = _setup()
    web = _pod(identities, {"app": "web"})
    _pod(identities, {"app": "db"})
    selector = _selector({"app": "web"})
    cache.acquire(selector)
    cache.acquire(selector)
    assert cache.selections(selector) == {web}
    cache.release(selector)
    assert cache.get(selector) == {web}  # one reference left
    cache.release(selector)
    assert cache.get(selector) is None


def test_users_are_told_of_an_added_identity() -> None:
    identities, cache = _setup()
    selector = _selector({"app": "web"})
    other = _selector({"app": "db"})
    cache.acquire(selector)
    cache.acquire(other)
    cache.add_user(selector, 42)
    number = _pod(identities, {"app": "web", "v": "2"})
    changes = cache.identity_added(number)
    assert [(c.selector, c.added, c.removed, set(c.users)) for c in changes] == [
        (selector, {number}, frozenset(), {42})
    ]
    assert cache.selections(selector) == {number}
    assert cache.selections(other) == frozenset()


def test_users_are_told_of_a_removed_identity() -> None:
    identities, cache = _setup()
    number = _pod(identities, {"app": "web"})
    selector = _selector({"app": "web"})
    cache.acquire(selector)
    cache.add_user(selector, 7)
    changes = cache.identity_removed(number)
    assert [(c.added, c.removed, set(c.users)) for c in changes] == [(frozenset(), {number}, {7})]
    assert cache.selections(selector) == frozenset()


def test_peers_select_cidr_identities_and_refresh_reports_changes() -> None:
    identities, cache = _setup()
    peers = Peers(entities=("world",))
    cache.acquire(peers)
    before = cache.selections(peers)
    assert before  # the reserved world identities
    assert cache.refresh(peers) is None  # nothing changed


def test_key_generation_moves_when_the_read_keys_change() -> None:
    _, cache = _setup()
    start = cache.key_generation
    selector = _selector({"tier": "a"})
    cache.acquire(selector)
    assert cache.reads_key("tier") and cache.key_generation != start
    cache.release(selector)
    assert not cache.reads_key("tier")
