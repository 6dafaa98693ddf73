"""`septum agent`: the per-node process, wired together.

Start-up order is what keeps pods enforced across restarts: the datapath is loaded
reusing the node's pins and the recorded endpoints are adopted (their pinned policies
keep enforcing) before anything else; the CNI socket and conflist come next (ADDs wait
for the first sync); then the watches; after the first complete list the engine is
loaded once (freeze_gc) and every local endpoint's policy written.  From then on the
loop applies events in batches and writes diffs.  SIGTERM stops the loop and releases
this process's handles: pins, attached programs and the conflist stay.  Only when the
agent's DaemonSet (`--owner-daemonset`) is gone is a SIGTERM an uninstall (uninstall.py):
then the node is left as Septum found it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from kubernetes_asyncio.client import ApiClient

from septum.agent import cluster, cni, hostendpoints, hostmounts, uninstall
from septum.agent.cniserver import CniServer
from septum.agent.compiler import Compiler
from septum.agent.endpoints import LocalEndpoints, local_addresses
from septum.agent.errors import AgentError
from septum.agent.health import HealthServer
from septum.agent.hostendpoints import HostFirewall
from septum.agent.l7.fqdncache import FqdnConfig
from septum.agent.l7.proxyrouting import release_proxy_routing
from septum.agent.metadata import ClusterMetadata
from septum.agent.observerconfig import ObserverOptions
from septum.agent.observerpeers import ObserverPeers
from septum.agent.status import StatusWriter
from septum.agent.sync import NodeSync

if TYPE_CHECKING:
    from septum.agent.l7.dnsservice import DnsProxyService
    from septum.agent.l7.httpproxy import HttpRecord
    from septum.agent.l7.l7flows import RuleOf
    from septum.agent.l7.service import L7ProxyService
from septum.dataplane import DatapathConfig
from septum.dataplane.errors import ProxyRedirectError
from septum.dataplane.observe.history import HistoryConfig, ServerSettings, StoreError
from septum.dataplane.observe.history.export import ExportConfig
from septum.dataplane.observe.history.otlp import OtlpConfig
from septum.dataplane.observe.metadata import Metadata
from septum.dataplane.observe.node import NodeObserver, ObserveConfig, septum_version
from septum.dataplane.observe.peers import PeerDirectory
from septum.dataplane.observe.pipeline import EventSource
from septum.dataplane.observe.sources import DatapathSource

log = logging.getLogger("septum.agent")

BATCH_WAIT_S: Final = 0.5
STATUS_INTERVAL_S: Final = 10.0


@dataclass(frozen=True)
class AgentOptions:
    node: str
    kubeconfig: str | None = None
    cni_conf_dir: Path | None = None
    cni_bin_dir: Path | None = None
    state_dir: Path = Path("/var/lib/septum")
    run_dir: Path = Path("/run/septum")
    allow_localhost: Literal["always", "policy"] = "always"
    health_port: int | None = None
    health_socket: Path | None = None
    # the Hubble Observer: unix socket, TCP (mutual TLS, or plaintext when chosen), peers
    observer: ObserverOptions = ObserverOptions()
    ct_gc_interval_s: float = 60.0
    log_format: Literal["json", "text"] = "json"
    log_level: str = "INFO"
    cluster_name: str = "default"
    report_status: bool = True
    # the host firewall (Cilium's --enable-host-firewall): host policies enforced on the
    # node's own interfaces (all carrying its addresses, or these), audit: would-be drops pass
    host_firewall: bool = False
    # the node's HTTP proxies for rules.http (septum.agent.l7.service); off: L7 entries are
    # plain L3/L4 allows, as before the proxy existed
    l7_proxy: bool = False
    # the DNS proxy's name-to-address learning for toFQDNs (Cilium's --tofqdns-* options)
    tofqdns: FqdnConfig = field(default_factory=FqdnConfig)
    host_audit: bool = False
    # pod-to-pod packets through the node's stack (Cilium's legacy host routing); off: the
    # source pod's program delivers them (bpf/lib/localdelivery.h)
    host_legacy_routing: bool = False
    host_interfaces: tuple[str, ...] = ()
    # flow history (septum.dataplane.observe.history): days of flows behind GetFlows, in an
    # embedded store in this directory; None keeps the ring only, as Hubble
    flow_history_dir: Path | None = None
    # ... or on a ClickHouse server or cluster (the same schema and queries); tables created
    # unless the DDL is the operator's (a cluster: schema.cluster_ddl)
    flow_history_server: ServerSettings | None = None
    flow_history_create_tables: bool = True
    # flow logs leaving the node, as Hubble's exporters: a rotating file of Hubble's JSON
    # lines, OTLP logs to a collector (septum.dataplane.observe.history.export / otlp)
    flow_exports: tuple[ExportConfig | OtlpConfig, ...] = ()
    # the DaemonSet that runs this agent: gone (or being deleted) at SIGTERM = an uninstall;
    # None: every SIGTERM is a restart (pins, links, conflist stay)
    owner_daemonset: uninstall.Owner | None = None

    def check(self) -> None:
        """Raise AgentConfigError, naming the flag, for options that cannot work."""
        self.observer.check()

    @property
    def node_run_dir(self) -> Path:
        return self.run_dir / self.node

    @property
    def node_state_dir(self) -> Path:
        return self.state_dir / self.node

    @property
    def agent_socket(self) -> Path:
        return self.node_run_dir / "agent.sock"


# ---- logging -----------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, msg, and the record's `fields`."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            line.update(fields)
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def setup_logging(log_format: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiohttp", "kubernetes_asyncio", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# ---- the agent ---------------------------------------------------------------------------


class Agent:
    def __init__(self, options: AgentOptions) -> None:
        self.options = options
        self.stopping = asyncio.Event()
        self.queue: asyncio.Queue[cluster.QueueItem | None] = asyncio.Queue()
        self.synced_kinds: set[str] = set()
        self.ready = False
        self.api_reachable: dict[str, bool] = {}
        self.endpoints: LocalEndpoints | None = None
        self.sync: NodeSync | None = None
        self.host: HostFirewall | None = None
        self.l7: L7ProxyService | None = None
        self.dns: DnsProxyService | None = None
        self.observer: NodeObserver | None = None
        self.observer_peers: ObserverPeers | None = None
        self.metadata = ClusterMetadata(options.cluster_name)
        self.compiler = Compiler(
            options.node,
            allow_localhost=options.allow_localhost == "always",
            cluster_name=options.cluster_name,
        )

    # ---- readiness ---------------------------------------------------------------------

    def readiness(self) -> tuple[bool, dict[str, object]]:
        pending = sorted({r.kind for r in cluster.ALL_RESOURCES} - self.synced_kinds)
        return self.ready, {
            "node": self.options.node,
            "unsynced": pending,
            "apiReachable": all(self.api_reachable.values()) if self.api_reachable else False,
            "endpoints": len(self.endpoints.records) if self.endpoints else 0,
            "policyRevision": self.sync.revision if self.sync else 0,
        }

    # ---- CNI ---------------------------------------------------------------------------

    async def on_cni_add(self, request: Mapping[str, Any]) -> None:
        assert self.sync is not None
        args = request.get("args") or {}
        namespace, name = args.get("K8S_POD_NAMESPACE"), args.get("K8S_POD_NAME")
        if not namespace or not name:
            raise ValueError("CNI_ARGS lacks K8S_POD_NAMESPACE/K8S_POD_NAME")
        prev = request.get("prevResult") or {}
        host_ifs = [i["name"] for i in prev.get("interfaces") or [] if not i.get("sandbox")]
        if not host_ifs:
            raise ValueError("prevResult names no host-side interface (is this a veth network?)")
        ips = tuple(str(ip["address"]).split("/")[0] for ip in prev.get("ips") or [])
        gateways = tuple(str(ip["gateway"]) for ip in prev.get("ips") or [] if ip.get("gateway"))
        done = self.sync.cni_add(
            str(request.get("containerID")), namespace, name, host_ifs[0], ips, gateways
        )
        self.queue.put_nowait(None)
        await done

    async def on_cni_del(self, request: Mapping[str, Any]) -> None:
        assert self.sync is not None
        self.sync.cni_del(str(request.get("containerID")))

    # ---- loops -------------------------------------------------------------------------

    async def _events(self) -> None:
        """Apply watched events in batches; reconcile after each batch."""
        assert self.sync is not None
        while True:
            items: list[cluster.QueueItem | None] = []
            with contextlib.suppress(TimeoutError):
                items.append(await asyncio.wait_for(self.queue.get(), BATCH_WAIT_S))
            while not self.queue.empty():
                items.append(self.queue.get_nowait())
            for item in items:
                if item is None:  # a wake-up (a CNI ADD waits)
                    continue
                if isinstance(item, cluster.Synced):
                    self.synced_kinds.add(item.resource.kind)
                else:
                    if item.resource is cluster.NODES and self.observer_peers is not None:
                        self.observer_peers.apply(item.type, item.obj)
                    self.compiler.apply(item.resource.kind, item.type, item.obj)
            if not self.compiler.synced:
                if self.synced_kinds >= {r.kind for r in cluster.ALL_RESOURCES}:
                    self._first_sync()
                continue
            self.sync.reconcile()

    def _first_sync(self) -> None:
        assert self.sync is not None and self.endpoints is not None
        self.compiler.load()
        self.sync.forget_departed()
        self.sync.reconcile()
        self.sync.purge_stale()
        self.ready = True
        log.info(
            "first sync written",
            extra={
                "fields": {
                    "endpoints": len(self.endpoints.records),
                    "policyWrites": self.sync.policy_writes,
                    "ipcacheWrites": self.sync.ipcache_writes,
                    "recreatedMaps": list(self.endpoints.recreated_maps),
                }
            },
        )

    async def _conntrack_gc(self) -> None:
        assert self.endpoints is not None
        while True:
            await asyncio.sleep(self.options.ct_gc_interval_s)
            try:
                removed = self.endpoints.gc_conntrack()
            except Exception as err:  # noqa: BLE001 - try again next round
                log.warning("conntrack gc: %s", err)
                continue
            if removed:
                log.info("conntrack gc", extra={"fields": {"removed": removed}})

    async def _status(self, writer: StatusWriter) -> None:
        assert self.sync is not None and self.endpoints is not None
        version = septum_version()
        while True:
            await asyncio.sleep(2.0 if not self.ready else STATUS_INTERVAL_S / 5)
            if not self.ready:
                continue
            try:
                await writer.endpoints(self.sync.endpoint_facts())
                await writer.policies(self.compiler.enforcing_policies())
                maps = self.endpoints.map_usage()
                await writer.node_status(self.ready, self.sync.revision, maps, version)
                await writer.map_events(maps)
            except Exception as err:  # noqa: BLE001 - status is best effort; next round
                log.info("status report: %r", err)

    def _on_watch_state(self, kind: str, ok: bool) -> None:
        if self.api_reachable.get(kind) != ok:
            log.info("watch %s %s", kind, "connected" if ok else "disconnected")
        self.api_reachable[kind] = ok

    # ---- run ---------------------------------------------------------------------------

    def _open_datapath(self) -> None:
        options = self.options
        self.endpoints = LocalEndpoints(
            DatapathConfig(node_name=options.node, host_legacy_routing=options.host_legacy_routing),
            options.node_state_dir,
        )
        restored = self.endpoints.restore()
        self.compiler.add_host_addresses(local_addresses())
        self.host = self._host_firewall()
        self.l7 = self._l7_proxy()
        self.dns = self._dns_proxy()
        self.sync = NodeSync(self.compiler, self.endpoints, self.metadata, self.host, self.l7)
        log.info(
            "datapath loaded",
            extra={
                "fields": {
                    "pinDir": str(self.endpoints.datapath.pin_dir),
                    "adopted": len(restored),
                    "recreatedMaps": list(self.endpoints.recreated_maps),
                }
            },
        )

    def _l7_proxy(self) -> L7ProxyService | None:
        """The node's HTTP proxies (egress and ingress), when --l7-proxy: their rules are
        the engine's for each connection (explain), their records become L7 flows in the
        Observer once it runs."""
        if not self.options.l7_proxy:
            # an earlier agent's (the chart's l7Proxy turned off): nothing is redirected now
            try:
                if release_proxy_routing(self.options.node_state_dir):
                    log.info("L7 proxy routing of an earlier agent removed (no --l7-proxy)")
            except (ProxyRedirectError, OSError) as err:  # e.g. no iptables: enforcement goes on
                log.warning("L7 proxy routing of an earlier agent not removed: %s", err)
            return None
        from septum.agent.l7.l7flows import L7FlowPublisher
        from septum.agent.l7.service import L7ProxyService

        publishers: dict[int, L7FlowPublisher] = {}
        rule_of = self._l7_rule_of()

        def on_record(record: HttpRecord, ingress: bool) -> None:
            observer = self.observer
            if observer is None:
                return
            publisher = publishers.get(id(observer))
            if publisher is None:
                publisher = L7FlowPublisher(
                    observer.ring,
                    node_name=self.options.node,
                    metadata=observer.metadata,
                    registry=observer.registry,
                    rule_of=rule_of,
                )
                publishers[id(observer)] = publisher
            publisher.publish_http(record, ingress=ingress)

        compiler = self.compiler
        service = L7ProxyService(
            compiler.l7_http_rules,
            compiler.address_identity,
            on_record=on_record,
            state_dir=self.options.node_state_dir,
        )
        service.start()
        ports = service.ports
        log.info("L7 proxies on ports %d (egress), %d (ingress)", ports.egress, ports.ingress)
        return service

    def _l7_rule_of(self) -> RuleOf:
        """Which rule decided a proxied connection (its L7 flows name that rule's policy),
        memoised per policy revision."""
        from septum.agent.l7.l7flows import per_revision

        return per_revision(
            self.compiler.l7_rule_id, lambda: self.sync.revision if self.sync is not None else 0
        )

    def _dns_proxy(self) -> DnsProxyService | None:
        """The node's DNS proxy beside the HTTP proxies (--l7-proxy): UDP and TCP on its own
        port, where entries whose L7 rules are rules.dns send their connections; toFQDNs from
        what it learns, restored from the node's state directory first (dnsagent)."""
        if self.l7 is None or self.endpoints is None:
            return None
        from septum.agent.l7.dnsagent import start_dns_proxy

        metadata = self.metadata

        def endpoint_of(address: str) -> str | None:
            info = metadata.endpoint_by_ip(address)
            return f"{info.namespace}/{info.pod_name}" if info is not None else None

        def reconcile() -> None:
            if self.sync is not None and self.compiler.synced:
                self.sync.reconcile()

        service = start_dns_proxy(
            self.compiler,
            port=self.l7.ports.dns,
            state_dir=self.options.node_state_dir,
            endpoint_of=endpoint_of,
            reconcile=reconcile,
            revision=lambda: self.sync.revision if self.sync is not None else 0,
            conntrack=self.endpoints.datapath,
            observer=lambda: self.observer,
            node_name=self.options.node,
            config=self.options.tofqdns,
            rule_of=self._l7_rule_of(),
        )
        from septum.agent.l7.dnsagent import LearnedNames

        self.metadata.fqdn_names = LearnedNames(service.cache)  # --fqdn on L3/L4 flows
        log.info("DNS proxy on UDP and TCP port %d", service.port)
        return service

    def _host_firewall(self) -> HostFirewall | None:
        """Attach the host firewall before the agent opens any connection of its own (so
        conntrack knows them when a host policy arrives), or remove one an earlier agent
        left when it is disabled."""
        assert self.endpoints is not None
        options = self.options
        interfaces = hostendpoints.node_interfaces()
        if options.host_interfaces:
            found = {i.name: i for i in interfaces}
            interfaces = [
                found.get(name, hostendpoints.NodeInterface(name, ()))
                for name in options.host_interfaces
            ]
        if not options.host_firewall:
            hostendpoints.release_leftovers(self.endpoints.datapath, interfaces)
            return None
        host = HostFirewall(self.endpoints.datapath, interfaces, options.host_audit)
        host.start()
        return host

    def _start_observer(self) -> None:
        assert self.endpoints is not None
        options = self.options
        observer = options.observer
        if observer.socket is None and observer.address is None:
            return
        history = None
        if options.flow_history_dir is not None:
            history = HistoryConfig(directory=options.flow_history_dir)
        elif options.flow_history_server is not None:
            history = HistoryConfig(
                server=options.flow_history_server,
                create_tables=options.flow_history_create_tables,
            )
        # peer.Peer/Notify lists every node when others can reach this one (TCP)
        directory = PeerDirectory() if observer.address is not None else None
        config = ObserveConfig(
            node_name=options.node,
            listen=observer.listen(),
            history=history,
            exports=options.flow_exports,
            advertised_address=observer.advertise_address or "",
            tls_server_name=observer.server_name(options.node, options.cluster_name),
        )
        self.observer = node_observer(
            config, DatapathSource(self.endpoints.datapath), self.metadata, directory
        )
        self.observer.start()
        if directory is not None and self.observer.tcp_port:
            self.observer_peers = ObserverPeers(
                directory,
                observer,
                options.node,
                options.cluster_name,
                self.observer.tcp_port,
                self.observer.service.node.address,
                self._advertise,
            )

    def _advertise(self, address: str) -> None:
        """Where this node's Observer is announced (GetNodes, Notify), once its Node is known."""
        assert self.observer is not None
        self.observer.service.node.address = address

    async def run(self) -> None:
        options = self.options
        self._open_datapath()
        assert self.endpoints is not None
        health = HealthServer(self.readiness, options.health_port, options.health_socket)
        server = CniServer(options.agent_socket, self.on_cni_add, self.on_cni_del)
        tasks: list[asyncio.Task[None]] = []
        api = None
        uninstalling = False
        try:
            self._start_observer()
            await health.start()
            await server.start()
            if options.cni_conf_dir is not None and options.cni_bin_dir is not None:
                conflist = cni.install(
                    options.cni_conf_dir, options.cni_bin_dir, options.agent_socket, sys.executable
                )
                log.info("CNI chained", extra={"fields": {"conflist": str(conflist)}})
            api = await cluster.load_api_client(options.kubeconfig)
            for resource in cluster.ALL_RESOURCES:
                watch = cluster.ResourceWatch(
                    api, resource, self.queue, on_state=self._on_watch_state
                )
                tasks.append(asyncio.create_task(watch.run(), name=f"watch-{resource.kind}"))
            tasks.append(asyncio.create_task(self._events(), name="events"))
            tasks.append(asyncio.create_task(self._conntrack_gc(), name="conntrack-gc"))
            if options.report_status:
                writer = StatusWriter(api, options.node)
                tasks.append(asyncio.create_task(self._status(writer), name="status"))
            stop = asyncio.create_task(self.stopping.wait())
            done, _ = await asyncio.wait([stop, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stop and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            if options.owner_daemonset is not None:
                uninstalling = await uninstall.owner_gone(api, options.owner_daemonset)
            if not uninstalling:
                log.info("stopping: the datapath keeps enforcing")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if uninstalling:
                self._unchain_cni()
            await server.stop()
            await health.stop()
            if self.dns is not None:
                self.dns.stop()
            if self.l7 is not None:
                self.l7.stop()
            if self.observer is not None:
                self.observer.stop()
            if uninstalling:
                assert api is not None
                await self._uninstall(api)
            else:
                self.endpoints.close()
            if api is not None:
                await api.close()

    # ---- uninstall ---------------------------------------------------------------------

    def _unchain_cni(self) -> None:
        """First of all: pods created from now on get the node's own network, unchained."""
        options = self.options
        if options.cni_conf_dir is None or options.cni_bin_dir is None:
            return
        try:
            removed = cni.uninstall(options.cni_conf_dir, options.cni_bin_dir)
        except OSError as err:
            log.error("uninstall: CNI chaining not removed: %s", err)
            return
        log.info("uninstall: CNI chaining removed", extra={"fields": {"removed": removed}})

    async def _uninstall(self, api: ApiClient) -> None:
        """Detach and unpin the node's datapath, delete its API objects, remove its run and
        state directories; each step runs even when an earlier one failed."""
        assert self.endpoints is not None
        options = self.options
        removed: list[str] = []
        local_pods = [(r.namespace, r.name) for r in self.endpoints.records.values()]
        try:
            # a host endpoint an earlier agent left (this one may not have taken it over yet)
            interfaces = (
                list(self.host.interfaces)
                if self.host is not None
                else (hostendpoints.node_interfaces())
            )
            hostendpoints.release_leftovers(self.endpoints.datapath, interfaces)
            removed += self.endpoints.teardown()
        except Exception as err:  # noqa: BLE001 - go on with the rest, say what stayed
            log.error("uninstall: datapath not fully removed: %r", err)
        try:  # whether or not this agent runs the proxies: an earlier one may have
            if release_proxy_routing(options.node_state_dir):
                removed.append("L7 proxy routing")
        except Exception as err:  # noqa: BLE001 - go on with the rest, say what stayed
            log.error("uninstall: L7 proxy routing not removed: %r", err)
        try:
            removed += await uninstall.delete_node_objects(api, options.node, local_pods)
        except Exception as err:  # noqa: BLE001 - the API may be going away too
            log.error("uninstall: API objects not deleted: %r", err)
        try:
            removed += uninstall.remove_directories([options.node_run_dir, options.node_state_dir])
        except OSError as err:
            log.error("uninstall: directories not removed: %s", err)
        log.info(
            "uninstall: the node is left as Septum found it", extra={"fields": {"removed": removed}}
        )


def node_observer(
    config: ObserveConfig,
    source: EventSource,
    metadata: Metadata,
    peers: PeerDirectory | None,
) -> NodeObserver:
    """The node's Observer; without its flow history when the store cannot be opened: an
    unreachable ClickHouse must not stop the node's enforcement (nor its pods' CNI ADDs), so
    the ring serves, as Hubble's does, and the log says what is missing."""
    try:
        return NodeObserver(config, source, metadata, peers=peers)
    except StoreError as err:
        log.error("flow history unavailable, serving the ring only: %s", err)
        return NodeObserver(replace(config, history=None), source, metadata, peers=peers)


def run(options: AgentOptions) -> int:
    """Run the agent until SIGTERM/SIGINT; returns the exit status."""
    setup_logging(options.log_format, options.log_level)
    try:
        # in a pod (no kubeconfig: the service account) the node's bpffs must be mounted
        hostmounts.join_host_mount_namespace(may_join=options.kubeconfig is not None)
    except AgentError as err:
        log.error("%s", err)
        return 1

    async def main() -> None:
        agent = Agent(options)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, agent.stopping.set)
        await agent.run()

    try:
        asyncio.run(main())
    except Exception:
        log.exception("agent failed")
        return 1
    return 0
