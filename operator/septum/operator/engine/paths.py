"""Field paths for error messages: `spec.ingress[0].toPorts[1].ports[0].port`."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from septum.operator.engine.errors import FieldErrors, PolicyError


class ErrorCollector:
    """Collects the invalid fields of one object, so that its rejection lists them all.

    Each `with errors.checking():` block is one independent part (a rule, a port): an
    error ends that block only, and parsing goes on with the next part.
    """

    def __init__(self) -> None:
        self.errors: list[PolicyError] = []

    @contextmanager
    def checking(self) -> Iterator[None]:
        try:
            yield
        except PolicyError as err:
            self.errors.append(err)
        except FieldErrors as err:
            self.errors.extend(err.errors)

    def raise_any(self) -> None:
        """Raise what was collected: the one error, or FieldErrors with all of them."""
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise FieldErrors(list(self.errors))


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
