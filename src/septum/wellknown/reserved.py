"""Reserved security identities: Cilium's numbers, so flows read alike in Hubble's tools.

The one Python definition. `bpf/include/septum/abi.h` declares the numbers the datapath uses as
an enum, and `septum.dataplane.btfcheck` compares that enum with this one at every load.
"""

from __future__ import annotations

import enum


class ReservedIdentity(enum.IntEnum):
    UNKNOWN = 0  # in entries: "any peer"
    HOST = 1
    WORLD = 2
    UNMANAGED = 3
    HEALTH = 4
    INIT = 5
    REMOTE_NODE = 6
    KUBE_APISERVER = 7
    INGRESS = 8
    WORLD_IPV4 = 9
    WORLD_IPV6 = 10

    @property
    def label(self) -> str:
        """The label's key as Cilium writes it: `remote-node`, shown as `reserved:remote-node`."""
        return self.name.lower().replace("_", "-")


# Label key -> identity, for every identity a policy or a filter can name.
RESERVED = {r.label: r for r in ReservedIdentity if r is not ReservedIdentity.UNKNOWN}

# Pod identities (cluster scope) are numbered from 256, as in Cilium.
CLUSTER_IDENTITY_MIN = 256
CLUSTER_IDENTITY_MAX = (1 << 24) - 1
# CIDR identities are node-local in Cilium (the "local" scope, bit 24 set).
LOCAL_IDENTITY_MIN = 1 << 24
LOCAL_IDENTITY_MAX = (1 << 25) - 1
# Service identities: one per Service frontend address (ClusterIP, external IP), node-local,
# numbered by each agent (septum.agent.services).  The datapath keeps identities as __u32
# everywhere (ipcache value, policy keys, flow events), so the range needs no ABI change.
SERVICE_IDENTITY_MIN = 1 << 25
SERVICE_IDENTITY_MAX = (1 << 26) - 1
