"""Whether the workload that runs this process still exists: an uninstall told from a restart.

`helm uninstall` deletes the agents' DaemonSet and the operator's Deployment, then their pods
get SIGTERM; a rolling update, a drain or a deleted pod sends the same SIGTERM while the
workload stays. So on SIGTERM the process GETs its owner: gone (404) or being deleted (a
deletionTimestamp) means uninstall, present means restart. Anything else (the API server
unreachable, a timeout, a 403) is UNKNOWN, which callers treat as a restart: keeping the
datapath enforcing is the safe side. Shared by the agent (DaemonSet) and the operator
(Deployment); it reads one object with the process's own API client and writes nothing.
"""

from __future__ import annotations

import asyncio
import enum
import json
from dataclasses import dataclass
from typing import Final

from aiohttp import ClientError
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

DEFAULT_TIMEOUT_S: Final = 5.0
# How long a SIGTERM'd process keeps asking while the answer is UNKNOWN: an API server busy
# with the uninstall's garbage collection answers late, and an uninstall misread as a restart
# leaves the node chained to a plugin whose agent is gone. Half the chart's default grace
# period (30 s), so the cleanup that follows still fits before SIGKILL.
SETTLE_BUDGET_S: Final = 15.0
SETTLE_PAUSE_S: Final = 1.0


class OwnerState(enum.Enum):
    PRESENT = "present"
    GONE = "gone"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Owner:
    """An apps/v1 workload: `plural` is "daemonsets" or "deployments"."""

    plural: str
    namespace: str
    name: str

    @property
    def path(self) -> str:
        return f"/apis/apps/v1/namespaces/{self.namespace}/{self.plural}/{self.name}"

    def __str__(self) -> str:
        return f"{self.plural}/{self.namespace}/{self.name}"

    @staticmethod
    def parse(plural: str, text: str) -> Owner:
        """`NAMESPACE/NAME` (a flag's value); ValueError when it is not that."""
        namespace, sep, name = text.partition("/")
        if not sep or not namespace or not name or "/" in name:
            raise ValueError(f"{text!r} is not NAMESPACE/NAME")
        return Owner(plural, namespace, name)


def state_of(status: int, body: bytes) -> tuple[OwnerState, str]:
    """What a GET of the owner answered (HTTP status and body) means, with the reason."""
    if status == 404:
        return OwnerState.GONE, "not found"
    if not 200 <= status <= 299:
        return OwnerState.UNKNOWN, f"HTTP {status}: {body.decode(errors='replace')[:200]}"
    try:
        meta = json.loads(body).get("metadata") or {}
    except (ValueError, AttributeError) as err:
        return OwnerState.UNKNOWN, f"unreadable answer: {err}"
    if meta.get("deletionTimestamp"):
        return OwnerState.GONE, f"being deleted since {meta['deletionTimestamp']}"
    return OwnerState.PRESENT, "exists"


async def owner_state(
    api: ApiClient, owner: Owner, timeout_s: float = DEFAULT_TIMEOUT_S
) -> tuple[OwnerState, str]:
    """GET the owner once, within `timeout_s`; never raises for an API failure."""
    try:
        async with asyncio.timeout(timeout_s):
            response = await api.call_api(
                owner.path,
                "GET",
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=timeout_s,
            )
            body = await response.read()
            response.release()
    except ApiException as err:  # the client's own refusal (status 0: a request it never sent)
        return OwnerState.UNKNOWN, f"{err.status} {err.reason}"
    except (ClientError, OSError, TimeoutError) as err:
        return OwnerState.UNKNOWN, f"{type(err).__name__}: {err}"
    return state_of(int(response.status), body)


async def settled_owner_state(
    api: ApiClient,
    owner: Owner,
    budget_s: float = SETTLE_BUDGET_S,
    pause_s: float = SETTLE_PAUSE_S,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> tuple[OwnerState, str, int]:
    """`owner_state`, asked again while it is UNKNOWN until `budget_s` is spent; returns the
    last answer and how many GETs it took. GONE and PRESENT are final at once."""
    deadline = asyncio.get_running_loop().time() + budget_s
    attempts = 0
    while True:
        remaining = deadline - asyncio.get_running_loop().time()
        attempts += 1
        state, reason = await owner_state(api, owner, max(0.5, min(timeout_s, remaining)))
        remaining = deadline - asyncio.get_running_loop().time()
        if state is not OwnerState.UNKNOWN or remaining <= pause_s:
            return state, reason, attempts
        await asyncio.sleep(pause_s)
