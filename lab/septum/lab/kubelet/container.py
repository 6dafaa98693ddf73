"""One container of a lab pod: its process, restarts with back-off, probes and logs.

A container is a process started in the pod's network namespace through ``ip netns exec``,
which also gives it a private mount namespace: /etc/netns/<netns>/resolv.conf becomes its
/etc/resolv.conf, and volumes are bind-mounted at their mountPath there. hostPath volumes under
/sys are the host's mount trees instead, cloned and attached (septum.lab.kubelet.attachmount).
Each run (restart count) has its own log file, which ``kubectl logs`` and ``--previous`` read.
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

from septum.lab.kubelet import attachmount, container_env, images, pod_status, probes
from septum.lab.kubelet.objects import JSON
from septum.lab.kubelet.util import now_rfc3339
from septum.lab.kubelet.volumes import VolumeMount

if TYPE_CHECKING:
    from septum.lab.kubelet.pod import PodWorker

log = logging.getLogger("septum.lab.kubelet")

BACKOFF_INITIAL_S = 10.0
BACKOFF_MAX_S = 300.0
# A container that ran this long has its back-off forgotten, as upstream kubelets do.
BACKOFF_RESET_S = 600.0


class Container:
    """One container of a pod: its current process and the state its status reports."""

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

    async def run(self, restart_policy: str) -> None:
        """Runs the container until it exits for good under ``restart_policy`` or the pod stops."""
        backoff = BACKOFF_INITIAL_S
        while not self.pod.stopping:
            try:
                images.kind_of(self.image)
            except images.UnknownImage as err:
                self.state = {"waiting": {"reason": "ErrImagePull", "message": str(err)}}
                self.event("Failed", f'Failed to pull image "{self.image}": {err}', True)
                self.pod.changed()
                return
            started_at = now_rfc3339()
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            try:
                env = await self.pod.env_for(self.spec)
                # $(VAR) in command and args refers to the container's environment.
                workload = images.resolve(
                    self.image,
                    container_env.expand_all(self.spec.get("command", []), env),
                    container_env.expand_all(self.spec.get("args", []), env),
                    self.pod.kubelet.binaries,
                )
                self.proc = await self._start(workload.argv, env)
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
            terminated = pod_status.terminated(code, started_at, now_rfc3339())
            self.state = {"terminated": terminated}
            if self.pod.stopping:
                self.pod.changed()
                return
            if not pod_status.restarts(restart_policy, code):
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

    async def _start(self, argv: list[str], env: dict[str, str]) -> asyncio.subprocess.Process:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # Its own UTS namespace so that the container's hostname is the pod's, as with a runtime.
        full = ["ip", "netns", "exec", self.pod.netns, "unshare", "--uts"]
        script = ["set -e", f"hostname {shlex.quote(self.pod.hostname)}"]
        trees: list[attachmount.TreeMount] = []
        try:
            for mount in self.pod.mounts_for(self.spec):
                if attachmount.under_sysfs(mount.source):
                    # ip netns exec hides the host's mounts under /sys: carry the host's tree.
                    tree_fd = attachmount.clone_tree(mount.source)
                    trees.append(
                        attachmount.TreeMount(
                            tree_fd, mount.mount_path, mount.propagation, mount.read_only
                        )
                    )
                    script += self._mountpoint_lines(mount.mount_path, True)
                else:
                    script += self._bind_lines(mount)
            workdir = self.spec.get("workingDir", "")
            if trees:
                # Attached last, by a helper that closes the descriptors before the exec (sh
                # cannot close a descriptor above 9), so a bind inside a tree's mountPath
                # would be covered by it.
                helper = attachmount.exec_argv(trees, workdir)
                script.append("exec " + " ".join(shlex.quote(a) for a in helper) + ' "$@"')
            else:
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
                    env=env,
                    pass_fds=[tree.tree_fd for tree in trees],
                )
        finally:
            # The child holds its own copies now; the kubelet's would keep each tree alive.
            for tree in trees:
                os.close(tree.tree_fd)
        # Recorded so that a restarted kubelet can stop what its predecessor left running.
        with open(self.pod.dir / "pids", "a") as pids:
            pids.write(f"{proc.pid}\n")
        return proc

    def _mountpoint_lines(self, mount_path: str, is_dir: bool) -> list[str]:
        """Script lines creating the mountPath (on the host's filesystem unless under /sys,
        which is the container's own sysfs: recorded for ``lab down``)."""
        if not attachmount.under_sysfs(Path(mount_path)):
            self.pod.kubelet.note_mountpoint(mount_path, is_dir)
        dst = shlex.quote(mount_path)
        if is_dir:
            return [f"mkdir -p {dst}"]
        parent = shlex.quote(os.path.dirname(mount_path))
        return [f"mkdir -p {parent}", f"[ -e {dst} ] || : > {dst}"]

    def _bind_lines(self, mount: VolumeMount) -> list[str]:
        """Script lines bind-mounting one volume at its mountPath."""
        dst = shlex.quote(mount.mount_path)
        lines = self._mountpoint_lines(mount.mount_path, mount.source.is_dir())
        lines.append(f"mount --bind {shlex.quote(str(mount.source))} {dst}")
        if mount.read_only:
            lines.append(f"mount -o remount,bind,ro {dst}")
        # ip netns exec made the whole namespace rslave (mount --make-rslave /), so a bind is
        # already HostToContainer: it receives what the host mounts below the path later (when
        # the host's mount is shared; on a host whose mounts are private nothing propagates
        # either way). Bidirectional cannot reach back from a slave namespace, so it stays
        # HostToContainer here; None (the default) cuts the bind off.
        if mount.propagation == "None":
            lines.append(f"mount --make-rprivate {dst}")
        return lines

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
                # A liveness kill is no deletion: the pod's own terminationGracePeriodSeconds.
                await self.kill(grace_s=pod_status.grace_period_s({"spec": self.pod.spec}))
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
