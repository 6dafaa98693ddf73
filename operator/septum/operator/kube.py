"""Connecting to the API server: one kubeconfig (or the in-cluster service account) for both
kubernetes_asyncio (the operator's own reads and writes) and kopf (the watches).

In a pod the service-account token is a projected file the kubelet replaces before it
expires (about hourly). kubernetes_asyncio re-reads it (its refresh hook, at most once a
minute); kopf asks its login handler again after a 401, so that handler builds its
credentials afresh from the same configuration each time instead of replaying the token
read at start.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import kopf
from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.config.config_exception import ConfigException

from septum.operator.errors import ConfigError

SERVICE_ACCOUNT_NAMESPACE: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
DEFAULT_NAMESPACE: Final = "kube-system"


def pod_namespace(
    environ: dict[str, str] | None = None, namespace_file: Path = SERVICE_ACCOUNT_NAMESPACE
) -> str:
    """The namespace this process runs in: $POD_NAMESPACE (the downward API), else the
    service account's namespace file, else kube-system (outside a pod)."""
    env = os.environ if environ is None else environ
    if env.get("POD_NAMESPACE"):
        return env["POD_NAMESPACE"]
    try:
        found = namespace_file.read_text().strip()
    except OSError:
        found = ""
    return found or DEFAULT_NAMESPACE


@dataclass(frozen=True)
class Connection:
    configuration: Configuration

    def api_client(self) -> ApiClient:
        return ApiClient(self.configuration)

    async def connection_info(self) -> kopf.ConnectionInfo:
        """kopf's credentials as of now (a rotated service-account token is re-read)."""
        configuration = self.configuration
        # kubernetes_asyncio's own path to a fresh token (in-cluster: re-reads the file)
        await configuration.get_api_key_with_prefix("BearerToken")
        keys = configuration.api_key or {}
        authorization = keys.get("authorization") or keys.get("BearerToken")
        token = authorization.removeprefix("Bearer ").strip() if authorization else None
        return kopf.ConnectionInfo(
            server=configuration.host or "",
            ca_path=configuration.ssl_ca_cert,
            insecure=not configuration.verify_ssl,
            scheme="Bearer" if token else None,
            token=token,
            certificate_path=configuration.cert_file,
            private_key_path=configuration.key_file,
        )


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
    return Connection(configuration)
