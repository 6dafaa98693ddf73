"""Field paths for error messages: `spec.ingress[0].toPorts[1].ports[0].port`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from septum.operator.engine.errors import PolicyError


def field(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def index(path: str, position: int) -> str:
    return f"{path}[{position}]"


def expect_mapping(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise PolicyError(path, f"expected an object, got {type(value).__name__}")
    return value


def expect_list(value: Any, path: str) -> Sequence[Any]:
    if not isinstance(value, list | tuple):
        raise PolicyError(path, f"expected a list, got {type(value).__name__}")
    return value


def expect_str(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise PolicyError(path, f"expected a string, got {type(value).__name__}")
    return value


def expect_int(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyError(path, f"expected an integer, got {type(value).__name__}")
    return value


def optional_list(obj: Mapping[str, Any], key: str, path: str) -> Sequence[Any] | None:
    """A list field that may be missing or null (returns None) but not of another type."""
    value = obj.get(key)
    if value is None:
        return None
    return expect_list(value, field(path, key))


def reject_unknown(obj: Mapping[str, Any], known: set[str], path: str) -> None:
    """Unknown fields are errors: a typo must not silently widen or narrow a policy."""
    for key in obj:
        if key not in known:
            raise PolicyError(field(path, str(key)), "unknown field")
