"""The chained CNI plugin `septum-cni` and its installation into a node's CNI directories.

The plugin is what the container runtime runs after the pod network's own plugins
(Cilium's generic-veth chaining): it hands the ADD or DEL to the node's agent over the
agent's unix socket and, for ADD, prints the previous plugin's result unchanged once the
agent has put the pod's endpoint and policy in place.  While the agent is down an ADD
fails (the kubelet retries it) and a DEL succeeds (a restarted agent forgets endpoints
whose interface is gone).

Run as ``python -m septum.agent.cni`` (the installed ``septum-cni`` script does that).
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, TextIO

PLUGIN_TYPE: Final = "septum-cni"
CONFLIST_NAME: Final = "05-septum.conflist"
SUPPORTED_VERSIONS: Final = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
# CNI error codes: 11 = "try again later" (the agent is down or not ready yet)
ERROR_TRY_AGAIN: Final = 11
ERROR_INVALID_CONFIG: Final = 7
REQUEST_TIMEOUT_S: Final = 30.0


# ---- installation (run by the agent) ---------------------------------------------------


def plugin_script(python: str) -> str:
    return f'#!/bin/sh\nexec "{python}" -m septum.agent.cni "$@"\n'


def chained_conflist(network: Mapping[str, Any], agent_socket: Path) -> dict[str, Any]:
    """`network` (a conflist, or a single-plugin conf) with septum-cni appended."""
    if "plugins" in network:
        plugins = [p for p in network["plugins"] if p.get("type") != PLUGIN_TYPE]
        base = {k: v for k, v in network.items() if k != "plugins"}
    else:
        plugins = [dict(network)]
        base = {"cniVersion": network.get("cniVersion", "1.0.0"), "name": network.get("name")}
    return {**base, "plugins": [*plugins, {"type": PLUGIN_TYPE, "agentSocket": str(agent_socket)}]}


def _atomic_write(path: Path, text: str, mode: int = 0o644) -> None:
    if path.exists() and path.read_text() == text:
        return
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)


def install(conf_dir: Path, bin_dir: Path, agent_socket: Path, python: str) -> Path:
    """Install the plugin and the chained conflist; returns the conflist's path.

    The chained network is the lexically first other configuration in `conf_dir`; ours
    sorts before it, so it is the one the runtime uses from now on."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(bin_dir / PLUGIN_TYPE, plugin_script(python), 0o755)
    others = sorted(
        p
        for p in conf_dir.iterdir()
        if p.suffix in (".conflist", ".conf", ".json") and p.name != CONFLIST_NAME
    )
    if not others:
        raise FileNotFoundError(f"no CNI network configuration in {conf_dir} to chain into")
    network = json.loads(others[0].read_text())
    target = conf_dir / CONFLIST_NAME
    _atomic_write(target, json.dumps(chained_conflist(network, agent_socket), indent=2))
    return target


def uninstall(conf_dir: Path, bin_dir: Path) -> list[Path]:
    """Remove the chained conflist first (the runtime falls back to the node's own network
    at once), then the plugin; returns what was removed."""
    removed: list[Path] = []
    for path in (conf_dir / CONFLIST_NAME, bin_dir / PLUGIN_TYPE):
        if path.exists():
            path.unlink()
            removed.append(path)
    return removed


# ---- the plugin ------------------------------------------------------------------------


def cni_args(text: str) -> dict[str, str]:
    """CNI_ARGS ("K=V;K=V") as a dict."""
    pairs = (item.split("=", 1) for item in text.split(";") if "=" in item)
    return {key: value for key, value in pairs}


def request_for(conf: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    return {
        "command": env.get("CNI_COMMAND", ""),
        "containerID": env.get("CNI_CONTAINERID", ""),
        "netns": env.get("CNI_NETNS", ""),
        "ifName": env.get("CNI_IFNAME", ""),
        "args": cni_args(env.get("CNI_ARGS", "")),
        "prevResult": conf.get("prevResult") or {},
    }


def ask_agent(path: str, request: Mapping[str, Any], timeout_s: float) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout_s)
        conn.connect(path)
        conn.sendall(json.dumps(request).encode() + b"\n")
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    answer: dict[str, Any] = json.loads(b"".join(chunks) or b"{}")
    return answer


def _error(out: TextIO, version: str, code: int, msg: str) -> int:
    out.write(json.dumps({"cniVersion": version, "code": code, "msg": msg}))
    return 1


def run(stdin: TextIO, out: TextIO, env: Mapping[str, str]) -> int:
    command = env.get("CNI_COMMAND", "")
    try:
        conf: dict[str, Any] = json.loads(stdin.read() or "{}")
    except ValueError as err:
        return _error(out, "1.0.0", ERROR_INVALID_CONFIG, f"septum-cni: bad config: {err}")
    version = str(conf.get("cniVersion", "1.0.0"))
    if command == "VERSION":
        out.write(json.dumps({"cniVersion": version, "supportedVersions": SUPPORTED_VERSIONS}))
        return 0
    socket_path = conf.get("agentSocket")
    if not socket_path:
        return _error(out, version, ERROR_INVALID_CONFIG, "septum-cni: agentSocket is not set")
    request = request_for(conf, env)
    if command == "ADD":
        try:
            answer = ask_agent(str(socket_path), request, REQUEST_TIMEOUT_S)
        except OSError as err:
            return _error(out, version, ERROR_TRY_AGAIN, f"septum agent unreachable: {err}")
        if not answer.get("ok"):
            return _error(out, version, ERROR_TRY_AGAIN, str(answer.get("error", "failed")))
        out.write(json.dumps(conf.get("prevResult") or {"cniVersion": version}))
        return 0
    if command == "DEL":
        try:
            ask_agent(str(socket_path), request, REQUEST_TIMEOUT_S)
        except OSError:
            pass  # DEL never fails: the agent forgets gone interfaces when it comes back
        return 0
    if command in ("CHECK", "GC", "STATUS"):
        return 0
    return _error(out, version, 4, f"septum-cni: unknown CNI_COMMAND {command!r}")


def main() -> None:
    sys.exit(run(sys.stdin, sys.stdout, os.environ))


if __name__ == "__main__":
    main()
