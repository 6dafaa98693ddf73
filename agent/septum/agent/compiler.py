"""The engine side of the agent: cluster objects in, local endpoint policies and ipcache out.

Every agent compiles for its own endpoints (docs/architecture.md, "compilation in each
agent").  The `Compiler` feeds one `Engine` with the whole cluster's namespaces, pods,
nodes and policies, identities taken from the operator's SeptumIdentity objects, and
collects what the datapath side must write: ipcache changes and the local endpoints
whose policy may have changed.  Pure: no I/O, no datapath.

What the agent adds on top of the engine:
- a pod whose identity does not exist yet is held back until its SeptumIdentity appears;
- a policy is enforced as its current spec when valid, else as `status.lastValid`, else not
  (`septum.operator.policystatus.enforced_version`, as the operator and the CLI);
- `allow-localhost=always`: every enforced ingress admits the host identity (kubelet probes);
- the node's own addresses (e.g. each pod veth's gateway) map to the host identity;
- only the fields the engine and the Observer's metadata read are kept of pods and nodes
  (`slim_pod`, `slim_node`): whole pod objects are ~5 KB each in Python;
- Services and EndpointSlices: each frontend address gets a service identity in the ipcache
  and every enforced egress gets entries for it derived from its backends' verdicts
  (`septum.agent.services`, `septum.agent.serviceegress`: egress is decided before
  kube-proxy's DNAT, Kubernetes decides it after).

Audit mode (per pod, per namespace label or annotation, per policy annotation) is the
engine's: its entries come out with `audit` set on the denies that only report.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Concatenate, Final, ParamSpec, TypeVar

from septum.agent.facts import PodFacts, RuleFacts
from septum.agent.identities import (
    IdentityStore,
    UnknownIdentity,
    WatchedAllocator,
    parse_identity,
)
from septum.agent.serviceegress import (
    PrefixIdentities,
    ServiceFrontend,
    frontends_by_identity,
    with_service_entries,
)
from septum.agent.services import (
    FrontendIdentities,
    ServiceIdentitiesExhausted,
    ServiceObjectError,
    ServiceTable,
    service_labels,
)
from septum.operator.engine import Engine, EngineError, InvalidPolicy
from septum.operator.engine.changes import ChangeSet
from septum.operator.engine.cluster import (
    NAMESPACE_NAME_LABEL,
    IPAddress,
    PodKey,
    host_network,
    parse_namespace,
    parse_pod,
)
from septum.operator.engine.entries import DirectionPolicy, EndpointPolicy, PolicyEntry, Verdict
from septum.operator.engine.explain import DirectionVerdict, explain, resolve_endpoint
from septum.operator.engine.labels import LabelSet, pod_label_set
from septum.operator.engine.parse import policy_key
from septum.operator.engine.ports import PORT_MAX, PORT_MIN, PROTO_ANY, PROTO_TCP, PROTO_UDP
from septum.operator.engine.registry import Origin
from septum.operator.engine.rules import Direction, DnsRule, HttpRule, L7Kind
from septum.operator.policystatus import enforced_version
from septum.wellknown.reserved import (
    SERVICE_IDENTITY_MAX,
    SERVICE_IDENTITY_MIN,
    ReservedIdentity,
)

log = logging.getLogger(__name__)

HOST_IDENTITY: Final = int(ReservedIdentity.HOST)
REMOTE_NODE_IDENTITY: Final = int(ReservedIdentity.REMOTE_NODE)
POLICY_KINDS: Final = frozenset(
    {
        "NetworkPolicy",
        "SeptumNetworkPolicy",
        "SeptumClusterwideNetworkPolicy",
        "ClusterNetworkPolicy",
    }
)
SERVICE_KINDS: Final = frozenset({"Service", "EndpointSlice"})
DERIVED_MEMO_MAX: Final = 256
TERMINAL_PHASES: Final = frozenset({"Succeeded", "Failed"})
Obj = Mapping[str, Any]
Key = tuple[str, str]
_P = ParamSpec("_P")
_R = TypeVar("_R")


def _key(obj: Obj) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _pick(obj: Obj, *names: str) -> dict[str, Any]:
    return {name: obj[name] for name in names if obj.get(name) is not None}


def slim_pod(obj: Obj) -> dict[str, Any]:
    """The fields of a pod the engine (`parse_pod`) and the Observer's metadata read:
    metadata name/namespace/labels/annotations/ownerReferences/uid/generation, spec
    nodeName/hostNetwork/serviceAccountName and the containers' (and init containers')
    ports, status podIP(s)/phase."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    containers = {
        section: [{"ports": c["ports"]} if c.get("ports") else {} for c in spec.get(section) or []]
        for section in ("containers", "initContainers")
        if any(c.get("ports") for c in spec.get(section) or [])
    }
    return {
        "metadata": _pick(
            meta, "name", "namespace", "labels", "annotations", "ownerReferences", "uid"
        ),
        "spec": {**_pick(spec, "nodeName", "hostNetwork", "serviceAccountName"), **containers},
        "status": _pick(status, "podIP", "podIPs", "phase"),
    }


