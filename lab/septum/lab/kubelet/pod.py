"""One pod on a lab node: its sandbox (network namespace via CNI), containers and status.

Containers are processes started in the pod's network namespace through ``ip netns exec``,
which also gives each one a private mount namespace: /etc/netns/<netns>/resolv.conf becomes its
/etc/resolv.conf, and volumes are bind-mounted at their mountPath there. Each container has one
log file per run (restart count), which ``kubectl logs`` and ``--previous`` read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from septum.lab import config
from septum.lab.kubelet import images, probes, volumes
from septum.lab.kubelet.api import JSON, ApiError
from septum.lab.kubelet.util import now_rfc3339

if TYPE_CHECKING:
    from septum.lab.kubelet.node import Kubelet

log = logging.getLogger("septum.lab.kubelet")

BACKOFF_INITIAL_S = 10.0
BACKOFF_MAX_S = 300.0
# A container that ran this long has its back-off forgotten, as upstream kubelets do.
BACKOFF_RESET_S = 600.0


class Container:
    def __init__(self, pod: PodWorker, spec: dict[str, Any]) -> None:
        self.pod = pod
        self.spec = spec
        self.name: str = spec["name"]
        self.image: str = spec.get("image", "")
        self.restart_count = 0
        self.state: JSON = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: JSON = {}
        self.ready = False
        self.started = False
        self.ever_started = False
        self.exit_code: int | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.task: asyncio.Task[None] | None = None

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        self.pod.kubelet.events.pod_event(
            self.pod.pod,
            reason,
            message,
            warning=warning,
            field_path=f"spec.containers{{{self.name}}}",
        )

    @property
    def log_dir(self) -> Path:
        return self.pod.dir / "logs" / self.name

    def log_path(self, restart: int) -> Path:
        return self.log_dir / f"{restart}.log"

    def status(self) -> JSON:
        out: JSON = {
            "name": self.name,
            "image": self.image,
            "imageID": f"septum-lab://{self.image}",
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.proc is not None and "running" in self.state:
            out["containerID"] = f"septum-lab://{self.pod.uid}/{self.name}/{self.restart_count}"
        return out

    async def run(self) -> None:
        policy = self.pod.spec.get("restartPolicy", "Always")
        backoff = BACKOFF_INITIAL_S
        while not self.pod.stopping:
            try:
                workload = images.resolve(
                    self.image,
                    self.spec.get("command", []),
                    self.spec.get("args", []),
                    self.pod.kubelet.binaries,
                )
            except images.UnknownImage as err:
                self.state = {"waiting": {"reason": "ErrImagePull", "message": str(err)}}
                self.event("Failed", f'Failed to pull image "{self.image}": {err}', True)
                self.pod.changed()
                return
            started_at = now_rfc3339()
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            try:
                self.proc = await self._start(workload.argv)
            except OSError as err:
                self.state = {"waiting": {"reason": "RunContainerError", "message": str(err)}}
                self.pod.changed()
                await asyncio.sleep(backoff)
                continue
            if self.restart_count == 0:
                self.event("Pulled", f'Container image "{self.image}" already present on machine')
            self.event("Created", f"Created container: {self.name}")
            self.event("Started", f"Started container {self.name}")
            self.state = {"running": {"startedAt": started_at}}
            self.ever_started = True
            self.started = "startupProbe" not in self.spec
            self.ready = "readinessProbe" not in self.spec
            self.pod.changed()
            probe_task = asyncio.create_task(self._probe_loop())
            code = await self.proc.wait()
            probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe_task
            self.ready = False
            self.started = False
            self.exit_code = code
            reason = "Completed" if code == 0 else ("Error" if code > 0 else "Error")
            terminated = {
                "exitCode": code if code >= 0 else 128 - code,
                "reason": reason,
                "startedAt": started_at,
                "finishedAt": now_rfc3339(),
            }
            if code < 0:
                terminated["signal"] = -code
            self.state = {"terminated": terminated}
            if self.pod.stopping:
                self.pod.changed()
                return
            restart = policy == "Always" or (policy == "OnFailure" and code != 0)
            if not restart:
                self.pod.changed()
                return
            if loop.time() - t0 >= BACKOFF_RESET_S:
                backoff = BACKOFF_INITIAL_S
            self.last_state = {"terminated": terminated}
            self.restart_count += 1
            self.state = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off {int(backoff)}s restarting failed container={self.name} "
                    f"pod={self.pod.name}_{self.pod.namespace}({self.pod.uid})",
                }
            }
            self.event(
                "BackOff",
                "Back-off restarting failed container "
                f"{self.name} in pod {self.pod.name}_{self.pod.namespace}",
                True,
            )
            self.pod.changed()
            await self.pod.sleep_unless_stopping(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _start(self, argv: list[str]) -> asyncio.subprocess.Process:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        mounts = self.pod.mounts_for(self.spec)
        workdir = self.spec.get("workingDir", "")
        # Its own UTS namespace so that the container's hostname is the pod's, as with a runtime.
        full = ["ip", "netns", "exec", self.pod.netns, "unshare", "--uts"]
        script = ["set -e", f"hostname {shlex.quote(self.pod.hostname)}"]
        for src, dst, read_only in mounts:
            self.pod.kubelet.note_mountpoint(dst, src.is_dir())
            if src.is_dir():
                script.append(f"mkdir -p {shlex.quote(dst)}")
            else:
                script.append(f"mkdir -p {shlex.quote(os.path.dirname(dst))}")
                script.append(f"[ -e {shlex.quote(dst)} ] || : > {shlex.quote(dst)}")
            script.append(f"mount --bind {shlex.quote(str(src))} {shlex.quote(dst)}")
            if read_only:
                script.append(f"mount -o remount,bind,ro {shlex.quote(dst)}")
        if workdir:
            script.append(f"cd {shlex.quote(workdir)} 2>/dev/null || true")
        script.append('exec "$@"')
        full += ["sh", "-c", "\n".join(script), "sh"]
        full += argv
        with open(self.log_path(self.restart_count), "ab") as logfile:
            proc = await asyncio.create_subprocess_exec(
                *full,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=logfile,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                env=await self.pod.env_for(self.spec),
            )
        # Recorded so that a restarted kubelet can stop what its predecessor left running.
        with open(self.pod.dir / "pids", "a") as pids:
            pids.write(f"{proc.pid}\n")
        return proc

    async def exec_in(self, command: Sequence[str], timeout_s: float) -> int:
        """Runs ``command`` inside this container's namespaces (exec probes)."""
        argv = self.pod.exec_argv(self, command)
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            return await asyncio.wait_for(proc.wait(), timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            return 1

    async def _probe_loop(self) -> None:
        ports = self.spec.get("ports", [])
        startup = self.spec.get("startupProbe")
        readiness = self.spec.get("readinessProbe")
        liveness = self.spec.get("livenessProbe")
        if startup:
            state = probes.ProbeState(startup, initial=False)
            await asyncio.sleep(state.initial_delay_s)
            while not state.observe(
                await probes.run_once(startup, self.pod.ip, ports, self.exec_in)
            ):
                await asyncio.sleep(state.period_s)
            self.started = True
            self.pod.changed()
        tasks = []
        if readiness:
            tasks.append(asyncio.create_task(self._watch_probe(readiness, ports, True)))
        if liveness:
            tasks.append(asyncio.create_task(self._watch_probe(liveness, ports, False)))
        try:
            if tasks:
                await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()

    async def _watch_probe(
        self, probe: dict[str, Any], ports: list[dict[str, Any]], readiness: bool
    ) -> None:
        state = probes.ProbeState(probe, initial=not readiness)
        await asyncio.sleep(state.initial_delay_s)
        while True:
            ok = state.observe(await probes.run_once(probe, self.pod.ip, ports, self.exec_in))
            if not ok:
                kind = "Readiness" if readiness else "Liveness"
                self.event("Unhealthy", f"{kind} probe failed", True)
            if readiness:
                if ok != self.ready:
                    self.ready = ok
                    self.pod.changed()
            elif not ok and self.proc is not None:
                log.info("liveness probe failed for %s/%s: killing", self.pod.name, self.name)
                self.event(
                    "Killing", f"Container {self.name} failed liveness probe, will be restarted"
                )
                await self.kill(
                    grace_s=float(self.pod.spec.get("terminationGracePeriodSeconds", 30))
                )
                return
            await asyncio.sleep(state.period_s)

    async def kill(self, grace_s: float) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), grace_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


