"""The agent's exception tree (the datapath, the Observer and the engine keep their own).

AgentError
├── AgentConfigError  an option, or a combination of options, that cannot work; the message
│                     starts with the flag (`septum agent` exits 2 with it)
└── HostMountError    the node's bpffs is not reachable the way this run needs it

Kubernetes client errors (kubernetes_asyncio's ApiException, aiohttp's ClientError) are caught
where a retry or a fail-safe is the answer and logged; they reach no caller of `daemon.run`.
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error the agent raises on purpose."""


class AgentConfigError(AgentError, ValueError):
    """An option that cannot work; the message names the flag at fault."""


class HostMountError(AgentError, OSError):
    """The node's bpffs is not where pins outlive the agent."""
