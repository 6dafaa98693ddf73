"""DirectionPolicy.with_twins: the lazy twin overlay equals an eagerly built entry tuple."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from septum.operator.engine import entries as entries_module
from septum.operator.engine.entries import DirectionPolicy, PolicyEntry, Verdict
from septum.operator.engine.rules import Direction


def _entry(peer: int, port: int, verdict: Verdict) -> PolicyEntry:
    return PolicyEntry(Direction.INGRESS, peer, 6, port, port, verdict, False, False, 1, "")


def _eager(entries: dict[int, list[PolicyEntry]]) -> tuple[PolicyEntry, ...]:
    return tuple(sorted(e for group in entries.values() for e in group))


base_groups = st.dictionaries(
    st.integers(0, 6),
    st.lists(st.tuples(st.integers(1, 4), st.sampled_from(Verdict)), min_size=1, max_size=3),
    max_size=5,
)
steps = st.lists(
    st.tuples(st.integers(1, 12), st.one_of(st.just(-1), st.integers(0, 12))), max_size=10
)


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(base_groups, st.lists(steps, max_size=4))
def test_twin_overlay_matches_an_eager_copy(
    groups: dict[int, list[tuple[int, Verdict]]], batches: list[list[tuple[int, int]]]
) -> None:
    saved = entries_module.OVERLAY_LIMIT
    try:
        # 0 and 3 fold the overlay into a fresh tuple often; the default rarely.
        for limit in (0, 3, saved):
            entries_module.OVERLAY_LIMIT = limit
            _check_overlay(groups, batches)
    finally:
        entries_module.OVERLAY_LIMIT = saved


def _check_overlay(
    groups: dict[int, list[tuple[int, Verdict]]], batches: list[list[tuple[int, int]]]
) -> None:
    # One verdict per (peer, port), like a compiled tuple.
    model = {
        peer: sorted(_entry(peer, port, verdict) for port, verdict in dict(items).items())
        for peer, items in groups.items()
    }
    policy = DirectionPolicy(True, _eager(model))
    for batch in batches:
        before = set(policy.entries)
        new_policy, delta = policy.with_twins(sorted(set(batch)))
        for new, twin in sorted(set(batch)):
            if twin < 0:
                model.pop(new, None)
            elif model.get(twin):
                model[new] = [e._replace(peer_identity=new) for e in model[twin]]
        expected = _eager(model)
        current = before
        for removed, added in delta:  # the delta's items apply in order
            assert set(removed) <= current
            current = (current - set(removed)) | set(added)
        assert current == set(expected)
        for peer in range(13):
            assert new_policy.peer_entries(peer) == tuple(e for e in expected if e[1] == peer)
        # Chain further updates on the lazy policy before reading its entries.
        policy = new_policy
    assert policy.entries == _eager(model)