class PodWorker:
    def __init__(self, kubelet: Kubelet, pod: JSON) -> None:
        self.kubelet = kubelet
        self.pod = pod
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.name: str = meta["name"]
        self.namespace: str = meta["namespace"]
        self.spec: JSON = pod["spec"]
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
        self._conditions: dict[str, tuple[str, str]] = {}
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
            c.task = asyncio.create_task(c.run())

    async def _run_init(self, init: Container) -> None:
        # Init containers run to completion in order; a failure is retried with back-off.
        backoff = BACKOFF_INITIAL_S
        original = self.spec.get("restartPolicy", "Always")
        while not self.stopping:
            self.spec["restartPolicy"] = "Never"
            await init.run()
            self.spec["restartPolicy"] = original
            if init.exit_code == 0 or original == "Never" or "waiting" in init.state:
                return
            init.restart_count += 1
            await self.sleep_unless_stopping(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _setup_sandbox(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.volumes = await volumes.materialise(
            self.kubelet.api, self.pod, self.dir / "volumes", self.kubelet.host_paths
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
        grace = float(
            self.pod["metadata"].get("deletionGracePeriodSeconds")
            or self.spec.get("terminationGracePeriodSeconds", 30)
        )
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
    def mounts_for(self, spec: JSON) -> list[tuple[Path, str, bool]]:
        out = []
        for m in spec.get("volumeMounts", []):
            src = self.volumes.get(m["name"])
            if src is None:
                continue
            if m.get("subPath"):
                src = src / m["subPath"]
            out.append((src, m["mountPath"], bool(m.get("readOnly"))))
        return out

    async def env_for(self, spec: JSON) -> dict[str, str]:
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOSTNAME": self.spec.get("hostname", self.name),
            "HOME": "/root",
            "KUBERNETES_SERVICE_HOST": config.KUBERNETES_SERVICE_IP,
            "KUBERNETES_SERVICE_PORT": "443",
            "KUBERNETES_SERVICE_PORT_HTTPS": "443",
            "KUBERNETES_PORT": f"tcp://{config.KUBERNETES_SERVICE_IP}:443",
        }
        api = self.kubelet.api
        if self.spec.get("enableServiceLinks", True):
            env.update(await self._service_links())
        for src in spec.get("envFrom", []):
            prefix = src.get("prefix", "")
            try:
                if "configMapRef" in src:
                    cm = await api.get(
                        f"/api/v1/namespaces/{self.namespace}/configmaps/"
                        f"{src['configMapRef']['name']}"
                    )
                    env.update({prefix + k: v for k, v in cm.get("data", {}).items()})
                elif "secretRef" in src:
                    import base64

                    s = await api.get(
                        f"/api/v1/namespaces/{self.namespace}/secrets/{src['secretRef']['name']}"
                    )
                    env.update(
                        {
                            prefix + k: base64.b64decode(v).decode()
                            for k, v in s.get("data", {}).items()
                        }
                    )
            except ApiError:
                pass
        for item in spec.get("env", []):
            if "value" in item:
                env[item["name"]] = _expand(item["value"], env)
            elif "valueFrom" in item:
                env[item["name"]] = await self._value_from(item["valueFrom"])
        return env

    async def _service_links(self) -> dict[str, str]:
        """Docker-links-style variables for the namespace's Services, as kubelets set them."""
        try:
            services = await self.kubelet.api.get(f"/api/v1/namespaces/{self.namespace}/services")
        except (ApiError, OSError):
            return {}
        env: dict[str, str] = {}
        for svc in services.get("items", []):
            ip = svc["spec"].get("clusterIP")
            ports = svc["spec"].get("ports") or []
            if not ip or ip == "None" or not ports:
                continue
            prefix = svc["metadata"]["name"].upper().replace("-", "_")
            first = ports[0]
            env[f"{prefix}_SERVICE_HOST"] = ip
            env[f"{prefix}_SERVICE_PORT"] = str(first["port"])
            env[f"{prefix}_PORT"] = f"{first.get('protocol', 'TCP').lower()}://{ip}:{first['port']}"
            for port in ports:
                proto = port.get("protocol", "TCP")
                if port.get("name"):
                    name = port["name"].upper().replace("-", "_")
                    env[f"{prefix}_SERVICE_PORT_{name}"] = str(port["port"])
                base = f"{prefix}_PORT_{port['port']}_{proto}"
                env[base] = f"{proto.lower()}://{ip}:{port['port']}"
                env[f"{base}_PROTO"] = proto.lower()
                env[f"{base}_PORT"] = str(port["port"])
                env[f"{base}_ADDR"] = ip
        return env

    async def _value_from(self, src: JSON) -> str:
        api = self.kubelet.api
        try:
            if "fieldRef" in src:
                pod = {**self.pod, "status": {"podIP": self.ip, "hostIP": self.kubelet.node.ip}}
                return volumes._field(pod, src["fieldRef"]["fieldPath"])
            if "configMapKeyRef" in src:
                ref = src["configMapKeyRef"]
                cm = await api.get(f"/api/v1/namespaces/{self.namespace}/configmaps/{ref['name']}")
                return str(cm.get("data", {}).get(ref["key"], ""))
            if "secretKeyRef" in src:
                import base64

                ref = src["secretKeyRef"]
                s = await api.get(f"/api/v1/namespaces/{self.namespace}/secrets/{ref['name']}")
                return base64.b64decode(s.get("data", {}).get(ref["key"], "")).decode()
        except ApiError:
            return ""
        return ""

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

    def _phase(self) -> str:
        cs = self.containers
        policy = self.spec.get("restartPolicy", "Always")
        if not self.sandbox_ready or not self.initialized:
            return "Pending"
        if any(not c.ever_started for c in cs):
            return "Pending"
        if any("running" in c.state for c in cs):
            return "Running"
        terminated = [c for c in cs if "terminated" in c.state]
        if len(terminated) == len(cs):
            if all(c.exit_code == 0 for c in cs):
                return "Succeeded" if policy != "Always" else "Running"
            return "Failed" if policy == "Never" else "Running"
        return "Running"

    def _condition(self, kind: str, ok: bool, reason: str = "") -> JSON:
        status = "True" if ok else "False"
        prev = self._conditions.get(kind)
        if prev is None or prev[0] != status:
            self._conditions[kind] = (status, now_rfc3339())
        cond: JSON = {
            "type": kind,
            "status": status,
            "lastTransitionTime": self._conditions[kind][1],
            "lastProbeTime": None,
        }
        if reason and not ok:
            cond["reason"] = reason
        return cond

    def status(self) -> JSON:
        ready = self.initialized and all(c.ready for c in self.containers)
        not_ready = [c.name for c in self.containers if not c.ready]
        reason = "ContainersNotReady" if not_ready else ""
        conditions = [
            self._condition("PodReadyToStartContainers", self.sandbox_ready),
            self._condition("Initialized", self.initialized, "ContainersNotInitialized"),
            self._condition("ContainersReady", ready, reason),
            self._condition("Ready", ready, reason),
        ]
        for cond in self.pod.get("status", {}).get("conditions", []):
            if cond.get("type") == "PodScheduled":
                conditions.append(cond)
        status: JSON = {
            "phase": self._phase(),
            "conditions": conditions,
            "hostIP": self.kubelet.node.ip,
            "hostIPs": [{"ip": self.kubelet.node.ip}],
            "startTime": self.start_time,
            "qosClass": self.pod.get("status", {}).get("qosClass", "BestEffort"),
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

    async def _status_loop(self) -> None:
        path = f"/api/v1/namespaces/{self.namespace}/pods/{self.name}/status"
        last: JSON | None = None
        while True:
            await self._changed.wait()
            self._changed.clear()
            status = self.status()
            if status == last:
                continue
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


def _expand(value: str, env: dict[str, str]) -> str:
    # $(VAR) references to earlier variables, as the kubelet expands them.
    for key, val in env.items():
        value = value.replace(f"$({key})", val)
    return value
