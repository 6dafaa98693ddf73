"""Readiness, liveness and startup probes (HTTP, TCP, exec) with the kubelet's thresholds."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp

ExecFn = Callable[[Sequence[str], float], Awaitable[int]]


def _port(value: Any, ports: list[dict[str, Any]]) -> int:
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return int(value)
    for p in ports:
        if p.get("name") == value:
            return int(p["containerPort"])
    raise ValueError(f"named port {value!r} not found among the container's ports")


async def run_once(
    probe: dict[str, Any], pod_ip: str, ports: list[dict[str, Any]], exec_fn: ExecFn
) -> bool:
    timeout_s = float(probe.get("timeoutSeconds", 1))
    try:
        if "httpGet" in probe:
            h = probe["httpGet"]
            host = h.get("host") or pod_ip
            scheme = h.get("scheme", "HTTP").lower()
            url = f"{scheme}://{host}:{_port(h['port'], ports)}{h.get('path', '/')}"
            headers = {x["name"]: x["value"] for x in h.get("httpHeaders", [])}
            async with (
                aiohttp.ClientSession() as session,
                session.get(
                    url,
                    headers=headers,
                    ssl=False,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=timeout_s),
                ) as resp,
            ):
                return 200 <= resp.status < 400
        if "tcpSocket" in probe:
            t = probe["tcpSocket"]
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(t.get("host") or pod_ip, _port(t["port"], ports)),
                timeout_s,
            )
            writer.close()
            return True
        if "exec" in probe:
            return await exec_fn(probe["exec"]["command"], timeout_s) == 0
    except (OSError, TimeoutError, aiohttp.ClientError, ValueError):
        return False
    return False


class ProbeState:
    """Applies success/failure thresholds to a stream of probe results."""

    def __init__(self, probe: dict[str, Any], initial: bool) -> None:
        self.probe = probe
        self.result = initial
        self._successes = 0
        self._failures = 0

    def observe(self, ok: bool) -> bool:
        if ok:
            self._successes += 1
            self._failures = 0
            if self._successes >= int(self.probe.get("successThreshold", 1)):
                self.result = True
        else:
            self._failures += 1
            self._successes = 0
            if self._failures >= int(self.probe.get("failureThreshold", 3)):
                self.result = False
        return self.result

    @property
    def period_s(self) -> float:
        return float(self.probe.get("periodSeconds", 10))

    @property
    def initial_delay_s(self) -> float:
        return float(self.probe.get("initialDelaySeconds", 0))
