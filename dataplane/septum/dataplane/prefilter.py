"""The XDP prefilter's deny list (``sep_prefilter``): node-wide CIDRs whose packets the
uplink's XDP program drops before they reach the stack, each with the rule id that drop
events report."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from septum.dataplane import abi
from septum.dataplane.addressing import check_u32, lpm_key, parse_prefix
from septum.dataplane.errors import MapFullError
from septum.dataplane.maps import BpfMap


def deny_entries(
    deny: Mapping[str, int] | Iterable[str],
) -> dict[bytes, tuple[abi.LpmAddrKey, int]]:
    """The deny list as trie keys (by their bytes) with rule ids; a bare iterable of CIDRs
    gets rule id 0.  Raises PrefixError naming the first invalid prefix or rule id."""
    wanted = dict(deny) if isinstance(deny, Mapping) else {cidr: 0 for cidr in deny}
    for cidr, rule_id in wanted.items():
        check_u32(f"rule id of prefix {cidr!r}", rule_id)
    entries: dict[bytes, tuple[abi.LpmAddrKey, int]] = {}
    for cidr, rule_id in wanted.items():
        key = lpm_key(parse_prefix(cidr))
        entries[bytes(key)] = (key, rule_id)
    return entries


class Prefilter:
    """Replaces the deny list as a whole."""

    def __init__(self, table: BpfMap[abi.LpmAddrKey, abi.PrefilterValue]) -> None:
        self.table = table

    def replace(self, deny: Mapping[str, int] | Iterable[str]) -> None:
        """Make the deny list exactly `deny` (CIDR -> rule id, or CIDRs)."""
        entries = deny_entries(deny)
        if len(entries) > self.table.capacity:
            raise MapFullError(self.table.name, self.table.setting, self.table.capacity)
        # Stale prefixes leave first: the map then never holds the old list and the new
        # one together, so a list that fits is never refused half-way.  (Each stale prefix
        # is being dropped anyway; a prefix in both lists is never absent.)
        for existing in list(self.table.keys()):
            if bytes(existing) not in entries:
                self.table.delete(existing)
        for key, rule_id in entries.values():
            self.table.update(key, abi.PrefilterValue(rule_id=rule_id))
