"""scripts/ensure-go.sh: which Go toolchain the lab's builds use, and how a missing one is fetched.

Offline: the "module proxy" is a file:// directory holding a tiny fake toolchain zip, and the
script runs from a copy of the repository layout whose versions.env pins that fake release and
its h1: sum, computed here with Go's own algorithm (so the script's shell version is checked too).
"""

from __future__ import annotations

import base64
import hashlib
import os
import platform
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PINNED = "1.99.1"  # newer than any real Go, so the machine's own go never satisfies it
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
PREFIX = f"golang.org/toolchain@v0.0.1-go{PINNED}.linux-{ARCH}/"


def fake_go(version: str) -> str:
    return f'#!/bin/sh\necho "go version go{version} linux/{ARCH}"\n'


def h1(files: dict[str, str]) -> str:
    """golang.org/x/mod/sumdb/dirhash.Hash1 over zip entry names and contents."""
    lines = "".join(
        f"{hashlib.sha256(files[name].encode()).hexdigest()}  {name}\n" for name in sorted(files)
    )
    return "h1:" + base64.b64encode(hashlib.sha256(lines.encode()).digest()).decode()


class Setup:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.script = root / "repo/scripts/ensure-go.sh"
        self.cache = root / "cache"
        self.proxy = root / "proxy"
        self.path_bin = root / "path-bin"
        for d in (self.script.parent, root / "repo/lab/gobuild", self.cache, self.path_bin):
            d.mkdir(parents=True)
        shutil.copy(REPO / "scripts/ensure-go.sh", self.script)
        # The zip's entries carry no executable bits (like some zip writers): the script sets them.
        self.files = {
            PREFIX + "bin/go": fake_go(PINNED),
            PREFIX + "bin/gofmt": "#!/bin/sh\n",
            PREFIX + f"pkg/tool/linux_{ARCH}/compile": "#!/bin/sh\n",
            PREFIX + "VERSION": f"go{PINNED}\n",
        }
        self.publish(self.files)
        self.pin(h1(self.files))

    def pin(self, sum_h1: str) -> None:
        (self.root / "repo/lab/gobuild/versions.env").write_text(
            f"GO_VERSION={PINNED}\nGO_TOOLCHAIN_SUM_linux_{ARCH}={sum_h1}\n"
        )

    def publish(self, files: dict[str, str]) -> None:
        at = self.proxy / "golang.org/toolchain/@v"
        at.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(at / f"v0.0.1-go{PINNED}.linux-{ARCH}.zip", "w") as z:
            for name, text in files.items():
                z.writestr(name, text)

    def put_on_path(self, version: str) -> None:
        go = self.path_bin / "go"
        go.write_text(fake_go(version))
        go.chmod(0o755)

    def run(self, proxy: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {
            "HOME": str(self.root),
            "PATH": f"{self.path_bin}:/usr/bin:/bin",
            "SEPTUM_CACHE": str(self.cache),
            "GOPROXY": proxy if proxy is not None else f"file://{self.proxy},direct",
        }
        return subprocess.run(
            [str(self.script)], env=env, capture_output=True, text=True, check=False
        )

    @property
    def dest(self) -> Path:
        return self.cache / f"toolchain/go{PINNED}.linux-{ARCH}"

    def toolchain_dir_entries(self) -> list[str]:
        return sorted(p.name for p in (self.cache / "toolchain").iterdir())


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    if ARCH not in ("amd64", "arm64"):
        pytest.skip(f"ensure-go.sh pins no toolchain for {platform.machine()}")
    for tool in ("unzip", "curl", "flock"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: scripts/install-apt.sh installs it")
    return Setup(tmp_path)


def test_go_on_path_new_enough_is_used_as_is(setup: Setup) -> None:
    setup.put_on_path("1.100.0")
    out = setup.run(proxy="off")
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"{setup.path_bin}\n"
    assert not (setup.cache / "toolchain").exists()


def test_old_go_gets_the_pinned_toolchain_once(setup: Setup) -> None:
    setup.put_on_path("1.19.8")
    first = setup.run()
    assert first.returncode == 0, first.stderr
    assert first.stdout == f"{setup.dest}/bin\n"
    assert os.access(setup.dest / "bin/go", os.X_OK)
    assert os.access(setup.dest / f"pkg/tool/linux_{ARCH}/compile", os.X_OK)
    assert setup.toolchain_dir_entries() == [".lock", setup.dest.name]
    # Second run: no proxy at all, the cached toolchain is enough.
    second = setup.run(proxy="off")
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
    assert second.stderr == ""


def test_toolchain_with_the_wrong_sum_is_not_installed(setup: Setup) -> None:
    setup.publish({**setup.files, PREFIX + "bin/go": fake_go(PINNED) + "# tampered\n"})
    out = setup.run()
    assert out.returncode != 0
    assert f"GO_TOOLCHAIN_SUM_linux_{ARCH}" in out.stderr
    assert "nothing installed" in out.stderr
    assert out.stdout == ""
    assert setup.toolchain_dir_entries() == [".lock"]  # no toolchain, no temporary left over


def test_toolchain_reporting_another_version_is_not_installed(setup: Setup) -> None:
    files = {**setup.files, PREFIX + "bin/go": fake_go("1.99.0")}
    setup.publish(files)
    setup.pin(h1(files))
    out = setup.run()
    assert out.returncode != 0
    assert f"reports '1.99.0', expected {PINNED}" in out.stderr
    assert setup.toolchain_dir_entries() == [".lock"]


def test_goproxy_off_without_a_toolchain_says_so(setup: Setup) -> None:
    out = setup.run(proxy="off")
    assert out.returncode != 0
    assert "GOPROXY=off" in out.stderr
    assert out.stdout == ""
