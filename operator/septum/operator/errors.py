"""The operator process's exception tree (the engine keeps its own, septum.operator.engine.errors).

OperatorError
├── ConfigError        an option or the kubeconfig cannot be used
├── NotLeader          a write was about to happen after the lease ran out
└── IdentitySpaceFull  every cluster identity number is taken

Kubernetes client errors (kubernetes_asyncio's ApiException, aiohttp's ClientError) are
caught where a retry is the answer and logged; they reach no caller of `daemon.run`.
"""

from __future__ import annotations


class OperatorError(Exception):
    """Base of every error the operator process raises."""


class ConfigError(OperatorError):
    """The operator cannot start with the options or the kubeconfig it was given."""


class NotLeader(OperatorError):
    """This replica no longer holds the lease; the write it was about to make is skipped."""


class IdentitySpaceFull(OperatorError):
    """No cluster identity number is free."""


def describe(err: BaseException) -> str:
    """One line for a log: an API error's status and reason, not its headers and body."""
    status = getattr(err, "status", None)
    reason = getattr(err, "reason", None)
    if status is not None:
        return f"{type(err).__name__} {status} {reason or ''}".strip()
    return f"{type(err).__name__}: {err}"
