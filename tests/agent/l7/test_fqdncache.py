"""Name-to-address learning: TTLs, the minimum TTL, the per-name cap, the idle grace
period, and the state file that carries it across an agent restart."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from septum.agent.l7 import fqdnstore
from septum.agent.l7.errors import FqdnConfigError, FqdnStateError
from septum.agent.l7.fqdncache import FqdnCache, FqdnConfig, IPAddress

A = ipaddress.ip_address("203.0.113.10")
B = ipaddress.ip_address("203.0.113.11")
C = ipaddress.ip_address("2001:db8::c")


def never_active(endpoint: str, address: IPAddress) -> float | None:
    return None


def test_answers_expire_with_their_ttl() -> None:
    cache = FqdnCache()
    assert cache.learn("pod-1", "API.example.com", [(A, 30), (C, 60)], now=1000.0)
    assert cache.addresses() == {A: {"api.example.com."}, C: {"api.example.com."}}
    assert not cache.expire(1029.0, never_active)
    assert cache.expire(1030.0, never_active)
    assert cache.addresses() == {C: {"api.example.com."}}
    assert cache.next_expiry() == 1060.0
    assert cache.expire(1060.0, never_active)
    assert cache.addresses() == {} and cache.next_expiry() is None


def test_min_ttl_raises_short_answers_and_repeats_extend() -> None:
    cache = FqdnCache(FqdnConfig(min_ttl_s=300))
    cache.learn("pod-1", "api.example.com", [(A, 5)], now=0.0)
    assert dict(cache.lookups("pod-1")["api.example.com."]) == {A: 300.0}
    assert not cache.learn("pod-1", "api.example.com", [(A, 1000)], now=10.0)  # not new
    assert dict(cache.lookups("pod-1")["api.example.com."]) == {A: 1010.0}
    cache.learn("pod-1", "api.example.com", [(A, 1)], now=20.0)  # never shortens
    assert dict(cache.lookups("pod-1")["api.example.com."]) == {A: 1010.0}


def test_cap_per_endpoint_and_name_drops_what_expires_first() -> None:
    cache = FqdnCache(FqdnConfig(max_ips_per_hostname=2))
    cache.learn("pod-1", "api.example.com", [(A, 10), (B, 30)], now=0.0)
    cache.learn("pod-1", "api.example.com", [(C, 20)], now=0.0)
    assert set(cache.lookups("pod-1")["api.example.com."]) == {B, C}
    # another endpoint has its own budget
    cache.learn("pod-2", "api.example.com", [(A, 10)], now=0.0)
    assert cache.addresses()[A] == {"api.example.com."}


def test_expired_address_kept_while_its_connection_is_recent() -> None:
    cache = FqdnCache(FqdnConfig(idle_connection_grace_s=60))
    cache.learn("pod-1", "api.example.com", [(A, 10), (B, 10)], now=0.0)
    last_seen = {("pod-1", A): 50.0}

    def active(endpoint: str, address: IPAddress) -> float | None:
        return last_seen.get((endpoint, address))

    assert cache.expire(100.0, active)  # B had no connection: gone at once
    assert set(cache.addresses()) == {A}
    assert not cache.expire(110.0, active)  # A's connection idle 60 s: still within grace
    assert cache.expire(110.5, active)
    assert cache.addresses() == {}


def test_forget_endpoint() -> None:
    cache = FqdnCache()
    cache.learn("pod-1", "api.example.com", [(A, 10)], now=0.0)
    assert cache.forget_endpoint("pod-1")
    assert cache.addresses() == {}


@pytest.mark.parametrize(
    ("config", "flag"),
    [
        ({"min_ttl_s": -1}, "--tofqdns-min-ttl"),
        ({"max_ips_per_hostname": 0}, "--tofqdns-endpoint-max-ip-per-hostname"),
        ({"idle_connection_grace_s": -0.5}, "--tofqdns-idle-connection-grace-period"),
    ],
)
def test_bad_options_name_the_flag(config: dict[str, float], flag: str) -> None:
    with pytest.raises(FqdnConfigError, match=f"^{flag}"):
        FqdnConfig(**config)  # type: ignore[arg-type]


def test_state_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "node" / fqdnstore.STATE_FILE
    assert fqdnstore.load(path).addresses() == {}  # nothing saved yet
    cache = FqdnCache()
    cache.learn("default/client", "api.example.com", [(A, 30), (C, 30)], now=1000.0)
    fqdnstore.save(path, cache)
    assert [p.name for p in path.parent.iterdir()] == [fqdnstore.STATE_FILE]  # no temp left
    restored = fqdnstore.load(path, FqdnConfig(min_ttl_s=5))
    assert restored.addresses() == cache.addresses()
    assert restored.lookups("default/client") == cache.lookups("default/client")
    assert restored.config.min_ttl_s == 5
    # expiry is wall-clock: still meaningful to the restarted agent
    assert restored.expire(1030.0, never_active)


def test_malformed_state_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / fqdnstore.STATE_FILE
    path.write_text(json.dumps({"version": 1, "endpoints": {"p": {"x.": {"not-an-ip": 1}}}}))
    with pytest.raises(FqdnStateError, match=f"^{path}: malformed FQDN state"):
        fqdnstore.load(path)
    path.write_text("{")
    with pytest.raises(FqdnStateError, match=str(path)):
        fqdnstore.load(path)


def test_generation_moves_when_names_change_and_only_then() -> None:
    cache = FqdnCache()
    address = ipaddress.ip_address("203.0.113.10")
    seen = [cache.generation]

    def moved() -> bool:
        seen.append(cache.generation)
        return seen[-1] != seen[-2]

    cache.learn("default/xwing", "api.outside.example.", [(address, 30)], 0)
    assert moved()
    cache.learn("default/xwing", "api.outside.example.", [(address, 60)], 10)  # extends only
    assert not moved()
    cache.expire(20, lambda *_: None)  # nothing due
    assert not moved()
    cache.expire(100, lambda *_: None)
    assert moved()
    cache.learn("default/xwing", "api.outside.example.", [(address, 30)], 100)
    assert moved()
    assert cache.forget_endpoint("default/xwing") and moved()
    assert not cache.forget_endpoint("default/xwing") and not moved()
