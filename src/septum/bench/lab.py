"""`septum bench lab`: how fast the lab starts and schedules, and how much memory it holds.

Measures, with the Go binaries already built: ``lab up`` until every node is Ready, a Deployment
of N pods until all are Running, the idle lab's resident memory (every lab process: control
plane, kube-proxy, kubelets and the pods' processes), and ``lab down``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from typing import Any

import click

TARGETS = {"lab_up_s": 30.0, "deployment_running_s": 20.0, "idle_rss_mb": 2048.0}


def _lab_pids(state_run: Any) -> set[int]:
    import psutil  # type: ignore[import-untyped]

    from septum.lab import network, procs

    pids: set[int] = set()
    for proc in procs.read(state_run):
        if procs.alive(proc):
            pids.add(proc.pid)
            try:
                pids |= {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
            except psutil.Error:
                pass
    for ns in network.list_netns():
        out = subprocess.run(
            ["ip", "netns", "pids", ns], capture_output=True, text=True, check=False
        ).stdout
        pids |= {int(p) for p in out.split()}
    return pids


def _rss_mb(pids: set[int]) -> float:
    import psutil

    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.Error:
            continue
    return total / (1024 * 1024)


def _deployment(name: str, replicas: int) -> str:
    labels = {"app": name}
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "terminationGracePeriodSeconds": 1,
                        "containers": [
                            {
                                "name": "agnhost",
                                "image": "registry.k8s.io/e2e-test-images/agnhost:2.53",
                                "args": ["netexec", "--http-port=8080"],
                            }
                        ],
                    },
                },
            },
        }
    )


def run(nodes: int, pods: int) -> dict[str, Any]:
    from septum.lab import config
    from septum.lab import lab as lab_mod
    from septum.lab.errors import StartupError

    state = config.default_state_dir()
    if (state / "lab.json").exists():
        raise StartupError("a lab is running: 'septum lab down' first so that 'up' is measured")
    t0 = time.monotonic()
    lab = lab_mod.up(nodes)
    up_s = time.monotonic() - t0
    try:
        t1 = time.monotonic()
        lab.kubectl("apply", "-f", "-", input_text=_deployment("bench", pods))
        deadline = t1 + 120
        running = 0
        while time.monotonic() < deadline:
            items = lab.get_json("pods", "-l", "app=bench")["items"]
            running = sum(
                1
                for p in items
                if p.get("status", {}).get("phase") == "Running" and p["status"].get("podIP")
            )
            if running >= pods:
                break
            time.sleep(0.1)
        deploy_s = time.monotonic() - t1
        if running < pods:
            raise StartupError(f"only {running}/{pods} bench pods Running after 120s")
        lab.kubectl("delete", "deployment", "bench", "--wait=true", "--timeout=60s")
        deadline = time.monotonic() + 60
        while lab.get_json("pods", "-l", "app=bench")["items"] and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(5)  # let the controllers settle: this is the idle lab being measured
        pids = _lab_pids(lab.state.run)
        rss = _rss_mb(pids)
    finally:
        t2 = time.monotonic()
        lab_mod.down()
        down_s = time.monotonic() - t2
    return {
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release()},
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "nodes": nodes,
        "pods": pods,
        "lab_up_s": round(up_s, 2),
        "deployment_running_s": round(deploy_s, 2),
        "idle_rss_mb": round(rss, 1),
        "idle_processes": len(pids),
        "lab_down_s": round(down_s, 2),
        "targets": TARGETS,
    }


@click.command(name="lab")
@click.option("--nodes", default=2, show_default=True, type=click.IntRange(1, 50))
@click.option(
    "--pods",
    default=20,
    show_default=True,
    type=click.IntRange(1, 500),
    help="Replicas of the Deployment that is timed.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def command(nodes: int, pods: int, as_json: bool) -> None:
    """Lab start-up, scheduling speed and idle memory (needs root; starts and stops a lab)."""
    from septum.lab.errors import LabError

    try:
        result = run(nodes, pods)
    except LabError as err:
        click.echo(f"septum bench lab: {err}", err=True)
        raise SystemExit(1) from err
    if as_json:
        click.echo(json.dumps(result))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(
        "measure",
        "value",
        "target",
        title=f"septum bench lab ({nodes} nodes, {result['machine']['cpus']} cpus)",
    )
    table.add_row("lab up → all nodes Ready", f"{result['lab_up_s']:.1f} s", "≤ 30 s")
    table.add_row(
        f"Deployment of {pods} pods → Running", f"{result['deployment_running_s']:.1f} s", "≤ 20 s"
    )
    table.add_row(
        "idle lab RSS",
        f"{result['idle_rss_mb']:.0f} MB ({result['idle_processes']} processes)",
        "≤ 2048 MB",
    )
    table.add_row("lab down", f"{result['lab_down_s']:.1f} s", "")
    Console().print(table)
