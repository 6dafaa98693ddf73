"""Pod networking through real CNI plugins, invoked as a container runtime invokes them.

Per the CNI spec: each plugin of the conflist is executed with CNI_COMMAND/CNI_CONTAINERID/
CNI_NETNS/CNI_IFNAME/CNI_ARGS/CNI_PATH in its environment and its network configuration (name,
cniVersion, and for chained plugins the previous result) on stdin; ADD runs the list in order,
DEL in reverse order with the cached ADD result as prevResult. Loopback is its own network, as
kubelet runtimes configure it. This is where Septum later chains itself in.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from septum.lab import config
from septum.lab.errors import LabError

CNI_VERSION = "1.0.0"
NETWORK_NAME = "slab"


class CniError(LabError):
    """A CNI plugin failed, or the node has no network configuration to run."""


def conflist(pod_cidr: str, ipam_dir: Path) -> dict[str, Any]:
    return {
        "cniVersion": CNI_VERSION,
        "name": NETWORK_NAME,
        "plugins": [
            {
                "type": "ptp",
                "ipMasq": False,
                "mtu": 1500,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": pod_cidr}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(ipam_dir),
                },
            }
        ],
    }


LOOPBACK = {"cniVersion": CNI_VERSION, "name": "cni-loopback", "plugins": [{"type": "loopback"}]}
# Cache keys of a pod's two attachments.
LOOPBACK_ATTACHMENT = "loopback"
POD_ATTACHMENT = "pod"


class Cni:
    """A node's CNI runtime: its conf dir decides the pod network, as with containerd.

    The node's conf dir (``/etc/cni/net.d`` to the node's pods, see volumes) starts with the
    lab's ptp conflist; the lexically first ``*.conflist``/``*.conf`` there is the pod network,
    so an agent can install a chained conflist (Septum, as Cilium does in chaining mode) and its
    plugin binary in the node's bin dir (``/opt/cni/bin``), which comes first in CNI_PATH.
    The network used at ADD is cached with its result and used again for CHECK and DEL.
    """

    def __init__(
        self, default: dict[str, Any], conf_dir: Path, bin_dir: Path, cache_dir: Path
    ) -> None:
        self.conf_dir, self.bin_dir, self.cache_dir = conf_dir, bin_dir, cache_dir
        for d in (conf_dir, bin_dir, cache_dir):
            d.mkdir(parents=True, exist_ok=True)
        if not self._conf_files():
            (conf_dir / f"10-{NETWORK_NAME}.conflist").write_text(json.dumps(default, indent=2))

    def _conf_files(self) -> list[Path]:
        return sorted(
            p for p in self.conf_dir.iterdir() if p.suffix in (".conflist", ".conf", ".json")
        )

    def network(self) -> dict[str, Any]:
        """The pod network: the lexically first configuration in the conf dir."""
        files = self._conf_files()
        if not files:
            raise CniError(f"no CNI network configuration in {self.conf_dir}")
        conf: dict[str, Any] = json.loads(files[0].read_text())
        if "plugins" not in conf:  # a single-plugin .conf file
            conf = {
                "cniVersion": conf.get("cniVersion", CNI_VERSION),
                "name": conf.get("name", NETWORK_NAME),
                "plugins": [conf],
            }
        return conf

    def _binary(self, plugin_type: str) -> Path:
        for d in (self.bin_dir, config.CNI_BIN_DIR):
            if (d / plugin_type).exists():
                return d / plugin_type
        raise CniError(
            f"CNI plugin {plugin_type!r} found in neither {self.bin_dir} nor {config.CNI_BIN_DIR}"
        )

    async def _exec(
        self,
        plugin: dict[str, Any],
        net: dict[str, Any],
        command: str,
        container_id: str,
        netns: str,
        ifname: str,
        cni_args: str,
        prev: dict[str, Any] | None,
    ) -> dict[str, Any]:
        stdin = {**plugin, "name": net["name"], "cniVersion": net["cniVersion"]}
        if prev is not None:
            stdin["prevResult"] = prev
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container_id,
            "CNI_NETNS": str(config.NETNS_DIR / netns),
            "CNI_IFNAME": ifname,
            "CNI_ARGS": cni_args,
            "CNI_PATH": f"{self.bin_dir}:{config.CNI_BIN_DIR}",
        }
        proc = await asyncio.create_subprocess_exec(
            str(self._binary(plugin["type"])),
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate(json.dumps(stdin).encode())
        if proc.returncode != 0:
            try:
                msg = json.loads(out).get("msg", out.decode())
            except ValueError:
                msg = (out or err).decode().strip()
            raise CniError(f"CNI {command} {plugin['type']} for {netns}: {msg}")
        return json.loads(out) if out.strip() else {}

    def _cache(self, container_id: str, attachment: str) -> Path:
        return self.cache_dir / f"{container_id}-{attachment}.json"

    def _attachments(self) -> list[tuple[str, str, dict[str, Any]]]:
        return [(LOOPBACK_ATTACHMENT, "lo", LOOPBACK), (POD_ATTACHMENT, "eth0", self.network())]

    async def add(self, container_id: str, netns: str, cni_args: str) -> list[str]:
        """Attaches the pod; returns its IP addresses (without prefix length)."""
        ips: list[str] = []
        for attachment, ifname, net in self._attachments():
            prev: dict[str, Any] | None = None
            for plugin in net["plugins"]:
                prev = await self._exec(
                    plugin, net, "ADD", container_id, netns, ifname, cni_args, prev
                )
            self._cache(container_id, attachment).write_text(
                json.dumps({"network": net, "result": prev})
            )
            if attachment == POD_ATTACHMENT and prev is not None:
                ips = [ip["address"].split("/")[0] for ip in prev.get("ips", [])]
        return ips

    def _cached(
        self, container_id: str, attachment: str, fallback: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        cache = self._cache(container_id, attachment)
        if cache.exists():
            entry = json.loads(cache.read_text())
            return entry["network"], entry["result"]
        return fallback, None

    async def check(self, container_id: str, netns: str, cni_args: str) -> None:
        """CNI CHECK with the cached ADD result: raises CniError when the attachment drifted."""
        for attachment, ifname, current in self._attachments():
            net, prev = self._cached(container_id, attachment, current)
            for plugin in net["plugins"]:
                await self._exec(plugin, net, "CHECK", container_id, netns, ifname, cni_args, prev)

    async def delete(self, container_id: str, netns: str, cni_args: str) -> None:
        for attachment, ifname, current in reversed(self._attachments()):
            net, prev = self._cached(container_id, attachment, current)
            for plugin in reversed(net["plugins"]):
                await self._exec(plugin, net, "DEL", container_id, netns, ifname, cni_args, prev)
            self._cache(container_id, attachment).unlink(missing_ok=True)
