"""The Observer's metadata, filled from the cluster: the datapath side of the facts.

Every flow the node's Observer decodes names its pods (local endpoints by endpoint id,
every pod in the cluster by IP), their labels and workloads, identities' labels, and the
policy behind a rule id (a default deny names the policy that isolated the endpoint).
One writer (the agent's loop), many readers (the decoder's thread): each change replaces
whole values and bumps `generation`, so decoders drop what they cached.
"""

from __future__ import annotations

from septum.agent.facts import PodFacts, RuleFacts
from septum.dataplane.observe.fqdnnames import FqdnNames
from septum.dataplane.observe.metadata import (
    RESERVED_IDENTITY_LABELS,
    EndpointInfo,
    PolicyInfo,
    Workload,
)


def endpoint_info(pod: PodFacts, endpoint_id: int, cluster_name: str) -> EndpointInfo:
    return EndpointInfo(
        endpoint_id=endpoint_id,
        identity=pod.identity,
        namespace=pod.namespace,
        pod_name=pod.name,
        labels=pod.labels,
        workloads=tuple(Workload(name, kind) for name, kind in pod.workloads),
        ips=pod.ips,
        cluster_name=cluster_name,
    )


def policy_info(rule: RuleFacts) -> PolicyInfo:
    derived = f"k8s:io.cilium.k8s.policy.derived-from={rule.kind}"
    labels = [derived, f"k8s:io.cilium.k8s.policy.name={rule.name}"]
    if rule.namespace:
        labels.append(f"k8s:io.cilium.k8s.policy.namespace={rule.namespace}")
    return PolicyInfo(
        name=rule.name,
        namespace=rule.namespace,
        kind=rule.kind,
        labels=tuple(labels),
        revision=rule.revision,
        default_deny=rule.default_deny,
    )


class ClusterMetadata:
    """`septum.dataplane.observe.metadata.Metadata`, kept by the agent."""

    def __init__(self, cluster_name: str = "default") -> None:
        self.cluster_name = cluster_name
        self.generation = 0
        self._endpoints: dict[int, EndpointInfo] = {}
        self._by_ip: dict[str, EndpointInfo] = {}
        self._pods: dict[tuple[str, str], EndpointInfo] = {}
        self._identities: dict[int, tuple[str, ...]] = {}
        self._policies: dict[int, PolicyInfo] = {}
        # The DNS proxy's learned names (septum.dataplane.observe.fqdnnames), once it runs.
        self.fqdn_names: FqdnNames | None = None

    # ---- writer ------------------------------------------------------------------------

    def upsert_pod(self, pod: PodFacts, endpoint_id: int = 0) -> None:
        info = endpoint_info(pod, endpoint_id, self.cluster_name)
        key = (pod.namespace, pod.name)
        old = self._pods.get(key)
        if old == info:
            return
        self.remove_pod(pod.namespace, pod.name)
        self._pods[key] = info
        for ip in info.ips:
            self._by_ip[ip] = info
        if endpoint_id:
            self._endpoints[endpoint_id] = info
        if pod.identity and pod.labels:
            self._identities[pod.identity] = pod.labels
        self.generation += 1

    def remove_pod(self, namespace: str, name: str) -> None:
        info = self._pods.pop((namespace, name), None)
        if info is None:
            return
        for ip in info.ips:
            if self._by_ip.get(ip) is info:
                del self._by_ip[ip]
        if info.endpoint_id and self._endpoints.get(info.endpoint_id) is info:
            del self._endpoints[info.endpoint_id]
        self.generation += 1

    def add_rule(self, rule: RuleFacts) -> None:
        self._policies[rule.rule_id] = policy_info(rule)
        self.generation += 1

    def set_identity(self, identity: int, labels: tuple[str, ...]) -> None:
        if labels and self._identities.get(identity) != labels:
            self._identities[identity] = labels
            self.generation += 1

    def remove_identity(self, identity: int) -> None:
        """An identity no longer given out (a service address that stopped being one)."""
        if self._identities.pop(identity, None) is not None:
            self.generation += 1

    # ---- the Metadata protocol ---------------------------------------------------------

    def endpoint(self, endpoint_id: int) -> EndpointInfo | None:
        return self._endpoints.get(endpoint_id)

    def endpoint_by_ip(self, ip: str) -> EndpointInfo | None:
        return self._by_ip.get(ip)

    def identity_labels(self, identity: int) -> tuple[str, ...]:
        labels = self._identities.get(identity)
        if labels is not None:
            return labels
        return RESERVED_IDENTITY_LABELS.get(identity, ())

    def policy(self, rule_id: int) -> PolicyInfo | None:
        return self._policies.get(rule_id)

    def namespaces(self) -> list[str]:
        return sorted({namespace for namespace, _ in self._pods})
