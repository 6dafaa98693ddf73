"""Host mount trees carried into a container's mount namespace (septum.lab.kubelet.attachmount),
without a cluster: the container is mimicked as ``ip netns exec`` makes it (a new mount and
network namespace, rslave, with a fresh sysfs at /sys).

The lab tests in test_hostpath_lab.py do the same through real pods.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from septum.lab.kubelet import attachmount

pytestmark = [pytest.mark.privileged]

BPFFS = Path("/sys/fs/bpf")
# What `ip netns exec` does before running anything: a new mount namespace made rslave, and
# /sys replaced by a sysfs of the (here: new) network namespace, which hides bpffs.
LIKE_IP_NETNS_EXEC = [
    "unshare", "--mount", "--net", "--propagation", "slave", "sh", "-c",
    'umount -l /sys && mount -t sysfs sysfs /sys && exec "$@"', "sh",
]  # fmt: skip


def _helper(*mounts: attachmount.TreeMount) -> list[str]:
    return attachmount.exec_argv(mounts, "")


def _pin_map(path: Path) -> None:
    subprocess.run(
        ["bpftool", "map", "create", str(path), "type", "array",
         "key", "4", "value", "4", "entries", "1", "name", "septest"],
        check=True, capture_output=True,
    )  # fmt: skip


def _run_in_container(tree: attachmount.TreeMount, script: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [*LIKE_IP_NETNS_EXEC, *_helper(tree), "sh", "-c", script],
            pass_fds=[tree.tree_fd],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        os.close(tree.tree_fd)


def test_under_sysfs() -> None:
    assert attachmount.under_sysfs(Path("/sys"))
    assert attachmount.under_sysfs(Path("/sys/fs/bpf"))
    assert not attachmount.under_sysfs(Path("/sysroot"))
    assert not attachmount.under_sysfs(Path("/run/septum"))


def test_exec_argv_names_each_tree_and_ends_before_the_command() -> None:
    argv = attachmount.exec_argv(
        [attachmount.TreeMount(12, "/sys/fs/bpf", "HostToContainer", False),
         attachmount.TreeMount(13, "/host/cgroup", "None", True)],
        "/work",
    )  # fmt: skip
    assert argv[:3] == [sys.executable, "-m", "septum.lab.kubelet.attachmount"]
    assert argv[3:] == [
        "--mount", "12", "/sys/fs/bpf", "HostToContainer", "rw",
        "--mount", "13", "/host/cgroup", "None", "ro",
        "--workdir", "/work", "--",
    ]  # fmt: skip


def test_the_hosts_bpffs_is_shared_both_ways_and_the_sysfs_one_is_not() -> None:
    tag = uuid.uuid4().hex[:12]
    host_pin, container_pin = BPFFS / f"septest-host-{tag}", BPFFS / f"septest-ctr-{tag}"
    _pin_map(host_pin)
    try:
        # Without the tree, /sys/fs/bpf in such a namespace is sysfs's empty directory.
        hidden = subprocess.run(
            [*LIKE_IP_NETNS_EXEC, "ls", "-A", str(BPFFS)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert hidden.stdout == ""
        tree = attachmount.TreeMount(
            attachmount.clone_tree(BPFFS), str(BPFFS), "HostToContainer", False
        )
        out = _run_in_container(
            tree,
            f"ls {host_pin} && bpftool map create {container_pin} type array key 4 value 4 "
            f"entries 1 name septest && stat -f -c %T {BPFFS} && ls /proc/self/fd",
        )
        assert out.returncode == 0, out.stderr
        lines = out.stdout.split()
        assert lines[0] == str(host_pin)
        assert lines[1] == "bpf_fs"
        # Only stdin/out/err and ls's own directory descriptor: the tree's was closed.
        assert lines[2:] == ["0", "1", "2", "3"], lines
        assert container_pin.exists()
    finally:
        host_pin.unlink(missing_ok=True)
        container_pin.unlink(missing_ok=True)


def test_a_read_only_tree_refuses_writes() -> None:
    attempted = BPFFS / f"septest-ro-{uuid.uuid4().hex[:12]}"
    tree = attachmount.TreeMount(attachmount.clone_tree(BPFFS), str(BPFFS), "None", True)
    try:
        out = _run_in_container(tree, f"mkdir {attempted}")
        assert out.returncode != 0
        assert "Read-only file system" in out.stderr
    finally:
        if attempted.exists():
            attempted.rmdir()


def test_the_helper_reports_a_tree_it_cannot_attach() -> None:
    tree = attachmount.TreeMount(attachmount.clone_tree(BPFFS), "/no/such/septest/dir", "None")
    out = _run_in_container(tree, "echo unreachable")
    assert out.returncode == 1
    assert "cannot mount the host's tree at /no/such/septest/dir" in out.stderr
    assert "unreachable" not in out.stdout


# Run in a private mount namespace of its own (nothing reaches the host's mounts): a shared
# tmpfs stands for a host mount; the "container" attaches its clone with the propagation under
# test, then each side mounts something below it and reports what the other side saw.
_PROPAGATION_SCRIPT = textwrap.dedent(
    """
    import os, subprocess, sys, time
    from pathlib import Path
    from septum.lab.kubelet import attachmount

    work, propagation = Path(sys.argv[1]), sys.argv[2]
    src, dst = work / "src", work / "dst"
    src.mkdir(); dst.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "septest", str(src)], check=True)
    subprocess.run(["mount", "--make-shared", str(src)], check=True)
    (src / "down").mkdir(); (src / "up").mkdir()

    def wait(name):
        deadline = time.monotonic() + 20
        while not (work / name).exists():
            assert time.monotonic() < deadline, f"no {name}"
            time.sleep(0.02)

    child_script = f'''
    touch {work}/attached
    while [ ! -e {work}/go ]; do sleep 0.02; done
    mountpoint -q {dst}/down && echo container-sees-host-mount
    mount -t tmpfs septest-up {dst}/up
    touch {work}/mounted-up
    while [ ! -e {work}/end ]; do sleep 0.02; done
    '''
    tree = attachmount.TreeMount(attachmount.clone_tree(src), str(dst), propagation)
    child = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "slave",
         *attachmount.exec_argv([tree], ""), "sh", "-c", child_script],
        pass_fds=[tree.tree_fd],
    )
    os.close(tree.tree_fd)
    wait("attached")
    subprocess.run(["mount", "-t", "tmpfs", "septest-down", str(src / "down")], check=True)
    (work / "go").touch()
    wait("mounted-up")
    if subprocess.run(["mountpoint", "-q", str(src / "up")]).returncode == 0:
        print("host-sees-container-mount")
    (work / "end").touch()
    assert child.wait(20) == 0
    """
)


@pytest.mark.parametrize(
    ("propagation", "seen"),
    [
        ("None", set()),
        ("HostToContainer", {"container-sees-host-mount"}),
        ("Bidirectional", {"container-sees-host-mount", "host-sees-container-mount"}),
    ],
)
def test_mount_propagation_is_what_the_pod_asked_for(
    tmp_path: Path, propagation: str, seen: set[str]
) -> None:
    script = tmp_path / "propagation.py"
    script.write_text(_PROPAGATION_SCRIPT)
    work = tmp_path / "work"
    work.mkdir()
    out = subprocess.run(
        ["unshare", "--mount", "--propagation", "private",
         sys.executable, str(script), str(work), propagation],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert set(out.stdout.split()) == seen
