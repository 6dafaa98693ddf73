"""Security identities: reserved numbers and allocation rules (pure; stores nothing itself)."""

from septum.operator.identity.allocator import IdentityAllocator, InMemoryAllocator
from septum.operator.identity.reserved import (
    CLUSTER_IDENTITY_MIN,
    LOCAL_IDENTITY_MIN,
    RESERVED,
    ReservedIdentity,
)

__all__ = [
    "CLUSTER_IDENTITY_MIN",
    "LOCAL_IDENTITY_MIN",
    "RESERVED",
    "IdentityAllocator",
    "InMemoryAllocator",
    "ReservedIdentity",
]
