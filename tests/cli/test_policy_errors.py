"""`septum policy` errors: one line naming the argument or the field path, exit code 2,
nothing printed as if the command had succeeded."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from septum.cli.policy import policy

from .clusterdata import CLUSTER, DENY_WEB


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    paths = {
        "cluster": CLUSTER,
        "candidate": DENY_WEB,
        "invalid": DENY_WEB.replace('port: "5432"', 'port: "70000"'),
    }
    out = {}
    for name, text in paths.items():
        (tmp_path / name).write_text(text)
        out[name] = str(tmp_path / name)
    out["missing"] = str(tmp_path / "missing.yaml")
    out["kubeconfig"] = str(tmp_path / "no-kubeconfig")
    return out


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner(env={"KUBECONFIG": ""}).invoke(policy, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("command", ["diff", "what-if"])
def test_live_commands(files: dict[str, str], command: str) -> None:
    code, out, err = _run(command, "-f", files["candidate"])
    assert (code, out) == (2, "")
    assert err.strip() == (
        "Error: --kubeconfig: required (or set KUBECONFIG): the command reads the cluster"
    )
    code, out, err = _run(command, "-f", files["candidate"], "--kubeconfig", files["kubeconfig"])
    assert (code, out) == (2, "")
    assert err.strip() == f"Error: --kubeconfig {files['kubeconfig']}: no such file"
    # The candidate is checked first: its errors name the file and the field path.
    code, out, err = _run(command, "-f", files["invalid"], "--kubeconfig", files["kubeconfig"])
    assert (code, out) == (2, "")
    assert "spec.ingressDeny[0].toPorts[0].ports[0].port: 70000 is out of range" in err
    assert err.startswith(f"Error: -f {files['invalid']}#0: SeptumNetworkPolicy shop/deny-web")
    code, out, err = _run(command, "-f", files["missing"], "--kubeconfig", files["kubeconfig"])
    assert (code, out) == (2, "")
    assert err.strip() == f"Error: -f {files['missing']}: cannot read: No such file or directory"


def test_explain_offline_and_its_errors(files: dict[str, str]) -> None:
    code, out, _ = _run(
        "explain", "-f", files["cluster"], "--from", "shop/web", "--to", "shop/db", "--port", "5432"
    )
    assert code == 0 and out.startswith("ALLOWED: shop/web -> shop/db TCP/5432")
    code, out, err = _run("explain", "--from", "shop/web", "--to", "shop/db", "--port", "80")
    assert (code, out) == (2, "")
    assert "-f or --kubeconfig" in err
    code, out, err = _run(
        "explain", "-f", files["missing"], "--from", "a/b", "--to", "c/d", "--port", "80"
    )
    assert (code, out) == (2, "")
    assert "cannot read" in err
