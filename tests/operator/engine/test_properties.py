"""Property-based tests of the engine's semantics (hypothesis, derandomised for CI)."""

from __future__ import annotations

import itertools
import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from septum.operator.engine.cluster import PodKey
from septum.operator.engine.explain import EndpointRef, evaluate, explain, resolve_endpoint
from septum.operator.engine.rules import Direction
from septum.operator.engine.state import Engine, apply_diff

PROPERTY = settings(
    max_examples=60,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
NAMESPACES = ("n1", "n2", "n3")
APPS = ("web", "db", "api")
PROBES = (("TCP", 80), ("TCP", 443), ("UDP", 53), ("SCTP", 80), ("ICMP", 8), ("TCP", 8080))
OUTSIDE = ("192.0.2.7", "198.51.100.9", "2001:db8::5")

app = st.sampled_from(APPS)
ns_name = st.sampled_from(NAMESPACES)


@st.composite
def pods(draw: Any) -> list[dict[str, Any]]:
    count = draw(st.integers(2, 6))
    result = []
    for i in range(count):
        labels = {"app": draw(app)}
        if draw(st.booleans()):
            labels["tier"] = draw(st.sampled_from(("front", "back")))
        result.append(
            {
                "metadata": {"name": f"p{i}", "namespace": draw(ns_name), "labels": labels},
                "spec": {
                    "containers": [
                        {
                            "ports": [
                                {"name": "http", "containerPort": draw(st.sampled_from((80, 8080)))}
                            ]
                        }
                    ]
                },
                "status": {"podIP": f"10.1.0.{i + 1}"},
            }
        )
    return result


def namespaces(env_label: dict[str, str] | None = None) -> list[dict[str, Any]]:
    return [
        {"metadata": {"name": n, "labels": {"env": "prod" if n != "n3" else "dev"}}}
        for n in NAMESPACES
    ]


port_item = st.sampled_from(
    [
        {"port": 80},
        {"port": 443, "protocol": "TCP"},
        {"port": 53, "protocol": "UDP"},
        {"port": "http"},
        {"port": 80, "endPort": 90},
        {"protocol": "SCTP"},
    ]
)
np_peer = st.one_of(
    st.builds(lambda a: {"podSelector": {"matchLabels": {"app": a}}}, app),
    st.just({"namespaceSelector": {"matchLabels": {"env": "dev"}}}),
    st.builds(lambda a: {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": a}}}, app),
    st.just({"ipBlock": {"cidr": "192.0.2.0/24", "except": ["192.0.2.0/28"]}}),
)


@st.composite
def np_rule(draw: Any, direction: str) -> dict[str, Any]:
    rule: dict[str, Any] = {}
    peers = draw(st.lists(np_peer, max_size=2))
    if peers:
        rule["from" if direction == "ingress" else "to"] = peers
    ports = draw(st.lists(port_item, max_size=2))
    if ports:
        rule["ports"] = ports
    return rule


@st.composite
def network_policy(draw: Any, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "podSelector": draw(st.sampled_from([{}, {"matchLabels": {"app": draw(app)}}]))
    }
    types = draw(st.sampled_from([["Ingress"], ["Egress"], ["Ingress", "Egress"]]))
    spec["policyTypes"] = types
    for direction in ("ingress", "egress"):
        if direction.capitalize() in types:
            spec[direction] = draw(st.lists(np_rule(direction), max_size=2))
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": draw(ns_name)},
        "spec": spec,
    }


cilium_peer = st.sampled_from(
    [
        {"fromEndpoints": [{"matchLabels": {"app": "web"}}]},
        {"fromEndpoints": [{"matchLabels": {"k8s:io.kubernetes.pod.namespace": "n2"}}]},
        {"fromEntities": ["world"]},
        {"fromEntities": ["cluster"]},
        {"fromCIDRSet": [{"cidr": "198.51.100.0/24", "except": ["198.51.100.8/29"]}]},
        {"fromCIDR": ["2001:db8::/64"]},
        {},
    ]
)
cilium_ports = st.sampled_from(
    [
        None,
        [{"ports": [{"port": "80", "protocol": "TCP"}]}],
        [{"ports": [{"port": "53", "protocol": "ANY"}]}],
        [{"ports": [{"port": "http"}]}],
    ]
)


def _to_egress(rule: dict[str, Any]) -> dict[str, Any]:
    return {k.replace("from", "to", 1): v for k, v in rule.items()}


@st.composite
def septum_rule(draw: Any, direction: str, deny: bool) -> dict[str, Any]:
    rule = dict(draw(cilium_peer))
    ports = draw(cilium_ports)
    if ports:
        rule["toPorts"] = ports
    elif not rule or draw(st.booleans()):
        rule["icmps"] = [{"fields": [{"type": 8}]}]
    return rule if direction == "ingress" else _to_egress(rule)


@st.composite
def septum_policy(
    draw: Any, name: str, deny: bool | None = None, default_deny: bool = True
) -> dict[str, Any]:
    clusterwide = draw(st.booleans())
    spec: dict[str, Any] = {
        "endpointSelector": draw(st.sampled_from([{}, {"matchLabels": {"app": draw(app)}}]))
    }
    for direction in ("ingress", "egress"):
        if draw(st.booleans()):
            is_deny = draw(st.booleans()) if deny is None else deny
            key = direction + ("Deny" if is_deny else "")
            spec[key] = draw(st.lists(septum_rule(direction, is_deny), min_size=1, max_size=2))
    if not default_deny:
        spec["enableDefaultDeny"] = {"ingress": False, "egress": False}
    meta: dict[str, Any] = {"name": name}
    if not clusterwide:
        meta["namespace"] = draw(ns_name)
    return {
        "apiVersion": "septum.io/v1alpha1",
        "kind": "SeptumClusterwideNetworkPolicy" if clusterwide else "SeptumNetworkPolicy",
        "metadata": meta,
        "spec": spec,
    }


tier_peer = st.sampled_from(
    [
        {"namespaces": {"matchLabels": {"env": "dev"}}},
        {"namespaces": {}},
        {"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "db"}}}},
    ]
)
tier_protocols = st.sampled_from(
    [
        None,
        [{"tcp": {"destinationPort": {"number": 80}}}],
        [{"udp": {}}],
        [{"tcp": {"destinationPort": {"range": {"start": 80, "end": 443}}}}],
    ]
)


@st.composite
def tier_policy(draw: Any, name: str, tier: str, actions: tuple[str, ...]) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "tier": tier,
        "priority": draw(st.integers(0, 20)),
        "subject": draw(
            st.sampled_from([{"namespaces": {}}, {"namespaces": {"matchLabels": {"env": "prod"}}}])
        ),
    }
    for direction, peers_key in (("ingress", "from"), ("egress", "to")):
        rules = []
        for i in range(draw(st.integers(0, 2))):
            rule = {
                "name": f"r{i}",
                "action": draw(st.sampled_from(actions)),
                peers_key: [draw(tier_peer)],
            }
            protocols = draw(tier_protocols)
            if protocols:
                rule["protocols"] = protocols
            rules.append(rule)
        if rules:
            spec[direction] = rules
    return {
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


@st.composite
def policy_sets(draw: Any) -> list[dict[str, Any]]:
    found = []
    for i in range(draw(st.integers(0, 2))):
        found.append(draw(network_policy(f"np{i}")))
    for i in range(draw(st.integers(0, 2))):
        found.append(draw(septum_policy(f"sp{i}")))
    for i in range(draw(st.integers(0, 1))):
        found.append(draw(tier_policy(f"adm{i}", "Admin", ("Accept", "Deny", "Pass"))))
    for i in range(draw(st.integers(0, 1))):
        found.append(draw(tier_policy(f"base{i}", "Baseline", ("Accept", "Deny"))))
    return found


def build(pod_objs: list[dict[str, Any]], policies: list[dict[str, Any]]) -> Engine:
    engine = Engine()
    result = engine.load(namespaces=namespaces(), pods=pod_objs, policies=policies)
    assert not result.rejected, result.rejected
    return engine


def endpoints(engine: Engine) -> list[str]:
    return [str(k) for k in engine.endpoints()]


def reach(engine: Engine) -> dict[tuple[str, str, str, int], bool]:
    names = endpoints(engine)
    table = {}
    for src, dst in itertools.product(names + list(OUTSIDE), names + list(OUTSIDE)):
        if src in OUTSIDE and dst in OUTSIDE:
            continue
        for proto, port in PROBES:
            table[(src, dst, proto, port)] = explain(engine, src, dst, port, proto).allowed
    return table


@PROPERTY
@given(pods(), policy_sets())
def test_explain_agrees_with_compiled_entries(
    pod_objs: list[dict[str, Any]], policies: list[dict[str, Any]]
) -> None:
    engine = build(pod_objs, policies)
    refs: list[EndpointRef] = [resolve_endpoint(engine, name) for name in endpoints(engine)]
    refs += [resolve_endpoint(engine, ip) for ip in OUTSIDE]
    from septum.operator.engine.ports import parse_protocol_name

    for subject in refs:
        if not subject.managed:
            continue
        key = PodKey(*str(subject.description).split(" ")[0].split("/"))
        policy = engine.endpoint_policy(key)
        for peer in refs:
            assert peer.identity is not None
            for proto_name, port in PROBES:
                proto = parse_protocol_name(proto_name)
                for direction, compiled in (
                    (Direction.INGRESS, policy.ingress),
                    (Direction.EGRESS, policy.egress),
                ):
                    verdict = evaluate(engine, subject, peer, direction, proto, port)
                    entry = compiled.lookup(peer.identity, proto, port)
                    if entry is None:
                        assert verdict.allowed, (
                            f"{subject.description} {direction} {peer.description}: "
                            f"{verdict.reason}"
                        )
                        continue
                    assert (entry.verdict.value == "allow") == verdict.allowed, (
                        f"{subject.description} {direction.value} {peer.description} "
                        f"{proto_name}/{port}: "
                        f"entry {entry} vs {verdict.reason}"
                    )
                    assert entry.rule_id == verdict.rule_id, (entry, verdict.reason)
                    assert entry.l7 == verdict.l7


@PROPERTY
@given(pods(), policy_sets(), st.data())
def test_an_extra_allow_never_removes_reachability(
    pod_objs: Any, policies: Any, data: st.DataObject
) -> None:
    before = reach(build(pod_objs, policies))
    extra = data.draw(
        st.one_of(
            septum_policy("extra-allow", deny=False, default_deny=False),
            tier_policy("extra-admin-accept", "Admin", ("Accept",)),
            tier_policy("extra-baseline-accept", "Baseline", ("Accept",)),
        )
    )
    after = reach(build(pod_objs, [*policies, extra]))
    lost = [cell for cell, allowed in before.items() if allowed and not after[cell]]
    assert not lost, lost[:5]


@PROPERTY
@given(pods(), policy_sets(), st.data())
def test_an_extra_deny_never_adds_reachability(
    pod_objs: Any, policies: Any, data: st.DataObject
) -> None:
    before = reach(build(pod_objs, policies))
    extra = data.draw(
        st.one_of(
            septum_policy("extra-deny", deny=True),
            tier_policy("extra-admin-deny", "Admin", ("Deny",)),
            tier_policy("extra-baseline-deny", "Baseline", ("Deny",)),
        )
    )
    after = reach(build(pod_objs, [*policies, extra]))
    gained = [cell for cell, allowed in after.items() if allowed and not before[cell]]
    assert not gained, gained[:5]


@PROPERTY
@given(pods(), policy_sets())
def test_an_endpoint_selected_by_no_policy_is_reachable_by_all(
    pod_objs: Any, policies: Any
) -> None:
    engine = build(pod_objs, policies)
    table = reach(engine)
    for key in engine.endpoints():
        labels = engine.pod_labels(key)
        selected = any(
            part.subject is not None
            and part.subject.matches(labels)
            and any(r.direction is Direction.INGRESS for r in part.rules)
            | (Direction.INGRESS in part.isolates)
            for policy in engine.ordered_policies()
            for part in policy.parts
        )
        if selected:
            continue
        assert not engine.endpoint_policy(key).ingress.enforced
        for src, dst, proto, port in table:
            if dst == str(key):
                ingress = explain(engine, src, dst, port, proto).ingress
                assert ingress is not None and ingress.allowed


@PROPERTY
@given(pods(), policy_sets(), st.data())
def test_pass_never_allows_what_lower_tiers_deny(
    pod_objs: Any, policies: Any, data: st.DataObject
) -> None:
    lower = [p for p in policies if p["spec"].get("tier") != "Admin"]
    passing = data.draw(tier_policy("only-pass", "Admin", ("Pass",)))
    assert reach(build(pod_objs, lower)) == reach(build(pod_objs, [*lower, passing]))


@PROPERTY
@given(pods(), policy_sets(), st.randoms(use_true_random=False))
def test_identities_are_stable_under_reordering(
    pod_objs: Any, policies: Any, rnd: random.Random
) -> None:
    first = build(pod_objs, policies)
    shuffled_pods = list(pod_objs)
    shuffled_policies = list(policies)
    rnd.shuffle(shuffled_pods)
    rnd.shuffle(shuffled_policies)
    second = build(shuffled_pods, shuffled_policies)
    assert first.pod_identity == second.pod_identity
    assert first.ipcache() == second.ipcache()
    for key in first.endpoints():
        a, b = first.endpoint_policy(key), second.endpoint_policy(key)
        strip = lambda entries: {e._replace(rule_id=0) for e in entries}  # noqa: E731
        assert strip(a.entries()) == strip(b.entries())


operation = st.one_of(
    st.tuples(st.just("pod"), st.integers(0, 7), ns_name, app, st.sampled_from(("v1", "v2", "v3"))),
    st.tuples(st.just("delete-pod"), st.integers(0, 7)),
    st.tuples(st.just("ns"), ns_name, st.sampled_from(("prod", "dev", "test"))),
    st.tuples(st.just("policy"), st.integers(0, 3)),
    st.tuples(st.just("delete-policy"), st.integers(0, 3)),
)


@PROPERTY
@given(
    pods(),
    policy_sets(),
    st.lists(policy_sets(), min_size=1, max_size=1),
    st.lists(operation, max_size=12),
)
def test_incremental_diffs_equal_a_full_recompute(
    pod_objs: Any, policies: Any, spare: Any, operations: list[tuple[Any, ...]]
) -> None:
    engine = build(pod_objs, policies)
    view = {key: engine.endpoint_policy(key).entries() for key in engine.endpoints()}
    candidates = [*policies, *spare[0]]
    pod_names = {int(p["metadata"]["name"][1:]): p["metadata"]["namespace"] for p in pod_objs}
    for op in operations:
        if op[0] == "pod":
            _, index, namespace, app_label, version = op
            old_ns = pod_names.get(index)
            if old_ns is not None and old_ns != namespace:
                apply_diff(view, engine.delete_pod(old_ns, f"p{index}"))
            pod_names[index] = namespace
            obj = {
                "metadata": {
                    "name": f"p{index}",
                    "namespace": namespace,
                    # `version` is named by no selector: new versions get twin identities.
                    "labels": {"app": app_label, "version": version},
                },
                "spec": {"containers": [{"ports": [{"name": "http", "containerPort": 80}]}]},
                "status": {"podIP": f"10.1.0.{index + 1}"},
            }
            apply_diff(view, engine.upsert_pod(obj))
        elif op[0] == "delete-pod":
            namespace = pod_names.pop(op[1], None)
            if namespace is not None:
                apply_diff(view, engine.delete_pod(namespace, f"p{op[1]}"))
        elif op[0] == "ns":
            apply_diff(
                view,
                engine.upsert_namespace({"metadata": {"name": op[1], "labels": {"env": op[2]}}}),
            )
        elif op[0] == "policy" and candidates:
            apply_diff(view, engine.upsert_policy(candidates[op[1] % len(candidates)]))
        elif op[0] == "delete-policy" and candidates:
            from septum.operator.engine.parse import policy_key

            apply_diff(view, engine.delete_policy(policy_key(candidates[op[1] % len(candidates)])))
        fresh = engine.recompute_all()
        expected = {}
        for key in engine.endpoints():
            policy = fresh[engine.pod_identity[key]]
            expected[key] = policy.entries()
        assert view == expected
        # The engine's own (possibly lazily built) entries agree too.
        for number, policy in fresh.items():
            assert engine.compiled[number].entries() == policy.entries()
