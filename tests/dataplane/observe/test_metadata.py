"""septum.dataplane.observe.metadata: what the decoder looks up for every flow."""

from __future__ import annotations

import observe_helpers as h

from septum.dataplane.observe.metadata import StaticMetadata
from septum.wellknown.reserved import RESERVED, ReservedIdentity


def test_reserved_identities_have_cilium_labels_before_the_agent_says_anything() -> None:
    labels = StaticMetadata().identity_labels
    assert labels(ReservedIdentity.REMOTE_NODE) == ("reserved:remote-node",)
    assert labels(ReservedIdentity.WORLD_IPV6) == ("reserved:world-ipv6",)
    assert {labels(identity) for identity in RESERVED.values()} == {
        (f"reserved:{label}",) for label in RESERVED
    }
    assert labels(ReservedIdentity.UNKNOWN) == ()


def test_a_known_identity_has_its_endpoint_labels() -> None:
    assert h.metadata().identity_labels(1001) == ("k8s:app=xwing", "k8s:org=alliance")
