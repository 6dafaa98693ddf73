"""Realizing what the compiler decided in the node's datapath, through the adapter.

`NodeSync` is the join: it takes the compiler's pending changes, writes ipcache diffs and
the policies of the local endpoints that may have changed (each translated by
`septum.agent.adapter`, written only when it differs), keeps the Observer's metadata in
step, and completes CNI ADDs once a pod's identity and policy are ready.  It imports
neither the engine nor the datapath itself: the compiler and the endpoints module do.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from septum.agent import adapter
from septum.agent.compiler import Compiler
from septum.agent.endpoints import EndpointRecord, LocalEndpoints
from septum.agent.facts import EndpointFacts
from septum.agent.hostendpoints import HostFirewall
from septum.agent.metadata import ClusterMetadata

if TYPE_CHECKING:
    from septum.agent.l7.service import L7ProxyService

log = logging.getLogger(__name__)

CNI_WAIT_S: Final = 15.0


class CniFailure(RuntimeError):
    """A CNI ADD that cannot complete (the kubelet retries it)."""


@dataclass
class CniAdd:
    container_id: str
    namespace: str
    name: str
    interface: str
    ips: tuple[str, ...]
    deadline: float
    done: asyncio.Future[EndpointRecord] = field(repr=False)


class NodeSync:
    def __init__(
        self,
        compiler: Compiler,
        endpoints: LocalEndpoints,
        metadata: ClusterMetadata,
        host: HostFirewall | None = None,
        l7: L7ProxyService | None = None,
    ) -> None:
        self.compiler = compiler
        self.endpoints = endpoints
        self.metadata = metadata
        self.host = host  # the host firewall, when enabled
        # The node's L7 proxies, when running: L7 entries redirect to their ports, and a
        # batch that writes policy drops the rules they cached.  None: L7 entries are plain
        # allows (as before the proxy existed).
        self.l7 = l7
        self.revision = 1  # this agent's policy revision: bumped by every batch that writes
        self.departed_ips: list[str] = []  # of pods removed by forget_departed
        self.waiting: list[CniAdd] = []
        self.policy_writes = 0
        self.ipcache_writes = 0

    # ---- the loop's step ---------------------------------------------------------------

    def reconcile(self) -> None:
        """Write everything the compiler has pending, then finish the CNI ADDs it allows."""
        pending = self.compiler.take()
        writes = self.endpoints.write_ipcache(pending.ipcache_upserts, pending.ipcache_deletes)
        self.ipcache_writes += writes
        wrote = writes > 0
        for number, labels in pending.identity_labels.items():
            if labels:
                self.metadata.set_identity(number, labels)
            else:
                self.metadata.remove_identity(number)
        for record in list(self.endpoints.records.values()):
            key = (record.namespace, record.name)
            if (
                pending.all_dirty
                or key in pending.dirty
                or (pending.egress_dirty and self.compiler.egress_enforced(*key))
            ):
                wrote |= self._realize(record)
        wrote |= self._realize_host()
        if wrote:
            self.revision += 1
            if self.l7 is not None:
                self.l7.invalidate()
        for rule in self.compiler.new_rules():
            self.metadata.add_rule(rule)
        for namespace, name in sorted(pending.pods):
            self._publish_pod(namespace, name)
        self._complete_cni_adds()

    def _realize(self, record: EndpointRecord) -> bool:
        """Write the endpoint's compiled policy if it changed; True when written."""
        policy = self.compiler.local_policy(record.namespace, record.name)
        if policy is None:
            return False  # not (yet) known to the engine: its last written policy stays
        if policy.identity != record.identity:
            self.endpoints.set_identity(record.container_id, policy.identity)
        if self.l7 is None:
            desired = adapter.endpoint_policy(policy)
        else:
            ports = self.l7.ports
            desired = adapter.endpoint_policy(policy, ports.egress, ports.ingress, ports.dns)
        changed = self.endpoints.write_policy(record.endpoint_id, desired, policy.audit)
        if changed:
            self.policy_writes += 1
        return changed

    def _realize_host(self) -> bool:
        """Write the host endpoint's policy if it changed (nodes are few: asked every
        batch); a failure is logged and tried again next batch."""
        if self.host is None:
            return False
        try:
            return self.host.realize(self.compiler)
        except Exception as err:  # noqa: BLE001 - the pods' writes go on; retried next batch
            log.warning("host policy not written: %s", err)
            return False

    def _publish_pod(self, namespace: str, name: str) -> None:
        facts = self.compiler.pod_facts(namespace, name)
        if facts is None:
            self.metadata.remove_pod(namespace, name)
            return
        local = self.endpoints.by_pod(namespace, name)
        self.metadata.upsert_pod(facts, local[0].endpoint_id if local else 0)

    # ---- start-up ----------------------------------------------------------------------

    def forget_departed(self) -> None:
        """After the first sync: pods recorded locally that the cluster no longer has (they
        went while the agent was down) leave the datapath."""
        pods = self.compiler.raw.get("Pod", {})
        for record in list(self.endpoints.records.values()):
            if (record.namespace, record.name) not in pods:
                log.info("endpoint %s/%s: pod gone; removed", record.namespace, record.name)
                self.endpoints.remove(record.container_id)
                self.departed_ips.extend(ip for ip in (record.ipv4, record.ipv6) if ip)

    def purge_stale(self) -> None:
        """After the first sync is written: pinned endpoints no pod of the cluster holds now
        (an earlier agent's, whose pod went while no agent ran) leave the datapath, with
        the ipcache entries of their addresses that no live pod took."""
        removed = self.endpoints.purge_unregistered(self.departed_ips)
        self.departed_ips.clear()
        if removed:
            log.info("stale datapath state removed", extra={"fields": {"removed": removed}})

    # ---- CNI ---------------------------------------------------------------------------

    def cni_add(
        self, container_id: str, namespace: str, name: str, interface: str, ips: tuple[str, ...],
        gateways: tuple[str, ...], wait_s: float = CNI_WAIT_S,
    ) -> asyncio.Future[EndpointRecord]:  # fmt: skip
        """Start a CNI ADD: done once the pod's endpoint holds its compiled policy."""
        self.compiler.add_host_addresses(gateways)
        self.compiler.set_local_ips(namespace, name, ips)
        done: asyncio.Future[EndpointRecord] = asyncio.get_running_loop().create_future()
        self.waiting.append(
            CniAdd(container_id, namespace, name, interface, ips, time.monotonic() + wait_s, done)
        )
        return done

    def cni_del(self, container_id: str) -> None:
        record = self.endpoints.remove(container_id)
        if record is not None:
            if not self.endpoints.by_pod(record.namespace, record.name):
                self.compiler.forget_local(record.namespace, record.name)
        for add in [a for a in self.waiting if a.container_id == container_id]:
            self.waiting.remove(add)
            if not add.done.done():
                add.done.set_exception(CniFailure("deleted before its ADD completed"))

    def _complete_cni_adds(self) -> None:
        now = time.monotonic()
        for add in list(self.waiting):
            if add.done.done():
                self.waiting.remove(add)
                continue
            if self.compiler.ready_for(add.namespace, add.name):
                self.waiting.remove(add)
                try:
                    add.done.set_result(self._attach(add))
                except Exception as err:  # noqa: BLE001 - reported to the CNI plugin
                    log.warning("CNI ADD %s/%s failed: %s", add.namespace, add.name, err)
                    add.done.set_exception(CniFailure(str(err)))
            elif now >= add.deadline:
                self.waiting.remove(add)
                add.done.set_exception(
                    CniFailure(
                        f"pod {add.namespace}/{add.name}: no identity or policy within "
                        "the CNI wait (is the operator running?)"
                    )
                )

    def _attach(self, add: CniAdd) -> EndpointRecord:
        identity = self.compiler.identity_of(add.namespace, add.name)
        assert identity is not None
        record = self.endpoints.add(
            add.container_id, add.namespace, add.name, add.interface, add.ips, identity
        )
        if self._realize(record):
            self.revision += 1
        self._publish_pod(add.namespace, add.name)
        log.info(
            "endpoint %d for %s/%s on %s (identity %d)",
            record.endpoint_id,
            add.namespace,
            add.name,
            add.interface,
            identity,
            extra={"fields": {"pod": f"{add.namespace}/{add.name}"}},
        )
        return record

    # ---- status ------------------------------------------------------------------------

    def endpoint_facts(self) -> list[EndpointFacts]:
        facts: list[EndpointFacts] = []
        for record in self.endpoints.records.values():
            # status reads only what is enforced: the service entries need not be derived
            policy = self.compiler.local_policy(record.namespace, record.name, services=False)
            identity = record.identity
            facts.append(
                EndpointFacts(
                    namespace=record.namespace,
                    name=record.name,
                    endpoint_id=record.endpoint_id,
                    identity=identity,
                    identity_labels=self.compiler.identity_labels(identity),
                    node=self.compiler.node,
                    ips=tuple(ip for ip in (record.ipv4, record.ipv6) if ip),
                    ingress_enforced=bool(policy and policy.ingress.enforced),
                    egress_enforced=bool(policy and policy.egress.enforced),
                    audit=bool(policy and policy.audit),
                    revision=self.endpoints.revision(record.endpoint_id),
                    state="ready" if policy is not None else "waiting-for-identity",
                    pod_uid=self.compiler.pod_uid(record.namespace, record.name),
                )
            )
        return facts
