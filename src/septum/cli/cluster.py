"""Read the live cluster for `septum policy`: namespaces, pods, nodes and every policy kind.

One list per kind through kubernetes_asyncio, paged, all at once. A policy kind whose CRD
the cluster does not serve is skipped with a note. Policies are taken as the agents enforce
them (`septum.operator.policystatus.enforced_version`: the current spec when valid, else
`status.lastValid`).
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config.config_exception import ConfigException

from septum.cli.policyerrors import ClusterError
from septum.cli.policyinput import ClusterObjects, Obj
from septum.operator.engine.parse import policy_key
from septum.operator.policystatus import enforced_version

PAGE_SIZE = 500
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})  # their IPs may already be reused


@dataclass(frozen=True, slots=True)
class ListedKind:
    kind: str
    api_version: str  # group/version ("v1" for the core group)
    plural: str
    optional: bool = False  # a CRD that may not be installed

    @property
    def path(self) -> str:
        root = "/api" if "/" not in self.api_version else "/apis"
        return f"{root}/{self.api_version}/{self.plural}"


KINDS = (
    ListedKind("Namespace", "v1", "namespaces"),
    ListedKind("Node", "v1", "nodes"),
    ListedKind("Pod", "v1", "pods"),
    ListedKind("NetworkPolicy", "networking.k8s.io/v1", "networkpolicies"),
    ListedKind("SeptumNetworkPolicy", "septum.io/v2", "septumnetworkpolicies", True),
    ListedKind(
        "SeptumClusterwideNetworkPolicy", "septum.io/v2", "septumclusterwidenetworkpolicies", True
    ),
    ListedKind(
        "ClusterNetworkPolicy", "policy.networking.k8s.io/v1alpha2", "clusternetworkpolicies", True
    ),
)


SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def in_pod(environ: Mapping[str, str] = os.environ, account: Path = SERVICE_ACCOUNT) -> bool:
    """Inside a Kubernetes pod with its service account's token mounted: where, lacking a
    kubeconfig, clients (kubectl, client-go) use the in-cluster configuration."""
    return bool(environ.get("KUBERNETES_SERVICE_HOST")) and (account / "token").is_file()


def default_kubeconfig(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether $KUBECONFIG or ~/.kube/config names a kubeconfig to use without --kubeconfig."""
    return bool(environ.get("KUBECONFIG")) or (Path.home() / ".kube" / "config").is_file()


IN_CLUSTER = "in-cluster configuration (the pod's service account)"


def source(kubeconfig: Path | None) -> str:
    """Where the cluster's settings come from, as errors name it."""
    if kubeconfig is None and not default_kubeconfig() and in_pod():
        return IN_CLUSTER
    return "--kubeconfig"


async def configuration(kubeconfig: Path | None) -> Configuration:
    """The client settings from `kubeconfig` (None: $KUBECONFIG or ~/.kube/config, and
    without either inside a pod, the pod's service account)."""
    if source(kubeconfig) == IN_CLUSTER:
        return _in_cluster()
    where = f"--kubeconfig {kubeconfig}" if kubeconfig else "--kubeconfig (from KUBECONFIG)"
    if kubeconfig is not None and not kubeconfig.is_file():
        raise ClusterError(f"{where}: no such file")
    settings = Configuration()
    try:
        await kube_config.load_kube_config(
            config_file=str(kubeconfig) if kubeconfig else None,
            client_configuration=settings,
        )
    except (ConfigException, OSError, ValueError, TypeError, KeyError, yaml.YAMLError) as err:
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ClusterError(f"{where}: not a usable kubeconfig: {detail}") from err
    if not settings.host:
        raise ClusterError(f"{where}: names no API server")
    return settings


def _in_cluster() -> Configuration:
    settings = Configuration()
    try:
        # Re-reads the projected token as it is rotated (kubelet renews it before it expires).
        kube_config.load_incluster_config(client_configuration=settings)  # type: ignore[no-untyped-call]
    except (ConfigException, OSError) as err:
        raise ClusterError(f"{IN_CLUSTER}: {err}") from err
    return settings


