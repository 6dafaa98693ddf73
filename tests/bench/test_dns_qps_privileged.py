"""The DNS part of `septum bench l7` runs end to end: both figures come from real answers
through the real redirect (the figures themselves are the benchmark's, not a test's)."""

from __future__ import annotations

import pytest

from septum.bench.dnsqps import measure
from septum.dataplane.sandbox import sandbox_namespaces

pytestmark = pytest.mark.privileged


def test_direct_and_proxied_both_answer() -> None:
    figures = measure(seconds=0.5, clients=4)
    assert figures["dns_qps_direct"] > 0 and figures["dns_qps_proxied"] > 0
    assert figures["dns_timeouts"] == {"direct": 0, "proxied": 0}
    assert sandbox_namespaces("bdq") == []
