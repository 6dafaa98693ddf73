"""`septum bench policy`: full compile and incremental updates of the policy engine at scale.

The synthetic cluster: 200 namespaces x 50 pods (10 apps of 5 replicas each),
1,000 policies of every kind (NetworkPolicy, SeptumNetworkPolicy,
SeptumClusterwideNetworkPolicy, admin/baseline ClusterNetworkPolicy,
AdminNetworkPolicy, BaselineAdminNetworkPolicy) mixing pod/namespace selectors,
CIDRs with excepts, entities, port ranges, named ports and L7 rules. The
generator is seeded, so every run measures the same input.
"""

from __future__ import annotations

import gc
import json
import random
import resource
import time
from typing import Any

import click

from septum.operator.engine.state import Engine

APPS = ("web", "api", "db", "cache", "queue", "worker", "auth", "search", "billing", "mail")
TIERS = ("front", "back", "data")
KINDS_MIX = (
    ("NetworkPolicy", 560),
    ("SeptumNetworkPolicy", 340),
    ("SeptumClusterwideNetworkPolicy", 60),
    ("ClusterNetworkPolicy", 30),
    ("AdminNetworkPolicy", 9),
    ("BaselineAdminNetworkPolicy", 1),
)


def _ns_name(i: int) -> str:
    return f"team-{i:03d}"


def make_namespaces(count: int) -> list[dict[str, Any]]:
    return [
        {
            "metadata": {
                "name": _ns_name(i),
                "labels": {"env": ("prod", "staging", "dev")[i % 3], "team": f"t{i % 20}"},
            }
        }
        for i in range(count)
    ]


def make_pod(ns: int, app: int, replica: int, version: str = "v1") -> dict[str, Any]:
    serial = (ns * 100 + app) * 10 + replica
    return {
        "metadata": {
            "name": f"{APPS[app]}-{replica}",
            "namespace": _ns_name(ns),
            "labels": {
                "app": APPS[app],
                "tier": TIERS[app % 3],
                "version": version,
                "pod-template-hash": f"h{serial}",
            },
        },
        "spec": {
            "serviceAccountName": APPS[app],
            "nodeName": f"node-{serial % 50}",
            "containers": [
                {"name": "main", "ports": [{"name": "http", "containerPort": 8080 + app % 2}]}
            ],
        },
        "status": {"podIP": f"10.{(serial >> 16) & 255}.{(serial >> 8) & 255}.{serial & 255}"},
    }


def make_pods(namespaces: int, apps: int, replicas: int) -> list[dict[str, Any]]:
    return [
        make_pod(n, a, r) for n in range(namespaces) for a in range(apps) for r in range(replicas)
    ]


def _cidr(rnd: random.Random) -> dict[str, Any]:
    base = rnd.choice(("192.0.2", "198.51.100", "203.0.113"))
    size = rnd.choice((24, 26, 27, 28))
    start = rnd.randrange(0, 256, 1 << (32 - size)) if size > 24 else 0
    item: dict[str, Any] = {"cidr": f"{base}.{start}/{size}"}
    if size <= 26 and rnd.random() < 0.5:
        item["except"] = [f"{base}.{start}/30"]
    return item


