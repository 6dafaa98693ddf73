"""The allow-list contract type refuses what it must: a third-party import, a denied
standard-library module, a first-party module not listed; and keeps the standard library."""

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