async def _get(client: ApiClient, path: str, query: list[tuple[str, Any]], timeout_s: float) -> Any:
    return await client.call_api(
        path,
        "GET",
        query_params=query,
        header_params={"Accept": "application/json"},
        response_types_map={200: "object"},
        auth_settings=["BearerToken"],
        _return_http_data_only=True,
        _request_timeout=timeout_s,
    )


async def _not_served(client: ApiClient, listed: ListedKind, timeout_s: float) -> str:
    """Why an optional kind is not listed: no CRD, or a CRD without the version read."""
    group, _, version = listed.api_version.rpartition("/")
    try:
        crd = await _get(
            client,
            f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{listed.plural}.{group}",
            [],
            timeout_s,
        )
    except ApiException:
        return f"{listed.kind}: not served by this cluster (CRD not installed), skipped"
    served = [v.get("name") for v in crd.get("spec", {}).get("versions", []) if v.get("served")]
    return (
        f"{listed.kind}: the CRD serves {', '.join(map(str, served)) or 'no version'}, "
        f"not {version} (the version Septum reads), skipped"
    )


async def _list(
    client: ApiClient, listed: ListedKind, timeout_s: float, where: str = "--kubeconfig"
) -> list[Obj] | str:
    """Every object of one kind (items carry kind and apiVersion, as `get` returns them);
    for an optional kind the cluster does not serve, a note saying why."""
    items: list[Obj] = []
    token = ""
    while True:
        query: list[tuple[str, Any]] = [("limit", PAGE_SIZE)]
        if token:
            query.append(("continue", token))
        try:
            page = await _get(client, listed.path, query, timeout_s)
        except ApiException as err:
            if err.status == 404 and listed.optional:
                return await _not_served(client, listed, timeout_s)
            raise ClusterError(
                f"{where}: the API server answered {err.status} {err.reason} "
                f"listing {listed.plural} ({listed.api_version})"
            ) from err
        for item in page.get("items") or []:
            items.append({"apiVersion": listed.api_version, "kind": listed.kind, **item})
        token = str((page.get("metadata") or {}).get("continue") or "")
        if not token:
            return items


async def read_cluster(kubeconfig: Path | None, timeout_s: float = 10.0) -> ClusterObjects:
    """Every namespace, node, pod and policy the agents would load, with notes on what
    was skipped."""
    settings = await configuration(kubeconfig)
    where = source(kubeconfig)
    try:
        async with ApiClient(settings) as client:
            lists = await asyncio.wait_for(
                asyncio.gather(*(_list(client, listed, timeout_s, where) for listed in KINDS)),
                timeout_s * 3,
            )
    except (aiohttp.ClientError, ssl.SSLError, OSError, TimeoutError) as err:
        detail = str(err) or type(err).__name__
        raise ClusterError(
            f"{where}: cannot reach the API server {settings.host}: {detail}"
        ) from err
    return collect(dict(zip((listed.kind for listed in KINDS), lists, strict=True)))


def collect(
    lists: dict[str, list[Obj] | str], effective: Callable[[Obj], Obj | None] = enforced_version
) -> ClusterObjects:
    """The lists as the engine's input (pure): skipped kinds, finished pods and policies
    with nothing valid to enforce become notes."""
    objects = ClusterObjects()
    for kind, items in lists.items():
        if isinstance(items, str):
            objects.notes.append(items)  # why the kind is not served
            continue
        for obj in items:
            if kind == "Pod" and (obj.get("status") or {}).get("phase") in TERMINAL_PHASES:
                continue
            if kind in ("Namespace", "Node", "Pod"):
                objects.add(obj)
                continue
            version = effective(obj)
            name = str(policy_key(obj))  # "Kind ns/name"
            if version is None:
                objects.notes.append(
                    f"{name}: invalid and no status.lastValid, not enforced (left out)"
                )
                continue
            if any(version.get(field) is not obj.get(field) for field in ("spec", "specs")):
                generation = ((obj.get("status") or {}).get("lastValid") or {}).get("generation")
                objects.notes.append(
                    f"{name}: current spec invalid, its last valid version "
                    f"(generation {generation}) is loaded, as the agents enforce it"
                )
            objects.add(version)
    return objects
