"""Finding a lab pod's network namespace, for ``septum lab exec``."""

from __future__ import annotations

import json

from septum.lab import config
from septum.lab.errors import LabError
from septum.lab.lab import Lab


def exec_argv(lab: Lab, pod_ref: str, command: list[str]) -> list[str]:
    """argv running ``command`` in the network namespace of NAMESPACE/NAME ``pod_ref``."""
    namespace, sep, name = pod_ref.partition("/")
    if not sep or not namespace or not name:
        raise LabError(f"POD {pod_ref!r}: expected NAMESPACE/NAME, e.g. default/client")
    out = lab.kubectl("get", "pod", "-n", namespace, name, "-o", "json", check=False)
    if out.returncode != 0:
        raise LabError(f"pod {pod_ref}: {out.stderr.strip().splitlines()[-1]}")
    pod = json.loads(out.stdout)
    if pod["spec"].get("hostNetwork"):
        node = pod["spec"].get("nodeName", "")
        netns = node
    else:
        netns = config.pod_netns(pod["metadata"]["uid"])
    if not (config.NETNS_DIR / netns).exists():
        phase = pod.get("status", {}).get("phase", "Unknown")
        raise LabError(
            f"pod {pod_ref} has no network namespace yet (phase {phase}); wait until it is Running"
        )
    return ["ip", "netns", "exec", netns, *command]
