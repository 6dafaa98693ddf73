"""Image -> local workload: what a container of a given image runs in the lab.

There is no container runtime: an image names a program already on this machine (a Go-built
binary, a built-in server, the host's shell tools, Septum's own entry points). Entrypoint and
cmd semantics follow the image: ``command`` replaces the entrypoint, ``args`` the default cmd.
"""

from __future__ import annotations

import shutil
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
        # The image's entrypoint is /agnhost; a command naming it means the same binary.
        if command and Path(command[0]).name == "agnhost":
            argv = [str(binaries.agnhost), *command[1:], *args]
        elif command:
            argv = _host_command(command) + args
        else:
            argv = [str(binaries.agnhost), *args]
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
