"""The engine's exception tree: every rejection names the field path at fault.

EngineError
├── PolicyError       one invalid field of a policy (path and reason)
├── FieldErrors       several PolicyErrors, while parsing (internal)
├── InvalidPolicy     a policy rejected, with every invalid field (`errors`)
├── InvalidObject     a pod, namespace or node that cannot be read
├── EngineNotEmpty    load() on an engine that already holds objects (also a RuntimeError)
├── IdentitiesExhausted  no identity number is free for a new label set or CIDR (a RuntimeError)
└── UnknownEndpoint   explain / what-if named an endpoint the engine cannot resolve
"""

from __future__ import annotations


class EngineError(Exception):
    """Base of every error the policy engine raises."""


class PolicyError(EngineError):
    """One invalid field: `path` is the full field path, `reason` says what is wrong."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class FieldErrors(EngineError):
    """Several invalid fields of one object, found while parsing it.

    The parsers raise it to carry every error up to `parse_policy`, which reports them
    as one InvalidPolicy; it never leaves the engine.
    """

    def __init__(self, errors: list[PolicyError]) -> None:
        super().__init__("; ".join(str(error) for error in errors))
        self.errors = errors


class InvalidPolicy(EngineError):
    """A policy object was rejected; `errors` lists every invalid field found."""

    def __init__(self, kind: str, name: str, errors: list[PolicyError]) -> None:
        detail = "; ".join(str(error) for error in errors)
        super().__init__(f"{kind} {name} rejected: {detail}")
        self.kind = kind
        self.name = name
        self.errors = errors


class InvalidObject(EngineError):
    """A cluster object (pod, namespace, node) could not be read."""


class EngineNotEmpty(EngineError, RuntimeError):
    """load() needs an empty engine; updates go through the upsert_* methods.

    Also a RuntimeError, which load() raised before this class existed.
    """


class IdentitiesExhausted(EngineError, RuntimeError):
    """The identity allocator has no free number left; the allocator's error is the cause."""


class UnknownEndpoint(EngineError):
    """An explain or what-if query named a pod, IP or label set the engine cannot resolve."""
