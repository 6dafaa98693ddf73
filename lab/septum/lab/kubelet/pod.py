"""One pod on a lab node: its sandbox, the order its containers run in, and its status.

The sandbox is a network namespace wired by CNI, with the pod's resolv.conf and hosts under
/etc/netns/<netns>/ and its volumes materialised under the pod's directory. Init containers run
one after another to completion before the app containers start (septum.lab.kubelet.container
runs each one). What the environment and the status say is worked out by the pure modules
container_env and pod_status; this module fetches their inputs and reports their results.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from septum.lab import config
from septum.lab.kubelet import container_env, pod_status, volumes
from septum.lab.kubelet.api import ApiError
from septum.lab.kubelet.container import BACKOFF_INITIAL_S, BACKOFF_MAX_S, Container
from septum.lab.kubelet.objects import JSON
from septum.lab.kubelet.util import now_rfc3339

if TYPE_CHECKING:
    from septum.lab.kubelet.node import Kubelet

log = logging.getLogger("septum.lab.kubelet")


class PodWorker:
    def __init__(self, kubelet: Kubelet, pod: JSON) -> None:
        self.kubelet = kubelet
        self.pod = pod
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.name: str = meta["name"]
        self.namespace: str = meta["namespace"]
        self.spec: JSON = pod["spec"]
        self.restart_policy: str = self.spec.get("restartPolicy", "Always")
        self.host_network = bool(self.spec.get("hostNetwork"))
        self.hostname: str = (
            kubelet.node.name if self.host_network else self.spec.get("hostname", self.name)
        )
        self.netns = kubelet.node.netns if self.host_network else config.pod_netns(self.uid)
        self.dir: Path = kubelet.node_dir / "pods" / self.uid
        self.ip = ""
        self.stopping = False
        self.sandbox_ready = False
        self.sandbox_error = ""
        self._sandbox_attempts = 0
        self.start_time = now_rfc3339()
        self.containers = [Container(self, c) for c in self.spec.get("containers", [])]
        self.init_containers = [Container(self, c) for c in self.spec.get("initContainers", [])]
        self.initialized = not self.init_containers
        self.volumes: dict[str, Path] = {}
        self._changed = asyncio.Event()
        self._stop_event = asyncio.Event()
        self._conditions = pod_status.Conditions()
        self._server_differs = False  # the server's status was changed by someone else
        self.tasks: list[asyncio.Task[None]] = []
        self.deleted_from_api = False

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self.tasks.append(asyncio.create_task(self._run()))
        self.tasks.append(asyncio.create_task(self._status_loop()))

    async def _run(self) -> None:
        try:
            await self._setup_sandbox()
        except Exception as err:  # any failure is reported on the pod, then retried
            log.exception("sandbox for %s/%s failed", self.namespace, self.name)
            self.sandbox_error = str(err)
            self.changed()
            # The Node authorizer learns of a freshly bound pod a moment after the binding,
            # so the first attempts are retried quickly.
            self._sandbox_attempts += 1
            await self.sleep_unless_stopping(0.5 if self._sandbox_attempts < 10 else 5)
            if not self.stopping:
                await self._teardown_sandbox()
                self.tasks.append(asyncio.create_task(self._run()))
            return
        self.sandbox_ready = True
        self.changed()
        for init in self.init_containers:
            init.task = asyncio.create_task(self._run_init(init))
            await init.task
            if init.exit_code != 0 or self.stopping:
                return
        self.initialized = True
        for c in self.containers:
            c.task = asyncio.create_task(c.run(self.restart_policy))

    async def _run_init(self, init: Container) -> None:
        # Each run of an init container goes to completion ("Never"); the pod's own policy
        # decides whether a failed one is retried (with back-off) or fails the pod's start.
        backoff = BACKOFF_INITIAL_S
        while not self.stopping:
            await init.run("Never")
            if init.exit_code == 0 or self.restart_policy == "Never" or "waiting" in init.state:
                return
            init.restart_count += 1
            await self.sleep_unless_stopping(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _setup_sandbox(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.volumes = await volumes.materialise(
            self.kubelet.api,
            self.pod,
            self.dir / "volumes",
            self.kubelet.host_paths,
            lambda path, is_dir: self.kubelet.note_mountpoint(str(path), is_dir),
        )
        if self.host_network:
            self.ip = self.kubelet.node.ip
            return
        if not (config.NETNS_DIR / self.netns).exists():
            await self.kubelet.sh("ip", "netns", "add", self.netns)
        etc = config.NETNS_ETC_DIR / self.netns
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text(self._resolv_conf())
        ips = await self.kubelet.cni.add(self.uid, self.netns, self._cni_args())
        self.ip = ips[0] if ips else ""
        (etc / "hosts").write_text(
            f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            f"{self.ip}\t{self.spec.get('hostname', self.name)}\n"
        )

    def _cni_args(self) -> str:
        return (
            f"IgnoreUnknown=1;K8S_POD_NAMESPACE={self.namespace};K8S_POD_NAME={self.name};"
            f"K8S_POD_INFRA_CONTAINER_ID={self.uid};K8S_POD_UID={self.uid}"
        )

    def _resolv_conf(self) -> str:
        policy = self.spec.get("dnsPolicy", "ClusterFirst")
        if policy == "Default" or (self.host_network and policy != "ClusterFirstWithHostNet"):
            # Sealed lab: there is no upstream resolver to hand out.
            return "# septum lab: no upstream DNS\nnameserver 127.0.0.1\n"
        if policy == "None":
            cfg = self.spec.get("dnsConfig", {})
            lines = [f"nameserver {ns}" for ns in cfg.get("nameservers", [])]
            if cfg.get("searches"):
                lines.append("search " + " ".join(cfg["searches"]))
            return "\n".join(lines) + "\n"
        d = config.CLUSTER_DOMAIN
        return (
            f"search {self.namespace}.svc.{d} svc.{d} {d}\n"
            f"nameserver {config.DNS_SERVICE_IP}\noptions ndots:5\n"
        )

    async def terminate(self) -> None:
        """Stops every container (grace period, then SIGKILL) and tears the sandbox down."""
        if self.stopping:
            return
        self.stopping = True
        self._stop_event.set()
        grace = pod_status.grace_period_s(self.pod)
        await asyncio.gather(*(c.kill(grace) for c in self.containers + self.init_containers))
        for c in self.containers + self.init_containers:
            if c.task is not None:
                c.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await c.task
        await self._teardown_sandbox()
        for t in self.tasks:
            t.cancel()

    async def _teardown_sandbox(self) -> None:
        if not self.host_network:
            try:
                await self.kubelet.cni.delete(self.uid, self.netns, self._cni_args())
            except Exception:
                log.exception("CNI DEL for %s/%s", self.namespace, self.name)
            if (config.NETNS_DIR / self.netns).exists():
                await self.kubelet.sh("ip", "netns", "delete", self.netns)
            etc = config.NETNS_ETC_DIR / self.netns
            for f in (etc / "resolv.conf", etc / "hosts"):
                f.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                etc.rmdir()
        volumes.remove(self.dir / "volumes")

    async def sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_event.wait(), seconds)

    # --- container environment -------------------------------------------------------------
    def mounts_for(self, spec: JSON) -> list[volumes.VolumeMount]:
        out = []
        for m in spec.get("volumeMounts", []):
            src = self.volumes.get(m["name"])
            if src is None:
                continue
            if m.get("subPath"):
                src = src / m["subPath"]
            out.append(
                volumes.VolumeMount(
                    src,
                    m["mountPath"],
                    bool(m.get("readOnly")),
                    m.get("mountPropagation") or "None",
                )
            )
        return out

    async def env_for(self, container: JSON) -> dict[str, str]:
        """The environment to start ``container`` (a pod spec's container entry) with."""
        pod = {**self.pod, "status": {"podIP": self.ip, "hostIP": self.kubelet.node.ip}}
        env = container_env.container_env(container, pod, await self._env_sources(container))
        for err in env.unresolved:
            log.warning("%s/%s container %s: %s", self.namespace, self.name, container["name"], err)
        return env.variables

    async def _env_sources(self, container: JSON) -> container_env.EnvSources:
        services: list[JSON] = []
        if self.spec.get("enableServiceLinks", True):
            try:
                found = await self.kubelet.api.get(f"/api/v1/namespaces/{self.namespace}/services")
                services = found.get("items", [])
            except (ApiError, OSError):
                pass  # the container starts without service links rather than not at all
        return container_env.EnvSources(
            services,
            await self._read("configmaps", container_env.referenced_configmaps(container)),
            await self._read("secrets", container_env.referenced_secrets(container)),
        )

    async def _read(self, resource: str, names: Iterable[str]) -> dict[str, JSON]:
        """The named objects of the pod's namespace; one that cannot be read is left out."""
        found: dict[str, JSON] = {}
        for name in sorted(names):
            with contextlib.suppress(ApiError):
                found[name] = await self.kubelet.api.get(
                    f"/api/v1/namespaces/{self.namespace}/{resource}/{name}"
                )
        return found

    def exec_argv(self, container: Container, command: Sequence[str]) -> list[str]:
        """argv running ``command`` in the container's mount and network namespaces."""
        cmd = list(command)
        if cmd and os.path.basename(cmd[0]) == "agnhost":
            cmd[0] = str(self.kubelet.binaries.agnhost)
        proc = container.proc
        if proc is not None and proc.returncode is None:
            return ["nsenter", "-t", str(proc.pid), "-m", "-n", "-u", "--", *cmd]
        return ["ip", "netns", "exec", self.netns, *cmd]

    # --- status ------------------------------------------------------------------------------
    def changed(self) -> None:
        self._changed.set()

    def status(self) -> JSON:
        now = now_rfc3339()
        reported = self.pod.get("status", {})
        status: JSON = {
            "phase": pod_status.phase(
                self.restart_policy, self.sandbox_ready, self.initialized, self.containers
            ),
            "conditions": self._conditions.of_pod(
                self.sandbox_ready,
                self.initialized,
                self.containers,
                reported.get("conditions", []),
                now,
            ),
            "hostIP": self.kubelet.node.ip,
            "hostIPs": [{"ip": self.kubelet.node.ip}],
            "startTime": self.start_time,
            "qosClass": reported.get("qosClass", "BestEffort"),
            "containerStatuses": [c.status() for c in self.containers],
        }
        if self.init_containers:
            status["initContainerStatuses"] = [c.status() for c in self.init_containers]
        if self.ip:
            status["podIP"] = self.ip
            status["podIPs"] = [{"ip": self.ip}]
        # None deletes the field in a merge patch once the sandbox has recovered.
        failed = bool(self.sandbox_error and not self.sandbox_ready)
        status["message"] = self.sandbox_error if failed else None
        status["reason"] = "SandboxFailed" if failed else None
        return status

    def observed(self, server_status: JSON) -> None:
        """The pod as the API server holds it now. Another writer may have changed its
        status (the node controller marks pods not ready when a node's lease lapses); as a
        kubelet does, report ours again when the server's conditions differ from it."""
        mine = {c["type"]: c["status"] for c in self.status().get("conditions") or []}
        theirs = {c.get("type"): c.get("status") for c in server_status.get("conditions") or []}
        if any(theirs.get(kind) != value for kind, value in mine.items()):
            self._server_differs = True
            self.changed()

    async def _status_loop(self) -> None:
        path = f"/api/v1/namespaces/{self.namespace}/pods/{self.name}/status"
        last: JSON | None = None
        while True:
            await self._changed.wait()
            self._changed.clear()
            status = self.status()
            if status == last and not self._server_differs:
                continue
            self._server_differs = False
            try:
                await self.kubelet.api.merge_patch(path, {"status": status})
                last = status
            except ApiError as err:
                if err.status == 404:
                    return
                log.warning("status of %s/%s: %s", self.namespace, self.name, err)
                await asyncio.sleep(1)
                self.changed()
            except Exception as err:  # connection trouble: retry
                log.warning("status of %s/%s: %s", self.namespace, self.name, err)
                await asyncio.sleep(1)
                self.changed()
            await asyncio.sleep(0.05)  # coalesce bursts of changes into one patch
