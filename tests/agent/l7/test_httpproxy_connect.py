"""The upstream connect's timeout as SYN retries (TCP_SYNCNT): the fewest whose total reaches
the asked timeout, and a clear error for a timeout that is no time."""

from __future__ import annotations

import pytest

from septum.agent.l7.httpproxy import HttpProxy, _syn_retries


def test_the_fewest_syn_retries_that_reach_the_timeout() -> None:
    # n retries give up after 1 + 2 + ... + 2**n = 2**(n+1) - 1 seconds
    assert [_syn_retries(s) for s in (0.5, 3, 3.5, 5, 7, 8, 15, 16)] == [1, 1, 2, 2, 2, 3, 3, 4]


@pytest.mark.parametrize("timeout", [0, -1.0])
def test_a_timeout_that_is_no_time_is_refused_by_name(timeout: float) -> None:
    with pytest.raises(ValueError, match="connect_timeout_s"):
        HttpProxy(lambda conn: None, lambda conn: 1, ingress=False, connect_timeout_s=timeout)