def slim_node(obj: Obj) -> dict[str, Any]:
    """The fields of a node the engine reads (status.images alone can be tens of KB)."""
    meta = obj.get("metadata") or {}
    return {
        "metadata": _pick(meta, "name", "labels", "annotations"),
        "status": _pick(obj.get("status") or {}, "addresses"),
    }


SLIMMERS: Final = {"Pod": slim_pod, "Node": slim_node}


def workloads_of(pod: Obj) -> tuple[tuple[str, str], ...]:
    """(name, kind) of the pod's controllers: a ReplicaSet made by a Deployment reads as
    the Deployment (the ReplicaSet's name is the Deployment's plus the template hash)."""
    meta = pod.get("metadata") or {}
    template_hash = str((meta.get("labels") or {}).get("pod-template-hash", ""))
    found: list[tuple[str, str]] = []
    for owner in meta.get("ownerReferences") or []:
        name, kind = str(owner.get("name", "")), str(owner.get("kind", ""))
        if kind == "ReplicaSet" and template_hash and name.endswith("-" + template_hash):
            found.append((name[: -len(template_hash) - 1], "Deployment"))
        elif name and kind:
            found.append((name, kind))
    return tuple(found)


def with_localhost(policy: DirectionPolicy) -> DirectionPolicy:
    """`policy` with the host identity allowed on every protocol and port (Cilium's
    allow-localhost): the host's own entries replace whatever the policy said for it."""
    if not policy.enforced:
        return policy
    kept = [e for e in policy.entries if e.peer_identity != HOST_IDENTITY]
    allows = [
        PolicyEntry(
            Direction.INGRESS,
            HOST_IDENTITY,
            protocol,
            PORT_MIN,
            PORT_MAX,
            Verdict.ALLOW,
            L7Kind.NONE,
            False,
            0,
            "reserved:host",
        )  # fmt: skip
        for protocol in (PROTO_ANY, *policy.protocols)
    ]
    return DirectionPolicy(True, tuple(sorted(kept + allows)), policy.protocols, policy.wildcard)


