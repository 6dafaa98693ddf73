"""Rules for allocating security identities (pure; stores nothing itself).

The reserved identity numbers and the identity ranges live in `septum.wellknown.reserved`,
shared with the datapath.
"""

from septum.operator.identity.allocator import (
    IdentityAllocator,
    IdentitySpaceExhausted,
    InMemoryAllocator,
)

__all__ = ["IdentityAllocator", "IdentitySpaceExhausted", "InMemoryAllocator"]
