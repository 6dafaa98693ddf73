"""matchName / matchPattern as Cilium's DNS proxy and toFQDNs read them."""

from __future__ import annotations

import pytest

from septum.operator.engine.fqdn import (
    canonical_name,
    dns_allowed,
    name_matches,
    selectors_match,
)
from septum.operator.engine.rules import DnsRule


def test_canonical_name_lowercases_and_adds_the_final_dot() -> None:
    assert canonical_name(" API.Example.COM ") == "api.example.com."
    assert canonical_name("api.example.com.") == "api.example.com."


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        # matchName: exact, case-insensitive, final dot optional on either side.
        ("api.example.com", "api.example.com", True),
        ("API.example.com.", "api.EXAMPLE.com", True),
        ("api.example.com", "www.api.example.com", False),
        ("api.example.com", "api.example.com.evil", False),
        ("api.example.com", "apixexample.com", False),  # the dot is literal
        # `*` within a label: zero or more label characters, never a dot.
        ("*.example.com", "api.example.com", True),
        ("*.example.com", "a.b.example.com", False),
        ("*.example.com", "example.com", False),
        ("api-*.example.com", "api-eu1.example.com", True),
        ("api-*.example.com", "api-.example.com", True),
        ("api-*.example.com", "api.example.com", False),
        ("**.example.com", "api.example.com", True),
        # `**.` leading: one or more whole labels.
        ("**.example.com", "a.b.c.example.com", True),
        ("**.example.com", "example.com", False),
        ("**.example.com", "notexample.com", False),
        # stars alone: every name.
        ("*", "anything.at.all", True),
        ("*", "x", True),
        ("**.", "a.b", True),
        # a `*` that is not leading collapses runs and stays within its label
        ("ex**ple.com", "example.com", True),
        ("ex*ple.com", "ex.ple.com", False),
    ],
)
def test_pattern_semantics(pattern: str, name: str, expected: bool) -> None:
    assert name_matches(pattern, name) is expected


def test_dns_rules_any_rule_allows() -> None:
    rules = [DnsRule(match_name="api.example.com"), DnsRule(match_pattern="*.cilium.io")]
    assert dns_allowed(rules, "API.example.com.")
    assert dns_allowed(rules, "docs.cilium.io")
    assert not dns_allowed(rules, "evil.example.com")
    assert not dns_allowed([], "api.example.com")


def test_selectors_match_any_name() -> None:
    assert selectors_match(["*.example.com"], ["x.other.org", "a.example.com"])
    assert not selectors_match(["*.example.com"], ["example.com"])
