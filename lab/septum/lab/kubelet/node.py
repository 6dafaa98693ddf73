"""The lab kubelet of one node: registers the Node, renews its Lease, runs the pods bound to it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
import shutil
import signal
from pathlib import Path

import aiohttp
import psutil  # type: ignore[import-untyped]  # no stubs pinned

from septum.lab import config
from septum.lab.binaries import Binaries
from septum.lab.config import NodeSpec
from septum.lab.errors import CommandError
from septum.lab.kubelet.api import ApiClient, ApiError
from septum.lab.kubelet.cni import POD_ATTACHMENT, Cni, conflist
from septum.lab.kubelet.events import Recorder
from septum.lab.kubelet.objects import JSON
from septum.lab.kubelet.pod import PodWorker
from septum.lab.kubelet.util import now_micro, now_rfc3339

log = logging.getLogger("septum.lab.kubelet")

LEASE_DURATION_S = 40
LEASE_RENEW_S = 10.0
STATUS_REPORT_S = 30.0


class Kubelet:
    def __init__(self, node: NodeSpec, state_root: Path, binaries: Binaries) -> None:
        self.node = node
        self.state_root = state_root
        self.node_dir = state_root / "nodes" / node.name
        self.binaries = binaries
        pki = state_root / "pki"
        self.api = ApiClient(
            config.apiserver_url(),
            pki / "ca.crt",
            pki / f"{node.name}.crt",
            pki / f"{node.name}.key",
        )
        cni_dir = self.node_dir / "cni"
        self.cni = Cni(
            conflist(str(node.pod_cidr), cni_dir / "ipam"),
            cni_dir / "net.d",
            cni_dir / "bin",
            cni_dir / "cache",
        )
        # hostPath volumes naming the CNI directories get this node's own (nodes share a host).
        self.host_paths = {"/etc/cni/net.d": cni_dir / "net.d", "/opt/cni/bin": cni_dir / "bin"}
        self.workers: dict[str, PodWorker] = {}
        self.events = Recorder(self.api, node.name)
        self._mountpoints_file = self.node_dir / "mountpoints"

    # --- helpers used by pods ------------------------------------------------------------------
    async def sh(self, *argv: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise CommandError(f"{' '.join(argv)}: {err.decode().strip()}")

    def note_mountpoint(self, dst: str, is_dir: bool) -> None:
        """Records mountpoints the lab creates on the host filesystem, for ``lab down``."""
        missing = []
        path = Path(dst)
        while not path.exists() and path != path.parent:
            missing.append(str(path))
            path = path.parent
        if missing:
            with open(self._mountpoints_file, "a") as f:
                f.write("".join(m + "\n" for m in missing))

    def find(self, namespace: str, name: str) -> PodWorker | None:
        for w in self.workers.values():
            if w.namespace == namespace and w.name == name:
                return w
        return None

    async def recover(self) -> None:
        """Tears down what a previous kubelet of this node left (after a crash and restart).

        Its pods are then started afresh from the API, as a kubelet restarts its sandboxes.
        """
        for pids in self.node_dir.glob("pods/*/pids"):
            for line in pids.read_text().split():
                with contextlib.suppress(ProcessLookupError, ValueError, PermissionError):
                    os.killpg(int(line), signal.SIGKILL)
        for cached in self.cni.cache_dir.glob(f"*-{POD_ATTACHMENT}.json"):
            uid = cached.name.removesuffix(f"-{POD_ATTACHMENT}.json")
            netns = config.pod_netns(uid)
            args = f"IgnoreUnknown=1;K8S_POD_UID={uid}"
            if (config.NETNS_DIR / netns).exists():
                proc = await asyncio.create_subprocess_exec(
                    "ip", "netns", "pids", netns, stdout=asyncio.subprocess.PIPE
                )
                out, _ = await proc.communicate()
                for pid in out.split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
                with contextlib.suppress(Exception):
                    await self.cni.delete(uid, netns, args)
                with contextlib.suppress(CommandError):
                    await self.sh("ip", "netns", "delete", netns)
            cached.unlink(missing_ok=True)
            etc = config.NETNS_ETC_DIR / netns
            for f in (etc / "resolv.conf", etc / "hosts"):
                f.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                etc.rmdir()
        shutil.rmtree(self.node_dir / "pods", ignore_errors=True)

    # --- node object and lease -----------------------------------------------------------------
    def _node_status(self) -> JSON:
        mem = psutil.virtual_memory().total
        cpus = str(os.cpu_count() or 1)
        capacity = {
            "cpu": cpus,
            "memory": f"{mem // 1024}Ki",
            "pods": "110",
            "ephemeral-storage": "100Gi",
        }
        now = now_rfc3339()
        conds = [
            ("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            ("PIDPressure", "False", "KubeletHasSufficientPID"),
            ("Ready", "True", "KubeletReady"),
        ]
        return {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [
                {
                    "type": t,
                    "status": s,
                    "reason": r,
                    "message": r,
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": self._started,
                }
                for t, s, r in conds
            ],
            "addresses": [
                {"type": "InternalIP", "address": self.node.ip},
                {"type": "Hostname", "address": self.node.name},
            ],
            # Lets the API server proxy kubectl's exec WebSocket to this kubelet unchanged.
            "declaredFeatures": ["ExtendWebSocketsToKubelet"],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": config.KUBELET_PORT}},
            "nodeInfo": {
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
                "kernelVersion": platform.release(),
                "osImage": "Septum lab",
                "containerRuntimeVersion": "septum-lab://0.1.0",
                "kubeletVersion": self.binaries.kubernetes_version,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64" if platform.machine() == "x86_64" else platform.machine(),
            },
        }

    async def register(self) -> None:
        """Registers the Node, retrying while the API server is slow or restarting."""
        delay = 0.5
        while True:
            try:
                await self._register_once()
                return
            except (ApiError, OSError, TimeoutError, aiohttp.ClientError) as err:
                log.warning("registering %s: %r; retrying in %.1fs", self.node.name, err, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _register_once(self) -> None:
        self._started = now_rfc3339()
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node.name,
                "labels": {
                    "kubernetes.io/hostname": self.node.name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "beta.kubernetes.io/os": "linux",
                    "beta.kubernetes.io/arch": "amd64",
                },
            },
            "spec": {"podCIDR": str(self.node.pod_cidr), "podCIDRs": [str(self.node.pod_cidr)]},
        }
        try:
            await self.api.create("/api/v1/nodes", body)
        except ApiError as err:
            if err.status != 409:
                raise
        await self.report_status()

    async def report_status(self) -> None:
        await self.api.merge_patch(
            f"/api/v1/nodes/{self.node.name}/status", {"status": self._node_status()}
        )

    async def _renew_lease(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node.name}"
        spec = {
            "holderIdentity": self.node.name,
            "leaseDurationSeconds": LEASE_DURATION_S,
            "renewTime": now_micro(),
        }
        try:
            await self.api.merge_patch(path, {"spec": spec})
        except ApiError as err:
            if err.status != 404:
                raise
            node = await self.api.get(f"/api/v1/nodes/{self.node.name}")
            await self.api.create(
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {
                        "name": self.node.name,
                        "namespace": "kube-node-lease",
                        "ownerReferences": [
                            {
                                "apiVersion": "v1",
                                "kind": "Node",
                                "name": self.node.name,
                                "uid": node["metadata"]["uid"],
                            }
                        ],
                    },
                    "spec": spec,
                },
            )

    async def heartbeat(self) -> None:
        last_status = asyncio.get_running_loop().time()
        while True:
            try:
                await self._renew_lease()
                if asyncio.get_running_loop().time() - last_status >= STATUS_REPORT_S:
                    await self.report_status()
                    last_status = asyncio.get_running_loop().time()
            except Exception as err:
                log.warning("heartbeat: %r", err)
            await asyncio.sleep(LEASE_RENEW_S)

    # --- pods ------------------------------------------------------------------------------------
    def _observe(self, pod: JSON, deleted: bool = False) -> None:
        uid = pod["metadata"]["uid"]
        worker = self.workers.get(uid)
        gone = deleted or pod["metadata"].get("deletionTimestamp") is not None
        if worker is None:
            if gone and deleted:
                return
            phase = pod.get("status", {}).get("phase")
            if phase in ("Succeeded", "Failed") and not gone:
                return  # finished before this kubelet started: nothing to run
            worker = PodWorker(self, pod)
            self.workers[uid] = worker
            if gone:
                asyncio.create_task(self._finish(worker, api_delete=True))
                return
            worker.start()
            return
        worker.pod["metadata"] = pod["metadata"]
        if not gone and not worker.stopping:
            worker.observed(pod.get("status") or {})
        if gone and not worker.stopping:
            asyncio.create_task(self._finish(worker, api_delete=not deleted))

    async def _finish(self, worker: PodWorker, api_delete: bool) -> None:
        try:
            await worker.terminate()
        finally:
            self.workers.pop(worker.uid, None)
        if api_delete:
            path = f"/api/v1/namespaces/{worker.namespace}/pods/{worker.name}"
            with contextlib.suppress(ApiError):
                await self.api.delete(
                    path,
                    {
                        "apiVersion": "v1",
                        "kind": "DeleteOptions",
                        "gracePeriodSeconds": 0,
                        "preconditions": {"uid": worker.uid},
                    },
                )

    async def watch_pods(self) -> None:
        selector = {"fieldSelector": f"spec.nodeName={self.node.name}"}
        while True:
            try:
                listing = await self.api.get("/api/v1/pods", selector)
                seen = set()
                for pod in listing.get("items", []):
                    seen.add(pod["metadata"]["uid"])
                    self._observe(pod)
                for uid, worker in list(self.workers.items()):
                    if uid not in seen and not worker.stopping:
                        asyncio.create_task(self._finish(worker, api_delete=False))
                rv = listing["metadata"]["resourceVersion"]
                while True:
                    async for event in self.api.watch(
                        "/api/v1/pods", {**selector, "resourceVersion": rv, "timeoutSeconds": "300"}
                    ):
                        kind, obj = event["type"], event["object"]
                        if kind == "ERROR":
                            raise ApiError(int(obj.get("code", 500)), obj.get("message", ""))
                        rv = obj["metadata"]["resourceVersion"]
                        if kind == "BOOKMARK":
                            continue
                        self._observe(obj, deleted=(kind == "DELETED"))
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("pod watch restarts: %r", err)
                await asyncio.sleep(0.5)

    async def shutdown(self) -> None:
        await asyncio.gather(
            *(w.terminate() for w in list(self.workers.values())), return_exceptions=True
        )
        await self.api.close()
