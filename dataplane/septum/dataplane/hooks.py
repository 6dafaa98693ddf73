"""Where one node's programs run: the tc hooks of its pods' veths, the tc hooks of the
interfaces carrying its host endpoint, and the XDP hook of its uplinks, all in the node's
network namespace.

Links are pinned under ``<pin_dir>/links/`` with names derived from what they serve
(``ep<id>-ingress``, ``host-<interface>-ingress``, ``xdp-<interface>``): a restarted agent
finds and takes over the links of the same pod or interface instead of attaching a second
program.
"""

from __future__ import annotations

import fcntl
import socket
import struct
from pathlib import Path
from typing import Final

from septum.dataplane import abi, attach, netns
from septum.dataplane.attach import Attachment, TcHook, XdpMode
from septum.dataplane.errors import AttachError, EndpointError

_SIOCGIFHWADDR: Final = 0x8927  # linux/sockios.h: an interface's hardware address

# A pod's two tc programs.  The hook is named from the veth's host side: what the pod
# sends arrives on the veth's ingress.
_POD_PROGRAMS: Final[tuple[tuple[TcHook, str], ...]] = (
    ("ingress", abi.PROG_FROM_POD),
    ("egress", abi.PROG_TO_POD),
)

# The host endpoint's two tc programs: on a node interface the hook's side is the host's
# own direction (what arrives on its ingress is host ingress).
_HOST_PROGRAMS: Final[tuple[tuple[TcHook, str], ...]] = (
    ("ingress", abi.PROG_FROM_NETDEV),
    ("egress", abi.PROG_TO_NETDEV),
)


class NodeHooks:
    """Attaches and detaches one node's programs on the node's interfaces."""

    def __init__(
        self, programs: dict[str, int], pin_dir: Path, netns_name: str | None, node_name: str
    ) -> None:
        self._programs = programs
        self._links = pin_dir / "links"
        self._netns = netns_name
        self._node_name = node_name
        self._uplinks: dict[str, Attachment] = {}

    def ifindex(self, interface: str | int) -> int:
        """The index of `interface` in the node's namespace (an index is taken as given)."""
        if isinstance(interface, int):
            return interface
        # the ioctl's socket is made in the thread's namespace: the node's
        with netns.entered(self._netns):
            try:
                return socket.if_nametoindex(interface)
            except (OSError, ValueError):
                raise EndpointError(
                    f"interface {interface!r} not found on node {self._node_name}"
                ) from None

    def link_address(self, ifindex: int) -> bytes:
        """The Ethernet address of interface `ifindex` in the node's namespace; six zero
        bytes when it has none or is gone.  An ioctl, not netlink through pyroute2: the
        agent calls this from its event loop, where pyroute2's own loop cannot run."""
        with netns.entered(self._netns):
            try:
                name = socket.if_indextoname(ifindex)
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                    request = struct.pack("16s16x", name.encode())
                    reply = fcntl.ioctl(sock.fileno(), _SIOCGIFHWADDR, request)
            except OSError:
                return bytes(6)
        # struct ifreq: the name (16 bytes), then a sockaddr: family (2), address
        return bytes(reply[18:24])

    def attach_pod(
        self,
        endpoint_id: int,
        ifindex: int,
        attachments: list[Attachment],
        detach_on_failure: bool = True,
    ) -> None:
        """Attach both tc programs to the pod's veth, appending to `attachments` (which
        is emptied first), or -- when one fails -- neither.  Unless told to leave what is
        attached: an adopted pod's taken-over links are the previous agent's, and unlinking
        their pins would leave the hook with no program at all."""
        self.detach_all(attachments)
        try:
            with netns.entered(self._netns):
                for hook, program in _POD_PROGRAMS:
                    pin = self._links / f"ep{endpoint_id}-{hook}"
                    attachments.append(
                        attach.attach_tc(self._programs[program], ifindex, hook, pin)
                    )
        except Exception:
            if detach_on_failure:
                self.detach_all(attachments)
            raise

    def attach_host(self, interface: str, ifindex: int, attachments: list[Attachment]) -> None:
        """Attach both host-endpoint programs to a node interface, appending to
        `attachments`, or -- when one fails -- neither (what was attached is detached)."""
        attached: list[Attachment] = []
        try:
            with netns.entered(self._netns):
                for hook, program in _HOST_PROGRAMS:
                    pin = self._links / f"host-{interface}-{hook}"
                    attached.append(attach.attach_tc(self._programs[program], ifindex, hook, pin))
        except Exception:
            self.detach_all(attached)
            raise
        attachments.extend(attached)

    def detach_pod_links(self, endpoint_id: int) -> None:
        """Unpin the links an earlier agent pinned for a pod's programs (a pod that is
        gone; an interface already gone took its links with it)."""
        for hook, _program in _POD_PROGRAMS:
            (self._links / f"ep{endpoint_id}-{hook}").unlink(missing_ok=True)

    def detach_all(self, attachments: list[Attachment]) -> None:
        """Detach every attachment in the list and empty it."""
        with netns.entered(self._netns):
            for attachment in attachments:
                attach.detach(attachment)
        attachments.clear()

    def attach_uplink(self, interface: str, mode: XdpMode = "auto") -> None:
        """Attach the XDP prefilter to the node's uplink interface."""
        ifindex = self.ifindex(interface)
        pin = self._links / f"xdp-{interface}"
        with netns.entered(self._netns):
            self._uplinks[interface] = attach.attach_xdp(
                self._programs[abi.PROG_XDP_PREFILTER], ifindex, mode, pin
            )

    def detach_uplink(self, interface: str) -> None:
        if interface not in self._uplinks:
            raise AttachError(
                f"interface: no XDP prefilter of node {self._node_name} on {interface!r}"
            )
        attachment = self._uplinks.pop(interface)
        with netns.entered(self._netns):
            attach.detach(attachment)

    def uplinks(self) -> list[str]:
        return list(self._uplinks)
