"""Image -> local workload: what a container of a given image runs in the lab.

There is no container runtime: an image names a program already on this machine (a Go-built
binary, a built-in server, the host's shell tools, Septum's own entry points). Entrypoint and
cmd semantics follow the image: ``command`` replaces the entrypoint, ``args`` the default cmd.
"""

from __future__ import annotations

import shutil
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from septum.lab.binaries import Binaries
from septum.lab.errors import LabError

IDLE = ["sleep", "infinity"]


@dataclass(frozen=True)
class Workload:
    image_kind: str
    argv: list[str]


class UnknownImage(LabError):
    """No program on this machine stands in for the image (the lab has no registry)."""


def _repository(image: str) -> str:
    """``docker.io/library/busybox:1.36`` -> ``busybox``; digest and tag dropped."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    for prefix in ("docker.io/library/", "docker.io/", "library/"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    return name


# (what the image is called, kind) in the order they are matched against the repository.
KNOWN_IMAGES = [
    ("registry.k8s.io/e2e-test-images/agnhost", "agnhost"),
    ("registry.k8s.io/coredns/coredns", "coredns"),
    ("cilium/starwars", "deathstar"),
    ("tgraf/netperf", "toolbox"),
    ("busybox", "toolbox"),
    ("curlimages/curl", "toolbox"),
    ("nicolaka/netshoot", "toolbox"),
    ("registry.k8s.io/pause", "pause"),
    ("<any>/septum*", "septum"),
]


def known_images_text() -> str:
    return ", ".join(name for name, _ in KNOWN_IMAGES)


def kind_of(image: str) -> str:
    repo = _repository(image)
    last = repo.rsplit("/", 1)[-1]
    if last == "agnhost":
        return "agnhost"
    if last == "coredns":
        return "coredns"
    if repo.endswith("cilium/starwars") or last == "starwars":
        return "deathstar"
    if repo in (
        "tgraf/netperf",
        "busybox",
        "curlimages/curl",
        "nicolaka/netshoot",
        "alpine",
        "debian",
        "ubuntu",
    ) or last in ("busybox", "netperf", "curl", "netshoot"):
        return "toolbox"
    if last == "pause":
        return "pause"
    if last.startswith("septum"):
        return "septum"
    raise UnknownImage(
        f'image "{image}" is not available in the septum lab (no registry access); '
        f"known images: {known_images_text()}"
    )


def resolve(
    image: str, command: Sequence[str], args: Sequence[str], binaries: Binaries
) -> Workload:
    kind = kind_of(image)
    command, args = list(command), list(args)
    if kind == "agnhost":
        argv = _agnhost(command, args, str(binaries.agnhost))
    elif kind == "coredns":
        if command and Path(command[0]).name == "coredns":
            command = command[1:]
        argv = [str(binaries.coredns), *command, *args]
    elif kind == "deathstar":
        argv = [sys.executable, "-m", "septum.lab.workloads.deathstar", *args]
        if command:
            argv = _host_command(command) + args
    elif kind == "pause":
        argv = IDLE
    elif kind == "septum":
        if command:
            argv = _septum_command(command + args)
        elif args:
            # The image's ENTRYPOINT is `septum` (images/septum/Containerfile).
            argv = _septum_command(["septum", *args])
        else:
            argv = IDLE
    else:  # toolbox: idles unless given something to run
        argv = _host_command(command) + args if command else (args or IDLE)
        if not command and args:
            argv = _host_command(args)
    return Workload(kind, argv)


# The agnhost image: ENTRYPOINT ["/agnhost"], CMD ["pause"].
AGNHOST_DEFAULT_CMD = ["pause"]
# Characters that make a `sh -c` script more than one plain command line.
_SHELL_SYNTAX = set("|&;<>()$`\\\"'*?[]#~{}\n")


def _agnhost(command: list[str], args: list[str], agnhost: str) -> list[str]:
    if command and Path(command[0]).name == "agnhost":
        # The image's entrypoint is /agnhost; a command naming it means the same binary.
        argv = [agnhost, *command[1:], *args]
    elif command:
        argv = _agnhost_script(_host_command(command) + args, agnhost)
    else:
        argv = [agnhost, *(args or AGNHOST_DEFAULT_CMD)]
    return _without_sctp(argv, agnhost)


def _agnhost_script(argv: list[str], agnhost: str) -> list[str]:
    """``bash -c "/agnhost serve-hostname --port 80"`` (the network-policy-api suite's pods):
    the image's /agnhost is not on this host's filesystem. A script that is one plain command
    line naming it runs the binary directly (what the shell's last command would exec)."""
    if len(argv) != 3 or Path(argv[0]).name not in ("sh", "bash") or argv[1] != "-c":
        return argv
    words = argv[2].split()
    if words and words[0] == "/agnhost" and not set(argv[2]) & _SHELL_SYNTAX:
        return [agnhost, *words[1:]]
    return argv


# `agnhost porter` exits at once when it cannot open an SCTP socket; this kernel has none
# (docs/conformance.md). A porter asked to serve SCTP ports only would then restart forever and
# keep its pod unready, so the whole pod (and every suite that needs it Ready) would fail for a
# protocol the lab cannot carry. Such a porter idles instead, saying why in its log; one that
# also serves TCP, UDP or TLS ports runs as it is (and fails as upstream would).
_SCTP_ONLY_PORTER = (
    'for name in $(env | sed -n "s/^\\(SERVE_[A-Z_]*PORT_[0-9]*\\)=.*/\\1/p"); do '
    'case "$name" in SERVE_SCTP_PORT_*) ;; *) exec "$@" ;; esac; done; '
    'echo "septum lab: no SCTP in this kernel; porter serves SCTP ports only, so it idles" >&2; '
    'exec "$1" pause'
)


def _without_sctp(argv: list[str], agnhost: str) -> list[str]:
    if argv[:2] != [agnhost, "porter"] or kernel_has_sctp():
        return argv
    return ["/bin/sh", "-c", _SCTP_ONLY_PORTER, "porter-without-sctp", *argv]


def kernel_has_sctp() -> bool:
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP).close()
    except OSError:
        return False
    return True


def _host_command(command: list[str]) -> list[str]:
    """The host's program of that name (busybox-style images run the host's shell tools)."""
    prog = command[0]
    found = shutil.which(Path(prog).name) if not Path(prog).exists() else prog
    return [found or prog, *command[1:]]


def _septum_command(argv: list[str]) -> list[str]:
    """Septum's entry points come from the lab's own Python environment."""
    bin_dir = Path(sys.executable).parent
    candidate = bin_dir / Path(argv[0]).name
    if candidate.exists():
        return [str(candidate), *argv[1:]]
    if argv[0] in ("python", "python3"):
        return [sys.executable, *argv[1:]]
    return _host_command(argv)
