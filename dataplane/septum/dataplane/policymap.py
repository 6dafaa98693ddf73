"""The policy maps (``sep_policy``, ``sep_policy_ranges``) and the generation swap that
replaces an endpoint's policy atomically.

Every endpoint has two policy generations, 0 and 1, and its ``sep_endpoints`` entry says
which one is live.  A new policy is written under the idle generation, then one update of
the endpoint entry switches generation, enforcement flags and revision together, then the
old generation is deleted: a packet sees the old policy or the new, never a mix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sized
from typing import Any

from septum.dataplane import abi
from septum.dataplane.endpointentry import EndpointState, next_revision
from septum.dataplane.errors import MapFullError
from septum.dataplane.maps import BpfMap
from septum.dataplane.policy import EncodedPolicy, EndpointPolicy, PolicyDiff, diff_policy, encode


class PolicyMaps:
    """Writes and deletes endpoints' policy keys, one generation at a time."""

    def __init__(
        self,
        exact: BpfMap[abi.PolicyKey, abi.PolicyValue],
        ranges: BpfMap[abi.PolicyRangeKey, abi.PolicyValue],
    ) -> None:
        self.exact = exact
        self.ranges = ranges

    def replace(
        self,
        state: EndpointState,
        desired: EndpointPolicy,
        live_policies: Iterable[EncodedPolicy],
        publish: Callable[[EndpointState], None],
    ) -> PolicyDiff:
        """Swap `state`'s policy for `desired`; returns what changed.

        `live_policies` are every endpoint's encoded policy now in the maps (for the room
        check); `publish` writes the endpoint entry, the one update that switches a packet
        from the old generation to the new.  On MapFullError nothing has changed."""
        change = diff_policy(state.policy, desired)
        if change.empty and state.adopted is None:
            return change
        encoded = encode(desired)
        live = list(live_policies)
        self._check_room(self.exact, [p.hash_entries for p in live], encoded.hash_entries)
        self._check_room(self.ranges, [p.range_entries for p in live], encoded.range_entries)
        endpoint_id = state.spec.endpoint_id
        new_generation = state.generation ^ 1
        adopted = state.adopted is not None
        if adopted:  # an interrupted earlier agent may have left keys in the idle generation
            self.purge(endpoint_id, new_generation)
        self._write_generation(endpoint_id, new_generation, encoded)

        old_generation, old_encoded = state.generation, state.encoded
        state.generation = new_generation
        state.revision = next_revision(state.revision)
        state.policy = desired
        state.encoded = encoded
        state.adopted = None
        publish(state)

        if adopted:  # what the earlier agent wrote is known only from the maps
            self.purge(endpoint_id, old_generation)
        else:
            self._delete_generation(endpoint_id, old_generation, old_encoded)
        return change

    def _check_room(
        self, table: BpfMap[Any, Any], in_use: Iterable[Sized], new: Mapping[Any, Any]
    ) -> None:
        # Both generations coexist for a moment: the map needs room for the old and the new.
        if sum(len(entries) for entries in in_use) + len(new) > table.capacity:
            raise MapFullError(table.name, table.setting, table.capacity)

    def _write_generation(self, endpoint_id: int, generation: int, encoded: EncodedPolicy) -> None:
        keys, values = encoded.policy_items(endpoint_id, generation)
        range_keys, range_values = encoded.range_items(endpoint_id, generation)
        try:
            self.exact.update_batch(keys, values)
            self.ranges.update_batch(range_keys, range_values)
        except MapFullError:
            # the idle generation is not live: take back what was written, so that a
            # later replace never switches to a half-written policy
            self.exact.delete_batch(keys)
            self.ranges.delete_batch(range_keys)
            raise

    def _delete_generation(self, endpoint_id: int, generation: int, encoded: EncodedPolicy) -> None:
        keys, _ = encoded.policy_items(endpoint_id, generation)
        range_keys, _ = encoded.range_items(endpoint_id, generation)
        self.exact.delete_batch(keys)
        self.ranges.delete_batch(range_keys)

    def purge(self, endpoint_id: int, generation: int | None = None) -> None:
        """Delete the endpoint's policy keys found in the maps (of one generation, or all):
        for keys this process did not write (an earlier agent's, or a removed pod's)."""
        tables: tuple[BpfMap[Any, Any], ...] = (self.exact, self.ranges)
        for table in tables:
            stale = [
                key
                for key in table.keys()
                if key.endpoint_id == endpoint_id and generation in (None, key.generation)
            ]
            table.delete_batch(stale)
