"""The labels a service identity carries (the agent gives one to each Service frontend address,
septum.agent.services), and how the Observer reads them back into a Flow's
`destination_service`, as Hubble fills it for service-translated traffic."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

SERVICE_IDENTITY_NAMESPACE_LABEL: Final = "k8s:io.kubernetes.service.namespace"
SERVICE_IDENTITY_NAME_LABEL: Final = "k8s:io.kubernetes.service.name"


def service_of(labels: Iterable[str]) -> tuple[str, str] | None:
    """(namespace, name) of the first Service named in an identity's labels; None if none."""
    namespace = name = None
    for label in labels:
        key, _, value = label.partition("=")
        if key == SERVICE_IDENTITY_NAMESPACE_LABEL and namespace is None:
            namespace = value
        elif key == SERVICE_IDENTITY_NAME_LABEL and name is None:
            name = value
    if namespace is None or name is None:
        return None
    return namespace, name
