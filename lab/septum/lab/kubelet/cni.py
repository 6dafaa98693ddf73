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

CNI_VERSION = "1.0.0"
NETWORK_NAME = "slab"


class CniError(Exception):
    pass


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


class Cni:
    def __init__(self, conf: dict[str, Any], cache_dir: Path) -> None:
        self.networks = [LOOPBACK, conf]
        self.cache_dir = cache_dir
        cache_dir.mkdir(parents=True, exist_ok=True)
        (cache_dir / "slab.conflist").write_text(json.dumps(conf, indent=2))

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
            "CNI_PATH": str(config.CNI_BIN_DIR),
        }
        proc = await asyncio.create_subprocess_exec(
            str(config.CNI_BIN_DIR / plugin["type"]),
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

    def _cache(self, container_id: str, net: str) -> Path:
        return self.cache_dir / f"{container_id}-{net}.json"

    async def add(self, container_id: str, netns: str, cni_args: str) -> list[str]:
        """Attaches the pod; returns its IP addresses (without prefix length)."""
        ips: list[str] = []
        for net in self.networks:
            ifname = "lo" if net is LOOPBACK else "eth0"
            prev: dict[str, Any] | None = None
            for plugin in net["plugins"]:
                prev = await self._exec(
                    plugin, net, "ADD", container_id, netns, ifname, cni_args, prev
                )
            if prev is not None:
                self._cache(container_id, net["name"]).write_text(json.dumps(prev))
                if net is not LOOPBACK:
                    ips = [ip["address"].split("/")[0] for ip in prev.get("ips", [])]
        return ips

    async def check(self, container_id: str, netns: str, cni_args: str) -> None:
        """CNI CHECK with the cached ADD result: raises CniError when the attachment drifted."""
        for net in self.networks:
            ifname = "lo" if net is LOOPBACK else "eth0"
            cache = self._cache(container_id, net["name"])
            prev = json.loads(cache.read_text()) if cache.exists() else None
            for plugin in net["plugins"]:
                await self._exec(plugin, net, "CHECK", container_id, netns, ifname, cni_args, prev)

    async def delete(self, container_id: str, netns: str, cni_args: str) -> None:
        for net in reversed(self.networks):
            ifname = "lo" if net is LOOPBACK else "eth0"
            cache = self._cache(container_id, net["name"])
            prev = json.loads(cache.read_text()) if cache.exists() else None
            for plugin in reversed(net["plugins"]):
                await self._exec(plugin, net, "DEL", container_id, netns, ifname, cni_args, prev)
            cache.unlink(missing_ok=True)