def _locked(
    method: Callable[Concatenate[Compiler, _P], _R],
) -> Callable[Concatenate[Compiler, _P], _R]:
    """`method` run holding the compiler's lock (module docstring, "Threads")."""

    @functools.wraps(method)
    def held(compiler: Compiler, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with compiler._lock:
            return method(compiler, *args, **kwargs)

    return held


@dataclass
class Pending:
    """What the datapath side must write since it last asked."""

    ipcache_upserts: dict[str, int] = field(default_factory=dict)
    ipcache_deletes: set[str] = field(default_factory=set)
    dirty: set[Key] = field(default_factory=set)  # local pods whose policy may have changed
    pods: set[Key] = field(default_factory=set)  # pods (anywhere) whose facts may have changed
    all_dirty: bool = False
    # every local pod whose egress is enforced: its service entries may have changed
    egress_dirty: bool = False
    # labels of service identities given out, () for those released (the Observer's metadata)
    identity_labels: dict[int, tuple[str, ...]] = field(default_factory=dict)

    def add_changes(self, changes: ChangeSet) -> None:
        for network in changes.ipcache_deletes:
            self.ipcache_upserts.pop(str(network), None)
            self.ipcache_deletes.add(str(network))
        for network, number in changes.ipcache_upserts.items():
            self.ipcache_deletes.discard(str(network))
            self.ipcache_upserts[str(network)] = number
        for key in (*changes.endpoints, *changes.removed_endpoints):
            if isinstance(key, PodKey):
                self.dirty.add((key.namespace, key.name))
        for key in changes.reidentified:  # a new identity: endpoint record and facts follow
            if isinstance(key, PodKey):
                self.dirty.add((key.namespace, key.name))
                self.pods.add((key.namespace, key.name))

    def upsert(self, prefix: str, identity: int) -> None:
        self.ipcache_deletes.discard(prefix)
        self.ipcache_upserts[prefix] = identity


class Compiler:
    def __init__(
        self,
        node: str,
        *,
        allow_localhost: bool = True,
        cluster_name: str = "default",
        host_addresses: Iterable[str] = (),
    ) -> None:
        self.node = node
        self.allow_localhost = allow_localhost
        # reentrant: a locked entry point may call another (module docstring, "Threads")
        self._lock = threading.RLock()
        self.cluster_name = cluster_name
        self.identities = IdentityStore()
        self.engine = Engine(
            cluster_name=cluster_name,
            pod_allocator=WatchedAllocator(self.identities),
            local_node=node,
        )
        self.synced = False
        self.raw: dict[str, dict[Key, Obj]] = {}
        self.held: set[Key] = set()  # pods waiting for their SeptumIdentity
        self.held_namespaces: set[str] = set()
        self.local_ips: dict[Key, tuple[str, ...]] = {}  # from CNI ADD, before the API has them
        self.host_addresses: set[str] = set()
        self.pending = Pending()
        self._rules_seen = 0
        # Services: the table, each frontend address's identity, and the ipcache as written
        self.services = ServiceTable()
        self.frontend_identities = FrontendIdentities()
        self.frontends: list[ServiceFrontend] = []
        self.ipcache = PrefixIdentities()  # engine + host addresses: who a backend is
        self.written: dict[str, int] = {}  # what the datapath was told (service overlay in)
        self._overlay: dict[str, int] = {}  # frontend prefix -> its service identity
        self._service_labels: dict[int, tuple[str, ...]] = {}
        self._backend_ips: set[str] = set()
        self._services_changed = False
        # (egress policy, the pod's own backend addresses) -> derived egress: pods of one
        # identity share it; cleared whenever frontends or backend identities change
        self._derived: dict[tuple[int, frozenset[str]], tuple[DirectionPolicy, DirectionPolicy]]
        self._derived = {}
        self.add_host_addresses(host_addresses)

    # ---- input -----------------------------------------------------------------------

    @_locked
    def apply(self, kind: str, event_type: str, obj: Obj) -> None:
        """One watched object changed (`event_type` "upsert" or "delete")."""
        if kind in SERVICE_KINDS:
            self._service(kind, event_type == "delete", obj)
            return
        store = self.raw.setdefault(kind, {})
        slim = SLIMMERS.get(kind)
        if slim is not None:
            obj = slim(obj)
            if event_type != "delete" and store.get(_key(obj)) == obj:
                return  # only fields nobody here reads changed (conditions, images, ...)
        if event_type == "delete":
            store.pop(_key(obj), None)
        else:
            store[_key(obj)] = obj
        renumbered: tuple[int, LabelSet] | None = None
        if kind == "SeptumIdentity":
            renumbered = self._identity(obj, event_type == "delete")
        if not self.synced:
            return
        try:
            self._apply(kind, event_type, obj)
            if renumbered is not None:
                self._renumber(*renumbered)
        except EngineError as err:
            log.warning("engine refused %s %s: %s", kind, "/".join(_key(obj)), err)

    def _service(self, kind: str, delete: bool, obj: Obj) -> None:
        """A Service or EndpointSlice into the service table (not kept raw: nobody else reads
        them); one that cannot be read leaves the table, so none of it is guessed at."""
        table = self.services
        upsert, remove = (
            (table.upsert_service, table.delete_service)
            if kind == "Service"
            else (table.upsert_slice, table.delete_slice)
        )
        self._services_changed = True
        if delete:
            remove(obj)
            return
        try:
            upsert(obj)
        except ServiceObjectError as err:
            log.warning("%s ignored: %s", kind, err)
            remove(obj)

    def _identity(self, obj: Obj, delete: bool) -> tuple[int, LabelSet] | None:
        """Record a SeptumIdentity; (old number, label set) when the label set's identity
        moved to another number (a lower duplicate appeared, or the lowest went)."""
        parsed = parse_identity(obj)
        before = self.identities.lookup(parsed[1]) if parsed is not None else None
        labels = self.identities.delete(obj) if delete else self.identities.upsert(obj)
        if labels is None or before is None:
            return None
        after = self.identities.lookup(labels)
        return (before, labels) if after is not None and after != before else None

    def _renumber(self, old: int, labels: LabelSet) -> None:
        """Give the pods of `labels` the label set's identity now: they leave the engine
        and come back (one batch, so the datapath only sees the result)."""
        keys = [k for k in self.engine.identity_pods.get(old, ()) if
                self.engine.pod_labels(k) == labels]  # fmt: skip
        for key in keys:
            self.pending.add_changes(self.engine.delete_pod(key.namespace, key.name))
        for key in sorted(keys):
            self._pod((key.namespace, key.name), False)
        if keys:
            log.info("identity %d of %d pods renumbered to %d", old, len(keys),
                     self.identities.lookup(labels))  # fmt: skip

    def _apply(self, kind: str, event_type: str, obj: Obj) -> None:
        delete = event_type == "delete"
        if kind == "Namespace":
            self._namespace(obj, delete)
        elif kind == "Pod":
            self._pod(_key(obj), delete)
        elif kind == "Node":
            name = _key(obj)[1]
            changes = self.engine.delete_node(name) if delete else self.engine.upsert_node(obj)
            self.pending.add_changes(changes)
            self._node_addresses()
        elif kind == "SeptumIdentity":
            if not delete:
                self._release_held()
        elif kind in POLICY_KINDS:
            self._policy(obj, delete)

    @_locked
    def load(self) -> None:
        """The first full compile, once every resource is listed (engine.load, then the
        cyclic collector frozen: this process lives long)."""
        namespaces = list(self.raw.get("Namespace", {}).values())
        nodes = list(self.raw.get("Node", {}).values())
        # load() sees the namespaces before the pods: label sets need namespace labels
        ns_labels = {n["metadata"]["name"]: dict(parse_namespace(n).labels) for n in namespaces}
        pods: list[Obj] = []
        for key in sorted(self.raw.get("Pod", {})):
            pod = self._engine_pod(key, ns_labels)
            if pod is not None:
                pods.append(pod)
        policies: list[Obj] = []
        for kind in sorted(POLICY_KINDS):
            for obj in self.raw.get(kind, {}).values():
                effective = enforced_version(obj)
                if effective is not None:
                    policies.append(effective)
        result = self.engine.load(
            namespaces=namespaces, pods=pods, nodes=nodes, policies=policies, freeze_gc=True
        )
        for name, error in result.rejected.items():
            log.warning("policy %s not enforced: %s", name, error)
        self.synced = True
        self.pending.add_changes(result.changes)
        self._node_addresses()
        self.pending.all_dirty = True
        self.pending.pods.update(self.raw.get("Pod", {}))

    @_locked
    def set_fqdn_addresses(self, learned: Mapping[IPAddress, Iterable[str]]) -> None:
        """The addresses the node's DNS proxy learned (septum.agent.l7): toFQDNs selects them."""
        self.pending.add_changes(self.engine.set_fqdn_addresses(learned))

    @_locked
    def set_local_ips(self, namespace: str, name: str, ips: Iterable[str]) -> None:
        """A local pod's addresses from its CNI ADD (the API learns them later)."""
        self.local_ips[(namespace, name)] = tuple(ips)
        if self.synced:
            self._pod((namespace, name), False)

    def forget_local(self, namespace: str, name: str) -> None:
        self.local_ips.pop((namespace, name), None)

    def add_host_addresses(self, addresses: Iterable[str]) -> None:
        """Addresses of this node (its interfaces, each pod veth's gateway): the host."""
        for address in addresses:
            prefix = str(ipaddress.ip_network(address.split("/")[0]))
            if prefix not in self.host_addresses:
                self.host_addresses.add(prefix)
                self.pending.upsert(prefix, HOST_IDENTITY)

    # ---- pods --------------------------------------------------------------------------

    def _label_set(self, pod: Obj, ns_labels: Mapping[str, Mapping[str, str]]) -> LabelSet:
        parsed = parse_pod(pod)
        namespace = parsed.key.namespace
        labels = ns_labels.get(namespace) or {NAMESPACE_NAME_LABEL: namespace}
        return pod_label_set(
            namespace,
            parsed.label_map,
            labels,
            parsed.service_account,
            self.cluster_name,
            self.engine.label_filter,
        )

    def _namespace_labels(self) -> dict[str, dict[str, str]]:
        return {name: dict(ns.labels) for name, ns in self.engine.namespaces.items()}

    def _engine_pod(self, key: Key, ns_labels: Mapping[str, Mapping[str, str]]) -> Obj | None:
        """The pod as the engine should see it now, or None (held back, or not a pod the
        engine keeps: finished)."""
        raw = self.raw.get("Pod", {}).get(key)
        if raw is None:
            return None
        if (raw.get("status") or {}).get("phase") in TERMINAL_PHASES:
            return None
        pod = dict(raw)
        local = self.local_ips.get(key)
        status = dict(pod.get("status") or {})
        if local and not status.get("podIPs") and not status.get("podIP"):
            status["podIPs"] = [{"ip": ip} for ip in local]
            pod["status"] = status
        try:
            host = bool((pod.get("spec") or {}).get("hostNetwork"))
            if not host and self.identities.lookup(self._label_set(pod, ns_labels)) is None:
                self.held.add(key)
                return None
        except EngineError as err:
            log.warning("pod %s/%s unreadable: %s", *key, err)
            return None
        self.held.discard(key)
        return pod

    def _pod(self, key: Key, delete: bool) -> None:
        self.pending.pods.add(key)
        pod = None if delete else self._engine_pod(key, self._namespace_labels())
        in_engine = PodKey(*key) in self.engine.pods
        if pod is None:
            if delete or key not in self.held:
                self.held.discard(key)
                if in_engine:
                    self.pending.add_changes(self.engine.delete_pod(*key))
            # held: the engine keeps the pod's last version until its identity appears
            return
        try:
            self.pending.add_changes(self.engine.upsert_pod(pod))
        except UnknownIdentity:  # raced with an identity's deletion: wait for it again
            self.held.add(key)

    def _release_held(self) -> None:
        for name in sorted(self.held_namespaces):
            obj = self.raw.get("Namespace", {}).get(("", name))
            if obj is not None:
                self._namespace(obj, False)
        for key in sorted(self.held):
            self._pod(key, False)

    def _namespace(self, obj: Obj, delete: bool) -> None:
        name = _key(obj)[1]
        if delete:
            self.held_namespaces.discard(name)
            self.pending.add_changes(self.engine.delete_namespace(name))
            return
        labels = {**self._namespace_labels(), name: dict(parse_namespace(obj).labels)}
        for key in [k for k in self.raw.get("Pod", {}) if k[0] == name]:
            if self._engine_pod(key, labels) is None and key in self.held:
                # a pod's new label set has no identity yet: keep the old labels until then
                self.held_namespaces.add(name)
                return
        self.held_namespaces.discard(name)
        self.pending.add_changes(self.engine.upsert_namespace(obj))

    def _node_addresses(self) -> None:
        """The node's own addresses win over a node address the engine just deleted (the
        engine maps node addresses itself: host here, remote-node elsewhere)."""
        for prefix in self.host_addresses:
            self.pending.upsert(prefix, HOST_IDENTITY)

    # ---- policies ----------------------------------------------------------------------

    def _policy(self, obj: Obj, delete: bool) -> None:
        key = policy_key(obj)
        effective = None if delete else enforced_version(obj)
        if effective is None:
            if not delete:
                log.warning("policy %s: invalid and no last valid version; not enforced", key)
            self.pending.add_changes(self.engine.delete_policy(key))
            return
        try:
            self.pending.add_changes(self.engine.upsert_policy(effective))
        except InvalidPolicy as err:  # valid alone, refused beside the others (priority)
            log.warning("policy %s not enforced: %s", key, err)
            self.pending.add_changes(self.engine.delete_policy(key))

    # ---- output ------------------------------------------------------------------------

    @_locked
    def take(self) -> Pending:
        pending, self.pending = self.pending, Pending()
        self._settle_ipcache(pending)
        return pending

    # ---- services ----------------------------------------------------------------------

    def _settle_ipcache(self, pending: Pending) -> None:
        """Fold the batch's ipcache changes into the mirror, bring the service identities up
        to date, and rewrite the batch's ipcache diff against what the datapath holds: a
        frontend prefix keeps its service identity whatever the engine says of it, unless it
        is a pod's or a node's address (then that address wins and the frontend is left out)."""
        touched = set(pending.ipcache_upserts) | pending.ipcache_deletes
        for prefix in pending.ipcache_deletes:
            self.ipcache.delete(prefix)
        for prefix, number in pending.ipcache_upserts.items():
            self.ipcache.set(prefix, number)
        if self._services_changed or touched & set(self._overlay):
            before = (self.frontends, dict(self._overlay))
            touched |= self._update_frontends(pending)
            if (self.frontends, self._overlay) != before:
                pending.egress_dirty = True
        if touched and self._backend_ips and self._backends_touched(touched):
            pending.egress_dirty = True
        if pending.egress_dirty:
            self._derived.clear()
        upserts: dict[str, int] = {}
        deletes: set[str] = set()
        for prefix in touched:
            want = self._overlay.get(prefix, self.ipcache.get(prefix))
            have = self.written.get(prefix)
            if want is None:
                if have is not None or prefix in pending.ipcache_deletes:
                    deletes.add(prefix)
                self.written.pop(prefix, None)
            else:
                if have != want:
                    upserts[prefix] = want
                self.written[prefix] = want
        pending.ipcache_upserts, pending.ipcache_deletes = upserts, deletes

    def _backends_touched(self, prefixes: Iterable[str]) -> bool:
        for prefix in prefixes:
            address, _, length = prefix.partition("/")
            if length in ("32", "128"):
                if address in self._backend_ips:
                    return True
            elif self.ipcache.covers(prefix, self._backend_ips):
                return True
        return False

    def _update_frontends(self, pending: Pending) -> set[str]:
        """Recompute frontends and their identities; the prefixes whose overlay changed."""
        self._services_changed = False
        table = self.services.frontends()
        by_ip = self.services.services_by_ip()
        usable = {ip for ip in by_ip if not self._shadowed(ip)}
        try:
            given, _ = self.frontend_identities.update(usable)
        except ServiceIdentitiesExhausted as err:
            log.warning("service frontends not translated: %s", err)
            given = {}
        numbers = self.frontend_identities.by_ip
        overlay = {str(host_network(ipaddress.ip_address(ip))): n for ip, n in numbers.items()}
        changed = set(self._overlay) | set(overlay)
        changed -= {p for p in changed if self._overlay.get(p) == overlay.get(p)}
        self._overlay = overlay
        names = {ip: "/".join(keys[0]) for ip, keys in by_ip.items()}
        self.frontends = frontends_by_identity(table, numbers, names)
        self._backend_ips = {b.ip for backends in table.values() for b in backends}
        labels = {numbers[ip]: service_labels(by_ip[ip]) for ip in numbers}
        for number, text in labels.items():
            if self._service_labels.get(number) != text:
                pending.identity_labels[number] = text
        for number in set(self._service_labels) - set(labels):
            pending.identity_labels[number] = ()
        self._service_labels = labels
        if given:
            log.info("service identities", extra={"fields": {"given": len(given)}})
        return changed

    def _shadowed(self, ip: str) -> bool:
        """A frontend address that is also a pod's or a node's (an external IP set to a node
        address): that address's own identity stays, so only CIDR identities are shadowed."""
        network = host_network(ipaddress.ip_address(ip))
        if self.ipcache.get(str(network)) is None:
            return False
        return network not in self.engine.identities.cidr_ids

    def identity_of(self, namespace: str, name: str) -> int | None:
        return self.engine.pod_identity.get(PodKey(namespace, name))

    def ready_for(self, namespace: str, name: str) -> bool:
        """The pod is compiled: its identity is known and its entries computed."""
        return self.synced and PodKey(namespace, name) in self.engine.pod_identity

    def local_policy(
        self, namespace: str, name: str, *, services: bool = True
    ) -> EndpointPolicy | None:
        """The pod's engine policy as this agent enforces it: the host allowed in unless
        allow-localhost is "policy"; with `services`, an enforced egress decides each Service
        frontend by its backends (`serviceegress`)."""
        key = PodKey(namespace, name)
        if key not in self.engine.pod_identity:
            return None
        policy = self.engine.endpoint_policy(key)
        ingress, egress = policy.ingress, policy.egress
        if self.allow_localhost:
            ingress = with_localhost(ingress)
        if services and egress.enforced and self.frontends:
            egress = self._with_services(key, egress)
        if ingress is policy.ingress and egress is policy.egress:
            return policy
        return EndpointPolicy(key, policy.identity, policy.audit, ingress, egress)

    def _with_services(self, key: PodKey, egress: DirectionPolicy) -> DirectionPolicy:
        """`egress` with the frontends' entries, memoised: only the pod's own addresses among
        the backends make it differ from another pod's with the same policy."""
        pod = self.engine.pods.get(key)
        own = {str(ip) for ip in pod.ips} if pod is not None else set()
        own.update(self.local_ips.get((key.namespace, key.name), ()))
        memo_key = (id(egress), frozenset(own & self._backend_ips))
        cached = self._derived.get(memo_key)
        if cached is not None and cached[0] is egress:
            return cached[1]
        derived = with_service_entries(egress, self.frontends, own, self.ipcache.identity_of)
        if len(self._derived) >= DERIVED_MEMO_MAX:  # old policies must not be kept alive
            self._derived.clear()
        self._derived[memo_key] = (egress, derived)
        return derived

    def egress_enforced(self, namespace: str, name: str) -> bool:
        """Whether the pod's egress is enforced (its service entries matter)."""
        identity = self.engine.pod_identity.get(PodKey(namespace, name))
        compiled = self.engine.compiled.get(identity) if identity is not None else None
        return compiled is not None and compiled.egress.enforced

    def new_rules(self) -> list[RuleFacts]:
        """Rule ids the engine made since the last call, with the policy each stands for."""
        registry = self.engine.registry
        facts: list[RuleFacts] = []
        for rule_id in range(self._rules_seen + 1, len(registry) + 1):
            info = registry.info(rule_id)
            if info.origin is Origin.RULE and info.ref is not None:
                p = info.ref.policy
                facts.append(RuleFacts(rule_id, p.kind, p.namespace, p.name))
            elif info.origin is Origin.DEFAULT_DENY and info.isolated_by:
                p = info.isolated_by[0]
                facts.append(RuleFacts(rule_id, p.kind, p.namespace, p.name, default_deny=True))
        self._rules_seen = len(registry)
        return facts

    def identity_labels(self, identity: int) -> tuple[str, ...]:
        if SERVICE_IDENTITY_MIN <= identity <= SERVICE_IDENTITY_MAX:
            return self._service_labels.get(identity, ())
        labels = self.identities.labels.get(identity) or self.engine.identities.labels.get(identity)
        if labels is None:
            return ()
        return tuple(f"{labels.source}:{k}={v}" for k, v in labels.items)

    def pod_facts(self, namespace: str, name: str) -> PodFacts | None:
        key = PodKey(namespace, name)
        pod = self.engine.pods.get(key)
        identity = self.engine.pod_identity.get(key)
        raw = self.raw.get("Pod", {}).get((namespace, name))
        if pod is None or identity is None or raw is None:
            return None
        return PodFacts(
            namespace,
            name,
            pod.node,
            identity,
            tuple(str(ip) for ip in pod.ips),
            self.identity_labels(identity),
            workloads_of(raw),
        )

    def pod_uid(self, namespace: str, name: str) -> str:
        raw = self.raw.get("Pod", {}).get((namespace, name)) or {}
        return str((raw.get("metadata") or {}).get("uid") or "")

    def all_pods(self) -> list[tuple[str, str]]:
        return [(k.namespace, k.name) for k in self.engine.pod_identity]

    @_locked
    def l7_http_rules(
        self, source: str, destination: str, port: int, ingress: bool
    ) -> tuple[HttpRule, ...]:
        """The HTTP rules the node's L7 proxy enforces on a TCP connection source ->
        destination:port redirected on that side (the merged rules of explain); () allows
        nothing.  Called from the proxy's thread, under the lock."""
        if ingress:
            side = explain(self.engine, source, destination, port).ingress
            return side.l7_rules.http if side is not None else ()
        side = self._egress_side(source, destination, port, PROTO_TCP, "TCP")
        return side.l7_rules.http if side is not None else ()

    @_locked
    def l7_dns_rules(
        self, source: str, destination: str, port: int, protocol: str = ""
    ) -> tuple[DnsRule, ...]:
        """The rules.dns the node's DNS proxy enforces on a query source -> destination:port
        over `protocol` ("UDP" or "TCP": the merged rules of explain's egress side); () allows
        nothing.  Without a protocol, UDP's rules, else TCP's.  Called from the proxy's
        thread, under the lock."""
        protocols = ((PROTO_UDP, "UDP"), (PROTO_TCP, "TCP"))
        for number, name in protocols:
            if protocol and name != protocol:
                continue
            side = self._egress_side(source, destination, port, number, name)
            if side is not None and side.allowed and side.l7_rules.dns:
                return side.l7_rules.dns
        return ()

    @_locked
    def l7_rule_id(
        self, source: str, destination: str, port: int, protocol: str, ingress: bool
    ) -> int:
        """The rule that allows source -> destination:port (protocol "TCP" or "UDP") on that
        side: its policy decided the proxied connection, and names its L7 flows; 0 when no
        rule allows it.  Called from the proxies' threads, under the lock."""
        if ingress:
            side = explain(self.engine, source, destination, port, protocol).ingress
        else:
            number = PROTO_UDP if protocol == "UDP" else PROTO_TCP
            side = self._egress_side(source, destination, port, number, protocol)
        return side.rule_id if side is not None and side.allowed else 0

    def _egress_side(
        self, source: str, destination: str, port: int, protocol: int, protocol_name: str
    ) -> DirectionVerdict | None:
        """explain's egress side of source -> destination:port.  A Service frontend (the
        kube-dns ClusterIP a pod asks) is decided by its backends, as `serviceegress` decides
        its entry: the engine knows the pods, and kube-proxy translates only after the
        redirect.  The first allowing backend's side, else the first backend's."""
        targets = self._frontend_backends(destination, port, protocol, source)
        sides = [
            explain(self.engine, source, ip, target, protocol_name).egress
            for ip, target in targets or [(destination, port)]
        ]
        allowing = [side for side in sides if side is not None and side.allowed]
        return allowing[0] if allowing else sides[0]

    def _frontend_backends(
        self, address: str, port: int, protocol: int, source: str
    ) -> list[tuple[str, int]]:
        """(address, target port) of the backends behind a Service frontend, the source
        itself left out; [] when address:port is no frontend."""
        for service in self.frontends:
            frontend = service.frontend
            if (frontend.ip, frontend.port, frontend.protocol) == (address, port, protocol):
                return [(b.ip, b.port) for b in service.backends if b.ip != source]
        return []

    @_locked
    def address_identity(self, address: str) -> int:
        """The security identity of an address (world when nothing more specific has it)."""
        return resolve_endpoint(self.engine, address).identity or int(ReservedIdentity.WORLD)

    def enforcing_policies(self) -> list[tuple[str, str, str, int, str]]:
        """(kind, namespace, name, generation, uid) of every policy in force here."""
        out: list[tuple[str, str, str, int, str]] = []
        for key in self.engine.policies:
            meta = (self.raw.get(key.kind, {}).get((key.namespace, key.name)) or {}).get(
                "metadata"
            ) or {}
            generation = int(meta.get("generation") or 0)
            out.append((key.kind, key.namespace, key.name, generation, str(meta.get("uid", ""))))
        return out
