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


AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.45"


def test_agnhost_without_command_or_args_runs_the_images_cmd(binaries) -> None:  # type: ignore[no-untyped-def]
    assert images.resolve(AGNHOST, [], [], binaries).argv == [str(binaries.agnhost), "pause"]


def test_a_shell_line_naming_agnhost_runs_the_binary(binaries) -> None:  # type: ignore[no-untyped-def]
    # The network-policy-api conformance suite's pods (conformance/base/manifests.yaml).
    line = "/agnhost serve-hostname --tcp --http=false --port 80"
    argv = images.resolve(AGNHOST, ["/bin/bash", "-c", line], [], binaries).argv
    assert argv == [str(binaries.agnhost), *line.split()[1:]]
    # More than one command: left to the shell.
    argv = images.resolve(AGNHOST, ["/bin/bash", "-c", "/agnhost pause; true"], [], binaries).argv
    assert argv[1:] == ["-c", "/agnhost pause; true"]


def test_porter_idles_when_it_may_only_serve_sctp_and_the_kernel_has_none(  # type: ignore[no-untyped-def]
    binaries, monkeypatch
) -> None:
    import subprocess

    monkeypatch.setattr(images, "kernel_has_sctp", lambda: False)
    agnhost = type("Binaries", (), {"agnhost": "/bin/echo"})()
    argv = images.resolve(AGNHOST, ["/bin/bash", "-c", "/agnhost porter"], [], agnhost).argv

    def run(env: dict[str, str]) -> tuple[str, str]:
        done = subprocess.run(
            argv, env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True
        )
        return done.stdout, done.stderr

    out, err = run({"SERVE_SCTP_PORT_9003": "foo"})
    assert out == "pause\n" and "no SCTP in this kernel" in err
    assert run({"SERVE_SCTP_PORT_9003": "foo", "SERVE_TCP_PORT_80": "x"}) == ("porter\n", "")
    monkeypatch.setattr(images, "kernel_has_sctp", lambda: True)
    argv = images.resolve(AGNHOST, ["/agnhost", "porter"], [], binaries).argv
    assert argv == [str(binaries.agnhost), "porter"]
