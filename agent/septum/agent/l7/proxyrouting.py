"""The node's proxy routing (septum.dataplane.l7redirect) over the agent's lifetime: what
net.ipv4.ip_early_demux was before the routing turned it off, kept in the node's state
directory, and the routing's removal whichever agent installed it (uninstall, or an agent
started without --l7-proxy after one with it), with the early demux put back.

Restoring: the remembered value; without one (an agent older than the record installed the
routing) the kernel's default, 1."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Final

from septum.dataplane import l7redirect

log = logging.getLogger(__name__)

ROUTING_STATE_FILE: Final = "l7-proxy-routing.json"
KERNEL_EARLY_DEMUX: Final = "1"


def remember_early_demux(state_dir: Path, value: str) -> None:
    """Keep the node's ip_early_demux from before the proxy routing (atomic: a torn file
    would lose it)."""
    path = state_dir / ROUTING_STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"ipEarlyDemux": value}))
    os.replace(temporary, path)


def _remembered_early_demux(path: Path) -> str | None:
    try:
        value = json.loads(path.read_text()).get("ipEarlyDemux")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, AttributeError) as err:
        log.warning("%s unreadable, ip_early_demux goes back to the default: %s", path, err)
        return None
    return value if value in ("0", "1") else None


def release_proxy_routing(state_dir: Path, ns: str | None = None) -> bool:
    """Remove the node's proxy routing and NOTRACK rule, tolerating missing pieces, and put
    ip_early_demux back: the remembered value, else the kernel's default when routing of
    Septum's was there, else untouched.  Whether anything of it was there."""
    path = state_dir / ROUTING_STATE_FILE
    remembered = _remembered_early_demux(path)
    found = l7redirect.remove_proxy_routing(ns)
    restore = remembered if remembered is not None else KERNEL_EARLY_DEMUX if found else None
    if restore is not None:
        l7redirect.set_early_demux(restore, ns)
    path.unlink(missing_ok=True)
    return found or remembered is not None


__all__ = [
    "KERNEL_EARLY_DEMUX",
    "ROUTING_STATE_FILE",
    "release_proxy_routing",
    "remember_early_demux",
]
