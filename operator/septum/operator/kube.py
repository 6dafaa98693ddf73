"""Connecting to the API server: one kubeconfig (or the in-cluster service account) for both
kubernetes_asyncio (the operator's own reads and writes) and kopf (the watches)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import kopf
from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.config.config_exception import ConfigException

from septum.operator.errors import ConfigError


@dataclass(frozen=True)
class Connection:
    configuration: Configuration
    connection_info: kopf.ConnectionInfo

    def api_client(self) -> ApiClient:
        return ApiClient(self.configuration)


async def connect(kubeconfig: Path | None) -> Connection:
    """From `kubeconfig` when given, else in-cluster; raises ConfigError."""
    configuration = Configuration()
    try:
        if kubeconfig is not None:
            await kube_config.load_kube_config(
                config_file=str(kubeconfig), client_configuration=configuration
            )
        else:
            kube_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except (ConfigException, OSError, TypeError, ValueError, KeyError, AttributeError) as err:
        # kubernetes_asyncio reads a malformed file with plain dict and str operations.
        where = str(kubeconfig) if kubeconfig else "the in-cluster service account"
        raise ConfigError(f"cannot load Kubernetes credentials from {where}: {err}") from err
    if not configuration.host:
        raise ConfigError(f"no API server address in {kubeconfig or 'the in-cluster environment'}")
    token = None
    authorization = (configuration.api_key or {}).get("authorization") or (
        configuration.api_key or {}
    ).get("BearerToken")
    if authorization:
        token = authorization.removeprefix("Bearer ").strip()
    info = kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme="Bearer" if token else None,
        token=token,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )
    return Connection(configuration, info)
