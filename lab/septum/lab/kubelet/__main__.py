"""``python -m septum.lab.kubelet --state DIR --node N``: the lab kubelet of node N.

The process starts in the host namespaces and first moves itself (only its network namespace)
into the node's: CNI plugins then run on the node side, probes and the HTTPS API use the node's
address, while ``ip netns add`` still mounts new pod namespaces where the host sees them.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import os
import signal
from pathlib import Path

from aiohttp import web

from septum.lab import config
from septum.lab.binaries import locate
from septum.lab.config import NodeSpec
from septum.lab.kubelet.node import Kubelet
from septum.lab.kubelet.server import make_app, ssl_context

CLONE_NEWNET = 0x40000000


def enter_netns(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(config.NETNS_DIR / name, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


async def main(node: NodeSpec, state: Path) -> None:
    kubelet = Kubelet(node, state, locate())
    await kubelet.recover()
    runner = web.AppRunner(make_app(kubelet), access_log=None)
    await runner.setup()
    site = web.TCPSite(
        runner, node.ip, config.KUBELET_PORT, ssl_context=ssl_context(state / "pki", node.name)
    )
    await site.start()
    await kubelet.register()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(kubelet.heartbeat()), asyncio.create_task(kubelet.watch_pods())]
    await stop.wait()
    for t in tasks:
        t.cancel()
    await runner.cleanup()
    await kubelet.api.close()


def run() -> None:
    parser = argparse.ArgumentParser(prog="septum-lab-kubelet")
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--node", type=int, required=True, help="node index (1-based)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    node = NodeSpec(args.node)
    # Before any thread exists: setns applies to the calling thread only.
    enter_netns(node.netns)
    asyncio.run(main(node, args.state))


if __name__ == "__main__":
    run()
