"""The engine: cluster objects and policies in, per-endpoint entries and diffs out.

`Engine` is the facade and the store: it holds the cluster objects, policies and pod
identities, and turns each update into marks of work for the parts that do the rest:

- selectorcache.py: which identities each selector selects, kept current;
- resolution.py: a rule's peers and named ports, resolved for one subject;
- identitycompiler.py: each pod identity's rules compiled to entries (memoised);
- flush.py: the marked work done, and per-endpoint entry diffs reported;
- hosts.py: the host endpoints (one per node);
- twins.py: new identities every selector treats like an existing one;
- podclasses.py: which class (label set) each pod belongs to (podclass.py: the rules).

Design for scale: entries are computed per identity (all pods of an identity share
them), and an update marks only the identities whose inputs changed.

What is left here is the public API and the store's bookkeeping: every update's effect on
identities, selections and named ports.
"""

from __future__ import annotations

import gc
import ipaddress
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from septum.operator.engine.changes import ChangeSet, LoadResult
from septum.operator.engine.cluster import (
    NAMESPACE_NAME_LABEL,
    EndpointKey,
    HostKey,
    IPAddress,
    Namespace,
    Node,
    Pod,
    PodKey,
    host_network,
    parse_namespace,
    parse_node,
    parse_pod,
)
from septum.operator.engine.entries import (
    UNENFORCED_POLICY,
    DirectionPolicy,
    EndpointPolicy,
    EntryDiff,
    IdentityPolicy,
)
from septum.operator.engine.errors import EngineNotEmpty, InvalidPolicy, PolicyError
from septum.operator.engine.flush import AuditModes, PendingWork, Touched, apply_diff, flush
from septum.operator.engine.fqdn import canonical_name, selectors_match
from septum.operator.engine.hosts import HostEndpoints, node_labels
from septum.operator.engine.identities import WORLD_V4, WORLD_V6, IdentityTable
from septum.operator.engine.identitycompiler import DROP, IdentityCompiler
from septum.operator.engine.labels import LabelFilter, LabelSet, pod_label_set
from septum.operator.engine.parse import parse_policy, policy_key
from septum.operator.engine.podclass import class_labels, same_blocks
from septum.operator.engine.podclasses import PodClasses
from septum.operator.engine.registry import RuleRegistry
from septum.operator.engine.resolution import NamedPortMap, RuleResolver
from septum.operator.engine.rules import (
    IPNetwork,
    Kind,
    Peers,
    Policy,
    PolicyKey,
    PolicyPart,
    cidr_prefixes,
    fqdn_selectors,
)
from septum.operator.engine.selectorcache import Matcher, SelectorCache
from septum.operator.engine.selectors import Selector
from septum.operator.engine.twins import TwinIndex
from septum.operator.identity import IdentityAllocator, InMemoryAllocator
from septum.wellknown.reserved import (
    CLUSTER_IDENTITY_MAX,
    CLUSTER_IDENTITY_MIN,
    LOCAL_IDENTITY_MAX,
    LOCAL_IDENTITY_MIN,
    ReservedIdentity,
)


