"""Cilium's rules.http semantics in septum.agent.l7.httprules (pure)."""

from __future__ import annotations

import pytest

from septum.agent.l7.errors import HttpRuleError
from septum.agent.l7.httprules import HeaderAction, Mismatch, Request, policy_from_fields


def req(method: str = "GET", path: str = "/", host: str = "svc", **headers: str) -> Request:
    return Request(method, path, host, tuple((k.replace("_", "-"), v) for k, v in headers.items()))


def test_method_path_and_host_are_anchored_regular_expressions():
    policy = policy_from_fields([{"method": "GET|HEAD", "path": "/v1/.*", "host": "api\\..*"}])
    assert policy.decide(req("GET", "/v1/x", "api.example")).allowed
    assert policy.decide(req("HEAD", "/v1/", "api.x")).allowed
    assert not policy.decide(req("GETX", "/v1/x", "api.x")).allowed  # anchored at the end
    assert not policy.decide(req("GET", "/x/v1/x", "api.x")).allowed  # anchored at the start
    assert not policy.decide(req("GET", "/v1/x", "www.api.x")).allowed


def test_any_rule_allows_and_an_empty_rule_allows_everything():
    assert (
        policy_from_fields([{"path": "/a"}, {"path": "/b"}]).decide(req(path="/b")).rule_index == 1
    )
    assert policy_from_fields([{}]).decide(req("DELETE", "/anything")).allowed
    assert not policy_from_fields([]).decide(req()).allowed


def test_headers_need_presence_or_the_exact_value_case_insensitive_names():
    policy = policy_from_fields([{"headers": ["X-Token: abc", "X-Present"]}])
    assert policy.decide(req(x_token="abc", x_present="")).allowed
    assert policy.decide(Request("GET", "/", "h", (("x-token", "abc"), ("X-PRESENT", "1")))).allowed
    assert not policy.decide(req(x_token="abd", x_present="1")).allowed
    assert not policy.decide(req(x_token="abc")).allowed


def test_header_matches_without_action_deny_and_with_action_act():
    strict = policy_from_fields([{"headerMatches": [{"name": "X-Env", "value": "prod"}]}])
    assert strict.decide(req(x_env="prod")).allowed
    assert not strict.decide(req(x_env="dev")).allowed
    acting = policy_from_fields(
        [
            {
                "headerMatches": [
                    {"name": "X-Env", "value": "prod", "mismatch": "REPLACE"},
                    {"name": "X-Audit", "value": "1", "mismatch": "ADD"},
                ]
            }
        ]
    )
    verdict = acting.decide(req(x_env="dev"))
    assert verdict.allowed
    assert verdict.actions == (
        HeaderAction(Mismatch.REPLACE, "X-Env", "prod"),
        HeaderAction(Mismatch.ADD, "X-Audit", "1"),
    )


@pytest.mark.parametrize(
    ("rules", "field"),
    [
        ([{"path": "("}], "http[0].path"),
        ([{"method": 3}], "http[0].method"),
        ([{"verb": "GET"}], "http[0].verb"),
        ([{}, {"headers": [""]}], "http[1].headers[0]"),
        (
            [{"headerMatches": [{"name": "a", "mismatch": "DROP"}]}],
            "http[0].headerMatches[0].mismatch",
        ),
        ([{"headerMatches": [{"name": "a", "secret": {}}]}], "http[0].headerMatches[0].secret"),
    ],
)
def test_bad_rules_name_the_field(rules, field):
    with pytest.raises(HttpRuleError, match=field.replace("[", r"\[").replace("]", r"\]")):
        policy_from_fields(rules)


def test_policy_from_the_engines_merged_rules():
    from septum.agent.l7.httprules import policy_from_engine
    from septum.operator.engine.rules import HttpRule as EngineHttpRule

    policy = policy_from_engine([EngineHttpRule("GET", "/a"), EngineHttpRule(headers=("X-K: v",))])
    assert policy.decide(req("GET", "/a")).allowed
    assert not policy.decide(req("PUT", "/a")).allowed
    assert policy.decide(req("PUT", "/x", x_k="v")).rule_index == 1


def test_policy_from_the_engine_enforces_header_matches():
    from septum.agent.l7.httprules import policy_from_engine
    from septum.operator.engine.rules import HeaderMatch as EngineHeaderMatch
    from septum.operator.engine.rules import HttpRule as EngineHttpRule

    rule = EngineHttpRule(
        path="/a",
        header_matches=(
            EngineHeaderMatch("X-Env", "prod"),
            EngineHeaderMatch("X-Trace", "on", "ADD"),
        ),
    )
    policy = policy_from_engine([rule])
    assert not policy.decide(req(path="/a", x_env="dev")).allowed  # no action: must match
    verdict = policy.decide(req(path="/a", x_env="prod"))
    assert verdict.allowed
    assert verdict.actions == (HeaderAction(Mismatch.ADD, "X-Trace", "on"),)
