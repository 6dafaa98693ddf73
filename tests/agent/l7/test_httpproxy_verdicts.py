"""The HTTP proxy's verdict cache (pure: no sockets): a cached verdict is the rules' own, rules
that look at headers are always asked, a new policy object is asked afresh, and the cache
stays bounded whatever paths a client sends."""

from __future__ import annotations

from septum.agent.l7.httpproxy import Connection, HttpProxy, _VerdictCache
from septum.agent.l7.httprules import HttpPolicy, policy_from_fields

CONN = Connection("10.0.0.1", 40000, "10.0.0.3", 80)


def _proxy(policies: list[HttpPolicy]) -> HttpProxy:
    return HttpProxy(lambda conn: policies[-1], lambda conn: 1, ingress=False)


def test_cached_verdicts_are_the_rules_own() -> None:
    proxy = _proxy([policy_from_fields([{"method": "GET", "path": "/public/.*"}])])
    for _ in range(3):  # the first asks the rules, the others the cache
        allowed = proxy.decide_parts(CONN, "GET", "/public/a", "s", ())
        denied = proxy.decide_parts(CONN, "PUT", "/public/a", "s", ())
        assert allowed is not None and allowed.allowed and allowed.rule_index == 0
        assert denied is not None and not denied.allowed


def test_rules_on_headers_are_asked_every_time() -> None:
    proxy = _proxy([policy_from_fields([{"path": "/x", "headers": ["X-Token: yes"]}])])
    with_token = proxy.decide_parts(CONN, "GET", "/x", "s", (("x-token", "yes"),))
    without = proxy.decide_parts(CONN, "GET", "/x", "s", ())
    assert with_token is not None and with_token.allowed
    assert without is not None and not without.allowed


def test_a_new_policy_is_asked_afresh() -> None:
    policies = [policy_from_fields([{"method": "GET"}])]
    proxy = _proxy(policies)
    first = proxy.decide_parts(CONN, "GET", "/a", "s", ())
    assert first is not None and first.allowed
    policies.append(policy_from_fields([{"method": "POST"}]))  # the policy changed
    after = proxy.decide_parts(CONN, "GET", "/a", "s", ())
    assert after is not None and not after.allowed


def test_the_cache_is_bounded() -> None:
    cache = _VerdictCache()
    policy = policy_from_fields([{"path": "/items/.*"}])
    for i in range(_VerdictCache._ENTRIES * 2 + 7):
        assert cache.decide(policy, "GET", f"/items/{i}", "s", ()).allowed
    for _, table in cache._tables.values():
        assert table is not None and len(table) <= _VerdictCache._ENTRIES