class Engine:
    def __init__(
        self,
        *,
        label_filter: LabelFilter | None = None,
        cluster_name: str = "default",
        pod_allocator: IdentityAllocator | None = None,
        cidr_allocator: IdentityAllocator | None = None,
        local_node: str = "",
        kube_apiserver_ips: Iterable[str] = (),
    ) -> None:
        self.label_filter = label_filter or LabelFilter()
        self.cluster_name = cluster_name
        self.local_node = local_node
        self.kube_apiserver_ips = tuple(ipaddress.ip_address(ip) for ip in kube_apiserver_ips)
        self.identities = IdentityTable(
            pod_allocator or InMemoryAllocator(CLUSTER_IDENTITY_MIN, CLUSTER_IDENTITY_MAX),
            cidr_allocator or InMemoryAllocator(LOCAL_IDENTITY_MIN, LOCAL_IDENTITY_MAX),
        )
        self.registry = RuleRegistry()
        self.namespaces: dict[str, Namespace] = {}
        self.pods: dict[PodKey, Pod] = {}
        self.nodes: dict[str, Node] = {}
        self.policies: dict[PolicyKey, Policy] = {}
        self.rejected: dict[PolicyKey, InvalidPolicy] = {}
        self._ordered: list[Policy] = []
        self._pod_labels: dict[PodKey, LabelSet] = {}  # the label set of the pod's identity
        self._classes = PodClasses(self.pods, self.label_filter)
        self.pod_identity: dict[PodKey, int] = {}
        self.identity_pods: dict[int, set[PodKey]] = {}
        self.named_ports: dict[int, NamedPortMap] = {}
        self.selectors = SelectorCache(self.identities, self)
        self._twins = TwinIndex(self.selectors, self.identities)
        self._resolver = RuleResolver(
            self.registry, self.selectors, self.named_ports, self.identity_pods
        )
        self._compiler = IdentityCompiler(
            self.registry, self.selectors, self._resolver, self.ordered_policies, self.identity_pods
        )
        self.compiled = self._compiler.compiled  # identity -> its entries (the same dict)
        self._cidr_refs: Counter[IPNetwork] = Counter()
        # toFQDNs: every address DNS answers taught (host prefix -> names), and the part
        # of it some toFQDNs selector selects (those addresses hold CIDR identities).
        self._fqdn_learned: dict[IPNetwork, frozenset[str]] = {}
        self._fqdn_selected: dict[IPNetwork, frozenset[str]] = {}
        self._work = PendingWork()
        self._audits = AuditModes()
        self._hosts = HostEndpoints(
            self.nodes, self.ordered_policies, self.registry, self._resolver, self._compiler
        )
        self.host_compiled = self._hosts.compiled  # node -> host endpoint entries (the same dict)

    # ---- queries -------------------------------------------------------

    def endpoint_policy(self, pod: EndpointKey) -> EndpointPolicy:
        if isinstance(pod, HostKey):
            if pod.node not in self.nodes:
                raise KeyError(pod)
            host = self.host_compiled.get(pod.node, UNENFORCED_POLICY)
            return EndpointPolicy(pod, int(ReservedIdentity.HOST), False, host.ingress, host.egress)
        identity = self.pod_identity[pod]
        compiled = self.compiled.get(identity, UNENFORCED_POLICY)
        audit = self._audit(pod)
        ingress, egress = compiled.ingress, compiled.egress
        if audit:
            ingress = DirectionPolicy(
                ingress.enforced, tuple(e._replace(audit=True) for e in ingress.entries)
            )
            egress = DirectionPolicy(
                egress.enforced, tuple(e._replace(audit=True) for e in egress.entries)
            )
        return EndpointPolicy(pod, identity, audit, ingress, egress)

    def endpoints(self) -> list[PodKey]:
        return sorted(self.pod_identity)

    def host_endpoints(self) -> list[HostKey]:
        """One host endpoint per known node (selected only by nodeSelector policies)."""
        return [HostKey(name) for name in sorted(self.nodes)]

    def node_labels(self, node: str) -> LabelSet:
        return node_labels(self.nodes[node])

    def host_parts(self, node: str) -> list[tuple[Policy, PolicyPart]]:
        """The (policy, part) pairs whose nodeSelector selects `node`'s host endpoint."""
        return self._hosts.parts(node)

    def recompute_hosts(self) -> dict[str, IdentityPolicy]:
        """Every host endpoint's entries computed from scratch (no memo): for tests."""
        with self._compiler.from_scratch():
            return {name: self._hosts.compile(name) for name in sorted(self.nodes)}

    def pod_labels(self, pod: PodKey) -> LabelSet:
        return self._pod_labels[pod]

    def ordered_policies(self) -> list[Policy]:
        return self._ordered

    def node_matches(self, selector: Selector) -> bool:
        return any(selector.matches(node_labels(node)) for node in self.nodes.values())

    def node_addresses(self, name: str) -> Sequence[IPAddress]:
        """The addresses node identity `name` stands for here: `host` the engine's own node's
        (none without a local node), `remote-node` every other node's (matching.NodeView)."""
        if name == ReservedIdentity.HOST.label:
            local = self.nodes.get(self.local_node)
            return local.ips if local is not None else ()
        return [ip for n in self.nodes.values() if n.name != self.local_node for ip in n.ips]

    def fqdn_names(self, network: IPNetwork) -> frozenset[str]:
        """The learned names of an address toFQDNs selects (matching.NodeView)."""
        return self._fqdn_selected.get(network, frozenset())

    def ipcache(self) -> dict[IPNetwork, int]:
        """Prefix -> identity for the datapath's LPM map (v4 and v6)."""
        table: dict[IPNetwork, int] = {
            WORLD_V4: int(ReservedIdentity.WORLD_IPV4),
            WORLD_V6: int(ReservedIdentity.WORLD_IPV6),
        }
        table.update({network: number for network, number in self.identities.cidr_ids.items()})
        for ip in self.kube_apiserver_ips:
            table[ipaddress.ip_network(ip)] = int(ReservedIdentity.KUBE_APISERVER)
        for node in self.nodes.values():
            number = self._node_identity(node.name)
            for ip in node.ips:
                table[ipaddress.ip_network(ip)] = int(number)
        # Pod addresses go last: a pod's /32 (/128) always wins over any CIDR.
        for key, pod_id in self.pod_identity.items():
            for ip in self.pods[key].ips:
                table[host_network(ip)] = pod_id
        return table

    def _node_identity(self, node: str) -> ReservedIdentity:
        """A node's addresses as peers: the host on this engine's own node, else remote-node."""
        return ReservedIdentity.HOST if node == self.local_node else ReservedIdentity.REMOTE_NODE

    def recompute_all(self) -> dict[int, IdentityPolicy]:
        """Every identity's entries computed from scratch (no memo): the reference for tests."""
        with self._compiler.from_scratch():
            return {n: self._compiler.compile_identity(n, None) for n in sorted(self.identity_pods)}

    # ---- cluster objects ----------------------------------------------

    def upsert_namespace(self, obj: Mapping[str, Any]) -> ChangeSet:
        namespace = parse_namespace(obj)
        old = self.namespaces.get(namespace.name)
        self.namespaces[namespace.name] = namespace
        touched: Touched = {}
        if old is None or old.labels != namespace.labels or old.audit != namespace.audit:
            for key, pod in self.pods.items():
                if key.namespace == namespace.name:
                    self._set_pod(pod, touched)
        return self._flush(touched)

    def delete_namespace(self, name: str) -> ChangeSet:
        touched: Touched = {}
        for key in [k for k in self.pods if k.namespace == name]:
            self._drop_pod(key, touched)
        self.namespaces.pop(name, None)
        return self._flush(touched)

    def upsert_pod(self, obj: Mapping[str, Any]) -> ChangeSet:
        pod = parse_pod(obj)
        touched: Touched = {}
        self._set_pod(pod, touched)
        return self._flush(touched)

    def delete_pod(self, namespace: str, name: str) -> ChangeSet:
        touched: Touched = {}
        self._drop_pod(PodKey(namespace, name), touched)
        return self._flush(touched)

    def upsert_node(self, obj: Mapping[str, Any]) -> ChangeSet:
        node = parse_node(obj)
        old = self.nodes.get(node.name)
        self.nodes[node.name] = node
        for ip in old.ips if old else ():
            self._work.changes.ipcache_deletes.add(ipaddress.ip_network(ip))
        number = int(self._node_identity(node.name))
        for ip in node.ips:  # an address both old and new stays: flush drops the delete
            self._work.changes.ipcache_upserts[ipaddress.ip_network(ip)] = number
        self._node_peers_changed()
        return self._flush({})

    def delete_node(self, name: str) -> ChangeSet:
        old = self.nodes.pop(name, None)
        for ip in old.ips if old else ():
            self._work.changes.ipcache_deletes.add(ipaddress.ip_network(ip))
        self._node_peers_changed()
        return self._flush({})

    # ---- toFQDNs -------------------------------------------------------

    def set_fqdn_addresses(self, learned: Mapping[IPAddress, Iterable[str]]) -> ChangeSet:
        """The addresses DNS answers taught the node, each with the names it answered.

        Replaces the previous set. Addresses a toFQDNs selector selects get a CIDR
        identity (a host prefix in the ipcache) and the selecting rules allow them; the
        returned changes are what the datapath needs before the answer is released.
        """
        self._fqdn_learned = {
            host_network(ip): frozenset(canonical_name(n) for n in names)
            for ip, names in learned.items()
        }
        self._sync_fqdns()
        return self._flush({})

    def _sync_fqdns(self) -> None:
        selectors = {s for policy in self.policies.values() for s in fqdn_selectors(policy)}
        wanted = {
            network: names
            for network, names in self._fqdn_learned.items()
            if selectors and selectors_match(selectors, names)
        }
        old = self._fqdn_selected
        if wanted == old:
            return
        # Names first: a new identity is matched against them as it is added.
        self._fqdn_selected = wanted
        for network in wanted.keys() - old.keys():
            self._acquire_cidr(network)
        for matcher in self.selectors.in_use():
            if isinstance(matcher, Peers) and matcher.fqdns:
                self._refresh_selection(matcher)
        for network in old.keys() - wanted.keys():
            self._release_cidr(network)

    # ---- policies ------------------------------------------------------

    def upsert_policy(self, obj: Mapping[str, Any]) -> ChangeSet:
        """Add or replace a policy; if invalid, raise InvalidPolicy and keep the old version."""
        try:
            policy = parse_policy(obj)
            self._check_priority(policy)
        except InvalidPolicy as err:
            self.rejected[policy_key(obj)] = err
            raise
        self.rejected.pop(policy.key, None)
        old = self.policies.get(policy.key)
        classes_moved = False
        if old is not None:
            self._work.full |= self._subjects_of(old)
            self._unregister(old)
            classes_moved |= self._classes.count_policy(old, -1)
        self.policies[policy.key] = policy
        self._register(policy)
        if fqdn_selectors(policy) or (old is not None and fqdn_selectors(old)):
            self._sync_fqdns()
        classes_moved |= self._classes.count_policy(policy, 1)
        self._work.full |= self._subjects_of(policy)
        self._reorder()
        touched: Touched = {}
        if classes_moved:
            self._reclassify(touched)
        return self._flush(touched)

    def delete_policy(self, key: PolicyKey) -> ChangeSet:
        self.rejected.pop(key, None)
        old = self.policies.pop(key, None)
        if old is None:
            return ChangeSet()
        self._work.full |= self._subjects_of(old)
        self._unregister(old)
        if fqdn_selectors(old):
            self._sync_fqdns()
        self._reorder()
        touched: Touched = {}
        if self._classes.count_policy(old, -1):
            self._reclassify(touched)
        return self._flush(touched)

    def _check_priority(self, policy: Policy) -> None:
        """Two AdminNetworkPolicies may not share a priority (upstream leaves it undefined)."""
        if policy.key.kind != Kind.ADMIN_NETWORK_POLICY.value:
            return
        for other in self.policies.values():
            if (
                other.key.kind == policy.key.kind
                and other.key != policy.key
                and other.priority == policy.priority
            ):
                error = PolicyError(
                    "spec.priority", f"{policy.priority} is already used by {other.key}"
                )
                raise InvalidPolicy(policy.key.kind, policy.key.name, [error])

    # ---- full load -----------------------------------------------------

    def load(
        self,
        *,
        namespaces: Iterable[Mapping[str, Any]] = (),
        pods: Iterable[Mapping[str, Any]] = (),
        nodes: Iterable[Mapping[str, Any]] = (),
        policies: Iterable[Mapping[str, Any]] = (),
        freeze_gc: bool = False,
    ) -> LoadResult:
        """Full compile into an empty engine; identity numbers do not depend on input order.

        `freeze_gc=True` (for a long-lived operator process, after its initial sync)
        moves every object alive at the end of the load out of the cyclic collector's
        reach (`gc.freeze()`, process-wide): otherwise the first collections after a
        large load re-traverse the whole compiled state, pausing updates for
        100-200 ms. Acyclic objects are still freed by reference counting.
        """
        if self.pods or self.policies:
            raise EngineNotEmpty("load() needs an empty engine; use the upsert_* methods to update")
        # A full compile allocates hundreds of thousands of acyclic tuples; the cyclic
        # collector would traverse all of them again and again (about half the time).
        collecting = gc.isenabled()
        gc.disable()
        try:
            return self._load(namespaces, pods, nodes, policies)
        finally:
            if freeze_gc:
                gc.freeze()
            if collecting:
                gc.enable()

    def _load(
        self,
        namespaces: Iterable[Mapping[str, Any]],
        pods: Iterable[Mapping[str, Any]],
        nodes: Iterable[Mapping[str, Any]],
        policies: Iterable[Mapping[str, Any]],
    ) -> LoadResult:
        for obj in namespaces:
            ns = parse_namespace(obj)
            self.namespaces[ns.name] = ns
        for obj in nodes:
            node = parse_node(obj)
            self.nodes[node.name] = node
        parsed_pods = sorted((parse_pod(obj) for obj in pods), key=lambda p: p.key)
        rejected: dict[str, str] = {}
        accepted = self._parse_all(policies, rejected)
        for policy in accepted:
            self._classes.count_policy(policy, 1)
        for pod in parsed_pods:
            self.pods[pod.key] = pod
            if not pod.host_network:
                self._classes.join(pod, self._label_set(pod))
        label_sets = self._classes.all_classes()
        ordered_sets: list[LabelSet] = sorted(set(label_sets.values()), key=lambda s: s.items)
        self.identities.preallocate_pods(ordered_sets)
        for pod in parsed_pods:
            if pod.host_network:
                continue
            labels = label_sets[pod.key]
            number, _ = self.identities.acquire_pod(labels)
            self._pod_labels[pod.key] = labels
            self.pod_identity[pod.key] = number
            self.identity_pods.setdefault(number, set()).add(pod.key)
        for number in self.identity_pods:
            self.named_ports[number] = self._named_port_map(number)
        prefixes = sorted(
            {n for p in accepted for n in cidr_prefixes(p) if n.prefixlen},
            key=lambda n: (n.version, int(n.network_address), n.prefixlen),
        )
        self.identities.cidr_allocator.preallocate(prefixes)
        for policy in accepted:
            self._register(policy)
        self._sync_fqdns()  # addresses learned before the load (an agent's restored state)
        self._reorder()
        return self._finish_load(rejected)

    def _parse_all(
        self, policies: Iterable[Mapping[str, Any]], rejected: dict[str, str]
    ) -> list[Policy]:
        """Every valid policy of a full load, stored; the invalid ones in `rejected`."""
        accepted: list[Policy] = []
        for obj in sorted(policies, key=lambda o: policy_key(o)):
            try:
                policy = parse_policy(obj)
                if policy.key in self.policies:
                    raise InvalidPolicy(
                        policy.key.kind,
                        policy.key.name,
                        [PolicyError("metadata.name", "duplicate")],
                    )
                self._check_priority(policy)
            except InvalidPolicy as err:
                key = policy_key(obj)
                self.rejected[key] = err
                rejected[str(key)] = str(err)
                continue
            self.policies[policy.key] = policy
            accepted.append(policy)
        return accepted

    def _finish_load(self, rejected: dict[str, str]) -> LoadResult:
        """Every identity compiled and reported, after a full load stored the inputs."""
        parts_of = self._compiler.parts_index()
        for number in sorted(self.identity_pods):
            self.compiled[number] = self._compiler.compile_identity(
                number, parts_of.get(number, [])
            )
        changes = self._work.take().changes
        shared: dict[tuple[int, bool], EntryDiff] = {}
        for pod_key, number in self.pod_identity.items():
            audit = self._audit(pod_key)
            self._audits.record(pod_key, audit)
            initial = shared.get((number, audit))
            if initial is None:
                initial = EntryDiff(self.endpoint_policy(pod_key).entries(), frozenset())
                shared[(number, audit)] = initial
            changes.endpoints[pod_key] = initial
        self._hosts.refresh(changes)
        changes.ipcache_upserts.update(self.ipcache())
        return LoadResult(changes, rejected)

    # ---- internals: flushing ------------------------------------------

    def _flush(self, touched: Touched) -> ChangeSet:
        changes = flush(
            self._work.take(),
            self._compiler,
            self.identity_pods,
            self.pod_identity,
            self._audits,
            self._audit_mode,
            touched,
        )
        self._hosts.refresh(changes)
        return changes

    # ---- internals: pods and identities --------------------------------

    def _label_set(self, pod: Pod) -> LabelSet:
        ns = self.namespaces.get(pod.key.namespace)
        ns_labels = dict(ns.labels) if ns else {NAMESPACE_NAME_LABEL: pod.key.namespace}
        return pod_label_set(
            pod.key.namespace,
            pod.label_map,
            ns_labels,
            pod.service_account,
            self.cluster_name,
            self.label_filter,
        )

    def hypothetical_labels(self, base: LabelSet, pod_labels: Mapping[str, str]) -> LabelSet:
        """The label set a pod with `pod_labels` (whose filtered label set is `base`) would
        be matched by: its class's when an upstream-API selector reads a filtered label."""
        own = self._classes.own_labels(pod_labels.items())
        return class_labels(base, None, (), own) if own else base

    def _audit(self, pod: PodKey) -> bool:
        ns = self.namespaces.get(pod.namespace)
        return self.pods[pod].audit or bool(ns and ns.audit)

    def audit_mode(self, pod: PodKey) -> bool:
        """A pod's audit mode now (its annotation or its namespace's); False once it is gone."""
        return self._audit(pod) if pod in self.pods else False

    _audit_mode = audit_mode

    def _old_policy(self, key: PodKey) -> IdentityPolicy | None:
        number = self.pod_identity.get(key)
        return None if number is None else self.compiled.get(number, UNENFORCED_POLICY)

    def _set_pod(self, pod: Pod, touched: Touched) -> None:
        key = pod.key
        old = self.pods.get(key)
        if key not in touched:
            touched[key] = self._old_policy(key)
        # A host-network pod's addresses are its node's: it never had entries of its own.
        if old is not None and not old.host_network:
            for ip in old.ips:
                if ip not in pod.ips or pod.host_network:
                    self._work.changes.ipcache_deletes.add(host_network(ip))
        self.pods[key] = pod
        base = None if pod.host_network else self._label_set(pod)
        old_base = self._classes.base_of(key)
        if old_base is not None and old_base != base:
            self._leave(key, old_base, touched)
        if base is not None:
            self._classes.join(pod, base)
            self._regroup(base, touched, key)

    def _drop_pod(self, key: PodKey, touched: Touched) -> None:
        pod = self.pods.pop(key, None)
        if pod is None:
            return
        if key not in touched:
            touched[key] = self._old_policy(key)
        for ip in () if pod.host_network else pod.ips:  # a host-network pod's are its node's
            self._work.changes.ipcache_deletes.add(ipaddress.ip_network(ip))
        base = self._classes.base_of(key)
        if base is not None:
            self._leave(key, base, touched)

    # ---- internals: pod classes (podclasses) ------------------------------

    def _leave(self, key: PodKey, base: LabelSet, touched: Touched) -> None:
        """Take a pod out of label set `base`: its identity goes, the others may move."""
        labels = self._pod_labels.get(key)
        if labels is not None:
            self._unassign(key, labels)
        if self._classes.leave(key):
            self._regroup(base, touched, None)

    def _regroup(
        self, base: LabelSet, touched: Touched, changed: PodKey | None, everyone: bool = False
    ) -> None:
        """Give pods of label set `base` their class's identity (PodClasses.targets)."""
        for key, target in self._classes.targets(base, changed, everyone):
            current = self._pod_labels.get(key)
            if target != current:
                if key not in touched:
                    touched[key] = self._old_policy(key)
                if current is not None:
                    self._unassign(key, current)
                    self._work.changes.reidentified.add(key)
                self._assign(key, target)
            elif key == changed:
                self._refresh_named_ports(self.pod_identity[key])
            if target != current or key == changed:
                for ip in self.pods[key].ips:
                    self._work.changes.ipcache_upserts[host_network(ip)] = self.pod_identity[key]

    def _reclassify(self, touched: Touched) -> None:
        """The named address prefixes or selected own-label keys changed: every pod's class
        may have."""
        for base in self._classes.reclassify():
            self._regroup(base, touched, None, everyone=True)

    def _assign(self, key: PodKey, labels: LabelSet) -> None:
        number, is_new = self.identities.acquire_pod(labels)
        self._pod_labels[key] = labels
        self.pod_identity[key] = number
        self.identity_pods.setdefault(number, set()).add(key)
        if is_new:
            twin = self._twin(number, labels)
            if twin is not None:
                self._work.twin_of[number] = twin
            self._identity_added(number, twin)
            self._twins.add(number, labels)
        self._refresh_named_ports(number)

    def _unassign(self, key: PodKey, labels: LabelSet) -> None:
        number = self.pod_identity.pop(key)
        del self._pod_labels[key]
        pods = self.identity_pods[number]
        pods.discard(key)
        if not pods:
            del self.identity_pods[number]
            self._identity_removed(number)
            self.identities.release_pod(labels)
            self.named_ports.pop(number, None)
            self._work.full.add(number)
        else:
            self.identities.release_pod(labels)
            self._refresh_named_ports(number)

    def _named_port_map(self, number: int) -> NamedPortMap:
        ports: dict[str, set[tuple[int, int]]] = {}
        for key in self.identity_pods.get(number, ()):
            for name, proto, port in self.pods[key].named_ports:
                ports.setdefault(name, set()).add((proto, port))
        return {name: frozenset(values) for name, values in ports.items()}

    def _refresh_named_ports(self, number: int) -> None:
        new = self._named_port_map(number)
        if self.named_ports.get(number) != new:
            self.named_ports[number] = new
            self._work.full.add(number)
            self._work.full |= self._resolver.egress_named_users

    def _identity_added(self, number: int, twin: int | None = None) -> None:
        self._compiler.forget_parts(number)
        self._work.full.add(number)
        for change in self.selectors.identity_added(number):
            if twin is None:
                for user in change.users:
                    self._work.peer_patch.setdefault(user, set()).add(number)
            else:
                for user in change.users:
                    self._work.clones.setdefault(user, set()).add((number, twin))

    def _identity_removed(self, number: int) -> None:
        self._compiler.forget_parts(number)
        self._twins.remove(number, self.identities.labels[number])
        for change in self.selectors.identity_removed(number):
            # A vanished peer only loses its entries: no rule needs evaluating.
            for user in change.users:
                self._work.clones.setdefault(user, set()).add((number, DROP))
        self._resolver.forget_subject(number)

    def _twin(self, number: int, labels: LabelSet) -> int | None:
        """An existing pod identity every selector treats exactly like `number`, if any.

        With equal named ports too, the new identity's entries in any subject are a
        copy of the twin's (see twins.py).
        """
        candidates = self._twins.candidates(number, labels)
        if not candidates:
            return None
        ports = self._named_port_map(number)
        for other in candidates:
            if (
                other != number
                and other in self.identity_pods
                and self.named_ports.get(other, {}) == ports
                and same_blocks(self.identities.labels[other], labels)
            ):
                return other
        return None

    def _node_peers_changed(self) -> None:
        """A node came, went or changed: node peers and address-matching CIDR peers may
        select the node identities differently."""
        for matcher in self.selectors.in_use():
            if isinstance(matcher, Peers) and (matcher.nodes or any(c.pods for c in matcher.cidrs)):
                self._refresh_selection(matcher)
        self._work.full |= set(self.identity_pods)

    def _refresh_selection(self, matcher: Matcher) -> None:
        self._compiler.forget_parts()
        change = self.selectors.refresh(matcher)
        if change is not None:
            self._work.full |= change.users

    # ---- internals: policies -------------------------------------------

    def _register(self, policy: Policy) -> None:
        for network in cidr_prefixes(policy):
            self._acquire_cidr(network)
        self._hosts.policy_added(policy)
        for part in policy.parts:
            if part.subject is not None:
                self.selectors.acquire(part.subject)
            for rule in part.rules:
                if not rule.peers.any_peer:
                    self.selectors.acquire(rule.peers)
        self._resolver.register(policy)

    def _unregister(self, policy: Policy) -> None:
        self._hosts.policy_removed(policy.key)
        for part in policy.parts:
            if part.subject is not None:
                self.selectors.release(part.subject)
            for rule in part.rules:
                if not rule.peers.any_peer:
                    self.selectors.release(rule.peers)
        self._resolver.unregister(policy)
        for network in cidr_prefixes(policy):
            self._release_cidr(network)

    def _acquire_cidr(self, network: IPNetwork) -> None:
        """A policy prefix or a selected learned address: referenced, it has an identity."""
        self._cidr_refs[network] += 1
        if self._cidr_refs[network] == 1:
            number, is_new = self.identities.acquire_cidr(network)
            if is_new:
                self._work.changes.ipcache_upserts[network] = number
                self._identity_added(number)

    def _release_cidr(self, network: IPNetwork) -> None:
        self._cidr_refs[network] -= 1
        if self._cidr_refs[network] == 0:
            del self._cidr_refs[network]
            number = self.identities.cidr_ids.get(network)
            if number is not None:
                self._identity_removed(number)
                self.identities.release_cidr(network)
                self._work.changes.ipcache_deletes.add(network)

    def _reorder(self) -> None:
        self._ordered = sorted(self.policies.values(), key=lambda p: p.order)
        self._compiler.forget_parts()

    def _subjects_of(self, policy: Policy) -> set[int]:
        found: set[int] = set()
        for part in policy.parts:
            if part.subject is not None:
                found |= self.selectors.get(part.subject) or frozenset()
        return found


__all__ = ["ChangeSet", "Engine", "EndpointPolicy", "HostKey", "apply_diff"]
