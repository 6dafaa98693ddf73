"""The lab kubelet's CNI calls against Debian's real plugins (ptp + host-local + loopback)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.privileged

NODE, POD = "slab-tcni-node", "slab-tcni-pod"

# Runs inside the node namespace, as the lab kubelet does.
SCRIPT = textwrap.dedent("""
    import asyncio, json, subprocess, sys
    from pathlib import Path
    from septum.lab.kubelet.cni import Cni, conflist

    state = Path(sys.argv[1])
    chained = sys.argv[2] == "chained"
    if chained:
        # An agent's chained conflist, lexically first: ptp, then tuning on its result.
        (state / "net.d").mkdir(parents=True)
        net = conflist("10.214.77.0/24", state / "ipam")
        net["name"] = "chained"
        net["plugins"].append({"type": "tuning",
                               "sysctl": {"net.ipv4.conf.eth0.accept_local": "1"}})
        (state / "net.d" / "05-chained.conflist").write_text(json.dumps(net))
    cni = Cni(conflist("10.214.77.0/24", state / "ipam"), state / "net.d", state / "bin",
              state / "cache")

    def sh(*argv):
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout

    async def main():
        ips = await cni.add("pod-uid-1", "slab-tcni-pod", "IgnoreUnknown=1;K8S_POD_NAME=p")
        seen = {
            "ips": ips,
            "pod_addr": sh("ip", "netns", "exec", "slab-tcni-pod", "ip", "-4", "-o", "addr"),
            "pod_routes": sh("ip", "netns", "exec", "slab-tcni-pod", "ip", "route"),
            "node_routes": sh("ip", "route"),
            "accept_local": sh("ip", "netns", "exec", "slab-tcni-pod", "cat",
                               "/proc/sys/net/ipv4/conf/eth0/accept_local").strip(),
            "network": cni.network()["name"],
        }
        await cni.check("pod-uid-1", "slab-tcni-pod", "IgnoreUnknown=1;K8S_POD_NAME=p")
        sh("ip", "netns", "exec", "slab-tcni-pod", "ip", "addr", "flush", "dev", "eth0")
        try:
            await cni.check("pod-uid-1", "slab-tcni-pod", "IgnoreUnknown=1;K8S_POD_NAME=p")
            seen["check_after_flush"] = "passed"
        except Exception as err:
            seen["check_after_flush"] = str(err)
        await cni.delete("pod-uid-1", "slab-tcni-pod", "IgnoreUnknown=1;K8S_POD_NAME=p")
        seen["pod_addr_after"] = sh("ip", "netns", "exec", "slab-tcni-pod", "ip", "-4", "-o",
                                    "addr")
        seen["node_routes_after"] = sh("ip", "route")
        print(json.dumps(seen))

    asyncio.run(main())
""")


@pytest.fixture()
def namespaces() -> Iterator[None]:
    for ns in (NODE, POD):
        subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        yield
    finally:
        for ns in (NODE, POD):
            subprocess.run(["ip", "netns", "delete", ns], check=False)


def _run(tmp_path: Path, variant: str) -> dict[str, str]:
    out = subprocess.run(
        ["ip", "netns", "exec", NODE, sys.executable, "-c", SCRIPT, str(tmp_path), variant],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    seen: dict[str, str] = json.loads(out.stdout)
    ip = seen["ips"][0]
    assert len(seen["ips"]) == 1 and ip.startswith("10.214.77.")
    assert f"eth0    inet {ip}/24" in seen["pod_addr"]
    assert "127.0.0.1/8" in seen["pod_addr"]  # loopback plugin brought lo up
    assert seen["pod_routes"].startswith("default via 10.214.77.1 dev eth0")
    assert f"{ip} dev veth" in seen["node_routes"]
    assert seen["check_after_flush"].startswith("CNI CHECK ptp for slab-tcni-pod:")
    assert ip not in seen["pod_addr_after"] and ip not in seen["node_routes_after"]
    # host-local released the address: nothing but its bookkeeping files remains.
    for network_dir in (tmp_path / "ipam").iterdir():
        allocations = [
            p.name
            for p in network_dir.iterdir()
            if not p.name.startswith(("last_reserved_ip", "lock"))
        ]
        assert allocations == []
    assert not list((tmp_path / "cache").iterdir())  # DEL dropped the cached results
    return seen


def test_add_then_del_with_the_default_network(namespaces: None, tmp_path: Path) -> None:
    seen = _run(tmp_path, "default")
    assert seen["network"] == "slab"
    assert (tmp_path / "net.d" / "10-slab.conflist").exists()


def test_a_chained_conflist_in_the_conf_dir_wins(namespaces: None, tmp_path: Path) -> None:
    seen = _run(tmp_path, "chained")
    assert seen["network"] == "chained"
    assert seen["accept_local"] == "1"  # the chained tuning plugin ran on ptp's result
