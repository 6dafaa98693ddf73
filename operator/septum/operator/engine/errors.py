"""The engine's exception tree: every rejection names the field path at fault."""

from __future__ import annotations


class EngineError(Exception):
    """Base of every error the policy engine raises."""


class PolicyError(EngineError):
    """One invalid field: `path` is the full field path, `reason` says what is wrong."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


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


class UnknownEndpoint(EngineError):
    """An explain or what-if query named a pod, IP or label set the engine cannot resolve."""
