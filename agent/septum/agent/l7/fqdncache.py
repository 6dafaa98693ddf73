"""Names learned from DNS answers, per endpoint, with their expiry (Cilium's DNS cache).

Pure bookkeeping: callers pass the time. Expiry times are wall-clock seconds so a
persisted cache means the same after an agent restart. The options mirror Cilium's:

- `min_ttl_s` (`--tofqdns-min-ttl`, default 0): an answer is kept at least this long.
- `max_ips_per_hostname` (`--tofqdns-endpoint-max-ip-per-hostname`, default 1000): per
  endpoint and name; beyond it the addresses that expire first are dropped.
- `idle_connection_grace_s` (`--tofqdns-idle-connection-grace-period`, default 0): an
  expired address stays selected while the endpoint's connection to it was active
  within this period (an open connection counts as active now).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from septum.agent.l7.errors import FqdnConfigError
from septum.operator.engine.fqdn import canonical_name

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# When did the endpoint's connection to the address last carry traffic (None: never).
LastActive = Callable[[str, IPAddress], float | None]


@dataclass(frozen=True, slots=True)
class FqdnConfig:
    min_ttl_s: int = 0
    max_ips_per_hostname: int = 1000
    idle_connection_grace_s: float = 0.0

    def __post_init__(self) -> None:
        if self.min_ttl_s < 0:
            raise FqdnConfigError(f"--tofqdns-min-ttl: {self.min_ttl_s} is negative")
        if self.max_ips_per_hostname < 1:
            raise FqdnConfigError(
                f"--tofqdns-endpoint-max-ip-per-hostname: {self.max_ips_per_hostname} is below 1"
            )
        if self.idle_connection_grace_s < 0:
            grace = self.idle_connection_grace_s
            raise FqdnConfigError(f"--tofqdns-idle-connection-grace-period: {grace} is negative")


class FqdnCache:
    """endpoint -> name -> address -> expiry (wall-clock seconds).

    `generation` moves whenever an endpoint's name -> address pairs change (learned, dropped,
    expired, forgotten; not when a repeated answer only extends an expiry): flows cached with
    source/destination_names are rebuilt when it moves."""

    def __init__(self, config: FqdnConfig | None = None) -> None:
        self.config = config or FqdnConfig()
        self._entries: dict[str, dict[str, dict[IPAddress, float]]] = {}
        self.generation = 0

    def learn(
        self, endpoint: str, name: str, answers: Iterable[tuple[IPAddress, int]], now: float
    ) -> bool:
        """Record an answer's addresses with their TTLs; True when the selection grew."""
        name = canonical_name(name)
        known = self._entries.setdefault(endpoint, {}).setdefault(name, {})
        before = set(known)
        for address, ttl_s in answers:
            expiry = now + max(ttl_s, self.config.min_ttl_s)
            # A repeated answer extends an entry, never shortens it.
            known[address] = max(expiry, known.get(address, expiry))
        overflow = len(known) - self.config.max_ips_per_hostname
        if overflow > 0:
            for address in sorted(known, key=known.__getitem__)[:overflow]:
                del known[address]
        if not known:
            self._drop(endpoint, name)
        if set(known) != before:
            self.generation += 1
        return bool(set(known) - before)

    def expire(self, now: float, last_active: LastActive) -> bool:
        """Drop expired addresses no recent connection holds; True when any went."""
        grace = self.config.idle_connection_grace_s
        changed = False
        for endpoint, names in list(self._entries.items()):
            for name, known in list(names.items()):
                for address, expiry in list(known.items()):
                    if expiry > now:
                        continue
                    seen = last_active(endpoint, address)
                    if seen is not None and now - seen <= grace:
                        continue
                    del known[address]
                    changed = True
                if not known:
                    self._drop(endpoint, name)
        if changed:
            self.generation += 1
        return changed

    def forget_endpoint(self, endpoint: str) -> bool:
        """An endpoint went away: its lookups select nothing any more."""
        forgotten = self._entries.pop(endpoint, None) is not None
        if forgotten:
            self.generation += 1
        return forgotten

    def addresses(self) -> dict[IPAddress, frozenset[str]]:
        """Every learned address with the names it was learned for, across endpoints."""
        found: dict[IPAddress, set[str]] = {}
        for names in self._entries.values():
            for name, known in names.items():
                for address in known:
                    found.setdefault(address, set()).add(name)
        return {address: frozenset(names) for address, names in found.items()}

    def names_of(self, endpoint: str, address: IPAddress) -> list[str]:
        """The names an endpoint's lookups gave `address`, sorted: a flow's
        `destination_names` (and `source_names` of its replies), as Hubble fills them
        from the DNS cache for `--fqdn` / `--to-fqdn`."""
        names = self._entries.get(endpoint, {})
        # list(): read from the Observer's threads while the proxy's loop learns (one C call)
        return sorted(name.rstrip(".") for name, known in list(names.items()) if address in known)

    def lookups(self, endpoint: str) -> Mapping[str, Mapping[IPAddress, float]]:
        return self._entries.get(endpoint, {})

    def next_expiry(self) -> float | None:
        expiries = [
            e
            for names in self._entries.values()
            for known in names.values()
            for e in known.values()
        ]
        return min(expiries, default=None)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "endpoints": {
                endpoint: {
                    name: {str(address): expiry for address, expiry in known.items()}
                    for name, known in names.items()
                }
                for endpoint, names in self._entries.items()
            },
        }

    @classmethod
    def from_json(cls, data: Any, config: FqdnConfig | None = None) -> FqdnCache:
        """Rebuild a cache; raises ValueError / TypeError / KeyError on a malformed document."""
        if not isinstance(data, dict) or data.get("version") != 1:
            raise ValueError("not a version 1 FQDN state document")
        cache = cls(config)
        for endpoint, names in data["endpoints"].items():
            for name, known in names.items():
                entries = cache._entries.setdefault(str(endpoint), {}).setdefault(
                    canonical_name(name), {}
                )
                for address, expiry in known.items():
                    entries[ipaddress.ip_address(address)] = float(expiry)
        return cache

    def _drop(self, endpoint: str, name: str) -> None:
        names = self._entries.get(endpoint)
        if names is not None:
            names.pop(name, None)
            if not names:
                del self._entries[endpoint]


__all__ = ["FqdnCache", "FqdnConfig", "IPAddress", "LastActive"]
