"""Engine policies for the adapter tests, compiled by the real engine from random rule sets,
and the verdict each side gives a (peer, protocol, port) probe."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from septum.dataplane import abi
from septum.dataplane.abi import PolicyAction
from septum.dataplane.policy import EncodedPolicy
from septum.operator.engine.compile import ResolvedRule, compile_direction
from septum.operator.engine.entries import NOT_ENFORCED, DirectionPolicy, IdentityPolicy, Verdict
from septum.operator.engine.ports import PortRange
from septum.operator.engine.rules import Action, Direction, Tier

TCP, UDP, ICMP, GRE = 6, 17, 1, 47
PEERS = (600, 601, 602)
UNNAMED_PEER = 603  # no rule names it: the any-peer entries decide for it
PROBE_PEERS = (*PEERS, UNNAMED_PEER)
DEFAULT_DENY_ID, NO_POLICY_ID = 900, 901
L7_PROXY_PORT = 15001

PORT_RANGES = (
    PortRange(TCP, 80, 80),
    PortRange(TCP, 1, 1023),
    PortRange(TCP, 1000, 2000),
    PortRange(TCP, 8080, 8080),
    PortRange(UDP, 53, 53),
    PortRange(ICMP, 8, 8),
    PortRange(ICMP, 0, 0),  # echo reply: the type that is not "any type"
)
PROBES = tuple(
    [(TCP, port) for port in (0, 1, 79, 80, 81, 999, 1000, 1023, 1024, 2000, 2001, 8080, 65535)]
    + [(UDP, port) for port in (0, 53, 54)]
    + [(ICMP, kind) for kind in (0, 1, 7, 8, 9, 255)]
    + [(GRE, 0)]
)

_NORMAL_ACTIONS = (Action.ALLOW, Action.DENY)
_TIER_ACTIONS = (Action.ALLOW, Action.DENY, Action.PASS)


@st.composite
def rule_sets(draw: Any, max_rules: int = 5) -> list[ResolvedRule]:
    """Rules in the engine's evaluation order: admin, normal (denies first), baseline."""
    rules = []
    for rule_id in range(1, draw(st.integers(1, max_rules)) + 1):
        tier = draw(st.sampled_from(Tier))
        action = draw(st.sampled_from(_NORMAL_ACTIONS if tier is Tier.NORMAL else _TIER_ACTIONS))
        peers = draw(st.none() | st.frozensets(st.sampled_from(PEERS), min_size=1))
        ports = draw(
            st.none()
            | st.lists(st.sampled_from(PORT_RANGES), min_size=1, max_size=2, unique=True).map(tuple)
        )
        l7 = action is Action.ALLOW and draw(st.booleans())
        rules.append(ResolvedRule(rule_id, tier, action, peers, ports, l7, f"rule{rule_id}"))
    rules.sort(key=lambda r: (r.tier, r.tier is Tier.NORMAL and r.action is not Action.DENY))
    return rules


@st.composite
def direction_policies(draw: Any, direction: Direction) -> DirectionPolicy:
    """What the engine compiles from a random rule set (sometimes none: not enforced), its
    entries sometimes in audit mode."""
    if draw(st.integers(0, 9)) == 0:
        return compile_direction(direction, [], None, NO_POLICY_ID)  # no rule: not enforced
    default_deny = draw(st.sampled_from((None, DEFAULT_DENY_ID)))
    compiled = compile_direction(direction, draw(rule_sets()), default_deny, NO_POLICY_ID)
    if not compiled.enforced or not draw(st.booleans()):
        return compiled
    audited = tuple(e._replace(audit=True) for e in compiled.entries)
    return DirectionPolicy(True, audited, compiled.protocols, compiled.wildcard)


# (direction, its policy): what the differential tests run
directed_policies = st.sampled_from(Direction).flatmap(
    lambda direction: st.tuples(st.just(direction), direction_policies(direction))
)


def examples(count: int) -> settings:
    """Derandomised hypothesis settings (as CI runs them) with `count` examples."""
    return settings(
        max_examples=count,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


def identity_policy(direction: Direction, policy: DirectionPolicy) -> IdentityPolicy:
    """An endpoint policy enforcing `policy` in `direction` and nothing the other way."""
    if direction is Direction.INGRESS:
        return IdentityPolicy(policy, NOT_ENFORCED)
    return IdentityPolicy(NOT_ENFORCED, policy)


# An outcome: (verdict, deciding rule id or 0, L7 proxy port or 0)
Outcome = tuple[abi.Verdict, int, int]
FORWARDED = (abi.Verdict.FORWARDED, 0, 0)


def engine_outcome(
    policy: DirectionPolicy, peer: int, protocol: int, port: int, l7_proxy_port: int
) -> Outcome:
    """What DirectionPolicy.lookup decides, in the datapath's terms."""
    entry = policy.lookup(peer, protocol, port)
    if entry is None:
        assert not policy.enforced, "the engine's any-peer entries are complete"
        return FORWARDED
    if entry.verdict is Verdict.ALLOW:
        return abi.Verdict.FORWARDED, entry.rule_id, l7_proxy_port if entry.l7 else 0
    verdict = abi.Verdict.AUDIT if entry.audit else abi.Verdict.DROPPED
    return verdict, entry.rule_id, 0


def model_outcome(
    encoded: EncodedPolicy, enforced: bool, direction: int, peer: int, protocol: int, port: int
) -> Outcome:
    """What bpf/lib/policy.h decides (septum_decide on septum_policy_lookup), in Python."""
    if not enforced:
        return FORWARDED
    key_port = abi.POLICY_ICMP_TYPE | port if protocol in (1, 58) else port
    hit = _bucket(encoded, direction, peer, protocol, key_port)
    if hit is None and (direction, 0, 0, 0) in encoded.hash_entries:
        hit = _bucket(encoded, direction, 0, protocol, key_port)
    if hit is None:
        return abi.Verdict.DROPPED, 0, 0
    if hit.action == PolicyAction.ALLOW:
        return abi.Verdict.FORWARDED, hit.rule_id, hit.l7_proxy_port
    return (abi.Verdict.AUDIT if hit.audit else abi.Verdict.DROPPED), hit.rule_id, 0


def _bucket(encoded: EncodedPolicy, direction: int, peer: int, protocol: int, port: int) -> Any:
    hashes = encoded.hash_entries
    head = hashes.get((direction, peer, 0, 0))
    if head is None:
        return None
    if protocol and (direction, peer, protocol, port) in hashes:
        return hashes[(direction, peer, protocol, port)]
    best = None
    for (d, p, proto, value, plen), found in encoded.range_entries.items():
        shift = 16 - plen
        if (d, p, proto) == (direction, peer, protocol) and value >> shift == port >> shift:
            if best is None or plen > best[0]:
                best = (plen, found)
    if best is not None:
        return best[1]
    if protocol and (direction, peer, protocol, 0) in hashes:
        return hashes[(direction, peer, protocol, 0)]
    return head if head.action != PolicyAction.NONE else None
