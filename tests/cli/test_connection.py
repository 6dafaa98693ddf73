"""--server and the --tls* flags: one set, hubble's spelling, on every command that dials."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from septum.cli.observe import observe
from septum.cli.status import status

# The hubble CLI's connection flags (cmd/common/config), which Septum's commands mirror.
HUBBLE_FLAGS = {
    "--server",
    "--tls",
    "--tls-allow-insecure",
    "--tls-ca-cert-files",
    "--tls-client-cert-file",
    "--tls-client-key-file",
    "--tls-server-name",
}


def connection_flags(command: click.Command) -> set[str]:
    return {
        flag
        for param in command.params
        for flag in param.opts
        if flag == "--server" or flag.startswith("--tls")
    }


@pytest.mark.parametrize("command", [observe, status], ids=["observe", "status"])
def test_commands_accept_hubbles_connection_flags(command: click.Command) -> None:
    assert connection_flags(command) == HUBBLE_FLAGS


@pytest.fixture
def pem(tmp_path: Path) -> Path:
    path = tmp_path / "any.pem"
    path.write_text("not read: the combination is refused first\n")
    return path


@pytest.mark.parametrize("command", [observe, status], ids=["observe", "status"])
@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--server", "/tmp/observer.sock", "--tls"], "--tls"),
        (["--server", "unix:///tmp/o.sock", "--tls-ca-cert-files", "{pem}"], "--tls-ca-cert-files"),
        (["--server", "node:4244", "--tls-client-cert-file", "{pem}"], "--tls-client-cert-file"),
        (["--server", "node:4244", "--tls-client-key-file", "{pem}"], "--tls-client-key-file"),
        (["--server", "node:4244", "--tls", "--tls-allow-insecure"], "--tls-allow-insecure"),
    ],
)
def test_a_bad_combination_is_a_usage_error_naming_the_flag(
    command: click.Command, args: list[str], flag: str, pem: Path
) -> None:
    result = CliRunner().invoke(command, [arg.format(pem=pem) for arg in args])
    assert result.exit_code == 2, result.output
    assert f"Error: {flag}:" in result.output
