"""`septum operator`: the cluster-wide process.

Tasks of one asyncio loop:
- kopf (standalone: no kopf peering objects) watches namespaces, pods, nodes, policies and
  SeptumIdentities into the cluster view (handlers.py), in every replica;
- the leader elector holds or waits for the `septum-operator` Lease (leader.py);
- the reconciler, while this replica leads, allocates and collects identities and writes
  policy status (reconciler.py);
- an HTTP server answers /healthz and /readyz.

SIGTERM/SIGINT: kopf stops its watches, the reconciler stops, and a leader gives its lease
up so that another replica takes over at once. When the operator's Deployment
(`--owner-deployment`) is gone or being deleted, the SIGTERM is an uninstall instead: the
replica deletes every SeptumIdentity and the Lease (uninstall.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import kopf
from aiohttp import ClientError, web
from kubernetes_asyncio.client import ApiClient, CoordinationV1Api, CustomObjectsApi
from kubernetes_asyncio.client.exceptions import ApiException

from septum.operator import logs, uninstall
from septum.operator.cache import ClusterCache
from septum.operator.errors import ConfigError, describe
from septum.operator.handlers import build_registry
from septum.operator.identities import IdentityStore
from septum.operator.kube import DEFAULT_NAMESPACE, connect
from septum.operator.leader import LEASE_NAME, LeaderElector
from septum.operator.owner import Owner, OwnerState, settled_owner_state
from septum.operator.reconciler import Reconciler

log = logging.getLogger(__name__)

DEFAULT_HEALTH_PORT = 9234


@dataclass(frozen=True)
class Options:
    kubeconfig: Path | None = None
    namespace: str = DEFAULT_NAMESPACE
    cluster_name: str = "default"
    identity_gc_interval_s: float = 300.0
    health_port: int = DEFAULT_HEALTH_PORT  # 0: no health server
    health_address: str = "0.0.0.0"
    log_format: str = "json"
    leader_elect: bool = True
    lease_s: int = 15
    renew_s: float = 5.0
    retry_s: float = 2.0
    # the Deployment that runs this operator: gone (or being deleted) at SIGTERM = an
    # uninstall; None: every SIGTERM is a restart
    owner_deployment: Owner | None = None

    def check(self) -> None:
        if self.log_format not in ("json", "text"):
            raise ConfigError(f"--log-format: {self.log_format!r} is not json or text")
        if self.identity_gc_interval_s <= 0:
            raise ConfigError("--identity-gc-interval: must be positive")
        if not 0 <= self.health_port <= 65535:
            raise ConfigError(f"--health-port: {self.health_port} is out of range")
        if self.renew_s >= self.lease_s:
            raise ConfigError("the lease must last longer than the renewal interval")


def replica_identity() -> str:
    """Unique per process: two replicas on one host still tell each other apart."""
    return f"{socket.gethostname()}_{os.getpid()}_{uuid.uuid4().hex[:6]}"


def run(options: Options) -> int:
    """Run until SIGTERM/SIGINT; the exit code."""
    options.check()
    logs.configure(options.log_format)
    try:
        asyncio.run(_main(options))
    except ConfigError as err:
        log.error("%s", err)
        return 2
    return 0


async def _main(options: Options) -> None:
    connection = await connect(options.kubeconfig)
    api = connection.api_client()
    instance = replica_identity()
    started = asyncio.Event()
    cache = ClusterCache(cluster_name=options.cluster_name)
    identities = IdentityStore(CustomObjectsApi(api), on_change=lambda: reconciler.poke())
    elector: LeaderElector | None = None

    def leader() -> bool:
        # --no-leader-elect: this replica acts alone (one replica only).
        return elector.is_leader() if elector is not None else True

    reconciler = Reconciler(
        api,
        cache,
        identities,
        is_leader=leader,
        gc_grace_s=options.identity_gc_interval_s,
        instance=instance,
    )
    cache.on_change = reconciler.poke
    if options.leader_elect:
        elector = LeaderElector(
            CoordinationV1Api(api),
            options.namespace,
            instance,
            lease_s=options.lease_s,
            renew_s=options.renew_s,
            retry_s=options.retry_s,
            on_change=reconciler.leadership_changed,
        )

    def ready() -> bool:
        return started.is_set() and (elector is None or elector.attempted.is_set())

    stop = asyncio.Event()
    failed = asyncio.Event()
    runner = await _health_server(options, ready, leader)
    mine = [asyncio.create_task(reconciler.run(), name="septum reconciler")]
    if elector is not None:
        mine.append(asyncio.create_task(elector.run(), name="septum leader elector"))
    for task in mine:
        task.add_done_callback(lambda t: _stop_on_failure(t, stop, failed))
    log.info(
        "operator starting",
        extra={
            "instance": instance,
            "namespace": options.namespace,
            "cluster": options.cluster_name,
            "leader_elect": options.leader_elect,
            "identity_gc_interval_s": options.identity_gc_interval_s,
        },
    )
    settings = kopf.OperatorSettings()
    settings.posting.enabled = False  # kopf would post an Event per handler log line
    settings.watching.server_timeout = 300
    signalled = False
    try:
        # Tasks created before this call are not kopf's: it leaves them to us at exit.
        await kopf.operator(
            registry=build_registry(cache, identities, connection.connection_info, started),
            settings=settings,
            standalone=True,
            clusterwide=True,
            stop_flag=stop,
        )
        signalled = not failed.is_set()  # kopf returns on SIGTERM/SIGINT, or on our stop
    finally:
        for task in mine:
            task.cancel()
        for task in mine:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if signalled and await _owner_gone(api, options.owner_deployment):
            await _uninstall(api, options.namespace)
        elif elector is not None:
            await elector.release()
        if runner is not None:
            await runner.cleanup()
        await api.close()
        log.info("operator stopped", extra={"instance": instance})


def _stop_on_failure(task: asyncio.Task[None], stop: asyncio.Event, failed: asyncio.Event) -> None:
    if task.cancelled():
        return
    error = task.exception()
    log.error("%s ended: %r; stopping", task.get_name(), error, exc_info=error)
    failed.set()
    stop.set()


async def _owner_gone(api: ApiClient, owner: Owner | None) -> bool:
    """Whether this SIGTERM is an uninstall; unknown (API unreachable, 403) is no."""
    if owner is None:
        return False
    state, reason, _ = await settled_owner_state(api, owner)
    if state is OwnerState.GONE:
        log.info("owner %s gone (%s): uninstalling", owner, reason)
        return True
    level = logging.WARNING if state is OwnerState.UNKNOWN else logging.INFO
    log.log(level, "owner %s %s (%s): keeping identities and the lease", owner, state.value, reason)
    return False


async def _uninstall(api: ApiClient, namespace: str) -> None:
    """Delete every SeptumIdentity and the Lease; 404s are another replica's work done."""
    try:
        identities = await uninstall.delete_identities(CustomObjectsApi(api))
        lease = await uninstall.delete_lease(CoordinationV1Api(api), namespace, LEASE_NAME)
    except (ApiException, ClientError, OSError, TimeoutError) as err:
        log.error("uninstall: not everything deleted: %s", describe(err))
        return
    log.info(
        "uninstall: SeptumIdentities and the Lease deleted",
        extra={
            "identities": len(identities),
            "lease": f"{namespace}/{LEASE_NAME}" if lease else None,
        },
    )


async def _health_server(
    options: Options, ready: Callable[[], bool], leader: Callable[[], bool]
) -> web.AppRunner | None:
    if options.health_port == 0:
        return None

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        body = {"ready": ready(), "leader": leader()}
        return web.json_response(body, status=200 if body["ready"] else 503)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, options.health_address, options.health_port)
    try:
        await site.start()
    except OSError as err:
        await runner.cleanup()
        raise ConfigError(f"--health-port {options.health_port}: {err}") from err
    return runner
