"""The exception tree of `septum policy` (manifests, the live cluster, the Observers).

    PolicyCliError
    ├── InputError     a manifest or candidate file cannot be used (names the file, the
    │                  object and the field path)
    ├── ClusterError   the kubeconfig or the API server (names --kubeconfig)
    └── ObserverError  no Observer answered (names --server)

Every message is one line that starts with what is at fault; the commands print it and exit 2.
"""

from __future__ import annotations


class PolicyCliError(Exception):
    """Base of every error `septum policy` raises on purpose."""


class InputError(PolicyCliError):
    """A manifest, candidate policy or command-line value cannot be used."""


class ClusterError(PolicyCliError):
    """The cluster cannot be read: kubeconfig, connection or API server answer."""


class ObserverError(PolicyCliError):
    """No flows could be fetched from the Observers asked."""