def _np(rnd: random.Random, i: int, namespaces: int) -> dict[str, Any]:
    ns = _ns_name(rnd.randrange(namespaces))
    target = {"matchLabels": {"app": rnd.choice(APPS)}}
    peers: list[dict[str, Any]] = [{"podSelector": {"matchLabels": {"app": rnd.choice(APPS)}}}]
    if rnd.random() < 0.2:
        peers.append({"namespaceSelector": {"matchLabels": {"team": f"t{rnd.randrange(20)}"}}})
    elif rnd.random() < 0.3:
        other = _ns_name(rnd.randrange(namespaces))
        peers.append(
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": other}},
                "podSelector": {"matchLabels": {"app": rnd.choice(APPS)}},
            }
        )
    if rnd.random() < 0.3:
        ip = _cidr(rnd)
        block = {"cidr": ip["cidr"], **({"except": ip["except"]} if "except" in ip else {})}
        peers.append({"ipBlock": block})
    ports = rnd.choice(
        (
            [{"port": 8080}],
            [{"port": "http"}],
            [{"port": 8000, "endPort": 8100}],
            [{"port": 53, "protocol": "UDP"}],
        )
    )
    spec: dict[str, Any] = {"podSelector": target, "ingress": [{"from": peers, "ports": ports}]}
    if rnd.random() < 0.3:
        dns = {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "team-000"}},
            "podSelector": {"matchLabels": {"app": "auth"}},
        }
        spec["egress"] = [
            {"to": [{"podSelector": {"matchLabels": {"tier": rnd.choice(TIERS)}}}]},
            {"to": [dns], "ports": [{"port": 53, "protocol": "UDP"}]},
        ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"np-{i}", "namespace": ns},
        "spec": spec,
    }


