"""A throwaway cluster CA for the Observer's mutual TLS, as the chart issues it: one agent
certificate for every node (SAN *.<cluster>.hubble-grpc.septum.io) and one client
certificate (the relay's, or hubble's)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class ObserverPki:
    ca: Path
    agent_cert: Path
    agent_key: Path
    client_cert: Path
    client_key: Path

    def agent_flags(self) -> tuple[str, ...]:
        return (
            "--observer-tls-cert-file", str(self.agent_cert),
            "--observer-tls-key-file", str(self.agent_key),
            "--observer-tls-client-ca-file", str(self.ca),
        )  # fmt: skip


def _issue(
    directory: Path,
    stem: str,
    subject: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    sans: list[str] = [],  # noqa: B006 - read only
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=2))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if sans:
        alt = x509.SubjectAlternativeName([x509.DNSName(s) for s in sans])
        builder = builder.add_extension(alt, critical=False)
    cert = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
    (directory / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{stem}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key


def make_pki(directory: Path, cluster: str) -> ObserverPki:
    ca = _issue(directory, "ca", "septum test CA", None)
    _issue(directory, "agent", "septum-agent", ca, [f"*.{cluster}.hubble-grpc.septum.io"])
    _issue(directory, "client", "septum-relay", ca)
    return ObserverPki(
        directory / "ca.crt",
        directory / "agent.crt",
        directory / "agent.key",
        directory / "client.crt",
        directory / "client.key",
    )
