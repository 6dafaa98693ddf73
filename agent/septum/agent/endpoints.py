"""The datapath side of the agent: the node's NodeDatapath and its local endpoints.

Endpoints are recorded in the state directory (one JSON file per CNI container id), so a
restarted agent gives each pod the same endpoint id on the same interface and the
datapath adopts it: its pinned policy keeps enforcing until this agent writes the policy
it compiled.  Writes are diffs: a policy only when it differs from what this process
wrote, ipcache entries only when they changed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import socket
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from septum.dataplane import DatapathConfig, NodeDatapath
from septum.dataplane.endpointentry import ENDPOINT_ID_MAX, EndpointSpec
from septum.dataplane.errors import EndpointError
from septum.dataplane.policy import EndpointPolicy, diff_policy

log = logging.getLogger(__name__)

FIRST_ENDPOINT_ID: Final = 1


@dataclass(frozen=True)
class EndpointRecord:
    """What the agent remembers of one local pod across restarts."""

    container_id: str
    namespace: str
    name: str
    endpoint_id: int
    interface: str
    ipv4: str | None
    ipv6: str | None
    identity: int

    @staticmethod
    def load(path: Path) -> EndpointRecord:
        return EndpointRecord(**json.loads(path.read_text()))


def interface_exists(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


class LocalEndpoints:
    """This node's datapath and pods, keyed by CNI container id."""

    def __init__(self, config: DatapathConfig, state_dir: Path) -> None:
        self.datapath = NodeDatapath(config)
        self.state_dir = state_dir / "endpoints"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.records: dict[str, EndpointRecord] = {}
        self.written: dict[int, EndpointPolicy] = {}
        self.audit: dict[int, bool] = {}
        self.ipcache: dict[str, int] = {}

    @property
    def recreated_maps(self) -> tuple[str, ...]:
        return self.datapath.recreated_maps

    def restore(self) -> list[EndpointRecord]:
        """Re-adopt the pods an earlier agent recorded whose interface is still there (the
        datapath keeps their pinned policy enforcing); forget the others."""
        restored: list[EndpointRecord] = []
        for path in sorted(self.state_dir.glob("*.json")):
            try:
                record = EndpointRecord.load(path)
            except (ValueError, TypeError) as err:
                log.warning("endpoint record %s unreadable: %s", path, err)
                path.unlink(missing_ok=True)
                continue
            if not interface_exists(record.interface):
                log.info("endpoint %s/%s: interface gone", record.namespace, record.name)
                path.unlink(missing_ok=True)
                continue
            self.datapath.upsert_endpoint(self._spec(record))
            self.records[record.container_id] = record
            restored.append(record)
        return restored

    def _spec(self, record: EndpointRecord) -> EndpointSpec:
        return EndpointSpec(
            record.endpoint_id, record.interface, record.identity, record.ipv4, record.ipv6
        )

    def _free_id(self) -> int:
        used = {r.endpoint_id for r in self.records.values()}
        for candidate in range(FIRST_ENDPOINT_ID, ENDPOINT_ID_MAX + 1):
            if candidate not in used:
                return candidate
        raise RuntimeError("no free endpoint id on this node")

    def add(
        self,
        container_id: str,
        namespace: str,
        name: str,
        interface: str,
        ips: Iterable[str],
        identity: int,
    ) -> EndpointRecord:
        """Add (or update) a pod; the tc programs are attached before this returns."""
        old = self.records.get(container_id)
        endpoint_id = old.endpoint_id if old is not None else self._free_id()
        ipv4 = next((ip for ip in ips if ":" not in ip), None)
        ipv6 = next((ip for ip in ips if ":" in ip), None)
        record = EndpointRecord(
            container_id, namespace, name, endpoint_id, interface, ipv4, ipv6, identity
        )
        self.datapath.upsert_endpoint(self._spec(record))
        self.records[container_id] = record
        self._save(record)
        return record

    def set_identity(self, container_id: str, identity: int) -> None:
        record = self.records[container_id]
        if record.identity == identity:
            return
        updated = EndpointRecord(**{**asdict(record), "identity": identity})
        self.datapath.upsert_endpoint(self._spec(updated))
        self.records[container_id] = updated
        self._save(updated)

    def _save(self, record: EndpointRecord) -> None:
        path = self.state_dir / f"{record.container_id}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(record)))
        tmp.replace(path)

    def remove(self, container_id: str) -> EndpointRecord | None:
        """Forget a pod (idempotent: an unknown container id is not an error)."""
        record = self.records.pop(container_id, None)
        (self.state_dir / f"{container_id}.json").unlink(missing_ok=True)
        if record is None:
            return None
        try:
            self.datapath.remove_endpoint(record.endpoint_id)
        except Exception as err:  # noqa: BLE001 - the interface may be gone already
            log.info("endpoint %d removal: %s", record.endpoint_id, err)
        self.written.pop(record.endpoint_id, None)
        self.audit.pop(record.endpoint_id, None)
        return record

    def purge_unregistered(self, departed_ips: Iterable[str] = ()) -> list[str]:
        """After the first sync: remove the pinned endpoints no record of this process
        registered (pods that went while no agent ran) and the ipcache entries of their
        addresses and of `departed_ips`, unless this process wrote them since (an address
        reused by a live pod).  Returns what was removed, for the log."""
        removed: list[str] = []
        addresses = set(departed_ips)
        for pinned in self.datapath.remove_unregistered_endpoints():
            removed.append(f"endpoint {pinned.endpoint_id} ({pinned.interface or 'gone'})")
            addresses.update(ip for ip in (pinned.ipv4, pinned.ipv6) if ip)
        for address in sorted(addresses):
            prefix = host_prefix(address)
            if prefix not in self.ipcache and self.datapath.remove_prefix(prefix):
                removed.append(f"ipcache {prefix}")
        return removed

    def revision(self, endpoint_id: int) -> int:
        """The policy revision the endpoint's kernel entry holds (0: none)."""
        try:
            return self.datapath.endpoint_revision(endpoint_id)
        except EndpointError:
            return 0

    def by_pod(self, namespace: str, name: str) -> list[EndpointRecord]:
        return [r for r in self.records.values() if (r.namespace, r.name) == (namespace, name)]

    def write_policy(self, endpoint_id: int, desired: EndpointPolicy, audit: bool) -> bool:
        """Give the endpoint `desired`; False when it already holds it (nothing written).
        An endpoint this process has not written yet (adopted, new) is always written."""
        written = self.written.get(endpoint_id)
        changed = written is None or not diff_policy(written, desired).empty
        if changed:
            self.datapath.replace_policy(endpoint_id, desired)
            self.written[endpoint_id] = desired
        if self.audit.get(endpoint_id) != audit:
            self.datapath.set_audit(endpoint_id, audit)
            self.audit[endpoint_id] = audit
        return changed

    def write_ipcache(self, upserts: Mapping[str, int], deletes: Iterable[str]) -> int:
        """Apply ipcache changes, skipping what the map already holds; returns writes."""
        writes = 0
        for prefix in deletes:
            if prefix in upserts:
                continue
            if self.datapath.remove_prefix(prefix):
                writes += 1
            self.ipcache.pop(prefix, None)
        changed = {p: n for p, n in upserts.items() if self.ipcache.get(p) != n}
        if changed:
            self.datapath.upsert_prefixes(changed)
            self.ipcache.update(changed)
            writes += len(changed)
        return writes

    def gc_conntrack(self) -> int:
        return self.datapath.gc_conntrack()

    def map_usage(self) -> dict[str, tuple[int, int]]:
        """(entries, capacity) of the maps worth watching."""
        usage: dict[str, tuple[int, int]] = {}
        dp = self.datapath
        for name, bpf_map in (
            ("endpoints", dp.endpoints_map),
            ("ipcache_hosts", dp.ipcache_hosts),
            ("ipcache_cidrs", dp.ipcache_cidrs),
            ("policy", dp.policy_map),
        ):
            usage[name] = (sum(1 for _ in bpf_map.keys()), bpf_map.capacity)
        return usage

    def close(self) -> None:
        """Release this process's handles; pins and attached programs keep enforcing."""
        self.datapath.close()

    def teardown(self) -> list[str]:
        """Uninstall: detach every endpoint of the node, those this process registered and
        those an earlier agent left pinned, and whatever else the datapath attached; remove
        the node's pins and the endpoint records; close.  Returns what was removed."""
        removed = [
            f"endpoint {pinned.endpoint_id} ({pinned.interface or 'gone'})"
            for pinned in self.datapath.remove_unregistered_endpoints()
        ]
        removed += [
            f"endpoint {r.endpoint_id} ({r.namespace}/{r.name})" for r in self.records.values()
        ]
        pin_dir = self.datapath.pin_dir
        self.datapath.teardown()
        removed.append(f"pins {pin_dir}")
        for path in self.state_dir.glob("*.json"):
            path.unlink(missing_ok=True)
        self.records.clear()
        with contextlib.suppress(OSError):  # the pins' root, once no node's pins are left
            pin_dir.parent.rmdir()
        return removed


def host_prefix(address: str) -> str:
    """The /32 or /128 ipcache prefix of an address."""
    return str(ipaddress.ip_network(address))


def local_addresses() -> list[str]:
    """The global addresses of this network namespace's interfaces (the node's own)."""
    out = subprocess.run(
        ["ip", "-j", "addr", "show"], capture_output=True, text=True, check=True, timeout=10
    )
    found: list[str] = []
    for link in json.loads(out.stdout or "[]"):
        for info in link.get("addr_info") or []:
            if info.get("scope") == "global" and info.get("local"):
                found.append(str(info["local"]))
    return found
