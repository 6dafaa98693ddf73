"""septum.cli.hubble.client: server addresses and TLS settings, checked before dialling."""

from __future__ import annotations

from pathlib import Path

import pytest

from septum.cli.hubble.client import ClientTLS, channel, client_tls, target
from septum.cli.hubble.errors import ClientConfigError, ClientError


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ("unix:///run/o.sock", "unix:///run/o.sock"),
        ("/run/o.sock", "unix:///run/o.sock"),
        ("node", "node:4244"),
        ("node:1234", "node:1234"),
        ("tls://node", "node:4244"),
        ("https://node:443", "node:443"),
    ],
)
def test_target(server: str, expected: str) -> None:
    assert target(server) == expected


def test_plaintext_unless_asked() -> None:
    assert client_tls("node:4244") is None


def test_any_tls_flag_or_the_tls_scheme_turns_tls_on() -> None:
    assert client_tls("tls://node:4244") == ClientTLS()
    assert client_tls("node", server_name="n.example") == ClientTLS(server_name="n.example")
    assert client_tls("node", ca_files=["ca.crt"]) == ClientTLS(ca_files=(Path("ca.crt"),))
    mutual = client_tls("node", tls=True, cert_file="c.crt", key_file="c.key")
    assert mutual == ClientTLS(cert_file=Path("c.crt"), key_file=Path("c.key"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"server": "/run/o.sock", "tls": True}, "--tls: TLS is for TCP servers"),
        (
            {"server": "node", "cert_file": "c.crt"},
            "--tls-client-cert-file: needs --tls-client-key",
        ),
        ({"server": "node", "key_file": "c.key"}, "--tls-client-key-file: needs --tls-client-cert"),
        ({"server": "node", "allow_insecure": True}, "--tls-allow-insecure: not supported"),
    ],
)
def test_settings_that_cannot_work_name_the_flag(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ClientConfigError, match=message) as caught:
        client_tls(**kwargs)  # type: ignore[arg-type]
    assert isinstance(caught.value, ClientError) and isinstance(caught.value, ValueError)


def test_an_unreadable_file_names_its_flag(tmp_path: Path) -> None:
    tls = ClientTLS(ca_files=(tmp_path / "missing.crt",))
    with pytest.raises(ClientConfigError, match="--tls-ca-cert-files: cannot read .*missing.crt"):
        channel("node:4244", tls)