def _septum(rnd: random.Random, i: int, namespaces: int, clusterwide: bool) -> dict[str, Any]:
    selector = {"matchLabels": {"app": rnd.choice(APPS)}}
    if clusterwide:
        selector["matchLabels"]["io.kubernetes.pod.namespace"] = _ns_name(rnd.randrange(namespaces))
    ingress: dict[str, Any] = rnd.choice(
        (
            {"fromEndpoints": [{"matchLabels": {"tier": rnd.choice(TIERS)}}]},
            {"fromEndpoints": [{"matchLabels": {"app": rnd.choice(APPS)}}]},
            {"fromCIDRSet": [_cidr(rnd)]},
            {
                "fromEndpoints": [
                    {
                        "matchLabels": {
                            "k8s:io.kubernetes.pod.namespace": _ns_name(rnd.randrange(namespaces))
                        }
                    }
                ]
            },
        )
    )
    if rnd.random() < 0.05:
        ingress = {"fromEntities": ["cluster"]}
    ingress["toPorts"] = [
        {"ports": [{"port": str(rnd.choice((80, 8080, 443))), "protocol": "TCP"}]}
        | (
            {"rules": {"http": [{"method": "GET", "path": "/api/.*"}]}}
            if rnd.random() < 0.2
            else {}
        )
    ]
    spec: dict[str, Any] = {"endpointSelector": selector, "ingress": [ingress]}
    if rnd.random() < 0.3:
        spec["ingressDeny"] = [{"fromCIDRSet": [_cidr(rnd)]}]
    if rnd.random() < 0.3:
        spec["egress"] = [
            {"toEntities": ["world"], "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}]},
            {
                "toEndpoints": [
                    {"matchLabels": {"k8s:io.kubernetes.pod.namespace": "team-000", "app": "auth"}}
                ],
                "toPorts": [
                    {
                        "ports": [{"port": "53", "protocol": "UDP"}],
                        "rules": {"dns": [{"matchPattern": "*.example.com"}]},
                    }
                ],
            },
        ]
    if rnd.random() < 0.2:
        spec["egress"] = spec.get("egress", []) + [
            {"toEndpoints": [{}], "icmps": [{"fields": [{"type": 8}]}]}
        ]
    meta: dict[str, Any] = {"name": f"sp-{i}"}
    if not clusterwide:
        meta["namespace"] = _ns_name(rnd.randrange(namespaces))
    kind = "SeptumClusterwideNetworkPolicy" if clusterwide else "SeptumNetworkPolicy"
    return {"apiVersion": "septum.io/v1alpha1", "kind": kind, "metadata": meta, "spec": spec}


def _tier_peer(rnd: random.Random, namespaces: int) -> dict[str, Any]:
    if rnd.random() < 0.6:
        names = sorted({_ns_name(rnd.randrange(namespaces)) for _ in range(2)})
        key = "kubernetes.io/metadata.name"
        return {
            "namespaces": {"matchExpressions": [{"key": key, "operator": "In", "values": names}]}
        }
    if rnd.random() < 0.5:
        return {"namespaces": {"matchLabels": {"team": f"t{rnd.randrange(20)}"}}}
    return {
        "pods": {
            "namespaceSelector": {"matchLabels": {"env": "prod"}},
            "podSelector": {"matchLabels": {"app": rnd.choice(APPS)}},
        }
    }


def _cnp(rnd: random.Random, i: int, namespaces: int, tier: str) -> dict[str, Any]:
    actions = ("Accept", "Deny", "Pass") if tier == "Admin" else ("Accept", "Deny")
    rules = []
    for r in range(rnd.randint(1, 3)):
        rule: dict[str, Any] = {
            "name": f"r{r}",
            "action": rnd.choice(actions),
            "from": [_tier_peer(rnd, namespaces)],
        }
        if rnd.random() < 0.5:
            rule["protocols"] = [
                {"tcp": {"destinationPort": {"number": rnd.choice((22, 80, 8080))}}}
            ]
        rules.append(rule)
    spec: dict[str, Any] = {
        "tier": tier,
        "priority": i,
        "subject": {"namespaces": {"matchLabels": {"team": f"t{rnd.randrange(20)}"}}},
        "ingress": rules,
    }
    if rnd.random() < 0.5:
        spec["egress"] = [
            {
                "name": "out",
                "action": rnd.choice(actions),
                "to": [{"networks": [_cidr(rnd)["cidr"]]}],
            }
        ]
    return {
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": f"cnp-{i}"},
        "spec": spec,
    }


def _anp(rnd: random.Random, i: int, kind: str) -> dict[str, Any]:
    actions = ("Allow", "Deny", "Pass") if kind == "AdminNetworkPolicy" else ("Allow", "Deny")
    spec: dict[str, Any] = {
        "subject": {"namespaces": {"matchLabels": {"team": f"t{rnd.randrange(20)}"}}},
        "ingress": [
            {
                "name": "in",
                "action": rnd.choice(actions),
                "from": [{"namespaces": {"matchLabels": {"team": f"t{rnd.randrange(20)}"}}}],
                "ports": [{"portNumber": {"protocol": "TCP", "port": 22}}],
            }
        ],
    }
    name = f"anp-{i}"
    if kind == "AdminNetworkPolicy":
        spec["priority"] = 100 + i
    else:
        name = "default"
    return {
        "apiVersion": "policy.networking.k8s.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }


def make_policies(count: int, namespaces: int, seed: int = 7) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    total = sum(n for _, n in KINDS_MIX)
    policies: list[dict[str, Any]] = []
    for kind, share in KINDS_MIX:
        n = max(1, round(share * count / total)) if kind != "BaselineAdminNetworkPolicy" else 1
        for i in range(n):
            if kind == "NetworkPolicy":
                policies.append(_np(rnd, i, namespaces))
            elif kind == "SeptumNetworkPolicy":
                policies.append(_septum(rnd, i, namespaces, clusterwide=False))
            elif kind == "SeptumClusterwideNetworkPolicy":
                policies.append(_septum(rnd, 10_000 + i, namespaces, clusterwide=True))
            elif kind == "ClusterNetworkPolicy":
                policies.append(_cnp(rnd, i, namespaces, "Admin" if i % 4 else "Baseline"))
            else:
                policies.append(_anp(rnd, i, kind))
    return policies[:count] if len(policies) > count else policies


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else 0.0


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run(
    namespaces: int, pods_per_app: int, apps: int, policy_count: int, updates: int, seed: int
) -> dict[str, Any]:
    ns_objs = make_namespaces(namespaces)
    pod_objs = make_pods(namespaces, apps, pods_per_app)
    policies = make_policies(policy_count, namespaces, seed)
    engine = Engine()
    gc.collect()
    started = time.perf_counter()
    # As the operator does after its initial sync (see Engine.load).
    result = engine.load(namespaces=ns_objs, pods=pod_objs, policies=policies, freeze_gc=True)
    full_compile_s = time.perf_counter() - started
    entries = sum(len(p.ingress.entries) + len(p.egress.entries) for p in engine.compiled.values())
    identities = len(engine.identity_pods)
    rnd = random.Random(seed + 1)
    timings: list[float] = []
    # CPU time of this thread per update too: unlike wall time, other work on the
    # shared machine does not inflate it, so it shows what the engine itself costs.
    cpu_timings: list[float] = []
    extra = 0
    live_extra: list[tuple[str, str]] = []
    for step in range(updates):
        choice = step % 4
        ns, app = rnd.randrange(namespaces), rnd.randrange(apps)
        t0 = time.perf_counter()
        c0 = time.thread_time()
        if choice == 0:  # a new replica of an existing deployment
            extra += 1
            obj = make_pod(ns, app, pods_per_app + extra)
            obj["metadata"]["name"] = f"{APPS[app]}-x{extra}"
            obj["status"]["podIP"] = f"10.200.{(extra >> 8) & 255}.{extra & 255}"
            engine.upsert_pod(obj)
            live_extra.append((obj["metadata"]["namespace"], obj["metadata"]["name"]))
        elif choice == 1 and live_extra:  # a replica goes away
            ns_name, name = live_extra.pop(rnd.randrange(len(live_extra)))
            engine.delete_pod(ns_name, name)
        elif choice == 2:  # a rollout: one pod changes its version label (new identity)
            replica = rnd.randrange(pods_per_app)
            engine.upsert_pod(make_pod(ns, app, replica, version=f"v{2 + step % 3}"))
        else:  # and back
            replica = rnd.randrange(pods_per_app)
            engine.upsert_pod(make_pod(ns, app, replica, version="v1"))
        timings.append(time.perf_counter() - t0)
        cpu_timings.append(time.thread_time() - c0)
    p99 = _percentile(timings, 0.99)
    return {
        "pods": len(pod_objs),
        "policies": len(policies) - len(result.rejected),
        "identities": identities,
        "entries": entries,
        "full_compile_s": round(full_compile_s, 3),
        "incremental_p99_ms": round(p99 * 1000, 3),
        "incremental_p50_ms": round(_percentile(timings, 0.5) * 1000, 3),
        "incremental_max_ms": round(max(timings, default=0.0) * 1000, 3),
        "incremental_p99_cpu_ms": round(_percentile(cpu_timings, 0.99) * 1000, 3),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
    }


@click.command(name="policy")
@click.option(
    "--namespaces", default=200, show_default=True, help="Namespaces in the synthetic cluster."
)
@click.option("--apps", default=10, show_default=True, help="Deployments per namespace.")
@click.option("--replicas", default=5, show_default=True, help="Pods per deployment.")
@click.option(
    "--policies", "policy_count", default=1000, show_default=True, help="Policies of all kinds."
)
@click.option(
    "--updates", default=1000, show_default=True, help="Incremental pod adds/removes/label changes."
)
@click.option("--seed", default=7, show_default=True, help="Seed of the generator.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def command(
    namespaces: int,
    apps: int,
    replicas: int,
    policy_count: int,
    updates: int,
    seed: int,
    as_json: bool,
) -> None:
    """Policy engine: full compile, incremental p99 and peak RSS on a synthetic cluster."""
    figures = run(namespaces, replicas, apps, policy_count, updates, seed)
    if as_json:
        click.echo(json.dumps(figures))
        return
    from rich.console import Console
    from rich.table import Table

    targets = {
        "full_compile_s": "<= 1 s",
        "incremental_p99_ms": "<= 10 ms",
        "peak_rss_mb": "<= 500 MB",
    }
    table = Table(title="septum bench policy")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("target")
    for key, value in figures.items():
        table.add_row(key, str(value), targets.get(key, ""))
    Console().print(table)
