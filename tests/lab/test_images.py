"""Image -> workload mapping of the lab kubelet (no root needed)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from septum.lab.binaries import locate
from septum.lab.kubelet import images


@pytest.fixture()
def binaries():  # type: ignore[no-untyped-def]
    return locate(require=False)


def test_agnhost_args_run_the_go_built_binary(binaries) -> None:  # type: ignore[no-untyped-def]
    w = images.resolve(
        "registry.k8s.io/e2e-test-images/agnhost:2.53",
        [],
        ["netexec", "--http-port=8080"],
        binaries,
    )
    assert w.argv == [str(binaries.agnhost), "netexec", "--http-port=8080"]
    w = images.resolve(
        "registry.k8s.io/e2e-test-images/agnhost:2.53",
        ["/agnhost", "connect"],
        ["10.0.0.1:80"],
        binaries,
    )
    assert w.argv == [str(binaries.agnhost), "connect", "10.0.0.1:80"]


def test_coredns_and_deathstar(binaries) -> None:  # type: ignore[no-untyped-def]
    w = images.resolve("registry.k8s.io/coredns/coredns:v1.14.7", [], ["-conf", "/c"], binaries)
    assert w.argv == [str(binaries.coredns), "-conf", "/c"]
    w = images.resolve("docker.io/cilium/starwars@sha256:abc", [], [], binaries)
    assert w.argv[:3] == [sys.executable, "-m", "septum.lab.workloads.deathstar"]


@pytest.mark.parametrize(
    "image",
    [
        "busybox",
        "docker.io/library/busybox:1.36",
        "docker.io/tgraf/netperf",
        "curlimages/curl:8.10.1",
    ],
)
def test_toolbox_images_idle_or_run_host_tools(image: str, binaries) -> None:  # type: ignore[no-untyped-def]
    assert images.resolve(image, [], [], binaries).argv == images.IDLE
    argv = images.resolve(image, ["sh", "-c", "exit 3"], [], binaries).argv
    assert Path(argv[0]).name == "sh" and argv[1:] == ["-c", "exit 3"]


def test_septum_images_run_septum_entry_points(binaries) -> None:  # type: ignore[no-untyped-def]
    argv = images.resolve("ghcr.io/example/septum-agent:dev", ["septum"], ["status"], binaries).argv
    assert argv == [str(Path(sys.executable).parent / "septum"), "status"]
    # No command: the image's entrypoint, septum, with the args.
    argv = images.resolve("ghcr.io/example/septum:dev", [], ["agent", "--node=n1"], binaries).argv
    assert argv == [str(Path(sys.executable).parent / "septum"), "agent", "--node=n1"]


def test_unknown_image_names_the_known_ones(binaries) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(images.UnknownImage) as err:
        images.resolve("nginx:1.27", [], [], binaries)
    assert '"nginx:1.27"' in str(err.value)
    assert "registry.k8s.io/e2e-test-images/agnhost" in str(err.value)
    assert "cilium/starwars" in str(err.value)
