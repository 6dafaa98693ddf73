"""Septum's own import-linter contract types, run by the real lint-imports on synthetic packages.

allowed_imports refuses a third-party import, a denied standard-library module and a first-party
module not listed, and keeps the standard library; one_bridge refuses a second module that
imports both sides."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

CONFIG = """\
[importlinter]
root_packages =
    pkg
include_external_packages = True
contract_types =
    allowed_imports: scripts.importlint_contracts.AllowedImportsContract

[importlinter:contract:pure]
name = pure
type = allowed_imports
source_modules =
    pkg.pure
allowed_modules =
    pkg.bottom
denied_stdlib =
    ctypes
"""


def _lint(tmp_path: Path, modules: dict[str, str]) -> subprocess.CompletedProcess[str]:
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "importlint_contracts.py", tmp_path / "scripts")
    for folder in ("pkg", "pkg/pure"):
        (tmp_path / folder).mkdir(exist_ok=True)
        (tmp_path / folder / "__init__.py").write_text("")
    for name in ("other", "bottom"):
        (tmp_path / "pkg" / f"{name}.py").write_text("")
    for name, source in modules.items():
        (tmp_path / "pkg" / "pure" / f"{name}.py").write_text(source)
    (tmp_path / ".importlinter").write_text(CONFIG)
    return subprocess.run(
        [str(LINT_IMPORTS)],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )


def test_standard_library_and_listed_modules_are_kept(tmp_path: Path) -> None:
    result = _lint(tmp_path, {"a": "import json\nfrom pkg import bottom\nfrom pkg.pure import b\n"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_everything_else_is_refused_and_named(tmp_path: Path) -> None:
    modules = {"a": "import ctypes\n", "c": "import yaml\n", "d": "from pkg import other\n"}
    result = _lint(tmp_path, modules)
    assert result.returncode == 1, result.stdout + result.stderr
    for link in ("pkg.pure.a -> ctypes", "pkg.pure.c -> yaml", "pkg.pure.d -> pkg.other"):
        assert link in result.stdout


BRIDGE_CONFIG = """\
[importlinter]
root_packages =
    app
contract_types =
    one_bridge: scripts.importlint_contracts.OneBridgeContract

[importlinter:contract:bridge]
name = bridge
type = one_bridge
container = app.agent
side_a = app.engine
side_b = app.datapath
bridge = app.agent.adapter
"""


def _lint_bridge(tmp_path: Path, agent_modules: dict[str, str]) -> subprocess.CompletedProcess[str]:
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "importlint_contracts.py", tmp_path / "scripts")
    for folder in ("app", "app/engine", "app/datapath", "app/agent"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text("")
    (tmp_path / "app" / "engine" / "entries.py").write_text("")
    (tmp_path / "app" / "datapath" / "policy.py").write_text("")
    for name, source in agent_modules.items():
        (tmp_path / "app" / "agent" / f"{name}.py").write_text(source)
    (tmp_path / ".importlinter").write_text(BRIDGE_CONFIG)
    return subprocess.run(
        [str(LINT_IMPORTS)],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )


BOTH = "from app.engine import entries\nfrom app.datapath import policy\n"


def test_the_bridge_alone_may_import_both_sides(tmp_path: Path) -> None:
    modules = {
        "adapter": BOTH,
        "watcher": "from app.engine import entries\n",
        "endpoints": "from app.datapath import policy\n",
    }
    result = _lint_bridge(tmp_path, modules)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_second_module_importing_both_sides_is_named(tmp_path: Path) -> None:
    result = _lint_bridge(tmp_path, {"adapter": BOTH, "daemon": BOTH})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "app.agent.daemon imports both app.engine.entries and app.datapath.policy" in (
        result.stdout.replace("\n", " ")
    )
