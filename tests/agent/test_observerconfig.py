"""The agent's Observer flags: mutual TLS or plaintext by choice, errors naming the flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from septum.agent.errors import AgentConfigError
from septum.agent.observerconfig import ObserverOptions, join_host_port
from septum.cli import agent as agent_cli

from .pki import ObserverPki, make_pki


@pytest.fixture
def pki(tmp_path: Path) -> ObserverPki:
    return make_pki(tmp_path, "c1")


def _tls(pki: ObserverPki, **more: Any) -> ObserverOptions:
    settings: dict[str, Any] = {
        "address": ":4244",
        "tls_cert_file": pki.agent_cert,
        "tls_key_file": pki.agent_key,
        "tls_client_ca_file": pki.ca,
    }
    return ObserverOptions(**{**settings, **more})


def test_mutual_tls_listen_settings_and_the_default_server_name(pki: ObserverPki) -> None:
    options = _tls(pki)
    options.check()
    listen = options.listen()
    assert listen.tls is not None and listen.tls.client_ca_file == pki.ca
    assert not listen.plaintext_tcp
    assert options.server_name("node-1", "c1") == "node-1.c1.hubble-grpc.septum.io"
    assert _tls(pki, tls_server_name="x.example").server_name("node-1", "c1") == "x.example"
    assert options.listens_everywhere()
    assert not _tls(pki, address="10.0.0.1:4244").listens_everywhere()


def test_plaintext_only_when_chosen() -> None:
    options = ObserverOptions(address="0.0.0.0:4244", insecure=True)
    options.check()
    assert options.listen().plaintext_tcp and options.listen().tls is None
    assert options.server_name("node-1", "c1") == ""


@pytest.mark.parametrize(
    ("options", "flag"),
    [
        (ObserverOptions(address=":4244"), "--observer-address: TCP needs TLS"),
        (ObserverOptions(insecure=True), "--observer-insecure: only with a TCP listener"),
        (ObserverOptions(address="4244", insecure=True), "--observer-address: '4244'"),
        (
            ObserverOptions(address=":4244", insecure=True, tls_server_name="x"),
            "--observer-tls-server-name: only with TLS",
        ),
        (
            ObserverOptions(address=":4244", insecure=True, advertise_address="nope"),
            "--observer-advertise-address: 'nope'",
        ),
    ],
)
def test_settings_that_cannot_work_name_the_flag(options: ObserverOptions, flag: str) -> None:
    with pytest.raises(AgentConfigError) as err:
        options.check()
    assert str(err.value).startswith(flag), err.value


def test_tls_flag_errors_name_the_flag(pki: ObserverPki, tmp_path: Path) -> None:
    cases = [
        (ObserverOptions(address=":1", tls_cert_file=pki.agent_cert), "--observer-tls-key-file"),
        (ObserverOptions(address=":1", tls_key_file=pki.agent_key), "--observer-tls-cert-file"),
        (_tls(pki, insecure=True), "--observer-insecure: plaintext, but"),
        (_tls(pki, tls_cert_file=tmp_path / "gone.crt"), "--observer-tls-cert-file: "),
        (ObserverOptions(tls_client_ca_file=pki.ca), "--observer-tls-client-ca-file: only"),
    ]
    for options, flag in cases:
        with pytest.raises(AgentConfigError) as err:
            options.check()
        assert str(err.value).startswith(flag), (flag, err.value)


def test_join_host_port_brackets_ipv6() -> None:
    assert join_host_port("10.0.0.1", 4244) == "10.0.0.1:4244"
    assert join_host_port("fd00::1", 4244) == "[fd00::1]:4244"


# ---- the CLI -------------------------------------------------------------------------


def _invoke(monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str] | None = None):
    seen: list[Any] = []
    import septum.agent.daemon as daemon

    monkeypatch.setattr(daemon, "run", lambda options: seen.append(options) or 0)
    result = CliRunner().invoke(agent_cli.agent, args, env=env)
    return result, seen


def test_tcp_without_tls_or_insecure_exits_2_naming_the_flags(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result, seen = _invoke(monkeypatch, ["--node", "n1", "--observer-address", ":4244"])
    assert result.exit_code == 2 and not seen
    assert "--observer-tls-cert-file" in result.output and "--observer-insecure" in result.output


def test_the_flags_reach_the_options(monkeypatch: pytest.MonkeyPatch, pki: ObserverPki) -> None:
    args = ["--observer-address", ":4244", *pki.agent_flags(), "--owner-daemonset", "sys/septum"]
    result, seen = _invoke(monkeypatch, args, env={"NODE_NAME": "from-env"})
    assert result.exit_code == 0, result.output
    (options,) = seen
    assert options.node == "from-env"  # the chart sets NODE_NAME from spec.nodeName
    assert options.observer.tls_client_ca_file == pki.ca
    assert str(options.owner_daemonset) == "daemonsets/sys/septum"
    result, _ = _invoke(monkeypatch, ["--node", "n1", "--owner-daemonset", "septum"])
    assert result.exit_code == 2 and "--owner-daemonset" in result.output
